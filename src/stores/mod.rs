//! Where sessions live. Every store keeps opaque blobs (see `codec`) under a validated session id.

use std::time::Duration;

mod file;
pub mod memcached;
mod memory;
pub mod redis;
pub mod sqlite;

pub use file::FileStore;
pub use memcached::{MemcachedOptions, MemcachedStore};
pub use memory::MemoryStore;
pub use redis::{
    RedisClusterStore, RedisOptions, RedisSentinelStore, RedisStore, SentinelMasterOptions,
    TlsFiles,
};
pub use sqlite::SqliteStore;

/// What kind of failure a [`StoreError`] is, which decides what the caller does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store as a whole failed (unreachable, refused, timed out): the request must fail,
    /// since carrying on with an empty session would later overwrite the real one.
    Unavailable,
    /// One record exists but cannot be read: that session is lost, the store is fine.
    UnreadableRecord,
    /// A conditional save found another writer's record: nothing was written.
    Conflict,
}

/// A store failed to do what was asked; the message names the store and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{store}: {cause}")]
pub struct StoreError {
    /// Which store, as [`SessionStore::describe`] says it.
    pub store: String,
    /// What went wrong, in words.
    pub cause: String,
    pub kind: StoreErrorKind,
}

impl StoreError {
    pub fn new(store: &dyn SessionStore, cause: impl std::fmt::Display) -> Self {
        Self {
            store: store.describe(),
            cause: cause.to_string(),
            kind: StoreErrorKind::Unavailable,
        }
    }

    pub fn conflict(store: &dyn SessionStore, session_id: &str) -> Self {
        Self {
            kind: StoreErrorKind::Conflict,
            ..Self::new(
                store,
                format!("session {session_id} was saved by another request since it was loaded"),
            )
        }
    }

    pub fn unreadable_record(store: &dyn SessionStore, cause: impl std::fmt::Display) -> Self {
        Self {
            kind: StoreErrorKind::UnreadableRecord,
            ..Self::new(store, cause)
        }
    }
}

/// The one interface every store implements.
///
/// Ids reaching a store have already been validated (`ids::is_valid_session_id`).
pub trait SessionStore: Send + Sync {
    /// The stored blob, or `None` when there is no record for `session_id`.
    fn load(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the record for `session_id` with `blob`, all or nothing. `ttl` is how long the
    /// record may live unused; stores that expire records themselves (Redis, Memcached) use it.
    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> Result<(), StoreError>;
    /// Replaces the record only if it still is `expected` (`None`: only if there is none), all
    /// or nothing; `Ok(false)`, writing nothing, when another writer got there first.
    fn save_if_unchanged(
        &self,
        session_id: &str,
        expected: Option<&[u8]>,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError>;
    /// Removes the record; removing a missing record is not an error.
    fn delete(&self, session_id: &str) -> Result<(), StoreError>;
    /// Moves the record's expiry to `ttl` from now without rewriting it (a missing record stays
    /// missing): how an active session is kept alive without a write.
    fn touch(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError>;
    /// Loads the record and, when there is one, moves its expiry to `ttl` from now; stores that
    /// can do both in one round trip override this. A record idle for longer than its time to
    /// live is never returned.
    fn load_touching(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let blob = self.load(session_id)?;
        if blob.is_some() {
            self.touch(session_id, ttl)?;
        }
        Ok(blob)
    }
    /// A short human name, used in error messages: `FileStore('/srv/sessions')`.
    fn describe(&self) -> String;
    /// Whether calls may block on I/O (so callers release the GIL around them).
    fn blocks(&self) -> bool {
        true
    }
}
