//! tornsession's Rust core: the `tornsession._core` extension module.

pub mod codec;
mod convert;
pub mod digest;
mod errors;
pub mod ids;
mod manager;
mod py_stores;
mod session;
pub mod signed_cookie;
pub mod stores;

use pyo3::pymodule;

#[pymodule]
mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::errors::{InvalidSessionException, SessionConflict, SessionStoreError};
    #[pymodule_export]
    use crate::manager::{_read_signed_cookie, SessionManager, TornadoSessionManager};
    #[pymodule_export]
    use crate::py_stores::{
        PyFileStore, PyMemcachedStore, PyMemoryStore, PyRedisClusterStore, PyRedisSentinelStore,
        PyRedisStore, PySqliteStore,
    };
    #[pymodule_export]
    use crate::session::{LoadBeforePrepare, Session, StoreTask, TornadoSession};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
