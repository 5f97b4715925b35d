//! Counters of what the auth layer decided, kept in one place so that a
//! metrics endpoint or a test can read them.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Request outcomes and verification work, counted since start-up.
#[derive(Debug, Default)]
pub struct AuthCounters {
    allowed: AtomicU64,
    unauthorized: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    lockouts: AtomicU64,
    verifications: AtomicU64,
    failed_verifications: AtomicU64,
    cache_hits: AtomicU64,
    coalesced: AtomicU64,
}

/// Which counter to bump.
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
}

/// A point-in-time copy of the counters.
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
    /// Lockouts started (address or user).
    pub lockouts: u64,
    /// argon2 verifications run.
    pub verifications: u64,
    /// argon2 verifications that failed (wrong password or unknown user).
    pub failed_verifications: u64,
    /// Requests let in by the verified-credentials cache, without argon2.
    pub cache_hits: u64,
    /// Requests that waited for an identical verification in flight.
    pub coalesced: u64,
}

impl AuthCounters {
    /// Counts one request's outcome.
    pub fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::RateLimited => &self.rate_limited,
            Outcome::Overloaded => &self.overloaded,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lockout that just started.
    pub fn record_lockout(&self) {
        self.lockouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one argon2 verification and whether it failed.
    pub fn record_verification(&self, failed: bool) {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed_verifications.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request let in from the cache.
    pub fn record_cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that waited for an identical verification.
    pub fn record_coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            allowed: get(&self.allowed),
            unauthorized: get(&self.unauthorized),
            rate_limited: get(&self.rate_limited),
            overloaded: get(&self.overloaded),
            lockouts: get(&self.lockouts),
            verifications: get(&self.verifications),
            failed_verifications: get(&self.failed_verifications),
            cache_hits: get(&self.cache_hits),
            coalesced: get(&self.coalesced),
        }
    }
}
