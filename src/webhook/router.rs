//! Paths to endpoints. The router owns what every endpoint shares: the method check, the body
//! limits (size, time, and the bytes in flight across all requests), where and how many reviews
//! run at once, metrics with an `endpoint` label, and the one log line per review. An endpoint
//! only turns a body into a [`Reviewed`]; it sees no sockets, so tests drive [`Router::handle`]
//! directly.
//!
//! Reviews of small bodies (the common case: a pod is a few KiB) run where the request was read,
//! which costs nothing extra; a body over [`LARGE_BODY_BYTES`] can cost milliseconds of CPU,
//! so its review runs on tokio's blocking pool, at most `--max-concurrent-reviews` at once,
//! and the runtime's workers stay free for I/O (accepting, handshakes, small reviews).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode, Version};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use super::metrics::{Metrics, RejectReason};
use super::review::{Outcome, Reviewed};

/// Bodies larger than this are large: their reviews run on the blocking pool, and together they
/// may hold at most three quarters of `--max-in-flight-body-bytes`, so that the last quarter is
/// always there for ordinary reviews (a pod is a few KiB) while large bodies are slow to come.
pub const LARGE_BODY_BYTES: usize = 64 * 1024;

/// What an endpoint's review returns: a future, so that an endpoint may call out (the Secrets
/// endpoint will call AWS); a pure one returns a ready future.
pub type EndpointFuture<'a> = Pin<Box<dyn Future<Output = Reviewed> + Send + 'a>>;

/// One AdmissionReview endpoint.
pub trait Endpoint: Send + Sync + 'static {
    /// Its label in metrics and logs.
    fn name(&self) -> &'static str;
    /// Review one request body. Called on a runtime worker for small bodies and on the
    /// blocking pool (the future then driven there with `Handle::block_on`) for large ones.
    fn review(&self, body: Bytes) -> EndpointFuture<'_>;
}

/// Limits on the work in progress across all requests.
#[derive(Debug, Clone, Copy)]
pub struct InFlightLimits {
    /// Request body bytes held at once, across all connections (read so far, or reserved from a
    /// declared `content-length`); a request that would go over is answered 503 at once.
    pub body_bytes: usize,
    /// Reviews of large bodies (over [`LARGE_BODY_BYTES`]) computed at once; more wait.
    pub reviews: usize,
}

impl Default for InFlightLimits {
    fn default() -> Self {
        Self {
            body_bytes: 16 * 1024 * 1024,
            reviews: 2,
        }
    }
}

/// The server-wide budget of body bytes: one semaphore for all, and one for large bodies that
/// holds three quarters of it.
#[derive(Debug)]
struct BodyBudget {
    limit: usize,
    all: Arc<Semaphore>,
    large: Arc<Semaphore>,
    gauge: Gauge,
}

/// Body bytes held by one request; released (and the gauge lowered) on drop.
#[derive(Debug)]
struct Reservation {
    all: Option<OwnedSemaphorePermit>,
    large: Option<OwnedSemaphorePermit>,
    bytes: usize,
    gauge: Gauge,
}

impl BodyBudget {
    fn new(limit: usize, gauge: Gauge) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            limit,
            all: Arc::new(Semaphore::new(limit)),
            large: Arc::new(Semaphore::new((limit / 4 * 3).max(1))),
            gauge,
        }
    }

    fn empty(&self) -> Reservation {
        Reservation {
            all: None,
            large: None,
            bytes: 0,
            gauge: self.gauge.clone(),
        }
    }

    /// Take `bytes` more for `reservation` (large: from the large bodies' share too), or say no.
    fn grow(&self, reservation: &mut Reservation, bytes: usize, large: bool) -> bool {
        if bytes == 0 {
            return true;
        }
        let Ok(n) = u32::try_from(bytes) else {
            return false;
        };
        let large_permit = if large {
            match self.large.clone().try_acquire_many_owned(n) {
                Ok(permit) => Some(permit),
                Err(_) => return false,
            }
        } else {
            None
        };
        let Ok(all) = self.all.clone().try_acquire_many_owned(n) else {
            return false;
        };
        merge(&mut reservation.all, all);
        if let Some(permit) = large_permit {
            merge(&mut reservation.large, permit);
        }
        reservation.bytes += bytes;
        self.gauge.inc_by(bytes as i64);
        true
    }
}

fn merge(slot: &mut Option<OwnedSemaphorePermit>, permit: OwnedSemaphorePermit) {
    match slot {
        Some(held) => held.merge(permit),
        None => *slot = Some(permit),
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.gauge.dec_by(self.bytes as i64);
        }
    }
}

/// Counts a review in a gauge while it lives.
struct InFlight(Gauge);

impl InFlight {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
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
    routes: Vec<(&'static str, Arc<dyn Endpoint>)>,
    limits: BodyLimits,
    metrics: Metrics,
    ready: AtomicBool,
    budget: BodyBudget,
    reviews: Arc<Semaphore>,
}

impl Router {
    /// A router with no routes and the default [`InFlightLimits`].
    pub fn new(limits: BodyLimits) -> Self {
        let metrics = Metrics::new();
        let in_flight = InFlightLimits::default();
        Self {
            routes: Vec::new(),
            limits,
            budget: BodyBudget::new(
                in_flight.body_bytes,
                metrics.load().body_bytes_in_flight.clone(),
            ),
            reviews: Arc::new(Semaphore::new(in_flight.reviews.max(1))),
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// Set the limits on work in progress across all requests.
    pub fn in_flight(mut self, limits: InFlightLimits) -> Self {
        self.budget = BodyBudget::new(
            limits.body_bytes,
            self.metrics.load().body_bytes_in_flight.clone(),
        );
        self.reviews = Arc::new(Semaphore::new(
            limits.reviews.clamp(1, Semaphore::MAX_PERMITS),
        ));
        self
    }

    /// Serve `endpoint` at `path`.
    pub fn route(mut self, path: &'static str, endpoint: impl Endpoint) -> Self {
        self.metrics.register_endpoint(endpoint.name());
        self.routes.push((path, Arc::new(endpoint)));
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
        B: Body<Data = Bytes> + Unpin,
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
        let (body, reservation) = match self.read_body(request).await {
            Ok(read) => read,
            Err((status, reason)) if status == StatusCode::SERVICE_UNAVAILABLE => {
                // Not the client's fault: the server is full. Counted apart from reviews.
                warn!(
                    endpoint = name,
                    status = status.as_u16(),
                    "{}",
                    reason.trim_end()
                );
                self.metrics
                    .load()
                    .observe_reject(RejectReason::MaxInFlightBodyBytes);
                let mut response = text(status, reason);
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
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
        let reviewed = self.review(endpoint, body).await;
        drop(reservation);
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

    /// Review `body`: here when it is small, on the blocking pool (at most
    /// `--max-concurrent-reviews` at once) when it is large.
    async fn review(&self, endpoint: &Arc<dyn Endpoint>, body: Bytes) -> Reviewed {
        let load = self.metrics.load();
        if body.len() <= LARGE_BODY_BYTES {
            let _in_flight = InFlight::new(&load.reviews_in_flight);
            return endpoint.review(body).await;
        }
        let permit = {
            let _queued = InFlight::new(&load.reviews_queued);
            // The semaphore is never closed.
            self.reviews.clone().acquire_owned().await.ok()
        };
        let in_flight = InFlight::new(&load.reviews_in_flight);
        let name = endpoint.name();
        let endpoint = endpoint.clone();
        let runtime = tokio::runtime::Handle::current();
        let review = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _in_flight = in_flight;
            runtime.block_on(endpoint.review(body))
        });
        match review.await {
            Ok(reviewed) => reviewed,
            Err(error) => {
                warn!(endpoint = name, %error, "review failed");
                let mut reviewed = super::review::invalid(
                    "the review failed; see the webhook's log".to_owned(),
                    Default::default(),
                );
                reviewed.status = StatusCode::INTERNAL_SERVER_ERROR.as_u16();
                reviewed
            }
        }
    }

    /// Read the body within the limits, or say which status to answer with and why. The bytes
    /// stay reserved in the server-wide budget until the returned [`Reservation`] is dropped.
    async fn read_body<B>(
        &self,
        request: Request<B>,
    ) -> Result<(Bytes, Reservation), (StatusCode, String)>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limits = self.limits;
        let too_large = || {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body is larger than the limit of {} bytes (--max-body-bytes)\n",
                    limits.max_bytes
                ),
            )
        };
        let budget = &self.budget;
        let full = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "server busy: request bodies in flight would exceed {} bytes \
                     (--max-in-flight-body-bytes); retry\n",
                    budget.limit
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
        let mut reservation = budget.empty();
        let read = async {
            let declared = match declared {
                Some(len) if len > limits.max_bytes as u64 => return Err(too_large()),
                // Within max_bytes, so it fits a usize.
                Some(len) => Some(len as usize),
                None => None,
            };
            // A declared length is reserved whole before anything is read, so the answer comes
            // before the body; without one (chunked, or HTTP/2 without content-length), each
            // frame is reserved as it comes, and the body counts as large.
            if let Some(len) = declared
                && !budget.grow(&mut reservation, len, len > LARGE_BODY_BYTES)
            {
                return Err(full());
            }
            let mut first: Option<Bytes> = None;
            let mut rest = Vec::new();
            let mut len = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the request body: {error}\n"),
                    )
                })?;
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                len += data.len();
                if len > limits.max_bytes {
                    return Err(too_large());
                }
                if declared.is_none() && !budget.grow(&mut reservation, data.len(), true) {
                    return Err(full());
                }
                // One frame (the usual small body) is kept as it came; more are copied into one
                // buffer of the declared size.
                match first.take() {
                    None if rest.is_empty() => first = Some(data),
                    None => rest.extend_from_slice(&data),
                    Some(head) => {
                        rest.reserve(declared.unwrap_or(len).max(len));
                        rest.extend_from_slice(&head);
                        rest.extend_from_slice(&data);
                    }
                }
            }
            Ok(first.unwrap_or_else(|| Bytes::from(rest)))
        };
        let deadline = tokio::time::Instant::now() + limits.read_timeout;
        let result = match tokio::time::timeout_at(deadline, read).await {
            Ok(result) => result,
            Err(_) => Err((
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body (--body-read-timeout)\n".to_owned(),
            )),
        };
        if result.as_ref().is_err_and(|(s, _)| {
            *s == StatusCode::PAYLOAD_TOO_LARGE || *s == StatusCode::SERVICE_UNAVAILABLE
        }) && version == Version::HTTP_2
        {
            // Over HTTP/2 an answer sent while the client is still sending makes the client see
            // a reset stream instead of the answer (the connection itself stays open). Read and
            // drop the rest of the body, within the same time limit, so the stream ends cleanly;
            // nothing is kept, so this costs no memory.
            drop(reservation);
            let drain = async { while body.frame().await.is_some_and(|f| f.is_ok()) {} };
            let _ = tokio::time::timeout_at(deadline, drain).await;
            return result.map(|body| (body, budget.empty()));
        }
        result.map(|body| (body, reservation))
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
