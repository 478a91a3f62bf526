//! The annotation grammar: every annotation key lives here, and this is the only module that
//! reads raw annotation strings. [`InjectionSpec::from_annotations`] turns a pod's annotations
//! into a validated, typed spec; everything downstream takes the spec.
//!
//! The keys and defaults are the AWS "Secrets Controller" proof of concept's contract, so a
//! manifest written for it works unchanged.

use std::collections::{BTreeMap, HashMap, HashSet};

pub mod allow;
mod arn;
pub mod limits;
mod path;
mod select;
pub mod size;

pub use arn::{ParameterArn, SecretArn, SourceArn, is_region, is_secret_name, partition_of_region};
pub use limits::{Limit, LimitError, Limits};
pub use path::{AGENT_BINARY_PATH, API_TOKEN_DIR, CA_BUNDLE_PATH, MountPath, RelativeFileName};
pub use select::{
    EnvBinding, KeySelector, OutputFormat, SecretName, VersionSelector, is_env_var_name,
};

/// Prefix shared by every annotation key of this project.
pub const PREFIX: &str = "secrets.k8s.aws/";
/// Opt-in / opt-out switch: `enabled` or `disabled` (seed contract).
pub const INJECTOR_WEBHOOK: &str = "secrets.k8s.aws/sidecarInjectorWebhook";
/// ARN of the Secrets Manager secret (seed contract) or Systems Manager parameter to fetch;
/// `secret-arn.<n>` for a pod's secret named `<n>`.
pub const SECRET_ARN: &str = "secrets.k8s.aws/secret-arn";
/// Absolute path where the in-memory volume is mounted in the app containers (seed contract).
pub const MOUNT_PATH: &str = "secrets.k8s.aws/mount-path";
/// File name of the secret inside the mount path; may hold sub-folders (seed contract).
pub const SECRET_FILENAME: &str = "secrets.k8s.aws/secret-filename";
/// The part of a JSON value to write: a top-level key or a JMESPath expression.
pub const SECRET_KEY: &str = "secrets.k8s.aws/secret-key";
/// How the value is written: `raw`, `json`, `env` or `split`.
pub const SECRET_FORMAT: &str = "secrets.k8s.aws/secret-format";
/// Version stage (Secrets Manager) or label (Parameter Store) to fetch.
pub const VERSION_STAGE: &str = "secrets.k8s.aws/version-stage";
/// Version id (Secrets Manager) or version number (Parameter Store) to fetch.
pub const VERSION_ID: &str = "secrets.k8s.aws/version-id";
/// `VAR=key[,VAR=key...]`: env vars for the app containers, read from the secret's JSON keys.
pub const ENV: &str = "secrets.k8s.aws/env";
/// Names of the containers that get the mount (and the env vars).
pub const CONTAINERS: &str = "secrets.k8s.aws/containers";
/// A region holding replicas of the pod's Secrets Manager secrets.
pub const FAILOVER_REGION: &str = "secrets.k8s.aws/failover-region";
/// Keep the files current: how often to check for new versions (Go duration, 30s to 24h).
pub const REFRESH_INTERVAL: &str = "secrets.k8s.aws/refresh-interval";
/// After a change, send this signal (`HUP`, `USR1`, ...) to [`RELOAD_PROCESS`].
pub const RELOAD_SIGNAL: &str = "secrets.k8s.aws/reload-signal";
/// The name of the process (as in `/proc/PID/comm`) that gets [`RELOAD_SIGNAL`].
pub const RELOAD_PROCESS: &str = "secrets.k8s.aws/reload-process";
/// After a change, POST to this loopback URL (`http://127.0.0.1:9090/-/reload`).
pub const RELOAD_URL: &str = "secrets.k8s.aws/reload-url";
/// After a change, restart all of the pod's containers in place (`true`), so env vars from
/// `env.<n>` are read again: the `RestartAllContainers` restart rule (Kubernetes 1.36+).
pub const RESTART_ON_CHANGE: &str = "secrets.k8s.aws/restart-on-change";
/// Serve the rotation sidecar's Prometheus metrics on this port (1024 to 65535), on loopback
/// unless [`METRICS_ADDRESS`] says `pod`. Needs [`REFRESH_INTERVAL`]: an init-only agent exits.
pub const METRICS_PORT: &str = "secrets.k8s.aws/metrics-port";
/// Where the rotation sidecar's metrics listen: `loopback` (the pod's own containers only) or
/// `pod` (the pod IP, for a PodMonitor; the webhook adds a container port named
/// `agent-metrics`).
pub const METRICS_ADDRESS: &str = "secrets.k8s.aws/metrics-address";
/// The `sizeLimit` of the pod's in-memory secret volume (a quantity such as `16Mi`), instead of
/// the size the webhook computes from the pod's secrets; it counts against the pod's memory.
pub const VOLUME_SIZE_LIMIT: &str = "secrets.k8s.aws/volume-size-limit";
/// Where the injected init container goes among existing init containers: `first` or `last`.
pub const INIT_CONTAINER_POSITION: &str = "secrets.k8s.aws/init-container-position";
/// Written by the webhook: marks a pod as already injected (idempotency).
pub const STATUS: &str = "secrets.k8s.aws/status";
/// Value of [`STATUS`] after injection.
pub const STATUS_INJECTED: &str = "injected";
/// On a **Namespace**, not a pod (set by cluster admins; pod authors cannot edit namespaces):
/// the comma-separated patterns of the `secret-arn` values its pods may name
/// ([`allow`] has the grammar; the chart's ValidatingAdmissionPolicy enforces it). A pod
/// carrying this key gains nothing: the policy reads the pod's namespace.
pub const ALLOWED_SECRETS: &str = "secrets.k8s.aws/allowed-secrets";
/// Label on a Kubernetes Secret that asks the secret writer to store it in Secrets Manager.
pub const STORE_LABEL: &str = "secrets.k8s.aws/store";
/// The one value of [`STORE_LABEL`].
pub const STORE_SECRETS_MANAGER: &str = "secretsmanager";

/// Label of a Namespace whose pods are never injected: `disabled` (the chart's webhook
/// configuration skips such namespaces).
pub const NAMESPACE_INJECTION_LABEL: &str = "secrets.k8s.aws/injection";
/// Top-level key of the JSON the secret writer stores, listing the keys whose values are
/// base64 (they were not UTF-8); a consumer decodes exactly those.
pub const BASE64_KEYS: &str = "secrets.k8s.aws/base64-keys";
/// Annotation of the chart's generated TLS Secret: when its certificate expires.
pub const TLS_NOT_AFTER: &str = "secrets.k8s.aws/tls-not-after";
/// Annotation of the chart's generated TLS Secret: the DNS names its certificate holds.
pub const TLS_DNS_NAMES: &str = "secrets.k8s.aws/tls-dns-names";

/// Keys under [`PREFIX`] that the product uses on other objects than pods (the secret writer
/// writes [`SECRET_ARN`] and [`VERSION_ID`] on Secrets, keys of the grammar), with what each
/// is: on a pod they do nothing.
pub const OTHER_KEYS: &[(&str, &str)] = &[
    (
        STORE_LABEL,
        "the label of a Kubernetes Secret that the secret writer stores in Secrets Manager",
    ),
    (
        NAMESPACE_INJECTION_LABEL,
        "the label of a Namespace whose pods are not injected; a pod opts out with \
         secrets.k8s.aws/sidecarInjectorWebhook: disabled",
    ),
    (
        BASE64_KEYS,
        "a key of the JSON value the secret writer stores",
    ),
    (TLS_NOT_AFTER, "an annotation of the chart's TLS Secret"),
    (TLS_DNS_NAMES, "an annotation of the chart's TLS Secret"),
    (
        ALLOWED_SECRETS,
        "the annotation of a Namespace that lists the secrets its pods may name (set by \
         cluster admins)",
    ),
];

/// Default mount path (seed contract).
pub const DEFAULT_MOUNT_PATH: &str = "/tmp";
/// Default file name of the unnamed secret (seed contract); a named secret's is its name.
pub const DEFAULT_SECRET_FILENAME: &str = "secret";
/// Version stage fetched from Secrets Manager when none is given.
pub const DEFAULT_VERSION_STAGE: &str = "AWSCURRENT";
/// Largest secret value Secrets Manager stores (its quota): the agent writes no larger one and
/// the secret writer stores no larger one.
pub const MAX_SECRET_BYTES: usize = 65_536;
/// Largest env file the kubelet reads (the agent writes no larger `..data/..env`).
pub const MAX_ENV_FILE_BYTES: usize = 64 * 1024;
/// Most secrets one pod may name by default (`--max-secrets`).
pub const MAX_SECRETS: usize = limits::defaults::SECRETS;

/// Keys that describe one secret: `<key>` for the unnamed secret, `<key>.<n>` for secret `<n>`.
pub const SECRET_KEYS: &[&str] = &[
    SECRET_ARN,
    SECRET_FILENAME,
    SECRET_KEY,
    SECRET_FORMAT,
    VERSION_STAGE,
    VERSION_ID,
    ENV,
];

/// Keys that describe the pod (no `.<n>` suffix).
pub const POD_KEYS: &[&str] = &[
    INJECTOR_WEBHOOK,
    MOUNT_PATH,
    CONTAINERS,
    FAILOVER_REGION,
    REFRESH_INTERVAL,
    RELOAD_SIGNAL,
    RELOAD_PROCESS,
    RELOAD_URL,
    RESTART_ON_CHANGE,
    METRICS_PORT,
    METRICS_ADDRESS,
    INIT_CONTAINER_POSITION,
    VOLUME_SIZE_LIMIT,
    STATUS,
];

/// What a pod's annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The pod does not ask for injection (or opts out): leave it alone.
    None,
    /// The pod was injected before: only keep it consistent.
    AlreadyInjected(InjectionSpec),
    /// Inject the pod.
    Inject(InjectionSpec),
}

/// A validated injection request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectionSpec {
    /// The secrets to fetch: the unnamed (seed) secret first, then by name.
    pub secrets: Vec<SecretSpec>,
    /// Where the volume is mounted.
    pub mount_path: MountPath,
    /// The containers that get the mount and the env vars; `None`: every app container and the
    /// init containers after ours.
    pub containers: Option<Vec<String>>,
    /// A region holding replicas of the Secrets Manager secrets.
    pub failover_region: Option<String>,
    /// Where the init container goes.
    pub position: InitContainerPosition,
    /// Keep the files current after start (`None`: fetch once).
    pub refresh: Option<Refresh>,
    /// The volume's size the pod states ([`VOLUME_SIZE_LIMIT`]), in bytes; `None`: the
    /// operator's `--volume-size-limit`.
    pub volume_size: Option<u64>,
}

/// Rotation: how often to look for new versions and what to do after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    /// The interval (30 s to 24 h).
    pub interval: std::time::Duration,
    /// Signal a process after a change.
    pub signal: Option<ReloadSignal>,
    /// POST to a loopback URL after a change.
    pub url: Option<String>,
    /// Restart all of the pod's containers after a change.
    pub restart: bool,
    /// Serve Prometheus metrics on this port ([`METRICS_PORT`]; in a plan, the pod's or the
    /// operator's `--sidecar-metrics-port`); `None`: no metrics.
    pub metrics_port: Option<u16>,
    /// Where the metrics listen ([`METRICS_ADDRESS`]); `None`: the operator's default (in a
    /// plan: loopback).
    pub metrics_address: Option<MetricsAddress>,
}

/// Where the rotation sidecar's metrics listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddress {
    /// `127.0.0.1`: the pod's own containers only.
    Loopback,
    /// Every address of the pod (the pod IP), for a PodMonitor.
    Pod,
}

impl MetricsAddress {
    /// As written in [`METRICS_ADDRESS`] and carried to the agent.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsAddress::Loopback => "loopback",
            MetricsAddress::Pod => "pod",
        }
    }

    /// Parse `loopback` or `pod`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "loopback" => Some(MetricsAddress::Loopback),
            "pod" => Some(MetricsAddress::Pod),
            _ => None,
        }
    }
}

/// Lowest [`METRICS_PORT`]: the agent runs as a non-root user, which cannot bind below it.
pub const MIN_METRICS_PORT: u16 = 1024;

/// The rotation sidecar's metrics port: a number from [`MIN_METRICS_PORT`] to 65535.
pub fn parse_metrics_port(value: &str) -> Option<u16> {
    let valid = !value.is_empty() && value.len() <= 5 && value.bytes().all(|b| b.is_ascii_digit());
    value
        .parse::<u16>()
        .ok()
        .filter(|port| valid && *port >= MIN_METRICS_PORT)
}

/// A signal for a named process of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSignal {
    /// The signal's name without `SIG`: `HUP`, `USR1`, `USR2`, `INT`, `QUIT`, `TERM`, `WINCH`.
    pub signal: String,
    /// The process name, as in `/proc/PID/comm` (at most 15 characters).
    pub process: String,
}

/// Bounds of [`REFRESH_INTERVAL`].
pub const MIN_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);
/// Bounds of [`REFRESH_INTERVAL`].
pub const MAX_REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Signals [`RELOAD_SIGNAL`] may name.
pub const RELOAD_SIGNALS: &[&str] = &["HUP", "USR1", "USR2", "INT", "QUIT", "TERM", "WINCH"];

/// One secret of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// Its name: `None` for the seed's un-suffixed keys.
    pub name: Option<SecretName>,
    /// The secret or parameter.
    pub source: SourceArn,
    /// The version; `None`: `AWSCURRENT` for Secrets Manager, the latest for a parameter.
    pub version: Option<VersionSelector>,
    /// The file (or, for `split`, the directory) relative to the mount path.
    pub file_name: RelativeFileName,
    /// The part of a JSON value to use.
    pub key: Option<KeySelector>,
    /// How to write it.
    pub format: OutputFormat,
    /// Env vars fed from it.
    pub env: Vec<EnvBinding>,
}

impl SecretSpec {
    /// The annotation key `base` as written for this secret (`base` or `base.<n>`).
    pub fn key_of(&self, base: &str) -> String {
        annotation_key(base, self.name.as_ref().map(SecretName::as_str))
    }

    /// How messages name this secret: `db` or, for the unnamed one, its annotation key.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("secret {name}"),
            None => format!("the secret of {SECRET_ARN}"),
        }
    }
}

/// `base` for the unnamed secret, `base.<n>` for secret `<n>`.
pub fn annotation_key(base: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{base}.{name}"),
        None => base.to_owned(),
    }
}

/// Where the injected init container goes among the pod's existing init containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitContainerPosition {
    /// Before every existing init container (default). Service-mesh init containers such as
    /// `istio-init` install an iptables redirect that would send our call to AWS into a proxy
    /// that is not running yet; running first avoids that, and lets every later init container
    /// read the secret.
    #[default]
    First,
    /// After every existing init container (for pods whose own init containers must run
    /// before the secret is fetched, e.g. to set up networking we depend on).
    Last,
}

/// An annotation that is present but wrong. The message names the annotation, what is wrong and
/// how to fix it; it is shown to the user by `kubectl apply` as the admission denial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {problem}; {fix}")]
pub struct AnnotationError {
    /// The annotation key.
    pub key: String,
    /// What is wrong with its value.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl AnnotationError {
    fn new(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The same error, reported for the annotation key as written (`secret-arn.db`).
    fn at(mut self, key: &str) -> Self {
        self.key = key.to_owned();
        self
    }
}

/// Why a pod's annotations cannot be injected: an annotation is wrong, or the pod asks for more
/// than a limit allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// An annotation is wrong.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// Over a limit (checked before the annotations are parsed).
    #[error(transparent)]
    Limit(#[from] LimitError),
}

impl From<LimitError> for AnnotationError {
    /// A limit of the grammar, reported as a problem of the annotation it counts.
    fn from(error: LimitError) -> Self {
        let key = match error.limit {
            Limit::Secrets => SECRET_ARN,
            Limit::EnvBindings => ENV,
            Limit::Containers => CONTAINERS,
            Limit::AnnotationBytes | Limit::PatchBytes => "metadata.annotations",
        };
        AnnotationError {
            key: key.to_owned(),
            problem: format!(
                "{} {}, more than the limit of {} (--{}, {})",
                error.found,
                error.limit.unit(),
                error.max,
                error.limit.flag(),
                error.limit.env()
            ),
            fix: error.fix,
        }
    }
}

/// Check what a pod that opts in asks for against the limits, by counting, before anything is
/// parsed: the bytes of all its annotations (as the API server counts them), its secrets (the
/// `secret-arn` keys), its env bindings (the items of its `env` values) and the names in
/// `containers`. One pass over the annotations, no allocation.
fn check_limits(annotations: &BTreeMap<String, String>, limits: &Limits) -> Result<(), LimitError> {
    let arn_base = &SECRET_ARN[PREFIX.len()..];
    let env_base = &ENV[PREFIX.len()..];
    let items = |value: &str| value.bytes().filter(|b| *b == b',').count() + 1;
    let (mut bytes, mut secrets, mut bindings, mut names) = (0usize, 0, 0, 0);
    for (key, value) in annotations {
        bytes = bytes.saturating_add(key.len() + value.len());
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let base = rest.split_once('.').map_or(rest, |(base, _)| base);
        if base == arn_base {
            secrets += 1;
        } else if base == env_base {
            bindings += items(value);
        } else if key == CONTAINERS {
            names = items(value);
        }
    }
    Limit::AnnotationBytes.check(
        limits,
        bytes,
        || "metadata.annotations".to_owned(),
        || {
            "remove annotations or shorten their values (Kubernetes itself stores at most \
             256 KiB of annotations per object)"
                .to_owned()
        },
    )?;
    Limit::Secrets.check(
        limits,
        secrets,
        || format!("annotations {SECRET_ARN} and {SECRET_ARN}.<name>"),
        || "split the secrets across pods, or store related values in one JSON secret".to_owned(),
    )?;
    Limit::EnvBindings.check(
        limits,
        bindings,
        || format!("annotations {ENV} and {ENV}.<name>"),
        || {
            "bind fewer env vars, or read the values from the secret's file (secret-format env \
             writes a dotenv file the app can source)"
                .to_owned()
        },
    )?;
    Limit::Containers.check(
        limits,
        names,
        || format!("annotation {CONTAINERS}"),
        || "list each container that gets the secrets once".to_owned(),
    )
}

/// The annotations with our prefix, split into pod keys and per-secret groups.
struct Annotations<'a> {
    pod: BTreeMap<&'static str, &'a str>,
    /// Per secret name (`None`: un-suffixed), per base key: the value.
    secrets: BTreeMap<Option<&'a str>, BTreeMap<&'static str, &'a str>>,
}

impl<'a> Annotations<'a> {
    fn split(annotations: &'a BTreeMap<String, String>) -> Result<Self, AnnotationError> {
        let mut pod = BTreeMap::new();
        let mut secrets: BTreeMap<_, BTreeMap<_, _>> = BTreeMap::new();
        for (key, value) in annotations {
            match Key::of(key) {
                None => {}
                Some(Ok(Key::Secret(base, name))) => {
                    secrets
                        .entry(name)
                        .or_default()
                        .insert(base, value.as_str());
                }
                Some(Ok(Key::Pod(base))) => {
                    pod.insert(base, value.as_str());
                }
                Some(Err(problem)) => return Err(problem.error(key)),
            }
        }
        Ok(Self { pod, secrets })
    }

    fn opts_in(&self) -> bool {
        self.secrets
            .values()
            .any(|keys| keys.contains_key(SECRET_ARN))
    }
}

/// An annotation key of the grammar.
enum Key<'a> {
    /// A key of one secret: its base key, and the secret's name (`None`: the unnamed secret).
    Secret(&'static str, Option<&'a str>),
    /// A key of the pod.
    Pod(&'static str),
}

/// Why a key with our prefix is not a key of the grammar; the message is built only when
/// asked for ([`KeyProblem::error`]).
#[derive(Debug, Clone, Copy)]
enum KeyProblem {
    /// No key of ours, nor close to one.
    Unknown,
    /// A per-secret key whose `.<n>` is not a secret name.
    BadName,
    /// A pod key with a `.<n>` suffix.
    PodKeyWithName(&'static str),
    /// A key the product uses on another object ([`OTHER_KEYS`]).
    Elsewhere(&'static str),
}

impl Key<'_> {
    /// What `key` is: `None` when it lacks our prefix. No allocation.
    fn of(key: &str) -> Option<Result<Key<'_>, KeyProblem>> {
        let rest = key.strip_prefix(PREFIX)?;
        let (base, name) = match rest.split_once('.') {
            Some((base, name)) => (base, Some(name)),
            None => (rest, None),
        };
        let full_base = |known: &&&'static str| known[PREFIX.len()..] == *base;
        Some(if let Some(known) = SECRET_KEYS.iter().find(full_base) {
            match name {
                Some(name) if !SecretName::is_valid(name) => Err(KeyProblem::BadName),
                _ => Ok(Key::Secret(known, name)),
            }
        } else if let Some(known) = POD_KEYS.iter().find(full_base) {
            match name {
                Some(_) => Err(KeyProblem::PodKeyWithName(known)),
                None => Ok(Key::Pod(known)),
            }
        } else if let Some((_, purpose)) = OTHER_KEYS.iter().find(|(other, _)| *other == key) {
            Err(KeyProblem::Elsewhere(purpose))
        } else {
            Err(KeyProblem::Unknown)
        })
    }
}

impl KeyProblem {
    /// The problem of `key`, with its fix.
    fn error(self, key: &str) -> AnnotationError {
        match self {
            KeyProblem::Unknown => unknown_key(key),
            KeyProblem::BadName => {
                // The suffix after the base key's dot (the prefix has dots of its own).
                let name = key
                    .strip_prefix(PREFIX)
                    .and_then(|k| k.split_once('.'))
                    .map_or("", |(_, name)| name);
                AnnotationError::new(
                    quote(key).trim_matches('"'),
                    SecretName::parse(name).err().unwrap_or_default(),
                    "rename it, e.g. secrets.k8s.aws/secret-arn.db",
                )
            }
            KeyProblem::PodKeyWithName(known) => AnnotationError::new(
                quote(key).trim_matches('"'),
                "describes the whole pod and takes no .<name> suffix",
                format!("use {known}"),
            ),
            KeyProblem::Elsewhere(purpose) => AnnotationError::new(
                key,
                format!("is not read on pods: it is {purpose}"),
                "remove it from the pod",
            ),
        }
    }
}

/// Most ignored keys [`ignored_keys`] describes one by one; the rest are counted.
pub const MAX_IGNORED_KEYS: usize = 5;

/// The annotations with our prefix that the grammar does not know, on a pod that is not
/// injected (a pod that opts in is denied for them instead): what is wrong with each of the
/// first [`MAX_IGNORED_KEYS`], closest known key included, and how many more there are. Without
/// such keys: one pass over the keys, no allocation.
pub fn ignored_keys(
    annotations: Option<&BTreeMap<String, String>>,
) -> (Vec<AnnotationError>, usize) {
    let mut described = Vec::new();
    let mut more = 0;
    for key in annotations.into_iter().flat_map(BTreeMap::keys) {
        if let Some(Err(problem)) = Key::of(key) {
            if described.len() < MAX_IGNORED_KEYS {
                described.push(problem.error(key));
            } else {
                more += 1;
            }
        }
    }
    (described, more)
}

impl InjectionSpec {
    /// Parse and validate a pod's annotations within the default [`Limits`]; a limit is
    /// reported as a problem of the annotation it counts.
    pub fn from_annotations(
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<Request, AnnotationError> {
        Self::from_annotations_within(annotations, &Limits::default()).map_err(|e| match e {
            SpecError::Annotation(e) => e,
            SpecError::Limit(e) => e.into(),
        })
    }

    /// Parse and validate a pod's annotations. A pod that opts in is first checked against
    /// `limits` by counting ([`Limit`]); a pod that does not costs one pass over its keys.
    pub fn from_annotations_within(
        annotations: Option<&BTreeMap<String, String>>,
        limits: &Limits,
    ) -> Result<Request, SpecError> {
        let Some(annotations) = annotations else {
            return Ok(Request::None);
        };
        let switch = match annotations.get(INJECTOR_WEBHOOK).map(String::as_str) {
            None => None,
            Some("enabled") => Some(true),
            Some("disabled") => Some(false),
            Some(other) => {
                return Err(AnnotationError::new(
                    INJECTOR_WEBHOOK,
                    format!("value {} is not recognised", quote(other)),
                    "use \"enabled\" or \"disabled\"",
                )
                .into());
            }
        };
        if switch == Some(false) {
            return Ok(Request::None);
        }
        let opts_in = annotations.iter().any(|(key, _)| {
            key.strip_prefix(SECRET_ARN)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        });
        if switch.is_none() && !opts_in {
            // Not ours to check: a pod that does not opt in is left alone.
            return Ok(Request::None);
        }
        check_limits(annotations, limits)?;
        Ok(Self::parse(annotations)?)
    }

    /// Parse the annotations of a pod that opts in, once they are within the limits.
    fn parse(annotations: &BTreeMap<String, String>) -> Result<Request, AnnotationError> {
        let ours = Annotations::split(annotations)?;
        if !ours.opts_in() {
            return Err(AnnotationError::new(
                SECRET_ARN,
                format!("is missing, but {INJECTOR_WEBHOOK} is \"enabled\""),
                "add the ARN of the Secrets Manager secret to fetch (secret-arn, or secret-arn.<name> \
                 for each of several), or remove the opt-in annotation",
            ));
        }
        let get = |key: &str| ours.pod.get(key).copied();
        let mut secrets = Vec::with_capacity(ours.secrets.len());
        for (name, keys) in &ours.secrets {
            secrets.push(SecretSpec::parse(*name, keys)?);
        }
        check_overlaps(&secrets)?;
        let spec = InjectionSpec {
            secrets,
            mount_path: match get(MOUNT_PATH) {
                Some(value) => MountPath::parse(value)?,
                None => MountPath::default(),
            },
            containers: get(CONTAINERS).map(parse_containers).transpose()?,
            failover_region: match get(FAILOVER_REGION) {
                None => None,
                Some(region) if is_region(region) => Some(region.to_owned()),
                Some(other) => {
                    return Err(AnnotationError::new(
                        FAILOVER_REGION,
                        format!("{} is not a region", quote(other)),
                        "give the region that holds replicas of the secrets, such as us-west-2",
                    ));
                }
            },
            refresh: None,
            volume_size: get(VOLUME_SIZE_LIMIT).map(parse_volume_size).transpose()?,
            position: match get(INIT_CONTAINER_POSITION) {
                None | Some("first") => InitContainerPosition::First,
                Some("last") => InitContainerPosition::Last,
                Some(other) => {
                    return Err(AnnotationError::new(
                        INIT_CONTAINER_POSITION,
                        format!("value {} is not recognised", quote(other)),
                        "use \"first\" (default) or \"last\"",
                    ));
                }
            },
        };
        if let Some(region) = &spec.failover_region
            && let Some(secret) = spec.secrets.iter().find(
                |s| matches!(&s.source, SourceArn::SecretsManager(arn) if arn.region() == region),
            )
        {
            return Err(AnnotationError::new(
                FAILOVER_REGION,
                format!(
                    "{region} is the region of {} itself",
                    secret.key_of(SECRET_ARN)
                ),
                "give the region that holds the replicas, or remove the annotation",
            ));
        }
        check_partitions(&spec)?;
        let mut spec = spec;
        spec.refresh = parse_refresh(&get)?;
        if get(STATUS) == Some(STATUS_INJECTED) {
            Ok(Request::AlreadyInjected(spec))
        } else {
            Ok(Request::Inject(spec))
        }
    }

    /// Every env var of the pod's secrets, with the secret that feeds it.
    pub fn env_bindings(&self) -> impl Iterator<Item = (&SecretSpec, &EnvBinding)> {
        self.secrets
            .iter()
            .flat_map(|secret| secret.env.iter().map(move |binding| (secret, binding)))
    }
}

impl SecretSpec {
    fn parse(
        name: Option<&str>,
        keys: &BTreeMap<&'static str, &str>,
    ) -> Result<Self, AnnotationError> {
        let key = |base: &str| annotation_key(base, name);
        let Some(arn) = keys.get(SECRET_ARN) else {
            let (base, _) = keys.first_key_value().unwrap_or((&SECRET_FILENAME, &""));
            return Err(AnnotationError::new(
                key(base),
                format!("there is no {}", key(SECRET_ARN)),
                format!(
                    "add {} with the secret's ARN, or remove the annotation",
                    key(SECRET_ARN)
                ),
            ));
        };
        let source = SourceArn::parse(arn).map_err(|e| e.at(&key(SECRET_ARN)))?;
        let name = name.map(|n| SecretName::parse(n).unwrap_or_else(|_| unreachable!()));
        let file_name = match keys.get(SECRET_FILENAME) {
            Some(value) => {
                RelativeFileName::parse(value).map_err(|e| e.at(&key(SECRET_FILENAME)))?
            }
            None => match &name {
                Some(name) => RelativeFileName::parse(name.as_str())
                    .map_err(|e| e.at(&key(SECRET_FILENAME)))?,
                None => RelativeFileName::default(),
            },
        };
        let version = match (keys.get(VERSION_STAGE), keys.get(VERSION_ID)) {
            (Some(_), Some(_)) => {
                return Err(AnnotationError::new(
                    key(VERSION_ID),
                    format!("is set together with {}", key(VERSION_STAGE)),
                    "keep one of them",
                ));
            }
            (Some(stage), None) => {
                Some((VERSION_STAGE, VersionSelector::Stage((*stage).to_owned())))
            }
            (None, Some(id)) => Some((VERSION_ID, VersionSelector::Id((*id).to_owned()))),
            (None, None) => None,
        };
        if let Some((base, version)) = &version {
            let (VersionSelector::Stage(value) | VersionSelector::Id(value)) = version;
            let problem = match (&source, version) {
                (SourceArn::Parameter(_), VersionSelector::Id(id))
                    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    Some(format!("{} is not a parameter version number", quote(id)))
                }
                _ => select::version_problem(value),
            };
            if let Some(problem) = problem {
                return Err(AnnotationError::new(
                    key(base),
                    problem,
                    match source {
                        SourceArn::SecretsManager(_) => {
                            "give a staging label such as AWSCURRENT or AWSPREVIOUS, or a version id"
                        }
                        SourceArn::Parameter(_) => {
                            "give a parameter label (version-stage) or a version number such as 3 (version-id)"
                        }
                    },
                ));
            }
        }
        let format = match keys.get(SECRET_FORMAT) {
            None => OutputFormat::default(),
            Some(value) => OutputFormat::parse(value).ok_or_else(|| {
                AnnotationError::new(
                    key(SECRET_FORMAT),
                    format!("value {} is not recognised", quote(value)),
                    "use raw (default), json, env or split",
                )
            })?,
        };
        let selector = keys
            .get(SECRET_KEY)
            .map(|value| {
                KeySelector::parse(value).map_err(|problem| {
                    AnnotationError::new(
                        key(SECRET_KEY),
                        problem,
                        "give a top-level JSON key such as password, or a JMESPath expression \
                         such as db.hosts[0] (quote keys with other characters than letters, \
                         digits and _: \"my-key\".port)",
                    )
                })
            })
            .transpose()?;
        let env = keys
            .get(ENV)
            .map(|value| {
                EnvBinding::parse_list(value).map_err(|problem| {
                    AnnotationError::new(
                        key(ENV),
                        problem,
                        "write VAR=key[,VAR=key...], e.g. DB_USER=username,DB_PASSWORD=password",
                    )
                })
            })
            .transpose()?
            .unwrap_or_default();
        Ok(SecretSpec {
            name,
            source,
            version: version.map(|(_, v)| v),
            file_name,
            key: selector,
            format,
            env,
        })
    }
}

/// Two secrets writing the same file, or one's file inside the other's, or the same env var
/// twice: denied, naming both annotations. O(n log n) in the secrets and linear in the bindings:
/// ordered component by component, a file name is followed directly by the names inside it.
fn check_overlaps(secrets: &[SecretSpec]) -> Result<(), AnnotationError> {
    let mut by_file: Vec<(usize, &str)> = secrets
        .iter()
        .map(|s| s.file_name.as_str())
        .enumerate()
        .collect();
    by_file.sort_unstable_by(|(_, x), (_, y)| x.split('/').cmp(y.split('/')));
    for pair in by_file.windows(2) {
        let [(i, outer), (j, inner)] = [pair[0], pair[1]];
        let inside = inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !inside {
            continue;
        }
        // Reported on the later secret, as it is written.
        let ((a, pa), (b, pb)) = if i < j {
            ((&secrets[i], outer), (&secrets[j], inner))
        } else {
            ((&secrets[j], inner), (&secrets[i], outer))
        };
        return Err(AnnotationError::new(
            b.key_of(SECRET_FILENAME),
            format!(
                "{} writes {pb:?}, which collides with {pa:?} of {}",
                b.label(),
                a.label()
            ),
            format!(
                "give {} or {} a file name of its own",
                b.key_of(SECRET_FILENAME),
                a.key_of(SECRET_FILENAME)
            ),
        ));
    }
    let mut env: HashMap<&str, &SecretSpec> = HashMap::new();
    for (b, binding) in secrets
        .iter()
        .flat_map(|s| s.env.iter().map(move |binding| (s, binding)))
    {
        // Within one secret, EnvBinding::parse_list has denied a var given twice.
        if let Some(a) = env.insert(&binding.var, b) {
            return Err(AnnotationError::new(
                b.key_of(ENV),
                format!("{} is also set by {}", binding.var, a.key_of(ENV)),
                "give each env var one source",
            ));
        }
    }
    Ok(())
}

/// One pod reads from one partition: its AWS identity (an IAM role) lives in one, and so do a
/// secret's replicas. A secret of another partition than the pod's first, or a failover region
/// outside its secrets' partition, names something the agent can never read (and an ARN
/// `iam-policy` would print that cannot exist).
fn check_partitions(spec: &InjectionSpec) -> Result<(), AnnotationError> {
    let Some(first) = spec.secrets.first() else {
        return Ok(());
    };
    let partition = first.source.partition();
    if let Some(other) = spec
        .secrets
        .iter()
        .find(|s| s.source.partition() != partition)
    {
        return Err(AnnotationError::new(
            other.key_of(SECRET_ARN),
            format!(
                "is in partition {}, but {} is in {partition}; a pod's AWS identity belongs to \
                 one partition",
                other.source.partition(),
                first.key_of(SECRET_ARN)
            ),
            "read secrets of one partition per pod",
        ));
    }
    if let Some(region) = &spec.failover_region
        && let Some(secret) = spec
            .secrets
            .iter()
            .find(|s| matches!(s.source, SourceArn::SecretsManager(_)))
        && let Some(actual) = partition_of_region(region)
        && actual != partition
    {
        let example = arn::example_region(partition)
            .map(|example| format!(" (such as {example})"))
            .unwrap_or_default();
        return Err(AnnotationError::new(
            FAILOVER_REGION,
            format!(
                "{region} is in partition {actual}, but {} is in {partition}; Secrets Manager \
                 replicates a secret only within its partition",
                secret.key_of(SECRET_ARN)
            ),
            format!(
                "give a region of {partition} that holds the replicas{example}, or remove the \
                 annotation"
            ),
        ));
    }
    Ok(())
}

/// The rotation keys: an interval within the bounds; reload actions only with an interval.
fn parse_refresh<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Option<Refresh>, AnnotationError> {
    let Some(value) = get(REFRESH_INTERVAL) else {
        if let Some(key) = [
            RELOAD_SIGNAL,
            RELOAD_PROCESS,
            RELOAD_URL,
            RESTART_ON_CHANGE,
            METRICS_PORT,
            METRICS_ADDRESS,
        ]
        .into_iter()
        .find(|key| get(key).is_some())
        {
            return Err(AnnotationError::new(
                key,
                format!("has no effect without {REFRESH_INTERVAL}"),
                format!("add {REFRESH_INTERVAL} (e.g. 5m) to keep the files current, or remove it"),
            ));
        }
        return Ok(None);
    };
    let interval = crate::duration::parse_go(value).map_err(|problem| {
        AnnotationError::new(
            REFRESH_INTERVAL,
            problem,
            "give a duration from 30s to 24h, e.g. 5m",
        )
    })?;
    if !(MIN_REFRESH..=MAX_REFRESH).contains(&interval) {
        return Err(AnnotationError::new(
            REFRESH_INTERVAL,
            format!("{} is outside 30s to 24h", quote(value)),
            "give a duration from 30s to 24h, e.g. 5m",
        ));
    }
    let signal = match (get(RELOAD_SIGNAL), get(RELOAD_PROCESS)) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(AnnotationError::new(
                RELOAD_SIGNAL,
                format!("is set without {RELOAD_PROCESS}"),
                format!("add {RELOAD_PROCESS} with the name of the process to signal (e.g. nginx)"),
            ));
        }
        (signal, Some(process)) => {
            let signal = signal.unwrap_or("HUP");
            let name = signal.strip_prefix("SIG").unwrap_or(signal);
            if !RELOAD_SIGNALS.contains(&name) {
                return Err(AnnotationError::new(
                    RELOAD_SIGNAL,
                    format!("{} is not a reload signal", quote(signal)),
                    format!("use one of {}", RELOAD_SIGNALS.join(", ")),
                ));
            }
            let valid = !process.is_empty()
                && process.len() <= 15
                && !process.contains('/')
                && !process.chars().any(char::is_control);
            if !valid {
                return Err(AnnotationError::new(
                    RELOAD_PROCESS,
                    format!("{} is not a process name", quote(process)),
                    "give the process's name as ps shows it (at most 15 characters, no /), e.g. nginx",
                ));
            }
            Some(ReloadSignal {
                signal: name.to_owned(),
                process: process.to_owned(),
            })
        }
    };
    let url = get(RELOAD_URL)
        .map(|url| {
            loopback_url(url).map(|_| url.to_owned()).ok_or_else(|| {
                AnnotationError::new(
                    RELOAD_URL,
                    format!("{} is not an http URL on loopback", quote(url)),
                    "give http://127.0.0.1:PORT/PATH (or localhost, [::1]): the pod's own reload endpoint",
                )
            })
        })
        .transpose()?;
    let restart = match get(RESTART_ON_CHANGE) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(AnnotationError::new(
                RESTART_ON_CHANGE,
                format!("value {} is not recognised", quote(other)),
                "use \"true\" or \"false\"",
            ));
        }
    };
    let metrics_port = get(METRICS_PORT)
        .map(|value| {
            parse_metrics_port(value).ok_or_else(|| {
                AnnotationError::new(
                    METRICS_PORT,
                    format!("{} is not a port from 1024 to 65535", quote(value)),
                    "give a port no container of the pod listens on, e.g. 9102 (the agent runs \
                     as a non-root user, so ports below 1024 cannot be bound)",
                )
            })
        })
        .transpose()?;
    let metrics_address = get(METRICS_ADDRESS)
        .map(|value| {
            MetricsAddress::parse(value).ok_or_else(|| {
                AnnotationError::new(
                    METRICS_ADDRESS,
                    format!("value {} is not recognised", quote(value)),
                    "use \"loopback\" (the pod's own containers only) or \"pod\" (the pod IP, \
                     for a PodMonitor)",
                )
            })
        })
        .transpose()?;
    Ok(Some(Refresh {
        interval,
        signal,
        url,
        restart,
        metrics_port,
        metrics_address,
    }))
}

/// The pod's stated volume size: a quantity of bytes, more than 0, at most
/// [`size::MAX_STATED_BYTES`] (it counts against the pod's memory).
fn parse_volume_size(value: &str) -> Result<u64, AnnotationError> {
    let fix = "give a size such as 16Mi, or remove the annotation to let the webhook size the \
               volume from the pod's secrets";
    let bytes = size::parse_bytes(value).map_err(|problem| {
        AnnotationError::new(
            VOLUME_SIZE_LIMIT,
            format!("{} {problem}", quote(value)),
            fix,
        )
    })?;
    if bytes == 0 || bytes > size::MAX_STATED_BYTES {
        return Err(AnnotationError::new(
            VOLUME_SIZE_LIMIT,
            format!(
                "{} is outside 1 byte to {} (the volume counts against the pod's memory)",
                quote(value),
                size::quantity(size::MAX_STATED_BYTES)
            ),
            fix,
        ));
    }
    Ok(bytes)
}

/// `(host, port, path)` of an `http://` URL on loopback (`127.0.0.1`, `localhost`, `[::1]`).
pub fn loopback_url(url: &str) -> Option<(&str, u16, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, port.parse().ok()?),
        _ => (authority, 80),
    };
    let loopback = ["127.0.0.1", "localhost", "[::1]"].contains(&host);
    let clean = path.bytes().all(|b| b.is_ascii_graphic());
    (loopback && clean && port != 0).then_some((host, port, path))
}

/// `a,b,c`: container names (DNS labels), each once, in order.
fn parse_containers(value: &str) -> Result<Vec<String>, AnnotationError> {
    let mut names: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for name in value.split(',').map(str::trim) {
        if SecretName::parse(name).is_err() {
            return Err(AnnotationError::new(
                CONTAINERS,
                format!("{} is not a container name", quote(name)),
                "list the names of the containers that get the secrets, separated by commas",
            ));
        }
        if seen.insert(name) {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// Every key of the grammar, including the one the webhook writes itself.
pub const KNOWN_KEYS: &[&str] = &[
    INJECTOR_WEBHOOK,
    SECRET_ARN,
    MOUNT_PATH,
    SECRET_FILENAME,
    SECRET_KEY,
    SECRET_FORMAT,
    VERSION_STAGE,
    VERSION_ID,
    ENV,
    CONTAINERS,
    FAILOVER_REGION,
    REFRESH_INTERVAL,
    RELOAD_SIGNAL,
    RELOAD_PROCESS,
    RELOAD_URL,
    RESTART_ON_CHANGE,
    METRICS_PORT,
    METRICS_ADDRESS,
    INIT_CONTAINER_POSITION,
    VOLUME_SIZE_LIMIT,
    STATUS,
];

/// Longest unknown key name (without prefix and suffix) compared with the known ones.
const MAX_KEY_GUESS: usize = 64;

/// On a pod that opts in, a key with our prefix that the grammar does not know is a typo that
/// would otherwise be ignored silently: deny it, naming the closest known key.
fn unknown_key(unknown: &str) -> AnnotationError {
    // Compared without the shared prefix, which would make every key look close, and without a
    // `.<name>` suffix.
    let name = &unknown[PREFIX.len()..];
    let (base, suffix) = match name.split_once('.') {
        Some((base, suffix)) => (base, Some(suffix)),
        None => (name, None),
    };
    // A suffix that is no secret name is not repeated; a base much longer than every key is
    // close to none (the distance is at least the difference in length), and the distance costs
    // time and memory in the product of the lengths.
    let suffix = suffix.map(|s| {
        if SecretName::parse(s).is_ok() {
            s
        } else {
            "<name>"
        }
    });
    let closest = (base.len() <= MAX_KEY_GUESS)
        .then_some(KNOWN_KEYS)
        .into_iter()
        .flatten()
        .map(|known| {
            let known_name = &known[PREFIX.len()..];
            (strsim::damerau_levenshtein(base, known_name), *known)
        })
        .min()
        .filter(|(distance, known)| *distance <= (known.len() - PREFIX.len()).div_ceil(3));
    let fix = match closest {
        Some((_, known)) if SECRET_KEYS.contains(&known) => {
            format!("did you mean {}?", annotation_key(known, suffix))
        }
        Some((_, known)) => format!("did you mean {known}?"),
        None => format!("known keys are {}", KNOWN_KEYS.join(", ")),
    };
    AnnotationError::new(
        quote(unknown).trim_matches('"'),
        "is not a secret-inject annotation",
        fix,
    )
}

/// Quote a user value for an error message, shortened so a huge value cannot flood a message.
fn quote(value: &str) -> String {
    const MAX: usize = 120;
    if value.len() <= MAX {
        format!("{value:?}")
    } else {
        let mut end = MAX;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        format!("{:?}... ({} bytes)", &value[..end], value.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str =
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<Request, AnnotationError> {
        InjectionSpec::from_annotations(Some(&annotations(pairs)))
    }

    #[test]
    fn seed_annotations_give_seed_defaults() {
        let Request::Inject(spec) =
            parse(&[(INJECTOR_WEBHOOK, "enabled"), (SECRET_ARN, ARN)]).unwrap()
        else {
            panic!("expected injection");
        };
        assert_eq!(spec.secrets.len(), 1);
        let secret = &spec.secrets[0];
        assert_eq!(secret.source.as_str(), ARN);
        assert_eq!(secret.source.region(), "us-east-1");
        assert_eq!(secret.name, None);
        assert_eq!(secret.version, None);
        assert_eq!(secret.format, OutputFormat::Raw);
        assert_eq!(spec.mount_path.as_str(), "/tmp");
        assert_eq!(secret.file_name.as_str(), "secret");
        assert_eq!(spec.position, InitContainerPosition::First);
        assert_eq!(spec.containers, None);
    }

    const PARAMETER: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/app/url";

    #[test]
    fn named_secrets_parameters_keys_formats_and_env() {
        let Request::Inject(spec) = parse(&[
            (SECRET_ARN, ARN),
            ("secrets.k8s.aws/secret-arn.db", ARN),
            ("secrets.k8s.aws/secret-key.db", "db.password"),
            ("secrets.k8s.aws/secret-format.db", "json"),
            ("secrets.k8s.aws/version-stage.db", "AWSPREVIOUS"),
            ("secrets.k8s.aws/env.db", "DB_USER=username"),
            ("secrets.k8s.aws/secret-arn.url", PARAMETER),
            ("secrets.k8s.aws/version-id.url", "3"),
            ("secrets.k8s.aws/secret-filename.url", "conf/url"),
            (CONTAINERS, "app, sidecar"),
            (FAILOVER_REGION, "us-west-2"),
        ])
        .unwrap() else {
            panic!()
        };
        let names: Vec<Option<&str>> = spec
            .secrets
            .iter()
            .map(|s| s.name.as_ref().map(SecretName::as_str))
            .collect();
        assert_eq!(names, [None, Some("db"), Some("url")]);
        let db = &spec.secrets[1];
        assert_eq!(
            db.file_name.as_str(),
            "db",
            "a named secret's file is its name"
        );
        assert!(db.key.as_ref().unwrap().is_expression());
        assert_eq!(db.format, OutputFormat::Json);
        assert_eq!(
            db.version,
            Some(VersionSelector::Stage("AWSPREVIOUS".into()))
        );
        assert_eq!(db.env[0].var, "DB_USER");
        assert_eq!(db.key_of(ENV), "secrets.k8s.aws/env.db");
        let url = &spec.secrets[2];
        assert!(matches!(url.source, SourceArn::Parameter(_)));
        assert_eq!(url.version, Some(VersionSelector::Id("3".into())));
        assert_eq!(url.file_name.as_str(), "conf/url");
        assert_eq!(
            spec.containers,
            Some(vec!["app".to_owned(), "sidecar".to_owned()])
        );
        assert_eq!(spec.failover_region.as_deref(), Some("us-west-2"));
        // Named secrets alone opt in.
        assert!(matches!(
            parse(&[("secrets.k8s.aws/secret-arn.db", ARN)]),
            Ok(Request::Inject(_))
        ));
    }

    #[test]
    fn every_new_keys_bad_values_are_denied_naming_the_key() {
        let db_arn = ("secrets.k8s.aws/secret-arn.db", ARN);
        for (pairs, key, expect) in [
            (
                vec![("secrets.k8s.aws/secret-arn.db", "nope")],
                "secrets.k8s.aws/secret-arn.db",
                "not an ARN",
            ),
            (
                vec![("secrets.k8s.aws/secret-arn.Db", ARN)],
                "secrets.k8s.aws/secret-arn.Db",
                "the secret name \"Db\" after the dot is not a DNS label",
            ),
            (
                vec![db_arn, ("secrets.k8s.aws/secret-filename.other", "x")],
                "secrets.k8s.aws/secret-filename.other",
                "no secrets.k8s.aws/secret-arn.other",
            ),
            (
                vec![db_arn, ("secrets.k8s.aws/secret-format.db", "yaml")],
                "secrets.k8s.aws/secret-format.db",
                "not recognised",
            ),
            (
                vec![db_arn, ("secrets.k8s.aws/secret-key.db", "")],
                "secrets.k8s.aws/secret-key.db",
                "empty",
            ),
            (
                vec![db_arn, ("secrets.k8s.aws/env.db", "DB-USER=u")],
                "secrets.k8s.aws/env.db",
                "environment variable name",
            ),
            (
                vec![
                    db_arn,
                    ("secrets.k8s.aws/env.db", "A=a"),
                    (SECRET_ARN, ARN),
                    (ENV, "A=b"),
                ],
                "secrets.k8s.aws/env.db",
                "also set by",
            ),
            (
                vec![
                    db_arn,
                    ("secrets.k8s.aws/version-stage.db", "A"),
                    ("secrets.k8s.aws/version-id.db", "B"),
                ],
                "secrets.k8s.aws/version-id.db",
                "together",
            ),
            (
                vec![db_arn, ("secrets.k8s.aws/version-stage.db", "a b")],
                "secrets.k8s.aws/version-stage.db",
                "characters",
            ),
            (
                vec![
                    ("secrets.k8s.aws/secret-arn.p", PARAMETER),
                    ("secrets.k8s.aws/version-id.p", "latest"),
                ],
                "secrets.k8s.aws/version-id.p",
                "version number",
            ),
            (
                vec![db_arn, (SECRET_ARN, ARN), (SECRET_FILENAME, "db")],
                "secrets.k8s.aws/secret-filename.db",
                "collides",
            ),
            (
                vec![db_arn, (SECRET_ARN, ARN), (SECRET_FILENAME, "db/x")],
                "secrets.k8s.aws/secret-filename.db",
                "collides",
            ),
            (
                vec![db_arn, (CONTAINERS, "app,Bad")],
                CONTAINERS,
                "not a container name",
            ),
            (
                vec![db_arn, (FAILOVER_REGION, "mars")],
                FAILOVER_REGION,
                "not a region",
            ),
            (
                vec![db_arn, (FAILOVER_REGION, "us-east-1")],
                FAILOVER_REGION,
                "region of",
            ),
            (
                vec![db_arn, ("secrets.k8s.aws/mount-path.db", "/x")],
                "secrets.k8s.aws/mount-path.db",
                "no .<name> suffix",
            ),
            (
                vec![db_arn, ("secrets.k8s.aws/secret-fromat.db", "json")],
                "secrets.k8s.aws/secret-fromat.db",
                "not a secret-inject annotation",
            ),
        ] {
            let err = parse(&pairs).unwrap_err();
            assert_eq!(err.key, key, "{pairs:?}: {err}");
            assert!(err.problem.contains(expect), "{pairs:?}: {err}");
        }
        for (pairs, key, expect) in [
            (
                vec![db_arn, (REFRESH_INTERVAL, "10s")],
                REFRESH_INTERVAL,
                "outside 30s to 24h",
            ),
            (
                vec![db_arn, (REFRESH_INTERVAL, "25h")],
                REFRESH_INTERVAL,
                "outside 30s to 24h",
            ),
            (
                vec![db_arn, (REFRESH_INTERVAL, "5")],
                REFRESH_INTERVAL,
                "not a duration",
            ),
            (
                vec![db_arn, (RELOAD_URL, "http://127.0.0.1/")],
                RELOAD_URL,
                "without secrets.k8s.aws/refresh-interval",
            ),
            (
                vec![db_arn, (REFRESH_INTERVAL, "5m"), (RELOAD_SIGNAL, "HUP")],
                RELOAD_SIGNAL,
                "without",
            ),
            (
                vec![
                    db_arn,
                    (REFRESH_INTERVAL, "5m"),
                    (RELOAD_SIGNAL, "KILL"),
                    (RELOAD_PROCESS, "x"),
                ],
                RELOAD_SIGNAL,
                "not a reload signal",
            ),
            (
                vec![
                    db_arn,
                    (REFRESH_INTERVAL, "5m"),
                    (RELOAD_PROCESS, "/usr/sbin/nginx"),
                ],
                RELOAD_PROCESS,
                "not a process name",
            ),
            (
                vec![
                    db_arn,
                    (REFRESH_INTERVAL, "5m"),
                    (RELOAD_URL, "http://example.com/reload"),
                ],
                RELOAD_URL,
                "loopback",
            ),
            (
                vec![
                    db_arn,
                    (REFRESH_INTERVAL, "5m"),
                    (RELOAD_URL, "https://127.0.0.1/reload"),
                ],
                RELOAD_URL,
                "loopback",
            ),
            (
                vec![db_arn, (METRICS_PORT, "9102")],
                METRICS_PORT,
                "without secrets.k8s.aws/refresh-interval",
            ),
            (
                vec![db_arn, (REFRESH_INTERVAL, "5m"), (METRICS_PORT, "80")],
                METRICS_PORT,
                "not a port from 1024 to 65535",
            ),
            (
                vec![db_arn, (REFRESH_INTERVAL, "5m"), (METRICS_PORT, "+9102")],
                METRICS_PORT,
                "not a port",
            ),
            (
                vec![db_arn, (REFRESH_INTERVAL, "5m"), (METRICS_PORT, "65536")],
                METRICS_PORT,
                "not a port",
            ),
            (
                vec![
                    db_arn,
                    (REFRESH_INTERVAL, "5m"),
                    (METRICS_ADDRESS, "0.0.0.0"),
                ],
                METRICS_ADDRESS,
                "not recognised",
            ),
        ] {
            let err = parse(&pairs).unwrap_err();
            assert_eq!(err.key, key, "{pairs:?}: {err}");
            assert!(err.problem.contains(expect), "{pairs:?}: {err}");
        }
        let Request::Inject(spec) = parse(&[
            db_arn,
            (REFRESH_INTERVAL, "1h30m"),
            (RELOAD_PROCESS, "nginx"),
            (RELOAD_URL, "http://localhost:9090/-/reload"),
        ])
        .unwrap() else {
            panic!()
        };
        let refresh = spec.refresh.unwrap();
        assert_eq!(refresh.interval, std::time::Duration::from_secs(5400));
        assert_eq!(refresh.signal.unwrap().signal, "HUP", "HUP by default");
        assert_eq!(
            (refresh.metrics_port, refresh.metrics_address),
            (None, None)
        );
        let Request::Inject(spec) = parse(&[
            db_arn,
            (REFRESH_INTERVAL, "5m"),
            (METRICS_PORT, "9102"),
            (METRICS_ADDRESS, "pod"),
        ])
        .unwrap() else {
            panic!()
        };
        let refresh = spec.refresh.unwrap();
        assert_eq!(refresh.metrics_port, Some(9102));
        assert_eq!(refresh.metrics_address, Some(MetricsAddress::Pod));
        assert_eq!(
            loopback_url("http://[::1]:8080"),
            Some(("[::1]", 8080, "/"))
        );
        for bound in ["30s", "24h"] {
            assert!(
                parse(&[db_arn, (REFRESH_INTERVAL, bound)]).is_ok(),
                "{bound}"
            );
        }
        let err = parse(&[db_arn, ("secrets.k8s.aws/secret-fromat.db", "json")]).unwrap_err();
        assert_eq!(err.fix, "did you mean secrets.k8s.aws/secret-format.db?");
        let many: Vec<(String, String)> = (0..=MAX_SECRETS)
            .map(|i| (format!("secrets.k8s.aws/secret-arn.s{i}"), ARN.to_owned()))
            .collect();
        let many: BTreeMap<String, String> = many.into_iter().collect();
        let err = InjectionSpec::from_annotations(Some(&many)).unwrap_err();
        assert_eq!(err.key, SECRET_ARN);
        assert!(
            err.problem
                .contains("101 secrets, more than the limit of 100 (--max-secrets"),
            "{err}"
        );
    }

    #[test]
    fn arn_alone_opts_in_and_disabled_opts_out() {
        assert!(matches!(
            parse(&[(SECRET_ARN, ARN)]),
            Ok(Request::Inject(_))
        ));
        assert_eq!(
            parse(&[(INJECTOR_WEBHOOK, "disabled"), (SECRET_ARN, ARN)]),
            Ok(Request::None)
        );
        assert_eq!(parse(&[("other", "x")]), Ok(Request::None));
        assert_eq!(InjectionSpec::from_annotations(None), Ok(Request::None));
    }

    #[test]
    fn status_marks_already_injected() {
        assert!(matches!(
            parse(&[(SECRET_ARN, ARN), (STATUS, STATUS_INJECTED)]),
            Ok(Request::AlreadyInjected(_))
        ));
    }

    #[test]
    fn opt_in_without_secret_is_denied() {
        let err = parse(&[(INJECTOR_WEBHOOK, "enabled")]).unwrap_err();
        assert_eq!(err.key, SECRET_ARN);
        assert!(err.to_string().contains("is missing"), "{err}");
    }

    #[test]
    fn unknown_switch_value_is_denied() {
        let err = parse(&[(INJECTOR_WEBHOOK, "true"), (SECRET_ARN, ARN)]).unwrap_err();
        assert_eq!(err.key, INJECTOR_WEBHOOK);
        assert!(err.to_string().contains("\"enabled\" or \"disabled\""));
    }

    #[test]
    fn misspelt_keys_on_an_opted_in_pod_are_denied_with_the_closest_key() {
        let err = parse(&[(SECRET_ARN, ARN), ("secrets.k8s.aws/mount-paht", "/s")]).unwrap_err();
        assert_eq!(err.key, "secrets.k8s.aws/mount-paht");
        assert_eq!(
            err.to_string(),
            "annotation secrets.k8s.aws/mount-paht: is not a secret-inject annotation; did you \
             mean secrets.k8s.aws/mount-path?"
        );
        let err = parse(&[
            (INJECTOR_WEBHOOK, "enabled"),
            ("secrets.k8s.aws/secret-ar", ARN),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean secrets.k8s.aws/secret-arn?"),
            "{err}"
        );
        // Far from every key: the list of known keys instead.
        let err = parse(&[(SECRET_ARN, ARN), ("secrets.k8s.aws/colour", "blue")]).unwrap_err();
        assert!(err.fix.starts_with("known keys are "), "{err}");
        // The key the webhook writes is known; pods that do not opt in are not checked.
        assert!(parse(&[(SECRET_ARN, ARN), (STATUS, STATUS_INJECTED)]).is_ok());
        assert_eq!(
            parse(&[("secrets.k8s.aws/mount-paht", "/s")]),
            Ok(Request::None)
        );
        assert!(parse(&[(SECRET_ARN, ARN), ("example.com/mount-paht", "x")]).is_ok());
    }

    #[test]
    fn keys_the_grammar_does_not_know_on_a_pod_that_is_not_injected_are_described() {
        let ignored = |pairs: &[(&str, &str)]| {
            let (described, more) = ignored_keys(Some(&annotations(pairs)));
            (
                described
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                more,
            )
        };
        // The typos of the opt-in key, on a pod with no other opt-in.
        for (typo, closest) in [
            ("secrets.k8s.aws/secret-arns", "secrets.k8s.aws/secret-arn"),
            ("secrets.k8s.aws/secret-ar", "secrets.k8s.aws/secret-arn"),
            (
                "secrets.k8s.aws/secret-arns.db",
                "secrets.k8s.aws/secret-arn.db",
            ),
            (
                "secrets.k8s.aws/sidecarInjectorWebhok",
                "secrets.k8s.aws/sidecarInjectorWebhook",
            ),
        ] {
            assert_eq!(parse(&[(typo, ARN)]), Ok(Request::None), "{typo}");
            let (described, more) = ignored(&[(typo, ARN), ("example.com/x", "1")]);
            assert_eq!(
                described,
                [format!(
                    "annotation {typo}: is not a secret-inject annotation; did you mean {closest}?"
                )]
            );
            assert_eq!(more, 0);
        }
        // Known keys misused, and keys the product uses on other objects.
        let (described, _) = ignored(&[
            ("secrets.k8s.aws/mount-path.db", "/x"),
            ("secrets.k8s.aws/secret-key.Db", "k"),
            (NAMESPACE_INJECTION_LABEL, "disabled"),
            (INJECTOR_WEBHOOK, "disabled"),
        ]);
        assert_eq!(described.len(), 3, "{described:?}");
        assert!(
            described[0].starts_with("annotation secrets.k8s.aws/injection: is not read on pods")
                && described[0].contains("sidecarInjectorWebhook: disabled"),
            "{described:?}"
        );
        assert!(described[1].contains("no .<name> suffix"), "{described:?}");
        assert!(described[2].contains("not a DNS label"), "{described:?}");
        // Every key of the grammar, named forms and the keys the product writes on pods are
        // known: nothing to say, and nothing said about other prefixes.
        let (described, more) = ignored(&[
            (SECRET_ARN, ARN),
            ("secrets.k8s.aws/secret-arn.db", ARN),
            ("secrets.k8s.aws/version-id.db", "v1"),
            ("secrets.k8s.aws/env.db", "A=a"),
            (MOUNT_PATH, "/s"),
            (STATUS, STATUS_INJECTED),
            ("example.com/secret-arns", "x"),
            ("secrets.k8s.aws", "x"),
        ]);
        assert_eq!((described.len(), more), (0, 0), "{described:?}");
        assert_eq!(ignored_keys(None).0.len(), 0);
        // Many: the first few described, the rest counted.
        let many: Vec<(String, String)> = (0..MAX_IGNORED_KEYS + 3)
            .map(|i| (format!("{PREFIX}colour-{i}"), "x".to_owned()))
            .collect();
        let many: BTreeMap<String, String> = many.into_iter().collect();
        let (described, more) = ignored_keys(Some(&many));
        assert_eq!((described.len(), more), (MAX_IGNORED_KEYS, 3));
    }

    /// The list the messages suggest from is the grammar's: every secret and pod key, no other.
    #[test]
    fn known_keys_are_the_secret_and_pod_keys() {
        let known: std::collections::BTreeSet<&str> = KNOWN_KEYS.iter().copied().collect();
        let grammar: std::collections::BTreeSet<&str> =
            SECRET_KEYS.iter().chain(POD_KEYS).copied().collect();
        assert_eq!(known, grammar);
        assert_eq!(known.len(), KNOWN_KEYS.len(), "no key twice");
    }

    #[test]
    fn every_key_the_chart_and_the_manifests_use_is_known_to_the_grammar() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("deploy/secret-inject.yaml")];
        let chart = root.join("charts/secret-inject");
        files.push(chart.join("values.yaml"));
        for entry in std::fs::read_dir(chart.join("templates")).unwrap() {
            files.push(entry.unwrap().path());
        }
        let mut seen = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (at, _) in text.match_indices(PREFIX) {
                let key_end = text[at + PREFIX.len()..]
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
                    .map_or(text.len(), |end| at + PREFIX.len() + end);
                let key = &text[at..key_end];
                if key == PREFIX {
                    continue; // the prefix itself, in the CEL matchConditions
                }
                seen += 1;
                let known = KNOWN_KEYS.contains(&key) || OTHER_KEYS.iter().any(|(k, _)| *k == key);
                assert!(known, "{}: {key} is not a key of src/spec", file.display());
            }
        }
        assert!(seen > 5, "{seen}");
    }

    #[test]
    fn a_failover_region_or_a_secret_of_another_partition_is_denied() {
        const CN: &str = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db-AbCdEf";
        let err = parse(&[(SECRET_ARN, CN), (FAILOVER_REGION, "us-west-2")]).unwrap_err();
        assert_eq!(err.key, FAILOVER_REGION);
        assert_eq!(
            err.to_string(),
            "annotation secrets.k8s.aws/failover-region: us-west-2 is in partition aws, but \
             secrets.k8s.aws/secret-arn is in aws-cn; Secrets Manager replicates a secret only \
             within its partition; give a region of aws-cn that holds the replicas (such as \
             cn-northwest-1), or remove the annotation"
        );
        assert!(parse(&[(SECRET_ARN, CN), (FAILOVER_REGION, "cn-northwest-1")]).is_ok());
        let gov = "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:db-AbCdEf";
        assert!(parse(&[(SECRET_ARN, gov), (FAILOVER_REGION, "us-gov-east-1")]).is_ok());
        let err = parse(&[(SECRET_ARN, gov), (FAILOVER_REGION, "us-east-1")]).unwrap_err();
        assert_eq!(err.key, FAILOVER_REGION);
        // A region of a shape no partition has yet is not refused for it.
        assert!(parse(&[(SECRET_ARN, ARN), (FAILOVER_REGION, "xx-east-1")]).is_ok());
        // Two partitions in one pod.
        let err = parse(&[(SECRET_ARN, ARN), ("secrets.k8s.aws/secret-arn.cn", CN)]).unwrap_err();
        assert_eq!(err.key, "secrets.k8s.aws/secret-arn.cn");
        assert!(
            err.problem
                .starts_with("is in partition aws-cn, but secrets.k8s.aws/secret-arn is in aws"),
            "{err}"
        );
        // The ARN's own region against its partition.
        let err = parse(&[(
            SECRET_ARN,
            "arn:aws-cn:secretsmanager:us-west-2:123456789012:secret:db-AbCdEf",
        )])
        .unwrap_err();
        assert_eq!(err.key, SECRET_ARN);
        assert!(err.problem.contains("which is in partition aws"), "{err}");
    }

    #[test]
    fn a_broken_jmespath_expression_is_denied_naming_the_annotation() {
        let err = parse(&[
            ("secrets.k8s.aws/secret-arn.db", ARN),
            ("secrets.k8s.aws/secret-key.db", "db.hosts[0"),
        ])
        .unwrap_err();
        assert_eq!(err.key, "secrets.k8s.aws/secret-key.db");
        assert!(
            err.problem
                .starts_with("\"db.hosts[0\" is not a valid JMESPath expression: "),
            "{err}"
        );
        // The plain top-level keys stay literal keys.
        for key in ["password", "my-key", "db.pass-word"] {
            assert!(
                parse(&[(SECRET_ARN, ARN), (SECRET_KEY, key)]).is_ok(),
                "{key}"
            );
        }
    }

    fn parse_within(pairs: &[(&str, &str)], limits: &Limits) -> Result<Request, SpecError> {
        InjectionSpec::from_annotations_within(Some(&annotations(pairs)), limits)
    }

    fn limit_of(result: Result<Request, SpecError>) -> LimitError {
        match result {
            Err(SpecError::Limit(error)) => error,
            other => panic!("expected a limit error, got {other:?}"),
        }
    }

    #[test]
    fn limits_are_counted_before_anything_is_parsed_and_the_denial_names_them() {
        let small = Limits {
            annotation_bytes: 400,
            secrets: 2,
            env_bindings: 3,
            containers: 2,
            ..Limits::default()
        };
        // Exactly at every limit: injected.
        let at = [
            ("secrets.k8s.aws/secret-arn.a", ARN),
            ("secrets.k8s.aws/secret-arn.b", ARN),
            ("secrets.k8s.aws/env.a", "A=a,B=b"),
            ("secrets.k8s.aws/env.b", "C=c"),
            (CONTAINERS, "x,y"),
        ];
        assert!(matches!(parse_within(&at, &small), Ok(Request::Inject(_))));
        // Over them, with values that would not even parse: the count comes first.
        let error = limit_of(parse_within(
            &[
                ("secrets.k8s.aws/secret-arn.a", "nope"),
                ("secrets.k8s.aws/secret-arn.b", "nope"),
                ("secrets.k8s.aws/secret-arn.c", "nope"),
            ],
            &small,
        ));
        assert_eq!(
            (error.limit, error.found, error.max),
            (Limit::Secrets, 3, 2)
        );
        assert!(error.field.contains(SECRET_ARN), "{error}");
        let error = limit_of(parse_within(
            &[
                (SECRET_ARN, ARN),
                (ENV, "!!,!!"),
                ("secrets.k8s.aws/env.db", "??,??"),
            ],
            &small,
        ));
        assert_eq!((error.limit, error.found), (Limit::EnvBindings, 4));
        let message = error.to_string();
        assert!(
            message.contains("--max-env-bindings")
                && message.contains("SECRET_INJECT_MAX_ENV_BINDINGS")
                && message.contains("secrets.k8s.aws/env"),
            "{message}"
        );
        let error = limit_of(parse_within(
            &[(SECRET_ARN, ARN), (CONTAINERS, "a,b,c")],
            &small,
        ));
        assert_eq!((error.limit, error.found), (Limit::Containers, 3));
        // The bytes of every annotation count, ours or not, as the API server counts them.
        let long = "x".repeat(400);
        let error = limit_of(parse_within(
            &[(SECRET_ARN, ARN), ("example.com/note", &long)],
            &small,
        ));
        assert_eq!(error.limit, Limit::AnnotationBytes);
        assert_eq!(
            error.found,
            SECRET_ARN.len() + ARN.len() + "example.com/note".len() + 400
        );
        assert_eq!(error.field, "metadata.annotations");
        // A pod that does not opt in is not ours to limit.
        assert_eq!(
            parse_within(&[("example.com/note", &long)], &small),
            Ok(Request::None)
        );
        // The default limits admit the largest pod the grammar describes well: 100 secrets with
        // 5 env vars each.
        let big: Vec<(String, String)> = (0..MAX_SECRETS)
            .flat_map(|i| {
                [
                    (format!("{SECRET_ARN}.s{i}"), ARN.to_owned()),
                    (
                        format!("{ENV}.s{i}"),
                        (0..5)
                            .map(|j| format!("S{i}_V{j}=k{j}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                ]
            })
            .collect();
        let big: BTreeMap<String, String> = big.into_iter().collect();
        let Ok(Request::Inject(spec)) =
            InjectionSpec::from_annotations_within(Some(&big), &Limits::default())
        else {
            panic!("the default limits must admit 100 secrets with 500 env vars")
        };
        assert_eq!(spec.env_bindings().count(), 500);
    }

    #[test]
    fn duplicates_are_found_however_far_apart() {
        // 2,000 distinct env vars over two secrets, then one given by both.
        let wide = Limits {
            env_bindings: 10_000,
            ..Limits::default()
        };
        let list = |from: usize, to: usize| {
            (from..to)
                .map(|i| format!("V{i}=k"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let (a, b) = (list(0, 1000), list(1000, 2000));
        assert!(
            parse_within(
                &[
                    (SECRET_ARN, ARN),
                    (ENV, &a),
                    ("secrets.k8s.aws/secret-arn.db", ARN),
                    ("secrets.k8s.aws/env.db", &b)
                ],
                &wide
            )
            .is_ok()
        );
        let b = format!("{b},V0=other");
        let Err(SpecError::Annotation(error)) = parse_within(
            &[
                (SECRET_ARN, ARN),
                (ENV, &a),
                ("secrets.k8s.aws/secret-arn.db", ARN),
                ("secrets.k8s.aws/env.db", &b),
            ],
            &wide,
        ) else {
            panic!("V0 is bound twice")
        };
        assert_eq!(error.key, "secrets.k8s.aws/env.db");
        assert_eq!(error.problem, "V0 is also set by secrets.k8s.aws/env");
        // A file inside another's directory, with a name that sorts between them ("a-b" sorts
        // before "a/c" byte by byte, after it component by component).
        let error = parse(&[
            ("secrets.k8s.aws/secret-arn.a", ARN),
            ("secrets.k8s.aws/secret-arn.b", ARN),
            ("secrets.k8s.aws/secret-filename.b", "a-b"),
            ("secrets.k8s.aws/secret-arn.c", ARN),
            ("secrets.k8s.aws/secret-filename.c", "a/c"),
        ])
        .unwrap_err();
        assert_eq!(error.key, "secrets.k8s.aws/secret-filename.c");
        assert!(
            error
                .problem
                .contains("\"a/c\", which collides with \"a\" of secret a"),
            "{error}"
        );
        // Siblings that share a prefix do not collide.
        assert!(
            parse(&[
                ("secrets.k8s.aws/secret-arn.a", ARN),
                ("secrets.k8s.aws/secret-arn.ab", ARN),
                ("secrets.k8s.aws/secret-filename.ab", "a-b/c"),
            ])
            .is_ok()
        );
        // The same container named twice is named once.
        let Request::Inject(spec) = parse(&[(SECRET_ARN, ARN), (CONTAINERS, "b,a,b")]).unwrap()
        else {
            panic!()
        };
        assert_eq!(spec.containers, Some(vec!["b".to_owned(), "a".to_owned()]));
    }

    #[test]
    fn a_huge_unknown_key_is_denied_without_a_guess_or_an_echo() {
        let key = format!(
            "{PREFIX}{}.{}",
            "secret-arnx".repeat(10_000),
            "n".repeat(100_000)
        );
        let error = parse(&[(SECRET_ARN, ARN), (&key, "x")]).unwrap_err();
        assert!(error.fix.starts_with("known keys are "), "{}", error.fix);
        assert!(
            error.to_string().len() < 2000,
            "{}",
            error.to_string().len()
        );
        let error = parse(&[
            (SECRET_ARN, ARN),
            ("secrets.k8s.aws/secret-fromat.NOT A NAME", "x"),
        ])
        .unwrap_err();
        assert_eq!(
            error.fix,
            "did you mean secrets.k8s.aws/secret-format.<name>?"
        );
    }

    #[test]
    fn position_annotation() {
        let Request::Inject(spec) =
            parse(&[(SECRET_ARN, ARN), (INIT_CONTAINER_POSITION, "last")]).unwrap()
        else {
            panic!()
        };
        assert_eq!(spec.position, InitContainerPosition::Last);
        let err = parse(&[(SECRET_ARN, ARN), (INIT_CONTAINER_POSITION, "middle")]).unwrap_err();
        assert_eq!(err.key, INIT_CONTAINER_POSITION);
    }
}
