//! The one blocking driver of the network stores' requests: a request's bytes written tagged
//! (`crate::wire::write_tagged`) over a blocking stream, its replies read off the stream and
//! parsed by `crate::wire`, and the tag checked before any of them is used, the whole exchange
//! within one deadline. memcached's client and the Redis single-server connections (TCP and unix
//! sockets; `redis::deadline`) both run on it, as the asyncio connections run the same
//! requests on the event loop. Redis over TLS or RESP3, Cluster and Sentinel's masters reached
//! over TLS stay on the redis crate's own connections (see `redis::connection`).
//!
//! Each read and write gets the socket timeout of what is left of the request's time: a reply
//! that drips in a byte at a time under a per-read timeout would otherwise hold the caller for
//! as long as the server liked.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::wire::{self, meta, Dialect, ProtocolError, Reply, TagCheck};

/// How much a read asks the socket for at least.
const READ_CHUNK: usize = 16 * 1024;

/// A blocking byte stream whose reads and writes can be given a timeout.
pub(crate) trait Stream: Read + Write {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()>;
    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()>;
}

impl Stream for TcpStream {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        TcpStream::set_read_timeout(self, Some(timeout))
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        TcpStream::set_write_timeout(self, Some(timeout))
    }
}

impl Stream for UnixStream {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        UnixStream::set_read_timeout(self, Some(timeout))
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        UnixStream::set_write_timeout(self, Some(timeout))
    }
}

/// A TCP connection to `host:port`, trying each of its addresses within `connect_timeout`.
pub(crate) fn connect_tcp(
    host: &str, port: u16, connect_timeout: Duration,
) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for address in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, connect_timeout) {
            Ok(stream) => {
                // Requests are written whole, so Nagle could only delay them.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A connection to the unix socket at `path` within `connect_timeout`. std's
/// `UnixStream::connect` has no timeout, and a server that stops accepting (its listen backlog
/// full) would hold the caller forever; Linux bounds a unix socket's connect by its send
/// timeout, which is set first (and set again per request by the driver).
pub(crate) fn connect_unix(
    path: &std::path::Path, connect_timeout: Duration,
) -> io::Result<UnixStream> {
    use rustix::net::{self, AddressFamily, SocketAddrUnix, SocketType};
    let socket = net::socket(AddressFamily::UNIX, SocketType::STREAM, None)?;
    net::sockopt::set_socket_timeout(&socket, net::sockopt::Timeout::Send, Some(connect_timeout))?;
    match net::connect(&socket, &SocketAddrUnix::new(path)?) {
        Ok(()) => Ok(UnixStream::from(socket)),
        Err(rustix::io::Errno::AGAIN) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the server did not accept the connection within {connect_timeout:?}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Why a request on a connection failed.
#[derive(Debug)]
pub(crate) enum CallError {
    Io(io::Error),
    Protocol(ProtocolError),
    /// A memcached `VA` larger than the caller takes; its bytes are left unread.
    Oversized(usize),
    /// The whole reply did not arrive within the request's timeout.
    NoReply(Duration),
    /// The replies do not carry the request's tag: replies left over from another request.
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

/// One connection, its unread bytes, and whether it can be trusted again: any failure (a
/// timeout included) breaks it for good, so a late reply is never read as the next request's.
pub(crate) struct Connection<S> {
    stream: S,
    dialect: Dialect,
    buf: Vec<u8>,
    broken: bool,
    /// How long one request and its replies may take in all.
    timeout: Duration,
    /// The tag of the next request (see `crate::wire::check_tag`).
    next_tag: u64,
}

impl<S: Stream> Connection<S> {
    pub(crate) fn new(stream: S, dialect: Dialect, timeout: Duration) -> Self {
        Self {
            stream,
            dialect,
            buf: Vec::new(),
            broken: false,
            timeout,
            next_tag: 0,
        }
    }

    pub(crate) fn stream(&self) -> &S {
        &self.stream
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends `bytes` (`replies` replies' worth of commands) tagged, and reads their replies,
    /// which must carry the tag: replies left on a pooled connection by an earlier request can
    /// never be taken for this one's. A value larger than `max_value` is not read.
    pub(crate) fn call(
        &mut self, bytes: &[u8], replies: usize, max_value: usize,
    ) -> Result<Vec<Reply>, CallError> {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        let mut tagged = Vec::with_capacity(bytes.len() + 32);
        wire::write_tagged(self.dialect, bytes, tag, &mut tagged);
        let count = wire::tagged_replies(self.dialect, replies);
        let result = self
            .exchange(&tagged, count, Some(tag), max_value)
            .and_then(
                |mut replies| match wire::check_tag(self.dialect, tag, &mut replies) {
                    TagCheck::OutOfStep(why) => Err(CallError::OutOfStep(why)),
                    TagCheck::InStep => Ok(replies),
                    // An error reply without a tag: the request fails with it, and the connection
                    // is not vouched for any more.
                    TagCheck::Unchecked => {
                        self.broken = true;
                        Ok(replies)
                    }
                },
            );
        let broken = match &result {
            Err(_) => true,
            // Bytes past the request's own replies (a faulty proxy's extra reply): the request
            // was in step, but the connection is not, and is never used again.
            Ok(_) if !self.buf.is_empty() => true,
            // memcached may have left part of a request it answered with an error unread.
            Ok(replies) => {
                self.dialect == Dialect::Meta
                    && !replies
                        .iter()
                        .all(|reply| matches!(reply, Reply::Meta { .. }))
            }
        };
        if broken {
            self.broken = true;
        }
        result
    }

    /// Sends `bytes` as they are and reads `replies` replies: for what has no tag to echo (a
    /// Redis login before it is let in, a Sentinel).
    pub(crate) fn call_untagged(
        &mut self, bytes: &[u8], replies: usize,
    ) -> Result<Vec<Reply>, CallError> {
        self.exchange(bytes, replies, None, usize::MAX)
    }

    fn exchange(
        &mut self, bytes: &[u8], count: usize, tag: Option<u64>, max_value: usize,
    ) -> Result<Vec<Reply>, CallError> {
        if self.broken {
            return Err(CallError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection failed before",
            )));
        }
        let result = self.exchange_by(Instant::now() + self.timeout, bytes, count, tag, max_value);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn exchange_by(
        &mut self, deadline: Instant, bytes: &[u8], count: usize, tag: Option<u64>,
        max_value: usize,
    ) -> Result<Vec<Reply>, CallError> {
        if !self.buf.is_empty() {
            return Err(CallError::Protocol(ProtocolError(
                "bytes arrived before the request".to_owned(),
            )));
        }
        let mut unwritten = bytes;
        while !unwritten.is_empty() {
            self.stream
                .set_write_timeout(self.time_left(deadline)?)
                .map_err(CallError::Io)?;
            match self.stream.write(unwritten) {
                Ok(0) => return Err(CallError::Io(io::ErrorKind::WriteZero.into())),
                Ok(written) => unwritten = &unwritten[written..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        let mut replies = Vec::with_capacity(count);
        while replies.len() < count {
            match wire::decode(self.dialect, &mut self.buf, max_value) {
                Ok(Some(reply)) => {
                    replies.push(reply);
                    continue;
                }
                Ok(None) => {}
                Err(e) => return Err(self.undecodable(e, tag, max_value)),
            }
            self.read_some(deadline)?;
        }
        Ok(replies)
    }

    /// Reads what has arrived (at least a byte) into the buffer, within the deadline.
    fn read_some(&mut self, deadline: Instant) -> Result<(), CallError> {
        self.stream
            .set_read_timeout(self.time_left(deadline)?)
            .map_err(CallError::Io)?;
        let filled = self.buf.len();
        self.buf.resize(filled + READ_CHUNK.max(filled), 0);
        let read = self.stream.read(&mut self.buf[filled..]);
        self.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) => Err(CallError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ))),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// What bytes that do not decode mean: a memcached value too large for the caller, if the
    /// reply is this request's (its line carries the tag), else a broken stream.
    fn undecodable(&self, error: ProtocolError, tag: Option<u64>, max_value: usize) -> CallError {
        if self.dialect != Dialect::Meta {
            return CallError::Protocol(error);
        }
        match meta::oversized_value(&self.buf, max_value) {
            Some(size) if tag.is_some_and(|tag| first_line_has_tag(&self.buf, tag)) => {
                CallError::Oversized(size)
            }
            Some(_) => CallError::OutOfStep(
                "a reply without the request's opaque, left from another request".to_owned(),
            ),
            None => CallError::Protocol(error),
        }
    }

    /// What is left of the request's time; past its deadline, the request has failed.
    fn time_left(&self, deadline: Instant) -> Result<Duration, CallError> {
        Some(deadline.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
            .ok_or(CallError::NoReply(self.timeout))
    }

    /// A socket timeout is the request's deadline passing: the socket's timeout is the time
    /// the request had left.
    fn io_error(&self, error: io::Error) -> CallError {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CallError::NoReply(self.timeout),
            _ => CallError::Io(error),
        }
    }
}

/// Whether the memcached reply line at the front of `buf` carries the opaque `tag`.
fn first_line_has_tag(buf: &[u8], tag: u64) -> bool {
    let mut digits = [0u8; 20];
    let digits = wire::decimal(tag, &mut digits);
    buf.windows(2)
        .position(|pair| pair == b"\r\n")
        .and_then(|end| std::str::from_utf8(&buf[..end]).ok())
        .and_then(|line| meta::flag(line, 'O'))
        .is_some_and(|echoed| echoed.as_bytes() == digits)
}
