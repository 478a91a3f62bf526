//! A stand-in for the EKS Pod Identity Webhook, for the webhook-ordering tests against the real
//! API server. The real one (`github.com/aws/amazon-eks-pod-identity-webhook`) is not served by
//! the Go module proxy these machines reach (every version answers 403), so it cannot be built
//! here. This does what it does to a pod whose ServiceAccount carries
//! `eks.amazonaws.com/role-arn` (here: a pod of the named ServiceAccount): every container and
//! init container without `AWS_ROLE_ARN` gets the IRSA env, and the pod gets the projected
//! `aws-iam-token` volume mounted at `/var/run/secrets/eks.amazonaws.com/serviceaccount`.
//!
//! It is served by our own server and router (an [`Endpoint`]) on loopback, registered with a
//! `url` client config, so what is under test is the API server's ordering and reinvocation.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Pod;
use secret_inject::webhook::review::{Envelope, Verdict, invalid, respond, summarize};
use secret_inject::webhook::router::{Endpoint, EndpointFuture};
use secret_inject::webhook::tls::{ReloadingResolver, generate_dev_certificate};
use secret_inject::webhook::{BodyLimits, Router, Server, ServerOptions};
use serde_json::{Value, json};

/// Where the token is mounted, as the real webhook mounts it.
pub const TOKEN_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";

struct IrsaMutation {
    service_account: String,
    role_arn: String,
}

impl Endpoint for IrsaMutation {
    fn name(&self) -> &'static str {
        "irsa-stand-in"
    }

    fn review(&self, body: Bytes) -> EndpointFuture<'_> {
        Box::pin(std::future::ready(self.mutate(&body)))
    }
}

impl IrsaMutation {
    fn mutate(&self, body: &[u8]) -> secret_inject::webhook::review::Reviewed {
        let request = match Envelope::<Pod>::parse(body) {
            Ok(request) => request,
            Err(reason) => return invalid(reason, Default::default()),
        };
        let summary = summarize(&request);
        let uid = request.uid.as_str();
        let Some(pod) = request
            .object
            .as_ref()
            .map(|p| serde_json::to_value(p).unwrap())
        else {
            return respond(uid, Verdict::Allow(&[]), summary);
        };
        if pod["spec"]["serviceAccountName"] != self.service_account.as_str() {
            return respond(uid, Verdict::Allow(&[]), summary);
        }
        let mut ops = Vec::new();
        let has_volume = pod["spec"]["volumes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["name"] == "aws-iam-token"));
        if !has_volume {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": {
                "name": "aws-iam-token",
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token"}}]}
            }}));
        }
        for field in ["initContainers", "containers"] {
            for (i, container) in pod["spec"][field]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let env = container["env"].as_array();
                if env.is_some_and(|e| e.iter().any(|e| e["name"] == "AWS_ROLE_ARN")) {
                    continue;
                }
                let vars = [
                    json!({"name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional"}),
                    json!({"name": "AWS_ROLE_ARN", "value": self.role_arn}),
                    json!({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": format!("{TOKEN_DIR}/token")}),
                ];
                if env.is_none() {
                    ops.push(json!({"op": "add", "path": format!("/spec/{field}/{i}/env"), "value": vars}));
                } else {
                    for var in vars {
                        ops.push(json!({"op": "add", "path": format!("/spec/{field}/{i}/env/-"), "value": var}));
                    }
                }
                let mount =
                    json!({"name": "aws-iam-token", "mountPath": TOKEN_DIR, "readOnly": true});
                if container["volumeMounts"].is_array() {
                    ops.push(json!({"op": "add", "path": format!("/spec/{field}/{i}/volumeMounts/-"), "value": mount}));
                } else {
                    ops.push(json!({"op": "add", "path": format!("/spec/{field}/{i}/volumeMounts"), "value": [mount]}));
                }
            }
        }
        if ops.is_empty() {
            return respond(uid, Verdict::Allow(&[]), summary);
        }
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
        respond(uid, Verdict::patch(&patch, &[]), summary)
    }
}

/// The running stand-in: its URL and the CA that signed its certificate.
pub struct IrsaWebhook {
    pub url: String,
    pub ca_pem: String,
    _runtime: tokio::runtime::Runtime,
    _stop: tokio::sync::mpsc::UnboundedSender<()>,
}

impl IrsaWebhook {
    /// Serve on a free loopback port, mutating pods of `service_account`.
    pub fn start(service_account: &str, role_arn: &str) -> IrsaWebhook {
        let dev = generate_dev_certificate("pod-identity-webhook", "kube-system").unwrap();
        let resolver =
            ReloadingResolver::fixed(dev.cert_pem.as_bytes(), dev.key_pem.as_bytes()).unwrap();
        let router = Router::new(BodyLimits {
            max_bytes: 4 << 20,
            read_timeout: Duration::from_secs(10),
        })
        .route(
            "/mutate",
            IrsaMutation {
                service_account: service_account.to_owned(),
                role_arn: role_arn.to_owned(),
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let options = ServerOptions {
            bind_address: "127.0.0.1".parse().unwrap(),
            port: 0,
            admin_port: 0,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace_period: Duration::from_secs(1),
            tls_reload_interval: Duration::from_secs(3600),
        };
        let server = runtime
            .block_on(Server::bind(options, Arc::new(resolver), Arc::new(router)))
            .unwrap();
        let address: SocketAddr = server.bound().webhook;
        let (stop, stopped) = tokio::sync::mpsc::unbounded_channel::<()>();
        runtime.spawn(server.run(stopped));
        IrsaWebhook {
            url: format!("https://127.0.0.1:{}/mutate", address.port()),
            ca_pem: dev.ca_pem,
            _runtime: runtime,
            _stop: stop,
        }
    }
}
