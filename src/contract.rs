//! The contract between the webhook and the container it injects.
//!
//! The webhook validates a pod's annotations at admission, resolves them into a [`Plan`] and
//! renders the plan into the injected container's environment ([`Plan::env`]); the agent parses
//! exactly those variables back ([`PlanFields::parse`]). What runs is what was admitted: the
//! agent never re-reads the pod's annotations. The seed's variable names (`SECRET_ARN`,
//! `SECRET_FILENAME`) are part of the contract, so a stand-alone agent configured the seed's way
//! keeps working. Every default of the contract lives here.
//!
//! Pure: no I/O, no async, no AWS.

use std::fmt;

pub use crate::spec::VersionSelector;
use crate::spec::{
    EnvBinding, KeySelector, MountPath, OutputFormat, ParameterArn, RelativeFileName, SecretArn,
    SecretName, SecretSpec, SourceArn, is_secret_name,
};
pub use crate::spec::{Refresh, ReloadSignal};

/// Name of the injected init container (seed contract).
pub const CONTAINER_NAME: &str = "secrets-init-container";
/// Name of the in-memory `emptyDir` volume (seed contract).
pub const VOLUME_NAME: &str = "secret-vol";
/// Path of the binary inside the image (the grammar keeps the mount path from hiding it).
pub const BINARY_PATH: &str = crate::spec::AGENT_BINARY_PATH;
/// Name of the empty in-memory volume the injected container mounts read-only at
/// [`API_TOKEN_DIR`], so that the API server's ServiceAccount admission (which skips a container
/// that already mounts something there) gives it no Kubernetes API token.
pub const NO_TOKEN_VOLUME_NAME: &str = "secret-inject-no-api-token";
/// Where Kubernetes mounts the pod's API token (`kube-api-access-*`) into each container.
pub const API_TOKEN_DIR: &str = crate::spec::API_TOKEN_DIR;
/// Subcommand the injected container runs.
pub const AGENT_SUBCOMMAND: &str = "agent";
/// Default image for the injected container: this release's own image.
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/secret-inject/secret-inject:",
    env!("CARGO_PKG_VERSION")
);

/// The environment variables of the contract.
pub mod env {
    /// ARN (or, stand-alone, name) of the unnamed secret (seed contract).
    pub const SECRET_ARN: &str = "SECRET_ARN";
    /// Its file name relative to the output directory (seed contract).
    pub const SECRET_FILENAME: &str = "SECRET_FILENAME";
    /// Directory the secrets are written into: the mount path of the volume.
    pub const OUTPUT_DIR: &str = "SECRET_INJECT_OUTPUT_DIR";
    /// Region the unnamed secret is fetched from: the webhook renders the ARN's own region.
    pub const REGION: &str = "SECRET_INJECT_REGION";
    /// Octal mode of the written files, chosen by the webhook (see [`super::FileMode`]).
    pub const FILE_MODE: &str = "SECRET_INJECT_FILE_MODE";
    /// Version stage of the unnamed secret, always sent explicitly.
    pub const VERSION_STAGE: &str = "SECRET_INJECT_VERSION_STAGE";
    /// Version id of the unnamed secret, instead of a stage.
    pub const VERSION_ID: &str = "SECRET_INJECT_VERSION_ID";
    /// Key (or JMESPath expression) selected from the unnamed secret's JSON value.
    pub const SECRET_KEY: &str = "SECRET_INJECT_SECRET_KEY";
    /// Output format of the unnamed secret.
    pub const SECRET_FORMAT: &str = "SECRET_INJECT_SECRET_FORMAT";
    /// `VAR=key,...`: env vars fed from the unnamed secret.
    pub const ENV: &str = "SECRET_INJECT_ENV";
    /// The named secrets: a JSON array of [`super::SecretFields`] objects.
    pub const SECRETS: &str = "SECRET_INJECT_SECRETS";
    /// Region holding replicas of the Secrets Manager secrets.
    pub const FAILOVER_REGION: &str = "SECRET_INJECT_FAILOVER_REGION";
    /// Keep the files current: the interval between checks (the agent then runs until stopped).
    pub const REFRESH_INTERVAL: &str = "SECRET_INJECT_REFRESH_INTERVAL";
    /// After a change, the signal for [`RELOAD_PROCESS`].
    pub const RELOAD_SIGNAL: &str = "SECRET_INJECT_RELOAD_SIGNAL";
    /// After a change, the process to signal.
    pub const RELOAD_PROCESS: &str = "SECRET_INJECT_RELOAD_PROCESS";
    /// After a change, the loopback URL to POST to.
    pub const RELOAD_URL: &str = "SECRET_INJECT_RELOAD_URL";
    /// After a change, exit with [`super::RESTART_EXIT_CODE`] (`true`), which the sidecar's
    /// `RestartAllContainers` rule turns into a restart of the pod's containers.
    pub const RESTART_ON_CHANGE: &str = "SECRET_INJECT_RESTART_ON_CHANGE";
}

/// The exit code of the rotation sidecar after a change when the pod asked to be restarted.
pub const RESTART_EXIT_CODE: i32 = 42;

/// Name of the classic (pre-1.29) rotation sidecar, a regular container next to the app's.
pub const SIDECAR_NAME: &str = "secrets-refresh";
/// Subcommand of the startup probe of the native rotation sidecar.
pub const PROBE_SUBCOMMAND: &str = "probe";
/// The versions of the current set, written beside the files (`..data/..versions`; no values),
/// so a restarted or classic sidecar knows what it has.
pub const VERSIONS_FILE_NAME: &str = "..versions";

/// The defaults of the contract. The output directory and file name default to the annotation
/// grammar's defaults (`MountPath::default()`, `RelativeFileName::default()`: the seed's `/tmp`
/// and `secret`).
pub mod defaults {
    use super::FileMode;
    /// Version stage fetched from Secrets Manager.
    pub const VERSION_STAGE: &str = crate::spec::DEFAULT_VERSION_STAGE;
    /// File mode of a stand-alone agent (the webhook always renders one).
    pub const FILE_MODE: FileMode = FileMode::OwnerRead;
}

/// The env file the agent writes for the `env.<n>` annotations, relative to the volume: the
/// path of every `fileKeyRef` the webhook adds. `..`-names are reserved for the atomic writer,
/// so no secret's file can take it; it lives in the current set (`..data`), so it appears
/// together with the files.
pub const ENV_FILE: &str = "..data/..env";
/// The env file's name inside a set.
pub const ENV_FILE_NAME: &str = "..env";

/// UID and GID the injected container runs as when the app's user is not known: the
/// conventional "nonroot" user of distroless images.
pub const DEFAULT_UID: i64 = 65532;

/// Mode of the written files. The webhook chooses it together with the injected container's
/// user so that the app containers can read the files and nobody else needs to:
///
/// | pod | injected container runs as | file mode |
/// |---|---|---|
/// | `fsGroup` set | the app's uid if known, else 65532; group `fsGroup` | `0440` |
/// | all app containers share one non-root `runAsUser`, no `fsGroup` | that uid | `0400` |
/// | otherwise (user unknown, mixed, or root) | 65532 | `0444` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// `0400`: readable by the owner (the app's own uid).
    OwnerRead,
    /// `0440`: readable by owner and group (the pod's `fsGroup`).
    GroupRead,
    /// `0444`: readable by every user in the pod.
    WorldRead,
}

impl FileMode {
    /// The mode bits.
    pub fn bits(self) -> u32 {
        match self {
            FileMode::OwnerRead => 0o400,
            FileMode::GroupRead => 0o440,
            FileMode::WorldRead => 0o444,
        }
    }

    /// As rendered in [`env::FILE_MODE`].
    pub fn as_str(self) -> &'static str {
        match self {
            FileMode::OwnerRead => "0400",
            FileMode::GroupRead => "0440",
            FileMode::WorldRead => "0444",
        }
    }

    /// Parse the value of [`env::FILE_MODE`].
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "0400" | "400" => Some(FileMode::OwnerRead),
            "0440" | "440" => Some(FileMode::GroupRead),
            "0444" | "444" => Some(FileMode::WorldRead),
            _ => None,
        }
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The secret to fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecretId {
    /// A Secrets Manager secret by its full ARN (what the webhook renders).
    Arn(SecretArn),
    /// A Secrets Manager secret by name, resolved in the agent's region (stand-alone use).
    Name(String),
    /// A Systems Manager parameter by its full ARN.
    Parameter(ParameterArn),
}

impl SecretId {
    /// An ARN from the annotation grammar.
    pub fn from_source(source: &SourceArn) -> Self {
        match source {
            SourceArn::SecretsManager(arn) => SecretId::Arn(arn.clone()),
            SourceArn::Parameter(arn) => SecretId::Parameter(arn.clone()),
        }
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretId::Arn(arn) => f.write_str(arn.as_str()),
            SecretId::Name(name) => f.write_str(name),
            SecretId::Parameter(arn) => f.write_str(arn.as_str()),
        }
    }
}

/// One secret of a plan: what to fetch, and what to write from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPlan {
    /// Its name (`None`: the unnamed secret of the seed's variables).
    pub name: Option<SecretName>,
    /// The secret or parameter.
    pub secret: SecretId,
    /// Its version. Always set for Secrets Manager (the default stage is sent explicitly);
    /// `None` for a parameter means its latest version.
    pub version: Option<VersionSelector>,
    /// The region to call. `None` only for a secret given by name without a region: the SDK's
    /// region chain decides.
    pub region: Option<String>,
    /// The file (or, for `split`, directory) below the output directory.
    pub file_name: RelativeFileName,
    /// The part of a JSON value to use.
    pub key: Option<KeySelector>,
    /// How to write it.
    pub format: OutputFormat,
    /// The env vars it feeds.
    pub env: Vec<EnvBinding>,
}

/// What the agent does: the one representation shared by the webhook (which renders it) and the
/// agent (which parses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The secrets: the unnamed one first, then the named ones.
    pub secrets: Vec<SecretPlan>,
    /// The directory the volume is mounted at.
    pub output_dir: MountPath,
    /// The files' mode.
    pub file_mode: FileMode,
    /// A region holding replicas of the Secrets Manager secrets.
    pub failover_region: Option<String>,
    /// Keep the files current (rotation); `None`: fetch once and exit.
    pub refresh: Option<Refresh>,
}

impl SecretPlan {
    /// The plan for a secret or parameter of the annotation grammar; the region is the ARN's
    /// own, the version the default unless given.
    pub fn for_spec(spec: &SecretSpec) -> Self {
        let secret = SecretId::from_source(&spec.source);
        Self {
            name: spec.name.clone(),
            version: spec.version.clone().or_else(|| default_version(&secret)),
            region: Some(spec.source.region().to_owned()),
            secret,
            file_name: spec.file_name.clone(),
            key: spec.key.clone(),
            format: spec.format,
            env: spec.env.clone(),
        }
    }

    /// The plan for a secret ARN with the contract's defaults.
    pub fn for_arn(arn: SecretArn) -> Self {
        Self {
            name: None,
            region: Some(arn.region().to_owned()),
            secret: SecretId::Arn(arn),
            version: Some(VersionSelector::Stage(defaults::VERSION_STAGE.to_owned())),
            file_name: RelativeFileName::default(),
            key: None,
            format: OutputFormat::Raw,
            env: Vec::new(),
        }
    }

    /// How messages name it: `db` for secret `db`, else the secret's ARN or name.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("secret {name} ({})", self.secret),
            None => self.secret.to_string(),
        }
    }

    /// The annotation that set `base` for this secret (`secret-key` or `secret-key.db`).
    pub fn annotation(&self, base: &str) -> String {
        crate::spec::annotation_key(base, self.name.as_ref().map(SecretName::as_str))
    }

    fn fields(&self) -> SecretFields {
        let (version_stage, version_id) = match &self.version {
            Some(VersionSelector::Stage(stage)) => (Some(stage.clone()), None),
            Some(VersionSelector::Id(id)) => (None, Some(id.clone())),
            None => (None, None),
        };
        SecretFields {
            name: self.name.as_ref().map(|n| n.as_str().to_owned()),
            arn: self.secret.to_string(),
            file: Some(self.file_name.as_str().to_owned()),
            version_stage,
            version_id,
            key: self.key.as_ref().map(|k| k.as_str().to_owned()),
            format: (self.format != OutputFormat::Raw).then(|| self.format.as_str().to_owned()),
            env: (!self.env.is_empty()).then(|| EnvBinding::render_list(&self.env)),
            region: None,
        }
    }
}

fn default_version(secret: &SecretId) -> Option<VersionSelector> {
    match secret {
        SecretId::Parameter(_) => None,
        SecretId::Arn(_) | SecretId::Name(_) => {
            Some(VersionSelector::Stage(defaults::VERSION_STAGE.to_owned()))
        }
    }
}

impl Plan {
    /// The plan for one secret ARN with the contract's defaults (the seed's case).
    pub fn for_arn(arn: SecretArn) -> Self {
        Self {
            secrets: vec![SecretPlan::for_arn(arn)],
            output_dir: MountPath::default(),
            file_mode: defaults::FILE_MODE,
            failover_region: None,
            refresh: None,
        }
    }

    /// The environment variables that carry this plan into the injected container. The
    /// unnamed secret goes into the seed's variables, the named ones into [`env::SECRETS`].
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        let (unnamed, named): (Vec<&SecretPlan>, Vec<&SecretPlan>) =
            self.secrets.iter().partition(|s| s.name.is_none());
        if let Some(secret) = unnamed.first() {
            let fields = secret.fields();
            vars.push((env::SECRET_ARN, fields.arn));
            vars.extend(fields.file.map(|v| (env::SECRET_FILENAME, v)));
            vars.push((env::OUTPUT_DIR, self.output_dir.as_str().to_owned()));
            vars.extend(secret.region.clone().map(|v| (env::REGION, v)));
            vars.push((env::FILE_MODE, self.file_mode.as_str().to_owned()));
            vars.extend(fields.version_stage.map(|v| (env::VERSION_STAGE, v)));
            vars.extend(fields.version_id.map(|v| (env::VERSION_ID, v)));
            vars.extend(fields.key.map(|v| (env::SECRET_KEY, v)));
            vars.extend(fields.format.map(|v| (env::SECRET_FORMAT, v)));
            vars.extend(fields.env.map(|v| (env::ENV, v)));
        } else {
            vars.push((env::OUTPUT_DIR, self.output_dir.as_str().to_owned()));
            vars.push((env::FILE_MODE, self.file_mode.as_str().to_owned()));
        }
        if !named.is_empty() {
            let list: Vec<SecretFields> = named.iter().map(|s| s.fields()).collect();
            // Strings only: serializing cannot fail.
            vars.push((
                env::SECRETS,
                serde_json::to_string(&list).unwrap_or_default(),
            ));
        }
        vars.extend(
            self.failover_region
                .clone()
                .map(|v| (env::FAILOVER_REGION, v)),
        );
        if let Some(refresh) = &self.refresh {
            vars.push((
                env::REFRESH_INTERVAL,
                format!("{}ms", refresh.interval.as_millis()),
            ));
            if let Some(signal) = &refresh.signal {
                vars.push((env::RELOAD_SIGNAL, signal.signal.clone()));
                vars.push((env::RELOAD_PROCESS, signal.process.clone()));
            }
            vars.extend(refresh.url.clone().map(|v| (env::RELOAD_URL, v)));
            if refresh.restart {
                vars.push((env::RESTART_ON_CHANGE, "true".to_owned()));
            }
        }
        vars
    }

    /// Every env var of the plan's secrets.
    pub fn env_bindings(&self) -> impl Iterator<Item = (&SecretPlan, &EnvBinding)> {
        self.secrets
            .iter()
            .flat_map(|s| s.env.iter().map(move |b| (s, b)))
    }
}

/// One secret's fields as the agent receives them, before validation: the seed's variables for
/// the unnamed secret, or one object of the [`env::SECRETS`] JSON array for a named one.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretFields {
    /// The secret's name (`<n>` of its annotations); required in [`env::SECRETS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its ARN (or, stand-alone, a Secrets Manager name).
    pub arn: String,
    /// Its file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Its version stage or label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<String>,
    /// Its version id or number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The key selected from its JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `VAR=key,...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The region to call (only the unnamed secret's [`env::REGION`]; named secrets use their
    /// ARN's region).
    #[serde(skip)]
    pub region: Option<String>,
}

/// The plan's fields as the agent receives them (flags or environment), before validation.
#[derive(Debug, Clone, Default)]
pub struct PlanFields {
    /// The unnamed secret, if [`env::SECRET_ARN`] is set.
    pub unnamed: Option<SecretFields>,
    /// [`env::SECRETS`], if set.
    pub secrets: Option<String>,
    /// [`env::OUTPUT_DIR`], if set.
    pub output_dir: Option<String>,
    /// [`env::FILE_MODE`], if set.
    pub file_mode: Option<String>,
    /// [`env::FAILOVER_REGION`], if set.
    pub failover_region: Option<String>,
    /// [`env::REFRESH_INTERVAL`], if set.
    pub refresh_interval: Option<String>,
    /// [`env::RELOAD_SIGNAL`], if set.
    pub reload_signal: Option<String>,
    /// [`env::RELOAD_PROCESS`], if set.
    pub reload_process: Option<String>,
    /// [`env::RELOAD_URL`], if set.
    pub reload_url: Option<String>,
    /// [`env::RESTART_ON_CHANGE`], if set.
    pub restart_on_change: Option<String>,
}

/// A field of the contract the agent received with a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct PlanError {
    /// The environment variable (its flag is named the same way, see `secret-inject agent -h`),
    /// and for a named secret the field: `SECRET_INJECT_SECRETS[db].key`.
    pub variable: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl PlanFields {
    /// The fields from environment-like pairs, `get` looking a variable up by its name.
    pub fn from_lookup<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let owned = |name| get(name).map(str::to_owned);
        PlanFields {
            unnamed: owned(env::SECRET_ARN).map(|arn| SecretFields {
                name: None,
                arn,
                file: owned(env::SECRET_FILENAME),
                version_stage: owned(env::VERSION_STAGE),
                version_id: owned(env::VERSION_ID),
                key: owned(env::SECRET_KEY),
                format: owned(env::SECRET_FORMAT),
                env: owned(env::ENV),
                region: owned(env::REGION),
            }),
            secrets: owned(env::SECRETS),
            output_dir: owned(env::OUTPUT_DIR),
            file_mode: owned(env::FILE_MODE),
            failover_region: owned(env::FAILOVER_REGION),
            refresh_interval: owned(env::REFRESH_INTERVAL),
            reload_signal: owned(env::RELOAD_SIGNAL),
            reload_process: owned(env::RELOAD_PROCESS),
            reload_url: owned(env::RELOAD_URL),
            restart_on_change: owned(env::RESTART_ON_CHANGE),
        }
    }

    /// The fields of a rendered environment ([`Plan::env`]).
    pub fn from_env(vars: &[(&'static str, String)]) -> Self {
        Self::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        })
    }

    /// How messages name the plan's secrets before it parses: the ARNs as given.
    pub fn described(&self) -> String {
        match (&self.unnamed, &self.secrets) {
            (Some(unnamed), None) => unnamed.arn.clone(),
            (None, None) => "<no secret>".to_owned(),
            (_, Some(_)) => "the pod's secrets".to_owned(),
        }
    }

    /// Validate the fields into a plan. Region: the explicit one, else the ARN's own (never an
    /// `AWS_REGION` that an identity webhook set for the cluster), else the SDK's chain.
    pub fn parse(&self) -> Result<Plan, PlanError> {
        let error = |variable: &str, problem: String| PlanError {
            variable: variable.to_owned(),
            problem,
        };
        let mut secrets = Vec::new();
        if let Some(unnamed) = &self.unnamed {
            let flat = |field: &str| {
                match field {
                    "arn" => env::SECRET_ARN,
                    "file" => env::SECRET_FILENAME,
                    "versionStage" => env::VERSION_STAGE,
                    "versionId" => env::VERSION_ID,
                    "key" => env::SECRET_KEY,
                    "format" => env::SECRET_FORMAT,
                    "env" => env::ENV,
                    _ => env::REGION,
                }
                .to_owned()
            };
            secrets.push(unnamed.parse(None, &flat)?);
        }
        if let Some(json) = &self.secrets {
            let list: Vec<SecretFields> = serde_json::from_str(json).map_err(|e| {
                error(
                    env::SECRETS,
                    format!("is not a JSON array of secrets ({e}); the webhook renders it"),
                )
            })?;
            for (index, fields) in list.iter().enumerate() {
                let at = match &fields.name {
                    Some(name) => name.chars().take(63).collect::<String>(),
                    None => index.to_string(),
                };
                let Some(name) = &fields.name else {
                    return Err(error(
                        &format!("{}[{at}].name", env::SECRETS),
                        "is missing".to_owned(),
                    ));
                };
                let name = SecretName::parse(name)
                    .map_err(|p| error(&format!("{}[{at}].name", env::SECRETS), p))?;
                let variable = |field: &str| format!("{}[{at}].{field}", env::SECRETS);
                secrets.push(fields.parse(Some(name), &variable)?);
            }
        }
        if secrets.is_empty() {
            return Err(error(
                env::SECRET_ARN,
                format!(
                    "is not set, and neither is {}; give the ARN of the secret to fetch",
                    env::SECRETS
                ),
            ));
        }
        for (i, a) in secrets.iter().enumerate() {
            if let Some(b) = secrets[i + 1..]
                .iter()
                .find(|b| b.name == a.name || b.file_name == a.file_name)
            {
                return Err(error(
                    env::SECRETS,
                    format!("{} and {} have the same name or file", a.label(), b.label()),
                ));
            }
        }
        let output_dir = match &self.output_dir {
            Some(value) => MountPath::parse(value)
                .map_err(|e| error(env::OUTPUT_DIR, format!("{}; {}", e.problem, e.fix)))?,
            None => MountPath::default(),
        };
        let file_mode = match &self.file_mode {
            Some(value) => FileMode::parse(value).ok_or_else(|| {
                error(
                    env::FILE_MODE,
                    format!("{value:?} is not a supported mode; use 0400, 0440 or 0444"),
                )
            })?,
            None => defaults::FILE_MODE,
        };
        let failover_region = match self.failover_region.as_deref() {
            None | Some("") => None,
            Some(region) if crate::spec::is_region(region) => Some(region.to_owned()),
            Some(other) => {
                return Err(error(
                    env::FAILOVER_REGION,
                    format!("{other:?} is not a region such as us-west-2"),
                ));
            }
        };
        let refresh = self.refresh()?;
        Ok(Plan {
            secrets,
            output_dir,
            file_mode,
            failover_region,
            refresh,
        })
    }

    /// The rotation fields. The agent takes any interval of a second or more (tests use short
    /// ones); the webhook admits 30 s to 24 h.
    fn refresh(&self) -> Result<Option<Refresh>, PlanError> {
        let error = |variable: &str, problem: String| PlanError {
            variable: variable.to_owned(),
            problem,
        };
        let Some(value) = self.refresh_interval.as_deref().filter(|v| !v.is_empty()) else {
            if self.reload_signal.is_some()
                || self.reload_process.is_some()
                || self.reload_url.is_some()
            {
                return Err(error(
                    env::REFRESH_INTERVAL,
                    "is not set, but a reload action is; set the interval".to_owned(),
                ));
            }
            return Ok(None);
        };
        let interval =
            crate::duration::parse(value).map_err(|p| error(env::REFRESH_INTERVAL, p))?;
        if interval < std::time::Duration::from_secs(1) {
            return Err(error(
                env::REFRESH_INTERVAL,
                format!("{value:?} is shorter than a second"),
            ));
        }
        let signal = match (&self.reload_signal, &self.reload_process) {
            (None, None) => None,
            (Some(signal), Some(process))
                if crate::spec::RELOAD_SIGNALS.contains(&signal.as_str())
                    && !process.is_empty() =>
            {
                Some(ReloadSignal {
                    signal: signal.clone(),
                    process: process.clone(),
                })
            }
            _ => {
                return Err(error(
                    env::RELOAD_SIGNAL,
                    format!(
                        "needs {} too, and one of {}",
                        env::RELOAD_PROCESS,
                        crate::spec::RELOAD_SIGNALS.join(", ")
                    ),
                ));
            }
        };
        let url = match &self.reload_url {
            None => None,
            Some(url) if crate::spec::loopback_url(url).is_some() => Some(url.clone()),
            Some(url) => {
                return Err(error(
                    env::RELOAD_URL,
                    format!("{url:?} is not an http URL on loopback"),
                ));
            }
        };
        let restart = match self.restart_on_change.as_deref() {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(error(
                    env::RESTART_ON_CHANGE,
                    format!("{other:?} is not true or false"),
                ));
            }
        };
        Ok(Some(Refresh {
            interval,
            signal,
            url,
            restart,
        }))
    }
}

impl SecretFields {
    fn parse(
        &self,
        name: Option<SecretName>,
        variable: &dyn Fn(&str) -> String,
    ) -> Result<SecretPlan, PlanError> {
        let error = |field: &str, problem: String| PlanError {
            variable: variable(field),
            problem,
        };
        let annotation_problem = |field: &str, e: crate::spec::AnnotationError| {
            error(field, format!("{}; {}", e.problem, e.fix))
        };
        let arn = self.arn.as_str();
        let secret = if arn.starts_with("arn:") {
            SecretId::from_source(&SourceArn::parse(arn).map_err(|e| annotation_problem("arn", e))?)
        } else if is_secret_name(arn) {
            SecretId::Name(arn.to_owned())
        } else {
            return Err(error(
                "arn",
                format!(
                    "{:?} is neither a secret ARN nor a secret name (1-512 of letters, digits \
                     and /_+=.@-)",
                    arn.chars().take(120).collect::<String>()
                ),
            ));
        };
        let file_name = match (&self.file, &name) {
            (Some(value), _) => {
                RelativeFileName::parse(value).map_err(|e| annotation_problem("file", e))?
            }
            (None, Some(name)) => {
                RelativeFileName::parse(name.as_str()).map_err(|e| annotation_problem("file", e))?
            }
            (None, None) => RelativeFileName::default(),
        };
        let version = match (&self.version_id, &self.version_stage) {
            (Some(_), Some(_)) => {
                return Err(error(
                    "versionId",
                    format!(
                        "set either {} or {}, not both",
                        variable("versionId"),
                        variable("versionStage")
                    ),
                ));
            }
            (Some(id), None) if !id.is_empty() => Some(VersionSelector::Id(id.clone())),
            (None, Some(stage)) if !stage.is_empty() => Some(VersionSelector::Stage(stage.clone())),
            (None, None) => default_version(&secret),
            (Some(_), None) => return Err(error("versionId", "is empty".to_owned())),
            (None, Some(_)) => return Err(error("versionStage", "is empty".to_owned())),
        };
        let key = self
            .key
            .as_deref()
            .map(KeySelector::parse)
            .transpose()
            .map_err(|p| error("key", p))?;
        let format = match self.format.as_deref() {
            None => OutputFormat::Raw,
            Some(value) => OutputFormat::parse(value).ok_or_else(|| {
                error(
                    "format",
                    format!("{value:?} is not raw, json, env or split"),
                )
            })?,
        };
        let env = match self.env.as_deref() {
            None | Some("") => Vec::new(),
            Some(value) => EnvBinding::parse_list(value).map_err(|p| error("env", p))?,
        };
        let region = self
            .region
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .or_else(|| match &secret {
                SecretId::Arn(arn) => Some(arn.region().to_owned()),
                SecretId::Parameter(arn) => Some(arn.region().to_owned()),
                SecretId::Name(_) => None,
            });
        Ok(SecretPlan {
            name,
            secret,
            version,
            region,
            file_name,
            key,
            format,
            env,
        })
    }
}

/// Environment variables that carry the pod's AWS identity and region. Identity webhooks (the
/// EKS Pod Identity Webhook for IRSA, the EKS Pod Identity agent's webhook) add them to the app
/// containers; when they ran before us, we copy them into the injected container.
pub const AWS_IDENTITY_ENV: &[&str] = &[
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
];

/// Environment variables whose value is a token file that must be mounted too.
pub const AWS_TOKEN_FILE_ENV: &[&str] = &[
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf";
    const PARAMETER: &str = "arn:aws:ssm:eu-west-1:123456789012:parameter/app/db";

    fn unnamed(arn: &str) -> SecretFields {
        SecretFields {
            arn: arn.to_owned(),
            ..Default::default()
        }
    }

    fn with_unnamed(fields: SecretFields) -> PlanFields {
        PlanFields {
            unnamed: Some(fields),
            ..Default::default()
        }
    }

    #[test]
    fn file_mode_round_trips() {
        for mode in [
            FileMode::OwnerRead,
            FileMode::GroupRead,
            FileMode::WorldRead,
        ] {
            assert_eq!(FileMode::parse(mode.as_str()), Some(mode));
            assert_eq!(format!("0{:o}", mode.bits()), mode.as_str());
        }
        assert_eq!(FileMode::parse("0777"), None);
    }

    #[test]
    fn plans_round_trip_through_the_environment() {
        let mut plan = Plan::for_arn(SecretArn::parse(ARN).unwrap());
        plan.output_dir = MountPath::parse("/var/run/secrets/app").unwrap();
        plan.secrets[0].file_name = RelativeFileName::parse("db/password").unwrap();
        plan.file_mode = FileMode::GroupRead;
        assert_eq!(PlanFields::from_env(&plan.env()).parse(), Ok(plan.clone()));
        plan.secrets[0].version = Some(VersionSelector::Id("01234567-89ab".to_owned()));
        plan.secrets[0].key = Some(KeySelector::parse("db.password").unwrap());
        plan.secrets[0].format = OutputFormat::Json;
        plan.secrets[0].env = EnvBinding::parse_list("A=a,B=b").unwrap();
        assert_eq!(PlanFields::from_env(&plan.env()).parse(), Ok(plan.clone()));
        // Named secrets, a parameter, failover.
        let mut named = SecretPlan::for_arn(SecretArn::parse(ARN).unwrap());
        named.name = Some(SecretName::parse("db").unwrap());
        named.file_name = RelativeFileName::parse("db").unwrap();
        named.format = OutputFormat::Split;
        let mut parameter = SecretPlan {
            secret: SecretId::Parameter(ParameterArn::parse(PARAMETER).unwrap()),
            version: None,
            ..named.clone()
        };
        parameter.name = Some(SecretName::parse("p").unwrap());
        parameter.file_name = RelativeFileName::parse("conf/p").unwrap();
        plan.secrets.push(named);
        plan.secrets.push(parameter);
        plan.failover_region = Some("us-west-2".to_owned());
        plan.refresh = Some(Refresh {
            interval: std::time::Duration::from_secs(300),
            signal: Some(ReloadSignal {
                signal: "HUP".to_owned(),
                process: "nginx".to_owned(),
            }),
            url: Some("http://127.0.0.1:9090/-/reload".to_owned()),
            restart: true,
        });
        let env = plan.env();
        assert_eq!(PlanFields::from_env(&env).parse(), Ok(plan.clone()));
        // Only named secrets: no seed variables.
        plan.secrets.remove(0);
        let env = plan.env();
        assert!(env.iter().all(|(name, _)| *name != env::SECRET_ARN));
        assert_eq!(PlanFields::from_env(&env).parse(), Ok(plan));
    }

    #[test]
    fn the_seed_variables_alone_make_a_plan_with_the_defaults() {
        let plan = with_unnamed(unnamed(ARN)).parse().unwrap();
        assert_eq!(plan, Plan::for_arn(SecretArn::parse(ARN).unwrap()));
        assert_eq!(plan.output_dir.as_str(), "/tmp");
        assert_eq!(plan.secrets[0].file_name.as_str(), "secret");
        assert_eq!(plan.secrets[0].region.as_deref(), Some("eu-west-1"));
        // The seed's rendering is unchanged: no new variables for the seed's case.
        let names: Vec<&str> = plan.env().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                env::SECRET_ARN,
                env::SECRET_FILENAME,
                env::OUTPUT_DIR,
                env::REGION,
                env::FILE_MODE,
                env::VERSION_STAGE
            ]
        );
    }

    #[test]
    fn region_explicit_then_the_arns_then_none() {
        let with = |arn: &str, region: Option<&str>| {
            with_unnamed(SecretFields {
                region: region.map(str::to_owned),
                ..unnamed(arn)
            })
            .parse()
            .unwrap()
            .secrets[0]
                .region
                .clone()
        };
        assert_eq!(with(ARN, Some("us-west-2")).as_deref(), Some("us-west-2"));
        assert_eq!(with(ARN, None).as_deref(), Some("eu-west-1"));
        assert_eq!(with("db-password", None), None);
    }

    #[test]
    fn parameters_default_to_their_latest_version() {
        let plan = with_unnamed(unnamed(PARAMETER)).parse().unwrap();
        assert_eq!(plan.secrets[0].version, None);
        assert!(matches!(plan.secrets[0].secret, SecretId::Parameter(_)));
    }

    #[test]
    fn bad_fields_name_the_variable() {
        let field = |f: SecretFields| with_unnamed(f);
        for (fields, variable) in [
            (field(unnamed("not a name")), env::SECRET_ARN.to_owned()),
            (
                field(SecretFields {
                    file: Some("../x".into()),
                    ..unnamed(ARN)
                }),
                env::SECRET_FILENAME.to_owned(),
            ),
            (
                PlanFields {
                    output_dir: Some("relative".into()),
                    ..field(unnamed(ARN))
                },
                env::OUTPUT_DIR.to_owned(),
            ),
            (
                PlanFields {
                    file_mode: Some("0777".into()),
                    ..field(unnamed(ARN))
                },
                env::FILE_MODE.to_owned(),
            ),
            (
                field(SecretFields {
                    version_stage: Some("AWSCURRENT".into()),
                    version_id: Some("x".into()),
                    ..unnamed(ARN)
                }),
                env::VERSION_ID.to_owned(),
            ),
            (
                field(SecretFields {
                    format: Some("yaml".into()),
                    ..unnamed(ARN)
                }),
                env::SECRET_FORMAT.to_owned(),
            ),
            (
                field(SecretFields {
                    env: Some("1=a".into()),
                    ..unnamed(ARN)
                }),
                env::ENV.to_owned(),
            ),
            (PlanFields::default(), env::SECRET_ARN.to_owned()),
            (
                PlanFields {
                    secrets: Some("{".into()),
                    ..Default::default()
                },
                env::SECRETS.to_owned(),
            ),
            (
                PlanFields {
                    secrets: Some(format!(r#"[{{"name":"db","arn":"{ARN}","key":""}}]"#)),
                    ..Default::default()
                },
                "SECRET_INJECT_SECRETS[db].key".to_owned(),
            ),
            (
                PlanFields {
                    secrets: Some(format!(r#"[{{"arn":"{ARN}"}}]"#)),
                    ..Default::default()
                },
                "SECRET_INJECT_SECRETS[0].name".to_owned(),
            ),
            (
                PlanFields {
                    secrets: Some(format!(r#"[{{"name":"db","arn":"{ARN}","colour":"x"}}]"#)),
                    ..Default::default()
                },
                env::SECRETS.to_owned(),
            ),
            (
                PlanFields {
                    failover_region: Some("mars".into()),
                    ..field(unnamed(ARN))
                },
                env::FAILOVER_REGION.to_owned(),
            ),
        ] {
            let err = fields.parse().unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
            assert!(err.to_string().starts_with(&variable), "{err}");
        }
    }
}
