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

/// At most this many idle connections are kept (nginx's `keepalive`
/// directive, here a constant). Connections whose answer is still
/// streaming are in the pool too but do not count: they are bounded by
/// the requests in flight, and counting them would let a few long streams
/// turn reuse off for everyone.
const MAX_IDLE: usize = 128;

/// How many pooled connections a request is tried on, each found closed by
/// the upstream before the request was written, before a new connection.
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

/// A pooled connection, and when its last exchange's answer came (its
/// body may still be streaming: `is_ready` tells).
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
        // `Host` leaves out the scheme's default port, as clients write it
        // (an upstream matching virtual hosts or signing requests expects
        // `app`, not `app:80`). The config refuses user info in the URL.
        let default_port = if https { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => authority.as_str(),
            _ => authority.host(),
        };
        let host = HeaderValue::from_str(host).map_err(|e| e.to_string())?;
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
        let mut pooled_tries = 0;
        loop {
            // After RETRIES pooled connections turned out closed, a new one.
            let pooled = if pooled_tries < RETRIES {
                self.checkout()
            } else {
                None
            };
            let (mut sender, pooled) = match pooled {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            pooled_tries += usize::from(pooled);
            match sender.try_send_request(req).await {
                Ok(response) => {
                    self.put_back(sender);
                    return Ok(response);
                }
                Err(mut failed) => match failed.take_message() {
                    // Never written: a pooled connection the upstream had
                    // closed. The request goes on another connection.
                    Some(unsent) if pooled => req = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
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
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
        if idle.len() > MAX_IDLE {
            // Over the bound: closed ones go, then the least recently used
            // ready ones beyond MAX_IDLE. Busy ones stay.
            idle.retain(|c| !c.sender.is_closed());
            let mut ready = idle.iter().filter(|c| c.sender.is_ready()).count();
            while ready > MAX_IDLE {
                match idle.iter().position(|c| c.sender.is_ready()) {
                    Some(oldest) => {
                        idle.remove(oldest);
                        ready -= 1;
                    }
                    None => break,
                }
            }
        }
    }

    /// A TCP connection to the first of the target's addresses that answers:
    /// each address in turn gets an equal share of what is left of the
    /// connect timeout (as hyper-util's connector did), so a blackholed
    /// IPv6 address does not use it all before IPv4 is tried.
    async fn connect_tcp(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<TcpStream, UpstreamError> {
        let target = &self.target;
        let failed = |source| UpstreamError::Connect {
            target: target.address.clone(),
            source,
        };
        let addresses: Vec<std::net::SocketAddr> =
            tokio::time::timeout_at(deadline, tokio::net::lookup_host(target.address.as_str()))
                .await
                .map_err(|_| UpstreamError::ConnectTimeout(target.address.clone()))?
                .map_err(failed)?
                .collect();
        let mut last_error = None;
        for (i, address) in addresses.iter().enumerate() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let share = left / u32::try_from(addresses.len() - i).unwrap_or(u32::MAX);
            match tokio::time::timeout(share, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(error)) => last_error = Some(error),
                Err(_) => {}
            }
        }
        match last_error {
            Some(error) => Err(failed(error)),
            None if addresses.is_empty() => Err(failed(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the name has no address",
            ))),
            None => Err(UpstreamError::ConnectTimeout(target.address.clone())),
        }
    }

    /// A new connection, its HTTP/1.1 task spawned (with upgrades, for
    /// WebSockets).
    async fn connect(&self) -> Result<SendRequest<Body>, UpstreamError> {
        let target = &self.target;
        let timeout = || UpstreamError::ConnectTimeout(target.address.clone());
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let stream = self.connect_tcp(deadline).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn host_for(url: &str) -> String {
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let pool = Pool::new(
            &url.parse().unwrap(),
            tls,
            Duration::from_secs(1),
            Duration::from_secs(60),
            8192,
        )
        .unwrap();
        pool.host().to_str().unwrap().to_owned()
    }

    #[test]
    fn host_leaves_out_the_default_port_only() {
        assert_eq!(host_for("http://app:80"), "app");
        assert_eq!(host_for("http://app"), "app");
        assert_eq!(host_for("http://app:8080"), "app:8080");
        assert_eq!(host_for("https://app:443/prefix"), "app");
        assert_eq!(host_for("https://app:80"), "app:80");
        assert_eq!(host_for("http://[::1]:9000"), "[::1]:9000");
        assert_eq!(host_for("http://[::1]"), "[::1]");
    }
}
