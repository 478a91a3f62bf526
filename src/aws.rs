//! The one place that builds AWS clients: [`Clients`], one per service and region per run.
//!
//! Credentials come from an explicit chain: environment keys, the shared profile files, IRSA web
//! identity, EKS Pod Identity (the container credentials endpoint), and the node's instance
//! metadata (IMDS) only when [`AwsSettings::allow_instance_metadata`] is set: a pod without its
//! own identity must not silently borrow the node's role. Endpoints come from the SDK's standard
//! `AWS_ENDPOINT_URL*` variables. The HTTP client is rustls with ring, the TLS stack the webhook
//! uses, so the binary carries one. The SDK's own retries are off: callers retry with their own
//! deadline. Every request carries the app name `secret-inject/<version>` in its User-Agent, which
//! CloudTrail records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{AppName, BehaviorVersion, Region, SdkConfig};
use aws_smithy_http_client::Connector;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::errors::error_chain;

/// The application name in every request's User-Agent (and so in CloudTrail).
pub const APP_NAME: &str = concat!("secret-inject-", env!("CARGO_PKG_VERSION"));

/// How long one HTTP attempt (connect, send, read the answer) may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// One attempt of one operation.
    pub attempt: Duration,
}

/// What the AWS configuration is built from.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// Overrides the SDK's region chain.
    pub region: Option<String>,
    /// Connect and attempt timeouts.
    pub timeouts: Timeouts,
    /// Let the credentials chain ask the node's instance metadata service (off by default).
    pub allow_instance_metadata: bool,
}

/// Where the pod's AWS identity comes from, as its environment tells before any call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    EnvironmentKeys,
    /// IRSA: `AWS_ROLE_ARN` and `AWS_WEB_IDENTITY_TOKEN_FILE`.
    WebIdentity {
        /// The role assumed.
        role_arn: String,
        /// The projected ServiceAccount token STS is given.
        token_file: String,
    },
    /// EKS Pod Identity (or ECS): `AWS_CONTAINER_CREDENTIALS_FULL_URI` / `_RELATIVE_URI`.
    ContainerEndpoint {
        /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: the token sent to the endpoint (EKS Pod
        /// Identity projects one), if set.
        token_file: Option<String>,
    },
    /// `AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE` or `AWS_CONFIG_FILE` (stand-alone use).
    Profile,
    /// Nothing in the environment; the node's instance metadata was explicitly allowed.
    InstanceMetadata,
    /// No identity at all.
    None,
}

/// Environment variables that make the chain look for a profile.
const PROFILE_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
];

impl Identity {
    /// Detect the identity from environment variables (`env` looks one up).
    pub fn detect(env: impl Fn(&str) -> Option<String>, allow_instance_metadata: bool) -> Self {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        if set("AWS_ACCESS_KEY_ID").is_some() && set("AWS_SECRET_ACCESS_KEY").is_some() {
            Identity::EnvironmentKeys
        } else if let (Some(role_arn), Some(token_file)) =
            (set("AWS_ROLE_ARN"), set("AWS_WEB_IDENTITY_TOKEN_FILE"))
        {
            Identity::WebIdentity {
                role_arn,
                token_file,
            }
        } else if set("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
            || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
        {
            Identity::ContainerEndpoint {
                token_file: set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            }
        } else if PROFILE_ENV.iter().any(|name| set(name).is_some())
            || set("HOME").is_some_and(|home| {
                std::path::Path::new(&home)
                    .join(".aws/credentials")
                    .is_file()
            })
        {
            Identity::Profile
        } else if allow_instance_metadata {
            Identity::InstanceMetadata
        } else {
            Identity::None
        }
    }

    /// The role, where the environment names one (IRSA).
    pub fn role_arn(&self) -> Option<&str> {
        match self {
            Identity::WebIdentity { role_arn, .. } => Some(role_arn),
            _ => None,
        }
    }

    /// What makes this identity unusable however long one retries, found before any call: a
    /// token file that is missing, unreadable or empty (the kubelet projects it before any
    /// container starts, so a missing one is a misconfiguration, not a delay), or a role that
    /// is not an IAM role ARN.
    pub fn check(&self) -> Result<(), IdentityError> {
        match self {
            Identity::WebIdentity {
                role_arn,
                token_file,
            } => {
                if !is_role_arn(role_arn) {
                    return Err(IdentityError::RoleArn {
                        value: role_arn.clone(),
                    });
                }
                token_problem(token_file).map_or(Ok(()), |problem| {
                    Err(IdentityError::WebIdentityToken {
                        path: token_file.clone(),
                        problem,
                    })
                })
            }
            Identity::ContainerEndpoint {
                token_file: Some(token_file),
            } => token_problem(token_file).map_or(Ok(()), |problem| {
                Err(IdentityError::PodIdentityToken {
                    path: token_file.clone(),
                    problem,
                })
            }),
            _ => Ok(()),
        }
    }
}

/// Why the pod's AWS identity can never work as configured ([`Identity::check`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// IRSA's token file cannot be read.
    #[error("AWS_WEB_IDENTITY_TOKEN_FILE {path}: {problem}")]
    WebIdentityToken {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// IRSA's role is not a role ARN.
    #[error("AWS_ROLE_ARN {value:?} is not an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME)")]
    RoleArn {
        /// The value.
        value: String,
    },
    /// EKS Pod Identity's token file cannot be read.
    #[error("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {problem}")]
    PodIdentityToken {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl IdentityError {
    /// A short name for messages and logs.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::WebIdentityToken { .. } => "WebIdentityTokenUnreadable",
            IdentityError::RoleArn { .. } => "InvalidRoleArn",
            IdentityError::PodIdentityToken { .. } => "PodIdentityTokenUnreadable",
        }
    }
}

/// Why a token file is of no use, if it is not.
fn token_problem(path: &str) -> Option<String> {
    match std::fs::read(path) {
        Ok(token) if token.iter().all(u8::is_ascii_whitespace) => {
            Some("the file is empty".to_owned())
        }
        Ok(_) => None,
        Err(error) => Some(match error.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (the container's user cannot read it)".to_owned()
            }
            _ => format!("cannot be read: {error}"),
        }),
    }
}

/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, as STS takes it.
fn is_role_arn(value: &str) -> bool {
    let fields: Vec<&str> = value.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = fields[..] else {
        return false;
    };
    let name = resource.strip_prefix("role/").unwrap_or("");
    arn == "arn"
        && !partition.is_empty()
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && service == "iam"
        && region.is_empty()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && !name.ends_with('/')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-/".contains(&b))
}

/// The HTTPS client (rustls with ring) that sends through `proxy`. Its connector is built once
/// per connector settings and cached by the client, as the SDK's default client does.
fn https_client(proxy: ProxyConfig) -> SharedHttpClient {
    // `build_with_connector_fn` is the builder's way to a connector with a proxy (hidden from
    // the docs, pinned by Cargo.lock; a change would fail the build, not the behaviour).
    aws_smithy_http_client::Builder::new().build_with_connector_fn(move |settings, components| {
        let mut connector = Connector::builder();
        connector.set_connector_settings(settings.cloned());
        connector.set_sleep_impl(components.and_then(|c| c.sleep_impl()));
        connector
            .proxy_config(proxy.clone())
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build()
    })
}

/// Load the shared AWS configuration.
///
/// Egress proxies: requests to AWS (Secrets Manager, Parameter Store, STS for IRSA) honour
/// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case), as the other AWS SDKs
/// and the CLI do. The node-local credential endpoints (EKS Pod Identity's container credentials
/// endpoint and, when allowed, instance metadata) are always reached directly: a proxy outside
/// the node cannot reach them, and their credentials must not cross it.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let http_client = https_client(ProxyConfig::from_env());
    let node_local = https_client(ProxyConfig::disabled());
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.timeouts.connect)
        .operation_attempt_timeout(settings.timeouts.attempt)
        .build();
    let region = settings.region.clone().map(Region::new);

    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client.clone())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts.clone());
    if let Ok(app_name) = AppName::new(APP_NAME) {
        loader = loader.app_name(app_name);
    }
    // The region: the explicit one, else the environment's (AWS_REGION, AWS_DEFAULT_REGION),
    // else the profile's. Never the instance metadata's: that is the node's, not the pod's.
    let region = match region {
        Some(region) => Some(region),
        None => {
            use aws_config::environment::region::EnvironmentVariableRegionProvider;
            use aws_config::meta::region::RegionProviderChain;
            use aws_config::profile::ProfileFileRegionProvider;
            RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
                .or_else(ProfileFileRegionProvider::new())
                .region()
                .await
        }
    };
    if let Some(region) = &region {
        loader = loader.region(region.clone());
    }
    let provider_config = |client: SharedHttpClient| {
        ProviderConfig::without_region()
            .with_http_client(client)
            .with_retry_config(RetryConfig::disabled())
            .with_timeout_config(timeouts.clone())
            .with_region(region.clone())
    };
    loader = loader.credentials_provider(credentials_chain(
        &provider_config(http_client),
        &provider_config(node_local),
        settings,
    ));
    loader.load().await
}

/// The credentials chain: `config` for providers that call AWS (STS), `node_local` for the
/// endpoints on the node (container credentials, instance metadata).
fn credentials_chain(
    config: &ProviderConfig,
    node_local: &ProviderConfig,
    settings: &AwsSettings,
) -> CredentialsProviderChain {
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_config::{
        ecs::EcsCredentialsProvider, imds, profile::ProfileFileCredentialsProvider,
        web_identity_token::WebIdentityTokenCredentialsProvider,
    };
    let chain = CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else(
        "Profile",
        ProfileFileCredentialsProvider::builder()
            .configure(config)
            .build(),
    )
    .or_else(
        "WebIdentityToken",
        WebIdentityTokenCredentialsProvider::builder()
            .configure(config)
            .build(),
    )
    .or_else(
        "EcsContainer",
        EcsCredentialsProvider::builder()
            .configure(node_local)
            .connect_timeout(settings.timeouts.connect)
            .read_timeout(settings.timeouts.attempt)
            .build(),
    );
    if settings.allow_instance_metadata {
        chain.or_else(
            "Ec2InstanceMetadata",
            imds::credentials::ImdsCredentialsProvider::builder()
                .configure(node_local)
                .build(),
        )
    } else {
        chain
    }
}

/// A Secrets Manager client.
pub fn secrets_manager(config: &SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(config)
}

/// The AWS clients of one run: one per service and region, built on first use from the run's
/// configuration (so all share its credentials provider and cache, and its one STS call), and
/// passed down to every call. Cloning shares them.
#[derive(Clone)]
pub struct Clients(Arc<ClientsInner>);

struct ClientsInner {
    config: SdkConfig,
    secrets_manager: Mutex<BTreeMap<String, aws_sdk_secretsmanager::Client>>,
    ssm: Mutex<BTreeMap<String, aws_sdk_ssm::Client>>,
}

impl Clients {
    /// The clients of a run with this configuration.
    pub fn new(config: SdkConfig) -> Self {
        Self(Arc::new(ClientsInner {
            config,
            secrets_manager: Mutex::default(),
            ssm: Mutex::default(),
        }))
    }

    /// The configuration's own region: where a secret given by name without one is read.
    pub fn region(&self) -> Option<&str> {
        self.0.config.region().map(|r| r.as_ref())
    }

    /// The Secrets Manager client for `region`.
    pub fn secrets_manager(&self, region: &str) -> aws_sdk_secretsmanager::Client {
        let mut clients = self
            .0
            .secrets_manager
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(region.to_owned())
            .or_insert_with(|| secrets_manager_in(&self.0.config, region))
            .clone()
    }

    /// The Systems Manager client for `region`.
    pub fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let mut clients = self.0.ssm.lock().unwrap_or_else(PoisonError::into_inner);
        clients
            .entry(region.to_owned())
            .or_insert_with(|| ssm_in(&self.0.config, region))
            .clone()
    }

    /// How many clients were built so far.
    #[cfg(test)]
    fn built(&self) -> usize {
        self.0.secrets_manager.lock().map_or(0, |m| m.len())
            + self.0.ssm.lock().map_or(0, |m| m.len())
    }
}

/// A Secrets Manager client for `region`, sharing `config`'s credentials.
fn secrets_manager_in(config: &SdkConfig, region: &str) -> aws_sdk_secretsmanager::Client {
    let config = aws_sdk_secretsmanager::config::Builder::from(config)
        .region(aws_sdk_secretsmanager::config::Region::new(
            region.to_owned(),
        ))
        .build();
    aws_sdk_secretsmanager::Client::from_conf(config)
}

/// A Systems Manager client for `region`, sharing `config`'s credentials.
fn ssm_in(config: &SdkConfig, region: &str) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::config::Builder::from(config)
        .region(aws_sdk_ssm::config::Region::new(region.to_owned()))
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// The AWS error code and message, or the kind of failure; never a value.
pub fn describe_error<E, R>(error: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> String
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_secretsmanager::error::SdkError;
    match error {
        SdkError::ServiceError(context) => {
            let err = context.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("ServiceError"),
                err.message().unwrap_or("no message")
            )
        }
        SdkError::TimeoutError(_) => "the call to Secrets Manager timed out".to_owned(),
        // The messages of the causes, in words: never the Debug form of the SDK's structs.
        other => error_chain(other).chars().take(300).collect(),
    }
}

/// A real SDK client over canned HTTP answers, for unit tests of code that takes a client.
/// (aws-smithy-mocks would do, but its test-util features switch on serde_json's
/// `preserve_order` for every test and bench build, which changes what the benches measure.)
#[cfg(test)]
pub(crate) mod canned {
    use std::sync::{Arc, Mutex};

    use aws_credential_types::Credentials;
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;

    /// One canned answer: `Some((status, body))`, or `None` for one that never comes.
    pub type Answer = Option<(u16, String)>;

    /// Answers request n with `script[n]`.
    #[derive(Debug, Clone, Default)]
    pub struct Canned {
        script: Arc<Mutex<Vec<Answer>>>,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl Canned {
        /// A connector that plays `script`.
        pub fn new(script: Vec<Answer>) -> Self {
            Self {
                script: Arc::new(Mutex::new(script)),
                requests: Arc::default(),
            }
        }

        /// A Secrets Manager client in us-east-1 with static credentials, over this connector.
        pub fn secrets_manager(&self) -> aws_sdk_secretsmanager::Client {
            use aws_sdk_secretsmanager::config::{BehaviorVersion, Region, retry::RetryConfig};
            let config = aws_sdk_secretsmanager::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("AKID", "secret", None, None, "canned"))
                .http_client(self.clone())
                .retry_config(RetryConfig::disabled())
                .build();
            aws_sdk_secretsmanager::Client::from_conf(config)
        }

        /// A Systems Manager client answered by the script.
        pub fn ssm(&self) -> aws_sdk_ssm::Client {
            use aws_sdk_ssm::config::{BehaviorVersion, Region, retry::RetryConfig};
            let config = aws_sdk_ssm::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("AKID", "secret", None, None, "canned"))
                .http_client(self.clone())
                .retry_config(RetryConfig::disabled())
                .build();
            aws_sdk_ssm::Client::from_conf(config)
        }

        /// The bodies of the requests so far.
        pub fn requests(&self) -> Vec<String> {
            self.requests.lock().unwrap().clone()
        }
    }

    impl HttpConnector for Canned {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            let body = std::str::from_utf8(request.body().bytes().unwrap_or_default())
                .unwrap_or_default()
                .to_owned();
            self.requests.lock().unwrap().push(body);
            let next = {
                let mut script = self.script.lock().unwrap();
                assert!(!script.is_empty(), "more requests than canned responses");
                script.remove(0)
            };
            match next {
                Some((status, body)) => {
                    HttpConnectorFuture::ready(Ok(aws_smithy_runtime_api::http::Response::new(
                        status.try_into().unwrap(),
                        SdkBody::from(body),
                    )))
                }
                None => HttpConnectorFuture::new(std::future::pending()),
            }
        }
    }

    impl HttpClient for Canned {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn detect(pairs: &[(&str, &str)], imds: bool) -> Identity {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Identity::detect(|name| env.get(name).cloned(), imds)
    }

    #[test]
    fn identity_from_the_environment() {
        assert_eq!(detect(&[], false), Identity::None);
        assert_eq!(detect(&[], true), Identity::InstanceMetadata);
        assert_eq!(
            detect(
                &[
                    ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/app"),
                    ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token")
                ],
                false
            ),
            Identity::WebIdentity {
                role_arn: "arn:aws:iam::123456789012:role/app".to_owned(),
                token_file: "/var/run/token".to_owned(),
            }
        );
        // A role without its token file is not an identity.
        assert_eq!(
            detect(&[("AWS_ROLE_ARN", "arn:aws:iam::1:role/x")], false),
            Identity::None
        );
        assert_eq!(
            detect(
                &[(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                    "http://169.254.170.23/v1/credentials"
                )],
                false
            ),
            Identity::ContainerEndpoint { token_file: None }
        );
        assert_eq!(
            detect(
                &[
                    ("AWS_ACCESS_KEY_ID", "AKIA"),
                    ("AWS_SECRET_ACCESS_KEY", "x")
                ],
                false
            ),
            Identity::EnvironmentKeys
        );
        assert_eq!(detect(&[("AWS_PROFILE", "dev")], false), Identity::Profile);
        assert_eq!(detect(&[("AWS_ACCESS_KEY_ID", "")], false), Identity::None);
    }

    #[test]
    fn identities_that_can_never_work_are_found_before_any_call() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let missing = dir.path().join("missing");
        let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        let irsa = |role: &str, file: &std::path::Path| Identity::WebIdentity {
            role_arn: role.to_owned(),
            token_file: path(file),
        };
        let role = "arn:aws:iam::123456789012:role/app";
        assert_eq!(irsa(role, &token).check(), Ok(()));
        assert_eq!(
            irsa("arn:aws-cn:iam::123456789012:role/team/app-1_x", &token).check(),
            Ok(())
        );
        let error = irsa(role, &missing).check().unwrap_err();
        assert_eq!(error.code(), "WebIdentityTokenUnreadable");
        assert_eq!(
            error.to_string(),
            format!(
                "AWS_WEB_IDENTITY_TOKEN_FILE {}: no such file",
                path(&missing)
            )
        );
        assert!(
            irsa(role, &empty)
                .check()
                .unwrap_err()
                .to_string()
                .ends_with("the file is empty")
        );
        for bad in [
            "webserver-secrets-role",
            "arn:aws:iam::123456789012:user/app",
            "arn:aws:iam::1234:role/app",
            "arn:aws:iam:us-east-1:123456789012:role/app",
            "arn:aws:sts::123456789012:role/app",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/a b",
        ] {
            let error = irsa(bad, &token).check().unwrap_err();
            assert_eq!(error.code(), "InvalidRoleArn", "{bad}");
            assert!(error.to_string().contains(bad), "{error}");
        }
        let pod_identity = |file: Option<&std::path::Path>| Identity::ContainerEndpoint {
            token_file: file.map(path),
        };
        assert_eq!(pod_identity(Some(&token)).check(), Ok(()));
        assert_eq!(pod_identity(None).check(), Ok(()));
        let error = pod_identity(Some(&missing)).check().unwrap_err();
        assert_eq!(error.code(), "PodIdentityTokenUnreadable");
        assert!(error.to_string().contains(&path(&missing)), "{error}");
        assert_eq!(Identity::EnvironmentKeys.check(), Ok(()));
    }

    #[test]
    fn error_chains_are_words_without_debug_forms() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let error = aws_credential_types::provider::error::CredentialsError::provider_error(io);
        let chain = error_chain(&error);
        assert_eq!(
            chain,
            "an error occurred while loading credentials: No such file or directory"
        );
        assert!(!chain.contains('{') && !chain.contains("ProviderError"));
    }

    #[test]
    fn one_client_per_service_and_region() {
        let config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        let clients = Clients::new(config);
        assert_eq!(clients.region(), Some("us-east-1"));
        for region in ["us-east-1", "us-west-2", "us-east-1"] {
            let _ = clients.clone().secrets_manager(region);
        }
        let _ = clients.ssm("us-east-1");
        assert_eq!(clients.built(), 3);
    }

    #[test]
    fn app_name_is_valid() {
        assert!(AppName::new(APP_NAME).is_ok(), "{APP_NAME}");
    }
}
