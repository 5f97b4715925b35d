//! An upgraded connection (WebSocket) between a client and the upstream:
//! bytes copied both ways until either side closes, the tunnel has been
//! idle for too long, or the server shuts down. The tunnel holds its
//! client connection's slot ([`ConnectionContext`]) for as long as it
//! lasts, so upgrades count against `max_connections` and the per-address
//! cap.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::io_watch::{Clock, ReadTracked};
use crate::server::ConnectionContext;

/// Copies between `client` and `upstream` until one closes, nothing moves
/// for `idle`, or `context` says the server is shutting down.
pub(crate) async fn run<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    context: Option<ConnectionContext>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let last = Clock::new();
    let mut client = ReadTracked::new(client, Arc::clone(&last));
    let mut upstream = ReadTracked::new(upstream, Arc::clone(&last));
    let mut shutdown = context.as_ref().map(|c| c.shutdown.clone());
    let stopping = async {
        match shutdown.as_mut() {
            Some(rx) => {
                let _ = rx.wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    };
    let idle_out = async {
        let check = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::time::sleep(check).await;
            if last.since() >= idle {
                return;
            }
        }
    };
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(error) = result {
                tracing::debug!(%error, "upgraded connection ended");
            }
        }
        () = idle_out => tracing::debug!(?idle, "upgraded connection idle: closed"),
        () = stopping => tracing::debug!("upgraded connection closed for shutdown"),
    }
    drop(context);
}
