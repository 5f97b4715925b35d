//! Forward authentication: the decision nginx `auth_request`, Caddy
//! `forward_auth`, Traefik `ForwardAuth` and Envoy `ext_authz` (HTTP) ask
//! for before they let a request through.
//!
//! The proxy describes the original request in headers; that description
//! is read once, here, into a method and a path, and the request is then
//! decided by the layer's own pipeline exactly as if it had arrived
//! directly: public paths, limits, lockouts, every credential scheme.
//!
//! Where the original URL comes from: `X-Original-URL` (nginx/Authelia
//! convention), `X-Forwarded-Uri` (Traefik, Caddy), `X-Original-URI`
//! (nginx `$request_uri`), or the path after the decision prefix (Envoy);
//! the method from `X-Original-Method`, `X-Forwarded-Method`, or the
//! request's own. A proxy sets one of each and overwrites it; the others
//! it passes on as the client sent them. So exactly one URL header (and at
//! most one method header) may be present: a second one can only be the
//! client's, trying to describe another request, and is refused rather
//! than ranked.
//!
//! The path must arrive already in canonical form: the upstream will see
//! the path as the client sent it, and deciding on a cleaned-up form of a
//! path (`/admin/../public/x` as `/public/x`) would decide for a request
//! the upstream never receives. A non-canonical path is refused.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::header::{CACHE_CONTROL, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};

use super::{Decision, Screened, Shared, UserWanted, X_FORWARDED_GROUPS, X_FORWARDED_SCOPES};
use crate::config::{ForwardAuthClientHeader, ForwardAuthStyle};
use crate::limit::{ClientAddress, UnixPeer};
use crate::metrics::Outcome;

/// Forward authentication as the layer holds it.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// Decisions are asked on this path and below it.
    pub path: String,
    /// How the proxy treats answers.
    pub style: ForwardAuthStyle,
    /// The headers an allowed answer names the user in.
    pub identity_headers: Vec<HeaderName>,
    /// Which header from a trusted proxy names the client.
    pub client_header: ForwardAuthClientHeader,
    /// Decisions are answered only on requests marked with
    /// [`ForwardAuthListener`] (a listener of their own).
    pub separate_listener: bool,
}

/// Marks requests from the separate forward-auth listener (the server puts
/// it in their extensions).
#[derive(Debug, Clone, Copy)]
pub struct ForwardAuthListener;

/// The request a decision was about (its canonical path, without the
/// query), in the decision response's extensions: the access log names it
/// beside the decision request's own path.
#[derive(Debug, Clone)]
pub struct DecidedRequest {
    /// The original method.
    pub method: http::Method,
    /// The original canonical path.
    pub path: String,
}

impl ForwardAuth {
    /// Whether the canonical `path` of `req` asks for a decision.
    pub(super) fn matches<B>(&self, req: &Request<B>) -> bool {
        let path = req.uri().path();
        let under = path == self.path
            || path
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        under
            && (!self.separate_listener || req.extensions().get::<ForwardAuthListener>().is_some())
    }
}

/// The original request, as the proxy described it.
struct Original {
    method: Method,
    /// Origin form: the canonical path and the query as sent.
    uri: http::Uri,
}

/// Why the original request could not be read.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("{0} appears more than once")]
    Ambiguous(&'static str),
    #[error("{0} cannot be read")]
    Malformed(&'static str),
    #[error("the original path is not in canonical form")]
    NotCanonical,
    #[error("the original method is never allowed")]
    Method,
}

const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");

/// The headers that describe the original URL, and those that describe
/// its method: at most one of each may be present. Statics of parsed
/// names: a lookup by `&str` parses the name again every time.
static URL_HEADERS: [HeaderName; 3] = [
    X_ORIGINAL_URL,
    HeaderName::from_static("x-forwarded-uri"),
    X_ORIGINAL_URI,
];
static METHOD_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("x-original-method"),
    HeaderName::from_static("x-forwarded-method"),
];

/// The one present header of `names`, if any; two present are ambiguous.
fn one_of(
    headers: &HeaderMap,
    names: &'static [HeaderName],
    what: &'static str,
) -> Result<Option<(&'static str, String)>, Unreadable> {
    let mut found = None;
    for name in names {
        if let Some(value) = single(headers, name)? {
            if found.is_some() {
                return Err(Unreadable::Ambiguous(what));
            }
            found = Some((name.as_str(), value.trim().to_owned()));
        }
    }
    Ok(found)
}

/// The one value of `name`, if present; two are ambiguous.
fn single<'a>(
    headers: &'a HeaderMap,
    name: &'static HeaderName,
) -> Result<Option<&'a str>, Unreadable> {
    let name_text = name.as_str();
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Unreadable::Ambiguous(name_text));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Unreadable::Malformed(name_text))
}

/// The path and query of a URL or of an origin-form target.
fn path_and_query(target: &str, name: &'static str) -> Result<String, Unreadable> {
    if target.starts_with('/') {
        return Ok(target.to_owned());
    }
    let uri: http::Uri = target.parse().map_err(|_| Unreadable::Malformed(name))?;
    if uri.scheme().is_none() {
        return Err(Unreadable::Malformed(name));
    }
    Ok(uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()))
}

impl ForwardAuth {
    /// The original request. `rewritten`: whether the layer had to make the
    /// decision request's own path canonical (then the Envoy form, which
    /// carries the original path in it, is not canonical either).
    fn original<B>(&self, req: &Request<B>, rewritten: bool) -> Result<Original, Unreadable> {
        let headers = req.headers();
        let method = match one_of(headers, &METHOD_HEADERS, "an original-method header")? {
            // Upper case only, as the request guard wants of a direct
            // request: `delete` must not dodge a rule for `DELETE`.
            Some((name, text)) if text.bytes().any(|b| b.is_ascii_lowercase()) => {
                return Err(Unreadable::Malformed(name));
            }
            Some((name, text)) => {
                Method::from_bytes(text.as_bytes()).map_err(|_| Unreadable::Malformed(name))?
            }
            None => req.method().clone(),
        };
        // Never let through, whatever the credentials (the request guard
        // refuses them when they come directly).
        if ["TRACE", "TRACK", "CONNECT"]
            .iter()
            .any(|m| method.as_str().eq_ignore_ascii_case(m))
        {
            return Err(Unreadable::Method);
        }
        let target = match one_of(headers, &URL_HEADERS, "an original-URL header")? {
            Some((name, value)) => path_and_query(&value, name)?,
            None => {
                if rewritten {
                    return Err(Unreadable::NotCanonical);
                }
                // Envoy: the decision prefix, then the original path.
                let rest = &req.uri().path()[self.path.len()..];
                let path = if rest.is_empty() { "/" } else { rest };
                match req.uri().query() {
                    Some(query) => format!("{path}?{query}"),
                    None => path.to_owned(),
                }
            }
        };
        let path = target
            .split_once('?')
            .map_or(target.as_str(), |(path, _)| path);
        // Decided on the path the upstream will see, or not at all.
        if path.contains('#') {
            return Err(Unreadable::NotCanonical);
        }
        match crate::path::canonicalize(path) {
            Ok(canonical) if canonical == path => {}
            Ok(_) => return Err(Unreadable::NotCanonical),
            Err(_) => return Err(Unreadable::Malformed("the original path")),
        }
        let uri = target
            .parse()
            .map_err(|_| Unreadable::Malformed("the original path"))?;
        Ok(Original { method, uri })
    }

    /// Whether the asking proxy is nginx `auth_request`, which turns any
    /// status but 2xx, 401 and 403 into a 500 for the client.
    fn is_nginx(&self, headers: &HeaderMap) -> bool {
        match self.style {
            ForwardAuthStyle::Nginx => true,
            ForwardAuthStyle::Auto => {
                headers.contains_key(X_ORIGINAL_URI) || headers.contains_key(X_ORIGINAL_URL)
            }
        }
    }
}

/// Set once a Unix-socket decision request without a readable client
/// address has been logged.
static WARNED_UNNAMED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Set once an untrusted peer's decision request has been logged.
static WARNED_UNTRUSTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The client the decision is for: the layer's resolution (the peer, or
/// `X-Forwarded-For` from a trusted proxy), or with `client_header =
/// "x-real-ip"` the `X-Real-IP` a trusted proxy sent. One header, chosen in
/// the config: whichever the proxy does not set, the client can.
fn client<B>(
    forward: &ForwardAuth,
    shared: &Shared,
    req: &Request<B>,
    resolved: Option<IpAddr>,
) -> Option<IpAddr> {
    let resolved = resolved?;
    if forward.client_header != ForwardAuthClientHeader::XRealIp {
        return Some(resolved);
    }
    if req.extensions().get::<UnixPeer>().is_none() {
        let peer = req
            .extensions()
            .get::<ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip())?;
        if !shared.client_ip.is_trusted(peer) {
            return Some(resolved);
        }
    }
    // Missing, twice, or unreadable: the shared key the resolver gives an
    // unreadable `X-Forwarded-For`, never the proxy's own.
    let ip = real_ip(req.headers()).unwrap_or(crate::limit::UNREADABLE_CLIENT);
    Some(crate::limit::ip_key(ip))
}

/// The address in `X-Real-IP`, if it holds exactly one readable address.
fn real_ip(headers: &HeaderMap) -> Option<IpAddr> {
    single(headers, &super::X_REAL_IP)
        .ok()??
        .trim()
        .parse()
        .ok()
}

/// A refusal before the pipeline: 403 to nginx (which would turn a 400 into
/// a 500), `status` to the others.
fn refuse(nginx: bool, status: StatusCode, body: &'static str) -> (Outcome, Response) {
    let status = if nginx { StatusCode::FORBIDDEN } else { status };
    (
        Outcome::BadRequest,
        crate::auth::response::plain(status, body),
    )
}

/// Answers a decision request.
///
/// With `user_when_wanted` (the server's layer) the answer names the user
/// and the decided request (for the access log) only if the request
/// carries [`UserWanted`]; without, it always does.
pub(super) async fn decide<B>(
    shared: &Arc<Shared>,
    forward: &ForwardAuth,
    req: Request<B>,
    resolved: Option<IpAddr>,
    rewritten: bool,
    user_when_wanted: bool,
) -> (Outcome, Response) {
    let nginx = forward.is_nginx(req.headers());
    let logged = !user_when_wanted || req.extensions().get::<UserWanted>().is_some();
    // A proxy gatehouse does not trust cannot say who the client is: all its
    // clients would share its address, and one could lock out the rest.
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if req.extensions().get::<UnixPeer>().is_some() {
        // A local proxy is trusted without a list, so it must name the
        // client readably: otherwise every client would share one key (one
        // could lock out the rest).
        // `X-Forwarded-For` was walked already, into the request's
        // `ClientAddress`.
        let (header, named) = match forward.client_header {
            ForwardAuthClientHeader::XForwardedFor => (
                "x-forwarded-for",
                req.extensions()
                    .get::<ClientAddress>()
                    .is_some_and(|c| c.0 != crate::limit::UNREADABLE_CLIENT),
            ),
            ForwardAuthClientHeader::XRealIp => ("x-real-ip", real_ip(req.headers()).is_some()),
        };
        if !named {
            if !WARNED_UNNAMED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(
                    header,
                    "forward-auth request on the Unix socket names no readable client address: refused (the proxy must send the client's address, as the shipped snippets do)"
                );
            }
            return refuse(
                nginx,
                StatusCode::FORBIDDEN,
                "403 Forbidden: the proxy did not name the client\n",
            );
        }
    } else if let Some(peer) = peer
        && shared.client_ip.has_trusted()
        && !shared.client_ip.is_trusted(peer)
    {
        if !WARNED_UNTRUSTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(%peer, "forward-auth request from a peer not in [server] trusted_proxies: refused (add the proxy's address)");
        }
        return refuse(
            nginx,
            StatusCode::FORBIDDEN,
            "403 Forbidden: not a trusted proxy\n",
        );
    }
    let original = match forward.original(&req, rewritten) {
        Ok(original) => original,
        Err(reason) => {
            tracing::debug!(%reason, "forward-auth request refused");
            return match reason {
                Unreadable::Method => refuse(
                    nginx,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "405 Method Not Allowed\n",
                ),
                _ => refuse(
                    nginx,
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request: the original request cannot be read\n",
                ),
            };
        }
    };
    // The decision request's own method is not the original's when nginx
    // asks (its subrequests are GETs): with rules that name methods, nginx
    // must say which method it is deciding for.
    let described = METHOD_HEADERS
        .iter()
        .any(|name| req.headers().contains_key(name));
    if nginx && !described && shared.access.load().uses_methods() {
        tracing::warn!(
            "forward-auth request from nginx without X-Original-Method, and access rules name methods: refused (add `proxy_set_header X-Original-Method $request_method;`)"
        );
        return refuse(
            nginx,
            StatusCode::FORBIDDEN,
            "403 Forbidden: X-Original-Method is missing\n",
        );
    }
    tracing::debug!(method = %original.method, path = original.uri.path(), "forward-auth decision");
    let decided = logged.then(|| DecidedRequest {
        method: original.method.clone(),
        path: original.uri.path().to_owned(),
    });
    let (outcome, mut response) =
        decide_original(shared, forward, req, original, resolved, nginx, logged).await;
    if let Some(decided) = decided {
        response.extensions_mut().insert(decided);
    }
    (outcome, response)
}

/// Runs the pipeline on the original request a decision is about.
async fn decide_original<B>(
    shared: &Arc<Shared>,
    forward: &ForwardAuth,
    req: Request<B>,
    original: Original,
    resolved: Option<IpAddr>,
    nginx: bool,
    logged: bool,
) -> (Outcome, Response) {
    let client = client(forward, shared, &req, resolved);
    let (mut parts, _) = req.into_parts();
    // Proxies drop hop-by-hop headers from the decision request: a
    // WebSocket handshake still shows in its key, or in the header the
    // nginx snippet sets. Either makes it an upgrade, which public paths
    // do not let through unauthenticated.
    if parts.headers.contains_key("sec-websocket-key")
        || parts.headers.contains_key("x-original-upgrade")
    {
        parts
            .headers
            .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    parts.method = original.method;
    parts.uri = original.uri;
    let original = Request::from_parts(parts, ());
    let decision = match shared.screen(&original, client) {
        Screened::Decided(decision) => decision,
        checking => shared.conclude(checking).await,
    };
    match decision {
        Decision::Public => (Outcome::Allowed, allowed(forward, "", "", "")),
        Decision::Authenticated(user) => {
            // The access rules decide on the original request too: 403,
            // which every proxy (nginx included) passes on.
            let user = match shared.authorize(user, original.method(), original.uri().path()) {
                Ok(user) => user,
                Err(response) => {
                    // Authenticated, then refused by a rule: counted (the
                    // 403 names the user).
                    super::count_authenticated(&shared.counters, &response);
                    return (Outcome::Forbidden, *response);
                }
            };
            // Every identity header on every 200, so that a proxy that
            // copies them overwrites whatever the client sent; a name that
            // cannot be a header value is a denial, never a 200 without it.
            let name = user.name();
            let scopes = user.scopes().unwrap_or("");
            let groups = user
                .groups()
                .iter()
                .map(|g| &**g)
                .collect::<Vec<&str>>()
                .join(",");
            let representable = [name, scopes, groups.as_str()]
                .iter()
                .all(|v| HeaderValue::from_str(v).is_ok());
            if !representable {
                tracing::warn!(
                    "forward auth: the username or a group cannot be sent in a header; refused"
                );
                return refuse(nginx, StatusCode::FORBIDDEN, "403 Forbidden\n");
            }
            let mut response = allowed(forward, name, scopes, &groups);
            shared.counters.record_authenticated(user.method());
            if logged {
                response.extensions_mut().insert(user);
            }
            (Outcome::Allowed, response)
        }
        Decision::Refuse(outcome, mut response) => {
            // The event names the client the limits counted.
            if let Some(failure) = response
                .extensions_mut()
                .get_mut::<super::events::Failure>()
            {
                failure.client = client;
            }
            if outcome == Outcome::Unauthorized {
                shared.rule_realm(&mut response, original.method(), original.uri().path());
            }
            // nginx: anything but 401/403 becomes a 500. A limit or an
            // overload is a 401 there, keeping `Retry-After`.
            let status = response.status();
            if nginx && status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                if !response.headers().contains_key(RETRY_AFTER) {
                    response
                        .headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                }
            }
            (outcome, response)
        }
    }
}

/// `200` with no body: allowed, naming `user` (empty for a public path)
/// in every identity header, `scopes` in `X-Forwarded-Scopes` and `groups`
/// (comma-separated) in `X-Forwarded-Groups`. All were checked to be valid
/// header values.
fn allowed(forward: &ForwardAuth, user: &str, scopes: &str, groups: &str) -> Response {
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let user = HeaderValue::from_str(user).unwrap_or(HeaderValue::from_static(""));
    for header in &forward.identity_headers {
        headers.insert(header.clone(), user.clone());
    }
    headers.insert(
        X_FORWARDED_SCOPES,
        HeaderValue::from_str(scopes).unwrap_or(HeaderValue::from_static("")),
    );
    headers.insert(
        X_FORWARDED_GROUPS,
        HeaderValue::from_str(groups).unwrap_or(HeaderValue::from_static("")),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward() -> ForwardAuth {
        ForwardAuth {
            path: "/authz".into(),
            style: ForwardAuthStyle::Auto,
            identity_headers: vec![],
            client_header: ForwardAuthClientHeader::XForwardedFor,
            separate_listener: false,
        }
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn original(path: &str, headers: &[(&str, &str)]) -> Result<(String, String), Unreadable> {
        forward()
            .original(&request(path, headers), false)
            .map(|o| (o.method.to_string(), o.uri.to_string()))
    }

    #[test]
    fn the_original_request_comes_from_the_one_header_present() {
        let got = |path, headers| original(path, headers).unwrap();
        assert_eq!(
            got("/authz", &[("x-original-url", "https://app.example/b?x=1")]),
            ("GET".into(), "/b?x=1".into())
        );
        assert_eq!(
            got(
                "/authz",
                &[
                    ("x-forwarded-method", "POST"),
                    ("x-forwarded-uri", "/api/admin")
                ]
            ),
            ("POST".into(), "/api/admin".into())
        );
        assert_eq!(
            got(
                "/authz",
                &[("x-original-uri", "/x/y"), ("x-original-method", "PUT")]
            ),
            ("PUT".into(), "/x/y".into())
        );
        // Envoy: the prefix, then the original path.
        assert_eq!(
            got("/authz/api/items?q=1", &[]),
            ("GET".into(), "/api/items?q=1".into())
        );
        assert_eq!(got("/authz", &[]), ("GET".into(), "/".into()));
    }

    #[test]
    fn ambiguous_non_canonical_or_malformed_descriptions_are_refused() {
        let refused = |headers: &[(&str, &str)]| original("/authz", headers).is_err();
        // A second description can only be the client's.
        assert!(refused(&[
            ("x-forwarded-uri", "/a"),
            ("x-forwarded-uri", "/b")
        ]));
        assert!(refused(&[
            ("x-original-uri", "/app"),
            ("x-original-url", "/public/x")
        ]));
        assert!(refused(&[
            ("x-forwarded-uri", "/app"),
            ("x-original-url", "/public/x")
        ]));
        assert!(refused(&[
            ("x-original-uri", "/a"),
            ("x-original-method", "GET"),
            ("x-forwarded-method", "POST")
        ]));
        // Decided on the path the upstream sees, or not at all.
        for path in [
            "/admin/../public/x",
            "/admin//../public/x",
            "/public/%2e%2e/admin",
            "/admin#/../public",
            "/a//b",
            "/%41",
        ] {
            assert!(refused(&[("x-forwarded-uri", path)]), "{path}");
        }
        assert!(refused(&[("x-forwarded-uri", "/a/%2f/b")]));
        assert!(refused(&[("x-forwarded-uri", "relative")]));
        assert!(refused(&[
            ("x-original-method", "G E T"),
            ("x-original-uri", "/")
        ]));
        for method in ["TRACE", "trace", "TRACK", "CONNECT"] {
            assert!(refused(&[
                ("x-forwarded-method", method),
                ("x-forwarded-uri", "/")
            ]));
        }
        // Envoy's form with a path the layer had to rewrite.
        assert!(forward().original(&request("/authz/x", &[]), true).is_err());
    }

    #[test]
    fn only_the_prefix_and_below_ask_for_decisions() {
        let f = forward();
        assert!(f.matches(&request("/authz", &[])));
        assert!(f.matches(&request("/authz/x", &[])));
        assert!(!f.matches(&request("/authzx", &[])));
        let separate = ForwardAuth {
            separate_listener: true,
            ..forward()
        };
        assert!(!separate.matches(&request("/authz", &[])));
        let mut marked = request("/authz", &[]);
        marked.extensions_mut().insert(ForwardAuthListener);
        assert!(separate.matches(&marked));
    }
}
