//! Running the real agent binary: a RAM disk for its files, and one run with exactly the
//! environment a test gives.

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One run of the agent.
pub struct Run {
    /// Its exit code.
    pub code: Option<i32>,
    /// stdout and stderr.
    pub output: String,
    /// What it wrote to its termination log.
    pub termination: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// A tmpfs directory, as the emptyDir with `medium: Memory` would be.
pub fn ram_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("secret-inject-test-")
        .tempdir_in("/dev/shm")
        .expect("/dev/shm must exist (a tmpfs) for the agent tests");
    secret_inject::agent::write::check_in_memory(dir.path(), false)
        .expect("/dev/shm must be a tmpfs for the agent tests");
    dir
}

/// Run the agent with exactly this environment (plus a termination log and a private HOME).
pub fn agent<K: AsRef<OsStr>, V: AsRef<OsStr>>(env: &[(K, V)], args: &[&str]) -> Run {
    let scratch = tempfile::tempdir().unwrap();
    let termination = scratch.path().join("termination-log");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .args(["--log-format", "plain", "agent"])
        .args(args)
        .env_clear()
        // Tests never reach link-local addresses; cases about IMDS override this.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", scratch.path())
        .env("SECRET_INJECT_TERMINATION_LOG", &termination)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        termination: std::fs::read_to_string(&termination).unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}
