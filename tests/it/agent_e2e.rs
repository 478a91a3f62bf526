//! The webhook and the agent together, the way kubelet would run them: take the pod the webhook
//! returns, take the injected container's env (plain values only: the agent runs the plan
//! admission validated, nothing the kubelet resolves later), mount the emptyDir as a tmpfs at its mountPath in a private mount namespace,
//! run the agent with the container's runAsUser/runAsGroup and the pod's fsGroup against moto,
//! then read the file as the app container's user at the app container's mount path.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common;
use crate::common::moto::Moto;
use crate::common::webhook::{Client, Webhook, connect, decode_patch};

/// Quote for `sh`.
fn q(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

async fn injected_pod(server: &Webhook, template: &Value) -> Value {
    let pod = common::pod_from_template(template, "default");
    let stream = connect(
        server.webhook,
        &server.ca_path(),
        "secret-inject.testns.svc",
        &[b"h2"],
    )
    .await
    .unwrap();
    let mut client = Client::new(stream).await;
    let (status, body) = client
        .post(
            "/mutating-pods",
            serde_json::to_vec(&common::admission_review(&pod, "kubelet-e2e")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["allowed"], true, "{review}");
    let patch: json_patch::Patch =
        serde_json::from_value(decode_patch(&review).expect("a patch")).unwrap();
    let mut patched = pod;
    json_patch::patch(&mut patched, &patch).unwrap();
    patched
}

/// The container's environment as the kubelet would set it. Everything the webhook renders is a
/// plain value: the agent runs what admission validated, nothing resolved later.
fn resolve_env(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = e["value"]
                .as_str()
                .unwrap_or_else(|| panic!("env {name} is not a plain value: {e}"));
            (name, value.to_owned())
        })
        .collect()
}

struct Expect<'a> {
    secret: &'a str,
    /// The app container's user (uid, gid); the image default (root) when the pod sets none.
    app_user: (i64, i64),
    /// A user who must not be able to read the file, if any.
    outsider: Option<i64>,
}

/// Run the injected container and read the file as the app, in one private mount namespace.
fn run_like_kubelet(pod: &Value, runner_env: &[(String, String)], setup: &str, expect: Expect) {
    let spec = &pod["spec"];
    let agent = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "secrets-init-container")
        .unwrap();
    let app = &spec["containers"][0];
    let volume_mount = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "secret-vol")
            .unwrap()["mountPath"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (agent_mount, app_mount) = (volume_mount(agent), volume_mount(app));
    let sc = &agent["securityContext"];
    let (uid, gid) = (
        sc["runAsUser"].as_i64().unwrap(),
        sc["runAsGroup"]
            .as_i64()
            .unwrap_or(sc["runAsUser"].as_i64().unwrap()),
    );
    let fs_group = spec["securityContext"]["fsGroup"].as_i64();
    let groups = fs_group
        .map(|g| format!("--groups={g}"))
        .unwrap_or_else(|| "--clear-groups".to_owned());
    let filename = resolve_env(agent)
        .into_iter()
        .find(|(k, _)| k == "SECRET_FILENAME")
        .unwrap()
        .1;

    // Outside every path the pod mounts over (/tmp above all, where the checkout or the temp
    // dir may live): the binary and the termination log go to a directory on /dev/shm.
    let scratch = tempfile::Builder::new()
        .prefix("secret-inject-kubelet-")
        .tempdir_in("/dev/shm")
        .expect("/dev/shm must exist");
    assert!(
        !agent_mount.starts_with("/dev/shm") && !app_mount.starts_with("/dev/shm"),
        "pick another scratch place"
    );
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let termination = scratch.path().join("termination-log");
    let mut env: Vec<String> = resolve_env(agent)
        .into_iter()
        .chain(runner_env.iter().cloned())
        .map(|(k, v)| q(&format!("{k}={v}")))
        .collect();
    env.push(q(&format!(
        "SECRET_INJECT_TERMINATION_LOG={}",
        termination.display()
    )));
    env.push(q("AWS_EC2_METADATA_DISABLED=true"));
    let binary = scratch.path().join("secret-inject");
    std::fs::copy(env!("CARGO_BIN_EXE_secret-inject"), &binary).unwrap();
    let binary = binary.to_str().unwrap();
    let drop_all = "--inh-caps=-all --bounding-set=-all --no-new-privs";
    let mut script = format!(
        "set -e\n{setup}\n\
         mount -t tmpfs -o mode=0777,size=1m secret-vol {mount}\n",
        mount = q(&agent_mount)
    );
    if let Some(g) = fs_group {
        // What kubelet does for an emptyDir when the pod has an fsGroup.
        script.push_str(&format!(
            "chgrp {g} {m} && chmod 2777 {m}\n",
            m = q(&agent_mount)
        ));
    }
    script.push_str(&format!(
        "setpriv --reuid={uid} --regid={gid} {groups} {drop_all} env -i {env} {binary} --log-format plain agent\n",
        env = env.join(" "), binary = q(binary)
    ));
    let (app_uid, app_gid) = expect.app_user;
    script.push_str(&format!(
        "echo '---app---'\nsetpriv --reuid={app_uid} --regid={app_gid} {groups} {drop_all} cat {file}\necho\n",
        file = q(&format!("{app_mount}/{filename}"))
    ));
    if let Some(outsider) = expect.outsider {
        script.push_str(&format!(
            "echo '---outsider---'\nif setpriv --reuid={outsider} --regid={outsider} --clear-groups {drop_all} cat {file} 2>/dev/null; then echo READABLE; else echo DENIED; fi\n",
            file = q(&format!("{app_mount}/{filename}"))
        ));
    }
    script.push_str(&format!(
        "echo '---stat---'\nstat -L -c '%u %g %a' {}\n",
        q(&format!("{app_mount}/{filename}"))
    ));
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) must be installed; the test needs root");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "kubelet-like run failed (needs root):\n{stdout}\n{stderr}\ntermination log: {}",
        std::fs::read_to_string(&termination).unwrap_or_default()
    );
    let read = stdout
        .split("---app---\n")
        .nth(1)
        .unwrap()
        .split("\n---")
        .next()
        .unwrap();
    assert_eq!(
        read, expect.secret,
        "the app read something else:\n{stdout}\n{stderr}"
    );
    if expect.outsider.is_some() {
        assert!(
            stdout.contains("---outsider---\nDENIED"),
            "another user could read the secret:\n{stdout}"
        );
    }
    let stat = stdout
        .split("---stat---\n")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned();
    let mode = resolve_env(agent)
        .into_iter()
        .find(|(k, _)| k == "SECRET_INJECT_FILE_MODE")
        .unwrap()
        .1;
    assert_eq!(
        stat,
        format!(
            "{uid} {} {}",
            fs_group.unwrap_or(gid),
            mode.trim_start_matches('0')
        ),
        "owner and mode"
    );
    // Nothing of the secret outside the mount namespace: the host never saw the tmpfs.
    assert!(
        !Path::new(&format!("{agent_mount}/{filename}")).exists() || agent_mount == "/tmp",
        "the secret is visible outside the pod's mount namespace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_blog_deployment_runs_end_to_end() {
    let moto = Moto::start();
    let value = r#"{"username":"admin","password":"P@$$word1024","engine":"mysql"}"#;
    let arn = moto.create_secret("us-east-1", "database-password", value);
    let server = Webhook::start(&[]);
    let deployment = common::kubectl_object(&[
        "create",
        "deployment",
        "webserver",
        "--image=busybox:1.28",
        "--",
        "sh",
        "-c",
        "echo $(cat /tmp/secret) && sleep 3600",
    ]);
    let mut template = deployment["spec"]["template"].clone();
    template["metadata"]["annotations"] = json!({ "secrets.k8s.aws/sidecarInjectorWebhook": "enabled", "secrets.k8s.aws/secret-arn": arn });
    template["spec"]["serviceAccountName"] = json!("webserver-service-account");
    let pod = injected_pod(&server, &template).await;
    // No IRSA in this test: static credentials stand in for the pod's identity.
    let runner = vec![
        ("AWS_ENDPOINT_URL".to_owned(), moto.endpoint()),
        ("AWS_ACCESS_KEY_ID".to_owned(), "AKIATEST".to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), "test".to_owned()),
    ];
    // busybox runs as root; with every capability dropped it still reads the 0444 file.
    run_like_kubelet(
        &pod,
        &runner,
        "true",
        Expect {
            secret: value,
            app_user: (0, 0),
            outsider: None,
        },
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_with_run_as_user_fs_group_and_irsa_runs_end_to_end() {
    let moto = Moto::start();
    let arn = moto.create_secret("us-east-1", "payments/db", "s3cr3t-for-uid-1000");
    let server = Webhook::start(&[]);
    let deployment =
        common::kubectl_object(&["create", "deployment", "payments", "--image=payments:1.0"]);
    let mut template = deployment["spec"]["template"].clone();
    template["metadata"]["annotations"] = json!({
        "secrets.k8s.aws/secret-arn": arn,
        "secrets.k8s.aws/mount-path": "/srv",
        "secrets.k8s.aws/secret-filename": "db/credentials",
    });
    template["spec"]["securityContext"] =
        json!({ "runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "runAsNonRoot": true });
    // What the EKS Pod Identity Webhook adds for IRSA (it ran before us).
    let token_dir = "/var/run/secrets/eks.amazonaws.com/serviceaccount";
    template["spec"]["containers"][0]["env"] = json!([
        { "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::123456789012:role/payments" },
        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": format!("{token_dir}/token") },
        { "name": "AWS_REGION", "value": "us-east-1" },
    ]);
    template["spec"]["containers"][0]["volumeMounts"] =
        json!([{ "name": "aws-iam-token", "mountPath": token_dir, "readOnly": true }]);
    template["spec"]["volumes"] = json!([{ "name": "aws-iam-token", "projected": { "sources": [
        { "serviceAccountToken": { "audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token" } }] } }]);
    let pod = injected_pod(&server, &template).await;
    let agent = pod["spec"]["initContainers"][0].clone();
    assert!(
        agent["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == token_dir),
        "token mount not copied"
    );
    // The projected token, as kubelet would mount it (a tmpfs over /run in this namespace).
    let setup = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p {token_dir} && printf 'eyJhbGciOiJSUzI1NiJ9.e30.c2ln' > {token_dir}/token && chmod 0644 {token_dir}/token"
    );
    // Credentials come only from the copied IRSA env, through STS on moto.
    let runner = vec![("AWS_ENDPOINT_URL".to_owned(), moto.endpoint())];
    run_like_kubelet(
        &pod,
        &runner,
        &setup,
        Expect {
            secret: "s3cr3t-for-uid-1000",
            app_user: (1000, 3000),
            outsider: Some(4242),
        },
    );
}

/// A pod with several secrets in two formats, a parameter, a selected container set and env
/// vars, run the way the kubelet runs it: the agent as its user on a tmpfs, then each selected
/// container's env resolved (plain values as is, `fileKeyRef` with the kubelet's own parser,
/// `kubelet-envfile`), and the files read as the app's user.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_with_many_secrets_formats_and_env_vars_runs_end_to_end() {
    let moto = Moto::start();
    let db = moto.create_secret(
        "us-east-1",
        "app/db",
        r#"{"username":"app","password":"p4ss w0rd $HOME `x` \\ \"q\"","port":5432}"#,
    );
    let tls = moto.create_secret(
        "us-east-1",
        "app/tls",
        r#"{"tls.crt":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","tls.key":"k"}"#,
    );
    let (status, _) = moto.json(
        "us-east-1",
        "AmazonSSM.PutParameter",
        &json!({"Name": "/app/feature-flags", "Value": "a,b,c", "Type": "StringList"}),
    );
    assert_eq!(status, 200);
    let parameter = "arn:aws:ssm:us-east-1:123456789012:parameter/app/feature-flags";
    let server = Webhook::start(&["--env-files", "on"]);
    let deployment = common::kubectl_object(&["create", "deployment", "shop", "--image=shop:1.0"]);
    let mut template = deployment["spec"]["template"].clone();
    template["metadata"]["annotations"] = json!({
        "secrets.k8s.aws/mount-path": "/srv/secrets",
        "secrets.k8s.aws/secret-arn.db": db,
        "secrets.k8s.aws/secret-format.db": "json",
        "secrets.k8s.aws/env.db": "DB_USER=username,DB_PASSWORD=password,DB_PORT=port",
        "secrets.k8s.aws/secret-arn.tls": tls,
        "secrets.k8s.aws/secret-format.tls": "split",
        "secrets.k8s.aws/secret-arn.flags": parameter,
        "secrets.k8s.aws/secret-filename.flags": "conf/flags",
        "secrets.k8s.aws/containers": "shop",
    });
    template["spec"]["securityContext"] =
        json!({ "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000 });
    template["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "metrics", "image": "metrics:1.0" }));
    let pod = injected_pod(&server, &template).await;
    let spec = &pod["spec"];
    let agent = &spec["initContainers"][0];
    assert_eq!(agent["name"], "secrets-init-container");
    assert!(
        !spec["containers"][1]["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "secret-vol")
            && spec["containers"][1].get("env").is_none(),
        "metrics is not selected: {}",
        spec["containers"]
    );
    let shop = &spec["containers"][0];

    let scratch = tempfile::Builder::new()
        .prefix("secret-inject-kubelet-")
        .tempdir_in("/dev/shm")
        .expect("/dev/shm must exist");
    std::fs::set_permissions(
        scratch.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let binary = scratch.path().join("secret-inject");
    std::fs::copy(env!("CARGO_BIN_EXE_secret-inject"), &binary).unwrap();
    let parser = common::controlplane::bin("kubelet-envfile");
    let sc = &agent["securityContext"];
    let (uid, gid) = (
        sc["runAsUser"].as_i64().unwrap(),
        sc["runAsGroup"].as_i64().unwrap(),
    );
    let mut env: Vec<String> = resolve_env(agent)
        .into_iter()
        .map(|(k, v)| q(&format!("{k}={v}")))
        .collect();
    for (k, v) in [
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_ACCESS_KEY_ID", "AKIATEST".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        (
            "SECRET_INJECT_TERMINATION_LOG",
            scratch.path().join("termination-log").display().to_string(),
        ),
    ] {
        env.push(q(&format!("{k}={v}")));
    }
    // The kubelet resolves fileKeyRef env vars from the volume before the container starts.
    let mount = "/srv/secrets";
    let mut file_keys = Vec::new();
    for var in shop["env"].as_array().unwrap() {
        let reference = &var["valueFrom"]["fileKeyRef"];
        assert_eq!(reference["volumeName"], "secret-vol");
        assert_eq!(reference["path"], "..data/..env");
        file_keys.push(reference["key"].as_str().unwrap().to_owned());
    }
    assert_eq!(file_keys, ["DB_USER", "DB_PASSWORD", "DB_PORT"]);
    let drop_all = "--inh-caps=-all --bounding-set=-all --no-new-privs";
    let app = format!("setpriv --reuid=1000 --regid=1000 --groups=2000 {drop_all}");
    let script = format!(
        "set -e\nmkdir -p {mount}\nmount -t tmpfs -o mode=0777,size=1m secret-vol {mount}\n\
         chgrp 2000 {mount} && chmod 2777 {mount}\n\
         setpriv --reuid={uid} --regid={gid} --groups=2000 {drop_all} env -i {env} {binary} --log-format plain agent\n\
         echo '@@env@@'\n{parser} {mount}/..data/..env {keys}\n\
         echo '@@json@@'\n{app} cat {mount}/db\necho\n\
         echo '@@crt@@'\n{app} cat {mount}/tls/tls.crt\n\
         echo '@@key@@'\n{app} cat {mount}/tls/tls.key\necho\n\
         echo '@@flags@@'\n{app} cat {mount}/conf/flags\necho\n\
         echo '@@ls@@'\nls -A {mount}\n",
        env = env.join(" "),
        binary = q(binary.to_str().unwrap()),
        parser = q(parser.to_str().unwrap()),
        keys = file_keys.join(" "),
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) must be installed; the test needs root");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "kubelet-like run failed:\n{stdout}\n{}\ntermination log: {}",
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(scratch.path().join("termination-log")).unwrap_or_default()
    );
    let section = |name: &str| {
        stdout
            .split(&format!("@@{name}@@\n"))
            .nth(1)
            .unwrap()
            .split("\n@@")
            .next()
            .unwrap()
            .to_owned()
    };
    let env: Value = serde_json::from_str(&section("env")).unwrap();
    assert_eq!(
        env,
        json!({"DB_USER": "app", "DB_PASSWORD": "p4ss w0rd $HOME `x` \\ \"q\"", "DB_PORT": "5432"}),
        "the kubelet's parser reads back exactly the values"
    );
    let json: Value = serde_json::from_str(&section("json")).unwrap();
    assert_eq!(json["port"], 5432);
    assert_eq!(
        section("crt"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    );
    assert_eq!(section("key"), "k");
    assert_eq!(section("flags"), "a,b,c");
    let mut listed: Vec<String> = section("ls").lines().map(str::to_owned).collect();
    listed.retain(|n| !n.starts_with("..20") && !n.starts_with("..1"));
    listed.sort();
    assert_eq!(listed, ["..data", "conf", "db", "tls"], "{stdout}");
    let termination = std::fs::read_to_string(scratch.path().join("termination-log")).unwrap();
    assert!(
        termination.contains("wrote 4 file(s) for 3 secret(s)")
            && termination.contains("3 env var(s)"),
        "{termination}"
    );
}
