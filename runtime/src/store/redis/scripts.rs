//! Lua scripts for the Redis store's atomic operations (compare-and-set and leases). Sent with
//! `EVALSHA`, loaded on `NOSCRIPT` by the redis crate.
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

/// `KEYS[1]`; `ARGV`: owner. Deletes the lease only if the owner holds it.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// The store's scripts, hashed once.
pub(super) struct Scripts {
    pub compare_and_set: Script,
    pub acquire_lease: Script,
    pub renew_lease: Script,
    pub release_lease: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            compare_and_set: Script::new(COMPARE_AND_SET),
            acquire_lease: Script::new(ACQUIRE_LEASE),
            renew_lease: Script::new(RENEW_LEASE),
            release_lease: Script::new(RELEASE_LEASE),
        }
    }
}
