//! The `secret-inject` command line.

use std::io::Read as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use secret_inject::agent::{self, AgentArgs};
use secret_inject::inject::inject_documents;
use secret_inject::mutate::MutationConfig;
use secret_inject::server::{self, ServerOptions, State};
use secret_inject::tls::{self, CertFiles, ReloadingResolver};
use secret_inject::{contract, duration};
use tracing::info;

/// Inject AWS Secrets Manager secrets into Kubernetes pods, without Kubernetes Secrets.
#[derive(Parser, Debug)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the mutating admission webhook (HTTPS, POST /mutating-pods).
    Webhook(Box<WebhookArgs>),
    /// Inject manifests offline: read YAML or JSON, write injected YAML to stdout.
    Inject(InjectArgs),
    /// Fetch a secret from AWS Secrets Manager onto the in-memory volume (the injected
    /// container).
    Agent(Box<AgentArgs>),
}

#[derive(Args, Debug)]
struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "SECRET_INJECT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Log level or filter directives (e.g. `info`, `secret_inject=debug`); RUST_LOG also works.
    #[arg(
        long,
        global = true,
        env = "SECRET_INJECT_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Plain,
}

/// What the injected container looks like.
#[derive(Args, Debug)]
struct MutationArgs {
    /// Image of the injected container. Defaults to this release's own image.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_IMAGE", default_value = contract::DEFAULT_IMAGE)]
    sidecar_image: String,
    /// imagePullPolicy of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_IMAGE_PULL_POLICY", default_value = "IfNotPresent",
          value_parser = ["Always", "IfNotPresent", "Never"])]
    sidecar_image_pull_policy: String,
    /// CPU request of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_CPU_REQUEST", default_value = "10m")]
    sidecar_cpu_request: String,
    /// CPU limit of the injected container (none by default: a CPU limit only slows start-up).
    #[arg(long, env = "SECRET_INJECT_SIDECAR_CPU_LIMIT")]
    sidecar_cpu_limit: Option<String>,
    /// Memory request of the injected container.
    #[arg(
        long,
        env = "SECRET_INJECT_SIDECAR_MEMORY_REQUEST",
        default_value = "16Mi"
    )]
    sidecar_memory_request: String,
    /// Memory limit of the injected container.
    #[arg(
        long,
        env = "SECRET_INJECT_SIDECAR_MEMORY_LIMIT",
        default_value = "32Mi"
    )]
    sidecar_memory_limit: String,
    /// sizeLimit of the in-memory secret volume (it counts against the pod's memory).
    #[arg(long, env = "SECRET_INJECT_VOLUME_SIZE_LIMIT", default_value = "1Mi")]
    volume_size_limit: String,
}

#[derive(Args, Debug)]
struct WebhookArgs {
    /// HTTPS port of the webhook.
    #[arg(long, env = "SECRET_INJECT_PORT", default_value_t = 8443)]
    port: u16,
    /// Plain-HTTP port for /healthz, /readyz and /metrics.
    #[arg(long, env = "SECRET_INJECT_ADMIN_PORT", default_value_t = 8080)]
    admin_port: u16,
    /// Address to listen on (`::` for IPv6 and IPv4).
    #[arg(long, env = "SECRET_INJECT_BIND_ADDRESS", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Serving certificate chain (PEM). Without it, a development certificate is generated.
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
    /// Where to write the development CA certificate (PEM), for curl --cacert or a caBundle.
    #[arg(long, env = "SECRET_INJECT_WRITE_CA")]
    write_ca: Option<PathBuf>,
    /// Longest time for a client's TLS handshake and request headers.
    #[arg(long, env = "SECRET_INJECT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    header_read_timeout: Duration,
    /// Longest time for a client to send a request body.
    #[arg(long, env = "SECRET_INJECT_BODY_READ_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    body_read_timeout: Duration,
    /// Largest request body accepted, in bytes (Kubernetes sends at most about 3 MiB).
    #[arg(long, env = "SECRET_INJECT_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Longest time in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "SECRET_INJECT_SHUTDOWN_GRACE_PERIOD", default_value = "25s", value_parser = duration::parse)]
    shutdown_grace_period: Duration,
    #[command(flatten)]
    mutation: MutationArgs,
}

#[derive(Args, Debug)]
struct InjectArgs {
    /// Manifest file to inject (YAML or JSON, many documents), or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    #[command(flatten)]
    mutation: MutationArgs,
}

impl MutationArgs {
    fn config(&self) -> anyhow::Result<MutationConfig> {
        for (flag, value) in [
            ("--sidecar-cpu-request", Some(&self.sidecar_cpu_request)),
            ("--sidecar-cpu-limit", self.sidecar_cpu_limit.as_ref()),
            (
                "--sidecar-memory-request",
                Some(&self.sidecar_memory_request),
            ),
            ("--sidecar-memory-limit", Some(&self.sidecar_memory_limit)),
            ("--volume-size-limit", Some(&self.volume_size_limit)),
        ] {
            if let Some(value) = value
                && !is_quantity(value)
            {
                bail!("{flag} {value:?} is not a Kubernetes quantity such as 10m, 16Mi or 1Gi");
            }
        }
        if self.sidecar_image.trim().is_empty() {
            bail!("--sidecar-image is empty; give an image reference");
        }
        let q = |v: &str| Quantity(v.to_owned());
        let mut limits = std::collections::BTreeMap::from([(
            "memory".to_owned(),
            q(&self.sidecar_memory_limit),
        )]);
        if let Some(cpu) = &self.sidecar_cpu_limit {
            limits.insert("cpu".to_owned(), q(cpu));
        }
        Ok(MutationConfig {
            image: self.sidecar_image.clone(),
            image_pull_policy: self.sidecar_image_pull_policy.clone(),
            resources: ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_owned(), q(&self.sidecar_cpu_request)),
                        ("memory".to_owned(), q(&self.sidecar_memory_request)),
                    ]
                    .into(),
                ),
                limits: Some(limits),
                ..Default::default()
            },
            volume_size_limit: q(&self.volume_size_limit),
        })
    }
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix.
fn is_quantity(value: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let split = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    !number.is_empty() && number.parse::<f64>().is_ok() && SUFFIXES.contains(&suffix)
}

fn init_logging(log: &LogArgs) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(&log.log_level),
    }
    .with_context(|| format!("--log-level {:?} is not a level or filter", log.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match log.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Plain => builder.init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = init_logging(&cli.log) {
        eprintln!("error: {error:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Webhook(args) => run_webhook(*args),
        Command::Inject(args) => run_inject(&args),
        Command::Agent(args) => return ExitCode::from(agent::run(&args)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_webhook(args: WebhookArgs) -> anyhow::Result<ExitCode> {
    let mutation = args.mutation.config()?;
    let resolver = match (&args.tls_cert_file, &args.tls_private_key_file) {
        (Some(cert), Some(key)) => ReloadingResolver::from_files(CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        })?,
        _ => {
            let dev = tls::generate_dev_certificate(&args.service_name, &args.namespace)?;
            let ca_path = args
                .write_ca
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("secret-inject-dev-ca.pem"));
            std::fs::write(&ca_path, &dev.ca_pem)
                .with_context(|| format!("cannot write the CA to {}", ca_path.display()))?;
            info!(
                ca_file = %ca_path.display(),
                names = ?dev.names,
                "no --tls-cert-file given: serving a generated development certificate; \
                 trust it with curl --cacert {}",
                ca_path.display()
            );
            ReloadingResolver::fixed(dev.cert_pem.as_bytes(), dev.key_pem.as_bytes())?
        }
    };
    let options = ServerOptions {
        bind_address: args.bind_address,
        port: args.port,
        admin_port: args.admin_port,
        header_read_timeout: args.header_read_timeout,
        body_read_timeout: args.body_read_timeout,
        max_body_bytes: args.max_body_bytes,
        shutdown_grace_period: args.shutdown_grace_period,
        tls_reload_interval: args.tls_reload_interval,
    };
    let state = Arc::new(State::new(
        mutation,
        args.max_body_bytes,
        args.body_read_timeout,
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(server::serve(options, Arc::new(resolver), state, async {
            secret_inject::signal::shutdown_signal().await;
        }))
        .context("webhook server failed")?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn run_inject(args: &InjectArgs) -> anyhow::Result<ExitCode> {
    let config = args.mutation.config()?;
    let (source, input) = if args.file.as_os_str() == "-" {
        let mut input = String::new();
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read standard input")?;
        ("standard input".to_owned(), input)
    } else {
        let input = std::fs::read_to_string(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
        (args.file.display().to_string(), input)
    };
    let injected = inject_documents(&input, &config).with_context(|| source.clone())?;
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(injected.yaml.as_bytes())
            .and_then(|()| stdout.flush())
            .context("cannot write to standard output")?;
    }
    for warning in &injected.warnings {
        tracing::warn!("{source}: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["10m", "16Mi", "1", "0.5", "1Gi", "100k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Mi", "16MB", "ten", "1.2.3"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
