//! `secret-inject agent`: the container the webhook injects. It runs the [`Plan`] the webhook
//! rendered into its environment (see [`crate::contract`]), fetches the pod's secrets with the
//! pod's own AWS identity ([`sources`]), renders them ([`render`]) and writes all files as one
//! set onto the RAM disk ([`write`]). On failure it exits non-zero with no file written and one
//! short message, in the log and in the termination log that `kubectl describe pod` shows,
//! saying which secret failed, what failed and how to fix it. On success the termination log
//! says what was written and which region served it.

pub mod failure;
pub mod fetch;
pub mod metrics;
mod options;
mod output;
pub mod refresh;
pub mod reload;
pub mod render;
pub mod sources;
pub mod write;

use std::path::Path;
use std::time::{Duration, Instant};

use tracing::info;

use crate::aws::{self, AwsSettings, Identity, Timeouts};
use crate::contract::{Plan, PlanError, PlanFields, SettingsFields};
use failure::{Failure, FailureKind};
pub use options::{Launch, Options};
use options::{budget_until, fetch_options};
use output::{Written, write_all, write_failure, write_termination_log};

/// How messages name the secrets of a plan carried as annotations before it parses, as
/// [`PlanFields::described`] names them: the one unnamed ARN as given, else the pod's secrets.
fn described_annotations(annotations: &std::collections::BTreeMap<String, String>) -> String {
    let named = format!("{}.", crate::spec::SECRET_ARN);
    if annotations.keys().any(|k| k.starts_with(&named)) {
        return "the pod's secrets".to_owned();
    }
    annotations
        .get(crate::spec::SECRET_ARN)
        .cloned()
        .unwrap_or_else(|| "<no secret>".to_owned())
}

/// Parse the plan's fields and the settings, and run the plan to completion; returns the process
/// exit code.
pub fn run(fields: PlanFields, settings: &SettingsFields, launch: Launch) -> u8 {
    let started = Instant::now();
    let identity = Identity::detect(
        |name| std::env::var(name).ok(),
        launch.allow_instance_metadata,
    );
    let termination_log = launch.termination_log.clone();
    // Policy mode's plan: the pod's annotations, carried in the environment.
    let carried = matches!(fields.from_annotations(), Ok(true))
        .then(|| crate::contract::carried_annotations(std::env::vars_os()));
    // As given: a plan that does not parse is reported with the value it was given.
    let described = match &carried {
        Some(annotations) => described_annotations(annotations),
        None => fields.described(),
    };
    let invalid =
        |e: PlanError| Failure::new(FailureKind::Config, "InvalidConfiguration", e.to_string());
    let result = settings
        .parse()
        .map_err(invalid)
        .and_then(|settings| {
            Ok((
                match fields.from_annotations().map_err(invalid)? {
                    true => fields
                        .parse_annotations(&carried.unwrap_or_default())
                        .map_err(invalid)?,
                    false => fields.parse().map_err(invalid)?,
                },
                Options::new(settings, launch),
            ))
        })
        .and_then(|(plan, options)| {
            let options = &options;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    Failure::new(
                        FailureKind::Internal,
                        "Runtime",
                        format!("cannot start the async runtime: {e}"),
                    )
                })?;
            runtime.block_on(async {
                if plan.refresh.is_some() {
                    // The rotation sidecar handles SIGTERM itself: after the first write, being
                    // stopped is its normal end.
                    return fetch_and_write(&plan, &identity, options).await;
                }
                tokio::select! {
                    result = fetch_and_write(&plan, &identity, options) => result,
                    signal = crate::signal::shutdown_signal() => Err(Failure::new(
                        FailureKind::Interrupted,
                        signal,
                        "stopped before the secrets were written; no file was written",
                    )),
                }
            })
        });
    match result {
        Ok(written) => {
            info!(
                path = %written.set.display(),
                files = written.files,
                secrets = written.secrets,
                duration_ms = started.elapsed().as_millis() as u64,
                "secrets written"
            );
            write_termination_log(&termination_log, &written.summary);
            written.exit_code
        }
        Err(failure) => {
            let message = failure.message(&described, identity.role_arn());
            tracing::error!(
                code = %failure.code,
                exit_code = failure.kind.exit_code(),
                "{message}"
            );
            write_termination_log(&termination_log, &message);
            failure.kind.exit_code()
        }
    }
}

async fn fetch_and_write(
    plan: &Plan,
    identity: &Identity,
    options: &Options,
) -> Result<Written, Failure> {
    // The rotation sidecar serves its metrics from the start, so its first fetch counts too.
    metrics::serve(plan)?;
    let clients = aws::Clients::new(prepare(plan, identity, options).await?);
    if plan.refresh.is_some() {
        return refresh::run(plan, &clients, options).await;
    }
    let served = sources::fetch_all(
        plan,
        &clients,
        fetch_options(options, budget_until(options, options.deadline)),
    )
    .await?;
    sources::log_served(plan, &served);
    write_all(plan, &served, options)
}

/// The checks before any AWS call (an in-memory directory, an identity), and the SDK config.
async fn prepare(
    plan: &Plan,
    identity: &Identity,
    options: &Options,
) -> Result<aws_config::SdkConfig, Failure> {
    let output_dir = Path::new(plan.output_dir.as_str());
    // Refuse a disk-backed directory, or a pod with no identity, before asking AWS for anything.
    write::check_in_memory(output_dir, options.allow_disk).map_err(write_failure)?;
    if *identity == Identity::None {
        return Err(Failure::new(
            FailureKind::NoIdentity,
            "NoIdentity",
            "the container has no IRSA web identity (AWS_ROLE_ARN and \
             AWS_WEB_IDENTITY_TOKEN_FILE), no EKS Pod Identity \
             (AWS_CONTAINER_CREDENTIALS_FULL_URI) and no AWS keys",
        ));
    }
    // An identity that can never work (a token file the kubelet did not project, a role that is
    // no ARN) fails now, naming what is wrong, instead of being retried until the deadline.
    identity
        .check()
        .map_err(|e| Failure::new(FailureKind::NoIdentity, e.code(), e.to_string()))?;
    info!(
        secrets = plan.secrets.len(),
        first = %plan.secrets[0].secret,
        failover_region = plan.failover_region.as_deref().unwrap_or(""),
        refresh_interval_ms = plan.refresh.as_ref().map(|r| r.interval.as_millis() as u64).unwrap_or(0),
        "fetching secrets"
    );
    let settings = AwsSettings {
        // The first secret's region: the SDK config's (STS's); every client sets its own.
        region: plan.secrets.iter().find_map(|s| s.region.clone()),
        timeouts: Timeouts {
            connect: options.attempt_timeout.min(Duration::from_secs(5)),
            attempt: options.attempt_timeout,
        },
        allow_instance_metadata: options.allow_instance_metadata,
    };
    let config = aws::sdk_config(&settings).await;
    if config.region().is_none() {
        return Err(Failure::new(
            FailureKind::Config,
            "NoRegion",
            format!(
                "no AWS region for secret name {}: give the full ARN, or set --region or AWS_REGION",
                plan.secrets[0].secret
            ),
        ));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::described_annotations;

    #[test]
    fn a_carried_plan_is_described_by_its_arn_or_as_the_pods_secrets() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let of = |pairs: &[(&str, &str)]| {
            described_annotations(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        assert_eq!(
            of(&[
                ("secrets.k8s.aws/secret-arn", arn),
                ("secrets.k8s.aws/secret-key", "password[")
            ]),
            arn
        );
        assert_eq!(
            of(&[
                ("secrets.k8s.aws/secret-arn", arn),
                ("secrets.k8s.aws/secret-arn.Bad_Name", arn)
            ]),
            "the pod's secrets"
        );
        assert_eq!(of(&[]), "<no secret>");
    }
}
