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
    mutate(&metadata, &spec, &MutationConfig::default())
        .map(|m| m.map(|m| m.patch))
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

    #[test]
    fn any_pod_shape_gets_one_mount_per_container_and_keeps_its_order(
        containers in 1usize..4,
        inits in 0usize..4,
        has_volumes in any::<bool>(),
        has_mounts in proptest::collection::vec(any::<bool>(), 8),
        native_sidecar in any::<bool>(),
    ) {
        let mut pod = pod_with(json!({ "secrets.k8s.aws/secret-arn": ARN }));
        let container = |name: String, i: usize| {
            let mut c = json!({ "name": name, "image": "x" });
            if has_mounts[i] {
                c["volumeMounts"] = json!([{ "name": "data", "mountPath": format!("/data{i}") }]);
            }
            c
        };
        pod["spec"]["containers"] = (0..containers).map(|i| container(format!("app{i}"), i)).collect();
        if inits > 0 {
            pod["spec"]["initContainers"] = (0..inits).map(|i| {
                let mut c = container(format!("init{i}"), 4 + i % 4);
                if native_sidecar && i == 0 {
                    c["restartPolicy"] = json!("Always");
                }
                c
            }).collect();
        }
        if has_volumes {
            pod["spec"]["volumes"] = json!([{ "name": "data", "emptyDir": {} }]);
        }
        let patch = run(&pod).unwrap().unwrap();
        let mut patched = pod.clone();
        json_patch::patch(&mut patched, &patch).unwrap();

        let names = |field: &str| -> Vec<String> {
            patched["spec"][field].as_array().map(|a| a.iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()).unwrap_or_default()
        };
        let mut expected_inits = vec!["secrets-init-container".to_owned()];
        expected_inits.extend((0..inits).map(|i| format!("init{i}")));
        prop_assert_eq!(names("initContainers"), expected_inits);
        prop_assert_eq!(names("containers"), (0..containers).map(|i| format!("app{i}")).collect::<Vec<_>>());
        for field in ["containers", "initContainers"] {
            for c in patched["spec"][field].as_array().unwrap() {
                let ours = c["volumeMounts"].as_array().unwrap().iter().filter(|m| m["name"] == "secret-vol").count();
                prop_assert_eq!(ours, 1, "{}", c);
            }
        }
        if native_sidecar && inits > 0 {
            prop_assert_eq!(&patched["spec"]["initContainers"][1]["restartPolicy"], "Always");
        }
        let volumes = patched["spec"]["volumes"].as_array().unwrap();
        prop_assert_eq!(volumes.iter().filter(|v| v["name"] == "secret-vol").count(), 1);
        prop_assert_eq!(volumes.len(), 1 + usize::from(has_volumes));
        prop_assert_eq!(run(&patched), Ok(None));
    }
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
                prop_assert_eq!(spec["volumes"].as_array().unwrap().len(), 1);
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
