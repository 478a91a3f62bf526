//! One connection on the webhook port, from accept to close, and the limits on connections:
//!
//! - at most `--max-connections` open at once; the accept loop closes any over it at once;
//! - the TLS handshake *and* the first request's headers within `--header-read-timeout` of the
//!   accept, whichever protocol ALPN chose (a client that completes the handshake and sends
//!   nothing is closed, as is one stuck in the auto builder's protocol read);
//! - closed once no request has been in progress for `--idle-timeout`, HTTP/2 included: PINGs
//!   and SETTINGS keep no connection open, only requests do;
//! - a connection told to close (idle, or at shutdown) that does not finish closing within
//!   [`CLOSE_GRACE`] while no request is in progress (an HTTP/2 client that ignores GOAWAY and
//!   the PING after it) is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::Router;
use super::metrics::{CloseReason, LoadMetrics};

/// How long a connection the server told to close (idle, first-request timeout, shutdown) may
/// take to do so while no request is in progress, before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// HTTP/1.1 read buffer per connection, at most (hyper's default is about 400 KiB); request
/// headers must fit in it.
const HTTP1_MAX_BUF_SIZE: usize = 64 * 1024;
/// HTTP/2 flow-control windows: how much request body a client may send before the server has
/// read it, per stream and per connection (hyper's defaults are 1 MiB each). Bodies are read
/// at once (and counted in `--max-in-flight-body-bytes`), so this is only transient.
const HTTP2_STREAM_WINDOW: u32 = 256 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 512 * 1024;
/// How often the server PINGs an HTTP/2 client, and how long it waits for the answer, to find
/// dead peers (a PING answered does not make a connection busy).
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Limits on the webhook port's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once (TLS handshakes included); more are accepted and closed at once.
    pub max_connections: usize,
    /// A connection with no request in progress for this long is closed (HTTP/1.1 keep-alive
    /// and HTTP/2 alike; an HTTP/1.1 connection is closed earlier by the header-read timeout).
    pub idle_timeout: Duration,
    /// HTTP/2 streams (requests) in progress at once on one connection.
    pub http2_max_concurrent_streams: u32,
    /// Largest HTTP/2 header list accepted (SETTINGS_MAX_HEADER_LIST_SIZE), in bytes.
    pub http2_max_header_list_size: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            idle_timeout: Duration::from_secs(90),
            http2_max_concurrent_streams: 100,
            http2_max_header_list_size: 16 * 1024,
        }
    }
}

/// The three connection builders, by what ALPN chose: HTTP/2, HTTP/1.1, or nothing (the auto
/// builder reads the first bytes to tell).
pub(crate) struct Builders {
    h2: auto::Builder<TokioExecutor>,
    h1: auto::Builder<TokioExecutor>,
    auto: auto::Builder<TokioExecutor>,
}

impl Builders {
    pub(crate) fn new(header_read_timeout: Duration, limits: &ConnectionLimits) -> Self {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(HTTP1_MAX_BUF_SIZE)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(HTTP2_KEEP_ALIVE_INTERVAL))
            .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .max_header_list_size(limits.http2_max_header_list_size)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW);
        Self {
            h2: auto.clone().http2_only(),
            h1: auto.clone().http1_only(),
            auto,
        }
    }
}

/// Open connections, against the limit.
#[derive(Debug)]
pub(crate) struct OpenConnections {
    count: AtomicUsize,
    limit: usize,
    gauge: Gauge,
}

/// One open connection; closing it (dropping this) makes room for another.
#[derive(Debug)]
pub(crate) struct Open(Arc<OpenConnections>);

impl OpenConnections {
    pub(crate) fn new(limit: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            count: AtomicUsize::new(0),
            limit: limit.max(1),
            gauge,
        })
    }

    /// A place for one more connection, unless the limit is reached.
    pub(crate) fn try_open(self: &Arc<Self>) -> Option<Open> {
        let limit = self.limit;
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        self.gauge.inc();
        Some(Open(self.clone()))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

/// Requests in progress on one connection, and since when it has had none.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    started: AtomicBool,
    in_flight: AtomicUsize,
    /// Microseconds from `origin` to the end of the last request.
    idle_since_us: AtomicU64,
}

/// One request in progress; its end (drop) may make the connection idle.
struct Busy(Arc<Activity>);

impl Activity {
    fn new(origin: Instant) -> Arc<Self> {
        Arc::new(Self {
            origin,
            started: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_us: AtomicU64::new(0),
        })
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.started.store(true, Ordering::SeqCst);
        Busy(self.clone())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    /// When the connection becomes closable, and why: `None` while a request is in progress.
    fn close_at(
        &self,
        first_request: Instant,
        idle_timeout: Duration,
    ) -> Option<(Instant, CloseReason)> {
        if self.busy() {
            return None;
        }
        if !self.started.load(Ordering::SeqCst) {
            return Some((first_request, CloseReason::FirstRequestTimeout));
        }
        let idle_since =
            self.origin + Duration::from_micros(self.idle_since_us.load(Ordering::SeqCst));
        Some((idle_since + idle_timeout, CloseReason::IdleTimeout))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        let since = activity.origin.elapsed().as_micros() as u64;
        activity.idle_since_us.fetch_max(since, Ordering::SeqCst);
        activity.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a connection task needs, shared by all of them.
pub(crate) struct Shared {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) router: Arc<Router>,
    pub(crate) builders: Builders,
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) metrics: LoadMetrics,
}

/// Serve one accepted connection until it closes, is closed by a limit, or `shutdown` turns
/// true (then it is closed gracefully: in-flight requests finish). Holds `open` and `shutdown`
/// until the end, so the drain can wait for the last connection.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    shared: Arc<Shared>,
    open: Open,
    mut shutdown: watch::Receiver<bool>,
) {
    let _open = open;
    let _ = stream.set_nodelay(true);
    let first_request = accepted + shared.header_read_timeout;
    let tls = match tokio::time::timeout_at(first_request, shared.acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            debug!(%peer, %error, "TLS handshake failed");
            shared.metrics.observe_close(CloseReason::HandshakeError);
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            shared.metrics.observe_close(CloseReason::HandshakeTimeout);
            return;
        }
    };
    let builder = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => &shared.builders.h2,
        Some(_) => &shared.builders.h1,
        None => &shared.builders.auto,
    };
    let activity = Activity::new(accepted);
    let service = {
        let activity = activity.clone();
        let router = shared.router.clone();
        hyper::service::service_fn(move |request| {
            let busy = activity.begin();
            let router = router.clone();
            async move {
                let reply = router.handle(request).await;
                drop(busy);
                Ok::<_, Infallible>(reply)
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    let mut connection = std::pin::pin!(connection);
    let timer = tokio::time::sleep_until(first_request);
    let mut timer = std::pin::pin!(timer);
    // Set once the connection was told to close; from then on the timer is the close grace.
    let mut closing = false;
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            // A limit that is due is applied (and counted) before anything else.
            biased;
            () = timer.as_mut() => {
                let now = Instant::now();
                if closing {
                    if !activity.busy() {
                        debug!(%peer, "connection did not close within the grace; dropped");
                        return;
                    }
                    timer.as_mut().reset(now + CLOSE_GRACE);
                    continue;
                }
                match activity.close_at(first_request, shared.idle_timeout) {
                    None => timer.as_mut().reset(now + shared.idle_timeout),
                    Some((at, _)) if at > now => timer.as_mut().reset(at),
                    Some((_, reason @ CloseReason::FirstRequestTimeout)) => {
                        // No request ever started, so nothing is lost by dropping it now; a
                        // graceful close would wait for an HTTP/2 client's preface.
                        debug!(%peer, reason = reason.as_str(), "closing the connection");
                        shared.metrics.observe_close(reason);
                        return;
                    }
                    Some((_, reason)) => {
                        debug!(%peer, reason = reason.as_str(), "closing the connection");
                        shared.metrics.observe_close(reason);
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        timer.as_mut().reset(now + CLOSE_GRACE);
                    }
                }
            }
            result = connection.as_mut() => {
                if let Err(error) = result {
                    debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
                if !closing {
                    closing = true;
                    // The drain's grace period bounds requests in progress; an idle
                    // connection that ignores the close is dropped after CLOSE_GRACE.
                    timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
                }
            }
        }
    }
}
