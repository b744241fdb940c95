//! The exceptions tornsession raises, and the one place Rust errors become them.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyNotImplementedError, PyRuntimeError, PyTypeError, PyUserWarning, PyValueError,
};
use pyo3::prelude::*;
use pyo3::PyErr;

use crate::tornado_cookies::CookiesTooLate;
use tornsession_core::digest::SecretError;
use tornsession_core::stores::{StoreError, StoreErrorKind};

create_exception!(
    tornsession,
    InvalidSessionException,
    PyException,
    "The session id and digest from the request do not match: a forged or foreign cookie."
);
create_exception!(
    tornsession,
    SessionStoreError,
    PyException,
    "The session store could not load, save or delete a session; the message names the store."
);

create_exception!(
    tornsession,
    SessionConflict,
    PyException,
    "Another request saved this session since it was loaded; nothing was written (only with \
     detect_conflicts=True). Load it again and redo the change."
);

create_exception!(
    tornsession,
    SessionBusy,
    SessionStoreError,
    "An earlier request of the same session did not finish within the manager's order_timeout; \
     this request was not served with the session (see order_requests)."
);

create_exception!(
    tornsession,
    WeakSecretWarning,
    PyUserWarning,
    "A session secret is short enough to be guessed offline from one digest cookie."
);

/// A store's failure as the exception its kind says. (A function, not `From`: both types are
/// foreign to this crate.)
pub fn store_error(error: StoreError) -> PyErr {
    match error.kind {
        StoreErrorKind::Conflict => SessionConflict::new_err(error.to_string()),
        StoreErrorKind::Unsupported => PyNotImplementedError::new_err(error.to_string()),
        _ => SessionStoreError::new_err(error.to_string()),
    }
}

/// An id and digest (`message` says from where) that do not match: a forged or foreign cookie.
pub fn invalid_session(message: &'static str) -> PyErr {
    InvalidSessionException::new_err(message)
}

/// A secret the manager cannot use: the caller's ValueError.
pub fn secret_error(error: SecretError) -> PyErr {
    value_error(error)
}

/// A store's constructor refusing its arguments (a bad URL, a zero timeout): a ValueError.
pub fn store_argument_error(error: StoreError) -> PyErr {
    value_error(error)
}

/// An argument with a value out of its range, or an option the checks refuse: a ValueError.
pub fn value_error(message: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(message.to_string())
}

/// An argument of a type the call does not take: a TypeError.
pub fn argument_type_error(message: impl std::fmt::Display) -> PyErr {
    PyTypeError::new_err(message.to_string())
}

/// `{what}, not {the value's type}`, a TypeError: `user_id must be a str, not int`.
pub fn wrong_type(what: &str, value: &Bound<'_, PyAny>) -> PyErr {
    argument_type_error(format!("{what}, not {}", type_name(value)))
}

/// The name of `value`'s type, for messages.
pub fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// A handler's mistake, as Tornado reports its own (`write()` after `finish()`): a RuntimeError.
impl From<CookiesTooLate> for PyErr {
    fn from(error: CookiesTooLate) -> Self {
        PyRuntimeError::new_err(error.to_string())
    }
}
