//! `Session`, a real `dict` subclass with the original module's `session_id` and `hmac_digest`
//! attributes, and what tornsession keeps beside them between load and save.

use std::mem;

use crate::errors::value_error;
use parking_lot::Mutex;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::PyTraverseError;

use tornsession_core::ids;
use tornsession_core::lifecycle::SessionState;

/// A session's identity, as Python sees it (apps may set either attribute, as with the
/// original), and its lifecycle state.
pub struct SessionMeta {
    session_id: Py<PyAny>,
    hmac_digest: Py<PyAny>,
    pub state: SessionState,
}

impl SessionMeta {
    pub fn new(py: Python<'_>, session_id: &str, hmac_digest: &str, state: SessionState) -> Self {
        Self {
            session_id: PyString::new(py, session_id).into_any().unbind(),
            hmac_digest: PyString::new(py, hmac_digest).into_any().unbind(),
            state,
        }
    }

    /// A session made by hand (`Session()`), not yet given an id by a manager.
    pub fn unset(py: Python<'_>) -> Self {
        Self {
            session_id: py.None(),
            hmac_digest: py.None(),
            state: SessionState {
                cookies_due: true,
                ..SessionState::default()
            },
        }
    }
}

/// A plain `dict` with `session_id` and `hmac_digest` attributes, as in the original module.
#[pyclass(module = "tornsession", extends = PyDict, subclass, frozen)]
pub struct Session {
    meta: Mutex<SessionMeta>,
}

impl Session {
    /// A session with no id yet, for constructors (a subclass's `#[new]`).
    pub fn blank(py: Python<'_>) -> Self {
        Session {
            meta: Mutex::new(SessionMeta::unset(py)),
        }
    }

    pub fn with_meta(py: Python<'_>, meta: SessionMeta) -> PyResult<Py<Session>> {
        Py::new(
            py,
            Session {
                meta: Mutex::new(meta),
            },
        )
    }

    /// The id, checked to be one tornsession issued (an app may have set the attribute).
    pub fn id(&self, py: Python<'_>) -> PyResult<String> {
        let id = self.meta.lock().session_id.clone_ref(py);
        let id = id.bind(py);
        match id.extract::<String>() {
            Ok(text) if ids::is_valid_session_id(&text) => Ok(text),
            _ => Err(value_error(format!(
                "session_id {} is not a session id; take sessions from SessionManager.get()",
                id.repr()?
            ))),
        }
    }

    /// A copy of the lifecycle state.
    pub fn state(&self) -> SessionState {
        self.meta.lock().state.clone()
    }

    /// Changes the lifecycle state; `change` runs under the lock, so it must not call Python.
    pub fn update_state<T>(&self, change: impl FnOnce(&mut SessionState) -> T) -> T {
        change(&mut self.meta.lock().state)
    }

    /// Runs `change` on the identity and state under the lock and hands back what it took
    /// out, for the caller to drop after the lock is released: dropping a Python object may run
    /// its `__del__`, which may read this session, and a `parking_lot` lock taken again on the
    /// same thread deadlocks. (Python objects are made before the lock for the same reason: an
    /// allocation may run the garbage collector.)
    fn under_lock<T>(&self, change: impl FnOnce(&mut SessionMeta) -> T) -> T {
        change(&mut self.meta.lock())
    }

    /// A new id and digest (regenerate, destroy, a fresh session after a failed load).
    pub fn set_identity(&self, py: Python<'_>, session_id: &str, hmac_digest: &str) {
        let session_id = PyString::new(py, session_id).into_any().unbind();
        let hmac_digest = PyString::new(py, hmac_digest).into_any().unbind();
        let old = self.under_lock(|meta| {
            (
                mem::replace(&mut meta.session_id, session_id),
                mem::replace(&mut meta.hmac_digest, hmac_digest),
            )
        });
        drop(old);
    }

    pub fn set_digest(&self, py: Python<'_>, digest: &str) {
        self.set_hmac_digest(PyString::new(py, digest).into_any().unbind());
    }

    /// `set_user`: a str owner, checked.
    pub fn set_user(&self, user_id: &Bound<'_, PyAny>) -> PyResult<()> {
        let user_id = crate::convert::user_id_arg(user_id)?;
        tornsession_core::users::check_user_id(&user_id).map_err(value_error)?;
        self.update_state(|state| state.set_owner(user_id));
        Ok(())
    }

    /// `set_info`: JSON fields merged into the session's info, kept small.
    pub fn set_info(&self, fields: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let Some(fields) = fields else { return Ok(()) };
        let fields = crate::convert::dict_to_json(fields)?;
        let mut info = self.state().extras.info;
        info.extend(fields);
        let size = serde_json::to_vec(&info).map_or(usize::MAX, |v| v.len());
        if size > tornsession_core::users::MAX_INFO_BYTES {
            return Err(value_error(format!(
                "set_info() keeps small metadata: {size} bytes serialized, over {}",
                tornsession_core::users::MAX_INFO_BYTES
            )));
        }
        self.update_state(|state| state.extras.info = info);
        Ok(())
    }

    pub fn replace_meta(&self, meta: SessionMeta) {
        let old = self.under_lock(|current| mem::replace(current, meta));
        drop(old);
    }

    /// A copy of the identity and state, for a session that takes over another's (a manager
    /// whose `get()` is overridden hands back a plain `Session`).
    pub fn copy_meta(&self, py: Python<'_>) -> SessionMeta {
        let meta = self.meta.lock();
        SessionMeta {
            session_id: meta.session_id.clone_ref(py),
            hmac_digest: meta.hmac_digest.clone_ref(py),
            state: meta.state.clone(),
        }
    }

    /// An identity read from any object with `session_id` and `hmac_digest` attributes.
    pub fn foreign_meta(
        py: Python<'_>,
        session_id: Py<PyAny>,
        hmac_digest: Py<PyAny>,
    ) -> SessionMeta {
        SessionMeta {
            session_id,
            hmac_digest,
            ..SessionMeta::unset(py)
        }
    }
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Self {
        Self::blank(py)
    }

    #[pyo3(signature = (session_id = None, hmac_digest = None))]
    fn __init__(
        &self,
        py: Python<'_>,
        session_id: Option<Py<PyAny>>,
        hmac_digest: Option<Py<PyAny>>,
    ) {
        let session_id = session_id.unwrap_or_else(|| py.None());
        let hmac_digest = hmac_digest.unwrap_or_else(|| py.None());
        let old = self.under_lock(|meta| {
            (
                mem::replace(&mut meta.session_id, session_id),
                mem::replace(&mut meta.hmac_digest, hmac_digest),
            )
        });
        drop(old);
    }

    /// Records who owns the session (see `TornadoSession.set_user`).
    #[pyo3(name = "set_user")]
    fn py_set_user(&self, user_id: &Bound<'_, PyAny>) -> PyResult<()> {
        self.set_user(user_id)
    }

    /// The owner given to `set_user()`, or None.
    #[getter]
    fn user_id(&self) -> Option<String> {
        self.state().extras.user
    }

    /// Attaches small metadata shown in the owner's session list.
    #[pyo3(name = "set_info", signature = (**fields))]
    fn py_set_info(&self, fields: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        self.set_info(fields)
    }

    #[getter]
    pub fn get_session_id(&self, py: Python<'_>) -> Py<PyAny> {
        self.under_lock(|meta| meta.session_id.clone_ref(py))
    }

    #[setter]
    pub fn set_session_id(&self, value: Py<PyAny>) {
        drop(self.under_lock(|meta| mem::replace(&mut meta.session_id, value)));
    }

    #[getter]
    pub fn get_hmac_digest(&self, py: Python<'_>) -> Py<PyAny> {
        self.under_lock(|meta| meta.hmac_digest.clone_ref(py))
    }

    #[setter]
    pub fn set_hmac_digest(&self, value: Py<PyAny>) {
        drop(self.under_lock(|meta| mem::replace(&mut meta.hmac_digest, value)));
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(meta) = self.meta.try_lock() {
            visit.call(&meta.session_id)?;
            visit.call(&meta.hmac_digest)?;
        }
        Ok(())
    }
}
