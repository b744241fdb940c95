//! The store classes of one machine: memory, a folder of files, an SQLite file.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;

use super::arguments::{count, positive_seconds};
use super::PyStore;
use crate::errors::{store_error, value_error};
use crate::options::SaturatingInt;
use tornsession_core::stores;

/// The number of sessions a `MemoryStore` keeps unless told otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// The bytes a `MemoryStore` holds at most unless told otherwise: 256 MiB leaves the default
/// 100,000 sessions an average of about 2.5 KiB each, several times what a session typically
/// holds (a user id, a token, a few flash messages), while sessions that keep growing stop at a
/// quarter GiB instead of taking the process down.
pub const DEFAULT_MAX_BYTES: usize = 256 << 20;

/// The store of a manager given neither a store nor a folder.
pub fn default_memory_store() -> stores::MemoryStore {
    let max_sessions = NonZeroUsize::new(DEFAULT_MAX_SESSIONS).expect("non-zero constant");
    let max_bytes = NonZeroUsize::new(DEFAULT_MAX_BYTES).expect("non-zero constant");
    stores::MemoryStore::new(max_sessions, max_bytes)
}

/// Sessions in this process's memory: thread-safe, bounded in count and bytes; sessions used
/// on more than one request outlive a flood of sessions used once.
#[pyclass(module = "tornsession", frozen, extends = PyStore, name = "MemoryStore")]
pub struct PyMemoryStore {
    store: Arc<stores::MemoryStore>,
}

#[pymethods]
impl PyMemoryStore {
    #[new]
    #[pyo3(
        signature = (max_sessions = SaturatingInt(DEFAULT_MAX_SESSIONS as i64), *, max_bytes = SaturatingInt(DEFAULT_MAX_BYTES as i64)),
        text_signature = "(max_sessions=100000, *, max_bytes=268435456)"
    )]
    fn new(
        max_sessions: SaturatingInt,
        max_bytes: SaturatingInt,
    ) -> PyResult<PyClassInitializer<Self>> {
        // 2**48 sessions or bytes is past any machine's memory, and far from overflows.
        let non_zero = |name: &str, value: SaturatingInt| {
            NonZeroUsize::new(count(name, value.0, 1, 1 << 48)?)
                .ok_or_else(|| value_error(format!("{name} must be at least 1")))
        };
        let store = stores::MemoryStore::new(
            non_zero("max_sessions", max_sessions)?,
            non_zero("max_bytes", max_bytes)?,
        );
        Ok(PyStore::initializer(store, |store| Self { store }))
    }

    #[getter]
    fn max_sessions(&self) -> usize {
        self.store.max_sessions()
    }

    #[getter]
    fn max_bytes(&self) -> usize {
        self.store.max_bytes()
    }

    fn __len__(&self) -> usize {
        self.store.len()
    }
}

/// One file per session, `SESSION<id>`, in one folder; every write atomic.
#[pyclass(module = "tornsession", frozen, extends = PyStore, name = "FileStore")]
pub struct PyFileStore {
    store: Arc<stores::FileStore>,
}

#[pymethods]
impl PyFileStore {
    #[new]
    #[pyo3(signature = (path, *, durable = false), text_signature = "(path, *, durable=False)")]
    fn new(py: Python<'_>, path: PathBuf, durable: bool) -> PyResult<PyClassInitializer<Self>> {
        let store = py
            .detach(|| stores::FileStore::open(path, durable))
            .map_err(store_error)?;
        Ok(PyStore::initializer(store, |store| Self { store }))
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.store.folder().to_path_buf()
    }

    #[getter]
    fn durable(&self) -> bool {
        self.store.durable()
    }

    /// Deletes session files unused for longer than `idle_timeout` seconds (default: the idle
    /// timeout of the manager using this store) and temporary files a crash left behind.
    /// Returns how many of each: `(expired, stale_temporary)`. An `idle_timeout` beyond what a
    /// duration holds deletes no session; NaN, infinities and non-positive values are refused.
    #[pyo3(signature = (idle_timeout = None))]
    fn cleanup(&self, py: Python<'_>, idle_timeout: Option<f64>) -> PyResult<(usize, usize)> {
        let idle_timeout = match idle_timeout {
            // Beyond what a Duration holds means "nothing is that old": cleanup deletes nothing.
            Some(secs) if secs.is_finite() && secs > 0.0 => {
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
            }
            Some(secs) => {
                return Err(value_error(format!(
                    "idle_timeout must be a positive number of seconds, not {secs}"
                )))
            }
            None => self.store.last_ttl().ok_or_else(|| {
                value_error(
                    "no idle timeout known: pass idle_timeout=SECONDS (no manager with an \
                     idle_timeout has used this store in this process)",
                )
            })?,
        };
        // A session with a longer idle timeout of its own ("remember me") is judged by it.
        let own_idle = |blob: &[u8]| {
            tornsession_core::codec::peek_extras(blob)
                .and_then(|extras| extras.expiry.idle_timeout)
                .map(Duration::from_secs)
        };
        let report = py
            .detach(|| self.store.cleanup_with(idle_timeout, &own_idle))
            .map_err(store_error)?;
        Ok((report.expired, report.stale_temporary))
    }
}

/// Sessions in one SQLite database file, shared safely by several processes of one machine.
#[pyclass(module = "tornsession", frozen, extends = PyStore, name = "SqliteStore")]
pub struct PySqliteStore {
    store: Arc<stores::SqliteStore>,
}

#[pymethods]
impl PySqliteStore {
    #[new]
    #[pyo3(
        signature = (path, *, timeout = 5.0, durable = false),
        text_signature = "(path, *, timeout=5.0, durable=False)"
    )]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        timeout: f64,
        durable: bool,
    ) -> PyResult<PyClassInitializer<Self>> {
        let busy_timeout = positive_seconds("timeout", timeout)?;
        let store = py
            .detach(|| stores::SqliteStore::open(path, busy_timeout, durable))
            .map_err(store_error)?;
        Ok(PyStore::initializer(store, |store| Self { store }))
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    #[getter]
    fn durable(&self) -> bool {
        self.store.durable()
    }

    /// SQLite's `synchronous` setting in force: 1 (NORMAL) or 2 (FULL, with durable=True).
    fn _synchronous(&self, py: Python<'_>) -> PyResult<i64> {
        py.detach(|| self.store.synchronous()).map_err(store_error)
    }
}
