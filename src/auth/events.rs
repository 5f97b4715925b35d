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
    /// The client the limits counted, when it differs from the layer's
    /// resolution (forward auth with `client_header = "x-real-ip"`).
    pub client: Option<IpAddr>,
}

/// The longest username an event repeats.
const MAX_USER: usize = 64;

/// What an event says of the username: a configured user's name as is; an
/// unknown one unless it may be a secret typed in the wrong box (a key, a
/// token, anything long), which is replaced.
fn shown_user(failure: &Failure) -> std::borrow::Cow<'_, str> {
    let user = failure.user.as_deref().unwrap_or("");
    let secret_like = crate::tokens::api_keys::looks_like_key(user)
        || user.matches('.').count() >= 2 && user.len() > 40
        || user.chars().count() > MAX_USER;
    if failure.reason != Reason::BadPassword && secret_like {
        return std::borrow::Cow::Owned(format!("(withheld: {} characters)", user.chars().count()));
    }
    std::borrow::Cow::Borrowed(user)
}

/// Writes failure events. Refusals by a limit or a lockout are sampled per
/// address (5 per 10 s, then one per 10 s), so that a client hammering a
/// locked door cannot fill the disk; a failed credential is always logged
/// (each one is counted by the per-address rate anyway).
#[derive(Default)]
pub struct EventLog {
    sampled: std::sync::Mutex<std::collections::HashMap<IpAddr, (std::time::Instant, u32)>>,
}

/// The most addresses the sampler remembers (it forgets all when full).
const MAX_SAMPLED: usize = 100_000;

impl EventLog {
    fn allow(&self, client: IpAddr) -> bool {
        let now = std::time::Instant::now();
        let mut sampled = crate::sync::lock(&self.sampled);
        if sampled.len() >= MAX_SAMPLED {
            sampled.clear();
        }
        let (start, count) = sampled.entry(client).or_insert((now, 0));
        if now.duration_since(*start) >= std::time::Duration::from_secs(10) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= 5 || *count % 50 == 0
    }

    /// Forgets windows that have ended.
    pub fn prune(&self) {
        let now = std::time::Instant::now();
        crate::sync::lock(&self.sampled).retain(|_, (start, _)| {
            now.duration_since(*start) < std::time::Duration::from_secs(10)
        });
    }

    /// Logs one failure: `warn` for a failed credential, `info` for a
    /// refusal by a limit or lockout (the consequence of earlier failures).
    /// Nothing for a client with no address (0.0.0.0 or ::): banning it
    /// would mean nothing.
    pub fn log(&self, resolved: IpAddr, scheme: &str, failure: &Failure) {
        let client = failure.client.unwrap_or(resolved);
        if client.is_unspecified() {
            return;
        }
        let user = shown_user(failure);
        let user = user.as_ref();
        let reason = failure.reason.label();
        match failure.reason {
            Reason::LockedOut | Reason::RateLimited => {
                if self.allow(client) {
                    tracing::info!(target: TARGET, client = %client, user, scheme, reason, "authentication failed")
                }
            }
            _ => {
                tracing::warn!(target: TARGET, client = %client, user, scheme, reason, "authentication failed")
            }
        }
    }
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

/// Attaches a failure to a refusal.
pub(crate) fn attach(response: &mut axum::response::Response, reason: Reason, user: Option<&str>) {
    response.extensions_mut().insert(Failure {
        reason,
        user: user.map(str::to_owned),
        client: None,
    });
}
