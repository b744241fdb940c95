//! The handle a manager keeps on its store: one `SessionStore`, native or a Python object
//! behind `PythonStore`, each call scrubbed of the session id and run without the GIL when
//! a native store may block.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tornsession_core::stores::{LoadResult, StoreResult};

use pyo3::prelude::*;

use super::local::default_memory_store;
use super::python::PythonStore;
use super::PyStore;
use crate::errors::store_error;
use tornsession_core::stores::{self, SessionStore, StoreError, WireStore};
use tornsession_core::users::Bump;

/// The store a manager talks to.
pub enum StoreHandle {
    Native(Arc<dyn SessionStore>),
    /// A Python object speaking `get(key)`, `set(key, value, ttl)`, `delete(key)`.
    Python(Arc<PythonStore>),
}

impl StoreHandle {
    /// Takes whatever was passed as `store=`.
    pub fn from_object(store: &Bound<'_, PyAny>) -> PyResult<Self> {
        match store.cast::<PyStore>() {
            Ok(native) => Ok(Self::Native(native.get().store().clone())),
            Err(_) => Ok(Self::Python(Arc::new(PythonStore::new(store)?))),
        }
    }

    pub fn default_memory() -> Self {
        Self::Native(Arc::new(default_memory_store()))
    }

    pub fn file(py: Python<'_>, folder: PathBuf) -> PyResult<Self> {
        let store = py
            .detach(|| stores::FileStore::open(folder, false))
            .map_err(store_error)?;
        Ok(Self::Native(Arc::new(store)))
    }

    /// The store as one shared `SessionStore` (a `CookieStore`'s revocation store).
    pub fn shared(&self) -> Arc<dyn SessionStore> {
        match self {
            Self::Native(store) => store.clone(),
            Self::Python(store) => store.clone(),
        }
    }

    /// Whether sessions live sealed in their cookies (`CookieStore`).
    pub fn keeps_sessions_in_cookies(&self) -> bool {
        self.store().keeps_sessions_in_cookies()
    }

    fn store(&self) -> &dyn SessionStore {
        match self {
            Self::Native(store) => store.as_ref(),
            Self::Python(store) => store.as_ref(),
        }
    }

    /// Runs `call` on the store: without the GIL for a native store that may block; with it
    /// for a Python store, which needs it anyway.
    fn run<T: Send>(
        &self, py: Python<'_>, call: impl FnOnce(&dyn SessionStore) -> StoreResult<T> + Send,
    ) -> StoreResult<T> {
        match self {
            Self::Native(store) if store.blocks() => py.detach(|| call(store.as_ref())),
            store => call(store.store()),
        }
    }

    /// `run`, with the session id scrubbed from any error (see `StoreError::without_id`).
    fn run_for<T: Send>(
        &self, py: Python<'_>, session_id: &str,
        call: impl FnOnce(&dyn SessionStore) -> StoreResult<T> + Send,
    ) -> StoreResult<T> {
        self.run(py, call).map_err(|e| e.without_id(session_id))
    }

    /// Whether calls may wait on I/O: every store but the MemoryStore (Python stores: assume so).
    pub fn blocks(&self) -> bool {
        self.store().blocks()
    }

    /// Whether the async API runs a load inline (see `SessionStore::loads_inline`).
    pub fn loads_inline(&self) -> bool {
        self.store().loads_inline()
    }

    /// Whether the async API runs a save or delete inline.
    pub fn saves_inline(&self) -> bool {
        self.store().saves_inline()
    }

    /// The store's own protocol for the async API's connections (see `tornsession_core::wire`).
    pub fn wire(&self) -> Option<&dyn WireStore> {
        self.store().wire()
    }

    /// The largest record the store takes (see `SessionStore::max_record_size`).
    pub fn max_record_size(&self) -> Option<usize> {
        self.store().max_record_size()
    }

    /// Whether the store ends a user's sessions by generation (memcached); never a Python store.
    pub fn revokes_by_generation(&self) -> bool {
        self.store().revokes_by_generation()
    }

    /// What converts the original module's pickles found here, if anything would.
    pub fn pickle_advice(&self) -> Option<String> {
        self.store().pickle_advice()
    }

    pub fn describe(&self, _py: Python<'_>) -> String {
        self.store().describe()
    }

    /// Whether conditional saves work on this store (Python objects need compare_and_set).
    pub fn supports_conflict_checks(&self, py: Python<'_>) -> bool {
        match self {
            Self::Native(_) => true,
            Self::Python(store) => store.checks_conflicts(py),
        }
    }

    /// Loads a record; with `refresh`, also moves its expiry that far ahead (and never returns
    /// a record idle for longer). A record above `max_bytes` is an `OversizedRecord` error.
    pub fn load(
        &self, py: Python<'_>, session_id: &str, refresh: Option<Duration>, max_bytes: usize,
    ) -> LoadResult {
        self.load_refreshing(py, session_id, refresh, &|_| None, max_bytes)
    }

    /// `load`, moving the expiry to the record's own idle timeout (`ttl_of(blob)`) when it
    /// has one.
    pub fn load_refreshing(
        &self, py: Python<'_>, session_id: &str, refresh: Option<Duration>,
        ttl_of: &(dyn Fn(&[u8]) -> Option<Duration> + Sync), max_bytes: usize,
    ) -> LoadResult {
        self.run_for(py, session_id, |store| {
            store.load_refreshing(session_id, refresh, ttl_of, max_bytes)
        })
    }

    /// Saves only over an existing record: `Ok(false)`, writing nothing, when there is none.
    pub fn save_if_exists(
        &self, py: Python<'_>, session_id: &str, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        self.run_for(py, session_id, |store| {
            store.save_if_exists(session_id, blob, ttl)
        })
    }

    pub fn save(
        &self, py: Python<'_>, session_id: &str, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<()> {
        self.run_for(py, session_id, |store| store.save(session_id, blob, ttl))
    }

    /// Saves only if the record still is `expected`; a conflict error when it is not.
    pub fn save_if_unchanged(
        &self, py: Python<'_>, session_id: &str, expected: Option<&[u8]>, blob: &[u8],
        ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let written = self.run_for(py, session_id, |store| {
            store.save_if_unchanged(session_id, expected, blob, ttl)
        })?;
        if written {
            return Ok(());
        }
        Err(StoreError::conflict(self.store(), session_id).without_id(session_id))
    }

    /// Removes a record; whether there was one.
    pub fn delete(&self, py: Python<'_>, session_id: &str) -> StoreResult<bool> {
        self.run_for(py, session_id, |store| store.delete(session_id))
    }

    /// Files `session_id` under the user key (see `SessionStore::index_user`).
    pub fn index_user(
        &self, py: Python<'_>, user_key: &str, session_id: &str, ttl: Option<Duration>,
    ) -> StoreResult<()> {
        self.run_for(py, session_id, |store| {
            store.index_user(user_key, session_id, ttl)
        })
    }

    /// Takes `session_id` out of the user key's index.
    pub fn unindex_user(
        &self, py: Python<'_>, user_key: &str, session_id: &str,
    ) -> StoreResult<()> {
        self.run_for(py, session_id, |store| {
            store.unindex_user(user_key, session_id)
        })
    }

    /// Moves an index entry's expiry with its record's (Redis); nothing elsewhere.
    pub fn touch_user(
        &self, py: Python<'_>, user_key: &str, session_id: &str, ttl: Duration,
    ) -> StoreResult<()> {
        self.run_for(py, session_id, |store| {
            store.touch_user(user_key, session_id, ttl)
        })
    }

    /// The ids filed under the user key.
    pub fn user_session_ids(&self, py: Python<'_>, user_key: &str) -> StoreResult<Vec<String>> {
        self.run(py, |store| store.user_session_ids(user_key))
    }

    /// The user's generation (see `SessionStore::user_generation`).
    pub fn user_generation(&self, py: Python<'_>, user_key: &str) -> StoreResult<Option<u64>> {
        self.run(py, |store| store.user_generation(user_key))
    }

    /// Moves the user's generation on (see `SessionStore::bump_user_generation`).
    pub fn bump_user_generation(&self, py: Python<'_>, user_key: &str) -> StoreResult<Bump> {
        self.run(py, |store| store.bump_user_generation(user_key))
    }
}
