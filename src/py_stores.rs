//! The store classes as Python sees them, and the handle a manager keeps on its store: a native
//! Rust store, or any Python object with `get`, `set` and `delete`.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::stores::{self, SessionStore, StoreError};

/// The number of sessions a `MemoryStore` keeps unless told otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

/// Sessions in this process's memory: thread-safe, bounded, least recently used evicted first.
#[pyclass(module = "tornsession", frozen, name = "MemoryStore")]
pub struct PyMemoryStore {
    store: Arc<stores::MemoryStore>,
}

#[pymethods]
impl PyMemoryStore {
    #[new]
    #[pyo3(signature = (max_sessions = DEFAULT_MAX_SESSIONS), text_signature = "(max_sessions=100000)")]
    fn new(max_sessions: usize) -> PyResult<Self> {
        let max_sessions = NonZeroUsize::new(max_sessions)
            .ok_or_else(|| PyValueError::new_err("max_sessions must be at least 1"))?;
        Ok(Self {
            store: Arc::new(stores::MemoryStore::new(max_sessions)),
        })
    }

    #[getter]
    fn max_sessions(&self) -> usize {
        self.store.max_sessions()
    }

    fn __len__(&self) -> usize {
        self.store.len()
    }

    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// One file per session, `SESSION<id>`, in one folder; every write atomic.
#[pyclass(module = "tornsession", frozen, name = "FileStore")]
pub struct PyFileStore {
    store: Arc<stores::FileStore>,
}

#[pymethods]
impl PyFileStore {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let store = py.detach(|| stores::FileStore::open(path))?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.store.folder().to_path_buf()
    }

    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// Prefix of the keys a Python store object sees, so sessions share a server with other data.
const PYTHON_STORE_PREFIX: &str = "tornsession:";

/// The store a manager talks to.
pub enum StoreHandle {
    Native(Arc<dyn SessionStore>),
    /// A Python object speaking `get(key)`, `set(key, value, ttl)`, `delete(key)`.
    Python(Py<PyAny>),
}

impl StoreHandle {
    /// Takes whatever was passed as `store=`.
    pub fn from_object(store: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(memory) = store.cast::<PyMemoryStore>() {
            return Ok(Self::Native(memory.get().store.clone()));
        }
        if let Ok(file) = store.cast::<PyFileStore>() {
            return Ok(Self::Native(file.get().store.clone()));
        }
        for method in ["get", "set", "delete"] {
            if !store.hasattr(method)? {
                return Err(PyTypeError::new_err(format!(
                    "store= takes a tornsession store or an object with get(key), \
                     set(key, value, ttl) and delete(key) methods; {} has no {method}()",
                    store.repr()?
                )));
            }
        }
        Ok(Self::Python(store.clone().unbind()))
    }

    pub fn default_memory() -> Self {
        let max = NonZeroUsize::new(DEFAULT_MAX_SESSIONS).expect("non-zero constant");
        Self::Native(Arc::new(stores::MemoryStore::new(max)))
    }

    pub fn file(py: Python<'_>, folder: PathBuf) -> PyResult<Self> {
        let store = py.detach(|| stores::FileStore::open(folder))?;
        Ok(Self::Native(Arc::new(store)))
    }

    pub fn load(&self, py: Python<'_>, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Native(store) if store.blocks() => py.detach(|| store.load(session_id)),
            Self::Native(store) => store.load(session_id),
            Self::Python(store) => {
                let store = store.bind(py);
                let found = store
                    .call_method1(intern!(py, "get"), (python_key(session_id),))
                    .map_err(|e| python_store_error(store, "get", e))?;
                if found.is_none() {
                    return Ok(None);
                }
                found
                    .extract::<Vec<u8>>()
                    .map(Some)
                    .map_err(|e| python_store_error(store, "get", e))
            }
        }
    }

    pub fn save(
        &self,
        py: Python<'_>,
        session_id: &str,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Native(store) if store.blocks() => {
                py.detach(|| store.save(session_id, blob, ttl))
            }
            Self::Native(store) => store.save(session_id, blob, ttl),
            Self::Python(store) => {
                let store = store.bind(py);
                // Whole seconds, rounded up: what redis-py and pymemcache take.
                let ttl = ttl.map(|t| t.as_secs() + u64::from(t.subsec_nanos() > 0));
                let args = (python_key(session_id), PyBytes::new(py, blob), ttl);
                store
                    .call_method1(intern!(py, "set"), args)
                    .map(drop)
                    .map_err(|e| python_store_error(store, "set", e))
            }
        }
    }

    #[allow(
        dead_code,
        reason = "session destroy() arrives with the lifecycle work"
    )]
    pub fn delete(&self, py: Python<'_>, session_id: &str) -> Result<(), StoreError> {
        match self {
            Self::Native(store) if store.blocks() => py.detach(|| store.delete(session_id)),
            Self::Native(store) => store.delete(session_id),
            Self::Python(store) => {
                let store = store.bind(py);
                store
                    .call_method1(intern!(py, "delete"), (python_key(session_id),))
                    .map(drop)
                    .map_err(|e| python_store_error(store, "delete", e))
            }
        }
    }

    pub fn describe(&self, py: Python<'_>) -> String {
        match self {
            Self::Native(store) => store.describe(),
            Self::Python(store) => store
                .bind(py)
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "Python store".to_owned()),
        }
    }
}

fn python_key(session_id: &str) -> String {
    format!("{PYTHON_STORE_PREFIX}{session_id}")
}

fn python_store_error(store: &Bound<'_, PyAny>, method: &str, error: PyErr) -> StoreError {
    StoreError {
        store: store
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "Python store".to_owned()),
        cause: format!("{method}() raised {error}"),
        kind: stores::StoreErrorKind::Unavailable,
    }
}
