//! The store: its servers' pools, and one call (a request, its reply) on them.

use crate::stores::StoreResult;
use std::io;

use super::connection::MetaConnection;
use super::keys::server_index;
use super::options::{check_prefix, endpoint};
use super::{MemcachedOptions, MAX_COUNTER_LEN};
use crate::stores::blocking::CallError;
use crate::stores::pool::IdleConnections;
use crate::stores::{quoted_list, Endpoint, StoreError, StoreErrorKind};
use crate::wire::meta;
use crate::wire::Reply;

pub struct MemcachedStore {
    /// Each server's idle connections, in the order of `endpoints`.
    pub(super) pools: Vec<IdleConnections<MetaConnection>>,
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) servers: Vec<String>,
    pub(super) options: MemcachedOptions,
    /// The server each id of the last listing was found on (see `listing`): empty in an app.
    pub(super) listed_on: parking_lot::Mutex<std::collections::HashMap<String, usize>>,
}

impl MemcachedStore {
    /// Checks the servers and options; connects only when first used.
    pub fn new(servers: &[String], options: MemcachedOptions) -> StoreResult<Self> {
        let describe = format!("MemcachedStore({})", quoted_list(servers));
        let fail = |cause: String| StoreError::not_made(&describe, cause);
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
            listed_on: Default::default(),
        })
    }

    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    pub fn options(&self) -> &MemcachedOptions {
        &self.options
    }

    pub(super) fn key(&self, session_id: &str) -> String {
        format!("{}{session_id}", self.options.prefix)
    }

    /// The key of a user's generation counter: no session id is 5 characters shorter.
    pub(super) fn generation_key(&self, user_key: &str) -> String {
        format!("{}gen:{user_key}", self.options.prefix)
    }

    /// A connection to `key`'s server that the server has not hung up on meanwhile: an idle
    /// one, else a new one made here.
    pub(super) fn connection(&self, server: usize, command: &str) -> StoreResult<MetaConnection> {
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
    pub(super) fn call(
        &self, session_id: &str, key: &str, request: &[u8], max_value: usize,
    ) -> StoreResult<Reply> {
        let server = server_index(key, self.pools.len());
        self.call_on(server, session_id, request, max_value)
    }

    /// `call`, on the server at index `server` of the store's.
    pub(super) fn call_on(
        &self, server: usize, session_id: &str, request: &[u8], max_value: usize,
    ) -> StoreResult<Reply> {
        let command = std::str::from_utf8(&request[..2]).unwrap_or("request");
        let mut connection = self
            .connection(server, command)
            .map_err(|e| e.without_id(session_id))?;
        let result = connection.call(request, max_value);
        if !connection.is_broken() {
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
    pub(super) fn unexpected(&self, session_id: &str, command: &str, reply: &Reply) -> StoreError {
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
    pub(super) fn only_reply(
        &self, session_id: &str, command: &str, replies: Vec<Reply>,
    ) -> StoreResult<Reply> {
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
    pub(super) fn increment(&self, key: &str) -> StoreResult<Option<u64>> {
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
    pub(super) fn stored(&self, session_id: &str, reply: &Reply) -> StoreResult<bool> {
        match reply {
            Reply::Meta {
                code: [b'H', b'D'], ..
            } => Ok(true),
            Reply::Meta { code, .. } if [b"NS", b"EX", b"NF"].contains(&code) => Ok(false),
            reply => Err(self.unexpected(session_id, "ms", reply)),
        }
    }
}

pub(super) fn parse_counter(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}
