//! Listing a Redis store's records, for the operating commands (see `stores::listing`): `SCAN`
//! over the prefix (on every master of a cluster), and a record read with its time to live.

use redis::cluster::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ConnectionLike, FromRedisValue, RedisResult};

use super::commands::key;
use super::{RedisClusterStore, RedisSentinelStore, RedisStore};
use crate::ids;
use crate::stores::{within_limit, ListedRecord, Listing, SessionStore, StoreResult, TimeLeft};
use std::time::Duration;

/// How many keys one `SCAN` step looks at: large enough that 100,000 sessions take a hundred
/// round trips, small enough that no step blocks the server for long.
const SCAN_COUNT: usize = 1000;

/// The value and its time to live in milliseconds, read atomically in one round trip (a
/// one-key script, so Cluster-safe): `-1` without expiry, `-2` when the key is gone.
const GET_WITH_PTTL: &str = "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}";

/// Deletes the key only while it holds `ARGV[1]`, atomically on the server (one key, so
/// Cluster-safe): 1 when it did.
const DELETE_IF_UNCHANGED: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

fn delete_if_unchanged(
    prefix: &str, session_id: &str, expected: &[u8], c: &mut impl ConnectionLike,
) -> RedisResult<bool> {
    redis::cmd("EVAL")
        .arg(DELETE_IF_UNCHANGED)
        .arg(1)
        .arg(key(prefix, session_id))
        .arg(expected)
        .query::<i64>(c)
        .map(|deleted| deleted == 1)
}

/// `prefix` as a literal in a `SCAN MATCH` pattern.
fn glob_literal(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

/// The session ids among `keys`: the prefix, then a valid id (never an index or other key).
fn ids_among(prefix: &str, keys: Vec<Vec<u8>>, found: &mut Vec<String>) {
    for key in keys {
        let id = key
            .strip_prefix(prefix.as_bytes())
            .and_then(|rest| std::str::from_utf8(rest).ok())
            .filter(|id| ids::is_valid_session_id(id));
        if let Some(id) = id {
            found.push(id.to_owned());
        }
    }
}

/// Every session id on one server, `step` sending one `SCAN`.
fn scan_ids(
    prefix: &str, mut step: impl FnMut(&redis::Cmd) -> RedisResult<redis::Value>,
) -> RedisResult<Vec<String>> {
    let pattern = glob_literal(prefix);
    let mut found = Vec::new();
    let mut cursor = 0u64;
    loop {
        let mut command = redis::cmd("SCAN");
        command
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, keys): (u64, Vec<Vec<u8>>) = FromRedisValue::from_redis_value(&step(&command)?)?;
        ids_among(prefix, keys, &mut found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    // SCAN may name a key twice (a rehash between steps).
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

fn get_with_pttl(
    prefix: &str, session_id: &str, c: &mut impl ConnectionLike,
) -> RedisResult<(Option<Vec<u8>>, i64)> {
    redis::cmd("EVAL")
        .arg(GET_WITH_PTTL)
        .arg(1)
        .arg(key(prefix, session_id))
        .query(c)
}

fn listed(
    store: &dyn SessionStore, session_id: &str, max_bytes: usize,
    (blob, pttl): (Option<Vec<u8>>, i64),
) -> StoreResult<Option<ListedRecord>> {
    let Some(blob) = within_limit(store, session_id, blob, max_bytes)? else {
        return Ok(None);
    };
    let time_left = match pttl {
        -1 => TimeLeft::Unlimited,
        // Expired between the GET and the PTTL: nothing left.
        ms if ms < 0 => return Ok(None),
        ms => TimeLeft::Within(Duration::from_millis(ms.unsigned_abs())),
    };
    Ok(Some(ListedRecord { blob, time_left }))
}

/// `Listing` for the stores of one server (a plain one, or the master sentinels name).
macro_rules! single_server_listing {
    ($store:ty) => {
        impl Listing for $store {
            fn session_ids(&self) -> StoreResult<Vec<String>> {
                let prefix = &self.options().prefix;
                self.run(|c| scan_ids(prefix, |command| command.query(c)))
            }

            fn load_listed(
                &self, session_id: &str, max_bytes: usize,
            ) -> StoreResult<Option<ListedRecord>> {
                let reply = self.run(|c| get_with_pttl(&self.options().prefix, session_id, c))?;
                listed(self, session_id, max_bytes, reply)
            }

            fn delete_if_unchanged(&self, session_id: &str, expected: &[u8]) -> StoreResult<bool> {
                let prefix = &self.options().prefix;
                self.run(|c| delete_if_unchanged(prefix, session_id, expected, c))
            }
        }
    };
}

single_server_listing!(RedisStore);
single_server_listing!(RedisSentinelStore);

/// The address of every master that serves slots, from `CLUSTER NODES`
/// (`<id> <host:port@cport[,hostname]> <flags> ...`).
fn cluster_masters(c: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let nodes: String = FromRedisValue::from_redis_value(&c.route_command(
        &redis::cmd("CLUSTER").arg("NODES").clone(),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
    )?)?;
    let mut masters = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(address), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        // A master without slots holds no keys; a failed one is not asked.
        if !flags.contains(&"master") || flags.contains(&"fail") || fields.len() < 9 {
            continue;
        }
        let address = address.split(['@', ',']).next().unwrap_or_default();
        if let Some((host, port)) = address.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                masters.push((host.trim_matches(['[', ']']).to_owned(), port));
            }
        }
    }
    Ok(masters)
}

impl Listing for RedisClusterStore {
    fn session_ids(&self) -> StoreResult<Vec<String>> {
        let prefix = &self.options().prefix;
        self.run(|c| {
            let mut found = Vec::new();
            for (host, port) in cluster_masters(c)? {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port,
                });
                found.extend(scan_ids(prefix, |command| {
                    c.route_command(command, routing.clone())
                })?);
            }
            Ok(found)
        })
    }

    fn load_listed(&self, session_id: &str, max_bytes: usize) -> StoreResult<Option<ListedRecord>> {
        let reply = self.run(|c| get_with_pttl(&self.options().prefix, session_id, c))?;
        listed(self, session_id, max_bytes, reply)
    }

    fn delete_if_unchanged(&self, session_id: &str, expected: &[u8]) -> StoreResult<bool> {
        let prefix = &self.options().prefix;
        self.run(|c| delete_if_unchanged(prefix, session_id, expected, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_matched_literally() {
        assert_eq!(glob_literal("app:"), "app:*");
        assert_eq!(glob_literal(r"a*b?[c]\"), r"a\*b\?\[c\]\\*");
    }

    #[test]
    fn only_valid_ids_under_the_prefix_are_sessions() {
        let id = "0123456789abcdef0123456789abcdef";
        let keys = vec![
            format!("p:{id}").into_bytes(),
            format!("p:user:{{{id}}}").into_bytes(),
            format!("q:{id}").into_bytes(),
            b"p:0123".to_vec(),
            vec![b'p', b':', 0xff],
        ];
        let mut found = Vec::new();
        ids_among("p:", keys, &mut found);
        assert_eq!(found, vec![id.to_owned()]);
    }
}
