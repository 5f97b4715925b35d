//! Forwarding authenticated requests to an upstream app (sidecar mode).
//!
//! Bodies stream both ways (nothing is buffered), `Upgrade` requests such as
//! WebSockets are tunnelled after the upstream answers 101, and the upstream
//! learns who the user is from a header the client can never forge.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{StatusCode, Version};
use hyper_util::rt::TokioIo;

use crate::auth::{AuthenticatedUser, X_FORWARDED_GROUPS, X_FORWARDED_SCOPES, X_REAL_IP};
use crate::config::{ConfigError, UpstreamSettings};
use crate::limit::{ClientAddress, ClientIpResolver};
use crate::metrics::RequestMetrics;
use crate::metrics::exposition::{UpstreamFailure, status_class};

mod pool;

/// Hop-by-hop headers (RFC 9110 §7.6.1): meaningful for one connection only,
/// never forwarded. `HTTP2-Settings` belongs to the `h2c` upgrade. A match on
/// the (lower-case) name: a `const` array of `HeaderName`s would be built and
/// dropped again for every header looked at.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            | "http2-settings"
    )
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The most bytes read from the upstream and not yet sent on, per
/// connection: enough for throughput, small enough that a hundred large
/// transfers at once stay a few MiB.
const UPSTREAM_READ_BUFFER: usize = 128 * 1024;

/// An upstream and the client that talks to it.
pub struct Proxy {
    pool: pool::Pool,
    settings: UpstreamSettings,
    clients: ClientIpResolver,
    /// What `X-Forwarded-Proto` says when no trusted proxy already said it.
    scheme: &'static str,
    /// Times the upstream's answers.
    metrics: Arc<RequestMetrics>,
    /// The API-key header, dropped with `Authorization` unless forwarded.
    api_key_header: Option<http::HeaderName>,
    /// The first bytes of the names `identity_headers`, `untrusted_headers`
    /// and `user_header` cover: a name starting with any other byte (most
    /// of a request's, such as `host` or `accept`) is not matched against
    /// each pattern.
    claimed_first_bytes: [bool; 256],
}

/// See `Proxy::claimed_first_bytes`.
fn claimed_first_bytes(settings: &UpstreamSettings) -> [bool; 256] {
    let mut set = [false; 256];
    let patterns = settings
        .identity_headers
        .iter()
        .chain(settings.untrusted_headers.iter());
    let firsts =
        patterns
            .map(|p| p.first_byte())
            .chain([settings.user_header.as_str().bytes().next()]);
    for first in firsts {
        match first {
            Some(byte) => set[usize::from(byte)] = true,
            None => return [true; 256],
        }
    }
    set
}

impl Proxy {
    /// A proxy to `settings.url`. `tls` tells what scheme clients use to
    /// reach gatehouse; `clients` decides whose forwarding headers are kept;
    /// `metrics` times the upstream's answers.
    pub fn new(
        settings: UpstreamSettings,
        clients: ClientIpResolver,
        tls: bool,
        config: &std::path::Path,
        metrics: Arc<RequestMetrics>,
    ) -> Result<Self, ConfigError> {
        let roots = upstream_roots(&settings, config)?;
        let tls_config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::invalid(config, "[upstream] url", e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let pool = pool::Pool::new(
            &settings.url,
            tls_config,
            settings.connect_timeout,
            Duration::from_secs(60),
            // Reads from the upstream run at most this far ahead of the
            // client (hyper's default lets ~400 KiB pile up per transfer).
            UPSTREAM_READ_BUFFER,
        )
        .map_err(|e| ConfigError::invalid(config, "[upstream] url", e))?;
        Ok(Self {
            claimed_first_bytes: claimed_first_bytes(&settings),
            pool,
            settings,
            clients,
            scheme: if tls { "https" } else { "http" },
            metrics,
            api_key_header: None,
        })
    }

    /// Drops `header` (the API-key header) with `Authorization`.
    pub fn with_api_key_header(mut self, header: Option<http::HeaderName>) -> Self {
        self.api_key_header = header;
        self
    }

    /// The upstream request's URI, in origin form: the upstream's path
    /// prefix, then the request's (canonical) path and its query. Built from
    /// `path()` rather than the raw path-and-query, which for
    /// `GET http://host?x` or an HTTP/2 `:path` of `?x` does not start with
    /// the path that was checked.
    fn target(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let prefix = self.settings.url.path().trim_end_matches('/');
        // With no prefix, a path-and-query that starts with the path is
        // already `{path}?{query}`: reused as it is (a cheap clone), not
        // formatted and parsed again.
        if prefix.is_empty()
            && let Some(path_and_query) = uri.path_and_query()
            && path_and_query.as_str().starts_with('/')
        {
            return Ok(Uri::from(path_and_query.clone()));
        }
        let path = uri.path();
        let path = if path.starts_with('/') { path } else { "/" };
        let target = match uri.query() {
            Some(query) => format!("{prefix}{path}?{query}"),
            None => format!("{prefix}{path}"),
        };
        Ok(Uri::from(target.parse::<PathAndQuery>()?))
    }

    fn prepare(&self, req: &mut Request, upgrade: Option<HeaderValue>) -> Result<(), http::Error> {
        let uri = self.target(req.uri())?;
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip());
        let user = req.extensions().get::<AuthenticatedUser>().cloned();
        let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let trusted = peer.is_some_and(|p| self.clients.is_trusted(p));
        let client = req
            .extensions()
            .get::<ClientAddress>()
            .map(|c| c.0)
            .or_else(|| peer.map(|p| self.clients.resolve(p, req.headers())));
        let headers = req.headers_mut();
        // Everything that goes, found in one pass over the names present
        // and removed by name only when there: a removal by name hashes it,
        // and most requests carry none of these but `Authorization`.
        let named = connection_named(headers);
        let credentials_go = !self.settings.forward_authorization;
        remove_where(headers, |name| {
            is_hop_by_hop(name)
                || named.contains(name)
                || self.is_client_claim(name, trusted)
                || (credentials_go
                    && (name == header::AUTHORIZATION || self.api_key_header.as_ref() == Some(name)))
                // Set by gatehouse alone: a client's own are dropped.
                || name == X_FORWARDED_SCOPES
                || name == X_FORWARDED_GROUPS
                || name == header::FORWARDED
                // From a trusted proxy the list is extended, below.
                || (!trusted && name == X_FORWARDED_FOR)
        });
        if let Some(scopes) = user
            .as_ref()
            .and_then(|u| u.scopes())
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(X_FORWARDED_SCOPES, scopes);
        }
        if let Some(groups) = user
            .as_ref()
            .filter(|u| !u.groups().is_empty())
            .map(|u| {
                u.groups()
                    .iter()
                    .map(|g| &**g)
                    .collect::<Vec<&str>>()
                    .join(",")
            })
            .and_then(|g| HeaderValue::from_str(&g).ok())
        {
            headers.insert(X_FORWARDED_GROUPS, groups);
        }
        if let Some(user) = user.and_then(|u| HeaderValue::from_str(u.name()).ok()) {
            headers.insert(self.settings.user_header.clone(), user);
        }
        self.set_forwarded(headers, peer, trusted, original_host.clone());
        match client.and_then(ip_value) {
            Some(client) => headers.insert(&X_REAL_IP, client),
            None => headers.remove(&X_REAL_IP),
        };
        if let Some(protocol) = upgrade {
            headers.insert(header::UPGRADE, protocol);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        // The client's Host was checked by the request guard already.
        match original_host {
            Some(host) if self.settings.preserve_host => headers.insert(header::HOST, host),
            _ => headers.insert(header::HOST, self.pool.host().clone()),
        };
        *req.uri_mut() = uri;
        // The upstream connection is HTTP/1.1 whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        Ok(())
    }

    /// Whether `name` is something the client may not claim about itself:
    /// any header that reads as one gatehouse sets once `_` is taken for `-`
    /// (CGI, WSGI, PHP and Rails all do that), every header with `_` unless
    /// allowed, the `identity_headers` from everyone, and, from a peer that
    /// is not a trusted proxy, the `untrusted_headers`.
    fn is_client_claim(&self, name: &HeaderName, trusted: bool) -> bool {
        let key_header = self.api_key_header.as_ref().map_or("", HeaderName::as_str);
        let ours = [
            self.settings.user_header.as_str(),
            key_header,
            "x-forwarded-scopes",
            "x-forwarded-groups",
            // Method overrides: a POST must not become a DELETE behind the
            // access rules' back (Express, Symfony read these).
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "forwarded",
        ];
        let settings = &self.settings;
        let text = name.as_str();
        if text.contains('_') {
            if !settings.underscores_in_headers {
                return true;
            }
            let read_as = text.replace('_', "-");
            if ours.iter().any(|o| o.eq_ignore_ascii_case(&read_as)) {
                return true;
            }
        }
        let first = text.bytes().next().map_or(0, usize::from);
        self.claimed_first_bytes[first]
            && (*name == settings.user_header
                || settings.identity_headers.iter().any(|p| p.matches(name))
                || (!trusted && settings.untrusted_headers.iter().any(|p| p.matches(name))))
    }

    /// `X-Forwarded-For/-Proto/-Host`: extended when the peer is a trusted
    /// proxy, otherwise replaced, so a client cannot plant an address (an
    /// untrusted peer's `X-Forwarded-For` and everyone's `Forwarded` are
    /// gone already).
    fn set_forwarded(
        &self,
        headers: &mut HeaderMap,
        peer: Option<IpAddr>,
        trusted: bool,
        host: Option<HeaderValue>,
    ) {
        let xff_name = X_FORWARDED_FOR;
        let forwarded_for = match (trusted, peer) {
            (true, Some(peer)) => {
                let earlier: Vec<&str> = headers
                    .get_all(&xff_name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                if earlier.is_empty() {
                    ip_value(peer)
                } else {
                    HeaderValue::from_str(&format!("{}, {peer}", earlier.join(", "))).ok()
                }
            }
            (_, Some(peer)) => ip_value(peer),
            (_, None) => None,
        };
        // An insert replaces every value the trusted proxy sent.
        match forwarded_for {
            Some(value) => {
                headers.insert(xff_name, value);
            }
            None if trusted => {
                headers.remove(&xff_name);
            }
            None => {}
        }
        let proto_name = X_FORWARDED_PROTO;
        let host_name = X_FORWARDED_HOST;
        if !trusted || !headers.contains_key(&proto_name) {
            headers.insert(proto_name, HeaderValue::from_static(self.scheme));
        }
        if !trusted || !headers.contains_key(&host_name) {
            match host {
                Some(host) => headers.insert(host_name, host),
                None => headers.remove(host_name),
            };
        }
    }
}

/// Roots for an https upstream: the configured CA file, or the webpki roots.
fn upstream_roots(
    settings: &UpstreamSettings,
    config: &std::path::Path,
) -> Result<rustls::RootCertStore, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match &settings.ca {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = crate::tls::read_certificates(path, config, "[upstream] ca")?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                let message = format!("{} holds no usable certificate", path.display());
                return Err(ConfigError::invalid(config, "[upstream] ca", message));
            }
        }
    }
    Ok(roots)
}

/// An address as a header value. IPv4, the common case, is written by
/// hand: the formatting machinery, twice per proxied request, was 3% of
/// its instructions.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            HeaderValue::from_bytes(&text[..len]).ok()
        }
        IpAddr::V6(_) => HeaderValue::from_str(&ip.to_string()).ok(),
    }
}

/// Removes hop-by-hop headers, including any named in `Connection`. One
/// pass over the names present, then a removal for each found: removing
/// all nine by name hashed each of them for every request and answer.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    remove_where(headers, |name| is_hop_by_hop(name) || named.contains(name));
}

/// The headers the `Connection` header names (hop-by-hop for this
/// connection only). Most messages name none: no allocation then.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// Removes every header whose name `doomed` picks: one pass over the names
/// present, then a removal (every value of the name) for each one found.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let found: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in found {
        headers.remove(name);
    }
}

/// The `Upgrade` protocol to tunnel, if any: only `websocket`, and only on
/// HTTP/1.1 with `Connection: upgrade`. Other upgrades (`h2c`, …) go on as
/// plain requests with the upgrade headers stripped: an upgraded connection
/// is a tunnel in which no later request is checked.
fn upgrade_protocol(req: &Request) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let wants = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let mut protocols = req.headers().get_all(header::UPGRADE).iter();
    match (wants, protocols.next(), protocols.next()) {
        (true, Some(protocol), None)
            if protocol
                .to_str()
                .is_ok_and(|p| p.trim().eq_ignore_ascii_case("websocket")) =>
        {
            Some(HeaderValue::from_static("websocket"))
        }
        _ => None,
    }
}

/// The proxy's own 502 or 504, marked as an upstream failure for the
/// request metrics.
fn error_response(status: StatusCode) -> Response {
    let body = match status {
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Timeout\n",
        _ => "502 Bad Gateway\n",
    };
    let mut response = (status, body).into_response();
    response.extensions_mut().insert(UpstreamFailure);
    response
}

/// An error and its sources, outermost first ("client error (Connect): tcp
/// connect error: Connection refused (os error 111)"), so a log line says
/// what actually went wrong, not only hyper's outermost wrapper. A source
/// whose text its wrapper already includes is skipped.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// The axum handler that forwards a request.
pub async fn forward(State(proxy): State<Arc<Proxy>>, mut req: Request) -> Response {
    let upgrade = upgrade_protocol(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    // The tunnel keeps the client connection's slots for as long as it lasts.
    let context = req
        .extensions()
        .get::<crate::server::ConnectionContext>()
        .cloned();
    if let Err(error) = proxy.prepare(&mut req, upgrade.clone()) {
        tracing::warn!(%error, "cannot build the upstream request");
        return error_response(StatusCode::BAD_GATEWAY);
    }
    // For the failure lines only: a clone shares the URI's bytes, where the
    // path as a `String` was an allocation per request.
    let target = req.uri().clone();
    let path = target.path();
    let sent = std::time::Instant::now();
    let mut response = match tokio::time::timeout(proxy.settings.timeout, proxy.pool.send(req))
        .await
    {
        Ok(Ok(response)) => {
            proxy
                .metrics
                .record_upstream(status_class(response.status()), sent.elapsed());
            response
        }
        Ok(Err(error)) => {
            proxy.metrics.record_upstream("error", sent.elapsed());
            let cause = error_chain(&error);
            tracing::warn!(upstream = %proxy.settings.url, path, error = %cause, "upstream request failed");
            return error_response(StatusCode::BAD_GATEWAY);
        }
        Err(_) => {
            proxy.metrics.record_upstream("timeout", sent.elapsed());
            tracing::warn!(upstream = %proxy.settings.url, path, timeout = ?proxy.settings.timeout, "upstream did not answer in time");
            return error_response(StatusCode::GATEWAY_TIMEOUT);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none() {
        // Nothing asked to switch: a 101 now would turn the client's
        // connection into an unchecked tunnel.
        tracing::warn!(upstream = %proxy.settings.url, path, "upstream switched protocols unasked");
        return error_response(StatusCode::BAD_GATEWAY);
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let idle = proxy.settings.tunnel_idle_timeout;
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    crate::tunnel::run(TokioIo::new(client), TokioIo::new(upstream), idle, context)
                        .await;
                }
                Err(error) => tracing::warn!(%error, "upgrade failed"),
            }
        });
        let (mut parts, _) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = upgrade {
            parts.headers.insert(header::UPGRADE, protocol);
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        let mut addresses: Vec<IpAddr> = ["::1", "2001:db8::7", "::ffff:10.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        for a in [0u8, 1, 9, 10, 99, 100, 109, 110, 199, 200, 255] {
            addresses.push(IpAddr::from([a, 255 - a, a / 2, 7]));
        }
        for address in addresses {
            assert_eq!(ip_value(address).unwrap(), address.to_string().as_str());
        }
    }
}
