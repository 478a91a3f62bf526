//! Pods really run: the scenarios of a real node (`common::node`: kubelet, containerd, runc, the
//! CNI bridge, kube-proxy) with the chart's webhook running as pods from our own image, checked
//! through the API server the way a user checks them (`kubectl get`, `logs`, `exec`).
//!
//! What only a real node can show, and so what these tests are for: the image pulled and started
//! as its user, the init container and the native sidecar started in order, the Memory emptyDir a
//! real tmpfs, the IRSA token projected by the kubelet and accepted by (moto's) STS, the kubelet
//! reading our env file, rotation reaching a running pod, failures surfacing in pod status.

use serde_json::{Value, json};

use crate::common::controlplane::{ControlPlane, Namespaces};
use crate::common::moto::Moto;
use crate::common::node::{
    self, NODE_IP, POD_START, create_ok, exec, install_chart, irsa_service_account, phase,
    seed_walkthrough, wait_pods,
};

/// The seed's walkthrough, verbatim but for the secret's ARN (its readers put their own there):
/// `helm install`, the blog's ServiceAccount and `webserver` Deployment (busybox:1.28, from the
/// node's registry as docker.io's mirror); `kubectl logs` prints the secret's JSON, fetched by our
/// agent from moto with the IRSA token the kubelet projected.
#[test]
fn the_seeds_walkthrough_prints_the_secret_in_kubectl_logs() {
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let value = r#"{"username":"admin","password":"P@$$word1024","engine":"mysql"}"#;
    let arn = moto.create_secret("us-east-1", "database-password", value);
    let ns = Namespaces::on(plane, "node-seed", &[]);
    install_chart(&ns, &moto, &[]);
    // The chart's webhook runs as its Deployment's pods, from our image by the tag it renders.
    let webhooks = plane.get_json(&["pods", "-n", &ns.release]);
    let images: Vec<&str> = webhooks["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| phase(p) == "Running")
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [node.images.secret_inject.as_str(); 2],
        "two webhook replicas running our image"
    );
    let (_pod, irsa) = seed_walkthrough(&ns, &arn, value);
    drop(irsa);
}

/// `sh -c script` in the app container.
fn exec_sh(plane: &ControlPlane, namespace: &str, pod: &str, script: &str) -> String {
    exec(plane, namespace, pod, "app", &["sh", "-c", script])
}

/// An app pod for the node: busybox sleeping, the given annotations, as `service_account`.
fn app_pod(name: &str, service_account: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}, "annotations": annotations},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "app", "image": node::shared().images.busybox,
                            "command": ["sleep", "3600"]}]
        }
    })
}

/// Restricted PodSecurity, a non-root app with its own user, group and fsGroup: the pod is
/// admitted with our agent in it, the file is the app's to read (owner, group, mode as the
/// webhook rendered them, nothing for others), and the volume is a real tmpfs of the size the
/// annotation set, read-only in the app.
#[test]
fn a_restricted_non_root_pod_reads_its_secret_from_a_tmpfs_of_the_size_set() {
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let arn = moto.create_secret("us-east-1", "payments/db", "s3cr3t-for-uid-1000");
    let ns = Namespaces::on(
        plane,
        "node-restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    );
    install_chart(&ns, &moto, &[]);
    let _irsa = irsa_service_account(&ns, "payments", "arn:aws:iam::123456789012:role/payments");
    let mut pod = app_pod(
        "payments",
        "payments",
        json!({
            "secrets.k8s.aws/secret-arn": arn,
            "secrets.k8s.aws/mount-path": "/srv",
            "secrets.k8s.aws/secret-filename": "db/credentials",
            "secrets.k8s.aws/volume-size-limit": "2Mi",
        }),
    );
    pod["spec"]["securityContext"] = json!({"runAsNonRoot": true, "runAsUser": 1000,
        "runAsGroup": 3000, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}});
    pod["spec"]["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    create_ok(plane, &ns.app, &pod);
    let pods = wait_pods(
        plane,
        &ns.app,
        "app=payments",
        "the restricted pod to run",
        POD_START,
        |p| phase(&p[0]) == "Running",
    );
    let stored = &pods[0];
    let agent = stored["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "secrets-init-container")
        .unwrap_or_else(|| panic!("no agent in {stored}"));
    let mode = agent["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SECRET_INJECT_FILE_MODE")
        .map(|e| e["value"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no file mode rendered: {agent}"));
    let mode = u32::from_str_radix(&mode, 8).unwrap();
    assert_eq!(mode & 0o007, 0, "others may not read the file: {mode:o}");

    let seen = exec_sh(
        plane,
        &ns.app,
        "payments",
        "id -u; id -G; cat /srv/db/credentials; echo; stat -c '%u %g %a' /srv/db/credentials; \
         grep ' /srv ' /proc/mounts",
    );
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(lines[0], "1000", "{seen}");
    assert!(
        lines[1].split(' ').any(|g| g == "2000"),
        "the app is in the fsGroup: {seen}"
    );
    assert_eq!(lines[2], "s3cr3t-for-uid-1000", "{seen}");
    assert_eq!(
        lines[3],
        format!("1000 2000 {mode:o}"),
        "owner, group, mode: {seen}"
    );
    // A tmpfs of 2 MiB, read-only where the app sees it.
    let mount: Vec<&str> = lines[4].split(' ').collect();
    assert_eq!(mount[2], "tmpfs", "{seen}");
    let options: Vec<&str> = mount[3].split(',').collect();
    assert!(options.contains(&"ro"), "{seen}");
    assert!(options.contains(&"size=2048k"), "{seen}");
}

/// Many secrets in one pod, in every format, with env vars: the files are what the formats
/// say, and `printenv` in the app shows the values the kubelet read from our env file (the
/// EnvFiles feature, on since 1.35: the webhook pod learned the version from the API server).
#[test]
fn many_secrets_formats_and_env_vars_reach_the_app() {
    let node = node::shared();
    let plane = node.plane;
    let moto = Moto::start_on(&NODE_IP.to_string(), &[]);
    let db = moto.create_secret(
        "us-east-1",
        "shop/db",
        r#"{"username":"shop","password":"pa ss=word#1","port":5432}"#,
    );
    let tls = moto.create_secret(
        "us-east-1",
        "shop/tls",
        r#"{"tls.crt":"CERT","tls.key":"KEY"}"#,
    );
    let app = moto.create_secret(
        "us-east-1",
        "shop/app",
        r#"{"API_KEY":"k-123","MODE":"live"}"#,
    );
    let url = moto.put_parameter("us-east-1", "/shop/url", "String", "https://shop.example");
    let ns = Namespaces::on(plane, "node-many", &[]);
    install_chart(&ns, &moto, &[]);
    let _irsa = irsa_service_account(&ns, "shop", "arn:aws:iam::123456789012:role/shop");
    create_ok(
        plane,
        &ns.app,
        &app_pod(
            "shop",
            "shop",
            json!({
                "secrets.k8s.aws/mount-path": "/run/app",
                "secrets.k8s.aws/secret-arn.db": db,
                "secrets.k8s.aws/secret-key.db": "password",
                "secrets.k8s.aws/secret-arn.cfg": db,
                "secrets.k8s.aws/secret-format.cfg": "json",
                "secrets.k8s.aws/env.cfg": "DB_USER=username,DB_PASSWORD=password,DB_PORT=port",
                "secrets.k8s.aws/secret-arn.app": app,
                "secrets.k8s.aws/secret-filename.app": "app.env",
                "secrets.k8s.aws/secret-format.app": "env",
                "secrets.k8s.aws/secret-arn.tls": tls,
                "secrets.k8s.aws/secret-format.tls": "split",
                "secrets.k8s.aws/secret-arn.url": url,
                "secrets.k8s.aws/secret-filename.url": "conf/url",
            }),
        ),
    );
    wait_pods(
        plane,
        &ns.app,
        "app=shop",
        "the many-secrets pod to run",
        POD_START,
        |p| phase(&p[0]) == "Running",
    );
    let files = exec_sh(
        plane,
        &ns.app,
        "shop",
        "cd /run/app; for f in db cfg app.env tls/tls.crt tls/tls.key conf/url; do \
         echo \"--- $f\"; cat $f; echo; done",
    );
    let expected = "--- db\npa ss=word#1\n\
        --- cfg\n{\"username\":\"shop\",\"password\":\"pa ss=word#1\",\"port\":5432}\n\
        --- app.env\nAPI_KEY='k-123'\nMODE='live'\n\n\
        --- tls/tls.crt\nCERT\n--- tls/tls.key\nKEY\n\
        --- conf/url\nhttps://shop.example\n";
    assert_eq!(files, expected);
    // The kubelet read these from ..data/..env when the app started.
    let env = exec_sh(
        plane,
        &ns.app,
        "shop",
        "printenv DB_USER; printenv DB_PASSWORD; printenv DB_PORT",
    );
    assert_eq!(env, "shop\npa ss=word#1\n5432\n");
    let stored = plane.get_json(&["pod", "shop", "-n", &ns.app]);
    let vars = &stored["spec"]["containers"][0]["env"];
    let ours: Vec<&Value> = vars
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with("DB_"))
        .collect();
    assert_eq!(ours.len(), 3, "{vars}");
    assert!(
        ours.iter()
            .all(|v| v["valueFrom"]["fileKeyRef"]["volumeName"] == "secret-vol"),
        "env vars come from the volume, not from values in etcd: {vars}"
    );
}

/// The node's network keeps pods in: they reach the node's bridge address (where the tests'
/// servers listen), and no other address of this machine nor anything beyond it.
#[test]
fn pods_reach_the_node_bridge_address_and_nothing_else() {
    use std::io::{Read as _, Write as _};

    let node = node::shared();
    let plane = node.plane;
    // A tiny HTTP server on every address of this machine.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        }
    });
    let addresses = String::from_utf8(
        std::process::Command::new("ip")
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let other = addresses
        .lines()
        .filter(|l| !l.contains(node::BRIDGE))
        .find_map(|l| l.split_whitespace().nth(3))
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| {
            panic!("this machine has no address besides the node's bridge: {addresses}")
        })
        .to_owned();
    let ns = Namespaces::on(plane, "node-network", &[]);
    let mut pod = app_pod("probe", "default", json!({}));
    pod["spec"]["automountServiceAccountToken"] = json!(false);
    create_ok(plane, &ns.app, &pod);
    wait_pods(
        plane,
        &ns.app,
        "app=probe",
        "the probe pod to run",
        POD_START,
        |p| phase(&p[0]) == "Running",
    );
    let fetch = |address: &str| {
        exec_sh(
            plane,
            &ns.app,
            "probe", // busybox's static wget crashes in glibc's resolver without NSS; nc does not resolve.
            &format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} {port} | tail -n 1; echo"
            ),
        )
    };
    assert_eq!(fetch(&NODE_IP.to_string()).trim(), "hello");
    assert_eq!(fetch(&other).trim(), "", "{other}");
    // Off the machine (TEST-NET-3, never routed): dropped before it leaves.
    assert_eq!(fetch("203.0.113.1").trim(), "");
}
