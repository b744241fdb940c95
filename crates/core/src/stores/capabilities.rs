//! What a store may do beyond its records: list a user's sessions (a [`UserIndex`]), or end them
//! all by a per-user generation ([`Revocation`]).
//!
//! Each is a trait of its own, reached through an accessor of [`SessionStore`]
//! (`user_index()`, `revocation()`) rather than as supertraits or default methods: callers hold
//! any store as one `dyn SessionStore` and ask it for a capability at run time (Rust cannot cast
//! one trait object to another), and a store without a capability writes nothing for it. The
//! methods on `dyn SessionStore` below are the one place that says what a caller gets where the
//! store lacks one: nothing to do, or an `Unsupported` error naming the stores that have it.

use crate::stores::StoreResult;
use std::time::Duration;

use super::{SessionStore, StoreError};

/// A per-user index (see `users`), keyed by a user key of 32 hex digits. It is written after the
/// record (a failure there leaves a record the owner cannot list, never an index entry without
/// a record), and whoever reads it checks the records it names.
pub trait UserIndex: Send + Sync {
    /// Files `session_id` under `user_key` for as long as its record lives (`ttl` from now).
    fn index_user(
        &self, user_key: &str, session_id: &str, ttl: Option<Duration>,
    ) -> StoreResult<()>;
    /// Takes `session_id` out of `user_key`'s index (a missing entry is not an error).
    fn unindex_user(&self, user_key: &str, session_id: &str) -> StoreResult<()>;
    /// The ids filed under `user_key` whose records may still live; entries the store knows
    /// to be expired are dropped as it reads them.
    fn user_session_ids(&self, user_key: &str) -> StoreResult<Vec<String>>;
    /// After a load of an owned session whose record's expiry moved: stores whose index
    /// entries expire by themselves (Redis) move the entry's too.
    fn touch_user(&self, _user_key: &str, _session_id: &str, _ttl: Duration) -> StoreResult<()> {
        Ok(())
    }
}

/// Ending a user's sessions by generation, for stores that cannot list them (memcached): a
/// counter per user, and each owned record carries the generation it was written under (see
/// `users::is_revoked`).
pub trait Revocation: Send + Sync {
    /// The user's current generation; `None` when the user has no counter.
    fn user_generation(&self, user_key: &str) -> StoreResult<Option<u64>>;
    /// Moves the user's generation on atomically, creating the counter when missing: every
    /// record written under an older one is ended.
    fn bump_user_generation(&self, user_key: &str) -> StoreResult<crate::users::Bump>;
    /// Why the store keeps no index, for the error of a listing it cannot do.
    fn why_no_index(&self) -> &'static str;
}

impl dyn SessionStore + '_ {
    /// Files `session_id` under `user_key` (see [`UserIndex::index_user`]); nothing to do where
    /// the generation in each owned record does the index's work.
    pub fn index_user(
        &self, user_key: &str, session_id: &str, ttl: Option<Duration>,
    ) -> StoreResult<()> {
        match self.user_index() {
            Some(index) => index.index_user(user_key, session_id, ttl),
            None => self.without_index("set_user()"),
        }
    }

    /// Takes `session_id` out of `user_key`'s index (see [`UserIndex::unindex_user`]).
    pub fn unindex_user(&self, user_key: &str, session_id: &str) -> StoreResult<()> {
        match self.user_index() {
            Some(index) => index.unindex_user(user_key, session_id),
            None => self.without_index("set_user()"),
        }
    }

    /// Moves an index entry's expiry with its record's (see [`UserIndex::touch_user`]).
    pub fn touch_user(&self, user_key: &str, session_id: &str, ttl: Duration) -> StoreResult<()> {
        self.user_index()
            .map_or(Ok(()), |index| index.touch_user(user_key, session_id, ttl))
    }

    /// The ids filed under `user_key` (see [`UserIndex::user_session_ids`]).
    pub fn user_session_ids(&self, user_key: &str) -> StoreResult<Vec<String>> {
        match (self.user_index(), self.revocation()) {
            (Some(index), _) => index.user_session_ids(user_key),
            (None, Some(revocation)) => Err(StoreError::unsupported(
                self.describe(),
                &format!(
                    "user_sessions() and destroy_session() ({}; destroy_user_sessions() works \
                     here, by a per-user generation)",
                    revocation.why_no_index()
                ),
            )),
            (None, None) if self.keeps_sessions_in_cookies() => {
                Err(super::cookie::without_revocation_store(self.describe()))
            }
            (None, None) => Err(StoreError::unsupported(self.describe(), "user_sessions()")),
        }
    }

    /// The user's generation (see [`Revocation::user_generation`]).
    pub fn user_generation(&self, user_key: &str) -> StoreResult<Option<u64>> {
        self.revocation_or_unsupported()?.user_generation(user_key)
    }

    /// Moves the user's generation on (see [`Revocation::bump_user_generation`]).
    pub fn bump_user_generation(&self, user_key: &str) -> StoreResult<crate::users::Bump> {
        self.revocation_or_unsupported()?
            .bump_user_generation(user_key)
    }

    /// A change to an index the store does not keep: nothing to do when it revokes by
    /// generation or keeps sessions in their cookies (the owner is in the record), else
    /// unsupported.
    fn without_index(&self, what: &str) -> StoreResult<()> {
        if self.revocation().is_some() || self.keeps_sessions_in_cookies() {
            return Ok(());
        }
        Err(StoreError::unsupported(self.describe(), what))
    }

    fn revocation_or_unsupported(&self) -> StoreResult<&dyn Revocation> {
        self.revocation().ok_or_else(|| {
            if self.keeps_sessions_in_cookies() {
                super::cookie::without_revocation_store(self.describe())
            } else {
                StoreError::unsupported(self.describe(), "a generation counter")
            }
        })
    }
}
