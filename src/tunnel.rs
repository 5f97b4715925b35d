//! An upgraded connection (WebSocket) between a client and the upstream:
//! bytes copied both ways until either side closes, the tunnel has been
//! idle for too long, or the server shuts down. The tunnel holds its
//! client connection's slot ([`ConnectionContext`]) for as long as it
//! lasts, so upgrades count against `max_connections` and the per-address
//! cap.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Touching::new(client, start, Arc::clone(&last));
    let mut upstream = Touching::new(upstream, start, Arc::clone(&last));
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
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
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

/// A stream that notes the time of every read that moved bytes.
struct Touching<I> {
    inner: I,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<I> Touching<I> {
    fn new(inner: I, start: Instant, last: Arc<AtomicU64>) -> Self {
        Self { inner, start, last }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Touching<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(now, Ordering::Relaxed);
        }
        poll
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Touching<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
