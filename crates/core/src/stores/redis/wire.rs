//! The pipelined protocol of one Redis server (`WireStore`): the same commands as the blocking
//! path, and replies read into the same results.

use crate::stores::{LoadResult, StoreResult};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, ProtocolVersion, RedisConnectionInfo, RedisError};

use super::commands::{del_command, get_command, get_touching_command, set_command};
use super::RedisStore;
use crate::stores::{within_limit, Endpoint, Request, SaveMode, StoreError};
use crate::wire::{Dialect, Reply};

/// A plain-TCP server as the pipelined connections reach it, read from the URL by the redis
/// crate's own parser so host, port, user, password and db mean what they mean to the blocking
/// client.
pub(super) struct WireTarget {
    endpoints: [Endpoint; 1],
    login: RedisConnectionInfo,
}

impl WireTarget {
    /// `None` for what those connections do not speak: TLS (`rediss://`), unix sockets, and
    /// RESP3 (`?protocol=3`; they parse RESP2 only). Those stay on the blocking client.
    pub(super) fn of(info: &ConnectionInfo) -> Option<Self> {
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
pub(super) fn only_reply(replies: Vec<Reply>) -> Option<Reply> {
    let mut replies = replies.into_iter();
    match (replies.next(), replies.next()) {
        (Some(reply), None) => Some(reply),
        _ => None,
    }
}

/// A server's error reply worded as the blocking client words it (`WRONGTYPE: Operation ...`),
/// so both paths log the same text.
pub(super) fn server_error_text(message: &str) -> String {
    match redis::parse_redis_value(format!("-{message}\r\n").as_bytes()) {
        Ok(redis::Value::ServerError(error)) => RedisError::from(error).to_string(),
        _ => message.to_owned(),
    }
}

impl RedisStore {
    /// What a reply that is not the expected one means: the server's own error, or an answer
    /// no Redis gives to the command sent. Either way the store, not the record, failed, as on
    /// the blocking path.
    pub(super) fn unexpected(&self, reply: Option<Reply>, expected: &str) -> StoreError {
        let cause = match reply {
            Some(Reply::Error(message)) => server_error_text(&message),
            Some(other) => format!("the server answered {} to {expected}", shape(&other)),
            None => format!("the server did not answer {expected} with one reply"),
        };
        StoreError::new(self, cause)
    }
}

/// What kind of reply, without its contents (they may hold a session's data).
pub(super) fn shape(reply: &Reply) -> &'static str {
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

    fn handshake_reply(&self, replies: Vec<Reply>) -> StoreResult<()> {
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
        one_command(&command)
    }

    fn load_reply(&self, session_id: &str, replies: Vec<Reply>, max_bytes: usize) -> LoadResult {
        match only_reply(replies) {
            Some(Reply::Bulk(blob)) => within_limit(self, session_id, blob, max_bytes),
            other => Err(self.unexpected(other, "GET")),
        }
        .map_err(|e| e.without_id(session_id))
    }

    fn save(
        &self, session_id: &str, blob: &[u8], ttl: Option<Duration>, mode: SaveMode,
    ) -> Request {
        let only_existing = mode == SaveMode::IfExists;
        let command = set_command(&self.options.prefix, session_id, blob, ttl, only_existing);
        one_command(&command)
    }

    fn save_reply(&self, session_id: &str, replies: Vec<Reply>) -> StoreResult<bool> {
        match only_reply(replies) {
            Some(Reply::Status(ok)) if ok == "OK" => Ok(true),
            // `XX` found no key.
            Some(Reply::Bulk(None)) => Ok(false),
            other => Err(self.unexpected(other, "SET").without_id(session_id)),
        }
    }

    fn delete(&self, session_id: &str) -> Request {
        one_command(&del_command(&self.options.prefix, session_id))
    }

    fn delete_reply(&self, session_id: &str, replies: Vec<Reply>) -> StoreResult<bool> {
        match only_reply(replies) {
            Some(Reply::Int(removed)) => Ok(removed > 0),
            other => Err(self.unexpected(other, "DEL").without_id(session_id)),
        }
    }

    fn timeouts(&self) -> (Duration, Duration) {
        (self.options.timeout, self.options.connect_timeout)
    }
}

/// A request of one command to the one server.
fn one_command(command: &redis::Cmd) -> Request {
    Request {
        server: 0,
        bytes: command.get_packed_command(),
        replies: 1,
    }
}
