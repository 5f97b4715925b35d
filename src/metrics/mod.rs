//! Metrics, kept by the parts that count them.
//!
//! The auth layer's counters ([`AuthCounters`]) are plain atomics, so the
//! layer needs no metrics library: an increment is one relaxed atomic add.
//! The server (feature `server`) exposes them with everything else it
//! counts as Prometheus text ([`exposition`]): each part registers its
//! handles once, at start-up, into the one registry the application
//! builds, and a scrape encodes what is registered.
//!
//! This module imports nothing from the modules above it (the auth layer,
//! the server and the reloader all use it), so it holds their counter
//! types.

mod histogram;

#[cfg(feature = "server")]
pub mod exposition;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub use histogram::{DurationHistogram, HistogramSnapshot};

#[cfg(feature = "server")]
pub use exposition::{
    ConnectionCounters, Registry, ReloadCounters, RequestMetrics, register_suppressed_lines,
    registry, render,
};

/// How the auth layer (or the request guard before it) decided a request.
/// The layer puts it in the response's extensions when it refuses, so that
/// request metrics outside it can tell a refusal from the app's own answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Authenticated (or public) and handed on.
    Allowed,
    /// 401: no, malformed or wrong credentials.
    Unauthorized,
    /// 429: over a rate limit, or locked out.
    RateLimited,
    /// 503: the verification queue is full or too slow.
    Overloaded,
    /// 400 and other refusals of a malformed request (a path with no
    /// canonical form, a bad Host, TRACE).
    BadRequest,
    /// 403: authenticated, but an access rule refuses.
    Forbidden,
}

impl Outcome {
    /// The `outcome` label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "ok",
            Outcome::Unauthorized => "unauthorized",
            Outcome::RateLimited => "rate_limited",
            Outcome::Overloaded => "overloaded",
            Outcome::BadRequest => "bad_request",
            Outcome::Forbidden => "forbidden",
        }
    }
}

/// The legacy (htpasswd) schemes, as the metric labels them.
const LEGACY_SCHEMES: [&str; 3] = ["bcrypt", "apr1", "sha1"];

/// The auth layer's decisions and verification work, counted since
/// start-up.
#[derive(Debug)]
pub struct AuthCounters {
    allowed: AtomicU64,
    unauthorized: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    bad_requests: AtomicU64,
    forbidden: AtomicU64,
    /// How long each argon2 verification took, queueing excluded.
    argon2_seconds: DurationHistogram,
    verifications: AtomicU64,
    failed_verifications: AtomicU64,
    cache_hits: AtomicU64,
    coalesced: AtomicU64,
    lockouts: AtomicU64,
    lockout_table_full: AtomicU64,
    /// Successful verifications against a legacy (htpasswd) hash: bcrypt,
    /// apr1, sha1.
    legacy_logins: [AtomicU64; 3],
    /// Requests authenticated, by method (in [`AUTH_METHODS`] order).
    authenticated: [AtomicU64; 4],
}

/// The authentication methods, in the order the counters keep them.
const AUTH_METHODS: [crate::auth::AuthMethod; 4] = [
    crate::auth::AuthMethod::Basic,
    crate::auth::AuthMethod::Bearer,
    crate::auth::AuthMethod::ApiKey,
    crate::auth::AuthMethod::OAuthClient,
];

impl Default for AuthCounters {
    fn default() -> Self {
        Self {
            allowed: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            forbidden: AtomicU64::new(0),
            // 1 ms … 4 s: cheap test hashes up to badly overloaded OWASP ones.
            argon2_seconds: DurationHistogram::exponential(0.001, 2.0, 13),
            verifications: AtomicU64::new(0),
            failed_verifications: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
            lockouts: AtomicU64::new(0),
            lockout_table_full: AtomicU64::new(0),
            legacy_logins: Default::default(),
            authenticated: Default::default(),
        }
    }
}

/// A point-in-time copy of the counters (served at `/api/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    /// Requests handed on (authenticated or public).
    pub allowed: u64,
    /// 401 answers.
    pub unauthorized: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// 503 answers.
    pub overloaded: u64,
    /// 400 answers (a path with no canonical form).
    pub bad_requests: u64,
    /// 403 answers (an access rule refused an authenticated user).
    pub forbidden: u64,
    /// Lockouts started (address or user).
    pub lockouts: u64,
    /// Attempts refused because the lockout table was full of live locks.
    pub lockout_table_full: u64,
    /// argon2 verifications run.
    pub verifications: u64,
    /// argon2 verifications that failed (wrong password or unknown user).
    pub failed_verifications: u64,
    /// Requests let in by the verified-credentials cache, without argon2.
    pub cache_hits: u64,
    /// Requests that waited for an identical verification in flight.
    pub coalesced: u64,
}

fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed)
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl AuthCounters {
    /// Counts one request's outcome.
    pub fn record(&self, outcome: Outcome) {
        bump(match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::RateLimited => &self.rate_limited,
            Outcome::Overloaded => &self.overloaded,
            Outcome::BadRequest => &self.bad_requests,
            Outcome::Forbidden => &self.forbidden,
        });
    }

    /// Counts a lockout that just started.
    pub fn record_lockout(&self) {
        bump(&self.lockouts);
    }

    /// Counts an attempt refused because the lockout table was full; returns
    /// how many came before it.
    pub fn record_lockout_table_full(&self) -> u64 {
        bump(&self.lockout_table_full)
    }

    /// Counts one argon2 verification, how long it took and whether it
    /// failed.
    pub fn record_verification(&self, failed: bool, took: std::time::Duration) {
        self.argon2_seconds.observe(took);
        bump(&self.verifications);
        if failed {
            bump(&self.failed_verifications);
        }
    }

    /// Counts a successful verification against a legacy hash (`bcrypt`,
    /// `apr1` or `sha1`; anything else is ignored).
    pub fn record_legacy_login(&self, scheme: &str) {
        if let Some(i) = LEGACY_SCHEMES.iter().position(|s| *s == scheme) {
            bump(&self.legacy_logins[i]);
        }
    }

    /// Successful verifications per legacy scheme.
    pub fn legacy_logins(&self) -> [(&'static str, u64); 3] {
        [0, 1, 2].map(|i| (LEGACY_SCHEMES[i], get(&self.legacy_logins[i])))
    }

    /// Counts a request the layer authenticated by `method`: let in, refused
    /// by an access rule, or answered by the layer itself naming the user.
    pub fn record_authenticated(&self, method: crate::auth::AuthMethod) {
        // The enum's order is AUTH_METHODS' (a test checks it).
        bump(&self.authenticated[method as usize]);
    }

    /// Authenticated requests per method, by its metric label.
    pub fn authenticated(&self) -> [(&'static str, u64); 4] {
        [0, 1, 2, 3].map(|i| (AUTH_METHODS[i].label(), get(&self.authenticated[i])))
    }

    /// Counts a request let in from the cache.
    pub fn record_cache_hit(&self) {
        bump(&self.cache_hits);
    }

    /// Counts a request that waited for an identical verification.
    pub fn record_coalesced(&self) {
        bump(&self.coalesced);
    }

    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            allowed: get(&self.allowed),
            unauthorized: get(&self.unauthorized),
            rate_limited: get(&self.rate_limited),
            overloaded: get(&self.overloaded),
            bad_requests: get(&self.bad_requests),
            forbidden: get(&self.forbidden),
            lockouts: get(&self.lockouts),
            lockout_table_full: get(&self.lockout_table_full),
            verifications: get(&self.verifications),
            failed_verifications: get(&self.failed_verifications),
            cache_hits: get(&self.cache_hits),
            coalesced: get(&self.coalesced),
        }
    }

    /// How long verifications took.
    pub fn argon2_seconds(&self) -> HistogramSnapshot {
        self.argon2_seconds.snapshot()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn auth_methods_are_listed_in_the_enums_order() {
        // `record_authenticated` indexes the counters by the enum's value.
        for (i, method) in super::AUTH_METHODS.iter().enumerate() {
            assert_eq!(*method as usize, i, "{}", method.label());
        }
    }
}
