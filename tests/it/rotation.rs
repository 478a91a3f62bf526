//! Rotation: the real agent as a long-running sidecar against moto, rotated the way Secrets
//! Manager rotation does it (`PutSecretValue` as `AWSPENDING`, then `UpdateSecretVersionStage`
//! moving `AWSCURRENT`). The agent takes a 1 s interval here; the webhook admits 30 s to 24 h.
//!
//! Deadlines are for liveness only: each waits on the event, about ten times as long as it
//! takes on an idle machine (a rotation reaches the files in 1 s ± 10 % plus the calls), so a
//! busy machine slows these tests down without failing them. Each sidecar runs in a process
//! group of its own that is killed when the test ends, panics included.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::agent::{Group, end_group, group_members, ram_dir};
use crate::common::moto::{AwsProxy, Moto};

/// The agent as a sidecar: files into `out`, checking every second.
struct Sidecar {
    group: Group,
    log: PathBuf,
    termination: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    fn start(endpoint: &str, out: &Path, extra: &[(&str, &str)]) -> Sidecar {
        Sidecar::start_with(
            Command::new(env!("CARGO_BIN_EXE_secret-inject")),
            endpoint,
            out,
            extra,
        )
    }

    fn start_with(
        mut command: Command,
        endpoint: &str,
        out: &Path,
        extra: &[(&str, &str)],
    ) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let termination = dir.path().join("termination-log");
        command
            .args(["--log-format", "json", "agent"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
            .env("SECRET_INJECT_OUTPUT_DIR", out)
            .env("SECRET_INJECT_REFRESH_INTERVAL", "1s")
            .env("SECRET_INJECT_ATTEMPT_TIMEOUT", "2s")
            .env("SECRET_INJECT_TERMINATION_LOG", &termination)
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Sidecar {
            group: Group::spawn(command),
            log,
            termination,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.group.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM: a sidecar's normal end.
    fn stop(mut self) -> Option<i32> {
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.group.child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let status = self.group.child.wait().unwrap();
        status.code()
    }
}

/// Wait until `check` holds, or fail with `what` after `limit`.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn token(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

#[test]
fn rotated_secrets_reach_the_files_together_and_unchanged_ones_cost_one_describe_each() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "app/pair", r#"{"a":"v0","b":"v0"}"#);
    let other = moto.create_secret("us-east-1", "app/other", "steady");
    let proxy = AwsProxy::counting(moto.port);
    let out = ram_dir();
    let secrets = json!([
        {"name": "pair", "arn": arn, "format": "split"},
        {"name": "other", "arn": other},
    ])
    .to_string();
    let sidecar = Sidecar::start(
        &proxy.endpoint(),
        out.path(),
        &[("SECRET_INJECT_SECRETS", &secrets)],
    );
    let a = out.path().join("pair/a");
    eventually(Duration::from_secs(20), "first write", || {
        read(&a).as_deref() == Some("v0")
    });
    // Idle: only DescribeSecret, one per secret per round.
    proxy.reset();
    std::thread::sleep(Duration::from_millis(3500));
    let counts = proxy.counts();
    let describes = proxy.count("secretsmanager.DescribeSecret");
    assert!(describes >= 4, "{counts:?}");
    assert_eq!(describes % 2, 0, "one per secret per round: {counts:?}");
    assert_eq!(
        counts.len(),
        1,
        "nothing but DescribeSecret while nothing changes: {counts:?}"
    );

    // A reader that resolves `..data` once per read never sees a mixed or partial set.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, dir) = (stop.clone(), reads.clone(), out.path().to_owned());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok(set) = std::fs::read_link(dir.join("..data")) else {
                    continue;
                };
                let (Some(a), Some(b)) = (
                    read(&dir.join(&set).join("pair/a")),
                    read(&dir.join(&set).join("pair/b")),
                ) else {
                    // The old set was removed between readlink and open: read again.
                    continue;
                };
                assert_eq!(a, b, "a mixed set");
                assert!(a.len() >= 2 && a.starts_with('v'), "a partial file: {a:?}");
                reads.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    proxy.reset();
    let started = Instant::now();
    for n in 1..=5u32 {
        moto.rotate(&arn, &format!(r#"{{"a":"v{n}","b":"v{n}"}}"#), &token(n));
        let expected = format!("v{n}");
        // Interval (1 s ± 10 %) plus the calls; ten times that.
        eventually(Duration::from_secs(15), "rotated value", || {
            read(&a).as_deref() == Some(expected.as_str())
        });
        assert_eq!(
            read(&out.path().join("pair/b")).as_deref(),
            Some(expected.as_str())
        );
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    assert!(
        reads.load(Ordering::SeqCst) > 100,
        "the reader ran during the swaps"
    );
    assert!(
        started.elapsed() < Duration::from_secs(75),
        "five rotations took {:?}",
        started.elapsed()
    );
    // One fetch per change, and the unchanged secret never fetched again.
    let fetched = proxy.count("secretsmanager.GetSecretValue")
        + proxy.count("secretsmanager.BatchGetSecretValue");
    assert_eq!(fetched, 5, "{:?}", proxy.counts());
    assert_eq!(read(&out.path().join("other")).as_deref(), Some("steady"));
    // Each change logged with the old and new version ids; no value in the log.
    let log = sidecar.log();
    let changes: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "secret changed")
        .collect();
    assert_eq!(changes.len(), 5, "{log}");
    assert_eq!(changes[1]["old_version"], token(1));
    assert_eq!(changes[1]["new_version"], token(2));
    assert!(!log.contains("v3\""), "a value in the log:\n{log}");
    // Only the current set is left.
    let sets = std::fs::read_dir(out.path())
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.starts_with("..") && name != "..data"
        })
        .count();
    assert_eq!(sets, 1);
    assert_eq!(sidecar.stop(), Some(0), "SIGTERM is a sidecar's normal end");
}

/// A TCP forwarder that can be switched off (it then accepts and closes at once).
struct Switch {
    port: u16,
    down: Arc<AtomicBool>,
}

impl Switch {
    fn start(upstream: u16) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let flag = down.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(client) = stream else { continue };
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c1, mut s1) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c1, &mut s1);
                    let _ = s1.shutdown(std::net::Shutdown::Write);
                });
                let (mut c2, mut s2) = (client, server);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Switch { port, down }
    }
}

#[test]
fn transient_errors_keep_the_files_and_recover_and_a_deleted_secret_is_reported() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "app/flaky", "v0");
    let switch = Switch::start(moto.port);
    let out = ram_dir();
    let mut sidecar = Sidecar::start(
        &format!("http://127.0.0.1:{}", switch.port),
        out.path(),
        &[("SECRET_ARN", &arn)],
    );
    let file = out.path().join("secret");
    eventually(Duration::from_secs(20), "first write", || {
        read(&file).as_deref() == Some("v0")
    });
    // AWS unreachable while the secret rotates: the old file stays.
    switch.down.store(true, Ordering::SeqCst);
    moto.rotate(&arn, "v1", &token(1));
    let unreachable = |log: &str| {
        log.matches("cannot check for new versions; keeping the files in place")
            .count()
    };
    // Two failed rounds after the rotation: it did try while AWS was away.
    let seen = unreachable(&sidecar.log());
    eventually(Duration::from_secs(30), "a round without AWS", || {
        unreachable(&sidecar.log()) >= seen + 2
    });
    assert_eq!(
        read(&file).as_deref(),
        Some("v0"),
        "the last good file is kept"
    );
    assert!(sidecar.running());
    // Back: the new value arrives.
    switch.down.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(20), "recovery", || {
        read(&file).as_deref() == Some("v1")
    });
    // Deleted: a permanent error, reported; the files stay and the sidecar keeps checking.
    let (status, body) = moto.json(
        "us-east-1",
        "secretsmanager.DeleteSecret",
        &json!({"SecretId": arn, "ForceDeleteWithoutRecovery": true}),
    );
    assert_eq!(status, 200, "{body}");
    eventually(Duration::from_secs(20), "the report", || {
        read(&sidecar.termination).is_some_and(|t| t.contains("ResourceNotFoundException"))
    });
    let reports = |log: &str| {
        log.matches("keeping the files in place: secret-inject")
            .count()
    };
    let before = reports(&sidecar.log());
    eventually(
        Duration::from_secs(20),
        "it keeps checking at the interval",
        || reports(&sidecar.log()) > before,
    );
    assert_eq!(read(&file).as_deref(), Some("v1"));
    assert!(sidecar.running());
}

#[test]
fn the_startup_probe_fails_before_the_first_write_and_succeeds_after() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "app/probe", "v0");
    let out = ram_dir();
    let probe = || {
        Command::new(env!("CARGO_BIN_EXE_secret-inject"))
            .arg("probe")
            .env("SECRET_INJECT_OUTPUT_DIR", out.path())
            .output()
            .unwrap()
    };
    let before = probe();
    assert_eq!(before.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&before.stderr).contains("no complete set of files"));
    // A switch that is down holds the first fetch back: the probe keeps failing meanwhile.
    let switch = Switch::start(moto.port);
    switch.down.store(true, Ordering::SeqCst);
    let sidecar = Sidecar::start(
        &format!("http://127.0.0.1:{}", switch.port),
        out.path(),
        &[("SECRET_ARN", &arn)],
    );
    // Its first fetch failed and is retried: no file can be there yet.
    eventually(Duration::from_secs(20), "a failed first fetch", || {
        sidecar.log().contains("retrying")
    });
    assert_eq!(probe().status.code(), Some(1), "no files yet");
    switch.down.store(false, Ordering::SeqCst);
    eventually(Duration::from_secs(30), "the probe to pass", || {
        probe().status.code() == Some(0)
    });
    assert_eq!(read(&out.path().join("secret")).as_deref(), Some("v0"));
}

#[test]
fn after_a_change_the_reload_url_gets_one_post_per_change() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "app/http", "v0");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = posts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            record.lock().unwrap().push(line);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let out = ram_dir();
    let url = format!("http://127.0.0.1:{port}/-/reload");
    let sidecar = Sidecar::start(
        &moto.endpoint(),
        out.path(),
        &[("SECRET_ARN", &arn), ("SECRET_INJECT_RELOAD_URL", &url)],
    );
    let file = out.path().join("secret");
    eventually(Duration::from_secs(20), "first write", || {
        read(&file).as_deref() == Some("v0")
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        posts.lock().unwrap().is_empty(),
        "the first write is not a change"
    );
    for n in 1..=2u32 {
        moto.rotate(&arn, &format!("v{n}"), &token(n));
        eventually(Duration::from_secs(15), "rotated", || {
            read(&file) == Some(format!("v{n}"))
        });
        eventually(Duration::from_secs(10), "the POST", || {
            posts.lock().unwrap().len() >= n as usize
        });
        assert_eq!(
            posts.lock().unwrap().len(),
            n as usize,
            "one POST per change"
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        *posts.lock().unwrap(),
        ["POST /-/reload HTTP/1.1", "POST /-/reload HTTP/1.1"]
    );
    assert!(sidecar.log().contains("reload requested"));
}

/// The signal goes to a process of another "container" in the same PID namespace (what
/// `shareProcessNamespace: true` gives a pod): both run under one `unshare --pid`. Processes
/// come and go beside it (its shell loop forks a child every 100 ms, named `reloadme` until it
/// execs `sleep`): each change still reaches it exactly once. When the test ends, nothing it
/// started is left running.
#[test]
fn after_a_change_the_named_process_in_the_shared_pid_namespace_gets_the_signal() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "app/signal", "v0");
    let out = ram_dir();
    let scratch = tempfile::Builder::new()
        .prefix("secret-inject-signal-")
        .tempdir_in("/dev/shm")
        .unwrap();
    // A process whose name (/proc/PID/comm) is `reloadme`: a copy of sh, counting SIGHUPs. The
    // copy is made by the single-threaded shell: a copy written by this multi-threaded test
    // binary can be held open by a sibling test's child between its fork and exec, and then
    // fails to run with "Text file busy".
    let target = scratch.path().join("reloadme");
    let count = scratch.path().join("hups");
    let script = format!(
        "cp /bin/sh {target}\n\
         {target} -c 'trap \"echo hup >> {count}\" HUP; while :; do sleep 0.1; done' &\n\
         exec \"$@\"",
        target = target.display(),
        count = count.display()
    );
    let mut command = Command::new("unshare");
    command.args([
        "--pid",
        "--fork",
        // The namespace (the agent as its init, the `reloadme` loop) dies with `unshare`.
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
        &script,
        "sh",
        env!("CARGO_BIN_EXE_secret-inject"),
    ]);
    let sidecar = Sidecar::start_with(
        command,
        &moto.endpoint(),
        out.path(),
        &[
            ("SECRET_ARN", &arn),
            ("SECRET_INJECT_RELOAD_SIGNAL", "HUP"),
            ("SECRET_INJECT_RELOAD_PROCESS", "reloadme"),
        ],
    );
    let file = out.path().join("secret");
    eventually(Duration::from_secs(20), "first write", || {
        read(&file).as_deref() == Some("v0")
    });
    let hups = || read(&count).map_or(0, |c| c.lines().count());
    let signalled = |log: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "signalled")
            .map(|l| l["count"].as_u64().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    for n in 1..=2usize {
        moto.rotate(&arn, &format!("v{n}"), &token(n as u32));
        eventually(Duration::from_secs(15), "rotated", || {
            read(&file) == Some(format!("v{n}"))
        });
        // The agent signals right after the swap; the loop runs its trap within 100 ms.
        let started = Instant::now();
        while hups() < n {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no signal {:?} after change {n}: {} HUPs; log:\n{}",
                started.elapsed(),
                hups(),
                sidecar.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(hups(), n, "one signal per change; log:\n{}", sidecar.log());
    }
    // Each change signalled `reloadme` itself, not counted twice.
    let log = sidecar.log();
    let counts = signalled(&log);
    assert_eq!(counts.len(), 2, "{log}");
    assert!(
        counts.iter().all(|c| (1..=2).contains(c)),
        "{counts:?}: {log}"
    );
    assert!(!log.contains("cannot signal"), "{log}");
    // Everything the test started ends with it: the agent, the `reloadme` loop, `unshare`.
    let pgid = sidecar.group.pgid();
    let names: Vec<String> = group_members(pgid).into_iter().map(|(_, n)| n).collect();
    for name in ["unshare", "secret-inject", "reloadme"] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    let Sidecar { group, _dir, .. } = sidecar;
    end_group(group, Duration::from_secs(10));
}

#[test]
fn restart_on_change_exits_with_the_restart_code_after_writing_the_change() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "app/env", r#"{"password":"p0"}"#);
    let out = ram_dir();
    let mut sidecar = Sidecar::start(
        &moto.endpoint(),
        out.path(),
        &[
            ("SECRET_ARN", &arn),
            ("SECRET_INJECT_ENV", "PASSWORD=password"),
            ("SECRET_INJECT_RESTART_ON_CHANGE", "true"),
        ],
    );
    let env_file = out.path().join("..data/..env");
    eventually(Duration::from_secs(20), "first write", || {
        read(&env_file).as_deref() == Some("PASSWORD='p0'\n")
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(sidecar.running(), "no change, no exit");
    moto.rotate(&arn, r#"{"password":"p1"}"#, &token(1));
    let status = {
        let started = Instant::now();
        loop {
            if let Some(status) = sidecar.group.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no exit after the change"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(status.code(), Some(42));
    assert_eq!(
        read(&env_file).as_deref(),
        Some("PASSWORD='p1'\n"),
        "written before the exit"
    );
    let termination = read(&sidecar.termination).unwrap();
    assert!(termination.contains("Exited with 42"), "{termination}");
}

/// The audit at trace level: many secrets (a key, the env and split formats, env vars, a
/// SecureString parameter) fetched, then rotated, by the sidecar logging everything it can.
/// No value, old or new, whole or selected, appears in its log or termination message.
#[test]
fn no_value_of_many_rotating_secrets_reaches_any_output_at_trace_level() {
    let moto = Moto::start();
    let values = [
        r#"{"user":"audit-user-7f3a","password":"audit-pw-9c1e-old"}"#,
        r#"{"API_KEY":"audit-apikey-22b8","SIGNING":"audit-signing-5d0f"}"#,
    ];
    let db = moto.create_secret("us-east-1", "audit/db", values[0]);
    let app = moto.create_secret("us-east-1", "audit/app", values[1]);
    let parameter = moto.put_parameter(
        "us-east-1",
        "/audit/token",
        "SecureString",
        "audit-param-61aa",
    );
    let out = ram_dir();
    let secrets = json!([
        {"name": "db", "arn": db, "key": "password"},
        {"name": "dbenv", "arn": db, "format": "json", "env": "DB_USER=user"},
        {"name": "app", "arn": app, "format": "env"},
        {"name": "cfg", "arn": app, "format": "split", "file": "cfg"},
        {"name": "token", "arn": parameter},
    ])
    .to_string();
    let sidecar = Sidecar::start(
        &moto.endpoint(),
        out.path(),
        &[("SECRET_INJECT_SECRETS", &secrets), ("RUST_LOG", "trace")],
    );
    let mut sidecar = sidecar;
    eventually(Duration::from_secs(20), "first write", || {
        assert!(sidecar.running(), "the sidecar exited:\n{}", sidecar.log());
        read(&out.path().join("db")).as_deref() == Some("audit-pw-9c1e-old")
    });
    moto.rotate(
        &db,
        r#"{"user":"audit-user-7f3a","password":"audit-pw-4b2d-new"}"#,
        &token(1),
    );
    eventually(Duration::from_secs(15), "rotated", || {
        read(&out.path().join("db")).as_deref() == Some("audit-pw-4b2d-new")
    });
    assert_eq!(
        read(&out.path().join("token")).as_deref(),
        Some("audit-param-61aa")
    );
    std::thread::sleep(Duration::from_millis(1200));
    let termination = read(&sidecar.termination).unwrap_or_default();
    let log = sidecar.log();
    assert_eq!(sidecar.stop(), Some(0));
    assert!(log.lines().count() > 100, "trace logging is not on:\n{log}");
    for needle in [
        "audit-user-7f3a",
        "audit-pw-9c1e-old",
        "audit-pw-4b2d-new",
        "audit-apikey-22b8",
        "audit-signing-5d0f",
        "audit-param-61aa",
        "test-secret-key",
    ] {
        assert!(!log.contains(needle), "{needle} leaked into the log");
        assert!(
            !termination.contains(needle),
            "{needle} leaked into the termination log"
        );
    }
}
