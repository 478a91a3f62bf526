//! `secret-inject agent`: the container the webhook injects. It runs the [`Plan`] the webhook
//! rendered into its environment (see [`crate::contract`]), fetches the pod's secrets with the
//! pod's own AWS identity ([`sources`]), renders them ([`render`]) and writes all files as one
//! set onto the RAM disk ([`write`]). On failure it exits non-zero with no file written and one
//! short message, in the log and in the termination log that `kubectl describe pod` shows,
//! saying which secret failed, what failed and how to fix it. On success the termination log
//! says what was written and which region served it.

pub mod failure;
pub mod fetch;
pub mod refresh;
pub mod reload;
pub mod render;
pub mod sources;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::aws::{self, AwsSettings, Identity, Timeouts};
use crate::contract::{Plan, PlanFields};
use failure::{Failure, FailureKind};
use fetch::RetryBudget;
use sources::FetchOptions;

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
    /// Use BatchGetSecretValue for a region with at least this many secrets (0: never).
    pub batch_threshold: usize,
}

/// Parse the plan's fields and run it to completion; returns the process exit code.
pub fn run(fields: PlanFields, options: &Options) -> u8 {
    let started = Instant::now();
    let identity = Identity::detect(
        |name| std::env::var(name).ok(),
        options.allow_instance_metadata,
    );
    // As given: a plan that does not parse is reported with the value it was given.
    let described = fields.described();
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
            write_termination_log(&options.termination_log, &written.summary);
            written.exit_code
        }
        Err(failure) => {
            let message = failure.message(&described, identity.role_arn());
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

/// What a successful run wrote.
pub(crate) struct Written {
    set: PathBuf,
    files: usize,
    secrets: usize,
    summary: String,
    /// The exit code: 0, or [`crate::contract::RESTART_EXIT_CODE`] to restart the pod.
    exit_code: u8,
}

async fn fetch_and_write(
    plan: &Plan,
    identity: &Identity,
    options: &Options,
) -> Result<Written, Failure> {
    let config = prepare(plan, identity, options).await?;
    if plan.refresh.is_some() {
        return refresh::run(plan, &config, options).await;
    }
    let served = sources::fetch_all(
        plan,
        &config,
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

/// How the fetches of one run (or one rotation round) go: the agent's batch rule, `budget`.
fn fetch_options(options: &Options, budget: RetryBudget) -> FetchOptions {
    FetchOptions {
        batch_threshold: options.batch_threshold,
        budget,
    }
}

/// The budget of a run that ends `deadline` from now.
fn budget_until(options: &Options, deadline: Duration) -> RetryBudget {
    RetryBudget::new(Instant::now() + deadline, options.attempt_timeout)
}

/// Render every secret of the plan from the fetched values and write them as one set, with the
/// versions beside them.
fn write_all(
    plan: &Plan,
    served: &std::collections::HashMap<sources::FetchKey, sources::Served>,
    options: &Options,
) -> Result<Written, Failure> {
    let output_dir = Path::new(plan.output_dir.as_str());
    let mut files = Vec::new();
    let mut env = Vec::new();
    let mut failed_over = Vec::new();
    let mut versions = std::collections::BTreeMap::new();
    for secret in &plan.secrets {
        let key = (secret.secret.clone(), secret.version.clone());
        let Some(value) = served.get(&key) else {
            return Err(
                Failure::new(FailureKind::Internal, "NotFetched", "no value").about(secret.label()),
            );
        };
        let rendered = render::render(secret, &value.fetched.bytes)?;
        files.extend(rendered.files);
        env.extend(rendered.env);
        if secret.region.as_deref().is_some_and(|r| r != value.region) {
            failed_over.push(secret.label());
        }
        versions.insert(
            refresh::version_key(&key),
            value.fetched.version.clone().unwrap_or_default(),
        );
    }
    let visible = files.len();
    if !env.is_empty() {
        files.push(render::kubelet_env_file(&env)?);
    }
    files.push(render::OutputFile {
        path: crate::contract::VERSIONS_FILE_NAME.to_owned(),
        // Strings only: serializing cannot fail.
        bytes: serde_json::to_vec(&versions).unwrap_or_default(),
    });
    let set = write::write_set(
        output_dir,
        &files,
        plan.file_mode.bits(),
        options.allow_disk,
    )
    .map_err(write_failure)?;
    let mut summary = format!(
        "secret-inject: wrote {visible} file(s) for {} secret(s) into {}",
        plan.secrets.len(),
        plan.output_dir.as_str()
    );
    if !env.is_empty() {
        summary.push_str(&format!(" and {} env var(s)", env.len()));
    }
    if let (Some(region), false) = (&plan.failover_region, failed_over.is_empty()) {
        summary.push_str(&format!(
            "; served by the failover region {region}: {}",
            failed_over.join(", ")
        ));
    }
    summary.push('.');
    Ok(Written {
        set,
        files: visible,
        secrets: plan.secrets.len(),
        summary,
        exit_code: failure::exit::OK,
    })
}

fn write_failure(error: write::WriteError) -> Failure {
    let code = match &error {
        write::WriteError::NotInMemory { .. } => "NotInMemory",
        write::WriteError::Escapes { .. } => "PathEscapes",
        write::WriteError::Collision { .. } => "FileCollision",
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
