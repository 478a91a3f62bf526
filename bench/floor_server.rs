//! The floor of `bench/webhook-load.sh`: the least a webhook can do and still answer an
//! AdmissionReview over TLS. rustls + hyper + serde_json, configured as `secret-inject webhook`
//! is (a multi-threaded tokio runtime, HTTP/1.1 and h2 behind ALPN, an ECDSA P-256 certificate):
//! it reads the body, parses it as a `serde_json::Value`, and answers `allowed` with the
//! request's uid. No mutation, no logging, no metrics: what is left is TLS, HTTP and JSON, which
//! no webhook can avoid. The load script runs it and the webhook alternately and prints the ratio.
//!
//! Usage: floor_server PORT CA_FILE   (PORT 0 picks a free port; prints `listening on ADDR`
//! once ready and writes the self-signed certificate to CA_FILE for clients that verify).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(ca_file)) = (args.next(), args.next()) else {
        eprintln!("usage: floor_server PORT CA_FILE");
        return std::process::ExitCode::from(2);
    };
    let Ok(port) = port.parse::<u16>() else {
        eprintln!("PORT must be a number from 0 to 65535");
        return std::process::ExitCode::from(2);
    };
    match serve(port, &ca_file) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floor_server: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn tls_config(ca_file: &str) -> Result<ServerConfig, Box<dyn std::error::Error>> {
    let key = rcgen::KeyPair::generate()?;
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let cert = params.self_signed(&key)?;
    std::fs::write(ca_file, cert.pem())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn serve(port: u16, ca_file: &str) -> Result<(), Box<dyn std::error::Error>> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(ca_file)?));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on {}", listener.local_addr()?);
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(|request| async {
                    Ok::<_, Infallible>(review(request).await)
                });
                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
            });
        }
    })
}

async fn review(request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let reply = |status, content_type, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    let Ok(body) = request.into_body().collect().await else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            b"unreadable body\n".to_vec(),
        );
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            b"not JSON\n".to_vec(),
        );
    };
    let answer = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": review["request"]["uid"], "allowed": true},
    });
    reply(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&answer).unwrap_or_default(),
    )
}
