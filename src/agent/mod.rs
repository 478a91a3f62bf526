//! `secret-inject agent`: the container the webhook injects. It runs the [`Plan`] the webhook
//! rendered into its environment (see [`crate::contract`]), fetches the secret with the pod's
//! own AWS identity, and writes it atomically onto the RAM disk. On failure it exits non-zero
//! with no file written and one short message, in the log and in the termination log that
//! `kubectl describe pod` shows, saying what failed and how to fix it.

pub mod failure;
pub mod fetch;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::aws::{self, AwsSettings, Identity, Timeouts};
use crate::contract::{Plan, PlanFields};
use failure::{Failure, FailureKind};
use fetch::RetryBudget;

/// Largest secret Secrets Manager stores, and the largest the agent writes.
pub const MAX_SECRET_BYTES: usize = 65_536;

/// How the agent runs (not what it fetches: that is the [`Plan`]).
#[derive(Debug, Clone)]
pub struct Options {
    /// Give up after this long, retrying transient errors.
    pub deadline: Duration,
    /// Longest time for one attempt.
    pub attempt_timeout: Duration,
    /// Allow writing to a disk-backed directory (local testing only).
    pub allow_disk: bool,
    /// Let the credentials chain use the node's instance metadata (IMDS).
    pub allow_instance_metadata: bool,
    /// Where the failure message goes (Kubernetes shows it in `kubectl describe pod`).
    pub termination_log: PathBuf,
}

/// Parse the plan's fields and run it to completion; returns the process exit code.
pub fn run(fields: PlanFields<'_>, options: &Options) -> u8 {
    let started = Instant::now();
    let identity = Identity::detect(
        |name| std::env::var(name).ok(),
        options.allow_instance_metadata,
    );
    // As given: a plan that does not parse is reported with the value it was given.
    let secret = fields.secret_arn;
    let result = fields
        .parse()
        .map_err(|e| Failure::new(FailureKind::Config, "InvalidConfiguration", e.to_string()))
        .and_then(|plan| {
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
                tokio::select! {
                    result = fetch_and_write(&plan, &identity, options) => result.map(|path| (plan, path)),
                    signal = crate::signal::shutdown_signal() => Err(Failure::new(
                        FailureKind::Interrupted,
                        signal,
                        "stopped before the secret was written; no file was written",
                    )),
                }
            })
        });
    match result {
        Ok((plan, path)) => {
            info!(
                path = %path.display(),
                mode = plan.file_mode.as_str(),
                duration_ms = started.elapsed().as_millis() as u64,
                "secret written"
            );
            failure::exit::OK
        }
        Err(failure) => {
            let message = failure.message(secret, identity.role_arn());
            tracing::error!(
                code = %failure.code,
                exit_code = failure.kind.exit_code(),
                "{message}"
            );
            write_termination_log(&options.termination_log, &message);
            failure.kind.exit_code()
        }
    }
}

async fn fetch_and_write(
    plan: &Plan,
    identity: &Identity,
    options: &Options,
) -> Result<PathBuf, Failure> {
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
    info!(
        secret = %plan.secret,
        region = plan.region.as_deref().unwrap_or("<sdk default>"),
        version = %plan.version,
        "fetching secret"
    );
    let settings = AwsSettings {
        region: plan.region.clone(),
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
                plan.secret
            ),
        ));
    }
    let client = aws::secrets_manager(&config);
    let budget = RetryBudget {
        deadline: Instant::now() + options.deadline,
        attempt_timeout: options.attempt_timeout,
    };
    let value = fetch::get_secret_value(&client, plan, budget).await?;
    write::write_secret(
        output_dir,
        &plan.file_name,
        &value,
        plan.file_mode.bits(),
        options.allow_disk,
    )
    .map_err(write_failure)
}

fn write_failure(error: write::WriteError) -> Failure {
    let code = match &error {
        write::WriteError::NotInMemory { .. } => "NotInMemory",
        write::WriteError::Escapes { .. } => "PathEscapes",
        write::WriteError::Io { .. } => "WriteFailed",
    };
    Failure::new(FailureKind::Write, code, error.to_string())
}

/// Kubernetes reads at most 4096 bytes of the termination log.
fn write_termination_log(path: &Path, message: &str) {
    let mut end = message.len().min(4096);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    if let Err(error) = std::fs::write(path, &message[..end]) {
        warn!(path = %path.display(), %error, "cannot write the termination log");
    }
}

/// A random number for temporary names and jitter, from std's per-process random hash keys.
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}
