//! The Helm chart, checked by the real `helm` and `kubernetes-validate`, and the server started
//! from what the chart renders, called the way the API server would call it.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::common;
use crate::common::webhook::{Client, Webhook, connect, decode_patch};

pub(crate) const RELEASE: &str = "t";
pub(crate) const NAMESPACE: &str = "secret-inject";

pub(crate) fn chart() -> String {
    common::repo_root()
        .join("charts/secret-inject")
        .to_string_lossy()
        .into_owned()
}

/// `helm template` with extra arguments: the YAML as helm wrote it.
pub(crate) fn render_yaml(kube_version: &str, extra: &[&str]) -> Vec<u8> {
    let chart = chart();
    let mut args = vec![
        "template",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
    ];
    args.extend(extra);
    common::run_tool("helm", &args, None)
}

/// `helm template` with extra arguments, as parsed documents.
pub(crate) fn render(kube_version: &str, extra: &[&str]) -> Vec<Value> {
    let yaml = render_yaml(kube_version, extra);
    yaml_serde::Deserializer::from_slice(&yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

pub(crate) fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// Cases: (label, helm arguments). Files for `--set-file` are written into `dir`.
fn cases(dir: &Path) -> Vec<(&'static str, Vec<String>)> {
    let dev = secret_inject::webhook::tls::generate_dev_certificate("t-secret-inject", NAMESPACE)
        .unwrap();
    for (name, pem) in [
        ("tls.crt", &dev.cert_pem),
        ("tls.key", &dev.key_pem),
        ("ca.crt", &dev.ca_pem),
    ] {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let s = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        ("default", vec![]),
        ("cert-manager", s(&["--set", "tls.mode=certManager"])),
        (
            "network policy",
            s(&[
                "--set",
                "networkPolicy.enabled=true",
                "--set",
                "networkPolicy.adminFrom[0].namespaceSelector.matchLabels.team=observability",
            ]),
        ),
        (
            "secret writer",
            s(&[
                "--set",
                "secretWriter.enabled=true",
                "--set",
                "secretWriter.region=eu-west-1",
                "--set",
                "secretWriter.kmsKeyId=alias/secrets",
            ]),
        ),
        (
            "cert-manager with issuerRef",
            s(&[
                "--set",
                "tls.mode=certManager",
                "--set",
                "tls.certManager.issuerRef.name=corp-ca",
                "--set",
                "tls.certManager.issuerRef.kind=ClusterIssuer",
            ]),
        ),
        (
            "provided files",
            vec![
                "--set".into(),
                "tls.mode=provided".into(),
                "--set-file".into(),
                format!("tls.provided.cert={}", file("tls.crt")),
                "--set-file".into(),
                format!("tls.provided.key={}", file("tls.key")),
                "--set-file".into(),
                format!("tls.provided.caBundle={}", file("ca.crt")),
            ],
        ),
        (
            "provided existing secret",
            vec![
                "--set".into(),
                "tls.mode=provided".into(),
                "--set".into(),
                "tls.provided.existingSecret=my-tls".into(),
                "--set-file".into(),
                format!("tls.provided.caBundle={}", file("ca.crt")),
            ],
        ),
        (
            "service monitor",
            s(&["--set", "metrics.serviceMonitor.enabled=true"]),
        ),
        (
            "monitoring",
            s(&[
                "--set",
                "metrics.podMonitor.enabled=true",
                "--set",
                "metrics.prometheusRule.enabled=true",
                "--set",
                "metrics.dashboard.enabled=true",
                "--set",
                "sidecar.metrics.port=9102",
                "--set",
                "sidecar.metrics.address=pod",
            ]),
        ),
        (
            "object selector",
            s(&[
                "--set-string",
                "webhook.objectSelector.matchLabels.team=payments",
            ]),
        ),
        (
            "extras",
            s(&[
                "--set",
                "priorityClassName=system-cluster-critical",
                "--set",
                "sidecar.resources.limits.cpu=100m",
                "--set",
                "webhook.failurePolicy=Ignore",
                "--set",
                "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/x",
            ]),
        ),
    ]
}

#[test]
fn chart_lints_strictly_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    for (label, args) in cases(dir.path()) {
        let chart = chart();
        let mut all = vec!["lint", "--strict", chart.as_str()];
        all.extend(args.iter().map(String::as_str));
        let output = common::run_tool_raw("helm", &all, None);
        assert!(
            output.status.success(),
            "{label}: helm lint failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn every_rendered_object_validates_on_every_supported_version() {
    let dir = tempfile::tempdir().unwrap();
    const CUSTOM: [&str; 5] = [
        "Certificate",
        "Issuer",
        "ServiceMonitor",
        "PodMonitor",
        "PrometheusRule",
    ];
    for version in common::KUBE_VERSIONS {
        for (label, args) in cases(dir.path()) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let docs = render(version, &args);
            assert!(docs.len() >= 5, "{label}: only {} objects", docs.len());
            let file = dir.path().join("rendered.yaml");
            std::fs::write(&file, render_yaml(version, &args)).unwrap();
            let output = common::run_tool_raw(
                "kubernetes-validate",
                &["--strict", "-k", version, &file.to_string_lossy()],
                None,
            );
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(output.status.success(), "{label} on {version}:\n{text}");
            // Unknown kinds only warn; everything else must have passed, one line each.
            let builtin = docs
                .iter()
                .filter(|d| !CUSTOM.contains(&d["kind"].as_str().unwrap()))
                .count();
            assert_eq!(
                text.matches(" passed for resource ").count(),
                builtin,
                "{label} on {version}:\n{text}"
            );
            assert!(!text.contains("ERROR"), "{label} on {version}:\n{text}");
        }
    }
}

#[test]
fn the_network_policy_is_on_and_opens_the_webhook_port_and_the_admin_port_only_to_their_peers() {
    let version = common::KUBE_VERSIONS[1];
    let peer = "networkPolicy.adminFrom[0].namespaceSelector.matchLabels.team=observability";
    let docs = render(version, &["--set", peer]);
    let policy = find(&docs, "NetworkPolicy");
    let deployment = find(&docs, "Deployment");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2);
    // On by default, the webhook port from address blocks (which the platform narrows to its
    // control plane: the chart README's NetworkPolicy section).
    assert_eq!(
        ingress[0],
        json!({"ports": [{"protocol": "TCP", "port": 8443}],
               "from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]})
    );
    assert_eq!(
        ingress[1],
        json!({"from": [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}],
               "ports": [{"protocol": "TCP", "port": 8080}]})
    );
    // Narrowed to the control plane's subnet; without admin peers the admin port is closed.
    let docs = render(
        version,
        &[
            "--set",
            "networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/28",
        ],
    );
    let ingress = find(&docs, "NetworkPolicy")["spec"]["ingress"].clone();
    assert_eq!(
        ingress,
        json!([{"ports": [{"protocol": "TCP", "port": 8443}],
                "from": [{"ipBlock": {"cidr": "10.0.0.0/28"}}]}])
    );
    // Off only when asked.
    assert!(
        !render(version, &["--set", "networkPolicy.enabled=false"])
            .iter()
            .any(|d| d["kind"] == "NetworkPolicy")
    );
}

#[test]
fn the_secret_writer_webhook_is_off_by_default_and_fails_closed_when_on() {
    for version in common::KUBE_VERSIONS {
        let docs = render(version, &["--set", "secretWriter.enabled=true"]);
        let hooks = find(&docs, "MutatingWebhookConfiguration")["webhooks"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(hooks.len(), 2);
        let hook = &hooks[1];
        assert_eq!(hook["name"], "secrets.secret-inject.secrets.k8s.aws");
        assert_eq!(hook["sideEffects"], "NoneOnDryRun");
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["clientConfig"]["service"]["path"], "/mutating-secrets");
        assert_eq!(
            hook["objectSelector"],
            json!({"matchLabels": {"secrets.k8s.aws/store": "secretsmanager"}})
        );
        assert_eq!(hook["rules"][0]["resources"], json!(["secrets"]));
        assert_eq!(hook["namespaceSelector"], hooks[0]["namespaceSelector"]);
        let args =
            find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].clone();
        assert!(args.as_array().unwrap().contains(&json!("--secret-writer")));
        assert!(
            args.as_array()
                .unwrap()
                .contains(&json!("--secret-writer-timeout=8s"))
        );
        // The promotion loop lists and watches labelled Secrets: list and watch on secrets, no
        // more, bound to the webhook's ServiceAccount, whose token is then mounted.
        let role = find(&docs, "ClusterRole");
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}])
        );
        let binding = find(&docs, "ClusterRoleBinding");
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(
            binding["subjects"][0]["name"],
            find(&docs, "ServiceAccount")["metadata"]["name"]
        );
        assert_eq!(
            find(&docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"],
            true
        );
    }
    let docs = render(common::KUBE_VERSIONS[1], &[]);
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
        "pod injection needs no RBAC"
    );
    assert_eq!(
        find(&docs, "Deployment")["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let args =
        find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    assert!(!args.to_string().contains("--secret-writer"));
}

#[test]
fn webhook_configuration_is_production_safe() {
    for version in common::KUBE_VERSIONS {
        let docs = render(version, &[]);
        let config = find(&docs, "MutatingWebhookConfiguration");
        assert_eq!(config["apiVersion"], "admissionregistration.k8s.io/v1");
        let hooks = config["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 1);
        let hook = &hooks[0];
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
        assert_eq!(hook["failurePolicy"], "Fail");
        assert!(hook["timeoutSeconds"].as_i64().unwrap() <= 10);
        assert_eq!(hook["clientConfig"]["service"]["path"], "/mutating-pods");
        assert_eq!(
            hook["rules"],
            json!([{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced" }])
        );
        let expressions = hook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap();
        let excluded = expressions
            .iter()
            .find(|e| e["key"] == "kubernetes.io/metadata.name")
            .unwrap();
        assert_eq!(excluded["operator"], "NotIn");
        for ns in ["kube-system", "kube-node-lease", NAMESPACE] {
            assert!(
                excluded["values"].as_array().unwrap().contains(&json!(ns)),
                "{ns} not excluded"
            );
        }
        assert!(
            expressions
                .iter()
                .any(|e| e["key"] == "secrets.k8s.aws/injection" && e["operator"] == "NotIn")
        );
        // matchConditions only where the API has them (GA in 1.30).
        let conditions = hook.get("matchConditions");
        if version.starts_with("1.28") {
            assert!(
                conditions.is_none(),
                "matchConditions rendered for {version}"
            );
        } else {
            // Every pod with a key under our prefix: the webhook warns about misspelt keys
            // (issue 19 item 5), so they must reach it.
            let expression = conditions.unwrap()[0]["expression"].as_str().unwrap();
            assert!(
                expression.contains("k.startsWith('secrets.k8s.aws/')"),
                "{expression}"
            );
        }
        // The caBundle is the CA that signed the rendered serving certificate.
        let secret = find(&docs, "Secret");
        assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);

        let deployment = find(&docs, "Deployment");
        assert_eq!(deployment["spec"]["replicas"], 2);
        // env.<n> annotations only where the kubelet reads env files (EnvFiles, on by default
        // since 1.35).
        let minor: u32 = version.split('.').nth(1).unwrap().parse().unwrap();
        let env_files = format!("--env-files={}", if minor >= 35 { "on" } else { "off" });
        assert!(
            deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .contains(&json!(env_files)),
            "{version}: no {env_files}"
        );
        let native = format!(
            "--native-sidecars={}",
            if minor >= 29 { "always" } else { "never" }
        );
        assert!(
            deployment["spec"]["template"]["spec"]["containers"][0]["args"]
                .as_array()
                .unwrap()
                .contains(&json!(native)),
            "{version}: no {native}"
        );
        let pod = &deployment["spec"]["template"]["spec"];
        assert!(pod["affinity"]["podAntiAffinity"].is_object());
        let container = &pod["containers"][0];
        let sc = &container["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["automountServiceAccountToken"], false);
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[0], "webhook");
        let image = container["image"].as_str().unwrap();
        assert!(
            args.contains(&format!("--sidecar-image={image}").as_str()),
            "{args:?} vs {image}"
        );
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
        assert!(
            !docs.iter().any(
                |d| ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"]
                    .contains(&d["kind"].as_str().unwrap())
            ),
            "pod injection needs no RBAC"
        );
    }
}

/// Render the chart, start the server with the rendered certificate and key, and call it at the
/// rendered Service's DNS name and path, trusting only the rendered caBundle.
#[tokio::test(flavor = "multi_thread")]
async fn server_runs_with_what_the_chart_renders() {
    let docs = render("1.37.0", &[]);
    let secret = find(&docs, "Secret");
    let service = find(&docs, "Service");
    let config = find(&docs, "MutatingWebhookConfiguration");
    let client_config = &config["webhooks"][0]["clientConfig"];
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };

    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&cert, b64(&secret["data"]["tls.crt"])).unwrap();
    std::fs::write(&key, b64(&secret["data"]["tls.key"])).unwrap();
    std::fs::write(&ca, b64(&client_config["caBundle"])).unwrap();
    let server = Webhook::start(&[
        "--tls-cert-file",
        &cert.to_string_lossy(),
        "--tls-private-key-file",
        &key.to_string_lossy(),
    ]);

    let service_ref = &client_config["service"];
    assert_eq!(service_ref["name"], service["metadata"]["name"]);
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == service_ref["port"])
    );
    let host = format!(
        "{}.{}.svc",
        service_ref["name"].as_str().unwrap(),
        service_ref["namespace"].as_str().unwrap()
    );
    let path = service_ref["path"].as_str().unwrap();

    let template = json!({ "metadata": { "annotations": {
        "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
        "secrets.k8s.aws/secret-arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF"
    } }, "spec": { "containers": [{ "name": "webserver", "image": "busybox:1.28" }] } });
    let pod = common::pod_from_template(&template, "default");
    let stream = connect(server.webhook, &ca, &host, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    let mut client = Client::new(stream).await;
    let (status, body) = client
        .post(
            path,
            serde_json::to_vec(&common::admission_review(&pod, "chart-e2e")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["uid"], "chart-e2e");
    let patch = decode_patch(&review).expect("patch");
    let mut patched = pod.clone();
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(
        patched["spec"]["initContainers"][0]["name"],
        "secrets-init-container"
    );
}

/// Every value in values.yaml is described by values.schema.json and listed in the chart's
/// README (itself, or the object it belongs to), and every top-level value the schema describes
/// has a default in values.yaml.
#[test]
fn every_value_is_in_the_schema_and_the_readme() {
    let dir = common::repo_root().join("charts/secret-inject");
    let values: Value = Value::deserialize(yaml_serde::Deserializer::from_str(
        &std::fs::read_to_string(dir.join("values.yaml")).unwrap(),
    ))
    .unwrap();
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("values.schema.json")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let mut missing = Vec::new();
    fn documented(path: &str, readme: &str) -> bool {
        let mut prefix = path;
        loop {
            if readme.contains(&format!("`{prefix}`")) {
                return true;
            }
            match prefix.rsplit_once('.') {
                Some((parent, _)) => prefix = parent,
                None => return false,
            }
        }
    }
    // Walk values and schema together; a schema object without `properties` takes free-form
    // Kubernetes objects (securityContext, affinity, ...).
    fn walk(path: &str, value: &Value, schema: &Value, readme: &str, missing: &mut Vec<String>) {
        let properties = schema.get("properties").and_then(Value::as_object);
        match (value.as_object(), properties) {
            (Some(map), Some(properties)) if !map.is_empty() => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match properties.get(key) {
                        Some(child_schema) => {
                            walk(&child_path, child, child_schema, readme, missing)
                        }
                        None => missing.push(format!("{child_path}: not in values.schema.json")),
                    }
                }
            }
            _ if !documented(path, readme) => {
                missing.push(format!("{path}: not listed in the chart README"))
            }
            _ => {}
        }
    }
    walk("", &values, &schema, &readme, &mut missing);
    for key in schema["properties"].as_object().unwrap().keys() {
        if values.get(key).is_none() && key != "global" {
            missing.push(format!(
                "{key}: in the schema but has no default in values.yaml"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    assert_eq!(
        schema["additionalProperties"], false,
        "unknown top-level values must be rejected"
    );
}

#[test]
fn the_monitoring_objects_are_optional_and_select_what_the_webhook_adds() {
    let version = common::KUBE_VERSIONS[1];
    let defaults = render(version, &[]);
    for kind in ["PodMonitor", "PrometheusRule"] {
        assert!(
            defaults.iter().all(|d| d["kind"] != kind),
            "{kind} is off by default"
        );
    }
    assert!(
        defaults
            .iter()
            .all(|d| d["metadata"]["labels"]["grafana_dashboard"].is_null()),
        "no dashboard by default"
    );
    let args = find(&defaults, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        args.iter()
            .all(|a| !a.as_str().unwrap().starts_with("--sidecar-metrics-port"))
    );
    assert!(args.contains(&json!("--sidecar-metrics-address=loopback")));

    let docs = render(
        version,
        &[
            "--set",
            "metrics.podMonitor.enabled=true",
            "--set",
            "metrics.dashboard.enabled=true",
            "--set",
            "sidecar.metrics.port=9102",
            "--set",
            "sidecar.metrics.address=pod",
        ],
    );
    let args = &find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"];
    let args = args.as_array().unwrap();
    assert!(
        args.contains(&json!("--sidecar-metrics-port=9102")),
        "{args:?}"
    );
    assert!(
        args.contains(&json!("--sidecar-metrics-address=pod")),
        "{args:?}"
    );
    // The PodMonitor scrapes the container port the webhook names, in every namespace.
    let monitor = find(&docs, "PodMonitor");
    assert_eq!(
        monitor["spec"]["podMetricsEndpoints"][0]["port"],
        secret_inject::mutate::METRICS_PORT_NAME
    );
    assert_eq!(monitor["spec"]["namespaceSelector"], json!({"any": true}));
    // The dashboard, for Grafana's sidecar, is the chart's JSON file.
    let map = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard ConfigMap");
    let rendered: Value =
        serde_json::from_str(map["data"]["secret-inject.json"].as_str().unwrap()).unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(
            common::repo_root().join("charts/secret-inject/dashboards/secret-inject.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rendered, file);
}
