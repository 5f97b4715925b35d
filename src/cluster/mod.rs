//! State shared by replicas, in Redis (`[cluster]`): the rate limits, the
//! lockouts (with their in-flight reservations) and the OAuth grants. The
//! verified-credentials cache stays local: it saves CPU, it holds no state
//! another replica needs.
//!
//! One multiplexed connection (redis-rs `ConnectionManager`, which
//! reconnects by itself) carries everything; every call has a deadline
//! (`[cluster] timeout`, 50 ms by default). A failed or late call marks
//! Redis *down*: from then on nothing waits for it, and each replica
//! decides from its own records until the probe, every `sync_interval`,
//! finds Redis again. What that means for each kind of state:
//! - rate limits: the local limiter alone (fail open to local);
//! - lockouts: the local records, plus every lock Redis reported before
//!   (kept here: a locked address stays locked);
//! - OAuth codes and refresh tokens: refused with 503 and `Retry-After`
//!   (a double redemption is worse than a retry).
//!
//! Keys are `gatehouse:{<prefix>}:…`. The braces are a Redis Cluster hash
//! tag: the scripts touch several keys at once, which must live on one
//! shard. Usernames appear only as keyed digests.

mod grants;
mod limits;
mod scripts;

pub(crate) use grants::RedisGrants;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::{ClusterSettings, RateLimitSettings};
use crate::limit::{LockoutPolicy, RateKind};
use crate::sync::lock;

/// How long a verification in flight holds its slot in Redis. A replica
/// that dies mid-verification frees it after this long.
const PENDING_HOLD: Duration = Duration::from_secs(30);

/// The most address locks read from Redis per probe.
const LOCKS_PER_SYNC: usize = 10_000;

/// The most rate checks waiting to be sent: past it, checks are not sent
/// (the local limiter still applies).
const RATE_QUEUE: usize = 65_536;

/// The most distinct keys in one pipelined batch of rate checks.
const RATE_BATCH: usize = 512;

/// What fell back to local state, for `gatehouse_redis_fallbacks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Fallback {
    /// A rate check was decided by the local limiter alone.
    Rate,
    /// A lockout reservation was decided by the local records alone.
    Lockout,
    /// An OAuth grant operation was refused (503).
    Grants,
}

impl Fallback {
    fn label(self) -> &'static str {
        match self {
            Self::Rate => "rate_limit",
            Self::Lockout => "lockout",
            Self::Grants => "oauth",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

/// Whether Redis answers, and the metrics that say so.
struct Health {
    up: AtomicBool,
    up_gauge: Gauge,
    errors: Counter,
    fallbacks: Family<Labels, Counter>,
}

/// What Redis reported, kept here: rates over their budget, and locks.
#[derive(Default)]
struct Mirror {
    rates: std::sync::Mutex<HashMap<(RateKind, String), Instant>>,
    /// How many entries `rates` holds: the common case (none) takes no lock.
    rate_count: AtomicUsize,
    addresses: std::sync::Mutex<HashMap<IpAddr, Instant>>,
    address_count: AtomicUsize,
    users: std::sync::Mutex<HashMap<(IpAddr, String), Instant>>,
    /// Revoked OAuth grant families, until when (Unix seconds) their
    /// access tokens must be refused.
    families: std::sync::Mutex<HashMap<String, u64>>,
    family_count: AtomicUsize,
}

impl Mirror {
    fn remaining<K: std::hash::Hash + Eq>(
        map: &std::sync::Mutex<HashMap<K, Instant>>,
        count: Option<&AtomicUsize>,
        key: &K,
    ) -> Option<Duration> {
        if count.is_some_and(|c| c.load(Ordering::Relaxed) == 0) {
            return None;
        }
        let now = Instant::now();
        let mut map = lock(map);
        let until = *map.get(key)?;
        if until > now {
            return Some(until - now);
        }
        map.remove(key);
        if let Some(count) = count {
            count.store(map.len(), Ordering::Relaxed);
        }
        None
    }

    fn insert<K: std::hash::Hash + Eq>(
        map: &std::sync::Mutex<HashMap<K, Instant>>,
        count: Option<&AtomicUsize>,
        key: K,
        until: Instant,
    ) {
        let mut map = lock(map);
        let entry = map.entry(key).or_insert(until);
        *entry = (*entry).max(until);
        if let Some(count) = count {
            count.store(map.len(), Ordering::Relaxed);
        }
    }

    fn prune(&self) {
        let now = Instant::now();
        let mut rates = lock(&self.rates);
        rates.retain(|_, until| *until > now);
        self.rate_count.store(rates.len(), Ordering::Relaxed);
        drop(rates);
        let mut addresses = lock(&self.addresses);
        addresses.retain(|_, until| *until > now);
        self.address_count.store(addresses.len(), Ordering::Relaxed);
        drop(addresses);
        lock(&self.users).retain(|_, until| *until > now);
        let unix = crate::auth::oauth::unix_now();
        let mut families = lock(&self.families);
        families.retain(|_, until| *until > unix);
        self.family_count.store(families.len(), Ordering::Relaxed);
    }
}

/// The Redis connection and everything kept about it.
pub struct Cluster {
    conn: ConnectionManager,
    /// `gatehouse:{<prefix>}:`
    prefix: String,
    timeout: Duration,
    sync_interval: Duration,
    health: Health,
    gcra: redis::Script,
    begin: redis::Script,
    finish: redis::Script,
    locks_since: redis::Script,
    /// Per kind: the emission interval (µs) and the burst.
    rates: HashMap<RateKind, (u64, u32)>,
    lockout: LockoutPolicy,
    mirror: Mirror,
    rate_queue: tokio::sync::mpsc::Sender<(RateKind, String)>,
    rate_receiver: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<(RateKind, String)>>>,
    /// Makes attempt ids unique across replicas.
    replica: u64,
    attempts: AtomicU64,
    /// Keys usernames' digests, so that Redis holds no names.
    user_salt: String,
    /// The key every replica signs consent forms with, once read from
    /// Redis (made there by the first replica to ask).
    form_key: arc_swap::ArcSwapOption<[u8; 32]>,
    /// Whether OAuth grants live here (then the form key is read).
    oauth: AtomicBool,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// Why the cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL or its options are not usable.
    #[error("[cluster] redis: {0}")]
    Url(String),
    /// No randomness for the replica id.
    #[error("no randomness for the replica id")]
    Random,
}

impl Cluster {
    /// Sets up the connection (lazily: Redis need not be up yet) under
    /// `settings`, for the limits and lockout policy in force.
    pub fn new(
        settings: &ClusterSettings,
        rates: &RateLimitSettings,
        lockout: LockoutPolicy,
    ) -> Result<Arc<Self>, ClusterError> {
        // rediss:// builds its TLS config from the process's default
        // provider: make it ring, as everywhere else here.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.redis.as_str())
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        if let Some(password) = &settings.password {
            let redis = info
                .redis_settings()
                .clone()
                .set_password(password.as_str());
            info = info.set_redis_settings(redis);
        }
        let client = redis::Client::open(info).map_err(|e| ClusterError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|_| ClusterError::Random)?;
        let replica = u64::from_le_bytes([
            random[0], random[1], random[2], random[3], random[4], random[5], random[6], random[7],
        ]);
        let mut kinds = HashMap::new();
        for (kind, rate) in [
            (RateKind::Address, rates.per_ip),
            (RateKind::User, rates.per_user),
        ] {
            if let Some(rate) = rate {
                let interval = 1_000_000 / u64::from(rate.per_second.get());
                kinds.insert(kind, (interval.max(1), rate.burst.get()));
            }
        }
        let (rate_queue, rate_receiver) = tokio::sync::mpsc::channel(RATE_QUEUE);
        let fallbacks = Family::<Labels, Counter>::default();
        for what in [Fallback::Rate, Fallback::Lockout, Fallback::Grants] {
            let _ = fallbacks.get_or_create(&vec![("what", what.label())]);
        }
        let up_gauge = Gauge::default();
        up_gauge.set(1);
        Ok(Arc::new(Self {
            conn,
            prefix: format!("gatehouse:{{{}}}:", settings.prefix),
            timeout: settings.timeout,
            sync_interval: settings.sync_interval,
            health: Health {
                up: AtomicBool::new(true),
                up_gauge,
                errors: Counter::default(),
                fallbacks,
            },
            gcra: redis::Script::new(scripts::GCRA),
            begin: redis::Script::new(&scripts::begin()),
            finish: redis::Script::new(&scripts::finish()),
            locks_since: redis::Script::new(scripts::LOCKS_SINCE),
            rates: kinds,
            lockout,
            mirror: Mirror::default(),
            rate_queue,
            rate_receiver: std::sync::Mutex::new(Some(rate_receiver)),
            replica,
            attempts: AtomicU64::new(0),
            user_salt: settings.prefix.clone(),
            form_key: arc_swap::ArcSwapOption::empty(),
            oauth: AtomicBool::new(false),
        }))
    }

    /// Registers `gatehouse_redis_up`, `gatehouse_redis_errors_total` and
    /// `gatehouse_redis_fallbacks_total{what}`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "redis_up",
            "1 while Redis answers; 0 while each replica decides alone",
            self.health.up_gauge.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis calls that failed or ran past [cluster] timeout",
            self.health.errors.clone(),
        );
        registry.register(
            "redis_fallbacks",
            "Checks decided without Redis (rate_limit, lockout: local records; oauth: refused with 503)",
            self.health.fallbacks.clone(),
        );
    }

    /// Whether Redis answered last time.
    pub fn is_up(&self) -> bool {
        self.health.up.load(Ordering::Relaxed)
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        key.push_str(&parts.join(":"));
        key
    }

    /// A username as Redis sees it: a keyed digest (names are not stored).
    fn user_digest(&self, username: &str) -> String {
        let mut input = Vec::with_capacity(self.user_salt.len() + username.len() + 1);
        input.extend_from_slice(self.user_salt.as_bytes());
        input.push(0);
        input.extend_from_slice(username.as_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &input);
        hex(&digest.as_ref()[..16])
    }

    fn fell_back(&self, what: Fallback) {
        self.health
            .fallbacks
            .get_or_create(&vec![("what", what.label())])
            .inc();
    }

    /// Marks Redis down after a failed call: from now on nothing waits for
    /// it until the probe finds it again. Logged once per outage.
    fn failed(&self, error: &dyn std::fmt::Display) {
        self.health.errors.inc();
        if self.health.up.swap(false, Ordering::Relaxed) {
            self.health.up_gauge.set(0);
            tracing::warn!(%error, "Redis unreachable: each replica decides from its own records (rate limits local, locks kept, OAuth grants refused with 503) until it answers again");
        }
    }

    /// Runs one Redis call under the deadline. `None`: Redis is down (or
    /// just went down) and the caller falls back.
    async fn call<T, F>(&self, what: Fallback, call: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            self.fell_back(what);
            return None;
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.failed(&error);
                self.fell_back(what);
                None
            }
            Err(_) => {
                self.failed(&"no answer within [cluster] timeout");
                self.fell_back(what);
                None
            }
        }
    }

    fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Probes Redis every `sync_interval`, reads the locks other replicas
    /// started, and sends the rate checks; returns never (stopped by being
    /// dropped with the server's tasks).
    pub async fn run(self: Arc<Self>) {
        let receiver = lock(&self.rate_receiver).take();
        if let Some(receiver) = receiver {
            tokio::spawn(Arc::clone(&self).send_rates(receiver));
        }
        let mut newest_lock: u64 = 0;
        let mut newest_revoked: u64 = 0;
        let mut ticker = tokio::time::interval(self.sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.mirror.prune();
            let mut conn = self.connection();
            let probe = tokio::time::timeout(
                self.timeout.max(Duration::from_millis(250)),
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await;
            match probe {
                Ok(Ok(_)) => {
                    if !self.health.up.swap(true, Ordering::Relaxed) {
                        self.health.up_gauge.set(1);
                        tracing::info!(
                            "Redis answers again: limits, lockouts and OAuth grants are shared"
                        );
                    }
                }
                Ok(Err(error)) => {
                    self.failed(&error);
                    continue;
                }
                Err(_) => {
                    self.failed(&"no answer to PING");
                    continue;
                }
            }
            if self.oauth.load(Ordering::Relaxed) {
                self.read_form_key().await;
            }
            newest_lock = self.read_locks(newest_lock).await.unwrap_or(newest_lock);
            newest_revoked = self
                .read_revoked(newest_revoked)
                .await
                .unwrap_or(newest_revoked);
        }
    }

    /// Mirrors the address locks Redis holds that end at or after
    /// `newest` (ms); returns the newest end seen.
    async fn read_locks(&self, newest: u64) -> Option<u64> {
        let mut conn = self.connection();
        let mut invocation = self.locks_since.key(self.key(&["locks"]));
        invocation.arg(newest).arg(LOCKS_PER_SYNC);
        let found: Vec<String> = self
            .call(Fallback::Lockout, invocation.invoke_async(&mut conn))
            .await?;
        let mut items = found.into_iter();
        let now_ms: u64 = items.next()?.parse().ok()?;
        let now = Instant::now();
        let mut newest = newest;
        let rest: Vec<String> = items.collect();
        for pair in rest.chunks(2) {
            let [address, until] = pair else { continue };
            let (Ok(address), Ok(until)) = (address.parse::<IpAddr>(), until.parse::<f64>()) else {
                continue;
            };
            let until = until as u64;
            newest = newest.max(until);
            let remaining = Duration::from_millis(until.saturating_sub(now_ms));
            Mirror::insert(
                &self.mirror.addresses,
                Some(&self.mirror.address_count),
                address,
                now + remaining,
            );
        }
        Some(newest)
    }

    /// Sends queued rate checks in pipelined batches, one GCRA script per
    /// distinct key with the batch's count as its cost, and mirrors every
    /// key Redis says is over.
    async fn send_rates(
        self: Arc<Self>,
        mut receiver: tokio::sync::mpsc::Receiver<(RateKind, String)>,
    ) {
        let mut batch: HashMap<(RateKind, String), u32> = HashMap::new();
        while let Some(first) = receiver.recv().await {
            batch.clear();
            *batch.entry(first).or_default() += 1;
            while batch.len() < RATE_BATCH {
                match receiver.try_recv() {
                    Ok(check) => *batch.entry(check).or_default() += 1,
                    Err(_) => break,
                }
            }
            let checks: Vec<((RateKind, String), u32)> = batch.drain().collect();
            let Some(answers) = self.gcra_batch(&checks).await else {
                continue;
            };
            let now = Instant::now();
            for (((kind, key), _), (_, wait_us)) in checks.into_iter().zip(answers) {
                if wait_us > 0 {
                    Mirror::insert(
                        &self.mirror.rates,
                        Some(&self.mirror.rate_count),
                        (kind, key),
                        now + Duration::from_micros(wait_us),
                    );
                }
            }
        }
    }

    async fn gcra_batch(&self, checks: &[((RateKind, String), u32)]) -> Option<Vec<(u64, u64)>> {
        let mut pipe = redis::pipe();
        for ((kind, key), cost) in checks {
            let (interval, burst) = self.rates.get(kind).copied().unwrap_or((1, 1));
            let kind = match kind {
                RateKind::Address => "ip",
                RateKind::User => "user",
            };
            pipe.cmd("EVALSHA")
                .arg(self.gcra.get_hash())
                .arg(1)
                .arg(self.key(&["rl", kind, key]))
                .arg(interval)
                .arg(burst)
                .arg(*cost);
        }
        let mut conn = self.connection();
        let first = if self.is_up() {
            tokio::time::timeout(self.timeout, pipe.query_async::<Vec<(u64, u64)>>(&mut conn)).await
        } else {
            self.fell_back(Fallback::Rate);
            return None;
        };
        match first {
            Ok(Err(error))
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // Redis restarted (or flushed its scripts): load and retry.
                let loaded = self
                    .call(Fallback::Rate, self.gcra.load_async(&mut conn))
                    .await;
                loaded?;
                self.call(Fallback::Rate, pipe.query_async(&mut conn)).await
            }
            Ok(Ok(answers)) => Some(answers),
            Ok(Err(error)) => {
                self.failed(&error);
                self.fell_back(Fallback::Rate);
                None
            }
            Err(_) => {
                self.failed(&"no answer within [cluster] timeout");
                self.fell_back(Fallback::Rate);
                None
            }
        }
    }

    /// Reads the shared consent-form key, making it if no replica has
    /// (read every probe: a Redis that restarted empty gets a new one, and
    /// every replica follows within a sync interval).
    async fn read_form_key(&self) {
        let mut fresh = [0u8; 32];
        if getrandom::fill(&mut fresh).is_err() {
            return;
        }
        let key = self.key(&["oauth", "form-key"]);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&key)
            .arg(hex(&fresh))
            .arg("NX")
            .ignore();
        pipe.cmd("GET").arg(&key);
        let mut conn = self.connection();
        let Some((text,)) = self
            .call::<(String,), _>(Fallback::Grants, pipe.query_async(&mut conn))
            .await
        else {
            return;
        };
        let mut key = [0u8; 32];
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return;
        }
        for (i, pair) in bytes.chunks(2).enumerate() {
            let Some(byte) = std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
            else {
                return;
            };
            key[i] = byte;
        }
        if self.form_key.load().as_deref() != Some(&key) {
            self.form_key.store(Some(Arc::new(key)));
        }
    }

    /// Remembers a revoked family until `until` (Unix seconds).
    fn remember_revoked(&self, family: &str, until: u64) {
        let mut families = lock(&self.mirror.families);
        let entry = families.entry(family.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        self.mirror
            .family_count
            .store(families.len(), Ordering::Relaxed);
    }

    /// Whether a family was revoked, here or (as of the last sync) at any
    /// replica.
    fn is_revoked(&self, family: &str, now: u64) -> bool {
        if self.mirror.family_count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        lock(&self.mirror.families)
            .get(family)
            .is_some_and(|until| *until > now)
    }

    /// Copies the revocations made since `newest` (Unix seconds, the end of
    /// memory of the newest one read); returns the newest seen.
    async fn read_revoked(&self, newest: u64) -> Option<u64> {
        let from = newest.max(crate::auth::oauth::unix_now());
        let mut conn = self.connection();
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.key(&["oauth", "revoked"]))
            .arg(from)
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(LOCKS_PER_SYNC);
        let found: Vec<(String, f64)> = self
            .call(Fallback::Grants, cmd.query_async(&mut conn))
            .await?;
        let mut newest = newest;
        for (family, until) in found {
            let until = until as u64;
            newest = newest.max(until);
            self.remember_revoked(&family, until);
        }
        Some(newest)
    }

    fn next_attempt_id(&self) -> String {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:x}", self.replica)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}
