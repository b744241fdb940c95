//! Sessions in Redis (one server, a Redis Cluster, or the master Redis Sentinel names), over the
//! `redis` crate's blocking API; `rediss://` URLs connect over TLS (rustls, the system's CA roots
//! unless a CA file is given).
//!
//! Each store keeps a few connections for reuse. Every failure is `Unavailable`: a dead server
//! must fail the request, never look like a missing session. A connection that failed is dropped;
//! the next request connects afresh, so the store recovers by itself when the server is back.

use std::path::PathBuf;
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{
    Client, ClientTlsConfig, Cmd, Connection, ConnectionAddr, ConnectionInfo, ConnectionLike,
    ProtocolVersion, RedisConnectionInfo, RedisError, RedisResult, TlsCertificates,
};

use super::pool::{IdleConnections, PerProcess};
use super::redis_deadline::DeadlineConnection;
use super::{within_limit, SessionStore, StoreError};
// `WireStore` by its path only: its `load`/`save`/`delete` would make `SessionStore`'s ambiguous.
use super::{Endpoint, Request, SaveMode};
use crate::wire::{Dialect, Reply};

/// The prefix of every key unless told otherwise.
pub const DEFAULT_PREFIX: &str = "tornsession:";
/// How long connecting may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may wait to be written or answered, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many idle connections a store keeps for reuse, by default.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// Options shared by [`RedisStore`], [`RedisClusterStore`] and [`RedisSentinelStore`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub prefix: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub pool_size: usize,
    pub tls: TlsFiles,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            tls: TlsFiles::default(),
        }
    }
}

/// PEM files for TLS connections, as redis-py names them: `ca_certs`, the CA(s) to trust instead
/// of the system's roots; `certfile` and `keyfile`, a client certificate for servers that ask.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_certs: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        self.ca_certs.is_none() && self.certfile.is_none() && self.keyfile.is_none()
    }

    /// The files' contents, read now so a wrong path fails at construction, not per request.
    fn certificates(&self) -> Result<Option<TlsCertificates>, String> {
        if self.is_empty() {
            return Ok(None);
        }
        let read = |name: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {name} {}: {e}", path.display()))
        };
        let client_tls = match (&self.certfile, &self.keyfile) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read("ssl_certfile", cert)?,
                client_key: read("ssl_keyfile", key)?,
            }),
            (None, None) => None,
            _ => return Err("ssl_certfile and ssl_keyfile go together".to_owned()),
        };
        let root_cert = match &self.ca_certs {
            Some(path) => Some(read("ssl_ca_certs", path)?),
            None => None,
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

fn is_tls_url(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
}

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
const INDEX_USER: &str = r"
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
const USER_SESSION_IDS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// A record's time to live as the index script takes it: milliseconds, `inf` for none.
fn deadline_score(ttl: Option<Duration>) -> String {
    match ttl {
        None => "inf".to_owned(),
        Some(ttl) => (1000 * ex_seconds(ttl)).to_string(),
    }
}

fn index_user(
    prefix: &str,
    user_key: &str,
    session_id: &str,
    ttl: Option<Duration>,
    only_existing: bool,
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

/// The URL with any password replaced by `***`, fit for error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // `redis://secret@host`: the crate takes a lone userinfo as the password.
                "***".to_owned()
            };
            format!(
                "{}{masked}{}",
                &url[..scheme_end + 3],
                &rest[at..] // "@host..." onwards
            )
        }
        None => url.to_owned(),
    }
}

fn check_options(options: &RedisOptions) -> Result<(), String> {
    if options.connect_timeout.is_zero() || options.timeout.is_zero() {
        return Err("connect_timeout and timeout must be above 0".to_owned());
    }
    if options.pool_size == 0 {
        return Err("pool_size must be at least 1".to_owned());
    }
    Ok(())
}

/// Whether a failed connection's error says the connection itself is gone (so a pooled one may
/// merely be stale, and a fresh one worth one more try) rather than a timeout or a server answer.
fn is_stale_connection(error: &RedisError) -> bool {
    !error.is_timeout() && (error.is_connection_dropped() || error.is_io_error())
}

/// The blocking connections of one store: idle ones kept for reuse, new ones made on the
/// caller's thread.
struct Pool<C> {
    idle: IdleConnections<C>,
}

impl<C: ConnectionLike> Pool<C> {
    fn new(size: usize) -> Self {
        Self {
            idle: IdleConnections::new(size),
        }
    }

    /// Runs `command` on a pooled connection, or a new one from `connect`. A connection that
    /// fails is dropped; when a reused one fails as if stale (the server restarted since), the
    /// other idle ones are dropped too and the command is tried once more on a new connection.
    fn run<T>(
        &self,
        connect: impl Fn() -> RedisResult<C>,
        command: impl Fn(&mut C) -> RedisResult<T>,
    ) -> Result<T, String> {
        let pooled = self.idle.take();
        let reused = pooled.is_some();
        let mut connection = match pooled {
            Some(c) => c,
            None => connect().map_err(|e| format!("cannot connect: {e}"))?,
        };
        match command(&mut connection) {
            Ok(value) => {
                self.give_back(connection);
                return Ok(value);
            }
            Err(e) if reused && is_stale_connection(&e) => {
                drop(connection);
                self.idle.clear();
            }
            Err(e) => return Err(e.to_string()),
        }
        let mut connection = connect().map_err(|e| format!("cannot connect: {e}"))?;
        let value = command(&mut connection).map_err(|e| e.to_string())?;
        self.give_back(connection);
        Ok(value)
    }

    fn give_back(&self, connection: C) {
        if connection.is_open() {
            self.idle.give_back(connection);
        }
    }
}

// The commands of the common operations, built once for both the blocking connections and the
// pipelined ones (`WireStore`), so the two cannot drift apart.

fn get_command(prefix: &str, session_id: &str) -> Cmd {
    let mut command = redis::cmd("GET");
    command.arg(key(prefix, session_id));
    command
}

/// `GETEX key EX ttl`: the value, with its expiry moved, in one round trip (Redis 6.2+).
fn get_touching_command(prefix: &str, session_id: &str, ttl: Duration) -> Cmd {
    let mut command = redis::cmd("GETEX");
    command
        .arg(key(prefix, session_id))
        .arg("EX")
        .arg(ex_seconds(ttl));
    command
}

/// `SET key blob [XX] [EX ttl]`; with `XX` (`only_existing`) written only over an existing
/// key, atomically on the server, and answered with nil when there was none.
fn set_command(
    prefix: &str,
    session_id: &str,
    blob: &[u8],
    ttl: Option<Duration>,
    only_existing: bool,
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

fn del_command(prefix: &str, session_id: &str) -> Cmd {
    let mut command = redis::cmd("DEL");
    command.arg(key(prefix, session_id));
    command
}

fn get(
    prefix: &str,
    session_id: &str,
    c: &mut impl ConnectionLike,
) -> RedisResult<Option<Vec<u8>>> {
    get_command(prefix, session_id).query(c)
}

fn set(
    prefix: &str,
    session_id: &str,
    blob: &[u8],
    ttl: Option<Duration>,
    c: &mut impl ConnectionLike,
) -> RedisResult<()> {
    set_command(prefix, session_id, blob, ttl, false).query(c)
}

fn set_if_exists(
    prefix: &str,
    session_id: &str,
    blob: &[u8],
    ttl: Option<Duration>,
    c: &mut impl ConnectionLike,
) -> RedisResult<bool> {
    // OK when written, nil when there was no key.
    set_command(prefix, session_id, blob, ttl, true)
        .query::<Option<String>>(c)
        .map(|ok| ok.is_some())
}

fn del(prefix: &str, session_id: &str, c: &mut impl ConnectionLike) -> RedisResult<bool> {
    del_command(prefix, session_id)
        .query::<i64>(c)
        .map(|removed| removed > 0)
}

/// Compare-and-set in one round trip, atomically on the server (one key, so Cluster-safe).
const SET_IF_UNCHANGED: &str = r"
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

fn set_if_unchanged(
    prefix: &str,
    session_id: &str,
    expected: Option<&[u8]>,
    blob: &[u8],
    ttl: Option<Duration>,
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

fn get_touching(
    prefix: &str,
    session_id: &str,
    ttl: Duration,
    c: &mut impl ConnectionLike,
) -> RedisResult<Option<Vec<u8>>> {
    get_touching_command(prefix, session_id, ttl).query(c)
}

fn expire(
    prefix: &str,
    session_id: &str,
    ttl: Duration,
    c: &mut impl ConnectionLike,
) -> RedisResult<()> {
    redis::cmd("EXPIRE")
        .arg(key(prefix, session_id))
        .arg(ex_seconds(ttl))
        .query::<i64>(c)
        .map(drop)
}

/// Sessions in one Redis server: `redis://[user:password@]host[:port][/db]` or
/// `unix:///path/to/redis.sock[?db=N]`.
pub struct RedisStore {
    client: Client,
    url: String,
    options: RedisOptions,
    pool: Pool<BlockingConnection>,
    /// The server as the pipelined connections reach it; `None` when they cannot (see
    /// [`WireTarget::of`]).
    wire: Option<WireTarget>,
}

impl RedisStore {
    /// Parses the URL and checks the options; connects only when first used.
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let describe = format!("RedisStore('{}')", redact_url(url));
        let fail = |cause: String| StoreError {
            store: describe.clone(),
            cause,
            kind: super::StoreErrorKind::Unavailable,
        };
        check_options(&options).map_err(fail)?;
        let certificates = options.tls.certificates().map_err(fail)?;
        let client = match certificates {
            Some(_) if !is_tls_url(url) => {
                return Err(fail("ssl_* files need a rediss:// URL".to_owned()))
            }
            Some(certificates) => Client::build_with_tls(url, certificates),
            None => Client::open(url),
        }
        .map_err(|e| fail(format!("bad URL: {e}")))?;
        Ok(Self {
            wire: WireTarget::of(client.get_connection_info()),
            client,
            url: redact_url(url),
            pool: Pool::new(options.pool_size),
            options,
        })
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn connect(&self) -> RedisResult<BlockingConnection> {
        connect(&self.client, &self.options)
    }

    fn run<T>(
        &self,
        command: impl Fn(&mut BlockingConnection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.pool
            .run(|| self.connect(), command)
            .map_err(|cause| StoreError::new(self, cause))
    }
}

/// A blocking connection to one server: one deadline per request where `DeadlineConnection`
/// speaks the server's transport (TCP, unix sockets), else the crate's own, whose timeout bounds
/// each read (TLS, RESP3).
///
/// Every request is tagged, as the pipelined connections' are (`crate::wire::resp`): an
/// `ECHO <tag>` follows its commands, and its replies are used only when the last one is that
/// tag. RESP answers in order and says nothing of which request a reply is for, so a reply lost,
/// doubled or left over (a faulty proxy; redis-py's CVE-2023-28858) would otherwise answer the
/// next request on this connection, another visitor's load among them; a wrong tag closes the
/// connection instead (the pool drops it), and the request fails.
struct BlockingConnection {
    transport: BlockingTransport,
    /// The next request's tag.
    next_tag: u64,
    /// Set when a tag did not match: the connection is out of step for good.
    out_of_step: bool,
    /// Whether requests are tagged: not to a Sentinel, which has no `ECHO` (and whose one-shot
    /// connection is never pooled, so no reply can be left on it for another request).
    tagged: bool,
}

enum BlockingTransport {
    Deadline(DeadlineConnection),
    Crate(Connection),
}

/// What the blocking connections' tags start with (the pipelined ones use `~ts:`).
const BLOCKING_TAG: &str = "~tb:";

impl BlockingConnection {
    fn new(transport: BlockingTransport) -> Self {
        Self {
            transport,
            next_tag: 0,
            out_of_step: false,
            tagged: true,
        }
    }

    fn untagged(self) -> Self {
        Self {
            tagged: false,
            ..self
        }
    }

    fn exchange(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<redis::Value>> {
        if self.out_of_step {
            return Err(out_of_step_error("the connection is out of step"));
        }
        if !self.tagged {
            return match &mut self.transport {
                BlockingTransport::Deadline(c) => c.req_packed_commands(cmd, offset, count),
                BlockingTransport::Crate(c) => c.req_packed_commands(cmd, offset, count),
            };
        }
        let tag = format!("{BLOCKING_TAG}{}", self.next_tag);
        self.next_tag = self.next_tag.wrapping_add(1);
        let mut bytes = Vec::with_capacity(cmd.len() + tag.len() + 32);
        bytes.extend_from_slice(cmd);
        redis::cmd("ECHO")
            .arg(&tag)
            .write_packed_command(&mut bytes);
        let mut replies = match &mut self.transport {
            BlockingTransport::Deadline(c) => c.req_packed_commands(&bytes, offset, count + 1)?,
            BlockingTransport::Crate(c) => c.req_packed_commands(&bytes, offset, count + 1)?,
        };
        let echoed = replies.pop();
        let in_step = matches!(&echoed, Some(redis::Value::BulkString(b)) if b == tag.as_bytes())
            && replies.len() == count
            && !replies.iter().any(looks_like_a_tag);
        if !in_step {
            self.out_of_step = true;
            return Err(out_of_step_error(
                "a reply is not the answer to its request (lost, doubled or left over on the \
                 way); the connection is dropped",
            ));
        }
        Ok(replies)
    }
}

/// A reply that is some request's tag, where a request's own reply should be.
fn looks_like_a_tag(value: &redis::Value) -> bool {
    matches!(value, redis::Value::BulkString(b) if b.starts_with(BLOCKING_TAG.as_bytes()))
}

fn out_of_step_error(cause: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "out of step", cause.to_owned()))
}

impl ConnectionLike for BlockingConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<redis::Value> {
        match self.exchange(cmd, 0, 1)?.pop() {
            Some(redis::Value::ServerError(error)) => Err(error.into()),
            Some(value) => Ok(value),
            None => Ok(redis::Value::Nil),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<redis::Value>> {
        self.exchange(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        match &self.transport {
            BlockingTransport::Deadline(c) => c.get_db(),
            BlockingTransport::Crate(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        !self.out_of_step
            && match &self.transport {
                BlockingTransport::Deadline(c) => c.is_open(),
                BlockingTransport::Crate(c) => c.is_open(),
            }
    }
}

/// A connection to one server, with the options' timeouts.
fn connect(client: &Client, options: &RedisOptions) -> RedisResult<BlockingConnection> {
    let info = client.get_connection_info();
    if DeadlineConnection::speaks(info) {
        return DeadlineConnection::connect(info, options.connect_timeout, options.timeout)
            .map(|c| BlockingConnection::new(BlockingTransport::Deadline(c)));
    }
    let connection = client.get_connection_with_timeout(options.connect_timeout)?;
    connection.set_read_timeout(Some(options.timeout))?;
    connection.set_write_timeout(Some(options.timeout))?;
    Ok(BlockingConnection::new(BlockingTransport::Crate(
        connection,
    )))
}

/// The `SessionStore` methods of a Redis store: the same commands whatever the connection; only
/// `run` (how a connection is had) and `describe` differ.
macro_rules! redis_session_store {
    ($store:ty, $describe:expr, $wire:expr) => {
        impl SessionStore for $store {
            // Redis cannot be asked for the length and the value in one plain command, so the
            // limit is checked after the fetch; it still spares the decoding.
            fn load(
                &self,
                session_id: &str,
                max_bytes: usize,
            ) -> Result<Option<Vec<u8>>, StoreError> {
                let blob = self.run(|c| get(&self.options.prefix, session_id, c))?;
                within_limit(self, session_id, blob, max_bytes)
            }

            fn save(
                &self,
                session_id: &str,
                blob: &[u8],
                ttl: Option<Duration>,
            ) -> Result<(), StoreError> {
                self.run(|c| set(&self.options.prefix, session_id, blob, ttl, c))
            }

            fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
                self.run(|c| del(&self.options.prefix, session_id, c))
            }

            fn touch(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
                self.run(|c| expire(&self.options.prefix, session_id, ttl, c))
            }

            fn save_if_unchanged(
                &self,
                session_id: &str,
                expected: Option<&[u8]>,
                blob: &[u8],
                ttl: Option<Duration>,
            ) -> Result<bool, StoreError> {
                self.run(|c| {
                    set_if_unchanged(&self.options.prefix, session_id, expected, blob, ttl, c)
                })
            }

            fn save_if_exists(
                &self,
                session_id: &str,
                blob: &[u8],
                ttl: Option<Duration>,
            ) -> Result<bool, StoreError> {
                self.run(|c| set_if_exists(&self.options.prefix, session_id, blob, ttl, c))
            }

            fn load_touching(
                &self,
                session_id: &str,
                ttl: Duration,
                max_bytes: usize,
            ) -> Result<Option<Vec<u8>>, StoreError> {
                let blob = self.run(|c| get_touching(&self.options.prefix, session_id, ttl, c))?;
                within_limit(self, session_id, blob, max_bytes)
            }

            fn index_user(
                &self,
                user_key: &str,
                session_id: &str,
                ttl: Option<Duration>,
            ) -> Result<(), StoreError> {
                let prefix = &self.options.prefix;
                self.run(|c| index_user(prefix, user_key, session_id, ttl, false, c))
            }

            fn touch_user(
                &self,
                user_key: &str,
                session_id: &str,
                ttl: Duration,
            ) -> Result<(), StoreError> {
                let prefix = &self.options.prefix;
                self.run(|c| index_user(prefix, user_key, session_id, Some(ttl), true, c))
            }

            fn unindex_user(&self, user_key: &str, session_id: &str) -> Result<(), StoreError> {
                let index = user_index_key(&self.options.prefix, user_key);
                self.run(|c| {
                    redis::cmd("ZREM")
                        .arg(&index)
                        .arg(session_id)
                        .query::<i64>(c)
                        .map(drop)
                })
            }

            fn user_session_ids(&self, user_key: &str) -> Result<Vec<String>, StoreError> {
                let index = user_index_key(&self.options.prefix, user_key);
                self.run(|c| {
                    redis::cmd("EVAL")
                        .arg(USER_SESSION_IDS)
                        .arg(1)
                        .arg(&index)
                        .query::<Vec<String>>(c)
                })
            }

            fn describe(&self) -> String {
                let describe: fn(&Self) -> String = $describe;
                describe(self)
            }

            fn wire(&self) -> Option<&dyn crate::stores::WireStore> {
                let wire: fn(&Self) -> Option<&dyn crate::stores::WireStore> = $wire;
                wire(self)
            }
        }
    };
}

redis_session_store!(
    RedisStore,
    |store| format!("RedisStore('{}')", store.url),
    |store| store
        .wire
        .as_ref()
        .map(|_| store as &dyn crate::stores::WireStore)
);

/// A plain-TCP server as the pipelined connections reach it, read from the URL by the redis
/// crate's own parser so host, port, user, password and db mean what they mean to the blocking
/// client.
struct WireTarget {
    endpoints: [Endpoint; 1],
    login: RedisConnectionInfo,
}

impl WireTarget {
    /// `None` for what those connections do not speak: TLS (`rediss://`), unix sockets, and
    /// RESP3 (`?protocol=3`; they parse RESP2 only). Those stay on the blocking client.
    fn of(info: &ConnectionInfo) -> Option<Self> {
        match &info.addr {
            ConnectionAddr::Tcp(host, port) if info.redis.protocol == ProtocolVersion::RESP2 => {
                Some(Self {
                    endpoints: [Endpoint {
                        host: host.clone(),
                        port: *port,
                    }],
                    login: info.redis.clone(),
                })
            }
            _ => None,
        }
    }
}

/// The only reply of a single command; `None` when there were not exactly one.
fn only_reply(replies: Vec<Reply>) -> Option<Reply> {
    let mut replies = replies.into_iter();
    match (replies.next(), replies.next()) {
        (Some(reply), None) => Some(reply),
        _ => None,
    }
}

/// A server's error reply worded as the blocking client words it (`WRONGTYPE: Operation ...`),
/// so both paths log the same text.
fn server_error_text(message: &str) -> String {
    match redis::parse_redis_value(format!("-{message}\r\n").as_bytes()) {
        Ok(redis::Value::ServerError(error)) => RedisError::from(error).to_string(),
        _ => message.to_owned(),
    }
}

impl RedisStore {
    /// What a reply that is not the expected one means: the server's own error, or an answer
    /// no Redis gives to the command sent. Either way the store, not the record, failed, as on
    /// the blocking path.
    fn unexpected(&self, reply: Option<Reply>, expected: &str) -> StoreError {
        let cause = match reply {
            Some(Reply::Error(message)) => server_error_text(&message),
            Some(other) => format!("the server answered {} to {expected}", shape(&other)),
            None => format!("the server did not answer {expected} with one reply"),
        };
        StoreError::new(self, cause)
    }
}

/// What kind of reply, without its contents (they may hold a session's data).
fn shape(reply: &Reply) -> &'static str {
    match reply {
        Reply::Bulk(Some(_)) => "a value",
        Reply::Bulk(None) => "nil",
        Reply::Int(_) => "an integer",
        Reply::Status(_) => "a status",
        Reply::Error(_) => "an error",
        Reply::Array(_) => "an array",
        Reply::Meta { .. } => "a memcached reply",
    }
}

impl crate::stores::WireStore for RedisStore {
    fn dialect(&self) -> Dialect {
        Dialect::Resp
    }

    fn endpoints(&self) -> &[Endpoint] {
        self.wire.as_ref().map_or(&[], |wire| &wire.endpoints[..])
    }

    /// The login the blocking client does on a RESP2 connection (`AUTH [user] password`, then
    /// `SELECT db`), pipelined; the client's `CLIENT SETINFO` is left out, being informational,
    /// and so is its retry of AUTH without the user for servers older than Redis 6, which the
    /// loads' GETEX (6.2) rules out anyway.
    fn handshake(&self) -> Option<Request> {
        let login = &self.wire.as_ref()?.login;
        let mut bytes = Vec::new();
        let mut replies = 0;
        if let Some(password) = &login.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = &login.username {
                auth.arg(username);
            }
            auth.arg(password).write_packed_command(&mut bytes);
            replies += 1;
        }
        if login.db != 0 {
            redis::cmd("SELECT")
                .arg(login.db)
                .write_packed_command(&mut bytes);
            replies += 1;
        }
        (replies > 0).then_some(Request {
            server: 0,
            bytes,
            replies,
        })
    }

    fn handshake_reply(&self, replies: Vec<Reply>) -> Result<(), StoreError> {
        let expected = self.handshake().map_or(0, |request| request.replies);
        if replies.len() != expected {
            return Err(StoreError::new(
                self,
                format!(
                    "cannot connect: {} replies to the {expected} login commands",
                    replies.len()
                ),
            ));
        }
        for reply in replies {
            if reply != Reply::Status("OK".to_owned()) {
                let error = self.unexpected(Some(reply), "AUTH or SELECT");
                let mut cause = format!("cannot connect: {}", error.cause);
                // Servers do not quote the password back; this keeps it so if one ever does.
                if let Some(password) = self
                    .wire
                    .as_ref()
                    .and_then(|wire| wire.login.password.as_deref())
                    .filter(|password| !password.is_empty())
                {
                    cause = cause.replace(password, "***");
                }
                return Err(StoreError { cause, ..error });
            }
        }
        Ok(())
    }

    fn load(&self, session_id: &str, ttl: Option<Duration>) -> Request {
        let prefix = &self.options.prefix;
        let command = match ttl {
            Some(ttl) => get_touching_command(prefix, session_id, ttl),
            None => get_command(prefix, session_id),
        };
        Request {
            server: 0,
            bytes: command.get_packed_command(),
            replies: 1,
        }
    }

    fn load_reply(
        &self,
        session_id: &str,
        replies: Vec<Reply>,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match only_reply(replies) {
            Some(Reply::Bulk(blob)) => within_limit(self, session_id, blob, max_bytes),
            other => Err(self.unexpected(other, "GET")),
        }
        .map_err(|e| e.without_id(session_id))
    }

    fn save(
        &self,
        session_id: &str,
        blob: &[u8],
        ttl: Option<Duration>,
        mode: SaveMode,
    ) -> Request {
        let only_existing = mode == SaveMode::IfExists;
        let command = set_command(&self.options.prefix, session_id, blob, ttl, only_existing);
        Request {
            server: 0,
            bytes: command.get_packed_command(),
            replies: 1,
        }
    }

    fn save_reply(&self, session_id: &str, replies: Vec<Reply>) -> Result<bool, StoreError> {
        match only_reply(replies) {
            Some(Reply::Status(ok)) if ok == "OK" => Ok(true),
            // `XX` found no key.
            Some(Reply::Bulk(None)) => Ok(false),
            other => Err(self.unexpected(other, "SET").without_id(session_id)),
        }
    }

    fn delete(&self, session_id: &str) -> Request {
        Request {
            server: 0,
            bytes: del_command(&self.options.prefix, session_id).get_packed_command(),
            replies: 1,
        }
    }

    fn delete_reply(&self, session_id: &str, replies: Vec<Reply>) -> Result<bool, StoreError> {
        match only_reply(replies) {
            Some(Reply::Int(removed)) => Ok(removed > 0),
            other => Err(self.unexpected(other, "DEL").without_id(session_id)),
        }
    }

    fn timeouts(&self) -> (Duration, Duration) {
        (self.options.timeout, self.options.connect_timeout)
    }
}

/// Sessions in a Redis Cluster, given the URLs of one or more of its nodes; keys are routed to
/// the node owning their slot.
pub struct RedisClusterStore {
    client: ClusterClient,
    urls: Vec<String>,
    options: RedisOptions,
    pool: Pool<ClusterConnection>,
}

impl RedisClusterStore {
    /// Parses the URLs and checks the options; connects only when first used.
    pub fn new(urls: &[String], options: RedisOptions) -> Result<Self, StoreError> {
        let redacted: Vec<String> = urls.iter().map(|u| redact_url(u)).collect();
        let describe = format!("RedisClusterStore({})", list(&redacted));
        let fail = |cause: String| StoreError {
            store: describe.clone(),
            cause,
            kind: super::StoreErrorKind::Unavailable,
        };
        check_options(&options).map_err(fail)?;
        if urls.is_empty() {
            return Err(fail("no node URLs given".to_owned()));
        }
        let certificates = options.tls.certificates().map_err(fail)?;
        if certificates.is_some() && !urls.iter().all(|url| is_tls_url(url)) {
            return Err(fail("ssl_* files need rediss:// URLs".to_owned()));
        }
        let mut builder =
            ClusterClient::builder(urls.iter().map(String::as_str).collect::<Vec<_>>());
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        let client = builder
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.timeout)
            // Few, quick retries: redirections during resharding are followed, a dead node is
            // reported within a small multiple of the timeouts rather than after 16 tries.
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(|e| fail(format!("bad URL: {e}")))?;
        Ok(Self {
            client,
            urls: redacted,
            pool: Pool::new(options.pool_size),
            options,
        })
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    fn connect(&self) -> RedisResult<ClusterConnection> {
        let connection = self.client.get_connection()?;
        connection.set_read_timeout(Some(self.options.timeout))?;
        connection.set_write_timeout(Some(self.options.timeout))?;
        Ok(connection)
    }

    fn run<T>(
        &self,
        command: impl Fn(&mut ClusterConnection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.pool
            .run(|| self.connect(), command)
            .map_err(|cause| StoreError::new(self, cause))
    }
}

fn list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("'{u}'")).collect();
    format!("[{}]", quoted.join(", "))
}

// No pipelined path for a cluster: keys are routed by slot, and MOVED / ASK redirections during
// resharding are followed by the redis crate's cluster client, on the blocking path.
redis_session_store!(
    RedisClusterStore,
    |store| format!("RedisClusterStore({})", list(&store.urls)),
    |_| None
);

/// How [`RedisSentinelStore`] talks to the master, besides [`RedisOptions`] (a URL says these
/// for the other stores).
#[derive(Debug, Clone, Default)]
pub struct SentinelMasterOptions {
    /// TLS to the master (with `RedisOptions::tls`'s files, else the system's CA roots).
    pub ssl: bool,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `"host:port"` (or `"[::1]:port"`) as a sentinel's address.
fn sentinel_addr(address: &str) -> Result<ConnectionAddr, String> {
    let bad = || format!("a sentinel is \"host:port\", not {address:?}");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(ConnectionAddr::Tcp(host.to_owned(), port))
}

/// Sessions in the master of a Redis replica set watched by Redis Sentinel. The master's address
/// comes from the sentinels and is kept until a connection to it fails; then it is asked for
/// again, so the store follows a failover by itself (requests fail until the sentinels have
/// promoted a replica).
pub struct RedisSentinelStore {
    /// The sentinels' addresses, asked in turn. (The redis crate's `SentinelClient` has no
    /// timeouts: one sentinel that accepts and never answers would hang every request.)
    sentinel_addresses: Vec<ConnectionAddr>,
    /// How to reach the master once named.
    master_options: SentinelMasterOptions,
    certificates: Option<TlsCertificates>,
    /// The master the sentinels named last; `None` once it failed (and in a new child process,
    /// which asks again).
    master: PerProcess<Option<Client>>,
    sentinels: Vec<String>,
    service_name: String,
    options: RedisOptions,
    pool: Pool<BlockingConnection>,
}

impl RedisSentinelStore {
    /// Checks the addresses and options; asks the sentinels only when first used.
    pub fn new(
        sentinels: &[String],
        service_name: &str,
        master: SentinelMasterOptions,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let describe = describe_sentinel(sentinels, service_name);
        let fail = |cause: String| StoreError {
            store: describe.clone(),
            cause,
            kind: super::StoreErrorKind::Unavailable,
        };
        check_options(&options).map_err(fail)?;
        if sentinels.is_empty() {
            return Err(fail("no sentinel addresses given".to_owned()));
        }
        if service_name.is_empty() {
            return Err(fail("service_name is empty".to_owned()));
        }
        let addresses = sentinels
            .iter()
            .map(|a| sentinel_addr(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let certificates = options.tls.certificates().map_err(fail)?;
        if certificates.is_some() && !master.ssl {
            return Err(fail("ssl_* files need ssl=True".to_owned()));
        }
        Ok(Self {
            sentinel_addresses: addresses,
            master_options: master,
            certificates,
            master: PerProcess::new(),
            sentinels: sentinels.to_vec(),
            service_name: service_name.to_owned(),
            pool: Pool::new(options.pool_size),
            options,
        })
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    pub fn sentinels(&self) -> &[String] {
        &self.sentinels
    }

    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    fn forget_master(&self) {
        self.master.with(|master| *master = None);
    }

    /// The master the sentinels name: each sentinel in turn, within the store's timeouts.
    fn ask_sentinels(&self) -> RedisResult<Client> {
        let mut last_error = None;
        for sentinel in &self.sentinel_addresses {
            match self.master_named_by(sentinel) {
                Ok(client) => {
                    self.master.with(|master| *master = Some(client.clone()));
                    return Ok(client);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| RedisError::from((redis::ErrorKind::IoError, "no sentinel to ask"))))
    }

    fn master_named_by(&self, sentinel: &ConnectionAddr) -> RedisResult<Client> {
        let sentinel = Client::open(ConnectionInfo {
            addr: sentinel.clone(),
            redis: RedisConnectionInfo::default(),
        })?;
        let mut connection = connect(&sentinel, &self.options)?.untagged();
        let (host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.service_name)
            .query(&mut connection)?;
        let master = &self.master_options;
        let addr = if master.ssl {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let info = ConnectionInfo {
            addr,
            redis: RedisConnectionInfo {
                db: master.db,
                username: master.username.clone(),
                password: master.password.clone(),
                ..RedisConnectionInfo::default()
            },
        };
        match &self.certificates {
            Some(certificates) => Client::build_with_tls(info, certificates.clone()),
            None => Client::open(info),
        }
    }

    /// A connection to the known master; when that fails (it may have moved), to the one the
    /// sentinels name now.
    fn connect(&self) -> RedisResult<BlockingConnection> {
        let known = self.master.with(|master| master.clone()).flatten();
        if let Some(client) = known {
            if let Ok(connection) = connect(&client, &self.options) {
                return Ok(connection);
            }
            self.forget_master();
        }
        let client = self
            .ask_sentinels()
            .map_err(|e| sentinel_error(e, &self.service_name))?;
        connect(&client, &self.options).inspect_err(|_| self.forget_master())
    }

    fn run<T>(
        &self,
        command: impl Fn(&mut BlockingConnection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.pool.run(|| self.connect(), command).map_err(|cause| {
            // Whatever failed (a dead master, a demoted one answering READONLY), the next request
            // asks the sentinels again, on fresh connections.
            self.forget_master();
            self.pool.idle.clear();
            StoreError::new(self, cause)
        })
    }
}

fn sentinel_error(error: RedisError, service_name: &str) -> RedisError {
    RedisError::from((
        error.kind(),
        "no master from the sentinels",
        format!("service {service_name:?}: {error}"),
    ))
}

fn describe_sentinel(sentinels: &[String], service_name: &str) -> String {
    format!("RedisSentinelStore({}, '{service_name}')", list(sentinels))
}

// No pipelined path either: the master's address comes from the sentinels and moves on
// failover, which the blocking path follows.
redis_session_store!(
    RedisSentinelStore,
    |store| describe_sentinel(&store.sentinels, &store.service_name),
    |_| None
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::StoreErrorKind;
    use crate::stores::{Endpoint, Request, SaveMode};
    use crate::wire::{Dialect, Reply};

    const A: &str = "0000000000000000000000000000000a";

    #[test]
    fn a_user_index_key_is_one_cluster_slot_under_the_prefix() {
        let key = user_index_key("app:", "ffffffffffffffffffffffffffffffff");
        assert_eq!(key, "app:user:{ffffffffffffffffffffffffffffffff}");
        assert_eq!(deadline_score(None), "inf");
    }

    #[test]
    fn keys_are_prefix_and_id() {
        assert_eq!(key(DEFAULT_PREFIX, A), format!("tornsession:{A}"));
        assert_eq!(key("", A), A);
        assert_eq!(key("app1/", A), format!("app1/{A}"));
    }

    #[test]
    fn ttl_rounds_up_to_whole_seconds_and_never_to_zero() {
        assert_eq!(ex_seconds(Duration::from_secs(30)), 30);
        assert_eq!(ex_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ex_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ex_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("redis://user:hunter2@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://:hunter2@127.0.0.1/"),
            "redis://:***@127.0.0.1/"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6390/0"),
            "redis://127.0.0.1:6390/0"
        );
        assert_eq!(
            redact_url("unix:///run/redis.sock"),
            "unix:///run/redis.sock"
        );
    }

    #[test]
    fn accepts_redis_and_unix_urls_without_connecting() {
        for url in ["redis://127.0.0.1:1/0", "unix:///nonexistent/redis.sock"] {
            let store = RedisStore::new(url, RedisOptions::default()).unwrap();
            assert_eq!(store.describe(), format!("RedisStore('{url}')"));
        }
    }

    #[test]
    fn rejects_bad_urls_and_options() {
        let e = RedisStore::new("http://127.0.0.1/", RedisOptions::default())
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("RedisStore('http://127.0.0.1/'): bad URL"),
            "{e}"
        );
        let zero = RedisOptions {
            timeout: Duration::ZERO,
            ..RedisOptions::default()
        };
        assert!(RedisStore::new("redis://127.0.0.1/", zero).is_err());
        let no_pool = RedisOptions {
            pool_size: 0,
            ..RedisOptions::default()
        };
        assert!(RedisStore::new("redis://127.0.0.1/", no_pool).is_err());
        assert!(RedisClusterStore::new(&[], RedisOptions::default()).is_err());
    }

    #[test]
    fn a_refused_connection_is_unavailable_and_names_store_and_cause() {
        // Port 1 on loopback: nothing listens there, the kernel refuses at once.
        let store = RedisStore::new("redis://127.0.0.1:1/0", RedisOptions::default()).unwrap();
        for e in [
            store.load(A, usize::MAX).err().unwrap(),
            store.save(A, b"x", None).err().unwrap(),
            store.delete(A).err().unwrap(),
        ] {
            assert_eq!(e.kind, StoreErrorKind::Unavailable);
            let message = e.to_string();
            assert!(
                message.starts_with("RedisStore('redis://127.0.0.1:1/0'): cannot connect: "),
                "{message}"
            );
        }
    }

    #[test]
    fn tls_files_need_a_tls_url_and_go_in_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, b"not checked until connecting").unwrap();
        let with = |tls: TlsFiles| RedisOptions {
            tls,
            ..RedisOptions::default()
        };
        let ca = TlsFiles {
            ca_certs: Some(pem.clone()),
            ..TlsFiles::default()
        };
        let e = RedisStore::new("redis://127.0.0.1:1/0", with(ca.clone()))
            .err()
            .unwrap();
        assert!(
            e.to_string().ends_with("ssl_* files need a rediss:// URL"),
            "{e}"
        );
        let urls = vec!["redis://127.0.0.1:1".to_owned()];
        assert!(RedisClusterStore::new(&urls, with(ca.clone())).is_err());
        let half = TlsFiles {
            certfile: Some(pem.clone()),
            ..TlsFiles::default()
        };
        let e = RedisStore::new("rediss://127.0.0.1:1/0", with(half))
            .err()
            .unwrap();
        assert!(e.to_string().ends_with("go together"), "{e}");
        let missing = TlsFiles {
            ca_certs: Some(dir.path().join("nope.pem")),
            ..TlsFiles::default()
        };
        let e = RedisStore::new("rediss://127.0.0.1:1/0", with(missing))
            .err()
            .unwrap();
        assert!(e.to_string().contains("cannot read ssl_ca_certs"), "{e}");
        // Without files, rediss:// uses the system's roots; the URL scheme is case-insensitive.
        assert!(RedisStore::new("REDISS://127.0.0.1:1/0", RedisOptions::default()).is_ok());
    }

    #[test]
    fn sentinel_addresses_are_host_and_port() {
        assert_eq!(
            sentinel_addr("127.0.0.1:26379").unwrap(),
            ConnectionAddr::Tcp("127.0.0.1".to_owned(), 26379)
        );
        assert_eq!(
            sentinel_addr("[::1]:26379").unwrap(),
            ConnectionAddr::Tcp("::1".to_owned(), 26379)
        );
        for bad in [
            "127.0.0.1",
            ":26379",
            "host:0",
            "host:http",
            "host:70000",
            "",
        ] {
            assert!(sentinel_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sentinel_store_checks_its_arguments_and_fails_without_sentinels() {
        let sentinels = vec!["127.0.0.1:1".to_owned()];
        let new = |sentinels: &[String], name: &str| {
            RedisSentinelStore::new(
                sentinels,
                name,
                SentinelMasterOptions::default(),
                RedisOptions::default(),
            )
        };
        assert!(new(&[], "mymaster").is_err());
        assert!(new(&sentinels, "").is_err());
        assert!(new(&["nohost".to_owned()], "mymaster").is_err());
        let store = new(&sentinels, "mymaster").unwrap();
        assert_eq!(
            store.describe(),
            "RedisSentinelStore(['127.0.0.1:1'], 'mymaster')"
        );
        let e = store.load(A, usize::MAX).err().unwrap();
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        assert!(
            e.to_string().contains("no master from the sentinels"),
            "{e}"
        );
    }

    #[test]
    fn cluster_store_describes_its_nodes() {
        let urls = vec![
            "redis://127.0.0.1:1".to_owned(),
            "redis://:pw@127.0.0.1:2".to_owned(),
        ];
        let store = RedisClusterStore::new(&urls, RedisOptions::default()).unwrap();
        assert_eq!(
            store.describe(),
            "RedisClusterStore(['redis://127.0.0.1:1', 'redis://:***@127.0.0.1:2'])"
        );
        let e = store.load(A, usize::MAX).err().unwrap();
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
    }

    fn wire_of(store: &RedisStore) -> &dyn crate::stores::WireStore {
        store
            .wire()
            .expect("a plain redis:// URL has a pipelined path")
    }

    #[test]
    fn only_plain_tcp_resp2_urls_have_a_pipelined_path() {
        let store = RedisStore::new("redis://127.0.0.1:6390/2", RedisOptions::default()).unwrap();
        let wire = wire_of(&store);
        assert_eq!(wire.dialect(), Dialect::Resp);
        assert_eq!(
            wire.endpoints(),
            [Endpoint {
                host: "127.0.0.1".to_owned(),
                port: 6390
            }]
        );
        let default_port = RedisStore::new("redis://[::1]", RedisOptions::default()).unwrap();
        assert_eq!(
            wire_of(&default_port).endpoints(),
            [Endpoint {
                host: "::1".to_owned(),
                port: 6379
            }]
        );
        for url in [
            "rediss://127.0.0.1:6390/0",
            "unix:///run/redis.sock",
            "redis://127.0.0.1:6390/?protocol=3",
        ] {
            let store = RedisStore::new(url, RedisOptions::default()).unwrap();
            assert!(store.wire().is_none(), "{url}");
        }
        let urls = vec!["redis://127.0.0.1:1".to_owned()];
        let cluster = RedisClusterStore::new(&urls, RedisOptions::default()).unwrap();
        assert!(cluster.wire().is_none());
        let sentinel = RedisSentinelStore::new(
            &["127.0.0.1:1".to_owned()],
            "mymaster",
            SentinelMasterOptions::default(),
            RedisOptions::default(),
        )
        .unwrap();
        assert!(sentinel.wire().is_none());
    }

    #[test]
    fn the_handshake_logs_in_as_the_url_says() {
        let packed = |args: &[&str]| {
            let mut command = redis::cmd(args[0]);
            for arg in &args[1..] {
                command.arg(*arg);
            }
            command.get_packed_command()
        };
        let handshake = |url: &str| {
            let store = RedisStore::new(url, RedisOptions::default()).unwrap();
            wire_of(&store).handshake()
        };
        assert_eq!(handshake("redis://127.0.0.1/0"), None);
        assert_eq!(handshake("redis://127.0.0.1"), None);
        let both = handshake("redis://al%40ice:p%3Ass@127.0.0.1/3").unwrap();
        assert_eq!(both.replies, 2);
        assert_eq!(
            both.bytes,
            [
                packed(&["AUTH", "al@ice", "p:ss"]),
                packed(&["SELECT", "3"])
            ]
            .concat()
        );
        let password_only = handshake("redis://:secret@127.0.0.1").unwrap();
        assert_eq!(password_only.replies, 1);
        assert_eq!(password_only.bytes, packed(&["AUTH", "secret"]));
        let db_only = handshake("redis://127.0.0.1/5").unwrap();
        assert_eq!(db_only.replies, 1);
        assert_eq!(db_only.bytes, packed(&["SELECT", "5"]));
    }

    #[test]
    fn a_refused_handshake_never_shows_the_password() {
        let store =
            RedisStore::new("redis://:hunter2@127.0.0.1/1", RedisOptions::default()).unwrap();
        let wire = wire_of(&store);
        let ok = || Reply::Status("OK".to_owned());
        assert!(wire.handshake_reply(vec![ok(), ok()]).is_ok());
        for replies in [
            vec![Reply::Error("WRONGPASS hunter2 is wrong".to_owned()), ok()],
            vec![
                ok(),
                Reply::Error("ERR DB index is out of range".to_owned()),
            ],
            vec![ok()],
            vec![ok(), Reply::Int(1)],
        ] {
            let e = wire.handshake_reply(replies).unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Unavailable);
            let message = e.to_string();
            assert!(!message.contains("hunter2"), "{message}");
            assert!(
                message.starts_with("RedisStore('redis://:***@127.0.0.1/1'): cannot connect: "),
                "{message}"
            );
        }
    }

    #[test]
    fn operations_are_the_blocking_paths_commands() {
        let store = RedisStore::new("redis://127.0.0.1/0", RedisOptions::default()).unwrap();
        let wire = wire_of(&store);
        let prefix = DEFAULT_PREFIX;
        let ttl = Duration::from_millis(1500);
        let one = |command: Cmd| Request {
            server: 0,
            bytes: command.get_packed_command(),
            replies: 1,
        };
        assert_eq!(wire.load(A, None), one(get_command(prefix, A)));
        let touching = wire.load(A, Some(ttl));
        assert_eq!(touching, one(get_touching_command(prefix, A, ttl)));
        // Rounded up as `ex_seconds` does: GETEX key EX 2.
        assert!(touching.bytes.ends_with(b"$2\r\nEX\r\n$1\r\n2\r\n"));
        assert_eq!(
            wire.save(A, b"blob", Some(ttl), SaveMode::Always),
            one(set_command(prefix, A, b"blob", Some(ttl), false))
        );
        assert_eq!(
            wire.save(A, b"blob", None, SaveMode::IfExists),
            one(set_command(prefix, A, b"blob", None, true))
        );
        assert_eq!(wire.delete(A), one(del_command(prefix, A)));
        assert_eq!(wire.timeouts(), (DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT));
    }

    #[test]
    fn replies_read_as_the_blocking_methods_return() {
        let store = RedisStore::new("redis://127.0.0.1/0", RedisOptions::default()).unwrap();
        let wire = wire_of(&store);
        let value = || vec![Reply::Bulk(Some(b"abc".to_vec()))];
        assert_eq!(
            wire.load_reply(A, value(), 3).unwrap(),
            Some(b"abc".to_vec())
        );
        assert_eq!(
            wire.load_reply(A, vec![Reply::Bulk(None)], 3).unwrap(),
            None
        );
        let e = wire.load_reply(A, value(), 2).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::OversizedRecord);
        for replies in [
            vec![Reply::Error(format!("WRONGTYPE key tornsession:{A}"))],
            vec![Reply::Int(3)],
            vec![],
            [value(), value()].concat(),
        ] {
            let e = wire.load_reply(A, replies, 3).unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Unavailable);
            assert!(!e.to_string().contains(A), "{e}");
        }
        let ok = || vec![Reply::Status("OK".to_owned())];
        assert!(wire.save_reply(A, ok()).unwrap());
        assert!(!wire.save_reply(A, vec![Reply::Bulk(None)]).unwrap());
        let e = wire
            .save_reply(A, vec![Reply::Error(format!("ERR {A}"))])
            .unwrap_err();
        assert!(!e.to_string().contains(A), "{e}");
        assert!(wire.save_reply(A, vec![Reply::Int(1)]).is_err());
        assert!(wire.delete_reply(A, vec![Reply::Int(1)]).unwrap());
        assert!(!wire.delete_reply(A, vec![Reply::Int(0)]).unwrap());
        assert!(wire.delete_reply(A, ok()).is_err());
    }
}
