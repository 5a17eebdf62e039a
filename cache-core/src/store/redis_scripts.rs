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
//! missing fields, garbage numbers) is deleted or treated as invalidated, never trusted.

/// `get`: KEYS record, seq, purged; ARGV clock prefix. Returns `{seq, status[, value]}` with
/// status 0 absent, 1 valid, 2 malformed (deleted), 3 invalidated (deleted).
pub(crate) const GET: &str = r#"
local seq = tonumber(redis.call('GET', KEYS[2])) or 0
local r = redis.pcall('HMGET', KEYS[1], 'v', 'b', 't')
if type(r) ~= 'table' or r.err then
  redis.call('DEL', KEYS[1])
  return {seq, 2}
end
if not r[1] then return {seq, 0} end
local born = tonumber(r[2])
local tags = r[3]
if not born or not tags then
  redis.call('DEL', KEYS[1])
  return {seq, 2}
end
local purged = redis.call('GET', KEYS[3])
if purged and (not tonumber(purged) or tonumber(purged) > born) then
  redis.call('DEL', KEYS[1])
  return {seq, 3}
end
local i = 1
while i <= #tags do
  local colon = string.find(tags, ':', i, true)
  local n = colon and tonumber(string.sub(tags, i, colon - 1))
  if not n then
    redis.call('DEL', KEYS[1])
    return {seq, 2}
  end
  local clock = redis.call('GET', ARGV[1] .. string.sub(tags, colon + 1, colon + n))
  if clock and (not tonumber(clock) or tonumber(clock) > born) then
    redis.call('DEL', KEYS[1])
    return {seq, 3}
  end
  i = colon + 1 + n
end
return {seq, 1, r[1]}
"#;

/// `put`: KEYS record, seq, purged, life; ARGV clock prefix, value, born ("" = now), tags,
/// ttl ms, life ms. Returns `{seq, stored}`; stored is 0 when a tag or purge is newer than
/// `born`. A garbage clock or purge tick is repaired to the current tick (an invalidation:
/// the safe reading of "unknown").
pub(crate) const PUT: &str = r#"
local seq = tonumber(redis.call('GET', KEYS[2])) or 0
local born = ARGV[3]
if born == '' then born = tostring(seq) end
local b = tonumber(born)
if not b then return {seq, 0} end
local purged = redis.call('GET', KEYS[3])
if purged and not tonumber(purged) then
  redis.call('SET', KEYS[3], seq)
  purged = seq
end
if purged and tonumber(purged) > b then return {seq, 0} end
local tags = ARGV[4]
local i = 1
while i <= #tags do
  local colon = string.find(tags, ':', i, true)
  local n = colon and tonumber(string.sub(tags, i, colon - 1))
  if not n then return {seq, 0} end
  local key = ARGV[1] .. string.sub(tags, colon + 1, colon + n)
  local clock = redis.call('GET', key)
  if clock and not tonumber(clock) then
    redis.call('SET', key, seq, 'PX', 86400000)
    clock = seq
  end
  if clock and tonumber(clock) > b then return {seq, 0} end
  i = colon + 1 + n
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', born, 't', tags)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local life = tonumber(redis.call('GET', KEYS[4]))
if not life or tonumber(ARGV[6]) > life then redis.call('SET', KEYS[4], ARGV[6]) end
return {seq, 1}
"#;

/// `invalidate`: KEYS seq, life, then one clock key per tag; ARGV channel, tags (`len:tag`
/// pieces, for the message), the caller's highest seen tick. Ticks, sets every clock, publishes,
/// returns the tick. A garbage counter restarts above what the caller has seen.
pub(crate) const INVALIDATE: &str = r#"
local tick
if tonumber(redis.call('GET', KEYS[1])) then
  tick = redis.call('INCR', KEYS[1])
else
  tick = (tonumber(ARGV[3]) or 0) + 1
  redis.call('SET', KEYS[1], tick)
end
local life = tonumber(redis.call('GET', KEYS[2])) or 86400000
for i = 3, #KEYS do
  redis.call('SET', KEYS[i], tick, 'PX', life + 3600000)
end
redis.call('PUBLISH', ARGV[1], 'i ' .. tick .. ' ' .. ARGV[2])
return tick
"#;

/// `purge_all`: KEYS seq, purged; ARGV channel, the caller's highest seen tick.
pub(crate) const PURGE: &str = r#"
local tick
if tonumber(redis.call('GET', KEYS[1])) then
  tick = redis.call('INCR', KEYS[1])
else
  tick = (tonumber(ARGV[2]) or 0) + 1
  redis.call('SET', KEYS[1], tick)
end
redis.call('SET', KEYS[2], tick)
redis.call('PUBLISH', ARGV[1], 'p ' .. tick)
return tick
"#;

/// `resync`: KEYS seq; ARGV the caller's highest seen tick. Ticks without invalidating
/// anything, so that a process that just (re)subscribed has a tick above every fill it began
/// before.
pub(crate) const TICK: &str = r#"
local tick
if tonumber(redis.call('GET', KEYS[1])) then
  tick = redis.call('INCR', KEYS[1])
else
  tick = (tonumber(ARGV[1]) or 0) + 1
  redis.call('SET', KEYS[1], tick)
end
return tick
"#;
