//! The `tornsession` logger. Session ids never appear in messages, only `ids::log_token` hashes.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

#[derive(Clone, Copy)]
pub enum Level {
    Info,
    Warning,
}

/// Logs on the `tornsession` logger; a logging failure never fails the request.
pub fn log(py: Python<'_>, level: Level, message: &str) {
    static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let logger = LOGGER.get_or_try_init(py, || {
        py.import("logging")?
            .call_method1("getLogger", ("tornsession",))
            .map(Bound::unbind)
    });
    if let Ok(logger) = logger {
        let method = match level {
            Level::Info => intern!(py, "info"),
            Level::Warning => intern!(py, "warning"),
        };
        let _ = logger.bind(py).call_method1(method, (message,));
    }
}
