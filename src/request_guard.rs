//! Request-level checks made before authentication, for what no backend
//! should ever see: ambiguous `Host`s, methods a gate must not forward, and
//! `OPTIONS *`, which is about the server itself.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::header::{ALLOW, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, StatusCode};

/// The methods gatehouse passes on (TRACE and CONNECT are refused).
const ALLOWED: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Refuses with 400 a request with two `Host` headers (or a `Host` that
/// disagrees with the request target's authority: which one would the
/// upstream believe?), with 405 `TRACE` (it would echo credentials back)
/// and `CONNECT` (a gate is not a tunnel), and answers `OPTIONS *` here.
pub async fn guard(req: Request, next: Next) -> Response {
    if req.method() == Method::TRACE || req.method() == Method::CONNECT {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(ALLOWED));
        return response;
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return plain(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: two Host headers\n",
        );
    }
    if let (Some(host), Some(authority)) = (host, req.uri().authority())
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: Host does not match the request target\n",
        );
    }
    if req.uri().path() == "*" {
        if req.method() == Method::OPTIONS {
            let mut response = Response::new(Body::empty());
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(ALLOWED));
            return response;
        }
        return plain(StatusCode::BAD_REQUEST, "400 Bad Request: malformed path\n");
    }
    next.run(req).await
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
