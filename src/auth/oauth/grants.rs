//! Authorization codes and refresh tokens: what a client may redeem, kept
//! behind one small trait ([`GrantStore`]) so that the state can move to a
//! shared store (Redis) without touching the endpoints.
//!
//! Secrets are never stored: entries are keyed by the SHA-256 of the code
//! or refresh token. Redeeming is one atomic "take": a code or refresh
//! token works once, and a second use finds a *spent* marker naming its
//! family, which the caller then revokes (RFC 6749 §4.1.2 and §10.4, RFC
//! 9700 §4.14.2). A family is every token descended from one approval:
//! its code, its refresh tokens and the access tokens they bought (which
//! carry the family in their `fam` claim).
//!
//! Everything is bounded: a full table refuses new grants (the client gets
//! a 503 and tries again) rather than evict live ones, and expired entries
//! are pruned.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

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
    pub(crate) family: String,
    /// Unix seconds.
    pub(crate) expires: u64,
}

/// What a refresh token allows its client to redeem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefreshGrant {
    pub(crate) client_id: String,
    pub(crate) user: String,
    pub(crate) binding: String,
    pub(crate) scope: String,
    pub(crate) family: String,
    /// Unix seconds.
    pub(crate) expires: u64,
}

/// The answer to a take.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Taken<T> {
    /// Valid until now, and now spent.
    Fresh(T),
    /// Used before: the family it belongs to should be revoked.
    Spent { family: String },
    /// Issued to another client: left as it is.
    OtherClient,
    /// Unknown, expired, or of a revoked family.
    Unknown,
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    /// The table is full of live entries.
    #[error("the grant store is full")]
    Full,
}

/// Where codes, refresh tokens and revoked families live. Keys are
/// SHA-256 digests of the secrets; times are Unix seconds.
pub(crate) trait GrantStore: Send + Sync {
    /// Stores a new code.
    fn put_code(&self, digest: [u8; 32], grant: CodeGrant) -> Result<(), StoreError>;
    /// Takes a code for `client_id`, once.
    fn take_code(&self, digest: &[u8; 32], client_id: &str, now: u64) -> Taken<CodeGrant>;
    /// Stores a new refresh token.
    fn put_refresh(&self, digest: [u8; 32], grant: RefreshGrant) -> Result<(), StoreError>;
    /// Takes a refresh token for `client_id`, once.
    fn take_refresh(&self, digest: &[u8; 32], client_id: &str, now: u64) -> Taken<RefreshGrant>;
    /// The family of a refresh token (fresh or spent) issued to
    /// `client_id`, for revocation (RFC 7009).
    fn refresh_family(&self, digest: &[u8; 32], client_id: &str) -> Option<String>;
    /// Revokes a family: its refresh tokens stop working at once, and so
    /// do its access tokens (see [`is_revoked`](Self::is_revoked)).
    fn revoke_family(&self, family: &str, now: u64);
    /// Whether a family was revoked.
    fn is_revoked(&self, family: &str, now: u64) -> bool;
    /// Drops what has expired.
    fn prune(&self, now: u64);
}

/// How long the in-memory store keeps things, and how many.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryLimits {
    /// Live codes at most.
    pub(crate) codes: usize,
    /// Refresh tokens (live and spent) at most.
    pub(crate) refresh_tokens: usize,
    /// How long a revoked family is remembered: past the life of any
    /// token in it (the longer of the access and refresh lifetimes).
    pub(crate) revoked_for: u64,
    /// How long a spent code is remembered, to recognise a replay.
    pub(crate) spent_code_for: u64,
}

enum Slot<T> {
    Live(T),
    Spent { client_id: String, family: String },
}

struct Entry<T> {
    slot: Slot<T>,
    /// Unix seconds after which the entry is dropped.
    until: u64,
}

/// The in-process [`GrantStore`]: one instance's memory. With several
/// replicas a code must be redeemed where it was issued; the shared-state
/// issue (Redis) lifts that.
pub(crate) struct MemoryGrants {
    limits: MemoryLimits,
    codes: Mutex<HashMap<[u8; 32], Entry<CodeGrant>>>,
    refresh: Mutex<HashMap<[u8; 32], Entry<RefreshGrant>>>,
    /// Read on every request that carries an OAuth access token: a
    /// read-write lock, rarely written.
    revoked: RwLock<HashMap<String, u64>>,
}

impl MemoryGrants {
    pub(crate) fn new(limits: MemoryLimits) -> Self {
        Self {
            limits,
            codes: Mutex::default(),
            refresh: Mutex::default(),
            revoked: RwLock::default(),
        }
    }
}

/// Makes room for one more entry: expired ones go first; live ones never.
fn room<T>(map: &mut HashMap<[u8; 32], Entry<T>>, max: usize, now: u64) -> Result<(), StoreError> {
    if map.len() < max {
        return Ok(());
    }
    map.retain(|_, e| e.until > now);
    if map.len() < max {
        return Ok(());
    }
    // Spent markers only detect replays: they may go before live grants.
    map.retain(|_, e| matches!(e.slot, Slot::Live(_)));
    if map.len() < max {
        Ok(())
    } else {
        Err(StoreError::Full)
    }
}

fn take<T>(
    map: &mut HashMap<[u8; 32], Entry<T>>,
    digest: &[u8; 32],
    client_id: &str,
    now: u64,
    client_of: impl Fn(&T) -> &str,
    family_of: impl Fn(&T) -> &str,
    spent_until: impl Fn(&T) -> u64,
) -> Taken<T> {
    let Some(entry) = map.get_mut(digest) else {
        return Taken::Unknown;
    };
    if entry.until <= now {
        map.remove(digest);
        return Taken::Unknown;
    }
    match &entry.slot {
        Slot::Spent {
            client_id: owner,
            family,
        } => {
            if owner != client_id {
                return Taken::OtherClient;
            }
            Taken::Spent {
                family: family.clone(),
            }
        }
        Slot::Live(grant) => {
            if client_of(grant) != client_id {
                return Taken::OtherClient;
            }
            let spent = Slot::Spent {
                client_id: client_id.to_owned(),
                family: family_of(grant).to_owned(),
            };
            entry.until = spent_until(grant);
            match std::mem::replace(&mut entry.slot, spent) {
                Slot::Live(grant) => Taken::Fresh(grant),
                Slot::Spent { .. } => Taken::Unknown,
            }
        }
    }
}

impl GrantStore for MemoryGrants {
    fn put_code(&self, digest: [u8; 32], grant: CodeGrant) -> Result<(), StoreError> {
        let mut codes = lock(&self.codes);
        room(
            &mut codes,
            self.limits.codes,
            grant.expires.saturating_sub(1),
        )?;
        let until = grant.expires;
        codes.insert(
            digest,
            Entry {
                slot: Slot::Live(grant),
                until,
            },
        );
        Ok(())
    }

    fn take_code(&self, digest: &[u8; 32], client_id: &str, now: u64) -> Taken<CodeGrant> {
        let spent_for = self.limits.spent_code_for;
        let taken = take(
            &mut lock(&self.codes),
            digest,
            client_id,
            now,
            |g| &g.client_id,
            |g| &g.family,
            |g| g.expires.max(now).saturating_add(spent_for),
        );
        match taken {
            // Expired but not yet pruned: as good as unknown, and spent.
            Taken::Fresh(grant) if grant.expires <= now => Taken::Unknown,
            Taken::Fresh(grant) if self.is_revoked(&grant.family, now) => Taken::Unknown,
            other => other,
        }
    }

    fn put_refresh(&self, digest: [u8; 32], grant: RefreshGrant) -> Result<(), StoreError> {
        let mut refresh = lock(&self.refresh);
        room(
            &mut refresh,
            self.limits.refresh_tokens,
            grant.expires.saturating_sub(1),
        )?;
        let until = grant.expires;
        refresh.insert(
            digest,
            Entry {
                slot: Slot::Live(grant),
                until,
            },
        );
        Ok(())
    }

    fn take_refresh(&self, digest: &[u8; 32], client_id: &str, now: u64) -> Taken<RefreshGrant> {
        let taken = take(
            &mut lock(&self.refresh),
            digest,
            client_id,
            now,
            |g| &g.client_id,
            |g| &g.family,
            // A spent refresh token is remembered as long as it would have
            // lived: its reuse within that time revokes the family.
            |g| g.expires,
        );
        match taken {
            Taken::Fresh(grant) if self.is_revoked(&grant.family, now) => Taken::Unknown,
            other => other,
        }
    }

    fn refresh_family(&self, digest: &[u8; 32], client_id: &str) -> Option<String> {
        let refresh = lock(&self.refresh);
        match &refresh.get(digest)?.slot {
            Slot::Live(grant) if grant.client_id == client_id => Some(grant.family.clone()),
            Slot::Spent {
                client_id: owner,
                family,
            } if owner == client_id => Some(family.clone()),
            _ => None,
        }
    }

    fn revoke_family(&self, family: &str, now: u64) {
        let until = now.saturating_add(self.limits.revoked_for);
        let mut revoked = self.revoked.write().unwrap_or_else(|e| e.into_inner());
        // Never refused for room: a revocation that did not hold would be
        // worse than memory. Families are bounded by the refresh table.
        revoked.retain(|_, until| *until > now);
        revoked.insert(family.to_owned(), until);
        drop(revoked);
        // Its live refresh tokens go at once (their spent markers stay, so
        // a stolen copy presented later is still recognised).
        lock(&self.refresh).retain(|_, e| match &e.slot {
            Slot::Live(grant) => grant.family != family,
            Slot::Spent { .. } => true,
        });
        lock(&self.codes).retain(|_, e| match &e.slot {
            Slot::Live(grant) => grant.family != family,
            Slot::Spent { .. } => true,
        });
    }

    fn is_revoked(&self, family: &str, now: u64) -> bool {
        let revoked = self.revoked.read().unwrap_or_else(|e| e.into_inner());
        revoked.get(family).is_some_and(|until| *until > now)
    }

    fn prune(&self, now: u64) {
        lock(&self.codes).retain(|_, e| e.until > now);
        lock(&self.refresh).retain(|_, e| e.until > now);
        self.revoked
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(codes: usize) -> MemoryGrants {
        MemoryGrants::new(MemoryLimits {
            codes,
            refresh_tokens: 4,
            revoked_for: 100,
            spent_code_for: 50,
        })
    }

    fn code(family: &str, expires: u64) -> CodeGrant {
        CodeGrant {
            client_id: "app".into(),
            redirect_uri: "urn:ietf:wg:oauth:2.0:oob".into(),
            redirect_given: true,
            challenge: None,
            user: "alice".into(),
            binding: "b".into(),
            scope: "read".into(),
            family: family.into(),
            expires,
        }
    }

    fn refresh(family: &str, expires: u64) -> RefreshGrant {
        RefreshGrant {
            client_id: "app".into(),
            user: "alice".into(),
            binding: "b".into(),
            scope: "read".into(),
            family: family.into(),
            expires,
        }
    }

    #[test]
    fn a_code_works_once_and_its_replay_names_the_family() {
        let s = store(8);
        s.put_code([1; 32], code("f1", 60)).unwrap();
        assert_eq!(s.take_code(&[1; 32], "other", 10), Taken::OtherClient);
        assert!(matches!(s.take_code(&[1; 32], "app", 10), Taken::Fresh(_)));
        assert_eq!(
            s.take_code(&[1; 32], "app", 11),
            Taken::Spent {
                family: "f1".into()
            }
        );
        assert_eq!(s.take_code(&[2; 32], "app", 11), Taken::Unknown);
    }

    #[test]
    fn an_expired_code_is_unknown() {
        let s = store(8);
        s.put_code([1; 32], code("f1", 60)).unwrap();
        assert_eq!(s.take_code(&[1; 32], "app", 60), Taken::Unknown);
    }

    #[test]
    fn a_full_table_refuses_rather_than_evicts_live_codes() {
        let s = store(2);
        s.put_code([1; 32], code("a", 60)).unwrap();
        s.put_code([2; 32], code("b", 60)).unwrap();
        assert_eq!(s.put_code([3; 32], code("c", 60)), Err(StoreError::Full));
        assert!(matches!(s.take_code(&[1; 32], "app", 1), Taken::Fresh(_)));
        // A spent marker may make room.
        s.put_code([3; 32], code("c", 60)).unwrap();
    }

    #[test]
    fn revoking_a_family_kills_its_refresh_tokens_and_marks_it() {
        let s = store(8);
        s.put_refresh([1; 32], refresh("f1", 1000)).unwrap();
        s.put_refresh([2; 32], refresh("f2", 1000)).unwrap();
        assert_eq!(s.refresh_family(&[1; 32], "app").as_deref(), Some("f1"));
        assert_eq!(s.refresh_family(&[1; 32], "other"), None);
        s.revoke_family("f1", 10);
        assert!(s.is_revoked("f1", 10));
        assert!(!s.is_revoked("f2", 10));
        assert!(!s.is_revoked("f1", 110), "remembered for revoked_for");
        assert_eq!(s.take_refresh(&[1; 32], "app", 11), Taken::Unknown);
        assert!(matches!(
            s.take_refresh(&[2; 32], "app", 11),
            Taken::Fresh(_)
        ));
        assert_eq!(
            s.take_refresh(&[2; 32], "app", 12),
            Taken::Spent {
                family: "f2".into()
            }
        );
    }

    #[test]
    fn prune_drops_expired_entries() {
        let s = store(8);
        s.put_code([1; 32], code("a", 60)).unwrap();
        s.put_refresh([1; 32], refresh("a", 60)).unwrap();
        s.revoke_family("x", 0);
        s.prune(200);
        assert!(lock(&s.codes).is_empty());
        assert!(lock(&s.refresh).is_empty());
        assert!(s.revoked.read().unwrap().is_empty());
    }
}
