//! Shared helpers for integration tests: where the third-party tools live.
//!
//! `scripts/test` installs every tool the tests need into `.tools/bin` (helm, kubectl) and
//! `.venv/bin` (kubernetes-validate, moto_server) and puts both on `PATH`. A test that needs a
//! tool the setup did not install fails loudly here; it is never skipped.

use std::path::{Path, PathBuf};

/// The repository root (where Cargo.toml lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Absolute path of a third-party tool installed by `scripts/test`.
///
/// Looks in `.tools/bin` and `.venv/bin` of the repository, then on `PATH`.
/// Panics with instructions when the tool is missing: tests never skip silently.
pub fn tool(name: &str) -> PathBuf {
    let root = repo_root();
    for dir in [root.join(".tools/bin"), root.join(".venv/bin")] {
        let candidate = dir.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    panic!(
        "required test tool `{name}` is not installed; run `scripts/test` (it installs helm, kubectl, \
         kubernetes-validate and moto into .tools/ and .venv/)"
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Oldest and newest Kubernetes versions we support; every object we produce is validated
/// against both with `kubernetes-validate --strict`.
pub const KUBE_VERSIONS: [&str; 2] = ["1.28.0", "1.37.0"];

/// Run a tool and return its stdout; panic with its stderr when it fails.
pub fn run_tool(name: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let output = run_tool_raw(name, args, stdin);
    assert!(
        output.status.success(),
        "`{name} {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Run a tool and return its whole output, whatever its exit status.
pub fn run_tool_raw(name: &str, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    run_tool_with_env(name, args, &[], stdin)
}

/// [`run_tool_raw`] with extra environment variables.
pub fn run_tool_with_env(
    name: &str,
    args: &[&str],
    env: &[(&str, &Path)],
    stdin: Option<&[u8]>,
) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(tool(name))
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Validate Kubernetes objects (a file of JSON or YAML documents) with
/// `kubernetes-validate --strict` against every supported version.
pub fn validate_strict(path: &Path) {
    // kubernetes-validate passes an empty file silently.
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    assert!(size > 0, "{} is empty: nothing to validate", path.display());
    for version in KUBE_VERSIONS {
        let output = run_tool_raw(
            "kubernetes-validate",
            &["--strict", "-k", version, &path.to_string_lossy()],
            None,
        );
        assert!(
            output.status.success(),
            "kubernetes-validate --strict -k {version} {} failed:\n{}{}",
            path.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `kubectl create ... --dry-run=client -o json`: a realistic object as kubectl builds it.
pub fn kubectl_object(args: &[&str]) -> serde_json::Value {
    // The flags go before a `--` that starts the container command.
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut all = args[..split].to_vec();
    all.extend(["--dry-run=client", "-o", "json"]);
    all.extend(&args[split..]);
    serde_json::from_slice(&run_tool("kubectl", &all, None)).unwrap()
}

/// Shape a pod template the way the API server sends a pod to admission webhooks: defaulted,
/// with the service-account token volume, in a namespace, named by generateName.
pub fn pod_from_template(template: &serde_json::Value, namespace: &str) -> serde_json::Value {
    use serde_json::json;
    let mut metadata = template["metadata"].clone();
    if metadata.is_null() {
        metadata = json!({});
    }
    metadata["namespace"] = json!(namespace);
    metadata["generateName"] = json!("webserver-66f6bb988f-");
    let mut spec = template["spec"].clone();
    let token = "kube-api-access-x774k";
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    let mut volumes = volumes;
    volumes.push(json!({"name": token, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
    ]}}));
    spec["volumes"] = json!(volumes);
    for field in ["containers", "initContainers"] {
        if let Some(containers) = spec[field].as_array_mut() {
            for c in containers {
                let obj = c.as_object_mut().unwrap();
                obj.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                obj.entry("terminationMessagePolicy")
                    .or_insert(json!("File"));
                obj.entry("imagePullPolicy")
                    .or_insert(json!("IfNotPresent"));
                obj.entry("resources").or_insert(json!({}));
                let mounts = obj.entry("volumeMounts").or_insert(json!([]));
                mounts.as_array_mut().unwrap().push(json!({
                    "name": token, "readOnly": true,
                    "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"
                }));
            }
        }
    }
    let defaults = json!({
        "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
        "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ]
    });
    for (key, value) in defaults.as_object().unwrap() {
        if spec.get(key).is_none() {
            spec[key] = value.clone();
        }
    }
    if spec["serviceAccount"] != spec["serviceAccountName"] {
        spec["serviceAccount"] = spec["serviceAccountName"].clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": {}})
}

/// An AdmissionReview request for creating `pod`, as the API server sends it.
pub fn admission_review(pod: &serde_json::Value, uid: &str) -> serde_json::Value {
    use serde_json::json;
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}
pub mod agent;
pub mod controlplane;
pub mod irsa_webhook;
pub mod moto;
pub mod node;
pub mod policy;
pub mod random_pod;
pub mod registry;
pub mod webhook;

/// Run `secret-inject ARGS` with `stdin` (empty when `None`), as a user runs it.
pub fn secret_inject(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

/// `kubectl patch --local --type=json` of `pod` with `patch` (files written in `dir`): the patched
/// object as kubectl applies it.
pub fn kubectl_patch_local(
    dir: &Path,
    pod: &serde_json::Value,
    patch: &serde_json::Value,
) -> serde_json::Value {
    let pod_file = dir.join("pod.json");
    let patch_file = dir.join("patch.json");
    std::fs::write(&pod_file, serde_json::to_vec(pod).unwrap()).unwrap();
    std::fs::write(&patch_file, serde_json::to_vec(patch).unwrap()).unwrap();
    let out = run_tool(
        "kubectl",
        &[
            "patch",
            "--local",
            "-f",
            &pod_file.to_string_lossy(),
            "--type=json",
            "--patch-file",
            &patch_file.to_string_lossy(),
            "-o",
            "json",
        ],
        None,
    );
    serde_json::from_slice(&out).unwrap()
}
