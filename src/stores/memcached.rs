//! Sessions in one or several memcached servers (the `memcache` crate, ASCII protocol), each key
//! on the server its hash picks. Every failure is `Unavailable`.

use std::time::Duration;

use memcache::{Client, ConnectionManager, Url};

use super::{within_limit, SessionStore, StoreError, StoreErrorKind};

/// The prefix of every key unless told otherwise.
pub const DEFAULT_PREFIX: &str = "tornsession:";
/// How long connecting may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may wait to be written or answered, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many connections a store keeps per server, by default.
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// Longest key memcached takes.
const MAX_KEY_LEN: usize = 250;
/// How often `save_if_exists` retries when other writers keep changing the record under it.
const REPLACE_ATTEMPTS: usize = 5;
/// memcached reads an exptime above 30 days as a Unix time, not a duration.
const RELATIVE_EXPTIME_LIMIT: u64 = 60 * 60 * 24 * 30;

#[derive(Debug, Clone)]
pub struct MemcachedOptions {
    pub prefix: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub pool_size: u32,
}

impl Default for MemcachedOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// `host:port` or `memcache://host:port` as the `memcache://host:port` URL the crate takes, with
/// the ASCII protocol and the per-command timeout (applied to every new connection) added.
pub fn server_url(server: &str, timeout: Duration) -> Result<Url, String> {
    let server = server.trim();
    let base = if server.contains("://") {
        server.to_owned()
    } else {
        format!("memcache://{server}")
    };
    let mut url = Url::parse(&base).map_err(|e| format!("bad server {server:?}: {e}"))?;
    if url.scheme() != "memcache" {
        return Err(format!(
            "bad server {server:?}: expected host:port or memcache://host:port"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) || url.port().is_none() {
        return Err(format!("bad server {server:?}: expected host:port"));
    }
    url.query_pairs_mut()
        .append_pair("protocol", "ascii")
        .append_pair("timeout", &timeout.as_secs_f64().to_string());
    Ok(url)
}

/// The memcached `exptime` for `ttl`: 0 for none, whole seconds rounded up (at least 1), and an
/// absolute Unix time beyond 30 days, as memcached reads larger numbers that way.
pub fn exptime(ttl: Option<Duration>, now_unix: u64) -> u32 {
    let Some(ttl) = ttl else { return 0 };
    let seconds = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
    let value = if seconds > RELATIVE_EXPTIME_LIMIT {
        now_unix.saturating_add(seconds)
    } else {
        seconds
    };
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Which server a key goes to: FNV-1a, stable across builds and Rust versions, so processes
/// built apart still agree.
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The index of the server `key` lives on, among `servers` servers (the crate's own rule).
pub fn server_index(key: &str, servers: usize) -> usize {
    (fnv1a(key) % servers as u64) as usize
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_KEY_LEN - 64 {
        return Err(format!("prefix longer than {} bytes", MAX_KEY_LEN - 64));
    }
    if prefix
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("prefix may not hold spaces or control characters".to_owned());
    }
    Ok(())
}

pub struct MemcachedStore {
    client: Client,
    servers: Vec<String>,
    options: MemcachedOptions,
}

impl MemcachedStore {
    /// Checks the servers and options; connects only when first used.
    pub fn new(servers: &[String], options: MemcachedOptions) -> Result<Self, StoreError> {
        let describe = format!("MemcachedStore({})", list(servers));
        let fail = |cause: String| StoreError {
            store: describe.clone(),
            cause,
            kind: StoreErrorKind::Unavailable,
        };
        if servers.is_empty() {
            return Err(fail("no servers given".to_owned()));
        }
        if options.connect_timeout.is_zero() || options.timeout.is_zero() {
            return Err(fail(
                "connect_timeout and timeout must be above 0".to_owned(),
            ));
        }
        if options.pool_size == 0 {
            return Err(fail("pool_size must be at least 1".to_owned()));
        }
        check_prefix(&options.prefix).map_err(fail)?;
        let pools = servers
            .iter()
            .map(|server| {
                let url = server_url(server, options.timeout)?;
                // Lazy pools (no connection made here, none kept idle): a server that is down
                // when the app starts fails requests, not the start.
                Ok(r2d2::Pool::builder()
                    .max_size(options.pool_size)
                    .min_idle(Some(0))
                    .connection_timeout(options.connect_timeout)
                    .build_unchecked(ConnectionManager::new(url)))
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(fail)?;
        let mut client = Client::with_pools(pools).map_err(|e| fail(e.to_string()))?;
        client.hash_function = fnv1a;
        Ok(Self {
            client,
            servers: servers.to_vec(),
            options,
        })
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    pub fn options(&self) -> &MemcachedOptions {
        &self.options
    }

    fn key(&self, session_id: &str) -> String {
        format!("{}{session_id}", self.options.prefix)
    }

    /// The key of a user's generation counter: no session id is 5 characters shorter.
    fn generation_key(&self, user_key: &str) -> String {
        format!("{}gen:{user_key}", self.options.prefix)
    }

    fn increment(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.client.increment(key, 1) {
            Ok(value) => Ok(Some(value)),
            Err(memcache::MemcacheError::CommandError(memcache::CommandError::KeyNotFound)) => {
                Ok(None)
            }
            Err(e) => Err(self.fail("incr", e)),
        }
    }

    fn fail(&self, what: &str, e: memcache::MemcacheError) -> StoreError {
        let cause = match e {
            // The pool's own message ("timed out waiting for connection") hides why: the
            // server refused, or did not answer in time.
            memcache::MemcacheError::PoolError(e) => {
                format!(
                    "cannot connect within {:?}: {e}",
                    self.options.connect_timeout
                )
            }
            e => e.to_string(),
        };
        StoreError::new(self, format!("{what}: {cause}"))
    }
}

fn list(servers: &[String]) -> String {
    let quoted: Vec<String> = servers.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

impl SessionStore for MemcachedStore {
    // memcached has no command for a value's length, so the limit is checked after the fetch
    // (memcached's own item size limit, 1 MiB by default, bounds what it can hold anyway).
    fn load(&self, session_id: &str, max_bytes: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let blob = self
            .client
            .get::<Vec<u8>>(&self.key(session_id))
            .map_err(|e| self.fail("get", e))?;
        within_limit(self, session_id, blob, max_bytes)
    }

    // memcached's `replace` does exactly this, but the crate drops its NOT_STORED answer, so
    // gets + cas: cas fails when the item was deleted (NOT_FOUND) or changed (EXISTS) since
    // the gets, and a missing item is seen by the next gets.
    fn save_if_exists(
        &self,
        session_id: &str,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let key = self.key(session_id);
        let exptime = exptime(ttl, crate::time::now());
        for _ in 0..REPLACE_ATTEMPTS {
            let found = self
                .client
                .gets::<(Vec<u8>, u32, Option<u64>)>(&[key.as_str()])
                .map_err(|e| self.fail("gets", e))?;
            let Some((_, _, Some(cas))) = found.get(&key) else {
                return Ok(false);
            };
            if self
                .client
                .cas(&key, blob, exptime, *cas)
                .map_err(|e| self.fail("cas", e))?
            {
                return Ok(true);
            }
        }
        Err(StoreError::new(
            self,
            format!(
                "cas: the record of session {} kept changing",
                crate::ids::log_token(session_id)
            ),
        ))
    }

    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        self.client
            .set(
                &self.key(session_id),
                blob,
                exptime(ttl, crate::time::now()),
            )
            .map_err(|e| self.fail("set", e))
    }

    fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        self.client
            .delete(&self.key(session_id))
            .map_err(|e| self.fail("delete", e))
    }

    fn save_if_unchanged(
        &self,
        session_id: &str,
        expected: Option<&[u8]>,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let key = self.key(session_id);
        let exptime = exptime(ttl, crate::time::now());
        match expected {
            // ADD stores only where there is nothing; the crate does not say whether it did,
            // so read back: someone else's value there means we lost.
            None => {
                self.client
                    .add(&key, blob, exptime)
                    .map_err(|e| self.fail("add", e))?;
                let now = self
                    .client
                    .get::<Vec<u8>>(&key)
                    .map_err(|e| self.fail("get", e))?;
                Ok(now.as_deref() == Some(blob))
            }
            Some(expected) => {
                let found = self
                    .client
                    .gets::<(Vec<u8>, u32, Option<u64>)>(&[key.as_str()])
                    .map_err(|e| self.fail("gets", e))?;
                let Some((current, _flags, Some(cas))) = found.get(&key) else {
                    return Ok(false);
                };
                if current.as_slice() != expected {
                    return Ok(false);
                }
                self.client
                    .cas(&key, blob, exptime, *cas)
                    .map_err(|e| self.fail("cas", e))
            }
        }
    }

    fn touch(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        // The crate speaks no get-and-touch (GAT), so a touching load is two round trips.
        self.client
            .touch(
                &self.key(session_id),
                exptime(Some(ttl), crate::time::now()),
            )
            .map(drop)
            .map_err(|e| self.fail("touch", e))
    }

    // No index here: the generation in each owned record does its work (see
    // `revokes_by_generation`), so filing and unfiling are nothing to do.
    fn index_user(
        &self,
        _user_key: &str,
        _session_id: &str,
        _ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn unindex_user(&self, _user_key: &str, _session_id: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn user_session_ids(&self, _user_key: &str) -> Result<Vec<String>, StoreError> {
        Err(StoreError::unsupported(
            self.describe(),
            "user_sessions() and destroy_session() (memcached cannot list keys; \
             destroy_user_sessions() works here, by a per-user generation)",
        ))
    }

    fn revokes_by_generation(&self) -> bool {
        true
    }

    fn user_generation(&self, user_key: &str) -> Result<Option<u64>, StoreError> {
        let found = self
            .client
            .get::<String>(&self.generation_key(user_key))
            .map_err(|e| self.fail("get", e))?;
        found
            .map(|text| {
                text.trim().parse::<u64>().map_err(|_| {
                    StoreError::new(self, "a generation counter holds something not a number")
                })
            })
            .transpose()
    }

    // incr is atomic; a missing counter is created with add, which stores only where there is
    // nothing, so of two first bumps racing one add wins and both then incr: each bump moves
    // the counter past every generation handed out before it. The counter never expires (it
    // must outlive the user's sessions); if evicted, `users::first_generation` covers it.
    fn bump_user_generation(&self, user_key: &str) -> Result<crate::users::Bump, StoreError> {
        let key = self.generation_key(user_key);
        if let Some(after) = self.increment(&key)? {
            return Ok(crate::users::Bump {
                before: after.saturating_sub(1),
                after,
            });
        }
        let first = crate::users::first_generation(crate::time::now_micros());
        self.client
            .add(&key, first.to_string().as_str(), 0)
            .map_err(|e| self.fail("add", e))?;
        match self.increment(&key)? {
            // No counter before: every live record counted as generation 0.
            Some(after) => Ok(crate::users::Bump { before: 0, after }),
            None => Err(StoreError::new(
                self,
                "incr: the generation counter vanished as it was created",
            )),
        }
    }

    fn describe(&self) -> String {
        format!("MemcachedStore({})", list(&self.servers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0000000000000000000000000000000a";

    #[test]
    fn servers_take_host_port_or_memcache_urls() {
        let t = Duration::from_millis(1500);
        assert_eq!(
            server_url("127.0.0.1:11211", t).unwrap().as_str(),
            "memcache://127.0.0.1:11211?protocol=ascii&timeout=1.5"
        );
        assert_eq!(
            server_url("memcache://127.0.0.1:11212", t)
                .unwrap()
                .as_str(),
            "memcache://127.0.0.1:11212?protocol=ascii&timeout=1.5"
        );
        assert_eq!(
            server_url("[::1]:11211", t).unwrap().as_str(),
            "memcache://[::1]:11211?protocol=ascii&timeout=1.5"
        );
        for bad in [
            "127.0.0.1",
            "redis://127.0.0.1:6379",
            "",
            "memcache://:11211",
        ] {
            assert!(server_url(bad, t).is_err(), "{bad}");
        }
    }

    #[test]
    fn exptime_is_zero_for_none_relative_up_to_30_days_absolute_beyond() {
        let now = 1_800_000_000;
        assert_eq!(exptime(None, now), 0);
        assert_eq!(exptime(Some(Duration::from_secs(60)), now), 60);
        assert_eq!(exptime(Some(Duration::from_millis(100)), now), 1);
        assert_eq!(exptime(Some(Duration::ZERO), now), 1);
        let thirty_days = RELATIVE_EXPTIME_LIMIT;
        assert_eq!(
            exptime(Some(Duration::from_secs(thirty_days)), now),
            2_592_000
        );
        assert_eq!(
            exptime(Some(Duration::from_secs(thirty_days + 1)), now),
            (now + thirty_days + 1) as u32
        );
    }

    #[test]
    fn keys_spread_over_servers_stably() {
        // Fixed values: a change here would send every session to another server.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        let mut per_server = [0usize; 2];
        for i in 0..1000u32 {
            per_server[server_index(&format!("tornsession:{i:032x}"), 2)] += 1;
        }
        assert!(per_server.iter().all(|&n| n > 350), "{per_server:?}");
    }

    #[test]
    fn rejects_bad_prefixes_servers_and_options() {
        let bad_prefix = MemcachedOptions {
            prefix: "with space".to_owned(),
            ..MemcachedOptions::default()
        };
        assert!(MemcachedStore::new(&["127.0.0.1:1".to_owned()], bad_prefix).is_err());
        assert!(MemcachedStore::new(&[], MemcachedOptions::default()).is_err());
        assert!(MemcachedStore::new(&["nope".to_owned()], MemcachedOptions::default()).is_err());
    }

    #[test]
    fn a_dead_server_is_unavailable_within_the_connect_timeout() {
        let options = MemcachedOptions {
            connect_timeout: Duration::from_millis(300),
            ..MemcachedOptions::default()
        };
        let store = MemcachedStore::new(&["127.0.0.1:1".to_owned()], options).unwrap();
        let started = std::time::Instant::now();
        let e = store.load(A, usize::MAX).err().unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "hung");
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        assert!(
            e.to_string()
                .starts_with("MemcachedStore(['127.0.0.1:1']): get: cannot connect"),
            "{e}"
        );
    }
}
