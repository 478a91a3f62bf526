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

use crate::spec::{MountPath, RelativeFileName, SecretArn, is_secret_name};

/// Name of the injected init container (seed contract).
pub const CONTAINER_NAME: &str = "secrets-init-container";
/// Name of the in-memory `emptyDir` volume (seed contract).
pub const VOLUME_NAME: &str = "secret-vol";
/// Path of the binary inside the image.
pub const BINARY_PATH: &str = "/usr/local/bin/secret-inject";
/// Subcommand the injected container runs.
pub const AGENT_SUBCOMMAND: &str = "agent";
/// Default image for the injected container: this release's own image.
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/secret-inject/secret-inject:",
    env!("CARGO_PKG_VERSION")
);

/// The environment variables of the contract.
pub mod env {
    /// ARN (or, stand-alone, name) of the secret (seed contract).
    pub const SECRET_ARN: &str = "SECRET_ARN";
    /// File name relative to the output directory (seed contract).
    pub const SECRET_FILENAME: &str = "SECRET_FILENAME";
    /// Directory the secret is written into: the mount path of the volume.
    pub const OUTPUT_DIR: &str = "SECRET_INJECT_OUTPUT_DIR";
    /// Region the secret is fetched from: the webhook renders the ARN's own region.
    pub const REGION: &str = "SECRET_INJECT_REGION";
    /// Octal file mode of the written secret, chosen by the webhook (see [`super::FileMode`]).
    pub const FILE_MODE: &str = "SECRET_INJECT_FILE_MODE";
    /// Version stage to fetch, always sent explicitly.
    pub const VERSION_STAGE: &str = "SECRET_INJECT_VERSION_STAGE";
    /// Version id to fetch instead of a stage.
    pub const VERSION_ID: &str = "SECRET_INJECT_VERSION_ID";
}

/// The defaults of the contract. The output directory and file name default to the annotation
/// grammar's defaults (`MountPath::default()`, `RelativeFileName::default()`: the seed's `/tmp`
/// and `secret`).
pub mod defaults {
    use super::FileMode;
    /// Version stage fetched.
    pub const VERSION_STAGE: &str = "AWSCURRENT";
    /// File mode of a stand-alone agent (the webhook always renders one).
    pub const FILE_MODE: FileMode = FileMode::OwnerRead;
}

/// UID and GID the injected container runs as when the app's user is not known: the
/// conventional "nonroot" user of distroless images.
pub const DEFAULT_UID: i64 = 65532;

/// Mode of the written secret file. The webhook chooses it together with the injected
/// container's user so that the app containers can read the file and nobody else needs to:
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretId {
    /// A full ARN (what the webhook renders).
    Arn(SecretArn),
    /// A name, resolved in the agent's region (stand-alone use).
    Name(String),
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretId::Arn(arn) => f.write_str(arn.as_str()),
            SecretId::Name(name) => f.write_str(name),
        }
    }
}

/// Which version of the secret to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// A staging label, e.g. `AWSCURRENT`.
    Stage(String),
    /// A version id.
    Id(String),
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSelector::Stage(stage) => write!(f, "stage {stage}"),
            VersionSelector::Id(id) => write!(f, "version {id}"),
        }
    }
}

/// What the agent does: the one representation shared by the webhook (which renders it) and the
/// agent (which parses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The secret.
    pub secret: SecretId,
    /// Its version.
    pub version: VersionSelector,
    /// The region to call. `None` only for a secret given by name without a region: the SDK's
    /// region chain decides.
    pub region: Option<String>,
    /// The directory the volume is mounted at.
    pub output_dir: MountPath,
    /// The file below it.
    pub file_name: RelativeFileName,
    /// The file's mode.
    pub file_mode: FileMode,
}

impl Plan {
    /// The plan for a secret ARN with the contract's defaults; the region is the ARN's own.
    pub fn for_arn(arn: SecretArn) -> Self {
        Self {
            region: Some(arn.region().to_owned()),
            secret: SecretId::Arn(arn),
            version: VersionSelector::Stage(defaults::VERSION_STAGE.to_owned()),
            output_dir: MountPath::default(),
            file_name: RelativeFileName::default(),
            file_mode: defaults::FILE_MODE,
        }
    }

    /// The environment variables that carry this plan into the injected container.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![
            (env::SECRET_ARN, self.secret.to_string()),
            (env::SECRET_FILENAME, self.file_name.as_str().to_owned()),
            (env::OUTPUT_DIR, self.output_dir.as_str().to_owned()),
        ];
        if let Some(region) = &self.region {
            vars.push((env::REGION, region.clone()));
        }
        vars.push((env::FILE_MODE, self.file_mode.as_str().to_owned()));
        vars.push(match &self.version {
            VersionSelector::Stage(stage) => (env::VERSION_STAGE, stage.clone()),
            VersionSelector::Id(id) => (env::VERSION_ID, id.clone()),
        });
        vars
    }
}

/// The plan's fields as the agent receives them (flags or environment), before validation.
#[derive(Debug, Clone, Default)]
pub struct PlanFields<'a> {
    /// [`env::SECRET_ARN`].
    pub secret_arn: &'a str,
    /// [`env::SECRET_FILENAME`], if set.
    pub secret_filename: Option<&'a str>,
    /// [`env::OUTPUT_DIR`], if set.
    pub output_dir: Option<&'a str>,
    /// [`env::REGION`], if set.
    pub region: Option<&'a str>,
    /// [`env::FILE_MODE`], if set.
    pub file_mode: Option<&'a str>,
    /// [`env::VERSION_STAGE`], if set.
    pub version_stage: Option<&'a str>,
    /// [`env::VERSION_ID`], if set.
    pub version_id: Option<&'a str>,
}

/// A field of the contract the agent received with a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct PlanError {
    /// The environment variable (its flag is named the same way, see `secret-inject agent -h`).
    pub variable: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl<'a> PlanFields<'a> {
    /// The fields from environment-like pairs, `get` looking a variable up by its name.
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        PlanFields {
            secret_arn: get(env::SECRET_ARN).unwrap_or_default(),
            secret_filename: get(env::SECRET_FILENAME),
            output_dir: get(env::OUTPUT_DIR),
            region: get(env::REGION),
            file_mode: get(env::FILE_MODE),
            version_stage: get(env::VERSION_STAGE),
            version_id: get(env::VERSION_ID),
        }
    }

    /// The fields of a rendered environment ([`Plan::env`]).
    pub fn from_env(vars: &'a [(&'static str, String)]) -> Self {
        Self::from_lookup(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        })
    }
}

impl PlanFields<'_> {
    /// Validate the fields into a plan. Region: the explicit one, else the ARN's own (never an
    /// `AWS_REGION` that an identity webhook set for the cluster), else the SDK's chain.
    pub fn parse(&self) -> Result<Plan, PlanError> {
        let error = |variable, problem: String| PlanError { variable, problem };
        let secret = if self.secret_arn.starts_with("arn:") {
            SecretArn::parse(self.secret_arn)
                .map(SecretId::Arn)
                .map_err(|e| error(env::SECRET_ARN, format!("{}; {}", e.problem, e.fix)))?
        } else if is_secret_name(self.secret_arn) {
            SecretId::Name(self.secret_arn.to_owned())
        } else {
            return Err(error(
                env::SECRET_ARN,
                format!(
                    "{:?} is neither a secret ARN nor a secret name (1-512 of letters, digits \
                     and /_+=.@-)",
                    self.secret_arn.chars().take(120).collect::<String>()
                ),
            ));
        };
        let file_name = match self.secret_filename {
            Some(value) => RelativeFileName::parse(value)
                .map_err(|e| error(env::SECRET_FILENAME, format!("{}; {}", e.problem, e.fix)))?,
            None => RelativeFileName::default(),
        };
        let output_dir = match self.output_dir {
            Some(value) => MountPath::parse(value)
                .map_err(|e| error(env::OUTPUT_DIR, format!("{}; {}", e.problem, e.fix)))?,
            None => MountPath::default(),
        };
        let file_mode = match self.file_mode {
            Some(value) => FileMode::parse(value).ok_or_else(|| {
                error(
                    env::FILE_MODE,
                    format!("{value:?} is not a supported mode; use 0400, 0440 or 0444"),
                )
            })?,
            None => defaults::FILE_MODE,
        };
        let version = match (self.version_id, self.version_stage) {
            (Some(_), Some(_)) => {
                return Err(error(
                    env::VERSION_ID,
                    format!(
                        "set either {} or {}, not both",
                        env::VERSION_ID,
                        env::VERSION_STAGE
                    ),
                ));
            }
            (Some(id), None) if !id.is_empty() => VersionSelector::Id(id.to_owned()),
            (None, Some(stage)) if !stage.is_empty() => VersionSelector::Stage(stage.to_owned()),
            (None, None) => VersionSelector::Stage(defaults::VERSION_STAGE.to_owned()),
            (Some(_), None) => return Err(error(env::VERSION_ID, "is empty".to_owned())),
            (None, Some(_)) => return Err(error(env::VERSION_STAGE, "is empty".to_owned())),
        };
        let region = self
            .region
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .or_else(|| match &secret {
                SecretId::Arn(arn) => Some(arn.region().to_owned()),
                SecretId::Name(_) => None,
            });
        Ok(Plan {
            secret,
            version,
            region,
            output_dir,
            file_name,
            file_mode,
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
        plan.file_name = RelativeFileName::parse("db/password").unwrap();
        plan.file_mode = FileMode::GroupRead;
        assert_eq!(PlanFields::from_env(&plan.env()).parse(), Ok(plan.clone()));
        plan.version = VersionSelector::Id("01234567-89ab".to_owned());
        assert_eq!(PlanFields::from_env(&plan.env()).parse(), Ok(plan));
    }

    #[test]
    fn the_seed_variables_alone_make_a_plan_with_the_defaults() {
        let plan = PlanFields {
            secret_arn: ARN,
            ..Default::default()
        }
        .parse()
        .unwrap();
        assert_eq!(plan, Plan::for_arn(SecretArn::parse(ARN).unwrap()));
        assert_eq!(plan.output_dir.as_str(), "/tmp");
        assert_eq!(plan.file_name.as_str(), "secret");
        assert_eq!(plan.region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn region_explicit_then_the_arns_then_none() {
        let with = |secret_arn, region| {
            PlanFields {
                secret_arn,
                region,
                ..Default::default()
            }
            .parse()
            .unwrap()
            .region
        };
        assert_eq!(with(ARN, Some("us-west-2")).as_deref(), Some("us-west-2"));
        assert_eq!(with(ARN, None).as_deref(), Some("eu-west-1"));
        assert_eq!(with("db-password", None), None);
    }

    #[test]
    fn bad_fields_name_the_variable() {
        for (fields, variable) in [
            (
                PlanFields {
                    secret_arn: "arn:aws:ssm:us-east-1:123456789012:parameter/x",
                    ..Default::default()
                },
                env::SECRET_ARN,
            ),
            (
                PlanFields {
                    secret_arn: "not a name",
                    ..Default::default()
                },
                env::SECRET_ARN,
            ),
            (
                PlanFields {
                    secret_arn: ARN,
                    secret_filename: Some("../x"),
                    ..Default::default()
                },
                env::SECRET_FILENAME,
            ),
            (
                PlanFields {
                    secret_arn: ARN,
                    output_dir: Some("relative"),
                    ..Default::default()
                },
                env::OUTPUT_DIR,
            ),
            (
                PlanFields {
                    secret_arn: ARN,
                    file_mode: Some("0777"),
                    ..Default::default()
                },
                env::FILE_MODE,
            ),
            (
                PlanFields {
                    secret_arn: ARN,
                    version_stage: Some("AWSCURRENT"),
                    version_id: Some("x"),
                    ..Default::default()
                },
                env::VERSION_ID,
            ),
        ] {
            let err = fields.parse().unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }
}
