//! Paths to endpoints. The router owns what every endpoint shares: the method check, the body
//! limits (size and time), metrics with an `endpoint` label, and the one log line per review.
//! An endpoint only turns a body into a [`Reviewed`]; it sees no sockets, so tests drive
//! [`Router::handle`] directly.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tracing::{info, warn};

use super::metrics::Metrics;
use super::review::{Outcome, Reviewed};

/// What an endpoint's review returns: a future, so that an endpoint may call out (the Secrets
/// endpoint will call AWS); a pure one returns a ready future.
pub type EndpointFuture<'a> = Pin<Box<dyn Future<Output = Reviewed> + Send + 'a>>;

/// One AdmissionReview endpoint.
pub trait Endpoint: Send + Sync + 'static {
    /// Its label in metrics and logs.
    fn name(&self) -> &'static str;
    /// Review one request body.
    fn review(&self, body: Bytes) -> EndpointFuture<'_>;
}

/// Limits on request bodies.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest accepted body; larger ones get 413.
    pub max_bytes: usize,
    /// Longest time a client may take to send a body.
    pub read_timeout: Duration,
}

/// The response type of every handler.
pub type Reply = Response<Full<Bytes>>;

/// The webhook's routes and shared state.
pub struct Router {
    routes: Vec<(&'static str, Box<dyn Endpoint>)>,
    limits: BodyLimits,
    metrics: Metrics,
    ready: AtomicBool,
}

impl Router {
    /// A router with no routes.
    pub fn new(limits: BodyLimits) -> Self {
        Self {
            routes: Vec::new(),
            limits,
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
        }
    }

    /// Serve `endpoint` at `path`.
    pub fn route(mut self, path: &'static str, endpoint: impl Endpoint) -> Self {
        self.metrics.register_endpoint(endpoint.name());
        self.routes.push((path, Box::new(endpoint)));
        self
    }

    /// The paths served.
    pub fn paths(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().map(|(path, _)| *path)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Mark the server ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers ok.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Handle one request on the webhook port.
    pub async fn handle<B>(&self, request: Request<B>) -> Reply
    where
        B: Body + Unpin,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let path = request.uri().path();
        let Some((_, endpoint)) = self.routes.iter().find(|(p, _)| *p == path) else {
            let paths: Vec<_> = self.paths().collect();
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "not found; POST AdmissionReviews to {}\n",
                    paths.join(" or ")
                ),
            );
        };
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
        let name = endpoint.name();
        let body = match self.read_body(request).await {
            Ok(body) => body,
            Err((status, reason)) => {
                // A body we cannot read is an invalid review: counted, answered with a reason.
                warn!(
                    endpoint = name,
                    status = status.as_u16(),
                    "{}",
                    reason.trim_end()
                );
                self.metrics.observe_review(
                    name,
                    Outcome::Invalid,
                    started.elapsed().as_secs_f64(),
                );
                return text(status, reason);
            }
        };
        let reviewed = endpoint.review(body).await;
        let elapsed = started.elapsed();
        self.metrics
            .observe_review(name, reviewed.outcome, elapsed.as_secs_f64());
        let s = &reviewed.summary;
        info!(
            endpoint = name,
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

    /// Read the body within the limits, or say which status to answer with and why.
    async fn read_body<B>(&self, request: Request<B>) -> Result<Bytes, (StatusCode, String)>
    where
        B: Body + Unpin,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limits = self.limits;
        let too_large = || {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than the limit of {} bytes\n",
                    limits.max_bytes
                ),
            )
        };
        let version = request.version();
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = request.into_body();
        let read = async {
            if declared.is_some_and(|len| len > limits.max_bytes as u64) {
                return Err(too_large());
            }
            match Limited::new(&mut body, limits.max_bytes).collect().await {
                Ok(collected) => Ok(collected.to_bytes()),
                Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
                    Err(too_large())
                }
                Err(error) => Err((
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {error}\n"),
                )),
            }
        };
        let deadline = tokio::time::Instant::now() + limits.read_timeout;
        let result = match tokio::time::timeout_at(deadline, read).await {
            Ok(result) => result,
            Err(_) => Err((
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body\n".to_owned(),
            )),
        };
        if result
            .as_ref()
            .is_err_and(|(s, _)| *s == StatusCode::PAYLOAD_TOO_LARGE)
            && version == Version::HTTP_2
        {
            // Over HTTP/2 an answer sent while the client is still sending makes the client see
            // a reset stream instead of the 413 (the connection itself stays open). Read and
            // drop the rest of the body, within the same time limit, so the stream ends cleanly.
            let drain = async { while body.frame().await.is_some_and(|f| f.is_ok()) {} };
            let _ = tokio::time::timeout_at(deadline, drain).await;
        }
        result
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text reply.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

/// A reply of another content type.
pub fn typed(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    reply(status, content_type, body)
}
