//! The blocking client: one TCP connection to one server, a request and its tagged reply at a
//! time, within one deadline.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::READ_CHUNK;
use crate::stores::Endpoint;
use crate::wire::meta;
use crate::wire::{self, Dialect, ProtocolError, Reply, TagCheck};

/// Why a request on a connection failed.
#[derive(Debug)]
pub(super) enum CallError {
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
pub(super) struct MetaConnection {
    pub(super) stream: TcpStream,
    pub(super) buf: Vec<u8>,
    pub(super) broken: bool,
    /// How long one request and its reply may take in all.
    pub(super) timeout: Duration,
    /// The tag of the next request (see `crate::wire::check_tag`).
    pub(super) next_tag: u64,
}

impl MetaConnection {
    pub(super) fn connect(
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
    pub(super) fn unusable(&self) -> bool {
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
    pub(super) fn call(&mut self, request: &[u8], max_value: usize) -> Result<Reply, CallError> {
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
    pub(super) fn exchange(
        &mut self,
        request: &[u8],
        tag: u64,
        max_value: usize,
    ) -> Result<Reply, CallError> {
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
    pub(super) fn time_left(&self, deadline: Instant) -> Result<Duration, CallError> {
        Some(deadline.saturating_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
            .ok_or(CallError::NoReply(self.timeout))
    }

    /// A socket timeout is the command's deadline passing: the socket's timeout is the time
    /// the command had left.
    pub(super) fn io_error(&self, error: io::Error) -> CallError {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CallError::NoReply(self.timeout),
            _ => CallError::Io(error),
        }
    }
}

/// Whether the reply line at the front of `buf` carries the opaque `tag`.
pub(super) fn first_line_has_tag(buf: &[u8], tag: u64) -> bool {
    let mut digits = [0u8; 20];
    let digits = wire::decimal(tag, &mut digits);
    buf.windows(2)
        .position(|pair| pair == b"\r\n")
        .and_then(|end| std::str::from_utf8(&buf[..end]).ok())
        .and_then(|line| meta::flag(line, 'O'))
        .is_some_and(|echoed| echoed.as_bytes() == digits)
}
