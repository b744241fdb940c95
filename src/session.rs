//! `Session`, a real `dict` subclass, and `TornadoSession`, which loads itself lazily.
//!
//! Lazy loading is what stops lost updates: Tornado builds a handler (and so the session, when
//! an app creates it in `__init__`) before it runs it, and lets other requests run in between.
//! Loading at first use, or at the latest when the handler starts (`prepare`), means a sync
//! handler reads, changes and saves without another request of the same session in between.

use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use pyo3::PyTraverseError;

use crate::convert::json_into_dict;
use crate::errors::InvalidSessionException;
use crate::ids;
use crate::manager::{now, TornadoSessionManager};

/// A session's identity: the attributes the original exposes, plus when it was created.
pub struct SessionMeta {
    session_id: Py<PyAny>,
    hmac_digest: Py<PyAny>,
    created: u64,
}

impl SessionMeta {
    pub fn new(py: Python<'_>, session_id: &str, hmac_digest: &str, created: u64) -> Self {
        Self {
            session_id: PyString::new(py, session_id).into_any().unbind(),
            hmac_digest: PyString::new(py, hmac_digest).into_any().unbind(),
            created,
        }
    }

    fn unset(py: Python<'_>) -> Self {
        Self {
            session_id: py.None(),
            hmac_digest: py.None(),
            created: 0,
        }
    }
}

/// A plain `dict` with `session_id` and `hmac_digest` attributes, as in the original module.
#[pyclass(module = "tornsession", extends = PyDict, subclass, frozen)]
pub struct Session {
    meta: Mutex<SessionMeta>,
}

impl Session {
    pub fn with_meta(py: Python<'_>, meta: SessionMeta) -> PyResult<Py<Session>> {
        Py::new(
            py,
            Session {
                meta: Mutex::new(meta),
            },
        )
    }

    /// The id, checked to be one tornsession issued, and the creation time (now if unknown).
    pub fn id_and_created(&self, py: Python<'_>) -> PyResult<(String, u64)> {
        let meta = self.meta.lock();
        let id: Option<String> = meta.session_id.bind(py).extract().ok();
        match id {
            Some(id) if ids::is_valid_session_id(&id) => {
                let created = if meta.created == 0 {
                    now()
                } else {
                    meta.created
                };
                Ok((id, created))
            }
            _ => Err(PyValueError::new_err(format!(
                "session_id {} is not a session id; take sessions from SessionManager.get()",
                meta.session_id.bind(py).repr()?
            ))),
        }
    }

    pub fn set_digest(&self, py: Python<'_>, digest: &str) {
        self.meta.lock().hmac_digest = PyString::new(py, digest).into_any().unbind();
    }

    fn replace_meta(&self, meta: SessionMeta) {
        *self.meta.lock() = meta;
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
        Session {
            meta: Mutex::new(SessionMeta::unset(py)),
        }
    }

    #[pyo3(signature = (session_id = None, hmac_digest = None))]
    fn __init__(
        &self,
        py: Python<'_>,
        session_id: Option<Py<PyAny>>,
        hmac_digest: Option<Py<PyAny>>,
    ) {
        let mut meta = self.meta.lock();
        meta.session_id = session_id.unwrap_or_else(|| py.None());
        meta.hmac_digest = hmac_digest.unwrap_or_else(|| py.None());
    }

    #[getter]
    fn get_session_id(&self, py: Python<'_>) -> Py<PyAny> {
        self.meta.lock().session_id.clone_ref(py)
    }

    #[setter]
    fn set_session_id(&self, value: Py<PyAny>) {
        self.meta.lock().session_id = value;
    }

    #[getter]
    fn get_hmac_digest(&self, py: Python<'_>) -> Py<PyAny> {
        self.meta.lock().hmac_digest.clone_ref(py)
    }

    #[setter]
    fn set_hmac_digest(&self, value: Py<PyAny>) {
        self.meta.lock().hmac_digest = value;
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(meta) = self.meta.try_lock() {
            visit.call(&meta.session_id)?;
            visit.call(&meta.hmac_digest)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LoadState {
    Unloaded,
    Loading,
    Loaded,
}

struct TornadoState {
    manager: Option<Py<PyAny>>,
    handler: Option<Py<PyAny>>,
    load: LoadState,
}

/// A `Session` bound to a manager and a request handler, saved with `save()`.
///
/// Reads the store at first use (or when the handler starts), never in the constructor.
#[pyclass(module = "tornsession", extends = Session, subclass, frozen)]
pub struct TornadoSession {
    state: Mutex<TornadoState>,
}

/// `dict.<name>`, looked up once: calls on the dict's own storage, bypassing our overrides.
fn dict_method<'py>(py: Python<'py>, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    py.get_type::<PyDict>().getattr(name)
}

impl TornadoSession {
    /// The session's own dict storage.
    fn storage<'a, 'py>(slf: &'a Bound<'py, Self>) -> &'a Bound<'py, PyDict> {
        slf.as_super().as_super()
    }

    /// Loads the session from the store unless it already has been.
    pub fn ensure_loaded(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (manager, handler) =
            {
                let mut state = slf.get().state.lock();
                match state.load {
                    LoadState::Loaded => return Ok(()),
                    LoadState::Loading => return Err(PyRuntimeError::new_err(
                        "the session was used while it was being loaded (from get_secure_cookie?)",
                    )),
                    LoadState::Unloaded => {}
                }
                let (Some(manager), Some(handler)) = (&state.manager, &state.handler) else {
                    return Err(PyRuntimeError::new_err(
                        "TornadoSession.__init__(manager, handler) was not called; a subclass's \
                     __init__ must call super().__init__(tornado_session_manager, request_handler)",
                    ));
                };
                let pair = (manager.clone_ref(py), handler.clone_ref(py));
                state.load = LoadState::Loading;
                pair
            };
        let result = Self::load(slf, manager.bind(py), handler.bind(py));
        slf.get().state.lock().load = if result.is_ok() {
            LoadState::Loaded
        } else {
            LoadState::Unloaded
        };
        result
    }

    fn load(
        slf: &Bound<'_, Self>,
        manager: &Bound<'_, PyAny>,
        handler: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let storage = Self::storage(slf);
        if let Some(tornado_manager) = native_get(manager)? {
            let (meta, record) = tornado_manager.as_super().get().load_for_handler(handler)?;
            slf.as_super().get().replace_meta(meta);
            if let Some(record) = record {
                json_into_dict(&record.data, storage)?;
            }
            return Ok(());
        }
        // A manager whose get() is overridden (or another manager type): go through its API,
        // exactly as the original TornadoSession did.
        let plain = match manager.call_method1(intern!(py, "get"), (handler,)) {
            Ok(plain) => plain,
            Err(e) if e.is_instance_of::<InvalidSessionException>(py) => {
                manager.call_method0(intern!(py, "get"))?
            }
            Err(e) => return Err(e),
        };
        dict_method(py, intern!(py, "update"))?.call1((storage, &plain))?;
        let created = plain
            .cast::<Session>()
            .map(|s| s.get().meta.lock().created)
            .unwrap_or(0);
        slf.as_super().get().replace_meta(SessionMeta {
            session_id: plain.getattr(intern!(py, "session_id"))?.unbind(),
            hmac_digest: plain.getattr(intern!(py, "hmac_digest"))?.unbind(),
            created,
        });
        Ok(())
    }

    /// Loads, then calls `dict.<name>(self, *args)` on the storage.
    fn call_dict<'py>(
        slf: &Bound<'py, Self>,
        name: &Bound<'py, PyString>,
        args: &[&Bound<'py, PyAny>],
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::ensure_loaded(slf)?;
        let py = slf.py();
        let mut all = vec![Self::storage(slf).as_any()];
        all.extend_from_slice(args);
        dict_method(py, name)?.call1(PyTuple::new(py, all)?)
    }
}

/// The `TornadoSessionManager` behind `manager` when its `get` is ours, so loading can skip the
/// Python-level `get()` and the intermediate `Session` it builds.
fn native_get<'a, 'py>(
    manager: &'a Bound<'py, PyAny>,
) -> PyResult<Option<&'a Bound<'py, TornadoSessionManager>>> {
    let Ok(tornado_manager) = manager.cast::<TornadoSessionManager>() else {
        return Ok(None);
    };
    let py = manager.py();
    static NATIVE_GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let native = NATIVE_GET.get_or_try_init(py, || {
        py.get_type::<TornadoSessionManager>()
            .getattr("get")
            .map(Bound::unbind)
    })?;
    let theirs = manager.get_type().getattr(intern!(py, "get"))?;
    Ok(theirs.is(native.bind(py)).then_some(tornado_manager))
}

/// Whether Tornado has started running `handler`.
fn handler_started(handler: &Bound<'_, PyAny>) -> bool {
    let py = handler.py();
    // Tornado's _execute sets path_args on the instance as it starts the handler.
    let path_args = handler
        .getattr(intern!(py, "__dict__"))
        .ok()
        .and_then(|d| d.get_item(intern!(py, "path_args")).ok());
    match path_args {
        Some(args) => !args.is_none(),
        // Nothing with a prepare() to wait for is not a RequestHandler: nothing will start it.
        None => !handler.hasattr(intern!(py, "prepare")).unwrap_or(false),
    }
}

#[pymethods]
impl TornadoSession {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyClassInitializer<Self> {
        PyClassInitializer::from(Session {
            meta: Mutex::new(SessionMeta::unset(py)),
        })
        .add_subclass(TornadoSession {
            state: Mutex::new(TornadoState {
                manager: None,
                handler: None,
                load: LoadState::Unloaded,
            }),
        })
    }

    fn __init__(
        slf: &Bound<'_, Self>,
        tornado_session_manager: &Bound<'_, PyAny>,
        request_handler: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        {
            let mut state = slf.get().state.lock();
            state.manager = Some(tornado_session_manager.clone().unbind());
            state.handler = Some(request_handler.clone().unbind());
            state.load = LoadState::Unloaded;
        }
        if handler_started(request_handler) {
            // Created while the handler runs (in get(), say): no other request can interleave
            // before first use, so load now, and code that reads the dict's storage directly
            // (json.dumps of an empty-looking dict) sees the data.
            Self::ensure_loaded(slf)?;
        } else {
            // Built before the handler runs (in __init__ or initialize()): load at first use, or
            // at the latest when Tornado calls prepare().
            let py = slf.py();
            let own_prepare = request_handler
                .getattr(intern!(py, "__dict__"))
                .ok()
                .and_then(|d| d.get_item(intern!(py, "prepare")).ok())
                .map(Bound::unbind);
            let hook = LoadBeforePrepare {
                inner: Mutex::new(Some((slf.clone().unbind(), own_prepare))),
            };
            request_handler.setattr(intern!(py, "prepare"), hook)?;
        }
        Ok(())
    }

    #[getter]
    fn session_manager(&self, py: Python<'_>) -> Py<PyAny> {
        let state = self.state.lock();
        state
            .manager
            .as_ref()
            .map_or_else(|| py.None(), |m| m.clone_ref(py))
    }

    #[getter]
    fn request_handler(&self, py: Python<'_>) -> Py<PyAny> {
        let state = self.state.lock();
        state
            .handler
            .as_ref()
            .map_or_else(|| py.None(), |h| h.clone_ref(py))
    }

    #[getter]
    fn get_session_id(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::ensure_loaded(slf)?;
        Ok(slf.as_super().get().get_session_id(slf.py()))
    }

    #[setter]
    fn set_session_id(slf: &Bound<'_, Self>, value: Py<PyAny>) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        slf.as_super().get().set_session_id(value);
        Ok(())
    }

    #[getter]
    fn get_hmac_digest(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::ensure_loaded(slf)?;
        Ok(slf.as_super().get().get_hmac_digest(slf.py()))
    }

    #[setter]
    fn set_hmac_digest(slf: &Bound<'_, Self>, value: Py<PyAny>) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        slf.as_super().get().set_hmac_digest(value);
        Ok(())
    }

    /// Writes the session to the store and sets its cookies: `manager.set(handler, self)`.
    fn save(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (manager, handler) = {
            let state = slf.get().state.lock();
            match (&state.manager, &state.handler) {
                (Some(m), Some(h)) => (m.clone_ref(py), h.clone_ref(py)),
                _ => {
                    return Err(PyRuntimeError::new_err(
                        "TornadoSession.__init__ was not called",
                    ))
                }
            }
        };
        manager
            .bind(py)
            .call_method1(intern!(py, "set"), (handler, slf))?;
        Ok(())
    }

    // The dict protocol, each loading first. Overriding __iter__ and keys also routes dict(s),
    // {**s} and json.dumps(s) through here instead of the (possibly not yet loaded) storage.

    fn __getitem__<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::ensure_loaded(slf)?;
        Self::storage(slf)
            .get_item(key)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __setitem__(
        slf: &Bound<'_, Self>,
        key: &Bound<'_, PyAny>,
        value: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        Self::storage(slf).set_item(key, value)
    }

    fn __delitem__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        let storage = Self::storage(slf);
        if !storage.contains(key)? {
            return Err(PyKeyError::new_err(key.clone().unbind()));
        }
        storage.del_item(key)
    }

    fn __contains__(slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Self::ensure_loaded(slf)?;
        Self::storage(slf).contains(key)
    }

    fn __len__(slf: &Bound<'_, Self>) -> PyResult<usize> {
        Self::ensure_loaded(slf)?;
        Ok(Self::storage(slf).len())
    }

    fn __iter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "__iter__"), &[])
    }

    fn __reversed__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "__reversed__"), &[])
    }

    fn __repr__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "__repr__"), &[])
    }

    fn __richcmp__<'py>(
        slf: &Bound<'py, Self>,
        other: &Bound<'py, PyAny>,
        op: CompareOp,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if let Ok(other) = other.cast::<TornadoSession>() {
            Self::ensure_loaded(other)?;
        }
        match op {
            CompareOp::Eq => Self::call_dict(slf, intern!(py, "__eq__"), &[other]),
            CompareOp::Ne => Self::call_dict(slf, intern!(py, "__ne__"), &[other]),
            _ => Ok(py.NotImplemented().into_bound(py)),
        }
    }

    fn __or__<'py>(
        slf: &Bound<'py, Self>,
        other: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "__or__"), &[other])
    }

    fn __ror__<'py>(
        slf: &Bound<'py, Self>,
        other: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "__ror__"), &[other])
    }

    fn __ior__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::call_dict(slf, intern!(slf.py(), "__ior__"), &[other]).map(drop)
    }

    #[pyo3(signature = (key, default = None, /))]
    fn get<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::ensure_loaded(slf)?;
        match Self::storage(slf).get_item(key)? {
            Some(value) => Ok(value),
            None => Ok(default.unwrap_or_else(|| slf.py().None().into_bound(slf.py()))),
        }
    }

    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "keys"), &[])
    }

    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "values"), &[])
    }

    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "items"), &[])
    }

    #[pyo3(signature = (key, /, *default))]
    fn pop<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        default: &Bound<'py, PyTuple>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default: Vec<_> = default.iter().collect();
        let mut args = vec![key];
        args.extend(default.iter());
        Self::call_dict(slf, intern!(slf.py(), "pop"), &args)
    }

    fn popitem<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "popitem"), &[])
    }

    #[pyo3(signature = (key, default = None, /))]
    fn setdefault<'py>(
        slf: &Bound<'py, Self>,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default = default.unwrap_or_else(|| slf.py().None().into_bound(slf.py()));
        Self::call_dict(slf, intern!(slf.py(), "setdefault"), &[key, &default])
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn update(
        slf: &Bound<'_, Self>,
        args: &Bound<'_, PyTuple>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        let py = slf.py();
        let mut all = vec![Self::storage(slf).clone().into_any()];
        all.extend(args.iter());
        dict_method(py, intern!(py, "update"))?.call(PyTuple::new(py, all)?, kwargs)?;
        Ok(())
    }

    fn clear(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::call_dict(slf, intern!(slf.py(), "clear"), &[]).map(drop)
    }

    /// A plain `dict` copy of the items.
    fn copy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "copy"), &[])
    }

    /// Copies and pickles hold the items; the bond to a handler does not travel with them.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyType>, (Bound<'py, PyAny>,))> {
        let py = slf.py();
        Ok((
            py.get_type::<PyDict>(),
            (Self::call_dict(slf, intern!(py, "copy"), &[])?,),
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(state) = self.state.try_lock() {
            visit.call(&state.manager)?;
            visit.call(&state.handler)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let mut state = self.state.lock();
        state.manager = None;
        state.handler = None;
    }
}

/// Stands in for `handler.prepare` until the handler starts: loads the session, puts the
/// handler's own `prepare` back, then runs it.
#[pyclass(module = "tornsession", frozen)]
pub struct LoadBeforePrepare {
    inner: Mutex<Option<PendingLoad>>,
}

/// The session to load, and the handler's instance-level `prepare` the hook replaced, if any.
type PendingLoad = (Py<TornadoSession>, Option<Py<PyAny>>);

#[pymethods]
impl LoadBeforePrepare {
    fn __call__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let Some((session, own_prepare)) = self.inner.lock().take() else {
            return Ok(py.None().into_bound(py));
        };
        let session = session.into_bound(py);
        let handler = session.get().request_handler(py).into_bound(py);
        // Restore first, so the handler's own prepare is found and this hook runs once.
        match own_prepare {
            Some(own) => handler.setattr(intern!(py, "prepare"), own)?,
            None => handler.delattr(intern!(py, "prepare"))?,
        }
        TornadoSession::ensure_loaded(&session)?;
        handler.call_method0(intern!(py, "prepare"))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(inner) = self.inner.try_lock() {
            if let Some((session, own_prepare)) = &*inner {
                visit.call(session)?;
                visit.call(own_prepare)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.inner.lock().take();
    }
}
