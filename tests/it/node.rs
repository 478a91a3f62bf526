//! Pods really run: the scenarios of a real node (`common::node`: kubelet, containerd, runc, the
//! CNI bridge, kube-proxy) with the chart's webhook running as pods from our own image, checked
//! through the API server the way a user checks them (`kubectl get`, `logs`, `exec`).
//!
//! What only a real node can show, and so what these tests are for: the image pulled and started
//! as its user, the init container and the native sidecar started in order, the Memory emptyDir a
//! real tmpfs, the IRSA token projected by the kubelet and accepted by (moto's) STS, the kubelet
//! reading our env file, rotation reaching a running pod, failures surfacing in pod status.

use std::time::Duration;

use crate::common::controlplane::Namespaces;
use crate::common::irsa_webhook::IrsaWebhook;
use crate::common::moto::Moto;
use crate::common::node::{self, NODE_IP, install_chart, phase, register_irsa, wait_pods};
use crate::common::repo_root;

/// Generous liveness bound for a pod to start (image pulls, init containers): 10× what it takes.
const POD_START: Duration = Duration::from_secs(180);

/// The seed's walkthrough, verbatim but for the secret's ARN (its readers put their own there):
/// `helm install`, the blog's ServiceAccount and `webserver` Deployment (busybox:1.28, from the
/// node's registry as docker.io's mirror); `kubectl logs` prints the secret's JSON, fetched by our
/// agent from moto with the IRSA token the kubelet projected.
#[test]
fn the_seeds_walkthrough_prints_the_secret_in_kubectl_logs() {
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let value = r#"{"username":"admin","password":"P@$$word1024","engine":"mysql"}"#;
    let arn = moto.create_secret("us-east-1", "database-password", value);
    let ns = Namespaces::on(plane, "node-seed", &[]);
    install_chart(&ns, &moto, &[]);
    let irsa = IrsaWebhook::start(
        "webserver-service-account",
        "arn:aws:iam::123456789012:role/webserver-secrets-role",
    );
    register_irsa(&ns, &irsa);

    let examples = repo_root().join("examples");
    plane.kubectl_ok(&[
        "apply",
        "-n",
        &ns.app,
        "-f",
        examples
            .join("webserver-service-account.yaml")
            .to_str()
            .unwrap(),
    ]);
    let deployment = std::fs::read_to_string(examples.join("webserver-deployment.yaml"))
        .unwrap()
        .replace(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF",
            &arn,
        );
    let applied = plane.kubectl_stdin(
        &["apply", "-n", &ns.app, "-f", "-"],
        Some(deployment.as_bytes()),
    );
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    let pods = wait_pods(
        plane,
        &ns.app,
        "run=webserver",
        "the webserver pod to run",
        POD_START,
        |pods| pods.iter().any(|p| phase(p) == "Running"),
    );
    let pod = pods.iter().find(|p| phase(p) == "Running").unwrap();
    let name = pod["metadata"]["name"].as_str().unwrap();
    // The agent ran to completion before the app started.
    let agent = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(agent["name"], "secrets-init-container", "{pod}");
    assert_eq!(agent["state"]["terminated"]["exitCode"], 0, "{pod}");
    let mut logs = String::new();
    plane.wait_for("the webserver's log line", Duration::from_secs(60), || {
        logs = plane.kubectl_ok(&["logs", "-n", &ns.app, name, "-c", "webserver"]);
        !logs.is_empty()
    });
    // `echo $(cat /tmp/secret)`: the JSON, word-split and joined by spaces.
    assert_eq!(logs.trim(), value, "kubectl logs");
    drop(irsa);
}
