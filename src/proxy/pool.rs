//! The upstream's connections: HTTP/1.1 on hyper's connection-level client
//! (`hyper::client::conn::http1`), kept open between requests in a small
//! last-in-first-out pool.
//!
//! hyper-util's general-purpose client did the same job at about 11,000
//! instructions per request (a keyed pool behind a hashed scheme and
//! authority, a connector service, URI rewriting); with one upstream
//! there is nothing to key, so this pool is a mutex around a vector.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// At most this many idle connections are kept; more are closed when
/// their exchange ends (nginx's `keepalive` directive, here a constant).
const MAX_IDLE: usize = 128;

/// How often a request is tried again on a fresh connection when a pooled
/// one turned out closed before the request was written.
const RETRIES: usize = 2;

/// Why the upstream gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be made.
    #[error("cannot connect to {target}")]
    Connect {
        /// `host:port`.
        target: String,
        /// What connect said.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took longer than `connect_timeout`.
    #[error("connecting to {0} took longer than the connect timeout")]
    ConnectTimeout(String),
    /// The TLS handshake with an https upstream failed.
    #[error("TLS handshake with {target} failed")]
    Tls {
        /// `host:port`.
        target: String,
        /// What rustls said.
        #[source]
        source: std::io::Error,
    },
    /// HTTP/1.1 on the connection failed.
    #[error("HTTP exchange failed")]
    Http(#[from] hyper::Error),
}

/// Where the upstream is and how to talk to it.
struct Target {
    /// `host:port`, as connect and error messages take it.
    address: String,
    /// For an https upstream: the connector and the name its certificate
    /// must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// An idle connection and when it last finished an exchange.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// The pool of connections to one upstream.
pub struct Pool {
    target: Target,
    /// The upstream's own `Host` value (`host[:port]` from its URL).
    host: HeaderValue,
    idle: Mutex<Vec<Idle>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_buf_size: usize,
}

impl Pool {
    /// A pool for `url` (`http://` or `https://`, checked by the config),
    /// speaking TLS with `tls` to an https one.
    pub fn new(
        url: &Uri,
        tls: rustls::ClientConfig,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_buf_size: usize,
    ) -> Result<Self, String> {
        let authority = url.authority().ok_or("has no host")?;
        let https = url.scheme_str() == Some("https");
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        // An IPv6 literal is bracketed in a URL, not in connect or SNI.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let tls = if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| format!("`{host}` is not a name a certificate can carry"))?;
            let mut tls = tls;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some((TlsConnector::from(std::sync::Arc::new(tls)), name))
        } else {
            None
        };
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        Ok(Self {
            target: Target { address, tls },
            host,
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            idle_timeout,
            max_buf_size,
        })
    }

    /// The upstream's `Host` value, for requests that do not keep the
    /// client's.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or
    /// a new one, and returns the answer's head. The connection goes back
    /// to the pool at once: it takes the next request only once this
    /// answer's body has been read, which `is_ready` tells at checkout.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        for _ in 0..RETRIES {
            let (mut sender, pooled) = match self.checkout() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    self.put_back(sender);
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: a pooled connection the upstream had
                    // closed. The request goes on a fresh connection.
                    Some(unsent) if pooled => req = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
        let mut sender = self.connect().await?;
        let response = sender.send_request(req).await?;
        self.put_back(sender);
        Ok(response)
    }

    /// The most recently used idle connection that is ready for a request.
    /// Closed and stale ones are dropped; busy ones (an answer's body still
    /// streaming) stay.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let unusable = |c: &Idle| {
            c.sender.is_closed()
                || (c.sender.is_ready() && now.duration_since(c.since) >= self.idle_timeout)
        };
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // The least recently used, at the bottom, is the one that goes
        // stale: one look per checkout keeps the pool clean.
        if idle.first().is_some_and(unusable) {
            idle.remove(0);
        }
        while let Some(i) = idle
            .iter()
            .rposition(|c| c.sender.is_ready() || c.sender.is_closed())
        {
            let candidate = idle.remove(i);
            if !unusable(&candidate) {
                return Some(candidate.sender);
            }
        }
        None
    }

    fn put_back(&self, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// A new connection, its HTTP/1.1 task spawned (with upgrades, for
    /// WebSockets).
    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let target = &self.target;
        let connect = async {
            let stream = TcpStream::connect(&target.address)
                .await
                .map_err(|source| UpstreamError::Connect {
                    target: target.address.clone(),
                    source,
                })?;
            let _ = stream.set_nodelay(true);
            Ok::<_, UpstreamError>(stream)
        };
        let timeout = || UpstreamError::ConnectTimeout(target.address.clone());
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let stream = tokio::time::timeout_at(deadline, connect)
            .await
            .map_err(|_| timeout())??;
        let mut builder = Builder::new();
        builder.max_buf_size(self.max_buf_size);
        match &target.tls {
            None => {
                let (sender, connection) = builder.handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection.with_upgrades());
                Ok(sender)
            }
            Some((connector, name)) => {
                let stream =
                    tokio::time::timeout_at(deadline, connector.connect(name.clone(), stream))
                        .await
                        .map_err(|_| timeout())?
                        .map_err(|source| UpstreamError::Tls {
                            target: target.address.clone(),
                            source,
                        })?;
                let (sender, connection) = builder.handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection.with_upgrades());
                Ok(sender)
            }
        }
    }
}
