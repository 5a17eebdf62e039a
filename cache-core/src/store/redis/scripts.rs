//! The Lua scripts `RedisStore` runs, each one round trip and atomic in Redis, and the forms
//! of what crosses to and from them: tag lists as `len:tag` pieces, integer replies.
//!
//! Key layout. A namespace's clocks share one hash tag, so that the scripts that move them run in
//! one slot, atomically; each record has a hash tag of its own (its key's hash), so that on Redis
//! Cluster records spread over every master. No script touches both: every script declares each
//! key it touches in `KEYS`, and all of them lie in one slot.
//! - `ca:<ns>:r:{<hash>}`: a record, a hash with `v` (the encoded record, see `codec`), `b` (its
//!   `born` tick) and `t` (its tags as `len:tag` pieces), expiring on its own;
//! - `ca:<ns>:l:{<hash>}`: the fill lease of that key (its fencing token, expiring with the
//!   lease time), and `ca:<ns>:f:{<hash>}`: the last token granted for it (see `lease.rs`); both
//!   in the record's slot, and a record written under a lease keeps its token in field `f`;
//! - `ca:{<ns>}:seq`: the tick counter; `ca:{<ns>}:purged`: the tick of the last `purge_all`;
//! - `ca:{<ns>}:t:<tag>`: the tick of the tag's last invalidation, with no expiry;
//! - `ca:{<ns>}:s:<tag>`: the tick of the tag's last soft invalidation, indexed and pruned like
//!   the clocks. `check` refuses a store born before it, as a clock would; to a read it reports
//!   it, and the process serves the record stale only if its mirror knows that soft purge;
//! - `ca:{<ns>}:clocks`: a sorted set of those clock keys by the time (Unix ms) each was set. An
//!   invalidation names a bounded number of clocks set more than the longest entry life plus an
//!   hour ago (`ca:{<ns>}:life` holds that life) and `prune` drops them: no record they could
//!   reject is still alive. The purge tick is raised to the highest tick dropped, so that a fill
//!   begun before all of them is still refused;
//! - channel `ca:{<ns>}:inv`: `i <tick> <len:tag...>`, `s <tick> <len:tag...>` (soft) and
//!   `p <tick>` messages.
//!
//! A record and the clocks that judge it may lie in different slots, so they are never read or
//! written in one script. A store writes the record (`put`), then asks the clocks (`check`) and
//! deletes the record if they refuse it. A read checked in Redis reads the record (`HMGET`), then
//! asks the clocks about its `born` and tags (`check`). Between the two steps of a store a reader
//! may find the record; it checks it the same way, so a record is never served against a clock
//! that refuses it, whichever order the two steps and an invalidation take.
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
//! `noeviction` took every record and grew without bound. Reads are plain commands and `check`,
//! whose only writes repair garbage or raise the counter: a full Redis still serves them.
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

use deadpool_redis::redis::{self, Cmd, Script, ScriptInvocation, ToRedisArgs, Value};

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
"#;

/// `check`: KEYS seq, purged, life, clock index, then the clock key of each of the record's
/// tags, then the soft clock key of each; ARGV born, the record's life in ms ("" = a read:
/// leave it), now (Unix ms). Returns `{seq, valid, soft...}`: valid is 1 when `born` is at
/// least the purge tick and every clock, else 0; a store (a life given) also counts a soft
/// clock above `born` as refusing it (a fill begun before a soft purge is not stored as fresh),
/// while a read gets each soft clock's tick after `valid` (0: none) and decides itself. A
/// `born` above the counter means the counter went back: the counter is raised and the record
/// refused. A garbage clock or purge tick is repaired to the current tick (an invalidation: the
/// safe reading of "unknown"). Touches only the namespace's clock slot.
const CHECK_BODY: &str = r#"
local seq = int(get(KEYS[1])) or 0
local b = int(ARGV[1])
if not b then return {seq, 0} end
if b > seq then
  redis.call('SET', KEYS[1], string.format('%d', b))
  return {b, 0}
end
local purged = get(KEYS[2])
if purged and not int(purged) then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[2], string.format('%d', seq))
  purged = seq
end
if purged and int(purged) > b then return {seq, 0} end
local valid = 1
local life = int(ARGV[2])
local hard = 4 + (#KEYS - 4) / 2
local soft = {}
for i = 5, #KEYS do
  local clock = get(KEYS[i])
  if clock and not int(clock) then
    redis.call('DEL', KEYS[i])
    redis.call('SET', KEYS[i], string.format('%d', seq))
    index(KEYS[4], int(ARGV[3]) or 0, KEYS[i])
    clock = seq
  end
  local tick = int(clock) or 0
  if i > hard then
    soft[#soft + 1] = tick
    if life and tick > b then valid = 0 end
  elseif tick > b then
    valid = 0
  end
end
if valid == 1 and life and life > (int(get(KEYS[3])) or 0) then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[3], ARGV[2])
end
local reply = {seq, valid}
for _, tick in ipairs(soft) do reply[#reply + 1] = tick end
return reply
"#;

/// `put`: KEYS record; ARGV value, born, tags (`len:tag` pieces), ttl ms. Writes the record, a
/// hash with `v`, `b` and `t`, and its ttl in the same script, so that no record lives on
/// without one (which would make it unevictable under a `volatile-*` policy). Touches only the
/// record's own slot; the caller then runs `check` on the clock slot and deletes the record if
/// the clocks refuse it.
const PUT_BODY: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 't', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// `lease`: KEYS lease, fence, record (one slot: the key's hash tag); ARGV lease time ms, how
/// long the fence is kept ms. A lease held (a token with a time left) is reported as
/// `{0, ms left}`; anything else under its name (garbage, no expiry) is replaced. A grant is
/// `{1, token}`: the token is above the last one granted (the fence), above the record's own
/// (`f`), and at least Redis's clock in µs, so that it still grows after the fence expired.
const LEASE_BODY: &str = r#"
local held = get(KEYS[1])
if held then
  local left = redis.call('PTTL', KEYS[1])
  if int(held) and left > 0 then return {0, left} end
  redis.call('DEL', KEYS[1])
end
local now = redis.call('TIME')
local us = (tonumber(now[1]) or 0) * 1000000 + (tonumber(now[2]) or 0)
local f = redis.pcall('HGET', KEYS[3], 'f')
if type(f) == 'table' then f = nil end
local token = math.max(us, (int(get(KEYS[2])) or 0) + 1, (int(f) or 0) + 1)
redis.call('SET', KEYS[2], string.format('%d', token), 'PX', ARGV[2])
redis.call('SET', KEYS[1], string.format('%d', token), 'PX', ARGV[1])
return {1, token}
"#;

/// `release`: KEYS lease; ARGV token. Compare and delete: a lease that expired and was taken
/// by another fill (another token) is left alone. Returns 1 when it released.
const RELEASE_BODY: &str = r#"
if get(KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// `put_fenced`: KEYS record, the lease of the record's key, its fencing counter (one slot);
/// ARGV value, born, tags, ttl ms, token. `put` for a lease holder: refused (0) when a higher
/// token was granted since (the counter: a newer fill ran, whether or not its record is still
/// there or carries its token), the lease is held with a higher token (a newer fill runs) or
/// the record there was written with a higher one (a newer fill stored); otherwise the record
/// is written with `f` = token (1).
const PUT_FENCED_BODY: &str = r#"
local token = int(ARGV[5]) or 0
local fence = int(get(KEYS[3]))
if fence and fence > token then return 0 end
local lease = int(get(KEYS[2]))
if lease and lease > token then return 0 end
local f = redis.pcall('HGET', KEYS[1], 'f')
if type(f) == 'table' then f = nil end
if (int(f) or 0) > token then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 't', ARGV[3], 'f', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// `invalidate`: KEYS seq, life, purged, clock index, then one clock key per tag (the soft
/// clocks for a soft invalidation); ARGV channel, tags (`len:tag` pieces, for the message), the
/// caller's highest seen tick, now (Unix ms), the message kind (`i`, or `s` for soft).
/// Ticks, sets every clock (no expiry), publishes, and returns `{tick, horizon, old...}`: up to
/// a few clocks set before the horizon, which no live record can need any more. The caller
/// drops them with `prune`, which declares them (a script touches only the keys it is given).
const INVALIDATE_BODY: &str = r#"
local tick = next_tick(KEYS[1], ARGV[3])
local now = int(ARGV[4]) or 0
for i = 5, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', tick))
  index(KEYS[4], now, KEYS[i])
end
local kind = 'i'
if ARGV[5] == 's' then kind = 's' end
redis.call('PUBLISH', ARGV[1], kind .. ' ' .. string.format('%d', tick) .. ' ' .. ARGV[2])
-- Clocks set before the horizon: every record they could reject has expired (a record lives at
-- most `life`, and one stored after a clock was set was checked against it).
local life = int(get(KEYS[2])) or 86400000
local horizon = now - life - 3600000
local reply = {tick, math.max(horizon, 0)}
if horizon > 0 then
  local limit = 2 * (#KEYS - 4) + 16
  local old = redis.pcall('ZRANGEBYSCORE', KEYS[4], '-inf', string.format('%d', horizon),
    'LIMIT', 0, limit)
  if type(old) == 'table' and not old.err then
    for _, clock in ipairs(old) do table.insert(reply, clock) end
  end
end
return reply
"#;

/// `prune`: KEYS purged, clock index, then clocks `invalidate` named as old; ARGV its horizon
/// and tick. Drops each clock still set before the horizon (one set again meanwhile stays), and
/// raises the purge tick to the highest dropped: whatever those clocks rejected stays rejected
/// (a fill born before them, a handler that ran longer than any entry lives, is refused by the
/// purge tick instead). An unreadable purge tick already rejects everything (`check` repairs it).
const PRUNE_BODY: &str = r#"
local horizon = int(ARGV[1]) or 0
local tick = int(ARGV[2]) or 0
local highest = 0
for i = 3, #KEYS do
  local score = tonumber(redis.pcall('ZSCORE', KEYS[2], KEYS[i]))
  if score and score <= horizon then
    local v = get(KEYS[i])
    local n = int(v)
    -- Unreadable: the safe reading is "invalidated now".
    if v and not n then n = tick end
    if n and n > highest then highest = n end
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[2], KEYS[i])
  end
end
local purged = get(KEYS[1])
if highest > 0 and (not purged or (int(purged) and int(purged) < highest)) then
  redis.call('SET', KEYS[1], string.format('%d', highest))
end
return highest
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

/// A script Redis runs even when it is out of memory.
fn script_allowed_when_full(body: &str) -> String {
    format!("{ALLOW_OOM}{PRELUDE}{body}")
}

/// A script Redis refuses as a whole when it is out of memory.
fn script_refused_when_full(body: &str) -> String {
    format!("{DENY_OOM}{PRELUDE}{body}")
}

fn check() -> String {
    script_allowed_when_full(CHECK_BODY)
}

fn put() -> String {
    script_refused_when_full(PUT_BODY)
}

fn lease() -> String {
    script_refused_when_full(LEASE_BODY)
}

fn release() -> String {
    script_allowed_when_full(RELEASE_BODY)
}

fn put_fenced() -> String {
    script_refused_when_full(PUT_FENCED_BODY)
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

fn prune() -> String {
    script_allowed_when_full(PRUNE_BODY)
}

/// The scripts of one store. Each keeps its SHA: a call sends `EVALSHA`, and the body only when
/// Redis does not know it yet.
pub(crate) struct Scripts {
    pub(crate) check: Script,
    pub(crate) put: Script,
    pub(crate) put_fenced: Script,
    pub(crate) lease: Script,
    pub(crate) release: Script,
    pub(crate) prune: Script,
    pub(crate) invalidate: Script,
    pub(crate) purge: Script,
    pub(crate) tick: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            check: Script::new(&check()),
            put: Script::new(&put()),
            put_fenced: Script::new(&put_fenced()),
            lease: Script::new(&lease()),
            release: Script::new(&release()),
            prune: Script::new(&prune()),
            invalidate: Script::new(&invalidate()),
            purge: Script::new(&purge()),
            tick: Script::new(&tick()),
        }
    }
}

/// A call of one script with its keys and arguments kept, so that it can be sent alone
/// ([`ScriptCall::invocation`], loading the script when Redis lacks it) or inside a pipeline
/// ([`ScriptCall::evalsha`]), where what else the pipeline sends is bound to the node and the
/// connection that ran it.
pub(crate) struct ScriptCall<'s> {
    pub(crate) script: &'s Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl<'s> ScriptCall<'s> {
    pub(crate) fn new(script: &'s Script) -> ScriptCall<'s> {
        ScriptCall {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub(crate) fn key(&mut self, key: impl ToRedisArgs) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    pub(crate) fn invocation(&self) -> ScriptInvocation<'s> {
        let mut invocation = self.script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key.as_slice());
        }
        for arg in &self.args {
            invocation.arg(arg.as_slice());
        }
        invocation
    }

    /// `EVALSHA` of the script: fails with `NOSCRIPT` where Redis has not loaded it.
    pub(crate) fn evalsha(&self) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(self.keys.len());
        for key in &self.keys {
            cmd.arg(key.as_slice());
        }
        for arg in &self.args {
            cmd.arg(arg.as_slice());
        }
        cmd
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
        for script in [
            super::invalidate(),
            super::purge(),
            super::tick(),
            super::check(),
            super::prune(),
            super::release(),
        ] {
            assert!(script.starts_with("#!lua flags=allow-oom\n"));
        }
        // Writes that grow memory: a full Redis refuses them whole (a refused lease means
        // filling on this node alone).
        for script in [super::put(), super::put_fenced(), super::lease()] {
            assert!(script.starts_with("#!lua\n"));
        }
    }
}
