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
use std::time::Duration;

pub use crate::spec::VersionSelector;
use crate::spec::{
    EnvBinding, InjectionSpec, KeySelector, MountPath, OutputFormat, ParameterArn,
    RelativeFileName, SecretArn, SecretName, SecretSpec, SourceArn, is_secret_name,
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

/// How one field of a carrier travels: flat, as an environment variable (and the agent's flag of
/// the same meaning), as a key of a named secret's JSON object, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The field's name in Rust.
    pub id: &'static str,
    /// The variable and flag that carry it flat.
    pub flat: Option<Flat>,
    /// Its key in a named secret's object of [`env::SECRETS`].
    pub json: Option<&'static str>,
    /// The field's documentation: the flag's help.
    pub help: &'static [&'static str],
}

/// The variable and the flag that carry a [`Field`] flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flat {
    /// The environment variable, as the webhook renders it.
    pub env: &'static str,
    /// The agent's flag, `--<long>` (also its clap id).
    pub long: &'static str,
    /// The flag's value name in `--help`.
    pub value_name: &'static str,
}

/// A struct of received, unvalidated strings whose fields are declared once, each as a
/// [`Field`]: the env var names, the renderer ([`Carrier::render_flat`], the JSON of a named
/// secret) and the readers (the agent's clap parser, the JSON of a named secret) follow from
/// that declaration (the `carrier!` macro).
pub trait Carrier: Default + 'static {
    /// The fields, in the order they are rendered.
    const FIELDS: &'static [Field];
    /// Visit each field with its value.
    fn for_each(&self, visit: impl FnMut(&'static Field, Option<&str>));
    /// Visit each field with its slot.
    fn for_each_mut(&mut self, visit: impl FnMut(&'static Field, &mut Option<String>));

    /// Take the values of the fields that travel flat into `vars`, as (variable, value), in
    /// declaration order.
    fn render_flat(&mut self, vars: &mut Vec<(&'static str, String)>) {
        self.for_each_mut(|field, slot| {
            if let (Some(flat), Some(value)) = (field.flat, slot.take()) {
                vars.push((flat.env, value));
            }
        });
    }
}

/// `Some(expr)` for an optional macro fragment that is there, else `None`.
macro_rules! optional {
    () => {
        None
    };
    ($value:expr) => {
        Some($value)
    };
}

/// The env var constant of a field that travels flat.
macro_rules! carried_const {
    ({ $($attr:tt)* }) => {};
    ({ $($attr:tt)* } $const:ident = $env:literal) => {
        $($attr)* pub const $const: &str = $env;
    };
}

/// Declare a [`Carrier`]: the struct of `Option<String>` fields, an enum naming its fields, a
/// module of the env var names, and its clap `Args`. Each field once:
/// `Variant field flat(CONST = "VARIABLE", "long-flag", "VALUE") json("jsonKey"),` where
/// `flat` and `json` are each optional.
macro_rules! carrier {
    (
        $(#[$meta:meta])*
        pub struct $name:ident;
        $(#[$field_meta:meta])*
        pub enum $field:ident;
        $(#[$env_meta:meta])*
        pub mod $env_mod:ident;
        $(
            $(#[doc = $doc:literal])*
            $variant:ident $ident:ident
                $( flat($const:ident = $env:literal, $long:literal, $value_name:literal) )?
                $( json($json:literal) )?
            ,
        )*
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $ident: Option<String>, )*
        }

        $(#[$field_meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $field {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl $field {
            /// How it travels.
            pub fn spec(self) -> &'static Field {
                &<$name as Carrier>::FIELDS[self as usize]
            }
        }

        $(#[$env_meta])*
        pub mod $env_mod {
            $( carried_const! { { $(#[doc = $doc])* } $( $const = $env )? } )*
        }

        impl Carrier for $name {
            const FIELDS: &'static [Field] = &[$(
                Field {
                    id: stringify!($ident),
                    flat: optional!($( Flat { env: $env, long: $long, value_name: $value_name } )?),
                    json: optional!($( $json )?),
                    help: &[$($doc),*],
                },
            )*];

            fn for_each(&self, mut visit: impl FnMut(&'static Field, Option<&str>)) {
                let mut fields = Self::FIELDS.iter();
                $( if let Some(field) = fields.next() { visit(field, self.$ident.as_deref()); } )*
            }

            fn for_each_mut(&mut self, mut visit: impl FnMut(&'static Field, &mut Option<String>)) {
                let mut fields = Self::FIELDS.iter();
                $( if let Some(field) = fields.next() { visit(field, &mut self.$ident); } )*
            }
        }

        impl clap::FromArgMatches for $name {
            fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
                let mut carrier = Self::default();
                carrier.update_from_arg_matches(matches)?;
                Ok(carrier)
            }

            fn update_from_arg_matches(
                &mut self,
                matches: &clap::ArgMatches,
            ) -> Result<(), clap::Error> {
                read_matches(self, matches);
                Ok(())
            }
        }

        impl clap::Args for $name {
            fn augment_args(command: clap::Command) -> clap::Command {
                flat_args::<Self>(command)
            }

            fn augment_args_for_update(command: clap::Command) -> clap::Command {
                flat_args::<Self>(command)
            }
        }
    };
}

/// The agent's flags for a carrier's flat fields, each reading its variable.
fn flat_args<C: Carrier>(command: clap::Command) -> clap::Command {
    C::FIELDS
        .iter()
        .fold(command, |command, field| match field.flat {
            None => command,
            Some(flat) => command.arg(
                clap::Arg::new(flat.long)
                    .long(flat.long)
                    .env(flat.env)
                    .value_name(flat.value_name)
                    .value_parser(clap::value_parser!(String))
                    .help(help_text(field.help)),
            ),
        })
}

/// A doc comment as one line of help.
fn help_text(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The flat fields' values from the agent's parsed flags and environment.
fn read_matches<C: Carrier>(carrier: &mut C, matches: &clap::ArgMatches) {
    carrier.for_each_mut(|field, slot| {
        if let Some(flat) = field.flat
            && let Ok(Some(value)) = matches.try_get_one::<String>(flat.long)
        {
            *slot = Some(value.clone());
        }
    });
}

/// How a per-secret setting travels: its value rendered as a string (`None`: not rendered, the
/// default), and read back from one.
pub trait Carry: Sized {
    /// The rendered value; `None` for the default.
    fn carry(&self) -> Option<String>;
    /// Read a received value (`None`: not set); the error says what is wrong.
    fn read(value: Option<&str>) -> Result<Self, String>;
}

impl Carry for Option<KeySelector> {
    fn carry(&self) -> Option<String> {
        self.as_ref().map(|key| key.as_str().to_owned())
    }

    fn read(value: Option<&str>) -> Result<Self, String> {
        value.map(KeySelector::parse).transpose()
    }
}

impl Carry for OutputFormat {
    fn carry(&self) -> Option<String> {
        (*self != OutputFormat::Raw).then(|| self.as_str().to_owned())
    }

    fn read(value: Option<&str>) -> Result<Self, String> {
        match value {
            None => Ok(OutputFormat::Raw),
            Some(value) => OutputFormat::parse(value)
                .ok_or_else(|| format!("{value:?} is not raw, json, env or split")),
        }
    }
}

impl Carry for Vec<EnvBinding> {
    fn carry(&self) -> Option<String> {
        (!self.is_empty()).then(|| EnvBinding::render_list(self))
    }

    fn read(value: Option<&str>) -> Result<Self, String> {
        match value {
            None | Some("") => Ok(Vec::new()),
            Some(value) => EnvBinding::parse_list(value),
        }
    }
}

/// Declare [`SecretPlan`] and its carrier [`SecretFields`] together. `plan` lists the fields
/// the contract resolves by hand (which secret, its version, region and file); `fields` their
/// carried strings; `settings` the per-secret settings that map one to one onto the annotation
/// grammar's [`SecretSpec`] fields of the same name: each is a typed [`SecretPlan`] field, a
/// carried string (rendered and read through [`Carry`]) and, for the unnamed secret, a flag and
/// variable. Adding a per-secret setting is one line in `settings`, its grammar in `spec`, and
/// its use.
macro_rules! secret_contract {
    (
        plan {
            $( $(#[$plan_meta:meta])* pub $plan:ident: $plan_type:ty, )*
        }
        fields {
            $(
                $(#[doc = $fdoc:literal])*
                $fvariant:ident $fident:ident
                    $( flat($fconst:ident = $fenv:literal, $flong:literal, $fvalue:literal) )?
                    $( json($fjson:literal) )?
                ,
            )*
        }
        settings {
            $(
                $(#[doc = $sdoc:literal])*
                $svariant:ident $sident:ident: $stype:ty =
                    $( flat($sconst:ident = $senv:literal, $slong:literal, $svalue:literal) )?
                    $( json($sjson:literal) )?
                ,
            )*
        }
    ) => {
        /// One secret of a plan: what to fetch, and what to write from it.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct SecretPlan {
            $( $(#[$plan_meta])* pub $plan: $plan_type, )*
            $( $(#[doc = $sdoc])* pub $sident: $stype, )*
        }

        carrier! {
            /// One secret's fields as the agent receives them, before validation: the seed's
            /// variables (and their flags) for the unnamed secret, or one object of the
            /// [`env::SECRETS`] JSON array for a named one.
            pub struct SecretFields;
            /// A field of [`SecretFields`], to name it in messages.
            pub enum SecretField;
            /// The variables of the unnamed secret.
            pub mod secret_env;
            $(
                $(#[doc = $fdoc])*
                $fvariant $fident
                    $( flat($fconst = $fenv, $flong, $fvalue) )?
                    $( json($fjson) )?
                ,
            )*
            $(
                $(#[doc = $sdoc])*
                $svariant $sident
                    $( flat($sconst = $senv, $slong, $svalue) )?
                    $( json($sjson) )?
                ,
            )*
        }

        impl SecretPlan {
            /// A plan with `spec`'s settings.
            fn with_settings_of(spec: &SecretSpec, $($plan: $plan_type),*) -> Self {
                Self { $($plan,)* $( $sident: spec.$sident.clone(), )* }
            }

            /// A plan with the default settings.
            fn with_default_settings($($plan: $plan_type),*) -> Self {
                Self { $($plan,)* $( $sident: Default::default(), )* }
            }

            /// Render the settings into `fields`.
            fn carry_settings(&self, fields: &mut SecretFields) {
                $( fields.$sident = Carry::carry(&self.$sident); )*
            }
        }

        impl SecretFields {
            /// The plan with these fields' settings, read; `error` names a bad field.
            fn plan_with(
                &self,
                error: impl Fn(SecretField, String) -> PlanError,
                $($plan: $plan_type),*
            ) -> Result<SecretPlan, PlanError> {
                Ok(SecretPlan {
                    $($plan,)*
                    $(
                        $sident: Carry::read(self.$sident.as_deref())
                            .map_err(|problem| error(SecretField::$svariant, problem))?,
                    )*
                })
            }
        }
    };
}

secret_contract! {
    plan {
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
    }
    fields {
        /// The secret's name (`<n>` of its annotations); required in a named secret's object.
        Name name json("name"),
        /// ARN (or, stand-alone, name) of the unnamed secret (seed contract); the webhook
        /// renders the validated ARN. A Systems Manager parameter ARN fetches a parameter.
        Arn arn flat(SECRET_ARN = "SECRET_ARN", "secret-arn", "ARN") json("arn"),
        /// File to write, relative to the output directory (seed contract); may hold
        /// sub-folders [default: secret].
        File file flat(SECRET_FILENAME = "SECRET_FILENAME", "secret-filename", "FILE")
            json("file"),
        /// AWS region of the unnamed secret. Default: the ARN's own region (what the webhook
        /// renders); for a name, the SDK's region chain (AWS_REGION, profile).
        Region region flat(REGION = "SECRET_INJECT_REGION", "region", "REGION"),
        /// Version stage of the secret, sent explicitly [default: AWSCURRENT].
        VersionStage version_stage
            flat(VERSION_STAGE = "SECRET_INJECT_VERSION_STAGE", "version-stage", "STAGE")
            json("versionStage"),
        /// Version id (or a parameter's version number) of the secret, instead of a stage.
        VersionId version_id
            flat(VERSION_ID = "SECRET_INJECT_VERSION_ID", "version-id", "ID")
            json("versionId"),
    }
    settings {
        /// Top-level JSON key or JMESPath expression selected from the secret's value.
        Key key: Option<KeySelector> =
            flat(SECRET_KEY = "SECRET_INJECT_SECRET_KEY", "secret-key", "KEY") json("key"),
        /// Output format: raw, json, env or split [default: raw].
        Format format: OutputFormat =
            flat(SECRET_FORMAT = "SECRET_INJECT_SECRET_FORMAT", "secret-format", "FORMAT")
            json("format"),
        /// Env vars for the app containers from the secret's JSON keys: VAR=key[,VAR=key...],
        /// written to the kubelet's env file.
        Env env: Vec<EnvBinding> =
            flat(ENV = "SECRET_INJECT_ENV", "env", "VAR=KEY,...") json("env"),
    }
}

carrier! {
    /// The pod's fields of the plan as the agent receives them (flags or environment), before
    /// validation.
    pub struct PodFields;
    /// A field of [`PodFields`], to name it in messages.
    pub enum PodField;
    /// The variables of the pod's plan.
    pub mod pod_env;
    /// Directory to write into: the mount path of the in-memory volume [default: /tmp].
    OutputDir output_dir flat(OUTPUT_DIR = "SECRET_INJECT_OUTPUT_DIR", "output-dir", "DIR"),
    /// Mode of the written files: 0400, 0440 or 0444 [default: 0400]; the webhook chooses it
    /// with the container's user.
    FileMode file_mode flat(FILE_MODE = "SECRET_INJECT_FILE_MODE", "file-mode", "MODE"),
    /// The named secrets, a JSON array of {name, arn, file, versionStage, versionId, key,
    /// format, env} objects (the webhook renders it).
    Secrets secrets flat(SECRETS = "SECRET_INJECT_SECRETS", "secrets", "JSON"),
    /// Region holding replicas of the Secrets Manager secrets: a transient failure of the
    /// primary region fails over there.
    FailoverRegion failover_region
        flat(FAILOVER_REGION = "SECRET_INJECT_FAILOVER_REGION", "failover-region", "REGION"),
    /// Keep the files current: check for new versions at this interval (with jitter) and run
    /// until stopped, as the rotation sidecar. Unset: fetch once and exit.
    RefreshInterval refresh_interval
        flat(REFRESH_INTERVAL = "SECRET_INJECT_REFRESH_INTERVAL", "refresh-interval", "DURATION"),
    /// After a change, send this signal (HUP, USR1, USR2, INT, QUIT, TERM, WINCH) to
    /// --reload-process (the pod needs shareProcessNamespace; the webhook sets it).
    ReloadSignal reload_signal
        flat(RELOAD_SIGNAL = "SECRET_INJECT_RELOAD_SIGNAL", "reload-signal", "SIGNAL"),
    /// After a change, the name of the process to signal (as in /proc/PID/comm).
    ReloadProcess reload_process
        flat(RELOAD_PROCESS = "SECRET_INJECT_RELOAD_PROCESS", "reload-process", "NAME"),
    /// After a change, POST to this loopback URL (e.g. http://127.0.0.1:9090/-/reload).
    ReloadUrl reload_url flat(RELOAD_URL = "SECRET_INJECT_RELOAD_URL", "reload-url", "URL"),
    /// After a change, exit with code 42 (true), which the sidecar's RestartAllContainers
    /// restart rule turns into an in-place restart of the pod's containers.
    RestartOnChange restart_on_change
        flat(RESTART_ON_CHANGE = "SECRET_INJECT_RESTART_ON_CHANGE", "restart-on-change", "BOOL"),
    /// Where the rest of the plan comes from instead of these variables: `annotations` (policy
    /// mode, where the API server's MutatingAdmissionPolicy injected the agent): the pod's own
    /// `secrets.k8s.aws/` annotations, copied into the agent's environment at admission as one
    /// variable each named as its key, parsed with the webhook's grammar. Only the file mode
    /// (from the pod spec) comes from its variable then.
    PlanFrom plan_from flat(PLAN_FROM = "SECRET_INJECT_PLAN_FROM", "plan-from", "CARRIER"),
    /// Serve Prometheus metrics at /metrics on this port, as the rotation sidecar (an agent that
    /// fetches once serves none).
    MetricsPort metrics_port
        flat(METRICS_PORT = "SECRET_INJECT_METRICS_PORT", "metrics-port", "PORT"),
    /// Where the metrics listen: loopback (127.0.0.1) or pod (every address of the pod, the pod
    /// IP) [default: loopback].
    MetricsAddress metrics_address
        flat(METRICS_ADDRESS = "SECRET_INJECT_METRICS_ADDRESS", "metrics-address", "ADDRESS"),
}

carrier! {
    /// How the agent runs, as the operator set it for every injected pod (the webhook's and
    /// `inject`'s `--sidecar-*` flags, the chart's `sidecar.*` values) and the agent receives it
    /// (flags or environment), before validation. Unset fields are not rendered: the agent's
    /// defaults apply.
    pub struct SettingsFields;
    /// A field of [`SettingsFields`], to name it in messages.
    pub enum SettingsField;
    /// The variables of the agent's settings.
    pub mod settings_env;
    /// Give up after this long, retrying throttling, 5xx, timeouts and connection errors
    /// [default: 120s].
    Deadline deadline flat(DEADLINE = "SECRET_INJECT_DEADLINE", "deadline", "DURATION"),
    /// Longest time for one attempt (connect, send, answer); a stalled attempt is retried
    /// [default: 10s].
    AttemptTimeout attempt_timeout
        flat(ATTEMPT_TIMEOUT = "SECRET_INJECT_ATTEMPT_TIMEOUT", "attempt-timeout", "DURATION"),
    /// Fetch with BatchGetSecretValue (20 secrets a call) in a region with at least this many
    /// AWSCURRENT secrets; 0: always GetSecretValue [default: 2].
    BatchThreshold batch_threshold
        flat(BATCH_THRESHOLD = "SECRET_INJECT_BATCH_THRESHOLD", "batch-threshold", "N"),
}

/// The environment variables of the contract, declared with their fields ([`SecretFields`],
/// [`PodFields`], [`SettingsFields`]).
pub mod env {
    pub use super::pod_env::*;
    pub use super::secret_env::*;
    pub use super::settings_env::*;
    /// The log level of every subcommand (a global flag, `--log-level`): the webhook renders the
    /// operator's `--sidecar-log-level` into it.
    pub const LOG_LEVEL: &str = "SECRET_INJECT_LOG_LEVEL";
}

/// The agent's settings, validated ([`SettingsFields::parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentSettings {
    /// Give up after this long.
    pub deadline: Duration,
    /// Longest time for one attempt.
    pub attempt_timeout: Duration,
    /// Batch in a region with at least this many AWSCURRENT secrets (0: never).
    pub batch_threshold: usize,
}

impl AgentSettings {
    /// The defaults, what an agent uses for a setting that was not rendered.
    pub const DEFAULT: AgentSettings = AgentSettings {
        deadline: defaults::DEADLINE,
        attempt_timeout: defaults::ATTEMPT_TIMEOUT,
        batch_threshold: defaults::BATCH_THRESHOLD,
    };
}

impl SettingsFields {
    /// Validate the settings; unset ones take [`AgentSettings::DEFAULT`]. The webhook checks the
    /// operator's flags with this at start, the agent what it received.
    pub fn parse(&self) -> Result<AgentSettings, PlanError> {
        let invalid = |field: SettingsField, problem: String| PlanError {
            variable: field
                .spec()
                .flat
                .map_or(field.spec().id, |f| f.env)
                .to_owned(),
            problem,
        };
        let duration = |field, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(value) => match crate::duration::parse(value) {
                Ok(d) if d.is_zero() => Err(invalid(
                    field,
                    format!("{value:?} is zero; give a positive duration such as 30s or 2m"),
                )),
                Ok(d) => Ok(d),
                Err(e) => Err(invalid(field, format!("{value:?}: {e}"))),
            },
        };
        let default = AgentSettings::DEFAULT;
        let settings = AgentSettings {
            deadline: duration(SettingsField::Deadline, &self.deadline, default.deadline)?,
            attempt_timeout: duration(
                SettingsField::AttemptTimeout,
                &self.attempt_timeout,
                default.attempt_timeout,
            )?,
            batch_threshold: match &self.batch_threshold {
                None => default.batch_threshold,
                Some(value) => value.parse().map_err(|_| {
                    invalid(
                        SettingsField::BatchThreshold,
                        format!("{value:?} is not a whole number of secrets (0: never batch)"),
                    )
                })?,
            },
        };
        // Only a stated attempt timeout is checked: the default one (10 s) is cut to what is left
        // of a shorter deadline, as every attempt is.
        if self.attempt_timeout.is_some() && settings.attempt_timeout > settings.deadline {
            return Err(invalid(
                SettingsField::AttemptTimeout,
                format!(
                    "{:?} is longer than the deadline ({:?}); one attempt must fit in the deadline",
                    settings.attempt_timeout, settings.deadline
                ),
            ));
        }
        Ok(settings)
    }

    /// The variables that carry the settings that were set, in declaration order.
    pub fn render(mut self) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        self.render_flat(&mut vars);
        vars
    }
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
    /// The agent uses BatchGetSecretValue in a region where a plan reads at least this many
    /// distinct secrets at `AWSCURRENT`: the default of `secret-inject agent --batch-threshold`
    /// (an operator may change it for every pod with `--sidecar-batch-threshold`; `iam-policy`
    /// assumes the default).
    pub const BATCH_THRESHOLD: usize = 2;
    /// How long the agent retries before it gives up.
    pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);
    /// Longest time for one attempt.
    pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
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
        let version = spec.version.clone().or_else(|| default_version(&secret));
        Self::with_settings_of(
            spec,
            spec.name.clone(),
            secret,
            version,
            Some(spec.source.region().to_owned()),
            spec.file_name.clone(),
        )
    }

    /// The plan for a secret ARN with the contract's defaults.
    pub fn for_arn(arn: SecretArn) -> Self {
        let region = Some(arn.region().to_owned());
        Self::with_default_settings(
            None,
            SecretId::Arn(arn),
            Some(VersionSelector::Stage(defaults::VERSION_STAGE.to_owned())),
            region,
            RelativeFileName::default(),
        )
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

    /// Its fields as the webhook renders them.
    pub fn carried(&self) -> SecretFields {
        let (version_stage, version_id) = match &self.version {
            Some(VersionSelector::Stage(stage)) => (Some(stage.clone()), None),
            Some(VersionSelector::Id(id)) => (None, Some(id.clone())),
            None => (None, None),
        };
        let mut fields = SecretFields {
            name: self.name.as_ref().map(|n| n.as_str().to_owned()),
            arn: Some(self.secret.to_string()),
            file: Some(self.file_name.as_str().to_owned()),
            // Only the unnamed secret carries a region (named ones use their ARN's).
            region: self.name.is_none().then(|| self.region.clone()).flatten(),
            version_stage,
            version_id,
            ..SecretFields::default()
        };
        self.carry_settings(&mut fields);
        fields
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

/// The pod's annotations as policy mode carries them into the agent's environment: the
/// variables named as a `secrets.k8s.aws/` key (but the status, which admission sets), at most
/// [`MAX_CARRIED_ANNOTATIONS`] of them read (the grammar's limits then deny the pod); a name or
/// value that is not UTF-8 is skipped (the API server stores only UTF-8).
pub fn carried_annotations(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> std::collections::BTreeMap<String, String> {
    vars.into_iter()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, _)| name.starts_with(crate::spec::PREFIX) && name != crate::spec::STATUS)
        .take(MAX_CARRIED_ANNOTATIONS)
        .collect()
}

/// How many carried annotations the agent reads at most: more than any pod within the
/// grammar's limits can have.
pub const MAX_CARRIED_ANNOTATIONS: usize = 4096;

/// The value of [`env::PLAN_FROM`] in policy mode: the plan comes from the pod's annotations.
pub const PLAN_FROM_ANNOTATIONS: &str = "annotations";

impl Plan {
    /// The plan of a pod's validated annotations: the one the webhook renders (with the rotation
    /// the operator completes, [`crate::mutate`]), the one `iam-policy` asks the agent's call
    /// planner about, and the one the agent of policy mode builds from the annotations it
    /// carries. The file mode is the pod spec's part.
    pub fn for_injection(injection: &InjectionSpec, file_mode: FileMode) -> Self {
        Self {
            secrets: injection.secrets.iter().map(SecretPlan::for_spec).collect(),
            output_dir: injection.mount_path.clone(),
            file_mode,
            failover_region: injection.failover_region.clone(),
            refresh: injection.refresh.clone(),
        }
    }

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

    /// The plan's fields as the webhook renders them: the unnamed secret flat (the seed's
    /// variables), the named ones in [`env::SECRETS`].
    pub fn carried(&self) -> PlanFields {
        let mut named = Vec::new();
        let mut unnamed = None;
        for secret in &self.secrets {
            match secret.name {
                None if unnamed.is_none() => unnamed = Some(secret.carried()),
                _ => named.push(secret.carried()),
            }
        }
        let refresh = self.refresh.as_ref();
        let signal = refresh.and_then(|r| r.signal.as_ref());
        PlanFields {
            unnamed: unnamed.unwrap_or_default(),
            pod: PodFields {
                output_dir: Some(self.output_dir.as_str().to_owned()),
                file_mode: Some(self.file_mode.as_str().to_owned()),
                // Strings only: serializing cannot fail.
                secrets: (!named.is_empty())
                    .then(|| serde_json::to_string(&named).unwrap_or_default()),
                failover_region: self.failover_region.clone(),
                refresh_interval: refresh.map(|r| format!("{}ms", r.interval.as_millis())),
                reload_signal: signal.map(|s| s.signal.clone()),
                reload_process: signal.map(|s| s.process.clone()),
                reload_url: refresh.and_then(|r| r.url.clone()),
                restart_on_change: refresh.filter(|r| r.restart).map(|_| "true".to_owned()),
                metrics_port: refresh.and_then(|r| r.metrics_port).map(|p| p.to_string()),
                metrics_address: refresh
                    .filter(|r| r.metrics_port.is_some())
                    .and_then(|r| r.metrics_address)
                    .map(|a| a.as_str().to_owned()),
                plan_from: None,
            },
        }
    }

    /// The environment variables that carry this plan into the injected container. The
    /// unnamed secret goes into the seed's variables, the named ones into [`env::SECRETS`].
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.carried().render()
    }

    /// Every env var of the plan's secrets.
    pub fn env_bindings(&self) -> impl Iterator<Item = (&SecretPlan, &EnvBinding)> {
        self.secrets
            .iter()
            .flat_map(|s| s.env.iter().map(move |b| (s, b)))
    }
}

/// A named secret's object in [`env::SECRETS`]: its fields that have a JSON key and a value.
impl serde::Serialize for SecretFields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        let mut result = Ok(());
        self.for_each(|field, value| {
            if let (Ok(()), Some(key), Some(value)) = (&result, field.json, value) {
                result = map.serialize_entry(key, value);
            }
        });
        result?;
        map.end()
    }
}

/// A named secret's object in [`env::SECRETS`]: string (or null) values of known keys, each
/// at most once.
impl<'de> serde::Deserialize<'de> for SecretFields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretFields;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of a secret's fields")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SecretFields, A::Error> {
                use serde::de::Error as _;
                let mut fields = SecretFields::default();
                let mut seen = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(field) = SecretFields::FIELDS
                        .iter()
                        .find(|f| f.json == Some(key.as_str()))
                    else {
                        let known: Vec<&str> =
                            SecretFields::FIELDS.iter().filter_map(|f| f.json).collect();
                        return Err(A::Error::custom(format_args!(
                            "unknown field `{key}`, expected one of {}",
                            known.join(", ")
                        )));
                    };
                    if seen.contains(&field.id) {
                        return Err(A::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    seen.push(field.id);
                    let value: Option<String> = map.next_value()?;
                    fields.for_each_mut(|f, slot| {
                        if f.id == field.id {
                            *slot = value.clone();
                        }
                    });
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The plan's fields as the agent receives them (flags or environment), before validation: the
/// agent's CLI flattens it.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct PlanFields {
    /// The unnamed secret, if [`env::SECRET_ARN`] is set.
    #[command(flatten)]
    pub unnamed: SecretFields,
    /// The pod's fields.
    #[command(flatten)]
    pub pod: PodFields,
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

impl SecretField {
    /// How messages name this field of the unnamed secret: its variable.
    fn flat_variable(self) -> String {
        let spec = self.spec();
        spec.flat.map_or(spec.id, |flat| flat.env).to_owned()
    }

    /// How messages name this field of the named secret at `at`: its place in
    /// [`env::SECRETS`].
    fn json_variable(self, at: &str) -> String {
        let spec = self.spec();
        format!("{}[{at}].{}", env::SECRETS, spec.json.unwrap_or(spec.id))
    }
}

impl PlanFields {
    /// The environment variables that carry these fields, in the order the webhook has always
    /// rendered them (goldens and the patches of admitted pods show it): the unnamed secret's
    /// ARN and file, the output directory, the secret's region, the file mode, then the rest in
    /// declaration order.
    pub fn render(self) -> Vec<(&'static str, String)> {
        let PlanFields {
            mut unnamed,
            mut pod,
        } = self;
        let mut vars = Vec::with_capacity(SecretFields::FIELDS.len() + PodFields::FIELDS.len());
        let seed_order = [
            (env::SECRET_ARN, unnamed.arn.take()),
            (env::SECRET_FILENAME, unnamed.file.take()),
            (env::OUTPUT_DIR, pod.output_dir.take()),
            (env::REGION, unnamed.region.take()),
            (env::FILE_MODE, pod.file_mode.take()),
        ];
        vars.extend(
            seed_order
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?))),
        );
        unnamed.render_flat(&mut vars);
        pod.render_flat(&mut vars);
        vars
    }

    /// How messages name the plan's secrets before it parses: the ARNs as given.
    pub fn described(&self) -> String {
        match (&self.unnamed.arn, &self.pod.secrets) {
            (Some(arn), None) => arn.clone(),
            (None, None) => "<no secret>".to_owned(),
            (_, Some(_)) => "the pod's secrets".to_owned(),
        }
    }

    /// Whether the plan comes from the pod's annotations ([`env::PLAN_FROM`]); an unknown
    /// carrier is an error.
    pub fn from_annotations(&self) -> Result<bool, PlanError> {
        match self.pod.plan_from.as_deref() {
            None | Some("") => Ok(false),
            Some(PLAN_FROM_ANNOTATIONS) => Ok(true),
            Some(other) => Err(PlanError {
                variable: env::PLAN_FROM.to_owned(),
                problem: format!(
                    "{:?} is not a plan carrier; the only one is {PLAN_FROM_ANNOTATIONS:?} (policy \
                     mode), or leave it unset",
                    other.chars().take(40).collect::<String>()
                ),
            }),
        }
    }

    /// Policy mode ([`env::PLAN_FROM`] `annotations`): the plan from the pod's annotations as
    /// the agent received them (the `secrets.k8s.aws/` variables of its environment, see
    /// [`carried_annotations`]), parsed with the grammar and limits the webhook applies, so a
    /// pod means the same in both modes. The file mode comes from [`env::FILE_MODE`], which the
    /// policy computed from the pod spec; no other plan variable may be set beside them.
    pub fn parse_annotations(
        &self,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<Plan, PlanError> {
        let conflicting = PlanFields {
            pod: PodFields {
                file_mode: None,
                plan_from: None,
                ..self.pod.clone()
            },
            ..self.clone()
        };
        if let Some((variable, _)) = conflicting.render().into_iter().next() {
            return Err(PlanError {
                variable: variable.to_owned(),
                problem: format!(
                    "is set, but {}={PLAN_FROM_ANNOTATIONS} takes the plan from the pod's \
                     annotations; set one or the other",
                    env::PLAN_FROM
                ),
            });
        }
        let invalid = |variable: String, problem: String| PlanError { variable, problem };
        let injection = match InjectionSpec::from_annotations(Some(annotations)) {
            Ok(crate::spec::Request::Inject(injection)) => injection,
            Ok(_) => {
                return Err(invalid(
                    crate::spec::INJECTOR_WEBHOOK.to_owned(),
                    format!(
                        "is not \"enabled\" among the pod's annotations the agent received \
                         ({} of them); the admission policy injects only pods that opt in",
                        annotations.len()
                    ),
                ));
            }
            Err(e) => return Err(invalid(e.key, format!("{}; {}", e.problem, e.fix))),
        };
        let file_mode = match &self.pod.file_mode {
            Some(value) => FileMode::parse(value).ok_or_else(|| {
                invalid(
                    env::FILE_MODE.to_owned(),
                    format!("{value:?} is not a supported mode; use 0400, 0440 or 0444"),
                )
            })?,
            None => defaults::FILE_MODE,
        };
        Ok(Plan::for_injection(&injection, file_mode))
    }

    /// Validate the fields into a plan. Region: the explicit one, else the ARN's own (never an
    /// `AWS_REGION` that an identity webhook set for the cluster), else the SDK's chain.
    pub fn parse(&self) -> Result<Plan, PlanError> {
        let error = |variable: &str, problem: String| PlanError {
            variable: variable.to_owned(),
            problem,
        };
        let mut secrets = Vec::new();
        if self.unnamed.arn.is_some() {
            secrets.push(self.unnamed.parse(None, &SecretField::flat_variable)?);
        }
        if let Some(json) = &self.pod.secrets {
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
                let variable = |field: SecretField| field.json_variable(&at);
                let Some(name) = &fields.name else {
                    return Err(error(&variable(SecretField::Name), "is missing".to_owned()));
                };
                let name =
                    SecretName::parse(name).map_err(|p| error(&variable(SecretField::Name), p))?;
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
        let output_dir = match &self.pod.output_dir {
            Some(value) => MountPath::parse(value)
                .map_err(|e| error(env::OUTPUT_DIR, format!("{}; {}", e.problem, e.fix)))?,
            None => MountPath::default(),
        };
        let file_mode = match &self.pod.file_mode {
            Some(value) => FileMode::parse(value).ok_or_else(|| {
                error(
                    env::FILE_MODE,
                    format!("{value:?} is not a supported mode; use 0400, 0440 or 0444"),
                )
            })?,
            None => defaults::FILE_MODE,
        };
        let failover_region = match self.pod.failover_region.as_deref() {
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
        let Some(value) = self
            .pod
            .refresh_interval
            .as_deref()
            .filter(|v| !v.is_empty())
        else {
            if self.pod.reload_signal.is_some()
                || self.pod.reload_process.is_some()
                || self.pod.reload_url.is_some()
            {
                return Err(error(
                    env::REFRESH_INTERVAL,
                    "is not set, but a reload action is; set the interval".to_owned(),
                ));
            }
            if self.pod.metrics_port.is_some() || self.pod.metrics_address.is_some() {
                return Err(error(
                    env::REFRESH_INTERVAL,
                    "is not set, but a metrics port is: only the rotation sidecar serves \
                     metrics; set the interval"
                        .to_owned(),
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
        let signal = match (&self.pod.reload_signal, &self.pod.reload_process) {
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
        let url = match &self.pod.reload_url {
            None => None,
            Some(url) if crate::spec::loopback_url(url).is_some() => Some(url.clone()),
            Some(url) => {
                return Err(error(
                    env::RELOAD_URL,
                    format!("{url:?} is not an http URL on loopback"),
                ));
            }
        };
        let restart = match self.pod.restart_on_change.as_deref() {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(error(
                    env::RESTART_ON_CHANGE,
                    format!("{other:?} is not true or false"),
                ));
            }
        };
        let metrics_port = match self.pod.metrics_port.as_deref() {
            None | Some("") => None,
            Some(value) => Some(
                value
                    .parse::<u16>()
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or_else(|| {
                        error(
                            env::METRICS_PORT,
                            format!("{value:?} is not a port from 1 to 65535"),
                        )
                    })?,
            ),
        };
        let metrics_address = match self.pod.metrics_address.as_deref() {
            None | Some("") => None,
            Some(value) => Some(crate::spec::MetricsAddress::parse(value).ok_or_else(|| {
                error(
                    env::METRICS_ADDRESS,
                    format!("{value:?} is not loopback or pod"),
                )
            })?),
        };
        if metrics_port.is_none() && metrics_address.is_some() {
            return Err(error(
                env::METRICS_ADDRESS,
                format!("is set without {}", env::METRICS_PORT),
            ));
        }
        Ok(Some(Refresh {
            interval,
            signal,
            url,
            restart,
            metrics_port,
            metrics_address,
        }))
    }
}

impl SecretFields {
    /// Validate one secret's fields; `variable` names a field in messages.
    fn parse(
        &self,
        name: Option<SecretName>,
        variable: &dyn Fn(SecretField) -> String,
    ) -> Result<SecretPlan, PlanError> {
        let error = |field: SecretField, problem: String| PlanError {
            variable: variable(field),
            problem,
        };
        let annotation_problem = |field: SecretField, e: crate::spec::AnnotationError| {
            error(field, format!("{}; {}", e.problem, e.fix))
        };
        let Some(arn) = self.arn.as_deref() else {
            return Err(error(SecretField::Arn, "is missing".to_owned()));
        };
        let secret = if arn.starts_with("arn:") {
            SecretId::from_source(
                &SourceArn::parse(arn).map_err(|e| annotation_problem(SecretField::Arn, e))?,
            )
        } else if is_secret_name(arn) {
            SecretId::Name(arn.to_owned())
        } else {
            return Err(error(
                SecretField::Arn,
                format!(
                    "{:?} is neither a secret ARN nor a secret name (1-512 of letters, digits \
                     and /_+=.@-)",
                    arn.chars().take(120).collect::<String>()
                ),
            ));
        };
        let file_name = match (&self.file, &name) {
            (Some(value), _) => RelativeFileName::parse(value)
                .map_err(|e| annotation_problem(SecretField::File, e))?,
            (None, Some(name)) => RelativeFileName::parse(name.as_str())
                .map_err(|e| annotation_problem(SecretField::File, e))?,
            (None, None) => RelativeFileName::default(),
        };
        let version = match (&self.version_id, &self.version_stage) {
            (Some(_), Some(_)) => {
                return Err(error(
                    SecretField::VersionId,
                    format!(
                        "set either {} or {}, not both",
                        variable(SecretField::VersionId),
                        variable(SecretField::VersionStage)
                    ),
                ));
            }
            (Some(id), None) if !id.is_empty() => Some(VersionSelector::Id(id.clone())),
            (None, Some(stage)) if !stage.is_empty() => Some(VersionSelector::Stage(stage.clone())),
            (None, None) => default_version(&secret),
            (Some(_), None) => return Err(error(SecretField::VersionId, "is empty".to_owned())),
            (None, Some(_)) => {
                return Err(error(SecretField::VersionStage, "is empty".to_owned()));
            }
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
        self.plan_with(error, name, secret, version, region, file_name)
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
            arn: Some(arn.to_owned()),
            ..Default::default()
        }
    }

    fn with_unnamed(fields: SecretFields) -> PlanFields {
        PlanFields {
            unnamed: fields,
            ..Default::default()
        }
    }

    fn with_pod(pod: PodFields) -> PlanFields {
        PlanFields {
            pod,
            ..Default::default()
        }
    }

    /// The plan's environment, parsed back by the agent's own command-line parser.
    fn reparse(plan: &Plan) -> Result<Plan, PlanError> {
        let env = plan.env();
        let args = crate::cli::AgentArgs::from_rendered(env.iter().map(|(n, v)| (*n, v.as_str())))
            .unwrap();
        args.plan_fields().parse()
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
        assert_eq!(reparse(&plan), Ok(plan.clone()));
        plan.secrets[0].version = Some(VersionSelector::Id("01234567-89ab".to_owned()));
        plan.secrets[0].key = Some(KeySelector::parse("db.password").unwrap());
        plan.secrets[0].format = OutputFormat::Json;
        plan.secrets[0].env = EnvBinding::parse_list("A=a,B=b").unwrap();
        assert_eq!(reparse(&plan), Ok(plan.clone()));
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
            metrics_port: Some(9102),
            metrics_address: Some(crate::spec::MetricsAddress::Pod),
        });
        assert_eq!(reparse(&plan), Ok(plan.clone()));
        // Only named secrets: no seed variables.
        plan.secrets.remove(0);
        let env = plan.env();
        assert!(env.iter().all(|(name, _)| *name != env::SECRET_ARN));
        assert_eq!(reparse(&plan), Ok(plan));
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
                    pod: PodFields {
                        output_dir: Some("relative".into()),
                        ..Default::default()
                    },
                    ..field(unnamed(ARN))
                },
                env::OUTPUT_DIR.to_owned(),
            ),
            (
                PlanFields {
                    pod: PodFields {
                        file_mode: Some("0777".into()),
                        ..Default::default()
                    },
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
                with_pod(PodFields {
                    secrets: Some("{".into()),
                    ..Default::default()
                }),
                env::SECRETS.to_owned(),
            ),
            (
                with_pod(PodFields {
                    secrets: Some(format!(r#"[{{"name":"db","arn":"{ARN}","key":""}}]"#)),
                    ..Default::default()
                }),
                "SECRET_INJECT_SECRETS[db].key".to_owned(),
            ),
            (
                with_pod(PodFields {
                    secrets: Some(format!(r#"[{{"arn":"{ARN}"}}]"#)),
                    ..Default::default()
                }),
                "SECRET_INJECT_SECRETS[0].name".to_owned(),
            ),
            (
                with_pod(PodFields {
                    secrets: Some(format!(r#"[{{"name":"db","arn":"{ARN}","colour":"x"}}]"#)),
                    ..Default::default()
                }),
                env::SECRETS.to_owned(),
            ),
            (
                PlanFields {
                    pod: PodFields {
                        failover_region: Some("mars".into()),
                        ..Default::default()
                    },
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

    /// Policy mode's carrier: the annotations as env vars named as their keys.
    fn carried(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        carried_annotations(pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())))
    }

    fn from_annotations(file_mode: Option<&str>) -> PlanFields {
        PlanFields {
            pod: PodFields {
                plan_from: Some(PLAN_FROM_ANNOTATIONS.to_owned()),
                file_mode: file_mode.map(str::to_owned),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn the_plan_from_annotations_is_the_plan_the_webhook_renders() {
        let annotations = [
            (crate::spec::INJECTOR_WEBHOOK, "enabled"),
            (crate::spec::SECRET_ARN, ARN),
            ("secrets.k8s.aws/secret-arn.flags", PARAMETER),
            ("secrets.k8s.aws/secret-format.flags", "split"),
            (crate::spec::MOUNT_PATH, "/var/run/secrets/app"),
            (crate::spec::REFRESH_INTERVAL, "5m"),
            (crate::spec::STATUS, "injected"),
            ("PATH", "/usr/bin"),
            ("SECRET_INJECT_OTHER", "x"),
        ];
        let map = carried(&annotations);
        assert!(
            map.keys()
                .all(|k| k.starts_with(crate::spec::PREFIX) && k != crate::spec::STATUS),
            "{map:?}"
        );
        let plan = from_annotations(Some("0440"))
            .parse_annotations(&map)
            .unwrap();
        // The webhook's plan of the same annotations, rendered and parsed back by the agent.
        let injection = match InjectionSpec::from_annotations(Some(&map)).unwrap() {
            crate::spec::Request::Inject(injection) => injection,
            other => panic!("{other:?}"),
        };
        let webhook = Plan::for_injection(&injection, FileMode::GroupRead);
        assert_eq!(plan, webhook);
        assert_eq!(webhook.carried().parse().unwrap(), plan);
        assert_eq!(plan.secrets.len(), 2);
        assert_eq!(plan.output_dir.as_str(), "/var/run/secrets/app");
        assert!(plan.refresh.is_some());
        // Without the variable, the contract's default mode.
        let default = from_annotations(None).parse_annotations(&map).unwrap();
        assert_eq!(default.file_mode, defaults::FILE_MODE);
    }

    #[test]
    fn a_bad_annotation_names_its_key_and_a_bad_carrier_names_the_variable() {
        let map = carried(&[
            (crate::spec::INJECTOR_WEBHOOK, "enabled"),
            (crate::spec::SECRET_ARN, ARN),
            (crate::spec::SECRET_FORMAT, "yaml"),
        ]);
        let err = from_annotations(None).parse_annotations(&map).unwrap_err();
        assert_eq!(err.variable, crate::spec::SECRET_FORMAT, "{err}");
        assert!(
            err.problem
                .contains("use raw (default), json, env or split"),
            "{err}"
        );

        let off = carried(&[
            (crate::spec::INJECTOR_WEBHOOK, "disabled"),
            (crate::spec::SECRET_ARN, ARN),
        ]);
        let err = from_annotations(None).parse_annotations(&off).unwrap_err();
        assert_eq!(err.variable, crate::spec::INJECTOR_WEBHOOK, "{err}");

        let err = from_annotations(Some("0777"))
            .parse_annotations(&map)
            .unwrap_err();
        assert_eq!(
            err.variable,
            crate::spec::SECRET_FORMAT,
            "annotations first: {err}"
        );
        let ok = carried(&[
            (crate::spec::INJECTOR_WEBHOOK, "enabled"),
            (crate::spec::SECRET_ARN, ARN),
        ]);
        let err = from_annotations(Some("0777"))
            .parse_annotations(&ok)
            .unwrap_err();
        assert_eq!(err.variable, env::FILE_MODE, "{err}");

        // Both carriers at once: refused, naming the other's variable.
        let mut both = from_annotations(None);
        both.unnamed = unnamed(ARN);
        let err = both.parse_annotations(&ok).unwrap_err();
        assert_eq!(err.variable, env::SECRET_ARN, "{err}");

        let mut unknown = from_annotations(None);
        unknown.pod.plan_from = Some("downward-api".to_owned());
        let err = unknown.from_annotations().unwrap_err();
        assert_eq!(err.variable, env::PLAN_FROM, "{err}");
        assert!(!PlanFields::default().from_annotations().unwrap());
        assert!(from_annotations(None).from_annotations().unwrap());
    }
}
