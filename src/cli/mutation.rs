//! What the injected container looks like: flags shared by `webhook` and `inject`, so both
//! inject the same thing.

use clap::Args;

use crate::contract::{self, SettingsFields};
use crate::mutate::{MutationConfig, Settings, SettingsError, defaults};
use crate::spec::Limits;
use crate::spec::limits::defaults as limit;
use crate::webhook::cluster::KubeVersion;

/// What the injected container looks like.
#[derive(Args, Debug)]
pub struct MutationArgs {
    /// Image of the injected container. Defaults to this release's own image.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_IMAGE", default_value = contract::DEFAULT_IMAGE)]
    sidecar_image: String,
    /// imagePullPolicy of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_IMAGE_PULL_POLICY", default_value = defaults::IMAGE_PULL_POLICY,
          value_parser = ["Always", "IfNotPresent", "Never"])]
    sidecar_image_pull_policy: String,
    /// CPU request of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_CPU_REQUEST", default_value = defaults::CPU_REQUEST)]
    sidecar_cpu_request: String,
    /// CPU limit of the injected container (none by default: a CPU limit only slows start-up).
    #[arg(long, env = "SECRET_INJECT_SIDECAR_CPU_LIMIT")]
    sidecar_cpu_limit: Option<String>,
    /// Memory request of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_MEMORY_REQUEST", default_value = defaults::MEMORY_REQUEST)]
    sidecar_memory_request: String,
    /// Memory limit of the injected container.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_MEMORY_LIMIT", default_value = defaults::MEMORY_LIMIT)]
    sidecar_memory_limit: String,
    /// sizeLimit of the in-memory secret volume (it counts against the pod's memory): auto sizes
    /// each pod's volume from its secrets (room for two complete sets of their files, the most
    /// each store holds, with headroom, in whole Mi); a quantity such as 16Mi is used for every
    /// pod, and a pod whose secrets it cannot hold is denied. A pod's own
    /// secrets.k8s.aws/volume-size-limit annotation wins over either.
    #[arg(long, env = "SECRET_INJECT_VOLUME_SIZE_LIMIT", default_value = defaults::VOLUME_SIZE_LIMIT)]
    volume_size_limit: String,
    /// Whether env.<n> annotations may add env vars read from the volume (fileKeyRef, the
    /// EnvFiles feature, on by default since Kubernetes 1.35): on, off, or auto (webhook: ask
    /// the API server's version at start; inject: its --kubernetes-version). The chart sets on
    /// or off from the cluster's version.
    #[arg(
        long,
        env = "SECRET_INJECT_ENV_FILES",
        default_value = "auto",
        value_enum
    )]
    env_files: Switch,
    /// How the rotation agent of a pod with secrets.k8s.aws/refresh-interval runs: always as a
    /// native sidecar (an init container with restartPolicy Always, Kubernetes 1.29+), never
    /// (an init container plus a regular sidecar container; pods that run to completion are
    /// denied), or auto (webhook: from the API server's version at start; inject: its
    /// --kubernetes-version). The chart sets always or never from the cluster's version.
    #[arg(
        long,
        env = "SECRET_INJECT_NATIVE_SIDECARS",
        default_value = "auto",
        value_enum
    )]
    native_sidecars: Mode,
    #[command(flatten)]
    agent: AgentSettingsArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// How every injected agent runs: rendered into its container (the contract's settings,
/// [`crate::contract::SettingsFields`]); unset, the agent's own defaults apply. Pod authors cannot
/// change them: a proxy or an endpoint is the cluster's choice, not a pod's.
#[derive(Args, Debug)]
pub struct AgentSettingsArgs {
    /// How long the injected agent retries throttling, 5xx, timeouts and connection errors
    /// before it fails the pod's start (e.g. 5m) [agent's default: 120s].
    #[arg(long, env = "SECRET_INJECT_SIDECAR_DEADLINE", value_name = "DURATION")]
    sidecar_deadline: Option<String>,
    /// Longest time for one attempt of the injected agent (connect, send, answer) [agent's
    /// default: 10s].
    #[arg(
        long,
        env = "SECRET_INJECT_SIDECAR_ATTEMPT_TIMEOUT",
        value_name = "DURATION"
    )]
    sidecar_attempt_timeout: Option<String>,
    /// The injected agent fetches with BatchGetSecretValue in a region with at least this many
    /// AWSCURRENT secrets; 0: always GetSecretValue [agent's default: 2].
    #[arg(long, env = "SECRET_INJECT_SIDECAR_BATCH_THRESHOLD", value_name = "N")]
    sidecar_batch_threshold: Option<String>,
    /// Log level or filter directives of the injected agent (e.g. debug) [agent's default:
    /// info]. No level logs a secret's value.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_LOG_LEVEL", value_name = "LEVEL")]
    sidecar_log_level: Option<String>,
    /// Extra environment of the injected agent, NAME=VALUE; repeat the flag for more (no
    /// variable: values such as NO_PROXY hold commas). For egress proxies (HTTPS_PROXY,
    /// NO_PROXY), AWS endpoints (AWS_ENDPOINT_URL, AWS_USE_FIPS_ENDPOINT,
    /// AWS_USE_DUALSTACK_ENDPOINT). Identity and credential variables are refused: each pod's
    /// agent uses its own ServiceAccount's identity.
    #[arg(long = "sidecar-env", value_name = "NAME=VALUE")]
    sidecar_env: Vec<String>,
    /// The rotation sidecar of every pod with rotation serves Prometheus metrics at /metrics on
    /// this port (1024 to 65535); a pod may set its own with secrets.k8s.aws/metrics-port. Unset:
    /// only pods that ask serve metrics. An init-only agent never serves.
    #[arg(long, env = "SECRET_INJECT_SIDECAR_METRICS_PORT", value_name = "PORT")]
    sidecar_metrics_port: Option<String>,
    /// Where the rotation sidecar's metrics listen unless the pod says
    /// (secrets.k8s.aws/metrics-address): loopback (the pod's containers only) or pod (the pod
    /// IP, with a container port named agent-metrics for a PodMonitor).
    #[arg(
        long,
        env = "SECRET_INJECT_SIDECAR_METRICS_ADDRESS",
        value_name = "ADDRESS",
        default_value = "loopback"
    )]
    sidecar_metrics_address: String,
}

/// How much one pod may ask for: checked on a pod that opts in before its annotations are
/// parsed, and on the patch before it is built. A pod over a limit is denied with a message that
/// names it. The defaults admit every realistic pod and keep the work of one review small.
#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Most bytes of annotations (keys and values, all of them, as the API server counts them) a
    /// pod that opts in may carry. The default is the API server's own limit (256 KiB); a webhook
    /// sees a pod before the API server checks it.
    #[arg(long, env = "SECRET_INJECT_MAX_ANNOTATION_BYTES", default_value_t = limit::ANNOTATION_BYTES as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_annotation_bytes: u32,
    /// Most secrets one pod may name (secret-arn and secret-arn.<n> annotations).
    #[arg(long, env = "SECRET_INJECT_MAX_SECRETS", default_value_t = limit::SECRETS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_secrets: u32,
    /// Most env vars one pod's env and env.<n> annotations may bind together (each becomes a
    /// fileKeyRef env var in every container that gets the secrets).
    #[arg(long, env = "SECRET_INJECT_MAX_ENV_BINDINGS", default_value_t = limit::ENV_BINDINGS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_env_bindings: u32,
    /// Most containers and init containers a pod that opts in may have (and names in its
    /// secrets.k8s.aws/containers annotation).
    #[arg(long, env = "SECRET_INJECT_MAX_CONTAINERS", default_value_t = limit::CONTAINERS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_containers: u32,
    /// Most bytes of JSON Patch one pod's injection may take (the response carries its base64).
    /// The patch grows with env vars × containers; it is measured before it is built.
    #[arg(long, env = "SECRET_INJECT_MAX_PATCH_BYTES", default_value_t = limit::PATCH_BYTES as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_patch_bytes: u32,
}

impl LimitArgs {
    /// The limits as given.
    pub fn limits(&self) -> Limits {
        Limits {
            annotation_bytes: self.max_annotation_bytes as usize,
            secrets: self.max_secrets as usize,
            env_bindings: self.max_env_bindings as usize,
            containers: self.max_containers as usize,
            patch_bytes: self.max_patch_bytes as usize,
        }
    }
}

/// How a cluster feature is used: always, never, or decided from the cluster's version.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decide from the cluster's version.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// What `auto` means for each switch: what the cluster supports.
#[derive(Debug, Clone, Copy)]
pub struct Auto {
    /// `--env-files auto`.
    pub env_files: bool,
    /// `--native-sidecars auto`.
    pub native_sidecars: bool,
}

impl Auto {
    /// What a cluster of `version` supports (none of it when the version is unknown): the one
    /// rule for the webhook, which asks the API server, and `inject`, which is told.
    pub fn of(version: Option<KubeVersion>) -> Self {
        Self {
            env_files: version.is_some_and(|v| v >= KubeVersion::ENV_FILES),
            native_sidecars: version.is_some_and(|v| v >= KubeVersion::NATIVE_SIDECARS),
        }
    }
}

/// A cluster feature the webhook relies on: on, off, or decided from the cluster's version.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Decide from the cluster's version.
    Auto,
    /// The cluster has it.
    On,
    /// The cluster lacks it.
    Off,
}

impl MutationArgs {
    /// The `--env-files` switch as given.
    pub fn env_files(&self) -> Switch {
        self.env_files
    }

    /// The `--native-sidecars` mode as given.
    pub fn native_sidecars(&self) -> Mode {
        self.native_sidecars
    }

    /// The validated configuration; `auto` decides the switches left on auto.
    pub fn config(&self, auto: Auto) -> Result<MutationConfig, SettingsError> {
        let MutationArgs {
            sidecar_image,
            sidecar_image_pull_policy,
            sidecar_cpu_request,
            sidecar_cpu_limit,
            sidecar_memory_request,
            sidecar_memory_limit,
            volume_size_limit,
            env_files,
            native_sidecars,
            agent,
            limits,
        } = self;
        if let Some(level) = &agent.sidecar_log_level {
            super::logging::check_level(level).map_err(|problem| SettingsError {
                flag: "sidecar-log-level",
                value: level.clone(),
                problem: problem.into(),
            })?;
        }
        MutationConfig::new(&Settings {
            image: sidecar_image,
            image_pull_policy: sidecar_image_pull_policy,
            cpu_request: sidecar_cpu_request,
            cpu_limit: sidecar_cpu_limit.as_deref(),
            memory_request: sidecar_memory_request,
            memory_limit: sidecar_memory_limit,
            volume_size_limit,
            env_files: match env_files {
                Switch::On => true,
                Switch::Off => false,
                Switch::Auto => auto.env_files,
            },
            native_sidecars: match native_sidecars {
                Mode::Always => true,
                Mode::Never => false,
                Mode::Auto => auto.native_sidecars,
            },
            limits: limits.limits(),
            agent: SettingsFields {
                deadline: agent.sidecar_deadline.clone(),
                attempt_timeout: agent.sidecar_attempt_timeout.clone(),
                batch_threshold: agent.sidecar_batch_threshold.clone(),
            },
            agent_log_level: agent.sidecar_log_level.as_deref(),
            agent_env: &agent.sidecar_env,
            metrics_port: agent.sidecar_metrics_port.as_deref(),
            metrics_address: &agent.sidecar_metrics_address,
        })
    }
}
