//! Policy mode (issue 23) on the real API server 1.36: the MutatingAdmissionPolicy and
//! ValidatingAdmissionPolicy that `secret-inject admission-policy` prints, applied with kubectl,
//! compared with webhook mode (the chart and our webhook, [`Release`]) on the same pods.
//!
//! Each test installs policy mode for one namespace of its own (the bindings select namespaces
//! labelled `<label>=enabled`, the label unique to the test) and deletes the cluster-scoped
//! objects at the end ([`PolicyMode`]'s drop).
//!
//! Which check runs where, as the tests below assert it (`VAP`: the ValidatingAdmissionPolicy
//! denies at `kubectl apply`; `agent`: admitted, the agent fails at pod start with its
//! termination message; `webhook`: the webhook denies at `kubectl apply`):
//!
//! | check (annotation)                               | webhook mode | policy mode | message              |
//! |--------------------------------------------------|--------------|-------------|----------------------|
//! | unknown `secrets.k8s.aws/` key, case-only typo   | warning*     | VAP         | VAP: `did you mean`  |
//! | `secret-arn` not an ARN                          | webhook      | VAP         | differs, both say why|
//! | `secret-format` not a format                     | webhook      | VAP         | same text            |
//! | `refresh-interval` not 30s..24h                  | webhook      | VAP         | differs, both say why|
//! | `restart-on-change` not true/false               | webhook      | VAP         | same text            |
//! | `init-container-position` not first/last         | webhook      | VAP         | same text            |
//! | `reload-signal` not a signal                     | webhook      | VAP         | differs, both say why|
//! | `mount-path` with `..`                           | webhook      | VAP         | differs, both say why|
//! | `spec.os.name: windows`                          | webhook      | VAP         | same text            |
//! | `env`, `containers`, `metrics-*`, `volume-size-limit` | supported | VAP (denied: names the feature and webhook mode) | |
//! | everything else (keys, versions, file names, ...)| webhook      | agent       | the agent's message  |
//!
//! *The webhook warns about an unknown key and ignores it; the VAP denies it (the agent would
//! refuse it at pod start, with the grammar the webhook uses). The exact table rows are asserted
//! by [`the_vaps_denials_match_the_webhooks_messages`].

use std::collections::BTreeMap;
use std::time::Duration;

use secret_inject::cli::AgentArgs;
use secret_inject::contract::{self, Carrier, Plan, PodFields, SecretFields, env};
use secret_inject::mutate::policy::{MAX_TOP_LEVEL_NAME, UNSUPPORTED};
use secret_inject::spec;
use serde_json::{Value, json};

use crate::common::controlplane::{ControlPlane, Namespaces, Release};
use crate::common::{repo_root, secret_inject};

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

/// Policy mode installed for one test's namespaces by `secret-inject admission-policy`:
/// the objects are named `policy-<test>`, the parameters ConfigMap in the release namespace,
/// the bindings select the app namespace by a label of the test's own.
pub struct PolicyMode {
    pub ns: Namespaces,
    pub name: String,
    pub label: String,
}

impl PolicyMode {
    pub fn install(test: &str) -> PolicyMode {
        let label = format!("policy.secret-inject.test/{test}");
        let ns = Namespaces::new(test, &[(&label, "enabled")]);
        let name = format!("policy-{test}");
        let output = secret_inject(
            &[
                "admission-policy",
                "--name",
                &name,
                "--namespace",
                &ns.release,
                "--namespace-label",
                &label,
            ],
            None,
        );
        assert!(
            output.status.success(),
            "secret-inject admission-policy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let applied = ns
            .plane
            .kubectl_stdin(&["apply", "-f", "-"], Some(&output.stdout));
        assert!(
            applied.status.success(),
            "kubectl apply of the policy objects failed:\n{}{}",
            String::from_utf8_lossy(&applied.stdout),
            String::from_utf8_lossy(&applied.stderr)
        );
        let policy = PolicyMode { ns, name, label };
        // A fresh policy takes a moment to be picked up: poll a dry run until it injects.
        let probe = pod("probe", json!({spec::SECRET_ARN: ARN}));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let outcome = dry_run(policy.ns.plane, &policy.ns.app, &probe);
            if outcome
                .as_ref()
                .is_ok_and(|p| init_names(p).iter().any(|n| n == contract::CONTAINER_NAME))
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "policy mode does not inject within 60 s; last dry run: {outcome:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        policy
    }
}

impl Drop for PolicyMode {
    fn drop(&mut self) {
        let _ = self.ns.plane.kubectl(&[
            "delete",
            "mutatingadmissionpolicybinding,mutatingadmissionpolicy,\
             validatingadmissionpolicybinding,validatingadmissionpolicy",
            &self.name,
            "--ignore-not-found",
        ]);
    }
}

/// A restricted-PSS-compliant pod with `annotations`.
fn pod(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 2000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                            "securityContext": {"allowPrivilegeEscalation": false,
                                                "capabilities": {"drop": ["ALL"]}}}]
        }
    })
}

/// `kubectl create --dry-run=server -o json`: the pod as the API server would store it, or
/// kubectl's stderr.
fn dry_run(plane: &ControlPlane, ns: &str, object: &Value) -> Result<Value, String> {
    let output = plane.kubectl_stdin(
        &[
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-n",
            ns,
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

fn init_names(pod: &Value) -> Vec<String> {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The annotations of a pod.
fn annotations(pod: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(pod["metadata"]["annotations"].clone()).unwrap_or_default()
}

/// The annotations that put a pod outside policy mode's subset, with their feature.
fn unsupported(annotations: &BTreeMap<String, String>) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    for key in annotations.keys() {
        for (base, feature) in UNSUPPORTED {
            if key == base || key.starts_with(&format!("{base}.")) {
                out.push((key.clone(), *feature));
            }
        }
        let file =
            key == spec::SECRET_FILENAME || key.starts_with(&format!("{}.", spec::SECRET_FILENAME));
        if file && annotations[key].split('/').next().unwrap_or("").len() > MAX_TOP_LEVEL_NAME {
            out.push((key.clone(), "top-level file or directory name"));
        }
    }
    out
}

/// The agent container of a stored pod.
fn agent(pod: &Value) -> &Value {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == contract::CONTAINER_NAME)
        .unwrap_or_else(|| panic!("no agent: {}", pod["spec"]))
}

/// The agent's env as (name, value) pairs (valueFrom as its JSON).
fn agent_env(pod: &Value) -> Vec<(String, String)> {
    agent(pod)["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = match e.get("value") {
                Some(Value::String(v)) => v.clone(),
                None | Some(Value::Null) => String::new(),
                Some(other) => other.to_string(),
            };
            (e["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// The variables the webhook renders the plan into (the seed's and the `SECRET_INJECT_*` plan
/// fields, declared once in the contract).
fn plan_vars() -> Vec<&'static str> {
    SecretFields::FIELDS
        .iter()
        .chain(PodFields::FIELDS)
        .filter_map(|f| f.flat.map(|flat| flat.env))
        .collect()
}

/// Policy mode's carrier: the annotations (named as their keys), the file mode, the marker.
fn policy_carrier(name: &str) -> bool {
    name.starts_with(spec::PREFIX) || name == env::FILE_MODE || name == env::PLAN_FROM
}

fn value_of<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// A stored pod without what differs between two creations of the same pod (namespace, uid,
/// timestamps, generated names, the token volume's random suffix) and without the agent's plan
/// carrier (`carrier` says which variables carry the plan in that mode).
fn normalized(mut pod: Value, carrier: impl Fn(&str) -> bool) -> Value {
    let meta = pod["metadata"].as_object_mut().unwrap();
    for field in [
        "namespace",
        "uid",
        "creationTimestamp",
        "managedFields",
        "resourceVersion",
    ] {
        meta.remove(field);
    }
    if meta.contains_key("generateName") {
        meta.remove("name");
    }
    let token = |name: &Value| {
        name.as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    };
    for volume in pod["spec"]["volumes"].as_array_mut().into_iter().flatten() {
        if token(&volume["name"]) {
            volume["name"] = json!("kube-api-access");
        }
    }
    for field in ["containers", "initContainers"] {
        for container in pod["spec"][field].as_array_mut().into_iter().flatten() {
            for mount in container["volumeMounts"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if token(&mount["name"]) {
                    mount["name"] = json!("kube-api-access");
                }
            }
            if container["name"] == contract::CONTAINER_NAME
                && let Some(env) = container["env"].as_array_mut()
            {
                env.retain(|e| !carrier(e["name"].as_str().unwrap_or_default()));
            }
        }
    }
    pod
}

/// The plan the agent builds from the webhook's carrier (its own parser, every variable as the
/// flag that reads it).
fn webhook_plan(pod: &Value) -> Plan {
    let env = agent_env(pod);
    let vars = env
        .iter()
        .filter(|(n, _)| !contract::AWS_IDENTITY_ENV.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str(), v.as_str()));
    AgentArgs::from_rendered(vars)
        .unwrap()
        .plan_fields()
        .parse()
        .unwrap()
}

/// The plan the agent builds from policy mode's carrier: the annotations in its environment
/// with the file mode the policy computed.
fn policy_plan(pod: &Value) -> Plan {
    let env = agent_env(pod);
    let vars = env
        .iter()
        .filter(|(n, _)| n == env::FILE_MODE || n == env::PLAN_FROM)
        .map(|(n, v)| (n.as_str(), v.as_str()));
    let args = AgentArgs::from_rendered(vars).unwrap();
    assert_eq!(args.plan_fields().from_annotations(), Ok(true));
    let carried = contract::carried_annotations(env.iter().map(|(n, v)| (n.into(), v.into())));
    assert_eq!(
        carried,
        annotations(pod)
            .into_iter()
            .filter(|(k, _)| k.starts_with(spec::PREFIX) && k != spec::STATUS)
            .collect::<BTreeMap<_, _>>(),
        "the agent carries the pod's annotations"
    );
    args.plan_fields().parse_annotations(&carried).unwrap()
}

/// The webhook-mode and policy-mode namespaces, side by side.
struct BothModes {
    policy: PolicyMode,
    webhook_ns: Namespaces,
    _release: Release,
}

impl BothModes {
    fn install(test: &str) -> BothModes {
        let webhook_ns = Namespaces::new(&format!("{test}-wh"), &[]);
        let release = Release::install(&webhook_ns, &[]);
        BothModes {
            policy: PolicyMode::install(&format!("{test}-pol")),
            webhook_ns,
            _release: release,
        }
    }

    /// Create the ServiceAccount `name` in both app namespaces.
    fn service_account(&self, name: &str) {
        for ns in [&self.webhook_ns.app, &self.policy.ns.app] {
            let output =
                self.webhook_ns
                    .plane
                    .kubectl(&["create", "serviceaccount", name, "-n", ns]);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success() || stderr.contains("already exists"),
                "{stderr}"
            );
        }
    }

    /// Dry-run `object` in both modes.
    fn both(&self, object: &Value) -> (Result<Value, String>, Result<Value, String>) {
        let plane = self.webhook_ns.plane;
        (
            dry_run(plane, &self.webhook_ns.app, object),
            dry_run(plane, &self.policy.ns.app, object),
        )
    }
}

/// A pod of a golden AdmissionReview as a user would create it: no namespace, no token volume
/// (the API server adds its own), no owner.
fn golden_pod(request: &Value) -> Option<Value> {
    let request = &request["request"];
    if request["operation"] != "CREATE" || request["object"]["kind"] != "Pod" {
        return None;
    }
    let mut pod = request["object"].clone();
    let meta = pod["metadata"].as_object_mut().unwrap();
    for field in ["namespace", "creationTimestamp", "ownerReferences", "uid"] {
        meta.remove(field);
    }
    let token = |v: &Value| {
        v["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    };
    if let Some(volumes) = pod["spec"]["volumes"].as_array_mut() {
        volumes.retain(|v| !token(v));
    }
    for field in ["containers", "initContainers"] {
        for c in pod["spec"][field].as_array_mut().into_iter().flatten() {
            if let Some(mounts) = c["volumeMounts"].as_array_mut() {
                mounts.retain(|m| !token(m));
            }
        }
    }
    if let Some(status) = pod.as_object_mut() {
        status.remove("status");
    }
    Some(pod)
}

/// The golden pods the webhook injects, by case name.
fn golden_injected() -> Vec<(String, Value)> {
    let dir = repo_root().join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let read = |path: std::path::PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    cases
        .into_iter()
        .filter_map(|case| {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            let response = read(case.join("response.json"));
            if response["response"]["patchDecoded"].is_null() {
                return None;
            }
            golden_pod(&read(case.join("request.json"))).map(|pod| (name, pod))
        })
        .collect()
}

/// Compare the two stored pods of one case: equal modulo the carrier, the same file mode, the
/// same plan by the agent's own parser.
fn assert_equivalent(case: &str, webhook: Value, policy: Value) -> Result<(), String> {
    let (webhook_env, policy_env) = (agent_env(&webhook), agent_env(&policy));
    let file_mode = value_of(&webhook_env, env::FILE_MODE);
    if file_mode != value_of(&policy_env, env::FILE_MODE) {
        return Err(format!(
            "{case}: file mode: webhook {file_mode:?}, policy {:?}",
            value_of(&policy_env, env::FILE_MODE)
        ));
    }
    let (webhook_plan, policy_plan) = (webhook_plan(&webhook), policy_plan(&policy));
    if webhook_plan != policy_plan {
        return Err(format!(
            "{case}: plans differ\nwebhook: {webhook_plan:?}\npolicy:  {policy_plan:?}"
        ));
    }
    let plan_vars = plan_vars();
    let (webhook, policy) = (
        normalized(webhook, |n| plan_vars.contains(&n)),
        normalized(policy, policy_carrier),
    );
    if webhook != policy {
        return Err(format!(
            "{case}: stored pods differ\n{}",
            json_diff(&webhook, &policy, "")
        ));
    }
    Ok(())
}

/// Where two JSON values differ, one line each.
fn json_diff(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .map(|k| {
                    json_diff(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        &format!("{at}.{k}"),
                    )
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .map(|(i, (x, y))| json_diff(x, y, &format!("{at}[{i}]")))
            .collect(),
        (x, y) if x == y => String::new(),
        (x, y) => format!("{at}: webhook {x}, policy {y}\n"),
    }
}

/// Issue 23: for every golden pod the webhook injects and a sample of generated pods, within
/// the subset the pod stored in policy mode is the webhook's but for the plan's carrier (and the
/// agent's parser builds the same plan from both carriers); outside it, policy mode denies the
/// pod naming the annotation, the feature and webhook mode.
#[test]
fn policy_mode_stores_the_webhooks_pod_modulo_the_carrier_and_denies_the_rest() {
    use crate::common::random_pod::{self, Outcome};
    let modes = BothModes::install("equiv");
    let mut pods: Vec<(String, Value)> = golden_injected()
        .into_iter()
        .map(|(name, pod)| (format!("golden {name}"), pod))
        .collect();
    let golden = pods.len();
    assert!(golden >= 5, "golden pods the webhook injects: {golden}");
    let mut inside = 0;
    for case in random_pod::sample(120, 0) {
        assert!(matches!(case.outcome, Outcome::Inject(_)));
        let in_subset = unsupported(&annotations(&case.pod)).is_empty();
        if in_subset && inside >= 30 {
            continue;
        }
        inside += usize::from(in_subset);
        let name = case.pod["metadata"]["name"].as_str().unwrap().to_owned();
        pods.push((name, case.pod));
    }
    assert_eq!(inside, 30, "generated pods within the subset");
    let mut failures = Vec::new();
    let (mut equal, mut denied) = (0, 0);
    for (case, pod) in &pods {
        if let Some(sa) = pod["spec"]["serviceAccountName"].as_str() {
            modes.service_account(sa);
        }
        let (webhook, policy) = modes.both(pod);
        let webhook = webhook.unwrap_or_else(|e| panic!("{case}: webhook mode refused: {e}"));
        assert_eq!(
            agent(&webhook)["name"],
            contract::CONTAINER_NAME,
            "{case}: webhook injects"
        );
        let outside = unsupported(&annotations(pod));
        if outside.is_empty() {
            match policy {
                Ok(policy) => match assert_equivalent(case, webhook, policy) {
                    Ok(()) => equal += 1,
                    Err(e) => failures.push(e),
                },
                Err(e) => failures.push(format!("{case}: policy mode refused: {e}")),
            }
            continue;
        }
        // Denied naming one of its unsupported annotations, the feature and webhook mode.
        match policy {
            Ok(_) => failures.push(format!("{case}: policy mode admitted {outside:?}")),
            Err(message) => {
                let named = outside.iter().any(|(key, feature)| {
                    message.contains(&format!("annotation {key}: ")) && message.contains(feature)
                });
                if named && message.contains("webhook mode") {
                    denied += 1;
                } else {
                    failures.push(format!("{case}: denial for {outside:?}: {message}"));
                }
            }
        }
    }
    eprintln!(
        "{golden} golden + {} generated pods: {equal} stored equal, {denied} denied outside the subset",
        pods.len() - golden
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(equal >= golden.min(5) + 30, "{equal} compared");
    assert!(denied > 0, "no pod outside the subset was tried");
}
