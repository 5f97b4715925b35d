//! [`GrantStore`] on Redis: a code issued by one replica is redeemed at
//! any other, once. Each operation is one Lua script (a take, a
//! compare-and-swap, a state change), so the in-memory store's guarantees
//! hold across replicas: a replay arriving while the first redemption is
//! still checking revokes it, and a refresh token rotates once.
//!
//! Layout (all under `gatehouse:{<prefix>}:oauth:`):
//! - `code:<digest>`: a hash, `s` = live or spent, the client, the user's
//!   digest, the grant (JSON, while live) or the family (once spent);
//!   kept until the code expires, then as a spent marker for an hour.
//! - `fam:<handle>`: a hash, the state (pending, active, revoked), the
//!   client, the grant, the current refresh token's digest and expiry;
//!   expires with its last refresh token, or, once revoked, when the last
//!   access token from it has.
//! - `user-codes:<user>`, `user-fams:<user>`: sorted sets for the per-user
//!   caps (10 waiting codes, 100 live families).
//! - `revoked`: revoked families by end of memory, which every replica
//!   reads each `sync_interval` (access tokens are checked in memory).
//!
//! Redis being away is an error ([`StoreError::Unavailable`]): the
//! endpoints answer 503 with `Retry-After` rather than risk a double
//! redemption.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Cluster, Fallback};
use crate::auth::oauth::grants::{
    CodeGrant, FamilyGrant, GrantStore, MemoryLimits, StoreError, Stored, Taken,
};
use crate::hex::encode as hex;

/// Sets a key's expiry to `at` (Unix seconds) unless it already lasts
/// longer: replicas with other settings never shorten each other's keys.
const RAISE: &str = r#"
local function raise(key, at)
  local ttl = redis.call('TTL', key)
  local now = tonumber(redis.call('TIME')[1])
  if ttl < 0 or ttl < tonumber(at) - now then redis.call('EXPIREAT', key, at) end
end
"#;

/// KEYS: the code, the user's waiting codes. ARGV: the sealed grant,
/// client, user digest, expiry, now, per-user cap, code digest, when the
/// record goes (expiry and the spent marker's life).
const PUT_CODE: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return 0 end
redis.call('HSET', KEYS[1], 's', 'live', 'c', ARGV[2], 'u', ARGV[3], 'g', ARGV[1], 'x', ARGV[4])
redis.call('EXPIREAT', KEYS[1], ARGV[8])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[7])
raise(KEYS[2], ARGV[4])
return 1
"#;

/// KEYS[1]: the code. ARGV: client, confidential, family handle, now,
/// spent marker life, keep-until, per-user cap, key prefix, code digest,
/// user-families set life.
const TAKE_CODE: &str = r#"
local v = redis.call('HMGET', KEYS[1], 's', 'c', 'g', 'u', 'f', 'x')
if not v[1] then return {'unknown'} end
local now = tonumber(ARGV[4])
local p = ARGV[8]
if v[1] == 'spent' then
  if v[2] == ARGV[1] then return {'spent', v[5]} end
  return {'other'}
end
local codes = p .. 'oauth:user-codes:' .. v[4]
if tonumber(v[6]) <= now then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', codes, ARGV[9])
  return {'revoked'}
end
if v[2] ~= ARGV[1] then return {'other'} end
local fams = p .. 'oauth:user-fams:' .. v[4]
local live = {}
local records = 0
for _, h in ipairs(redis.call('ZRANGE', fams, 0, -1)) do
  local st = redis.call('HGET', p .. 'oauth:fam:' .. h, 'st')
  if not st then
    redis.call('ZREM', fams, h)
  else
    records = records + 1
    if st ~= 'revoked' then table.insert(live, h) end
  end
end
local cap = tonumber(ARGV[7])
if records >= cap * 2 then return {'full'} end
local revoked = ''
if #live >= cap then
  revoked = live[1]
  local oldest = p .. 'oauth:fam:' .. revoked
  redis.call('HSET', oldest, 'st', 'revoked')
  redis.call('HDEL', oldest, 'cur', 'cx', 'g')
  redis.call('EXPIREAT', oldest, ARGV[6])
  redis.call('ZADD', p .. 'oauth:revoked', ARGV[6], revoked)
  raise(p .. 'oauth:revoked', ARGV[6])
end
redis.call('HSET', KEYS[1], 's', 'spent', 'f', ARGV[3])
redis.call('HDEL', KEYS[1], 'g')
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', codes, ARGV[9])
local fam = p .. 'oauth:fam:' .. ARGV[3]
redis.call('DEL', fam)
redis.call('HSET', fam, 'st', 'pending', 'c', ARGV[1], 'u', v[4], 'until', ARGV[6])
redis.call('EXPIREAT', fam, ARGV[6])
redis.call('ZADD', fams, now, ARGV[3])
raise(fams, now + tonumber(ARGV[10]))
return {'fresh', v[3], revoked}
"#;

/// KEYS[1]: the family. ARGV: key prefix, handle.
const ABANDON: &str = r#"
if redis.call('HGET', KEYS[1], 'st') ~= 'pending' then return 0 end
local u = redis.call('HGET', KEYS[1], 'u')
redis.call('ZREM', ARGV[1] .. 'oauth:user-fams:' .. u, ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"#;

/// KEYS[1]: the family. ARGV: refresh digest (or ''), its expiry, until,
/// the grant sealed for this family.
const ACTIVATE: &str = r#"
if redis.call('HGET', KEYS[1], 'st') ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'st', 'active', 'cur', ARGV[1], 'cx', ARGV[2], 'until', ARGV[3], 'g', ARGV[4])
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"#;

/// KEYS[1]: the family. ARGV: presented digest, client, now.
const PEEK: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'st', 'c', 'g', 'cur', 'cx', 'until')
if not v[1] then return {'unknown'} end
if v[2] ~= ARGV[2] then return {'other'} end
if v[1] == 'revoked' then return {'revoked'} end
if v[1] == 'pending' then return {'unknown'} end
local now = tonumber(ARGV[3])
if tonumber(v[6]) <= now then return {'revoked'} end
if v[4] and v[4] ~= '' and v[4] == ARGV[1] then
  if tonumber(v[5]) <= now then return {'revoked'} end
  return {'fresh', v[3]}
end
return {'spent'}
"#;

/// KEYS[1]: the family. ARGV: presented digest, next digest, its expiry,
/// until, key prefix, user-families set life.
const COMMIT: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'st', 'cur', 'u')
if v[1] ~= 'active' or v[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'cx', ARGV[3], 'until', ARGV[4])
redis.call('EXPIREAT', KEYS[1], ARGV[4])
raise(ARGV[5] .. 'oauth:user-fams:' .. v[3], tonumber(redis.call('TIME')[1]) + tonumber(ARGV[6]))
return 1
"#;

/// KEYS: the family, the revoked set. ARGV: keep-until, handle, now.
const REVOKE: &str = r#"
local st = redis.call('HGET', KEYS[1], 'st')
if not st or st == 'revoked' then return 0 end
redis.call('HSET', KEYS[1], 'st', 'revoked', 'until', ARGV[1])
redis.call('HDEL', KEYS[1], 'cur', 'cx', 'g')
-- Remembered as long as its access tokens live, as in memory (shorter
-- than its refresh token would have: a revoked record must not fill the
-- user's share for a month).
redis.call('EXPIREAT', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
raise(KEYS[2], ARGV[1])
return 1
"#;

/// The grant store on Redis.
pub(crate) struct RedisGrants {
    cluster: Arc<Cluster>,
    limits: MemoryLimits,
    access_keep: AtomicU64,
    /// How long a user's family set is kept after its last change: the
    /// longest a family can live.
    set_life: u64,
    put_code: redis::Script,
    take_code: redis::Script,
    abandon: redis::Script,
    activate: redis::Script,
    peek: redis::Script,
    commit: redis::Script,
    revoke: redis::Script,
}

impl RedisGrants {
    /// Grants in `cluster`'s Redis, bounded by `limits` (the per-user caps
    /// and the spent-code memory), refresh tokens living `refresh_ttl`.
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        limits: MemoryLimits,
        refresh_ttl: std::time::Duration,
    ) -> Self {
        Self {
            set_life: refresh_ttl.as_secs().max(limits.access_keep) + 3600,
            access_keep: AtomicU64::new(limits.access_keep),
            cluster,
            limits,
            put_code: redis::Script::new(&format!("{RAISE}{PUT_CODE}")),
            take_code: redis::Script::new(&format!("{RAISE}{TAKE_CODE}")),
            abandon: redis::Script::new(ABANDON),
            activate: redis::Script::new(ACTIVATE),
            peek: redis::Script::new(PEEK),
            commit: redis::Script::new(&format!("{RAISE}{COMMIT}")),
            revoke: redis::Script::new(&format!("{RAISE}{REVOKE}")),
        }
    }

    fn keep_until(&self, now: u64) -> u64 {
        now.saturating_add(self.access_keep.load(Ordering::Relaxed))
    }

    fn family_key(&self, handle: &str) -> String {
        self.cluster.key(&["oauth", "fam", handle])
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.cluster.connection();
        self.cluster
            .call(Fallback::Grants, invocation.invoke_async(&mut conn))
            .await
            .ok_or(StoreError::Unavailable)
    }

    async fn put(&self, digest: [u8; 32], grant: CodeGrant, now: u64) -> Result<(), StoreError> {
        let user = self.cluster.user_digest(&grant.user);
        let code = hex(&digest);
        let key = self.cluster.key(&["oauth", "code", &code]);
        // Sealed for this code's key: Redis learns nothing of the grant,
        // and a copy under another key opens to nothing.
        let json = serde_json::to_vec(&grant).map_err(|_| StoreError::Unavailable)?;
        let sealed = self
            .cluster
            .seal(&key, &json)
            .ok_or(StoreError::Unavailable)?;
        let mut invocation = self.put_code.key(&key);
        invocation
            .key(self.cluster.key(&["oauth", "user-codes", &user]))
            .arg(sealed)
            .arg(&grant.client_id)
            .arg(&user)
            .arg(grant.expires)
            .arg(now)
            .arg(self.limits.codes_per_user)
            .arg(&code)
            .arg(grant.expires.saturating_add(self.limits.spent_code_for));
        match self.run::<u8>(invocation).await? {
            1 => Ok(()),
            _ => Err(StoreError::Full),
        }
    }

    async fn take(
        &self,
        digest: &[u8; 32],
        client_id: &str,
        confidential: bool,
        family: &str,
        now: u64,
    ) -> Result<Taken<CodeGrant>, StoreError> {
        let code = hex(digest);
        let key = self.cluster.key(&["oauth", "code", &code]);
        let mut invocation = self.take_code.key(&key);
        invocation
            .arg(client_id)
            .arg(if confidential { "1" } else { "0" })
            .arg(family)
            .arg(now)
            .arg(self.limits.spent_code_for)
            .arg(self.keep_until(now))
            .arg(self.limits.per_user)
            .arg(&self.cluster.prefix)
            .arg(&code)
            .arg(self.set_life);
        let answer: Vec<String> = self.run(invocation).await?;
        Ok(match answer.first().map(String::as_str) {
            Some("fresh") => {
                if let Some(oldest) = answer.get(2).filter(|h| !h.is_empty()) {
                    // The user's oldest family made room: refused here now.
                    self.cluster.remember_revoked(oldest, self.keep_until(now));
                }
                // Sealed for this code's key: a grant copied from another
                // key, or written without the secret, opens to nothing.
                let grant: Option<CodeGrant> = answer
                    .get(1)
                    .and_then(|g| self.cluster.open(&key, g))
                    .and_then(|plain| serde_json::from_slice(&plain).ok());
                match grant {
                    Some(grant) if grant.client_id == client_id && grant.expires > now => {
                        Taken::Fresh(grant)
                    }
                    opened => {
                        if opened.is_none() {
                            tracing::warn!(
                                "an OAuth code in Redis does not open with this replica's [cluster] secret_file (is it the same on every replica?): refused"
                            );
                        }
                        // Spent by the script: its pending family goes,
                        // and the client is not counted as guessing.
                        let _ = self.abandon_now(family).await;
                        Taken::Revoked
                    }
                }
            }
            Some("spent") => Taken::Spent {
                family: answer.get(1).cloned().unwrap_or_default(),
            },
            Some("revoked") => Taken::Revoked,
            Some("other") => Taken::OtherClient,
            Some("full") => return Err(StoreError::Full),
            _ => Taken::Unknown,
        })
    }

    async fn peek_family(
        &self,
        family: &str,
        presented: &[u8; 32],
        client_id: &str,
        now: u64,
    ) -> Result<Taken<FamilyGrant>, StoreError> {
        let key = self.family_key(family);
        let mut invocation = self.peek.key(&key);
        invocation
            .arg(self.cluster.refresh_mac(&key, presented))
            .arg(client_id)
            .arg(now);
        let answer: Vec<String> = self.run(invocation).await?;
        Ok(match answer.first().map(String::as_str) {
            Some("fresh") => {
                // Sealed for this family at activation (see take).
                let grant: Option<FamilyGrant> = answer
                    .get(1)
                    .and_then(|g| self.cluster.open(&key, g))
                    .and_then(|plain| serde_json::from_slice(&plain).ok());
                match grant {
                    Some(grant) if grant.client_id == client_id => Taken::Fresh(grant),
                    _ => {
                        tracing::warn!(
                            "an OAuth grant in Redis does not open with this replica's [cluster] secret_file (is it the same on every replica?): refused"
                        );
                        Taken::Revoked
                    }
                }
            }
            Some("spent") => Taken::Spent {
                family: family.to_owned(),
            },
            Some("revoked") => Taken::Revoked,
            Some("other") => Taken::OtherClient,
            _ => Taken::Unknown,
        })
    }

    async fn abandon_now(&self, family: &str) -> Result<(), StoreError> {
        let mut invocation = self.abandon.key(self.family_key(family));
        invocation.arg(&self.cluster.prefix).arg(family);
        self.run::<u8>(invocation).await.map(|_| ())
    }

    async fn revoke_family_now(&self, family: &str, now: u64) -> Result<(), StoreError> {
        let keep = self.keep_until(now);
        let mut invocation = self.revoke.key(self.family_key(family));
        invocation
            .key(self.cluster.key(&["oauth", "revoked"]))
            .arg(keep)
            .arg(family)
            .arg(now);
        self.run::<u8>(invocation).await?;
        // Refused here at once; elsewhere within a sync interval.
        self.cluster.remember_revoked(family, keep);
        Ok(())
    }
}

impl GrantStore for RedisGrants {
    fn put_code(&self, digest: [u8; 32], grant: CodeGrant, now: u64) -> Stored<'_, ()> {
        Box::pin(self.put(digest, grant, now))
    }

    fn take_code<'a>(
        &'a self,
        digest: &'a [u8; 32],
        client_id: &'a str,
        confidential: bool,
        family: &'a str,
        now: u64,
    ) -> Stored<'a, Taken<CodeGrant>> {
        Box::pin(self.take(digest, client_id, confidential, family, now))
    }

    fn abandon_family<'a>(&'a self, family: &'a str) -> Stored<'a, ()> {
        Box::pin(self.abandon_now(family))
    }

    fn activate_family<'a>(
        &'a self,
        family: &'a str,
        grant: &'a FamilyGrant,
        refresh: Option<([u8; 32], u64)>,
        now: u64,
    ) -> Stored<'a, bool> {
        Box::pin(async move {
            let keep = self.keep_until(now);
            let key = self.family_key(family);
            let (current, expires) = refresh.map_or((String::new(), 0), |(d, e)| {
                (self.cluster.refresh_mac(&key, &d), e)
            });
            let until = refresh.map_or(keep, |(_, e)| e.max(keep));
            let json = serde_json::to_vec(grant).map_err(|_| StoreError::Unavailable)?;
            let sealed = self
                .cluster
                .seal(&key, &json)
                .ok_or(StoreError::Unavailable)?;
            let mut invocation = self.activate.key(&key);
            invocation.arg(current).arg(expires).arg(until).arg(sealed);
            self.run::<u8>(invocation).await.map(|n| n == 1)
        })
    }

    fn peek_refresh<'a>(
        &'a self,
        family: &'a str,
        presented: &'a [u8; 32],
        client_id: &'a str,
        now: u64,
    ) -> Stored<'a, Taken<FamilyGrant>> {
        Box::pin(self.peek_family(family, presented, client_id, now))
    }

    fn commit_refresh<'a>(
        &'a self,
        family: &'a str,
        presented: &'a [u8; 32],
        next: ([u8; 32], u64),
        now: u64,
    ) -> Stored<'a, bool> {
        Box::pin(async move {
            let until = next.1.max(self.keep_until(now));
            let key = self.family_key(family);
            let mut invocation = self.commit.key(&key);
            invocation
                .arg(self.cluster.refresh_mac(&key, presented))
                .arg(self.cluster.refresh_mac(&key, &next.0))
                .arg(next.1)
                .arg(until)
                .arg(&self.cluster.prefix)
                .arg(self.set_life);
            self.run::<u8>(invocation).await.map(|n| n == 1)
        })
    }

    fn owns_family<'a>(&'a self, family: &'a str, client_id: &'a str) -> Stored<'a, bool> {
        Box::pin(async move {
            let mut conn = self.cluster.connection();
            let mut cmd = redis::cmd("HGET");
            cmd.arg(self.family_key(family)).arg("c");
            let owner: Option<String> = self
                .cluster
                .call(Fallback::Grants, cmd.query_async(&mut conn))
                .await
                .ok_or(StoreError::Unavailable)?;
            Ok(owner.as_deref() == Some(client_id))
        })
    }

    fn revoke_family<'a>(&'a self, family: &'a str, now: u64) -> Stored<'a, ()> {
        Box::pin(self.revoke_family_now(family, now))
    }

    fn is_revoked(&self, family: &str, now: u64) -> bool {
        self.cluster.is_revoked(family, now)
    }

    fn keep_revoked_for(&self, seconds: u64) {
        self.access_keep.fetch_max(seconds, Ordering::Relaxed);
    }

    fn form_key(&self) -> Option<[u8; 32]> {
        Some(self.cluster.form_key)
    }

    fn spend_form(&self, nonce: [u8; 16], expires: u64) -> Stored<'_, bool> {
        Box::pin(async move {
            let mut conn = self.cluster.connection();
            // Relative (EX), from this replica's clock: an EXAT in Redis's
            // past would store nothing and let the form be used again.
            let left = expires
                .saturating_sub(crate::auth::oauth::unix_now())
                .max(1);
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.cluster.key(&["oauth", "form", &hex(&nonce)]))
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(left + 60);
            let set: Option<String> = self
                .cluster
                .call(Fallback::Grants, cmd.query_async(&mut conn))
                .await
                .ok_or(StoreError::Unavailable)?;
            Ok(set.is_some())
        })
    }

    fn prune(&self, _now: u64) {
        // Redis expires its keys itself; the copy of the revocations is
        // pruned with the cluster's mirror, as it syncs.
    }
}
