//! Brute-force defence: per-address and per-user rate limits (governor),
//! failure lockouts, and the client address they are keyed by.

mod client;
mod lockout;
pub mod shared;

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

pub use client::{ClientAddress, ClientIpResolver, UNREADABLE_CLIENT, UnixPeer, ip_key};
pub use lockout::{Attempt, LockedOut, LockoutPolicy, Lockouts, Refusal};
pub use shared::{RateKind, SharedAttempt, SharedLimits};

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: NonZeroU32,
    /// Requests allowed at once before the sustained rate applies.
    pub burst: NonZeroU32,
}

impl Rate {
    /// A rate of `per_second` with `burst`; zeros are raised to 1.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
        }
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// One keyed limiter whose key count stays bounded.
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    quota: Quota,
    limiter: ArcSwap<DefaultKeyedRateLimiter<K>>,
    max_keys: usize,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// A limiter allowing `rate` per key, tracking at most about `max_keys`
    /// keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            quota: rate.quota(),
            limiter: ArcSwap::from_pointee(DefaultKeyedRateLimiter::keyed(rate.quota())),
            max_keys: max_keys.max(1),
            checks: AtomicU64::new(0),
        }
    }

    /// `Ok` if `key` may go on, or how long it must wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        // Counting a DashMap walks its shards, so the cap is only looked at
        // every 1024 checks; the state can overshoot by at most that much.
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(1024)
        {
            self.enforce_cap();
        }
        self.limiter
            .load()
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn enforce_cap(&self) {
        let limiter = self.limiter.load();
        if limiter.len() <= self.max_keys {
            return;
        }
        limiter.retain_recent();
        let keys = limiter.len();
        if keys > self.max_keys {
            // Every key is active (a flood of distinct addresses): start
            // afresh rather than grow without bound. Lockouts, the real
            // brute-force defence, are kept separately and survive this.
            tracing::warn!(
                keys,
                cap = self.max_keys,
                "rate-limit state over its cap: reset"
            );
            self.limiter
                .store(Arc::new(DefaultKeyedRateLimiter::keyed(self.quota)));
        }
    }

    /// Forgets keys whose state is back to fresh and returns the memory.
    pub fn prune(&self) {
        let limiter = self.limiter.load();
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.limiter.load().len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.limiter.load().is_empty()
    }
}

/// The rate limits the auth layer applies.
#[derive(Default)]
pub struct RateLimits {
    /// Every request, keyed by client address (IPv6 by /64).
    pub per_ip: Option<KeyedLimit<IpAddr>>,
    /// Authenticated requests, keyed by username: a quota, not a defence.
    pub per_user: Option<KeyedLimit<Arc<str>>>,
}

impl RateLimits {
    /// Limits from optional rates; `max_keys` bounds each limiter's state.
    pub fn new(per_ip: Option<Rate>, per_user: Option<Rate>, max_keys: usize) -> Self {
        Self {
            per_ip: per_ip.map(|r| KeyedLimit::new(r, max_keys)),
            per_user: per_user.map(|r| KeyedLimit::new(r, max_keys)),
        }
    }

    /// Prunes both limiters.
    pub fn prune(&self) {
        for limit in self.per_ip.iter() {
            limit.prune();
        }
        for limit in self.per_user.iter() {
            limit.prune();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let limit = KeyedLimit::new(rate(1, 3), 100);
        let key: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(&key).is_ok());
        }
        let wait = limit.check(&key).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limit.check(&other).is_ok());
    }

    #[test]
    fn a_million_distinct_keys_stay_bounded() {
        let cap = 50_000;
        let limit = KeyedLimit::new(rate(20, 40), cap);
        let mut peak = 0;
        for i in 0..1_000_000u32 {
            let _ = limit.check(&IpAddr::from(i.to_be_bytes()));
            peak = peak.max(limit.len());
        }
        assert!(peak <= cap + 1024, "peak {peak}");
        println!("1,000,000 distinct keys: peak state {peak} keys (cap {cap})");
    }
}
