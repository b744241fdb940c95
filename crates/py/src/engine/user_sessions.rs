//! The engine's per-user operations: `tornsession_core::user_sessions` on the manager's store
//! (through [`StoreAt`], which holds the GIL token the store classes take), and the log lines
//! of what they did.

use std::time::Duration;

use pyo3::prelude::*;

use super::Engine;
use crate::log::{log, Level};
use crate::py_stores::StoreHandle;
use tornsession_core::ids;
use tornsession_core::metrics::StoreOp;
use tornsession_core::stores::{self, StoreError, StoreErrorKind};
use tornsession_core::time;
use tornsession_core::user_sessions::{Ended, Listed, UserSessionStore, UserSessions};
use tornsession_core::users::{self, Bump};

/// A manager's store as the per-user operations use it, with the manager's read limit.
pub(super) struct StoreAt<'a, 'py> {
    pub py: Python<'py>,
    pub store: &'a StoreHandle,
    pub max_read_size: usize,
}

impl UserSessionStore for StoreAt<'_, '_> {
    fn describe(&self) -> String {
        self.store.describe(self.py)
    }

    fn load(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store
            .load(self.py, session_id, None, self.max_read_size)
    }

    fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        self.store.delete(self.py, session_id)
    }

    fn user_session_ids(&self, user_key: &str) -> Result<Vec<String>, StoreError> {
        self.store.user_session_ids(self.py, user_key)
    }

    fn unindex_user(&self, user_key: &str, session_id: &str) -> Result<(), StoreError> {
        self.store.unindex_user(self.py, user_key, session_id)
    }

    fn revokes_by_generation(&self) -> bool {
        self.store.revokes_by_generation()
    }

    fn bump_user_generation(&self, user_key: &str) -> Result<Bump, StoreError> {
        self.store.bump_user_generation(self.py, user_key)
    }

    fn save_if_unchanged(
        &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        match self
            .store
            .save_if_unchanged(self.py, session_id, expected, blob, ttl)
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind == StoreErrorKind::Conflict => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Engine {
    /// The per-user operations on this manager's store.
    fn users<'a, 'py>(&'a self, store: &'a StoreAt<'a, 'py>) -> UserSessions<'a, StoreAt<'a, 'py>> {
        UserSessions {
            store,
            secrets: &self.secrets,
            policy: &self.policy,
            now: time::now,
        }
    }

    fn store_at<'py>(&self, py: Python<'py>) -> StoreAt<'_, 'py> {
        StoreAt {
            py,
            store: &self.store,
            max_read_size: self.max_read_size,
        }
    }

    /// `store.load` of a record by id, its binding checked.
    pub(super) fn load_record(
        &self, py: Python<'_>, session_id: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.store_at(py);
        self.users(&store).load_checked(session_id)
    }

    /// Removes a record, then its entry in its owner's index; whether there was a record.
    pub fn delete(
        &self, py: Python<'_>, session_id: &str, owner: Option<&str>,
    ) -> Result<bool, StoreError> {
        let started = self.started();
        let store = self.store_at(py);
        let deleted = self.users(&store).delete(session_id, owner);
        self.observe(StoreOp::Delete, started, &deleted);
        deleted
    }

    /// The live sessions `user_id` owns, oldest first.
    pub fn user_sessions(&self, py: Python<'_>, user_id: &str) -> Result<Vec<Listed>, StoreError> {
        let store = self.store_at(py);
        self.users(&store).list(user_id)
    }

    /// Ends every session of `user_id` but `keep` (a session id); returns how many, and the
    /// record `keep` was carried over with (stores that revoke by generation).
    pub fn destroy_user_sessions(
        &self, py: Python<'_>, user_id: &str, keep: Option<&str>,
    ) -> Result<Ended, StoreError> {
        let store = self.store_at(py);
        let ended = self.users(&store).end_all_but(user_id, keep)?;
        let token = ids::log_token(&users::user_key(user_id));
        match ended.bump.map(|bump| bump.after) {
            Some(generation) => log(
                py,
                Level::Info,
                &format!(
                    "sessions of user {token} ended by generation {generation}{}",
                    if ended.kept.is_some() {
                        ", but one"
                    } else {
                        ""
                    }
                ),
            ),
            None if ended.count > 0 => log(
                py,
                Level::Info,
                &format!("{} sessions of user {token} destroyed", ended.count),
            ),
            None => {}
        }
        Ok(ended)
    }

    /// The session id a public id names, if it is a live session of the user it names.
    pub fn find_public_id(
        &self, py: Python<'_>, public_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let store = self.store_at(py);
        self.users(&store).find_public_id(public_id)
    }

    /// Ends the session a public id names; returns 1, or 0 when it names none.
    pub fn destroy_session(&self, py: Python<'_>, public_id: &str) -> Result<usize, StoreError> {
        // A hashed id names a session through its owner's index, and cookies have none.
        if self.sealer.is_some() {
            return Err(stores::without_revocation_store(self.store.describe(py)));
        }
        let store = self.store_at(py);
        let Some((id, existed)) = self.users(&store).end_public_id(public_id)? else {
            return Ok(0);
        };
        log(
            py,
            Level::Info,
            &format!("session {} destroyed by its hashed id", ids::log_token(&id)),
        );
        Ok(usize::from(existed))
    }
}
