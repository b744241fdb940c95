//! The tagged blocking connection of one server (or one sentinel).

use redis::{Client, Connection, ConnectionLike, RedisResult};

use super::deadline::DeadlineConnection;
use super::RedisOptions;

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
pub(super) struct BlockingConnection {
    transport: BlockingTransport,
    /// The next request's tag.
    next_tag: u64,
    /// Set when a tag did not match: the connection is out of step for good.
    out_of_step: bool,
    /// Whether requests are tagged: not to a Sentinel, which has no `ECHO` (and whose one-shot
    /// connection is never pooled, so no reply can be left on it for another request).
    tagged: bool,
}

pub(super) enum BlockingTransport {
    Deadline(DeadlineConnection),
    Crate(Connection),
}

/// What the blocking connections' tags start with (the pipelined ones use `~ts:`).
pub(super) const BLOCKING_TAG: &str = "~tb:";

impl BlockingConnection {
    pub(super) fn new(transport: BlockingTransport) -> Self {
        Self {
            transport,
            next_tag: 0,
            out_of_step: false,
            tagged: true,
        }
    }

    pub(super) fn untagged(self) -> Self {
        Self {
            tagged: false,
            ..self
        }
    }

    pub(super) fn exchange(
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
pub(super) fn looks_like_a_tag(value: &redis::Value) -> bool {
    matches!(value, redis::Value::BulkString(b) if b.starts_with(BLOCKING_TAG.as_bytes()))
}

pub(super) fn out_of_step_error(cause: &'static str) -> redis::RedisError {
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
pub(super) fn connect(client: &Client, options: &RedisOptions) -> RedisResult<BlockingConnection> {
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
