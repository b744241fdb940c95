//! A blocking connection to one Redis server on the stores' one blocking driver
//! (`stores::blocking`): every request, written and answered, has one deadline and (once logged
//! in) a tag, and replies are parsed by `crate::wire::resp`. The redis crate's commands run on it
//! through `ConnectionLike`. It speaks RESP2 over TCP or a unix socket; TLS and RESP3 stay on the
//! crate's connections (see `connection`).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use redis::{
    ConnectionAddr, ConnectionInfo, ConnectionLike, ProtocolVersion, RedisError, RedisResult, Value,
};

use super::connection::{only_value, out_of_step};
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

    /// Connects and logs in (`AUTH`, `SELECT`) within `connect_timeout`, as the crate's client
    /// does; its informational `CLIENT SETINFO` is left out.
    pub fn connect(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let stream = match &info.addr {
            ConnectionAddr::Tcp(host, port) => {
                AnyStream::Tcp(blocking::connect_tcp(host, *port, connect_timeout)?)
            }
            ConnectionAddr::Unix(path) => AnyStream::Unix(UnixStream::connect(path)?),
            _ => {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "only TCP and unix sockets without TLS",
                )))
            }
        };
        let mut connection = Self {
            driver: Connection::new(stream, Dialect::Resp, connect_timeout),
            db: info.redis.db,
            tagged: false,
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
        connection.driver.set_timeout(timeout);
        connection.tagged = true;
        Ok(connection)
    }

    /// The same connection, its requests untagged (to a Sentinel).
    pub fn untagged(self) -> Self {
        Self {
            tagged: false,
            ..self
        }
    }

    /// Writes `bytes` and reads `count` replies, all before one deadline.
    fn exchange(&mut self, bytes: &[u8], count: usize) -> RedisResult<Vec<Value>> {
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
        CallError::OutOfStep(_) => out_of_step(),
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

impl ConnectionLike for DeadlineConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        only_value(self.exchange(cmd, 1)?)
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
        !self.driver.is_broken()
    }
}
