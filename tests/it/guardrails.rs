//! The chart's guardrails, evaluated by a real kube-apiserver: the namespace allow-list
//! (ValidatingAdmissionPolicy `<fullname>-allowed-secrets`), held to the same case table as the
//! CLI's matcher (`spec::allow`), and the secret writer's plaintext backstop.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use secret_inject::spec::allow::{CASES, Mode, NamespaceRule};
use secret_inject::spec::{ALLOWED_SECRETS, SECRET_ARN};

use crate::common::controlplane::{ControlPlane, Namespaces, Release, shared};
use crate::common::repo_root;

fn pod(name: &str, annotations: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "busybox:1.36"}]}
    })
}

/// `kubectl create --dry-run=server`: the whole admission chain, nothing stored. Ok, or the
/// denial's text.
fn try_create(plane: &ControlPlane, ns: &str, object: &Value) -> Result<String, String> {
    let output = plane.kubectl_stdin(
        &["create", "--dry-run=server", "-n", ns, "-f", "-"],
        Some(object.to_string().as_bytes()),
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        Ok(stderr)
    } else {
        Err(stderr)
    }
}

/// A namespace the test's release serves (its selector label), with `annotation` as the
/// allow-list; deleted by the caller's [`Namespaces`] drop? No: by [`Cleanup`].
fn namespace(plane: &ControlPlane, ns: &Namespaces, name: &str, annotation: Option<&str>) {
    let mut object = json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"secret-inject-test": ns.name}}});
    if let Some(text) = annotation {
        object["metadata"]["annotations"] = json!({ ALLOWED_SECRETS: text });
    }
    let output = plane.kubectl_stdin(&["create", "-f", "-"], Some(object.to_string().as_bytes()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Deletes the extra namespaces of a test.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut args = vec!["delete", "namespace", "--wait=false"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = shared().kubectl(&args);
    }
}

fn wait_for_service_accounts(plane: &ControlPlane, names: &[String]) {
    for name in names {
        plane.wait_for(
            "the default ServiceAccount",
            Duration::from_secs(60),
            || {
                plane
                    .kubectl(&["get", "serviceaccount", "default", "-n", name])
                    .status
                    .success()
            },
        );
    }
}

/// Every case of `spec::allow::CASES`, through the chart's policy and through the Rust matcher:
/// the same verdict. Each case gets a namespace of its own, named for the case; "team-a" in the
/// table stands for that name (in the annotation and the value alike), so the namespace-prefix
/// cases mean what they say. The webhook is stopped with failurePolicy Ignore, so only the
/// policy judges (the webhook would refuse the names that are not ARNs before the policy runs).
/// The modes follow one another by `helm upgrade` of one release, without a restart.
#[test]
fn the_api_servers_policy_and_the_cli_matcher_agree_on_every_case() {
    let plane = shared();
    let ns = Namespaces::new("allowcases", &[]);
    let mut release = Release::install(
        &ns,
        &[
            "--set",
            "webhook.failurePolicy=Ignore",
            "--set",
            "allowList.mode=annotated",
        ],
    );
    release.stop_webhook();
    let names: Vec<String> = (0..CASES.len()).map(|i| format!("allowcase-{i}")).collect();
    let _cleanup = Cleanup(names.clone());
    let substitute = |text: &str, name: &str| text.replace("team-a", name);
    for ((_, namespace, annotation, _, _), name) in CASES.iter().zip(&names) {
        assert_eq!(*namespace, "team-a", "the table's namespace is substituted");
        namespace_with(plane, &ns, name, annotation.map(|a| substitute(a, name)));
    }
    wait_for_service_accounts(plane, &names);
    let mut mode_now = Mode::Annotated;
    for mode in [Mode::Annotated, Mode::NamespacePrefix, Mode::Off] {
        if mode != mode_now {
            ns.helm_upgrade(&["--set", &format!("allowList.mode={mode}")]);
            mode_now = mode;
            // A probe the two modes judge differently, until the API server has the new policy.
            let probe = CASES
                .iter()
                .zip(&names)
                .position(|((m, _, a, v, _), name)| {
                    *m == mode && {
                        let rule = |m| {
                            NamespaceRule::new(
                                m,
                                name,
                                &annotations_of(a.map(|a| substitute(a, name))),
                            )
                        };
                        rule(mode).allows(&substitute(v, name))
                            != rule(Mode::Annotated).allows(&substitute(v, name))
                    }
                })
                .expect("a case that tells the modes apart");
            let (_, _, _, value, allowed) = CASES[probe];
            let name = &names[probe];
            let object = pod("probe", &secret(&substitute(value, name)));
            plane.wait_for(
                &format!("the {mode} policy to reach the API server"),
                Duration::from_secs(60),
                || try_create(plane, name, &object).is_ok() == allowed,
            );
        }
        let mut disagreements = Vec::new();
        for (i, ((case_mode, _, annotation, value, allowed), name)) in
            CASES.iter().zip(&names).enumerate()
        {
            if *case_mode != mode {
                continue;
            }
            let value = substitute(value, name);
            let rule = NamespaceRule::new(
                mode,
                name,
                &annotations_of(annotation.map(|a| substitute(a, name))),
            );
            let rust = rule.allows(&value);
            let api = try_create(plane, name, &pod(&format!("case-{i}"), &secret(&value)));
            assert_eq!(rust, *allowed, "case {i}: the table and the matcher");
            if rust != api.is_ok() {
                disagreements.push(format!(
                    "case {i} ({mode}, {annotation:?}, {value}): {api:?}"
                ));
            }
            // A denial in the same words from both: the policy's messageExpression and
            // NamespaceRule::check_pod.
            if let (Err(text), Err(ours)) = (&api, rule.check_pod(&secret(&value))) {
                assert!(text.contains("-allowed-secrets"), "case {i}: {text}");
                if !text.contains(&ours.to_string()) {
                    disagreements.push(format!(
                        "case {i}: the API server said {text}\nwe say {ours}"
                    ));
                }
            }
        }
        assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    }
}

fn annotations_of(annotation: Option<String>) -> BTreeMap<String, String> {
    annotation
        .map(|a| BTreeMap::from([(ALLOWED_SECRETS.to_owned(), a)]))
        .unwrap_or_default()
}

fn secret(value: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(SECRET_ARN.to_owned(), value.to_owned())])
}

fn namespace_with(plane: &ControlPlane, ns: &Namespaces, name: &str, annotation: Option<String>) {
    namespace(plane, ns, name, annotation.as_deref());
}

const TEAM_A_SM: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:{ns}/db-AbCdEf";
const TEAM_A_SSM: &str = "arn:aws:ssm:us-east-1:123456789012:parameter/{ns}/db/password";
const TEAM_B_SM: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-b/db-AbCdEf";

/// The whole path with the webhook serving: an allowed pod is created and injected, a denied one
/// is refused with the policy's message through kubectl (naming the annotation, the value and the
/// namespace's patterns), named secrets and parameters included;  a change of the namespace's annotation takes effect at once.
#[test]
fn pods_outside_the_namespaces_allow_list_are_refused_with_the_reason() {
    let plane = shared();
    let ns = Namespaces::new("allowlist", &[]);
    let _release = Release::install(&ns, &[]);
    let name = format!("{}-team", ns.name);
    let _cleanup = Cleanup(vec![name.clone()]);
    let own = |template: &str| template.replace("{ns}", &name);
    let allowed = format!(
        "arn:aws:secretsmanager:*:123456789012:secret:{name}/*, \
         arn:aws:ssm:*:123456789012:parameter/{name}/*"
    );
    namespace(plane, &ns, &name, Some(&allowed));
    wait_for_service_accounts(plane, std::slice::from_ref(&name));
    let annotations = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    // Allowed: stored and injected by the webhook (the policy judges the mutated pod).
    let ok = pod(
        "ok",
        &annotations(&[
            (SECRET_ARN, &own(TEAM_A_SM)),
            ("secrets.k8s.aws/secret-arn.param", &own(TEAM_A_SSM)),
        ]),
    );
    let output = plane.kubectl_stdin(
        &["create", "-n", &name, "-f", "-"],
        Some(ok.to_string().as_bytes()),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = plane.get_json(&["pod", "ok", "-n", &name]);
    assert_eq!(
        stored["metadata"]["annotations"]["secrets.k8s.aws/status"],
        "injected"
    );
    // Denied: a named secret of another team, through kubectl, nothing stored.
    let foreign = pod(
        "foreign",
        &annotations(&[
            (SECRET_ARN, &own(TEAM_A_SM)),
            ("secrets.k8s.aws/secret-arn.other", TEAM_B_SM),
        ]),
    );
    // The API server loads a new policy and binding, and sees the namespace's annotation,
    // a moment after helm created them: wait until the policy refuses (liveness only).
    plane.wait_for(
        "the allow-list policy to be in effect",
        Duration::from_secs(60),
        || try_create(plane, &name, &foreign).is_err(),
    );
    let output = plane.kubectl_stdin(
        &["create", "-n", &name, "-f", "-"],
        Some(foreign.to_string().as_bytes()),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "secret-inject: annotation secrets.k8s.aws/secret-arn.other: {TEAM_B_SM} is not allowed \
         in namespace {name} (its annotation {ALLOWED_SECRETS} allows: {allowed}); ask a cluster \
         admin to add a pattern to the namespace annotation {ALLOWED_SECRETS}, or use a secret \
         the namespace allows"
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ValidatingAdmissionPolicy '{}-secret-inject-allowed-secrets'",
            ns.name
        )),
        "{stderr}"
    );
    // The Rust matcher says the same words.
    let rule = NamespaceRule::new(
        Mode::Annotated,
        &name,
        &annotations_of(Some(allowed.clone())),
    );
    let rust = rule
        .check_pod(
            &foreign["metadata"]["annotations"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect(),
        )
        .unwrap_err();
    assert!(stderr.contains(&rust.to_string()), "{stderr}\n{rust}");
    assert!(!plane.exists("pod", "foreign", &name));
    // A parameter of another team is refused too.
    let param = pod(
        "param",
        &annotations(&[(
            "secrets.k8s.aws/secret-arn.p",
            "arn:aws:ssm:us-east-1:123456789012:parameter/team-b/x",
        )]),
    );
    assert!(try_create(plane, &name, &param).is_err());
    // The cluster admin adds team-b's secret: admitted, with no restart of anything.
    plane.kubectl_ok(&[
        "annotate",
        "namespace",
        &name,
        "--overwrite",
        &format!("{ALLOWED_SECRETS}={allowed},{TEAM_B_SM}"),
    ]);
    plane.wait_for(
        "the namespace's new annotation to reach the policy",
        Duration::from_secs(30),
        || try_create(plane, &name, &foreign).is_ok(),
    );
    // And removes the annotation: unrestricted in the default (annotated) mode.
    plane.kubectl_ok(&[
        "annotate",
        "namespace",
        &name,
        &format!("{ALLOWED_SECRETS}-"),
    ]);
    plane.wait_for(
        "the namespace without annotation",
        Duration::from_secs(30),
        || try_create(plane, &name, &param).is_ok(),
    );
}

fn labelled(name: &str, data: &[(&str, &str)]) -> Value {
    use base64::Engine as _;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v);
            ((*k).to_owned(), json!(encoded))
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": name, "labels": {"secrets.k8s.aws/store": "secretsmanager"}},
           "data": data})
}

/// With the writer serving (against moto), its output passes the backstop (mutating webhooks run
/// before validating policies), dry runs included. With the writer's MutatingWebhookConfiguration
/// deleted, a labelled Secret with a value is refused and nothing reaches etcd, by create, by
/// `stringData` and by an update of a converted Secret; a Secret as the writer leaves it and an
/// unlabelled Secret are admitted. `helm uninstall` keeps the backstop.
#[test]
fn the_backstop_keeps_labelled_values_out_of_etcd_when_the_writer_is_gone() {
    use crate::common::moto::Moto;

    let moto = Moto::start();
    let ns = Namespaces::new("backstop", &[]);
    let plane = shared();
    let endpoint = moto.endpoint();
    let _release = Release::install_with(
        &ns,
        &["--set", "secretWriter.enabled=true"],
        &[
            "--secret-writer",
            "--secret-writer-prefix",
            "test-cluster",
            "--cluster-name",
            "test-cluster",
            "--secret-writer-region",
            "us-east-1",
        ],
        &[
            ("KUBECONFIG", plane.kubeconfig.to_str().unwrap()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ],
    );
    let policy = format!("{}-secret-inject-secret-backstop", ns.name);
    assert!(
        plane
            .kubectl(&["get", "validatingadmissionpolicy", &policy])
            .status
            .success()
    );
    let create = |object: &Value, extra: &[&str]| {
        let mut args = vec!["create", "-n", &ns.app, "-f", "-"];
        args.extend_from_slice(extra);
        let output = plane.kubectl_stdin(&args, Some(object.to_string().as_bytes()));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(stderr)
        }
    };
    // The writer serves: its output is what the backstop sees, and passes. The writer may
    // still be listing labelled Secrets ("retry in a few seconds").
    let started = std::time::Instant::now();
    while let Err(text) = create(&labelled("stored", &[("password", "hunter2")]), &[]) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer stored nothing: {text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let stored = plane.get_json(&["secret", "stored", "-n", &ns.app]);
    let keys: Vec<&String> = stored["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["arn"]);
    let arn = stored["metadata"]["annotations"][SECRET_ARN]
        .as_str()
        .unwrap()
        .to_owned();
    let dry = create(
        &labelled("dry", &[("password", "hunter2")]),
        &["--dry-run=server", "-o", "json"],
    )
    .expect("the writer's dry-run answer passes the backstop");
    assert!(dry.contains("test-cluster/app-backstop/dry"), "{dry}");

    // The emergency step: the writer's webhook configuration is deleted.
    plane.kubectl_ok(&[
        "delete",
        "mutatingwebhookconfiguration",
        &format!("{}-secret-inject", ns.name),
    ]);
    let refused = |object: &Value, name: &str| {
        let mut stderr = String::new();
        plane.wait_for(
            "the writer's webhook to be gone and the backstop to refuse",
            Duration::from_secs(30),
            || match create(object, &[]) {
                Err(text) if text.contains("secret-backstop") => {
                    stderr = text;
                    true
                }
                Err(_) => false,
                Ok(_) => panic!("{name}: a labelled value was stored in etcd"),
            },
        );
        assert!(
            !plane.exists("secret", name, &ns.app),
            "{name} reached etcd"
        );
        stderr
    };
    let stderr = refused(&labelled("leak", &[("password", "hunter2")]), "leak");
    let expected = format!(
        "secret-inject: Secret {}/leak is labelled secrets.k8s.aws/store=secretsmanager, so \
         Kubernetes may keep only its ARN (data.arn), but it has the data keys password: the \
         secret writer did not store it in Secrets Manager",
        ns.app
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let mut by_string_data = labelled("leak2", &[]);
    by_string_data["stringData"] = json!({"token": "hunter2"});
    refused(&by_string_data, "leak2");
    // A value under the one allowed key: refused too.
    let mut under_arn = labelled("leak3", &[("arn", "hunter2")]);
    under_arn["metadata"]["annotations"] = json!({SECRET_ARN: arn});
    refused(&under_arn, "leak3");
    // An update of the converted Secret that adds a value.
    let mut update = stored.clone();
    update["data"]["password"] = json!("aHVudGVyMg==");
    let output = plane.kubectl_stdin(
        &["replace", "-n", &ns.app, "-f", "-"],
        Some(update.to_string().as_bytes()),
    );
    assert!(!output.status.success());
    let after = plane.get_json(&["secret", "stored", "-n", &ns.app]);
    assert_eq!(after["data"], stored["data"]);
    // As the writer leaves it: admitted. Unlabelled: not the backstop's business.
    let mut converted = labelled("copy", &[("arn", &arn)]);
    converted["metadata"]["annotations"] = json!({SECRET_ARN: arn});
    create(&converted, &[]).expect("a Secret as the writer leaves it");
    let mut plain = labelled("plain", &[("password", "not-secret")]);
    plain["metadata"]["labels"] = json!({});
    create(&plain, &[]).expect("an unlabelled Secret");

    // Uninstalled: the backstop stays (helm.sh/resource-policy: keep).
    let output = plane.helm(&["uninstall", &ns.name, "--namespace", &ns.release]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        plane
            .kubectl(&["get", "validatingadmissionpolicy", &policy])
            .status
            .success()
    );
    refused(&labelled("leak4", &[("password", "hunter2")]), "leak4");
}

/// `helm template` of the chart: the documents' kinds and names, and the documents.
fn rendered(kube_version: &str, extra: &[&str]) -> Vec<Value> {
    use serde::Deserialize as _;
    let chart = repo_root().join("charts/secret-inject");
    let mut args = vec![
        "template",
        "t",
        chart.to_str().unwrap(),
        "--namespace",
        "secret-inject",
        "--kube-version",
        kube_version,
    ];
    args.extend_from_slice(extra);
    let yaml = crate::common::run_tool("helm", &args, None);
    yaml_serde::Deserializer::from_slice(&yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn policy_names(docs: &[Value]) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Where the chart renders its policies: the allow-list by default from Kubernetes 1.30 (where
/// ValidatingAdmissionPolicy is GA), bound to the namespaces the pod webhook serves, not in
/// mode off; the backstop only with the secret writer, kept on uninstall unless asked not to;
/// an unknown mode is refused by the schema.
#[test]
fn the_chart_renders_the_policies_where_they_apply() {
    let docs = rendered("1.30.0", &[]);
    assert_eq!(policy_names(&docs), ["t-secret-inject-allowed-secrets"]);
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .unwrap();
    let webhook = docs
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"],
        webhook["webhooks"][0]["namespaceSelector"]
    );
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert!(policy_names(&rendered("1.29.0", &[])).is_empty());
    assert!(policy_names(&rendered("1.35.0", &["--set", "allowList.mode=off"])).is_empty());
    let warn = rendered(
        "1.35.0",
        &["--set", "allowList.validationActions={Warn,Audit}"],
    );
    assert_eq!(
        warn.iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
            .unwrap()["spec"]["validationActions"],
        json!(["Warn", "Audit"])
    );

    let writer = rendered("1.35.0", &["--set", "secretWriter.enabled=true"]);
    assert_eq!(
        policy_names(&writer),
        [
            "t-secret-inject-allowed-secrets",
            "t-secret-inject-secret-backstop"
        ]
    );
    for doc in writer
        .iter()
        .filter(|d| d["metadata"]["name"] == "t-secret-inject-secret-backstop")
    {
        assert_eq!(
            doc["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    let unkept = rendered(
        "1.35.0",
        &[
            "--set",
            "secretWriter.enabled=true",
            "--set",
            "secretWriter.backstop.keepOnUninstall=false",
        ],
    );
    assert!(
        unkept
            .iter()
            .all(|d| d["metadata"]["annotations"]["helm.sh/resource-policy"].is_null())
    );
    let off = rendered(
        "1.35.0",
        &[
            "--set",
            "secretWriter.enabled=true",
            "--set",
            "secretWriter.backstop.enabled=false",
        ],
    );
    assert_eq!(policy_names(&off), ["t-secret-inject-allowed-secrets"]);

    let chart = repo_root().join("charts/secret-inject");
    let output = crate::common::run_tool_raw(
        "helm",
        &[
            "template",
            "t",
            chart.to_str().unwrap(),
            "--set",
            "allowList.mode=prefix",
        ],
        None,
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/allowList/mode"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The API server bounds the work of a policy's CEL (a cost budget; over it, failurePolicy Fail
/// refuses the pod with a cost error). A pod with the most secrets the webhook takes, in a
/// namespace with 100 patterns of which only the last allows them, is judged within it: admitted,
/// and one foreign secret among them is refused with the policy's message, not a cost error.
#[test]
fn the_most_secrets_against_a_long_allow_list_fit_the_api_servers_cost_budget() {
    let plane = shared();
    let ns = Namespaces::new("allowcost", &[]);
    let mut release = Release::install(&ns, &["--set", "webhook.failurePolicy=Ignore"]);
    release.stop_webhook();
    let name = format!("{}-big", ns.name);
    let _cleanup = Cleanup(vec![name.clone()]);
    let mut patterns: Vec<String> = (0..99)
        .map(|i| format!("arn:aws:secretsmanager:*:123456789012:secret:other-{i}/*"))
        .collect();
    patterns.push(format!(
        "arn:aws:secretsmanager:*:123456789012:secret:{name}/*"
    ));
    namespace(plane, &ns, &name, Some(&patterns.join(",")));
    wait_for_service_accounts(plane, std::slice::from_ref(&name));
    let annotations: BTreeMap<String, String> = (0..secret_inject::spec::MAX_SECRETS)
        .map(|i| {
            (
                format!("{SECRET_ARN}.s{i}"),
                format!(
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}/app/secret-{i}-AbCdEf"
                ),
            )
        })
        .collect();
    let mut foreign = annotations.clone();
    foreign.insert(format!("{SECRET_ARN}.zz"), TEAM_B_SM.to_owned());
    // The policy and the namespace's annotation reach the API server a moment after they are
    // created: wait until the foreign secret is refused (liveness only).
    plane.wait_for(
        "the allow-list policy to be in effect",
        Duration::from_secs(60),
        || try_create(plane, &name, &pod("big", &foreign)).is_err(),
    );
    try_create(plane, &name, &pod("big", &annotations)).expect("every secret is allowed");
    let text = try_create(plane, &name, &pod("big", &foreign)).unwrap_err();
    assert!(
        text.contains(&format!(
            "annotation {SECRET_ARN}.zz: {TEAM_B_SM} is not allowed in namespace {name}"
        )),
        "{text}"
    );
}

/// `inject` and `iam-policy` read the same rule as the chart's policy for the Namespaces in
/// their input, and say which pods the API server would refuse (a warning: the workload itself
/// is admitted; its pods are not); the chart's modes by `--allow-list-mode`.
#[test]
fn inject_and_iam_policy_say_which_pods_the_allow_list_would_refuse() {
    let team_a = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-a/db-AbCdEf";
    let team_b = "arn:aws:secretsmanager:us-east-1:123456789012:secret:team-b/db-AbCdEf";
    let manifests = |annotation: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  annotations:\n    \
             {ALLOWED_SECRETS}: \"{annotation}\"\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: team-a\n\
             spec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      \
             labels: {{app: web}}\n      annotations:\n        {SECRET_ARN}: {team_b}\n        \
             {SECRET_ARN}.own: {team_a}\n    spec:\n      serviceAccountName: web\n      \
             containers:\n      - name: app\n        image: app:1\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: elsewhere\n  namespace: team-c\n  \
             annotations:\n    {SECRET_ARN}: {team_b}\nspec:\n  containers:\n  - name: app\n    \
             image: app:1\n"
        )
    };
    let allowed_own = "arn:aws:secretsmanager:*:123456789012:secret:team-a/*";
    let run = |command: &str, input: &str, extra: &[&str]| {
        let mut args = vec![command, "-f", "-"];
        args.extend_from_slice(extra);
        let output = crate::common::secret_inject(&args, Some(input.as_bytes()));
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{command}: {stderr}");
        assert!(!output.stdout.is_empty(), "{command} printed its output");
        stderr
    };
    // The expected denial is the matcher's, word for word, as in the API server case table.
    let rule = NamespaceRule::new(
        Mode::Annotated,
        "team-a",
        &BTreeMap::from([(ALLOWED_SECRETS.to_owned(), allowed_own.to_owned())]),
    );
    let denial = rule
        .check_pod(&BTreeMap::from([
            (SECRET_ARN.to_owned(), team_b.to_owned()),
            (format!("{SECRET_ARN}.own"), team_a.to_owned()),
        ]))
        .unwrap_err()
        .to_string();
    for command in ["inject", "iam-policy"] {
        let stderr = run(command, &manifests(allowed_own), &[]);
        let refused: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("the API server would refuse its pods"))
            .collect();
        assert_eq!(refused.len(), 1, "{command}: only Deployment/web: {stderr}");
        assert!(
            refused[0].contains("document 2 (Deployment/web)") && refused[0].contains(&denial),
            "{command}: {stderr}"
        );
        // Allowed by the namespace: nothing said.
        let stderr = run(command, &manifests(&format!("{allowed_own},{team_b}")), &[]);
        assert!(!stderr.contains("would refuse"), "{command}: {stderr}");
        // The chart's mode off: nothing checked.
        let stderr = run(
            command,
            &manifests(allowed_own),
            &["--allow-list-mode", "off"],
        );
        assert!(!stderr.contains("would refuse"), "{command}: {stderr}");
        // A pattern that can never match is named.
        let stderr = run(command, &manifests("team-a/*"), &[]);
        assert!(
            stderr.contains("document 1 (Namespace/team-a): annotation secrets.k8s.aws/allowed-secrets: pattern \"team-a/*\""),
            "{command}: {stderr}"
        );
    }
    // A mode that is no mode is refused by the parser, naming the values.
    let output = crate::common::secret_inject(
        &["inject", "-f", "-", "--allow-list-mode", "strict"],
        Some(manifests(allowed_own).as_bytes()),
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("off, annotated or namespace-prefix"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
