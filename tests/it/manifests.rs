//! `deploy/secret-inject.yaml`, the plain-manifest install for people without Helm: current with
//! the chart (re-rendered by the same script that wrote it) and valid on every Kubernetes
//! version it is meant for.

use serde::Deserialize as _;
use serde_json::Value;

use crate::common;

const MANIFESTS: &str = "deploy/secret-inject.yaml";
/// The file is rendered for Kubernetes 1.30 (scripts/render-manifests): matchConditions and the
/// preStop sleep action are GA or on by default from there. Older clusters use the chart.
const OLDEST: &str = "1.30.0";
/// Kinds kubernetes-validate has no schema for (it only warns about them).
const CERT_MANAGER_KINDS: [&str; 2] = ["Certificate", "Issuer"];

fn checked_in() -> String {
    std::fs::read_to_string(common::repo_root().join(MANIFESTS)).unwrap()
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Kubernetes versions the file is validated on: the oldest it targets, and every supported
/// version from there on.
fn versions() -> Vec<&'static str> {
    let minor = |v: &str| v.split('.').nth(1).unwrap().parse::<u32>().unwrap();
    let mut versions = vec![OLDEST];
    versions.extend(
        common::KUBE_VERSIONS
            .into_iter()
            .filter(|v| minor(v) > minor(OLDEST)),
    );
    versions
}

#[test]
fn checked_in_manifests_are_current() {
    // Make sure the helm the script uses is there, with the usual instructions if not.
    common::tool("helm");
    let script = common::repo_root().join("scripts/render-manifests");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg("-")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/render-manifests failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout).unwrap();
    let current = checked_in();
    if rendered != current {
        let first = rendered
            .lines()
            .zip(current.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(rendered.lines().count().min(current.lines().count()));
        panic!(
            "{MANIFESTS} is stale; run scripts/render-manifests (first difference at line {}:\n  \
             rendered:   {:?}\n  checked in: {:?})",
            first + 1,
            rendered.lines().nth(first),
            current.lines().nth(first),
        );
    }
}

#[test]
fn manifests_validate_strictly_on_every_targeted_version() {
    let path = common::repo_root().join(MANIFESTS);
    let docs = documents(&checked_in());
    let builtin = docs
        .iter()
        .filter(|d| !CERT_MANAGER_KINDS.contains(&d["kind"].as_str().unwrap()))
        .count();
    for version in versions() {
        let output = common::run_tool_raw(
            "kubernetes-validate",
            &["--strict", "-k", version, &path.to_string_lossy()],
            None,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{MANIFESTS} on {version}:\n{text}");
        assert!(!text.contains("ERROR"), "{MANIFESTS} on {version}:\n{text}");
        // cert-manager kinds only warn; every built-in object passed, one line each.
        assert_eq!(
            text.matches(" passed for resource ").count(),
            builtin,
            "{MANIFESTS} on {version}:\n{text}"
        );
    }
}

#[test]
fn manifests_install_into_their_own_namespace_with_cert_manager() {
    let docs = documents(&checked_in());
    let namespace = &docs[0];
    assert_eq!(namespace["kind"], "Namespace", "the Namespace comes first");
    assert_eq!(namespace["metadata"]["name"], "secret-inject");
    for doc in &docs[1..] {
        let kind = doc["kind"].as_str().unwrap();
        if [
            "MutatingWebhookConfiguration",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
        .contains(&kind)
        {
            continue; // cluster-scoped
        }
        assert_eq!(
            doc["metadata"]["namespace"], "secret-inject",
            "{kind} {} is not in the secret-inject namespace",
            doc["metadata"]["name"]
        );
    }
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "Certificate",
        "Issuer",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {MANIFESTS}: {kinds:?}");
    }
    assert!(
        !kinds.contains(&"Secret"),
        "cert-manager mode renders no Secret (no key material checked in)"
    );
    let config = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "secret-inject/secret-inject-tls"
    );
    let hook = &config["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail");
    assert!(
        hook["matchConditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "rendered for Kubernetes {OLDEST}: matchConditions must be there"
    );
    assert_eq!(
        hook["clientConfig"]["service"]["namespace"],
        "secret-inject"
    );
    // The image the Deployment runs and injects is this release's.
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let image = format!(
        "ghcr.io/secret-inject/secret-inject:{}",
        env!("CARGO_PKG_VERSION")
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], image.as_str());
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&Value::from(format!("--sidecar-image={image}"))),
        "{container}"
    );
}
