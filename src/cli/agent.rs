//! `secret-inject agent`: the injected container. Its flags are the contract's environment
//! variables ([`crate::contract::env`]), so the container the webhook renders configures it
//! without a command line.

use std::path::PathBuf;

use clap::{Args, FromArgMatches as _};

use crate::agent::{self, Launch};
use crate::contract::{PlanFields, SettingsFields};

/// Fetch a pod's secrets from AWS Secrets Manager and Parameter Store and write them onto the
/// in-memory volume, all files together.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The plan the webhook rendered: the contract's flags and variables, declared once in
    /// [`crate::contract`].
    #[command(flatten)]
    plan: PlanFields,
    /// How the agent runs, as the operator set it for every pod (the webhook's `--sidecar-*`
    /// flags): declared once in [`crate::contract`].
    #[command(flatten)]
    settings: SettingsFields,
    /// Allow writing to a disk-backed directory (for local testing only).
    #[arg(long, env = "SECRET_INJECT_ALLOW_DISK")]
    allow_disk: bool,
    /// Let the credentials chain fall back to the node's instance metadata (IMDS). Off by
    /// default: a pod without its own identity would silently use the node's IAM role, which
    /// every pod on the node shares.
    #[arg(long, env = "SECRET_INJECT_ALLOW_INSTANCE_METADATA")]
    allow_instance_metadata: bool,
    /// Where to write the outcome that Kubernetes shows in `kubectl describe pod`.
    #[arg(
        long,
        env = "SECRET_INJECT_TERMINATION_LOG",
        default_value = "/dev/termination-log"
    )]
    termination_log: PathBuf,
}

impl AgentArgs {
    /// The plan's fields as received.
    pub fn plan_fields(&self) -> &PlanFields {
        &self.plan
    }

    /// Parse an environment the webhook rendered ([`crate::contract::Plan::env`]) with the
    /// agent's own parser: each variable is given as the flag that reads it. Fails for a
    /// variable no flag reads, or a value the parser rejects.
    pub fn from_rendered<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, String> {
        // The global flags (the log level the webhook may render) are read with the agent's own.
        let command = super::logging::LogArgs::augment_args(Self::augment_args(
            clap::Command::new(crate::contract::AGENT_SUBCOMMAND),
        ));
        let mut argv = vec![crate::contract::AGENT_SUBCOMMAND.to_owned()];
        for (name, value) in vars {
            let arg = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == name))
                .ok_or_else(|| format!("the agent has no flag reading {name}"))?;
            let long = arg
                .get_long()
                .ok_or_else(|| format!("{name} has no long flag"))?;
            argv.push(format!("--{long}={value}"));
        }
        let matches = command
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())?;
        Self::from_arg_matches(&matches).map_err(|e| e.to_string())
    }

    /// Run to completion; returns the exit code.
    pub fn run(self) -> u8 {
        let AgentArgs {
            plan,
            settings,
            allow_disk,
            allow_instance_metadata,
            termination_log,
        } = self;
        agent::run(
            plan,
            &settings,
            Launch {
                allow_disk,
                allow_instance_metadata,
                termination_log,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::contract::{self, FileMode, Plan, SecretPlan};
    use crate::mutate::{MutationConfig, mutate};
    use crate::spec;

    /// Parse an injected container's environment with the agent's own parser: every variable
    /// the webhook renders must be one the agent reads (as the flag whose `env` it is).
    fn parse_rendered(container: &Container) -> AgentArgs {
        let vars: Vec<(&str, &str)> = container
            .env
            .iter()
            .flatten()
            .inspect(|var| {
                assert!(
                    var.value_from.is_none(),
                    "{} is not rendered as a value: the agent must run what was admitted",
                    var.name
                );
            })
            // The SDK's, copied from the app containers.
            .filter(|var| !contract::AWS_IDENTITY_ENV.contains(&var.name.as_str()))
            .map(|var| (var.name.as_str(), var.value.as_deref().unwrap_or_default()))
            .collect();
        AgentArgs::from_rendered(vars).unwrap()
    }

    fn injected(annotations: &[(&str, &str)], fs_group: Option<i64>) -> Container {
        injected_with(annotations, fs_group, &MutationConfig::default())
    }

    fn injected_with(
        annotations: &[(&str, &str)],
        fs_group: Option<i64>,
        config: &MutationConfig,
    ) -> Container {
        let metadata = ObjectMeta {
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        };
        let spec = PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                security_context: Some(SecurityContext {
                    run_as_user: Some(1000),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            security_context: fs_group.map(|g| k8s_openapi::api::core::v1::PodSecurityContext {
                fs_group: Some(g),
                ..Default::default()
            }),
            ..Default::default()
        };
        let patch = mutate(&(&metadata).into(), &(&spec).into(), config)
            .unwrap()
            .patch
            .unwrap();
        let patch = serde_json::to_value(&patch).unwrap();
        let op = patch
            .as_array()
            .unwrap()
            .iter()
            .find(|op| op["path"] == "/spec/initContainers")
            .expect("the patch adds the init container");
        serde_json::from_value(op["value"][0].clone()).unwrap()
    }

    /// The operator's settings (`--sidecar-*`) are rendered as the variables the agent's own
    /// flags read, the log level as the global flag's; the extra environment is the SDK's.
    #[test]
    fn the_operators_settings_round_trip_through_the_agents_parser() {
        let extra = ["HTTPS_PROXY=http://proxy:3128".to_owned()];
        let config = MutationConfig::new(&crate::mutate::Settings {
            agent: contract::SettingsFields {
                deadline: Some("90s".into()),
                attempt_timeout: Some("1500ms".into()),
                batch_threshold: Some("7".into()),
            },
            agent_log_level: Some("secret_inject=debug,aws_config=warn"),
            agent_env: &extra,
            ..Default::default()
        })
        .unwrap();
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let mut container = injected_with(&[(spec::SECRET_ARN, arn)], None, &config);
        let env = container.env.as_mut().unwrap();
        let proxy = env.iter().position(|v| v.name == "HTTPS_PROXY").unwrap();
        assert_eq!(
            env.remove(proxy).value.as_deref(),
            Some("http://proxy:3128")
        );
        let args = parse_rendered(&container);
        assert_eq!(
            args.settings.parse().unwrap(),
            contract::AgentSettings {
                deadline: std::time::Duration::from_secs(90),
                attempt_timeout: std::time::Duration::from_millis(1500),
                batch_threshold: 7,
            }
        );
        assert!(
            container
                .env
                .iter()
                .flatten()
                .any(|v| v.name == contract::env::LOG_LEVEL
                    && v.value.as_deref() == Some("secret_inject=debug,aws_config=warn"))
        );
    }

    #[test]
    fn the_rendered_container_round_trips_through_the_agents_parser() {
        let arn = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db/creds-AbCdEf";
        for (annotations, fs_group, output_dir, file_name, mode) in [
            (
                vec![(spec::SECRET_ARN, arn)],
                None,
                "/tmp",
                "secret",
                FileMode::OwnerRead,
            ),
            (
                vec![
                    (spec::SECRET_ARN, arn),
                    (spec::MOUNT_PATH, "/var/run/secrets/app/"),
                    (spec::SECRET_FILENAME, "db/password.json"),
                ],
                Some(2000),
                "/var/run/secrets/app",
                "db/password.json",
                FileMode::GroupRead,
            ),
        ] {
            let container = injected(&annotations, fs_group);
            let args = parse_rendered(&container);
            let plan = args.plan_fields().parse().unwrap();
            let mut secret = SecretPlan::for_arn(spec::SecretArn::parse(arn).unwrap());
            secret.file_name = spec::RelativeFileName::parse(file_name).unwrap();
            let expected = Plan {
                secrets: vec![secret],
                output_dir: spec::MountPath::parse(output_dir).unwrap(),
                file_mode: mode,
                failover_region: None,
                refresh: None,
            };
            assert_eq!(plan, expected);
        }
    }

    #[test]
    fn many_secrets_round_trip_through_the_agents_parser() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let parameter = "arn:aws:ssm:us-east-1:123456789012:parameter/app/url";
        let annotations = [
            (spec::SECRET_ARN, arn),
            (spec::SECRET_KEY, "password"),
            ("secrets.k8s.aws/secret-arn.db", arn),
            ("secrets.k8s.aws/secret-format.db", "split"),
            ("secrets.k8s.aws/env.db", "DB_USER=username"),
            ("secrets.k8s.aws/secret-arn.url", parameter),
            ("secrets.k8s.aws/version-id.url", "3"),
            (spec::FAILOVER_REGION, "us-west-2"),
        ];
        let container = injected(&annotations, None);
        let plan = parse_rendered(&container).plan_fields().parse().unwrap();
        let metadata = ObjectMeta {
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        };
        let spec::Request::Inject(injection) =
            spec::InjectionSpec::from_annotations(metadata.annotations.as_ref()).unwrap()
        else {
            panic!()
        };
        let expected: Vec<SecretPlan> =
            injection.secrets.iter().map(SecretPlan::for_spec).collect();
        assert_eq!(plan.secrets, expected);
        assert_eq!(plan.secrets.len(), 3);
        assert_eq!(plan.failover_region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn the_seed_variables_configure_a_stand_alone_agent() {
        let command = AgentArgs::augment_args(clap::Command::new("agent"));
        for (long, var) in [
            ("secret-arn", contract::env::SECRET_ARN),
            ("secret-filename", contract::env::SECRET_FILENAME),
        ] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .unwrap();
            assert_eq!(arg.get_env().unwrap(), var);
        }
    }

    /// Every flag the agent had before its plan's flags were declared in the contract is still
    /// there, reading the same variable (stand-alone agents and admitted pods use them).
    #[test]
    fn the_agents_flags_and_variables_are_kept() {
        let command = AgentArgs::augment_args(clap::Command::new("agent"));
        let flags: std::collections::BTreeSet<(String, String)> = command
            .get_arguments()
            .map(|a| {
                (
                    a.get_long().unwrap().to_owned(),
                    a.get_env().unwrap().to_string_lossy().into_owned(),
                )
            })
            .collect();
        for (long, var) in [
            ("allow-disk", "SECRET_INJECT_ALLOW_DISK"),
            (
                "allow-instance-metadata",
                "SECRET_INJECT_ALLOW_INSTANCE_METADATA",
            ),
            ("attempt-timeout", "SECRET_INJECT_ATTEMPT_TIMEOUT"),
            ("batch-threshold", "SECRET_INJECT_BATCH_THRESHOLD"),
            ("deadline", "SECRET_INJECT_DEADLINE"),
            ("env", "SECRET_INJECT_ENV"),
            ("failover-region", "SECRET_INJECT_FAILOVER_REGION"),
            ("file-mode", "SECRET_INJECT_FILE_MODE"),
            ("output-dir", "SECRET_INJECT_OUTPUT_DIR"),
            ("refresh-interval", "SECRET_INJECT_REFRESH_INTERVAL"),
            ("region", "SECRET_INJECT_REGION"),
            ("reload-process", "SECRET_INJECT_RELOAD_PROCESS"),
            ("reload-signal", "SECRET_INJECT_RELOAD_SIGNAL"),
            ("reload-url", "SECRET_INJECT_RELOAD_URL"),
            ("restart-on-change", "SECRET_INJECT_RESTART_ON_CHANGE"),
            ("secret-arn", "SECRET_ARN"),
            ("secret-filename", "SECRET_FILENAME"),
            ("secret-format", "SECRET_INJECT_SECRET_FORMAT"),
            ("secret-key", "SECRET_INJECT_SECRET_KEY"),
            ("secrets", "SECRET_INJECT_SECRETS"),
            ("termination-log", "SECRET_INJECT_TERMINATION_LOG"),
            ("version-id", "SECRET_INJECT_VERSION_ID"),
            ("version-stage", "SECRET_INJECT_VERSION_STAGE"),
        ] {
            assert!(
                flags.contains(&(long.to_owned(), var.to_owned())),
                "--{long} reading {var} is gone"
            );
        }
    }
}
