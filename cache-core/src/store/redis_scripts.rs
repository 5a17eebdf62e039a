//! The Lua scripts `RedisStore` runs: each is one round trip and runs atomically in Redis.
//!
//! Key layout (every key of a namespace carries the hash tag `{ns}`, so on Redis Cluster they
//! all live in one slot and one script may touch them):
//! - `ca:{ns}:r:<hash>`: a record, a hash with `v` (the encoded record, see `codec`), `b` (its
//!   `born` tick) and `t` (its tags as `len:tag` pieces), expiring on its own;
//! - `ca:{ns}:seq`: the tick counter; `ca:{ns}:purged`: the tick of the last `purge_all`;
//! - `ca:{ns}:t:<tag>`: the tick of the tag's last invalidation, kept for the longest entry life
//!   plus an hour (`ca:{ns}:life` holds that life);
//! - channel `ca:{ns}:inv`: `i <tick> <len:tag...>` and `p <tick>` messages.
//!
//! What must stay true: a record is returned, or stored, only if its `born` is at least the
//! purge tick and every clock of its tags; a value that is not what we wrote (wrong type,
//! missing fields, garbage numbers) is deleted or treated as invalidated, never trusted, and no
//! input makes a script loop or fail for good. The counter never goes below a tick a caller has
//! seen (a failover to a lagging replica, a restore or an eviction can lower it in Redis): every
//! tick is above the caller's floor, and a `born` above the counter means the counter went back,
//! so that record is refused and the counter raised.

/// Helpers every script starts with.
const PRELUDE: &str = r#"
-- A non-negative integer below 2^53 read from Redis, or nil for anything else (nan, inf,
-- fractions, text, wrong types).
local function int(v)
  local n = tonumber(v)
  if n and n == n and n >= 0 and n < 9007199254740992 and n == math.floor(n) then return n end
  return nil
end
-- GET that reads a key of the wrong type as garbage instead of failing the script.
local function get(key)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' and v.err then return 'wrong type' end
  return v
end
-- The next tick: above the counter and above the caller's floor, written back.
local function next_tick(seq_key, floor)
  local cur = int(get(seq_key)) or 0
  local tick = math.max(cur, int(floor) or 0) + 1
  redis.call('SET', seq_key, string.format('%d', tick))
  return tick
end
-- Calls visit(tag) for each `len:tag` piece; false if the list is malformed.
local function each_tag(tags, visit)
  local i = 1
  while i <= #tags do
    local digits = string.match(tags, '^%d+:', i)
    if not digits then return false end
    local n = tonumber(string.sub(digits, 1, -2))
    local from = i + #digits
    if from + n - 1 > #tags then return false end
    if visit(string.sub(tags, from, from + n - 1)) == false then return false end
    i = from + n
  end
  return true
end
"#;

/// `get`: KEYS record, seq, purged; ARGV clock prefix. Returns `{seq, status[, value]}` with
/// status 0 absent, 1 valid, 2 malformed (deleted), 3 invalidated (deleted).
const GET_BODY: &str = r#"
local seq = int(get(KEYS[2])) or 0
local r = redis.pcall('HMGET', KEYS[1], 'v', 'b', 't')
if type(r) ~= 'table' or r.err then
  redis.call('DEL', KEYS[1])
  return {seq, 2}
end
if not r[1] then return {seq, 0} end
local born = int(r[2])
local tags = r[3]
if not born or not tags then
  redis.call('DEL', KEYS[1])
  return {seq, 2}
end
-- A born above the counter: the counter went back; nothing vouches for this record.
if born > seq then
  redis.call('SET', KEYS[2], string.format('%d', born))
  redis.call('DEL', KEYS[1])
  return {born, 3}
end
local purged = get(KEYS[3])
if purged and (not int(purged) or int(purged) > born) then
  redis.call('DEL', KEYS[1])
  return {seq, 3}
end
local valid = true
local well_formed = each_tag(tags, function(tag)
  local clock = get(ARGV[1] .. tag)
  if clock and (not int(clock) or int(clock) > born) then
    valid = false
    return false
  end
end)
if not valid then
  redis.call('DEL', KEYS[1])
  return {seq, 3}
end
if not well_formed then
  redis.call('DEL', KEYS[1])
  return {seq, 2}
end
return {seq, 1, r[1]}
"#;

/// `put`: KEYS record, seq, purged, life; ARGV clock prefix, value, born ("" = now), tags,
/// ttl ms, life ms. Returns `{seq, stored}`; stored is 0 when a tag or purge is newer than
/// `born`. A garbage clock or purge tick is repaired to the current tick (an invalidation:
/// the safe reading of "unknown").
const PUT_BODY: &str = r#"
local seq = int(get(KEYS[2])) or 0
local born = ARGV[3]
if born == '' then born = string.format('%d', seq) end
local b = int(born)
if not b then return {seq, 0} end
if b > seq then
  redis.call('SET', KEYS[2], string.format('%d', b))
  return {b, 0}
end
local purged = get(KEYS[3])
if purged and not int(purged) then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[3], string.format('%d', seq))
  purged = seq
end
if purged and int(purged) > b then return {seq, 0} end
local life = int(get(KEYS[4])) or 0
local valid = true
local well_formed = each_tag(ARGV[4], function(tag)
  local key = ARGV[1] .. tag
  local clock = get(key)
  if clock and not int(clock) then
    redis.call('DEL', key)
    redis.call('SET', key, string.format('%d', seq), 'PX', math.max(life, int(ARGV[6]) or 0) + 3600000)
    clock = seq
  end
  if clock and int(clock) > b then
    valid = false
    return false
  end
end)
if not (valid and well_formed) then return {seq, 0} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', born, 't', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if (int(ARGV[6]) or 0) > life then
  redis.call('DEL', KEYS[4])
  redis.call('SET', KEYS[4], ARGV[6])
end
return {seq, 1}
"#;

/// `invalidate`: KEYS seq, life, then one clock key per tag; ARGV channel, tags (`len:tag`
/// pieces, for the message), the caller's highest seen tick. Ticks, sets every clock, publishes,
/// returns the tick.
const INVALIDATE_BODY: &str = r#"
local tick = next_tick(KEYS[1], ARGV[3])
local life = int(get(KEYS[2])) or 86400000
for i = 3, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('SET', KEYS[i], string.format('%d', tick), 'PX', life + 3600000)
end
redis.call('PUBLISH', ARGV[1], 'i ' .. string.format('%d', tick) .. ' ' .. ARGV[2])
return tick
"#;

/// `purge_all`: KEYS seq, purged; ARGV channel, the caller's highest seen tick.
const PURGE_BODY: &str = r#"
local tick = next_tick(KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[2], string.format('%d', tick))
redis.call('PUBLISH', ARGV[1], 'p ' .. string.format('%d', tick))
return tick
"#;

/// `resync`: KEYS seq; ARGV the caller's highest seen tick. Ticks without invalidating
/// anything, so that a process that just (re)subscribed has a tick above every fill it began
/// before.
const TICK_BODY: &str = r#"
return next_tick(KEYS[1], ARGV[1])
"#;

/// A script: the prelude, then `body`.
fn script(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

pub(crate) fn get() -> String {
    script(GET_BODY)
}

pub(crate) fn put() -> String {
    script(PUT_BODY)
}

pub(crate) fn invalidate() -> String {
    script(INVALIDATE_BODY)
}

pub(crate) fn purge() -> String {
    script(PURGE_BODY)
}

pub(crate) fn tick() -> String {
    script(TICK_BODY)
}
