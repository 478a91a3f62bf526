//! The chart's `mode: policy`: what it renders (the binary's policies, the parameters the webhook
//! would get for the same values, no webhook objects), what it refuses, and a real install on the
//! test control plane (Kubernetes 1.36) that injects the seed pod without any webhook.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::chart::{NAMESPACE, chart, find, render};
use crate::common;
use crate::common::controlplane::Namespaces;

/// The oldest Kubernetes that runs policy mode.
const V1_36: &str = "1.36.0";
const POLICY: [&str; 2] = ["--set", "mode=policy"];
const POLICY_FILES: &str = "charts/secret-inject/files/admission-policy";

/// A values file that changes every setting the parameters carry.
const CUSTOM_VALUES: &str = r#"
image:
  repository: registry.example.com/platform/secret-inject
  tag: "9.9.9"
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
sidecar:
  image:
    pullPolicy: Always
  resources:
    requests: {cpu: 25m, memory: 24Mi}
    limits: {cpu: 200m, memory: 64Mi}
  deadline: 5m
  attemptTimeout: 3s
  batchThreshold: 0
  logLevel: debug
  env:
    NO_PROXY: "169.254.169.254,.svc,10.0.0.0/8"
    HTTPS_PROXY: http://proxy.example.com:3128
    AWS_USE_FIPS_ENDPOINT: "true"
"#;

fn with_policy<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = POLICY.to_vec();
    args.extend_from_slice(extra);
    args
}

fn kinds(docs: &[Value]) -> Vec<&str> {
    docs.iter().map(|d| d["kind"].as_str().unwrap()).collect()
}

/// `helm template` that must fail; its stderr.
fn render_error(kube_version: &str, extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec![
        "template",
        "t",
        &chart,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
    ];
    args.extend_from_slice(extra);
    let output = common::run_tool_raw("helm", &args, None);
    assert!(
        !output.status.success(),
        "helm template {extra:?} rendered on {kube_version}"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The settings `secret-inject admission-policy --spec settings` prints for the settings the
/// chart gives the webhook with the same values: the Deployment's flags that describe the
/// injection.
fn cli_params(extra: &[&str]) -> Value {
    let docs = render(V1_36, extra);
    let args = &find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"];
    let flags: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .filter(|a| {
            a.starts_with("--sidecar-")
                || a.starts_with("--volume-size-limit=")
                || a.starts_with("--env-files=")
                || a.starts_with("--native-sidecars=")
        })
        .collect();
    assert!(
        flags.iter().any(|f| f.starts_with("--sidecar-image=")),
        "{flags:?}"
    );
    let mut cli = vec!["admission-policy", "--spec", "settings"];
    cli.extend(flags);
    let output = common::secret_inject(&cli, None);
    assert!(
        output.status.success(),
        "secret-inject {cli:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The settings variable of the rendered MutatingAdmissionPolicy (a CEL map literal that is a
/// JSON object of strings), parsed.
fn chart_settings(docs: &[Value]) -> Value {
    let variable = &find(docs, "MutatingAdmissionPolicy")["spec"]["variables"][0];
    assert_eq!(
        variable["name"],
        secret_inject::mutate::policy::SETTINGS_VARIABLE
    );
    serde_json::from_str(variable["expression"].as_str().unwrap()).unwrap()
}

#[test]
fn policy_mode_lints_and_renders_the_policies_and_no_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("custom.yaml");
    std::fs::write(&values, CUSTOM_VALUES).unwrap();
    let values = values.to_string_lossy().into_owned();
    for extra in [vec![], vec!["-f", values.as_str()]] {
        let chart = chart();
        let mut lint = vec!["lint", "--strict", &chart, "--kube-version", V1_36];
        lint.extend(with_policy(&extra));
        let output = common::run_tool_raw("helm", &lint, None);
        assert!(
            output.status.success(),
            "helm {lint:?}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let webhook_docs = render(V1_36, &[]);
    for version in [V1_36, "1.37.0"] {
        let docs = render(version, &POLICY);
        // Policy mode's four objects, and the allow-list guardrail (allowList.mode annotated by
        // default) with its binding.
        assert_eq!(docs.len(), 6, "{version}: {:?}", kinds(&docs));
        let kinds: BTreeSet<&str> = kinds(&docs).into_iter().collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                "MutatingAdmissionPolicy",
                "MutatingAdmissionPolicyBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
            ]),
            "{version}"
        );
        let fullname = "t-secret-inject";
        let named = |kind: &str, name: &str| {
            docs.iter()
                .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no {kind} {name}"))
                .clone()
        };
        // The policies are the binary's, unchanged but for the settings variable.
        let settings: std::collections::BTreeMap<String, String> =
            serde_json::from_value(chart_settings(&docs)).unwrap();
        assert_eq!(
            named("MutatingAdmissionPolicy", fullname)["spec"],
            secret_inject::mutate::policy::mutating_policy_spec_with(&settings)
        );
        assert_eq!(
            named("ValidatingAdmissionPolicy", fullname)["spec"],
            secret_inject::mutate::policy::validating_policy_spec()
        );
        // The bindings select the namespaces the webhook would serve.
        let selector = &find(&webhook_docs, "MutatingWebhookConfiguration")["webhooks"][0]["namespaceSelector"];
        let binding = named("MutatingAdmissionPolicyBinding", fullname);
        assert_eq!(
            binding["spec"],
            json!({"policyName": fullname,
                   "matchResources": {"namespaceSelector": selector}})
        );
        let binding = named("ValidatingAdmissionPolicyBinding", fullname);
        assert_eq!(
            binding["spec"],
            json!({"policyName": fullname, "validationActions": ["Deny"],
                   "matchResources": {"namespaceSelector": selector}})
        );
        let allow = named(
            "ValidatingAdmissionPolicyBinding",
            &format!("{fullname}-allowed-secrets"),
        );
        assert_eq!(
            allow["spec"]["matchResources"]["namespaceSelector"],
            *selector
        );
    }
    // Values of the webhook's own objects render nothing in policy mode; allowList off leaves
    // exactly policy mode's four objects; the webhook's objectSelector narrows both bindings.
    let docs = render(
        V1_36,
        &with_policy(&[
            "--set",
            "allowList.mode=off",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "tls.mode=certManager",
            "--set-string",
            "webhook.objectSelector.matchLabels.team=payments",
        ]),
    );
    assert_eq!(docs.len(), 4, "{:?}", kinds(&docs));
    for kind in [
        "MutatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert_eq!(
            find(&docs, kind)["spec"]["matchResources"]["objectSelector"],
            json!({"matchLabels": {"team": "payments"}})
        );
    }
    // Webhook mode renders none of policy mode's objects.
    for kind in ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"] {
        assert!(
            !kinds(&webhook_docs).contains(&kind),
            "{kind} in webhook mode"
        );
    }
}

#[test]
fn policy_mode_refuses_kubernetes_before_1_36() {
    for version in ["1.35.0", "1.28.0"] {
        let error = render_error(version, &POLICY);
        assert!(
            error.contains("mode=policy needs Kubernetes 1.36 or later")
                && error.contains(&format!("v{version}"))
                && error.contains("use mode=webhook"),
            "{error}"
        );
    }
}

#[test]
fn policy_mode_refuses_the_settings_it_cannot_honour_naming_them_and_the_webhook_mode() {
    for (set, named) in [
        ("sidecar.metrics.port=9102", "sidecar.metrics.port"),
        ("sidecar.metrics.address=pod", "sidecar.metrics.address"),
        ("sidecar.volumeSizeLimit=16Mi", "sidecar.volumeSizeLimit"),
        (
            "webhook.nativeSidecars=never",
            "webhook.nativeSidecars=never",
        ),
        ("webhook.envFiles=off", "webhook.envFiles=off"),
        (
            "webhook.failurePolicy=Ignore",
            "webhook.failurePolicy=Ignore",
        ),
        ("secretWriter.enabled=true", "secretWriter.enabled"),
        (
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.enabled",
        ),
        (
            "metrics.podMonitor.enabled=true",
            "metrics.podMonitor.enabled",
        ),
        (
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.enabled",
        ),
    ] {
        let error = render_error(V1_36, &with_policy(&["--set", set]));
        assert!(
            error.contains(&format!("mode=policy cannot honour {named}"))
                && error.contains("use mode=webhook"),
            "{set}: {error}"
        );
        // The webhook mode renders with it (render() fails the test otherwise).
        let _ = render(V1_36, &["--set", set]);
    }
}

/// The settings variable carries what the webhook's --sidecar-* flags carry for the same values.
#[test]
fn policy_mode_parameters_equal_the_cli_for_the_webhook_settings() {
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("custom.yaml");
    std::fs::write(&values, CUSTOM_VALUES).unwrap();
    let values = values.to_string_lossy().into_owned();
    for extra in [vec![], vec!["-f", values.as_str()]] {
        let docs = render(V1_36, &with_policy(&extra));
        assert_eq!(
            chart_settings(&docs),
            cli_params(&extra),
            "values {extra:?}"
        );
    }
    // The custom values reached the parameters (the comparison above is not vacuous).
    let docs = render(V1_36, &with_policy(&["-f", values.as_str()]));
    let data = &chart_settings(&docs);
    assert_eq!(
        data["image"],
        "registry.example.com/platform/secret-inject:9.9.9@sha256:\
         0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(data["imagePullPolicy"], "Always");
    assert_eq!(data["cpuLimit"], "200m");
    assert_eq!(
        data["agentEnv"],
        "SECRET_INJECT_DEADLINE=5m\nSECRET_INJECT_ATTEMPT_TIMEOUT=3s\n\
         SECRET_INJECT_BATCH_THRESHOLD=0\nSECRET_INJECT_LOG_LEVEL=debug\n\
         AWS_USE_FIPS_ENDPOINT=true\nHTTPS_PROXY=http://proxy.example.com:3128\n\
         NO_PROXY=169.254.169.254,.svc,10.0.0.0/8"
    );
}

/// sidecar.env names the webhook refuses at start (--sidecar-env) are refused at render in
/// policy mode, where no server checks them; the others pass both.
#[test]
fn policy_mode_refuses_the_agent_env_the_webhook_refuses() {
    let mut names: Vec<&str> = secret_inject::contract::AWS_IDENTITY_ENV.to_vec();
    names.extend(secret_inject::mutate::STATIC_CREDENTIALS_ENV);
    names.extend([
        "SECRET_ARN",
        "SECRET_FILENAME",
        "SECRET_INJECT_DEADLINE",
        "1PROXY",
        "HTTPS_PROXY",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "no_proxy",
    ]);
    for name in names {
        let cli = common::secret_inject(
            &["admission-policy", "--sidecar-env", &format!("{name}=x")],
            None,
        );
        let chart = chart();
        let set = format!("sidecar.env.{name}=x");
        let output = common::run_tool_raw(
            "helm",
            &[
                "template",
                "t",
                &chart,
                "--kube-version",
                V1_36,
                "--set",
                "mode=policy",
                "--set",
                &set,
            ],
            None,
        );
        assert_eq!(
            output.status.success(),
            cli.status.success(),
            "{name}: chart {}, CLI {}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&cli.stderr)
        );
        if !output.status.success() {
            // The message names the variable (the schema checks the name's shape first).
            assert!(
                String::from_utf8_lossy(&output.stderr).contains(name),
                "{name}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// The chart's policy specs are what the binary prints now (scripts/render-manifests wrote them).
#[test]
fn checked_in_policy_specs_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let script = common::repo_root().join("scripts/render-manifests");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg("--admission-policy")
        .arg(dir.path())
        .env("SECRET_INJECT", env!("CARGO_BIN_EXE_secret-inject"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/render-manifests --admission-policy failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    for name in ["mutating.json", "validating.json"] {
        let rendered = std::fs::read_to_string(dir.path().join(name)).unwrap();
        let checked_in =
            std::fs::read_to_string(common::repo_root().join(POLICY_FILES).join(name)).unwrap();
        assert!(
            rendered == checked_in,
            "{POLICY_FILES}/{name} is stale; run scripts/render-manifests and commit the result"
        );
        let spec: Value = serde_json::from_str(&rendered).unwrap();
        assert!(spec["failurePolicy"] == "Fail", "{name}");
    }
}

/// `helm install --set mode=policy` on the 1.36 control plane: the seed pod is injected by the
/// API server alone (no webhook runs), with its plan carried in the agent's environment; a pod
/// that does not opt in is stored as given.
#[test]
fn policy_mode_installs_and_the_api_server_injects_the_seed_pod() {
    let ns = Namespaces::new("policy-chart", &[]);
    let plane = ns.plane;
    let chart = chart();
    let selector = format!(
        "webhook.namespaceSelector.matchLabels.secret-inject-test={}",
        ns.name
    );
    let output = plane.helm(&[
        "install",
        &ns.name,
        &chart,
        "--namespace",
        &ns.release,
        "--set",
        "mode=policy",
        "--set",
        &selector,
        "--wait=false",
    ]);
    assert!(
        output.status.success(),
        "helm install --set mode=policy failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let fullname = format!("{}-secret-inject", ns.name);
    assert!(
        plane
            .kubectl(&["get", "mutatingadmissionpolicy", &fullname])
            .status
            .success()
    );
    assert!(!plane.exists("deployment", &fullname, &ns.release));
    assert!(
        !plane
            .kubectl(&["get", "mutatingwebhookconfiguration", &fullname])
            .status
            .success(),
        "policy mode registered a webhook"
    );
    let seed = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "seed", "annotations": {
            "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
            "secrets.k8s.aws/secret-arn":
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF"}},
        "spec": {"containers": [{"name": "webserver", "image": "busybox:1.28"}]}
    });
    let dry_run = |pod: &Value| -> Value {
        common::policy::dry_run(plane, &ns.app, pod)
            .unwrap_or_else(|e| panic!("kubectl create --dry-run=server: {e}"))
    };
    // The API server loads new policies asynchronously: wait until the seed pod is injected.
    let mut stored = Value::Null;
    plane.wait_for(
        "the MutatingAdmissionPolicy to inject the seed pod",
        common::policy::POLICY_READY,
        || {
            stored = dry_run(&seed);
            common::policy::injected(&stored)
        },
    );
    let init = &stored["spec"]["initContainers"][0];
    assert_eq!(init["name"], "secrets-init-container", "{stored}");
    assert!(
        init["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "SECRET_INJECT_PLAN_FROM", "value": "annotations"})),
        "{init}"
    );
    assert_eq!(
        stored["metadata"]["annotations"]["secrets.k8s.aws/status"],
        "injected"
    );
    assert!(
        stored["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "secret-vol"),
        "{stored}"
    );
    // A pod that does not opt in is stored as given.
    let plain = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "webserver", "image": "busybox:1.28"}]}
    });
    let stored = dry_run(&plain);
    assert!(stored["spec"]["initContainers"].is_null(), "{stored}");
    assert_eq!(stored["spec"]["containers"].as_array().unwrap().len(), 1);
    assert!(
        stored["spec"]["volumes"]
            .as_array()
            .is_none_or(|v| v.iter().all(|v| v["name"] != "secret-vol"))
    );
    assert!(stored["metadata"]["annotations"].is_null(), "{stored}");
}
