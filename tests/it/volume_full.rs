//! Issue 19 item 1: the agent on a secret volume too small for its files, a real tmpfs with a
//! size as the kubelet mounts an emptyDir with `sizeLimit` (`size=...`). A set that cannot be
//! written is a failure the pod's owner sees, with the size the volume needs and the annotation
//! that gives it: the one-shot agent exits 8 without writing; the rotation sidecar exits 8 on a
//! change it cannot write (the restart count moves, the message is its last state), and the
//! restarted sidecar keeps the files in place and writes the change once there is room.
//!
//! Deadlines are for liveness only, about ten times what the events take on an idle machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::agent::{Group, agent};
use crate::common::moto::Moto;

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped (panics included).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0777")])
            .arg("secret-vol")
            .arg(dir.path())
            .output()
            .expect("mount (util-linux) must be installed; the test needs root");
        assert!(
            output.status.success(),
            "mount a tmpfs (the test needs root): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grow the tmpfs, as a bigger sizeLimit would have made it.
    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn credentials(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test-secret-key".to_owned()),
    ]
}

/// A value of 60,000 bytes: 15 pages on a tmpfs.
fn value(fill: char) -> String {
    std::iter::repeat_n(fill, 60_000).collect()
}

#[test]
fn the_one_shot_agent_on_a_full_volume_exits_8_naming_the_size_and_the_annotation() {
    let moto = Moto::start();
    let a = moto.create_secret("us-east-1", "big/a", &value('a'));
    let b = moto.create_secret("us-east-1", "big/b", &value('b'));
    // 96 KiB: 24 pages; the two values and the versions file take 31.
    let volume = Tmpfs::mount("96k");
    let secrets = json!([{"name": "a", "arn": a}, {"name": "b", "arn": b}]).to_string();
    let mut env = credentials(&moto.endpoint());
    env.push(("SECRET_INJECT_SECRETS", secrets));
    env.push((
        "SECRET_INJECT_OUTPUT_DIR",
        volume.path().to_str().unwrap().to_owned(),
    ));
    let run = agent(&env, &[]);
    assert_eq!(run.code, Some(8), "{}", run.output);
    let message = &run.termination;
    for expected in [
        "the secret volume is full (VolumeFull)",
        "the new set of 3 file(s) takes 128 KiB (in whole 4 KiB pages)",
        "has 96 KiB free of 96 KiB",
        "needs at least 1Mi (two complete sets",
        "set the pod's annotation secrets.k8s.aws/volume-size-limit",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert!(!message.contains("wrote"), "{message}");
    // Nothing was written: no half set, no link.
    assert_eq!(std::fs::read_dir(volume.path()).unwrap().count(), 0);
}

/// The agent as a rotation sidecar in a process group of its own, killed when dropped.
struct Sidecar {
    group: Group,
    log: PathBuf,
    termination: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Sidecar {
    fn start(endpoint: &str, arn: &str, out: &Path) -> Sidecar {
        let scratch = tempfile::tempdir().unwrap();
        let log = scratch.path().join("agent.log");
        let termination = scratch.path().join("termination-log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_secret-inject"));
        command
            .args(["--log-format", "plain", "agent"])
            .env_clear()
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", scratch.path())
            .envs(credentials(endpoint))
            .env("SECRET_ARN", arn)
            .env("SECRET_INJECT_OUTPUT_DIR", out)
            .env("SECRET_INJECT_REFRESH_INTERVAL", "1s")
            .env("SECRET_INJECT_TERMINATION_LOG", &termination)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Sidecar {
            group: Group::spawn(command),
            log,
            termination,
            _scratch: scratch,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn termination(&self) -> String {
        std::fs::read_to_string(&self.termination).unwrap_or_default()
    }

    /// Its exit code, once it has exited.
    fn exited(&mut self) -> Option<Option<i32>> {
        self.group.child.try_wait().unwrap().map(|s| s.code())
    }

    /// SIGTERM, its normal end; the exit code and the termination log.
    fn stop(mut self) -> (Option<i32>, String) {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.group.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let code = self.group.child.wait().unwrap().code();
        (code, self.termination())
    }
}

fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn put_value(moto: &Moto, arn: &str, value: &str) {
    let (status, body) = moto.json(
        "us-east-1",
        "secretsmanager.PutSecretValue",
        &json!({"SecretId": arn, "SecretString": value}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_rotation_the_volume_cannot_hold_exits_the_sidecar_and_the_restarted_one_keeps_the_files() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "big/rotating", &value('1'));
    // 96 KiB: 24 pages; one set takes 16 (15 of value, 1 of versions file), two take 32.
    let volume = Tmpfs::mount("96k");
    let file = volume.path().join("secret");
    let first = value('1');
    let mut sidecar = Sidecar::start(&moto.endpoint(), &arn, volume.path());
    eventually(Duration::from_secs(30), "the first write", || {
        std::fs::read_to_string(&file).ok().as_deref() == Some(first.as_str())
    });

    // The rotation cannot be written beside the first set: the sidecar exits 8, saying why.
    put_value(&moto, &arn, &value('2'));
    eventually(Duration::from_secs(30), "the sidecar's exit", || {
        sidecar.exited().is_some()
    });
    assert_eq!(sidecar.exited(), Some(Some(8)), "{}", sidecar.log());
    let message = sidecar.termination();
    assert!(
        message.contains("the secret volume is full (VolumeFull)")
            && message.contains("needs at least 1Mi")
            && message.contains("secrets.k8s.aws/volume-size-limit")
            && !message.contains("wrote"),
        "{message}"
    );
    // The files in place are kept, whole.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);

    // The kubelet restarts it: it cannot write the new set either, and keeps the old one
    // rather than exiting again.
    let mut restarted = Sidecar::start(&moto.endpoint(), &arn, volume.path());
    eventually(Duration::from_secs(30), "the failure logged", || {
        restarted.termination().contains("VolumeFull")
    });
    // Two more rounds at the 1 s interval: still running, still the old file.
    let log_lines = |s: &Sidecar| s.log().matches("VolumeFull").count();
    let seen = log_lines(&restarted);
    eventually(Duration::from_secs(30), "a retry at the interval", || {
        log_lines(&restarted) >= seen + 2
    });
    assert_eq!(restarted.exited(), None, "{}", restarted.log());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);

    // Room made (a bigger sizeLimit): the held set is written at the next round.
    volume.resize("1m");
    let second = value('2');
    eventually(Duration::from_secs(30), "the held set written", || {
        std::fs::read_to_string(&file).ok().as_deref() == Some(second.as_str())
    });
    assert_eq!(restarted.stop().0, Some(0));
}

#[test]
fn a_sidecar_stopped_while_it_holds_an_unwritten_set_says_so_in_its_termination_log() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "big/held", &value('1'));
    let volume = Tmpfs::mount("96k");
    let file = volume.path().join("secret");
    let first = value('1');
    let mut sidecar = Sidecar::start(&moto.endpoint(), &arn, volume.path());
    eventually(Duration::from_secs(30), "the first write", || {
        std::fs::read_to_string(&file).ok().as_deref() == Some(first.as_str())
    });
    put_value(&moto, &arn, &value('2'));
    eventually(Duration::from_secs(30), "the sidecar's exit", || {
        sidecar.exited().is_some()
    });
    let restarted = Sidecar::start(&moto.endpoint(), &arn, volume.path());
    eventually(Duration::from_secs(30), "the failure logged", || {
        restarted.termination().contains("VolumeFull")
    });
    // Stopped (the pod deleted): the last word is the failure, not the last write's summary.
    let (code, message) = restarted.stop();
    assert_eq!(code, Some(0));
    assert!(
        message.contains("VolumeFull") && !message.contains("wrote"),
        "{message}"
    );
}
