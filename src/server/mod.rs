//! Bind, accept, TLS, serve HTTP/1.1 and HTTP/2, and shut down gracefully.
//!
//! Every connection holds a slot: one of `max_connections`, and one of its
//! address's `max_connections_per_ip` (trusted proxies are exempt). A
//! WebSocket tunnel keeps its connection's slot until it ends, so upgrades
//! cannot escape the caps. Each connection has a watchdog ([`connection`])
//! that closes it when silent, idle or stalled, whatever state it is in.

mod activity;
mod connection;
mod listener;
mod per_ip;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::limit::{ClientIpResolver, ip_key};
pub use crate::metrics::ConnectionCounters;
pub use listener::Listener;

/// A connection's hold on the server: its slots and the shutdown signal.
/// The proxy keeps a clone for the life of an upgraded tunnel.
#[derive(Clone)]
pub struct ConnectionContext {
    _slot: Arc<Slot>,
    /// Turns `true` when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// Accepted on a Unix socket: each request gets the
    /// [`UnixPeer`](crate::limit::UnixPeer) marker.
    via_unix: bool,
}

/// What a connection holds while open; released when the last holder (the
/// connection, or its tunnel) lets go.
struct Slot {
    _global: OwnedSemaphorePermit,
    _per_ip: Option<per_ip::IpSlot>,
    _open: OpenConnection,
}

/// What a listener serves: any cloneable service of axum requests, boxed
/// once (an axum `Router`, or the gate's stack of layers around one).
pub type App = tower::util::BoxCloneSyncService<
    http::Request<axum::body::Body>,
    axum::response::Response,
    std::convert::Infallible,
>;

/// A bound listener with the app it serves.
pub struct Server {
    listener: Listener,
    tls: Option<TlsAcceptor>,
    app: App,
    limits: Limits,
    exempt: ClientIpResolver,
    counters: Arc<ConnectionCounters>,
}

impl Server {
    /// Serves `app` on an already-bound listener (`App::new(router)` for
    /// an axum `Router`): a `TcpListener`, or a [`Listener`]. On a Unix
    /// socket the peer is `0.0.0.0:0` with a [`UnixPeer`](crate::limit::UnixPeer)
    /// marker beside it: trusted as a proxy, exempt from the per-address cap.
    pub fn from_listener(
        listener: impl Into<Listener>,
        tls: Option<Arc<ServerConfig>>,
        app: App,
        limits: Limits,
    ) -> Self {
        Self {
            listener: listener.into(),
            tls: tls.map(TlsAcceptor::from),
            app,
            limits,
            exempt: ClientIpResolver::default(),
            counters: Arc::default(),
        }
    }

    /// Counts connections into `counters` (for metrics).
    pub fn with_counters(mut self, counters: Arc<ConnectionCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Exempts these peers (trusted proxies) from the per-address cap: all
    /// of their clients arrive from their address.
    pub fn with_trusted_proxies(mut self, proxies: ClientIpResolver) -> Self {
        self.exempt = proxies;
        self
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish for up to the configured grace period, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let max = self.limits.max_connections;
        let connections = Arc::new(Semaphore::new(max));
        let per_ip = Arc::new(per_ip::PerIp::default());
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(connection::Shared {
            app: self.app,
            tls: self.tls,
            limits: self.limits.clone(),
        });
        let mut tasks = JoinSet::new();

        tokio::pin!(shutdown);
        loop {
            while tasks.try_join_next().is_some() {}
            // At the cap, stop accepting: new connections wait in the
            // kernel's backlog instead of costing memory here.
            let permit = tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let (peer, via_unix) = match &accepted {
                listener::Accepted::Tcp(_, peer) => (*peer, false),
                listener::Accepted::Unix(_) => {
                    (SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)), true)
                }
            };
            let per_ip_slot = if via_unix || self.exempt.is_trusted(peer.ip()) {
                None
            } else {
                match per_ip.try_take(ip_key(peer.ip()), self.limits.max_connections_per_ip) {
                    Some(slot) => Some(slot),
                    None => {
                        self.counters.refused_per_ip.inc();
                        tracing::debug!(%peer, "too many connections from this address: closed");
                        continue;
                    }
                }
            };
            self.counters.open.inc();
            let context = ConnectionContext {
                _slot: Arc::new(Slot {
                    _global: permit,
                    _per_ip: per_ip_slot,
                    _open: OpenConnection(Arc::clone(&self.counters)),
                }),
                shutdown: stopped.clone(),
                via_unix,
            };
            let shared = Arc::clone(&shared);
            match accepted {
                listener::Accepted::Tcp(tcp, peer) => {
                    let _ = tcp.set_nodelay(true);
                    tasks.spawn(connection::serve(shared, tcp, peer, context));
                }
                listener::Accepted::Unix(stream) => {
                    tasks.spawn(connection::serve_unix(shared, stream, peer, context));
                }
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: waiting for in-flight requests");
        let _ = stop.send(true);
        // Every connection and tunnel holds a permit until it ends: when all
        // are back, everything has finished.
        let all = u32::try_from(max).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.limits.shutdown_grace, connections.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.limits.shutdown_grace, "grace period over; closing remaining connections");
            tasks.abort_all();
        }
    }
}

/// Decrements the open-connection gauge however the connection ends.
struct OpenConnection(Arc<ConnectionCounters>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}
