//! A blocking connection to one Redis server on which every request, written and answered, has
//! one deadline. The redis crate's own connections time each socket read apart, so a reply that
//! drips in a byte at a time under the read timeout held a caller for as long as the server
//! liked (4.6 s with `timeout=1.0`); here the socket's timeout is set to what is left of the
//! request's time before every read and write, as the memcached client does. Replies are parsed
//! by the redis crate's own parser, and the crate's commands run on it through `ConnectionLike`.
//! It speaks RESP2 over TCP or a unix socket; TLS and RESP3 stay on the crate's connections.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use redis::{
    ConnectionAddr, ConnectionInfo, ConnectionLike, Parser, ProtocolVersion, RedisResult, Value,
};

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(Some(timeout)),
            Stream::Unix(s) => s.set_write_timeout(Some(timeout)),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
}

/// The stream as the parser reads it: each read within what is left before `deadline`.
struct DeadlineReader<'a> {
    stream: &'a mut Stream,
    deadline: Instant,
    timeout: Duration,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = time_left(self.deadline, self.timeout)?;
        self.stream.set_read_timeout(left)?;
        self.stream
            .read(buf)
            .map_err(|e| timed_out_as_deadline(e, self.timeout))
    }
}

/// What is left before `deadline`; past it, the request has failed.
fn time_left(deadline: Instant, timeout: Duration) -> io::Result<Duration> {
    Some(deadline.saturating_duration_since(Instant::now()))
        .filter(|left| !left.is_zero())
        .ok_or_else(|| no_reply(timeout))
}

fn no_reply(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no whole reply within {timeout:?}"),
    )
}

/// A socket timeout is the request's deadline passing (the socket's timeout was the time left).
fn timed_out_as_deadline(error: io::Error, timeout: Duration) -> io::Error {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => no_reply(timeout),
        _ => error,
    }
}

/// One connection; any failure (a timeout included) closes it for good, so a late reply is
/// never read as the answer to the next request.
pub struct DeadlineConnection {
    stream: Stream,
    parser: Parser,
    /// How long one request may take in all.
    timeout: Duration,
    db: i64,
    open: bool,
}

impl DeadlineConnection {
    /// Whether this connection can reach the server `info` names (else the crate's one does).
    pub fn speaks(info: &ConnectionInfo) -> bool {
        info.redis.protocol == ProtocolVersion::RESP2
            && matches!(info.addr, ConnectionAddr::Tcp(..) | ConnectionAddr::Unix(_))
    }

    /// Connects and logs in (`AUTH`, `SELECT`) within `connect_timeout`, as the crate's client
    /// does; its informational `CLIENT SETINFO` is left out.
    pub fn connect(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let stream = match &info.addr {
            ConnectionAddr::Tcp(host, port) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
                let mut connected = None;
                for address in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&address, connect_timeout) {
                        Ok(stream) => {
                            connected = Some(stream);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let stream = connected.ok_or(last)?;
                // Requests are written whole, so Nagle could only delay them.
                stream.set_nodelay(true)?;
                Stream::Tcp(stream)
            }
            ConnectionAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            _ => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "only TCP and unix sockets without TLS",
                )))
            }
        };
        let mut connection = Self {
            stream,
            parser: Parser::new(),
            timeout: connect_timeout,
            db: info.redis.db,
            open: true,
        };
        if let Some(password) = &info.redis.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = &info.redis.username {
                auth.arg(username);
            }
            auth.arg(password).query::<()>(&mut connection)?;
        }
        if info.redis.db != 0 {
            redis::cmd("SELECT")
                .arg(info.redis.db)
                .query::<()>(&mut connection)?;
        }
        connection.timeout = timeout;
        Ok(connection)
    }

    /// Writes `bytes` and reads `count` replies, all before one deadline.
    fn exchange(&mut self, bytes: &[u8], count: usize) -> RedisResult<Vec<Value>> {
        if !self.open {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection failed before",
            )
            .into());
        }
        let deadline = Instant::now() + self.timeout;
        let result = self.exchange_by(deadline, bytes, count);
        if result.is_err() {
            self.open = false;
        }
        result
    }

    fn exchange_by(
        &mut self,
        deadline: Instant,
        bytes: &[u8],
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let timeout = self.timeout;
        let mut unwritten = bytes;
        while !unwritten.is_empty() {
            self.stream
                .set_write_timeout(time_left(deadline, timeout)?)?;
            match self.stream.write(unwritten) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(written) => unwritten = &unwritten[written..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out_as_deadline(e, timeout).into()),
            }
        }
        let mut replies = Vec::with_capacity(count);
        for _ in 0..count {
            let reader = DeadlineReader {
                stream: &mut self.stream,
                deadline,
                timeout,
            };
            replies.push(self.parser.parse_value(reader)?);
        }
        Ok(replies)
    }
}

impl ConnectionLike for DeadlineConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        let mut replies = self.exchange(cmd, 1)?;
        Ok(replies.pop().unwrap_or(Value::Nil))
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut replies = self.exchange(cmd, offset + count)?;
        // The replies before `offset` (a transaction's MULTI and QUEUED) only matter as errors.
        for skipped in replies.drain(..offset) {
            if let Value::ServerError(error) = skipped {
                return Err(error.into());
            }
        }
        Ok(replies)
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}
