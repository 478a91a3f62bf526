//! The admin port: plain HTTP `/healthz`, `/readyz` and `/metrics`, apart from the webhook port
//! so that probes and scrapes need no TLS and never queue behind reviews: [`Thread`] serves it
//! on a thread and runtime of its own, so it answers while the webhook's workers are busy.

use std::sync::Arc;

use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Admin connections open at once; more are closed at once. Probes and scrapes need a few; the
/// cap keeps a flood of them from taking the descriptors the webhook port needs.
pub const MAX_CONNECTIONS: usize = 64;

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

/// The admin server on its own thread, with a single-threaded runtime of its own.
pub struct Thread {
    stop: Option<oneshot::Sender<()>>,
}

impl Thread {
    /// Serve `listener` (bound on any runtime) on a new thread.
    pub fn spawn(listener: TcpListener, router: Arc<Router>) -> std::io::Result<Thread> {
        let listener = listener.into_std()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name("admin".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    tokio::select! {
                        () = serve(listener, router) => {}
                        _ = stopped => {}
                    }
                    Ok::<_, std::io::Error>(())
                })
            })?;
        Ok(Thread { stop: Some(stop) })
    }

    /// Stop serving (the thread ends on its own).
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serve the admin port until the future is dropped.
pub async fn serve(listener: TcpListener, router: Arc<Router>) {
    crate::plain_http::serve(listener, MAX_CONNECTIONS, move |request| {
        handle(request, &router)
    })
    .await;
}
