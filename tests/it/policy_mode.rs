//! Policy mode (issue 23) on the real API server 1.36: the MutatingAdmissionPolicy and
//! ValidatingAdmissionPolicy that `secret-inject admission-policy` prints, applied with kubectl,
//! compared with webhook mode (the chart and our webhook, [`Release`]) on the same pods.
//!
//! Policy mode is installed once per test binary ([`POLICY_NAME`]); the bindings select namespaces labelled `policy.secret-inject.test/enabled=enabled`, which each
//! test sets on an app namespace of its own ([`PolicyMode`]).
//!
//! Which check runs where, as the tests below assert it (`VAP`: the ValidatingAdmissionPolicy
//! denies at `kubectl apply`; `agent`: admitted, the agent fails at pod start with its
//! termination message; `webhook`: the webhook denies at `kubectl apply`):
//!
//! | check                                              | webhook mode | policy mode | message                 |
//! |----------------------------------------------------|--------------|-------------|-------------------------|
//! | unknown `secrets.k8s.aws/` key (case-only typo)    | webhook      | VAP         | same text (did you mean)|
//! | `secret-arn` not an ARN                            | webhook      | VAP         | differ: both name it, say why, fix |
//! | `secret-format` not a format                       | webhook      | VAP         | same text               |
//! | `refresh-interval` outside 30s..24h                | webhook      | VAP         | differ: both say why    |
//! | `restart-on-change` not true/false                 | webhook      | VAP         | same text               |
//! | `init-container-position` not first/last           | webhook      | VAP         | same text               |
//! | `reload-signal` not a signal                       | webhook      | VAP         | differ: both list them  |
//! | `mount-path` with `..`                             | webhook      | VAP         | differ: both say why    |
//! | `spec.os.name: windows`                            | webhook      | VAP (the MAP skips the pod) | differ: both say why |
//! | `env`, `containers`, `metrics-*`, `volume-size-limit`, top-level names > 120 chars | injected | VAP: names the feature and webhook mode | - |
//! | the rest of the grammar (versions, keys, file names, ...) | webhook | agent at pod start (same parser; not asserted here) | the agent's termination message |
//!
//! Where the messages differ the webhook's is the more specific (it quotes the value and,
//! for an ARN, names the service it belongs to); the VAP's gives the rule and a fix. Asserted
//! by [`the_vaps_denials_match_the_webhooks_messages`].

use std::collections::BTreeMap;

use secret_inject::cli::AgentArgs;
use secret_inject::contract::{self, Carrier, Plan, PodFields, SecretFields, env};
use secret_inject::mutate::policy::{MAX_TOP_LEVEL_NAME, UNSUPPORTED};
use secret_inject::spec;
use serde_json::{Value, json};

use crate::common::controlplane::without_token_volume;
use crate::common::controlplane::{ControlPlane, Namespaces, Release};
use crate::common::node::register_irsa_as;
use crate::common::policy::{
    AdmissionPolicy, POLICY_READY, dry_run, injected, restricted_pod, wait_injecting,
};
use crate::common::repo_root;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

/// Policy mode for one test's namespaces: its app namespace labelled for the policy
/// ([`shared_policy`]).
pub struct PolicyMode {
    pub ns: Namespaces,
}

/// The test binary installs policy mode once (the control plane goes with the binary), and each
/// test labels its own app namespace for it; `an_uninstall_and_a_reinstall_...` installs its own.
const POLICY_NAME: &str = "secret-inject-policy-tests";
const POLICY_LABEL: &str = "policy.secret-inject.test/enabled";

impl PolicyMode {
    /// The test's namespaces, the app namespace labelled for the policy the test binary
    /// installs once ([`AdmissionPolicy`], kept until the control plane goes), injecting there.
    pub fn install(test: &str) -> PolicyMode {
        static INSTALLED: std::sync::OnceLock<AdmissionPolicy> = std::sync::OnceLock::new();
        let ns = Namespaces::new(test, &[(POLICY_LABEL, "enabled")]);
        let plane = ns.plane;
        INSTALLED.get_or_init(|| {
            AdmissionPolicy::install(plane, POLICY_NAME, POLICY_LABEL, &ns.app, &[])
        });
        wait_injecting(plane, &ns.app);
        PolicyMode { ns }
    }
}

/// A restricted-PSS-compliant pod with `annotations`.
fn pod(name: &str, annotations: Value) -> Value {
    restricted_pod("name", name, annotations)
}

/// kubectl `args` with `object` on stdin, which must succeed.
fn create_ok(plane: &ControlPlane, args: &[&str], object: &Value) {
    let output = plane.kubectl_stdin(args, Some(object.to_string().as_bytes()));
    assert!(
        output.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
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
    let mut pod = without_token_volume(pod);
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

/// Issue 23: another mutating webhook after the policy (the IRSA stand-in) makes the API server
/// re-invoke it, which changes nothing: one agent, one volume, the identity on the agent once.
/// PodSecurity `restricted` admits the injected pod; a server-side dry run stores nothing; an
/// UPDATE of a created pod is left alone.
#[test]
fn policy_mode_is_idempotent_under_reinvocation_restricted_dry_run_and_updates() {
    use crate::common::irsa_webhook::{IrsaWebhook, TOKEN_DIR};

    let policy = PolicyMode::install("polreinv");
    let plane = policy.ns.plane;
    let app = &policy.ns.app;
    plane.kubectl_ok(&[
        "label",
        "namespace",
        app,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let role = "arn:aws:iam::123456789012:role/webserver-secrets-role";
    let irsa = IrsaWebhook::start("webserver-service-account", role);
    // After every other webhook: the policy runs first, then this, then the policy again.
    let configuration = format!("zzzz-irsa-{}", policy.ns.name);
    register_irsa_as(&policy.ns, &irsa, &configuration);
    plane.kubectl_ok(&[
        "create",
        "serviceaccount",
        "webserver-service-account",
        "-n",
        app,
    ]);

    let mut restricted = pod("irsa", json!({spec::SECRET_ARN: ARN}));
    restricted["spec"]["serviceAccountName"] = json!("webserver-service-account");
    // Server-side dry run: the injected pod comes back, nothing is stored.
    let dry = dry_run(plane, app, &restricted).unwrap();
    assert_eq!(init_names(&dry), [contract::CONTAINER_NAME]);
    assert!(
        !plane.exists("pod", "irsa", app),
        "a dry run stored the pod"
    );

    create_ok(plane, &["create", "-n", app, "-f", "-"], &restricted);
    let stored = plane.get_json(&["pod", "irsa", "-n", app]);
    assert_eq!(init_names(&stored), [contract::CONTAINER_NAME], "one agent");
    let volumes = stored["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes
            .iter()
            .filter(|v| v["name"] == contract::VOLUME_NAME)
            .count(),
        1,
        "one secret-vol: {volumes:?}"
    );
    let env = agent_env(&stored);
    let count = |name: &str| env.iter().filter(|(n, _)| n == name).count();
    assert_eq!(count("AWS_ROLE_ARN"), 1, "{env:?}");
    assert_eq!(value_of(&env, "AWS_ROLE_ARN"), Some(role));
    assert_eq!(count(spec::SECRET_ARN), 1, "{env:?}");
    let token_mounts = agent(&stored)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["mountPath"] == TOKEN_DIR)
        .count();
    assert_eq!(token_mounts, 1, "{}", agent(&stored));
    // Dry run and creation give the same pod (but for what each creation generates).
    assert_eq!(
        normalized(dry, |_| false),
        normalized(stored.clone(), |_| false)
    );

    // PodSecurity restricted refuses a non-compliant pod: the enforcement is live.
    let mut privileged = pod("privileged", json!({spec::SECRET_ARN: ARN}));
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let refused = dry_run(plane, app, &privileged).unwrap_err();
    assert!(
        refused.contains("violates PodSecurity \"restricted"),
        "{refused}"
    );

    // An UPDATE is not the policy's: a label and an annotation change nothing else.
    plane.kubectl_ok(&["label", "pod", "irsa", "-n", app, "tier=web"]);
    plane.kubectl_ok(&[
        "annotate",
        "pod",
        "irsa",
        "-n",
        app,
        &format!("{}=disabled", spec::INJECTOR_WEBHOOK),
    ]);
    let after = plane.get_json(&["pod", "irsa", "-n", app]);
    assert_eq!(after["metadata"]["labels"]["tier"], "web");
    assert_eq!(after["spec"], stored["spec"]);
    plane.kubectl_ok(&["delete", "mutatingwebhookconfiguration", &configuration]);
}

/// Issue 23: the ValidatingAdmissionPolicy's denials through kubectl, next to the webhook's for
/// the same annotations (the table in this module's documentation). Where the VAP claims parity
/// the `annotation KEY: PROBLEM; FIX` text is the webhook's; elsewhere both name the key and say
/// why.
#[test]
fn the_vaps_denials_match_the_webhooks_messages() {
    let modes = BothModes::install("vap");
    let base = |extra: &[(&str, &str)]| {
        let mut annotations = serde_json::Map::new();
        annotations.insert(spec::SECRET_ARN.to_owned(), json!(ARN));
        for (k, v) in extra {
            annotations.insert((*k).to_owned(), json!(v));
        }
        pod("denied", Value::Object(annotations))
    };
    // (case, pod, key named, parity: the same `annotation KEY: ...` text in both modes).
    let mut windows = base(&[]);
    windows["spec"]["os"] = json!({"name": "windows"});
    windows["spec"]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    windows["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let bad_arn = {
        let mut p = base(&[]);
        p["metadata"]["annotations"][spec::SECRET_ARN] = json!("arn:aws:iam::123456789012:role/x");
        p
    };
    let cases: Vec<(&str, Value, &str, bool)> = vec![
        ("bad ARN", bad_arn, spec::SECRET_ARN, false),
        (
            "bad format",
            base(&[(spec::SECRET_FORMAT, "yaml")]),
            spec::SECRET_FORMAT,
            true,
        ),
        (
            "bad refresh interval",
            base(&[(spec::REFRESH_INTERVAL, "5s")]),
            spec::REFRESH_INTERVAL,
            false,
        ),
        (
            "bad restart-on-change",
            base(&[
                (spec::REFRESH_INTERVAL, "5m"),
                (spec::RESTART_ON_CHANGE, "yes"),
            ]),
            spec::RESTART_ON_CHANGE,
            true,
        ),
        (
            "bad position",
            base(&[(spec::INIT_CONTAINER_POSITION, "middle")]),
            spec::INIT_CONTAINER_POSITION,
            true,
        ),
        (
            "bad signal",
            base(&[
                (spec::REFRESH_INTERVAL, "5m"),
                (spec::RELOAD_SIGNAL, "KILL"),
                (spec::RELOAD_PROCESS, "nginx"),
            ]),
            spec::RELOAD_SIGNAL,
            false,
        ),
        (
            "mount path with ..",
            base(&[(spec::MOUNT_PATH, "/var/run/../secrets")]),
            spec::MOUNT_PATH,
            false,
        ),
        ("Windows pod", windows, "spec.os.name", false),
        (
            "switch of another value",
            base(&[(spec::INJECTOR_WEBHOOK, "true")]),
            spec::INJECTOR_WEBHOOK,
            true,
        ),
        (
            "switch without a secret",
            pod("denied", json!({spec::INJECTOR_WEBHOOK: "enabled"})),
            spec::SECRET_ARN,
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (case, object, key, parity) in cases {
        let (webhook, policy) = modes.both(&object);
        let (Err(webhook), Err(policy)) = (webhook, policy) else {
            failures.push(format!("{case}: not denied in both modes"));
            continue;
        };
        // The message after the API server's prefix: `annotation KEY: ...` or `spec.os.name: ...`.
        let text = |message: &str| -> Option<String> {
            let at = message
                .find(&format!("annotation {key}: "))
                .or_else(|| message.find(&format!("{key}: ")))?;
            Some(message[at..].trim_end().to_owned())
        };
        eprintln!(
            "{case}:\n  webhook: {}\n  policy:  {}",
            webhook.trim(),
            policy.trim()
        );
        match (text(&webhook), text(&policy)) {
            (Some(w), Some(p)) if parity && w != p => {
                failures.push(format!(
                    "{case}: texts differ\n  webhook: {w}\n  policy:  {p}"
                ));
            }
            (Some(_), Some(p)) if !parity && !p.contains("; ") => {
                failures.push(format!("{case}: the policy's message gives no fix: {p}"));
            }
            (Some(_), Some(_)) => {}
            (w, p) => failures.push(format!(
                "{case}: {key} not named\n  webhook: {w:?}\n  policy:  {p:?}"
            )),
        }
        assert!(
            policy.contains("ValidatingAdmissionPolicy"),
            "{case}: {policy}"
        );
    }
    // A case-only typo of a key: both deny it naming the key it meant, in the same words.
    let typo = "secrets.k8s.aws/Secret-ARN";
    let mut misspelt = base(&[]);
    misspelt["metadata"]["annotations"][typo] = json!(ARN);
    let (webhook, policy) = modes.both(&misspelt);
    let expected = format!(
        "annotation {typo}: is not a secret-inject annotation; did you mean {}?",
        spec::SECRET_ARN
    );
    for (mode, outcome) in [("webhook", webhook), ("policy", policy)] {
        let message = outcome.err().unwrap_or_default();
        assert!(message.contains(&expected), "{mode}: {message}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An uninstall and a reinstall (another name) keep injecting. With the operator's settings in
/// a parameters ConfigMap (`paramKind`) they did not: the API server 1.36.3 stops its shared
/// ConfigMap informer when the last policy using ConfigMap parameters goes away, and every later
/// binding answered "no params found" (so every annotated pod was refused) until a restart.
#[test]
fn an_uninstall_and_a_reinstall_keep_injecting() {
    let label = "policy.secret-inject.test/reinstall";
    let ns = Namespaces::new("policy-reinstall", &[(label, "enabled")]);
    let plane = ns.plane;
    let first = AdmissionPolicy::install(plane, "secret-inject-reinstall-a", label, &ns.app, &[]);
    drop(first);
    // Uninstalled: a pod is stored as given again.
    plane.wait_for("the first install to be gone", POLICY_READY, || {
        dry_run(
            plane,
            &ns.app,
            &pod("probe", json!({spec::SECRET_ARN: ARN})),
        )
        .is_ok_and(|p| !injected(&p))
    });
    // Another install injects (AdmissionPolicy::install waits until it does).
    let _second = AdmissionPolicy::install(plane, "secret-inject-reinstall-b", label, &ns.app, &[]);
}
