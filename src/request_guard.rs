//! Request-level checks made before authentication, for what no backend
//! should ever see: ambiguous `Host`s, methods a gate must not forward, and
//! `OPTIONS *`, which is about the server itself.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::header::{ALLOW, HOST, TRANSFER_ENCODING};

use crate::auth::response::plain;
use crate::metrics::Outcome;
use http::uri::Authority;
use http::{HeaderValue, Method, StatusCode};

/// The methods gatehouse passes on (TRACE and CONNECT are refused).
const ALLOWED: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Refuses with 400 a method with a lower-case letter, a request with two
/// `Host` headers, a malformed one, or
/// one that disagrees with the request target's authority (which one would
/// the upstream believe?); with 405 `TRACE`/`TRACK` (they would echo
/// credentials back) and `CONNECT` (a gate is not a tunnel), in any case;
/// with 501 a transfer coding other than `chunked`; and answers `OPTIONS *`
/// here.
pub fn check(req: &Request) -> Option<Response> {
    let method = req.method().as_str();
    if ["TRACE", "TRACK", "CONNECT"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
    {
        let mut response = refuse(StatusCode::METHOD_NOT_ALLOWED, "405 Method Not Allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(ALLOWED));
        return Some(response);
    }
    // Method names are case-sensitive (RFC 9110 §9.1), but some frameworks
    // upper-case them (Django, Werkzeug): `delete` would pass a rule for
    // `DELETE` and reach the DELETE handler. No standard method has a
    // lower-case letter.
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: method names are upper case\n",
        ));
    }
    let mut hosts = req.headers().get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: two Host headers\n",
        ));
    }
    // A Host is copied into X-Forwarded-Host: it must be one plain
    // host[:port], not a list an upstream could split (`a, evil`), nor carry
    // a user (`u@a`). The same goes for an absolute request target.
    let authority = req.uri().authority().map(Authority::as_str);
    if host.is_some_and(|h| !is_plain_authority(h.as_bytes()))
        || authority.is_some_and(|a| !is_plain_authority(a.as_bytes()))
    {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: malformed Host\n",
        ));
    }
    // Only `chunked` is a transfer coding gatehouse speaks (RFC 9112 §6.1:
    // an unknown one gets 501); anything else would reach the upstream
    // de-chunked but still encoded.
    if req
        .headers()
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
    {
        return Some(refuse(
            StatusCode::NOT_IMPLEMENTED,
            "501 Not Implemented: only the chunked transfer coding is accepted\n",
        ));
    }
    if let (Some(host), Some(authority)) = (host, req.uri().authority())
        && !host
            .as_bytes()
            .eq_ignore_ascii_case(authority.as_str().as_bytes())
    {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: Host does not match the request target\n",
        ));
    }
    if req.uri().path() == "*" {
        if req.method() == Method::OPTIONS {
            let mut response = Response::new(Body::empty());
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(ALLOWED));
            return Some(response);
        }
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: malformed path\n",
        ));
    }
    None
}

/// A refusal, marked as one for the request metrics.
fn refuse(status: StatusCode, body: &'static str) -> Response {
    let mut response = plain(status, body);
    response.extensions_mut().insert(Outcome::BadRequest);
    response
}

/// `host` or `host:port`, nothing else: a DNS name or IPv4 address
/// (letters, digits, `-`, `_`, `.`), or an IPv6 address in brackets
/// (hex digits, `:` and `.`, no zone), and a port of 1 to 5 digits up to
/// 65535 when there is a `:`. At most 261 bytes (a 255-byte name and a
/// port).
fn is_plain_authority(bytes: &[u8]) -> bool {
    if bytes.is_empty() || bytes.len() > 261 {
        return false;
    }
    let (host_ok, port) = if let Some(rest) = bytes.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &rest[..end];
        let ok = !inner.is_empty()
            && inner.contains(&b':')
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        (ok, &rest[end + 1..])
    } else {
        let (host, port) = match bytes.iter().position(|&b| b == b':') {
            Some(colon) => (&bytes[..colon], &bytes[colon..]),
            None => (bytes, &b""[..]),
        };
        let ok = !host.is_empty()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        (ok, port)
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => {
            (1..=5).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u16>().ok())
                    .is_some_and(|p| p > 0)
        }
        _ => false,
    };
    host_ok && port_ok
}

#[cfg(test)]
mod tests {
    use super::is_plain_authority;

    #[test]
    fn only_plain_hosts_pass() {
        for good in [
            "localhost",
            "localhost:8443",
            "a.b-c_d.example",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:443",
            "[2001:db8::1]:65535",
        ] {
            assert!(is_plain_authority(good.as_bytes()), "{good}");
        }
        let long = "a".repeat(300);
        for bad in [
            "",
            "a, evil",
            "u@a",
            "a:",
            "a:+80",
            "a:-1",
            "a:99999",
            "a:0",
            "a:080000",
            "[fe80::1%eth0]",
            "a;b",
            "a&b=c",
            "a'b",
            "a(b)",
            "a*",
            "*",
            "a b",
            "a/b",
            "a\\b",
            "[v1.x]",
            "[]",
            "::1",
            "a:80:80",
            &long,
        ] {
            assert!(!is_plain_authority(bad.as_bytes()), "{bad}");
        }
    }
}
