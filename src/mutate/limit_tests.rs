//! The limits of one pod's injection: containers, and the size of the patch, measured before it
//! is built.

use serde_json::{Value, json};

use super::*;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

/// A pod with `containers` app containers (every other one with env and mounts of its own) and
/// `bindings` env vars from its secret.
fn wide_pod(containers: usize, bindings: usize) -> Value {
    let env: Vec<String> = (0..bindings).map(|i| format!("VAR_{i}=key{i}")).collect();
    let mut annotations = json!({ "secrets.k8s.aws/secret-arn": ARN });
    if bindings > 0 {
        annotations["secrets.k8s.aws/env"] = json!(env.join(","));
    }
    let containers: Vec<Value> = (0..containers)
        .map(|i| {
            if i % 2 == 0 {
                json!({ "name": format!("c{i}"), "image": "app" })
            } else {
                json!({
                    "name": format!("c{i}"), "image": "app",
                    "env": [{ "name": "OWN", "value": "x" }],
                    "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
                })
            }
        })
        .collect();
    json!({
        "metadata": { "annotations": annotations },
        "spec": {
            "containers": containers,
            "initContainers": [{ "name": "init", "image": "app" }],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        }
    })
}

fn run_within(pod: &Value, limits: Limits) -> Result<Option<Mutation>, MutationError> {
    let metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
        serde_json::from_value(pod["metadata"].clone()).unwrap();
    let spec: k8s_openapi::api::core::v1::PodSpec =
        serde_json::from_value(pod["spec"].clone()).unwrap();
    let config = MutationConfig {
        limits,
        ..MutationConfig::default()
    };
    mutate(&(&metadata).into(), &(&spec).into(), &config).map(|m| m.patch.is_some().then_some(m))
}

fn limit_error(result: Result<Option<Mutation>, MutationError>) -> LimitError {
    match result {
        Err(MutationError::Limit(error)) => error,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn the_patch_size_is_known_exactly_before_it_is_built() {
    let pod = wide_pod(7, 20);
    let patch = run_within(&pod, Limits::default())
        .unwrap()
        .unwrap()
        .patch
        .unwrap();
    let bytes = serde_json::to_vec(&patch).unwrap().len();
    assert_eq!(patch.json_len(), bytes);
    // Exactly the patch's size is allowed; a byte less is not, and says by how much.
    let at = Limits {
        patch_bytes: bytes,
        ..Limits::default()
    };
    assert_eq!(
        run_within(&pod, at).unwrap().unwrap().patch.as_ref(),
        Some(&patch)
    );
    let error = limit_error(run_within(
        &pod,
        Limits {
            patch_bytes: bytes - 1,
            ..Limits::default()
        },
    ));
    assert_eq!(
        (error.limit, error.found, error.max),
        (Limit::PatchBytes, bytes, bytes - 1)
    );
    assert!(error.to_string().contains("--max-patch-bytes"), "{error}");
    // The part that grows with the containers (every op but the init container's) is measured
    // before it is built, exactly.
    let containers_part = JsonPatch(patch.0[..patch.0.len() - 1].to_vec()).json_len();
    let error = limit_error(run_within(
        &pod,
        Limits {
            patch_bytes: containers_part - 1,
            ..Limits::default()
        },
    ));
    assert_eq!(error.found, containers_part);
    assert!(
        error
            .field
            .starts_with("spec.containers and spec.initContainers (8 containers"),
        "{error}"
    );
}

#[test]
fn env_vars_times_containers_are_denied_before_the_patch_is_built() {
    // 40 app containers and an init container × 5,000 env vars: a patch of about 29 MB.
    let pod = wide_pod(40, 5000);
    let limits = Limits {
        env_bindings: 5000,
        ..Limits::default()
    };
    let error = limit_error(run_within(&pod, limits));
    assert_eq!(error.limit, Limit::PatchBytes);
    assert!(error.found > 20_000_000, "{}", error.found);
    let message = error.to_string();
    assert!(
        message.starts_with(
            "spec.containers and spec.initContainers (41 containers get the secret volume and \
             5000 env vars each)"
        ),
        "{message}"
    );
    assert!(message.contains(spec::CONTAINERS), "{message}");
    // Naming one container makes it fit.
    let mut one = pod.clone();
    one["metadata"]["annotations"][spec::CONTAINERS] = json!("c3");
    let patch = run_within(&one, limits).unwrap().unwrap().patch.unwrap();
    assert!(patch.json_len() < limits.patch_bytes);
    // The same bound holds on reinvocation, for containers added since.
    let mut injected = pod.clone();
    injected["metadata"]["annotations"][spec::STATUS] = json!(spec::STATUS_INJECTED);
    injected["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": contract::VOLUME_NAME, "emptyDir": {} }));
    let error = limit_error(run_within(&injected, limits));
    assert_eq!(error.limit, Limit::PatchBytes);
}

#[test]
fn containers_are_limited_on_pods_that_opt_in() {
    let limits = Limits {
        containers: 8,
        ..Limits::default()
    };
    // 7 containers and an init container: at the limit.
    assert!(run_within(&wide_pod(7, 0), limits).unwrap().is_some());
    let error = limit_error(run_within(&wide_pod(8, 0), limits));
    assert_eq!(
        (error.limit, error.found, error.max),
        (Limit::Containers, 9, 8)
    );
    assert!(
        error
            .to_string()
            .starts_with("spec.containers and spec.initContainers: 9 containers"),
        "{error}"
    );
    // A pod that does not opt in is not ours to limit.
    let mut plain = wide_pod(1000, 0);
    plain["metadata"]["annotations"] = json!({ "example.com/x": "y" });
    assert!(run_within(&plain, limits).unwrap().is_none());
}

#[test]
fn an_env_var_a_container_sets_already_is_found_among_many() {
    let mut pod = wide_pod(3, 300);
    pod["spec"]["containers"][1]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "VAR_299", "value": "mine" }));
    let Err(MutationError::Annotation(error)) = run_within(&pod, Limits::default()) else {
        panic!("VAR_299 is set by container c1")
    };
    assert_eq!(error.key, spec::ENV);
    assert!(
        error
            .problem
            .contains("container \"c1\" (spec.containers) already sets env var VAR_299"),
        "{error}"
    );
}

#[test]
fn limits_of_zero_are_refused() {
    let settings = Settings {
        limits: Limits {
            secrets: 0,
            ..Limits::default()
        },
        ..Settings::default()
    };
    let error = MutationConfig::new(&settings).unwrap_err();
    assert_eq!(error.flag, "max-secrets");
}
