//! Policy mode on the real node (issue 23): no webhook, the API server injects the agent itself
//! (`secret-inject admission-policy` | `kubectl apply`: the MutatingAdmissionPolicy, the
//! ValidatingAdmissionPolicy, and their bindings), and the agent takes
//! its plan from the pod's annotations carried in its environment. What only the node shows:
//! the seed's walkthrough printing the secret, a key the VAP cannot check failing the pod at
//! start with the agent's message, and rotation with the native sidecar.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::controlplane::Namespaces;
use crate::common::moto::Moto;
use crate::common::node::{
    self, NODE_IP, POD_START, create, create_ok, irsa_service_account, phase, seed_walkthrough,
    wait_pods,
};
use crate::common::policy::{AdmissionPolicy, POLICY_READY, dry_run};
use crate::common::secret_inject;
use crate::node_failures::{assert_agent_failed_and_app_never_started, kubectl_status};

/// The injected agent's container.
const AGENT: &str = "secrets-init-container";

/// Policy mode for one test's app namespace, as a user without Helm installs it
/// ([`AdmissionPolicy`]): our image from the node's registry, the agent reaching moto.
struct Policy {
    _objects: AdmissionPolicy,
}

impl Policy {
    /// `secret-inject admission-policy --name <test> --namespace-label <the test's label>
    /// --sidecar-image <our image> --sidecar-env AWS_ENDPOINT_URL=<moto>` | `kubectl apply`, the
    /// bindings selecting the namespaces labelled [`Policy::label`]`=enabled` (made so by
    /// [`policy_namespaces`]). Waits until the API server injects and validates with them.
    fn install(ns: &Namespaces, moto: &Moto, extra: &[&str]) -> Policy {
        let node = node::shared();
        let endpoint = format!("AWS_ENDPOINT_URL={}", moto.endpoint());
        let mut args = vec![
            "--sidecar-image",
            &node.images.secret_inject,
            "--sidecar-env",
            &endpoint,
        ];
        args.extend_from_slice(extra);
        let objects =
            AdmissionPolicy::install(ns.plane, &ns.name, &Policy::label(&ns.name), &ns.app, &args);
        let denied = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "policy-probe", "annotations": {
                "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
                "secrets.k8s.aws/secret-arn":
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:probe-AbCdEf",
                "secrets.k8s.aws/secret-format": "yaml"}},
            "spec": {"containers": [{"name": "app", "image": node.images.busybox}]}
        });
        ns.plane.wait_for(
            "the ValidatingAdmissionPolicy to deny",
            POLICY_READY,
            || {
                dry_run(ns.plane, &ns.app, &denied).is_err_and(|e| {
                    e.contains("annotation secrets.k8s.aws/secret-format: value \"yaml\"")
                })
            },
        );
        Policy { _objects: objects }
    }

    /// The label (set to `enabled`) whose namespaces the test's bindings select.
    fn label(name: &str) -> String {
        format!("policy.secret-inject.test/{name}")
    }
}

/// The test's namespaces on the node, the app namespace labelled for its policy's bindings.
fn policy_namespaces(name: &str) -> Namespaces {
    Namespaces::on(
        node::shared().plane,
        name,
        &[(&Policy::label(name), "enabled")],
    )
}

/// The value of the env var `name` of `container`, if set.
fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

/// The injected agent of a stored pod.
fn agent(pod: &Value) -> &Value {
    pod["spec"]["initContainers"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == AGENT))
        .unwrap_or_else(|| panic!("no agent in {pod:#}"))
}

/// Whether `selector` (a webhook's namespaceSelector) selects a namespace with `labels`: empty
/// selects everything; matchExpressions are counted as selecting (the test then fails loudly).
fn selects(selector: &Value, labels: &Value) -> bool {
    if selector["matchExpressions"]
        .as_array()
        .is_some_and(|e| !e.is_empty())
    {
        return true;
    }
    selector["matchLabels"]
        .as_object()
        .is_none_or(|wanted| wanted.iter().all(|(k, v)| labels[k] == *v))
}

/// The seed's walkthrough in policy mode: the blog's ServiceAccount and `webserver` Deployment,
/// verbatim but for the secret's ARN, in a namespace bound to the policy; `kubectl logs` prints
/// the secret's JSON, fetched by the agent the MutatingAdmissionPolicy injected. No webhook of
/// ours is involved: no webhook configuration but the IRSA stand-in's selects the namespace, and
/// the agent took its plan from the annotations (`SECRET_INJECT_PLAN_FROM=annotations`).
#[test]
fn the_seeds_walkthrough_in_policy_mode_prints_the_secret_in_kubectl_logs() {
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let value = r#"{"username":"admin","password":"P@$$word1024","engine":"mysql"}"#;
    let arn = moto.create_secret("us-east-1", "database-password", value);
    let ns = policy_namespaces("node-policy-seed");
    let _policy = Policy::install(&ns, &moto, &[]);
    let (pod, irsa) = seed_walkthrough(&ns, &arn, value);
    let pod = &pod;

    // The policy's agent: our image, its plan carried as the pod's annotations, the operator's
    // endpoint after them; none of the webhook's plan variables.
    let agent = agent(pod);
    assert_eq!(
        agent["image"],
        node.images.secret_inject.as_str(),
        "{agent}"
    );
    assert_eq!(
        env(agent, "SECRET_INJECT_PLAN_FROM"),
        Some("annotations"),
        "{agent}"
    );
    assert_eq!(
        env(agent, "secrets.k8s.aws/secret-arn"),
        Some(arn.as_str()),
        "{agent}"
    );
    assert_eq!(
        env(agent, "AWS_ENDPOINT_URL"),
        Some(moto.endpoint().as_str()),
        "{agent}"
    );
    assert_eq!(env(agent, "SECRET_ARN"), None, "{agent}");
    assert_eq!(
        pod["metadata"]["annotations"]["secrets.k8s.aws/status"], "injected",
        "{pod}"
    );
    // No webhook of ours: the only webhook configuration selecting the namespace is the IRSA
    // stand-in's, and the policy's binding is what selects it.
    let labels = plane.get_json(&["namespace", &ns.app])["metadata"]["labels"].clone();
    let configurations = plane.get_json(&["mutatingwebhookconfigurations"]);
    let selecting: Vec<&str> = configurations["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["webhooks"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| selects(&w["namespaceSelector"], &labels)))
        })
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        selecting,
        [format!("0-irsa-{}", ns.name)],
        "webhook configurations selecting {labels}"
    );
    let binding = plane.get_json(&["mutatingadmissionpolicybinding", &ns.name]);
    assert!(
        selects(
            &binding["spec"]["matchResources"]["namespaceSelector"],
            &labels
        ),
        "{binding}"
    );
    drop(irsa);
}

/// Keys the ValidatingAdmissionPolicy cannot check (a JMESPath that does not parse, a secret
/// name that is no DNS label): `secret-inject inject` (the webhook's grammar) denies them; policy
/// mode admits the pods, and each fails at start: `Init:Error`, the agent's termination message
/// the same problem and fix as the webhook's denial, naming the annotation, and the app never
/// started.
#[test]
fn a_key_the_policy_cannot_check_fails_the_pod_at_start_with_the_agents_message() {
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let arn = moto.create_secret("us-east-1", "bad/keys", r#"{"password":"never-shown"}"#);
    let ns = policy_namespaces("node-policy-bad-key");
    let _policy = Policy::install(&ns, &moto, &[]);

    let pod = |name: &str, annotations: Value| {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}, "annotations": {
                "secrets.k8s.aws/sidecarInjectorWebhook": "enabled"}},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": node.images.busybox,
                                "command": ["sleep", "3600"]}]
            }
        });
        pod["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .extend(annotations.as_object().unwrap().clone());
        pod
    };
    let cases = [
        (
            "bad-key",
            "secrets.k8s.aws/secret-key",
            pod(
                "bad-key",
                json!({"secrets.k8s.aws/secret-arn": arn, "secrets.k8s.aws/secret-key": "password["}),
            ),
        ),
        (
            "bad-name",
            "secrets.k8s.aws/secret-arn.Db",
            pod("bad-name", json!({"secrets.k8s.aws/secret-arn.Db": arn})),
        ),
    ];
    let mut denials = Vec::new();
    for (name, key, pod) in &cases {
        // The webhook's grammar denies it: the message the agent must give.
        let inject = secret_inject(&["inject", "-f", "-"], Some(pod.to_string().as_bytes()));
        let stderr = String::from_utf8_lossy(&inject.stderr).into_owned();
        assert!(!inject.status.success(), "inject admitted {name}: {stderr}");
        let prefix = format!("annotation {key}: ");
        let denial = stderr
            .split_once(&prefix)
            .map(|(_, rest)| format!("{key}: {}", rest.trim()))
            .unwrap_or_else(|| panic!("inject's denial of {name} names {key}: {stderr}"));
        denials.push(denial);
        // Policy mode admits it: CEL cannot parse JMESPath, nor does the VAP check names.
        let created = create(plane, &ns.app, pod);
        assert!(
            created.status.success(),
            "policy mode denied {name}: {}",
            String::from_utf8_lossy(&created.stderr)
        );
    }
    for ((name, key, _), denial) in cases.iter().zip(&denials) {
        let pods = wait_pods(
            plane,
            &ns.app,
            &format!("app={name}"),
            &format!("{name} to fail"),
            POD_START,
            |pods| phase(&pods[0]) == "Failed",
        );
        let pod = &pods[0];
        assert_eq!(kubectl_status(plane, &ns.app, name), "Init:Error", "{name}");
        assert_eq!(
            env(agent(pod), "SECRET_INJECT_PLAN_FROM"),
            Some("annotations")
        );
        let terminated = assert_agent_failed_and_app_never_started(
            pod,
            2,
            &[key, denial, "InvalidConfiguration"],
            Some("never-shown"),
        );
        let message = terminated["message"].as_str().unwrap();
        assert!(
            !message.contains("<no secret>"),
            "the message names the pod's secret: {message}"
        );
        eprintln!("{name}, as a user sees it: {message}");
    }
}

/// Rotation with the native sidecar in policy mode: the agent runs beside the app (an init
/// container with restartPolicy Always), and a new version in moto reaches the running pod's
/// file at one of its checks (every 30 s).
#[test]
fn a_rotation_reaches_the_running_pods_file_in_policy_mode() {
    const MOUNT: &str = "/var/run/secrets/app";
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let old = "first-token";
    let new = "second-token";
    let arn = moto.create_secret("us-east-1", "rotating/token", old);
    let ns = policy_namespaces("node-policy-rotate");
    let _policy = Policy::install(&ns, &moto, &[]);
    let irsa = irsa_service_account(&ns, "rotating", "arn:aws:iam::123456789012:role/rotating");
    create_ok(
        plane,
        &ns.app,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "rotating", "labels": {"app": "rotating"}, "annotations": {
                "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
                "secrets.k8s.aws/secret-arn": arn,
                "secrets.k8s.aws/mount-path": MOUNT,
                "secrets.k8s.aws/refresh-interval": "30s",
            }},
            "spec": {
                "serviceAccountName": "rotating",
                "terminationGracePeriodSeconds": 1,
                "securityContext": {"runAsUser": 65534, "runAsGroup": 65534},
                "containers": [{"name": "app", "image": node.images.busybox,
                                "command": ["sleep", "3600"]}]
            }
        }),
    );
    let pods = wait_pods(
        plane,
        &ns.app,
        "app=rotating",
        "the rotating pod to run",
        POD_START,
        |pods| phase(&pods[0]) == "Running",
    );
    let pod = &pods[0];
    assert_eq!(agent(pod)["restartPolicy"], "Always", "a native sidecar");
    let status = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(status["name"], AGENT, "{pod}");
    assert!(status["state"]["running"].is_object(), "{status}");
    let read = || {
        let output = plane.kubectl(&[
            "exec",
            "-n",
            &ns.app,
            "rotating",
            "-c",
            "app",
            "--",
            "cat",
            &format!("{MOUNT}/secret"),
        ]);
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    assert_eq!(read().as_deref(), Some(old));
    moto.rotate(&arn, new, "00000000-0000-4000-8000-000000000003");
    // Liveness only: a check every 30 s ± 10 %, ten times over.
    plane.wait_for(
        "the new value in the running pod's file",
        Duration::from_secs(330),
        || read().as_deref() == Some(new),
    );
    let pod = plane.get_json(&["pod", "rotating", "-n", &ns.app]);
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "the app kept running: {pod}"
    );
    drop(irsa);
}
