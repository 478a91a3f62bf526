use serde_json::{Value, json};

use super::*;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

/// The pod as k8s-openapi's typed objects (so every test pod is a valid Pod).
fn parts(
    pod: &Value,
) -> (
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    k8s_openapi::api::core::v1::PodSpec,
) {
    (
        serde_json::from_value(pod["metadata"].clone()).unwrap(),
        serde_json::from_value(pod["spec"].clone()).unwrap(),
    )
}

/// [`mutate`] of the typed objects [`parts`] gives.
fn mutate_typed(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    config: &MutationConfig,
) -> Result<Option<Mutation>, MutationError> {
    mutate(&metadata.into(), &spec.into(), config).map(|m| m.patch.is_some().then_some(m))
}

fn run(pod: &Value) -> Result<Option<Mutation>, MutationError> {
    let (metadata, spec) = parts(pod);
    mutate_typed(&metadata, &spec, &MutationConfig::default())
}

/// Mutate and apply the patch; returns the patched pod.
fn apply(pod: &Value) -> Value {
    let mutation = run(pod).unwrap().expect("a patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.patch.as_ref().unwrap().to_patch()).unwrap();
    patched
}

fn seed_pod() -> Value {
    json!({
        "metadata": {
            "generateName": "webserver-66f6bb988f-",
            "annotations": {
                "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
                "secrets.k8s.aws/secret-arn": ARN,
            }
        },
        "spec": {
            "serviceAccountName": "webserver-service-account",
            "containers": [{
                "image": "busybox:1.28",
                "name": "webserver",
                "command": ["sh", "-c", "echo $(cat /tmp/secret) && sleep 3600"],
            }]
        }
    })
}

fn agent(pod: &Value) -> &Value {
    pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == contract::CONTAINER_NAME)
        .expect("injected container")
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn seed_pod_gets_volume_mount_and_init_container() {
    let patched = apply(&seed_pod());
    assert_eq!(
        patched["metadata"]["annotations"]["secrets.k8s.aws/status"],
        "injected"
    );
    assert_eq!(
        patched["spec"]["volumes"],
        json!([
            { "name": "secret-vol", "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } },
            { "name": "secret-inject-no-api-token",
              "emptyDir": { "medium": "Memory", "sizeLimit": "4Ki" } },
        ])
    );
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"],
        json!([{ "name": "secret-vol", "mountPath": "/tmp", "readOnly": true }])
    );
    let agent = agent(&patched);
    assert_eq!(
        agent["command"],
        json!(["/usr/local/bin/secret-inject", "agent"])
    );
    // The ARN admission validated, rendered as a value: what runs is what was admitted.
    assert_eq!(
        env(agent, "SECRET_ARN").unwrap(),
        &json!({"name": "SECRET_ARN", "value": seed_pod()["metadata"]["annotations"]["secrets.k8s.aws/secret-arn"]})
    );
    assert_eq!(
        env(agent, "SECRET_INJECT_VERSION_STAGE").unwrap()["value"],
        "AWSCURRENT"
    );
    assert_eq!(env(agent, "SECRET_FILENAME").unwrap()["value"], "secret");
    assert_eq!(
        env(agent, "SECRET_INJECT_OUTPUT_DIR").unwrap()["value"],
        "/tmp"
    );
    assert_eq!(
        agent["volumeMounts"],
        json!([
            { "name": "secret-vol", "mountPath": "/tmp" },
            { "name": "secret-inject-no-api-token",
              "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true },
        ])
    );
    // Pod Security Standards "restricted".
    let sc = &agent["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert!(agent["resources"]["limits"]["memory"].is_string());
}

#[test]
fn second_pass_gives_no_patch() {
    let patched = apply(&seed_pod());
    assert_eq!(run(&patched).unwrap(), None);
}

#[test]
fn pods_without_annotations_are_left_alone() {
    let mut pod = seed_pod();
    pod["metadata"] = json!({ "name": "plain" });
    assert_eq!(run(&pod).unwrap(), None);
    pod["metadata"]["annotations"] = json!({ "secrets.k8s.aws/sidecarInjectorWebhook": "disabled", "secrets.k8s.aws/secret-arn": ARN });
    assert_eq!(run(&pod).unwrap(), None);
}

#[test]
fn existing_arrays_are_appended_to_never_replaced() {
    let mut pod = seed_pod();
    pod["spec"]["volumes"] =
        json!([{ "name": "kube-api-access-x", "projected": { "sources": [] } }]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([{ "name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount" }]);
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "istio-proxy", "image": "proxy" }));
    pod["spec"]["initContainers"] = json!([
        { "name": "istio-init", "image": "proxy" },
        { "name": "log-shipper", "image": "fluent", "restartPolicy": "Always" },
    ]);
    let patched = apply(&pod);
    let volumes = patched["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes[0]["name"], "kube-api-access-x");
    assert_eq!(volumes[1]["name"], "secret-vol");
    assert_eq!(volumes[2]["name"], "secret-inject-no-api-token");
    let mounts = patched["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap();
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0]["name"], "kube-api-access-x");
    assert_eq!(
        patched["spec"]["containers"][1]["volumeMounts"],
        json!([{ "name": "secret-vol", "mountPath": "/tmp", "readOnly": true }])
    );
    // Ours first, the others after it, in their order, native sidecar intact, all mounted.
    let inits = patched["spec"]["initContainers"].as_array().unwrap();
    let names: Vec<&str> = inits.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["secrets-init-container", "istio-init", "log-shipper"]
    );
    assert_eq!(inits[2]["restartPolicy"], "Always");
    for init in &inits[1..] {
        assert_eq!(init["volumeMounts"][0]["name"], "secret-vol", "{init}");
    }
}

#[test]
fn position_last_goes_after_existing_init_containers_which_are_not_mounted() {
    let mut pod = seed_pod();
    pod["metadata"]["annotations"]["secrets.k8s.aws/init-container-position"] = json!("last");
    pod["spec"]["initContainers"] = json!([{ "name": "setup", "image": "x" }]);
    let patched = apply(&pod);
    let inits = patched["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits[0]["name"], "setup");
    assert!(inits[0].get("volumeMounts").is_none());
    assert_eq!(inits[1]["name"], "secrets-init-container");
}

#[test]
fn reinvocation_mounts_containers_added_since() {
    let mut patched = apply(&seed_pod());
    patched["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "late-sidecar", "image": "x" }));
    let again = apply(&patched);
    assert_eq!(
        again["spec"]["containers"][1]["volumeMounts"],
        json!([{ "name": "secret-vol", "mountPath": "/tmp", "readOnly": true }])
    );
    assert_eq!(again["spec"]["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(run(&again).unwrap(), None);
}

#[test]
fn mount_path_and_file_name_annotations() {
    let mut pod = seed_pod();
    pod["metadata"]["annotations"]["secrets.k8s.aws/mount-path"] = json!("/var/run/app/");
    pod["metadata"]["annotations"]["secrets.k8s.aws/secret-filename"] = json!("db/password");
    let patched = apply(&pod);
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/app"
    );
    let agent = agent(&patched);
    assert_eq!(
        env(agent, "SECRET_FILENAME").unwrap()["value"],
        "db/password"
    );
    assert_eq!(
        env(agent, "SECRET_INJECT_OUTPUT_DIR").unwrap()["value"],
        "/var/run/app"
    );
}

#[test]
fn colliding_mount_path_is_denied_naming_the_container() {
    let mut pod = seed_pod();
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{ "name": "scratch", "mountPath": "/tmp/" }]);
    let err = run(&pod).unwrap_err().to_string();
    assert!(err.contains("secrets.k8s.aws/mount-path"), "{err}");
    assert!(err.contains("\"webserver\""), "{err}");
    assert!(err.contains("\"scratch\""), "{err}");
}

#[test]
fn foreign_secret_vol_is_denied() {
    let mut pod = seed_pod();
    pod["spec"]["volumes"] = json!([{ "name": "secret-vol", "emptyDir": {} }]);
    let err = run(&pod).unwrap_err().to_string();
    assert!(
        err.contains("spec.volumes") && err.contains("rename"),
        "{err}"
    );
}

#[test]
fn container_name_clash_is_denied() {
    let mut pod = seed_pod();
    pod["spec"]["initContainers"] = json!([{ "name": "secrets-init-container", "image": "x" }]);
    let err = run(&pod).unwrap_err().to_string();
    assert!(err.contains("secrets-init-container"), "{err}");
}

#[test]
fn bad_annotation_is_an_error_naming_it() {
    let mut pod = seed_pod();
    pod["metadata"]["annotations"]["secrets.k8s.aws/secret-filename"] = json!("../../etc/passwd");
    let err = run(&pod).unwrap_err();
    assert!(matches!(err, MutationError::Annotation(ref e) if e.key == spec::SECRET_FILENAME));
}

fn security(pod: &Value) -> (Value, String, Vec<String>) {
    let mutation = run(pod).unwrap().unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.patch.as_ref().unwrap().to_patch()).unwrap();
    let agent = agent(&patched).clone();
    let mode = env(&agent, "SECRET_INJECT_FILE_MODE").unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    (agent["securityContext"].clone(), mode, mutation.warnings)
}

#[test]
fn fs_group_gives_group_read_file() {
    let mut pod = seed_pod();
    pod["spec"]["securityContext"] = json!({ "fsGroup": 2000, "runAsUser": 1000 });
    let (sc, mode, warnings) = security(&pod);
    assert_eq!(mode, "0440");
    assert_eq!(sc["runAsUser"], 1000);
    assert_eq!(sc["runAsGroup"], 2000);
    // Only the warning about the default mount path /tmp.
    assert!(
        warnings.iter().all(|w| w.contains("mounted at /tmp")),
        "{warnings:?}"
    );
}

#[test]
fn shared_run_as_user_gives_owner_read_file() {
    let mut pod = seed_pod();
    pod["spec"]["securityContext"] = json!({ "runAsUser": 1000, "runAsGroup": 3000 });
    let (sc, mode, warnings) = security(&pod);
    assert_eq!(mode, "0400");
    assert_eq!(sc["runAsUser"], 1000);
    assert_eq!(sc["runAsGroup"], 3000);
    // Only the warning about the default mount path /tmp.
    assert!(
        warnings.iter().all(|w| w.contains("mounted at /tmp")),
        "{warnings:?}"
    );
    // A container-level override counts too.
    let mut pod = seed_pod();
    pod["spec"]["containers"][0]["securityContext"] = json!({ "runAsUser": 4242 });
    let (sc, mode, _) = security(&pod);
    assert_eq!(
        (sc["runAsUser"].as_i64(), mode.as_str()),
        (Some(4242), "0400")
    );
}

#[test]
fn unknown_mixed_or_root_users_give_world_read_file_and_a_warning() {
    let (sc, mode, warnings) = security(&seed_pod());
    assert_eq!(
        (sc["runAsUser"].as_i64(), mode.as_str()),
        (Some(65532), "0444")
    );
    assert!(warnings[0].contains("fsGroup"), "{warnings:?}");

    let mut pod = seed_pod();
    pod["spec"]["securityContext"] = json!({ "runAsUser": 0 });
    assert_eq!(security(&pod).1, "0444");

    let mut pod = seed_pod();
    pod["spec"]["securityContext"] = json!({ "runAsUser": 1000 });
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "other", "image": "x", "securityContext": { "runAsUser": 2000 } }));
    assert_eq!(security(&pod).1, "0444");
}

#[test]
fn irsa_identity_is_copied_with_its_token_mount() {
    let mut pod = seed_pod();
    pod["spec"]["containers"][0]["env"] = json!([
        { "name": "UNRELATED", "value": "x" },
        { "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/webserver-secrets-role" },
        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token" },
        { "name": "AWS_STS_REGIONAL_ENDPOINTS", "value": "regional" },
        { "name": "AWS_REGION", "value": "us-east-1" },
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([
        { "name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true },
        { "name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true },
    ]);
    let patched = apply(&pod);
    let agent = agent(&patched);
    for name in [
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_STS_REGIONAL_ENDPOINTS",
        "AWS_REGION",
    ] {
        assert_eq!(
            env(agent, name),
            env(&pod["spec"]["containers"][0], name),
            "{name}"
        );
    }
    assert!(env(agent, "UNRELATED").is_none());
    // Ours, the empty stand-in for the API token, and the IRSA token; never the API token.
    let mounts = agent["volumeMounts"].as_array().unwrap();
    let names: Vec<&str> = mounts.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["secret-vol", "secret-inject-no-api-token", "aws-iam-token"]
    );
    assert_eq!(mounts[2]["readOnly"], true);
}

/// Found by the random-pods property: a mount path on the token's directory of a container the
/// volume is not mounted into (so no mount collision is seen) would hide the agent's token.
#[test]
fn a_mount_path_on_the_identity_tokens_directory_is_denied_naming_it() {
    let mut pod = seed_pod();
    let dir = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
    pod["metadata"]["annotations"]["secrets.k8s.aws/mount-path"] = json!(dir);
    pod["metadata"]["annotations"]["secrets.k8s.aws/containers"] = json!("other");
    pod["spec"]["containers"][0]["env"] = json!([
        { "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/webserver-secrets-role" },
        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": format!("{dir}/token") },
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{ "name": "aws-iam-token", "mountPath": dir, "readOnly": true }]);
    pod["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "other", "image": "x" }));
    let err = run(&pod).unwrap_err().to_string();
    assert!(
        err.starts_with("annotation secrets.k8s.aws/mount-path: "),
        "{err}"
    );
    assert!(err.contains("aws-iam-token"), "{err}");
    // One level down, the two mounts nest and the token is copied.
    pod["metadata"]["annotations"]["secrets.k8s.aws/mount-path"] = json!(format!("{dir}/app"));
    let patched = apply(&pod);
    let mounts = agent(&patched)["volumeMounts"].as_array().unwrap().clone();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == "aws-iam-token" && m["mountPath"] == dir),
        "{mounts:?}"
    );
}

/// Found by the random-pods property against the API server: pod-level requests smaller than the
/// agent's own made the API server refuse the patched pod. With pod-level resources the agent
/// sets none and shares the pod's.
#[test]
fn with_pod_level_resources_the_agent_sets_none_of_its_own() {
    let mut pod = seed_pod();
    assert!(agent(&apply(&pod))["resources"]["requests"]["memory"].is_string());
    pod["spec"]["resources"] = json!({ "requests": { "memory": "8Mi", "cpu": "5m" } });
    let patched = apply(&pod);
    assert!(
        agent(&patched).get("resources").is_none(),
        "{}",
        agent(&patched)
    );
}

#[test]
fn pod_identity_is_copied_with_its_token_mount() {
    let mut pod = seed_pod();
    pod["spec"]["containers"][0]["env"] = json!([
        { "name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials" },
        { "name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "value": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token" },
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([
        { "name": "eks-pod-identity-token", "mountPath": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount", "readOnly": true },
    ]);
    let patched = apply(&pod);
    let agent = agent(&patched);
    assert!(env(agent, "AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some());
    assert!(env(agent, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").is_some());
    assert_eq!(agent["volumeMounts"][2]["name"], "eks-pod-identity-token");
}

#[test]
fn hostile_annotation_values_stay_json_strings() {
    // A value full of JSON and JSON-Pointer syntax ends up as a plain string value.
    let mut pod = seed_pod();
    let hostile = r#"a"},{"op":"remove","path":"/spec/containers/0"}~1/x"#;
    pod["metadata"]["annotations"]["secrets.k8s.aws/secret-filename"] = json!(hostile);
    // `"` and `,` are valid file-name bytes, so this is accepted, as data.
    let patched = apply(&pod);
    assert_eq!(
        env(agent(&patched), "SECRET_FILENAME").unwrap()["value"],
        hostile
    );
    assert_eq!(patched["spec"]["containers"].as_array().unwrap().len(), 1);
}

fn many_pod() -> Value {
    json!({
        "metadata": {
            "name": "app",
            "annotations": {
                "secrets.k8s.aws/secret-arn.db": ARN,
                "secrets.k8s.aws/secret-format.db": "split",
                "secrets.k8s.aws/env.db": "DB_USER=username,DB_PASSWORD=password",
                "secrets.k8s.aws/secret-arn.url": "arn:aws:ssm:us-east-1:123456789012:parameter/app/url",
                "secrets.k8s.aws/containers": "app,migrate",
                "secrets.k8s.aws/mount-path": "/var/run/secrets/app",
            }
        },
        "spec": {
            "initContainers": [{ "name": "migrate", "image": "m" }],
            "containers": [
                { "name": "app", "image": "a", "env": [{ "name": "LOG", "value": "debug" }] },
                { "name": "proxy", "image": "p" },
            ]
        }
    })
}

#[test]
fn named_containers_get_the_mount_and_file_env_vars_others_nothing() {
    let patched = apply(&many_pod());
    let containers = patched["spec"]["containers"].as_array().unwrap();
    let (app, proxy) = (&containers[0], &containers[1]);
    assert_eq!(
        app["volumeMounts"],
        json!([{ "name": "secret-vol", "mountPath": "/var/run/secrets/app", "readOnly": true }])
    );
    assert_eq!(proxy.get("volumeMounts"), None, "not named: no mount");
    assert_eq!(proxy.get("env"), None, "not named: no env");
    // The app's own env first, then ours, each read from the env file in the volume.
    assert_eq!(app["env"][0], json!({ "name": "LOG", "value": "debug" }));
    assert_eq!(
        app["env"][1],
        json!({ "name": "DB_USER", "valueFrom": { "fileKeyRef": {
            "volumeName": "secret-vol", "path": "..data/..env", "key": "DB_USER" } } })
    );
    assert_eq!(app["env"][2]["name"], "DB_PASSWORD");
    // The named init container runs after ours and gets both.
    let init = patched["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init[0]["name"], contract::CONTAINER_NAME);
    assert_eq!(init[1]["name"], "migrate");
    assert_eq!(init[1]["env"].as_array().unwrap().len(), 2);
    assert_eq!(init[1]["volumeMounts"][0]["name"], "secret-vol");
    // The agent gets the named secrets as one JSON value; no seed variables.
    let agent = agent(&patched);
    assert_eq!(env(agent, "SECRET_ARN"), None);
    let secrets: Value = serde_json::from_str(
        env(agent, "SECRET_INJECT_SECRETS").unwrap()["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(secrets[0]["name"], "db");
    assert_eq!(secrets[0]["format"], "split");
    assert_eq!(secrets[0]["env"], "DB_USER=username,DB_PASSWORD=password");
    assert_eq!(secrets[1]["name"], "url");
    assert_eq!(
        secrets[1].get("versionStage"),
        None,
        "parameters default to their latest version"
    );
    // Injected twice: nothing more.
    let (metadata, spec) = parts(&patched);
    assert_eq!(
        mutate_typed(&metadata, &spec, &MutationConfig::default()),
        Ok(None)
    );
}

#[test]
fn containers_that_cannot_read_the_secrets_are_denied() {
    let mut pod = many_pod();
    pod["metadata"]["annotations"]["secrets.k8s.aws/containers"] = json!("app,worker");
    let err = run(&pod).unwrap_err().to_string();
    assert!(err.contains("secrets.k8s.aws/containers"), "{err}");
    assert!(err.contains("no container named \"worker\""), "{err}");
    assert!(err.contains("app, proxy, migrate"), "{err}");
    // An init container that runs before ours.
    pod["metadata"]["annotations"]["secrets.k8s.aws/containers"] = json!("migrate");
    pod["metadata"]["annotations"]["secrets.k8s.aws/init-container-position"] = json!("last");
    let err = run(&pod).unwrap_err().to_string();
    assert!(err.contains("runs before secrets-init-container"), "{err}");
}

#[test]
fn env_vars_are_denied_where_they_would_clash_or_the_cluster_lacks_env_files() {
    let mut pod = many_pod();
    pod["spec"]["containers"][0]["env"] = json!([{ "name": "DB_USER", "value": "x" }]);
    let err = run(&pod).unwrap_err().to_string();
    assert!(
        err.starts_with("annotation secrets.k8s.aws/env.db:"),
        "{err}"
    );
    assert!(err.contains("already sets env var DB_USER"), "{err}");

    let (metadata, spec) = parts(&many_pod());
    let config = MutationConfig {
        env_files: false,
        ..MutationConfig::default()
    };
    let err = mutate_typed(&metadata, &spec, &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("annotation secrets.k8s.aws/env.db:"),
        "{err}"
    );
    assert!(err.contains("Kubernetes 1.35"), "{err}");
    // Without env annotations the same configuration injects.
    let mut pod = many_pod();
    pod["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("secrets.k8s.aws/env.db");
    let (metadata, spec) = parts(&pod);
    assert!(mutate_typed(&metadata, &spec, &config).unwrap().is_some());
}

fn rotating_pod(extra: &[(&str, &str)]) -> Value {
    let mut pod = seed_pod();
    pod["metadata"]["annotations"]["secrets.k8s.aws/refresh-interval"] = json!("5m");
    for (k, v) in extra {
        pod["metadata"]["annotations"][*k] = json!(v);
    }
    pod
}

fn run_with(pod: &Value, native: bool) -> Result<Option<Mutation>, MutationError> {
    let (metadata, spec) = parts(pod);
    let config = MutationConfig {
        native_sidecars: native,
        ..MutationConfig::default()
    };
    mutate_typed(&metadata, &spec, &config)
}

#[test]
fn rotation_with_native_sidecars_is_one_restartable_init_container_with_a_startup_probe() {
    let pod = rotating_pod(&[
        ("secrets.k8s.aws/reload-signal", "SIGHUP"),
        ("secrets.k8s.aws/reload-process", "nginx"),
    ]);
    let mutation = run_with(&pod, true).unwrap().unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.patch.as_ref().unwrap().to_patch()).unwrap();
    let init = patched["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 1);
    let agent = &init[0];
    assert_eq!(agent["restartPolicy"], "Always");
    assert_eq!(
        agent["startupProbe"]["exec"]["command"],
        json!(["/usr/local/bin/secret-inject", "probe"])
    );
    assert_eq!(
        env(agent, "SECRET_INJECT_REFRESH_INTERVAL").unwrap()["value"],
        "300000ms"
    );
    assert_eq!(
        env(agent, "SECRET_INJECT_RELOAD_SIGNAL").unwrap()["value"],
        "HUP"
    );
    assert_eq!(
        env(agent, "SECRET_INJECT_RELOAD_PROCESS").unwrap()["value"],
        "nginx"
    );
    assert_eq!(patched["spec"]["shareProcessNamespace"], true);
    assert_eq!(patched["spec"]["containers"].as_array().unwrap().len(), 1);
    // Without a signal the process namespace is left alone.
    let patched = apply(&rotating_pod(&[]));
    assert!(patched["spec"].get("shareProcessNamespace").is_none());
}

#[test]
fn rotation_with_classic_sidecars_is_an_init_container_and_a_sidecar_and_jobs_are_denied() {
    let pod = rotating_pod(&[(
        "secrets.k8s.aws/reload-url",
        "http://127.0.0.1:9090/-/reload",
    )]);
    let mutation = run_with(&pod, false).unwrap().unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.patch.as_ref().unwrap().to_patch()).unwrap();
    let agent = agent(&patched);
    assert!(agent.get("restartPolicy").is_none());
    assert_eq!(
        env(agent, "SECRET_INJECT_REFRESH_INTERVAL"),
        None,
        "the init container fetches once"
    );
    let containers = patched["spec"]["containers"].as_array().unwrap();
    let sidecar = containers
        .iter()
        .find(|c| c["name"] == contract::SIDECAR_NAME)
        .expect("the classic sidecar");
    assert_eq!(
        env(sidecar, "SECRET_INJECT_REFRESH_INTERVAL").unwrap()["value"],
        "300000ms"
    );
    assert_eq!(
        env(sidecar, "SECRET_INJECT_RELOAD_URL").unwrap()["value"],
        "http://127.0.0.1:9090/-/reload"
    );
    assert_eq!(sidecar["volumeMounts"][0]["name"], "secret-vol");
    assert_eq!(sidecar["securityContext"], agent["securityContext"]);
    // Injected twice: nothing more (the sidecar already has the mount).
    let (metadata, spec) = parts(&patched);
    let config = MutationConfig {
        native_sidecars: false,
        ..MutationConfig::default()
    };
    assert_eq!(mutate_typed(&metadata, &spec, &config), Ok(None));

    for policy in ["Never", "OnFailure"] {
        let mut job = rotating_pod(&[]);
        job["spec"]["restartPolicy"] = json!(policy);
        let err = run_with(&job, false).unwrap_err().to_string();
        assert!(
            err.starts_with("annotation secrets.k8s.aws/refresh-interval:"),
            "{err}"
        );
        assert!(err.contains("would never complete"), "{err}");
        assert!(
            run_with(&job, true).unwrap().is_some(),
            "native sidecars let a Job complete"
        );
    }
}

#[test]
fn a_signal_needs_the_process_namespace_shared() {
    let mut pod = rotating_pod(&[("secrets.k8s.aws/reload-process", "nginx")]);
    pod["spec"]["shareProcessNamespace"] = json!(false);
    let err = run(&pod).unwrap_err().to_string();
    assert!(
        err.starts_with("annotation secrets.k8s.aws/reload-process:"),
        "{err}"
    );
}

/// The patched pod under `config`.
fn apply_with(pod: &Value, config: &MutationConfig) -> Value {
    let (metadata, spec) = parts(pod);
    let mutation = mutate_typed(&metadata, &spec, config).unwrap().unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.patch.as_ref().unwrap().to_patch()).unwrap();
    patched
}

#[test]
fn the_rotation_sidecar_serves_metrics_on_loopback_or_on_a_named_port_of_the_pod_ip() {
    // On loopback (the default address): the port travels, no container port is added.
    let patched = apply(&rotating_pod(&[("secrets.k8s.aws/metrics-port", "9102")]));
    let sidecar = agent(&patched);
    assert_eq!(
        env(sidecar, "SECRET_INJECT_METRICS_PORT").unwrap()["value"],
        "9102"
    );
    assert_eq!(
        env(sidecar, "SECRET_INJECT_METRICS_ADDRESS").unwrap()["value"],
        "loopback"
    );
    assert!(sidecar.get("ports").is_none(), "{sidecar}");
    // On the pod IP: a container port named agent-metrics, for a PodMonitor.
    let pod = rotating_pod(&[
        ("secrets.k8s.aws/metrics-port", "9102"),
        ("secrets.k8s.aws/metrics-address", "pod"),
    ]);
    for native in [true, false] {
        let config = MutationConfig {
            native_sidecars: native,
            ..MutationConfig::default()
        };
        let patched = apply_with(&pod, &config);
        let sidecar = if native {
            agent(&patched).clone()
        } else {
            assert!(
                agent(&patched).get("ports").is_none(),
                "the init container fetches once and serves nothing"
            );
            assert_eq!(env(agent(&patched), "SECRET_INJECT_METRICS_PORT"), None);
            patched["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == contract::SIDECAR_NAME)
                .unwrap()
                .clone()
        };
        assert_eq!(
            sidecar["ports"],
            json!([{"name": "agent-metrics", "containerPort": 9102, "protocol": "TCP"}]),
            "native: {native}"
        );
        assert_eq!(
            env(&sidecar, "SECRET_INJECT_METRICS_ADDRESS").unwrap()["value"],
            "pod"
        );
    }
    // No metrics asked: nothing rendered.
    let patched = apply(&rotating_pod(&[]));
    assert_eq!(env(agent(&patched), "SECRET_INJECT_METRICS_PORT"), None);
}

#[test]
fn the_operators_metrics_port_applies_to_every_rotating_pod_and_a_pod_may_change_it() {
    let config = MutationConfig::new(&Settings {
        metrics_port: Some("9200"),
        metrics_address: "pod",
        ..Settings::default()
    })
    .unwrap();
    let patched = apply_with(&rotating_pod(&[]), &config);
    let sidecar = agent(&patched);
    assert_eq!(
        env(sidecar, "SECRET_INJECT_METRICS_PORT").unwrap()["value"],
        "9200"
    );
    assert_eq!(sidecar["ports"][0]["containerPort"], 9200);
    // The pod's own port and address win.
    let pod = rotating_pod(&[
        ("secrets.k8s.aws/metrics-port", "9300"),
        ("secrets.k8s.aws/metrics-address", "loopback"),
    ]);
    let patched = apply_with(&pod, &config);
    let sidecar = agent(&patched);
    assert_eq!(
        env(sidecar, "SECRET_INJECT_METRICS_PORT").unwrap()["value"],
        "9300"
    );
    assert!(sidecar.get("ports").is_none());
    // A pod that fetches once gets no metrics: an init-only agent exits.
    let patched = apply_with(&seed_pod(), &config);
    assert_eq!(env(agent(&patched), "SECRET_INJECT_METRICS_PORT"), None);
    assert!(agent(&patched).get("ports").is_none());
    // The flags are checked when the webhook starts, naming the flag.
    for (port, address, flag) in [
        (Some("80"), "loopback", "sidecar-metrics-port"),
        (Some("x"), "loopback", "sidecar-metrics-port"),
        (None, "0.0.0.0", "sidecar-metrics-address"),
    ] {
        let error = MutationConfig::new(&Settings {
            metrics_port: port,
            metrics_address: address,
            ..Settings::default()
        })
        .unwrap_err();
        assert_eq!(error.flag, flag);
    }
}

#[test]
fn a_metrics_address_without_any_metrics_port_is_denied_naming_it() {
    let pod = rotating_pod(&[("secrets.k8s.aws/metrics-address", "pod")]);
    let err = run(&pod).unwrap_err().to_string();
    assert!(
        err.starts_with("annotation secrets.k8s.aws/metrics-address:"),
        "{err}"
    );
    assert!(
        err.contains("without secrets.k8s.aws/metrics-port"),
        "{err}"
    );
    // With the operator's port it is the pod's choice of address.
    let config = MutationConfig::new(&Settings {
        metrics_port: Some("9200"),
        ..Settings::default()
    })
    .unwrap();
    assert_eq!(
        apply_with(&pod, &config)["spec"]["initContainers"][0]["ports"][0]["name"],
        "agent-metrics"
    );
    // Without rotation the annotation is denied by the grammar.
    let mut pod = seed_pod();
    pod["metadata"]["annotations"]["secrets.k8s.aws/metrics-port"] = json!("9102");
    let err = run(&pod).unwrap_err().to_string();
    assert!(
        err.starts_with("annotation secrets.k8s.aws/metrics-port:"),
        "{err}"
    );
    assert!(
        err.contains("has no effect without secrets.k8s.aws/refresh-interval"),
        "{err}"
    );
}

#[test]
fn restart_on_change_is_a_restart_all_containers_rule_of_the_native_sidecar() {
    let pod = rotating_pod(&[("secrets.k8s.aws/restart-on-change", "true")]);
    let mutation = run_with(&pod, true).unwrap().unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &mutation.patch.as_ref().unwrap().to_patch()).unwrap();
    let agent = agent(&patched);
    assert_eq!(
        agent["restartPolicyRules"],
        json!([{ "action": "RestartAllContainers", "exitCodes": { "operator": "In", "values": [42] } }])
    );
    assert_eq!(
        env(agent, "SECRET_INJECT_RESTART_ON_CHANGE").unwrap()["value"],
        "true"
    );
    let err = run_with(&pod, false).unwrap_err().to_string();
    assert!(
        err.starts_with("annotation secrets.k8s.aws/restart-on-change:"),
        "{err}"
    );
}

/// Issue 17: any container of the pod could swap `..data` or a file's symlink under the others.
/// Every app container, init container and container added on reinvocation mounts the volume
/// read-only; the agent (init container, native or classic sidecar) is the one writer.
#[test]
fn only_the_agent_mounts_the_secret_volume_writable() {
    let writable = |pod: &Value| -> Vec<String> {
        ["initContainers", "containers"]
            .iter()
            .flat_map(|field| pod["spec"][*field].as_array().cloned().unwrap_or_default())
            .filter(|c| {
                c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["name"] == "secret-vol" && m["readOnly"] != true)
            })
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut pod = many_pod();
    pod["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("secrets.k8s.aws/containers");
    pod["metadata"]["annotations"]["secrets.k8s.aws/refresh-interval"] = json!("5m");
    let patched = apply(&pod);
    assert_eq!(writable(&patched), ["secrets-init-container"]);
    let mounted = |pod: &Value, field: &str, i: usize| {
        pod["spec"][field][i]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "secret-vol" && m["readOnly"] == true)
    };
    assert!(mounted(&patched, "initContainers", 1), "migrate: read-only");
    assert!(mounted(&patched, "containers", 1), "proxy: read-only");
    // A container another webhook adds later gets a read-only mount too.
    let mut later = patched.clone();
    later["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "late", "image": "x" }));
    assert_eq!(writable(&apply(&later)), ["secrets-init-container"]);
    // Classic sidecars: the rotation sidecar writes too, and no app container does.
    let config = MutationConfig {
        native_sidecars: false,
        ..MutationConfig::default()
    };
    let (metadata, spec) = parts(&pod);
    let mutation = mutate_typed(&metadata, &spec, &config).unwrap().unwrap();
    let mut classic = pod.clone();
    json_patch::patch(&mut classic, &mutation.patch.as_ref().unwrap().to_patch()).unwrap();
    assert_eq!(
        writable(&classic),
        ["secrets-init-container", "secrets-refresh"]
    );
}

/// What the API server's ServiceAccount admission does to each container (as in
/// plugin/pkg/admission/serviceaccount): mount the pod's API token at its directory unless the
/// container already mounts something there. It runs before webhooks, again after them on
/// reinvocation, and on every pod that `inject` wrote offline.
fn service_account_admission(pod: &mut Value) {
    for field in ["initContainers", "containers"] {
        for container in pod["spec"][field].as_array_mut().into_iter().flatten() {
            let mounts = container["volumeMounts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !mounts
                .iter()
                .any(|m| m["mountPath"] == contract::API_TOKEN_DIR)
            {
                let mut mounts = mounts;
                mounts.push(json!({ "name": "kube-api-access-x", "readOnly": true,
                                    "mountPath": contract::API_TOKEN_DIR }));
                container["volumeMounts"] = json!(mounts);
            }
        }
    }
}

/// Issue 17: the agent must hold no Kubernetes API token, before or after the API server's
/// ServiceAccount admission, while keeping the IRSA and Pod Identity tokens it needs.
#[test]
fn the_agent_holds_no_kubernetes_api_token() {
    let api_token = |container: &Value| {
        container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"].as_str().unwrap().starts_with("kube-api-access"))
    };
    // Offline (`inject`): no token in the manifest; the API server adds it afterwards.
    let mut offline = apply(&seed_pod());
    service_account_admission(&mut offline);
    assert!(!api_token(agent(&offline)), "{}", agent(&offline));
    assert!(
        api_token(&offline["spec"]["containers"][0]),
        "the app keeps its token"
    );
    // Through the webhook: the token is already in the app, the plugin runs again after us.
    let mut pod = seed_pod();
    pod["spec"]["containers"][0]["env"] = json!([
        { "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/app" },
        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token" },
        { "name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials" },
        { "name": "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "value": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token" },
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] = json!([
        { "name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true },
        { "name": "eks-pod-identity-token", "mountPath": "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount", "readOnly": true },
    ]);
    service_account_admission(&mut pod);
    let mut stored = apply(&pod);
    service_account_admission(&mut stored);
    let agent = agent(&stored);
    assert!(!api_token(agent), "{agent}");
    let names: Vec<&str> = agent["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "secret-vol",
            "secret-inject-no-api-token",
            "aws-iam-token",
            "eks-pod-identity-token"
        ]
    );
    // The stand-in is an empty read-only volume of its own.
    assert!(stored["spec"]["volumes"].as_array().unwrap().contains(&json!(
        { "name": "secret-inject-no-api-token", "emptyDir": { "medium": "Memory", "sizeLimit": "4Ki" } }
    )));
    assert_eq!(run(&stored).unwrap(), None, "idempotent");

    // An AWS token file inside the API token's directory would put that token in the agent.
    let mut pod = seed_pod();
    pod["spec"]["containers"][0]["env"] = json!([
        { "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/app" },
        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/kubernetes.io/serviceaccount/token" },
    ]);
    service_account_admission(&mut pod);
    let err = run(&pod).unwrap_err().to_string();
    assert!(err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{err}");
    assert!(err.contains("a volume of its own"), "{err}");
    // Our stand-in's volume name is taken: denied like secret-vol.
    let mut pod = seed_pod();
    pod["spec"]["volumes"] = json!([{ "name": "secret-inject-no-api-token", "emptyDir": {} }]);
    let err = run(&pod).unwrap_err().to_string();
    assert!(err.contains("\"secret-inject-no-api-token\""), "{err}");
    assert!(err.contains("rename that volume"), "{err}");
}

/// Issue 17: a mount path that would hide the agent's binary or CA bundle (the volume is mounted
/// at the same path in the agent) is denied at admission, naming the annotation.
#[test]
fn a_mount_path_hiding_the_agents_binary_or_ca_bundle_is_denied() {
    for path in ["/usr/local/bin", "/usr", "/etc", "/etc/ssl/certs", "/"] {
        let mut pod = seed_pod();
        pod["metadata"]["annotations"]["secrets.k8s.aws/mount-path"] = json!(path);
        let err = run(&pod).unwrap_err().to_string();
        assert!(
            err.starts_with("annotation secrets.k8s.aws/mount-path: "),
            "{path}: {err}"
        );
        assert!(err.contains("/var/run/secrets/app"), "{path}: {err}");
    }
}

fn secret_vol(pod: &Value) -> Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == contract::VOLUME_NAME)
        .unwrap()
        .clone()
}

fn many_secrets_pod(n: usize) -> Value {
    let mut pod = seed_pod();
    for i in 0..n {
        pod["metadata"]["annotations"][format!("secrets.k8s.aws/secret-arn.s{i}")] = json!(ARN);
    }
    pod
}

#[test]
fn the_volume_is_sized_from_the_plan_unless_a_size_is_stated() {
    // The seed's one secret: two sets of 64 KiB fit in the smallest size, 1 Mi.
    assert_eq!(
        secret_vol(&apply(&seed_pod()))["emptyDir"]["sizeLimit"],
        "1Mi"
    );
    // 100 secrets of up to 65,536 bytes each: two sets are 12.5 MiB; with headroom 16 Mi.
    let many = many_secrets_pod(99);
    assert_eq!(secret_vol(&apply(&many))["emptyDir"]["sizeLimit"], "16Mi");
    // The pod's own size wins, in the unit the API writes.
    let mut stated = many.clone();
    stated["metadata"]["annotations"]["secrets.k8s.aws/volume-size-limit"] = json!("0.03Gi");
    let bytes = (0.03f64 * (1u64 << 30) as f64).ceil() as u64;
    assert_eq!(
        secret_vol(&apply(&stated))["emptyDir"]["sizeLimit"],
        spec::size::quantity(bytes)
    );
    // The operator's size, where it holds the plan.
    let (metadata, pod_spec) = parts(&seed_pod());
    let config = MutationConfig::new(&Settings {
        volume_size_limit: "2Mi",
        ..Settings::default()
    })
    .unwrap();
    let patch = mutate_typed(&metadata, &pod_spec, &config)
        .unwrap()
        .and_then(|m| m.patch)
        .unwrap();
    let mut patched = seed_pod();
    json_patch::patch(&mut patched, &patch.to_patch()).unwrap();
    assert_eq!(secret_vol(&patched)["emptyDir"]["sizeLimit"], "2Mi");
}

#[test]
fn a_stated_size_that_cannot_hold_two_sets_is_denied_naming_who_stated_it() {
    // The issue's pod: 100 × 64 KiB in the old default of 1 Mi.
    let mut pod = many_secrets_pod(99);
    pod["metadata"]["annotations"]["secrets.k8s.aws/volume-size-limit"] = json!("1Mi");
    let Err(MutationError::Annotation(error)) = run(&pod) else {
        panic!("1 Mi cannot hold 100 secrets")
    };
    assert_eq!(error.key, spec::VOLUME_SIZE_LIMIT);
    let message = error.to_string();
    assert!(
        message.contains("1Mi cannot hold the pod's secrets: 100 secret(s)")
            && message.contains("two complete sets")
            && message.contains("12.6 MiB in all")
            && message.contains("set it to at least 13Mi"),
        "{message}"
    );
    pod["metadata"]["annotations"]["secrets.k8s.aws/volume-size-limit"] = json!("13Mi");
    assert!(run(&pod).unwrap().is_some());

    let config = MutationConfig::new(&Settings {
        volume_size_limit: "1Mi",
        ..Settings::default()
    })
    .unwrap();
    let (metadata, spec) = parts(&many_secrets_pod(99));
    let Err(MutationError::VolumeTooSmall(message)) = mutate_typed(&metadata, &spec, &config)
    else {
        panic!("the flag's 1 Mi cannot hold 100 secrets")
    };
    assert!(
        message.starts_with("the webhook's --volume-size-limit 1Mi cannot hold")
            && message.contains("secrets.k8s.aws/volume-size-limit: 13Mi")
            && message.contains("--volume-size-limit auto"),
        "{message}"
    );
    // The seed's pod fits the flag's 1 Mi.
    let (metadata, spec) = parts(&seed_pod());
    assert!(mutate_typed(&metadata, &spec, &config).unwrap().is_some());

    for (value, problem) in [
        ("lots", "is not a Kubernetes quantity"),
        ("0", "outside 1 byte to 1Gi"),
        ("2Gi", "outside 1 byte to 1Gi"),
    ] {
        let mut pod = seed_pod();
        pod["metadata"]["annotations"]["secrets.k8s.aws/volume-size-limit"] = json!(value);
        let Err(MutationError::Annotation(error)) = run(&pod) else {
            panic!("{value}")
        };
        assert_eq!(error.key, spec::VOLUME_SIZE_LIMIT);
        assert!(error.problem.contains(problem), "{value}: {error}");
    }
    for value in ["1mb", "0", "-1Mi", ""] {
        let error = MutationConfig::new(&Settings {
            volume_size_limit: value,
            ..Settings::default()
        })
        .unwrap_err();
        assert_eq!(error.flag, "volume-size-limit", "{value}");
    }
}

#[test]
fn the_default_mount_path_tmp_is_warned_about_with_the_volume_size() {
    let mutation = run(&seed_pod()).unwrap().unwrap();
    let warning = mutation
        .warnings
        .iter()
        .find(|w| w.contains("mounted at /tmp"))
        .expect("a warning about /tmp");
    assert!(
        warning.contains("read-only in-memory volume of 1Mi")
            && warning.contains("set secrets.k8s.aws/mount-path"),
        "{warning}"
    );
    let mut pod = seed_pod();
    pod["metadata"]["annotations"]["secrets.k8s.aws/mount-path"] = json!("/tmp/");
    assert!(
        run(&pod)
            .unwrap()
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("mounted at /tmp")),
        "/tmp/ is /tmp"
    );
    pod["metadata"]["annotations"]["secrets.k8s.aws/mount-path"] = json!("/var/run/secrets/app");
    assert!(
        !run(&pod)
            .unwrap()
            .unwrap()
            .warnings
            .iter()
            .any(|w| w.contains("/tmp")),
    );
}

#[test]
fn a_windows_pod_is_denied_naming_spec_os_name() {
    let mut pod = seed_pod();
    pod["spec"]["os"] = json!({ "name": "windows" });
    let Err(MutationError::Unsupported(message)) = run(&pod) else {
        panic!("a Windows pod must be denied")
    };
    assert!(
        message.starts_with("spec.os.name: the pod runs on \"windows\"")
            && message.contains("Linux-only")
            && message.contains("do not annotate windows pods"),
        "{message}"
    );
    // Seen through the webhook's own reader of the request, too.
    let body = serde_json::to_vec(&pod).unwrap();
    let borrowed: Pod = serde_json::from_slice(&body).unwrap();
    assert!(matches!(
        mutate(
            &borrowed.metadata,
            borrowed.spec.as_ref().unwrap(),
            &MutationConfig::default()
        ),
        Err(MutationError::Unsupported(_))
    ));
    // A name the API server would refuse is not echoed whole.
    let long = "w".repeat(100_000);
    let value = json!({ "metadata": pod["metadata"].clone(), "spec": { "os": { "name": long },
        "containers": [{ "name": "app" }] } });
    let body = serde_json::to_vec(&value).unwrap();
    let borrowed: Pod = serde_json::from_slice(&body).unwrap();
    let Err(error) = mutate(
        &borrowed.metadata,
        borrowed.spec.as_ref().unwrap(),
        &MutationConfig::default(),
    ) else {
        panic!("not linux")
    };
    assert!(
        error.to_string().len() < 1000,
        "{}",
        error.to_string().len()
    );
    pod["spec"]["os"] = json!({ "name": "linux" });
    assert!(run(&pod).unwrap().is_some());
    // A Windows pod that does not ask for secrets is left alone.
    let mut plain = json!({ "metadata": {}, "spec": { "os": { "name": "windows" },
        "containers": [{ "name": "app" }] } });
    assert!(run(&plain).unwrap().is_none());
    plain["metadata"]["annotations"] = json!({ "example.com/x": "y" });
    assert!(run(&plain).unwrap().is_none());
}
