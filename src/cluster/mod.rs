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

/// Probes that fail in a row before the connection is rebuilt.
const REBUILD_AFTER: u32 = 3;

/// The longest a copy of what Redis said is kept (a corrupt or hostile
/// value cannot overflow a clock).
const MAX_COPY: Duration = Duration::from_secs(366 * 24 * 3600);

/// `now + d`, with `d` clamped to [`MAX_COPY`].
fn until(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_COPY)).unwrap_or(now)
}

/// The most address locks, and revoked grants, read from Redis per probe.
const COPIES_PER_SYNC: usize = 10_000;

/// The most rate checks waiting to be sent: past it, checks are not sent
/// (the local limiter still applies).
const RATE_QUEUE: usize = 65_536;

/// The most distinct keys in one pipelined batch of rate checks.
const RATE_BATCH: usize = 128;

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
    /// Calls that failed in a row (reset by a success): two trip `up`.
    failures: std::sync::atomic::AtomicU32,
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
    /// Rebuilt when probes keep failing: redis-rs reconnects by itself
    /// only after I/O errors, not after a failover's READONLY or a failed
    /// handshake.
    conn: arc_swap::ArcSwap<ConnectionManager>,
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    /// How long a verification in flight holds its slot in Redis.
    pending_hold: Duration,
    /// `gatehouse:{<prefix>}:`
    prefix: String,
    timeout: Duration,
    sync_interval: Duration,
    health: Health,
    gcra: redis::Script,
    begin: redis::Script,
    finish: redis::Script,
    live_locks: redis::Script,
    /// Per kind: the emission interval (µs) and the burst.
    rates: HashMap<RateKind, (u64, u32)>,
    lockout: LockoutPolicy,
    mirror: Mirror,
    rate_queue: tokio::sync::mpsc::Sender<(RateKind, String)>,
    rate_receiver: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<(RateKind, String)>>>,
    /// Reservations whose answer came too late to use: released in the
    /// background so that they do not hold a slot until they expire.
    releases: tokio::sync::mpsc::Sender<crate::limit::SharedAttempt>,
    release_receiver:
        std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<crate::limit::SharedAttempt>>>,
    /// Makes attempt ids unique across replicas.
    replica: u64,
    attempts: AtomicU64,
    /// Keys usernames' digests, so that Redis holds no names (derived
    /// from `[cluster] secret_file`, like the two keys below).
    user_key: ring::hmac::Key,
    /// Seals what OAuth grants Redis keeps (who, which client, which
    /// scopes), and binds each to its key: whoever reads Redis learns
    /// nothing of them, and whoever writes to it cannot make a grant.
    seal: ring::aead::LessSafeKey,
    /// The key every replica signs consent forms with.
    form_key: [u8; 32],
    /// Keys the refresh-token digests a family holds: whoever writes to
    /// Redis cannot set one for a token they have.
    refresh_key: ring::hmac::Key,
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
        verify_timeout: Duration,
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
        let client = match &settings.ca {
            // A private CA: trusted instead of the system's roots.
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| ClusterError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            // Deadlines are set per call (`call`, `call_within`): one set
            // here would cut every call, even those allowed longer.
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
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
        let (releases, release_receiver) = tokio::sync::mpsc::channel(RATE_QUEUE);
        let fallbacks = Family::<Labels, Counter>::default();
        for what in [Fallback::Rate, Fallback::Lockout, Fallback::Grants] {
            let _ = fallbacks.get_or_create(&vec![("what", what.label())]);
        }
        let up_gauge = Gauge::default();
        up_gauge.set(1);
        Ok(Arc::new(Self {
            conn: arc_swap::ArcSwap::from_pointee(conn),
            client,
            manager_config: config,
            // The longest a verification may wait, and a margin to run.
            pending_hold: verify_timeout.saturating_add(Duration::from_secs(30)),
            prefix: format!("gatehouse:{{{}}}:", settings.prefix),
            timeout: settings.timeout,
            sync_interval: settings.sync_interval,
            health: Health {
                up: AtomicBool::new(true),
                failures: std::sync::atomic::AtomicU32::new(0),
                up_gauge,
                errors: Counter::default(),
                fallbacks,
            },
            gcra: redis::Script::new(scripts::GCRA),
            begin: redis::Script::new(&scripts::begin()),
            finish: redis::Script::new(&scripts::finish()),
            live_locks: redis::Script::new(scripts::LIVE_LOCKS),
            rates: kinds,
            lockout,
            mirror: Mirror::default(),
            rate_queue,
            rate_receiver: std::sync::Mutex::new(Some(rate_receiver)),
            releases,
            release_receiver: std::sync::Mutex::new(Some(release_receiver)),
            replica,
            attempts: AtomicU64::new(0),
            user_key: ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                &derive(&settings.secret, "usernames"),
            ),
            seal: ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(
                    &ring::aead::CHACHA20_POLY1305,
                    &derive(&settings.secret, "grants"),
                )
                .map_err(|_| ClusterError::Random)?,
            ),
            form_key: derive(&settings.secret, "consent forms"),
            refresh_key: ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                &derive(&settings.secret, "refresh tokens"),
            ),
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

    /// A username as Redis sees it: a digest keyed by the shared secret
    /// (names are not stored, and cannot be tested against it).
    fn user_digest(&self, username: &str) -> String {
        let tag = ring::hmac::sign(&self.user_key, username.as_bytes());
        crate::hex::encode(&tag.as_ref()[..16])
    }

    /// A refresh token's digest as the family `key` stores it: keyed by
    /// the shared secret and bound to the family.
    fn refresh_mac(&self, key: &str, digest: &[u8; 32]) -> String {
        let mut context = ring::hmac::Context::with_key(&self.refresh_key);
        context.update(key.as_bytes());
        context.update(&[0]);
        context.update(digest);
        crate::hex::encode(context.sign().as_ref())
    }

    /// `plain` sealed for the Redis key `bound_to`: base64 of a random
    /// nonce and the ciphertext with its tag.
    fn seal(&self, bound_to: &str, plain: &[u8]) -> Option<String> {
        use base64::Engine as _;
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        getrandom::fill(&mut nonce).ok()?;
        let mut data = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(bound_to.as_bytes()),
                &mut data,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(base64::engine::general_purpose::STANDARD_NO_PAD.encode(out))
    }

    /// What [`seal`](Self::seal) sealed for `bound_to`; `None` when it was
    /// sealed for another key, by another secret, or altered.
    fn open(&self, bound_to: &str, sealed: &str) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(sealed)
            .ok()?;
        if bytes.len() < ring::aead::NONCE_LEN {
            return None;
        }
        let (nonce, rest) = bytes.split_at(ring::aead::NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, ring::aead::Aad::from(bound_to.as_bytes()), &mut data)
            .ok()?;
        Some(plain.to_vec())
    }

    fn fell_back(&self, what: Fallback) {
        self.health
            .fallbacks
            .get_or_create(&vec![("what", what.label())])
            .inc();
    }

    /// Counts a failed call; the second in a row marks Redis down: from
    /// then on nothing waits for it until the probe finds it again. Logged
    /// once per outage.
    fn failed(&self, error: &dyn std::fmt::Display) {
        self.health.errors.inc();
        tracing::debug!(%error, "Redis call failed");
        let in_a_row = self.health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= 2 {
            self.mark_down(error);
        }
    }

    fn mark_down(&self, error: &dyn std::fmt::Display) {
        if self.health.up.swap(false, Ordering::Relaxed) {
            self.health.up_gauge.set(0);
            tracing::warn!(%error, "Redis unreachable: each replica decides from its own records (rate limits local, locks kept, OAuth grants refused with 503) until it answers again");
        }
    }

    fn succeeded(&self) {
        self.health.failures.store(0, Ordering::Relaxed);
    }

    /// Runs one Redis call under the deadline. `None`: Redis is down (or
    /// did not answer this one) and the caller falls back.
    async fn call<T, F>(&self, what: Fallback, call: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if !self.is_up() {
            self.fell_back(what);
            return None;
        }
        self.call_within(what, self.timeout, call).await
    }

    /// [`call`](Self::call) with its own deadline, tried even while Redis
    /// is marked down (for work nobody waits on, such as recording an
    /// attempt's outcome).
    async fn call_within<T, F>(&self, what: Fallback, deadline: Duration, call: F) -> Option<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(value)) => {
                self.succeeded();
                Some(value)
            }
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
        ConnectionManager::clone(&self.conn.load())
    }

    /// A new connection manager (lazy: it connects on first use).
    fn rebuild(&self) {
        match ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.manager_config.clone(),
        ) {
            Ok(conn) => self.conn.store(Arc::new(conn)),
            Err(error) => tracing::debug!(%error, "Redis connection not rebuilt"),
        }
    }

    /// Probes Redis every `sync_interval`, reads the locks other replicas
    /// started, and sends the rate checks; returns never (stopped by being
    /// dropped with the server's tasks).
    pub async fn run(self: Arc<Self>) {
        let receiver = lock(&self.rate_receiver).take();
        if let Some(receiver) = receiver {
            tokio::spawn(Arc::clone(&self).send_rates(receiver));
        }
        let releases = lock(&self.release_receiver).take();
        if let Some(mut releases) = releases {
            let cluster = Arc::clone(&self);
            tokio::spawn(async move {
                while let Some(attempt) = releases.recv().await {
                    crate::limit::SharedLimits::cancel(&*cluster, attempt).await;
                }
            });
        }
        let mut ticker = tokio::time::interval(self.sync_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed_probes = 0u32;
        let probe_key = self.key(&["probe"]);
        loop {
            ticker.tick().await;
            self.mirror.prune();
            let mut conn = self.connection();
            // A write, not a PING: a Redis demoted to a read-only replica
            // answers PING but refuses every script.
            let mut probe = redis::cmd("SET");
            probe.arg(&probe_key).arg(1).arg("PX").arg(60_000);
            let answer = tokio::time::timeout(
                self.timeout.max(Duration::from_millis(250)),
                probe.query_async::<()>(&mut conn),
            )
            .await;
            let error = match answer {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some("no answer to the probe".to_owned()),
            };
            if let Some(error) = error {
                self.health.errors.inc();
                self.mark_down(&error);
                failed_probes += 1;
                if failed_probes.is_multiple_of(REBUILD_AFTER) {
                    self.rebuild();
                }
                continue;
            }
            failed_probes = 0;
            self.succeeded();
            if !self.health.up.swap(true, Ordering::Relaxed) {
                self.health.up_gauge.set(1);
                tracing::info!("Redis answers again: limits, lockouts and OAuth grants are shared");
            }
            self.read_locks().await;
            self.read_revoked().await;
        }
    }

    /// Copies every address lock Redis holds now (the whole live set,
    /// not what changed since a cursor: replicas' clocks and lock durations
    /// may differ, so an end time is no order of arrival).
    async fn read_locks(&self) {
        let mut conn = self.connection();
        let mut invocation = self.live_locks.key(self.key(&["locks"]));
        invocation.arg(COPIES_PER_SYNC);
        let Some(found) = self
            .call::<Vec<String>, _>(Fallback::Lockout, invocation.invoke_async(&mut conn))
            .await
        else {
            return;
        };
        let mut items = found.into_iter();
        let Some(now_ms) = items.next().and_then(|n| n.parse::<u64>().ok()) else {
            return;
        };
        let now = Instant::now();
        let rest: Vec<String> = items.collect();
        if rest.len() / 2 >= COPIES_PER_SYNC {
            tracing::warn!(
                copied = COPIES_PER_SYNC,
                "more locked addresses in Redis than one sync copies: the locks ending first are kept only where they were made"
            );
        }
        for pair in rest.chunks(2) {
            let [address, end] = pair else { continue };
            let (Ok(address), Ok(end)) = (address.parse::<IpAddr>(), end.parse::<f64>()) else {
                continue;
            };
            let remaining = Duration::from_millis((end as u64).saturating_sub(now_ms));
            Mirror::insert(
                &self.mirror.addresses,
                Some(&self.mirror.address_count),
                address,
                until(now, remaining),
            );
        }
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
                        until(now, Duration::from_micros(wait_us)),
                    );
                }
            }
        }
    }

    async fn gcra_batch(&self, checks: &[((RateKind, String), u32)]) -> Option<Vec<(u64, u64)>> {
        if !self.is_up() {
            self.fell_back(Fallback::Rate);
            return None;
        }
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
        // Nobody waits on a batch, so a failed one is dropped (those checks
        // were decided locally) without marking Redis down: a slow batch
        // an attacker provoked must not turn the lockouts local.
        let dropped = |_: &dyn std::fmt::Display| {
            self.health.errors.inc();
            self.fell_back(Fallback::Rate);
            None
        };
        let mut conn = self.connection();
        let deadline = self.timeout.saturating_mul(4);
        match tokio::time::timeout(deadline, pipe.query_async::<Vec<(u64, u64)>>(&mut conn)).await {
            Ok(Ok(answers)) => Some(answers),
            Ok(Err(error))
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                // Redis restarted (or flushed its scripts): load and retry.
                match tokio::time::timeout(deadline, self.gcra.load_async(&mut conn)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return dropped(&error),
                    Err(_) => return dropped(&"timeout"),
                }
                match tokio::time::timeout(deadline, pipe.query_async(&mut conn)).await {
                    Ok(Ok(answers)) => Some(answers),
                    Ok(Err(error)) => dropped(&error),
                    Err(_) => dropped(&"timeout"),
                }
            }
            Ok(Err(error)) => dropped(&error),
            Err(_) => dropped(&"timeout"),
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

    /// Copies every revocation whose tokens may still be alive (the whole
    /// live set, for the same reason as the locks).
    async fn read_revoked(&self) {
        let mut conn = self.connection();
        // Newest first: past the cap it is the oldest that are missed.
        let mut cmd = redis::cmd("ZREVRANGEBYSCORE");
        cmd.arg(self.key(&["oauth", "revoked"]))
            .arg("+inf")
            .arg(crate::auth::oauth::unix_now())
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(COPIES_PER_SYNC);
        let Some(found) = self
            .call::<Vec<(String, f64)>, _>(Fallback::Grants, cmd.query_async(&mut conn))
            .await
        else {
            return;
        };
        if found.len() >= COPIES_PER_SYNC {
            tracing::warn!(
                copied = COPIES_PER_SYNC,
                "more revoked OAuth grants in Redis than one sync copies: the oldest are refused only by the replica that revoked them"
            );
        }
        let latest = crate::auth::oauth::unix_now().saturating_add(MAX_COPY.as_secs());
        for (family, end) in found {
            self.remember_revoked(&family, (end as u64).min(latest));
        }
    }

    fn next_attempt_id(&self) -> String {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{n:x}", self.replica)
    }
}

/// A 32-byte key for `purpose`, derived from the shared secret.
fn derive(secret: &crate::secret::Password, purpose: &str) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("gatehouse cluster: {purpose}").as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}
