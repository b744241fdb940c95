//! The store classes as Python sees them, all subclasses of one base (`_Store`, holding the
//! `SessionStore`), and the handle a manager keeps on its store: a native store, or any Python
//! object with `get`, `set` and `delete` through the `PythonStore` adapter.

mod arguments;
mod cookie;
mod handle;
mod listing;
mod local;
mod network;
mod python;

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::{store_error, value_error};
use tornsession_core::ids;
use tornsession_core::stores::SessionStore;

pub use cookie::PyCookieStore;
pub use handle::StoreHandle;
pub use listing::{_store_copy_in, _store_delete_listed, _store_load_listed, _store_session_ids};
pub use local::{PyFileStore, PyMemoryStore, PySqliteStore};
pub use network::{PyMemcachedStore, PyRedisClusterStore, PyRedisSentinelStore, PyRedisStore};

/// What every store class is: the store the manager drives. Not constructible itself.
#[pyclass(module = "tornsession", frozen, subclass, name = "_Store")]
pub struct PyStore {
    store: Arc<dyn SessionStore>,
}

impl PyStore {
    /// A store class's initializer: the base holds the store as a `SessionStore`, the class
    /// (`class(store)`) as its own type, for its getters.
    fn initializer<S, C>(store: S, class: impl FnOnce(Arc<S>) -> C) -> PyClassInitializer<C>
    where
        S: SessionStore + 'static,
        C: pyo3::PyClass<BaseType = PyStore>,
    {
        let store = Arc::new(store);
        PyClassInitializer::from(PyStore {
            store: store.clone(),
        })
        .add_subclass(class(store))
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }
}

#[pymethods]
impl PyStore {
    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// `StoreHandle::save_if_exists` on any store a manager takes, for the test suite (the manager
/// adopts it with the lifecycle work).
#[pyfunction]
#[pyo3(signature = (store, session_id, blob, ttl = None))]
pub fn _store_save_if_exists(
    py: Python<'_>, store: &Bound<'_, PyAny>, session_id: &str, blob: &[u8], ttl: Option<u64>,
) -> PyResult<bool> {
    let session_id = checked_id(session_id)?;
    let handle = StoreHandle::from_object(store)?;
    handle
        .save_if_exists(py, session_id, blob, ttl.map(Duration::from_secs))
        .map_err(store_error)
}

/// `StoreHandle::load` with a byte limit on any store a manager takes, for the test suite.
#[pyfunction]
pub fn _store_load<'py>(
    py: Python<'py>, store: &Bound<'py, PyAny>, session_id: &str, max_bytes: usize,
) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let session_id = checked_id(session_id)?;
    let handle = StoreHandle::from_object(store)?;
    let blob = handle
        .load(py, session_id, None, max_bytes)
        .map_err(store_error)?;
    Ok(blob.map(|blob| PyBytes::new(py, &blob)))
}

/// Stores only ever see valid ids; so do these hooks.
fn checked_id(session_id: &str) -> PyResult<&str> {
    if ids::is_valid_session_id(session_id) {
        Ok(session_id)
    } else {
        Err(value_error("not a session id"))
    }
}
