//! Coalescing identical in-flight verifications: when many requests carry
//! the same credential while the cache is cold, one runs argon2 and the rest
//! wait for its answer.
//!
//! Flights are keyed by username and joined only on a constant-time match of
//! the full credential digest, so two different passwords never share a
//! result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::cache::CredentialDigest;

/// Verifications in flight, one per username.
#[derive(Default)]
pub struct InFlight {
    flights: Arc<Mutex<HashMap<Box<str>, Flight>>>,
}

struct Flight {
    digest: CredentialDigest,
    result: watch::Receiver<Option<bool>>,
}

/// What a request should do about a credential.
pub enum Join {
    /// Nobody verifies it yet: this request does, and must publish.
    Lead(Leader),
    /// The same credential is being verified: wait for that answer.
    Follow(watch::Receiver<Option<bool>>),
    /// Another password for this user is in flight: verify independently.
    Alone,
}

/// The request that verifies for everyone waiting on the same credential.
/// Dropping it without publishing tells the followers there is no answer.
pub struct Leader {
    flights: Arc<Mutex<HashMap<Box<str>, Flight>>>,
    username: Box<str>,
    result: watch::Sender<Option<bool>>,
}

impl InFlight {
    /// Joins the flight for this exact credential, or starts one.
    pub fn join(&self, username: &str, digest: CredentialDigest) -> Join {
        let mut flights = crate::sync::lock(&self.flights);
        match flights.get(username) {
            Some(flight) if flight.digest.matches(&digest) => Join::Follow(flight.result.clone()),
            Some(_) => Join::Alone,
            None => {
                let (sender, receiver) = watch::channel(None);
                flights.insert(
                    username.into(),
                    Flight {
                        digest,
                        result: receiver,
                    },
                );
                Join::Lead(Leader {
                    flights: Arc::clone(&self.flights),
                    username: username.into(),
                    result: sender,
                })
            }
        }
    }

    /// Whether no verification is in flight.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        crate::sync::lock(&self.flights).is_empty()
    }
}

impl Leader {
    /// Tells every follower the outcome.
    pub fn publish(self, ok: bool) {
        self.result.send_replace(Some(ok));
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut flights = crate::sync::lock(&self.flights);
        flights.remove(&self.username);
    }
}

/// Waits for the leader's answer; `None` if it gave none (it was refused
/// for overload, or the server is stopping).
pub async fn follow(mut result: watch::Receiver<Option<bool>>) -> Option<bool> {
    result.wait_for(Option::is_some).await.ok().and_then(|r| *r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::cache::{CachePolicy, VerifiedCache};

    #[tokio::test]
    async fn same_credential_follows_other_password_goes_alone() {
        let cache = VerifiedCache::new(CachePolicy::default()).unwrap();
        let inflight = InFlight::default();
        let d = cache.digest("alice", b"secret", &[1; 32]);
        let Join::Lead(leader) = inflight.join("alice", d) else {
            panic!("first leads")
        };
        let Join::Follow(rx) = inflight.join("alice", d) else {
            panic!("same credential follows")
        };
        assert!(matches!(
            inflight.join("alice", cache.digest("alice", b"guess", &[1; 32])),
            Join::Alone
        ));
        let waiter = tokio::spawn(follow(rx));
        leader.publish(true);
        assert_eq!(waiter.await.unwrap(), Some(true));
        assert!(inflight.is_empty());
        assert!(matches!(inflight.join("alice", d), Join::Lead(_)));
    }

    #[tokio::test]
    async fn a_leader_that_gives_up_releases_its_followers() {
        let cache = VerifiedCache::new(CachePolicy::default()).unwrap();
        let inflight = InFlight::default();
        let d = cache.digest("alice", b"secret", &[1; 32]);
        let Join::Lead(leader) = inflight.join("alice", d) else {
            panic!()
        };
        let Join::Follow(rx) = inflight.join("alice", d) else {
            panic!()
        };
        drop(leader);
        assert_eq!(follow(rx).await, None);
    }
}
