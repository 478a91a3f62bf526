//! End to end: the real binary, called over verified TLS the way the API server calls it, with
//! objects that `kubectl` built; the patch applied by `kubectl patch --local`; the result checked
//! by `kubernetes-validate --strict`; and sent back for a second pass that must not patch.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common;
use crate::common::webhook::{Client, Webhook, connect, decode_patch};

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF";
const SERVICE_DNS: &str = "secret-inject.testns.svc";

fn seed_annotations() -> Value {
    json!({
        "secrets.k8s.aws/sidecarInjectorWebhook": "enabled",
        "secrets.k8s.aws/secret-arn": ARN,
    })
}

/// Pod templates of objects kubectl builds, annotated for injection.
fn kubectl_pods() -> Vec<(&'static str, Value)> {
    let seed_command = ["--", "sh", "-c", "echo $(cat /tmp/secret) && sleep 3600"];
    let mut args = vec!["create", "deployment", "webserver", "--image=busybox:1.28"];
    args.extend(seed_command);
    let deployment = common::kubectl_object(&args);
    let mut deployment_template = deployment["spec"]["template"].clone();
    deployment_template["metadata"]["annotations"] = seed_annotations();
    deployment_template["spec"]["serviceAccountName"] = json!("webserver-service-account");

    let web = common::kubectl_object(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.27",
        "--port=8080",
    ]);
    let mut run_template = web["spec"]["template"].clone();
    run_template["metadata"]["annotations"] = json!({
        "secrets.k8s.aws/secret-arn": "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:web-tls-AbCdEf",
        "secrets.k8s.aws/mount-path": "/etc/web/secrets",
        "secrets.k8s.aws/secret-filename": "tls/key.pem",
    });
    run_template["spec"]["securityContext"] =
        json!({ "runAsUser": 101, "runAsNonRoot": true, "fsGroup": 101 });
    // IRSA: what the EKS Pod Identity Webhook adds when it runs before us.
    run_template["spec"]["containers"][0]["env"] = json!([
        { "name": "AWS_ROLE_ARN", "value": "arn:aws-cn:iam::123456789012:role/web" },
        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token" },
        { "name": "AWS_REGION", "value": "cn-north-1" },
    ]);
    run_template["spec"]["containers"][0]["volumeMounts"] = json!([
        { "name": "aws-iam-token", "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount", "readOnly": true }
    ]);
    run_template["spec"]["volumes"] = json!([{ "name": "aws-iam-token", "projected": { "sources": [
        { "serviceAccountToken": { "audience": "sts.amazonaws.com", "expirationSeconds": 86400, "path": "token" } }
    ] } }]);

    let job = common::kubectl_object(&[
        "create",
        "job",
        "migrate",
        "--image=flyway/flyway:10",
        "--",
        "migrate",
    ]);
    let mut job_template = job["spec"]["template"].clone();
    job_template["metadata"]["annotations"] = json!({
        "secrets.k8s.aws/secret-arn": "arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:db-AbCdEf",
        "secrets.k8s.aws/init-container-position": "last",
    });
    job_template["spec"]["initContainers"] =
        json!([{ "name": "wait-for-db", "image": "busybox:1.36", "command": ["true"] }]);

    let cronjob = common::kubectl_object(&[
        "create",
        "cronjob",
        "report",
        "--image=busybox:1.36",
        "--schedule=*/5 * * * *",
    ]);
    let mut cron_template = cronjob["spec"]["jobTemplate"]["spec"]["template"].clone();
    cron_template["metadata"]["annotations"] = seed_annotations();
    // Istio ran first: its init container and proxy are there; a native sidecar too.
    cron_template["spec"]["initContainers"] = json!([
        { "name": "istio-init", "image": "istio/proxyv2:1.24.0", "args": ["istio-iptables"] },
        { "name": "log-shipper", "image": "fluent/fluent-bit:3.2", "restartPolicy": "Always" },
    ]);
    cron_template["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "istio-proxy", "image": "istio/proxyv2:1.24.0" }));

    vec![
        ("deployment (seed blog)", deployment_template),
        ("deployment with IRSA and fsGroup", run_template),
        ("job, position last", job_template),
        ("cronjob with istio and a native sidecar", cron_template),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_objects_are_injected_applied_validated_and_stable() {
    let server = Webhook::start(&[]);
    let work = tempfile::tempdir().unwrap();
    for (i, (label, template)) in kubectl_pods().into_iter().enumerate() {
        let pod = common::pod_from_template(&template, "testns");
        // Alternate protocols: both must work.
        let alpn: &[&[u8]] = if i % 2 == 0 { &[b"h2"] } else { &[b"http/1.1"] };
        let stream = connect(server.webhook, &server.ca_path(), SERVICE_DNS, alpn)
            .await
            .unwrap();
        let mut client = Client::new(stream).await;
        let uid = format!("uid-{i}");
        let review = common::admission_review(&pod, &uid);
        let (status, body) = client
            .post("/mutating-pods", serde_json::to_vec(&review).unwrap())
            .await
            .unwrap();
        assert_eq!(status, 200, "{label}: {}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["uid"], uid, "{label}");
        assert_eq!(answer["response"]["allowed"], true, "{label}: {answer}");
        assert_eq!(answer["response"]["patchType"], "JSONPatch", "{label}");
        let patch = decode_patch(&answer).expect("a patch");

        let patched = common::kubectl_patch_local(work.path(), &pod, &patch);
        let patched_file = work.path().join(format!("patched-{i}.json"));
        // The API server names a generateName pod after admission; kubernetes-validate needs one.
        let mut named = patched.clone();
        named["metadata"]["name"] = json!("webserver-66f6bb988f-x774k");
        std::fs::write(&patched_file, serde_json::to_vec_pretty(&named).unwrap()).unwrap();
        common::validate_strict(&patched_file);
        check_injected(label, &pod, &patched);

        // Second pass, as on reinvocation: allowed, no patch.
        let review = common::admission_review(&patched, &format!("{uid}-again"));
        let (status, body) = client
            .post("/mutating-pods", serde_json::to_vec(&review).unwrap())
            .await
            .unwrap();
        assert_eq!(status, 200);
        let again: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(again["response"]["allowed"], true);
        assert!(
            decode_patch(&again).is_none(),
            "{label}: second pass patched: {again}"
        );
    }
}

fn check_injected(label: &str, before: &Value, after: &Value) {
    let annotations = &after["metadata"]["annotations"];
    let mount_path = annotations["secrets.k8s.aws/mount-path"]
        .as_str()
        .unwrap_or("/tmp")
        .trim_end_matches('/');
    assert_eq!(annotations["secrets.k8s.aws/status"], "injected", "{label}");
    let volume = after["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "secret-vol")
        .unwrap();
    assert_eq!(volume["emptyDir"]["medium"], "Memory", "{label}");
    // Everything that was there is still there, in order.
    for field in ["containers", "initContainers", "volumes"] {
        let names = |pod: &Value| -> Vec<String> {
            pod["spec"][field]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| c["name"].as_str().unwrap().to_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let (old, new) = (names(before), names(after));
        let kept: Vec<&String> = new.iter().filter(|n| old.contains(n)).collect();
        assert_eq!(
            kept,
            old.iter().collect::<Vec<_>>(),
            "{label}: {field} reordered or lost"
        );
    }
    for c in after["spec"]["containers"].as_array().unwrap() {
        let m = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "secret-vol")
            .unwrap_or_else(|| panic!("{label}: {} not mounted", c["name"]));
        assert_eq!(m["mountPath"], mount_path, "{label}");
    }
    let inits = after["spec"]["initContainers"].as_array().unwrap();
    let position = annotations["secrets.k8s.aws/init-container-position"]
        .as_str()
        .unwrap_or("first");
    let ours = inits
        .iter()
        .position(|c| c["name"] == "secrets-init-container")
        .unwrap();
    assert_eq!(
        ours,
        if position == "last" {
            inits.len() - 1
        } else {
            0
        },
        "{label}"
    );
    let agent = &inits[ours];
    let env = |name: &str| {
        agent["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
    };
    assert_eq!(
        env("SECRET_ARN").unwrap()["value"],
        before["metadata"]["annotations"]["secrets.k8s.aws/secret-arn"]
    );
    for (name, value) in before["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["name"].as_str().unwrap(), e))
    {
        if name.starts_with("AWS_") {
            assert_eq!(
                env(name).as_ref(),
                Some(value),
                "{label}: {name} not copied"
            );
        }
    }
    // Native sidecars keep their restartPolicy.
    for c in before["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let same = inits.iter().find(|i| i["name"] == c["name"]).unwrap();
        assert_eq!(same["restartPolicy"], c["restartPolicy"], "{label}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verifies_service_names_and_negotiates_h2_and_http11() {
    let server = Webhook::start(&[]);
    for name in [
        "localhost",
        "secret-inject.testns.svc",
        "secret-inject.testns.svc.cluster.local",
    ] {
        for (alpn, expect) in [
            (&[b"h2".as_slice()][..], b"h2".as_slice()),
            (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
        ] {
            let stream = connect(server.webhook, &server.ca_path(), name, alpn)
                .await
                .unwrap();
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(expect));
        }
    }
    // A name the certificate does not carry is refused by the client.
    let err = connect(
        server.webhook,
        &server.ca_path(),
        "other.testns.svc",
        &[b"h2"],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let (status, _) = server.admin_get("/readyz").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_log_line_per_review_and_no_secrets_in_logs() {
    let server = Webhook::start(&[]);
    let mut template = json!({ "metadata": { "annotations": seed_annotations() }, "spec": { "containers": [{
        "name": "app", "image": "app:1",
        "env": [{ "name": "DB_PASSWORD", "value": "hunter2-do-not-log" }],
        "command": ["run", "--token=tok-do-not-log"]
    }] } });
    template["metadata"]["name"] = json!("app-pod");
    let pod = common::pod_from_template(&template, "testns");
    let stream = connect(server.webhook, &server.ca_path(), SERVICE_DNS, &[b"h2"])
        .await
        .unwrap();
    let mut client = Client::new(stream).await;
    client
        .post(
            "/mutating-pods",
            serde_json::to_vec(&common::admission_review(&pod, "log-uid-1")).unwrap(),
        )
        .await
        .unwrap();
    let mut bad = pod.clone();
    bad["metadata"]["annotations"]["secrets.k8s.aws/mount-path"] = json!("relative");
    client
        .post(
            "/mutating-pods",
            serde_json::to_vec(&common::admission_review(&bad, "log-uid-2")).unwrap(),
        )
        .await
        .unwrap();
    client
        .post("/mutating-pods", b"garbage".to_vec())
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = server.log_lines();
    let reviews: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["message"] == "admission review")
        .collect();
    assert_eq!(reviews.len(), 3, "{lines:#?}");
    assert_eq!(reviews[0]["uid"], "log-uid-1");
    assert_eq!(reviews[0]["namespace"], "testns");
    assert_eq!(reviews[0]["name"], "webserver-66f6bb988f-*");
    assert_eq!(reviews[0]["operation"], "CREATE");
    assert_eq!(reviews[0]["outcome"], "mutated");
    assert!(reviews[0]["duration_us"].is_u64());
    assert_eq!(reviews[1]["outcome"], "denied");
    assert!(
        reviews[1]["reason"]
            .as_str()
            .unwrap()
            .contains("secrets.k8s.aws/mount-path")
    );
    assert_eq!(reviews[2]["outcome"], "invalid");
    let all = lines.join("\n");
    for secret in [
        "hunter2-do-not-log",
        "tok-do-not-log",
        "kube-api-access",
        "busybox",
    ] {
        assert!(!all.contains(secret), "logs leak {secret:?}:\n{all}");
    }

    let (status, metrics) = server.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "secret_inject_admission_reviews_total{endpoint=\"pods\",outcome=\"mutated\"} 1",
        "secret_inject_admission_reviews_total{endpoint=\"pods\",outcome=\"denied\"} 1",
        "secret_inject_admission_reviews_total{endpoint=\"pods\",outcome=\"invalid\"} 1",
        "secret_inject_admission_review_duration_seconds_count{endpoint=\"pods\"} 3",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

/// A CA and a client certificate it signed: `(CA PEM, client chain, client key)`.
fn client_identity(
    name: &str,
) -> (
    String,
    Vec<rustls_pki_types::CertificateDer<'static>>,
    rustls_pki_types::PrivateKeyDer<'static>,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name.to_owned());
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        ca.pem(),
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

/// One review over HTTP/1.1, presenting `identity` as the client certificate (or none).
async fn post_as(
    webhook: &Webhook,
    identity: Option<(
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    )>,
) -> Result<u16, String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(webhook.ca_path()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(webhook.webhook)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("secret-inject.testns.svc").unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let body = std::fs::read(common::repo_root().join("tests/golden/seed-webserver/request.json"))
        .unwrap();
    let request = hyper::Request::post("/mutating-pods")
        .header("host", "secret-inject.testns.svc")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_client_ca_only_clients_holding_its_certificate_may_send_a_review() {
    let (api_server_ca, chain, key) = client_identity("kube-apiserver");
    let (_, other_chain, other_key) = client_identity("intruder");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("client-ca.pem");
    std::fs::write(&ca_file, api_server_ca).unwrap();
    let webhook = Webhook::start(&["--client-ca-file", ca_file.to_str().unwrap()]);
    let api_server = || Some((chain.clone(), key.clone_key()));
    assert_eq!(post_as(&webhook, api_server()).await, Ok(200));
    let none = post_as(&webhook, None).await;
    assert!(none.is_err(), "a client without a certificate got {none:?}");
    let other = post_as(&webhook, Some((other_chain, other_key))).await;
    assert!(other.is_err(), "a certificate of another CA got {other:?}");
    // Still serving the API server after the refusals.
    assert_eq!(post_as(&webhook, api_server()).await, Ok(200));

    // A file without a certificate stops the start with a message naming it.
    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .args([
            "webhook",
            "--dev-tls",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--client-ca-file",
            ca_file.to_str().unwrap(),
        ])
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("client-ca.pem"), "{stderr}");
    assert!(stderr.contains("no CERTIFICATE"), "{stderr}");
}
