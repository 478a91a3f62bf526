//! `secret-inject webhook`: the mutating admission webhook.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use tracing::info;

use super::MutationArgs;
use super::mutation::{Auto, Mode, Switch};
use crate::aws::{self, AwsSettings};
use crate::duration;
use crate::mutate::secret::WriterConfig;
use crate::webhook::cluster;
use crate::webhook::metrics::SecretWriterVersions;
use crate::webhook::promote::{PromotionLoop, Promotions};
use crate::webhook::tls::{self, CertFiles, ReloadingResolver};
use crate::webhook::{
    BodyLimits, ConnectionLimits, InFlightLimits, Router, Server, ServerOptions, pods, secrets,
};

/// Serve the mutating admission webhook.
#[derive(Args, Debug)]
pub struct WebhookArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    admin: AdminArgs,
    #[command(flatten)]
    mutation: MutationArgs,
    #[command(flatten)]
    secret_writer: SecretWriterArgs,
}

/// The secret writer: `POST /mutating-secrets` stores labelled Kubernetes Secrets in Secrets
/// Manager with the webhook's own AWS identity.
#[derive(Args, Debug)]
pub struct SecretWriterArgs {
    /// Serve POST /mutating-secrets (off by default).
    #[arg(long, env = "SECRET_INJECT_SECRET_WRITER")]
    secret_writer: bool,
    /// First part of every Secrets Manager name: `<prefix>/<namespace>/<name>` (e.g. the
    /// cluster's name); the IAM policy of the webhook's role is scoped to it.
    #[arg(
        long,
        env = "SECRET_INJECT_SECRET_WRITER_PREFIX",
        default_value = "secret-inject"
    )]
    secret_writer_prefix: String,
    /// The cluster's name, for the `kubernetes.io/cluster` tag.
    #[arg(long, env = "SECRET_INJECT_CLUSTER_NAME", default_value = "kubernetes")]
    cluster_name: String,
    /// KMS key (id, alias or ARN) for new secrets; default: the account's aws/secretsmanager key.
    #[arg(long, env = "SECRET_INJECT_SECRET_WRITER_KMS_KEY_ID")]
    secret_writer_kms_key_id: Option<String>,
    /// Region of the secrets; default: the SDK's region chain (AWS_REGION).
    #[arg(long, env = "SECRET_INJECT_SECRET_WRITER_REGION")]
    secret_writer_region: Option<String>,
    /// Longest time the AWS calls of one review may take; keep it below the webhook's
    /// timeoutSeconds, or the API server gives up first.
    #[arg(long, env = "SECRET_INJECT_SECRET_WRITER_TIMEOUT", default_value = "8s", value_parser = duration::parse)]
    secret_writer_timeout: Duration,
    /// How long a staged version waits for the API server to persist its Secret before it is
    /// counted and logged as unpersisted (a forged review, or a write a later admission step
    /// denied) and loses its pending label.
    #[arg(long, env = "SECRET_INJECT_SECRET_WRITER_PROMOTION_GRACE_PERIOD", default_value = "2m", value_parser = duration::parse)]
    secret_writer_promotion_grace_period: Duration,
}

impl SecretWriterArgs {
    /// The endpoint and its promotion loop, when enabled; builds their AWS client and the
    /// Kubernetes client the loop watches labelled Secrets with.
    async fn endpoint(
        self,
        counter: SecretWriterVersions,
    ) -> anyhow::Result<Option<(secrets::Secrets, PromotionLoop)>> {
        let SecretWriterArgs {
            secret_writer,
            secret_writer_prefix,
            cluster_name,
            secret_writer_kms_key_id,
            secret_writer_region,
            secret_writer_timeout,
            secret_writer_promotion_grace_period,
        } = self;
        if !secret_writer {
            return Ok(None);
        }
        let prefix = secret_writer_prefix.trim_matches('/').to_owned();
        if prefix.is_empty() || !crate::spec::is_secret_name(&prefix) {
            bail!(
                "--secret-writer-prefix {secret_writer_prefix:?} is not a Secrets Manager name \
                 prefix; use letters, digits and /_+=.@-, e.g. the cluster's name"
            );
        }
        let config = aws::sdk_config(&AwsSettings {
            region: secret_writer_region,
            timeouts: aws::Timeouts {
                connect: secret_writer_timeout.min(Duration::from_secs(3)),
                attempt: secret_writer_timeout,
            },
            allow_instance_metadata: false,
        })
        .await;
        if config.region().is_none() {
            bail!("--secret-writer needs a region: set --secret-writer-region or AWS_REGION");
        }
        let kube = kube::Client::try_default().await.context(
            "--secret-writer needs the Kubernetes API (it makes a stored version current only \
             for a Secret the API server persisted): run in a pod with a ServiceAccount, or set \
             KUBECONFIG",
        )?;
        let client = aws::secrets_manager(&config);
        let writer_config = WriterConfig {
            prefix,
            cluster: cluster_name,
        };
        let promotions = Promotions::new(counter);
        let promotion = PromotionLoop {
            client: client.clone(),
            kube,
            config: writer_config.clone(),
            promotions: promotions.clone(),
            grace: secret_writer_promotion_grace_period,
            aws_timeout: secret_writer_timeout,
        };
        let endpoint = secrets::Secrets::new(
            client,
            writer_config,
            secret_writer_kms_key_id,
            secret_writer_timeout,
            promotions,
        );
        Ok(Some((endpoint, promotion)))
    }
}

/// The HTTPS listener and its limits.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// HTTPS port of the webhook.
    #[arg(long, env = "SECRET_INJECT_PORT", default_value_t = 8443)]
    port: u16,
    /// Address to listen on, for the webhook and admin ports (`::` for IPv6 and IPv4).
    #[arg(long, env = "SECRET_INJECT_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Longest time for a client's TLS handshake and request headers; on a new connection, the
    /// handshake and the first request's headers together, counted from the accept (a client
    /// that connects and sends nothing is closed after it).
    #[arg(long, env = "SECRET_INJECT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    header_read_timeout: Duration,
    /// Longest time for a client to send a request body.
    #[arg(long, env = "SECRET_INJECT_BODY_READ_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    body_read_timeout: Duration,
    /// Largest request body accepted, in bytes (Kubernetes sends at most about 3 MiB).
    #[arg(long, env = "SECRET_INJECT_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Request body bytes held at once across all connections (read, or reserved from a
    /// declared content-length); a request that would go over is answered 503 at once, before
    /// its body is read. Bodies over 64 KiB may hold three quarters of it together, so small
    /// reviews still pass while large ones are slow to come. The default keeps a 128Mi memory
    /// limit.
    #[arg(long, env = "SECRET_INJECT_MAX_IN_FLIGHT_BODY_BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    max_in_flight_body_bytes: u64,
    /// Reviews of bodies over 64 KiB computed at once, off the threads that serve connections;
    /// more wait their turn (their bodies already read). Smaller reviews run at once.
    #[arg(long, env = "SECRET_INJECT_MAX_CONCURRENT_REVIEWS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_concurrent_reviews: u64,
    /// Connections open at once on the webhook port (TLS handshakes included); more are
    /// accepted and closed at once. Lowered to fit the open-file limit when that is smaller.
    #[arg(long, env = "SECRET_INJECT_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// A connection with no request in progress for this long is closed, HTTP/2 included
    /// (PINGs do not keep it open). HTTP/1.1 keep-alive connections are closed earlier, after
    /// --header-read-timeout without a new request.
    #[arg(long, env = "SECRET_INJECT_IDLE_TIMEOUT", default_value = "90s", value_parser = duration::parse)]
    idle_timeout: Duration,
    /// HTTP/2 requests (streams) in progress at once on one connection (the API server opens
    /// another connection beyond it).
    #[arg(long, env = "SECRET_INJECT_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    http2_max_concurrent_streams: u32,
    /// Largest HTTP/2 request header list, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    #[arg(long, env = "SECRET_INJECT_HTTP2_MAX_HEADER_LIST_SIZE", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(1024..))]
    http2_max_header_list_size: u32,
    /// Longest time in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "SECRET_INJECT_SHUTDOWN_GRACE_PERIOD", default_value = "25s", value_parser = duration::parse)]
    shutdown_grace_period: Duration,
}

/// The serving certificate.
#[derive(Args, Debug)]
pub struct TlsArgs {
    /// Serving certificate chain (PEM); re-read when it changes.
    #[arg(
        long,
        env = "SECRET_INJECT_TLS_CERT_FILE",
        requires = "tls_private_key_file"
    )]
    tls_cert_file: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(
        long,
        env = "SECRET_INJECT_TLS_PRIVATE_KEY_FILE",
        requires = "tls_cert_file"
    )]
    tls_private_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes (e.g. `10s`).
    #[arg(long, env = "SECRET_INJECT_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = duration::parse)]
    tls_reload_interval: Duration,
    /// Serve a generated development certificate instead of certificate files (never in
    /// production: the API server would not trust it).
    #[arg(long, env = "SECRET_INJECT_DEV_TLS", conflicts_with_all = ["tls_cert_file", "tls_private_key_file"])]
    dev_tls: bool,
    /// Service name for the development certificate's DNS names.
    #[arg(
        long,
        env = "SECRET_INJECT_SERVICE_NAME",
        default_value = "secret-inject"
    )]
    service_name: String,
    /// Namespace for the development certificate's DNS names.
    #[arg(long, env = "SECRET_INJECT_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Accept only clients with a certificate signed by this CA (PEM): the API server's webhook
    /// client certificate (its AdmissionConfiguration kubeConfigFile), where the platform lets
    /// you configure one. Read once at start.
    #[arg(long, env = "SECRET_INJECT_CLIENT_CA_FILE")]
    client_ca_file: Option<PathBuf>,
    /// Where to write the development CA certificate (PEM), for curl --cacert or a caBundle.
    #[arg(long, env = "SECRET_INJECT_WRITE_CA", requires = "dev_tls")]
    write_ca: Option<PathBuf>,
}

/// The plain-HTTP admin port.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Plain-HTTP port for /healthz, /readyz and /metrics.
    #[arg(long, env = "SECRET_INJECT_ADMIN_PORT", default_value_t = 8080)]
    admin_port: u16,
}

impl TlsArgs {
    /// The certificate source: files, or a development certificate when asked for.
    fn resolver(self) -> anyhow::Result<ReloadingResolver> {
        let TlsArgs {
            tls_cert_file,
            tls_private_key_file,
            tls_reload_interval: _,
            dev_tls,
            service_name,
            namespace,
            write_ca,
            client_ca_file,
        } = self;
        let resolver = Self::serving(
            tls_cert_file.zip(tls_private_key_file),
            dev_tls,
            &service_name,
            &namespace,
            write_ca,
        )?;
        Ok(match client_ca_file {
            Some(ca) => {
                info!(client_ca_file = %ca.display(), "clients must present a certificate from this CA");
                resolver.require_client_certificates(&ca)?
            }
            None => resolver,
        })
    }

    fn serving(
        files: Option<(PathBuf, PathBuf)>,
        dev_tls: bool,
        service_name: &str,
        namespace: &str,
        write_ca: Option<PathBuf>,
    ) -> anyhow::Result<ReloadingResolver> {
        if let Some((cert, key)) = files {
            return Ok(ReloadingResolver::from_files(CertFiles { cert, key })?);
        }
        if !dev_tls {
            bail!(
                "no serving certificate: pass --tls-cert-file and --tls-private-key-file (the \
                 chart mounts its TLS Secret there), or --dev-tls to serve a generated \
                 development certificate"
            );
        }
        let dev = tls::generate_dev_certificate(service_name, namespace)?;
        let ca_path =
            write_ca.unwrap_or_else(|| std::env::temp_dir().join("secret-inject-dev-ca.pem"));
        std::fs::write(&ca_path, &dev.ca_pem)
            .with_context(|| format!("cannot write the CA to {}", ca_path.display()))?;
        info!(
            ca_file = %ca_path.display(),
            names = ?dev.names,
            "--dev-tls: serving a generated development certificate; trust it with curl --cacert {}",
            ca_path.display()
        );
        Ok(ReloadingResolver::fixed(
            dev.cert_pem.as_bytes(),
            dev.key_pem.as_bytes(),
        )?)
    }
}

impl WebhookArgs {
    /// Serve until SIGTERM or SIGINT, then drain.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let WebhookArgs {
            server:
                ServerArgs {
                    port,
                    bind_address,
                    header_read_timeout,
                    body_read_timeout,
                    max_body_bytes,
                    max_in_flight_body_bytes,
                    max_concurrent_reviews,
                    max_connections,
                    idle_timeout,
                    http2_max_concurrent_streams,
                    http2_max_header_list_size,
                    shutdown_grace_period,
                },
            tls,
            admin: AdminArgs { admin_port },
            mutation,
            secret_writer,
        } = self;
        let tls_reload_interval = tls.tls_reload_interval;
        let resolver = Arc::new(tls.resolver()?);
        let options = ServerOptions {
            bind_address,
            port,
            admin_port,
            header_read_timeout,
            shutdown_grace_period,
            tls_reload_interval,
        };
        let connection_limits = ConnectionLimits {
            max_connections: max_connections as usize,
            idle_timeout,
            http2_max_concurrent_streams,
            http2_max_header_list_size,
        };
        let in_flight = InFlightLimits {
            body_bytes: max_in_flight_body_bytes as usize,
            reviews: max_concurrent_reviews as usize,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(async {
            let needs_version =
                mutation.env_files() == Switch::Auto || mutation.native_sidecars() == Mode::Auto;
            let version = if needs_version {
                let version = cluster::probe_version().await;
                if version.is_none() {
                    tracing::warn!(
                        "--env-files auto / --native-sidecars auto: the cluster's version is \
                         unknown, so env.<n> annotations are denied and rotation uses classic \
                         sidecars; set --env-files on (Kubernetes 1.35+) and --native-sidecars \
                         always (1.29+)"
                    );
                }
                version
            } else {
                None
            };
            let mutation = mutation.config(Auto::of(version))?;
            let mut router = Router::new(BodyLimits {
                max_bytes: max_body_bytes,
                read_timeout: body_read_timeout,
            })
            .in_flight(in_flight)
            .route(pods::PATH, pods::Pods::new(mutation));
            if let Some((writer, promotion)) = secret_writer
                .endpoint(router.metrics().secret_writer_versions())
                .await?
            {
                router = router.route(secrets::PATH, writer);
                tokio::spawn(promotion.run());
            }
            let server = Server::bind(options, resolver, Arc::new(router))
                .await
                .with_context(|| {
                    format!("cannot listen on {bind_address} ports {port} and {admin_port}")
                })?
                .with_limits(connection_limits);
            server
                .run(crate::signal::stop_signals())
                .await
                .context("webhook server failed")
        })?;
        info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}
