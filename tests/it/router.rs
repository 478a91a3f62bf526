//! The HTTP handlers, driven without sockets: routing, limits, status codes and the exact bytes
//! of the AdmissionReview response on the wire; and the in-process server on the addresses it
//! reports.

use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use secret_inject::mutate::MutationConfig;
use secret_inject::webhook::{BodyLimits, Router, admin, pods};
use serde_json::Value;

use crate::common;

fn router_with_limit(max_bytes: usize) -> Router {
    Router::new(BodyLimits {
        max_bytes,
        read_timeout: Duration::from_secs(5),
    })
    .route(pods::PATH, pods::Pods::new(MutationConfig::default()))
}

fn state() -> Router {
    router_with_limit(64 * 1024)
}

fn golden(case: &str) -> Vec<u8> {
    std::fs::read(common::repo_root().join(format!("tests/golden/{case}/request.json"))).unwrap()
}

async fn call(
    state: &Router,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, String, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = state.handle(request).await;
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, content_type, body)
}

#[tokio::test]
async fn patch_is_a_base64_string_on_the_wire() {
    let state = state();
    let (status, content_type, body) = call(
        &state,
        Method::POST,
        "/mutating-pods",
        golden("seed-webserver"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    let text = String::from_utf8(body.clone()).unwrap();
    // The bytes themselves: a JSON string, not an array of numbers (kube-rs #1781).
    assert!(text.contains("\"patch\":\""), "{text}");
    assert!(text.contains("\"patchType\":\"JSONPatch\""), "{text}");
    assert!(
        text.starts_with("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\""),
        "{text}"
    );
    let wire: Value = serde_json::from_slice(&body).unwrap();
    let patch = base64::engine::general_purpose::STANDARD
        .decode(wire["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    assert!(patch.as_array().unwrap().iter().all(|op| op["op"] == "add"));
    assert_eq!(
        wire["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert!(state.metrics().encode().contains(
        "secret_inject_admission_reviews_total{endpoint=\"pods\",outcome=\"mutated\"} 1"
    ));
}

#[tokio::test]
async fn denial_is_http_200_with_allowed_false() {
    let state = state();
    let (status, _, body) = call(
        &state,
        Method::POST,
        "/mutating-pods",
        golden("denied-bad-arn"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let wire: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(wire["response"]["allowed"], false);
    assert!(wire["response"].get("patch").is_none());
    let message = wire["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("annotation secrets.k8s.aws/secret-arn:"),
        "{message}"
    );
    assert!(state.metrics().encode().contains("outcome=\"denied\"} 1"));
}

#[tokio::test]
async fn not_an_admission_review_is_400_with_a_reason() {
    let state = state();
    for (body, expect) in [
        (
            b"not json".to_vec(),
            "not an AdmissionReview admission.k8s.io/v1",
        ),
        (b"{}".to_vec(), "AdmissionReview"),
        (
            b"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}".to_vec(),
            "AdmissionReview",
        ),
        (
            String::from_utf8(golden("seed-webserver"))
                .unwrap()
                .replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
                .into_bytes(),
            "admissionReviewVersions",
        ),
        (
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}".to_vec(),
            "request is missing",
        ),
        (
            String::from_utf8(golden("seed-webserver"))
                .unwrap()
                .replace("\"containers\": [", "\"containers\": 7, \"x\": [")
                .into_bytes(),
            "not a valid v1 Pod",
        ),
    ] {
        let (status, content_type, body) = call(&state, Method::POST, "/mutating-pods", body).await;
        let text = String::from_utf8(body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(content_type.starts_with("text/plain"));
        assert!(text.contains(expect), "expected {expect:?} in {text:?}");
    }
    assert!(state.metrics().encode().contains("outcome=\"invalid\"} 6"));
}

#[tokio::test]
async fn routes_and_methods() {
    let state = state();
    let (status, _, _) = call(&state, Method::POST, "/elsewhere", golden("seed-webserver")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let request = Request::builder()
        .method(Method::GET)
        .uri("/mutating-pods")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = state.handle(request).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let state = router_with_limit(1024);
    // Declared too large.
    let (status, _, _) = call(&state, Method::POST, "/mutating-pods", vec![b' '; 4096]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Streamed without a length.
    let chunks = futures_stream(vec![
        Bytes::from(vec![b' '; 800]),
        Bytes::from(vec![b' '; 800]),
    ]);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/mutating-pods")
        .body(chunks)
        .unwrap();
    let response = state.handle(request).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// A body that arrives in chunks with no Content-Length.
fn futures_stream(chunks: Vec<Bytes>) -> Chunked {
    Chunked(chunks.into_iter().rev().collect())
}

struct Chunked(Vec<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[test]
fn admin_endpoints() {
    let state = state();
    let get = |path: &str| {
        let request = Request::builder().uri(path).body(()).unwrap();
        admin::handle(&request, &state).status()
    };
    assert_eq!(get("/healthz"), StatusCode::OK);
    assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE);
    state.set_ready(true);
    assert_eq!(get("/readyz"), StatusCode::OK);
    assert_eq!(get("/metrics"), StatusCode::OK);
    assert_eq!(get("/nope"), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_reports_its_bound_addresses_and_serves_there() {
    use std::sync::Arc;

    use secret_inject::webhook::tls::{ReloadingResolver, generate_dev_certificate};
    use secret_inject::webhook::{Server, ServerOptions};

    let dev = generate_dev_certificate("secret-inject", "testns").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &dev.ca_pem).unwrap();
    let resolver =
        ReloadingResolver::fixed(dev.cert_pem.as_bytes(), dev.key_pem.as_bytes()).unwrap();
    let options = ServerOptions {
        bind_address: "127.0.0.1".parse().unwrap(),
        port: 0,
        admin_port: 0,
        header_read_timeout: Duration::from_secs(5),
        shutdown_grace_period: Duration::from_secs(5),
        tls_reload_interval: Duration::from_secs(60),
    };
    let server = Server::bind(options, Arc::new(resolver), Arc::new(state()))
        .await
        .unwrap();
    let bound = server.bound();
    assert_ne!(bound.webhook.port(), 0);
    assert_ne!(bound.admin.port(), 0);
    assert_ne!(bound.webhook, bound.admin);
    let (stop, stopped) = tokio::sync::mpsc::unbounded_channel::<()>();
    let serving = tokio::spawn(server.run(stopped));

    let stream = common::webhook::connect(bound.webhook, &ca, "secret-inject.testns.svc", &[b"h2"])
        .await
        .unwrap();
    let mut client = common::webhook::Client::new(stream).await;
    let (status, body) = client
        .post("/mutating-pods", golden("seed-webserver"))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert!(common::webhook::decode_patch(&review).is_some());

    drop(client);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server drains and returns")
        .unwrap()
        .unwrap();
}
