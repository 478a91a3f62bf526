//! Pods really run, part two: failures as users see them on a real node, and the webhook under
//! disruption (issue 20, scenarios 6 and 7). Everything is checked through the API server, the
//! way a user checks it: `kubectl get` (its STATUS column and the pod's status fields), `kubectl
//! logs`, `kubectl create`'s error.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::controlplane::{ControlPlane, Namespaces};
use crate::common::irsa_webhook::IrsaWebhook;
use crate::common::moto::Moto;
use crate::common::node::{
    self, NODE_IP, POD_START, create, install_chart, irsa_service_account, phase, wait_pods,
};

/// The injected agent's container.
const AGENT: &str = "secrets-init-container";
/// The pods' ServiceAccount, given an IRSA role by the stand-in.
const SERVICE_ACCOUNT: &str = "app";

/// An app pod (busybox, `sleep 3600`), annotated for `arn` when there is one.
fn app_pod(name: &str, arn: Option<&str>, restart_policy: &str) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "serviceAccountName": SERVICE_ACCOUNT,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": node::shared().images.busybox,
                            "command": ["sleep", "3600"]}]
        }
    });
    if let Some(arn) = arn {
        pod["metadata"]["annotations"] = json!({
            "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
            "secrets.k8s.aws/secret-arn": arn,
        });
    }
    pod
}

/// The STATUS column of `kubectl get pod`, as a user reads it.
pub(crate) fn kubectl_status(plane: &ControlPlane, namespace: &str, pod: &str) -> String {
    let line = plane.kubectl_ok(&["get", "pod", pod, "-n", namespace, "--no-headers"]);
    line.split_whitespace().nth(2).unwrap_or("").to_owned()
}

/// A namespace with the chart installed (agents pointed at `moto`) and pods of
/// [`SERVICE_ACCOUNT`] given `role` by the IRSA stand-in.
fn namespace_with_chart(
    name: &str,
    moto: &Moto,
    role: &str,
    extra: &[&str],
) -> (Namespaces, IrsaWebhook) {
    let plane = node::shared().plane;
    let ns = Namespaces::on(plane, name, &[]);
    install_chart(&ns, moto, extra);
    let irsa = irsa_service_account(&ns, SERVICE_ACCOUNT, role);
    (ns, irsa)
}

/// What a user must see of a pod whose agent failed: the app container never started (waiting,
/// not ready, never restarted, no earlier run); the agent's termination says `expect` (each),
/// `Fix:` once, the ARN, and never the value; its exit code is `code`. Returns the agent's
/// termination (`state` or, after a restart, `lastState`).
pub(crate) fn assert_agent_failed_and_app_never_started(
    pod: &Value,
    code: i64,
    expect: &[&str],
    value: Option<&str>,
) -> Value {
    let agent = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(agent["name"], AGENT, "{pod:#}");
    let terminated = if agent["state"]["terminated"].is_object() {
        agent["state"]["terminated"].clone()
    } else {
        agent["lastState"]["terminated"].clone()
    };
    assert_eq!(terminated["exitCode"], code, "{pod:#}");
    assert_eq!(terminated["reason"], "Error", "{pod:#}");
    let message = terminated["message"].as_str().unwrap_or("");
    for expected in expect {
        assert!(
            message.contains(expected),
            "the termination message names {expected:?}: {message}"
        );
    }
    assert_eq!(
        message.matches("Fix:").count(),
        1,
        "one fix, said once: {message}"
    );
    if let Some(value) = value {
        assert!(!message.contains(value), "the value leaked: {message}");
    }
    let app = &pod["status"]["containerStatuses"][0];
    assert_eq!(app["name"], "app", "{pod:#}");
    assert!(
        app["state"]["waiting"].is_object()
            && app["started"] == false
            && app["ready"] == false
            && app["restartCount"] == 0
            && app["lastState"]
                .as_object()
                .is_none_or(serde_json::Map::is_empty),
        "the app container never started: {app:#}"
    );
    assert_eq!(
        app["state"]["waiting"]["reason"], "PodInitializing",
        "{app:#}"
    );
    terminated
}

/// AccessDenied: the pod's IRSA role (moto's STS takes the kubelet-projected token) may not read
/// the secret. The pod stops in `Init:Error`, the agent's termination message in the pod's status
/// says access was denied, as which role, and the permission to grant; the app never starts.
/// With the permission granted, the same pod runs.
///
/// The pod has `restartPolicy: Never`: moto's IAM enforcement exempts only a count of requests,
/// and the agent's STS call (unsigned, as AWS has it) must be one of them; a restarted agent's
/// STS call would be refused by moto (an HTTP 500), which AWS never does. The restarting
/// variant (`Init:CrashLoopBackOff`, the message in `lastState`) is the missing secret's test.
#[test]
fn access_denied_stops_the_pod_in_init_error_with_the_permission_to_grant() {
    let plane = node::shared().plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let value = "denied-value-5f2c9e";
    let arn = moto.create_secret("us-east-1", "payments/db", value);
    // The role may describe secrets, not read them. (`Resource: "*"`: moto evaluates Secrets
    // Manager's actions, not its resources, so the action is what this policy and the granted
    // one below differ in.)
    let role = moto.iam_role(
        "payments-reader",
        &json!([{"Effect": "Allow", "Action": "secretsmanager:DescribeSecret", "Resource": "*"}]),
    );
    let (ns, irsa) = namespace_with_chart("node-denied", &moto, &role, &[]);
    // IAM enforcement on after one more request: the agent's STS call.
    moto.reset_auth(1);

    let created = create(plane, &ns.app, &app_pod("denied", Some(&arn), "Never"));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let pods = wait_pods(
        plane,
        &ns.app,
        "app=denied",
        "the pod to fail",
        POD_START,
        |pods| phase(&pods[0]) == "Failed",
    );
    let pod = &pods[0];
    assert_eq!(kubectl_status(plane, &ns.app, "denied"), "Init:Error");
    let terminated = assert_agent_failed_and_app_never_started(
        pod,
        4,
        &[
            "access denied",
            "AccessDenied",
            &arn,
            &role,
            "secretsmanager:GetSecretValue",
        ],
        Some(value),
    );
    assert_eq!(
        pod["status"]["initContainerStatuses"][0]["restartCount"], 0,
        "{pod:#}"
    );
    // `kubectl logs` of the agent says the same, in one line.
    let logs = plane.kubectl_ok(&["logs", "-n", &ns.app, "denied", "-c", AGENT]);
    assert!(
        logs.contains("AccessDenied") && logs.contains(&arn) && !logs.contains(value),
        "{logs}"
    );
    eprintln!(
        "access denied, as a user sees it: {}",
        terminated["message"].as_str().unwrap()
    );

    // The message's fix, applied: with the permission granted, the same pod, recreated, runs
    // with the secret. The denial above was the role's policy, nothing else on the path.
    moto.reset_auth(u32::MAX);
    let granted = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]});
    let (status, body) = moto.query(
        "iam",
        &[
            ("Action", "PutRolePolicy"),
            ("RoleName", "payments-reader"),
            ("PolicyName", "secrets"),
            ("PolicyDocument", &granted.to_string()),
            ("Version", "2010-05-08"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    moto.reset_auth(1);
    let created = create(plane, &ns.app, &app_pod("granted", Some(&arn), "Never"));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    wait_pods(
        plane,
        &ns.app,
        "app=granted",
        "the pod to run once the role may read the secret",
        POD_START,
        |pods| phase(&pods[0]) == "Running",
    );
    let read = plane.kubectl_ok(&[
        "exec",
        "-n",
        &ns.app,
        "granted",
        "-c",
        "app",
        "--",
        "cat",
        "/tmp/secret",
    ]);
    assert_eq!(read, value);
    drop(irsa);
}

/// A secret that does not exist: the agent fails with exit code 5 and says the ARN is wrong;
/// the kubelet restarts it (`restartPolicy: Always`, a Deployment's), so `kubectl get` shows
/// `Init:Error`, then `Init:CrashLoopBackOff`, with the message in the agent's `lastState`; the
/// app never starts.
#[test]
fn a_missing_secret_crash_loops_in_init_with_our_message() {
    let plane = node::shared().plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let role = "arn:aws:iam::123456789012:role/payments-reader";
    let (ns, irsa) = namespace_with_chart("node-missing", &moto, role, &[]);
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:payments/missing-AbCdEf";

    let created = create(plane, &ns.app, &app_pod("missing", Some(arn), "Always"));
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    // What `kubectl get` shows, in order.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + POD_START;
    let pod = loop {
        let status = kubectl_status(plane, &ns.app, "missing");
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if status == "Init:CrashLoopBackOff" {
            break plane.get_json(&["pod", "missing", "-n", &ns.app]);
        }
        assert!(
            Instant::now() < deadline,
            "no Init:CrashLoopBackOff within {POD_START:?}; kubectl get showed {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let error = seen.iter().position(|s| s == "Init:Error");
    assert!(
        error.is_some_and(|at| at < seen.len() - 1),
        "Init:Error, then Init:CrashLoopBackOff: {seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s == "Running" || s == "PodInitializing"),
        "{seen:?}"
    );
    assert_eq!(phase(&pod), "Pending", "{pod:#}");
    let agent = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(
        agent["state"]["waiting"]["reason"], "CrashLoopBackOff",
        "{pod:#}"
    );
    assert!(agent["restartCount"].as_i64() >= Some(1), "{pod:#}");
    let terminated = assert_agent_failed_and_app_never_started(
        &pod,
        5,
        &["not found", "ResourceNotFoundException", arn, role],
        None,
    );
    eprintln!(
        "a missing secret, as a user sees it ({seen:?}): {}",
        terminated["message"].as_str().unwrap()
    );
    drop(irsa);
}

/// How many of `pods` carry the agent, which ran to completion, and run.
fn injected_and_running(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| {
            phase(p) == "Running"
                && p["spec"]["initContainers"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["name"] == AGENT))
                && p["status"]["initContainerStatuses"]
                    .as_array()
                    .is_some_and(|s| {
                        s.iter().any(|s| {
                            s["name"] == AGENT && s["state"]["terminated"]["exitCode"] == 0
                        })
                    })
        })
        .count()
}

/// The webhook under disruption. A Deployment of 20 annotated pods rolls out (five new pods at a
/// time, each waiting for the last to be ready) while one of the chart's two webhook pods is
/// deleted: every pod is injected and runs, and no pod creation failed on the way (no
/// `FailedCreate`: the deleted pod kept answering through its preStop sleep while the API server
/// moved to the other replica). Then, with `failurePolicy: Fail` and both replicas gone, `kubectl
/// create` of an annotated pod is refused with the API server's webhook-call failure, and an
/// unannotated pod is still admitted (the chart's matchConditions never send it to the webhook).
#[test]
fn a_rollout_survives_a_deleted_webhook_pod_and_fail_refuses_only_annotated_pods() {
    let plane = node::shared().plane;
    let started = Instant::now();
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let arn = moto.create_secret("us-east-1", "web/config", "rollout-value");
    let role = "arn:aws:iam::123456789012:role/web";
    let (ns, irsa) = namespace_with_chart(
        "node-disrupt",
        &moto,
        role,
        &["--set", "webhook.failurePolicy=Fail"],
    );
    let webhook_pods = || -> Vec<String> {
        plane.get_json(&["pods", "-n", &ns.release])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(webhook_pods().len(), 2, "the chart runs two webhook pods");

    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 20,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 5, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {
                    "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
                    "secrets.k8s.aws/secret-arn": arn}},
                "spec": {"serviceAccountName": SERVICE_ACCOUNT,
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "app", "image": node::shared().images.busybox,
                                         "command": ["sleep", "3600"]}]}
            }
        }
    });
    let created = create(plane, &ns.app, &deployment);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let first = wait_pods(
        plane,
        &ns.app,
        "app=web",
        "20 injected pods running",
        POD_START,
        |pods| pods.len() == 20 && injected_and_running(pods) == 20,
    );
    let old_hash = first[0]["metadata"]["labels"]["pod-template-hash"].clone();
    eprintln!("20 injected pods running after {:.1?}", started.elapsed());

    // The rollout: a new template, pods replaced five at a time.
    let rollout = Instant::now();
    plane.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        &ns.app,
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"example.com/rollout":"2"}}}}}"#,
    ]);
    let new_pods = |pods: &[Value]| -> Vec<Value> {
        pods.iter()
            .filter(|p| p["metadata"]["labels"]["pod-template-hash"] != old_hash)
            .cloned()
            .collect()
    };
    // Mid-rollout: the first new pods exist, most are still to come.
    let pods = wait_pods(
        plane,
        &ns.app,
        "app=web",
        "the rollout's first new pods",
        POD_START,
        |pods| !new_pods(pods).is_empty(),
    );
    let before = new_pods(&pods).len();
    let victim = webhook_pods()[0].clone();
    plane.kubectl_ok(&["delete", "pod", &victim, "-n", &ns.release, "--wait=false"]);
    assert!(
        before < 20,
        "the webhook pod was deleted mid-rollout: {before} of 20 new pods existed"
    );
    plane.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        &ns.app,
        "--timeout=300s",
    ]);
    let pods = wait_pods(
        plane,
        &ns.app,
        "app=web",
        "the old pods gone, 20 new ones injected and running",
        POD_START,
        |pods| {
            let new = new_pods(pods);
            pods.len() == 20 && new.len() == 20 && injected_and_running(&new) == 20
        },
    );
    assert_eq!(injected_and_running(&pods), 20);
    let failed = plane.kubectl_ok(&[
        "get",
        "events",
        "-n",
        &ns.app,
        "--field-selector",
        "reason=FailedCreate",
        "-o",
        "custom-columns=OBJECT:.involvedObject.name,MESSAGE:.message",
        "--no-headers",
    ]);
    assert!(
        failed.trim().is_empty(),
        "no pod creation failed while a webhook pod went away:\n{failed}"
    );
    eprintln!(
        "rollout of 20 pods with webhook pod {victim} deleted after {before} new pods: {:.1?}",
        rollout.elapsed()
    );

    // Both replicas gone, failurePolicy Fail.
    let deployment =
        plane.get_json(&["deployments", "-n", &ns.release])["items"][0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
    plane.kubectl_ok(&[
        "scale",
        "deployment",
        &deployment,
        "-n",
        &ns.release,
        "--replicas=0",
    ]);
    plane.wait_for(
        "the webhook's pods to be gone",
        Duration::from_secs(120),
        || {
            plane.get_json(&["pods", "-n", &ns.release])["items"]
                .as_array()
                .unwrap()
                .is_empty()
        },
    );
    let refused = create(plane, &ns.app, &app_pod("refused", Some(&arn), "Always"));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "admitted without the webhook");
    assert!(
        stderr.contains(r#"failed calling webhook "pods.secret-inject.secrets.k8s.aws""#),
        "the API server's webhook-call failure: {stderr}"
    );
    assert!(!plane.exists("pod", "refused", &ns.app));
    let admitted = create(plane, &ns.app, &app_pod("plain", None, "Always"));
    assert!(
        admitted.status.success(),
        "an unannotated pod is admitted with the webhook down: {}",
        String::from_utf8_lossy(&admitted.stderr)
    );
    let plain = plane.get_json(&["pod", "plain", "-n", &ns.app]);
    assert!(plain["spec"]["initContainers"].is_null(), "{plain:#}");
    eprintln!(
        "with both webhook pods gone, kubectl create said: {}",
        stderr.trim()
    );
    eprintln!("scenario 7 took {:.1?}", started.elapsed());
    drop(irsa);
}
