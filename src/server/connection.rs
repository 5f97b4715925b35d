//! Serving one accepted connection: TLS, choosing the protocol (by ALPN, or
//! by the first bytes), HTTP/1.1 or HTTP/2, and the watchdog that closes it
//! when it is silent, idle or stalled, in every state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::ConnectionContext;
use super::activity::{Activity, TrackedBody, Verdict};
use crate::config::Limits;
use crate::io_watch::{Prefixed, ReadTracked};

/// The HTTP/2 connection preface a client sends first.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// Everything a connection task needs, shared by all of them.
pub(super) struct Shared {
    pub(super) app: super::App,
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) limits: Limits,
}

/// Serves one connection to its end.
pub(super) async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    context: ConnectionContext,
) {
    let activity = Activity::new();
    let limits = &shared.limits;
    match &shared.tls {
        None => {
            let tcp = ReadTracked::new(tcp, activity.read_clock());
            serve_sniffed(&shared, tcp, peer, context, activity).await
        }
        Some(acceptor) => {
            // One deadline for the first byte and the whole handshake.
            let deadline = tokio::time::Instant::now() + limits.tls_handshake_timeout;
            let mut first = [0u8; 1];
            match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
                Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
                    return refuse_plain_http(tcp, peer, limits).await;
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "connection failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            }
            let tcp = ReadTracked::new(tcp, activity.read_clock());
            serve_tls(&shared, acceptor, tcp, deadline, peer, context, activity).await
        }
    }
}

/// Serves one connection accepted on a Unix socket (`peer` is the stand-in
/// address such peers share): as [`serve`], without the plain-HTTP check
/// before a TLS handshake (it needs a TCP peek, and a local proxy knows
/// what it speaks).
pub(super) async fn serve_unix(
    shared: Arc<Shared>,
    stream: UnixStream,
    peer: SocketAddr,
    context: ConnectionContext,
) {
    let activity = Activity::new();
    let stream = ReadTracked::new(stream, activity.read_clock());
    match &shared.tls {
        None => serve_sniffed(&shared, stream, peer, context, activity).await,
        Some(acceptor) => {
            let deadline = tokio::time::Instant::now() + shared.limits.tls_handshake_timeout;
            serve_tls(&shared, acceptor, stream, deadline, peer, context, activity).await
        }
    }
}

/// The TLS handshake (by `deadline`), then the protocol ALPN chose, or
/// the first bytes tell.
async fn serve_tls<I>(
    shared: &Shared,
    acceptor: &TlsAcceptor,
    io: I,
    deadline: tokio::time::Instant,
    peer: SocketAddr,
    context: ConnectionContext,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(io)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    match alpn.as_deref() {
        Some(b"h2") => drive(shared, stream, Protocol::Http2, peer, context, activity).await,
        Some(b"http/1.1") => drive(shared, stream, Protocol::Http1, peer, context, activity).await,
        _ => serve_sniffed(shared, stream, peer, context, activity).await,
    }
}

/// What a plain-HTTP client on the TLS port is told (nginx does the same),
/// instead of TLS garbage that curl reports as "HTTP/0.9".
const PLAIN_HTTP_BODY: &str = "This port speaks HTTPS: use an https:// URL.\n";

/// A client spoke plain HTTP (its first byte is a method's capital letter,
/// where a TLS ClientHello starts with 0x16): read its request head, within
/// the header timeout and size limit, so that closing does not reset the
/// connection before the answer is read, then answer 400 and close.
async fn refuse_plain_http(mut tcp: TcpStream, peer: SocketAddr, limits: &Limits) {
    use tokio::io::AsyncWriteExt as _;
    tracing::debug!(%peer, "plain HTTP on the TLS port: answered 400");
    // Only the last bytes are kept, to spot the blank line that ends the
    // head (`\r\n\r\n`, or `\n\n` from bare-LF clients) across reads.
    let _ = tokio::time::timeout(limits.header_read_timeout, async {
        let mut chunk = [0u8; 1024];
        let mut tail = [0u8; 3];
        let mut read = 0usize;
        while read < limits.max_header_bytes {
            let n = match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            read += n;
            let mut window = tail.to_vec();
            window.extend_from_slice(&chunk[..n]);
            if window.windows(4).any(|w| w == b"\r\n\r\n")
                || window.windows(2).any(|w| w == b"\n\n")
            {
                break;
            }
            let keep = window.len().saturating_sub(3);
            tail.copy_from_slice(&window[keep..]);
        }
    })
    .await;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    let _ = tokio::time::timeout(limits.send_timeout, async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await
    })
    .await;
}

/// No ALPN: the first bytes tell. They are read (at most the 24 of the
/// HTTP/2 preface) within `header_read_timeout`, so a client that connects
/// and says nothing is closed then.
async fn serve_sniffed<I>(
    shared: &Shared,
    mut io: I,
    peer: SocketAddr,
    context: ConnectionContext,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut seen = Vec::with_capacity(PREFACE.len());
    let sniffed = tokio::time::timeout(shared.limits.header_read_timeout, async {
        let mut chunk = [0u8; PREFACE.len()];
        loop {
            let want = PREFACE.len() - seen.len();
            let n = io.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            seen.extend_from_slice(&chunk[..n]);
            if !PREFACE.starts_with(&seen) {
                return Ok(Some(Protocol::Http1));
            }
            if seen.len() == PREFACE.len() {
                return Ok(Some(Protocol::Http2));
            }
        }
    })
    .await;
    let protocol = match sniffed {
        Ok(Ok(Some(protocol))) => protocol,
        Ok(Ok(None)) => return,
        Ok(Err(error)) => {
            return tracing::debug!(%peer, %error, "connection failed before a request");
        }
        Err(_) => return tracing::debug!(%peer, "no request within the header timeout: closed"),
    };
    drive(
        shared,
        Prefixed::new(seen, io),
        protocol,
        peer,
        context,
        activity,
    )
    .await;
}

/// Runs the protocol on `io` under the watchdog.
async fn drive<I>(
    shared: &Shared,
    io: I,
    protocol: Protocol,
    peer: SocketAddr,
    context: ConnectionContext,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &shared.limits;
    let mut shutdown = context.shutdown.clone();
    // The connection's memo of the last Basic credential the cache vouched
    // for (auth/memo.rs); the watchdog wipes it once past its time.
    let memo = crate::auth::CredentialMemo::default();
    let service = {
        let app = shared.app.clone();
        let activity = Arc::clone(&activity);
        let memo = memo.clone();
        hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if context.via_unix {
                req.extensions_mut().insert(crate::limit::UnixPeer);
            }
            // Only an upgrade can become a tunnel, the one thing that holds
            // the connection's context past its request (proxy/mod.rs):
            // other requests skip an insert, and the extension map stays
            // small enough not to grow for the frame's ClientAddress.
            if req.headers().contains_key(http::header::UPGRADE) {
                req.extensions_mut().insert(context.clone());
            }
            req.extensions_mut().insert(memo.clone());
            let guard = activity.start_request();
            let head = req.method() == http::Method::HEAD;
            let response = app.clone().oneshot(req.map(axum::body::Body::new));
            async move {
                let mut response = response.await?;
                if head {
                    strip_body(&mut response);
                }
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| TrackedBody::new(body, guard)),
                )
            }
        })
    };
    let io = TokioIo::new(io);
    match protocol {
        Protocol::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            // hyper starts this timer whenever it waits for a request head,
            // so it also closes idle keep-alive connections.
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            let connection = builder.serve_connection(io, service).with_upgrades();
            watch_over(
                connection,
                |c| c.graceful_shutdown(),
                &activity,
                limits,
                &mut shutdown,
                peer,
                &memo,
            )
            .await;
        }
        Protocol::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .max_concurrent_streams(limits.h2_max_concurrent_streams)
                .max_send_buf_size(limits.h2_max_send_buffer)
                .keep_alive_interval(limits.h2_keep_alive)
                .keep_alive_timeout(limits.h2_keep_alive);
            let connection = builder.serve_connection(io, service);
            watch_over(
                connection,
                |c| c.graceful_shutdown(),
                &activity,
                limits,
                &mut shutdown,
                peer,
                &memo,
            )
            .await;
        }
    }
}

/// A response to `HEAD` carries no body, whichever layer made it (axum
/// strips bodies only for its own routes, and HTTP/2 would send one); its
/// `Content-Length` still says what a `GET` would get.
fn strip_body(response: &mut http::Response<axum::body::Body>) {
    use http_body::Body as _;
    if !response
        .headers()
        .contains_key(http::header::CONTENT_LENGTH)
        && let Some(length) = response.body().size_hint().exact()
    {
        response.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(length),
        );
    }
    *response.body_mut() = axum::body::Body::empty();
}

/// Polls `connection` to its end, closing it politely when it is idle or
/// the server shuts down (then dropping it if it does not end within
/// `send_timeout`, or the shutdown grace), and at once when a response
/// has been stalled on the client for `send_timeout`.
async fn watch_over<C>(
    connection: C,
    close_politely: impl Fn(std::pin::Pin<&mut C>),
    activity: &Activity,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
    peer: SocketAddr,
    memo: &crate::auth::CredentialMemo,
) where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    let tick = [
        limits.header_read_timeout,
        limits.idle_timeout,
        limits.send_timeout,
    ]
    .into_iter()
    .min()
    .unwrap_or(Duration::from_secs(1))
    .div_f64(4.0)
    .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut shutting_down = *shutdown.borrow();
    // `None` (no deadline) if the grace is too long to add to now.
    let after = |grace: Duration| tokio::time::Instant::now().checked_add(grace);
    if shutting_down {
        close_politely(connection.as_mut());
        deadline = after(limits.shutdown_grace);
    }
    let mut closing = shutting_down;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = ticks.tick() => {
                memo.expire(std::time::Instant::now());
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    return tracing::debug!(%peer, "connection did not close in time: dropped");
                }
                match activity.verdict(limits.header_read_timeout, limits.idle_timeout, limits.send_timeout) {
                    Verdict::Fine => {}
                    Verdict::Stalled => {
                        return tracing::debug!(%peer, "client stopped reading its response: closed");
                    }
                    Verdict::Idle if !closing => {
                        tracing::debug!(%peer, "idle connection: closing");
                        close_politely(connection.as_mut());
                        // Whatever is still buffered gets the time any
                        // response gets to be taken; a connection that never
                        // made a request has nothing to finish (and an
                        // HTTP/2 one still waiting for its preface may not
                        // notice the polite close at all).
                        closing = true;
                        deadline = after(if activity.started() {
                            limits.send_timeout
                        } else {
                            Duration::from_secs(1)
                        });
                    }
                    Verdict::Idle => {}
                }
            }
            changed = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if changed.is_ok() {
                    close_politely(connection.as_mut());
                    closing = true;
                    deadline = after(limits.shutdown_grace);
                }
            }
        }
    }
}
