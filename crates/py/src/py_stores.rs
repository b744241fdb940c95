//! The store classes as Python sees them, and the handle a manager keeps on its store: a native
//! Rust store, or any Python object with `get`, `set` and `delete`.

use crate::errors::store_error;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::options::SaturatingInt;
use tornsession_core::ids;
use tornsession_core::stores::{self, SessionStore, StoreError};
use tornsession_core::time::whole_seconds;

/// The number of sessions a `MemoryStore` keeps unless told otherwise.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;
/// The bytes a `MemoryStore` holds at most unless told otherwise: 256 MiB leaves the default
/// 100,000 sessions an average of about 2.5 KiB each, several times what a session typically
/// holds (a user id, a token, a few flash messages), while sessions that keep growing stop at a
/// quarter GiB instead of taking the process down.
pub const DEFAULT_MAX_BYTES: usize = 256 << 20;

/// The longest timeout a store takes, in seconds. A store call waiting longer than an hour is a
/// hung request; beyond it, durations overflow the clocks and integers they end up in.
const MAX_TIMEOUT_SECONDS: f64 = 3600.0;
/// The most connections a network store keeps (per server); pools allocate their slots ahead.
const MAX_POOL_SIZE: i64 = 1024;

/// A count from Python, refusing what is below `min` or above `max`, naming the option.
fn count(name: &str, value: i64, min: i64, max: i64) -> PyResult<usize> {
    if (min..=max).contains(&value) {
        usize::try_from(value).map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
    } else {
        Err(PyValueError::new_err(format!(
            "{name} must be from {min} to {max}, not {value}"
        )))
    }
}

/// Sessions in this process's memory: thread-safe, bounded in count and bytes; sessions used
/// on more than one request outlive a flood of sessions used once.
#[pyclass(module = "tornsession", frozen, name = "MemoryStore")]
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
    fn new(max_sessions: SaturatingInt, max_bytes: SaturatingInt) -> PyResult<Self> {
        // 2**48 sessions or bytes is past any machine's memory, and far from overflows.
        let non_zero = |name: &str, value: SaturatingInt| {
            NonZeroUsize::new(count(name, value.0, 1, 1 << 48)?)
                .ok_or_else(|| PyValueError::new_err(format!("{name} must be at least 1")))
        };
        let max_sessions = non_zero("max_sessions", max_sessions)?;
        let max_bytes = non_zero("max_bytes", max_bytes)?;
        Ok(Self {
            store: Arc::new(stores::MemoryStore::new(max_sessions, max_bytes)),
        })
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
    #[pyo3(signature = (path, *, durable = false), text_signature = "(path, *, durable=False)")]
    fn new(py: Python<'_>, path: PathBuf, durable: bool) -> PyResult<Self> {
        let store = py
            .detach(|| stores::FileStore::open(path, durable))
            .map_err(store_error)?;
        Ok(Self {
            store: Arc::new(store),
        })
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
                return Err(PyValueError::new_err(format!(
                    "idle_timeout must be a positive number of seconds, not {secs}"
                )))
            }
            None => self.store.last_ttl().ok_or_else(|| {
                PyValueError::new_err(
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

    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// A timeout from Python as a `Duration`, refusing what is not a positive number of seconds up
/// to `MAX_TIMEOUT_SECONDS` (NaN and infinities included), or rounds to nothing.
fn positive_seconds(name: &str, seconds: f64) -> PyResult<Duration> {
    if !(seconds > 0.0 && seconds <= MAX_TIMEOUT_SECONDS) {
        return Err(PyValueError::new_err(format!(
            "{name} must be a positive number of seconds up to {MAX_TIMEOUT_SECONDS}, not {seconds}"
        )));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration >= Duration::from_micros(1) => Ok(duration),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be at least a microsecond, not {seconds}"
        ))),
    }
}

/// Sessions in one SQLite database file, shared safely by several processes of one machine.
#[pyclass(module = "tornsession", frozen, name = "SqliteStore")]
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
    fn new(py: Python<'_>, path: PathBuf, timeout: f64, durable: bool) -> PyResult<Self> {
        let busy_timeout = positive_seconds("timeout", timeout)?;
        let store = py
            .detach(|| stores::SqliteStore::open(path, busy_timeout, durable))
            .map_err(store_error)?;
        Ok(Self {
            store: Arc::new(store),
        })
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

    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// Sessions in one Redis server, `redis://`, `rediss://` (TLS) or `unix://` URL.
#[pyclass(module = "tornsession", frozen, name = "RedisStore")]
pub struct PyRedisStore {
    store: Arc<stores::RedisStore>,
}

#[allow(
    clippy::too_many_arguments,
    reason = "the Redis stores' keyword arguments, checked in one place"
)]
fn redis_options(
    prefix: String,
    connect_timeout: f64,
    timeout: f64,
    pool_size: SaturatingInt,
    ssl_ca_certs: Option<PathBuf>,
    ssl_certfile: Option<PathBuf>,
    ssl_keyfile: Option<PathBuf>,
) -> PyResult<stores::RedisOptions> {
    Ok(stores::RedisOptions {
        prefix,
        connect_timeout: positive_seconds("connect_timeout", connect_timeout)?,
        timeout: positive_seconds("timeout", timeout)?,
        pool_size: count("pool_size", pool_size.0, 1, MAX_POOL_SIZE)?,
        tls: stores::TlsFiles {
            ca_certs: ssl_ca_certs,
            certfile: ssl_certfile,
            keyfile: ssl_keyfile,
        },
    })
}

#[pymethods]
impl PyRedisStore {
    #[new]
    #[pyo3(
        signature = (url, *, prefix = stores::redis::DEFAULT_PREFIX.to_owned(), connect_timeout = 1.0, timeout = 1.0, pool_size = SaturatingInt(stores::redis::DEFAULT_POOL_SIZE as i64), ssl_ca_certs = None, ssl_certfile = None, ssl_keyfile = None),
        text_signature = "(url, *, prefix='tornsession:', connect_timeout=1.0, timeout=1.0, pool_size=8, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None)"
    )]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn new(
        url: &str,
        prefix: String,
        connect_timeout: f64,
        timeout: f64,
        pool_size: SaturatingInt,
        ssl_ca_certs: Option<PathBuf>,
        ssl_certfile: Option<PathBuf>,
        ssl_keyfile: Option<PathBuf>,
    ) -> PyResult<Self> {
        let options = redis_options(
            prefix,
            connect_timeout,
            timeout,
            pool_size,
            ssl_ca_certs,
            ssl_certfile,
            ssl_keyfile,
        )?;
        let store = stores::RedisStore::new(url, options).map_err(value_error)?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    #[getter]
    fn url(&self) -> &str {
        self.store.url()
    }

    #[getter]
    fn prefix(&self) -> &str {
        &self.store.options().prefix
    }

    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// Sessions in a Redis Cluster, given the URLs of one or more of its nodes.
#[pyclass(module = "tornsession", frozen, name = "RedisClusterStore")]
pub struct PyRedisClusterStore {
    store: Arc<stores::RedisClusterStore>,
}

#[pymethods]
impl PyRedisClusterStore {
    #[new]
    #[pyo3(
        signature = (urls, *, prefix = stores::redis::DEFAULT_PREFIX.to_owned(), connect_timeout = 1.0, timeout = 1.0, pool_size = SaturatingInt(stores::redis::DEFAULT_POOL_SIZE as i64), ssl_ca_certs = None, ssl_certfile = None, ssl_keyfile = None),
        text_signature = "(urls, *, prefix='tornsession:', connect_timeout=1.0, timeout=1.0, pool_size=8, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None)"
    )]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn new(
        urls: Vec<String>,
        prefix: String,
        connect_timeout: f64,
        timeout: f64,
        pool_size: SaturatingInt,
        ssl_ca_certs: Option<PathBuf>,
        ssl_certfile: Option<PathBuf>,
        ssl_keyfile: Option<PathBuf>,
    ) -> PyResult<Self> {
        let options = redis_options(
            prefix,
            connect_timeout,
            timeout,
            pool_size,
            ssl_ca_certs,
            ssl_certfile,
            ssl_keyfile,
        )?;
        let store = stores::RedisClusterStore::new(&urls, options).map_err(value_error)?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    #[getter]
    fn urls(&self) -> Vec<String> {
        self.store.urls().to_vec()
    }

    #[getter]
    fn prefix(&self) -> &str {
        &self.store.options().prefix
    }

    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// Sessions in the master of a Redis replica set that Redis Sentinel watches; follows failovers.
#[pyclass(module = "tornsession", frozen, name = "RedisSentinelStore")]
pub struct PyRedisSentinelStore {
    store: Arc<stores::RedisSentinelStore>,
}

#[pymethods]
impl PyRedisSentinelStore {
    #[new]
    #[pyo3(
        signature = (sentinels, service_name, *, prefix = stores::redis::DEFAULT_PREFIX.to_owned(), connect_timeout = 1.0, timeout = 1.0, pool_size = SaturatingInt(stores::redis::DEFAULT_POOL_SIZE as i64), ssl = false, ssl_ca_certs = None, ssl_certfile = None, ssl_keyfile = None, db = 0, username = None, password = None),
        text_signature = "(sentinels, service_name, *, prefix='tornsession:', connect_timeout=1.0, timeout=1.0, pool_size=8, ssl=False, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None, db=0, username=None, password=None)"
    )]
    #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
    fn new(
        sentinels: Vec<String>,
        service_name: &str,
        prefix: String,
        connect_timeout: f64,
        timeout: f64,
        pool_size: SaturatingInt,
        ssl: bool,
        ssl_ca_certs: Option<PathBuf>,
        ssl_certfile: Option<PathBuf>,
        ssl_keyfile: Option<PathBuf>,
        db: i64,
        username: Option<String>,
        password: Option<String>,
    ) -> PyResult<Self> {
        let options = redis_options(
            prefix,
            connect_timeout,
            timeout,
            pool_size,
            ssl_ca_certs,
            ssl_certfile,
            ssl_keyfile,
        )?;
        let master = stores::SentinelMasterOptions {
            ssl,
            db,
            username,
            password,
        };
        let store = stores::RedisSentinelStore::new(&sentinels, service_name, master, options)
            .map_err(value_error)?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    #[getter]
    fn sentinels(&self) -> Vec<String> {
        self.store.sentinels().to_vec()
    }

    #[getter]
    fn service_name(&self) -> &str {
        self.store.service_name()
    }

    #[getter]
    fn prefix(&self) -> &str {
        &self.store.options().prefix
    }

    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// Sessions in one or several memcached servers, keys spread across them.
#[pyclass(module = "tornsession", frozen, name = "MemcachedStore")]
pub struct PyMemcachedStore {
    store: Arc<stores::MemcachedStore>,
}

#[pymethods]
impl PyMemcachedStore {
    #[new]
    #[pyo3(
        signature = (servers, *, prefix = stores::memcached::DEFAULT_PREFIX.to_owned(), connect_timeout = 1.0, timeout = 1.0, pool_size = SaturatingInt(i64::from(stores::memcached::DEFAULT_POOL_SIZE))),
        text_signature = "(servers, *, prefix='tornsession:', connect_timeout=1.0, timeout=1.0, pool_size=8)"
    )]
    fn new(
        servers: Vec<String>,
        prefix: String,
        connect_timeout: f64,
        timeout: f64,
        pool_size: SaturatingInt,
    ) -> PyResult<Self> {
        let pool_size = count("pool_size", pool_size.0, 1, MAX_POOL_SIZE)?;
        let options = stores::MemcachedOptions {
            prefix,
            connect_timeout: positive_seconds("connect_timeout", connect_timeout)?,
            timeout: positive_seconds("timeout", timeout)?,
            pool_size: u32::try_from(pool_size).unwrap_or(u32::MAX),
        };
        let store = stores::MemcachedStore::new(&servers, options).map_err(value_error)?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    #[getter]
    fn servers(&self) -> Vec<String> {
        self.store.servers().to_vec()
    }

    #[getter]
    fn prefix(&self) -> &str {
        &self.store.options().prefix
    }

    fn __repr__(&self) -> String {
        self.store.describe()
    }
}

/// A store's constructor refusing its arguments (a bad URL, a zero timeout) is a ValueError.
fn value_error(error: StoreError) -> PyErr {
    PyValueError::new_err(error.to_string())
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
        if let Ok(sqlite) = store.cast::<PySqliteStore>() {
            return Ok(Self::Native(sqlite.get().store.clone()));
        }
        if let Ok(redis) = store.cast::<PyRedisStore>() {
            return Ok(Self::Native(redis.get().store.clone()));
        }
        if let Ok(cluster) = store.cast::<PyRedisClusterStore>() {
            return Ok(Self::Native(cluster.get().store.clone()));
        }
        if let Ok(sentinel) = store.cast::<PyRedisSentinelStore>() {
            return Ok(Self::Native(sentinel.get().store.clone()));
        }
        if let Ok(memcached) = store.cast::<PyMemcachedStore>() {
            return Ok(Self::Native(memcached.get().store.clone()));
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

    /// Whether calls may wait on I/O: every store but the MemoryStore (Python stores: assume so).
    pub fn blocks(&self) -> bool {
        match self {
            Self::Native(store) => store.blocks(),
            Self::Python(_) => true,
        }
    }

    /// Whether the async API runs a load inline (see `SessionStore::loads_inline`).
    pub fn loads_inline(&self) -> bool {
        match self {
            Self::Native(store) => store.loads_inline(),
            Self::Python(_) => false,
        }
    }

    /// The store's own protocol for the async API's connections (see `tornsession_core::wire`).
    pub fn wire(&self) -> Option<&dyn tornsession_core::stores::WireStore> {
        match self {
            Self::Native(store) => store.wire(),
            Self::Python(_) => None,
        }
    }

    /// Whether the async API runs a save or delete inline.
    pub fn saves_inline(&self) -> bool {
        match self {
            Self::Native(store) => store.saves_inline(),
            Self::Python(_) => false,
        }
    }

    #[allow(
        dead_code,
        reason = "unused; dead code pyo3's multiple-pymethods lets rustc see"
    )]
    pub fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            Self::Native(store) => Self::Native(store.clone()),
            Self::Python(store) => Self::Python(store.clone_ref(py)),
        }
    }

    pub fn default_memory() -> Self {
        let max_sessions = NonZeroUsize::new(DEFAULT_MAX_SESSIONS).expect("non-zero constant");
        let max_bytes = NonZeroUsize::new(DEFAULT_MAX_BYTES).expect("non-zero constant");
        Self::Native(Arc::new(stores::MemoryStore::new(max_sessions, max_bytes)))
    }

    pub fn file(py: Python<'_>, folder: PathBuf) -> PyResult<Self> {
        let store = py
            .detach(|| stores::FileStore::open(folder, false))
            .map_err(store_error)?;
        Ok(Self::Native(Arc::new(store)))
    }

    /// Loads a record; with `refresh`, also moves its expiry that far ahead (and never returns
    /// a record idle for longer). A record above `max_bytes` is an `OversizedRecord` error.
    pub fn load(
        &self,
        py: Python<'_>,
        session_id: &str,
        refresh: Option<Duration>,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.load_unscrubbed(py, session_id, refresh, &|_| None, max_bytes)
            .map_err(|e| e.without_id(session_id))
    }

    /// `load`, moving the expiry to the record's own idle timeout (`ttl_of(blob)`) when it
    /// has one.
    pub fn load_refreshing(
        &self,
        py: Python<'_>,
        session_id: &str,
        refresh: Option<Duration>,
        ttl_of: &(dyn Fn(&[u8]) -> Option<Duration> + Sync),
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.load_unscrubbed(py, session_id, refresh, ttl_of, max_bytes)
            .map_err(|e| e.without_id(session_id))
    }

    fn load_unscrubbed(
        &self,
        py: Python<'_>,
        session_id: &str,
        refresh: Option<Duration>,
        ttl_of: &(dyn Fn(&[u8]) -> Option<Duration> + Sync),
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Native(store) => {
                let load = || store.load_refreshing(session_id, refresh, ttl_of, max_bytes);
                if store.blocks() {
                    py.detach(load)
                } else {
                    load()
                }
            }
            Self::Python(store) => {
                let store = store.bind(py);
                let key = python_key(session_id);
                let found = store
                    .call_method1(intern!(py, "get"), (&key,))
                    .map_err(|e| python_store_error(store, "get", e))?;
                if found.is_none() {
                    return Ok(None);
                }
                let blob = found
                    .extract::<Vec<u8>>()
                    .map_err(|e| python_store_error(store, "get", e))?;
                if blob.len() > max_bytes {
                    return Err(StoreError {
                        store: self.describe(py),
                        cause: format!(
                            "the record of session {} holds {} bytes, more than the {max_bytes} \
                             a load reads",
                            ids::log_token(session_id),
                            blob.len()
                        ),
                        kind: stores::StoreErrorKind::OversizedRecord,
                    });
                }
                // touch() is optional for Python stores; without it, expiry moves on save only.
                if let Some(ttl) = ttl_of(&blob).or(refresh) {
                    if store.hasattr(intern!(py, "touch")).unwrap_or(false) {
                        store
                            .call_method1(intern!(py, "touch"), (&key, whole_seconds(ttl)))
                            .map_err(|e| python_store_error(store, "touch", e))?;
                    }
                }
                Ok(Some(blob))
            }
        }
    }

    /// Saves only over an existing record: `Ok(false)`, writing nothing, when there is none.
    /// Python stores use their `set_if_exists(key, value, ttl)` when they have one (atomic if
    /// theirs is); otherwise `get` then `set`, which a delete between the two can slip past.
    pub fn save_if_exists(
        &self,
        py: Python<'_>,
        session_id: &str,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        self.save_if_exists_unscrubbed(py, session_id, blob, ttl)
            .map_err(|e| e.without_id(session_id))
    }

    fn save_if_exists_unscrubbed(
        &self,
        py: Python<'_>,
        session_id: &str,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Native(store) if store.blocks() => {
                py.detach(|| store.save_if_exists(session_id, blob, ttl))
            }
            Self::Native(store) => store.save_if_exists(session_id, blob, ttl),
            Self::Python(store) => {
                let store = store.bind(py);
                let key = python_key(session_id);
                let ttl = ttl.map(whole_seconds);
                if store.hasattr(intern!(py, "set_if_exists")).unwrap_or(false) {
                    store
                        .call_method1(
                            intern!(py, "set_if_exists"),
                            (&key, PyBytes::new(py, blob), ttl),
                        )
                        .and_then(|answer| answer.is_truthy())
                        .map_err(|e| python_store_error(store, "set_if_exists", e))
                } else {
                    let found = store
                        .call_method1(intern!(py, "get"), (&key,))
                        .map_err(|e| python_store_error(store, "get", e))?;
                    if found.is_none() {
                        return Ok(false);
                    }
                    store
                        .call_method1(intern!(py, "set"), (&key, PyBytes::new(py, blob), ttl))
                        .map(|_| true)
                        .map_err(|e| python_store_error(store, "set", e))
                }
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
                let ttl = ttl.map(whole_seconds);
                let args = (python_key(session_id), PyBytes::new(py, blob), ttl);
                store
                    .call_method1(intern!(py, "set"), args)
                    .map(drop)
                    .map_err(|e| python_store_error(store, "set", e))
            }
        }
        .map_err(|e| e.without_id(session_id))
    }

    #[allow(
        dead_code,
        reason = "session destroy() arrives with the lifecycle work"
    )]
    /// Saves only if the record still is `expected`; a conflict error when it is not.
    pub fn save_if_unchanged(
        &self,
        py: Python<'_>,
        session_id: &str,
        expected: Option<&[u8]>,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let (written, describe) = match self {
            Self::Native(store) => {
                let save = || store.save_if_unchanged(session_id, expected, blob, ttl);
                let written = if store.blocks() {
                    py.detach(save)
                } else {
                    save()
                }
                .map_err(|e| e.without_id(session_id))?;
                (written, store.describe())
            }
            Self::Python(store) => {
                let store = store.bind(py);
                let args = (
                    python_key(session_id),
                    expected.map(|e| PyBytes::new(py, e)),
                    PyBytes::new(py, blob),
                    ttl.map(whole_seconds),
                );
                let written = store
                    .call_method1(intern!(py, "compare_and_set"), args)
                    .and_then(|answer| answer.is_truthy())
                    .map_err(|e| python_store_error(store, "compare_and_set", e))
                    .map_err(|e| e.without_id(session_id))?;
                (written, self.describe(py))
            }
        };
        let describe = describe.replace(session_id, &ids::log_token(session_id));
        if written {
            return Ok(());
        }
        Err(StoreError {
            store: describe,
            cause: format!(
                "session {} was saved by another request since it was loaded",
                ids::log_token(session_id)
            ),
            kind: stores::StoreErrorKind::Conflict,
        })
    }

    /// Whether conditional saves work on this store (Python objects need compare_and_set).
    pub fn supports_conflict_checks(&self, py: Python<'_>) -> bool {
        match self {
            Self::Native(_) => true,
            Self::Python(store) => store
                .bind(py)
                .hasattr(intern!(py, "compare_and_set"))
                .unwrap_or(false),
        }
    }

    /// Removes a record; whether there was one (for a Python store: a `get` before the
    /// `delete`, not atomic).
    pub fn delete(&self, py: Python<'_>, session_id: &str) -> Result<bool, StoreError> {
        match self {
            Self::Native(store) if store.blocks() => py.detach(|| store.delete(session_id)),
            Self::Native(store) => store.delete(session_id),
            Self::Python(store) => {
                let store = store.bind(py);
                let key = python_key(session_id);
                let existed = store
                    .call_method1(intern!(py, "get"), (&key,))
                    .map(|found| !found.is_none())
                    .map_err(|e| python_store_error(store, "get", e))?;
                store
                    .call_method1(intern!(py, "delete"), (&key,))
                    .map(|_| existed)
                    .map_err(|e| python_store_error(store, "delete", e))
            }
        }
        .map_err(|e| e.without_id(session_id))
    }

    /// Files `session_id` under the user key (see `SessionStore::index_user`). Python stores
    /// do it with their optional `add_to_user(user_key, key, ttl)`.
    pub fn index_user(
        &self,
        py: Python<'_>,
        user_key: &str,
        session_id: &str,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Native(store) => {
                self.native(py, store, || store.index_user(user_key, session_id, ttl))
            }
            Self::Python(store) => self
                .call_user_method(
                    py,
                    store.bind(py),
                    "add_to_user",
                    "set_user()",
                    (user_key, python_key(session_id), ttl.map(whole_seconds)),
                )
                .map(drop),
        }
        .map_err(|e| e.without_id(session_id))
    }

    /// Takes `session_id` out of the user key's index; Python stores: `remove_from_user`.
    pub fn unindex_user(
        &self,
        py: Python<'_>,
        user_key: &str,
        session_id: &str,
    ) -> Result<(), StoreError> {
        match self {
            Self::Native(store) => {
                self.native(py, store, || store.unindex_user(user_key, session_id))
            }
            Self::Python(store) => self
                .call_user_method(
                    py,
                    store.bind(py),
                    "remove_from_user",
                    "set_user()",
                    (user_key, python_key(session_id)),
                )
                .map(drop),
        }
        .map_err(|e| e.without_id(session_id))
    }

    /// Moves an index entry's expiry with its record's (Redis); nothing elsewhere.
    pub fn touch_user(
        &self,
        py: Python<'_>,
        user_key: &str,
        session_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Self::Native(store) => {
                self.native(py, store, || store.touch_user(user_key, session_id, ttl))
            }
            Self::Python(_) => Ok(()),
        }
        .map_err(|e| e.without_id(session_id))
    }

    /// The ids filed under the user key; Python stores: `user_keys(user_key)`, a list of the
    /// keys given to `add_to_user`.
    pub fn user_session_ids(
        &self,
        py: Python<'_>,
        user_key: &str,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Native(store) => self.native(py, store, || store.user_session_ids(user_key)),
            Self::Python(store) => {
                let store = store.bind(py);
                let keys =
                    self.call_user_method(py, store, "user_keys", "user_sessions()", (user_key,))?;
                let keys: Vec<String> = keys
                    .extract()
                    .map_err(|e| python_store_error(store, "user_keys", e))?;
                // Only keys that are ours and name a session id; anything else is ignored.
                Ok(keys
                    .iter()
                    .filter_map(|key| key.strip_prefix(PYTHON_STORE_PREFIX))
                    .filter(|id| ids::is_valid_session_id(id))
                    .map(str::to_owned)
                    .collect())
            }
        }
    }

    /// The largest record the store takes (see `SessionStore::max_record_size`).
    pub fn max_record_size(&self) -> Option<usize> {
        match self {
            Self::Native(store) => store.max_record_size(),
            Self::Python(_) => None,
        }
    }

    /// Whether the store ends a user's sessions by generation (memcached); never a Python store.
    pub fn revokes_by_generation(&self) -> bool {
        match self {
            Self::Native(store) => store.revokes_by_generation(),
            Self::Python(_) => false,
        }
    }

    /// The user's generation (see `SessionStore::user_generation`).
    pub fn user_generation(
        &self,
        py: Python<'_>,
        user_key: &str,
    ) -> Result<Option<u64>, StoreError> {
        match self {
            Self::Native(store) => self.native(py, store, || store.user_generation(user_key)),
            Self::Python(_) => Err(StoreError::unsupported(
                self.describe(py),
                "a generation counter",
            )),
        }
    }

    /// Moves the user's generation on (see `SessionStore::bump_user_generation`).
    pub fn bump_user_generation(
        &self,
        py: Python<'_>,
        user_key: &str,
    ) -> Result<tornsession_core::users::Bump, StoreError> {
        match self {
            Self::Native(store) => self.native(py, store, || store.bump_user_generation(user_key)),
            Self::Python(_) => Err(StoreError::unsupported(
                self.describe(py),
                "a generation counter",
            )),
        }
    }

    /// Runs a native store call, without the GIL when it may block.
    fn native<T: Send>(
        &self,
        py: Python<'_>,
        store: &Arc<dyn SessionStore>,
        call: impl FnOnce() -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        if store.blocks() {
            py.detach(call)
        } else {
            call()
        }
    }

    /// Calls an optional per-user method of a Python store; `Unsupported` when it has none.
    fn call_user_method<'py>(
        &self,
        py: Python<'py>,
        store: &Bound<'py, PyAny>,
        method: &str,
        what: &str,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> Result<Bound<'py, PyAny>, StoreError> {
        if !store.hasattr(method).unwrap_or(false) {
            return Err(StoreError::unsupported(
                self.describe(py),
                &format!("{what} (this Python store has no {method}())"),
            ));
        }
        store
            .call_method1(method, args)
            .map_err(|e| python_store_error(store, method, e))
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

/// `StoreHandle::save_if_exists` on any store a manager takes, for the test suite (the manager
/// adopts it with the lifecycle work).
#[pyfunction]
#[pyo3(signature = (store, session_id, blob, ttl = None))]
pub fn _store_save_if_exists(
    py: Python<'_>,
    store: &Bound<'_, PyAny>,
    session_id: &str,
    blob: &[u8],
    ttl: Option<u64>,
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
    py: Python<'py>,
    store: &Bound<'py, PyAny>,
    session_id: &str,
    max_bytes: usize,
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
        Err(PyValueError::new_err("not a session id"))
    }
}

fn python_key(session_id: &str) -> String {
    format!("{PYTHON_STORE_PREFIX}{session_id}")
}

/// A Python store's exception as a store error. Its message may well quote the key (a
/// `KeyError('tornsession:<id>')`); callers scrub the id with `StoreError::without_id`.
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
