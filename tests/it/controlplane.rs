//! The layer above the fast ones: a real kube-apiserver calls our webhook. The chart is installed
//! by the real helm, the API server compiles its matchConditions, applies our patch, runs
//! PodSecurity admission on the result and prints our denials and warnings through kubectl.
//! Every check reads the API server's view (`kubectl get -o json`), never our logs.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::controlplane::{
    ControlPlane, Namespaces, Release, shared, without_token_volume,
};
use crate::common::repo_root;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

fn pod(name: &str, annotations: Value, security: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36",
                                 "command": ["sleep", "3600"]}]}
    });
    if security {
        // Compliant with the restricted Pod Security Standard.
        pod["spec"]["securityContext"] = json!({
            "runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 2000,
            "seccompProfile": {"type": "RuntimeDefault"}
        });
        pod["spec"]["containers"][0]["securityContext"] = json!({
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}
        });
    }
    pod
}

fn create(plane: &ControlPlane, ns: &str, object: &Value) -> std::process::Output {
    plane.kubectl_stdin(
        &["create", "-n", ns, "-f", "-"],
        Some(object.to_string().as_bytes()),
    )
}

fn create_ok(plane: &ControlPlane, ns: &str, object: &Value) -> String {
    let output = create(plane, ns, object);
    assert!(
        output.status.success(),
        "kubectl create failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn init_names(pod: &Value) -> Vec<&str> {
    pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn assert_injected(pod: &Value) {
    assert_eq!(
        init_names(pod),
        ["secrets-init-container"],
        "{}",
        pod["spec"]
    );
    assert_eq!(
        pod["metadata"]["annotations"]["secrets.k8s.aws/status"],
        "injected"
    );
    let volumes: Vec<&Value> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"] == "secret-vol")
        .collect();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["emptyDir"]["medium"], "Memory");
    for container in pod["spec"]["containers"].as_array().unwrap() {
        assert!(
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "secret-vol" && m["readOnly"] == true),
            "{} has no read-only secret-vol mount",
            container["name"]
        );
    }
    assert_no_api_token(pod);
}

/// Issue 17: the agent holds no Kubernetes API token in the pod the API server stores, even
/// though its ServiceAccount admission runs again after our webhook (and on pods `inject` wrote):
/// only our empty read-only stand-in is mounted at the token's directory, and no
/// `kube-api-access-*` volume at all.
fn assert_no_api_token(pod: &Value) {
    let agent = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "secrets-init-container")
        .unwrap();
    let mounts = agent["volumeMounts"].as_array().unwrap();
    assert!(
        !mounts
            .iter()
            .any(|m| m["name"].as_str().unwrap().starts_with("kube-api-access-")),
        "the agent holds the API token: {agent}"
    );
    let at_token_dir: Vec<&Value> = mounts
        .iter()
        .filter(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount")
        .collect();
    assert_eq!(
        at_token_dir,
        [
            &json!({"name": "secret-inject-no-api-token", "readOnly": true,
                 "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
        ],
        "{agent}"
    );
    // The only writable mount of the volume is the agent's.
    let secret_vol = mounts.iter().find(|m| m["name"] == "secret-vol").unwrap();
    assert!(
        secret_vol.get("readOnly").is_none_or(|r| r == false),
        "{agent}"
    );
}

/// Drop what the API server adds on its own (defaults, the service-account token volume), so a
/// stored object compares with what `inject` writes offline.
fn without_server_defaults(mut container: Value) -> Value {
    let object = container.as_object_mut().unwrap();
    object.remove("terminationMessagePath");
    if let Some(mounts) = object.get_mut("volumeMounts").and_then(Value::as_array_mut) {
        mounts.retain(|m| {
            !m["name"]
                .as_str()
                .unwrap_or("")
                .starts_with("kube-api-access-")
        });
    }
    container
}

#[test]
fn the_seeds_walkthrough_through_the_real_api_server() {
    let ns = Namespaces::new("seed", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let examples = repo_root().join("examples");
    for file in [
        "webserver-service-account.yaml",
        "webserver-deployment.yaml",
    ] {
        plane.kubectl_ok(&[
            "apply",
            "-n",
            &ns.app,
            "-f",
            examples.join(file).to_str().unwrap(),
        ]);
    }
    // The controller-manager makes the ReplicaSet and its Pod (generateName only).
    let mut pods = Value::Null;
    plane.wait_for(
        "the replicaset controller's pod",
        Duration::from_secs(60),
        || {
            pods = plane.get_json(&["pods", "-n", &ns.app, "-l", "run=webserver"]);
            !pods["items"].as_array().unwrap().is_empty()
        },
    );
    let stored = &pods["items"][0];
    assert!(
        stored["metadata"]["generateName"]
            .as_str()
            .unwrap()
            .starts_with("webserver-")
    );
    assert_injected(stored);
    assert_eq!(
        stored["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "secret-vol")
            .unwrap()["mountPath"],
        "/tmp"
    );

    // What the emulated requests of the fast layers lacked: after our webhook changed the pod,
    // the API server runs its built-in ServiceAccount admission again, which mounted the pod's
    // Kubernetes API token into our container too, until the agent held an empty read-only
    // volume at the token's directory (the plugin skips a container with a mount there).
    assert_no_api_token(stored);
    assert!(
        stored["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"].as_str().unwrap().starts_with("kube-api-access-")),
        "the app keeps its token: {}",
        stored["spec"]["containers"][0]
    );

    // The same as `secret-inject inject` on the template, modulo the API server's defaults.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .args(["inject", "-f"])
        .arg(examples.join("webserver-deployment.yaml"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let offline: Value = serde_yaml_value(&output.stdout);
    let template = &offline["spec"]["template"];
    assert_eq!(
        without_server_defaults(stored["spec"]["initContainers"][0].clone()),
        without_server_defaults(template["spec"]["initContainers"][0].clone()),
    );
    assert_eq!(
        stored["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "secret-vol"),
        template["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "secret-vol")
    );
    assert_eq!(
        stored["metadata"]["annotations"],
        template["metadata"]["annotations"]
    );

    // A pod `inject` wrote offline, created as it is: the webhook only reconciles, and the
    // ServiceAccount admission, which runs before and after it, leaves the agent without the
    // API token too.
    let mut offline_pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": template["metadata"].clone(),
        "spec": template["spec"].clone(),
    });
    offline_pod["metadata"]["name"] = json!("offline");
    create_ok(plane, &ns.app, &offline_pod);
    let stored = plane.get_json(&["pod", "offline", "-n", &ns.app]);
    assert_injected(&stored);
}

fn serde_yaml_value(yaml: &[u8]) -> Value {
    use serde::Deserialize as _;
    Value::deserialize(yaml_serde::Deserializer::from_slice(yaml)).unwrap()
}

#[test]
fn pod_security_restricted_admits_the_injected_pod_and_refuses_a_non_compliant_one() {
    let ns = Namespaces::new(
        "psa",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    );
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let annotations = json!({"secrets.k8s.aws/secret-arn": ARN});
    create_ok(plane, &ns.app, &pod("compliant", annotations.clone(), true));
    let stored = plane.get_json(&["pod", "compliant", "-n", &ns.app]);
    assert_injected(&stored);
    // The check is live: the same pod without its security context is refused.
    let output = create(plane, &ns.app, &pod("careless", annotations, false));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("violates PodSecurity \"restricted"),
        "{stderr}"
    );
    // Our container is not among the violators: only the app's own container is named.
    assert!(!stderr.contains("secrets-init-container"), "{stderr}");
}

#[test]
fn many_secrets_with_file_env_vars_are_admitted_by_the_api_server_under_restricted_pss() {
    let ns = Namespaces::new(
        "many",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    );
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let annotations = json!({
        "secrets.k8s.aws/secret-arn.db": ARN,
        "secrets.k8s.aws/secret-format.db": "split",
        "secrets.k8s.aws/env.db": "DB_USER=username,DB_PASSWORD=password",
        "secrets.k8s.aws/secret-arn.url": "arn:aws:ssm:us-east-1:123456789012:parameter/app/url",
        "secrets.k8s.aws/secret-key.url": "endpoints[0]",
        "secrets.k8s.aws/containers": "app",
    });
    let mut object = pod("many", annotations, true);
    let sidecar = json!({"name": "metrics", "image": "busybox:1.36", "command": ["sleep", "3600"],
        "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
    object["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(sidecar);
    create_ok(plane, &ns.app, &object);
    let stored = plane.get_json(&["pod", "many", "-n", &ns.app]);
    let containers = stored["spec"]["containers"].as_array().unwrap();
    let (app, metrics) = (&containers[0], &containers[1]);
    let names: Vec<&str> = app["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DB_USER", "DB_PASSWORD"]);
    assert_eq!(
        app["env"][0]["valueFrom"]["fileKeyRef"],
        json!({"volumeName": "secret-vol", "path": "..data/..env", "key": "DB_USER",
               "optional": false}),
        "the API server accepted and stored the fileKeyRef (defaulting optional)"
    );
    assert!(
        app["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "secret-vol")
    );
    assert!(metrics.get("env").is_none(), "not named in containers");
    assert!(
        !metrics["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "secret-vol")
    );
    // A container that the pod does not have: the denial names the annotation.
    let mut object = pod(
        "wrong",
        json!({"secrets.k8s.aws/secret-arn.db": ARN, "secrets.k8s.aws/containers": "nginx"}),
        true,
    );
    object["metadata"]["name"] = json!("wrong");
    let output = create(plane, &ns.app, &object);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "annotation secrets.k8s.aws/containers: the pod has no container named \"nginx\""
        ),
        "{stderr}"
    );
}

#[test]
fn rotation_is_admitted_as_a_native_sidecar_under_restricted_pss_and_classic_denies_jobs() {
    let plane = shared();
    let rotating = json!({
        "secrets.k8s.aws/secret-arn": ARN,
        "secrets.k8s.aws/refresh-interval": "5m",
        "secrets.k8s.aws/reload-url": "http://127.0.0.1:9090/-/reload",
    });
    // Native (the chart's choice on this 1.36 API server).
    let ns = Namespaces::new(
        "rotate",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    );
    let _release = Release::install(&ns, &[]);
    create_ok(plane, &ns.app, &pod("native", rotating.clone(), true));
    let stored = plane.get_json(&["pod", "native", "-n", &ns.app]);
    let agent = &stored["spec"]["initContainers"][0];
    assert_eq!(agent["name"], "secrets-init-container");
    assert_eq!(agent["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(
        agent["startupProbe"]["exec"]["command"],
        json!(["/usr/local/bin/secret-inject", "probe"])
    );
    // Restart on change: the API server (1.36, RestartAllContainers beta) takes the rule.
    let mut restarting = rotating.clone();
    restarting["secrets.k8s.aws/restart-on-change"] = json!("true");
    create_ok(plane, &ns.app, &pod("restart", restarting, true));
    let stored = plane.get_json(&["pod", "restart", "-n", &ns.app]);
    assert_eq!(
        stored["spec"]["initContainers"][0]["restartPolicyRules"],
        json!([{"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [42]}}])
    );
    // Out of bounds: denied by us, naming the key and the bounds.
    let output = create(
        plane,
        &ns.app,
        &pod(
            "fast",
            json!({"secrets.k8s.aws/secret-arn": ARN, "secrets.k8s.aws/refresh-interval": "5s"}),
            true,
        ),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("annotation secrets.k8s.aws/refresh-interval: \"5s\" is outside 30s to 24h"),
        "{stderr}"
    );

    // Classic: an init container and a regular sidecar; a Job's pod is denied.
    let ns = Namespaces::new("classic", &[]);
    let _release = Release::install(&ns, &["--set", "webhook.nativeSidecars=never"]);
    create_ok(plane, &ns.app, &pod("classic", rotating.clone(), false));
    let stored = plane.get_json(&["pod", "classic", "-n", &ns.app]);
    assert!(
        stored["spec"]["initContainers"][0]
            .get("restartPolicy")
            .is_none()
    );
    let names: Vec<&str> = stored["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "secrets-refresh"]);
    let mut job_pod = pod("job", rotating, false);
    job_pod["spec"]["restartPolicy"] = json!("Never");
    let output = create(plane, &ns.app, &job_pod);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "annotation secrets.k8s.aws/refresh-interval: the pod has restartPolicy Never"
        ),
        "{stderr}"
    );
}

/// `--env-files auto` and `--native-sidecars auto`: the webhook asks the API server's
/// `/version` at start with a ServiceAccount token (as it does in a pod) and decides from it.
#[test]
fn auto_switches_follow_the_api_servers_version() {
    let plane = shared();
    let ns = Namespaces::new("auto", &[]);
    let sa = tempfile::tempdir().unwrap();
    let token = plane.kubectl_ok(&["create", "token", "default", "-n", &ns.app]);
    std::fs::write(sa.path().join("token"), token.trim()).unwrap();
    std::fs::copy(plane.dir.join("ca.crt"), sa.path().join("ca.crt")).unwrap();
    let port = plane.server.rsplit(':').next().unwrap().to_owned();
    let sa_dir = sa.path().to_string_lossy().into_owned();
    let release = Release::install_with(
        &ns,
        &[],
        &["--env-files", "auto", "--native-sidecars", "auto"],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
            ("SECRET_INJECT_SERVICE_ACCOUNT_DIR", &sa_dir),
        ],
    );
    create_ok(
        plane,
        &ns.app,
        &pod(
            "auto",
            json!({"secrets.k8s.aws/secret-arn": ARN, "secrets.k8s.aws/env": "PASSWORD=password",
                   "secrets.k8s.aws/refresh-interval": "1m"}),
            false,
        ),
    );
    let stored = plane.get_json(&["pod", "auto", "-n", &ns.app]);
    assert_eq!(
        stored["spec"]["containers"][0]["env"][0]["valueFrom"]["fileKeyRef"]["key"], "PASSWORD",
        "1.36 reads env files"
    );
    assert_eq!(
        stored["spec"]["initContainers"][0]["restartPolicy"], "Always",
        "1.36 runs native sidecars"
    );
    let log = release.webhook_log();
    assert!(
        log.contains("API server version") && log.contains("\"minor\":36"),
        "{log}"
    );
}

#[test]
fn with_env_files_off_env_annotations_are_denied_saying_why() {
    let ns = Namespaces::new("noenv", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &["--set", "webhook.envFiles=off"]);
    let output = create(
        plane,
        &ns.app,
        &pod(
            "env",
            json!({"secrets.k8s.aws/secret-arn": ARN, "secrets.k8s.aws/env": "PASSWORD=password"}),
            false,
        ),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "annotation secrets.k8s.aws/env: env vars from files (fileKeyRef) need Kubernetes 1.35"
        ),
        "{stderr}"
    );
}

/// The chart's `sidecar.*` agent settings reach the injected agent of every pod, through the
/// webhook's `--sidecar-*` flags (issue 19 item 2); identity variables are refused at install.
#[test]
fn the_charts_agent_settings_reach_every_injected_agent() {
    let ns = Namespaces::new("agentcfg", &[]);
    let plane = shared();
    let _release = Release::install(
        &ns,
        &[
            "--set",
            "sidecar.deadline=5m",
            "--set",
            "sidecar.batchThreshold=0",
            "--set",
            "sidecar.logLevel=debug",
            "--set-string",
            "sidecar.env.HTTPS_PROXY=http://proxy.internal:3128",
            "--set-string",
            "sidecar.env.NO_PROXY=10.0.0.0/8\\,.svc",
        ],
    );
    create_ok(
        plane,
        &ns.app,
        &pod(
            "settings",
            json!({"secrets.k8s.aws/secret-arn": ARN}),
            false,
        ),
    );
    let stored = plane.get_json(&["pod", "settings", "-n", &ns.app]);
    let agent = &stored["spec"]["initContainers"][0];
    let env: std::collections::BTreeMap<&str, &str> = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["value"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for (name, value) in [
        ("SECRET_INJECT_DEADLINE", "5m"),
        ("SECRET_INJECT_BATCH_THRESHOLD", "0"),
        ("SECRET_INJECT_LOG_LEVEL", "debug"),
        ("HTTPS_PROXY", "http://proxy.internal:3128"),
        ("NO_PROXY", "10.0.0.0/8,.svc"),
    ] {
        assert_eq!(env.get(name), Some(&value), "{name} in {env:?}");
    }
    assert!(
        !env.contains_key("SECRET_INJECT_ATTEMPT_TIMEOUT"),
        "unset stays unset"
    );
}

#[test]
fn match_conditions_keep_unannotated_pods_away_from_a_webhook_that_is_down() {
    let ns = Namespaces::new("down", &[]);
    let plane = shared();
    let mut release = Release::install(&ns, &["--set", "webhook.failurePolicy=Fail"]);
    release.stop_webhook();
    create_ok(plane, &ns.app, &pod("plain-1", json!({}), true));
    let output = create(
        plane,
        &ns.app,
        &pod(
            "annotated-1",
            json!({"secrets.k8s.aws/secret-arn": ARN}),
            true,
        ),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed calling webhook \"pods.secret-inject.secrets.k8s.aws\""),
        "{stderr}"
    );
    assert!(!plane.exists("pod", "annotated-1", &ns.app));
    release.start_webhook();
    create_ok(plane, &ns.app, &pod("plain-2", json!({}), true));
    create_ok(
        plane,
        &ns.app,
        &pod(
            "annotated-2",
            json!({"secrets.k8s.aws/secret-arn": ARN}),
            true,
        ),
    );
    assert_injected(&plane.get_json(&["pod", "annotated-2", "-n", &ns.app]));
    assert!(init_names(&plane.get_json(&["pod", "plain-2", "-n", &ns.app])).is_empty());
}

#[test]
fn denials_and_warnings_reach_the_user_through_kubectl() {
    let ns = Namespaces::new("deny", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let bad = pod(
        "bad",
        json!({"secrets.k8s.aws/secret-arn": ARN, "secrets.k8s.aws/mount-path": "relative"}),
        true,
    );
    let output = create(plane, &ns.app, &bad);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ours = "annotation secrets.k8s.aws/mount-path: \"relative\" is not an absolute path; use an \
                absolute directory path such as /tmp or /var/run/secrets/app";
    assert!(stderr.contains(ours), "{stderr}");
    assert!(
        stderr.contains("admission webhook \"pods.secret-inject.secrets.k8s.aws\" denied"),
        "{stderr}"
    );
    // No fsGroup and no shared user: our warning is printed by kubectl.
    let stderr = create_ok(
        plane,
        &ns.app,
        &pod("warned", json!({"secrets.k8s.aws/secret-arn": ARN}), false),
    );
    assert!(
        stderr.contains("Warning: secret-inject: app user unknown"),
        "{stderr}"
    );
}

/// Issue 19 items 5 and 7 through the real API server: a misspelt key reaches the webhook (the
/// matchConditions send every pod with a `secrets.k8s.aws/` key) and `kubectl` prints our
/// warning naming the closest key, on a pod that does not opt in and on one that opts out;
/// a broken JMESPath expression and a failover region of another partition are denied, naming
/// the annotation.
#[test]
fn misspelt_keys_are_warned_about_and_what_would_fail_later_is_denied() {
    let ns = Namespaces::new("typo", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    for (name, annotations, typo, closest) in [
        (
            "typo-arn",
            json!({"secrets.k8s.aws/secret-ar": ARN}),
            "secrets.k8s.aws/secret-ar",
            "secrets.k8s.aws/secret-arn",
        ),
        (
            "typo-opted-out",
            json!({"secrets.k8s.aws/sidecarInjectorWebhook": "disabled",
                   "secrets.k8s.aws/mount-paht": "/s"}),
            "secrets.k8s.aws/mount-paht",
            "secrets.k8s.aws/mount-path",
        ),
    ] {
        let stderr = create_ok(plane, &ns.app, &pod(name, annotations, true));
        let warning = format!(
            "Warning: secret-inject: annotation {typo}: is not a secret-inject annotation; did you \
             mean {closest}?"
        );
        assert!(stderr.contains(&warning), "{stderr}");
        let stored = plane.get_json(&["pod", name, "-n", &ns.app]);
        assert!(init_names(&stored).is_empty(), "{name} is not injected");
    }
    let cn = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db-AbCdEf";
    for (name, annotations, expected) in [
        (
            "broken-expression",
            json!({"secrets.k8s.aws/secret-arn.db": ARN,
                   "secrets.k8s.aws/secret-key.db": "db.hosts[0"}),
            "annotation secrets.k8s.aws/secret-key.db: \"db.hosts[0\" is not a valid JMESPath \
             expression: ",
        ),
        (
            "other-partition",
            json!({"secrets.k8s.aws/secret-arn": cn,
                   "secrets.k8s.aws/failover-region": "us-west-2"}),
            "annotation secrets.k8s.aws/failover-region: us-west-2 is in partition aws, but \
             secrets.k8s.aws/secret-arn is in aws-cn",
        ),
    ] {
        let output = create(plane, &ns.app, &pod(name, annotations, true));
        assert!(!output.status.success(), "{name} was admitted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("admission webhook \"pods.secret-inject.secrets.k8s.aws\" denied")
                && stderr.contains(expected),
            "{stderr}"
        );
        assert!(!plane.exists("pod", name, &ns.app));
    }
}

#[test]
fn server_side_dry_run_returns_the_injected_pod_and_stores_nothing() {
    let ns = Namespaces::new("dryrun", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let object = pod("dry", json!({"secrets.k8s.aws/secret-arn": ARN}), true);
    let answer = plane.kubectl_stdin(
        &[
            "apply",
            "-n",
            &ns.app,
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(object.to_string().as_bytes()),
    );
    assert!(
        answer.status.success(),
        "{}",
        String::from_utf8_lossy(&answer.stderr)
    );
    let returned: Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_injected(&returned);
    assert!(
        !plane.exists("pod", "dry", &ns.app),
        "a dry run stored the pod"
    );
}

#[test]
fn helm_upgrade_keeps_the_ca_and_the_webhook_serves_across_a_certificate_change() {
    let ns = Namespaces::new("upgrade", &[]);
    let plane = shared();
    let mut release = Release::install(&ns, &[]);
    let config = || {
        plane.get_json(&["mutatingwebhookconfiguration", &release_name(&ns)])["webhooks"][0]
            ["clientConfig"]["caBundle"]
            .clone()
    };
    let secret = || {
        plane.get_json(&[
            "secret",
            &format!("{}-tls", release_name(&ns)),
            "-n",
            &ns.release,
        ])["data"]["tls.crt"]
            .clone()
    };
    let (ca_before, cert_before) = (config(), secret());
    let upgrade = |extra: &[&str]| ns.helm_upgrade(extra);
    let pdb = || plane.get_json(&["pdb", &release_name(&ns), "-n", &ns.release])["spec"].clone();
    let pdb_before = pdb();
    // lookup finds the Secret: same certificate, same caBundle; the PDB stays as it was.
    upgrade(&["--set", "networkPolicy.enabled=true"]);
    assert_eq!(config(), ca_before);
    assert_eq!(secret(), cert_before);
    assert_eq!(pdb(), pdb_before);
    // The API server takes the optional NetworkPolicy.
    let policy = plane.get_json(&["networkpolicy", &release_name(&ns), "-n", &ns.release]);
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 8443);
    // A certificate near expiry is renewed: the Secret changes, the old CA stays trusted.
    upgrade(&["--set", "tls.generate.renewBeforeDays=4000"]);
    assert_ne!(secret(), cert_before);
    let annotated = |name: &str| pod(name, json!({"secrets.k8s.aws/secret-arn": ARN}), true);
    // Still serving the old certificate, trusted through the old CA kept in caBundle.
    create_ok(plane, &ns.app, &annotated("before-reload"));
    // The kubelet's ..data swap of the new Secret: the webhook reloads it without a restart.
    release.sync_certificate(&ns);
    let webhook = release.webhook.as_ref().unwrap();
    let started = std::time::Instant::now();
    loop {
        let reloaded = webhook
            .log_lines()
            .iter()
            .any(|l| l.contains("TLS certificate reloaded"));
        if reloaded {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reload: {:?}",
            webhook.log_lines()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    create_ok(plane, &ns.app, &annotated("after-reload"));
    for name in ["before-reload", "after-reload"] {
        assert_injected(&plane.get_json(&["pod", name, "-n", &ns.app]));
    }
}

fn release_name(ns: &Namespaces) -> String {
    format!("{}-secret-inject", ns.name)
}

/// Pod-level resources (beta, on by default since 1.34) below the agent's own requests: the
/// API server refused the injected pod until the agent shared the pod's budget instead.
#[test]
fn a_pod_with_tight_pod_level_resources_is_admitted_with_the_agent_inside_its_budget() {
    let ns = Namespaces::new("podres", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let mut tight = pod("tight", json!({"secrets.k8s.aws/secret-arn": ARN}), true);
    tight["spec"]["resources"] = json!({
        "requests": {"cpu": "5m", "memory": "8Mi"},
        "limits": {"cpu": "5m", "memory": "20Mi"}
    });
    create_ok(plane, &ns.app, &tight);
    let stored = plane.get_json(&["pod", "tight", "-n", &ns.app]);
    assert_eq!(init_names(&stored), ["secrets-init-container"]);
    let agent = &stored["spec"]["initContainers"][0];
    assert!(
        agent.get("resources").is_none_or(|r| r == &json!({})),
        "{agent}"
    );
    assert_eq!(stored["spec"]["resources"]["requests"]["memory"], "8Mi");
}

#[test]
fn an_update_of_a_pods_labels_is_admitted_without_a_patch() {
    let ns = Namespaces::new("update", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    create_ok(
        plane,
        &ns.app,
        &pod("labelled", json!({"secrets.k8s.aws/secret-arn": ARN}), true),
    );
    let before = plane.get_json(&["pod", "labelled", "-n", &ns.app]);
    plane.kubectl_ok(&["label", "pod", "labelled", "-n", &ns.app, "tier=web"]);
    let after = plane.get_json(&["pod", "labelled", "-n", &ns.app]);
    assert_eq!(after["metadata"]["labels"]["tier"], "web");
    assert_eq!(after["spec"], before["spec"]);
    assert_eq!(
        after["metadata"]["annotations"],
        before["metadata"]["annotations"]
    );
}

#[test]
fn with_an_irsa_webhook_before_or_after_ours_the_agent_gets_the_identity_once() {
    use crate::common::irsa_webhook::{IrsaWebhook, TOKEN_DIR};
    use base64::Engine as _;

    let role = "arn:aws:iam::123456789012:role/webserver-secrets-role";
    for (order, config_name) in [("before", "0-irsa"), ("after", "zzzz-irsa")] {
        let ns = Namespaces::new(&format!("irsa-{order}"), &[]);
        let plane = shared();
        let _release = Release::install(&ns, &[]);
        let irsa = IrsaWebhook::start("webserver-service-account", role);
        // Configurations are called in the order of their names: ours is "<test>-secret-inject".
        let name = format!("{config_name}-{}", ns.name);
        let configuration = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "pod-identity-webhook.amazonaws.com",
                "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "reinvocationPolicy": "IfNeeded",
                "clientConfig": {"url": irsa.url,
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(&irsa.ca_pem)},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                           "resources": ["pods"]}],
                "namespaceSelector": {"matchLabels": {"secret-inject-test": ns.name}}
            }]
        });
        create_ok(plane, "default", &configuration);
        let examples = repo_root().join("examples");
        plane.kubectl_ok(&[
            "apply",
            "-n",
            &ns.app,
            "-f",
            examples
                .join("webserver-service-account.yaml")
                .to_str()
                .unwrap(),
        ]);
        let mut app = pod("irsa", json!({"secrets.k8s.aws/secret-arn": ARN}), true);
        app["spec"]["serviceAccountName"] = json!("webserver-service-account");
        create_ok(plane, &ns.app, &app);
        let stored = plane.get_json(&["pod", "irsa", "-n", &ns.app]);
        assert_injected(&stored);
        let agent = &stored["spec"]["initContainers"][0];
        let env = |name: &str| {
            agent["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["name"] == name)
                .map(|e| e["value"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(env("AWS_ROLE_ARN"), [json!(role)], "{order}: {agent}");
        assert_eq!(
            env("AWS_WEB_IDENTITY_TOKEN_FILE"),
            [json!(format!("{TOKEN_DIR}/token"))],
            "{order}"
        );
        let token_mounts = agent["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["mountPath"] == TOKEN_DIR)
            .count();
        assert_eq!(token_mounts, 1, "{order}: {agent}");
        plane.kubectl_ok(&["delete", "mutatingwebhookconfiguration", &name]);
    }
}

/// A Secret labelled for the secret writer, as `kubectl create secret generic` makes it.
fn labelled_secret(name: &str, data: &[(&str, &[u8])], kind: &str) -> Value {
    use base64::Engine as _;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                json!(base64::engine::general_purpose::STANDARD.encode(v)),
            )
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "type": kind,
           "metadata": {"name": name, "labels": {"secrets.k8s.aws/store": "secretsmanager"}},
           "data": data})
}

#[test]
fn the_secret_writer_stores_labelled_secrets_in_secrets_manager_and_keeps_only_the_arn() {
    use base64::Engine as _;

    use crate::common::moto::Moto;

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    let moto = Moto::start();
    let ns = Namespaces::new("writer", &[]);
    let plane = shared();
    let endpoint = moto.endpoint();
    let mut release = Release::install_with(
        &ns,
        &["--set", "secretWriter.enabled=true"],
        &[
            "--log-level",
            "trace",
            "--secret-writer",
            "--secret-writer-prefix",
            "test-cluster",
            "--cluster-name",
            "test-cluster",
            "--secret-writer-region",
            "us-east-1",
            "--secret-writer-promotion-grace-period",
            "3s",
        ],
        &[
            // The promotion loop reads labelled Secrets (the chart's RBAC is checked below).
            ("KUBECONFIG", plane.kubeconfig.to_str().unwrap()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST"),
            ("AWS_SECRET_ACCESS_KEY", "test-secret-key"),
        ],
    );
    let sm = |target: &str, body: Value| {
        let (status, answer) = moto.json("us-east-1", &format!("secretsmanager.{target}"), &body);
        assert_eq!(status, 200, "{target}: {answer}");
        answer
    };
    let apply = |object: &Value| {
        let output = plane.kubectl_stdin(
            &["apply", "-n", &ns.app, "-f", "-"],
            Some(object.to_string().as_bytes()),
        );
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    // Create: Kubernetes keeps only the ARN, Secrets Manager holds the value.
    let (ok, stderr) = apply(&labelled_secret(
        "db",
        &[("password", b"hunter2-first")],
        "Opaque",
    ));
    assert!(ok, "{stderr}");
    let stored = plane.get_json(&["secret", "db", "-n", &ns.app]);
    let arn = stored["metadata"]["annotations"]["secrets.k8s.aws/secret-arn"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        arn.starts_with(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:test-cluster/app-writer/db-"
        ),
        "{arn}"
    );
    assert_eq!(
        stored["data"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["arn"]
    );
    assert_eq!(b64(stored["data"]["arn"].as_str().unwrap()), arn.as_bytes());
    // What readers get: AWSCURRENT, or nothing while no version is current.
    let current = |arn: &str| {
        let (status, answer) = moto.json(
            "us-east-1",
            "secretsmanager.GetSecretValue",
            &json!({"SecretId": arn, "VersionStage": "AWSCURRENT"}),
        );
        (status == 200).then(|| answer["SecretString"].as_str().unwrap().to_owned())
    };
    // The webhook only stages; the promotion loop makes the version current once it sees the
    // persisted Secret name it.
    let promoted = |arn: &str, want: &str| {
        plane.wait_for(
            &format!("{want} to become AWSCURRENT of {arn}"),
            Duration::from_secs(30),
            || current(arn).as_deref() == Some(want),
        );
    };
    let value = |arn: &str| current(arn).unwrap();
    promoted(&arn, r#"{"password":"hunter2-first"}"#);
    let version_annotation = |name: &str| {
        plane.get_json(&["secret", name, "-n", &ns.app])["metadata"]["annotations"]
            ["secrets.k8s.aws/version-id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let described = sm("DescribeSecret", json!({"SecretId": arn}));
    assert_eq!(
        described["VersionIdsToStages"][version_annotation("db")],
        json!(["AWSCURRENT"]),
        "{described}"
    );
    let tags = sm("DescribeSecret", json!({"SecretId": arn}))["Tags"].clone();
    assert!(
        tags.to_string()
            .contains(r#""Key":"kubernetes.io/cluster","Value":"test-cluster""#),
        "{tags}"
    );
    let versions = |arn: &str| {
        sm("ListSecretVersionIds", json!({"SecretId": arn}))["Versions"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(versions(&arn), 1);

    // A changed value by `kubectl apply`: a new version, made current once persisted. Then a
    // revert A -> B -> A: the third write is a version of its own, so A is current again.
    let changed = labelled_secret("db", &[("password", b"hunter2-second")], "Opaque");
    let (ok, stderr) = apply(&changed);
    assert!(ok, "{stderr}");
    promoted(&arn, r#"{"password":"hunter2-second"}"#);
    assert_eq!(versions(&arn), 2);
    let third = labelled_secret("db", &[("password", b"hunter2-third")], "Opaque");
    let (ok, stderr) = apply(&third);
    assert!(ok, "{stderr}");
    promoted(&arn, r#"{"password":"hunter2-third"}"#);
    let (ok, stderr) = apply(&changed);
    assert!(ok, "{stderr}");
    promoted(&arn, r#"{"password":"hunter2-second"}"#);
    assert_eq!(versions(&arn), 4);
    let stored = plane.get_json(&["secret", "db", "-n", &ns.app]);
    // kubectl's last-applied annotation keeps the manifest, not its values.
    let stored_text = stored.to_string();
    for value in ["hunter2-first", "hunter2-second", "hunter2-third"] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        assert!(
            !stored_text.contains(value) && !stored_text.contains(&encoded),
            "{value} is in the stored Secret: {stored_text}"
        );
    }
    assert!(
        stored["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .is_some(),
        "{stored}"
    );
    assert_eq!(
        stored["data"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["arn"]
    );

    // Binary values round-trip through the base64 marker.
    let binary: &[u8] = &[0, 159, 146, 150, 255];
    let (ok, stderr) = apply(&labelled_secret("cert", &[("key.der", binary)], "Opaque"));
    assert!(ok, "{stderr}");
    let cert_arn = plane.get_json(&["secret", "cert", "-n", &ns.app])["metadata"]["annotations"]
        ["secrets.k8s.aws/secret-arn"]
        .as_str()
        .unwrap()
        .to_owned();
    plane.wait_for(
        "the cert Secret's version to become current",
        Duration::from_secs(30),
        || current(&cert_arn).is_some(),
    );
    let stored_value: Value = serde_json::from_str(&value(&cert_arn)).unwrap();
    assert_eq!(
        stored_value["secrets.k8s.aws/base64-keys"],
        json!(["key.der"])
    );
    assert_eq!(b64(stored_value["key.der"].as_str().unwrap()), binary);

    // Dry run: nothing written anywhere, a warning says so.
    let count = || {
        sm("ListSecrets", json!({}))["SecretList"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = count();
    let dry = plane.kubectl_stdin(
        &[
            "create",
            "-n",
            &ns.app,
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(
            labelled_secret("dry", &[("k", b"dry-value")], "Opaque")
                .to_string()
                .as_bytes(),
        ),
    );
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(String::from_utf8_lossy(&dry.stderr).contains("dry run, nothing was written"));
    let shown: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        shown["data"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["arn"]
    );
    assert_eq!(count(), before);
    assert!(!plane.exists("secret", "dry", &ns.app));

    // Denied: a labelled TLS Secret, a value over 65,536 bytes.
    let (ok, stderr) = apply(&labelled_secret(
        "tls",
        &[("tls.crt", b"x"), ("tls.key", b"y")],
        "kubernetes.io/tls",
    ));
    assert!(!ok);
    assert!(stderr.contains("only Opaque Secrets"), "{stderr}");
    let big = vec![b'x'; 70_000];
    let (ok, stderr) = apply(&labelled_secret("big", &[("blob", &big)], "Opaque"));
    assert!(!ok);
    assert!(stderr.contains("65536 bytes"), "{stderr}");

    // An unlabelled Secret is stored as it is and never reaches the webhook.
    let reviews = |metrics: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("secret_inject_admission_reviews_total{endpoint=\"secrets\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let admin = release.webhook.as_ref().unwrap().admin;
    let seen = reviews(&crate::common::webhook::metrics(admin));
    assert!(seen >= 5, "{seen}");
    let mut plain = labelled_secret("plain", &[("k", b"plain-value")], "Opaque");
    plain["metadata"]["labels"] = json!({});
    let (ok, stderr) = apply(&plain);
    assert!(ok, "{stderr}");
    let stored = plane.get_json(&["secret", "plain", "-n", &ns.app]);
    assert_eq!(b64(stored["data"]["k"].as_str().unwrap()), b"plain-value");
    assert_eq!(reviews(&crate::common::webhook::metrics(admin)), seen);

    // The consuming path: a pod annotated with the stored ARN gets it rendered for the agent.
    create_ok(
        plane,
        &ns.app,
        &pod("consumer", json!({"secrets.k8s.aws/secret-arn": arn}), true),
    );
    let consumer = plane.get_json(&["pod", "consumer", "-n", &ns.app]);
    let env = &consumer["spec"]["initContainers"][0]["env"];
    assert!(env.to_string().contains(&arn), "{env}");
    // The agent, run with the env the API server stored, gives back the original data.
    let out = tempfile::Builder::new()
        .prefix("secret-inject-writer-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_secret-inject"));
    agent.arg("agent").env_clear();
    for var in env.as_array().unwrap() {
        agent.env(
            var["name"].as_str().unwrap(),
            var["value"].as_str().unwrap(),
        );
    }
    let run = agent
        .env("SECRET_INJECT_OUTPUT_DIR", out.path())
        .env(
            "SECRET_INJECT_TERMINATION_LOG",
            scratch.path().join("termination"),
        )
        .env("HOME", scratch.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTESTTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.path().join("secret")).unwrap(),
        r#"{"password":"hunter2-second"}"#
    );

    // No value in the webhook's logs at trace level: neither as written nor as the base64 the
    // Secret carried it in (nor the base64 of the JSON the webhook sent to Secrets Manager).
    let logs = release.webhook.as_ref().unwrap().log_lines().join("\n");
    assert!(
        logs.contains("admission review"),
        "no review was logged:\n{logs}"
    );
    for value in [
        "hunter2-first",
        "hunter2-second",
        "plain-value",
        "dry-value",
    ] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        let json = base64::engine::general_purpose::STANDARD
            .encode(format!(r#"{{"password":"{value}"}}"#));
        for shown in [value, encoded.as_str(), json.as_str()] {
            assert!(
                !logs.contains(shown),
                "{value} in the webhook's logs as {shown}"
            );
        }
    }

    // -- Hostile callers ----------------------------------------------------------------------
    // A Secret naming another namespace's secret (by ARN or by plain name) is refused.
    for foreign in [
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:test-cluster/payments/db-AbCdEf",
        "test-cluster/payments/db",
        arn.as_str(),
    ] {
        let mut steer = labelled_secret("steer", &[("password", b"steered-value")], "Opaque");
        steer["metadata"]["annotations"] = json!({"secrets.k8s.aws/secret-arn": foreign});
        let (ok, stderr) = apply(&steer);
        assert!(!ok, "{foreign}: admitted");
        assert!(
            stderr.contains(&format!("only as \"test-cluster/{}/steer\"", ns.app)),
            "{stderr}"
        );
    }
    assert!(!plane.exists("secret", "steer", &ns.app));
    // A secret under the prefix that the writer did not create (no owner tags) is not written.
    let squatted_arn = moto.create_secret(
        "us-east-1",
        &format!("test-cluster/{}/squatted", ns.app),
        "squatter-original",
    );
    let (ok, stderr) = apply(&labelled_secret(
        "squatted",
        &[("password", b"squatted-value")],
        "Opaque",
    ));
    assert!(!ok);
    assert!(stderr.contains("refusing to write"), "{stderr}");
    assert!(stderr.contains("did not create it"), "{stderr}");
    assert_eq!(value(&squatted_arn), "squatter-original");
    assert_eq!(versions(&squatted_arn), 1);

    // Forged reviews sent straight to the webhook port, not through the API server: one for
    // the existing Secret, one creating a Secret in kube-system. They are answered (a review
    // cannot be told from a real one), but nothing they stage becomes current.
    let webhook = release.webhook.as_ref().unwrap();
    let ca = tempfile::NamedTempFile::new().unwrap();
    let tls = plane.get_json(&[
        "secret",
        &format!("{}-tls", release.fullname),
        "-n",
        &ns.release,
    ]);
    std::fs::write(ca.path(), b64(tls["data"]["ca.crt"].as_str().unwrap())).unwrap();
    let forge = |uid: &str, namespace: &str, name: &str, value: &[u8]| -> Value {
        let mut object = labelled_secret(name, &[("password", value)], "Opaque");
        object["metadata"]["namespace"] = json!(namespace);
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Secret"},
                "resource": {"group": "", "version": "v1", "resource": "secrets"},
                "namespace": namespace, "name": name, "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:forger"},
                "object": object}});
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let stream = crate::common::webhook::connect(
                webhook.webhook,
                ca.path(),
                &format!("{}.{}.svc", release.fullname, ns.release),
                &[b"http/1.1"],
            )
            .await
            .unwrap();
            let mut client = crate::common::webhook::Client::new(stream).await;
            let (status, body) = client
                .post("/mutating-secrets", review.to_string().into_bytes())
                .await
                .unwrap();
            assert_eq!(status, 200);
            serde_json::from_slice(&body).unwrap()
        })
    };
    let answer = forge("forged-1", &ns.app, "db", b"forged-value");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let answer = forge("forged-2", "kube-system", "forged", b"forged-value");
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let unpersisted = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("secret_inject_secret_writer_versions_total{result=\"unpersisted\"}")
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    let admin = webhook.admin;
    plane.wait_for(
        "both forged versions to be counted as never persisted",
        Duration::from_secs(60),
        || unpersisted(&crate::common::webhook::metrics(admin)) >= 2,
    );
    assert_eq!(value(&arn), r#"{"password":"hunter2-second"}"#);
    // The forged first version of a new secret (Secrets Manager makes a first version current
    // whatever its label) is gone with its secret after the grace period.
    plane.wait_for(
        "the secret only a forged review created to be deleted",
        Duration::from_secs(30),
        || {
            moto.json(
                "us-east-1",
                "secretsmanager.DescribeSecret",
                &json!({"SecretId": "test-cluster/kube-system/forged"}),
            )
            .0 == 404
        },
    );
    // The staged forged version of the existing secret lost its pending label.
    let stages = sm("DescribeSecret", json!({"SecretId": arn}))["VersionIdsToStages"].clone();
    assert!(
        !stages.to_string().contains("secret-inject-pending"),
        "{stages}"
    );
    assert!(
        release
            .webhook_log()
            .contains("the API server never persisted"),
        "the forgery was not logged"
    );
    // The real path still works after the forgeries.
    let (ok, stderr) = apply(&labelled_secret(
        "db",
        &[("password", b"hunter2-after")],
        "Opaque",
    ));
    assert!(ok, "{stderr}");
    promoted(&arn, r#"{"password":"hunter2-after"}"#);
    // Deleting the Kubernetes Secret leaves the Secrets Manager secret as it was.
    plane.kubectl_ok(&["delete", "secret", "db", "-n", &ns.app]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(value(&arn), r#"{"password":"hunter2-after"}"#);
    // The chart's RBAC gives the loop list and watch on secrets, and nothing more.
    let sa = format!("system:serviceaccount:{}:{}", ns.release, release.fullname);
    for (verb, allowed) in [
        ("list", "yes"),
        ("watch", "yes"),
        ("get", "no"),
        ("update", "no"),
    ] {
        let output = plane.kubectl(&["auth", "can-i", verb, "secrets", "-A", "--as", &sa]);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            allowed,
            "{verb} secrets"
        );
    }

    // Secrets Manager down: the create is refused and nothing lands in etcd.
    drop(moto);
    let (ok, stderr) = apply(&labelled_secret("late", &[("k", b"late-value")], "Opaque"));
    assert!(!ok);
    assert!(
        stderr.contains("cannot store Secret app-writer/late in Secrets Manager"),
        "{stderr}"
    );
    assert!(!plane.exists("secret", "late", &ns.app));
    release.stop_webhook();
}

/// Whether `stored` holds `expected` with only server defaults added: every field of an object
/// kept with the same value (an empty string may be omitted), arrays of the same length and
/// order.
fn kept(expected: &Value, stored: &Value, at: &str) -> Result<(), String> {
    match (expected, stored) {
        (Value::Object(e), Value::Object(s)) => e
            .iter()
            .try_for_each(|(k, v)| kept(v, s.get(k).unwrap_or(&Value::Null), &format!("{at}.{k}"))),
        (Value::Array(e), Value::Array(s)) if e.len() == s.len() => e
            .iter()
            .zip(s)
            .enumerate()
            .try_for_each(|(i, (e, s))| kept(e, s, &format!("{at}[{i}]"))),
        (e, s) if e == s => Ok(()),
        // The API omits empty strings (`env[].value: ""`).
        (Value::String(e), Value::Null) if e.is_empty() => Ok(()),
        (e, s) => Err(format!("{at}: expected {e}, stored {s}")),
    }
}

/// A fixed sample of the property tests' generated cases (`common::random_pod::sample`) through
/// the real API server and our webhook installed by the chart: each valid pod is stored
/// injected exactly as the properties say (the agent first or last, the volume, one mount in
/// each selected container and none elsewhere, the env vars; every original container, init
/// container, volume, mount, env var and annotation still there, unchanged and in order, with
/// only the API server's defaults added), and each broken set is refused naming its annotation.
#[test]
fn a_sample_of_generated_pods_is_stored_injected_and_broken_annotation_sets_are_refused() {
    use crate::common::random_pod::{self, Outcome};
    let ns = Namespaces::new("generated", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let names = random_pod::names;
    for case in random_pod::sample(5, 2) {
        let name = case.pod["metadata"]["name"].as_str().unwrap().to_owned();
        eprintln!(
            "{name}: {} containers, {} init containers, {:?}",
            names(&case.pod, "containers").len(),
            names(&case.pod, "initContainers").len(),
            case.ours
        );
        match &case.outcome {
            Outcome::Inject(injection) => {
                create_ok(plane, &ns.app, &case.pod);
                let stored = plane.get_json(&["pod", &name, "-n", &ns.app]);
                assert_eq!(
                    names(&stored, "containers"),
                    names(&case.pod, "containers"),
                    "{name}"
                );
                let mut inits = names(&case.pod, "initContainers");
                let agent = "secrets-init-container".to_owned();
                if injection.last {
                    inits.push(agent);
                } else {
                    inits.insert(0, agent);
                }
                assert_eq!(names(&stored, "initContainers"), inits, "{name}");
                let stored = without_token_volume(stored);
                assert_eq!(
                    random_pod::secret_mounts(&stored),
                    random_pod::expected_secret_mounts(&case, injection),
                    "{name}"
                );
                random_pod::check_agent(injection, &stored)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let expected = random_pod::expected_pod(&case, &stored)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                kept(&expected, &stored, &name)
                    .unwrap_or_else(|e| panic!("{e}\nexpected: {expected}\nstored:   {stored}"));
            }
            Outcome::Deny { key, broken } => {
                let output = create(plane, &ns.app, &case.pod);
                let stderr = String::from_utf8_lossy(&output.stderr);
                assert!(!output.status.success(), "{name} ({broken}) was admitted");
                assert!(
                    stderr.contains(&format!("denied the request: annotation {key}: ")),
                    "{name} ({broken}): {stderr}"
                );
                assert!(!plane.exists("pod", &name, &ns.app), "{name} was stored");
            }
        }
    }
}

/// The `secret-vol` volume of a stored pod.
fn secret_vol(pod: &Value) -> Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "secret-vol")
        .unwrap_or_else(|| panic!("no secret-vol: {}", pod["spec"]))
        .clone()
}

/// The issue's pod: 100 secrets of up to 64 KiB each.
fn hundred_secrets() -> serde_json::Map<String, Value> {
    (0..100)
        .map(|i| (format!("secrets.k8s.aws/secret-arn.s{i}"), json!(ARN)))
        .collect()
}

/// Issue 19 item 1: with the chart's defaults the volume is sized from each pod's secrets (two
/// complete sets, with headroom), a pod's stated size that cannot hold them is denied naming
/// the annotation and the size needed, and the default mount path /tmp is warned about.
#[test]
fn the_volume_is_sized_from_the_secrets_and_a_stated_size_too_small_is_denied() {
    let ns = Namespaces::new("volume", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let many = hundred_secrets();
    let stderr = create_ok(
        plane,
        &ns.app,
        &pod("many", Value::from(many.clone()), true),
    );
    let stored = plane.get_json(&["pod", "many", "-n", &ns.app]);
    assert_injected(&stored);
    assert_eq!(secret_vol(&stored)["emptyDir"]["sizeLimit"], "16Mi");
    assert!(
        stderr.contains(
            "Warning: secret-inject: the secret volume is mounted at /tmp (the default of \
             secrets.k8s.aws/mount-path), so the app's own /tmp becomes this read-only \
             in-memory volume of 16Mi"
        ),
        "{stderr}"
    );

    let mut small = many.clone();
    small.insert("secrets.k8s.aws/volume-size-limit".into(), json!("1Mi"));
    let output = create(plane, &ns.app, &pod("small", Value::from(small), true));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "annotation secrets.k8s.aws/volume-size-limit: 1Mi cannot hold the pod's secrets: \
             100 secret(s)"
        ) && stderr.contains("set it to at least 13Mi"),
        "{stderr}"
    );
    assert!(!plane.exists("pod", "small", &ns.app));

    let mut stated = many;
    stated.insert("secrets.k8s.aws/volume-size-limit".into(), json!("13Mi"));
    stated.insert(
        "secrets.k8s.aws/mount-path".into(),
        json!("/var/run/secrets/app"),
    );
    let stderr = create_ok(plane, &ns.app, &pod("stated", Value::from(stated), true));
    let stored = plane.get_json(&["pod", "stated", "-n", &ns.app]);
    assert_eq!(secret_vol(&stored)["emptyDir"]["sizeLimit"], "13Mi");
    assert!(!stderr.contains("/tmp"), "{stderr}");
}

/// Issue 19 item 1: an operator's stated `--volume-size-limit` that cannot hold a pod's
/// secrets denies the pod, naming the flag, the size needed and the annotation that fixes it;
/// the annotation wins over the flag.
#[test]
fn an_operators_volume_size_too_small_for_a_pod_is_denied_naming_the_flag() {
    let ns = Namespaces::new("volflag", &[]);
    let plane = shared();
    let _release = Release::install_with(&ns, &[], &["--volume-size-limit=1Mi"], &[]);
    let seed = pod("seed", json!({"secrets.k8s.aws/secret-arn": ARN}), true);
    create_ok(plane, &ns.app, &seed);
    let stored = plane.get_json(&["pod", "seed", "-n", &ns.app]);
    assert_eq!(secret_vol(&stored)["emptyDir"]["sizeLimit"], "1Mi");

    let output = create(
        plane,
        &ns.app,
        &pod("many", Value::from(hundred_secrets()), true),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the webhook's --volume-size-limit 1Mi cannot hold the pod's secrets")
            && stderr.contains("set secrets.k8s.aws/volume-size-limit: 13Mi (or more) on the pod"),
        "{stderr}"
    );
    let mut stated = hundred_secrets();
    stated.insert("secrets.k8s.aws/volume-size-limit".into(), json!("20Mi"));
    create_ok(plane, &ns.app, &pod("stated", Value::from(stated), true));
    let stored = plane.get_json(&["pod", "stated", "-n", &ns.app]);
    assert_eq!(secret_vol(&stored)["emptyDir"]["sizeLimit"], "20Mi");
}

/// Issue 19 item 10: the agent is a Linux container; a Windows pod that asks for secrets is
/// denied, naming spec.os.name, instead of getting an init container its nodes cannot run.
#[test]
fn a_windows_pod_that_asks_for_secrets_is_denied_naming_spec_os_name() {
    let ns = Namespaces::new("windows", &[]);
    let plane = shared();
    let _release = Release::install(&ns, &[]);
    let mut windows = pod("windows", json!({"secrets.k8s.aws/secret-arn": ARN}), false);
    windows["spec"]["os"] = json!({"name": "windows"});
    let output = create(plane, &ns.app, &windows);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("admission webhook \"pods.secret-inject.secrets.k8s.aws\" denied")
            && stderr.contains("spec.os.name: the pod runs on \"windows\"")
            && stderr.contains("Linux-only"),
        "{stderr}"
    );
    assert!(!plane.exists("pod", "windows", &ns.app));
    // A Windows pod without our annotations is not ours to deny.
    windows["metadata"]["annotations"] = json!({});
    create_ok(plane, &ns.app, &windows);
}
