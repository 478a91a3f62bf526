//! The offline injector, run as a user runs it: `secret-inject inject -f FILE|-`.

use std::process::{Command, Output, Stdio};

use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::common;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";

fn inject(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut all = vec!["inject"];
    all.extend_from_slice(args);
    common::secret_inject(&all, stdin)
}

fn documents(yaml: &[u8]) -> Vec<Value> {
    yaml_serde::Deserializer::from_slice(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn init_container_names(template: &Value) -> Vec<&str> {
    template["spec"]["initContainers"]
        .as_array()
        .map(|a| a.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

#[test]
fn seed_blog_deployment_is_injected_as_the_seed_describes() {
    let path = common::repo_root().join("examples/webserver-deployment.yaml");
    let output = inject(&["-f", &path.to_string_lossy()], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs = documents(&output.stdout);
    assert_eq!(docs.len(), 1);
    let template = &docs[0]["spec"]["template"];
    // "The mutating webhook creates a emptyDir volume secret-vol and mounts it at /tmp/ location
    // for all the containers in the pod. The decrypted secret is written to /tmp/secret."
    // The second volume is the agent's empty stand-in for the Kubernetes API token.
    assert_eq!(
        template["spec"]["volumes"],
        json!([
            { "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" }, "name": "secret-vol" },
            { "emptyDir": { "medium": "Memory", "sizeLimit": "4Ki" },
              "name": "secret-inject-no-api-token" },
        ])
    );
    // Read-only: only the agent writes the volume.
    assert_eq!(
        template["spec"]["containers"][0]["volumeMounts"],
        json!([{ "mountPath": "/tmp", "name": "secret-vol", "readOnly": true }])
    );
    assert_eq!(init_container_names(template), ["secrets-init-container"]);
    let agent = &template["spec"]["initContainers"][0];
    let env: Vec<(&str, &Value)> = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(env[0].0, "SECRET_ARN");
    // The ARN admission validated, as a value (the agent never re-reads the annotation).
    assert_eq!(
        env[0].1["value"],
        template["metadata"]["annotations"]["secrets.k8s.aws/secret-arn"]
    );
    assert_eq!(
        env[1],
        (
            "SECRET_FILENAME",
            &json!({ "name": "SECRET_FILENAME", "value": "secret" })
        )
    );
    // Everything else of the seed's Deployment is untouched.
    let original = documents(&std::fs::read(&path).unwrap()).remove(0);
    assert_eq!(docs[0]["spec"]["selector"], original["spec"]["selector"]);
    assert_eq!(
        template["spec"]["containers"][0]["command"],
        original["spec"]["template"]["spec"]["containers"][0]["command"]
    );
    assert_eq!(
        template["spec"]["serviceAccountName"],
        "webserver-service-account"
    );
    // The user is told the file is readable by all users in the pod (no fsGroup given), and
    // that the app's /tmp becomes the secret volume (the seed's default mount path), in lines
    // for a person, not log records.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings.iter().all(|w| w.starts_with("warning: ")),
        "{stderr}"
    );
    assert!(warnings[0].contains("fsGroup"), "{stderr}");
    assert!(
        warnings[1].contains("mounted at /tmp") && warnings[1].contains("volume of 1Mi"),
        "{stderr}"
    );
}

/// Workloads of every supported kind, as kubectl builds them, plus kinds that pass through.
fn workloads() -> String {
    let annotate = |mut template: Value| {
        template["metadata"]["annotations"] = json!({ "secrets.k8s.aws/secret-arn": ARN });
        template
    };
    let mut deployment =
        common::kubectl_object(&["create", "deployment", "web", "--image=nginx:1.27"]);
    deployment["spec"]["template"] = annotate(deployment["spec"]["template"].clone());
    let mut statefulset = deployment.clone();
    statefulset["kind"] = json!("StatefulSet");
    statefulset["metadata"]["name"] = json!("db");
    statefulset["spec"]
        .as_object_mut()
        .unwrap()
        .remove("strategy");
    statefulset.as_object_mut().unwrap().remove("status");
    statefulset["spec"]["serviceName"] = json!("db");
    let mut daemonset = deployment.clone();
    daemonset["kind"] = json!("DaemonSet");
    daemonset["metadata"]["name"] = json!("agent");
    daemonset["spec"]
        .as_object_mut()
        .unwrap()
        .remove("strategy");
    daemonset.as_object_mut().unwrap().remove("status");
    daemonset["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas");
    let mut replicaset = deployment.clone();
    replicaset["kind"] = json!("ReplicaSet");
    replicaset["spec"]
        .as_object_mut()
        .unwrap()
        .remove("strategy");
    replicaset.as_object_mut().unwrap().remove("status");
    let mut job = common::kubectl_object(&[
        "create",
        "job",
        "migrate",
        "--image=busybox:1.36",
        "--",
        "true",
    ]);
    job["spec"]["template"] = annotate(job["spec"]["template"].clone());
    let mut cronjob = common::kubectl_object(&[
        "create",
        "cronjob",
        "report",
        "--image=busybox:1.36",
        "--schedule=0 * * * *",
    ]);
    cronjob["spec"]["jobTemplate"]["spec"]["template"] =
        annotate(cronjob["spec"]["jobTemplate"]["spec"]["template"].clone());
    let mut pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "single" },
        "spec": { "containers": [{ "name": "app", "image": "app:1" }] } });
    pod["metadata"]["annotations"] = json!({ "secrets.k8s.aws/secret-arn": ARN });
    let service =
        common::kubectl_object(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let configmap =
        common::kubectl_object(&["create", "configmap", "settings", "--from-literal=a=b"]);
    let plain = common::kubectl_object(&["create", "deployment", "plain", "--image=nginx:1.27"]);
    let list = json!({ "apiVersion": "v1", "kind": "List", "items": [pod, configmap] });
    let docs = [
        deployment,
        statefulset,
        daemonset,
        replicaset,
        job,
        cronjob,
        service,
        plain,
        list,
    ];
    docs.iter()
        .map(|d| yaml_serde::to_string(d).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn every_workload_kind_is_injected_and_others_pass_through() {
    let input = workloads();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("app.yaml");
    std::fs::write(&file, &input).unwrap();
    let output = inject(&["-f", &file.to_string_lossy()], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let before = documents(input.as_bytes());
    let after = documents(&output.stdout);
    assert_eq!(before.len(), after.len());
    let template_of = |doc: &Value| -> Option<Value> {
        match doc["kind"].as_str().unwrap() {
            "CronJob" => Some(doc["spec"]["jobTemplate"]["spec"]["template"].clone()),
            "Pod" => Some(doc.clone()),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                Some(doc["spec"]["template"].clone())
            }
            _ => None,
        }
    };
    for (old, new) in before.iter().zip(&after) {
        let kind = old["kind"].as_str().unwrap();
        let name = old["metadata"]["name"].as_str().unwrap_or("");
        match (kind, name) {
            ("Service", _) | ("Deployment", "plain") => {
                assert_eq!(old, new, "{kind} must pass through unchanged")
            }
            ("List", _) => {
                let items = new["items"].as_array().unwrap();
                assert_eq!(init_container_names(&items[0]), ["secrets-init-container"]);
                assert_eq!(
                    items[1], old["items"][1],
                    "ConfigMap in a List must pass through"
                );
            }
            _ => {
                let template = template_of(new).unwrap();
                assert_eq!(
                    init_container_names(&template),
                    ["secrets-init-container"],
                    "{kind}"
                );
                assert_eq!(
                    template["metadata"]["annotations"]["secrets.k8s.aws/status"],
                    "injected"
                );
            }
        }
    }
    // Valid Kubernetes objects, on the oldest and newest supported versions.
    let out_file = work.path().join("injected.yaml");
    std::fs::write(&out_file, &output.stdout).unwrap();
    common::validate_strict(&out_file);
    // Idempotent: injecting the output again changes nothing.
    let again = inject(&["-f", &out_file.to_string_lossy()], None);
    assert!(again.status.success());
    assert_eq!(documents(&again.stdout), after);
}

#[test]
fn json_on_standard_input_works_too() {
    let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "annotations": {
        "secrets.k8s.aws/sidecarInjectorWebhook": "enabled", "secrets.k8s.aws/secret-arn": ARN,
        "secrets.k8s.aws/mount-path": "/var/run/secrets/app" } },
        "spec": { "securityContext": { "fsGroup": 2000 }, "containers": [{ "name": "app", "image": "app:1" }] } });
    let output = inject(
        &["-f", "-"],
        Some(serde_json::to_string_pretty(&pod).unwrap().as_bytes()),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs = documents(&output.stdout);
    assert_eq!(init_container_names(&docs[0]), ["secrets-init-container"]);
    // fsGroup and a mount path of its own: no warning.
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn bad_annotation_fails_naming_the_document_and_annotation_and_prints_nothing() {
    let input = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fine\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\n  annotations:\n    secrets.k8s.aws/secret-arn: {ARN}\n    secrets.k8s.aws/mount-path: relative/path\n\
         spec:\n  containers:\n  - name: app\n    image: app:1\n"
    );
    let output = inject(&["-f", "-"], Some(input.as_bytes()));
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "nothing may be printed on error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // One line for a person, saying each thing once.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("document 2 (Pod/broken)"), "{stderr}");
    assert_eq!(
        stderr
            .matches("annotation secrets.k8s.aws/mount-path")
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("is not an absolute path").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("timestamp"), "{stderr}");

    let output = inject(&["-f", "-"], Some(b"key: [unclosed"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: standard input: document 1: not valid YAML or JSON: "),
        "{stderr}"
    );

    // JSON log records only when asked for.
    let mut json = Command::new(env!("CARGO_BIN_EXE_secret-inject"));
    let output = json
        .args([
            "--log-format",
            "json",
            "inject",
            "-f",
            "/nonexistent/app.yaml",
        ])
        .output()
        .unwrap();
    let record: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(record["level"], "ERROR");

    let output = inject(&["-f", "/nonexistent/app.yaml"], None);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/app.yaml"));
}

/// Issue 19 item 5: a misspelt opt-in key on a pod with no other opt-in injects nothing, and
/// says so with the closest key; exit 0 (the webhook admits such a pod, with the same warning).
#[test]
fn a_misspelt_key_is_a_warning_with_the_closest_key() {
    for (typo, closest) in [
        ("secret-arns", "secrets.k8s.aws/secret-arn"),
        ("secret-ar", "secrets.k8s.aws/secret-arn"),
    ] {
        let input = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    \
             metadata:\n      annotations:\n        secrets.k8s.aws/{typo}: {ARN}\n    spec:\n      \
             containers:\n      - name: app\n        image: app:1\n"
        );
        let output = inject(&["-f", "-"], Some(input.as_bytes()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!(
                "warning: standard input: document 1 (Deployment/web): secret-inject: annotation \
                 secrets.k8s.aws/{typo}: is not a secret-inject annotation; did you mean {closest}?"
            )
        );
        let docs = documents(&output.stdout);
        assert!(init_container_names(&docs[0]["spec"]["template"]).is_empty());
    }
}

/// Issue 19 item 6: an unquoted number in an annotation (YAML reads it as a number) names the
/// annotation and says to quote it, in `inject` and in `iam-policy`, which read manifests alike.
#[test]
fn an_unquoted_number_in_an_annotation_is_named_with_the_fix() {
    let input = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  annotations:\n    \
         secrets.k8s.aws/secret-arn.x: {ARN}\n    secrets.k8s.aws/version-id.x: 3\n\
         spec:\n  containers:\n  - name: app\n    image: app:1\n"
    );
    for command in ["inject", "iam-policy"] {
        let output = common::secret_inject(&[command, "-f", "-"], Some(input.as_bytes()));
        assert!(!output.status.success());
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim_end(),
            "error: standard input: document 1 (Pod/app): /metadata/annotations: annotation \
             secrets.k8s.aws/version-id.x is the number 3, not a string; quote it: \
             secrets.k8s.aws/version-id.x: \"3\"",
            "{command}"
        );
    }
}

/// Issue 19 item 7: what admission denies, `inject` and `iam-policy` refuse, naming the
/// annotation: a broken JMESPath expression, and a failover region of another partition than
/// the secret's (for which iam-policy printed an ARN that cannot exist).
#[test]
fn a_broken_expression_and_a_failover_region_of_another_partition_are_refused() {
    let pod = |annotations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: app\n  annotations:\n{annotations}\
             spec:\n  containers:\n  - name: app\n    image: app:1\n"
        )
    };
    let cn = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:db-AbCdEf";
    for (annotations, expected) in [
        (
            format!(
                "    secrets.k8s.aws/secret-arn.db: {ARN}\n    secrets.k8s.aws/secret-key.db: db.hosts[0\n"
            ),
            "annotation secrets.k8s.aws/secret-key.db: \"db.hosts[0\" is not a valid JMESPath \
             expression: ",
        ),
        (
            format!(
                "    secrets.k8s.aws/secret-arn: {cn}\n    secrets.k8s.aws/failover-region: us-west-2\n"
            ),
            "annotation secrets.k8s.aws/failover-region: us-west-2 is in partition aws, but \
             secrets.k8s.aws/secret-arn is in aws-cn",
        ),
    ] {
        for command in ["inject", "iam-policy"] {
            let output =
                common::secret_inject(&[command, "-f", "-"], Some(pod(&annotations).as_bytes()));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{command}: {stderr}");
            assert!(output.stdout.is_empty(), "{command}");
            assert!(
                stderr.starts_with("error: standard input: document 1 (Pod/app): ")
                    && stderr.contains(expected),
                "{command}: {stderr}"
            );
        }
    }
}

/// Issue 19 items 1 and 10 offline: `inject` denies what the webhook denies (a Windows pod, a
/// stated volume size too small for the pod's secrets) and sizes the volume the same way.
#[test]
fn inject_denies_windows_pods_and_volumes_too_small_and_sizes_the_volume_from_the_secrets() {
    let deployment = |annotations: &str, os: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector:\n    \
             matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n      \
             annotations:\n{annotations}    spec:\n{os}      containers:\n      - name: app\n        \
             image: app:1\n"
        )
    };
    let one = format!("        secrets.k8s.aws/secret-arn: {ARN}\n");
    let output = inject(
        &["-f", "-"],
        Some(deployment(&one, "      os: {name: windows}\n").as_bytes()),
    );
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("document 1 (Deployment/web)")
            && stderr.contains("spec.os.name: the pod runs on \"windows\"")
            && stderr.contains("Linux-only"),
        "{stderr}"
    );

    let many: String = (0..100)
        .map(|i| format!("        secrets.k8s.aws/secret-arn.s{i}: {ARN}\n"))
        .collect();
    let output = inject(&["-f", "-"], Some(deployment(&many, "").as_bytes()));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs = documents(&output.stdout);
    let volume = docs[0]["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "secret-vol")
        .unwrap()
        .clone();
    assert_eq!(volume["emptyDir"]["sizeLimit"], "16Mi");

    let small = format!("{many}        secrets.k8s.aws/volume-size-limit: 1Mi\n");
    let output = inject(&["-f", "-"], Some(deployment(&small, "").as_bytes()));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("annotation secrets.k8s.aws/volume-size-limit: 1Mi cannot hold")
            && stderr.contains("at least 13Mi"),
        "{stderr}"
    );
    let output = inject(
        &["--volume-size-limit", "1Mi", "-f", "-"],
        Some(deployment(&many, "").as_bytes()),
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--volume-size-limit 1Mi cannot hold"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn output_reads_back_identically_in_yaml_1_1_readers() {
    // kubectl reads YAML as 1.1, where unquoted on/yes/0440/2001-12-14/12:30:45 are not strings.
    let tricky = [
        "on",
        "yes",
        "N",
        "0440",
        "2001-12-14",
        "12:30:45",
        "1_000",
        "~",
        "a\u{2028}b",
        "tab\tand\nnewline",
    ];
    let env: Vec<Value> = tricky
        .iter()
        .enumerate()
        .map(|(i, v)| json!({ "name": format!("V{i}"), "value": v }))
        .collect();
    let pod = json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p", "annotations": { "secrets.k8s.aws/secret-arn": ARN, "team": "on", "since": "2001-12-14" } },
        "spec": { "containers": [{ "name": "app", "image": "app:1", "env": env }] } });
    let output = inject(
        &["-f", "-"],
        Some(serde_json::to_string(&pod).unwrap().as_bytes()),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // PyYAML's safe_load is a YAML 1.1 reader.
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))";
    let read = common::run_tool("python", &["-c", script], Some(&output.stdout));
    let read: Value = serde_json::from_slice(&read).unwrap();
    let injected = &read[0];
    assert_eq!(injected["metadata"]["annotations"]["team"], "on");
    assert_eq!(injected["metadata"]["annotations"]["since"], "2001-12-14");
    for (i, value) in tricky.iter().enumerate() {
        assert_eq!(
            injected["spec"]["containers"][0]["env"][i]["value"], *value,
            "{value:?}"
        );
    }
    assert_eq!(
        read[0],
        documents(&output.stdout)[0],
        "YAML 1.1 and 1.2 readers disagree"
    );
}

#[test]
fn examples_are_valid_kubernetes_objects_before_and_after_injection() {
    let dir = common::repo_root().join("examples");
    let work = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        common::validate_strict(&path);
        let output = inject(&["-f", &path.to_string_lossy()], None);
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let injected = work.path().join(path.file_name().unwrap());
        std::fs::write(&injected, &output.stdout).unwrap();
        common::validate_strict(&injected);
        checked += 1;
    }
    assert!(checked >= 2, "examples/ holds the seed's manifests");
    // The IAM policy example is JSON that grants only GetSecretValue.
    let policy: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("webserver-secrets-policy.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        policy["Statement"][0]["Action"],
        "secretsmanager:GetSecretValue"
    );
}

#[test]
fn a_fatal_error_at_a_terminal_is_one_line_for_a_person() {
    // `script` gives the command a pseudo-terminal, as a person's shell would. The webhook logs
    // JSON by default (it runs in pods), but its fatal error at a terminal is for a person.
    let command = format!(
        "{} webhook --port 1 --admin-port 2",
        env!("CARGO_BIN_EXE_secret-inject")
    );
    let output = Command::new(common::tool("script"))
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with("error: no serving certificate"),
        "{text}"
    );
}

/// Rotation, both ways the agent can run: native (one init container with restartPolicy Always
/// and a startup probe) and classic (an init container and a regular sidecar). Both validate on
/// versions before and after native sidecars (1.29); a Job is denied in classic mode only.
#[test]
fn rotation_output_validates_before_and_after_native_sidecars_and_jobs_need_them() {
    let path = common::repo_root().join("examples/rotation-deployment.yaml");
    let work = tempfile::tempdir().unwrap();
    for (mode, init_names, containers) in [
        ("always", vec!["secrets-init-container"], vec!["nginx"]),
        (
            "never",
            vec!["secrets-init-container"],
            vec!["nginx", "secrets-refresh"],
        ),
    ] {
        let output = inject(
            &["--native-sidecars", mode, "-f", &path.to_string_lossy()],
            None,
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let docs = documents(&output.stdout);
        let template = &docs[0]["spec"]["template"];
        assert_eq!(init_container_names(template), init_names, "{mode}");
        let names: Vec<&str> = template["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, containers, "{mode}");
        let init = &template["spec"]["initContainers"][0];
        assert_eq!(
            init.get("restartPolicy").is_some(),
            mode == "always",
            "{mode}"
        );
        assert_eq!(
            init.get("startupProbe").is_some(),
            mode == "always",
            "{mode}"
        );
        assert_eq!(template["spec"]["shareProcessNamespace"], true);
        let file = work.path().join(format!("{mode}.yaml"));
        std::fs::write(&file, &output.stdout).unwrap();
        for version in ["1.28.0", "1.30.0", "1.37.0"] {
            let result = common::run_tool_raw(
                "kubernetes-validate",
                &["--strict", "-k", version, &file.to_string_lossy()],
                None,
            );
            assert!(
                result.status.success(),
                "{mode} on {version}: {}{}",
                String::from_utf8_lossy(&result.stdout),
                String::from_utf8_lossy(&result.stderr)
            );
        }
    }
    let job = common::kubectl_object(&["create", "job", "migrate", "--image=migrate:1.0"]);
    let mut job = job;
    job["spec"]["template"]["metadata"]["annotations"] = json!({
        "secrets.k8s.aws/secret-arn": ARN,
        "secrets.k8s.aws/refresh-interval": "5m",
    });
    let input = serde_json::to_vec(&job).unwrap();
    let classic = inject(&["--native-sidecars", "never", "-f", "-"], Some(&input));
    assert!(!classic.status.success());
    let stderr = String::from_utf8_lossy(&classic.stderr);
    assert!(
        stderr.contains("secrets.k8s.aws/refresh-interval") && stderr.contains("never complete"),
        "{stderr}"
    );
    let native = inject(&["--native-sidecars", "always", "-f", "-"], Some(&input));
    assert!(
        native.status.success(),
        "{}",
        String::from_utf8_lossy(&native.stderr)
    );
}

/// A pod template asking for an env var from the secret (EnvFiles, Kubernetes ≥ 1.35) and for
/// rotation (a native sidecar on Kubernetes ≥ 1.29).
fn env_and_rotation_pod() -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "annotations": {
            "secrets.k8s.aws/secret-arn": ARN,
            "secrets.k8s.aws/env": "DB_PASSWORD=password",
            "secrets.k8s.aws/refresh-interval": "5m",
        }},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}
    })
    .to_string()
}

/// The `--flag=value` arguments of the webhook container in deploy/secret-inject.yaml.
fn deploy_webhook_flag(flag: &str) -> String {
    let text =
        std::fs::read_to_string(common::repo_root().join("deploy/secret-inject.yaml")).unwrap();
    let prefix = format!("- --{flag}=");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("deploy/secret-inject.yaml has no --{flag}"))
        .to_owned()
}

/// `inject` decides --env-files auto and --native-sidecars auto from the Kubernetes version it
/// is told, as the webhook does from the API server's; by default it denies and injects exactly
/// what the webhook of deploy/secret-inject.yaml does, so it never accepts a manifest that
/// cluster denies.
#[test]
fn inject_agrees_with_the_shipped_webhook_or_the_kubernetes_version_it_is_told() {
    let pod = env_and_rotation_pod();
    let pod = pod.as_bytes();
    // The default, and the shipped webhook's flags: the same answer (deny env.<n>: EnvFiles off).
    let by_default = inject(&["-f", "-"], Some(pod));
    let env_files = deploy_webhook_flag("env-files");
    let native_sidecars = deploy_webhook_flag("native-sidecars");
    let as_shipped = inject(
        &[
            "-f",
            "-",
            "--env-files",
            &env_files,
            "--native-sidecars",
            &native_sidecars,
        ],
        Some(pod),
    );
    assert_eq!(
        env_files, "off",
        "deploy/ changed: revisit inject's default"
    );
    assert_eq!(by_default.status.code(), as_shipped.status.code());
    assert_eq!(by_default.stdout, as_shipped.stdout);
    assert_eq!(by_default.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&by_default.stderr);
    for expected in [
        "annotation secrets.k8s.aws/env:",
        "need Kubernetes 1.35 or later",
        "--kubernetes-version 1.35",
    ] {
        assert!(stderr.contains(expected), "{expected:?}: {stderr}");
    }
    // Without env vars the default injects a native sidecar, as the shipped webhook does.
    let rotation_only = pod_without_env();
    let by_default = inject(&["-f", "-"], Some(rotation_only.as_bytes()));
    let as_shipped = inject(
        &["-f", "-", "--native-sidecars", &native_sidecars],
        Some(rotation_only.as_bytes()),
    );
    assert!(by_default.status.success());
    assert_eq!(by_default.stdout, as_shipped.stdout);

    // Told the cluster's version, auto means what that version supports.
    let sidecar_kind = |output: &Output| -> &'static str {
        let pod = &documents(&output.stdout)[0];
        let native = pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["restartPolicy"] == "Always");
        if native { "native" } else { "classic" }
    };
    for (version, env_ok, sidecars) in [
        ("1.28", false, "classic"),
        ("v1.29.3", false, "native"),
        ("1.34", false, "native"),
        ("1.35", true, "native"),
        ("1.37", true, "native"),
    ] {
        let with_env = inject(&["-f", "-", "--kubernetes-version", version], Some(pod));
        assert_eq!(
            with_env.status.success(),
            env_ok,
            "{version}: {}",
            String::from_utf8_lossy(&with_env.stderr)
        );
        if env_ok {
            assert!(String::from_utf8_lossy(&with_env.stdout).contains("fileKeyRef"));
        }
        let output = inject(
            &["-f", "-", "--kubernetes-version", version],
            Some(rotation_only.as_bytes()),
        );
        assert!(output.status.success(), "{version}");
        assert_eq!(sidecar_kind(&output), sidecars, "{version}");
    }
    // Explicit switches win over the version, as in the webhook.
    let output = inject(
        &[
            "-f",
            "-",
            "--kubernetes-version",
            "1.35",
            "--env-files",
            "off",
        ],
        Some(pod),
    );
    assert_eq!(output.status.code(), Some(1));
    let bad = inject(&["-f", "-", "--kubernetes-version", "latest"], Some(pod));
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("\"latest\" is not a Kubernetes version such as 1.35"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

fn pod_without_env() -> String {
    let mut pod: Value = serde_json::from_str(&env_and_rotation_pod()).unwrap();
    pod["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("secrets.k8s.aws/env");
    pod.to_string()
}

/// Any kind with a pod template at spec.template (an Argo Rollout) is injected; documents
/// passed over that may have been meant for injection, and an empty input, are named on stderr
/// with their document number, kind and why; kinds that never hold pods pass by in silence.
#[test]
fn other_workload_kinds_are_injected_and_skipped_documents_are_named() {
    let template = json!({
        "metadata": {"annotations": {"secrets.k8s.aws/secret-arn": ARN}},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]}
    });
    let input = [
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
               "metadata": {"name": "web"}, "spec": {"replicas": 2, "template": template}}),
        json!({"kind": "Deployment", "metadata": {"name": "no-api-version"},
               "spec": {"template": template}}),
        json!({"metadata": {"name": "nothing"}, "data": {"a": "b"}}),
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
               "metadata": {"name": "wf"},
               "spec": {"templates": [{"name": "main", "metadata": template["metadata"],
                                        "container": {"image": "x"}}]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
               "data": {"k": "v"}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n---\n");
    let output = inject(&["-f", "-"], Some(input.as_bytes()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let after = documents(&output.stdout);
    assert_eq!(
        init_container_names(&after[0]["spec"]["template"]),
        ["secrets-init-container"]
    );
    assert_eq!(
        after[0]["spec"]["template"]["metadata"]["annotations"]["secrets.k8s.aws/status"],
        "injected"
    );
    // Skipped documents come out as they went in.
    let before = documents(input.as_bytes());
    assert_eq!(after[1..], before[1..]);
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.contains("skipped")).collect();
    assert_eq!(skipped.len(), 3, "{stderr}");
    for (line, expected) in skipped.iter().zip([
        "warning: standard input: document 2 (Deployment): skipped: it has no apiVersion",
        "warning: standard input: document 3: skipped: it has no apiVersion and kind",
        "warning: standard input: document 4 (Workflow/wf): skipped: it asks for secrets",
    ]) {
        assert!(line.starts_with(expected), "{expected:?}: {stderr}");
    }
    assert!(skipped[2].contains("spec.template"), "{stderr}");
    assert!(!stderr.contains("ConfigMap"), "{stderr}");
    // The same documents, the same words from iam-policy, which walks the same templates.
    let policy = common::secret_inject(&["iam-policy", "-f", "-"], Some(input.as_bytes()));
    let policy_stderr = String::from_utf8_lossy(&policy.stderr);
    assert!(policy.status.success(), "{policy_stderr}");
    assert_eq!(
        policy_stderr
            .lines()
            .filter(|l| l.contains("skipped"))
            .count(),
        3,
        "{policy_stderr}"
    );
    let policies: Value = serde_json::from_slice(&policy.stdout).unwrap();
    assert!(policies.get("default/default").is_some(), "{policies}");
    // An empty input, or one of comments only: nothing on stdout, and a warning.
    for empty in ["", "# just a comment\n", "---\n---\n"] {
        let output = inject(&["-f", "-"], Some(empty.as_bytes()));
        assert!(output.status.success());
        assert!(output.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "warning: standard input: no documents (the input is empty or holds only \
             comments): nothing to do\n"
        );
    }
}

/// The operator's metrics flags, as `inject` takes them (the webhook's own): the rotation
/// sidecar gets the port and, on the pod IP, a container port named agent-metrics, and the
/// output validates; a bad port is refused naming the flag.
#[test]
fn sidecar_metrics_flags_give_the_rotation_sidecar_a_named_port_and_a_bad_port_names_its_flag() {
    let path = common::repo_root().join("examples/rotation-deployment.yaml");
    let output = inject(
        &[
            "--sidecar-metrics-port",
            "9102",
            "--sidecar-metrics-address",
            "pod",
            "-f",
            &path.to_string_lossy(),
        ],
        None,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs = documents(&output.stdout);
    let sidecar = &docs[0]["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(
        sidecar["ports"],
        json!([{"name": "agent-metrics", "containerPort": 9102, "protocol": "TCP"}])
    );
    let env = sidecar["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "SECRET_INJECT_METRICS_PORT", "value": "9102"})));
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("out.yaml");
    std::fs::write(&file, &output.stdout).unwrap();
    common::validate_strict(&file);

    let output = inject(
        &[
            "--sidecar-metrics-port",
            "80",
            "-f",
            &path.to_string_lossy(),
        ],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("sidecar-metrics-port"), "{stderr}");
}
