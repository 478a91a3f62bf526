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
