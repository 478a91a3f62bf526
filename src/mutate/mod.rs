//! The pod mutation: a pure function from a pod (or pod template) and the configuration to a
//! JSON Patch. No I/O. The admission webhook and the offline injector both call [`mutate`].
//!
//! Patches are built from typed operations with escaped JSON Pointers; annotation values only
//! ever appear as JSON string values, never in a path, so they cannot change the structure of
//! the patch. Arrays are appended to or inserted into, never replaced, so what other webhooks
//! added survives.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use json_patch::jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, ContainerRestartRule, ContainerRestartRuleOnExitCodes,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, FileKeySelector, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::contract::{self, FileMode, Plan, SettingsFields};
use crate::spec::{
    self, AnnotationError, InitContainerPosition, InjectionSpec, Limit, LimitError, Limits,
    Request, SecretSpec, SpecError,
};

pub mod cel;
pub mod patch;
pub mod pod;
pub mod policy;
pub mod volume;

pub use patch::JsonPatch;
pub use pod::{ObjectMeta, Pod, PodSpec};
pub use volume::VolumeSize;

/// The defaults of [`MutationConfig`], which the command line shows.
pub mod defaults {
    /// `imagePullPolicy` of the injected container.
    pub const IMAGE_PULL_POLICY: &str = "IfNotPresent";
    /// CPU request of the injected container.
    pub const CPU_REQUEST: &str = "10m";
    /// Memory request of the injected container.
    pub const MEMORY_REQUEST: &str = "16Mi";
    /// Memory limit of the injected container.
    pub const MEMORY_LIMIT: &str = "32Mi";
    /// `sizeLimit` of the in-memory volume: sized from each pod's plan ([`super::volume`]).
    pub const VOLUME_SIZE_LIMIT: &str = "auto";
}

/// What the operator configures for every injection.
#[derive(Debug, Clone)]
pub struct MutationConfig {
    /// Image of the injected container.
    pub image: String,
    /// Its `imagePullPolicy`.
    pub image_pull_policy: String,
    /// Its resource requests and limits.
    pub resources: ResourceRequirements,
    /// `sizeLimit` of the in-memory volume (it counts against the pod's memory), unless the pod
    /// states one (`secrets.k8s.aws/volume-size-limit`).
    pub volume_size: VolumeSize,
    /// Whether the cluster runs native sidecars (init containers with `restartPolicy: Always`,
    /// on by default since Kubernetes 1.29): the rotation agent is one such container; without
    /// them it is an init container plus a regular sidecar container.
    pub native_sidecars: bool,
    /// Whether the cluster reads env vars from files (`fileKeyRef`, the EnvFiles feature: beta
    /// and on by default since Kubernetes 1.35). Without it `env.<n>` annotations are denied.
    pub env_files: bool,
    /// How much one pod may ask for ([`Limits`]).
    pub limits: Limits,
    /// The environment every agent container gets after its plan, rendered once from the
    /// operator's validated settings: the agent's settings that were set (deadline, attempt
    /// timeout, batch threshold), the log level, then the extra environment (a proxy, an
    /// endpoint or FIPS switch) in the order given. Empty when the operator set none.
    pub agent_env: Vec<EnvVar>,
    /// The rotation sidecar's metrics port for pods that set none (`--sidecar-metrics-port`);
    /// `None`: metrics only where a pod asks with `secrets.k8s.aws/metrics-port`.
    pub metrics_port: Option<u16>,
    /// Where the metrics listen for pods that do not say (`--sidecar-metrics-address`).
    pub metrics_address: spec::MetricsAddress,
}

/// The operator's settings as given, before validation.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    /// Image of the injected container.
    pub image: &'a str,
    /// `imagePullPolicy`: `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: &'a str,
    /// CPU request.
    pub cpu_request: &'a str,
    /// CPU limit (none by default: a CPU limit only slows start-up).
    pub cpu_limit: Option<&'a str>,
    /// Memory request.
    pub memory_request: &'a str,
    /// Memory limit.
    pub memory_limit: &'a str,
    /// `sizeLimit` of the volume: `auto` or a quantity.
    pub volume_size_limit: &'a str,
    /// Whether the cluster supports `fileKeyRef` env vars.
    pub env_files: bool,
    /// Whether the cluster runs native sidecars.
    pub native_sidecars: bool,
    /// How much one pod may ask for.
    pub limits: Limits,
    /// How the injected agent runs; unset fields keep the agent's defaults.
    pub agent: SettingsFields,
    /// The injected agent's log level (checked by the caller, which owns logging).
    pub agent_log_level: Option<&'a str>,
    /// Extra environment for the injected agent, `NAME=VALUE` each.
    pub agent_env: &'a [String],
    /// The rotation sidecar's metrics port for every pod with rotation (1024 to 65535).
    pub metrics_port: Option<&'a str>,
    /// Where the metrics listen by default: `loopback` or `pod`.
    pub metrics_address: &'a str,
}

impl Default for Settings<'_> {
    fn default() -> Self {
        Self {
            image: contract::DEFAULT_IMAGE,
            image_pull_policy: defaults::IMAGE_PULL_POLICY,
            cpu_request: defaults::CPU_REQUEST,
            cpu_limit: None,
            memory_request: defaults::MEMORY_REQUEST,
            memory_limit: defaults::MEMORY_LIMIT,
            volume_size_limit: defaults::VOLUME_SIZE_LIMIT,
            env_files: true,
            native_sidecars: true,
            limits: Limits::default(),
            agent: SettingsFields::default(),
            agent_log_level: None,
            agent_env: &[],
            metrics_port: None,
            metrics_address: "loopback",
        }
    }
}

/// A setting with a bad value; the message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{flag} {value:?}: {problem}")]
pub struct SettingsError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong.
    pub problem: Cow<'static, str>,
}

impl MutationConfig {
    /// Validate the operator's settings.
    pub fn new(settings: &Settings<'_>) -> Result<Self, SettingsError> {
        let quantity = |flag: &'static str, value: &str| {
            if is_quantity(value) {
                Ok(Quantity(value.to_owned()))
            } else {
                Err(SettingsError {
                    flag,
                    value: value.to_owned(),
                    problem: "is not a Kubernetes quantity such as 10m, 16Mi or 1Gi".into(),
                })
            }
        };
        if settings.image.trim().is_empty() {
            return Err(SettingsError {
                flag: "sidecar-image",
                value: settings.image.to_owned(),
                problem: "is empty; give an image reference".into(),
            });
        }
        if !["Always", "IfNotPresent", "Never"].contains(&settings.image_pull_policy) {
            return Err(SettingsError {
                flag: "sidecar-image-pull-policy",
                value: settings.image_pull_policy.to_owned(),
                problem: "is not Always, IfNotPresent or Never".into(),
            });
        }
        for limit in [
            Limit::AnnotationBytes,
            Limit::Secrets,
            Limit::EnvBindings,
            Limit::Containers,
            Limit::PatchBytes,
        ] {
            if limit.of(&settings.limits) == 0 {
                return Err(SettingsError {
                    flag: limit.flag(),
                    value: "0".to_owned(),
                    problem: "is not a limit; give at least 1".into(),
                });
            }
        }
        let agent = settings.agent.clone();
        if let Err(error) = agent.parse() {
            let (flag, value) = match error.variable.as_str() {
                contract::env::DEADLINE => ("sidecar-deadline", &agent.deadline),
                contract::env::ATTEMPT_TIMEOUT => {
                    ("sidecar-attempt-timeout", &agent.attempt_timeout)
                }
                _ => ("sidecar-batch-threshold", &agent.batch_threshold),
            };
            return Err(SettingsError {
                flag,
                value: value.clone().unwrap_or_default(),
                problem: error.problem.into(),
            });
        }
        let var = |name: &str, value: String| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            value_from: None,
        };
        let mut env: Vec<EnvVar> = agent
            .render()
            .into_iter()
            .map(|(name, value)| var(name, value))
            .collect();
        env.extend(
            settings
                .agent_log_level
                .map(|level| var(contract::env::LOG_LEVEL, level.to_owned())),
        );
        env.extend(
            agent_env(settings.agent_env)?
                .into_iter()
                .map(|(name, value)| var(&name, value)),
        );
        let mut limits = std::collections::BTreeMap::from([(
            "memory".to_owned(),
            quantity("sidecar-memory-limit", settings.memory_limit)?,
        )]);
        if let Some(cpu) = settings.cpu_limit {
            limits.insert("cpu".to_owned(), quantity("sidecar-cpu-limit", cpu)?);
        }
        Ok(Self {
            image: settings.image.to_owned(),
            image_pull_policy: settings.image_pull_policy.to_owned(),
            resources: ResourceRequirements {
                requests: Some(
                    [
                        (
                            "cpu".to_owned(),
                            quantity("sidecar-cpu-request", settings.cpu_request)?,
                        ),
                        (
                            "memory".to_owned(),
                            quantity("sidecar-memory-request", settings.memory_request)?,
                        ),
                    ]
                    .into(),
                ),
                limits: Some(limits),
                ..Default::default()
            },
            volume_size: VolumeSize::parse(settings.volume_size_limit).map_err(|problem| {
                SettingsError {
                    flag: "volume-size-limit",
                    value: settings.volume_size_limit.to_owned(),
                    problem: problem.into(),
                }
            })?,
            env_files: settings.env_files,
            native_sidecars: settings.native_sidecars,
            limits: settings.limits,
            agent_env: env,
            metrics_port: settings
                .metrics_port
                .map(|value| {
                    spec::parse_metrics_port(value).ok_or_else(|| SettingsError {
                        flag: "sidecar-metrics-port",
                        value: value.to_owned(),
                        problem: "is not a port from 1024 to 65535 (the agent runs as a non-root \
                                  user)"
                            .into(),
                    })
                })
                .transpose()?,
            metrics_address: spec::MetricsAddress::parse(settings.metrics_address).ok_or_else(
                || SettingsError {
                    flag: "sidecar-metrics-address",
                    value: settings.metrics_address.to_owned(),
                    problem: "is not loopback or pod".into(),
                },
            )?,
        })
    }
}

/// The operator's extra environment for the agent, checked: `NAME=VALUE` with a valid, unique
/// name that neither the contract nor the pod's identity owns.
fn agent_env(given: &[String]) -> Result<Vec<(String, String)>, SettingsError> {
    let bad = |value: &str, problem: Cow<'static, str>| SettingsError {
        flag: "sidecar-env",
        value: value.to_owned(),
        problem,
    };
    let mut env: Vec<(String, String)> = Vec::with_capacity(given.len());
    for item in given {
        let Some((name, value)) = item.split_once('=') else {
            return Err(bad(item, "is not NAME=VALUE".into()));
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(bad(
                item,
                "names no environment variable: use letters, digits and _, not starting with a \
                 digit"
                    .into(),
            ));
        }
        if name.starts_with("SECRET_INJECT_")
            || name == contract::env::SECRET_ARN
            || name == contract::env::SECRET_FILENAME
        {
            return Err(bad(
                item,
                format!(
                    "{name} is the webhook's to render (the pod's plan, or a --sidecar-* flag \
                     such as --sidecar-deadline); set it that way"
                )
                .into(),
            ));
        }
        if contract::AWS_IDENTITY_ENV.contains(&name) || STATIC_CREDENTIALS_ENV.contains(&name) {
            return Err(bad(
                item,
                format!(
                    "{name} would give every injected agent the same AWS identity or region; \
                     each pod's agent uses its own ServiceAccount's identity (IRSA or EKS Pod \
                     Identity), which the identity webhooks set"
                )
                .into(),
            ));
        }
        if env.iter().any(|(n, _)| n == name) {
            return Err(bad(item, format!("{name} is given twice").into()));
        }
        env.push((name.to_owned(), value.to_owned()));
    }
    Ok(env)
}

/// Environment variables that would hand every injected agent one set of AWS credentials.
pub const STATIC_CREDENTIALS_ENV: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
];

impl Default for MutationConfig {
    fn default() -> Self {
        // The defaults are valid quantities (a unit test checks it).
        Self::new(&Settings::default()).unwrap_or_else(|_| unreachable!())
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

/// The result of a mutation: a patch when the pod changes, and warnings either way.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Mutation {
    /// JSON Patch rooted at the pod (`/metadata`, `/spec`); `None`: the pod stays as it is.
    pub patch: Option<JsonPatch>,
    /// Warnings for the user who created the pod (shown by `kubectl`, printed by `inject`).
    pub warnings: Vec<String>,
}

/// Why a pod cannot be injected. The message names the annotation or field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutationError {
    /// An annotation is invalid.
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// The pod already holds something the injection needs.
    #[error("{0}")]
    Conflict(String),
    /// The pod asks for more than a limit allows.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The operator's `--volume-size-limit` cannot hold the pod's secrets.
    #[error("{0}")]
    VolumeTooSmall(String),
    /// The pod cannot run the agent (a Windows pod).
    #[error("{0}")]
    Unsupported(String),
}

impl From<SpecError> for MutationError {
    fn from(error: SpecError) -> Self {
        match error {
            SpecError::Annotation(e) => e.into(),
            SpecError::Limit(e) => e.into(),
        }
    }
}

/// Compute the patch that injects the pod described by `metadata` and `spec`.
///
/// The patch is `None` when the pod does not ask for injection, or was injected already and
/// needs nothing more. A pod that is not injected is warned about the `secrets.k8s.aws/` keys
/// the grammar does not know (a typo in the opt-in key would otherwise pass silently).
///
/// The work is linear in the pod (n log n in its secrets), and bounded by `config.limits`: a pod
/// that opts in is checked against them before its annotations are parsed and before the patch
/// is built (see [`spec::limits`]).
pub fn mutate(
    metadata: &ObjectMeta<'_>,
    spec: &PodSpec<'_>,
    config: &MutationConfig,
) -> Result<Mutation, MutationError> {
    let limits = &config.limits;
    match InjectionSpec::from_annotations_within(metadata.annotations.as_ref(), limits)? {
        Request::None => Ok(Mutation {
            patch: None,
            warnings: ignored_key_warnings(metadata),
        }),
        Request::AlreadyInjected(injection) => {
            check_containers(spec, limits)?;
            reconcile_mounts(spec, &injection, limits)
        }
        Request::Inject(injection) => {
            check_containers(spec, limits)?;
            check_os(spec)?;
            inject(metadata, spec, &injection, config)
        }
    }
}

/// One warning per `secrets.k8s.aws/` key the grammar does not know, with the closest known
/// key ([`spec::ignored_keys`]); none, and no allocation, for a pod without such keys.
fn ignored_key_warnings(metadata: &ObjectMeta<'_>) -> Vec<String> {
    let (described, more) = spec::ignored_keys(metadata.annotations.as_ref());
    let mut warnings: Vec<String> = described
        .iter()
        .map(|error| format!("secret-inject: {error}"))
        .collect();
    if more > 0 {
        warnings.push(format!(
            "secret-inject: {more} more annotations under {} are not secret-inject annotations",
            spec::PREFIX
        ));
    }
    warnings
}

/// The agent is a Linux container: a pod that states another OS (`spec.os.name: windows`) is
/// denied rather than given a container its nodes cannot run.
fn check_os(spec: &PodSpec<'_>) -> Result<(), MutationError> {
    match spec.os.as_ref().map(|os| &*os.name) {
        None | Some("linux") => Ok(()),
        Some(os) => {
            // The API server has not validated the pod yet: a name of any length is shortened.
            let os: String = os.chars().take(40).collect();
            Err(MutationError::Unsupported(format!(
                "spec.os.name: the pod runs on {os:?}, and secret-inject's agent is a Linux-only \
                 container (it would be injected as an init container the pod's nodes cannot \
                 run); do not annotate {os} pods with secrets.k8s.aws/ annotations (or set {}: \
                 disabled), and read the secret in the app instead",
                spec::INJECTOR_WEBHOOK
            )))
        }
    }
}

/// The pod's containers and init containers within [`Limits::containers`].
fn check_containers(spec: &PodSpec<'_>, limits: &Limits) -> Result<(), LimitError> {
    let count = spec.containers.len() + spec.init_containers.as_ref().map_or(0, Vec::len);
    Limit::Containers.check(
        limits,
        count,
        || "spec.containers and spec.initContainers".to_owned(),
        || "inject the secrets into a pod with fewer containers".to_owned(),
    )
}

fn inject(
    metadata: &ObjectMeta<'_>,
    spec: &PodSpec<'_>,
    injection: &InjectionSpec,
    config: &MutationConfig,
) -> Result<Mutation, MutationError> {
    let mount_path = injection.mount_path.as_str();
    if has_secret_volume(spec) {
        return Err(MutationError::Conflict(format!(
            "spec.volumes: the pod already has a volume named {:?}, which secret-inject adds for \
             the secret; rename that volume",
            contract::VOLUME_NAME
        )));
    }
    if spec
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == contract::NO_TOKEN_VOLUME_NAME)
    {
        return Err(MutationError::Conflict(format!(
            "spec.volumes: the pod already has a volume named {:?}, which secret-inject adds to \
             keep the Kubernetes API token out of its container; rename that volume",
            contract::NO_TOKEN_VOLUME_NAME
        )));
    }
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    if let Some(c) = spec
        .containers
        .iter()
        .chain(init_containers)
        .find(|c| c.name == contract::CONTAINER_NAME || c.name == contract::SIDECAR_NAME)
    {
        return Err(MutationError::Conflict(format!(
            "the pod already has a container named {:?}, which secret-inject adds; rename it",
            c.name
        )));
    }

    let mounted = selected_containers(spec, injection)?;
    let bound = bound_env_vars(injection);
    for (field, _, container) in &mounted {
        check_mount_collision(field, container, mount_path)?;
        check_env_collision(field, container, &bound)?;
    }
    if !config.env_files
        && let Some((secret, _)) = injection.env_bindings().next()
    {
        return Err(AnnotationError {
            key: secret.key_of(spec::ENV),
            problem: "env vars from files (fileKeyRef) need Kubernetes 1.35 or later, and \
                      --env-files is off (the webhook's; inject's unless told a Kubernetes \
                      version of 1.35 or later)"
                .to_owned(),
            fix: "read the secret from its file instead, or on Kubernetes 1.35 or later set \
                  --env-files on (the chart sets it from the cluster's version; inject: \
                  --kubernetes-version 1.35)"
                .to_owned(),
        }
        .into());
    }

    if let Some(refresh) = &injection.refresh {
        check_refresh(spec, refresh, config)?;
    }
    let (security_context, file_mode) = security_for(spec, mounted.iter().map(|m| m.2));
    let mut warnings = Vec::new();
    if file_mode == FileMode::WorldRead {
        warnings.push(
            "secret-inject: app user unknown, so the secret file is readable by all users in \
             the pod (0444); set spec.securityContext.fsGroup to restrict it"
                .to_owned(),
        );
    }

    let mut ops = JsonPatch(Vec::with_capacity(2 * mounted.len() + 4));
    // 1. Mark the pod as injected.
    match &metadata.annotations {
        Some(_) => ops.add(
            ["metadata", "annotations", spec::STATUS],
            &spec::STATUS_INJECTED,
        ),
        None => ops.add(
            ["metadata", "annotations"],
            &[(spec::STATUS, spec::STATUS_INJECTED)]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
    // 2. The in-memory volume.
    let size = volume_size(injection, config)?;
    if mount_path == spec::DEFAULT_MOUNT_PATH {
        warnings.push(format!(
            "secret-inject: the secret volume is mounted at /tmp (the default of {}), so the \
             app's own /tmp becomes this read-only in-memory volume of {}: the app cannot write \
             temporary files there; set {} to a directory of its own, such as \
             /var/run/secrets/app",
            spec::MOUNT_PATH,
            spec::size::quantity(size),
            spec::MOUNT_PATH
        ));
    }
    let volume = Volume {
        name: contract::VOLUME_NAME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity(spec::size::quantity(size))),
            ..Default::default()
        }),
        ..Default::default()
    };
    append(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        &volume,
    );
    append(&mut ops, &["spec", "volumes"], true, &no_token_volume());
    // 3. The mounts and env vars, with the original indices (before our init container
    // shifts them).
    let adds = ContainerAdds::new(mount_path, injection);
    adds.append(&mut ops, &mounted, &config.limits)?;
    // 4. The init container; with rotation, it is a native sidecar, or a regular sidecar
    // container keeps the files current.
    let plan = Plan {
        refresh: None,
        ..Plan::for_injection(injection, file_mode)
    };
    let mut container = agent_container(spec, injection, config, security_context.clone(), &plan)?;
    if let Some(refresh) = &injection.refresh {
        let rotating = Plan {
            refresh: Some(with_metrics(refresh, config)),
            ..plan.clone()
        };
        if config.native_sidecars {
            let sidecar = native_sidecar_fields(refresh.restart);
            container = Container {
                restart_policy: sidecar.restart_policy,
                startup_probe: sidecar.startup_probe,
                restart_policy_rules: sidecar.restart_policy_rules,
                ..agent_container(spec, injection, config, security_context, &rotating)?
            };
            add_metrics_port(&mut container, &rotating);
        } else {
            let mut sidecar =
                agent_container(spec, injection, config, security_context, &rotating)?;
            sidecar.name = contract::SIDECAR_NAME.to_owned();
            add_metrics_port(&mut sidecar, &rotating);
            ops.add(["spec", "containers", "-"], &sidecar);
        }
        if refresh.signal.is_some() && spec.share_process_namespace != Some(true) {
            ops.add(["spec", "shareProcessNamespace"], &true);
        }
    }
    match (spec.init_containers.is_some(), injection.position) {
        (false, _) => ops.add(["spec", "initContainers"], &[container]),
        (true, InitContainerPosition::First) => {
            ops.add(["spec", "initContainers", "0"], &container)
        }
        (true, InitContainerPosition::Last) => ops.add(["spec", "initContainers", "-"], &container),
    }
    check_patch(&ops, &config.limits)?;
    Ok(Mutation {
        patch: Some(ops),
        warnings,
    })
}

/// The volume's size in bytes: the pod's `volume-size-limit`, else the operator's
/// `--volume-size-limit`, else sized from the plan ([`volume::needs`]). A stated size that
/// cannot hold two complete sets of the pod's files is denied, naming who stated it.
fn volume_size(injection: &InjectionSpec, config: &MutationConfig) -> Result<u64, MutationError> {
    use spec::size::{MI, human, quantity};
    let needs = volume::needs(injection);
    let stated = match (injection.volume_size, config.volume_size) {
        (Some(bytes), _) => bytes,
        (None, VolumeSize::Stated(bytes)) => bytes,
        (None, VolumeSize::Auto) => return Ok(needs.volume()),
    };
    let needed = needs.bytes();
    if stated >= needed {
        return Ok(stated);
    }
    let at_least = quantity(needed.div_ceil(MI) * MI);
    let why = format!(
        "cannot hold the pod's secrets: {} secret(s) can take up to {} as files (each value up \
         to its store's limit, in whole 4 KiB pages), and the volume must hold two complete sets \
         (the agent writes a new set beside the old one), {} in all",
        injection.secrets.len(),
        human(needs.set_pages * spec::size::PAGE_BYTES),
        human(needed)
    );
    Err(match injection.volume_size {
        Some(_) => AnnotationError {
            key: spec::VOLUME_SIZE_LIMIT.to_owned(),
            problem: format!("{} {why}", quantity(stated)),
            fix: format!(
                "set it to at least {at_least}, or remove it to let the webhook size the volume"
            ),
        }
        .into(),
        None => MutationError::VolumeTooSmall(format!(
            "the webhook's --volume-size-limit {} {why}; set {}: {at_least} (or more) on the \
             pod, or run the webhook with --volume-size-limit auto (the default), which sizes \
             each pod's volume from its secrets",
            quantity(stated),
            spec::VOLUME_SIZE_LIMIT
        )),
    })
}

/// The whole patch within [`Limits::patch_bytes`]. The part that grows with the containers is
/// measured before it is built ([`ContainerAdds::append`]); the rest (the agent container and
/// its plan) is linear in the annotations, which are limited before they are parsed.
fn check_patch(ops: &JsonPatch, limits: &Limits) -> Result<(), LimitError> {
    Limit::PatchBytes.check(
        limits,
        ops.json_len(),
        || "the JSON Patch of the injection".to_owned(),
        || "ask for fewer secrets, or shorten their annotations".to_owned(),
    )
}

/// An injected pod gets our mount in containers added since (e.g. by a webhook that ran after
/// us, on reinvocation). Everything else is left as it is.
fn reconcile_mounts(
    spec: &PodSpec<'_>,
    injection: &InjectionSpec,
    limits: &Limits,
) -> Result<Mutation, MutationError> {
    if !has_secret_volume(spec) {
        // Marked injected by someone else, or our volume was removed: nothing safe to do.
        return Ok(Mutation::default());
    }
    let mount_path = injection.mount_path.as_str();
    let names = injection
        .containers
        .as_ref()
        .map(|names| names.iter().map(String::as_str).collect::<HashSet<_>>());
    let bound = bound_env_vars(injection);
    let mut missing = Vec::new();
    for (index, container) in spec.containers.iter().enumerate() {
        let mounts = container.volume_mounts.as_deref().unwrap_or_default();
        if mounts.iter().any(|m| m.name == contract::VOLUME_NAME) {
            continue;
        }
        if let Some(names) = &names
            && !names.contains(&*container.name)
        {
            continue;
        }
        check_mount_collision("containers", container, mount_path)?;
        check_env_collision("containers", container, &bound)?;
        missing.push(("containers", index, container));
    }
    if missing.is_empty() {
        return Ok(Mutation::default());
    }
    let mut ops = JsonPatch::default();
    ContainerAdds::new(mount_path, injection).append(&mut ops, &missing, limits)?;
    Ok(Mutation {
        patch: Some(ops),
        warnings: Vec::new(),
    })
}

/// The containers that get the volume (and the env vars), as (field, index, container): those the
/// `containers` annotation names, else every app container and the init containers that run
/// after ours.
fn selected_containers<'a, 'b>(
    spec: &'a PodSpec<'b>,
    injection: &InjectionSpec,
) -> Result<Vec<(&'static str, usize, &'a pod::Container<'b>)>, MutationError> {
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    // Init containers that run after ours.
    let after_ours = match injection.position {
        InitContainerPosition::First => init_containers.len(),
        InitContainerPosition::Last => 0,
    };
    let candidates = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| ("containers", i, c))
        .chain(
            init_containers
                .iter()
                .enumerate()
                .take(after_ours)
                .map(|(i, c)| ("initContainers", i, c)),
        );
    let Some(names) = &injection.containers else {
        return Ok(candidates.collect());
    };
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    let selected: Vec<_> = candidates
        .filter(|(_, _, c)| wanted.contains(&*c.name))
        .collect();
    let found: HashSet<&str> = selected.iter().map(|(_, _, c)| &*c.name).collect();
    if let Some(missing) = names.iter().find(|name| !found.contains(name.as_str())) {
        let problem = if init_containers.iter().any(|c| &c.name == missing) {
            format!(
                "init container {missing:?} runs before {}, so it cannot read the secrets",
                contract::CONTAINER_NAME
            )
        } else {
            format!("the pod has no container named {missing:?}")
        };
        let known: Vec<&str> = spec
            .containers
            .iter()
            .chain(init_containers.iter().take(after_ours))
            .map(|c| &*c.name)
            .collect();
        return Err(AnnotationError {
            key: spec::CONTAINERS.to_owned(),
            problem,
            fix: format!("name some of {}", known.join(", ")),
        }
        .into());
    }
    Ok(selected)
}

/// The `fileKeyRef` env var of one `env.<n>` binding: it reads its own name from the env file the
/// agent writes.
fn file_env(var: &str) -> EnvVar {
    EnvVar {
        name: var.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            file_key_ref: Some(FileKeySelector {
                volume_name: contract::VOLUME_NAME.to_owned(),
                path: contract::ENV_FILE.to_owned(),
                key: var.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

/// The env vars the pod's `env.<n>` annotations bind, each with the secret that feeds it.
fn bound_env_vars(injection: &InjectionSpec) -> HashMap<&str, &SecretSpec> {
    injection
        .env_bindings()
        .map(|(secret, binding)| (binding.var.as_str(), secret))
        .collect()
}

/// A container that sets an env var the annotations bind: denied, naming the annotation.
fn check_env_collision(
    field: &str,
    container: &pod::Container<'_>,
    bound: &HashMap<&str, &SecretSpec>,
) -> Result<(), MutationError> {
    if bound.is_empty() {
        return Ok(());
    }
    for existing in container.env.iter().flatten() {
        if let Some(secret) = bound.get(&*existing.name) {
            return Err(AnnotationError {
                key: secret.key_of(spec::ENV),
                problem: format!(
                    "container {:?} (spec.{field}) already sets env var {}",
                    container.name, existing.name
                ),
                fix: "remove it from the container, or give the secret's env var another name"
                    .to_owned(),
            }
            .into());
        }
    }
    Ok(())
}

/// What every container that gets the secrets gets: the volume mount and the `fileKeyRef` env
/// vars, each serialized once however many containers there are (alone, for a container that has
/// the list, and as a list, for one that has none), and only once their size is known to fit.
struct ContainerAdds<'a> {
    mount: Box<RawValue>,
    mounts: Box<RawValue>,
    /// The env vars' names.
    vars: Vec<&'a str>,
    /// The JSON bytes of their `fileKeyRef` env vars together.
    env_bytes: usize,
}

impl<'a> ContainerAdds<'a> {
    fn new(mount_path: &str, injection: &'a InjectionSpec) -> Self {
        let mount = patch::raw(&app_mount(mount_path));
        let vars: Vec<&str> = injection
            .env_bindings()
            .map(|(_, binding)| binding.var.as_str())
            .collect();
        // A `fileKeyRef` env var is the same JSON around its name, twice; an env var name
        // (`[A-Za-z_][A-Za-z0-9_]*`) needs no escaping. Counted, not serialized.
        let env_bytes = match vars.len() {
            0 => 0,
            n => {
                let frame = patch::raw(&file_env("")).get().len();
                n * frame + 2 * vars.iter().map(|var| var.len()).sum::<usize>()
            }
        };
        ContainerAdds {
            mounts: patch::raw_array(std::slice::from_ref(&mount)),
            mount,
            vars,
            env_bytes,
        }
    }

    /// The JSON bytes of the env vars as one array.
    fn envs_len(&self) -> usize {
        2 + self.env_bytes + self.vars.len().saturating_sub(1)
    }

    /// Append the mount and env vars of each of `containers` (field, index, container). The
    /// patch grows with containers × env vars, so its size is computed first (exactly, from the
    /// serialized values) and the pod denied when it would pass [`Limits::patch_bytes`].
    fn append(
        &self,
        ops: &mut JsonPatch,
        containers: &[(&'static str, usize, &pod::Container<'_>)],
        limits: &Limits,
    ) -> Result<(), LimitError> {
        let size = containers
            .iter()
            .fold(ops.json_len(), |sum, (field, index, c)| {
                sum.saturating_add(self.json_len(field, *index, c))
            });
        Limit::PatchBytes.check(
            limits,
            size,
            || {
                format!(
                    "spec.containers and spec.initContainers ({} containers get the secret volume \
                     and {} env vars each)",
                    containers.len(),
                    self.vars.len()
                )
            },
            || {
                format!(
                    "every env var of {} is added to every container that gets the secrets: name \
                     fewer containers in {}, or bind fewer env vars",
                    spec::ENV,
                    spec::CONTAINERS
                )
            },
        )?;
        let env: Vec<Box<RawValue>> = self
            .vars
            .iter()
            .map(|var| patch::raw(&file_env(var)))
            .collect();
        debug_assert_eq!(
            env.iter().map(|var| var.get().len()).sum::<usize>(),
            self.env_bytes
        );
        let envs = patch::raw_array(&env);
        for (field, index, container) in containers {
            let mut path = PointerBuf::from_tokens(["spec", *field]);
            path.push_back(*index);
            let mut mounts = path.clone();
            mounts.push_back("volumeMounts");
            if container.volume_mounts.is_some() {
                mounts.push_back("-");
                ops.push_raw(mounts, self.mount.clone());
            } else {
                ops.push_raw(mounts, self.mounts.clone());
            }
            if env.is_empty() {
                continue;
            }
            path.push_back("env");
            if container.env.is_some() {
                path.push_back("-");
                for var in &env {
                    ops.push_raw(path.clone(), var.clone());
                }
            } else {
                ops.push_raw(path, envs.clone());
            }
        }
        Ok(())
    }

    /// The bytes [`Self::append`] adds to the patch for `field[index]`, each operation with the
    /// comma before it.
    fn json_len(&self, field: &str, index: usize, container: &pod::Container<'_>) -> usize {
        let op = |path: usize, value: &RawValue| 1 + patch::Add::json_len_of(path, value);
        // `/spec/<field>/<index>`
        let base = "/spec/".len() + field.len() + 1 + decimal_digits(index);
        let mut bytes = if container.volume_mounts.is_some() {
            op(base + "/volumeMounts/-".len(), &self.mount)
        } else {
            op(base + "/volumeMounts".len(), &self.mounts)
        };
        if self.vars.is_empty() {
            return bytes;
        }
        // An operation's frame and path, without its value.
        let frame = |path: usize| 1 + patch::Add::json_len_of(path, RawValue::NULL) - "null".len();
        if container.env.is_some() {
            // One operation per env var.
            let frames = frame(base + "/env/-".len()).saturating_mul(self.vars.len());
            bytes = bytes.saturating_add(frames).saturating_add(self.env_bytes);
        } else {
            bytes = bytes
                .saturating_add(frame(base + "/env".len()))
                .saturating_add(self.envs_len());
        }
        bytes
    }
}

fn decimal_digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn has_secret_volume(spec: &PodSpec<'_>) -> bool {
    spec.volumes
        .iter()
        .flatten()
        .any(|v| v.name == contract::VOLUME_NAME)
}

/// The agent's mount of the secret volume at `mount_path`: the one writer.
fn secret_mount(mount_path: &str) -> VolumeMount {
    VolumeMount {
        name: contract::VOLUME_NAME.to_owned(),
        mount_path: mount_path.to_owned(),
        ..Default::default()
    }
}

/// An app container's mount of the secret volume: read-only, so no container of the pod can
/// swap `..data` or a file's symlink under the others.
fn app_mount(mount_path: &str) -> VolumeMount {
    VolumeMount {
        read_only: Some(true),
        ..secret_mount(mount_path)
    }
}

/// An empty in-memory volume for the agent's [`contract::API_TOKEN_DIR`]: the API server's
/// ServiceAccount admission (run again after our patch on reinvocation, and on every pod
/// `inject` wrote offline) mounts the pod's Kubernetes API token into each container that has
/// no mount there, and the agent needs no token of the Kubernetes API.
fn no_token_volume() -> Volume {
    Volume {
        name: contract::NO_TOKEN_VOLUME_NAME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity("4Ki".to_owned())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The agent's read-only mount of [`no_token_volume`] where the API token would go.
fn no_token_mount() -> VolumeMount {
    VolumeMount {
        name: contract::NO_TOKEN_VOLUME_NAME.to_owned(),
        mount_path: contract::API_TOKEN_DIR.to_owned(),
        read_only: Some(true),
        ..Default::default()
    }
}

fn check_mount_collision(
    field: &str,
    container: &pod::Container<'_>,
    mount_path: &str,
) -> Result<(), MutationError> {
    for existing in container.volume_mounts.iter().flatten() {
        if existing.mount_path.trim_end_matches('/') == mount_path {
            return Err(MutationError::Conflict(format!(
                "annotation {}: container {:?} (spec.{field}) already mounts volume {:?} at {:?}; \
                 set {} to a free directory such as /var/run/secrets/app",
                spec::MOUNT_PATH,
                container.name,
                existing.name,
                existing.mount_path,
                spec::MOUNT_PATH
            )));
        }
    }
    Ok(())
}

/// The injected container's security context and the secret's file mode (see [`FileMode`]).
fn security_for<'a, 'b: 'a>(
    spec: &PodSpec<'_>,
    mounted: impl Iterator<Item = &'a pod::Container<'b>>,
) -> (SecurityContext, FileMode) {
    let pod = spec.security_context.as_ref();
    let pod_uid = pod.and_then(|p| p.run_as_user);
    let fs_group = pod.and_then(|p| p.fs_group);
    let mut uids = mounted.map(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or(pod_uid)
    });
    // The one non-root uid every mounted container runs as, if there is one.
    let shared_uid = uids.next().flatten().filter(|uid| *uid != 0).filter(|uid| {
        let uid = Some(*uid);
        uids.all(|u| u == uid)
    });
    let (run_as_user, run_as_group, mode) = match (fs_group, shared_uid) {
        (Some(group), uid) => (
            uid.unwrap_or(contract::DEFAULT_UID),
            Some(group),
            FileMode::GroupRead,
        ),
        (None, Some(uid)) => (uid, pod.and_then(|p| p.run_as_group), FileMode::OwnerRead),
        (None, None) => (
            contract::DEFAULT_UID,
            Some(contract::DEFAULT_UID),
            FileMode::WorldRead,
        ),
    };
    (agent_security_context(run_as_user, run_as_group), mode)
}

/// The agent's security context (restricted PodSecurity) for a user and group.
fn agent_security_context(run_as_user: i64, run_as_group: Option<i64>) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(run_as_user),
        run_as_group,
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// The rotation the sidecar runs: the pod's, with the operator's metrics port and address where
/// the pod sets none.
fn with_metrics(refresh: &spec::Refresh, config: &MutationConfig) -> spec::Refresh {
    let metrics_port = refresh.metrics_port.or(config.metrics_port);
    spec::Refresh {
        metrics_port,
        metrics_address: metrics_port
            .map(|_| refresh.metrics_address.unwrap_or(config.metrics_address)),
        ..refresh.clone()
    }
}

/// Name of the container port the webhook adds for metrics on the pod IP (a PodMonitor selects
/// it).
pub const METRICS_PORT_NAME: &str = "agent-metrics";

/// Metrics on the pod IP: a named container port, so a PodMonitor can select it.
fn add_metrics_port(container: &mut Container, plan: &Plan) {
    if let Some(spec::Refresh {
        metrics_port: Some(port),
        metrics_address: Some(spec::MetricsAddress::Pod),
        ..
    }) = &plan.refresh
    {
        container.ports = Some(vec![ContainerPort {
            name: Some(METRICS_PORT_NAME.to_owned()),
            container_port: i32::from(*port),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]);
    }
}

/// Rotation needs a pod that lets our sidecar run: with classic sidecars, a pod that runs to
/// completion would never complete; a signal needs the process namespace shared.
fn check_refresh(
    spec: &PodSpec<'_>,
    refresh: &spec::Refresh,
    config: &MutationConfig,
) -> Result<(), MutationError> {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if !config.native_sidecars && policy != "Always" {
        return Err(AnnotationError {
            key: spec::REFRESH_INTERVAL.to_owned(),
            problem: format!(
                "the pod has restartPolicy {policy} (a Job or CronJob runs to completion), but \
                 without native sidecars the rotation sidecar is a regular container that never \
                 exits, so the pod would never complete"
            ),
            fix: "remove secrets.k8s.aws/refresh-interval (the secrets are then fetched once), or \
                  use a cluster with native sidecars (Kubernetes 1.29 or later, webhook \
                  --native-sidecars auto or always)"
                .to_owned(),
        }
        .into());
    }
    if refresh.metrics_address.is_some()
        && refresh.metrics_port.is_none()
        && config.metrics_port.is_none()
    {
        return Err(AnnotationError {
            key: spec::METRICS_ADDRESS.to_owned(),
            problem: format!(
                "has no effect without {} (and this webhook sets no --sidecar-metrics-port)",
                spec::METRICS_PORT
            ),
            fix: format!(
                "add {} (e.g. 9102) to serve the rotation sidecar's metrics, or remove it",
                spec::METRICS_PORT
            ),
        }
        .into());
    }
    if refresh.restart && !config.native_sidecars {
        return Err(AnnotationError {
            key: spec::RESTART_ON_CHANGE.to_owned(),
            problem: "restarting the pod's containers after a change is a restart rule of the \
                      native sidecar (RestartAllContainers, Kubernetes 1.36+), and this webhook \
                      runs classic sidecars"
                .to_owned(),
            fix: "remove secrets.k8s.aws/restart-on-change, or use a cluster with native sidecars"
                .to_owned(),
        }
        .into());
    }
    if refresh.signal.is_some() && spec.share_process_namespace == Some(false) {
        return Err(AnnotationError {
            key: spec::RELOAD_PROCESS.to_owned(),
            problem: "signalling a process of another container needs a shared process \
                      namespace, and the pod sets spec.shareProcessNamespace: false"
                .to_owned(),
            fix: "remove shareProcessNamespace: false, or use secrets.k8s.aws/reload-url instead"
                .to_owned(),
        }
        .into());
    }
    Ok(())
}

/// What makes the agent the native rotation sidecar: `restartPolicy: Always`, the startup
/// probe, and with `restart` the rule that turns its exit code 42 into an in-place restart of
/// the pod's containers. The webhook and policy mode ([`policy`]) both take them from here.
fn native_sidecar_fields(restart: bool) -> Container {
    Container {
        restart_policy: Some("Always".to_owned()),
        startup_probe: Some(startup_probe()),
        restart_policy_rules: restart.then(|| {
            vec![ContainerRestartRule {
                action: "RestartAllContainers".to_owned(),
                exit_codes: Some(ContainerRestartRuleOnExitCodes {
                    operator: "In".to_owned(),
                    values: Some(vec![contract::RESTART_EXIT_CODE]),
                }),
            }]
        }),
        ..Default::default()
    }
}

/// The native sidecar's startup probe: our own binary (the image has no shell), succeeding once
/// the first complete set of files is written, so the app containers start with their secrets.
fn startup_probe() -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                contract::BINARY_PATH.to_owned(),
                contract::PROBE_SUBCOMMAND.to_owned(),
            ]),
        }),
        period_seconds: Some(1),
        timeout_seconds: Some(5),
        // The agent's own deadline (120 s by default) ends a first fetch that cannot succeed.
        failure_threshold: Some(300),
        ..Default::default()
    }
}

fn agent_container(
    spec: &PodSpec<'_>,
    injection: &InjectionSpec,
    config: &MutationConfig,
    security_context: SecurityContext,
    plan: &Plan,
) -> Result<Container, MutationError> {
    let mut env: Vec<EnvVar> = plan
        .env()
        .into_iter()
        .map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            value_from: None,
        })
        .collect();
    env.extend(config.agent_env.iter().cloned());
    let mut container = agent_container_template(
        config.image.clone(),
        config.image_pull_policy.clone(),
        injection.mount_path.as_str(),
    );
    let volume_mounts = container.volume_mounts.get_or_insert_default();
    copy_aws_identity(spec, injection.mount_path.as_str(), &mut env, volume_mounts)?;
    Ok(Container {
        env: Some(env),
        // A pod with pod-level resources (spec.resources) shares them among containers that set
        // none; the agent's own would have to fit the pod's budget, which the API server checks.
        resources: spec.resources.is_none().then(|| config.resources.clone()),
        security_context: Some(security_context),
        ..container
    })
}

/// The agent container without what each pod decides (its plan, user and resources): name,
/// image, command, the security context for the default user, its mounts of the secret volume at
/// `mount_path` and of the empty token directory, the termination message. The webhook fills it
/// in per pod ([`agent_container`]); policy mode renders it as CEL ([`policy`]).
fn agent_container_template(
    image: String,
    image_pull_policy: String,
    mount_path: &str,
) -> Container {
    Container {
        name: contract::CONTAINER_NAME.to_owned(),
        image: Some(image),
        image_pull_policy: Some(image_pull_policy),
        command: Some(vec![
            contract::BINARY_PATH.to_owned(),
            contract::AGENT_SUBCOMMAND.to_owned(),
        ]),
        security_context: Some(agent_security_context(
            contract::DEFAULT_UID,
            Some(contract::DEFAULT_UID),
        )),
        volume_mounts: Some(vec![secret_mount(mount_path), no_token_mount()]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Default::default()
    }
}

/// Copy the AWS identity env and token mounts from the first app container that carries each;
/// `secret_dir` (our mount) must not hide a token.
fn copy_aws_identity(
    spec: &PodSpec<'_>,
    secret_dir: &str,
    env: &mut Vec<EnvVar>,
    mounts: &mut Vec<VolumeMount>,
) -> Result<(), MutationError> {
    let containers = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
    };
    for name in contract::AWS_IDENTITY_ENV {
        let Some((container, var)) = containers().find_map(|c| {
            c.env
                .iter()
                .flatten()
                .find(|e| e.name == *name)
                .map(|e| (c, e))
        }) else {
            continue;
        };
        env.push(EnvVar {
            name: var.name.to_string(),
            value: var.value.as_ref().map(|v| v.to_string()),
            value_from: var.value_from.clone(),
        });
        if !contract::AWS_TOKEN_FILE_ENV.contains(name) {
            continue;
        }
        let Some(token_file) = var.value.as_deref() else {
            continue;
        };
        if token_file
            .strip_prefix(contract::API_TOKEN_DIR)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            return Err(MutationError::Conflict(format!(
                "container {:?} sets {name}={token_file}, inside {}, the Kubernetes API token's \
                 directory, which secret-inject keeps empty in its container; project the AWS \
                 token into a volume of its own, as the EKS Pod Identity Webhook does \
                 (/var/run/secrets/eks.amazonaws.com/serviceaccount/token)",
                container.name,
                contract::API_TOKEN_DIR
            )));
        }
        // The mount that holds the token file: the longest mountPath that contains it.
        let holder = container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| {
                let dir = m.mount_path.trim_end_matches('/');
                token_file
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|m| m.mount_path.len());
        if let Some(holder) = holder
            && secret_dir == holder.mount_path.trim_end_matches('/')
        {
            return Err(AnnotationError {
                key: spec::MOUNT_PATH.to_owned(),
                problem: format!(
                    "{:?} is where container {:?} mounts volume {:?}, which holds the AWS \
                     identity token {token_file}; the agent needs that token there too",
                    secret_dir, container.name, holder.name
                ),
                fix: "set secrets.k8s.aws/mount-path to another directory, such as \
                      /var/run/secrets/app"
                    .to_owned(),
            }
            .into());
        }
        if let Some(holder) = holder
            && !mounts
                .iter()
                .any(|m| holder.mount_path == m.mount_path || holder.name == m.name)
        {
            mounts.push(VolumeMount {
                name: holder.name.to_string(),
                mount_path: holder.mount_path.to_string(),
                read_only: Some(true),
                ..Default::default()
            });
        }
    }
    Ok(())
}

/// Append `item` to the array at `tokens`, creating it when it is absent.
fn append(ops: &mut JsonPatch, tokens: &[&str], exists: bool, item: &impl Serialize) {
    let mut path = PointerBuf::from_tokens(tokens.iter().copied());
    if exists {
        path.push_back("-");
        ops.push(path, item);
    } else {
        ops.push(path, &[item]);
    }
}

pub mod secret;

#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod settings_tests;
#[cfg(test)]
mod tests;
