//! The verified-credentials cache: credentials already proven correct skip
//! argon2, so an authenticated request costs what a public one does.
//!
//! - Only successes enter, so a flood of wrong passwords cannot fill or evict
//!   it.
//! - Entries are keyed by username and hold an HMAC-SHA256, under a random
//!   per-process key, of the length-prefixed username and the password, with
//!   the fingerprint of the stored PHC hash beside it: no password is kept,
//!   no two inputs collide, and a changed password (new hash) or removed
//!   user (no hash) can never match. The fingerprint is compared beside the
//!   HMAC rather than hashed into it: a short credential then fits in one
//!   SHA-256 block, a third less hashing on every cached request.
//! - Digests are compared in constant time; entries expire after `ttl`
//!   (absolute, not extended by use) and there are at most `max_entries`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use ring::hmac;
use subtle::ConstantTimeEq;

/// Cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Whether verified credentials are cached at all.
    pub enabled: bool,
    /// How long a verified credential stays valid.
    pub ttl: Duration,
    /// The most entries (one per user) held at once.
    pub max_entries: usize,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(300),
            max_entries: 10_000,
        }
    }
}

/// A keyed digest of one (username, password), and the fingerprint of the
/// stored hash it was checked against. Not `Debug`.
#[derive(Clone, Copy)]
pub struct CredentialDigest {
    mac: [u8; 32],
    stored: [u8; 32],
}

impl CredentialDigest {
    /// Constant-time equality of both halves, a word at a time (a byte-wise
    /// `ct_eq` puts an optimisation barrier on every byte and showed up in
    /// profiles).
    pub fn matches(&self, other: &CredentialDigest) -> bool {
        let words = |d: &[u8; 32]| {
            std::array::from_fn::<u64, 4, _>(|i| {
                let mut word = [0u8; 8];
                word.copy_from_slice(&d[i * 8..i * 8 + 8]);
                u64::from_ne_bytes(word)
            })
        };
        let same = |x: &[u8; 32], y: &[u8; 32]| {
            let (a, b) = (words(x), words(y));
            a[0].ct_eq(&b[0]) & a[1].ct_eq(&b[1]) & a[2].ct_eq(&b[2]) & a[3].ct_eq(&b[3])
        };
        (same(&self.mac, &other.mac) & same(&self.stored, &other.stored)).into()
    }

    /// Whether this digest was made with `fingerprint` as the stored hash's.
    pub(crate) fn was_made_for(&self, fingerprint: &[u8; 32]) -> bool {
        self.stored == *fingerprint
    }
}

struct Entry {
    digest: CredentialDigest,
    expires: Instant,
}

/// Usernames whose credentials were recently verified, with their digest.
pub struct VerifiedCache {
    key: hmac::Key,
    policy: CachePolicy,
    entries: RwLock<HashMap<Box<str>, Entry, foldhash::fast::RandomState>>,
    generation: std::sync::atomic::AtomicU64,
}

/// The system random generator failed: no secret key could be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a random key for the credentials cache")]
pub struct NoRandomKey;

/// A random `u64` from the OS generator.
fn random_u64() -> Result<u64, NoRandomKey> {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| NoRandomKey)?;
    Ok(u64::from_ne_bytes(bytes))
}

impl VerifiedCache {
    /// An empty cache with a fresh random key.
    pub fn new(policy: CachePolicy) -> Result<Self, NoRandomKey> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| NoRandomKey)?;
        Ok(Self {
            key,
            policy,
            entries: RwLock::new(HashMap::default()),
            // A random start: two caches (nested layers sharing a
            // verifier) never share a generation, so neither's memos hold
            // for the other.
            generation: std::sync::atomic::AtomicU64::new(random_u64()?),
        })
    }

    /// The digest of a credential: HMAC over the username's length, the
    /// username and the password (the length alone splits the two, so
    /// ("ab", "c") and ("a", "bc") differ), beside `stored`, the fingerprint
    /// of the user's current hash. Computed on the stack.
    pub fn digest(&self, username: &str, password: &[u8], stored: &[u8; 32]) -> CredentialDigest {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(&(username.len() as u64).to_be_bytes());
        context.update(username.as_bytes());
        context.update(password);
        let tag = context.sign();
        let mut mac = [0u8; 32];
        mac.copy_from_slice(tag.as_ref());
        CredentialDigest {
            mac,
            stored: *stored,
        }
    }

    /// Whether this exact credential was verified within the TTL.
    pub fn contains(&self, username: &str, digest: &CredentialDigest, now: Instant) -> bool {
        self.vouch(username, digest, now).is_some()
    }

    /// When the entry for this exact credential expires, if it is cached,
    /// with the generation the entry belongs to, read under the same lock
    /// as the entry (`clear` bumps it under the write lock): a memo made
    /// from the answer is void after any clear that came later, and no
    /// clear can come between the two reads.
    pub(crate) fn vouch(
        &self,
        username: &str,
        digest: &CredentialDigest,
        now: Instant,
    ) -> Option<(Instant, u64)> {
        let entries = crate::sync::read(&self.entries);
        entries
            .get(username)
            .filter(|entry| entry.expires > now && entry.digest.matches(digest))
            .map(|entry| (entry.expires, self.generation()))
    }

    /// Records a credential that argon2 just verified.
    pub fn insert(&self, username: &str, digest: CredentialDigest, now: Instant) {
        let mut entries = crate::sync::write(&self.entries);
        if !entries.contains_key(username) && entries.len() >= self.policy.max_entries {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.policy.max_entries {
                // Evict the entry closest to expiry: the oldest verification.
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(name, _)| name.clone());
                if let Some(name) = oldest {
                    entries.remove(&name);
                }
            }
        }
        let expires = now + self.policy.ttl;
        entries.insert(username.into(), Entry { digest, expires });
    }

    /// Forgets everything (used when the users change).
    pub fn clear(&self) {
        let mut entries = crate::sync::write(&self.entries);
        entries.clear();
        // Under the lock: no lookup sees the old generation with the new
        // (empty) entries.
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts clears: connections' memos made before a clear are void.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops expired entries.
    pub fn prune(&self, now: Instant) {
        let mut entries = crate::sync::write(&self.entries);
        entries.retain(|_, e| e.expires > now);
    }

    /// How many entries are held.
    pub fn len(&self) -> usize {
        crate::sync::read(&self.entries).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max_entries: usize) -> VerifiedCache {
        VerifiedCache::new(CachePolicy {
            enabled: true,
            ttl: Duration::from_secs(60),
            max_entries,
        })
        .unwrap()
    }

    #[test]
    fn a_hit_names_its_generation_and_caches_never_share_one() {
        let (a, b) = (cache(8), cache(8));
        assert_ne!(a.generation(), b.generation(), "random starts");
        let now = Instant::now();
        let digest = a.digest("alice", b"pw", &[1; 32]);
        a.insert("alice", digest, now);
        let (_, before) = a.vouch("alice", &digest, now).unwrap();
        assert_eq!(before, a.generation());
        a.clear();
        // A memo made from the hit (generation `before`) is void now.
        assert_ne!(a.generation(), before);
        assert!(a.vouch("alice", &digest, now).is_none());
    }

    #[test]
    fn only_the_exact_credential_hits() {
        let c = cache(10);
        let now = Instant::now();
        let d = c.digest("alice", b"secret", &[1; 32]);
        assert!(!c.contains("alice", &d, now));
        c.insert("alice", d, now);
        assert!(c.contains("alice", &d, now));
        assert!(!c.contains("alice", &c.digest("alice", b"Secret", &[1; 32]), now));
        // A changed password means a new stored hash: the old entry never matches.
        assert!(!c.contains("alice", &c.digest("alice", b"secret", &[2; 32]), now));
        assert!(!c.contains("bob", &d, now));
    }

    #[test]
    fn fields_are_length_prefixed() {
        let c = cache(10);
        assert!(
            !c.digest("ab", b"c", &[1; 32])
                .matches(&c.digest("a", b"bc", &[1; 32]))
        );
        assert!(
            !c.digest("a", b"bc", &[1; 32])
                .matches(&c.digest("a", b"bc", &[2; 32]))
        );
    }

    #[test]
    fn keys_differ_per_process() {
        let (a, b) = (cache(1), cache(1));
        assert!(
            !a.digest("u", b"p", &[1; 32])
                .matches(&b.digest("u", b"p", &[1; 32]))
        );
    }

    #[test]
    fn entries_expire() {
        let c = cache(10);
        let now = Instant::now();
        let d = c.digest("alice", b"secret", &[1; 32]);
        c.insert("alice", d, now);
        assert!(c.contains("alice", &d, now + Duration::from_secs(59)));
        assert!(!c.contains("alice", &d, now + Duration::from_secs(60)));
        c.prune(now + Duration::from_secs(61));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn size_is_bounded_and_the_oldest_goes_first() {
        let c = cache(3);
        let t0 = Instant::now();
        for (i, user) in ["a", "b", "c", "d"].iter().enumerate() {
            c.insert(
                user,
                c.digest(user, b"p", &[1; 32]),
                t0 + Duration::from_secs(i as u64),
            );
        }
        assert_eq!(c.len(), 3);
        let now = t0 + Duration::from_secs(4);
        assert!(!c.contains("a", &c.digest("a", b"p", &[1; 32]), now));
        assert!(c.contains("d", &c.digest("d", b"p", &[1; 32]), now));
    }
}
