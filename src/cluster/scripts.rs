//! The Lua scripts Redis runs: each check or change is one script, so it is
//! atomic across replicas, and each reads Redis's own clock (`TIME`), so the
//! replicas' clocks do not matter. Every key they write has a TTL.

/// GCRA (the algorithm governor uses locally) for `cost` requests at once.
/// KEYS[1]: the key's theoretical arrival time (µs). ARGV: the emission
/// interval (µs), the burst, the cost. Returns `{allowed, wait_µs}`: how
/// many of the `cost` fit, and how long until one more would.
pub(super) const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local room = math.floor((now + tolerance - tat) / interval)
if room > cost then room = cost end
if room < 0 then room = 0 end
if room > 0 then
  tat = tat + room * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
local wait = tat + interval - tolerance - now
if wait < 0 then wait = 0 end
return {room, wait}
"#;

/// Shared by the two lockout scripts: a record's effective failure count
/// (`-1` while locked, with the lock's remaining ms) and the record write.
const LOCKOUT_COMMON: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local duration = tonumber(ARGV[3])
local function read(rec)
  local v = redis.call('HMGET', rec, 'f', 'w', 'l')
  local f = tonumber(v[1]) or 0
  local w = tonumber(v[2]) or now
  local l = tonumber(v[3]) or 0
  if l > now then return f, w, l end
  if l > 0 then f = 0; w = now; l = 0 end
  if now - w >= window then f = 0; w = now end
  return f, w, l
end
"#;

/// Reserves an attempt. KEYS: the address record, its pending set, the
/// (address, user) record, its pending set. ARGV: max_failures, window
/// (ms), duration (ms), the attempt id, how long a pending attempt holds
/// its slot (ms). Returns `{0}` (reserved), `{1, ms}` (address locked),
/// `{2, ms}` (user locked for this address) or `{3}` (every allowed
/// attempt is being verified now).
pub(super) fn begin() -> String {
    format!(
        "{LOCKOUT_COMMON}{}",
        r#"
local function room(rec, pend)
  local f, w, l = read(rec)
  if l > now then return -1, l - now end
  redis.call('ZREMRANGEBYSCORE', pend, '-inf', now)
  return f + redis.call('ZCARD', pend), 0
end
local n, wait = room(KEYS[1], KEYS[2])
if n < 0 then return {1, wait} end
if n >= max then return {3, 0} end
n, wait = room(KEYS[3], KEYS[4])
if n < 0 then return {2, wait} end
if n >= max then return {3, 0} end
local hold = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now + hold, ARGV[4])
redis.call('PEXPIRE', KEYS[2], hold)
redis.call('ZADD', KEYS[4], now + hold, ARGV[4])
redis.call('PEXPIRE', KEYS[4], hold)
return {0, 0}
"#
    )
}

/// Ends an attempt. KEYS: as [`begin`], then the set of address locks.
/// ARGV: max_failures, window, duration, the attempt id, `1` for a
/// success, the address (the lock set's member). A failure counts in both
/// records; a success clears the (address, user) record. Returns
/// `{address_locked_now, user_locked_now}`.
pub(super) fn finish() -> String {
    format!(
        "{LOCKOUT_COMMON}{}",
        r#"
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[4])
if ARGV[5] == '1' then
  redis.call('DEL', KEYS[3])
  return {0, 0}
end
local function fail(rec)
  local f, w, l = read(rec)
  f = f + 1
  local started = 0
  if f >= max and l == 0 then
    l = now + duration
    started = 1
  end
  redis.call('HSET', rec, 'f', f, 'w', w, 'l', l)
  local keep = math.max(w + window, l) - now + 1000
  redis.call('PEXPIRE', rec, keep)
  return started, l
end
local a, until_ms = fail(KEYS[1])
if a == 1 then
  redis.call('ZADD', KEYS[5], until_ms, ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  -- Only ever lengthened: a replica with a shorter duration must not
  -- expire another's longer locks.
  local ttl = redis.call('PTTL', KEYS[5])
  if ttl < 0 or ttl < duration + 1000 then redis.call('PEXPIRE', KEYS[5], duration + 1000) end
end
local u = fail(KEYS[3])
return {a, u}
"#
    )
}

/// Every address lock still in force. KEYS[1]: the lock set. ARGV: the
/// most to return. Returns `{now_ms, address, until_ms, …}`.
pub(super) const LIVE_LOCKS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Newest first: past the cap, the locks ending soonest are missed.
local found = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
table.insert(found, 1, string.format('%.0f', now))
return found
"#;
