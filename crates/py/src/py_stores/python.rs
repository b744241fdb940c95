//! A Python object with `get`, `set` and `delete` as a `SessionStore`, so the manager drives it
//! exactly as it drives a native store.

use std::time::Duration;
use tornsession_core::stores::{LoadResult, StoreResult};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::errors::argument_type_error;
use tornsession_core::ids;
use tornsession_core::stores::{SessionStore, StoreError, StoreErrorKind, UserIndex};
use tornsession_core::time::whole_seconds;

/// Prefix of the keys a Python store object sees, so sessions share a server with other data.
const PYTHON_STORE_PREFIX: &str = "tornsession:";

/// A Python object speaking `get(key)`, `set(key, value, ttl)`, `delete(key)`, and optionally
/// `touch`, `set_if_exists`, `compare_and_set` and the per-user `add_to_user`,
/// `remove_from_user`, `user_keys`. Every call takes the GIL (the caller's, when it holds it).
pub struct PythonStore {
    object: Py<PyAny>,
}

impl PythonStore {
    /// `store` if it has `get`, `set` and `delete`; a TypeError naming what is missing if not.
    pub fn new(store: &Bound<'_, PyAny>) -> PyResult<Self> {
        for method in ["get", "set", "delete"] {
            if !store.hasattr(method)? {
                return Err(argument_type_error(format!(
                    "store= takes a tornsession store or an object with get(key), \
                     set(key, value, ttl) and delete(key) methods; {} has no {method}()",
                    store.repr()?
                )));
            }
        }
        Ok(Self {
            object: store.clone().unbind(),
        })
    }

    /// Whether conditional saves work: the object has `compare_and_set`.
    pub fn checks_conflicts(&self, py: Python<'_>) -> bool {
        self.has(py, intern!(py, "compare_and_set"))
    }

    fn has(&self, py: Python<'_>, method: &Bound<'_, PyString>) -> bool {
        self.object.bind(py).hasattr(method).unwrap_or(false)
    }

    /// `object.method(*args)`, its exception as a store error. Its message may well quote the
    /// key (a `KeyError('tornsession:<id>')`); `StoreHandle` scrubs the id from what it returns.
    fn call<'py>(
        &self, py: Python<'py>, method: &Bound<'py, PyString>,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> StoreResult<Bound<'py, PyAny>> {
        self.object
            .bind(py)
            .call_method1(method, args)
            .map_err(|error| self.error(py, method, error))
    }

    fn error(&self, py: Python<'_>, method: &Bound<'_, PyString>, error: PyErr) -> StoreError {
        StoreError {
            store: self.describe_with(py),
            cause: format!("{method}() raised {error}"),
            kind: StoreErrorKind::Unavailable,
        }
    }

    fn describe_with(&self, py: Python<'_>) -> String {
        self.object
            .bind(py)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "Python store".to_owned())
    }

    /// The record under `key` (`get`), refused above `max_bytes`.
    fn get(&self, py: Python<'_>, session_id: &str, key: &str, max_bytes: usize) -> LoadResult {
        let get = intern!(py, "get");
        let found = self.call(py, get, (key,))?;
        if found.is_none() {
            return Ok(None);
        }
        let blob = found
            .extract::<Vec<u8>>()
            .map_err(|e| self.error(py, get, e))?;
        if blob.len() > max_bytes {
            return Err(StoreError::oversized(
                self,
                session_id,
                blob.len() as u64,
                max_bytes,
            ));
        }
        Ok(Some(blob))
    }

    /// `touch(key, seconds)` when the object has it; without it, expiry moves on save only.
    fn touch_key(&self, py: Python<'_>, key: &str, ttl: Duration) -> StoreResult<()> {
        let touch = intern!(py, "touch");
        if self.has(py, touch) {
            self.call(py, touch, (key, whole_seconds(ttl)))?;
        }
        Ok(())
    }

    /// An optional per-user method; `Unsupported` when the object has none.
    fn call_user_method<'py>(
        &self, py: Python<'py>, method: &Bound<'py, PyString>, what: &str,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> StoreResult<Bound<'py, PyAny>> {
        if !self.has(py, method) {
            return Err(StoreError::unsupported(
                self.describe_with(py),
                &format!("{what} (this Python store has no {method}())"),
            ));
        }
        self.call(py, method, args)
    }
}

fn python_key(session_id: &str) -> String {
    format!("{PYTHON_STORE_PREFIX}{session_id}")
}

impl SessionStore for PythonStore {
    fn load(&self, session_id: &str, max_bytes: usize) -> LoadResult {
        Python::attach(|py| self.get(py, session_id, &python_key(session_id), max_bytes))
    }

    /// One `get`, then one `touch` to the record's own idle timeout or else `ttl`.
    fn load_refreshing(
        &self, session_id: &str, ttl: Option<Duration>, ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
        max_bytes: usize,
    ) -> LoadResult {
        Python::attach(|py| {
            let key = python_key(session_id);
            let Some(blob) = self.get(py, session_id, &key, max_bytes)? else {
                return Ok(None);
            };
            if let Some(ttl) = ttl_of(&blob).or(ttl) {
                self.touch_key(py, &key, ttl)?;
            }
            Ok(Some(blob))
        })
    }

    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        Python::attach(|py| {
            let args = (
                python_key(session_id),
                PyBytes::new(py, blob),
                ttl.map(whole_seconds),
            );
            self.call(py, intern!(py, "set"), args).map(drop)
        })
    }

    fn save_if_unchanged(
        &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        Python::attach(|py| {
            let compare_and_set = intern!(py, "compare_and_set");
            if !self.has(py, compare_and_set) {
                return Err(StoreError {
                    store: self.describe(),
                    cause: "this Python store has no compare_and_set(key, expected, value, ttl)"
                        .to_owned(),
                    kind: StoreErrorKind::Unsupported,
                });
            }
            let args = (
                python_key(session_id),
                expected.map(|e| PyBytes::new(py, e)),
                PyBytes::new(py, blob),
                ttl.map(whole_seconds),
            );
            self.call(py, compare_and_set, args)?
                .is_truthy()
                .map_err(|e| self.error(py, compare_and_set, e))
        })
    }

    /// `set_if_exists(key, value, ttl)` when the object has one (atomic if theirs is);
    /// otherwise `get` then `set`, which a delete between the two can slip past.
    fn save_if_exists(
        &self, session_id: &str, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        Python::attach(|py| {
            let key = python_key(session_id);
            let args = (&key, PyBytes::new(py, blob), ttl.map(whole_seconds));
            let set_if_exists = intern!(py, "set_if_exists");
            if self.has(py, set_if_exists) {
                return self
                    .call(py, set_if_exists, args)?
                    .is_truthy()
                    .map_err(|e| self.error(py, set_if_exists, e));
            }
            if self.call(py, intern!(py, "get"), (&key,))?.is_none() {
                return Ok(false);
            }
            self.call(py, intern!(py, "set"), args).map(|_| true)
        })
    }

    /// A `get` before the `delete` says whether there was a record (not atomic).
    fn delete(&self, session_id: &str) -> StoreResult<bool> {
        Python::attach(|py| {
            let key = python_key(session_id);
            let existed = !self.call(py, intern!(py, "get"), (&key,))?.is_none();
            self.call(py, intern!(py, "delete"), (&key,))?;
            Ok(existed)
        })
    }

    fn touch(&self, session_id: &str, ttl: Duration) -> StoreResult<()> {
        Python::attach(|py| self.touch_key(py, &python_key(session_id), ttl))
    }

    fn describe(&self) -> String {
        Python::attach(|py| self.describe_with(py))
    }

    /// Python code may wait on anything; the async API runs it on a worker thread.
    fn blocks(&self) -> bool {
        true
    }

    /// Always: each method refuses on its own when the object lacks it. (No generation counter;
    /// `touch_user` is nothing, as entries do not expire here.)
    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }
}

// The per-user index, through the object's optional methods.
impl UserIndex for PythonStore {
    /// `add_to_user(user_key, key, ttl)`.
    fn index_user(
        &self, user_key: &str, session_id: &str, ttl: Option<Duration>,
    ) -> StoreResult<()> {
        Python::attach(|py| {
            let args = (user_key, python_key(session_id), ttl.map(whole_seconds));
            self.call_user_method(py, intern!(py, "add_to_user"), "set_user()", args)
                .map(drop)
        })
    }

    /// `remove_from_user(user_key, key)`.
    fn unindex_user(&self, user_key: &str, session_id: &str) -> StoreResult<()> {
        Python::attach(|py| {
            let args = (user_key, python_key(session_id));
            self.call_user_method(py, intern!(py, "remove_from_user"), "set_user()", args)
                .map(drop)
        })
    }

    /// `user_keys(user_key)`: a list of the keys given to `add_to_user`.
    fn user_session_ids(&self, user_key: &str) -> StoreResult<Vec<String>> {
        Python::attach(|py| {
            let user_keys = intern!(py, "user_keys");
            let keys: Vec<String> = self
                .call_user_method(py, user_keys, "user_sessions()", (user_key,))?
                .extract()
                .map_err(|e| self.error(py, user_keys, e))?;
            // Only keys that are ours and name a session id; anything else is ignored.
            Ok(keys
                .iter()
                .filter_map(|key| key.strip_prefix(PYTHON_STORE_PREFIX))
                .filter(|id| ids::is_valid_session_id(id))
                .map(str::to_owned)
                .collect())
        })
    }
}
