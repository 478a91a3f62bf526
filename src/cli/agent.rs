//! `secret-inject agent`: the injected container. Its flags are the contract's environment
//! variables ([`crate::contract::env`]), so the container the webhook renders configures it
//! without a command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::agent::{self, Options};
use crate::contract::{PlanFields, env};
use crate::duration;

/// Fetch one secret from AWS Secrets Manager and write it onto the in-memory volume.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// ARN (or, stand-alone, name) of the secret; the webhook renders the validated ARN.
    #[arg(long, env = env::SECRET_ARN, value_name = "ARN")]
    secret_arn: String,
    /// File to write, relative to the output directory; may hold sub-folders [default: secret].
    #[arg(long, env = env::SECRET_FILENAME)]
    secret_filename: Option<String>,
    /// Directory to write into: the mount path of the in-memory volume [default: /tmp].
    #[arg(long, env = env::OUTPUT_DIR)]
    output_dir: Option<String>,
    /// Mode of the written file: 0400, 0440 or 0444 [default: 0400]; the webhook chooses it
    /// with the container's user.
    #[arg(long, env = env::FILE_MODE)]
    file_mode: Option<String>,
    /// Version stage to fetch, sent explicitly [default: AWSCURRENT].
    #[arg(long, env = env::VERSION_STAGE, conflicts_with = "version_id")]
    version_stage: Option<String>,
    /// Version id to fetch instead of a stage.
    #[arg(long, env = env::VERSION_ID)]
    version_id: Option<String>,
    /// AWS region to call. Default: the ARN's own region; for a name, the SDK's region chain
    /// (AWS_REGION, profile).
    #[arg(long, env = env::REGION)]
    region: Option<String>,
    /// Give up after this long, retrying throttling, 5xx, timeouts and connection errors.
    #[arg(long, env = "SECRET_INJECT_DEADLINE", default_value = "120s", value_parser = duration::parse)]
    deadline: Duration,
    /// Longest time for one attempt (connect, send, answer); a stalled attempt is retried.
    #[arg(long, env = "SECRET_INJECT_ATTEMPT_TIMEOUT", default_value = "10s", value_parser = duration::parse)]
    attempt_timeout: Duration,
    /// Allow writing to a disk-backed directory (for local testing only).
    #[arg(long, env = "SECRET_INJECT_ALLOW_DISK")]
    allow_disk: bool,
    /// Let the credentials chain fall back to the node's instance metadata (IMDS). Off by
    /// default: a pod without its own identity would silently use the node's IAM role, which
    /// every pod on the node shares.
    #[arg(long, env = "SECRET_INJECT_ALLOW_INSTANCE_METADATA")]
    allow_instance_metadata: bool,
    /// Where to write the failure message that Kubernetes shows in `kubectl describe pod`.
    #[arg(
        long,
        env = "SECRET_INJECT_TERMINATION_LOG",
        default_value = "/dev/termination-log"
    )]
    termination_log: PathBuf,
}

impl AgentArgs {
    /// The plan's fields as received.
    pub fn plan_fields(&self) -> PlanFields<'_> {
        PlanFields {
            secret_arn: &self.secret_arn,
            secret_filename: self.secret_filename.as_deref(),
            output_dir: self.output_dir.as_deref(),
            region: self.region.as_deref(),
            file_mode: self.file_mode.as_deref(),
            version_stage: self.version_stage.as_deref(),
            version_id: self.version_id.as_deref(),
        }
    }

    /// Run to completion; returns the exit code.
    pub fn run(self) -> u8 {
        let fields = self.plan_fields();
        let AgentArgs {
            deadline,
            attempt_timeout,
            allow_disk,
            allow_instance_metadata,
            termination_log,
            // The plan's fields, in `fields`.
            secret_arn: _,
            secret_filename: _,
            output_dir: _,
            file_mode: _,
            version_stage: _,
            version_id: _,
            region: _,
        } = &self;
        agent::run(
            fields,
            &Options {
                deadline: *deadline,
                attempt_timeout: *attempt_timeout,
                allow_disk: *allow_disk,
                allow_instance_metadata: *allow_instance_metadata,
                termination_log: termination_log.clone(),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches as _;
    use k8s_openapi::api::core::v1::{Container, PodSpec, SecurityContext};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::contract::{self, FileMode, Plan, SecretId, VersionSelector};
    use crate::mutate::{MutationConfig, mutate};
    use crate::spec;

    /// Parse an injected container's environment with the agent's own parser: every variable
    /// the webhook renders must be one the agent reads (as the flag whose `env` it is).
    fn parse_rendered(container: &Container) -> AgentArgs {
        let command = clap::Command::new("agent");
        let command = AgentArgs::augment_args(command);
        let mut argv = vec!["agent".to_owned()];
        for var in container.env.iter().flatten() {
            assert!(
                var.value_from.is_none(),
                "{} is not rendered as a value: the agent must run what was admitted",
                var.name
            );
            let value = var.value.clone().unwrap_or_default();
            if contract::AWS_IDENTITY_ENV.contains(&var.name.as_str()) {
                continue; // the SDK's, copied from the app containers
            }
            let arg = command
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == var.name.as_str()))
                .unwrap_or_else(|| panic!("the agent has no flag reading {}", var.name));
            argv.push(format!("--{}={value}", arg.get_long().unwrap()));
        }
        let matches = command.try_get_matches_from(argv).unwrap();
        AgentArgs::from_arg_matches(&matches).unwrap()
    }

    fn injected(annotations: &[(&str, &str)], fs_group: Option<i64>) -> Container {
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
        let mutation = mutate(&metadata, &spec, &MutationConfig::default())
            .unwrap()
            .unwrap();
        let patch = serde_json::to_value(&mutation.patch).unwrap();
        let op = patch
            .as_array()
            .unwrap()
            .iter()
            .find(|op| op["path"] == "/spec/initContainers")
            .expect("the patch adds the init container");
        serde_json::from_value(op["value"][0].clone()).unwrap()
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
            let expected = Plan {
                secret: SecretId::Arn(spec::SecretArn::parse(arn).unwrap()),
                version: VersionSelector::Stage("AWSCURRENT".to_owned()),
                region: Some("cn-north-1".to_owned()),
                output_dir: spec::MountPath::parse(output_dir).unwrap(),
                file_name: spec::RelativeFileName::parse(file_name).unwrap(),
                file_mode: mode,
            };
            assert_eq!(plan, expected);
        }
    }

    #[test]
    fn the_seed_variables_configure_a_stand_alone_agent() {
        let command = AgentArgs::augment_args(clap::Command::new("agent"));
        for (name, var) in [
            ("secret_arn", env::SECRET_ARN),
            ("secret_filename", env::SECRET_FILENAME),
        ] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == name)
                .unwrap();
            assert_eq!(arg.get_env().unwrap(), var);
        }
    }
}
