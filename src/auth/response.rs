//! The refusals the layer answers with. Bodies are fixed text: they never
//! echo anything the client sent.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

/// A plain-text response with a fixed body.
pub(crate) fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Marks an answer that must not be cached: it carries a secret (a token)
/// or a one-time page (RFC 6749 §5.1 asks for both headers).
pub(super) fn no_store(headers: &mut http::HeaderMap) {
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A JSON answer that must not be cached (a token, an OAuth error).
pub(super) fn json_no_store(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(headers);
    response
}

/// 401 with a `WWW-Authenticate` header per challenge.
pub(super) fn unauthorized(challenges: &[HeaderValue]) -> Response {
    let mut response = plain(StatusCode::UNAUTHORIZED, "401 Unauthorized\n");
    for challenge in challenges {
        response
            .headers_mut()
            .append(WWW_AUTHENTICATE, challenge.clone());
    }
    response
}

/// 405 with `Allow`: the layer's own endpoints take only `allow`.
pub(super) fn method_not_allowed(allow: &'static str, body: &'static str) -> Response {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, body);
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// 429 with `Retry-After` in whole seconds (rounded up, at least 1).
pub(super) fn too_many_requests(wait: Duration) -> Response {
    let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "429 Too Many Requests\n");
    response
        .headers_mut()
        .insert(RETRY_AFTER, retry_after(wait));
    response
}

/// 400 for a request path with no canonical form.
pub(super) fn bad_request() -> Response {
    plain(StatusCode::BAD_REQUEST, "400 Bad Request: malformed path\n")
}

/// 503 with `Retry-After: 1`: verification capacity is exhausted right now.
pub(super) fn unavailable() -> Response {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable\n");
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn retry_after(wait: Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(1)), "1");
        assert_eq!(retry_after(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after(Duration::from_secs(900)), "900");
        assert_eq!(retry_after(Duration::ZERO), "1");
    }
}
