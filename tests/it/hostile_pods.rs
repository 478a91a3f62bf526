//! Hostile pods against the real webhook binary (issue 17): a mutating webhook sees a pod before
//! the API server validates it, so a review can carry megabytes of annotations, tens of thousands
//! of env bindings or a thousand containers. Each must be answered quickly, with a denial that
//! names the limit, and the webhook's peak RSS must stay under the chart's 128 MiB memory limit.
//! Loopback only.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::webhook::{Client, Webhook, connect, free_ports};
use crate::common::{self};

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";
const SERVICE_DNS: &str = "secret-inject.testns.svc";
/// The chart's memory limit of the webhook container.
const MEMORY_LIMIT_KIB: u64 = 128 * 1024;
/// How long one review of a hostile pod may take. The debug build answers each of these in well
/// under half a second on a shared 2-core machine (release: milliseconds); ten times that is
/// generous and still far below the API server's webhook timeout (10 s by default).
const REVIEW_DEADLINE: Duration = Duration::from_secs(5);

/// The webhook with `extra` flags, started with the environment stated here.
fn start(extra: &[&str]) -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let (port, admin_port) = free_ports();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_secret-inject"));
    command
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(["--log-format", "json", "--log-level", "info", "webhook"])
        .args(["--bind-address", "127.0.0.1", "--port", &port.to_string()])
        .args(["--admin-port", &admin_port.to_string()])
        .args(["--namespace", "testns", "--service-name", "secret-inject"])
        .args(["--env-files", "on", "--native-sidecars", "always"])
        .arg("--dev-tls")
        .arg("--write-ca")
        .arg(&ca)
        .args(extra);
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    Webhook::from_command(command, dir, loopback(port), loopback(admin_port))
}

/// Peak resident memory of the process, from `/proc/PID/status`.
fn peak_rss_kib(server: &Webhook) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

fn pod(annotations: Value, containers: Vec<Value>) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hostile", "namespace": "testns", "annotations": annotations},
        "spec": {"containers": containers},
    })
}

fn containers(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"name": format!("c{i}"), "image": "busybox"}))
        .collect()
}

/// `count` env bindings `V<i>=k` (25,000 of them: 222 KB, as in the finding).
fn bindings(count: usize) -> String {
    (0..count)
        .map(|i| format!("V{i}=k"))
        .collect::<Vec<_>>()
        .join(",")
}

/// 3 MiB of annotations besides the opt-in.
fn huge_annotations() -> Value {
    let mut annotations = json!({"secrets.k8s.aws/secret-arn": ARN});
    for i in 0..3 {
        annotations[format!("example.com/blob-{i}")] = json!("x".repeat(1024 * 1024));
    }
    pod(annotations, containers(1))
}

fn many_bindings(count: usize, containers_: usize) -> Value {
    pod(
        json!({"secrets.k8s.aws/secret-arn": ARN, "secrets.k8s.aws/env": bindings(count)}),
        containers(containers_),
    )
}

fn many_containers(count: usize) -> Value {
    pod(
        json!({"secrets.k8s.aws/secret-arn": ARN}),
        containers(count),
    )
}

/// Review `pod` and return the response and how long it took; the uid is kept and the body is
/// an AdmissionReview.
async fn review(server: &Webhook, label: &str, pod: &Value) -> (Value, Duration, usize) {
    let body = serde_json::to_vec(&common::admission_review(pod, label)).unwrap();
    let request_bytes = body.len();
    let stream = connect(server.webhook, &server.ca_path(), SERVICE_DNS, &[b"h2"])
        .await
        .unwrap();
    let mut client = Client::new(stream).await;
    let started = Instant::now();
    let (status, answer) = client.post("/mutating-pods", body).await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, 200, "{label}: {}", String::from_utf8_lossy(&answer));
    let answer_bytes = answer.len();
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["response"]["uid"], label);
    eprintln!(
        "{label}: request {request_bytes} bytes, answered in {took:?} with {answer_bytes} bytes"
    );
    assert!(
        took < REVIEW_DEADLINE,
        "{label}: {took:?}, more than {REVIEW_DEADLINE:?}"
    );
    (answer, took, answer_bytes)
}

/// The response denies, naming `flag`.
fn assert_denied(label: &str, answer: &Value, flag: &str) {
    assert_eq!(answer["response"]["allowed"], false, "{label}: {answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("--{flag}")),
        "{label}: the denial must name --{flag}: {message}"
    );
    assert!(message.len() < 1024, "{label}: {} bytes", message.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_pods_are_denied_quickly_naming_the_limit_within_the_memory_limit() {
    let server = start(&[]);
    let (answer, _, _) = review(&server, "annotations-3mib", &huge_annotations()).await;
    assert_denied("annotations-3mib", &answer, "max-annotation-bytes");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.starts_with("metadata.annotations: "), "{message}");

    // 100,000 bindings are more than 256 KiB of annotations.
    let (answer, _, _) = review(&server, "bindings-100000", &many_bindings(100_000, 1)).await;
    assert_denied("bindings-100000", &answer, "max-annotation-bytes");

    // The reproduced finding: 25,000 bindings in 40 containers, a pod of about 216 KB that
    // produced a 146 MB response.
    let (answer, _, bytes) = review(&server, "bindings-25000x40", &many_bindings(25_000, 40)).await;
    assert_denied("bindings-25000x40", &answer, "max-env-bindings");
    assert!(bytes < 4096, "{bytes}");

    let (answer, _, _) = review(&server, "containers-1000", &many_containers(1000)).await;
    assert_denied("containers-1000", &answer, "max-containers");

    // A pod that does not opt in is not ours to limit: allowed unchanged.
    let mut plain = huge_annotations();
    plain["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("secrets.k8s.aws/secret-arn");
    let (answer, _, _) = review(&server, "plain-3mib", &plain).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());

    let peak = peak_rss_kib(&server);
    eprintln!("peak RSS {peak} KiB");
    assert!(
        peak < MEMORY_LIMIT_KIB,
        "peak RSS {peak} KiB, the chart's limit is {MEMORY_LIMIT_KIB} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_counting_limits_raised_the_patch_bound_still_holds() {
    // Annotations, bindings and containers let through: what stops these pods (or bounds their
    // answer) is the patch, measured before it is built.
    let server = start(&[
        "--max-annotation-bytes",
        "4194304",
        "--max-env-bindings",
        "1000000",
        "--max-containers",
        "100000",
    ]);
    let (answer, _, bytes) = review(&server, "bindings-25000x40", &many_bindings(25_000, 40)).await;
    assert_denied("bindings-25000x40", &answer, "max-patch-bytes");
    assert!(bytes < 4096, "{bytes}");
    let (answer, _, _) = review(&server, "bindings-100000", &many_bindings(100_000, 1)).await;
    assert_denied("bindings-100000", &answer, "max-patch-bytes");

    // 1,000 containers without env vars: injected, a patch linear in the pod.
    let (answer, _, bytes) = review(&server, "containers-1000", &many_containers(1000)).await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let patch = common::webhook::decode_patch(&answer).unwrap();
    let mounts = patch
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["path"].as_str().unwrap().ends_with("/volumeMounts"))
        .count();
    assert_eq!(mounts, 1000);
    // The default --max-patch-bytes (1 MiB), base64 in the answer.
    assert!(bytes < 1024 * 1024 * 4 / 3 + 64 * 1024, "{bytes}");

    // The bindings are still counted, before anything is parsed.
    let tight = start(&["--max-env-bindings", "3"]);
    let (answer, _, _) = review(&tight, "bindings-4", &many_bindings(4, 1)).await;
    assert_denied("bindings-4", &answer, "max-env-bindings");

    let peak = peak_rss_kib(&server);
    eprintln!("peak RSS {peak} KiB");
    assert!(
        peak < MEMORY_LIMIT_KIB,
        "peak RSS {peak} KiB, the chart's limit is {MEMORY_LIMIT_KIB} KiB"
    );
}

#[test]
fn inject_applies_the_same_limits_through_the_same_flags() {
    let manifest = serde_json::to_vec(&many_bindings(4, 2)).unwrap();
    let output = common::secret_inject(
        &["inject", "-f", "-", "--max-env-bindings", "3"],
        Some(&manifest),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("4 env bindings, more than the limit of 3 (webhook flag --max-env-bindings"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    // The environment variable sets it too; at the limit the pod is injected.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SECRET_INJECT_MAX_ENV_BINDINGS", "4")
        .args(["inject", "-f", "-", "--kubernetes-version", "1.35"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(&manifest)?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("fileKeyRef"));
}
