//! Metrics, kept by the parts that count them and exposed as Prometheus
//! text (`prometheus-client`).
//!
//! Each part owns its metric handles (a `Counter` is a shared atomic: an
//! increment is one atomic add) and registers them once, at start-up, into
//! the one [`Registry`] the application builds. A scrape only encodes what
//! is registered. Adding a metric: a handle in the part that counts it, one
//! line in its `register`.
//!
//! This module imports nothing from the modules above it (the auth layer,
//! the server and the reloader all use it), so it holds their counter
//! types.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::Serialize;

pub use prometheus_client::registry::Registry;

/// A counter family keyed by one label.
type Labelled = Family<Vec<(&'static str, &'static str)>, Counter>;

/// The registry every part registers into, with gatehouse's prefix.
pub fn registry() -> Registry {
    Registry::with_prefix("gatehouse")
}

/// The Prometheus text exposition of everything registered.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, registry);
    text
}

/// Which outcome a request had.
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

/// Request outcomes and verification work, counted since start-up.
#[derive(Debug)]
pub struct AuthCounters {
    requests: Labelled,
    allowed: Counter,
    unauthorized: Counter,
    rate_limited: Counter,
    overloaded: Counter,
    bad_requests: Counter,
    upstream_errors: Counter,
    /// How long each argon2 verification took (seconds), queueing excluded.
    argon2_seconds: Histogram,
    verifications: Counter,
    failed_verifications: Counter,
    cache_hits: Counter,
    coalesced: Counter,
    lockouts: Counter,
    lockout_table_full: Counter,
}

impl Default for AuthCounters {
    fn default() -> Self {
        let requests = Labelled::default();
        let outcome = |name: &'static str| requests.get_or_create(&vec![("outcome", name)]).clone();
        Self {
            allowed: outcome("ok"),
            unauthorized: outcome("unauthorized"),
            rate_limited: outcome("rate_limited"),
            overloaded: outcome("overloaded"),
            bad_requests: outcome("bad_request"),
            upstream_errors: outcome("upstream_error"),
            requests,
            // 1 ms … 4 s: cheap test hashes up to badly overloaded OWASP ones.
            argon2_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 13)),
            verifications: Counter::default(),
            failed_verifications: Counter::default(),
            cache_hits: Counter::default(),
            coalesced: Counter::default(),
            lockouts: Counter::default(),
            lockout_table_full: Counter::default(),
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
        match outcome {
            Outcome::Allowed => &self.allowed,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::RateLimited => &self.rate_limited,
            Outcome::Overloaded => &self.overloaded,
            Outcome::BadRequest => &self.bad_requests,
        }
        .inc();
    }

    /// The counter of requests the upstream failed (502, 504), for the
    /// proxy: it is one outcome of `gatehouse_requests_total`.
    pub fn upstream_errors(&self) -> Counter {
        self.upstream_errors.clone()
    }

    /// Counts a lockout that just started.
    pub fn record_lockout(&self) {
        self.lockouts.inc();
    }

    /// Counts an attempt refused because the lockout table was full; returns
    /// how many came before it.
    pub fn record_lockout_table_full(&self) -> u64 {
        self.lockout_table_full.inc()
    }

    /// Counts one argon2 verification, how long it took and whether it
    /// failed.
    pub fn record_verification(&self, failed: bool, took: std::time::Duration) {
        self.argon2_seconds.observe(took.as_secs_f64());
        self.verifications.inc();
        if failed {
            self.failed_verifications.inc();
        }
    }

    /// Counts a request let in from the cache.
    pub fn record_cache_hit(&self) {
        self.cache_hits.inc();
    }

    /// Counts a request that waited for an identical verification.
    pub fn record_coalesced(&self) {
        self.coalesced.inc();
    }

    /// The current values.
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            allowed: self.allowed.get(),
            unauthorized: self.unauthorized.get(),
            rate_limited: self.rate_limited.get(),
            overloaded: self.overloaded.get(),
            bad_requests: self.bad_requests.get(),
            lockouts: self.lockouts.get(),
            lockout_table_full: self.lockout_table_full.get(),
            verifications: self.verifications.get(),
            failed_verifications: self.failed_verifications.get(),
            cache_hits: self.cache_hits.get(),
            coalesced: self.coalesced.get(),
        }
    }

    /// Registers these metrics (once, at start-up).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("requests", "Requests by outcome", self.requests.clone());
        registry.register(
            "argon2_verifications",
            "argon2 verifications run",
            self.verifications.clone(),
        );
        registry.register(
            "argon2_failed_verifications",
            "argon2 verifications that failed",
            self.failed_verifications.clone(),
        );
        registry.register(
            "argon2_verification_seconds",
            "Time spent in one argon2 verification",
            self.argon2_seconds.clone(),
        );
        registry.register(
            "cache_hits",
            "Requests let in by the verified-credentials cache",
            self.cache_hits.clone(),
        );
        registry.register(
            "coalesced_verifications",
            "Requests that waited for an identical verification",
            self.coalesced.clone(),
        );
        registry.register("lockouts", "Lockouts started", self.lockouts.clone());
        registry.register(
            "lockout_table_full",
            "Attempts refused because the lockout table was full of live locks",
            self.lockout_table_full.clone(),
        );
    }
}

/// Counts of reloads, kept by the reloader.
#[derive(Debug)]
pub struct ReloadCounters {
    family: Labelled,
    /// Reloads applied.
    pub ok: Counter,
    /// Reloads rejected.
    pub failed: Counter,
}

impl Default for ReloadCounters {
    fn default() -> Self {
        let family = Labelled::default();
        let ok = family.get_or_create(&vec![("result", "ok")]).clone();
        let failed = family.get_or_create(&vec![("result", "failed")]).clone();
        Self { family, ok, failed }
    }
}

impl ReloadCounters {
    /// Registers these metrics (once, at start-up).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "config_reloads",
            "Configuration reloads",
            self.family.clone(),
        );
    }
}

/// Connection counters, kept by the server.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Connections open right now (tunnels included).
    pub open: Gauge,
    /// Connections closed at once because their address held too many.
    pub refused_per_ip: Counter,
}

impl ConnectionCounters {
    /// Registers these metrics (once, at start-up).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "open_connections",
            "Client connections open now",
            self.open.clone(),
        );
        registry.register(
            "connections_refused_per_ip",
            "Connections closed at once because their address held max_connections_per_ip",
            self.refused_per_ip.clone(),
        );
    }
}

/// Registers the access log's count of refused-request lines left out.
pub fn register_suppressed_lines(registry: &mut Registry, suppressed: &Counter) {
    registry.register(
        "access_log_suppressed",
        "Access-log lines of refused requests summarised instead of written",
        suppressed.clone(),
    );
}
