//! The pipelined request model: a session operation as one request (the bytes to send to one
//! of a store's servers and how many replies answer them) and its replies read back into the
//! same results as the blocking [`SessionStore`](super::SessionStore) methods. Redis and
//! memcached implement [`WireStore`]; the binding crate's asyncio connections drive it.

use std::time::Duration;

use super::StoreError;
use crate::wire::{Dialect, Reply};

/// Where one server of a store listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// What to send for one session operation: to which of the store's servers (an index into
/// [`WireStore::endpoints`]), the bytes, and how many replies answer them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub server: usize,
    pub bytes: Vec<u8>,
    pub replies: usize,
}

/// How a save writes, as the session lifecycle's `WriteMode` asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveMode {
    /// Whatever is there (a new session's first write).
    Always,
    /// Only if a record exists (a loaded session: never resurrect one ended meanwhile).
    IfExists,
}

/// A store that can run the session cycle's common operations over a pipelined connection:
/// each is one request, and `*_reply` reads its replies into the same results as the blocking
/// `SessionStore` methods (the same errors, the same scrubbing of ids).
pub trait WireStore: Send + Sync {
    fn dialect(&self) -> Dialect;
    /// Every server, in the order [`Request::server`] indexes.
    fn endpoints(&self) -> &[Endpoint];
    /// What a new connection sends first (AUTH, SELECT), with its reply count; `None` when
    /// nothing is needed.
    fn handshake(&self) -> Option<Request>;
    /// Reads the handshake's replies: `Err` when the server refused it.
    fn handshake_reply(&self, replies: Vec<Reply>) -> Result<(), StoreError>;
    /// Loads the record, moving its expiry to `ttl` from now when there is one (as
    /// `load_touching` / `load` do).
    fn load(&self, session_id: &str, ttl: Option<Duration>) -> Request;
    fn load_reply(
        &self,
        session_id: &str,
        replies: Vec<Reply>,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>, mode: SaveMode)
        -> Request;
    /// Whether it was written (`false`: `IfExists` found no record).
    fn save_reply(&self, session_id: &str, replies: Vec<Reply>) -> Result<bool, StoreError>;
    fn delete(&self, session_id: &str) -> Request;
    /// Whether there was a record.
    fn delete_reply(&self, session_id: &str, replies: Vec<Reply>) -> Result<bool, StoreError>;
    /// How long a request may wait for its replies, and for a connection to be made.
    fn timeouts(&self) -> (Duration, Duration);
}
