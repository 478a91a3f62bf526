//! `secret-inject agent`: the injected container. Its flags are the contract's environment
//! variables ([`crate::contract::env`]), so the container the webhook renders configures it
//! without a command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::agent::{self, Options};
use crate::contract::{PlanFields, SecretFields, env};
use crate::duration;

/// Fetch a pod's secrets from AWS Secrets Manager and Parameter Store and write them onto the
/// in-memory volume, all files together.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// ARN (or, stand-alone, name) of the unnamed secret; the webhook renders the validated ARN.
    /// A Systems Manager parameter ARN fetches a parameter.
    #[arg(long, env = env::SECRET_ARN, value_name = "ARN")]
    secret_arn: Option<String>,
    /// File to write, relative to the output directory; may hold sub-folders [default: secret].
    #[arg(long, env = env::SECRET_FILENAME)]
    secret_filename: Option<String>,
    /// Top-level JSON key or JMESPath expression selected from the secret's value.
    #[arg(long, env = env::SECRET_KEY)]
    secret_key: Option<String>,
    /// Output format: raw, json, env or split [default: raw].
    #[arg(long, env = env::SECRET_FORMAT)]
    secret_format: Option<String>,
    /// Env vars for the app containers from the secret's JSON keys: VAR=key[,VAR=key...],
    /// written to the kubelet's env file.
    #[arg(long = "env", env = env::ENV, value_name = "VAR=KEY,...")]
    env_bindings: Option<String>,
    /// The named secrets, a JSON array of {name, arn, file, versionStage, versionId, key,
    /// format, env} objects (the webhook renders it).
    #[arg(long, env = env::SECRETS, value_name = "JSON")]
    secrets: Option<String>,
    /// Directory to write into: the mount path of the in-memory volume [default: /tmp].
    #[arg(long, env = env::OUTPUT_DIR)]
    output_dir: Option<String>,
    /// Mode of the written files: 0400, 0440 or 0444 [default: 0400]; the webhook chooses it
    /// with the container's user.
    #[arg(long, env = env::FILE_MODE)]
    file_mode: Option<String>,
    /// Version stage of the unnamed secret, sent explicitly [default: AWSCURRENT].
    #[arg(long, env = env::VERSION_STAGE, conflicts_with = "version_id")]
    version_stage: Option<String>,
    /// Version id of the unnamed secret, instead of a stage.
    #[arg(long, env = env::VERSION_ID)]
    version_id: Option<String>,
    /// AWS region of the unnamed secret. Default: the ARN's own region; for a name, the SDK's
    /// region chain (AWS_REGION, profile).
    #[arg(long, env = env::REGION)]
    region: Option<String>,
    /// Region holding replicas of the Secrets Manager secrets: a transient failure of the
    /// primary region fails over there.
    #[arg(long, env = env::FAILOVER_REGION)]
    failover_region: Option<String>,
    /// Keep the files current: check for new versions at this interval (with jitter) and run
    /// until stopped, as the rotation sidecar. Unset: fetch once and exit.
    #[arg(long, env = env::REFRESH_INTERVAL, value_name = "DURATION")]
    refresh_interval: Option<String>,
    /// After a change, send this signal (HUP, USR1, USR2, INT, QUIT, TERM, WINCH) to
    /// --reload-process (the pod needs shareProcessNamespace; the webhook sets it).
    #[arg(long, env = env::RELOAD_SIGNAL)]
    reload_signal: Option<String>,
    /// After a change, the name of the process to signal (as in /proc/PID/comm).
    #[arg(long, env = env::RELOAD_PROCESS)]
    reload_process: Option<String>,
    /// After a change, POST to this loopback URL (e.g. http://127.0.0.1:9090/-/reload).
    #[arg(long, env = env::RELOAD_URL)]
    reload_url: Option<String>,
    /// After a change, exit with code 42 (true), which the sidecar's RestartAllContainers
    /// restart rule turns into an in-place restart of the pod's containers.
    #[arg(long, env = env::RESTART_ON_CHANGE)]
    restart_on_change: Option<String>,
    /// Fetch with BatchGetSecretValue (20 secrets a call) in a region with at least this many
    /// AWSCURRENT secrets; 0: always GetSecretValue.
    #[arg(long, env = "SECRET_INJECT_BATCH_THRESHOLD", default_value_t = 2)]
    batch_threshold: usize,
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
    pub fn plan_fields(&self) -> PlanFields {
        PlanFields {
            unnamed: self.secret_arn.clone().map(|arn| SecretFields {
                name: None,
                arn,
                file: self.secret_filename.clone(),
                version_stage: self.version_stage.clone(),
                version_id: self.version_id.clone(),
                key: self.secret_key.clone(),
                format: self.secret_format.clone(),
                env: self.env_bindings.clone(),
                region: self.region.clone(),
            }),
            secrets: self.secrets.clone(),
            output_dir: self.output_dir.clone(),
            file_mode: self.file_mode.clone(),
            failover_region: self.failover_region.clone(),
            refresh_interval: self.refresh_interval.clone(),
            reload_signal: self.reload_signal.clone(),
            reload_process: self.reload_process.clone(),
            reload_url: self.reload_url.clone(),
            restart_on_change: self.restart_on_change.clone(),
        }
    }

    /// Run to completion; returns the exit code.
    pub fn run(self) -> u8 {
        let fields = self.plan_fields();
        let AgentArgs {
            batch_threshold,
            deadline,
            attempt_timeout,
            allow_disk,
            allow_instance_metadata,
            termination_log,
            // The plan's fields, in `fields`.
            secret_arn: _,
            secret_filename: _,
            secret_key: _,
            secret_format: _,
            env_bindings: _,
            secrets: _,
            output_dir: _,
            file_mode: _,
            version_stage: _,
            version_id: _,
            region: _,
            failover_region: _,
            refresh_interval: _,
            reload_signal: _,
            reload_process: _,
            reload_url: _,
            restart_on_change: _,
        } = self;
        agent::run(
            fields,
            &Options {
                deadline,
                attempt_timeout,
                allow_disk,
                allow_instance_metadata,
                termination_log,
                batch_threshold,
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
    use crate::contract::{self, FileMode, Plan, SecretPlan};
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
        let mutation = mutate(
            &(&metadata).into(),
            &(&spec).into(),
            &MutationConfig::default(),
        )
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
