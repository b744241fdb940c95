//! Sessions in one or several memcached servers, each key on the server its hash picks, spoken
//! to in the meta protocol (`crate::wire::meta`, memcached 1.6+): every operation is one request
//! written at once and one reply, on pooled connections that are not pinged when checked out.
//! Every failure is `Unavailable`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Endpoint, Request, SaveMode, WireStore};
use crate::wire::meta::{self, SetMode};
use crate::wire::{self, Dialect, ProtocolError, Reply, TagCheck};

use super::pool::IdleConnections;
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
/// The largest record saved: memcached's default item size (1 MiB, its `-I`), less 1 KiB for
/// the key and the item's header, which count against that size too (a 44-byte key leaves
/// 100-150 bytes fewer for the value; the longest key, about 300).
pub const MAX_RECORD_SIZE: usize = (1 << 20) - 1024;
/// memcached reads an exptime above 30 days as a Unix time, not a duration.
const RELATIVE_EXPTIME_LIMIT: u64 = 60 * 60 * 24 * 30;
/// The longest generation counter read: 20 digits hold any u64.
const MAX_COUNTER_LEN: usize = 64;
/// How much a read asks the socket for at least.
const READ_CHUNK: usize = 16 * 1024;

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

/// Where `host:port`, `memcache://host:port` or `[v6 address]:port` points (an IPv6 host
/// without its brackets, as sockets take it).
pub fn endpoint(server: &str) -> Result<Endpoint, String> {
    let server = server.trim();
    let address = match server.split_once("://") {
        Some(("memcache", rest)) => rest.strip_suffix('/').unwrap_or(rest),
        Some(_) => {
            return Err(format!(
                "bad server {server:?}: expected host:port or memcache://host:port"
            ))
        }
        None => server,
    };
    let expected = || format!("bad server {server:?}: expected host:port");
    let bracketed = address.starts_with('[');
    let (host, port) = match address.strip_prefix('[') {
        Some(v6) => {
            let (host, rest) = v6.split_once(']').ok_or_else(expected)?;
            (host, rest.strip_prefix(':').ok_or_else(expected)?)
        }
        None => address.rsplit_once(':').ok_or_else(expected)?,
    };
    let bad_byte =
        |b: u8| b.is_ascii_whitespace() || b.is_ascii_control() || b"/@?#[]".contains(&b);
    // An IPv6 address without brackets cannot be told from its port.
    if host.is_empty() || host.bytes().any(bad_byte) || (host.contains(':') && !bracketed) {
        return Err(expected());
    }
    let port = Some(port)
        .filter(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|port| port.parse::<u16>().ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| format!("bad server {server:?}: invalid port number"))?;
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
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

/// The index of the server `key` lives on, among `servers` servers (the rule of the `memcache`
/// crate this store used before, so sessions stay where they were).
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

// --- The blocking client ----------------------------------------------------------------------

/// Why a request on a connection failed.
#[derive(Debug)]
enum CallError {
    Io(io::Error),
    Protocol(ProtocolError),
    /// A `VA` larger than the caller takes; its bytes are left unread.
    Oversized(usize),
    /// The whole reply did not arrive within the command's timeout.
    NoReply(Duration),
    /// The reply does not carry the request's tag: a reply left over from another request.
    OutOfStep(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Io(e) => write!(f, "{e}"),
            CallError::Protocol(e) => write!(f, "{e}"),
            CallError::Oversized(size) => write!(f, "a value of {size} bytes"),
            CallError::NoReply(timeout) => write!(f, "no reply within {timeout:?}"),
            CallError::OutOfStep(why) => write!(f, "{why}"),
        }
    }
}

/// One TCP connection to one server, its unread bytes, and whether it can be trusted again.
struct MetaConnection {
    stream: TcpStream,
    buf: Vec<u8>,
    broken: bool,
    /// How long one request and its reply may take in all.
    timeout: Duration,
    /// The tag of the next request (see `crate::wire::check_tag`).
    next_tag: u64,
}

impl MetaConnection {
    fn connect(
        endpoint: &Endpoint,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> io::Result<Self> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        for address in (endpoint.host.as_str(), endpoint.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&address, connect_timeout) {
                Ok(stream) => {
                    // Requests are written whole, so Nagle could only delay them.
                    stream.set_nodelay(true)?;
                    return Ok(Self {
                        stream,
                        buf: Vec::new(),
                        broken: false,
                        timeout,
                        next_tag: 0,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Whether the server hung up (or sent bytes nobody asked for) while it sat in the pool:
    /// one non-blocking peek, no round trip.
    fn unusable(&self) -> bool {
        use rustix::net::{recv, RecvFlags};
        let mut byte = [0u8; 1];
        !matches!(
            recv(
                &self.stream,
                &mut byte,
                RecvFlags::PEEK | RecvFlags::DONTWAIT
            ),
            Err(rustix::io::Errno::AGAIN)
        )
    }

    /// Writes `request` (one write for all but huge values), tagged, and reads its one reply,
    /// which must carry the tag: a reply left on a pooled connection by an earlier request can
    /// never be taken for this one's. Any failure leaves the connection broken, to be dropped
    /// by the pool.
    fn call(&mut self, request: &[u8], max_value: usize) -> Result<Reply, CallError> {
        let tag = self.next_tag;
        self.next_tag += 1;
        let mut tagged = Vec::with_capacity(request.len() + 24);
        wire::write_tagged(Dialect::Meta, request, tag, &mut tagged);
        let result = self.exchange(&tagged, tag, max_value).and_then(|reply| {
            let mut reply = [reply];
            match meta::check_tag(tag, &mut reply) {
                TagCheck::OutOfStep(why) => Err(CallError::OutOfStep(why)),
                // An error reply carries no tag; it breaks the connection below.
                TagCheck::InStep | TagCheck::Unchecked => {
                    let [reply] = reply;
                    Ok(reply)
                }
            }
        });
        if !matches!(result, Ok(Reply::Meta { .. })) {
            // An error reply too: memcached may have left part of the request unread.
            self.broken = true;
        }
        result
    }

    /// One request and its reply within `timeout` in all: the socket's timeouts bound each
    /// read and write, so a server dripping a byte at a time would otherwise hold the caller for
    /// as long as it likes.
    fn exchange(&mut self, request: &[u8], tag: u64, max_value: usize) -> Result<Reply, CallError> {
        if !self.buf.is_empty() {
            return Err(CallError::Protocol(ProtocolError(
                "bytes arrived before the request".to_owned(),
            )));
        }
        let deadline = Instant::now() + self.timeout;
        let mut unwritten = request;
        while !unwritten.is_empty() {
            self.stream
                .set_write_timeout(Some(self.time_left(deadline)?))
                .map_err(CallError::Io)?;
            match self.stream.write(unwritten) {
                Ok(0) => return Err(CallError::Io(io::ErrorKind::WriteZero.into())),
                Ok(written) => unwritten = &unwritten[written..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        loop {
            match meta::decode(&mut self.buf, max_value) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => {
                    return Err(match meta::oversized_value(&self.buf, max_value) {
                        // Too large a record, if it is this request's: its line says.
                        Some(size) if first_line_has_tag(&self.buf, tag) => {
                            CallError::Oversized(size)
                        }
                        Some(_) => CallError::OutOfStep(
                            "a reply without the request's opaque, left from another request"
                                .to_owned(),
                        ),
                        None => CallError::Protocol(e),
                    });
                }
            }
            self.stream
                .set_read_timeout(Some(self.time_left(deadline)?))
                .map_err(CallError::Io)?;
            let filled = self.buf.len();
            self.buf.resize(filled + READ_CHUNK.max(filled), 0);
            let read = self.stream.read(&mut self.buf[filled..]);
            self.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => {
                    return Err(CallError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// What is left of the command's time; past its deadline, the command has failed.
    fn time_left(&self, deadline: Instant) -> Result<Duration, CallError> {
        Some(deadline.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
            .ok_or(CallError::NoReply(self.timeout))
    }

    /// A socket timeout is the command's deadline passing: the socket's timeout is the time
    /// the command had left.
    fn io_error(&self, error: io::Error) -> CallError {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CallError::NoReply(self.timeout),
            _ => CallError::Io(error),
        }
    }
}

/// Whether the reply line at the front of `buf` carries the opaque `tag`.
fn first_line_has_tag(buf: &[u8], tag: u64) -> bool {
    let mut digits = [0u8; 20];
    let digits = wire::decimal(tag, &mut digits);
    buf.windows(2)
        .position(|pair| pair == b"\r\n")
        .and_then(|end| std::str::from_utf8(&buf[..end]).ok())
        .and_then(|line| meta::flag(line, 'O'))
        .is_some_and(|echoed| echoed.as_bytes() == digits)
}

pub struct MemcachedStore {
    /// Each server's idle connections, in the order of `endpoints`.
    pools: Vec<IdleConnections<MetaConnection>>,
    endpoints: Vec<Endpoint>,
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
        let endpoints = servers
            .iter()
            .map(|server| endpoint(server))
            .collect::<Result<Vec<_>, String>>()
            .map_err(fail)?;
        // No connection made here: a server that is down when the app starts fails requests,
        // not the start.
        let pools = endpoints
            .iter()
            .map(|_| IdleConnections::new(options.pool_size as usize))
            .collect();
        Ok(Self {
            pools,
            endpoints,
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

    /// A connection to `key`'s server that the server has not hung up on meanwhile: an idle
    /// one, else a new one made here.
    fn connection(&self, server: usize, command: &str) -> Result<MetaConnection, StoreError> {
        // Each idle connection the server closed (a restart) is dropped, not tried.
        while let Some(connection) = self.pools[server].take() {
            if !connection.unusable() {
                return Ok(connection);
            }
        }
        let options = &self.options;
        MetaConnection::connect(
            &self.endpoints[server],
            options.connect_timeout,
            options.timeout,
        )
        .map_err(|e| {
            // A refused connect fails at once; connect_timeout only ends one left unanswered.
            let cause = match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => format!(
                    "{command}: cannot connect within {:?}",
                    options.connect_timeout
                ),
                _ => format!("{command}: cannot connect: {e}"),
            };
            StoreError::new(self, cause)
        })
    }

    /// Sends one request for `key` (about `session_id`, whose id no error names) and reads its
    /// reply, taking a value of at most `max_value` bytes.
    fn call(
        &self,
        session_id: &str,
        key: &str,
        request: &[u8],
        max_value: usize,
    ) -> Result<Reply, StoreError> {
        let command = std::str::from_utf8(&request[..2]).unwrap_or("request");
        let server = server_index(key, self.pools.len());
        let mut connection = self
            .connection(server, command)
            .map_err(|e| e.without_id(session_id))?;
        let result = connection.call(request, max_value);
        if !connection.broken {
            self.pools[server].give_back(connection);
        }
        result
            .map_err(|e| match e {
                CallError::Oversized(size) => {
                    StoreError::oversized(self, session_id, size as u64, max_value)
                }
                CallError::OutOfStep(why) => StoreError {
                    kind: StoreErrorKind::Crossed,
                    ..StoreError::new(self, format!("{command}: {why}"))
                },
                e => StoreError::new(self, format!("{command}: {e}")),
            })
            .map_err(|e| e.without_id(session_id))
    }

    /// An error for a reply that is not one `command` can answer (an error reply, or a code
    /// out of place).
    fn unexpected(&self, session_id: &str, command: &str, reply: &Reply) -> StoreError {
        let cause = match reply {
            Reply::Error(message) => format!("{command}: {message}"),
            Reply::Meta { code, .. } => format!(
                "{command}: unexpected reply {}",
                String::from_utf8_lossy(code)
            ),
            other => format!("{command}: unexpected reply {other:?}"),
        };
        StoreError::new(self, cause).without_id(session_id)
    }

    /// The one reply of a request, or an error when there is not exactly one.
    fn only_reply(
        &self,
        session_id: &str,
        command: &str,
        replies: Vec<Reply>,
    ) -> Result<Reply, StoreError> {
        let count = replies.len();
        let mut replies = replies.into_iter();
        match (replies.next(), count) {
            (Some(reply), 1) => Ok(reply),
            _ => Err(StoreError::new(
                self,
                format!("{command}: {count} replies where one was expected"),
            )
            .without_id(session_id)),
        }
    }

    /// Adds 1 to a counter: its new value, `None` when there is no counter.
    fn increment(&self, key: &str) -> Result<Option<u64>, StoreError> {
        match self.call("", key, &meta::increment(key), MAX_COUNTER_LEN)? {
            Reply::Meta {
                code: [b'V', b'A'],
                value: Some(value),
                ..
            } => parse_counter(&value).map(Some).ok_or_else(|| {
                StoreError::new(
                    self,
                    "ma: the generation counter answered something not a number",
                )
            }),
            Reply::Meta {
                code: [b'N', b'F'], ..
            } => Ok(None),
            reply => Err(self.unexpected("", "ma", &reply)),
        }
    }

    /// Whether a set answered "written" (`HD`) or "not written" (`NS`, `EX`, `NF`: the
    /// condition failed).
    fn stored(&self, session_id: &str, reply: &Reply) -> Result<bool, StoreError> {
        match reply {
            Reply::Meta {
                code: [b'H', b'D'], ..
            } => Ok(true),
            Reply::Meta { code, .. } if [b"NS", b"EX", b"NF"].contains(&code) => Ok(false),
            reply => Err(self.unexpected(session_id, "ms", reply)),
        }
    }
}

fn parse_counter(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}

fn list(servers: &[String]) -> String {
    let quoted: Vec<String> = servers.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

// The pipelined path (the async API's connections) and the blocking one send the same bytes and
// read replies the same way: the blocking methods below are these requests, one at a time.
impl WireStore for MemcachedStore {
    fn dialect(&self) -> Dialect {
        Dialect::Meta
    }

    fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn handshake(&self) -> Option<Request> {
        None
    }

    fn handshake_reply(&self, _replies: Vec<Reply>) -> Result<(), StoreError> {
        Ok(())
    }

    fn load(&self, session_id: &str, ttl: Option<Duration>) -> Request {
        let key = self.key(session_id);
        let touch = ttl.map(|ttl| exptime(Some(ttl), crate::time::now()));
        Request {
            server: server_index(&key, self.endpoints.len()),
            bytes: meta::get(&key, touch),
            replies: 1,
        }
    }

    fn load_reply(
        &self,
        session_id: &str,
        replies: Vec<Reply>,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.only_reply(session_id, "mg", replies)? {
            Reply::Meta {
                code: [b'V', b'A'],
                value: Some(value),
                ..
            } => within_limit(self, session_id, Some(value), max_bytes),
            Reply::Meta {
                code: [b'E', b'N'], ..
            } => Ok(None),
            reply => Err(self.unexpected(session_id, "mg", &reply)),
        }
    }

    fn save(
        &self,
        session_id: &str,
        blob: &[u8],
        ttl: Option<Duration>,
        mode: SaveMode,
    ) -> Request {
        let key = self.key(session_id);
        let mode = match mode {
            SaveMode::Always => SetMode::Always,
            SaveMode::IfExists => SetMode::Replace,
        };
        Request {
            server: server_index(&key, self.endpoints.len()),
            bytes: meta::set(&key, blob, exptime(ttl, crate::time::now()), mode),
            replies: 1,
        }
    }

    fn save_reply(&self, session_id: &str, replies: Vec<Reply>) -> Result<bool, StoreError> {
        let reply = self.only_reply(session_id, "ms", replies)?;
        self.stored(session_id, &reply)
    }

    fn delete(&self, session_id: &str) -> Request {
        let key = self.key(session_id);
        Request {
            server: server_index(&key, self.endpoints.len()),
            bytes: meta::delete(&key),
            replies: 1,
        }
    }

    fn delete_reply(&self, session_id: &str, replies: Vec<Reply>) -> Result<bool, StoreError> {
        match self.only_reply(session_id, "md", replies)? {
            Reply::Meta { code, .. } if &code == b"HD" => Ok(true),
            Reply::Meta { code, .. } if &code == b"NF" => Ok(false),
            reply => Err(self.unexpected(session_id, "md", &reply)),
        }
    }

    fn timeouts(&self) -> (Duration, Duration) {
        (self.options.timeout, self.options.connect_timeout)
    }
}

impl MemcachedStore {
    /// Runs a pipelined request the blocking way: the same bytes, one reply.
    fn run(
        &self,
        session_id: &str,
        request: &Request,
        max_value: usize,
    ) -> Result<Vec<Reply>, StoreError> {
        let key = self.key(session_id);
        Ok(vec![self.call(
            session_id,
            &key,
            &request.bytes,
            max_value,
        )?])
    }
}

impl SessionStore for MemcachedStore {
    // memcached has no command for a value's length, so the limit is checked on the reply's
    // size line: an oversized value is not read (its connection is dropped instead).
    fn load(&self, session_id: &str, max_bytes: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let replies = self.run(
            session_id,
            &WireStore::load(self, session_id, None),
            max_bytes,
        )?;
        self.load_reply(session_id, replies, max_bytes)
    }

    fn load_touching(
        &self,
        session_id: &str,
        ttl: Duration,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let request = WireStore::load(self, session_id, Some(ttl));
        let replies = self.run(session_id, &request, max_bytes)?;
        self.load_reply(session_id, replies, max_bytes)
    }

    fn save_if_exists(
        &self,
        session_id: &str,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let request = WireStore::save(self, session_id, blob, ttl, SaveMode::IfExists);
        let replies = self.run(session_id, &request, 0)?;
        self.save_reply(session_id, replies)
    }

    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let request = WireStore::save(self, session_id, blob, ttl, SaveMode::Always);
        let replies = self.run(session_id, &request, 0)?;
        match self.save_reply(session_id, replies)? {
            true => Ok(()),
            false => Err(StoreError::new(self, "ms: a plain set was not stored")),
        }
    }

    fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        let replies = self.run(session_id, &WireStore::delete(self, session_id), 0)?;
        self.delete_reply(session_id, replies)
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
        let Some(expected) = expected else {
            // ME (add) stores only where there is nothing, and says whether it did.
            let request = meta::set(&key, blob, exptime, SetMode::Add);
            let reply = self.call(session_id, &key, &request, 0)?;
            return self.stored(session_id, &reply);
        };
        // A value longer than the expected one is not it: not read at all.
        let found = match self.call(session_id, &key, &meta::get_with_cas(&key), expected.len()) {
            Err(e) if e.kind == StoreErrorKind::OversizedRecord => return Ok(false),
            found => found?,
        };
        let cas = match &found {
            Reply::Meta {
                code: [b'V', b'A'],
                value: Some(current),
                flags,
            } => {
                if current.as_slice() != expected {
                    return Ok(false);
                }
                meta::flag(flags, 'c')
                    .and_then(|token| token.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::new(self, "mg: the reply carries no CAS token"))?
            }
            Reply::Meta {
                code: [b'E', b'N'], ..
            } => return Ok(false),
            reply => return Err(self.unexpected(session_id, "mg", reply)),
        };
        // EX (changed since the mg) and NF (deleted since) both mean another writer won.
        let request = meta::set(&key, blob, exptime, SetMode::Cas(cas));
        let reply = self.call(session_id, &key, &request, 0)?;
        self.stored(session_id, &reply)
    }

    fn touch(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(session_id);
        let request = meta::touch(&key, exptime(Some(ttl), crate::time::now()));
        match self.call(session_id, &key, &request, 0)? {
            // EN: a missing record stays missing.
            Reply::Meta { code, .. } if &code == b"HD" || &code == b"EN" => Ok(()),
            reply => Err(self.unexpected(session_id, "mg", &reply)),
        }
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

    fn max_record_size(&self) -> Option<usize> {
        Some(MAX_RECORD_SIZE)
    }

    fn revokes_by_generation(&self) -> bool {
        true
    }

    fn user_generation(&self, user_key: &str) -> Result<Option<u64>, StoreError> {
        let key = self.generation_key(user_key);
        let not_a_number =
            || StoreError::new(self, "a generation counter holds something not a number");
        match self.call("", &key, &meta::get(&key, None), MAX_COUNTER_LEN) {
            Ok(Reply::Meta {
                code: [b'V', b'A'],
                value: Some(value),
                ..
            }) => parse_counter(&value).map(Some).ok_or_else(not_a_number),
            Ok(Reply::Meta {
                code: [b'E', b'N'], ..
            }) => Ok(None),
            Ok(reply) => Err(self.unexpected("", "mg", &reply)),
            Err(e) if e.kind == StoreErrorKind::OversizedRecord => Err(not_a_number()),
            Err(e) => Err(e),
        }
    }

    // ma is atomic; a missing counter is created with ME (add), which stores only where there
    // is nothing, so of two first bumps racing one add wins and both then ma: each bump moves
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
        let add = meta::set(&key, first.to_string().as_bytes(), 0, SetMode::Add);
        // HD or NS: either way there is a counter now.
        self.stored("", &self.call("", &key, &add, 0)?)?;
        match self.increment(&key)? {
            // No counter before: every live record counted as generation 0.
            Some(after) => Ok(crate::users::Bump { before: 0, after }),
            None => Err(StoreError::new(
                self,
                "ma: the generation counter vanished as it was created",
            )),
        }
    }

    fn describe(&self) -> String {
        format!("MemcachedStore({})", list(&self.servers))
    }

    fn wire(&self) -> Option<&dyn WireStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    const A: &str = "0000000000000000000000000000000a";

    #[test]
    fn servers_take_host_port_or_memcache_urls() {
        let at = |host: &str, port| Endpoint {
            host: host.to_owned(),
            port,
        };
        assert_eq!(endpoint("127.0.0.1:11211"), Ok(at("127.0.0.1", 11211)));
        assert_eq!(endpoint(" localhost:11211 "), Ok(at("localhost", 11211)));
        assert_eq!(
            endpoint("memcache://127.0.0.1:11212"),
            Ok(at("127.0.0.1", 11212))
        );
        assert_eq!(
            endpoint("memcache://127.0.0.1:11212/"),
            Ok(at("127.0.0.1", 11212))
        );
        assert_eq!(endpoint("[::1]:11211"), Ok(at("::1", 11211)));
        assert_eq!(endpoint("memcache://[::1]:11211"), Ok(at("::1", 11211)));
        for bad in [
            "127.0.0.1",
            "redis://127.0.0.1:6379",
            "",
            "memcache://:11211",
            "::1:11211",
            "[::1]11211",
            "[::1",
            "host:0",
            "host:99999",
            "host:+1",
            "host:",
            "user@host:1",
            "host/x:1",
            "memcache://host:1/path",
            "ho st:1",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(
            endpoint("redis://h:1").unwrap_err(),
            "bad server \"redis://h:1\": expected host:port or memcache://host:port"
        );
        assert_eq!(
            endpoint("h").unwrap_err(),
            "bad server \"h\": expected host:port"
        );
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

    fn two_servers() -> MemcachedStore {
        let servers = ["127.0.0.1:1".to_owned(), "memcache://[::1]:2".to_owned()];
        MemcachedStore::new(&servers, MemcachedOptions::default()).unwrap()
    }

    #[test]
    fn wire_requests_go_to_the_keys_server_as_one_buffer() {
        let store = two_servers();
        assert_eq!(store.dialect(), Dialect::Meta);
        assert_eq!(store.endpoints()[1].host, "::1");
        assert!(store.handshake().is_none());
        assert!(SessionStore::wire(&store).is_some());
        let key = format!("tornsession:{A}");
        let server = server_index(&key, 2);
        let load = WireStore::load(&store, A, Some(Duration::from_millis(1500)));
        assert_eq!(load.server, server);
        assert_eq!(load.replies, 1);
        assert_eq!(load.bytes, format!("mg {key} v T2\r\n").into_bytes());
        let plain = WireStore::load(&store, A, None);
        assert_eq!(plain.bytes, format!("mg {key} v\r\n").into_bytes());
        let save = WireStore::save(&store, A, b"{}", None, SaveMode::IfExists);
        assert_eq!(
            save.bytes,
            format!("ms {key} 2 MR\r\n{{}}\r\n").into_bytes()
        );
        assert_eq!(save.server, server);
        let save = WireStore::save(
            &store,
            A,
            b"{}",
            Some(Duration::from_secs(9)),
            SaveMode::Always,
        );
        assert_eq!(
            save.bytes,
            format!("ms {key} 2 T9\r\n{{}}\r\n").into_bytes()
        );
        assert_eq!(
            WireStore::delete(&store, A).bytes,
            format!("md {key}\r\n").into_bytes()
        );
        assert_eq!(store.timeouts(), (DEFAULT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT));
    }

    fn reply(code: &[u8; 2], value: Option<&[u8]>) -> Vec<Reply> {
        vec![Reply::Meta {
            code: *code,
            flags: String::new(),
            value: value.map(<[u8]>::to_vec),
        }]
    }

    #[test]
    fn wire_replies_read_as_the_blocking_methods_do() {
        let store = two_servers();
        assert_eq!(
            store.load_reply(A, reply(b"VA", Some(b"x")), 10).unwrap(),
            Some(b"x".to_vec())
        );
        assert_eq!(store.load_reply(A, reply(b"EN", None), 10).unwrap(), None);
        let e = store
            .load_reply(A, reply(b"VA", Some(b"xx")), 1)
            .unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::OversizedRecord);
        assert!(store.save_reply(A, reply(b"HD", None)).unwrap());
        assert!(!store.save_reply(A, reply(b"NS", None)).unwrap());
        assert!(store.delete_reply(A, reply(b"HD", None)).unwrap());
        assert!(!store.delete_reply(A, reply(b"NF", None)).unwrap());
        let error = |text: &str| vec![Reply::Error(text.to_owned())];
        for e in [
            store
                .load_reply(A, error(&format!("SERVER_ERROR no {A}")), 10)
                .unwrap_err(),
            store.load_reply(A, reply(b"HD", None), 10).unwrap_err(),
            store.load_reply(A, vec![], 10).unwrap_err(),
            store.save_reply(A, error("CLIENT_ERROR bad")).unwrap_err(),
            store.delete_reply(A, reply(b"EX", None)).unwrap_err(),
        ] {
            assert_eq!(e.kind, StoreErrorKind::Unavailable, "{e}");
            assert!(!e.to_string().contains(A), "{e}");
        }
        let e = store
            .load_reply(A, error("SERVER_ERROR out of memory"), 10)
            .unwrap_err();
        assert!(
            e.to_string().ends_with("mg: SERVER_ERROR out of memory"),
            "{e}"
        );
    }

    #[test]
    fn a_refused_connect_fails_at_once_not_after_the_connect_timeout() {
        let options = MemcachedOptions {
            connect_timeout: Duration::from_secs(5),
            ..MemcachedOptions::default()
        };
        let store = MemcachedStore::new(&["127.0.0.1:1".to_owned()], options).unwrap();
        let started = Instant::now();
        let e = SessionStore::load(&store, A, usize::MAX).err().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "waited");
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        assert!(
            e.to_string()
                .starts_with("MemcachedStore(['127.0.0.1:1']): mg: cannot connect: "),
            "{e}"
        );
    }

    #[test]
    fn a_reply_dripping_in_fails_once_the_command_timeout_has_passed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut client, _) = listener.accept().unwrap();
            let mut request = [0u8; 256];
            let _ = client.read(&mut request);
            // Each byte well within the timeout; the whole reply far beyond it.
            for byte in b"VA 40\r\n".iter().chain(&[b'x'; 40]) {
                if client.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let options = MemcachedOptions {
            timeout: Duration::from_millis(300),
            ..MemcachedOptions::default()
        };
        let store = MemcachedStore::new(std::slice::from_ref(&server), options).unwrap();
        let started = Instant::now();
        let e = SessionStore::load(&store, A, usize::MAX).err().unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert_eq!(e.kind, StoreErrorKind::Unavailable);
        assert!(e.to_string().ends_with("mg: no reply within 300ms"), "{e}");
    }

    #[test]
    fn a_reply_left_from_another_request_is_never_taken_and_drops_the_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            // Every connection: the first request gets a stale reply (another opaque, another
            // record), the next its own.
            for client in listener.incoming() {
                let mut client = client.unwrap();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut stale = true;
                    let mut buf = [0u8; 512];
                    while let Ok(read @ 1..) = client.read(&mut buf) {
                        let line = String::from_utf8_lossy(&buf[..read]).into_owned();
                        let opaque = meta::flag(line.trim_end(), 'O').unwrap().to_owned();
                        seen.lock().unwrap().push(line);
                        let reply = if stale {
                            "VA 9 O999\r\n{\"x\":\"y\"}\r\n".to_owned()
                        } else {
                            format!("EN O{opaque}\r\n")
                        };
                        stale = false;
                        if client.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let store = MemcachedStore::new(&[server], MemcachedOptions::default()).unwrap();
        let e = SessionStore::load(&store, A, usize::MAX).err().unwrap();
        assert_eq!(e.kind, StoreErrorKind::Crossed);
        assert!(!e.to_string().contains(A), "{e}");
        // The connection was dropped: the next load makes a new one, whose first reply is
        // stale again; never is the other record returned.
        let e = SessionStore::load(&store, A, usize::MAX).err().unwrap();
        assert_eq!(e.kind, StoreErrorKind::Crossed);
        let sent = requests.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(sent
            .iter()
            .all(|line| line.starts_with("mg ") && line.ends_with(" O0\r\n")));
    }
}
