//! A blocking connection to one Redis server on the stores' one blocking driver
//! (`stores::blocking`): every request, written and answered, has one deadline and (once logged
//! in) a tag, and replies are parsed by `crate::wire::resp`. The redis crate's commands run on it
//! through `connection::BlockingConnection`. It speaks RESP2 over TCP or a unix socket; TLS and RESP3 stay on the
//! crate's connections (see `connection`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisError, RedisResult, Value};

use super::connection::out_of_step_because;
use crate::stores::blocking::{self, CallError, Connection};
use crate::wire::{Dialect, Reply};

enum AnyStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for AnyStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            AnyStream::Tcp(s) => s.read(buf),
            AnyStream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for AnyStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            AnyStream::Tcp(s) => s.write(buf),
            AnyStream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl blocking::Stream for AnyStream {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            AnyStream::Tcp(s) => s.set_read_timeout(Some(timeout)),
            AnyStream::Unix(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        match self {
            AnyStream::Tcp(s) => s.set_write_timeout(Some(timeout)),
            AnyStream::Unix(s) => s.set_write_timeout(Some(timeout)),
        }
    }
}

/// One connection; any failure (a timeout, replies out of step) closes it for good, so a late
/// reply is never read as the answer to the next request.
pub struct DeadlineConnection {
    driver: Connection<AnyStream>,
    db: i64,
    /// Whether requests are tagged: from the login on, except to a Sentinel, which has no `ECHO`
    /// (and whose one-shot connection is never pooled, so no reply can be left on it).
    tagged: bool,
}

impl DeadlineConnection {
    /// Whether this connection can reach the server `info` names (else the crate's one does).
    pub fn speaks(info: &ConnectionInfo) -> bool {
        info.redis.protocol == ProtocolVersion::RESP2
            && matches!(info.addr, ConnectionAddr::Tcp(..) | ConnectionAddr::Unix(_))
    }

    /// Connects within `connect_timeout`, untagged until [`Self::start_tagging`]: the login
    /// (`connection::connect`) comes first, before the server would answer an `ECHO`.
    pub fn open(info: &ConnectionInfo, connect_timeout: Duration) -> RedisResult<Self> {
        let stream = match &info.addr {
            ConnectionAddr::Tcp(host, port) => {
                AnyStream::Tcp(blocking::connect_tcp(host, *port, connect_timeout)?)
            }
            ConnectionAddr::Unix(path) => {
                AnyStream::Unix(blocking::connect_unix(path, connect_timeout)?)
            }
            _ => {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "only TCP and unix sockets without TLS",
                )))
            }
        };
        Ok(Self {
            driver: Connection::new(stream, Dialect::Resp, connect_timeout),
            db: info.redis.db,
            tagged: false,
        })
    }

    /// Tags every request from now on, each within `timeout`.
    pub fn start_tagging(&mut self, timeout: Duration) {
        self.driver.set_timeout(timeout);
        self.tagged = true;
    }

    /// The same connection, its requests untagged (to a Sentinel).
    pub fn untagged(self) -> Self {
        Self {
            tagged: false,
            ..self
        }
    }

    pub fn db(&self) -> i64 {
        self.db
    }

    pub fn is_open(&self) -> bool {
        !self.driver.is_broken()
    }

    /// Writes `bytes` and reads `count` replies, all before one deadline.
    pub fn exchange(&mut self, bytes: &[u8], count: usize) -> RedisResult<Vec<Value>> {
        let replies = if self.tagged {
            self.driver.call(bytes, count, usize::MAX)
        } else {
            self.driver.call_untagged(bytes, count)
        };
        replies
            .map_err(|e| redis_error(e, self.driver.timeout()))?
            .into_iter()
            .map(to_value)
            .collect()
    }
}

/// The driver's failure as the redis crate's error: I/O errors stay I/O errors (so a pool can
/// tell a stale connection), a passed deadline a timeout.
fn redis_error(error: CallError, timeout: Duration) -> RedisError {
    match error {
        CallError::Io(e) => e.into(),
        CallError::NoReply(_) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no whole reply within {timeout:?}"),
        )
        .into(),
        // The reason says what came instead of the tag: a NOAUTH for a forgotten password
        // reads very differently from a lost reply.
        CallError::OutOfStep(why) => out_of_step_because(&why),
        other @ (CallError::Protocol(_) | CallError::Oversized(_)) => RedisError::from((
            redis::ErrorKind::ParseError,
            "the reply does not parse",
            other.to_string(),
        )),
    }
}

/// A reply as the redis crate's value, which its commands convert from.
fn to_value(reply: Reply) -> RedisResult<Value> {
    Ok(match reply {
        Reply::Bulk(Some(bytes)) => Value::BulkString(bytes),
        Reply::Bulk(None) | Reply::Array(None) => Value::Nil,
        Reply::Int(n) => Value::Int(n),
        Reply::Status(status) if status == "OK" => Value::Okay,
        Reply::Status(status) => Value::SimpleString(status),
        Reply::Error(message) => redis::parse_redis_value(format!("-{message}\r\n").as_bytes())?,
        Reply::Array(Some(items)) => Value::Array(
            items
                .into_iter()
                .map(to_value)
                .collect::<RedisResult<_>>()?,
        ),
        Reply::Meta { .. } => {
            return Err(RedisError::from((
                redis::ErrorKind::ParseError,
                "a memcached reply from a Redis server",
            )))
        }
    })
}
