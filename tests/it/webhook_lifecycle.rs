//! The server's life: certificate rotation by a `..data` symlink swap, SIGTERM draining,
//! timeouts for idle sockets, and input that must not hurt it.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use secret_inject::webhook::tls::generate_dev_certificate;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;
use crate::common::webhook::{Client, Webhook, connect, decode_patch};

const SERVICE_DNS: &str = "secret-inject.testns.svc";

fn review_body() -> Vec<u8> {
    let template = json!({ "metadata": { "annotations": {
        "secrets.k8s.aws/secret-arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
    } }, "spec": { "containers": [{ "name": "app", "image": "app:1" }] } });
    let pod = common::pod_from_template(&template, "testns");
    serde_json::to_vec(&common::admission_review(&pod, "lifecycle")).unwrap()
}

/// Write a certificate the way kubelet writes a Secret volume: files in a timestamped directory,
/// `..data` pointing at it, and top-level names pointing through `..data`.
fn write_secret_volume(dir: &Path, generation: u32, cert: &str, key: &str) -> String {
    let stamp = format!("..2026_11_27_00_00_0{generation}.000000000");
    let target = dir.join(&stamp);
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("tls.crt"), cert).unwrap();
    std::fs::write(target.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    symlink(&stamp, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap(); // atomic swap
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    stamp
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_swapped_by_data_symlink_is_served_without_restart() {
    let volume = tempfile::tempdir().unwrap();
    let cas = tempfile::tempdir().unwrap();
    let first = generate_dev_certificate("secret-inject", "testns").unwrap();
    let second = generate_dev_certificate("secret-inject", "testns").unwrap();
    let (ca1, ca2) = (cas.path().join("ca1.pem"), cas.path().join("ca2.pem"));
    std::fs::write(&ca1, &first.ca_pem).unwrap();
    std::fs::write(&ca2, &second.ca_pem).unwrap();
    write_secret_volume(volume.path(), 1, &first.cert_pem, &first.key_pem);

    let cert = volume.path().join("tls.crt").to_string_lossy().into_owned();
    let key = volume.path().join("tls.key").to_string_lossy().into_owned();
    let server = Webhook::start(&[
        "--tls-cert-file",
        &cert,
        "--tls-private-key-file",
        &key,
        "--tls-reload-interval",
        "100ms",
    ]);
    // A keep-alive connection opened before the rotation.
    let mut before = Client::new(
        connect(server.webhook, &ca1, SERVICE_DNS, &[b"http/1.1"])
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        before
            .post("/mutating-pods", review_body())
            .await
            .unwrap()
            .0,
        200
    );
    assert!(
        connect(server.webhook, &ca2, SERVICE_DNS, &[b"h2"])
            .await
            .is_err()
    );

    write_secret_volume(volume.path(), 2, &second.cert_pem, &second.key_pem);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if connect(server.webhook, &ca2, SERVICE_DNS, &[b"h2"])
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new certificate not served; logs: {:#?}",
            server.log_lines()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New handshakes get the new certificate only; the old connection still works.
    assert!(
        connect(server.webhook, &ca1, SERVICE_DNS, &[b"h2"])
            .await
            .is_err()
    );
    assert_eq!(
        before
            .post("/mutating-pods", review_body())
            .await
            .unwrap()
            .0,
        200
    );
    let (_, metrics) = server.admin_get("/metrics").await;
    assert!(
        metrics.contains("secret_inject_tls_certificate_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );

    // A broken update is refused and the current certificate stays in service.
    write_secret_volume(volume.path(), 3, "garbage", "garbage");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.admin_get("/metrics").await;
        if metrics.contains("secret_inject_tls_certificate_reloads_total{result=\"failure\"} ")
            && !metrics
                .contains("secret_inject_tls_certificate_reloads_total{result=\"failure\"} 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failed reload not counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        connect(server.webhook, &ca2, SERVICE_DNS, &[b"h2"])
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut server = Webhook::start(&["--shutdown-grace-period", "10s"]);
    let ca = server.ca_path();
    // Start a request and stop halfway through its body.
    let mut stream = connect(server.webhook, &ca, SERVICE_DNS, &[b"http/1.1"])
        .await
        .unwrap();
    let body = review_body();
    let head = format!(
        "POST /mutating-pods HTTP/1.1\r\nhost: {SERVICE_DNS}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.signal(Signal::TERM);
    // Not ready any more, and no new connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(server.webhook).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The in-flight request completes.
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    stream.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    if response.windows(4).any(|w| w == b"\r\n\r\n") && response.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "in-flight request failed: {text:?}"
    );
    let json_start = text.find("\r\n\r\n").unwrap() + 4;
    let review: Value = serde_json::from_str(&text[json_start..]).unwrap();
    assert!(decode_patch(&review).is_some());
    drop(stream);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let logs = server.log_lines().join("\n");
    assert!(logs.contains("SIGTERM received"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_sockets_are_closed_and_garbage_does_not_hurt() {
    let server = Webhook::start(&["--header-read-timeout", "500ms"]);
    let ca = server.ca_path();
    // A TCP connection that never starts TLS is closed by the handshake timeout.
    let mut idle = TcpStream::connect(server.webhook).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "idle socket not closed: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // TLS done, but the request headers never finish.
    let mut slow = connect(server.webhook, &ca, SERVICE_DNS, &[b"http/1.1"])
        .await
        .unwrap();
    slow.write_all(b"POST /mutating-pods HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "slow headers not cut off");
    // Garbage instead of TLS, and a TLS client speaking nonsense.
    let mut garbage = TcpStream::connect(server.webhook).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0, 1, 2, 3])
        .await
        .unwrap();
    let mut nonsense = connect(server.webhook, &ca, SERVICE_DNS, &[b"http/1.1"])
        .await
        .unwrap();
    nonsense
        .write_all(b"\x00\x01NOT HTTP\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), nonsense.read_to_end(&mut sink)).await;
    // Still serving.
    let mut client = Client::new(
        connect(server.webhook, &ca, SERVICE_DNS, &[b"h2"])
            .await
            .unwrap(),
    )
    .await;
    let (status, _) = client.post("/mutating-pods", review_body()).await.unwrap();
    assert_eq!(status, 200);
    let (status, _) = client
        .post("/mutating-pods", vec![b'x'; 5 * 1024 * 1024])
        .await
        .unwrap();
    assert_eq!(status, 413);
    let (status, _) = client.post("/mutating-pods", review_body()).await.unwrap();
    assert_eq!(status, 200);
}

#[test]
fn an_oversized_review_gets_413_over_http2_and_http11() {
    // curl, a client other than ours, as the judge of what arrives; the body is far over the
    // limit and declared up front, as the API server declares it.
    let server = Webhook::start(&["--max-body-bytes", "65536"]);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("big.json");
    std::fs::write(&body, vec![b'x'; 2 * 1024 * 1024]).unwrap();
    let url = format!(
        "https://{SERVICE_DNS}:{}/mutating-pods",
        server.webhook.port()
    );
    let resolve = format!("{SERVICE_DNS}:{}:127.0.0.1", server.webhook.port());
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let output = crate::common::run_tool_raw(
            "curl",
            &[
                "--silent",
                "--show-error",
                flag,
                "--cacert",
                server.ca_path().to_str().unwrap(),
                "--resolve",
                &resolve,
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code} %{http_version}",
                "--header",
                "content-type: application/json",
                "--data-binary",
                &format!("@{}", body.display()),
                &url,
            ],
            None,
        );
        assert!(
            output.status.success(),
            "{flag}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("413 {version}"),
            "{flag}"
        );
    }
}

#[test]
fn without_certificate_files_the_webhook_refuses_to_start_unless_dev_tls() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_secret-inject"))
        .args(["webhook", "--port", "0", "--admin-port", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    // Not a terminal: one JSON log record, for the pod's log collector.
    let record: serde_json::Value = serde_json::from_slice(&output.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(record["level"], "ERROR");
    let message = record["message"].as_str().unwrap();
    for expected in ["no serving certificate", "--tls-cert-file", "--dev-tls"] {
        assert!(message.contains(expected), "{message}");
    }
}

/// Issue 19 item 6: a file that cannot be read is named once, with its cause once (the message
/// no longer repeats its source, which anyhow prints after it).
#[test]
fn a_missing_certificate_file_is_named_with_its_cause_said_once() {
    let output = common::secret_inject(
        &[
            "--log-format",
            "human",
            "webhook",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--tls-cert-file",
            "/nope.crt",
            "--tls-private-key-file",
            "/nope.key",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr.trim_end(),
        "error: cannot read /nope.crt: No such file or directory (os error 2)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let mut server = Webhook::start(&[
        "--shutdown-grace-period",
        "60s",
        "--body-read-timeout",
        "60s",
    ]);
    let ca = server.ca_path();
    // An in-flight request that will not finish: its body never comes.
    let mut stream = connect(server.webhook, &ca, SERVICE_DNS, &[b"http/1.1"])
        .await
        .unwrap();
    stream
        .write_all(
            format!(
                "POST /mutating-pods HTTP/1.1\r\nhost: {SERVICE_DNS}\r\ncontent-length: 1000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal(Signal::TERM);
    // Draining: still running a second later, held by the request.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(server.child.try_wait().unwrap().is_none(), "did not drain");
    let second = Instant::now();
    server.signal(Signal::TERM);
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    let logs = server.log_lines().join("\n");
    assert!(logs.contains("second stop signal"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_do_not_starve_others() {
    // Over the default --max-connections (512): all 1,040 are to be held, none refused.
    let server = Webhook::start(&[
        "--header-read-timeout",
        "30s",
        "--body-read-timeout",
        "30s",
        "--max-connections",
        "2000",
    ]);
    let ca = server.ca_path();
    // 1,000 idle TCP connections that never start TLS.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(server.webhook).await.unwrap());
    }
    // 20 slowloris clients: TLS done, headers dribbled a byte at a time; 20 that dribble a body.
    let mut slow = Vec::new();
    for i in 0..40 {
        let mut stream = connect(server.webhook, &ca, SERVICE_DNS, &[b"http/1.1"])
            .await
            .unwrap();
        let start: &[u8] = if i < 20 {
            b"POST /mutating-pods HTTP/1.1\r\nho"
        } else {
            b"POST /mutating-pods HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{"
        };
        stream.write_all(start).await.unwrap();
        stream.flush().await.unwrap();
        slow.push(stream);
    }
    let dribble = tokio::spawn(async move {
        for _ in 0..20 {
            for stream in slow.iter_mut() {
                let _ = stream.write_all(b" ").await;
                let _ = stream.flush().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    // Meanwhile, ordinary reviews are answered, and quickly.
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        for _ in 0..20 {
            let started = Instant::now();
            let mut client = Client::new(
                connect(server.webhook, &ca, SERVICE_DNS, &[alpn])
                    .await
                    .unwrap(),
            )
            .await;
            let (status, _) = client.post("/mutating-pods", review_body()).await.unwrap();
            assert_eq!(status, 200);
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "a review took {:?} beside slow clients",
                started.elapsed()
            );
        }
    }
    let (status, metrics) = server.admin_get("/readyz").await;
    assert_eq!((status.as_u16(), metrics.as_str()), (200, "ok\n"));
    drop(dribble.await.unwrap());
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn sustained_load_across_certificate_rotations_then_sigterm_loses_nothing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let volume = tempfile::tempdir().unwrap();
    let certs: Vec<_> = (0..6)
        .map(|_| generate_dev_certificate("secret-inject", "testns").unwrap())
        .collect();
    // Clients trust every generation's CA, as a caBundle does during a rotation.
    let bundle = volume.path().join("..bundle.pem");
    std::fs::write(
        &bundle,
        certs.iter().map(|c| c.ca_pem.as_str()).collect::<String>(),
    )
    .unwrap();
    write_secret_volume(volume.path(), 0, &certs[0].cert_pem, &certs[0].key_pem);
    let cert = volume.path().join("tls.crt").to_string_lossy().into_owned();
    let key = volume.path().join("tls.key").to_string_lossy().into_owned();
    let mut server = Webhook::start(&[
        "--tls-cert-file",
        &cert,
        "--tls-private-key-file",
        &key,
        "--tls-reload-interval",
        "50ms",
        "--shutdown-grace-period",
        "20s",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (stop, answered, failed, bundle) = (
            stop.clone(),
            answered.clone(),
            failed.clone(),
            bundle.clone(),
        );
        let address = server.webhook;
        clients.push(tokio::spawn(async move {
            let alpn: &[u8] = if i % 2 == 0 { b"h2" } else { b"http/1.1" };
            let mut errors = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                // A new connection each time, so every handshake sees the latest certificate.
                let Ok(stream) = connect(address, &bundle, SERVICE_DNS, &[alpn]).await else {
                    // Refused only once SIGTERM closed the listener.
                    assert!(
                        stop.load(Ordering::SeqCst),
                        "connect failed during the load"
                    );
                    break;
                };
                let mut client = Client::new(stream).await;
                match client.post("/mutating-pods", review_body()).await {
                    Ok((status, _)) if status == 200 => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::SeqCst);
                        errors.push(format!("{other:?}"));
                    }
                }
            }
            errors
        }));
    }
    for (generation, cert) in certs.iter().enumerate().skip(1) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        write_secret_volume(
            volume.path(),
            generation as u32,
            &cert.cert_pem,
            &cert.key_pem,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    server.signal(Signal::TERM);
    let mut errors = Vec::new();
    for client in clients {
        errors.extend(client.await.unwrap());
    }
    assert_eq!(server.wait_exit(Duration::from_secs(25)), Some(0));
    assert!(errors.is_empty(), "failed requests: {errors:?}");
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(answered.load(Ordering::SeqCst) > 50, "too little load");
    let reloads = server
        .log_lines()
        .iter()
        .filter(|l| l.contains("TLS certificate reloaded"))
        .count();
    assert_eq!(reloads, 5, "{:?}", server.log_lines());
    assert!(
        !server
            .log_lines()
            .iter()
            .any(|l| l.contains("reload failed"))
    );
}

/// The admin port's `/metrics` carries the served certificate's expiry (its notAfter), from the
/// start and after a reload by a `..data` swap; a broken update leaves it at the served one's.
#[tokio::test(flavor = "multi_thread")]
async fn the_served_certificates_expiry_is_a_metric_updated_on_reload() {
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};
    let leaf = |year: i32| {
        let mut params = CertificateParams::new(vec![SERVICE_DNS.to_owned()]).unwrap();
        params.not_after = date_time_ymd(year, 1, 2);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let volume = tempfile::tempdir().unwrap();
    let (cert_2030, key_2030) = leaf(2030);
    write_secret_volume(volume.path(), 1, &cert_2030, &key_2030);
    let cert = volume.path().join("tls.crt").to_string_lossy().into_owned();
    let key = volume.path().join("tls.key").to_string_lossy().into_owned();
    let server = Webhook::start(&[
        "--tls-cert-file",
        &cert,
        "--tls-private-key-file",
        &key,
        "--tls-reload-interval",
        "100ms",
    ]);
    let expiry = |metrics: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("secret_inject_tls_certificate_expiry_timestamp_seconds "))
            .map(str::to_owned)
    };
    let (_, metrics) = server.admin_get("/metrics").await;
    // 2030-01-02T00:00:00Z
    assert_eq!(expiry(&metrics).as_deref(), Some("1893542400"), "{metrics}");
    assert!(
        metrics.contains("# TYPE secret_inject_tls_certificate_expiry_timestamp_seconds gauge"),
        "{metrics}"
    );

    let (cert_2031, key_2031) = leaf(2031);
    write_secret_volume(volume.path(), 2, &cert_2031, &key_2031);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.admin_get("/metrics").await;
        // 2031-01-02T00:00:00Z
        if expiry(&metrics).as_deref() == Some("1925078400") {
            break;
        }
        assert!(Instant::now() < deadline, "expiry not updated: {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    write_secret_volume(volume.path(), 3, "garbage", "garbage");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = server.admin_get("/metrics").await;
        if !metrics.contains("secret_inject_tls_certificate_reloads_total{result=\"failure\"} 0") {
            assert_eq!(expiry(&metrics).as_deref(), Some("1925078400"), "{metrics}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failed reload not counted: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
