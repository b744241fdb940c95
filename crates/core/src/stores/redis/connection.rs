//! The tagged blocking connection of one server (or one sentinel).

use redis::{Client, Connection, ConnectionInfo, ConnectionLike, RedisResult, Value};

use super::deadline::DeadlineConnection;
use super::RedisOptions;
use crate::wire::{self, Dialect, Reply, TagCheck};

/// The message of a request whose replies were out of step.
const OUT_OF_STEP: &str = "a reply is not the answer to its request (lost, doubled or left \
                           over on the way); the connection is dropped";

/// A blocking connection to one server: the stores' blocking driver where `DeadlineConnection`
/// speaks the server's transport (TCP, unix sockets: one deadline per request), else the crate's
/// own, whose timeout bounds each read (TLS, RESP3).
///
/// Every request is tagged, as the pipelined connections' are (`crate::wire::resp`): an
/// `ECHO <tag>` follows its commands, and its replies are used only when the last one is that
/// tag. RESP answers in order and says nothing of which request a reply is for, so a reply lost,
/// doubled or left over (a faulty proxy; redis-py's CVE-2023-28858) would otherwise answer the
/// next request on this connection, another visitor's load among them; a wrong tag closes the
/// connection instead (the pool drops it), and the request fails.
pub(super) enum BlockingConnection {
    /// Tagged by the driver itself.
    Deadline(DeadlineConnection),
    /// Tagged here, with the same tags and the same check (`crate::wire`).
    Crate(TaggedConnection),
}

pub(super) struct TaggedConnection {
    connection: Connection,
    /// The next request's tag.
    next_tag: u64,
    /// Set when a tag did not match: the connection is out of step for good.
    out_of_step: bool,
    /// Whether requests are tagged: not to a Sentinel, which has no `ECHO`.
    tagged: bool,
}

impl BlockingConnection {
    /// The same connection, its requests untagged: to a Sentinel, which has no `ECHO` (and
    /// whose one-shot connection is never pooled, so no reply can be left on it for another).
    pub(super) fn untagged(self) -> Self {
        match self {
            Self::Deadline(c) => Self::Deadline(c.untagged()),
            Self::Crate(c) => Self::Crate(TaggedConnection { tagged: false, ..c }),
        }
    }

    fn exchange(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Self::Deadline(c) => skip_replies(c.exchange(cmd, offset + count)?, offset),
            Self::Crate(c) => c.exchange(cmd, offset, count),
        }
    }
}

impl TaggedConnection {
    fn exchange(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        if self.out_of_step {
            return Err(out_of_step_error("the connection is out of step"));
        }
        if !self.tagged {
            return self.connection.req_packed_commands(cmd, offset, count);
        }
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        let mut bytes = Vec::with_capacity(cmd.len() + 32);
        wire::write_tagged(Dialect::Resp, cmd, tag, &mut bytes);
        let mut replies = self
            .connection
            .req_packed_commands(&bytes, offset, count + 1)?;
        let mut seen: Vec<Reply> = replies.iter().map(as_reply).collect();
        if replies.len() != count + 1
            || wire::check_tag(Dialect::Resp, tag, &mut seen) != TagCheck::InStep
        {
            self.out_of_step = true;
            return Err(out_of_step_error(OUT_OF_STEP));
        }
        replies.pop();
        Ok(replies)
    }
}

/// A value as far as the tag check reads it: bulk strings (where tags are) as they are, errors
/// as errors, anything else as what no tag is.
fn as_reply(value: &Value) -> Reply {
    match value {
        Value::BulkString(bytes) => Reply::Bulk(Some(bytes.clone())),
        Value::ServerError(_) => Reply::Error(String::new()),
        _ => Reply::Int(0),
    }
}

/// The replies after the first `offset` (a transaction's MULTI and QUEUED), which only matter
/// as errors.
fn skip_replies(mut replies: Vec<Value>, offset: usize) -> RedisResult<Vec<Value>> {
    for skipped in replies.drain(..offset.min(replies.len())) {
        if let Value::ServerError(error) = skipped {
            return Err(error.into());
        }
    }
    Ok(replies)
}

/// The one reply of a single command, a server's error reply as an error.
fn only_value(mut replies: Vec<Value>) -> RedisResult<Value> {
    match replies.pop() {
        Some(Value::ServerError(error)) => Err(error.into()),
        Some(value) => Ok(value),
        None => Ok(Value::Nil),
    }
}

pub(super) fn out_of_step_error(cause: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::IoError, "out of step", cause.to_owned()))
}

/// The error of a request on the driver's connections whose replies were out of step, with what
/// they held instead of the request's tag.
pub(super) fn out_of_step_because(why: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::IoError,
        "out of step",
        format!("{OUT_OF_STEP}: {why}"),
    ))
}

impl ConnectionLike for BlockingConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        only_value(self.exchange(cmd, 0, 1)?)
    }

    fn req_packed_commands(
        &mut self, cmd: &[u8], offset: usize, count: usize,
    ) -> RedisResult<Vec<Value>> {
        self.exchange(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Deadline(c) => c.db(),
            Self::Crate(c) => c.connection.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Deadline(c) => c.is_open(),
            Self::Crate(c) => !c.out_of_step && c.connection.is_open(),
        }
    }
}

/// A connection to one server, with the options' timeouts.
pub(super) fn connect(client: &Client, options: &RedisOptions) -> RedisResult<BlockingConnection> {
    let info = client.get_connection_info();
    if DeadlineConnection::speaks(info) {
        let mut connection =
            BlockingConnection::Deadline(DeadlineConnection::open(info, options.connect_timeout)?);
        log_in(&mut connection, info)?;
        if let BlockingConnection::Deadline(c) = &mut connection {
            c.start_tagging(options.timeout);
        }
        return Ok(connection);
    }
    let connection = client.get_connection_with_timeout(options.connect_timeout)?;
    connection.set_read_timeout(Some(options.timeout))?;
    connection.set_write_timeout(Some(options.timeout))?;
    Ok(BlockingConnection::Crate(TaggedConnection {
        connection,
        next_tag: 0,
        out_of_step: false,
        tagged: true,
    }))
}

/// Logs in (`AUTH`, `SELECT`) as the crate's client does; its informational `CLIENT SETINFO` is
/// left out.
fn log_in(connection: &mut BlockingConnection, info: &ConnectionInfo) -> RedisResult<()> {
    if let Some(password) = &info.redis.password {
        let mut auth = redis::cmd("AUTH");
        if let Some(username) = &info.redis.username {
            auth.arg(username);
        }
        auth.arg(password).query::<()>(connection)?;
    }
    if info.redis.db != 0 {
        redis::cmd("SELECT")
            .arg(info.redis.db)
            .query::<()>(connection)?;
    }
    Ok(())
}
