//! Keys, the raw `EVAL` scripts, and the commands of every operation.

use std::time::Duration;

use redis::{Cmd, ConnectionLike, RedisResult};

/// The key a session lives under.
pub fn key(prefix: &str, session_id: &str) -> String {
    format!("{prefix}{session_id}")
}

/// The sorted set of a user's session ids, scored by when each record expires (ms since the
/// epoch). The `{hash tag}` keeps it in one Cluster slot whatever the prefix; its scripts
/// touch only it, so they are Cluster-safe.
pub fn user_index_key(prefix: &str, user_key: &str) -> String {
    format!("{prefix}user:{{{user_key}}}")
}

/// Files a member (or, with `XX`, moves an existing member's deadline), drops members past
/// theirs, and keeps the set alive as long as its longest-lived member, so it never outlives
/// its sessions for long and a user who never returns leaves nothing behind. Deadlines are
/// on Redis's own clock (`TIME`), the one its key expiry runs on.
pub(super) const INDEX_USER: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
local deadline = 'inf'
if ARGV[2] ~= 'inf' then deadline = now + tonumber(ARGV[2]) end
if ARGV[3] == 'XX' then
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[1])
else
  redis.call('ZADD', KEYS[1], deadline, ARGV[1])
end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] == nil then return 0 end
if top[2] == 'inf' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(top[2])) + 1000)
end
return 1
";

/// The members still within their deadline, dropping the others as it goes.
pub(super) const USER_SESSION_IDS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// A record's time to live as the index script takes it: milliseconds, `inf` for none.
pub(super) fn deadline_score(ttl: Option<Duration>) -> String {
    match ttl {
        None => "inf".to_owned(),
        Some(ttl) => (1000 * ex_seconds(ttl)).to_string(),
    }
}

pub(super) fn index_user(
    prefix: &str, user_key: &str, session_id: &str, ttl: Option<Duration>, only_existing: bool,
    c: &mut impl ConnectionLike,
) -> RedisResult<()> {
    redis::cmd("EVAL")
        .arg(INDEX_USER)
        .arg(1)
        .arg(user_index_key(prefix, user_key))
        .arg(session_id)
        .arg(deadline_score(ttl))
        .arg(if only_existing { "XX" } else { "" })
        .query::<i64>(c)
        .map(drop)
}

/// `ttl` as Redis `EX` seconds: rounded up, at least 1 (0 would be an error, not "no expiry").
pub fn ex_seconds(ttl: Duration) -> u64 {
    (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1)
}

// The commands of the common operations, built once for both the blocking connections and the
// pipelined ones (`WireStore`), so the two cannot drift apart.

pub(super) fn get_command(prefix: &str, session_id: &str) -> Cmd {
    let mut command = redis::cmd("GET");
    command.arg(key(prefix, session_id));
    command
}

/// `GETEX key EX ttl`: the value, with its expiry moved, in one round trip (Redis 6.2+).
pub(super) fn get_touching_command(prefix: &str, session_id: &str, ttl: Duration) -> Cmd {
    let mut command = redis::cmd("GETEX");
    command
        .arg(key(prefix, session_id))
        .arg("EX")
        .arg(ex_seconds(ttl));
    command
}

/// `SET key blob [XX] [EX ttl]`; with `XX` (`only_existing`) written only over an existing
/// key, atomically on the server, and answered with nil when there was none.
pub(super) fn set_command(
    prefix: &str, session_id: &str, blob: &[u8], ttl: Option<Duration>, only_existing: bool,
) -> Cmd {
    let mut command = redis::cmd("SET");
    command.arg(key(prefix, session_id)).arg(blob);
    if only_existing {
        command.arg("XX");
    }
    if let Some(ttl) = ttl {
        command.arg("EX").arg(ex_seconds(ttl));
    }
    command
}

pub(super) fn del_command(prefix: &str, session_id: &str) -> Cmd {
    let mut command = redis::cmd("DEL");
    command.arg(key(prefix, session_id));
    command
}

pub(super) fn get(
    prefix: &str, session_id: &str, c: &mut impl ConnectionLike,
) -> RedisResult<Option<Vec<u8>>> {
    get_command(prefix, session_id).query(c)
}

pub(super) fn set(
    prefix: &str, session_id: &str, blob: &[u8], ttl: Option<Duration>, c: &mut impl ConnectionLike,
) -> RedisResult<()> {
    set_command(prefix, session_id, blob, ttl, false).query(c)
}

pub(super) fn set_if_exists(
    prefix: &str, session_id: &str, blob: &[u8], ttl: Option<Duration>, c: &mut impl ConnectionLike,
) -> RedisResult<bool> {
    // OK when written, nil when there was no key.
    set_command(prefix, session_id, blob, ttl, true)
        .query::<Option<String>>(c)
        .map(|ok| ok.is_some())
}

pub(super) fn del(
    prefix: &str, session_id: &str, c: &mut impl ConnectionLike,
) -> RedisResult<bool> {
    del_command(prefix, session_id)
        .query::<i64>(c)
        .map(|removed| removed > 0)
}

/// Compare-and-set in one round trip, atomically on the server (one key, so Cluster-safe).
pub(super) const SET_IF_UNCHANGED: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
";

pub(super) fn set_if_unchanged(
    prefix: &str, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    c: &mut impl ConnectionLike,
) -> RedisResult<bool> {
    let written: i64 = redis::cmd("EVAL")
        .arg(SET_IF_UNCHANGED)
        .arg(1)
        .arg(key(prefix, session_id))
        .arg(if expected.is_some() { "1" } else { "0" })
        .arg(expected.unwrap_or_default())
        .arg(blob)
        .arg(ttl.map_or(0, ex_seconds))
        .query(c)?;
    Ok(written == 1)
}

pub(super) fn get_touching(
    prefix: &str, session_id: &str, ttl: Duration, c: &mut impl ConnectionLike,
) -> RedisResult<Option<Vec<u8>>> {
    get_touching_command(prefix, session_id, ttl).query(c)
}

pub(super) fn expire(
    prefix: &str, session_id: &str, ttl: Duration, c: &mut impl ConnectionLike,
) -> RedisResult<()> {
    redis::cmd("EXPIRE")
        .arg(key(prefix, session_id))
        .arg(ex_seconds(ttl))
        .query::<i64>(c)
        .map(drop)
}
