//! [`SharedLimits`] on Redis: the rate checks (sent in the background,
//! answered from what Redis said last) and the lockout reservations
//! (awaited: they come before an argon2 verification, which costs far
//! more than a round trip).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Cluster, Fallback, Mirror, until};
use crate::limit::shared::BoxFuture;
use crate::limit::{RateKind, Refusal, SharedAttempt, SharedLimits};

impl Cluster {
    fn lockout_keys(&self, address: &str, user: &str) -> [String; 4] {
        [
            self.key(&["lk", "ip", address]),
            self.key(&["lk", "ip-pending", address]),
            self.key(&["lk", "user", address, user]),
            self.key(&["lk", "user-pending", address, user]),
        ]
    }

    fn policy_args(&self) -> [u64; 3] {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        [
            u64::from(self.lockout.max_failures),
            ms(self.lockout.window),
            ms(self.lockout.duration),
        ]
    }

    fn lock_locally(&self, address: IpAddr, user: Option<&str>, remaining: Duration) {
        let until = until(Instant::now(), remaining);
        match user {
            None => Mirror::insert(
                &self.mirror.addresses,
                Some(&self.mirror.address_count),
                address,
                until,
            ),
            Some(user) => {
                Mirror::insert(&self.mirror.users, None, (address, user.to_owned()), until)
            }
        }
    }

    async fn begin_shared(
        &self,
        address: IpAddr,
        username: &str,
    ) -> Result<Option<SharedAttempt>, Refusal> {
        let user = self.user_digest(username);
        // What Redis said before holds while it is away.
        if let Some(remaining) = self
            .address_locked(address)
            .or_else(|| Mirror::remaining(&self.mirror.users, None, &(address, user.clone())))
        {
            return Err(Refusal::Locked(remaining));
        }
        if self.lockout.max_failures == 0 {
            return Ok(None);
        }
        let text = address.to_string();
        let keys = self.lockout_keys(&text, &user);
        let id = self.next_attempt_id();
        let [max, window, duration] = self.policy_args();
        let mut invocation = self.begin.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation
            .arg(max)
            .arg(window)
            .arg(duration)
            .arg(&id)
            .arg(u64::try_from(self.pending_hold.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.connection();
        let up = self.is_up();
        let Some(answer) = self
            .call::<Vec<u64>, _>(Fallback::Lockout, invocation.invoke_async(&mut conn))
            .await
        else {
            // The script may have run with its answer late: release the
            // slot in the background, or it would hold until it expires.
            if up {
                let _ = self.releases.try_send(SharedAttempt { address, user, id });
            }
            return Ok(None);
        };
        let remaining = Duration::from_millis(answer.get(1).copied().unwrap_or(0));
        match answer.first().copied() {
            Some(0) => Ok(Some(SharedAttempt { address, user, id })),
            Some(1) => {
                self.lock_locally(address, None, remaining);
                Err(Refusal::Locked(remaining))
            }
            Some(2) => {
                self.lock_locally(address, Some(&user), remaining);
                Err(Refusal::Locked(remaining))
            }
            _ => Err(Refusal::Busy),
        }
    }

    async fn finish_shared(&self, attempt: SharedAttempt, success: bool) {
        let text = attempt.address.to_string();
        let keys = self.lockout_keys(&text, &attempt.user);
        let [max, window, duration] = self.policy_args();
        let mut invocation = self.finish.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation.key(self.key(&["locks"]));
        invocation
            .arg(max)
            .arg(window)
            .arg(duration)
            .arg(&attempt.id)
            .arg(if success { 1 } else { 0 })
            .arg(&text);
        // Nobody waits on this (the answer has gone), so it is tried even
        // while Redis is marked down, with a longer deadline: a failure
        // lost here would be a guess Redis never counted.
        let mut conn = self.connection();
        let Some(answer) = self
            .call_within::<Vec<u64>, _>(
                Fallback::Lockout,
                self.timeout.max(Duration::from_secs(1)),
                invocation.invoke_async(&mut conn),
            )
            .await
        else {
            return;
        };
        if answer.first() == Some(&1) {
            self.lock_locally(attempt.address, None, self.lockout.duration);
        }
        if answer.get(1) == Some(&1) {
            self.lock_locally(attempt.address, Some(&attempt.user), self.lockout.duration);
        }
    }

    async fn cancel_shared(&self, attempt: SharedAttempt) {
        let text = attempt.address.to_string();
        let keys = self.lockout_keys(&text, &attempt.user);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM").arg(&keys[1]).arg(&attempt.id).ignore();
        pipe.cmd("ZREM").arg(&keys[3]).arg(&attempt.id).ignore();
        let mut conn = self.connection();
        let _ = self
            .call_within::<(), _>(
                Fallback::Lockout,
                self.timeout.max(Duration::from_secs(1)),
                pipe.query_async(&mut conn),
            )
            .await;
    }
}

impl SharedLimits for Cluster {
    fn check_rate(&self, kind: RateKind, key: &str) -> Result<(), Duration> {
        if !self.rates.contains_key(&kind) {
            return Ok(());
        }
        let key = match kind {
            RateKind::Address => key.to_owned(),
            // Usernames reach Redis only as keyed digests.
            RateKind::User => self.user_digest(key),
        };
        let key = (kind, key);
        if let Some(wait) =
            Mirror::remaining(&self.mirror.rates, Some(&self.mirror.rate_count), &key)
        {
            return Err(wait);
        }
        if !self.is_up() {
            self.fell_back(Fallback::Rate);
        } else if self.rate_queue.try_send(key).is_err() {
            // Full (a flood faster than Redis answers): this one is decided
            // by the local limiter alone.
            self.fell_back(Fallback::Rate);
        }
        Ok(())
    }

    fn address_locked(&self, address: IpAddr) -> Option<Duration> {
        Mirror::remaining(
            &self.mirror.addresses,
            Some(&self.mirror.address_count),
            &address,
        )
    }

    fn begin<'a>(
        &'a self,
        address: IpAddr,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Option<SharedAttempt>, Refusal>> {
        Box::pin(self.begin_shared(address, user))
    }

    fn finish(&self, attempt: SharedAttempt, success: bool) -> BoxFuture<'_, ()> {
        Box::pin(self.finish_shared(attempt, success))
    }

    fn cancel(&self, attempt: SharedAttempt) -> BoxFuture<'_, ()> {
        Box::pin(self.cancel_shared(attempt))
    }
}
