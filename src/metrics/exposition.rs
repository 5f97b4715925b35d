//! The Prometheus text exposition (`prometheus-client`): the server's own
//! metrics, the auth layer's counters read at scrape time, the process's
//! `process_*` metrics and `gatehouse_build_info`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

pub use prometheus_client::registry::Registry;

use super::{AuthCounters, Outcome};

/// A metric family keyed by label pairs.
type Labels = Vec<(&'static str, &'static str)>;
type Labelled = Family<Labels, Counter>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The root registry, holding the unprefixed `process_*` metrics. Register
/// gatehouse's own into `root.sub_registry_with_prefix("gatehouse")`.
pub fn registry() -> Registry {
    let mut root = Registry::default();
    #[cfg(target_os = "linux")]
    root.register_collector(Box::new(process::ProcessCollector));
    root
}

/// The Prometheus text exposition of everything registered.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, registry);
    text
}

/// `gatehouse_build_info{version="…"} 1`: which build is running.
pub fn register_build_info(registry: &mut Registry) {
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))])
        .set(1);
    registry.register("build_info", "The running build", info);
}

/// Exposes the auth layer's counters, read at each scrape.
pub fn register_auth(registry: &mut Registry, counters: Arc<AuthCounters>) {
    registry.register_collector(Box::new(AuthCollector(counters)));
}

#[derive(Debug)]
struct AuthCollector(Arc<AuthCounters>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

impl Collector for AuthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        counter(
            &mut encoder,
            "argon2_verifications",
            "argon2 verifications run",
            s.verifications,
        )?;
        counter(
            &mut encoder,
            "argon2_failed_verifications",
            "argon2 verifications that failed",
            s.failed_verifications,
        )?;
        let h = self.0.argon2_seconds();
        let mut metric = encoder.encode_descriptor(
            "argon2_verification_seconds",
            "Time spent in one argon2 verification",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        counter(
            &mut encoder,
            "cache_hits",
            "Requests let in by the verified-credentials cache",
            s.cache_hits,
        )?;
        counter(
            &mut encoder,
            "coalesced_verifications",
            "Requests that waited for an identical verification",
            s.coalesced,
        )?;
        counter(&mut encoder, "lockouts", "Lockouts started", s.lockouts)?;
        counter(
            &mut encoder,
            "lockout_table_full",
            "Attempts refused because the lockout table was full of live locks",
            s.lockout_table_full,
        )?;
        // Shown for every scheme from the first scrape on, so that "done
        // migrating" reads as a flat line, not a missing series.
        let mut family = encoder.encode_descriptor(
            "legacy_hash_logins",
            "Successful password verifications against a legacy htpasswd hash (bcrypt, apr1, sha1): rehash these users with gatehouse hash-password",
            None,
            MetricType::Counter,
        )?;
        for (scheme, value) in self.0.legacy_logins() {
            let labels = [("scheme", scheme)];
            let metric = family.encode_family(&labels)?;
            ConstCounter::new(value).encode(metric)?;
        }
        let mut family = encoder.encode_descriptor(
            "authenticated_requests",
            "Authenticated requests by how the user authenticated",
            None,
            MetricType::Counter,
        )?;
        for (method, value) in self.0.authenticated() {
            // OAuth client tokens only once there are any.
            if method != "oauth_client" || value > 0 {
                let labels = [("method", method)];
                let metric = family.encode_family(&labels)?;
                ConstCounter::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}

/// What an answer was, for the `outcome` label: the auth layer's refusal
/// (which it leaves in the response's extensions), an upstream failure, or
/// else the app's status: `ok` below 400, `client_error` (404, 405, …) and
/// `server_error` otherwise. A 404 is not `ok`.
pub fn outcome_label(response: &axum::response::Response) -> &'static str {
    if let Some(outcome) = response.extensions().get::<Outcome>() {
        return outcome.label();
    }
    if response.extensions().get::<UpstreamFailure>().is_some() {
        return "upstream_error";
    }
    let status = response.status();
    if status.is_client_error() {
        "client_error"
    } else if status.as_u16() >= 500 {
        "server_error"
    } else {
        "ok"
    }
}

/// Marks a response as the proxy's 502 or 504: the upstream failed, not
/// gatehouse.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamFailure;

/// `1xx` … `5xx`.
pub fn status_class(status: StatusCode) -> &'static str {
    status_slot(status).1
}

/// A status's class, and its place among the five.
fn status_slot(status: StatusCode) -> (usize, &'static str) {
    match status.as_u16() {
        100..=199 => (0, "1xx"),
        200..=299 => (1, "2xx"),
        300..=399 => (2, "3xx"),
        400..=499 => (3, "4xx"),
        _ => (4, "5xx"),
    }
}

/// Request counts and durations by outcome, and the upstream's latency.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Labelled,
    duration: Histograms,
    upstream: Histograms,
    /// Handles to the series every request touches, each looked up in its
    /// family once (a lookup builds a label vector, hashes it and takes a
    /// lock): per outcome, its counter and its histogram per status class
    /// (made on first use, so that an unused one is not shown).
    by_outcome: Vec<(&'static str, Counter, [OnceLock<Histogram>; 5])>,
    /// The upstream's histograms by result: the five status classes, then
    /// `error` and `timeout` (made on first use, as above).
    upstream_by_result: [OnceLock<Histogram>; 7],
}

/// The upstream results other than a status class, after the five classes.
const UPSTREAM_FAILURES: [&str; 2] = ["error", "timeout"];

/// 0.5 ms … 16 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every `outcome` label value, shown from the first scrape on.
const OUTCOMES: [&str; 9] = [
    "ok",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "overloaded",
    "bad_request",
    "upstream_error",
    "client_error",
    "server_error",
];

impl Default for RequestMetrics {
    fn default() -> Self {
        let requests = Labelled::default();
        for outcome in OUTCOMES {
            let _ = requests.get_or_create(&vec![("outcome", outcome)]);
        }
        let by_outcome = OUTCOMES
            .iter()
            .map(|outcome| {
                let counter = requests.get_or_create(&vec![("outcome", *outcome)]).clone();
                (*outcome, counter, Default::default())
            })
            .collect();
        Self {
            requests,
            duration: Family::new_with_constructor(duration_histogram),
            upstream: Family::new_with_constructor(duration_histogram),
            by_outcome,
            upstream_by_result: Default::default(),
        }
    }
}

impl RequestMetrics {
    /// Counts one answered request: its outcome, status and how long the
    /// answer's head took.
    pub fn record(&self, outcome: &'static str, status: StatusCode, took: Duration) {
        let (slot, class) = status_slot(status);
        let Some((_, counter, histograms)) = self.by_outcome.iter().find(|(o, ..)| *o == outcome)
        else {
            self.requests
                .get_or_create(&vec![("outcome", outcome)])
                .inc();
            self.duration
                .get_or_create(&vec![("outcome", outcome), ("status_class", class)])
                .observe(took.as_secs_f64());
            return;
        };
        counter.inc();
        histograms[slot]
            .get_or_init(|| {
                self.duration
                    .get_or_create(&vec![("outcome", outcome), ("status_class", class)])
                    .clone()
            })
            .observe(took.as_secs_f64());
    }

    /// Times one upstream exchange up to its answer's head; `result` is the
    /// status class, or `error` / `timeout`.
    pub fn record_upstream(&self, result: &'static str, took: Duration) {
        let slot = match ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .iter()
            .chain(UPSTREAM_FAILURES.iter())
            .position(|r| *r == result)
        {
            Some(slot) => slot,
            None => {
                self.upstream
                    .get_or_create(&vec![("result", result)])
                    .observe(took.as_secs_f64());
                return;
            }
        };
        self.upstream_by_result[slot]
            .get_or_init(|| {
                self.upstream
                    .get_or_create(&vec![("result", result)])
                    .clone()
            })
            .observe(took.as_secs_f64());
    }

    /// Registers these metrics (once, at start-up).
    pub fn register(&self, registry: &mut Registry) {
        registry.register("requests", "Requests by outcome", self.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer's head, by outcome and status class",
            self.duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its answer's head, by status class (or error, timeout)",
            self.upstream.clone(),
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

/// The standard `process_*` metrics, read from `/proc/self` at each scrape.
#[cfg(target_os = "linux")]
mod process {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::DescriptorEncoder;

    use super::{counter_f64, gauge};

    /// Linux reports CPU times in USER_HZ ticks, 100 per second on every
    /// architecture's user ABI.
    const TICKS_PER_SECOND: f64 = 100.0;

    #[derive(Debug)]
    pub(super) struct ProcessCollector;

    /// Fields of `/proc/self/stat` after the command name (which may hold
    /// spaces and parentheses, so the split is at the last `)`): index 0 is
    /// field 3 of proc(5).
    fn stat_fields() -> Option<Vec<String>> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        Some(rest.split_whitespace().map(str::to_owned).collect())
    }

    fn field(fields: &[String], number: usize) -> Option<f64> {
        fields.get(number.checked_sub(3)?)?.parse().ok()
    }

    /// A `Name:   value kB` line of `/proc/self/status`, in bytes.
    fn status_bytes(name: &str) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    }

    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    }

    fn max_fds() -> Option<f64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            let fields = stat_fields().unwrap_or_default();
            if let (Some(user), Some(system)) = (field(&fields, 14), field(&fields, 15)) {
                counter_f64(
                    &mut encoder,
                    "process_cpu_seconds",
                    "User and system CPU time spent, in seconds",
                    (user + system) / TICKS_PER_SECOND,
                )?;
            }
            if let Some(rss) = status_bytes("VmRSS:") {
                gauge(
                    &mut encoder,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    rss,
                )?;
            }
            if let Some(vsize) = field(&fields, 23) {
                gauge(
                    &mut encoder,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    vsize,
                )?;
            }
            if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
                // The directory handle itself is one of the entries.
                let open = fds.count().saturating_sub(1);
                gauge(
                    &mut encoder,
                    "process_open_fds",
                    "Open file descriptors",
                    open as f64,
                )?;
            }
            if let Some(max) = max_fds() {
                gauge(
                    &mut encoder,
                    "process_max_fds",
                    "The soft limit on open file descriptors",
                    max,
                )?;
            }
            if let (Some(boot), Some(start)) = (boot_time(), field(&fields, 22)) {
                gauge(
                    &mut encoder,
                    "process_start_time_seconds",
                    "Start time of the process since the Unix epoch, in seconds",
                    boot + start / TICKS_PER_SECOND,
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(target_os = "linux")]
fn counter_f64(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> std::fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}
