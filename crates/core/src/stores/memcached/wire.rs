//! The pipelined protocol (`WireStore`): each common operation as one meta request.

use crate::stores::{LoadResult, StoreResult};
use std::time::Duration;

use super::keys::{exptime, server_index};
use super::MemcachedStore;
use crate::stores::{within_limit, Endpoint, Request, SaveMode, WireStore};
use crate::wire::meta::{self, SetMode};
use crate::wire::{Dialect, Reply};

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

    fn handshake_reply(&self, _replies: Vec<Reply>) -> StoreResult<()> {
        Ok(())
    }

    fn load(&self, session_id: &str, ttl: Option<Duration>) -> Request {
        let key = self.key(session_id);
        let touch = ttl.map(|ttl| exptime(Some(ttl), crate::time::now()));
        self.request(&key, meta::get(&key, touch))
    }

    fn load_reply(&self, session_id: &str, replies: Vec<Reply>, max_bytes: usize) -> LoadResult {
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
        &self, session_id: &str, blob: &[u8], ttl: Option<Duration>, mode: SaveMode,
    ) -> Request {
        let key = self.key(session_id);
        let mode = match mode {
            SaveMode::Always => SetMode::Always,
            SaveMode::IfExists => SetMode::Replace,
        };
        self.request(
            &key,
            meta::set(&key, blob, exptime(ttl, crate::time::now()), mode),
        )
    }

    fn save_reply(&self, session_id: &str, replies: Vec<Reply>) -> StoreResult<bool> {
        let reply = self.only_reply(session_id, "ms", replies)?;
        self.stored(session_id, &reply)
    }

    fn delete(&self, session_id: &str) -> Request {
        let key = self.key(session_id);
        self.request(&key, meta::delete(&key))
    }

    fn delete_reply(&self, session_id: &str, replies: Vec<Reply>) -> StoreResult<bool> {
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
    pub(super) fn run(
        &self, session_id: &str, request: &Request, max_value: usize,
    ) -> StoreResult<Vec<Reply>> {
        let key = self.key(session_id);
        Ok(vec![self.call(
            session_id,
            &key,
            &request.bytes,
            max_value,
        )?])
    }
}

impl MemcachedStore {
    /// A request of one command about `key`, to the server `key` lives on.
    fn request(&self, key: &str, bytes: Vec<u8>) -> Request {
        Request {
            server: server_index(key, self.endpoints.len()),
            bytes,
            replies: 1,
        }
    }
}
