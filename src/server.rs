//! Bind, accept, TLS, serve HTTP/1.1 and HTTP/2, and shut down gracefully.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::Limits;

/// A bound listener with the app it serves.
pub struct Server {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    open_connections: Arc<AtomicI64>,
}

impl Server {
    /// Binds `listen`; with `tls`, every connection must complete a TLS
    /// handshake first.
    pub async fn bind(
        listen: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
        app: Router,
        limits: Limits,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        Ok(Self {
            listener,
            tls: tls.map(TlsAcceptor::from),
            app,
            limits,
            open_connections: Arc::default(),
        })
    }

    /// Counts open connections into `gauge` (for metrics).
    pub fn with_connection_gauge(mut self, gauge: Arc<AtomicI64>) -> Self {
        self.open_connections = gauge;
        self
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight
    /// requests finish for up to the configured grace period, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper starts the header timer as soon as it waits for a request,
        // so it also closes idle HTTP/1.1 keep-alive connections.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_buf_size(self.limits.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(self.limits.h2_keep_alive)
            .keep_alive_timeout(self.limits.h2_keep_alive);
        let connections = Arc::new(Semaphore::new(self.limits.max_connections));
        let handshake_timeout = self.limits.tls_handshake_timeout;

        tokio::pin!(shutdown);
        loop {
            // At the cap, stop accepting: new connections wait in the
            // kernel's backlog instead of costing memory here.
            let permit = tokio::select! {
                permit = Arc::clone(&connections).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = &mut shutdown => break,
            };
            let (tcp, peer) = tokio::select! {
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
            let _ = tcp.set_nodelay(true);
            let app = self.app.clone();
            let tls = self.tls.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let open = Arc::clone(&self.open_connections);
            open.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _permit = permit;
                let _open = OpenConnection(open);
                match tls {
                    None => serve_connection(&builder, watcher, tcp, peer, app).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                serve_connection(&builder, watcher, stream, peer, app).await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            });
        }
        drop(self.listener);
        tracing::info!("shutting down: waiting for in-flight requests");
        if tokio::time::timeout(self.limits.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.limits.shutdown_grace, "grace period over; closing remaining connections");
        }
    }
}

async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    io: I,
    peer: SocketAddr,
    app: Router,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = app.map_request(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    });
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// Decrements the open-connection gauge however the connection ends.
struct OpenConnection(Arc<AtomicI64>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed when
/// this is called, not when the future is first polled, so a signal that
/// arrives while the server is still starting is not lost (nor does it kill
/// the process with the default action). Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                () = wait_for(term.as_mut()) => {}
                () = wait_for(int.as_mut()) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(unix)]
async fn wait_for(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
