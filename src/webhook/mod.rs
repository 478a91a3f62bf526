//! The webhook server: HTTPS for AdmissionReviews (h2 and HTTP/1.1), plain HTTP for health and
//! metrics. [`Server::bind`] listens and reports the bound addresses; [`Server::run`] serves
//! until shutdown, then drains in-flight requests. Paths map to endpoints in a [`Router`].

pub mod admin;
pub mod cluster;
pub mod metrics;
pub mod pods;
pub mod review;
pub mod router;
pub mod secrets;
pub mod tls;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use router::{BodyLimits, Router};
use tls::{Reload, ReloadingResolver};

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
        })
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
        } = self;
        let tls_config = resolver
            .server_config()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let acceptor = TlsAcceptor::from(Arc::new(tls_config));
        let paths: Vec<_> = router.paths().collect();
        info!(address = %bound.webhook, paths = ?paths, "webhook listening (HTTPS)");
        info!(address = %bound.admin, "admin listening (HTTP: /healthz /readyz /metrics)");

        let watcher = {
            let router = router.clone();
            tokio::spawn(tls::watch(
                resolver.clone(),
                options.tls_reload_interval,
                move |result| match result {
                    Ok(Reload::Reloaded) => {
                        router.metrics().observe_reload(true);
                        info!("TLS certificate reloaded");
                    }
                    Ok(Reload::Unchanged) => {}
                    Err(error) => {
                        router.metrics().observe_reload(false);
                        warn!(%error, "TLS certificate reload failed; still serving the previous one");
                    }
                },
            ))
        };
        let admin_server = tokio::spawn(admin::serve(admin, router.clone()));

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
        router.set_ready(true);

        let handshake_timeout = options.header_read_timeout;
        let serve = |stream: tokio::net::TcpStream, peer: SocketAddr| {
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let router = router.clone();
            let builder = builder.clone();
            // Taken before the handshake: the drain waits for connections still shaking hands.
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls =
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
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
                    let router = router.clone();
                    async move { Ok::<_, Infallible>(router.handle(request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(error) = watcher.watch(connection.into_owned()).await {
                    debug!(%peer, %error, "connection ended with an error");
                }
            });
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
        // A connection whose first request is still unread counts as idle, and a graceful
        // shutdown closes idle HTTP/1.1 connections at once, resetting that request. A short
        // linger lets such requests be read (and answered) before keep-alive is switched off.
        let linger = LINGER.min(options.shutdown_grace_period);
        let drained = async {
            tokio::time::sleep(linger).await;
            graceful.shutdown().await;
        };
        tokio::select! {
            () = drained => info!("all connections drained"),
            Some(()) = stop.recv() => warn!("second stop signal: closing remaining connections now"),
            () = tokio::time::sleep(options.shutdown_grace_period) => {
                warn!(grace_period = ?options.shutdown_grace_period, "grace period over; closing remaining connections");
            }
        }
        watcher.abort();
        admin_server.abort();
        Ok(())
    }
}
