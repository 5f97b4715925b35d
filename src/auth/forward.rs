//! Forward authentication: the decision nginx `auth_request`, Caddy
//! `forward_auth`, Traefik `ForwardAuth` and Envoy `ext_authz` (HTTP) ask
//! for before they let a request through.
//!
//! The proxy describes the original request in headers; that description
//! is read once, here, into a method and a canonical path (the same
//! canonical form the layer uses everywhere), and the request is then
//! decided by the layer's own pipeline exactly as if it had arrived
//! directly: public paths, limits, lockouts, every credential scheme.
//!
//! Which header wins, per field, when several are present:
//! - URL: `X-Original-URL` (nginx/Authelia convention), then
//!   `X-Forwarded-Uri` (Traefik, Caddy), then `X-Original-URI` (nginx
//!   `$request_uri`), then the path after the decision prefix (Envoy).
//! - method: `X-Original-Method`, then `X-Forwarded-Method`, then the
//!   request's own (Envoy sends the original method).
//!
//! A header that appears twice makes the request ambiguous: denied.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::header::{CACHE_CONTROL, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};

use super::{Decision, Screened, Shared};
use crate::config::ForwardAuthStyle;
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
    /// Decisions are answered only on requests marked with
    /// [`ForwardAuthListener`] (a listener of their own).
    pub separate_listener: bool,
}

/// Marks requests from the separate forward-auth listener (the server puts
/// it in their extensions).
#[derive(Debug, Clone, Copy)]
pub struct ForwardAuthListener;

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
}

/// The one value of `name`, if present; two are ambiguous.
fn single<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, Unreadable> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Unreadable::Ambiguous(name));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Unreadable::Malformed(name))
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
    fn original<B>(&self, req: &Request<B>) -> Result<Original, Unreadable> {
        let headers = req.headers();
        let method = match single(headers, "x-original-method")? {
            Some(m) => Some((m, "x-original-method")),
            None => single(headers, "x-forwarded-method")?.map(|m| (m, "x-forwarded-method")),
        };
        let method = match method {
            Some((text, name)) => Method::from_bytes(text.trim().as_bytes())
                .map_err(|_| Unreadable::Malformed(name))?,
            None => req.method().clone(),
        };
        let target = if let Some(url) = single(headers, "x-original-url")? {
            path_and_query(url.trim(), "x-original-url")?
        } else if let Some(uri) = single(headers, "x-forwarded-uri")? {
            path_and_query(uri.trim(), "x-forwarded-uri")?
        } else if let Some(uri) = single(headers, "x-original-uri")? {
            path_and_query(uri.trim(), "x-original-uri")?
        } else {
            // Envoy: the decision prefix, then the original path.
            let rest = &req.uri().path()[self.path.len()..];
            let path = if rest.is_empty() { "/" } else { rest };
            match req.uri().query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_owned(),
            }
        };
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target.as_str(), None),
        };
        // The one canonical form every path check uses.
        let canonical = crate::path::canonicalize(path)
            .map_err(|_| Unreadable::Malformed("the original path"))?;
        let target = match query {
            Some(query) => format!("{canonical}?{query}"),
            None => canonical.into_owned(),
        };
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
            ForwardAuthStyle::Auto => headers.contains_key("x-original-uri"),
        }
    }
}

/// The client the decision is for: the layer's resolution (the peer, or
/// `X-Forwarded-For` from a trusted proxy), or `X-Real-IP` from a trusted
/// proxy that sent no `X-Forwarded-For` (nginx snippets often set only
/// that).
fn client<B>(shared: &Shared, req: &Request<B>, resolved: Option<IpAddr>) -> Option<IpAddr> {
    let resolved = resolved?;
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())?;
    let headers = req.headers();
    if headers.contains_key("x-forwarded-for") || !shared.client_ip.is_trusted(peer) {
        return Some(resolved);
    }
    let mut values = headers.get_all("x-real-ip").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Some(resolved);
    };
    // Unreadable: the same shared key the resolver gives an unreadable
    // `X-Forwarded-For`, never the proxy's own.
    let ip = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<IpAddr>().ok())
        .unwrap_or(crate::limit::UNREADABLE_CLIENT);
    Some(crate::limit::ip_key(ip))
}

/// Answers a decision request.
pub(super) async fn decide<B>(
    shared: &Arc<Shared>,
    forward: &ForwardAuth,
    req: Request<B>,
    resolved: Option<IpAddr>,
) -> (Outcome, Response) {
    let nginx = forward.is_nginx(req.headers());
    let original = match forward.original(&req) {
        Ok(original) => original,
        Err(reason) => {
            tracing::debug!(%reason, "forward-auth request refused: the original request cannot be read");
            // nginx would turn a 400 into a 500: a plain denial instead.
            let status = if nginx {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            let response =
                crate::auth::response::plain(status, "the original request cannot be read\n");
            return (Outcome::BadRequest, response);
        }
    };
    let client = client(shared, &req, resolved);
    let (mut parts, _) = req.into_parts();
    parts.method = original.method;
    parts.uri = original.uri;
    let original = Request::from_parts(parts, ());
    let decision = match shared.screen(&original, client) {
        Screened::Decided(decision) => decision,
        checking => shared.conclude(checking).await,
    };
    match decision {
        Decision::Public => (Outcome::Allowed, allowed()),
        Decision::Authenticated(user) => {
            let mut response = allowed();
            let headers = response.headers_mut();
            if let Ok(name) = HeaderValue::from_bytes(user.name().as_bytes()) {
                for header in &forward.identity_headers {
                    headers.insert(header.clone(), name.clone());
                }
            }
            if let Some(scopes) = user.scopes().and_then(|s| HeaderValue::from_str(s).ok()) {
                headers.insert(HeaderName::from_static("x-forwarded-scopes"), scopes);
            }
            response.extensions_mut().insert(user);
            (Outcome::Allowed, response)
        }
        Decision::Refuse(outcome, mut response) => {
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

/// `200` with no body: allowed.
fn allowed() -> Response {
    let mut response = Response::new(Body::empty());
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
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
            .original(&request(path, headers))
            .map(|o| (o.method.to_string(), o.uri.to_string()))
    }

    #[test]
    fn the_original_request_comes_from_the_first_header_present() {
        let got = |path, headers| original(path, headers).unwrap();
        assert_eq!(
            got(
                "/authz",
                &[("x-original-url", "https://app.example/a/../b?x=1")]
            ),
            ("GET".into(), "/b?x=1".into())
        );
        assert_eq!(
            got(
                "/authz",
                &[
                    ("x-forwarded-method", "POST"),
                    ("x-forwarded-uri", "/api/%2e%2e/admin"),
                    ("x-original-uri", "/ignored")
                ]
            ),
            ("POST".into(), "/admin".into())
        );
        assert_eq!(
            got(
                "/authz",
                &[("x-original-uri", "/x//y"), ("x-original-method", "PUT")]
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
    fn ambiguous_or_malformed_descriptions_are_refused() {
        assert!(matches!(
            original(
                "/authz",
                &[("x-forwarded-uri", "/a"), ("x-forwarded-uri", "/b")]
            ),
            Err(Unreadable::Ambiguous(_))
        ));
        assert!(original("/authz", &[("x-forwarded-uri", "/a/%2f/b")]).is_err());
        assert!(original("/authz", &[("x-forwarded-uri", "relative")]).is_err());
        assert!(original("/authz", &[("x-original-method", "G E T")]).is_err());
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
