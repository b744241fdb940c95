//! The `tornsession._core` extension module: the PyO3 layer over `tornsession_core`.
//!
//! From the bottom up: `errors` (the one place Rust errors become Python exceptions), `log`,
//! `convert`, `options`, `cookie_jar`, `tornado_cookies`, `py_stores` (the store classes), then `session`
//! (the dict class), `wire_link` (asyncio connections around core's reply queue), `engine` (the
//! lifecycle's steps on real objects, and core's per-user operations on the manager's store),
//! `store_task`, `manager`, `tornado_session`.

mod convert;
mod cookie_jar;
mod engine;
mod errors;
mod log;
mod manager;
mod metrics;
mod options;
mod py_stores;
mod session;
mod store_task;
mod tornado_cookies;
mod tornado_session;
mod turns;
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
    use crate::metrics::_process_metrics;
    #[pymodule_export]
    use crate::py_stores::{
        _store_copy_in, _store_delete_listed, _store_load, _store_load_listed,
        _store_save_if_exists, _store_session_ids, PyCookieStore, PyFileStore, PyMemcachedStore,
        PyMemoryStore, PyRedisClusterStore, PyRedisSentinelStore, PyRedisStore, PySqliteStore,
        PyStore,
    };
    #[pymodule_export]
    use crate::session::Session;
    // Internal classes under private names: the async glue in tornsession._session and
    // tornsession._wire uses them, nobody else.
    #[pymodule_export]
    use crate::store_task::StoreTask;
    #[pymodule_export]
    use crate::tornado_cookies::_read_signed_cookie;
    #[pymodule_export]
    use crate::tornado_session::{
        _Ready, _mixin_finish, _mixin_prepare, release_when_finished_py, TornadoSession,
    };
    #[pymodule_export]
    use crate::turns::{
        _clear_turns_after_fork, _enqueue_for_turn, _turns_in_table, take_turn_now_py, Turn,
    };
    #[pymodule_export]
    use crate::wire_link::{WireConnection, WireServer};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
