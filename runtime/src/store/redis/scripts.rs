//! Lua scripts for the Redis store's atomic operations (compare-and-set, leases, deleting
//! idle consumers and rate limits). Sent with `EVALSHA`, loaded on `NOSCRIPT` by the redis crate.
//!
//! `GET` inside a script raises `WRONGTYPE` on a key of another kind, which reaches the caller
//! as [`crate::store::StoreError::WrongType`], as in the memory store.

use redis::Script;

/// `KEYS[1]`; `ARGV`: has-expected (`1`/`0`), expected, has-new (`1`/`0`), new, ttl ms (`0`:
/// none). Returns 1 if it swapped.
const COMPARE_AND_SET: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if ARGV[3] == '1' then
  if ARGV[5] ~= '0' then
    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
  else
    redis.call('SET', KEYS[1], ARGV[4])
  end
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// `KEYS[1]`; `ARGV`: owner, ttl ms. Takes a free lease or renews the owner's.
const ACQUIRE_LEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// `KEYS[1]`; `ARGV`: owner, ttl ms. Renews the lease only if the owner holds it.
const RENEW_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// `KEYS`: leases; `ARGV`: owner, ttl ms. Renews each lease the owner holds; returns one
/// flag per key.
const RENEW_LEASES: &str = r"
local renewed = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    renewed[i] = 1
  else
    renewed[i] = 0
  end
end
return renewed
";

/// `KEYS[1]`; `ARGV`: owner. Deletes the lease only if the owner holds it.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// `KEYS[1]`: a stream; `ARGV`: group, consumer, min idle ms. Deletes the consumer only if
/// it holds no pending entry and has been idle at least that long; returns 1 if it did. Reads
/// `XINFO CONSUMERS` as RESP2 (flat name/value pairs per consumer), the protocol scripts see
/// unless they ask for another; `idle` is the time since the consumer's last read or claim
/// on every Redis from 5 on. A missing stream is `NOGROUP`, like a missing group.
const DELETE_IDLE_CONSUMER: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('NOGROUP No such key or consumer group')
end
local min_idle = tonumber(ARGV[3])
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] == ARGV[2] then
    if f['pending'] == 0 and f['idle'] >= min_idle then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
";

/// Rate limits, token bucket (GCRA) — the Lua twin of `crate::rate::gcra`, on the server's
/// clock. `KEYS[1]` holds the theoretical arrival time (µs since the epoch) and expires when
/// the bucket is full again. `ARGV`: op (`take`, `peek`, `refund`, `penalize`), interval µs,
/// capacity, count, max_ahead, delay µs. Returns `{allowed, wait µs, remaining, reset µs}`.
const RATE_GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
local interval = tonumber(ARGV[2])
local capacity = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local max_ahead = tonumber(ARGV[5])
local delay = tonumber(ARGV[6])
local ahead = 0
local cur = redis.call('GET', KEYS[1])
if cur then
  local tat = tonumber(cur)
  if not tat then return redis.error_reply('ERR value is not an integer or out of range') end
  if tat > now then ahead = tat - now end
end
local full = capacity * interval
local allowed, wait, nxt = 1, 0, ahead
if op == 'take' or op == 'peek' then
  local e = ahead + count * interval
  wait = math.max(0, e - full)
  local bound = full
  if op == 'take' then bound = (capacity + max_ahead) * interval end
  if e > bound then
    allowed = 0
  elseif op == 'take' then
    nxt = e
  end
elseif op == 'refund' then
  nxt = math.max(0, ahead - count * interval)
elseif op == 'penalize' and delay > 0 then
  nxt = math.max(ahead, delay + (capacity - 1) * interval)
end
if nxt ~= ahead then
  if nxt > 0 then
    redis.call('SET', KEYS[1], string.format('%d', now + nxt), 'PX', math.ceil(nxt / 1000))
  else
    redis.call('DEL', KEYS[1])
  end
end
local remaining = math.min(capacity, math.floor(math.max(0, full - nxt) / interval))
return {allowed, wait, remaining, nxt}
";

/// Rate limits, fixed windows — the Lua twin of `crate::rate::window`, on the server's
/// clock. `KEYS[1]` is a hash: `w` (window index), `n` (units used from that window on), `u`
/// (penalty end, µs since the epoch; 0: none); it expires when it no longer matters. `ARGV`:
/// op, period µs, origin µs, limit, count, max_ahead, delay µs. Returns `{allowed, wait µs,
/// remaining, reset µs}`.
const RATE_WINDOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
local period = tonumber(ARGV[2])
local origin = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local count = tonumber(ARGV[5])
local max_ahead = tonumber(ARGV[6])
local delay = tonumber(ARGV[7])
local index = math.floor((now - origin) / period)
local start = origin + index * period
local used, untilv = 0, 0
local h = redis.call('HMGET', KEYS[1], 'w', 'n', 'u')
if h[1] or h[2] or h[3] then
  local w, n, u = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  if not (w and n and u) then return redis.error_reply('ERR value is not an integer or out of range') end
  used = math.max(0, n - math.max(0, index - w) * limit)
  untilv = u
end
local allowed, wait = 1, 0
if op == 'take' or op == 'peek' then
  local ahead = 0
  if op == 'take' then ahead = max_ahead end
  local penalty = math.max(0, untilv - now)
  local first = used
  if penalty > 0 then
    first = math.max(first, (math.floor((untilv - origin) / period) - index) * limit)
  end
  if count > 0 and (first % limit) + count > limit then
    first = math.ceil(first / limit) * limit
  end
  local win = math.floor(first / limit)
  local e = first + count
  local until_window = 0
  if win > 0 then until_window = start + win * period - now end
  wait = math.max(until_window, penalty)
  if not (wait == 0 or (ahead > 0 and e <= limit + ahead)) then allowed = 0 end
  if op == 'take' and allowed == 1 then used = e end
elseif op == 'refund' then
  used = math.max(0, used - count)
elseif op == 'penalize' and delay > 0 then
  untilv = math.max(untilv, now + delay)
end
local penalty = math.max(0, untilv - now)
local reset = math.max(0, start + math.ceil(used / limit) * period - now, penalty)
local remaining = 0
if penalty == 0 then remaining = math.max(0, limit - used) end
if op ~= 'peek' then
  if reset > 0 then
    local u = 0
    if penalty > 0 then u = untilv end
    redis.call('HSET', KEYS[1], 'w', string.format('%d', index), 'n', string.format('%d', used),
      'u', string.format('%d', u))
    redis.call('PEXPIRE', KEYS[1], math.ceil(reset / 1000))
  else
    redis.call('DEL', KEYS[1])
  end
end
return {allowed, wait, remaining, reset}
";

/// The store's scripts, hashed once.
pub(super) struct Scripts {
    pub compare_and_set: Script,
    pub acquire_lease: Script,
    pub renew_lease: Script,
    pub renew_leases: Script,
    pub release_lease: Script,
    pub delete_idle_consumer: Script,
    pub rate_gcra: Script,
    pub rate_window: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            compare_and_set: Script::new(COMPARE_AND_SET),
            acquire_lease: Script::new(ACQUIRE_LEASE),
            renew_lease: Script::new(RENEW_LEASE),
            renew_leases: Script::new(RENEW_LEASES),
            release_lease: Script::new(RELEASE_LEASE),
            delete_idle_consumer: Script::new(DELETE_IDLE_CONSUMER),
            rate_gcra: Script::new(RATE_GCRA),
            rate_window: Script::new(RATE_WINDOW),
        }
    }
}
