//! Rotation and Jobs on the real node (`common::node`), issue 20's scenarios 4 and 5: a new
//! version in moto reaches a running pod's file at the rotation sidecar's first check after it,
//! the `reload-signal` reaches the app's process, `restart-on-change` restarts the pod's
//! containers in place (the kubelet's `RestartAllContainers` rule) and they read the new value
//! from our env file; a Job's pod completes beside the native sidecar, and classic sidecars keep
//! rotation away from Jobs.
//!
//! The rotation sidecars check at the webhook's shortest interval (30 s), so each rotation test
//! waits about half a minute for the change; deadlines are liveness only (about ten times that).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::common::controlplane::{ControlPlane, Namespaces};
use crate::common::moto::Moto;
use crate::common::node::{
    self, NODE_IP, POD_START, create_ok, exec, install_chart, irsa_service_account, phase,
    wait_pods,
};

/// The rotation interval of the scenarios: the shortest the webhook admits.
const INTERVAL: Duration = Duration::from_secs(30);
/// Generous liveness bound for a rotation to reach a pod: ten times interval plus jitter.
const ROTATION: Duration = Duration::from_secs(330);
/// Where the scenarios mount the secret volume.
const MOUNT: &str = "/var/run/secrets/app";
/// The injected container's name.
const AGENT: &str = "secrets-init-container";

/// A busybox pod of the scenarios: `app` runs `script` as nobody (the agent then runs as the same
/// user, so it may signal the app), ends at once on SIGTERM.
fn busybox_pod(name: &str, account: &str, annotations: Value, script: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"scenario": name}, "annotations": annotations},
        "spec": {
            "serviceAccountName": account,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {"runAsUser": 65534, "runAsGroup": 65534},
            "containers": [{
                "name": "app", "image": node::shared().images.busybox,
                "command": ["sh", "-c", script],
            }]
        }
    })
}

/// The status of container `name` among `field` (`containerStatuses`, `initContainerStatuses`).
fn status<'a>(pod: &'a Value, field: &str, name: &str) -> &'a Value {
    pod["status"][field]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

fn restarts(pod: &Value, field: &str, name: &str) -> u64 {
    status(pod, field, name)["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

fn ready(pod: &Value) -> bool {
    phase(pod) == "Running" && status(pod, "containerStatuses", "app")["ready"] == true
}

/// A file of the app container, if `kubectl exec` could read it.
fn read(plane: &ControlPlane, namespace: &str, pod: &str, path: &str) -> Option<String> {
    let output = plane.kubectl(&["exec", "-n", namespace, pod, "-c", "app", "--", "cat", path]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp (`2026-12-03T20:01:22.123456Z`,
/// as the agent's JSON log writes them).
fn unix_seconds(timestamp: &str) -> f64 {
    let parse = |range: std::ops::Range<usize>| -> i64 {
        timestamp
            .get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 UTC timestamp: {timestamp:?}"))
    };
    let (year, month, day) = (parse(0..4), parse(5..7), parse(8..10));
    let (hour, minute) = (parse(11..13), parse(14..16));
    let seconds: f64 = timestamp[17..timestamp.len() - 1].parse().unwrap();
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86_400 + hour * 3_600 + minute * 60) as f64 + seconds
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The agent's JSON log lines with `message` among `messages`: (time, line).
fn agent_lines(log: &str, messages: &[&str]) -> Vec<(f64, Value)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| messages.iter().any(|m| l["message"] == *m))
        .map(|l| (unix_seconds(l["timestamp"].as_str().unwrap()), l))
        .collect()
}

/// Scenario 4: one rotation in moto reaches two running pods. The first keeps its app running
/// and has it signalled: its file changes at the sidecar's first check after the rotation (the
/// checks one interval ± 10 % apart), and the app's `sh`, which traps HUP, prints the new file.
/// The second restarts its containers in place, and its app's env var, which the kubelet read
/// from our env file, holds the new value.
#[test]
fn a_rotation_reaches_the_running_pods_file_signals_the_app_and_restarts_containers_in_place() {
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let old = r#"{"username":"app","password":"first-password"}"#;
    let new = r#"{"username":"app","password":"second-password"}"#;
    let arn = moto.create_secret("us-east-1", "rotating/db", old);
    let ns = Namespaces::on(plane, "node-rotate", &[]);
    // The agent's own debug lines say when each check found nothing new.
    install_chart(
        &ns,
        &moto,
        &["--set", "sidecar.logLevel=secret_inject=debug"],
    );
    let irsa = irsa_service_account(
        &ns,
        "rotating-app",
        "arn:aws:iam::123456789012:role/rotating-app",
    );

    let rotating = |extra: Value| {
        let mut annotations = json!({
            "secrets.k8s.aws/secret-arn.db": arn,
            "secrets.k8s.aws/mount-path": MOUNT,
            "secrets.k8s.aws/refresh-interval": "30s",
        });
        annotations
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        annotations
    };
    // The app is `sh` (its /proc/PID/comm); the trap runs between two `sleep 1`.
    let reload = busybox_pod(
        "reload",
        "rotating-app",
        rotating(json!({
            "secrets.k8s.aws/reload-signal": "HUP",
            "secrets.k8s.aws/reload-process": "sh",
        })),
        &format!(
            "trap 'echo \"reloaded $(cat {MOUNT}/db)\"' HUP; trap 'exit 0' TERM; echo started; \
             while true; do sleep 1; done"
        ),
    );
    let restart = busybox_pod(
        "restart",
        "rotating-app",
        rotating(json!({
            "secrets.k8s.aws/env.db": "DB_PASSWORD=password",
            "secrets.k8s.aws/restart-on-change": "true",
        })),
        "trap 'exit 0' TERM; while true; do sleep 1; done",
    );
    create_ok(plane, &ns.app, &reload);
    create_ok(plane, &ns.app, &restart);
    let pods = wait_pods(
        plane,
        &ns.app,
        "scenario in (reload, restart)",
        "both pods ready",
        POD_START,
        |pods| pods.len() == 2 && pods.iter().all(ready),
    );
    let restart_uid = pods
        .iter()
        .find(|p| p["metadata"]["name"] == "restart")
        .unwrap()["metadata"]["uid"]
        .clone();
    for pod in &pods {
        let name = &pod["metadata"]["name"];
        // The agent is a native sidecar, running beside the app.
        let agent = status(pod, "initContainerStatuses", AGENT);
        assert!(agent["state"]["running"].is_object(), "{name}: {agent}");
        assert_eq!(agent["restartCount"], 0, "{name}: {agent}");
        assert_eq!(restarts(pod, "containerStatuses", "app"), 0, "{name}");
    }
    // What the webhook added for the signal.
    let stored = plane.get_json(&["pod", "reload", "-n", &ns.app]);
    assert_eq!(stored["spec"]["shareProcessNamespace"], true);
    assert_eq!(
        read(plane, &ns.app, "reload", &format!("{MOUNT}/db")).as_deref(),
        Some(old)
    );
    assert_eq!(
        exec(
            plane,
            &ns.app,
            "restart",
            "app",
            &["printenv", "DB_PASSWORD"]
        )
        .trim(),
        "first-password"
    );

    // One rotation; both sidecars check every 30 s ± 10 %.
    let before = now();
    moto.rotate(&arn, new, "00000000-0000-4000-8000-000000000002");
    let rotated = now();
    let file = format!("{MOUNT}/db");
    plane.wait_for("the new value in the running pod's file", ROTATION, || {
        read(plane, &ns.app, "reload", &file).as_deref() == Some(new)
    });
    let reached = now() - before;
    // The app's trap ran after the new file was in place.
    let mut app_log = String::new();
    plane.wait_for("the app's reload line", ROTATION, || {
        app_log = plane.kubectl_ok(&["logs", "-n", &ns.app, "reload", "-c", "app"]);
        app_log.contains("reloaded")
    });
    assert_eq!(
        app_log.lines().collect::<Vec<_>>(),
        ["started", &format!("reloaded {new}")],
        "one HUP, after the change"
    );
    let agent_log = plane.kubectl_ok(&["logs", "-n", &ns.app, "reload", "-c", AGENT]);
    assert!(
        !agent_log.contains("second-password") && !agent_log.contains("first-password"),
        "a value in the agent's log:\n{agent_log}"
    );
    let signalled = agent_lines(&agent_log, &["signalled"]);
    // (A `sh` forked by the app's loop and not yet turned into `sleep` may get one too.)
    assert_eq!(signalled.len(), 1, "one change, one signal: {agent_log}");
    assert!(signalled[0].1["count"].as_u64() >= Some(1), "{agent_log}");
    // The checks: interval ± 10 % apart, and the first one after the rotation found it. A
    // check that read the old version just before the rotation ended logs a moment later (1 s
    // allowed); an interval plus jitter (and one call) separates it from the next.
    let checks = agent_lines(&agent_log, &["no secret changed", "secret changed"]);
    let changed = checks
        .iter()
        .position(|(_, l)| l["message"] == "secret changed")
        .unwrap_or_else(|| panic!("no change logged:\n{agent_log}"));
    let (changed_at, change) = &checks[changed];
    assert_eq!(change["secret"], arn, "{change}");
    assert!(
        *changed_at > before,
        "changed before the rotation:\n{agent_log}"
    );
    let missed: Vec<_> = checks[..changed]
        .iter()
        .filter(|(at, _)| *at > rotated + 1.0)
        .collect();
    assert!(
        missed.is_empty(),
        "checks after the rotation that did not see it: {missed:?}\n{agent_log}"
    );
    let jittered = INTERVAL.as_secs_f64() * 1.1;
    for pair in checks.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        // Each gap: the sleep (interval ± 10 %) and the next check's calls (one attempt
        // timeout at most, 10 s, without retries).
        assert!(
            gap >= INTERVAL.as_secs_f64() * 0.9 && gap <= jittered + 10.0,
            "checks {gap:.1} s apart, not 30 s ± 10 %:\n{agent_log}"
        );
    }
    eprintln!(
        "rotation: change logged {:.1} s after it, seen in the file {reached:.1} s after it",
        changed_at - rotated
    );

    // restart-on-change: the sidecar exits with 42 after the write and the kubelet restarts the
    // pod's containers in place (same pod); the app reads the new env file.
    let pods = wait_pods(
        plane,
        &ns.app,
        "scenario=restart",
        "the restart pod's app restarted and ready",
        ROTATION,
        |pods| restarts(&pods[0], "containerStatuses", "app") >= 1 && ready(&pods[0]),
    );
    let pod = &pods[0];
    assert_eq!(pod["metadata"]["uid"], restart_uid, "restarted in place");
    assert_eq!(restarts(pod, "containerStatuses", "app"), 1, "{pod}");
    let agent = status(pod, "initContainerStatuses", AGENT);
    assert_eq!(agent["restartCount"], 1, "{agent}");
    // The kubelet removes every container, the sidecar that exited with 42 too, and says so.
    for (name, container) in [
        (AGENT, agent),
        ("app", status(pod, "containerStatuses", "app")),
    ] {
        assert_eq!(
            container["lastState"]["terminated"]["reason"], "RestartingAllContainers",
            "{name}: {container}"
        );
    }
    assert!(agent["state"]["running"].is_object(), "{agent}");
    assert_eq!(
        exec(
            plane,
            &ns.app,
            "restart",
            "app",
            &["printenv", "DB_PASSWORD"]
        )
        .trim(),
        "second-password"
    );
    assert_eq!(
        read(plane, &ns.app, "restart", &format!("{MOUNT}/db")).as_deref(),
        Some(new)
    );
    // The restarted sidecar found the new set in place: it does not write or exit again.
    let agent_log = plane.kubectl_ok(&["logs", "-n", &ns.app, "restart", "-c", AGENT]);
    assert!(
        agent_log.contains("the files in place are current"),
        "{agent_log}"
    );
    drop(irsa);
}

/// A Job, `restartPolicy: Never`, its app printing the secret.
fn job(name: &str, account: &str, arn: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"scenario": name}, "annotations": {
                    "secrets.k8s.aws/secret-arn": arn,
                    "secrets.k8s.aws/mount-path": MOUNT,
                    "secrets.k8s.aws/refresh-interval": "30s",
                }},
                "spec": {
                    "serviceAccountName": account,
                    "restartPolicy": "Never",
                    "securityContext": {"runAsUser": 65534, "runAsGroup": 65534},
                    "containers": [{
                        "name": "app", "image": node::shared().images.busybox,
                        "command": ["cat", format!("{MOUNT}/secret")],
                    }]
                }
            }
        }
    })
}

/// Scenario 5: a Job with the native sidecar completes (the sidecar ends on the kubelet's
/// SIGTERM once the app is done, exit code 0); with classic sidecars (`webhook.nativeSidecars:
/// never`), the Job's pod is denied at admission, our message naming the annotation in the
/// Job's events and in `kubectl create` of its pod.
#[test]
fn a_job_completes_beside_the_native_sidecar_and_classic_sidecars_deny_its_pod() {
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let arn = moto.create_secret("us-east-1", "batch/token", "batch-token-value");
    let ns = Namespaces::on(plane, "node-jobs", &[]);
    install_chart(&ns, &moto, &[]);
    let irsa = irsa_service_account(&ns, "batch", "arn:aws:iam::123456789012:role/batch");

    create_ok(plane, &ns.app, &job("native", "batch", &arn));
    plane.wait_for("the Job to succeed", POD_START, || {
        let job = plane.get_json(&["job", "native", "-n", &ns.app]);
        assert_eq!(job["status"]["failed"].as_u64().unwrap_or(0), 0, "{job}");
        job["status"]["succeeded"] == 1
    });
    let pods = wait_pods(
        plane,
        &ns.app,
        "scenario=native",
        "the Job's pod to end",
        POD_START,
        |pods| status(&pods[0], "initContainerStatuses", AGENT)["state"]["terminated"].is_object(),
    );
    let pod = &pods[0];
    assert_eq!(phase(pod), "Succeeded", "{pod}");
    let agent = status(pod, "initContainerStatuses", AGENT);
    assert_eq!(
        agent["state"]["terminated"]["exitCode"], 0,
        "SIGTERM is the sidecar's normal end: {agent}"
    );
    let app = status(pod, "containerStatuses", "app");
    assert_eq!(app["state"]["terminated"]["exitCode"], 0, "{app}");
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        plane.kubectl_ok(&["logs", "-n", &ns.app, name, "-c", "app"]),
        "batch-token-value"
    );

    // Classic sidecars: the webhook's pods restarted with --native-sidecars=never.
    ns.helm_upgrade(&[
        "--set",
        "webhook.nativeSidecars=never",
        "--wait",
        "--timeout",
        "300s",
    ]);
    let classic = job("classic", "batch", &arn);
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "classic-pod"},
        "spec": classic["spec"]["template"]["spec"].clone(),
    });
    pod["metadata"]["annotations"] = classic["spec"]["template"]["metadata"]["annotations"].clone();
    let pod = pod.to_string();
    let expected = "annotation secrets.k8s.aws/refresh-interval: the pod has restartPolicy Never";
    // Until every webhook pod of the old rollout is gone from the Service, one may still answer.
    plane.wait_for(
        "the classic webhook to deny the Job's pod",
        POD_START,
        || {
            let output = plane.kubectl_stdin(
                &["create", "-n", &ns.app, "-f", "-", "--dry-run=server"],
                Some(pod.as_bytes()),
            );
            !output.status.success() && String::from_utf8_lossy(&output.stderr).contains(expected)
        },
    );
    let output = plane.kubectl_stdin(&["create", "-n", &ns.app, "-f", "-"], Some(pod.as_bytes()));
    assert!(!output.status.success(), "kubectl create of the Job's pod");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(expected), "{stderr}");
    assert!(
        stderr.contains("remove secrets.k8s.aws/refresh-interval"),
        "the fix: {stderr}"
    );
    // The Job itself is not a pod: the API server stores it, and the Job controller's pod is
    // denied, with our message in the Job's events.
    create_ok(plane, &ns.app, &classic);
    let mut message = String::new();
    plane.wait_for("the Job's FailedCreate event", POD_START, || {
        let events = plane.get_json(&[
            "events",
            "-n",
            &ns.app,
            "--field-selector",
            "involvedObject.kind=Job,involvedObject.name=classic,reason=FailedCreate",
        ]);
        message = events["items"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        !message.is_empty()
    });
    assert!(message.contains(expected), "{message}");
    let pods = plane.get_json(&["pods", "-n", &ns.app, "-l", "scenario=classic"]);
    assert_eq!(pods["items"], json!([]), "the Job has no pod");
    drop(irsa);
}
