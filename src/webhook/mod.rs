//! The webhook server: HTTPS for AdmissionReviews (h2 and HTTP/1.1), plain HTTP for health and
//! metrics. [`Server::bind`] listens and reports the bound addresses; [`Server::run`] serves
//! until shutdown, then drains in-flight requests. Paths map to endpoints in a [`Router`].

pub mod admin;
pub mod cluster;
pub mod connection;
pub mod metrics;
pub mod pods;
pub mod promote;
pub mod review;
pub mod router;
pub mod secrets;
pub mod tls;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

pub use connection::ConnectionLimits;
use connection::{Builders, OpenConnections, Shared};
use metrics::CloseReason;
pub use router::{BodyLimits, InFlightLimits, Router};
use tls::{Reload, ReloadingResolver};

/// File descriptors kept for everything but webhook connections (listeners, admin connections,
/// certificate reads, clients of AWS and the API server, the runtime's own) when
/// `--max-connections` is fitted under the process's descriptor limit.
const RESERVED_DESCRIPTORS: u64 = 128;

/// How long, after the stop, connections keep being served before keep-alive is switched off.
const LINGER: Duration = Duration::from_millis(500);

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
    /// Longest time in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_period: Duration,
    /// How often the certificate files are checked for changes.
    pub tls_reload_interval: Duration,
}

/// Addresses the servers bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// HTTPS webhook.
    pub webhook: SocketAddr,
    /// Plain-HTTP admin.
    pub admin: SocketAddr,
}

/// Listening sockets, ready to serve.
pub struct Server {
    options: ServerOptions,
    resolver: Arc<ReloadingResolver>,
    router: Arc<Router>,
    webhook: TcpListener,
    admin: TcpListener,
    bound: Bound,
    limits: ConnectionLimits,
}

impl Server {
    /// Bind both ports.
    pub async fn bind(
        options: ServerOptions,
        resolver: Arc<ReloadingResolver>,
        router: Arc<Router>,
    ) -> std::io::Result<Server> {
        let webhook = TcpListener::bind((options.bind_address, options.port)).await?;
        let admin = TcpListener::bind((options.bind_address, options.admin_port)).await?;
        let bound = Bound {
            webhook: webhook.local_addr()?,
            admin: admin.local_addr()?,
        };
        Ok(Server {
            options,
            resolver,
            router,
            webhook,
            admin,
            bound,
            limits: ConnectionLimits::default(),
        })
    }

    /// Set the limits on the webhook port's connections.
    pub fn with_limits(mut self, limits: ConnectionLimits) -> Server {
        self.limits = limits;
        self
    }

    /// The bound addresses (the real ports when 0 was asked for).
    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// Serve until the first message on `stop` (or its sender is gone), then stop accepting and
    /// drain in-flight requests for up to the grace period; a second message ends the drain at
    /// once (an operator's second Ctrl-C or SIGTERM).
    pub async fn run(self, mut stop: mpsc::UnboundedReceiver<()>) -> std::io::Result<()> {
        let Server {
            options,
            resolver,
            router,
            webhook,
            admin,
            bound,
            limits,
        } = self;
        let tls_config = resolver
            .server_config()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let acceptor = TlsAcceptor::from(Arc::new(tls_config));
        let paths: Vec<_> = router.paths().collect();
        let max_connections = fit_to_descriptor_limit(limits.max_connections);
        info!(
            address = %bound.webhook,
            paths = ?paths,
            max_connections,
            "webhook listening (HTTPS)"
        );
        info!(address = %bound.admin, "admin listening (HTTP: /healthz /readyz /metrics)");

        router
            .metrics()
            .set_certificate_expiry(resolver.not_after());
        let watcher = {
            let router = router.clone();
            let served = resolver.clone();
            tokio::spawn(tls::watch(
                resolver.clone(),
                options.tls_reload_interval,
                move |result| match result {
                    Ok(Reload::Reloaded) => {
                        router.metrics().observe_reload(true);
                        router.metrics().set_certificate_expiry(served.not_after());
                        info!("TLS certificate reloaded");
                    }
                    Ok(Reload::Unchanged) => {}
                    Err(error) => {
                        router.metrics().observe_reload(false);
                        let error = crate::errors::error_chain(&error);
                        warn!(%error, "TLS certificate reload failed; still serving the previous one");
                    }
                },
            ))
        };
        // Probes and scrapes on a thread and runtime of their own: answered even while every
        // worker of this runtime is busy.
        let admin_server = admin::Thread::spawn(admin, router.clone())?;

        let metrics = router.metrics().load().clone();
        let shared = Arc::new(Shared {
            acceptor,
            router: router.clone(),
            builders: Builders::new(options.header_read_timeout, &limits),
            header_read_timeout: options.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            metrics: metrics.clone(),
        });
        let open = OpenConnections::new(max_connections, metrics.connections_open.clone());
        // Every connection task holds a receiver: `closed()` on the sender is the drain's end.
        let (shutdown, shutdown_rx) = watch::channel(false);
        router.set_ready(true);

        let serve = |stream: tokio::net::TcpStream, peer: SocketAddr| {
            let accepted = tokio::time::Instant::now();
            metrics.connections_accepted.inc();
            let Some(place) = open.try_open() else {
                // Closed at once: the descriptor is free again, and the client sees a reset
                // instead of a connection that hangs in the backlog.
                drop(stream);
                metrics.observe_close(CloseReason::MaxConnections);
                return;
            };
            tokio::spawn(connection::serve(
                stream,
                peer,
                accepted,
                shared.clone(),
                place,
                shutdown_rx.clone(),
            ));
        };

        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.recv() => break,
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
            serve(stream, peer);
        }

        info!("shutting down: no longer accepting, draining in-flight requests");
        router.set_ready(false);
        // Connections the kernel queued before the stop are clients that already called: serve
        // them rather than reset them.
        while let Ok(Ok((stream, peer))) =
            tokio::time::timeout(Duration::from_millis(1), webhook.accept()).await
        {
            serve(stream, peer);
        }
        drop(webhook);
        drop(shutdown_rx);
        // A connection whose first request is still unread counts as idle, and a graceful
        // shutdown closes idle HTTP/1.1 connections at once, resetting that request. A short
        // linger lets such requests be read (and answered) before keep-alive is switched off.
        let linger = LINGER.min(options.shutdown_grace_period);
        let drained = async {
            tokio::time::sleep(linger).await;
            let _ = shutdown.send(true);
            shutdown.closed().await;
        };
        tokio::select! {
            () = drained => info!("all connections drained"),
            Some(()) = stop.recv() => warn!("second stop signal: closing remaining connections now"),
            () = tokio::time::sleep(options.shutdown_grace_period) => {
                warn!(grace_period = ?options.shutdown_grace_period, "grace period over; closing remaining connections");
            }
        }
        watcher.abort();
        admin_server.stop();
        Ok(())
    }
}

/// `max_connections`, or fewer when the process may not open that many descriptors: the soft
/// `RLIMIT_NOFILE` is raised to the hard one first (as Go programs do), and
/// [`RESERVED_DESCRIPTORS`] stay for everything else, so that `accept` never fails for want of
/// a descriptor and a connection over the limit can always be accepted and closed.
fn fit_to_descriptor_limit(max_connections: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(current) = limit.current
        && limit.maximum.is_none_or(|maximum| current < maximum)
    {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    let Some(descriptors) = limit.current else {
        return max_connections;
    };
    let fits = descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    if (max_connections as u64) <= fits {
        return max_connections;
    }
    warn!(
        max_connections,
        descriptor_limit = descriptors,
        "--max-connections is more than the open-file limit allows; serving at most {fits} \
         connections (raise the limit, ulimit -n, or lower --max-connections)"
    );
    fits as usize
}
