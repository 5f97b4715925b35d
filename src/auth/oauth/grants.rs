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
//! (RFC 9700 §4.14.2). A code works once; a second use finds a spent
//! marker naming the family the first use started, which the caller
//! revokes too (RFC 6749 §4.1.2).
//!
//! Secrets are never stored: codes and refresh tokens by SHA-256 digest,
//! families by a handle derived from their secret id. Everything is
//! bounded: room for a family is reserved before a code is spent, a full
//! store refuses new grants (the client gets a 503 and tries again) rather
//! than evict live ones, each user holds at most a fixed number of
//! families (the oldest is revoked to make room), and expired entries are
//! pruned. Revoking is O(1) and never refused.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sync::lock;

/// What an approved authorization request allows its client to redeem.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FamilyGrant {
    pub(crate) client_id: String,
    pub(crate) user: String,
    pub(crate) binding: String,
    pub(crate) scope: String,
    /// Whether the client authenticated with a secret when the family
    /// started: a client turned public later cannot refresh it by id.
    pub(crate) confidential: bool,
}

/// The answer to a take.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken<T> {
    /// Valid until now, and now spent (or rotated).
    Fresh(T),
    /// Used before: the family (by handle) should be revoked.
    Spent { family: String },
    /// Issued to another client: left as it is.
    OtherClient,
    /// Unknown, expired, or of a revoked family.
    Unknown,
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    /// The store is full of live entries.
    #[error("the grant store is full")]
    Full,
}

/// Where codes and families live. Keys are SHA-256 digests of secrets or
/// derived handles; times are Unix seconds.
pub(crate) trait GrantStore: Send + Sync {
    /// Stores a new code.
    fn put_code(&self, digest: [u8; 32], grant: CodeGrant, now: u64) -> Result<(), StoreError>;
    /// Takes a code for `client_id`, once. The family its redemption will
    /// start is named now (`family`), so that a replay can revoke it; room
    /// for that family is reserved, and `Err(Full)` leaves the code as it
    /// was.
    fn take_code(
        &self,
        digest: &[u8; 32],
        client_id: &str,
        family: &str,
        now: u64,
    ) -> Result<Taken<CodeGrant>, StoreError>;
    /// Starts the family a code's redemption named, with its first refresh
    /// token (digest, expiry) when the client may refresh. Never refused:
    /// `take_code` reserved the room.
    fn start_family(
        &self,
        family: &str,
        grant: FamilyGrant,
        refresh: Option<([u8; 32], u64)>,
        now: u64,
    );
    /// Replaces the family's current refresh token `presented` with `next`
    /// (digest, expiry), atomically. An older token of the family is
    /// `Spent`.
    fn rotate_refresh(
        &self,
        family: &str,
        presented: &[u8; 32],
        client_id: &str,
        next: ([u8; 32], u64),
        now: u64,
    ) -> Taken<FamilyGrant>;
    /// Whether `family` exists and belongs to `client_id` (revocation).
    fn owns_family(&self, family: &str, client_id: &str) -> bool;
    /// Revokes a family: its refresh tokens stop at once, and so do its
    /// access tokens (see [`is_revoked`](Self::is_revoked)).
    fn revoke_family(&self, family: &str, now: u64);
    /// Whether a family was revoked.
    fn is_revoked(&self, family: &str, now: u64) -> bool;
    /// Drops what has expired.
    fn prune(&self, now: u64);
}

/// How much the in-memory store holds, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryLimits {
    /// Codes (waiting or spent) at most.
    pub(crate) codes: usize,
    /// Families at most.
    pub(crate) families: usize,
    /// Families per user at most.
    pub(crate) per_user: usize,
    /// How long an access token can still be used after it is issued
    /// (its lifetime and the leeway): a family is remembered that long
    /// after its last token, so that revoking it still reaches them.
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

struct Family {
    grant: FamilyGrant,
    /// The digest and expiry of the one refresh token that works now.
    current: Option<([u8; 32], u64)>,
    revoked: bool,
    /// Unix seconds after which the record is dropped.
    until: u64,
    /// Unix seconds: the oldest goes first when a user has too many.
    started: u64,
}

#[derive(Default)]
struct Inner {
    codes: HashMap<[u8; 32], CodeEntry>,
    families: HashMap<String, Family>,
    /// Families per user, to bound what one user can hold.
    per_user: HashMap<String, usize>,
}

impl Inner {
    fn remove_family(&mut self, family: &str) {
        if let Some(record) = self.families.remove(family) {
            self.uncount(&record.grant.user);
        }
    }

    fn uncount(&mut self, user: &str) {
        if let Some(count) = self.per_user.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_user.remove(user);
            }
        }
    }

    fn prune(&mut self, now: u64) {
        self.codes.retain(|_, e| e.until > now);
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

    /// Whether a family for `user` can start: room overall, and room for
    /// the user once their oldest live family is revoked.
    fn family_room(&mut self, user: &str, limits: &MemoryLimits, now: u64) -> bool {
        if self.families.len() >= limits.families {
            self.prune(now);
        }
        if self.families.len() >= limits.families {
            return false;
        }
        // Below the cap; or below twice the cap (revoked families are kept
        // a while) with a live family to revoke for room.
        let count = self.per_user.get(user).copied().unwrap_or(0);
        count < limits.per_user
            || (count < limits.per_user.saturating_mul(2)
                && self
                    .families
                    .values()
                    .any(|f| f.grant.user == user && !f.revoked))
    }
}

/// The in-process [`GrantStore`]: one instance's memory. With several
/// replicas a code must be redeemed where it was issued; the shared-state
/// issue (Redis) lifts that.
pub(crate) struct MemoryGrants {
    limits: MemoryLimits,
    inner: Mutex<Inner>,
}

impl MemoryGrants {
    pub(crate) fn new(limits: MemoryLimits) -> Self {
        Self {
            limits,
            inner: Mutex::default(),
        }
    }
}

impl GrantStore for MemoryGrants {
    fn put_code(&self, digest: [u8; 32], grant: CodeGrant, now: u64) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner);
        if inner.codes.len() >= self.limits.codes {
            inner.codes.retain(|_, e| e.until > now);
        }
        if inner.codes.len() >= self.limits.codes {
            // Spent markers only detect replays: they go before live codes.
            inner
                .codes
                .retain(|_, e| matches!(e.slot, CodeSlot::Live(_)));
        }
        if inner.codes.len() >= self.limits.codes {
            return Err(StoreError::Full);
        }
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

    fn take_code(
        &self,
        digest: &[u8; 32],
        client_id: &str,
        family: &str,
        now: u64,
    ) -> Result<Taken<CodeGrant>, StoreError> {
        let mut inner = lock(&self.inner);
        let user = match inner.codes.get(digest) {
            None => return Ok(Taken::Unknown),
            Some(entry) if entry.until <= now => {
                inner.codes.remove(digest);
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
        if !inner.family_room(&user, &self.limits, now) {
            return Err(StoreError::Full);
        }
        let spent_until = now.saturating_add(self.limits.spent_code_for);
        let Some(entry) = inner.codes.get_mut(digest) else {
            return Ok(Taken::Unknown);
        };
        entry.until = spent_until;
        let spent = CodeSlot::Spent {
            client_id: client_id.to_owned(),
            family: family.to_owned(),
        };
        Ok(match std::mem::replace(&mut entry.slot, spent) {
            CodeSlot::Live(grant) => Taken::Fresh(grant),
            CodeSlot::Spent { .. } => Taken::Unknown,
        })
    }

    fn start_family(
        &self,
        family: &str,
        grant: FamilyGrant,
        refresh: Option<([u8; 32], u64)>,
        now: u64,
    ) {
        let mut inner = lock(&self.inner);
        let keep = now.saturating_add(self.limits.access_keep);
        // The user's oldest live family makes room when they are at the cap.
        if inner.per_user.get(&grant.user).copied().unwrap_or(0) >= self.limits.per_user {
            let oldest = inner
                .families
                .iter_mut()
                .filter(|(_, f)| f.grant.user == grant.user && !f.revoked)
                .min_by_key(|(_, f)| f.started);
            if let Some((_, oldest)) = oldest {
                oldest.revoked = true;
                oldest.current = None;
                oldest.until = keep;
            }
        }
        *inner.per_user.entry(grant.user.clone()).or_default() += 1;
        let until = refresh.map_or(keep, |(_, expires)| expires.max(keep));
        let previous = inner.families.insert(
            family.to_owned(),
            Family {
                grant,
                current: refresh,
                revoked: false,
                until,
                started: now,
            },
        );
        // Handles are random: a collision is not expected, but the count
        // must stay right if one happens.
        if let Some(previous) = previous {
            inner.uncount(&previous.grant.user);
        }
    }

    fn rotate_refresh(
        &self,
        family: &str,
        presented: &[u8; 32],
        client_id: &str,
        next: ([u8; 32], u64),
        now: u64,
    ) -> Taken<FamilyGrant> {
        let keep = now.saturating_add(self.limits.access_keep);
        let mut inner = lock(&self.inner);
        let Some(record) = inner.families.get_mut(family) else {
            return Taken::Unknown;
        };
        if record.until <= now || record.revoked {
            return Taken::Unknown;
        }
        if record.grant.client_id != client_id {
            return Taken::OtherClient;
        }
        match record.current {
            Some((current, expires)) if current == *presented => {
                if expires <= now {
                    return Taken::Unknown;
                }
                record.current = Some(next);
                record.until = next.1.max(keep);
                Taken::Fresh(record.grant.clone())
            }
            // A token of this family, but not the current one: it was
            // rotated away, so someone used it before.
            _ => Taken::Spent {
                family: family.to_owned(),
            },
        }
    }

    fn owns_family(&self, family: &str, client_id: &str) -> bool {
        lock(&self.inner)
            .families
            .get(family)
            .is_some_and(|f| f.grant.client_id == client_id)
    }

    fn revoke_family(&self, family: &str, now: u64) {
        let keep = now.saturating_add(self.limits.access_keep);
        let mut inner = lock(&self.inner);
        match inner.families.get_mut(family) {
            Some(record) if record.revoked => {}
            Some(record) => {
                record.revoked = true;
                record.current = None;
                // Long enough for every access token issued from it.
                record.until = keep;
            }
            // A replayed code whose redemption never started a family
            // (it failed a check): nothing was issued, nothing to revoke.
            None => {}
        }
    }

    fn is_revoked(&self, family: &str, now: u64) -> bool {
        lock(&self.inner)
            .families
            .get(family)
            .is_some_and(|f| f.revoked && f.until > now)
    }

    fn prune(&self, now: u64) {
        lock(&self.inner).prune(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(codes: usize, families: usize, per_user: usize) -> MemoryGrants {
        MemoryGrants::new(MemoryLimits {
            codes,
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

    fn grant(user: &str) -> FamilyGrant {
        FamilyGrant {
            client_id: "app".into(),
            user: user.into(),
            binding: "b".into(),
            scope: "read".into(),
            confidential: false,
        }
    }

    #[test]
    fn a_code_works_once_and_its_replay_names_the_family() {
        let s = store(8, 8, 8);
        s.put_code([1; 32], code("alice", 60), 0).unwrap();
        assert_eq!(
            s.take_code(&[1; 32], "other", "f1", 10),
            Ok(Taken::OtherClient)
        );
        assert!(matches!(
            s.take_code(&[1; 32], "app", "f1", 10),
            Ok(Taken::Fresh(_))
        ));
        assert_eq!(
            s.take_code(&[1; 32], "app", "f2", 11),
            Ok(Taken::Spent {
                family: "f1".into()
            })
        );
        assert_eq!(s.take_code(&[2; 32], "app", "f3", 11), Ok(Taken::Unknown));
        // Expired.
        s.put_code([3; 32], code("alice", 60), 0).unwrap();
        assert_eq!(s.take_code(&[3; 32], "app", "f4", 60), Ok(Taken::Unknown));
    }

    #[test]
    fn a_full_store_refuses_and_leaves_the_code_alone() {
        let s = store(2, 1, 8);
        s.put_code([1; 32], code("alice", 500), 0).unwrap();
        s.put_code([2; 32], code("alice", 500), 0).unwrap();
        assert_eq!(
            s.put_code([3; 32], code("alice", 500), 0),
            Err(StoreError::Full)
        );
        // Entries issued at different times: pruning uses the real clock.
        assert!(matches!(
            s.take_code(&[1; 32], "app", "f1", 1),
            Ok(Taken::Fresh(_))
        ));
        s.start_family("f1", grant("alice"), Some(([9; 32], 1000)), 1);
        // No room for a second family: the code stays redeemable.
        assert_eq!(s.take_code(&[2; 32], "app", "f2", 2), Err(StoreError::Full));
        s.revoke_family("f1", 2);
        s.prune(2 + 100);
        assert!(matches!(
            s.take_code(&[2; 32], "app", "f2", 3),
            Ok(Taken::Fresh(_))
        ));
    }

    #[test]
    fn refresh_tokens_rotate_and_an_old_one_is_reuse() {
        let s = store(8, 8, 8);
        s.start_family("f", grant("alice"), Some(([1; 32], 1000)), 0);
        assert_eq!(
            s.rotate_refresh("f", &[1; 32], "other", ([2; 32], 1000), 1),
            Taken::OtherClient
        );
        assert!(matches!(
            s.rotate_refresh("f", &[1; 32], "app", ([2; 32], 1000), 1),
            Taken::Fresh(_)
        ));
        assert_eq!(
            s.rotate_refresh("f", &[1; 32], "app", ([3; 32], 1000), 2),
            Taken::Spent { family: "f".into() }
        );
        s.revoke_family("f", 2);
        assert!(s.is_revoked("f", 2));
        assert_eq!(
            s.rotate_refresh("f", &[2; 32], "app", ([3; 32], 1000), 3),
            Taken::Unknown
        );
        assert!(!s.is_revoked("f", 2 + 100), "remembered for access_keep");
        assert_eq!(
            s.rotate_refresh("g", &[2; 32], "app", ([3; 32], 1000), 3),
            Taken::Unknown
        );
    }

    #[test]
    fn a_user_at_the_cap_loses_their_oldest_family() {
        let s = store(8, 8, 2);
        s.start_family("a", grant("alice"), None, 1);
        s.start_family("b", grant("alice"), None, 2);
        s.start_family("c", grant("bob"), None, 2);
        s.start_family("d", grant("alice"), None, 3);
        assert!(s.is_revoked("a", 3));
        assert!(!s.is_revoked("b", 3));
        assert!(!s.is_revoked("c", 3));
        // Every one of alice's families revoked and kept: no more room.
        s.revoke_family("b", 3);
        s.revoke_family("d", 3);
        s.put_code([1; 32], code("alice", 500), 3).unwrap();
        assert_eq!(s.take_code(&[1; 32], "app", "e", 4), Err(StoreError::Full));
        s.prune(3 + 100);
        assert!(matches!(
            s.take_code(&[1; 32], "app", "e", 4),
            Ok(Taken::Fresh(_))
        ));
    }

    #[test]
    fn prune_drops_expired_entries_and_counts() {
        let s = store(8, 8, 8);
        s.put_code([1; 32], code("alice", 60), 0).unwrap();
        s.start_family("f", grant("alice"), Some(([1; 32], 60)), 0);
        s.prune(200);
        let inner = lock(&s.inner);
        assert!(inner.codes.is_empty());
        assert!(inner.families.is_empty());
        assert!(inner.per_user.is_empty());
    }
}
