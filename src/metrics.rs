//! Counters of what gatehouse decided and did, kept in one place, and their
//! Prometheus text exposition (built with `prometheus-client`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Request outcomes and verification work, counted since start-up.
#[derive(Debug)]
pub struct AuthCounters {
    /// How long each argon2 verification took (seconds), queueing excluded.
    argon2_seconds: Histogram,
    allowed: AtomicU64,
    unauthorized: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    bad_requests: AtomicU64,
    lockouts: AtomicU64,
    lockout_table_full: AtomicU64,
    verifications: AtomicU64,
    failed_verifications: AtomicU64,
    cache_hits: AtomicU64,
    coalesced: AtomicU64,
}

impl Default for AuthCounters {
    fn default() -> Self {
        Self {
            // 1 ms … 4 s: cheap test hashes up to badly overloaded OWASP ones.
            argon2_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            allowed: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            lockouts: AtomicU64::new(0),
            lockout_table_full: AtomicU64::new(0),
            verifications: AtomicU64::new(0),
            failed_verifications: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }
    }
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
    /// 400: the request path has no canonical form.
    BadRequest,
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
    /// 400 answers (a path with no canonical form).
    pub bad_requests: u64,
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

impl AuthCounters {
    /// Counts one request's outcome.
    pub fn record(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::RateLimited => &self.rate_limited,
            Outcome::Overloaded => &self.overloaded,
            Outcome::BadRequest => &self.bad_requests,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a lockout that just started.
    pub fn record_lockout(&self) {
        self.lockouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an attempt refused because the lockout table was full; returns
    /// how many came before it.
    pub fn record_lockout_table_full(&self) -> u64 {
        self.lockout_table_full.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts one argon2 verification, how long it took and whether it
    /// failed.
    pub fn record_verification(&self, failed: bool, took: std::time::Duration) {
        self.argon2_seconds.observe(took.as_secs_f64());
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
            bad_requests: get(&self.bad_requests),
            lockouts: get(&self.lockouts),
            lockout_table_full: get(&self.lockout_table_full),
            verifications: get(&self.verifications),
            failed_verifications: get(&self.failed_verifications),
            cache_hits: get(&self.cache_hits),
            coalesced: get(&self.coalesced),
        }
    }
}

/// Counts of reloads, for metrics and tests. Kept here rather than in
/// `reload.rs`, so that metrics (which the auth layer uses) imports nothing
/// from the modules above it.
#[derive(Debug, Default)]
pub struct ReloadCounters {
    /// Reloads applied.
    pub ok: AtomicU64,
    /// Reloads rejected.
    pub failed: AtomicU64,
}

/// Connection counters, kept by the server (here, so that metrics imports
/// nothing from the modules above it).
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Connections open right now (tunnels included).
    pub open: AtomicI64,
    /// Connections closed at once because their address held too many.
    pub refused_per_ip: AtomicU64,
}

/// Everything the Prometheus endpoint reports, gathered from the parts that
/// count it.
#[derive(Clone, Debug)]
pub struct MetricsSources {
    /// The auth layer's counters.
    pub auth: Arc<AuthCounters>,
    /// Connections open right now, and those refused per address.
    pub connections: Arc<ConnectionCounters>,
    /// Access-log lines of refused requests left out (summarised instead).
    pub suppressed_log_lines: Arc<AtomicU64>,
    /// Upstream failures answered 502 or 504 (sidecar mode).
    pub upstream_errors: Arc<AtomicU64>,
    /// Config reloads applied and rejected.
    pub reloads: Arc<ReloadCounters>,
}

impl MetricsSources {
    /// The Prometheus text exposition of the current values.
    pub fn render(&self) -> String {
        let mut registry = Registry::with_prefix("gatehouse");
        let snapshot = self.auth.snapshot();

        let requests = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        for (outcome, value) in [
            ("ok", snapshot.allowed),
            ("unauthorized", snapshot.unauthorized),
            ("rate_limited", snapshot.rate_limited),
            ("overloaded", snapshot.overloaded),
            ("bad_request", snapshot.bad_requests),
            (
                "upstream_error",
                self.upstream_errors.load(Ordering::Relaxed),
            ),
        ] {
            requests
                .get_or_create(&vec![("outcome", outcome)])
                .inc_by(value);
        }
        registry.register("requests", "Requests by outcome", requests);

        let counter = |value: u64| {
            let c: Counter = Counter::default();
            c.inc_by(value);
            c
        };
        registry.register(
            "argon2_verifications",
            "argon2 verifications run",
            counter(snapshot.verifications),
        );
        registry.register(
            "argon2_failed_verifications",
            "argon2 verifications that failed",
            counter(snapshot.failed_verifications),
        );
        registry.register(
            "argon2_verification_seconds",
            "Time spent in one argon2 verification",
            self.auth.argon2_seconds.clone(),
        );
        registry.register(
            "cache_hits",
            "Requests let in by the verified-credentials cache",
            counter(snapshot.cache_hits),
        );
        registry.register(
            "coalesced_verifications",
            "Requests that waited for an identical verification",
            counter(snapshot.coalesced),
        );
        registry.register("lockouts", "Lockouts started", counter(snapshot.lockouts));
        registry.register(
            "lockout_table_full",
            "Attempts refused because the lockout table was full of live locks",
            counter(snapshot.lockout_table_full),
        );

        let open: Gauge = Gauge::default();
        open.set(self.connections.open.load(Ordering::Relaxed));
        registry.register("open_connections", "Client connections open now", open);
        registry.register(
            "connections_refused_per_ip",
            "Connections closed at once because their address held max_connections_per_ip",
            counter(self.connections.refused_per_ip.load(Ordering::Relaxed)),
        );
        registry.register(
            "access_log_suppressed",
            "Access-log lines of refused requests summarised instead of written",
            counter(self.suppressed_log_lines.load(Ordering::Relaxed)),
        );

        let reloads = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        reloads
            .get_or_create(&vec![("result", "ok")])
            .inc_by(self.reloads.ok.load(Ordering::Relaxed));
        reloads
            .get_or_create(&vec![("result", "failed")])
            .inc_by(self.reloads.failed.load(Ordering::Relaxed));
        registry.register("config_reloads", "Configuration reloads", reloads);

        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &registry);
        text
    }
}
