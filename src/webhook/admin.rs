//! The admin port: plain HTTP `/healthz`, `/readyz` and `/metrics`, apart from the webhook port
//! so that probes and scrapes need no TLS and never queue behind reviews.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::metrics;
use super::router::{Reply, Router, text, typed};

/// Handle one request on the admin port.
pub fn handle<B>(request: &Request<B>, router: &Router) -> Reply {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if router.is_ready() => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => typed(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            router.metrics().encode(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics\n",
        ),
    }
}

/// Serve the admin port until the task is aborted.
pub async fn serve(listener: TcpListener, router: Arc<Router>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let router = router.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let reply = handle(&request, &router);
                async move { Ok::<_, Infallible>(reply) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
