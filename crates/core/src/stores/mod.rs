//! Where sessions live. Every store keeps opaque blobs (see `codec`) under a validated session id.

use std::time::Duration;

use crate::ids;

mod blocking;
mod capabilities;
mod cookie;
mod file;
mod listing;
pub mod memcached;
mod memory;
pub mod pipelined;
mod pool;
pub mod redis;
pub mod reply_queue;
pub mod sqlite;

pub use capabilities::{Revocation, UserIndex};
pub use cookie::{without_revocation_store, CookieStore};
pub use file::FileStore;
pub use listing::{ListedRecord, Listing, TimeLeft, LISTABLE_STORES};
pub use memcached::{MemcachedOptions, MemcachedStore};
pub use memory::MemoryStore;
pub use pipelined::{Endpoint, Request, SaveMode, WireStore};
pub use redis::{
    RedisClusterStore, RedisOptions, RedisSentinelStore, RedisStore, SentinelMasterOptions,
    TlsFiles,
};
pub use sqlite::SqliteStore;

/// The largest record a load returns unless told otherwise: far above any sane session (they
/// hold ids and flags, not files), and small enough that a planted or runaway record cannot make
/// every request that names it allocate and parse megabytes.
pub const DEFAULT_MAX_READ_SIZE: usize = 1 << 20;

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
    /// The record is larger than the load's byte limit: it was not read (where the store allows,
    /// not even fetched), and the caller treats that session as lost, like an unreadable one.
    OversizedRecord,
    /// The store cannot do this at all (a per-user index on a store without one).
    Unsupported,
    /// The store answered a request with what belongs to another: a record bound to another
    /// session id, or a reply that is not the answer to this request (a lost or duplicated
    /// reply put the connection out of step). Nothing of it is used; the request fails, and the
    /// connection it came over is replaced.
    Crossed,
}

/// The stores that can list a user's sessions, for the messages of those that cannot.
pub const LISTING_STORES: &str =
    "MemoryStore, FileStore, SqliteStore, RedisStore, RedisClusterStore, RedisSentinelStore, \
     or a Python store with add_to_user/remove_from_user/user_keys";

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

    /// Another writer got there first. The id appears as its log token only: messages end up
    /// in logs, and a logged id is a usable session cookie.
    pub fn conflict(store: &dyn SessionStore, session_id: &str) -> Self {
        Self {
            kind: StoreErrorKind::Conflict,
            ..Self::new(
                store,
                format!(
                    "session {} was saved by another request since it was loaded",
                    ids::log_token(session_id)
                ),
            )
        }
    }

    /// The record of `session_id` holds `size` bytes (at least), more than `limit`.
    pub fn oversized(store: &dyn SessionStore, session_id: &str, size: u64, limit: usize) -> Self {
        Self {
            kind: StoreErrorKind::OversizedRecord,
            ..Self::new(
                store,
                format!(
                    "the record of session {} holds {size} bytes, more than the {limit} a load \
                     reads",
                    ids::log_token(session_id)
                ),
            )
        }
    }

    /// The same error with every occurrence of `session_id` in it replaced by its log token: a
    /// last line of defence for causes we do not word ourselves (a driver's or a Python store's
    /// message quoting the key).
    pub fn without_id(mut self, session_id: &str) -> Self {
        if !session_id.is_empty() {
            let token = ids::log_token(session_id);
            self.cause = self.cause.replace(session_id, &token);
            self.store = self.store.replace(session_id, &token);
        }
        self
    }

    /// The store has no per-user index; `what` says what was asked of it.
    pub fn unsupported(store: String, what: &str) -> Self {
        Self {
            store,
            cause: format!("{what} needs a store that lists a user's sessions: {LISTING_STORES}"),
            kind: StoreErrorKind::Unsupported,
        }
    }

    /// A store that could not be made, as `describe` would have named it: the options or
    /// addresses it was given are wrong.
    pub(crate) fn not_made(describe: &str, cause: String) -> Self {
        Self {
            store: describe.to_owned(),
            cause,
            kind: StoreErrorKind::Unavailable,
        }
    }

    pub fn unreadable_record(store: &dyn SessionStore, cause: impl std::fmt::Display) -> Self {
        Self {
            kind: StoreErrorKind::UnreadableRecord,
            ..Self::new(store, cause)
        }
    }
}

/// What a store operation returns.
pub type StoreResult<T> = Result<T, StoreError>;
/// What a load returns: the record's bytes, or `None` when there is none.
pub type LoadResult = StoreResult<Option<Vec<u8>>>;

/// The one interface every store implements.
///
/// Ids reaching a store have already been validated (`ids::is_valid_session_id`). No error a
/// store returns names an id: they reach logs, so they carry `ids::log_token(id)` instead.
pub trait SessionStore: Send + Sync {
    /// The stored blob, or `None` when there is no record for `session_id`; an
    /// `OversizedRecord` error when it holds more than `max_bytes` bytes.
    fn load(&self, session_id: &str, max_bytes: usize) -> LoadResult;
    /// Replaces the record for `session_id` with `blob`, all or nothing. `ttl` is how long the
    /// record may live unused; stores that expire records themselves (Redis, Memcached) use it.
    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> StoreResult<()>;
    /// Replaces the record only if it still is `expected` (`None`: only if there is none), all
    /// or nothing; `Ok(false)`, writing nothing, when another writer got there first.
    fn save_if_unchanged(
        &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool>;
    /// Replaces the record only if one exists for `session_id`, all or nothing; `Ok(false)`,
    /// writing nothing, when there is none. A save of a session loaded from the store uses it, so
    /// it never resurrects a record another request destroyed or regenerated meanwhile.
    fn save_if_exists(
        &self, session_id: &str, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool>;
    /// Removes the record; removing a missing record is not an error. Returns whether there was
    /// a live record to remove, decided atomically with the removal where the store can: what
    /// lets `regenerate()` tell that another request ended the session first.
    fn delete(&self, session_id: &str) -> StoreResult<bool>;
    /// Moves the record's expiry to `ttl` from now without rewriting it (a missing record stays
    /// missing): how an active session is kept alive without a write.
    fn touch(&self, session_id: &str, ttl: Duration) -> StoreResult<()>;
    /// Loads the record and, when there is one, moves its expiry to `ttl` from now; stores that
    /// can do both in one round trip override this. A record idle for longer than its time to
    /// live is never returned.
    fn load_touching(&self, session_id: &str, ttl: Duration, max_bytes: usize) -> LoadResult {
        let blob = self.load(session_id, max_bytes)?;
        if blob.is_some() {
            self.touch(session_id, ttl)?;
        }
        Ok(blob)
    }
    /// Loads the record, moving its expiry to what the record itself asks for: `ttl_of(blob)`
    /// when the session has its own idle timeout, else `ttl` (the manager's). Stores that check
    /// idleness as they read (FileStore) override it to check against the record's own.
    fn load_refreshing(
        &self, session_id: &str, ttl: Option<Duration>, ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
        max_bytes: usize,
    ) -> LoadResult {
        let blob = match ttl {
            Some(ttl) => self.load_touching(session_id, ttl, max_bytes)?,
            None => self.load(session_id, max_bytes)?,
        };
        if let Some(own) = blob
            .as_deref()
            .and_then(ttl_of)
            .filter(|own| Some(*own) != ttl)
        {
            self.touch(session_id, own)?;
        }
        Ok(blob)
    }

    /// The store's per-user index, when it keeps one (see `capabilities`).
    fn user_index(&self) -> Option<&dyn UserIndex> {
        None
    }
    /// How the store lists every record it holds, when it can (see `listing`).
    fn listing(&self) -> Option<&dyn Listing> {
        None
    }
    /// How the store ends a user's sessions when it keeps no index (see `capabilities`).
    fn revocation(&self) -> Option<&dyn Revocation> {
        None
    }
    /// Whether this store ends a user's sessions by generation rather than through an index.
    fn revokes_by_generation(&self) -> bool {
        self.revocation().is_some()
    }
    /// The largest record the store takes, when it has a limit of its own (memcached's item
    /// size): the manager's `max_size` is held below it, so no save is sent that the server
    /// would refuse (memcached drops the key's old value when it refuses a set as too large).
    fn max_record_size(&self) -> Option<usize> {
        None
    }
    /// Whether sessions live sealed in their cookies rather than here (`CookieStore`): the
    /// engine then reads a load's record from the cookie and sends a save's in it.
    fn keeps_sessions_in_cookies(&self) -> bool {
        false
    }
    /// What converts the original module's pickles found here, when converting would help
    /// (a FileStore's folder, memcached's raw keys): the advice of the warning a pickle gives.
    fn pickle_advice(&self) -> Option<String> {
        None
    }
    /// A short human name, used in error messages: `FileStore('/srv/sessions')`.
    fn describe(&self) -> String;
    /// Whether calls may block on I/O (so callers release the GIL around them).
    fn blocks(&self) -> bool {
        true
    }
    /// Whether a load is a local read quick enough for the event loop's thread (memory, a file,
    /// SQLite: microseconds), rather than a network round trip: the async API then runs it
    /// inline, as a hop to a worker thread and back would cost more than the read.
    fn loads_inline(&self) -> bool {
        !self.blocks()
    }
    /// The same for saves and deletes.
    fn saves_inline(&self) -> bool {
        !self.blocks()
    }
    /// The store's pipelined protocol, when the async API can speak it on the event loop
    /// itself rather than through a worker thread (see `crate::wire`).
    fn wire(&self) -> Option<&dyn WireStore> {
        None
    }
}

/// `['a', 'b']`: servers or URLs as a store's description lists them.
fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("'{item}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `blob` unless it holds more than `max_bytes`: for stores that cannot ask the size first.
fn within_limit(
    store: &dyn SessionStore, session_id: &str, blob: Option<Vec<u8>>, max_bytes: usize,
) -> LoadResult {
    match blob {
        Some(blob) if blob.len() > max_bytes => Err(StoreError::oversized(
            store,
            session_id,
            blob.len() as u64,
            max_bytes,
        )),
        blob => Ok(blob),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_can_be_scrubbed_of_an_id() {
        let id = "0123456789abcdef0123456789abcdef";
        let error = StoreError {
            store: format!("Store({id})"),
            cause: format!("KeyError: 'tornsession:{id}' and {id} again"),
            kind: StoreErrorKind::Unavailable,
        }
        .without_id(id);
        let message = error.to_string();
        assert!(!message.contains(id), "{message}");
        assert!(message.contains(&ids::log_token(id)), "{message}");
    }
}
