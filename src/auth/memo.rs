//! A connection's memo of the last Basic credential the cache vouched for.
//!
//! A keep-alive client sends the same `Authorization` value on every
//! request. Decoding it and computing its cache digest (base64, UTF-8
//! checks, HMAC-SHA256) was most of what a cached request cost over a
//! public one.
//!
//! A Basic value is remembered when the cache vouched for it, bound to
//! what vouched: the credential store it was checked against, the cache's
//! generation and the cache entry's expiry. It is recalled, byte for byte,
//! only while all three hold: the same store object is current (a reload
//! that changes the users swaps the store, and the store never changes in
//! place), the cache was not cleared since, and the entry's time is not
//! up. The generation is the one the entry was found in (read under the
//! cache's lock), and each cache starts its generations at a random
//! number, so another layer's memo never holds here. So a memo lets in
//! exactly the credentials that were verified against the current users
//! within the cache's time to live, which is what the cache itself lets
//! in. The one difference: a cache entry evicted early to make room (a
//! policy, not a revocation) is still honoured by the memo until its
//! expiry. When a recall fails, the memo is wiped and the full path runs.
//!
//! A bearer token is remembered with its cache key, and recalled only to
//! skip computing that key: the token cache is asked as on the full path.
//!
//! The memo keeps the credential as sent for the life of the connection
//! (as the connection's own read buffer briefly does), wiped when replaced
//! or dropped. It is per connection: another connection, or another user
//! on a connection a proxy shares, never matches it.

use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::credentials::CredentialStore;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// One connection's memo, in every request's extensions while it is
/// screened (the server puts it there). It stays in the request the app
/// gets: the type is the crate's own, so no app can name it to look it up,
/// and taking it out cost a rehash of the extension map per request.
/// Cloning shares it.
#[derive(Clone, Default)]
pub(crate) struct CredentialMemo(Arc<Mutex<Option<Remembered>>>);

impl std::fmt::Debug for CredentialMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialMemo")
    }
}

/// What a memo's value is: a Basic `Authorization` value (its HMAC for
/// the verified-credentials cache), or a bearer token (its key in the token
/// cache). A value is only ever recalled as the kind it was remembered as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MemoKind {
    Basic,
    Token,
}

struct Remembered {
    kind: MemoKind,
    /// The `Authorization` value (or the token), exactly as sent.
    value: Zeroizing<Vec<u8>>,
    username: Arc<str>,
    /// A token's key in the token cache. Zero for a Basic value, whose
    /// recall checks the store that vouched instead.
    mac: [u8; 32],
    /// The cache entry's expiry: past it the memo is wiped, at the next
    /// look or at the connection watchdog's next tick, whichever is first.
    until: Instant,
    /// The cache's generation when remembered: a cleared cache (users
    /// reloaded) voids every memo made before.
    generation: u64,
    /// For a Basic value, the credential store it was checked against (a
    /// weak reference: its address cannot be reused while this is held,
    /// and an old store's users are not kept alive). Empty for a token.
    store: Weak<CredentialStore>,
}

impl CredentialMemo {
    /// The user a Basic `value` stands for, if it is the value remembered,
    /// `store` is the store it was checked against and neither the cache's
    /// `generation` nor the entry's time has moved on. A memo that no
    /// longer holds is wiped.
    pub(crate) fn recall_basic(
        &self,
        value: &[u8],
        now: Instant,
        generation: u64,
        store: &CredentialStore,
    ) -> Option<Arc<str>> {
        self.recall_as(MemoKind::Basic, value, now, generation, Some(store))
            .map(|(username, _)| username)
    }

    /// The cache key of a bearer token `value`, if it is the token
    /// remembered and neither the token cache's `generation` nor its time
    /// has moved on (the token cache is then asked as on the full path).
    pub(crate) fn recall_token(
        &self,
        value: &[u8],
        now: Instant,
        generation: u64,
    ) -> Option<[u8; 32]> {
        self.recall_as(MemoKind::Token, value, now, generation, None)
            .map(|(_, mac)| mac)
    }

    /// The username and HMAC for `value`, if it is the value remembered
    /// as `kind`, not past its time, of this `generation` and, when `store`
    /// is given, checked against that store (a memo that fails any of
    /// these is wiped).
    fn recall_as(
        &self,
        kind: MemoKind,
        value: &[u8],
        now: Instant,
        generation: u64,
        store: Option<&CredentialStore>,
    ) -> Option<(Arc<str>, [u8; 32])> {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // The kind first: Basic and tokens count their generations apart,
        // so another kind's memo is left alone, not judged by this one's.
        let remembered = memo.as_ref().filter(|r| r.kind == kind)?;
        // A store swapped by a reload is another object: the address is
        // compared (a `Weak` keeps the old one's from being reused).
        let other_store = store.is_some_and(|s| !std::ptr::eq(remembered.store.as_ptr(), s));
        if now >= remembered.until || remembered.generation != generation || other_store {
            *memo = None;
            return None;
        }
        same_bytes(&remembered.value, value)
            .then(|| (Arc::clone(&remembered.username), remembered.mac))
    }

    /// Remembers a Basic `value`, which decodes to `username` and which the
    /// cache vouched for against `store`, until `until` (the cache entry's
    /// expiry).
    pub(crate) fn remember_basic(
        &self,
        value: &[u8],
        username: &str,
        until: Instant,
        generation: u64,
        store: &Arc<CredentialStore>,
    ) {
        let store = Arc::downgrade(store);
        self.remember_as(
            MemoKind::Basic,
            value,
            username,
            [0; 32],
            until,
            generation,
            store,
        );
    }

    /// Remembers a bearer token `value` of `username`, whose token-cache
    /// key is `mac`, until `until` (its cache entry's expiry).
    pub(crate) fn remember_token(
        &self,
        value: &[u8],
        username: &str,
        mac: [u8; 32],
        until: Instant,
        generation: u64,
    ) {
        self.remember_as(
            MemoKind::Token,
            value,
            username,
            mac,
            until,
            generation,
            Weak::new(),
        );
    }

    /// Remembers `value`, which decodes to `username` and hashes to `mac`,
    /// until `until`. A memo holding another user's credential keeps it: on
    /// a connection a proxy shares between users, rewriting it on every
    /// request would cost more than it saves.
    #[allow(clippy::too_many_arguments)]
    fn remember_as(
        &self,
        kind: MemoKind,
        value: &[u8],
        username: &str,
        mac: [u8; 32],
        until: Instant,
        generation: u64,
        store: Weak<CredentialStore>,
    ) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if memo
            .as_ref()
            .is_some_and(|r| &*r.username != username && Instant::now() < r.until)
        {
            return;
        }
        *memo = Some(Remembered {
            kind,
            value: Zeroizing::new(value.to_vec()),
            username: Arc::from(username),
            mac,
            until,
            generation,
            store,
        });
    }

    /// Wipes the memo if it holds `value`, which no longer gets in (another
    /// request on the connection may have put a newer value there since).
    pub(crate) fn forget(&self, value: &[u8]) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if memo.as_ref().is_some_and(|r| same_bytes(&r.value, value)) {
            *memo = None;
        }
    }

    /// Wipes the memo if it is past its time: the connection's watchdog
    /// calls this on every tick, so a credential is not kept past its cache
    /// entry on a connection that sends nothing more.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn expire(&self, now: Instant) {
        let mut memo = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if memo.as_ref().is_some_and(|r| now >= r.until) {
            *memo = None;
        }
    }
}

/// Whether `a` and `b` are the same bytes, in time that depends on their
/// lengths only: a word at a time, XORed into one accumulator, with no early
/// exit (`subtle`'s slice compare puts a barrier on every byte, which for a
/// token of a few hundred bytes cost more than the HMAC the memo saves).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // No fallback that could compare zeros with zeros: every byte of the
    // chunk goes in.
    let (words_a, tail_a) = a.as_chunks::<8>();
    let (words_b, tail_b) = b.as_chunks::<8>();
    let tail = tail_a
        .iter()
        .zip(tail_b)
        .fold(0u64, |acc, (x, y)| acc | u64::from(x ^ y));
    // One load a word, not a shift a byte.
    let difference = words_a.iter().zip(words_b).fold(tail, |acc, (x, y)| {
        acc | (u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y))
    });
    difference.ct_eq(&0).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    impl CredentialMemo {
        /// Remembers without a store: never recalled by `recall_basic`.
        fn remember(
            &self,
            kind: MemoKind,
            value: &[u8],
            username: &str,
            mac: [u8; 32],
            until: Instant,
            generation: u64,
        ) {
            self.remember_as(kind, value, username, mac, until, generation, Weak::new());
        }

        /// Recalls without a store to compare (the other checks alone).
        fn recall(
            &self,
            kind: MemoKind,
            value: &[u8],
            now: Instant,
            generation: u64,
        ) -> Option<(Arc<str>, [u8; 32])> {
            self.recall_as(kind, value, now, generation, None)
        }
    }

    fn store() -> Arc<CredentialStore> {
        let hash = "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ$7/pX3SDk5RTz0n14Qv4wxA";
        let hash = crate::credentials::parse_user_hash(hash).unwrap();
        Arc::new(CredentialStore::new([("alice".to_owned(), hash)]).unwrap())
    }

    #[test]
    fn a_basic_value_is_recalled_only_against_the_store_that_vouched() {
        let memo = CredentialMemo::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let (first, second) = (store(), store());
        memo.remember_basic(ALICE, "alice", later, 0, &first);
        assert_eq!(&*memo.recall_basic(ALICE, now, 0, &first).unwrap(), "alice");
        // A reload's new store (the same users, another object) voids it,
        // and the memo is wiped: the first store no longer matches either.
        assert!(memo.recall_basic(ALICE, now, 0, &second).is_none());
        assert!(memo.recall_basic(ALICE, now, 0, &first).is_none());
        // So do a cleared cache and the entry's expiry.
        memo.remember_basic(ALICE, "alice", later, 0, &first);
        assert!(memo.recall_basic(ALICE, now, 1, &first).is_none());
        memo.remember_basic(ALICE, "alice", later, 0, &first);
        assert!(memo.recall_basic(ALICE, later, 0, &first).is_none());
        // Remembered without a store, a Basic value is never recalled as one.
        memo.remember(MemoKind::Basic, ALICE, "alice", [7; 32], later, 0);
        assert!(memo.recall_basic(ALICE, now, 0, &first).is_none());
        // A dropped store's memo never matches a new store: the weak
        // reference keeps the old allocation, so its address cannot be
        // handed to the next store.
        let old = Arc::as_ptr(&first);
        memo.remember_basic(ALICE, "alice", later, 0, &first);
        drop(first);
        {
            let held = memo.0.lock().unwrap();
            let remembered = held.as_ref().unwrap();
            assert_eq!(remembered.store.strong_count(), 0);
            assert_eq!(remembered.store.as_ptr(), old);
        }
        let third = store();
        assert_ne!(Arc::as_ptr(&third), old);
        assert!(memo.recall_basic(ALICE, now, 0, &third).is_none());
    }

    const ALICE: &[u8] = b"Basic YWxpY2U6c2VjcmV0";

    #[test]
    fn only_the_exact_value_is_recalled() {
        let memo = CredentialMemo::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert!(memo.recall(MemoKind::Basic, ALICE, now, 0).is_none());
        memo.remember(MemoKind::Basic, ALICE, "alice", [7; 32], later, 0);
        let (user, mac) = memo.recall(MemoKind::Basic, ALICE, now, 0).unwrap();
        assert_eq!((&*user, mac), ("alice", [7; 32]));
        for other in [
            &b"Basic YWxpY2U6c2VjcmV1"[..],
            b"Basic YWxpY2U6c2VjcmV0 ",
            b"basic YWxpY2U6c2VjcmV0",
            b"Basic YWxpY2U6c2VjcmV",
            b"",
        ] {
            assert!(memo.recall(MemoKind::Basic, other, now, 0).is_none());
        }
        // A clone is the same connection's memo.
        assert!(
            memo.clone()
                .recall(MemoKind::Basic, ALICE, now, 0)
                .is_some()
        );
        // Forgetting another value keeps it; forgetting its own wipes it.
        memo.forget(b"Basic Ym9iOnB3");
        assert!(memo.recall(MemoKind::Basic, ALICE, now, 0).is_some());
        memo.forget(ALICE);
        assert!(memo.recall(MemoKind::Basic, ALICE, now, 0).is_none());
        // A cleared cache (a new generation) voids it.
        memo.remember(MemoKind::Basic, ALICE, "alice", [7; 32], later, 0);
        assert!(memo.recall(MemoKind::Basic, ALICE, now, 1).is_none());
        assert!(memo.recall(MemoKind::Basic, ALICE, now, 0).is_none());
        // A value is recalled only as the kind it was remembered as.
        memo.remember(MemoKind::Token, b"eyJ.x.y", "alice", [3; 32], later, 0);
        assert!(memo.recall(MemoKind::Basic, b"eyJ.x.y", now, 0).is_none());
        assert!(memo.recall(MemoKind::Token, b"eyJ.x.y", now, 0).is_some());
        // The watchdog's tick wipes it past its time.
        memo.remember(MemoKind::Basic, ALICE, "alice", [7; 32], later, 0);
        memo.expire(now);
        assert!(memo.recall(MemoKind::Basic, ALICE, now, 0).is_some());
        memo.expire(later);
        assert!(memo.recall(MemoKind::Basic, ALICE, now, 0).is_none());
    }

    #[test]
    fn same_bytes_compares_every_byte() {
        let a: Vec<u8> = (0..=255).collect();
        assert!(same_bytes(&a, &a.clone()));
        for i in 0..a.len() {
            let mut b = a.clone();
            b[i] ^= 1;
            assert!(!same_bytes(&a, &b), "byte {i}");
            assert!(!same_bytes(&a[..i], &a[..i + 1]));
        }
        assert!(same_bytes(b"", b""));
        // Every length up to two words, with a difference in each place
        // (the bytes past the last whole word included).
        for len in 0..=17 {
            let a: Vec<u8> = (0..len).map(|i| i as u8 + 1).collect();
            assert!(same_bytes(&a, &a.clone()));
            for i in 0..len {
                let mut b = a.clone();
                b[i] = 0;
                assert!(!same_bytes(&a, &b), "length {len}, byte {i}");
            }
        }
    }

    #[test]
    fn a_memo_expires_and_keeps_its_user() {
        let memo = CredentialMemo::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        memo.remember(MemoKind::Basic, ALICE, "alice", [7; 32], later, 0);
        // Another user's credential does not displace a live memo; the
        // same user's new one does.
        memo.remember(MemoKind::Basic, b"Basic Ym9iOnB3", "bob", [9; 32], later, 0);
        assert!(
            memo.recall(MemoKind::Basic, b"Basic Ym9iOnB3", now, 0)
                .is_none()
        );
        memo.remember(
            MemoKind::Basic,
            b"Basic YWxpY2U6bmV3",
            "alice",
            [8; 32],
            later,
            0,
        );
        assert!(
            memo.recall(MemoKind::Basic, b"Basic YWxpY2U6bmV3", now, 0)
                .is_some()
        );
        assert!(memo.recall(MemoKind::Basic, ALICE, now, 0).is_none());
        // Past its time it is gone, and another user may take it.
        assert!(
            memo.recall(MemoKind::Basic, b"Basic YWxpY2U6bmV3", later, 0)
                .is_none()
        );
        memo.remember(
            MemoKind::Basic,
            b"Basic Ym9iOnB3",
            "bob",
            [9; 32],
            later + later.duration_since(now),
            0,
        );
        assert!(
            memo.recall(MemoKind::Basic, b"Basic Ym9iOnB3", later, 0)
                .is_some()
        );
    }
}
