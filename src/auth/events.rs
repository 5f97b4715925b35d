//! Failure events: one log line per failed authentication, on a target of
//! its own (`gatehouse::auth_failure`), for fail2ban and other log-driven
//! defences. The line names the client address (as resolved, so behind a
//! trusted proxy the real client), the username when there was one (a
//! `&str` field: quoted and escaped in text, escaped in JSON, so a crafted
//! name cannot forge fields or lines), the scheme and a reason. Never a
//! password, a token or a header value.
//!
//! The refusal that caused it carries a [`Failure`] in its extensions; the
//! layer takes it out and logs it in one place, after the answer is known.

use std::net::IpAddr;

use http::HeaderMap;

/// The target fail2ban's filter looks for.
pub const TARGET: &str = "gatehouse::auth_failure";

/// Why an authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No such user (the dummy hash was checked).
    UnknownUser,
    /// The user exists; the password is wrong.
    BadPassword,
    /// The address (or the address and user) is locked out.
    LockedOut,
    /// Over the per-address rate.
    RateLimited,
    /// An `Authorization` header that cannot be read.
    Malformed,
    /// A bearer token or API key that is not ours.
    InvalidToken,
}

impl Reason {
    /// The `reason` field's value.
    pub fn label(self) -> &'static str {
        match self {
            Self::UnknownUser => "unknown_user",
            Self::BadPassword => "bad_password",
            Self::LockedOut => "locked_out",
            Self::RateLimited => "rate_limited",
            Self::Malformed => "malformed",
            Self::InvalidToken => "invalid_token",
        }
    }
}

/// Put in a refusal's extensions where it is made.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Why.
    pub reason: Reason,
    /// The username, when the request named one.
    pub user: Option<String>,
}

/// Which scheme the request used, from its headers: `basic`, `bearer`,
/// `api_key` or `none`.
pub fn scheme(headers: &HeaderMap, api_key_header: Option<&http::HeaderName>) -> &'static str {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        if bytes.len() >= 6 && bytes[..6].eq_ignore_ascii_case(b"bearer") {
            return "bearer";
        }
        if bytes.len() >= 5 && bytes[..5].eq_ignore_ascii_case(b"basic") {
            return "basic";
        }
        return "other";
    }
    if api_key_header.is_some_and(|name| headers.contains_key(name)) {
        return "api_key";
    }
    "none"
}

/// Logs one failure: `warn` for a failed credential, `info` for a refusal
/// by a limit or lockout (the consequence of earlier failures).
pub fn log(client: IpAddr, scheme: &str, failure: &Failure) {
    let user = failure.user.as_deref().unwrap_or("");
    let reason = failure.reason.label();
    match failure.reason {
        Reason::LockedOut | Reason::RateLimited => {
            tracing::info!(target: "gatehouse::auth_failure", client = %client, user, scheme, reason, "authentication failed")
        }
        _ => {
            tracing::warn!(target: "gatehouse::auth_failure", client = %client, user, scheme, reason, "authentication failed")
        }
    }
}

/// Attaches a failure to a refusal.
pub(super) fn attach(response: &mut axum::response::Response, reason: Reason, user: Option<&str>) {
    response.extensions_mut().insert(Failure {
        reason,
        user: user.map(str::to_owned),
    });
}
