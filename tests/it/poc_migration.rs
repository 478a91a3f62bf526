//! Moving from the AWS proof-of-concept webhook (docs/install.md, "From the AWS proof-of-concept
//! webhook"): the guide relies on three facts, checked here.
//!
//! 1. After our injection, the pod has an init container named `secrets-init-container` in every
//!    mode (once, rotation as a native sidecar, rotation with a classic sidecar): that is what the
//!    PoC's webhook checks to skip a pod (`shouldPatch`/`shouldPatchPod`: `hasContainer(
//!    pod.Spec.InitContainers, "secrets-init-container")`, in the blog's and the later
//!    aws-samples versions), so with ours called first the PoC injects nothing.
//! 2. A pod the PoC injected first (its `secret-vol` and init container, no status annotation) is
//!    denied by ours, never injected a second time.
//! 3. kube-apiserver calls mutating webhook configurations in the order of their names (the
//!    source of the k8s.io/apiserver module the test control plane is built from), so the PoC's
//!    configuration renamed to sort after ours is called after ours.

use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::common;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";
/// The PoC's init container (the blog's version; the later one is the same for this purpose).
const POC_CONTAINER: &str = "secrets-init-container";

fn seed_pod(extra: Value) -> Value {
    let mut annotations = json!({
        "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
        "secrets.k8s.aws/secret-arn": ARN,
    });
    for (k, v) in extra.as_object().unwrap() {
        annotations[k] = v.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "webserver", "annotations": annotations},
        "spec": {
            "serviceAccountName": "webserver-service-account",
            "containers": [{"name": "webserver", "image": "busybox:1.36"}],
        },
    })
}

fn inject(args: &[&str], pod: &Value) -> std::process::Output {
    let mut all = vec!["inject"];
    all.extend_from_slice(args);
    all.extend(["-f", "-"]);
    common::secret_inject(&all, Some(pod.to_string().as_bytes()))
}

fn injected(args: &[&str], pod: &Value) -> Value {
    let output = inject(args, pod);
    assert!(
        output.status.success(),
        "inject {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Value::deserialize(yaml_serde::Deserializer::from_slice(&output.stdout)).unwrap()
}

#[test]
fn after_our_injection_the_poc_webhook_finds_its_init_container_and_skips_the_pod() {
    let cases: [(&str, &[&str], Value); 3] = [
        ("once", &["--kubernetes-version", "1.33"], json!({})),
        (
            "rotation, native sidecar",
            &["--native-sidecars", "always"],
            json!({"secrets.k8s.aws/refresh-interval": "5m"}),
        ),
        (
            "rotation, classic sidecar",
            &["--native-sidecars", "never"],
            json!({"secrets.k8s.aws/refresh-interval": "5m"}),
        ),
    ];
    for (label, args, extra) in cases {
        let pod = injected(args, &seed_pod(extra));
        let init: Vec<&str> = pod["spec"]["initContainers"]
            .as_array()
            .unwrap_or_else(|| panic!("{label}: no initContainers: {pod}"))
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            init.iter().filter(|n| **n == POC_CONTAINER).count(),
            1,
            "{label}: the PoC looks for {POC_CONTAINER} in initContainers: {init:?}"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["secrets.k8s.aws/status"], "injected",
            "{label}"
        );
        // And ours, called again (reinvocation), changes nothing.
        assert_eq!(
            injected(args, &pod),
            pod,
            "{label}: a second pass changed the pod"
        );
    }
}

#[test]
fn a_pod_the_poc_injected_first_is_denied_not_injected_twice() {
    // What the blog's PoC patch leaves: its init container reading the ARN through the Downward
    // API, the Memory emptyDir, the app's mount at /tmp/; no secrets.k8s.aws/status.
    let mut pod = seed_pod(json!({}));
    pod["spec"]["initContainers"] = json!([{
        "name": POC_CONTAINER,
        "image": "amazon/aws-secrets-manager-secret-sidecar:v0.1.4",
        "volumeMounts": [{"name": "secret-vol", "mountPath": "/tmp"}],
        "env": [{"name": "SECRET_ARN", "valueFrom": {"fieldRef": {
            "fieldPath": "metadata.annotations['secrets.k8s.aws/secret-arn']"}}}],
    }]);
    pod["spec"]["volumes"] = json!([{"name": "secret-vol", "emptyDir": {"medium": "Memory"}}]);
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "secret-vol", "mountPath": "/tmp/"}]);
    let output = inject(&[], &pod);
    assert!(
        !output.status.success(),
        "a PoC-injected pod was injected again"
    );
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("already has a volume named \"secret-vol\""),
        "{stderr}"
    );
}

#[test]
fn kube_apiserver_calls_mutating_webhook_configurations_in_name_order() {
    // The k8s.io/apiserver version the control plane is built from (tests/controlplane/go.mod).
    let go_mod =
        std::fs::read_to_string(common::repo_root().join("tests/controlplane/go.mod")).unwrap();
    let version = go_mod
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("k8s.io/apiserver => k8s.io/apiserver ")
        })
        .expect("tests/controlplane/go.mod replaces k8s.io/apiserver by a version");
    let output = std::process::Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output()
        .expect("go not found on PATH: install Go (scripts/test needs it for the control plane)");
    let cache = String::from_utf8(output.stdout).unwrap();
    let source = std::path::Path::new(cache.trim())
        .join(format!("k8s.io/apiserver@{version}"))
        .join("pkg/admission/configuration/mutating_webhook_manager.go");
    let text = std::fs::read_to_string(&source).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/build-controlplane (scripts/test does) to download the module",
            source.display()
        )
    });
    assert!(
        text.contains(
            "sort.SliceStable(configurations, MutatingWebhookConfigurationSorter(configurations).ByName)"
        ),
        "{} no longer sorts configurations by name: docs/install.md's PoC migration relies on it",
        source.display()
    );
    assert!(
        text.contains("return a[i].Name < a[j].Name"),
        "{}",
        source.display()
    );
    // So the PoC's configuration, renamed as the guide says, comes after ours (the chart's
    // configuration is named after the release, secret-inject), and the original before it.
    assert!("secret-inject" < "zz-aws-secret-inject-poc");
    assert!("aws-secret-inject" < "secret-inject");
    let guide = std::fs::read_to_string(common::repo_root().join("docs/install.md")).unwrap();
    assert!(guide.contains(".metadata.name = \"zz-aws-secret-inject-poc\""));
}
