//! Listing every record a store holds, for the operating commands (`python -m tornsession copy`
//! and `stats`), never for a request: a [`Listing`] capability, reached like the others through
//! an accessor of [`SessionStore`] (see `capabilities`), and what the commands do with it.
//!
//! Copying a session keeps what a visitor's cookie needs to open the same session elsewhere:
//! its id, its record byte for byte (the record is bound to the id, see `codec::binding`), the
//! time it has left, and its entry in its owner's index.

use std::time::Duration;

use super::{SessionStore, StoreError, StoreErrorKind, StoreResult};
use crate::codec;
use crate::users;

/// The stores that can list their records, for the messages of those that cannot.
pub const LISTABLE_STORES: &str =
    "FileStore, SqliteStore, RedisStore, RedisSentinelStore, RedisClusterStore, MemcachedStore \
     (memcached 1.4.31 or later) or MemoryStore";

/// How long a listed record has left in its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLeft {
    /// The store keeps it until it is deleted.
    Unlimited,
    /// The store drops it after this long.
    Within(Duration),
    /// The store keeps no expiry but the time of its last use, this long ago (FileStore): how
    /// long it has left depends on the app's idle timeout.
    IdleFor(Duration),
}

/// A record as a listing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRecord {
    pub blob: Vec<u8>,
    pub time_left: TimeLeft,
}

/// What a store that can list its records does.
pub trait Listing: Send + Sync {
    /// The id of every session record the store holds (never its index or counter entries), in
    /// no particular order. Records expiring as the listing runs may or may not be named.
    fn session_ids(&self) -> StoreResult<Vec<String>>;
    /// The record of `session_id` with the time it has left; `None` when there is no live one.
    fn load_listed(&self, session_id: &str, max_bytes: usize) -> StoreResult<Option<ListedRecord>>;
    /// Deletes the record of `session_id` only while it still is `expected`, atomically where
    /// the store can: whether it did. (A copy ends a session ended in its source this way, so
    /// a write of the app that lands first is never deleted.)
    fn delete_if_unchanged(&self, session_id: &str, expected: &[u8]) -> StoreResult<bool>;
    /// For stores that keep the time of last use rather than an expiry (FileStore): sets the
    /// record's last use `idle_for` back from now. Nothing to do elsewhere.
    fn set_idle_for(&self, _session_id: &str, _idle_for: Duration) -> StoreResult<()> {
        Ok(())
    }
}

impl dyn SessionStore + '_ {
    fn listing_or_unsupported(&self) -> StoreResult<&dyn Listing> {
        self.listing().ok_or_else(|| StoreError {
            store: self.describe(),
            cause: format!("cannot list its sessions; the stores that can: {LISTABLE_STORES}"),
            kind: StoreErrorKind::Unsupported,
        })
    }

    /// The id of every session record (see [`Listing::session_ids`]).
    pub fn list_session_ids(&self) -> StoreResult<Vec<String>> {
        self.listing_or_unsupported()?.session_ids()
    }

    /// The record of `session_id` and how long it has left, as a copy needs it: `None` when
    /// there is no live record, when it has less than a second left, or when its owner's
    /// sessions were ended by a generation since it was written (memcached: such a record
    /// lingers until it expires, but it is ended and must not be copied back to life).
    ///
    /// A FileStore's record lives for the idle timeout after its last use: the record's own
    /// (`set_expiry`), else `idle_timeout` (the app's); with neither, it has no limit.
    pub fn load_for_copy(
        &self, session_id: &str, idle_timeout: Option<Duration>, max_bytes: usize,
    ) -> StoreResult<Option<(Vec<u8>, Option<Duration>)>> {
        let Some(record) = self
            .listing_or_unsupported()?
            .load_listed(session_id, max_bytes)?
        else {
            return Ok(None);
        };
        let extras = codec::peek_extras(&record.blob).unwrap_or_default();
        let time_left = match record.time_left {
            TimeLeft::Unlimited => None,
            TimeLeft::Within(left) => Some(left),
            TimeLeft::IdleFor(idle_for) => match extras.expiry.idle_timeout {
                Some(own) => Some(Duration::from_secs(own).saturating_sub(idle_for)),
                None => idle_timeout.map(|idle| idle.saturating_sub(idle_for)),
            },
        };
        if time_left.is_some_and(|left| left < Duration::from_secs(1)) {
            return Ok(None);
        }
        if let (true, Some(user)) = (self.revokes_by_generation(), extras.user.as_deref()) {
            let counter = self.user_generation(&users::user_key(user))?;
            if users::is_revoked(extras.generation, counter) {
                return Ok(None);
            }
        }
        Ok(Some((record.blob, time_left)))
    }

    /// Writes a copied record under `session_id`, only if the record there still is `expected`
    /// (`None`: only where there is none), to live for `time_left` (`None`: no limit); `false`,
    /// writing nothing, when another writer got there first. A FileStore's record gets its last
    /// use set back so that it expires when the source's would (its own idle timeout, else
    /// `idle_timeout`); an owned record is filed in its owner's index.
    pub fn copy_in(
        &self, session_id: &str, blob: &[u8], time_left: Option<Duration>, expected: Option<&[u8]>,
        idle_timeout: Option<Duration>,
    ) -> StoreResult<bool> {
        let listing = self.listing_or_unsupported()?;
        if !self.save_if_unchanged(session_id, expected, blob, time_left)? {
            return Ok(false);
        }
        let extras = codec::peek_extras(blob).unwrap_or_default();
        let idle = extras
            .expiry
            .idle_timeout
            .map(Duration::from_secs)
            .or(idle_timeout);
        if let (Some(idle), Some(left)) = (idle, time_left) {
            listing.set_idle_for(session_id, idle.saturating_sub(left))?;
        }
        let replaced_owner = expected
            .and_then(codec::peek_extras)
            .and_then(|before| before.user)
            .filter(|before| extras.user.as_ref() != Some(before));
        if let (Some(before), Some(_)) = (replaced_owner, self.user_index()) {
            self.unindex_user(&users::user_key(&before), session_id)?;
        }
        if let Some(user) = extras.user {
            self.index_user(&users::user_key(&user), session_id, time_left)?;
        }
        Ok(true)
    }

    /// Deletes the record of `session_id` (with `expected`, only while it still is that
    /// record) and takes it out of its owner's index; whether there was a live record and it
    /// went.
    pub fn delete_listed(&self, session_id: &str, expected: Option<&[u8]>) -> StoreResult<bool> {
        let listing = self.listing_or_unsupported()?;
        let record = match expected {
            Some(expected) => Some(expected.to_vec()),
            None => listing
                .load_listed(session_id, super::DEFAULT_MAX_READ_SIZE)
                .ok()
                .flatten()
                .map(|record| record.blob),
        };
        let owner = record
            .as_deref()
            .and_then(codec::peek_extras)
            .and_then(|extras| extras.user);
        let deleted = match expected {
            Some(expected) => listing.delete_if_unchanged(session_id, expected)?,
            None => self.delete(session_id)?,
        };
        if !deleted && expected.is_some() {
            return Ok(false); // the record changed: its owner's entry stays with it
        }
        if let (Some(owner), Some(_)) = (owner, self.user_index()) {
            self.unindex_user(&users::user_key(&owner), session_id)?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use crate::codec::{encode_with, Extras};
    use crate::stores::{FileStore, MemoryStore, DEFAULT_MAX_READ_SIZE as MAX};

    const A: &str = "0000000000000000000000000000000a";
    const B: &str = "0000000000000000000000000000000b";

    fn record(id: &str, user: Option<&str>, own_idle: Option<u64>) -> Vec<u8> {
        let mut extras = Extras {
            user: user.map(str::to_owned),
            ..Extras::default()
        };
        extras.expiry.idle_timeout = own_idle;
        encode_with(id, 1_700_000_000, &serde_json::Map::new(), &extras)
    }

    fn memory() -> MemoryStore {
        let n = NonZeroUsize::new(1000).unwrap();
        MemoryStore::new(n, NonZeroUsize::new(1 << 20).unwrap())
    }

    #[test]
    fn a_copy_keeps_the_record_its_time_left_and_its_owner() {
        let (source, target) = (memory(), memory());
        let (source, target): (&dyn SessionStore, &dyn SessionStore) = (&source, &target);
        let blob = record(A, Some("ann"), None);
        source
            .save(A, &blob, Some(Duration::from_secs(600)))
            .unwrap();
        source.save(B, &record(B, None, None), None).unwrap();
        let mut listed = source.list_session_ids().unwrap();
        listed.sort();
        assert_eq!(listed, [A, B]);
        let (copied, left) = source.load_for_copy(A, None, MAX).unwrap().unwrap();
        assert_eq!(copied, blob);
        let left = left.unwrap();
        assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(590));
        assert!(target.copy_in(A, &copied, Some(left), None, None).unwrap());
        assert!(
            !target.copy_in(A, &copied, Some(left), None, None).unwrap(),
            "only if none"
        );
        assert_eq!(
            target.user_session_ids(&users::user_key("ann")).unwrap(),
            [A]
        );
        assert_eq!(source.load_for_copy(B, None, MAX).unwrap().unwrap().1, None);
        assert!(
            !target.delete_listed(A, Some(b"another record")).unwrap(),
            "changed: kept"
        );
        assert_eq!(
            target.user_session_ids(&users::user_key("ann")).unwrap(),
            [A]
        );
        assert!(target.delete_listed(A, Some(&copied)).unwrap());
        assert!(target
            .user_session_ids(&users::user_key("ann"))
            .unwrap()
            .is_empty());
        assert!(!target.delete_listed(A, None).unwrap(), "gone already");
    }

    #[test]
    fn a_file_record_lives_for_the_idle_timeout_after_its_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let files = FileStore::open(dir.path(), false).unwrap();
        let files: &dyn SessionStore = &files;
        let (mine, own) = (record(A, None, None), record(B, None, Some(7200)));
        assert!(files
            .copy_in(
                A,
                &mine,
                Some(Duration::from_secs(100)),
                None,
                Some(Duration::from_secs(600))
            )
            .unwrap());
        assert!(files
            .copy_in(B, &own, Some(Duration::from_secs(100)), None, None)
            .unwrap());
        // Set back 500 s of the app's 600, and 7,100 s of the record's own 7,200.
        let left = |id| {
            files
                .load_for_copy(id, Some(Duration::from_secs(600)), MAX)
                .unwrap()
                .unwrap()
                .1
                .unwrap()
        };
        for id in [A, B] {
            let left = left(id);
            assert!(
                left <= Duration::from_secs(100) && left > Duration::from_secs(95),
                "{left:?}"
            );
        }
        assert_eq!(
            files.load_for_copy(A, None, MAX).unwrap().unwrap().1,
            None,
            "no idle timeout"
        );
        files.set_idle_for_test(A, Duration::from_secs(650));
        assert_eq!(
            files
                .load_for_copy(A, Some(Duration::from_secs(600)), MAX)
                .unwrap(),
            None
        );
    }

    impl dyn SessionStore + '_ {
        fn set_idle_for_test(&self, session_id: &str, idle_for: Duration) {
            self.listing()
                .unwrap()
                .set_idle_for(session_id, idle_for)
                .unwrap();
        }
    }

    #[test]
    fn a_store_that_cannot_list_says_which_can() {
        let cookies = crate::stores::CookieStore::new(None);
        let error = (&cookies as &dyn SessionStore)
            .list_session_ids()
            .unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::Unsupported);
        assert!(error.cause.contains("RedisClusterStore"), "{error}");
    }
}
