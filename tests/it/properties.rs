//! Property tests of the mutation: whatever the annotation values and pod shape, the patch has
//! the same structure, applies cleanly, keeps what was there, and a second pass is a no-op.

use json_patch::{Patch, PatchOperation};
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proptest::prelude::*;
use secret_inject::mutate::{MutationConfig, mutate};
use serde_json::{Value, json};

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

fn run(pod: &Value) -> Result<Option<Patch>, String> {
    let metadata: ObjectMeta = serde_json::from_value(pod["metadata"].clone()).unwrap();
    let spec: PodSpec = serde_json::from_value(pod["spec"].clone()).unwrap();
    mutate(
        &(&metadata).into(),
        &(&spec).into(),
        &MutationConfig::default(),
    )
    .map(|m| m.patch.map(|patch| patch.to_patch()))
    .map_err(|e| e.to_string())
}

fn paths(patch: &Patch) -> Vec<String> {
    patch
        .0
        .iter()
        .map(|op| match op {
            PatchOperation::Add(add) => add.path.to_string(),
            other => panic!("unexpected operation {other:?}"),
        })
        .collect()
}

fn pod_with(annotations: Value) -> Value {
    json!({
        "metadata": { "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "app" }] }
    })
}

/// Strings rich in JSON, JSON Pointer and path syntax.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[-/~.\"{}\\[\\],:a-z0-9 ]{0,40}",
        Just("/tmp".to_owned()),
        Just("secret".to_owned()),
        Just(ARN.to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn annotation_values_never_change_the_patch_structure(
        mount in nasty(), file in nasty(), arn in nasty(), position in nasty(),
    ) {
        let reference = paths(&run(&pod_with(json!({ "secrets.k8s.aws/secret-arn": ARN }))).unwrap().unwrap());
        let pod = pod_with(json!({
            "secrets.k8s.aws/secret-arn": arn,
            "secrets.k8s.aws/mount-path": mount,
            "secrets.k8s.aws/secret-filename": file,
            "secrets.k8s.aws/init-container-position": position,
        }));
        match run(&pod) {
            Err(message) => prop_assert!(message.starts_with("annotation secrets.k8s.aws/"), "{}", message),
            Ok(None) => prop_assert!(false, "an ARN annotation must inject or deny"),
            Ok(Some(patch)) => {
                prop_assert_eq!(paths(&patch), reference);
                let mut patched = pod.clone();
                json_patch::patch(&mut patched, &patch).unwrap();
                prop_assert_eq!(run(&patched), Ok(None));
            }
        }
    }
}

/// A pod without app containers (which the API server refuses after admission: a Pod needs
/// one) is injected all the same, not denied: the agent and the volume, mounted in the init
/// containers that run after the agent, and in nothing else when the agent runs last. A
/// `containers` selection can name only init containers that run after the agent.
#[test]
fn a_pod_without_app_containers_is_injected_into_the_init_containers_after_the_agent() {
    let pod = |extra: Value| {
        let mut annotations = json!({ "secrets.k8s.aws/secret-arn": ARN });
        annotations
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({
            "metadata": { "annotations": annotations },
            "spec": { "containers": [], "initContainers": [{ "name": "setup", "image": "x" }] }
        })
    };
    let patched = |pod: &Value| {
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &run(pod).unwrap().unwrap()).unwrap();
        assert_eq!(run(&patched), Ok(None));
        patched
    };
    let names = |pod: &Value| -> Vec<(String, bool)> {
        pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let mounted = c["volumeMounts"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["name"] == "secret-vol"));
                (c["name"].as_str().unwrap().to_owned(), mounted)
            })
            .collect()
    };
    let agent = ("secrets-init-container".to_owned(), true);
    for extra in [json!({}), json!({ "secrets.k8s.aws/containers": "setup" })] {
        let first = patched(&pod(extra));
        assert_eq!(first["spec"]["containers"], json!([]));
        assert_eq!(names(&first), [agent.clone(), ("setup".to_owned(), true)]);
    }
    let last = patched(&pod(
        json!({ "secrets.k8s.aws/init-container-position": "last" }),
    ));
    assert_eq!(names(&last), [("setup".to_owned(), false), agent]);
    assert_eq!(last["spec"]["volumes"][0]["name"], "secret-vol");
    let err = run(&pod(json!({ "secrets.k8s.aws/containers": "app" }))).unwrap_err();
    assert!(
        err.starts_with(
            "annotation secrets.k8s.aws/containers: the pod has no container named \"app\""
        ),
        "{err}"
    );
}

/// A pod's named secrets: names, formats, keys and env bindings, some colliding on purpose.
fn named_secrets() -> impl Strategy<Value = Vec<(String, String, Option<String>, Option<String>)>> {
    prop::collection::vec(
        (
            "[a-c]{1,2}",
            prop_oneof![Just("raw"), Just("json"), Just("env"), Just("split")]
                .prop_map(str::to_owned),
            prop::option::of(nasty()),
            prop::option::of("[A-C]{1,2}=[a-z]{1,3}"),
        ),
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Many secrets: the pod is injected or denied naming an annotation; an injected pod has
    /// one volume, one agent, one mount per container and one fileKeyRef per env var, with the
    /// named secrets rendered once each; a second pass is a no-op.
    #[test]
    fn many_secrets_inject_once_or_are_denied_naming_the_annotation(secrets in named_secrets()) {
        let mut annotations = serde_json::Map::new();
        for (name, format, key, env) in &secrets {
            annotations.insert(format!("secrets.k8s.aws/secret-arn.{name}"), json!(ARN));
            annotations.insert(format!("secrets.k8s.aws/secret-format.{name}"), json!(format));
            if let Some(key) = key {
                annotations.insert(format!("secrets.k8s.aws/secret-key.{name}"), json!(key));
            }
            if let Some(env) = env {
                annotations.insert(format!("secrets.k8s.aws/env.{name}"), json!(env));
            }
        }
        let pod = json!({
            "metadata": { "annotations": annotations },
            "spec": { "containers": [{ "name": "app", "image": "app" }, { "name": "b", "image": "b" }] }
        });
        match run(&pod) {
            Err(message) => prop_assert!(message.starts_with("annotation secrets.k8s.aws/"), "{}", message),
            Ok(None) => prop_assert!(false, "named ARNs must inject or deny"),
            Ok(Some(patch)) => {
                let mut patched = pod.clone();
                json_patch::patch(&mut patched, &patch).unwrap();
                let spec = &patched["spec"];
                prop_assert_eq!(spec["volumes"].as_array().unwrap().iter()
                    .filter(|v| v["name"] == "secret-vol").count(), 1);
                prop_assert_eq!(spec["initContainers"].as_array().unwrap().len(), 1);
                let agent = &spec["initContainers"][0];
                let rendered = agent["env"].as_array().unwrap().iter()
                    .find(|e| e["name"] == "SECRET_INJECT_SECRETS").unwrap()["value"].as_str().unwrap();
                let rendered: Vec<Value> = serde_json::from_str(rendered).unwrap();
                let mut names: Vec<&str> = secrets.iter().map(|s| s.0.as_str()).collect();
                names.sort();
                names.dedup();
                prop_assert_eq!(rendered.len(), names.len());
                let vars: usize = rendered.iter()
                    .filter_map(|s| s["env"].as_str())
                    .map(|e| e.split(',').count())
                    .sum();
                for container in spec["containers"].as_array().unwrap() {
                    let mounts = container["volumeMounts"].as_array().unwrap();
                    prop_assert_eq!(mounts.iter().filter(|m| m["name"] == "secret-vol").count(), 1);
                    let file_vars = container["env"].as_array().into_iter().flatten()
                        .filter(|e| e["valueFrom"]["fileKeyRef"]["path"] == "..data/..env")
                        .count();
                    prop_assert_eq!(file_vars, vars);
                }
                prop_assert_eq!(run(&patched), Ok(None));
            }
        }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        nasty().prop_map(Value::String),
        "(yes|no|on|off|y|n|~|null|0[0-7]{1,3}|[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{1,2}:[0-9]{2})"
            .prop_map(Value::String),
        "[a \u{85}\u{2028}\u{2029}\u{feff}\u{7f}\u{9f}\u{1}\t\r\n\"\\\\]{0,8}"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((nasty(), inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn yaml_output_reads_back_as_the_same_json(value in json_value()) {
        use serde::Deserialize as _;
        let yaml = secret_inject::offline::yaml::to_string(&value);
        let back = Value::deserialize(yaml_serde::Deserializer::from_str(&yaml));
        prop_assert!(back.is_ok(), "{:?}\n{}", back, yaml);
        prop_assert_eq!(back.unwrap(), value, "{}", yaml);
    }
}

mod random_pods {
    //! Random pods (0-5 containers and init containers, native sidecars, volumes, mounts, env,
    //! annotations, security contexts, pod-level resources, an IRSA identity) with random
    //! annotation sets, valid or broken on purpose (`common::random_pod`).

    use k8s_openapi::api::core::v1::Pod;
    use proptest::prelude::*;

    use super::run;
    use crate::common::{
        self,
        random_pod::{self, Case, Outcome},
    };

    fn check(case: &Case) -> Result<(), String> {
        match (&case.outcome, run(&case.pod)) {
            (Outcome::Inject(injection), Ok(Some(patch))) => {
                let mut patched = case.pod.clone();
                json_patch::patch(&mut patched, &patch)
                    .map_err(|e| format!("the patch does not apply: {e}"))?;
                serde_json::from_value::<Pod>(patched.clone())
                    .map_err(|e| format!("the patched pod is not a Pod: {e}"))?;
                let expected = random_pod::expected_pod(case, &patched)?;
                if patched != expected {
                    return Err(format!(
                        "patched pod differs from the expected one\npatched:  {patched}\nexpected: {expected}"
                    ));
                }
                let mounts = random_pod::secret_mounts(&patched);
                if mounts != random_pod::expected_secret_mounts(case, injection) {
                    return Err(format!("secret-vol mounts {mounts:?}"));
                }
                random_pod::check_agent(injection, &patched)?;
                match run(&patched) {
                    Ok(None) => Ok(()),
                    other => Err(format!("a second pass gave {other:?}")),
                }
            }
            (Outcome::Deny { key, .. }, Err(message)) => {
                let prefix = format!("annotation {key}: ");
                if message.starts_with(&prefix) {
                    Ok(())
                } else {
                    Err(format!("denied, but not naming {key}: {message}"))
                }
            }
            (Outcome::Inject(_), other) => Err(format!("a valid set gave {other:?}")),
            (Outcome::Deny { key, .. }, other) => {
                Err(format!("a set broken at {key} was not denied: {other:?}"))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// A valid set gives a patch that applies, yields a Pod, and changes the pod exactly as
        /// asked (every selected container mounts secret-vol once; what existed is still there,
        /// unchanged and in order); a second pass gives no patch. A broken set is denied, naming
        /// the broken annotation, and never patched.
        #[test]
        fn random_pods_with_random_annotation_sets_inject_as_asked_or_deny_naming_the_annotation(
            case in random_pod::case(),
        ) {
            let result = check(&case);
            prop_assert!(result.is_ok(), "{}\npod: {}", result.unwrap_err(), case.pod);
        }
    }

    /// The generator reaches what it claims: valid and broken sets, pods without app
    /// containers, native sidecars, selections, rotation, pod-level resources.
    #[test]
    fn the_generator_covers_every_dimension() {
        use proptest::strategy::ValueTree as _;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = random_pod::case();
        let mut seen = std::collections::BTreeMap::<&str, usize>::new();
        for _ in 0..2000 {
            let case = strategy.new_tree(&mut runner).unwrap().current();
            let spec = &case.pod["spec"];
            let text = case.pod.to_string();
            let mut count = |what, yes: bool| *seen.entry(what).or_default() += usize::from(yes);
            count("valid", case.valid());
            count("invalid", !case.valid());
            count("no app containers", case.app_containers() == 0);
            count("5 app containers", case.app_containers() == 5);
            count(
                "5 init containers",
                spec["initContainers"]
                    .as_array()
                    .is_some_and(|a| a.len() == 5),
            );
            count(
                "native sidecar",
                text.contains("\"restartPolicy\":\"Always\""),
            );
            count("volumes", spec["volumes"].is_array());
            count("mounts", text.contains("volumeMounts"));
            count("pod resources", spec["resources"].is_object());
            count("pod securityContext", spec["securityContext"].is_object());
            count(
                "container securityContext",
                text.contains("allowPrivilegeEscalation"),
            );
            count("irsa", text.contains("AWS_ROLE_ARN"));
            count(
                "selection",
                case.ours.contains_key("secrets.k8s.aws/containers"),
            );
            count(
                "named secrets",
                case.ours
                    .keys()
                    .any(|k| k.starts_with("secrets.k8s.aws/secret-arn.")),
            );
            count(
                "rotation",
                case.ours.contains_key("secrets.k8s.aws/refresh-interval"),
            );
            count(
                "env vars",
                case.ours
                    .keys()
                    .any(|k| k.starts_with("secrets.k8s.aws/env")),
            );
            count(
                "position last",
                case.ours
                    .get("secrets.k8s.aws/init-container-position")
                    .is_some_and(|v| v == "last"),
            );
            if let Outcome::Deny { key, broken } = &case.outcome {
                let broken = format!("broken {}", broken.split(' ').next().unwrap_or_default());
                *seen.entry(Box::leak(broken.into_boxed_str())).or_default() += 1;
                // By base key: `secret-arn.db` counts as `secret-arn`.
                let base = key.trim_start_matches("secrets.k8s.aws/");
                let base = format!("deny {}", base.split('.').next().unwrap_or_default());
                *seen.entry(Box::leak(base.into_boxed_str())).or_default() += 1;
            }
        }
        eprintln!("{seen:#?}");
        for (what, n) in &seen {
            assert!(*n >= 5, "only {n} of 2000 cases: {what}");
        }
        for what in [
            "no app containers",
            "native sidecar",
            "pod resources",
            "irsa",
            "selection",
            "position last",
        ] {
            assert!(
                seen.get(what).copied().unwrap_or(0) >= 20,
                "{what}: {seen:?}"
            );
        }
        let denials = seen.keys().filter(|k| k.starts_with("deny ")).count();
        assert!(
            denials >= 15,
            "only {denials} distinct denied keys: {seen:#?}"
        );
    }

    /// A fixed sample of the generated valid cases (proptest's deterministic runner) through the
    /// third-party tools: `kubectl patch --local --type=json` applies our patch to the same
    /// object json_patch gives, and `kubernetes-validate --strict` accepts the patched pod (on
    /// the oldest and newest supported versions; only the newest when the pod uses fields the
    /// oldest lacks: pod-level resources, fileKeyRef env vars, container restart rules).
    #[test]
    fn a_fixed_sample_patches_as_kubectl_patches_and_validates_strictly() {
        let work = tempfile::tempdir().unwrap();
        let (mut everywhere, mut newest) = (Vec::new(), Vec::new());
        let sample = random_pod::sample(8, 0);
        for case in &sample {
            let patch = run(&case.pod).unwrap().expect("a valid case gives a patch");
            let mut ours = case.pod.clone();
            json_patch::patch(&mut ours, &patch).unwrap();
            let name = case.pod["metadata"]["name"].as_str().unwrap();
            let dir = work.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            let kubectl = common::kubectl_patch_local(
                &dir,
                &case.pod,
                &serde_json::to_value(&patch).unwrap(),
            );
            assert_eq!(kubectl, ours, "{name}: kubectl and json_patch differ");
            let text = ours.to_string();
            let new_fields = ours["spec"]["resources"].is_object()
                || text.contains("\"fileKeyRef\"")
                || text.contains("\"restartPolicyRules\"");
            if new_fields {
                &mut newest
            } else {
                &mut everywhere
            }
            .push(text);
        }
        assert_eq!(everywhere.len() + newest.len(), 8);
        for (docs, file, versions) in [
            (&everywhere, "everywhere.yaml", &common::KUBE_VERSIONS[..]),
            (&newest, "newest.yaml", &common::KUBE_VERSIONS[1..]),
        ] {
            if docs.is_empty() {
                continue;
            }
            let path = work.path().join(file);
            std::fs::write(&path, docs.join("\n---\n")).unwrap();
            for version in versions {
                let output = common::run_tool_raw(
                    "kubernetes-validate",
                    &["--strict", "-k", version, &path.to_string_lossy()],
                    None,
                );
                assert!(
                    output.status.success(),
                    "kubernetes-validate --strict -k {version} {file}:\n{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        eprintln!(
            "sample: {} pods validated on {:?}, {} on {}",
            everywhere.len(),
            common::KUBE_VERSIONS,
            newest.len(),
            common::KUBE_VERSIONS[1]
        );
    }
}
