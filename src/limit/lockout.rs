//! Failure records and lockouts: after `max_failures` failed verifications
//! within `window`, further attempts are refused for `duration` without any
//! argon2 work.
//!
//! Two records are kept: per client address (across all usernames), and per
//! (client address, username). The username record is deliberately keyed by
//! address too: a global per-username lockout would let anyone who knows a
//! username lock its owner out from everywhere. With this keying an attacker
//! can only lock *themselves* out. Guesses spread over many addresses are
//! bounded by the per-address records, the rate limits and the global
//! verification bound instead.
//!
//! An attempt is reserved before it is verified and counted as pending, so
//! that a burst of concurrent guesses cannot slip more than `max_failures`
//! verifications past the check before the first failure is recorded.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::sync::lock;
use std::time::{Duration, Instant};

/// The lockout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failed verifications allowed per address (and per address+user) within
    /// `window`; 0 turns lockouts off.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// How long a lockout lasts.
    pub duration: Duration,
    /// The most addresses (and address+user pairs) tracked at once; past it,
    /// stale records are pruned, and unlocked ones dropped if need be.
    pub max_tracked: usize,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(600),
            duration: Duration::from_secs(900),
            max_tracked: 100_000,
        }
    }
}

/// Why an attempt may not be verified now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Locked out; try again after this long.
    Locked(Duration),
    /// As many attempts as remain allowed are being verified right now.
    Busy,
    /// The record table is full of live locks and attempts in flight, so a
    /// new address cannot be tracked: it is refused rather than let through
    /// uncounted (fail closed).
    Full,
}

/// A lockout that a failure just started, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockedOut {
    /// The client address is locked out (for every username).
    Address,
    /// The client address is locked out for this username.
    User,
    /// Both.
    Both,
}

#[derive(Debug, Clone)]
struct Record {
    window_start: Instant,
    failures: u32,
    pending: u32,
    locked_until: Option<Instant>,
}

impl Record {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            failures: 0,
            pending: 0,
            locked_until: None,
        }
    }

    /// Ends an expired lock or window; returns the remaining lock, if any.
    fn refresh(&mut self, policy: &LockoutPolicy, now: Instant) -> Option<Duration> {
        if let Some(until) = self.locked_until {
            if until > now {
                return Some(until - now);
            }
            self.locked_until = None;
            self.failures = 0;
            self.window_start = now;
        }
        if now.duration_since(self.window_start) >= policy.window {
            self.failures = 0;
            self.window_start = now;
        }
        None
    }

    fn admit(&mut self, policy: &LockoutPolicy, now: Instant) -> Result<(), Refusal> {
        if let Some(remaining) = self.refresh(policy, now) {
            return Err(Refusal::Locked(remaining));
        }
        if self.failures + self.pending >= policy.max_failures {
            return Err(Refusal::Busy);
        }
        Ok(())
    }

    /// Records a failure; true if it started a lockout.
    fn fail(&mut self, policy: &LockoutPolicy, now: Instant) -> bool {
        self.refresh(policy, now);
        self.failures += 1;
        if self.failures >= policy.max_failures && self.locked_until.is_none() {
            self.locked_until = Some(now + policy.duration);
            return true;
        }
        false
    }

    fn is_stale(&self, policy: &LockoutPolicy, now: Instant) -> bool {
        self.pending == 0
            && self.locked_until.is_none_or(|until| until <= now)
            && now.duration_since(self.window_start) >= policy.window
    }

    fn is_locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|until| until > now)
    }
}

/// Records keyed by `K`, bounded in number.
struct Records<K> {
    map: HashMap<K, Record>,
}

impl<K: Hash + Eq + Copy> Records<K> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
        }
    }

    /// The record for `key`, making room for it if needed; `None` when every
    /// tracked record is locked or in use and there is no room. The table
    /// then holds at most `max_tracked` records (about 100 bytes each: 10 MB
    /// at the default 100,000), and new keys are refused until locks expire.
    fn entry(&mut self, key: K, policy: &LockoutPolicy, now: Instant) -> Option<&mut Record> {
        if !self.map.contains_key(&key) && self.map.len() >= policy.max_tracked {
            self.prune(policy, now);
            if self.map.len() >= policy.max_tracked {
                // Only locks and in-flight attempts are worth keeping.
                self.map.retain(|_, r| r.pending > 0 || r.is_locked(now));
            }
            if self.map.len() >= policy.max_tracked {
                return None;
            }
        }
        Some(self.map.entry(key).or_insert_with(|| Record::new(now)))
    }

    fn prune(&mut self, policy: &LockoutPolicy, now: Instant) {
        self.map.retain(|_, r| !r.is_stale(policy, now));
    }
}

/// Failure records and lockouts per address and per (address, username).
pub struct Lockouts {
    policy: LockoutPolicy,
    addresses: Mutex<Records<IpAddr>>,
    /// Zero only while no address is locked: raised (under the lock) when
    /// a lock starts, counted exactly (under the lock) when pruned, read
    /// without it. The common case, no lock anywhere, costs a request
    /// neither the mutex nor the clock.
    locked_addresses: std::sync::atomic::AtomicUsize,
    users: Mutex<Records<(IpAddr, u64)>>,
    /// Usernames are stored as keyed 64-bit hashes: a 3 KiB username costs
    /// no more memory than a short one, and names are not kept around.
    user_hasher: std::collections::hash_map::RandomState,
}

/// A reserved attempt: finish it with [`Lockouts::finish`].
#[derive(Debug)]
#[must_use = "an attempt must be finished, or its slot stays reserved"]
pub struct Attempt {
    /// `None` for an attempt whose client address is unknown: it is kept
    /// out of the per-address table.
    address: Option<IpAddr>,
    user: u64,
}

/// The (address, user) key of an attempt from an unknown address: all such
/// attempts share it, so their records are per user.
const UNKNOWN_ADDRESS: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);

impl Lockouts {
    /// Lockouts under `policy`.
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            addresses: Mutex::new(Records::new()),
            locked_addresses: std::sync::atomic::AtomicUsize::new(0),
            users: Mutex::new(Records::new()),
            user_hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    fn enabled(&self) -> bool {
        self.policy.max_failures > 0
    }

    /// [`address_locked`](Self::address_locked) now; no mutex taken and
    /// no clock read while no address is locked.
    pub fn address_locked_now(&self, address: IpAddr) -> Option<Duration> {
        if !self.enabled()
            || self
                .locked_addresses
                .load(std::sync::atomic::Ordering::Acquire)
                == 0
        {
            return None;
        }
        self.address_locked(address, Instant::now())
    }

    /// How long `address` stays locked out, if it is.
    pub fn address_locked(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let mut addresses = lock(&self.addresses);
        let record = addresses.map.get_mut(&address)?;
        record.refresh(&self.policy, now)
    }

    /// Reserves a verification attempt for `username` from `address`, or says
    /// why it may not be made now.
    pub fn begin(&self, address: IpAddr, username: &str, now: Instant) -> Result<Attempt, Refusal> {
        let user = self.user_hasher.hash_one(username);
        if !self.enabled() {
            return Ok(Attempt {
                address: Some(address),
                user,
            });
        }
        let mut addresses = lock(&self.addresses);
        let mut users = lock(&self.users);
        // The address is checked first: a locked address hears about its own
        // (longer) lock, whatever the username.
        let address_record = addresses
            .entry(address, &self.policy, now)
            .ok_or(Refusal::Full)?;
        address_record.admit(&self.policy, now)?;
        let user_record = users
            .entry((address, user), &self.policy, now)
            .ok_or(Refusal::Full)?;
        user_record.admit(&self.policy, now)?;
        // Both records exist now (a full table refuses above): the attempt
        // is always counted in both.
        address_record.pending += 1;
        user_record.pending += 1;
        Ok(Attempt {
            address: Some(address),
            user,
        })
    }

    /// Reserves an attempt for `username` when the client's address is not
    /// known (the layer served without connect info): no address record is
    /// kept or consulted, since every client would share it, and the
    /// username's record is shared by every client. That is a per-user
    /// lockout, which the address-keyed design avoids; it is the better of
    /// the two evils only because the alternative locks out everyone.
    pub fn begin_unknown_address(&self, username: &str, now: Instant) -> Result<Attempt, Refusal> {
        let user = self.user_hasher.hash_one(username);
        if self.enabled() {
            let mut users = lock(&self.users);
            let record = users
                .entry((UNKNOWN_ADDRESS, user), &self.policy, now)
                .ok_or(Refusal::Full)?;
            record.admit(&self.policy, now)?;
            record.pending += 1;
        }
        Ok(Attempt {
            address: None,
            user,
        })
    }

    fn user_key(attempt: &Attempt) -> (IpAddr, u64) {
        (attempt.address.unwrap_or(UNKNOWN_ADDRESS), attempt.user)
    }

    /// Ends an attempt: a failure counts towards lockouts, a success clears
    /// this username's record for the address (not the address's own, so
    /// logging into one's own account cannot buy more guesses at another's).
    pub fn finish(&self, attempt: Attempt, success: bool, now: Instant) -> Option<LockedOut> {
        if !self.enabled() {
            return None;
        }
        let mut address_locked = false;
        if let Some(address) = attempt.address
            && let Some(record) = lock(&self.addresses).map.get_mut(&address)
        {
            record.pending = record.pending.saturating_sub(1);
            if !success {
                address_locked = record.fail(&self.policy, now);
            }
            if address_locked {
                // Still under the lock: a prune counts after or before.
                self.locked_addresses
                    .fetch_add(1, std::sync::atomic::Ordering::Release);
            }
        }
        let mut user_locked = false;
        let mut users = lock(&self.users);
        let key = Self::user_key(&attempt);
        if success && attempt.address.is_some() {
            users.map.remove(&key);
        } else if success {
            // From an unknown address the record is every client's: one
            // login must not wipe an attacker's failures (nor lift a lock a
            // still-running verification started under).
            if let Some(record) = users.map.get_mut(&key) {
                record.pending = record.pending.saturating_sub(1);
            }
        } else if let Some(record) = users.map.get_mut(&key) {
            record.pending = record.pending.saturating_sub(1);
            user_locked = record.fail(&self.policy, now);
        }
        match (address_locked, user_locked) {
            (true, true) => Some(LockedOut::Both),
            (true, false) => Some(LockedOut::Address),
            (false, true) => Some(LockedOut::User),
            (false, false) => None,
        }
    }

    /// Ends an attempt that could not be verified (overload): it counts
    /// neither as a failure nor as a success.
    pub fn cancel(&self, attempt: Attempt) {
        if !self.enabled() {
            return;
        }
        if let Some(address) = attempt.address
            && let Some(record) = lock(&self.addresses).map.get_mut(&address)
        {
            record.pending = record.pending.saturating_sub(1);
        }
        if let Some(record) = lock(&self.users).map.get_mut(&Self::user_key(&attempt)) {
            record.pending = record.pending.saturating_sub(1);
        }
    }

    /// Drops records that no longer matter (no lock, nothing pending, window
    /// over) and gives the memory back.
    pub fn prune(&self, now: Instant) {
        let mut addresses = lock(&self.addresses);
        addresses.prune(&self.policy, now);
        addresses.map.shrink_to_fit();
        let locked = addresses.map.values().filter(|r| r.is_locked(now)).count();
        self.locked_addresses
            .store(locked, std::sync::atomic::Ordering::Release);
        drop(addresses);
        let mut users = lock(&self.users);
        users.prune(&self.policy, now);
        users.map.shrink_to_fit();
    }

    /// How many (address, address+user) records are held.
    pub fn tracked(&self) -> (usize, usize) {
        (lock(&self.addresses).map.len(), lock(&self.users).map.len())
    }
}

#[cfg(test)]
mod tests;
