//! The seam between the layer's limits and a store shared by replicas
//! (`cluster/`, Redis). The layer keeps its own limiter and lockout records
//! in every case: they are the local pre-check (one replica can never need
//! more than the shared budget) and the fallback when the store is away.
//! What a shared store adds is answered here.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use super::Refusal;

/// A boxed future, as the trait's async calls return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which rate a key is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKind {
    /// `[rate_limit] per_ip`, keyed by client address.
    Address,
    /// `[rate_limit] per_user`, keyed by username.
    User,
}

/// An attempt reserved in the shared store: finish or cancel it.
#[derive(Debug)]
pub struct SharedAttempt {
    /// The client address.
    pub address: IpAddr,
    /// The username's key in the shared store (a digest, not the name).
    pub user: String,
    /// This attempt's id among the pending ones.
    pub id: String,
}

/// State shared by replicas: limits, lockouts.
pub trait SharedLimits: Send + Sync {
    /// `Err(wait)` when the shared rate for `key` is spent. Answered from
    /// what the store said last, at once; the request is counted in the
    /// store in the background (so a verdict lags by one round trip).
    fn check_rate(&self, kind: RateKind, key: &str) -> Result<(), Duration>;
    /// How long `address` stays locked, by what the store reported (kept
    /// while the store is away: what was locked stays locked).
    fn address_locked(&self, address: IpAddr) -> Option<Duration>;
    /// Reserves a verification for `user` from `address` across replicas.
    /// `Ok(None)`: the store is away and the local records decide alone.
    fn begin<'a>(
        &'a self,
        address: IpAddr,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<SharedAttempt>, Refusal>>;
    /// Records the attempt's outcome (a failure counts; a success clears the
    /// user's record for the address).
    fn finish(&self, attempt: SharedAttempt, success: bool) -> BoxFuture<'_, ()>;
    /// Releases an attempt that was not verified (overload).
    fn cancel(&self, attempt: SharedAttempt) -> BoxFuture<'_, ()>;
}
