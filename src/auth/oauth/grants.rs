//! Authorization codes and grant families: what a client may redeem, kept
//! behind one small trait ([`GrantStore`]) so that the state can move to a
//! shared store (Redis) without touching the endpoints.
//!
//! A *family* is everything one approval leads to: its code, the refresh
//! tokens that replace one another, and the access tokens they buy (which
//! carry the family's public handle in their `fam` claim). The store keeps
//! one record per family, holding only the digest of its *current* refresh
//! token. A refresh token carries its family's secret id, so presenting an
//! older token of a live family is recognised in one lookup, without a
//! marker per rotation: that is reuse, and the caller revokes the family
//! (RFC 9700 §4.14.2). A code works once; taking it creates the family as
//! *pending* under the same lock, so a second use at any moment after finds
//! a spent marker naming a family that exists, and revoking it stops the
//! first redemption from being activated (RFC 6749 §4.1.2).
//!
//! Every step that changes state is one atomic operation a shared store can
//! also do (a take, a compare-and-swap of the current refresh token, a
//! state change), and checks run between a *peek* and the *commit*, so a
//! request refused by a check spends nothing it should not.
//!
//! Secrets are never stored: codes and refresh tokens by SHA-256 digest,
//! families by a handle derived from their secret id. Everything is
//! bounded: a user holds at most [`MemoryLimits::codes_per_user`] waiting
//! codes and [`MemoryLimits::per_user`] live families (a new one revokes
//! their oldest), a full store refuses new grants (the client gets a 503
//! and tries again) rather than evict live ones, and expired entries are
//! pruned. Revoking is one lookup and never refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::lock;

/// What an approved authorization request allows its client to redeem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CodeGrant {
    pub(crate) client_id: String,
    /// The redirect URI the authorization request used.
    pub(crate) redirect_uri: String,
    /// Whether the request named it (then the token request must too).
    pub(crate) redirect_given: bool,
    /// The PKCE S256 challenge, when one was sent.
    pub(crate) challenge: Option<String>,
    pub(crate) user: String,
    /// The user's password binding at approval: a password changed since
    /// makes the code worthless.
    pub(crate) binding: String,
    pub(crate) scope: String,
    /// Unix seconds.
    pub(crate) expires: u64,
}

/// What a family grants: fixed at its start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FamilyGrant {
    pub(crate) client_id: String,
    pub(crate) user: String,
    pub(crate) binding: String,
    pub(crate) scope: String,
    /// Whether the client authenticated with a secret when the family
    /// started: a client turned public later cannot refresh it by id.
    pub(crate) confidential: bool,
}

/// The answer to a take or a peek.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken<T> {
    /// Valid (and, for a code, now spent).
    Fresh(T),
    /// Used before: the family (by handle) should be revoked.
    Spent { family: String },
    /// Issued by us, but revoked or expired: a stale client, not a guess.
    Revoked,
    /// Issued to another client: left as it is.
    OtherClient,
    /// Unknown.
    Unknown,
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    /// The store, or the user's share of it, is full of live entries.
    #[error("the grant store is full")]
    Full,
    /// The shared store did not answer (Redis down or slow).
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    #[error("the shared grant store is unavailable")]
    Unavailable,
}

/// Where codes and families live. Keys are SHA-256 digests of secrets or
/// derived handles; times are Unix seconds. Calls that change or read
/// shared state are async (a shared store answers over the network) and
/// may fail with [`StoreError::Unavailable`]; the caller then answers 503
/// rather than guess.
pub(crate) trait GrantStore: Send + Sync {
    /// Stores a new code.
    fn put_code(&self, digest: [u8; 32], grant: CodeGrant, now: u64) -> Stored<'_, ()>;
    /// Takes a code for `client_id`, once, and creates its family as
    /// pending, named `family` (a replay from now on revokes it).
    /// `Err(Full)` leaves the code as it was.
    fn take_code<'a>(
        &'a self,
        digest: &'a [u8; 32],
        client_id: &'a str,
        confidential: bool,
        family: &'a str,
        now: u64,
    ) -> Stored<'a, Taken<CodeGrant>>;
    /// Drops a pending family whose redemption failed a check.
    fn abandon_family<'a>(&'a self, family: &'a str) -> Stored<'a, ()>;
    /// Makes a pending family live, granting `grant`, with its first
    /// refresh token (digest, expiry) when the client may refresh. `false`
    /// when it was revoked meanwhile (the code was replayed): the tokens
    /// must not be given.
    fn activate_family<'a>(
        &'a self,
        family: &'a str,
        grant: &'a FamilyGrant,
        refresh: Option<([u8; 32], u64)>,
        now: u64,
    ) -> Stored<'a, bool>;
    /// What the family's refresh token `presented` grants, without
    /// changing anything. An older token of a live family is `Spent`.
    fn peek_refresh<'a>(
        &'a self,
        family: &'a str,
        presented: &'a [u8; 32],
        client_id: &'a str,
        now: u64,
    ) -> Stored<'a, Taken<FamilyGrant>>;
    /// Replaces `presented` with `next` (digest, expiry) if it is still the
    /// current token (a compare-and-swap); `false` if another request
    /// rotated it first, or the family was revoked.
    fn commit_refresh<'a>(
        &'a self,
        family: &'a str,
        presented: &'a [u8; 32],
        next: ([u8; 32], u64),
        now: u64,
    ) -> Stored<'a, bool>;
    /// Whether `family` exists and belongs to `client_id` (revocation).
    fn owns_family<'a>(&'a self, family: &'a str, client_id: &'a str) -> Stored<'a, bool>;
    /// Revokes a family: its refresh tokens stop at once, and so do its
    /// access tokens (see [`is_revoked`](Self::is_revoked)).
    fn revoke_family<'a>(&'a self, family: &'a str, now: u64) -> Stored<'a, ()>;
    /// Whether a family was revoked: asked on every request with a token
    /// from a grant, so answered from memory (a shared store keeps a copy
    /// of the revocations, refreshed as it syncs).
    fn is_revoked(&self, family: &str, now: u64) -> bool;
    /// Makes revoked families remembered for at least `seconds` (access
    /// tokens may live longer after a reload raised `[tokens] ttl`).
    fn keep_revoked_for(&self, seconds: u64);
    /// Drops what has expired.
    fn prune(&self, now: u64);
    /// The key consent forms are signed with, when replicas share one
    /// (else each process signs with its own).
    fn form_key(&self) -> Option<[u8; 32]> {
        None
    }
    /// Spends a consent form's nonce across replicas: `true` the first
    /// time. (Each process also spends it in its own memory first.)
    fn spend_form(&self, _nonce: [u8; 16], _expires: u64) -> Stored<'_, bool> {
        ready(Ok(true))
    }
}

/// What a [`GrantStore`] call returns.
pub(crate) type Stored<'a, T> = crate::limit::shared::BoxFuture<'a, Result<T, StoreError>>;

fn ready<'a, T: Send + 'a>(value: Result<T, StoreError>) -> Stored<'a, T> {
    Box::pin(std::future::ready(value))
}

/// How much the in-memory store holds, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryLimits {
    /// Codes (waiting or spent) at most.
    pub(crate) codes: usize,
    /// Waiting codes per user at most.
    pub(crate) codes_per_user: usize,
    /// Families at most.
    pub(crate) families: usize,
    /// Live families per user at most (a new one revokes the oldest);
    /// twice as many records, counting revoked ones still remembered.
    pub(crate) per_user: usize,
    /// How long an access token can still be used after it is issued (its
    /// lifetime, the leeway, a margin): a revoked family is remembered that
    /// long. Raised by [`GrantStore::keep_revoked_for`].
    pub(crate) access_keep: u64,
    /// How long a spent code is remembered, to recognise a replay.
    pub(crate) spent_code_for: u64,
}

enum CodeSlot {
    Live(CodeGrant),
    Spent { client_id: String, family: String },
}

struct CodeEntry {
    slot: CodeSlot,
    /// Unix seconds after which the entry is dropped.
    until: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FamilyState {
    /// Its code was taken; its tokens are not given yet.
    Pending,
    Active,
    Revoked,
}

struct Family {
    grant: FamilyGrant,
    state: FamilyState,
    /// The digest and expiry of the one refresh token that works now.
    current: Option<([u8; 32], u64)>,
    /// Unix seconds after which the record is dropped.
    until: u64,
}

/// One user's families, oldest first, and how many are live.
#[derive(Default)]
struct UserFamilies {
    handles: Vec<String>,
    live: usize,
}

#[derive(Default)]
struct Inner {
    codes: HashMap<[u8; 32], CodeEntry>,
    /// Waiting codes per user.
    codes_per_user: HashMap<String, usize>,
    families: HashMap<String, Family>,
    per_user: HashMap<String, UserFamilies>,
}

fn is_live(state: FamilyState) -> bool {
    state != FamilyState::Revoked
}

impl Inner {
    fn uncount_code(&mut self, user: &str) {
        if let Some(count) = self.codes_per_user.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.codes_per_user.remove(user);
            }
        }
    }

    fn prune_codes(&mut self, now: u64) {
        let expired: Vec<[u8; 32]> = self
            .codes
            .iter()
            .filter(|(_, e)| e.until <= now)
            .map(|(k, _)| *k)
            .collect();
        for digest in expired {
            if let Some(CodeEntry {
                slot: CodeSlot::Live(grant),
                ..
            }) = self.codes.remove(&digest)
            {
                self.uncount_code(&grant.user);
            }
        }
    }

    fn remove_family(&mut self, family: &str) {
        let Some(record) = self.families.remove(family) else {
            return;
        };
        let user = &record.grant.user;
        if let Some(mine) = self.per_user.get_mut(user) {
            mine.handles.retain(|h| h != family);
            if is_live(record.state) {
                mine.live = mine.live.saturating_sub(1);
            }
            if mine.handles.is_empty() {
                self.per_user.remove(user);
            }
        }
    }

    fn set_state(&mut self, family: &str, state: FamilyState, until: Option<u64>) {
        let Some(record) = self.families.get_mut(family) else {
            return;
        };
        let was_live = is_live(record.state);
        record.state = state;
        if let Some(until) = until {
            record.until = until;
        }
        if state == FamilyState::Revoked {
            record.current = None;
        }
        if was_live && !is_live(state) {
            let user = record.grant.user.clone();
            if let Some(mine) = self.per_user.get_mut(&user) {
                mine.live = mine.live.saturating_sub(1);
            }
        }
    }

    fn prune_families(&mut self, now: u64) {
        let expired: Vec<String> = self
            .families
            .iter()
            .filter(|(_, f)| f.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for family in expired {
            self.remove_family(&family);
        }
    }

    /// Room for one more family of `user`: revokes their oldest live one
    /// when they are at the cap. `false` when there is no room.
    fn make_family_room(&mut self, user: &str, limits: &MemoryLimits, keep: u64, now: u64) -> bool {
        if self.families.len() >= limits.families {
            self.prune_families(now);
            if self.families.len() >= limits.families {
                return false;
            }
        }
        let (records, live) = self
            .per_user
            .get(user)
            .map_or((0, 0), |m| (m.handles.len(), m.live));
        if records >= limits.per_user.saturating_mul(2) {
            // Revoked families still remembered fill the user's share: it
            // frees itself as they expire.
            return false;
        }
        if live >= limits.per_user {
            let oldest = self.per_user.get(user).and_then(|m| {
                m.handles
                    .iter()
                    .find(|h| self.families.get(*h).is_some_and(|f| is_live(f.state)))
                    .cloned()
            });
            if let Some(oldest) = oldest {
                self.set_state(&oldest, FamilyState::Revoked, Some(keep));
            }
        }
        true
    }
}

/// The in-process [`GrantStore`]: one instance's memory (replicas share
/// `cluster::RedisGrants` instead).
pub(crate) struct MemoryGrants {
    limits: MemoryLimits,
    access_keep: AtomicU64,
    inner: Mutex<Inner>,
}

impl MemoryGrants {
    pub(crate) fn new(limits: MemoryLimits) -> Self {
        Self {
            limits,
            access_keep: AtomicU64::new(limits.access_keep),
            inner: Mutex::default(),
        }
    }

    fn keep_until(&self, now: u64) -> u64 {
        now.saturating_add(self.access_keep.load(Ordering::Relaxed))
    }
}

impl MemoryGrants {
    pub(crate) fn put_code(
        &self,
        digest: [u8; 32],
        grant: CodeGrant,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        let mine = inner.codes_per_user.get(&grant.user).copied().unwrap_or(0);
        if inner.codes.len() >= self.limits.codes || mine >= self.limits.codes_per_user {
            inner.prune_codes(now);
        }
        if inner.codes.len() >= self.limits.codes {
            // Spent markers only detect replays: they go before live codes.
            inner
                .codes
                .retain(|_, e| matches!(e.slot, CodeSlot::Live(_)));
        }
        let mine = inner.codes_per_user.get(&grant.user).copied().unwrap_or(0);
        if inner.codes.len() >= self.limits.codes || mine >= self.limits.codes_per_user {
            return Err(StoreError::Full);
        }
        *inner.codes_per_user.entry(grant.user.clone()).or_default() += 1;
        let until = grant.expires;
        inner.codes.insert(
            digest,
            CodeEntry {
                slot: CodeSlot::Live(grant),
                until,
            },
        );
        Ok(())
    }

    pub(crate) fn take_code(
        &self,
        digest: &[u8; 32],
        client_id: &str,
        confidential: bool,
        family: &str,
        now: u64,
    ) -> Result<Taken<CodeGrant>, StoreError> {
        let keep = self.keep_until(now);
        let mut inner = lock(&self.inner);
        let user = match inner.codes.get(digest) {
            None => return Ok(Taken::Unknown),
            Some(entry) if entry.until <= now => {
                if let Some(CodeEntry {
                    slot: CodeSlot::Live(grant),
                    ..
                }) = inner.codes.remove(digest)
                {
                    inner.uncount_code(&grant.user);
                    return Ok(Taken::Revoked);
                }
                return Ok(Taken::Unknown);
            }
            Some(CodeEntry {
                slot:
                    CodeSlot::Spent {
                        client_id: owner,
                        family,
                    },
                ..
            }) => {
                return Ok(if owner == client_id {
                    Taken::Spent {
                        family: family.clone(),
                    }
                } else {
                    Taken::OtherClient
                });
            }
            Some(CodeEntry {
                slot: CodeSlot::Live(grant),
                ..
            }) => {
                if grant.client_id != client_id {
                    return Ok(Taken::OtherClient);
                }
                grant.user.clone()
            }
        };
        if !inner.make_family_room(&user, &self.limits, keep, now) {
            return Err(StoreError::Full);
        }
        let Some(entry) = inner.codes.get_mut(digest) else {
            return Ok(Taken::Unknown);
        };
        entry.until = now.saturating_add(self.limits.spent_code_for);
        let spent = CodeSlot::Spent {
            client_id: client_id.to_owned(),
            family: family.to_owned(),
        };
        let CodeSlot::Live(grant) = std::mem::replace(&mut entry.slot, spent) else {
            return Ok(Taken::Unknown);
        };
        inner.uncount_code(&grant.user);
        let record = Family {
            grant: FamilyGrant {
                client_id: client_id.to_owned(),
                user: grant.user.clone(),
                binding: grant.binding.clone(),
                scope: grant.scope.clone(),
                confidential,
            },
            state: FamilyState::Pending,
            current: None,
            until: keep,
        };
        // Handles are random: a collision is not expected; if one happens
        // the old record goes properly (counts included).
        inner.remove_family(family);
        inner.families.insert(family.to_owned(), record);
        let mine = inner.per_user.entry(grant.user.clone()).or_default();
        mine.handles.push(family.to_owned());
        mine.live += 1;
        Ok(Taken::Fresh(grant))
    }

    pub(crate) fn abandon_family(&self, family: &str) {
        let mut inner = lock(&self.inner);
        if inner
            .families
            .get(family)
            .is_some_and(|f| f.state == FamilyState::Pending)
        {
            inner.remove_family(family);
        }
    }

    pub(crate) fn activate_family(
        &self,
        family: &str,
        refresh: Option<([u8; 32], u64)>,
        now: u64,
    ) -> bool {
        let keep = self.keep_until(now);
        let mut inner = lock(&self.inner);
        let Some(record) = inner.families.get_mut(family) else {
            return false;
        };
        if record.state != FamilyState::Pending {
            return false;
        }
        record.state = FamilyState::Active;
        record.current = refresh;
        record.until = refresh.map_or(keep, |(_, expires)| expires.max(keep));
        true
    }

    pub(crate) fn peek_refresh(
        &self,
        family: &str,
        presented: &[u8; 32],
        client_id: &str,
        now: u64,
    ) -> Taken<FamilyGrant> {
        let inner = lock(&self.inner);
        let Some(record) = inner.families.get(family) else {
            return Taken::Unknown;
        };
        if record.grant.client_id != client_id {
            return Taken::OtherClient;
        }
        match (record.state, record.current) {
            (FamilyState::Active, _) if record.until <= now => Taken::Revoked,
            (FamilyState::Active, Some((current, expires))) if current == *presented => {
                if expires <= now {
                    Taken::Revoked
                } else {
                    Taken::Fresh(record.grant.clone())
                }
            }
            // A token of this live family, but not the current one: it was
            // rotated away, so someone used it before.
            (FamilyState::Active, _) => Taken::Spent {
                family: family.to_owned(),
            },
            (FamilyState::Revoked, _) => Taken::Revoked,
            (FamilyState::Pending, _) => Taken::Unknown,
        }
    }

    pub(crate) fn commit_refresh(
        &self,
        family: &str,
        presented: &[u8; 32],
        next: ([u8; 32], u64),
        now: u64,
    ) -> bool {
        let keep = self.keep_until(now);
        let mut inner = lock(&self.inner);
        let Some(record) = inner.families.get_mut(family) else {
            return false;
        };
        let current = record.current.map(|(digest, _)| digest);
        if record.state != FamilyState::Active || current != Some(*presented) {
            return false;
        }
        record.current = Some(next);
        record.until = next.1.max(keep);
        true
    }

    pub(crate) fn owns_family(&self, family: &str, client_id: &str) -> bool {
        lock(&self.inner)
            .families
            .get(family)
            .is_some_and(|f| f.grant.client_id == client_id)
    }

    pub(crate) fn revoke_family(&self, family: &str, now: u64) {
        let keep = self.keep_until(now);
        let mut inner = lock(&self.inner);
        let revoked = inner
            .families
            .get(family)
            .is_some_and(|f| f.state == FamilyState::Revoked);
        if !revoked {
            // Long enough for every access token issued from it.
            inner.set_state(family, FamilyState::Revoked, Some(keep));
        }
    }

    pub(crate) fn is_revoked(&self, family: &str, now: u64) -> bool {
        lock(&self.inner)
            .families
            .get(family)
            .is_some_and(|f| f.state == FamilyState::Revoked && f.until > now)
    }

    pub(crate) fn keep_revoked_for(&self, seconds: u64) {
        self.access_keep.fetch_max(seconds, Ordering::Relaxed);
    }

    pub(crate) fn prune(&self, now: u64) {
        let mut inner = lock(&self.inner);
        inner.prune_codes(now);
        inner.prune_families(now);
    }
}

impl GrantStore for MemoryGrants {
    fn put_code(&self, digest: [u8; 32], grant: CodeGrant, now: u64) -> Stored<'_, ()> {
        ready(MemoryGrants::put_code(self, digest, grant, now))
    }

    fn take_code<'a>(
        &'a self,
        digest: &'a [u8; 32],
        client_id: &'a str,
        confidential: bool,
        family: &'a str,
        now: u64,
    ) -> Stored<'a, Taken<CodeGrant>> {
        ready(MemoryGrants::take_code(
            self,
            digest,
            client_id,
            confidential,
            family,
            now,
        ))
    }

    fn abandon_family<'a>(&'a self, family: &'a str) -> Stored<'a, ()> {
        MemoryGrants::abandon_family(self, family);
        ready(Ok(()))
    }

    fn activate_family<'a>(
        &'a self,
        family: &'a str,
        // Kept since the take, with the rest of the family.
        _grant: &'a FamilyGrant,
        refresh: Option<([u8; 32], u64)>,
        now: u64,
    ) -> Stored<'a, bool> {
        ready(Ok(MemoryGrants::activate_family(
            self, family, refresh, now,
        )))
    }

    fn peek_refresh<'a>(
        &'a self,
        family: &'a str,
        presented: &'a [u8; 32],
        client_id: &'a str,
        now: u64,
    ) -> Stored<'a, Taken<FamilyGrant>> {
        ready(Ok(MemoryGrants::peek_refresh(
            self, family, presented, client_id, now,
        )))
    }

    fn commit_refresh<'a>(
        &'a self,
        family: &'a str,
        presented: &'a [u8; 32],
        next: ([u8; 32], u64),
        now: u64,
    ) -> Stored<'a, bool> {
        ready(Ok(MemoryGrants::commit_refresh(
            self, family, presented, next, now,
        )))
    }

    fn owns_family<'a>(&'a self, family: &'a str, client_id: &'a str) -> Stored<'a, bool> {
        ready(Ok(MemoryGrants::owns_family(self, family, client_id)))
    }

    fn revoke_family<'a>(&'a self, family: &'a str, now: u64) -> Stored<'a, ()> {
        MemoryGrants::revoke_family(self, family, now);
        ready(Ok(()))
    }

    fn is_revoked(&self, family: &str, now: u64) -> bool {
        MemoryGrants::is_revoked(self, family, now)
    }

    fn keep_revoked_for(&self, seconds: u64) {
        MemoryGrants::keep_revoked_for(self, seconds);
    }

    fn prune(&self, now: u64) {
        MemoryGrants::prune(self, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(codes: usize, families: usize, per_user: usize) -> MemoryGrants {
        MemoryGrants::new(MemoryLimits {
            codes,
            codes_per_user: 3,
            families,
            per_user,
            access_keep: 100,
            spent_code_for: 50,
        })
    }

    fn code(user: &str, expires: u64) -> CodeGrant {
        CodeGrant {
            client_id: "app".into(),
            redirect_uri: "urn:ietf:wg:oauth:2.0:oob".into(),
            redirect_given: true,
            challenge: None,
            user: user.into(),
            binding: "b".into(),
            scope: "read".into(),
            expires,
        }
    }

    /// A live family `f` of `user`, with refresh token digest `[1; 32]`.
    fn family(s: &MemoryGrants, digest: u8, f: &str, user: &str, now: u64) {
        s.put_code([digest; 32], code(user, now + 60), now).unwrap();
        assert!(matches!(
            s.take_code(&[digest; 32], "app", false, f, now),
            Ok(Taken::Fresh(_))
        ));
        assert!(s.activate_family(f, Some(([1; 32], now + 1000)), now));
    }

    #[test]
    fn a_code_works_once_and_its_replay_names_the_family() {
        let s = store(8, 8, 8);
        s.put_code([1; 32], code("alice", 60), 0).unwrap();
        assert_eq!(
            s.take_code(&[1; 32], "other", false, "f1", 10),
            Ok(Taken::OtherClient)
        );
        assert!(matches!(
            s.take_code(&[1; 32], "app", false, "f1", 10),
            Ok(Taken::Fresh(_))
        ));
        assert_eq!(
            s.take_code(&[1; 32], "app", false, "f2", 11),
            Ok(Taken::Spent {
                family: "f1".into()
            })
        );
        assert_eq!(
            s.take_code(&[2; 32], "app", false, "f3", 11),
            Ok(Taken::Unknown)
        );
        s.put_code([3; 32], code("alice", 60), 0).unwrap();
        assert_eq!(
            s.take_code(&[3; 32], "app", false, "f4", 60),
            Ok(Taken::Revoked),
            "expired"
        );
    }

    #[test]
    fn a_replay_before_activation_stops_the_first_redemption() {
        let s = store(8, 8, 8);
        s.put_code([1; 32], code("alice", 60), 0).unwrap();
        assert!(matches!(
            s.take_code(&[1; 32], "app", false, "f1", 1),
            Ok(Taken::Fresh(_))
        ));
        // The replay arrives while the first redemption is still checking.
        let Ok(Taken::Spent { family }) = s.take_code(&[1; 32], "app", false, "f2", 1) else {
            panic!("a replay is spent");
        };
        s.revoke_family(&family, 1);
        assert!(!s.activate_family("f1", None, 1));
        assert!(s.is_revoked("f1", 2));
    }

    #[test]
    fn a_full_store_refuses_and_leaves_the_code_alone() {
        let s = store(2, 1, 8);
        s.put_code([1; 32], code("alice", 500), 0).unwrap();
        s.put_code([2; 32], code("alice", 500), 0).unwrap();
        assert_eq!(
            s.put_code([3; 32], code("bob", 500), 0),
            Err(StoreError::Full)
        );
        assert!(matches!(
            s.take_code(&[1; 32], "app", false, "f1", 1),
            Ok(Taken::Fresh(_))
        ));
        assert!(s.activate_family("f1", Some(([9; 32], 1000)), 1));
        // No room for a second family: the code stays redeemable.
        assert_eq!(
            s.take_code(&[2; 32], "app", false, "f2", 2),
            Err(StoreError::Full)
        );
        s.revoke_family("f1", 2);
        assert!(s.is_revoked("f1", 2 + 99), "remembered for access_keep");
        s.prune(2 + 100);
        assert!(matches!(
            s.take_code(&[2; 32], "app", false, "f2", 3),
            Ok(Taken::Fresh(_))
        ));
    }

    #[test]
    fn a_user_holds_a_bounded_number_of_waiting_codes() {
        let s = store(100, 8, 8);
        for i in 0..3 {
            s.put_code([i; 32], code("alice", 60), 0).unwrap();
        }
        assert_eq!(
            s.put_code([9; 32], code("alice", 60), 0),
            Err(StoreError::Full)
        );
        s.put_code([9; 32], code("bob", 60), 0).unwrap();
        // Taking one frees a place; so does expiry.
        assert!(matches!(
            s.take_code(&[0; 32], "app", false, "f", 1),
            Ok(Taken::Fresh(_))
        ));
        s.put_code([10; 32], code("alice", 60), 1).unwrap();
        s.put_code([11; 32], code("alice", 200), 60).unwrap();
    }

    #[test]
    fn refresh_tokens_rotate_by_compare_and_swap() {
        let s = store(8, 8, 8);
        family(&s, 5, "f", "alice", 0);
        assert_eq!(
            s.peek_refresh("f", &[1; 32], "other", 1),
            Taken::OtherClient
        );
        assert!(matches!(
            s.peek_refresh("f", &[1; 32], "app", 1),
            Taken::Fresh(_)
        ));
        assert!(s.commit_refresh("f", &[1; 32], ([2; 32], 1000), 1));
        // A racing second rotation of the same token loses.
        assert!(!s.commit_refresh("f", &[1; 32], ([3; 32], 1000), 1));
        assert_eq!(
            s.peek_refresh("f", &[1; 32], "app", 2),
            Taken::Spent { family: "f".into() }
        );
        s.revoke_family("f", 2);
        assert_eq!(s.peek_refresh("f", &[2; 32], "app", 3), Taken::Revoked);
        assert!(!s.commit_refresh("f", &[2; 32], ([3; 32], 1000), 3));
        assert_eq!(s.peek_refresh("g", &[2; 32], "app", 3), Taken::Unknown);
    }

    #[test]
    fn a_user_at_the_cap_loses_their_oldest_live_family() {
        let s = store(100, 100, 2);
        family(&s, 1, "a", "alice", 1);
        family(&s, 2, "b", "alice", 2);
        family(&s, 3, "c", "bob", 2);
        family(&s, 4, "d", "alice", 3);
        assert!(s.is_revoked("a", 3));
        assert!(!s.is_revoked("b", 3));
        assert!(!s.is_revoked("c", 3));
        // Revoked families do not count as live: after a logout, a new
        // grant does not evict another live one.
        s.revoke_family("b", 3);
        family(&s, 5, "e", "alice", 4);
        assert!(!s.is_revoked("d", 4));
        // Four records (two revoked, kept): the user's share is full until
        // the revoked ones expire.
        s.put_code([6; 32], code("alice", 500), 4).unwrap();
        assert_eq!(
            s.take_code(&[6; 32], "app", false, "f", 5),
            Err(StoreError::Full)
        );
        s.prune(3 + 100);
        assert!(matches!(
            s.take_code(&[6; 32], "app", false, "f", 104),
            Ok(Taken::Fresh(_))
        ));
    }

    #[test]
    fn abandoned_and_pruned_families_leave_no_counts() {
        let s = store(8, 8, 8);
        s.put_code([1; 32], code("alice", 60), 0).unwrap();
        assert!(matches!(
            s.take_code(&[1; 32], "app", false, "f", 0),
            Ok(Taken::Fresh(_))
        ));
        s.abandon_family("f");
        family(&s, 2, "g", "alice", 0);
        s.keep_revoked_for(500);
        s.revoke_family("g", 10);
        s.prune(10 + 499);
        assert!(s.is_revoked("g", 10 + 499), "kept for the raised time");
        s.prune(2000);
        let inner = lock(&s.inner);
        assert!(inner.codes.is_empty());
        assert!(inner.codes_per_user.is_empty());
        assert!(inner.families.is_empty());
        assert!(inner.per_user.is_empty());
    }
}
