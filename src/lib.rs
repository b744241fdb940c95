//! tornsession's Rust core: the `tornsession._core` extension module.
//!
//! Pure Rust, no PyO3: `ids`, `digest`, `codec`, `signed_cookie`, `time`, `lifecycle` (every
//! decision of a session's life) and `stores`. On top, one way: the PyO3 helpers (`errors`,
//! `log`, `convert`, `options`, `tornado_cookies`, `py_stores`), then `session` (the dict
//! class), `engine` (the lifecycle's steps on real objects), `store_task`, `manager`,
//! `tornado_session`.

pub mod codec;
mod convert;
pub mod digest;
mod engine;
mod errors;
pub mod ids;
pub mod lifecycle;
mod log;
mod manager;
mod options;
mod py_stores;
mod session;
pub mod signed_cookie;
mod store_task;
pub mod stores;
pub mod time;
mod tornado_cookies;
mod tornado_session;
pub mod users;
pub mod wire;
mod wire_link;

use pyo3::pymodule;

#[pymodule]
mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::errors::{
        InvalidSessionException, SessionBusy, SessionConflict, SessionStoreError, WeakSecretWarning,
    };
    #[pymodule_export]
    use crate::manager::{SessionInfo, SessionManager, TornadoSessionManager};
    #[pymodule_export]
    use crate::py_stores::{
        _store_load, _store_save_if_exists, PyFileStore, PyMemcachedStore, PyMemoryStore,
        PyRedisClusterStore, PyRedisSentinelStore, PyRedisStore, PySqliteStore,
    };
    #[pymodule_export]
    use crate::session::Session;
    #[pymodule_export]
    use crate::store_task::StoreTask;
    #[pymodule_export]
    use crate::tornado_cookies::_read_signed_cookie;
    #[pymodule_export]
    use crate::tornado_session::{LoadBeforePrepare, TornadoSession};
    #[pymodule_export]
    use crate::wire_link::{WireConnection, WireServer};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
