//! The small plain-HTTP/1.1 server behind the webhook's admin port and the agent's metrics port:
//! cheap synchronous answers (health, readiness, Prometheus text), bounded so that no caller can
//! pin it: at most `max_connections` open at once (more are closed at once) and a header-read
//! timeout for silent sockets.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// How long a connection may take to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `answer` on `listener` until the future is dropped.
pub async fn serve<F>(listener: TcpListener, max_connections: usize, answer: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if open.fetch_add(1, Ordering::AcqRel) >= max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            drop(stream);
            continue;
        }
        let (builder, open, answer) = (builder.clone(), open.clone(), answer.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let reply = answer(&request);
                async move { Ok::<_, Infallible>(reply) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            open.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
