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

/// A child started in a process group of its own. Dropping it (a panic included) kills the
/// whole group, so whatever the child started (a shell's background job, the processes of a
/// PID namespace) ends with the test.
pub struct Group {
    pub child: std::process::Child,
}

impl Group {
    /// Spawn `command` as the leader of a new process group.
    pub fn spawn(mut command: Command) -> Group {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
        Group {
            child: command
                .spawn()
                .unwrap_or_else(|e| panic!("start {command:?}: {e}")),
        }
    }

    /// The process group id (the leader's pid).
    pub fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL to every process of the group; the leader is waited for.
    pub fn kill(&mut self) {
        if let Some(pgid) = rustix::process::Pid::from_raw(self.pgid()) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The processes (pid, name) that are still in process group `pgid`, zombies left out.
pub fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let mut members = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return members;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            members.push((pid, stat[open + 1..close].to_owned()));
        }
    }
    members
}

/// Kill the group and wait (up to `limit`) until none of its processes is left; panics naming
/// the ones that are.
pub fn end_group(mut group: Group, limit: Duration) {
    let pgid = group.pgid();
    group.kill();
    let started = Instant::now();
    loop {
        let left = group_members(pgid);
        if left.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "processes of the test still running {limit:?} after it ended: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
