//! `secret-inject agent`: the container the webhook injects. It reads what to fetch from its
//! environment (the webhook renders it from the pod's annotations, see [`crate::contract`]),
//! fetches the secret with the pod's own AWS identity, and writes it atomically onto the RAM
//! disk. On failure it exits non-zero with no file written and a short message, in the log and
//! in the termination log that `kubectl describe pod` shows, saying what failed and how to fix
//! it.

pub mod fetch;
pub mod write;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use tracing::{info, warn};

use crate::annotations::{self, RelativeFileName, SecretArn};
use crate::contract::{self, FileMode};
use fetch::{Failure, FailureKind, FetchOptions, SecretId, VersionSelector};

/// Largest secret Secrets Manager stores, and the largest the agent writes.
pub const MAX_SECRET_BYTES: usize = 65_536;

/// Fetch one secret from AWS Secrets Manager and write it onto the in-memory volume.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// ARN (or name) of the secret. The webhook sets it from the pod's
    /// secrets.k8s.aws/secret-arn annotation through the Downward API.
    #[arg(long, env = contract::ENV_SECRET_ARN, value_name = "ARN")]
    pub secret_arn: String,
    /// File to write, relative to the output directory; may hold sub-folders.
    #[arg(long, env = contract::ENV_SECRET_FILENAME, default_value = "secret")]
    pub secret_filename: String,
    /// Directory to write into: the mount path of the in-memory volume.
    #[arg(long, env = contract::ENV_OUTPUT_DIR, default_value = "/tmp")]
    pub output_dir: PathBuf,
    /// Mode of the written file (0400, 0440 or 0444); the webhook chooses it with the user.
    #[arg(long, env = contract::ENV_FILE_MODE, default_value = "0400", value_parser = parse_file_mode)]
    pub file_mode: FileMode,
    /// Version stage to fetch (sent explicitly).
    #[arg(
        long,
        env = "SECRET_INJECT_VERSION_STAGE",
        default_value = "AWSCURRENT",
        conflicts_with = "version_id"
    )]
    pub version_stage: String,
    /// Version id to fetch instead of a stage.
    #[arg(long, env = "SECRET_INJECT_VERSION_ID")]
    pub version_id: Option<String>,
    /// AWS region. Otherwise AWS_REGION, then the ARN's region, then the SDK's region chain.
    #[arg(long, env = contract::ENV_REGION)]
    pub region: Option<String>,
    /// Give up after this long, retrying throttling, 5xx, timeouts and connection errors.
    #[arg(long, env = "SECRET_INJECT_DEADLINE", default_value = "120s", value_parser = crate::duration::parse)]
    pub deadline: Duration,
    /// Longest time for one attempt (connect, send, answer); a stalled attempt is retried.
    #[arg(long, env = "SECRET_INJECT_ATTEMPT_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse)]
    pub attempt_timeout: Duration,
    /// Allow writing to a disk-backed directory (for local testing only).
    #[arg(long, env = "SECRET_INJECT_ALLOW_DISK")]
    pub allow_disk: bool,
    /// Where to write the failure message that Kubernetes shows in `kubectl describe pod`.
    #[arg(
        long,
        env = "SECRET_INJECT_TERMINATION_LOG",
        default_value = "/dev/termination-log"
    )]
    pub termination_log: PathBuf,
}

fn parse_file_mode(value: &str) -> Result<FileMode, String> {
    FileMode::from_env(value)
        .ok_or_else(|| format!("{value:?} is not a supported mode; use 0400, 0440 or 0444"))
}

/// Exit codes of the agent (also in the README).
pub mod exit {
    /// The secret was written.
    pub const OK: u8 = 0;
    /// Unexpected internal error.
    pub const INTERNAL: u8 = 1;
    /// Bad configuration: flags or environment (e.g. SECRET_ARN is not an ARN).
    pub const CONFIG: u8 = 2;
    /// No AWS credentials, or STS / EKS Pod Identity refused them.
    pub const CREDENTIALS: u8 = 3;
    /// Secrets Manager denied access (IAM policy).
    pub const ACCESS_DENIED: u8 = 4;
    /// The secret (or the requested version) does not exist.
    pub const NOT_FOUND: u8 = 5;
    /// The secret exists but cannot be used: KMS decryption failure, invalid request (e.g.
    /// scheduled for deletion), no value, larger than 65,536 bytes.
    pub const UNUSABLE: u8 = 6;
    /// AWS stayed unreachable, throttled or failing until the deadline.
    pub const UNAVAILABLE: u8 = 7;
    /// The file could not be written (not in memory, I/O error, path refused).
    pub const WRITE: u8 = 8;
    /// Stopped by SIGTERM or SIGINT before the secret was written.
    pub const INTERRUPTED: u8 = 143;
}

impl FailureKind {
    /// The exit code for this kind of failure.
    pub fn exit_code(self) -> u8 {
        match self {
            FailureKind::Config => exit::CONFIG,
            FailureKind::Credentials => exit::CREDENTIALS,
            FailureKind::AccessDenied => exit::ACCESS_DENIED,
            FailureKind::NotFound => exit::NOT_FOUND,
            FailureKind::Unusable => exit::UNUSABLE,
            FailureKind::Unavailable => exit::UNAVAILABLE,
            FailureKind::Write => exit::WRITE,
            FailureKind::Interrupted => exit::INTERRUPTED,
            FailureKind::Internal => exit::INTERNAL,
        }
    }
}

/// What the agent will do, resolved from flags and environment.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The secret.
    pub secret: SecretId,
    /// Version to fetch.
    pub version: VersionSelector,
    /// Region override (flag, env), else `None` for the SDK chain.
    pub region: Option<String>,
    /// Where the file goes.
    pub output_dir: PathBuf,
    /// File name below it.
    pub file_name: RelativeFileName,
    /// File mode.
    pub mode: FileMode,
}

impl Plan {
    /// Validate the arguments.
    pub fn from_args(args: &AgentArgs) -> Result<Plan, Failure> {
        let config =
            |message: String| Failure::new(FailureKind::Config, "InvalidConfiguration", message);
        let secret = if args.secret_arn.starts_with("arn:") {
            SecretId::Arn(SecretArn::parse(&args.secret_arn).map_err(|e| {
                config(format!(
                    "{}: {}; {}",
                    contract::ENV_SECRET_ARN,
                    e.problem,
                    e.fix
                ))
            })?)
        } else {
            let name = args.secret_arn.as_str();
            if !annotations::is_secret_name(name) {
                return Err(config(format!(
                    "{}: {:?} is neither a secret ARN nor a secret name (1-512 of letters, \
                     digits and /_+=.@-)",
                    contract::ENV_SECRET_ARN,
                    name.chars().take(120).collect::<String>()
                )));
            }
            SecretId::Name(name.to_owned())
        };
        let file_name = RelativeFileName::parse(&args.secret_filename).map_err(|e| {
            config(format!(
                "{}: {}; {}",
                contract::ENV_SECRET_FILENAME,
                e.problem,
                e.fix
            ))
        })?;
        if !args.output_dir.is_absolute() {
            return Err(config(format!(
                "{}: {} is not an absolute path",
                contract::ENV_OUTPUT_DIR,
                args.output_dir.display()
            )));
        }
        let version = match &args.version_id {
            Some(id) => VersionSelector::Id(id.clone()),
            None => VersionSelector::Stage(args.version_stage.clone()),
        };
        // Region: flag, then AWS_REGION, then the ARN's own region, then the SDK's chain.
        let region = args
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .or_else(|| match &secret {
                SecretId::Arn(arn) => Some(arn.region().to_owned()),
                SecretId::Name(_) => None,
            });
        Ok(Plan {
            secret,
            version,
            region,
            output_dir: args.output_dir.clone(),
            file_name,
            mode: args.file_mode,
        })
    }
}

/// Run the agent to completion; returns the process exit code.
pub fn run(args: &AgentArgs) -> u8 {
    let started = Instant::now();
    let result = Plan::from_args(args).and_then(|plan| {
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
                result = fetch_and_write(&plan, args) => result,
                signal = crate::signal::shutdown_signal() => Err(Failure::new(
                    FailureKind::Interrupted,
                    signal,
                    "stopped before the secret was written; no file was written".to_owned(),
                )),
            }
        })
    });
    match result {
        Ok(path) => {
            info!(
                path = %path.display(),
                mode = args.file_mode.as_env(),
                duration_ms = started.elapsed().as_millis() as u64,
                "secret written"
            );
            exit::OK
        }
        Err(failure) => {
            let message = failure.message(&args.secret_arn);
            tracing::error!(
                code = %failure.code,
                exit_code = failure.kind.exit_code(),
                "{message}"
            );
            write_termination_log(&args.termination_log, &message);
            failure.kind.exit_code()
        }
    }
}

async fn fetch_and_write(plan: &Plan, args: &AgentArgs) -> Result<PathBuf, Failure> {
    let write_failure =
        |e: write::WriteError| Failure::new(FailureKind::Write, "WriteFailed", e.to_string());
    // Refuse a disk-backed directory before asking AWS for anything.
    write::check_in_memory(&plan.output_dir, args.allow_disk).map_err(write_failure)?;
    info!(
        secret = %plan.secret,
        region = plan.region.as_deref().unwrap_or("<sdk default>"),
        version = %plan.version,
        "fetching secret"
    );
    let options = FetchOptions {
        deadline: args.deadline,
        attempt_timeout: args.attempt_timeout,
    };
    let value = fetch::fetch(plan, &options).await?;
    let path = write::write_secret(
        &plan.output_dir,
        &plan.file_name,
        &value,
        plan.mode.bits(),
        args.allow_disk,
    )
    .map_err(write_failure)?;
    Ok(path)
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
