//! Policy mode installed as a user without Helm installs it: `secret-inject admission-policy
//! --name NAME --namespace-label LABEL [flags] | kubectl apply -f -`, the bindings selecting the
//! namespaces labelled `LABEL=enabled`. The cluster-scoped objects are deleted when dropped.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::controlplane::ControlPlane;
use super::secret_inject;

/// How long the API server may take to load new policies and bindings (liveness only).
pub const POLICY_READY: Duration = Duration::from_secs(120);

/// The policies and bindings of one install.
pub struct AdmissionPolicy {
    plane: &'static ControlPlane,
    name: String,
}

impl AdmissionPolicy {
    /// Print and apply the objects; then wait until a server-side dry run of an ARN-only pod in
    /// `namespace` (labelled `label=enabled`) is injected.
    pub fn install(
        plane: &'static ControlPlane,
        name: &str,
        label: &str,
        namespace: &str,
        extra: &[&str],
    ) -> AdmissionPolicy {
        let mut args = vec![
            "admission-policy",
            "--name",
            name,
            "--namespace-label",
            label,
        ];
        args.extend_from_slice(extra);
        let printed = secret_inject(&args, None);
        assert!(
            printed.status.success(),
            "secret-inject admission-policy: {}",
            String::from_utf8_lossy(&printed.stderr)
        );
        let policy = AdmissionPolicy {
            plane,
            name: name.to_owned(),
        };
        let applied = plane.kubectl_stdin(&["apply", "-f", "-"], Some(&printed.stdout));
        assert!(
            applied.status.success(),
            "kubectl apply of the policies: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        wait_injecting(plane, namespace);
        policy
    }
}

impl Drop for AdmissionPolicy {
    fn drop(&mut self) {
        let objects: Vec<String> = [
            "mutatingadmissionpolicybinding",
            "mutatingadmissionpolicy",
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ]
        .iter()
        .map(|kind| format!("{kind}/{}", self.name))
        .collect();
        let mut args = vec!["delete", "--ignore-not-found"];
        args.extend(objects.iter().map(String::as_str));
        let _ = self.plane.kubectl(&args);
    }
}

/// `kubectl create --dry-run=server -o json` of `object` in `namespace`: the object as the API
/// server would store it, or kubectl's stderr.
pub fn dry_run(plane: &ControlPlane, namespace: &str, object: &Value) -> Result<Value, String> {
    let output = plane.kubectl_stdin(
        &[
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-n",
            namespace,
            "-f",
            "-",
        ],
        Some(object.to_string().as_bytes()),
    );
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Whether a stored pod carries the injected agent.
pub fn injected(pod: &Value) -> bool {
    pod["spec"]["initContainers"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["name"] == "secrets-init-container"))
}

/// Poll server-side dry runs of an ARN-only pod in `namespace` until the policy injects it.
pub fn wait_injecting(plane: &ControlPlane, namespace: &str) {
    let probe = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "policy-probe", "annotations": {
            "secrets.k8s.aws/secret-arn":
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:probe-AbCdEf"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]}
    });
    let deadline = Instant::now() + POLICY_READY;
    loop {
        let outcome = dry_run(plane, namespace, &probe);
        if outcome.as_ref().is_ok_and(injected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "policy mode does not inject in {namespace} within {POLICY_READY:?}; last dry run: \
             {outcome:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A pod that PodSecurity `restricted` admits, with `annotations` and the given `metadata` name
/// field (`name` or `generateName`).
pub fn restricted_pod(name_field: &str, name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {name_field: name, "annotations": annotations},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 2000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                            "securityContext": {"allowPrivilegeEscalation": false,
                                                "capabilities": {"drop": ["ALL"]}}}]
        }
    })
}
