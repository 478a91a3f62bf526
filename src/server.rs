//! The webhook's HTTP servers: HTTPS for AdmissionReviews, plain HTTP for health and metrics.
//!
//! The handlers only parse, call [`crate::admission::review_pod`], log and serialize; they see
//! no sockets, so tests drive [`handle_webhook`] and [`handle_admin`] directly.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::admission::{Outcome, review_pod};
use crate::metrics::{self, Metrics};
use crate::mutate::MutationConfig;
use crate::tls::{self, Reload, ReloadingResolver};

/// Path of the pod-mutating webhook (seed contract).
pub const MUTATING_PODS_PATH: &str = "/mutating-pods";

/// How the servers listen and time out.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address both servers bind.
    pub bind_address: IpAddr,
    /// HTTPS webhook port (0 picks a free port).
    pub port: u16,
    /// Plain-HTTP admin port (0 picks a free port).
    pub admin_port: u16,
    /// Longest time a client may take to send a request's headers (and to finish the TLS
    /// handshake); stops idle or slow sockets from pinning the server.
    pub header_read_timeout: Duration,
    /// Longest time a client may take to send a request's body.
    pub body_read_timeout: Duration,
    /// Largest accepted request body; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Longest time in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_period: Duration,
    /// How often the certificate files are checked for changes.
    pub tls_reload_interval: Duration,
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct State {
    /// What every injection uses.
    pub mutation: MutationConfig,
    /// Metrics.
    pub metrics: Metrics,
    /// Limits.
    pub max_body_bytes: usize,
    /// Body read timeout.
    pub body_read_timeout: Duration,
    ready: AtomicBool,
}

impl State {
    /// New state; not ready until the servers listen.
    pub fn new(
        mutation: MutationConfig,
        max_body_bytes: usize,
        body_read_timeout: Duration,
    ) -> Self {
        Self {
            mutation,
            metrics: Metrics::new(),
            max_body_bytes,
            body_read_timeout,
            ready: AtomicBool::new(false),
        }
    }

    /// Mark the server ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

/// Handle one request on the webhook port.
pub async fn handle_webhook<B>(request: Request<B>, state: &State) -> Reply
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    if request.uri().path() != MUTATING_PODS_PATH {
        return text(
            StatusCode::NOT_FOUND,
            "not found; POST AdmissionReviews to /mutating-pods\n",
        );
    }
    if request.method() != Method::POST {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed; POST an AdmissionReview\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    // A body we cannot read is an invalid review: counted, answered with a reason.
    let reject = |status: StatusCode, reason: String| {
        state
            .metrics
            .observe_review(Outcome::Invalid, started.elapsed().as_secs_f64());
        text(status, reason)
    };
    let too_large = || {
        warn!(limit = state.max_body_bytes, "request body too large");
        reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body is larger than the limit of {} bytes\n",
                state.max_body_bytes
            ),
        )
    };
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > state.max_body_bytes as u64) {
        return too_large();
    }
    let body = Limited::new(request.into_body(), state.max_body_bytes).collect();
    let body = match tokio::time::timeout(state.body_read_timeout, body).await {
        Err(_) => {
            return reject(
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body\n".to_owned(),
            );
        }
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => return too_large(),
        Ok(Err(error)) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {error}\n"),
            );
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };

    let reviewed = review_pod(&body, &state.mutation);
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_review(reviewed.outcome, elapsed.as_secs_f64());
    let s = &reviewed.summary;
    info!(
        uid = %s.uid,
        namespace = %s.namespace,
        name = %s.name,
        operation = s.operation,
        outcome = reviewed.outcome.as_str(),
        duration_us = elapsed.as_micros() as u64,
        reason = s.reason.as_deref().unwrap_or(""),
        "admission review"
    );
    let status = StatusCode::from_u16(reviewed.status).unwrap_or(StatusCode::BAD_REQUEST);
    let content_type = if status == StatusCode::OK {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    reply(status, content_type, reviewed.body)
}

/// Handle one request on the admin port.
pub fn handle_admin<B>(request: &Request<B>, state: &State) -> Reply {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::SeqCst) => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => reply(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            state.metrics.encode(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics\n",
        ),
    }
}

/// Addresses the servers bound.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// HTTPS webhook.
    pub webhook: SocketAddr,
    /// Plain-HTTP admin.
    pub admin: SocketAddr,
}

/// Serve until `shutdown` resolves, then stop accepting and drain in-flight requests.
pub async fn serve(
    options: ServerOptions,
    resolver: Arc<ReloadingResolver>,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls_config = resolver
        .server_config()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let acceptor = TlsAcceptor::from(Arc::new(tls_config));
    let webhook = TcpListener::bind((options.bind_address, options.port)).await?;
    let admin = TcpListener::bind((options.bind_address, options.admin_port)).await?;
    let bound = Bound {
        webhook: webhook.local_addr()?,
        admin: admin.local_addr()?,
    };
    info!(address = %bound.webhook, path = MUTATING_PODS_PATH, "webhook listening (HTTPS)");
    info!(address = %bound.admin, "admin listening (HTTP: /healthz /readyz /metrics)");

    let watcher = {
        let state = state.clone();
        tokio::spawn(tls::watch(
            resolver.clone(),
            options.tls_reload_interval,
            move |result| match result {
                Ok(Reload::Reloaded) => {
                    state.metrics.observe_reload(true);
                    info!("TLS certificate reloaded");
                }
                Ok(Reload::Unchanged) => {}
                Err(error) => {
                    state.metrics.observe_reload(false);
                    warn!(%error, "TLS certificate reload failed; still serving the previous one");
                }
            },
        ))
    };
    let admin_server = tokio::spawn(serve_admin(admin, state.clone()));

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    state.set_ready(true);

    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = webhook.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let handshake_timeout = options.header_read_timeout;
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle_webhook(request, &state).await) }
            });
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                debug!(%peer, %error, "connection ended with an error");
            }
        });
    }

    info!("shutting down: no longer accepting, draining in-flight requests");
    state.set_ready(false);
    drop(webhook);
    tokio::select! {
        () = graceful.shutdown() => info!("all connections drained"),
        () = tokio::time::sleep(options.shutdown_grace_period) => {
            warn!(grace_period = ?options.shutdown_grace_period, "grace period over; closing remaining connections");
        }
    }
    watcher.abort();
    admin_server.abort();
    Ok(())
}

async fn serve_admin(listener: TcpListener, state: Arc<State>) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let reply = handle_admin(&request, &state);
                async move { Ok::<_, Infallible>(reply) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
