//! What an init container costs a pod's start on the real node (issue 20, scenario 1's bench):
//! `kubectl create` → Running for three variants of the same pod, one pod at a time, the variants
//! interleaved (the order rotated every round) so that a drift of the machine hits all alike:
//!
//! - `a` no init container: the app (`busybox sleep 3600`) alone;
//! - `b` a no-op init container (busybox `true`): the floor, what any init container costs;
//! - `c` ours: the pod annotated for the chart's webhook (running as the chart's pods on the
//!   node), the agent fetching one secret from moto with the kubelet-projected IRSA token.
//!
//! All three run under the same ServiceAccount in the same namespace, so all get the IRSA
//! stand-in's env and token volume; the chart's `matchConditions` keep unannotated pods away from
//! our webhook. What differs is only what the annotation brings: the admission call, the patch,
//! the init container and its STS + Secrets Manager calls.
//!
//! Timing: the client's monotonic clock, from just before `kubectl create` until a watch
//! (`kubectl get pods --watch -o json`, one process started before the first pod) delivers the
//! pod with `status.phase: Running`, and with the `Ready` condition `True`. The API server's own
//! timestamps (`creationTimestamp`, conditions, `startedAt`) have 1 s resolution, too coarse for
//! differences of a few hundred milliseconds; the watch's delivery delay is milliseconds and the
//! same for every variant. Each pod is deleted (and gone) before the next is created.
//!
//! Modes: `cargo bench --bench node_pod_start` (cargo passes `--bench`) measures `PODS` pods per
//! variant (default 20) after one unreported warm-up pod each, prints a table and writes
//! `bench/results/node-pod-start.json` (or `$RESULTS`); in `cargo test --all-targets` (no
//! `--bench`) it is a smoke test: one pod per variant, each checked, no warm-up, no file.
//! Every pod is checked in both modes: Running, init containers exited 0, the injected one named
//! `secrets-init-container`; the first pod of ours also shows the secret in `kubectl exec cat`.
//! Targets are reported (PASS/MISS), not enforced. `bench/node-pod-start.sh` wraps it.

use std::io::{BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::controlplane::{ControlPlane, Namespaces};
use common::irsa_webhook::IrsaWebhook;
use common::moto::Moto;
use common::node::{self, NODE_IP, install_chart, register_irsa};
use common::{repo_root, tool};

/// Liveness bound for one pod to run or be gone: 10× what it takes on a loaded machine.
const POD_DEADLINE: Duration = Duration::from_secs(120);
/// Our overhead over (a) may be at most this multiple of the no-op's.
const TARGET_RATIO: f64 = 1.2;
const SERVICE_ACCOUNT: &str = "bench";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/bench-secrets-role";
const SECRET: &str = r#"{"username":"admin","password":"bench-P@ss","engine":"mysql"}"#;

#[derive(Clone, Copy)]
struct Variant {
    key: &'static str,
    what: &'static str,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        key: "a",
        what: "no init container",
    },
    Variant {
        key: "b",
        what: "no-op init container (busybox true)",
    },
    Variant {
        key: "c",
        what: "ours (webhook + agent, 1 secret, IRSA)",
    },
];

/// One measured pod.
struct Sample {
    /// `kubectl create` returned (admission included), ms after it was started.
    created_ms: f64,
    /// The watch delivered `phase: Running`, ms after `kubectl create` was started.
    running_ms: f64,
    /// The watch delivered the `Ready` condition `True`.
    ready_ms: f64,
    /// The API server's view, 1 s resolution: Ready's lastTransitionTime − creationTimestamp.
    server_ready_s: i64,
}

/// Pod events from one `kubectl get pods --watch -o json`, each with the instant it arrived.
struct Watch {
    child: std::process::Child,
    events: mpsc::Receiver<(Instant, Value)>,
}

impl Watch {
    fn start(plane: &ControlPlane, namespace: &str) -> Watch {
        let mut child = Command::new(tool("kubectl"))
            .env("KUBECONFIG", &plane.kubeconfig)
            .args(["get", "pods", "-n", namespace, "-l", "bench=node-pod-start"])
            .args(["--watch", "-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kubectl get pods --watch");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            // kubectl writes one JSON object per change, one after the other.
            for value in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
                let Ok(value) = value else { break };
                if sender.send((Instant::now(), value)).is_err() {
                    break;
                }
            }
        });
        Watch { child, events }
    }

    /// The next event for pod `name`, or panic after `deadline`.
    fn next(&self, name: &str, deadline: Instant, what: &str) -> (Instant, Value) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((at, pod)) if pod["metadata"]["name"] == name => return (at, pod),
                Ok(_) => {}
                Err(e) => panic!("no watch event for {what} of pod {name} ({e})"),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(variant: &str, name: &str, busybox: &str, arn: &str) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "node-pod-start", "variant": variant}},
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": busybox, "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}]
        }
    });
    match variant {
        "a" => {}
        "b" => {
            pod["spec"]["initContainers"] = json!([{"name": "noop", "image": busybox,
                "imagePullPolicy": "IfNotPresent", "command": ["true"]}]);
        }
        "c" => {
            pod["metadata"]["annotations"] = json!({
                "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
                "secrets.k8s.aws/secret-arn": arn,
            });
        }
        _ => unreachable!(),
    }
    pod
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// "2026-12-03T20:01:02Z" as seconds: only differences within seconds of each other are taken
/// (the date as a number keeps a midnight between them right, a month's end not).
fn rfc3339_seconds(value: &Value) -> i64 {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("no timestamp: {value}"));
    let (date, time) = s.split_once('T').unwrap();
    let day: i64 = date.replace('-', "").parse().unwrap();
    let t: Vec<i64> = time
        .trim_end_matches('Z')
        .split(':')
        .map(|p| p.parse().unwrap())
        .collect();
    day * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]
}

/// Every pod is checked: a broken set-up must not pass as a fast one.
fn check(variant: &str, pod: &Value) {
    let inits = pod["status"]["initContainerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let want = match variant {
        "a" => None,
        "b" => Some("noop"),
        _ => Some("secrets-init-container"),
    };
    match want {
        None => assert!(inits.is_empty(), "variant a has init containers: {pod}"),
        Some(name) => {
            assert_eq!(
                inits.len(),
                1,
                "variant {variant}: one init container: {pod}"
            );
            assert_eq!(inits[0]["name"], name, "variant {variant}: {pod}");
            assert_eq!(
                inits[0]["state"]["terminated"]["exitCode"], 0,
                "variant {variant}: the init container exited 0: {pod}"
            );
        }
    }
}

fn measure(plane: &ControlPlane, ns: &str, watch: &Watch, variant: &str, spec: &Value) -> Sample {
    let name = spec["metadata"]["name"].as_str().unwrap().to_owned();
    let body = serde_json::to_vec(spec).unwrap();
    let start = Instant::now();
    let mut create = Command::new(tool("kubectl"))
        .env("KUBECONFIG", &plane.kubeconfig)
        .args(["create", "-n", ns, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubectl create");
    create.stdin.take().unwrap().write_all(&body).unwrap();
    let output = create.wait_with_output().unwrap();
    let created = Instant::now();
    assert!(
        output.status.success(),
        "kubectl create {name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = start + POD_DEADLINE;
    let (mut running, mut ready_at) = (None, None);
    let mut last;
    loop {
        let (at, pod) = watch.next(&name, deadline, "Running and Ready");
        last = pod;
        let phase = last["status"]["phase"].as_str().unwrap_or("");
        assert!(
            phase != "Failed" && phase != "Succeeded",
            "pod {name} ended ({phase}): {last}"
        );
        for status in last["status"]["initContainerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let code = &status["state"]["terminated"]["exitCode"];
            assert!(
                code.is_null() || *code == 0,
                "pod {name}: init container failed: {last}"
            );
        }
        if phase == "Running" && running.is_none() {
            running = Some(at);
        }
        if ready(&last) && ready_at.is_none() {
            ready_at = Some(at);
        }
        if running.is_some() && ready_at.is_some() {
            break;
        }
    }
    check(variant, &last);
    let condition = |t: &str| {
        last["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == t))
            .map(|c| c["lastTransitionTime"].clone())
            .unwrap_or_default()
    };
    let server_ready_s = rfc3339_seconds(&condition("Ready"))
        - rfc3339_seconds(&last["metadata"]["creationTimestamp"]);
    let ms = |t: Instant| (t - start).as_secs_f64() * 1000.0;
    Sample {
        created_ms: ms(created),
        running_ms: ms(running.unwrap()),
        ready_ms: ms(ready_at.unwrap()),
        server_ready_s,
    }
}

fn delete(plane: &ControlPlane, ns: &str, name: &str) {
    plane.kubectl_ok(&[
        "delete",
        "pod",
        name,
        "-n",
        ns,
        "--grace-period=1",
        "--wait=true",
        "--timeout=120s",
    ]);
}

/// Nearest-rank percentile.
fn pct(values: &[f64], p: f64) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    s[((p / 100.0 * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let number = |var: &str, default: usize| {
        std::env::var(var).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{var} must be a whole number, got {v:?}"))
        })
    };
    let (pods, warmup) = if full {
        (number("PODS", 20), number("WARMUP", 1))
    } else {
        (1, 0)
    };
    assert!(pods >= 1, "PODS must be at least 1");

    let started = Instant::now();
    let node = node::shared();
    let node_ready = started.elapsed();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let arn = moto.create_secret("us-east-1", "bench-db", SECRET);
    let ns = Namespaces::on(plane, "node-bench", &[]);
    install_chart(&ns, &moto, &[]);
    let irsa = IrsaWebhook::start(SERVICE_ACCOUNT, ROLE_ARN);
    register_irsa(&ns, &irsa);
    plane.kubectl_ok(&["create", "serviceaccount", SERVICE_ACCOUNT, "-n", &ns.app]);
    let setup = started.elapsed() - node_ready;

    let watch = Watch::start(plane, &ns.app);
    let busybox = &node.images.busybox;
    let mut samples: Vec<Vec<Sample>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    let load_before = loadavg();
    let measuring = Instant::now();
    let mut checked_secret = false;
    for round in 0..warmup + pods {
        for k in 0..VARIANTS.len() {
            // Rotate the order every round: a, b, c; b, c, a; c, a, b; ...
            let index = (k + round) % VARIANTS.len();
            let variant = VARIANTS[index].key;
            let name = format!("{variant}-{round}");
            let spec = pod(variant, &name, busybox, &arn);
            let sample = measure(plane, &ns.app, &watch, variant, &spec);
            if variant == "c" && !checked_secret {
                // The agent really wrote the secret where the app reads it.
                let got = plane.kubectl_ok(&[
                    "exec",
                    "-n",
                    &ns.app,
                    &name,
                    "-c",
                    "app",
                    "--",
                    "cat",
                    "/tmp/secret",
                ]);
                assert_eq!(got, SECRET, "the secret in pod {name}");
                checked_secret = true;
            }
            delete(plane, &ns.app, &name);
            if round >= warmup {
                samples[index].push(sample);
            } else {
                eprintln!(
                    "warm-up {name}: Running after {:.0} ms (not reported)",
                    sample.running_ms
                );
            }
        }
    }
    let measured = measuring.elapsed();
    let load_after = loadavg();
    drop(watch);

    // --- report ---
    let stat = |v: &Variant, f: fn(&Sample) -> f64| -> Vec<f64> {
        let i = VARIANTS.iter().position(|x| x.key == v.key).unwrap();
        samples[i].iter().map(f).collect()
    };
    println!();
    println!(
        "pod start on the real node: kubectl create -> Running (watch, client clock), {pods} pod(s) \
         per variant, one at a time, interleaved{}",
        if warmup > 0 {
            format!(", after {warmup} warm-up pod(s) each")
        } else {
            String::new()
        }
    );
    println!(
        "{:<44} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>8} | {:>9}",
        "variant", "create", "Running", "p90", "min", "max", "Ready", "server s"
    );
    println!("{}", "-".repeat(44 + 7 * 11 + 12));
    let mut rows = Vec::new();
    for v in &VARIANTS {
        let created = stat(v, |s| s.created_ms);
        let running = stat(v, |s| s.running_ms);
        let ready_ms = stat(v, |s| s.ready_ms);
        let server = stat(v, |s| s.server_ready_s as f64);
        let row = json!({
            "variant": v.key, "what": v.what,
            "create_ms_median": median(&created),
            "running_ms": {"median": median(&running), "p90": pct(&running, 90.0),
                           "min": pct(&running, 0.0), "max": pct(&running, 100.0)},
            "ready_ms": {"median": median(&ready_ms), "p90": pct(&ready_ms, 90.0)},
            "server_ready_s_median": median(&server),
            "samples": {"create_ms": created, "running_ms": running, "ready_ms": ready_ms,
                        "server_ready_s": server},
        });
        println!(
            "{:<44} | {:>5.0} ms | {:>5.0} ms | {:>5.0} ms | {:>5.0} ms | {:>5.0} ms | {:>5.0} ms | {:>7.1} s",
            format!("{} {}", v.key, v.what),
            median(&created),
            median(&running),
            pct(&running, 90.0),
            pct(&running, 0.0),
            pct(&running, 100.0),
            median(&ready_ms),
            median(&server),
        );
        rows.push(row);
    }
    let at = |i: usize, what: &str, p: &str| rows[i][what][p].as_f64().unwrap();
    let mut targets = Vec::new();
    println!();
    println!("overhead over (a), Running:");
    for p in ["median", "p90"] {
        let (b, c) = (
            at(1, "running_ms", p) - at(0, "running_ms", p),
            at(2, "running_ms", p) - at(0, "running_ms", p),
        );
        let ratio = c / b;
        let pass = c <= TARGET_RATIO * b;
        println!(
            "  {p:<6}  no-op {b:>6.0} ms   ours {c:>6.0} ms   ours/no-op {ratio:>5.2}   {}  (target <= {TARGET_RATIO})",
            if pass { "PASS" } else { "MISS" }
        );
        targets.push(
            json!({"statistic": p, "noop_overhead_ms": b, "ours_overhead_ms": c,
                            "ratio": ratio, "target": TARGET_RATIO,
                            "result": if pass { "PASS" } else { "MISS" }}),
        );
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "node Ready in {node_ready:.1?} (with any wait for another run's node), set-up (moto, chart, IRSA) {setup:.1?}, {} pods in {measured:.1?}; \
         load average {load_before} before, {load_after} after ({cpus} CPUs)",
        (warmup + pods) * VARIANTS.len()
    );
    if !full {
        println!(
            "smoke run (cargo test): one pod per variant checks the set-up, it measures nothing"
        );
    }
    println!(
        "notes: 'create' is kubectl create returning (process start and admission included); Running \
         and Ready are when the watch saw them; 'server s' is Ready's lastTransitionTime minus \
         creationTimestamp (1 s resolution). The node, its control plane, moto and this program \
         share this machine's cores."
    );

    if full {
        let results = std::env::var("RESULTS").map_or_else(
            |_| repo_root().join("bench/results/node-pod-start.json"),
            std::path::PathBuf::from,
        );
        let report = json!({
            "benchmark": "benches/node_pod_start.rs",
            "pods_per_variant": pods, "warmup_per_variant": warmup, "cpus": cpus,
            "loadavg_before": load_before, "loadavg_after": load_after,
            "node_ready_s": node_ready.as_secs_f64(), "setup_s": setup.as_secs_f64(),
            "measured_s": measured.as_secs_f64(),
            "variants": rows, "targets": targets,
        });
        if let Some(dir) = results.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(
            &results,
            serde_json::to_string_pretty(&report).unwrap() + "\n",
        )
        .unwrap();
        println!("results written to {}", results.display());
    }
    drop(irsa);
    drop(ns);
}
