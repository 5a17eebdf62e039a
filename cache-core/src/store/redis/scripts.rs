//! The Lua scripts `RedisStore` runs, each one round trip and atomic in Redis, and the forms
//! of what crosses to and from them: tag lists as `len:tag` pieces, integer replies.
//!
//! Key layout (every key of a namespace carries the hash tag `{ns}`, so on Redis Cluster they
//! all live in one slot and one script may touch them):
//! - `ca:{ns}:r:<hash>`: a record, a hash with `v` (the encoded record, see `codec`), `b` (its
//!   `born` tick) and `t` (its tags as `len:tag` pieces), expiring on its own;
//! - `ca:{ns}:seq`: the tick counter; `ca:{ns}:purged`: the tick of the last `purge_all`;
//! - `ca:{ns}:t:<tag>`: the tick of the tag's last invalidation, with no expiry;
//! - `ca:{ns}:clocks`: a sorted set of those clock keys by the time (Unix ms) each was set. An
//!   invalidation drops a bounded number of clocks set more than the longest entry life plus an
//!   hour ago (`ca:{ns}:life` holds that life): no record they could reject is still alive. The
//!   purge tick is raised to the highest tick dropped, so that a fill begun before all of them is
//!   still refused;
//! - channel `ca:{ns}:inv`: `i <tick> <len:tag...>` and `p <tick>` messages.
//!
//! Expiry and eviction: records, and only records, expire. So under a `volatile-*`
//! `maxmemory-policy` (the README recommends `volatile-lru`) Redis makes room by evicting records,
//! never a clock, the counter, the purge tick or the index; under `noeviction` it refuses new
//! records once full. The scripts that move the clocks (`invalidate`, `purge`, `tick`) carry the
//! `allow-oom` flag (Redis 7): a full Redis still runs them. They write a few dozen bytes, and an
//! invalidation frees clocks as it goes; refusing one would leave every process serving what it
//! was meant to remove. The store script has a flagless shebang, so a full Redis refuses it as a
//! whole (the cache answers the request and does not store it). Without one it would be a legacy
//! script, which Redis refuses only at its first write that grows memory, and only if nothing was
//! written before: its `DEL` of the old record counts as a write, so a full Redis under
//! `noeviction` took every record and grew without bound. The read script stays a legacy one: a
//! full Redis must still serve reads, and its only writes delete (or, rarely, raise the counter).
//!
//! What must stay true: a record is returned, or stored, only if its `born` is at least the
//! purge tick and every clock of its tags; a value that is not what we wrote (wrong type,
//! missing fields, garbage numbers) is deleted or treated as invalidated, never trusted, and no
//! input makes a script loop or fail for good. The counter never goes below a tick a caller has
//! seen (a failover to a lagging replica, a restore or an eviction can lower it in Redis): every
//! tick is above the caller's floor, and a `born` above the counter means the counter went back,
//! so that record is refused and the counter raised. A clock is only ever dropped with the purge
//! tick raised to it. Tag pieces round-trip any text ([`parse_pieces`] of [`tag_pieces`]), and a
//! malformed list parses as `None`, never as other tags.

use deadpool_redis::redis::{Script, Value};

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
-- Notes in the index `idx` that `clock` was set at `now` (ms), so that a later invalidation can
-- drop it; an index of the wrong type is replaced.
local function index(idx, now, clock)
  local added = redis.pcall('ZADD', idx, string.format('%d', now), clock)
  if type(added) == 'table' and added.err then
    redis.call('DEL', idx)
    redis.call('ZADD', idx, string.format('%d', now), clock)
  end
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

/// `put`: KEYS record, seq, purged, life, clock index; ARGV clock prefix, value, born ("" =
/// now), tags, ttl ms, life ms, now (Unix ms). Returns `{seq, stored}`; stored is 0 when a tag or
/// purge is newer than `born`. A garbage clock or purge tick is repaired to the current tick (an
/// invalidation: the safe reading of "unknown"). The record always gets its ttl in the same
/// script, so that no record lives on without one (which would make it unevictable under a
/// `volatile-*` policy).
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
    redis.call('SET', key, string.format('%d', seq))
    index(KEYS[5], int(ARGV[7]) or 0, key)
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

/// `invalidate`: KEYS seq, life, purged, clock index, then one clock key per tag; ARGV channel,
/// tags (`len:tag` pieces, for the message), the caller's highest seen tick, now (Unix ms).
/// Ticks, sets every clock (no expiry), publishes, drops a few clocks no live record can need
/// (raising the purge tick to them), returns the tick.
const INVALIDATE_BODY: &str = r#"
local tick = next_tick(KEYS[1], ARGV[3])
local now = int(ARGV[4]) or 0
for i = 5, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', tick))
  index(KEYS[4], now, KEYS[i])
end
redis.call('PUBLISH', ARGV[1], 'i ' .. string.format('%d', tick) .. ' ' .. ARGV[2])
-- Clocks set before the horizon: every record they could reject has expired (a record lives at
-- most `life`, and one stored after a clock was set was checked against it).
local life = int(get(KEYS[2])) or 86400000
local horizon = now - life - 3600000
if horizon > 0 then
  local limit = 2 * (#KEYS - 4) + 16
  local old = redis.pcall('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', horizon),
    'LIMIT', 0, limit)
  if type(old) == 'table' and not old.err then
    local highest = 0
    for _, clock in ipairs(old) do
      local v = get(clock)
      local n = int(v)
      -- Unreadable: the safe reading is "invalidated now".
      if v and not n then n = tick end
      if n and n > highest then highest = n end
      redis.call('DEL', clock)
      redis.call('ZREM', KEYS[4], clock)
    end
    -- Whatever those clocks rejected stays rejected: a fill born before them (a handler that
    -- ran longer than any entry lives) is refused by the purge tick instead. An unreadable purge
    -- tick already rejects everything (the store script repairs it).
    local purged = get(KEYS[3])
    if highest > 0 and (not purged or (int(purged) and int(purged) < highest)) then
      redis.call('SET', KEYS[3], string.format('%d', highest))
    end
  end
end
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

/// Redis 7's script flags for the scripts that move the clocks: run them even when Redis is at
/// its `maxmemory` (they write a few bytes; refusing them would lose an invalidation). It must be
/// the script's first line.
const ALLOW_OOM: &str = "#!lua flags=allow-oom\n";
/// A shebang without flags: a script that may write, refused as a whole when Redis is full.
const DENY_OOM: &str = "#!lua\n";

/// A script: the prelude, then `body`.
fn script(body: &str) -> String {
    format!("{PRELUDE}{body}")
}

/// A script Redis runs even when it is out of memory.
fn script_allowed_when_full(body: &str) -> String {
    format!("{ALLOW_OOM}{PRELUDE}{body}")
}

/// A script Redis refuses as a whole when it is out of memory.
fn script_refused_when_full(body: &str) -> String {
    format!("{DENY_OOM}{PRELUDE}{body}")
}

fn get() -> String {
    script(GET_BODY)
}

fn put() -> String {
    script_refused_when_full(PUT_BODY)
}

fn invalidate() -> String {
    script_allowed_when_full(INVALIDATE_BODY)
}

fn purge() -> String {
    script_allowed_when_full(PURGE_BODY)
}

fn tick() -> String {
    script_allowed_when_full(TICK_BODY)
}

/// The scripts of one store. Each keeps its SHA: a call sends `EVALSHA`, and the body only when
/// Redis does not know it yet.
pub(crate) struct Scripts {
    pub(crate) get: Script,
    pub(crate) put: Script,
    pub(crate) invalidate: Script,
    pub(crate) purge: Script,
    pub(crate) tick: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            get: Script::new(&get()),
            put: Script::new(&put()),
            invalidate: Script::new(&invalidate()),
            purge: Script::new(&purge()),
            tick: Script::new(&tick()),
        }
    }
}

/// Tags as `len:tag` pieces, the form the scripts parse.
pub(crate) fn tag_pieces<'a>(tags: impl IntoIterator<Item = &'a String>) -> Vec<u8> {
    let mut out = Vec::new();
    for tag in tags {
        out.extend_from_slice(tag.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(tag.as_bytes());
    }
    out
}

/// Parses `len:tag` pieces; `None` if malformed.
pub(crate) fn parse_pieces(mut bytes: &[u8]) -> Option<Vec<String>> {
    let mut tags = Vec::new();
    while !bytes.is_empty() {
        let colon = bytes.iter().position(|b| *b == b':')?;
        let len: usize = std::str::from_utf8(&bytes[..colon]).ok()?.parse().ok()?;
        let rest = &bytes[colon + 1..];
        if rest.len() < len {
            return None;
        }
        tags.push(String::from_utf8(rest[..len].to_vec()).ok()?);
        bytes = &rest[len..];
    }
    Some(tags)
}

/// A non-negative integer in a reply, as a number or its decimal text; `None` for anything else.
pub(crate) fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_pieces_round_trip_any_text() {
        let tags = vec![
            "products".to_string(),
            "a:b".to_string(),
            String::new(),
            "\u{0}url:00ff".to_string(),
            "é 12:x".to_string(),
        ];
        assert_eq!(parse_pieces(&tag_pieces(&tags)), Some(tags));
        assert_eq!(parse_pieces(b"5:ab"), None);
        assert_eq!(parse_pieces(b"x:ab"), None);
    }

    #[test]
    fn the_flag_is_the_first_line_of_the_scripts_that_move_the_clocks() {
        for script in [super::invalidate(), super::purge(), super::tick()] {
            assert!(script.starts_with("#!lua flags=allow-oom\n"));
        }
        assert!(super::put().starts_with("#!lua\n"));
        assert!(!super::get().starts_with("#!"));
    }
}
