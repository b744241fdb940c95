//! `Session`, a real `dict` subclass, and `TornadoSession`, which loads itself lazily.
//!
//! Lazy loading is what stops lost updates: Tornado builds a handler (and so the session, when
//! an app creates it in `__init__`) before it runs it, and lets other requests run in between.
//! Loading at first use, or at the latest when the handler starts (`prepare`), means a sync
//! handler reads, changes and saves without another request of the same session in between.

use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType, PyWeakrefReference};
use pyo3::PyTraverseError;

use crate::convert::json_into_dict;
use crate::errors::InvalidSessionException;
use crate::ids;
use crate::manager::{
    log, now, CookieCheck, Level, SavePlan, SessionManager, TornadoSessionManager, Verified,
};
use crate::stores::StoreError;

/// A session's identity and what the manager must remember about it between load and save.
pub struct SessionMeta {
    session_id: Py<PyAny>,
    hmac_digest: Py<PyAny>,
    /// When the session was created, in seconds since the epoch (0: not known yet).
    created: u64,
    /// The record as last loaded or saved; `None` for a session not stored yet.
    stored_blob: Option<Vec<u8>>,
    /// Whether the cookies must be sent with the next save.
    cookies_due: bool,
}

impl SessionMeta {
    pub fn new(
        py: Python<'_>,
        session_id: &str,
        hmac_digest: &str,
        created: u64,
        stored_blob: Option<Vec<u8>>,
        cookies_due: bool,
    ) -> Self {
        Self {
            session_id: PyString::new(py, session_id).into_any().unbind(),
            hmac_digest: PyString::new(py, hmac_digest).into_any().unbind(),
            created,
            stored_blob,
            cookies_due,
        }
    }

    fn unset(py: Python<'_>) -> Self {
        Self {
            session_id: py.None(),
            hmac_digest: py.None(),
            created: 0,
            stored_blob: None,
            cookies_due: true,
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

    /// Whether `blob` is exactly what the store holds for this session.
    pub fn is_stored_as(&self, blob: &[u8]) -> bool {
        self.meta.lock().stored_blob.as_deref() == Some(blob)
    }

    /// The record as last loaded or saved.
    pub fn stored_blob(&self) -> Option<Vec<u8>> {
        self.meta.lock().stored_blob.clone()
    }

    /// Remembers `blob` as stored; true when this was the session's first write.
    pub fn mark_stored(&self, blob: Vec<u8>) -> bool {
        let mut meta = self.meta.lock();
        if meta.created == 0 {
            meta.created = now();
        }
        meta.stored_blob.replace(blob).is_none()
    }

    /// The id, when the cookies are due (and no longer due once returned).
    pub fn take_cookies_due(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let due = std::mem::replace(&mut self.meta.lock().cookies_due, false);
        if !due {
            return Ok(None);
        }
        self.id_and_created(py).map(|(id, _)| Some(id))
    }

    /// The id of the stored record, if this session has one.
    pub fn stored_id(&self, py: Python<'_>) -> Option<String> {
        let meta = self.meta.lock();
        meta.stored_blob.as_ref()?;
        meta.session_id.bind(py).extract().ok()
    }

    pub fn set_digest(&self, py: Python<'_>, digest: &str) {
        self.meta.lock().hmac_digest = PyString::new(py, digest).into_any().unbind();
    }

    fn replace_meta(&self, meta: SessionMeta) {
        *self.meta.lock() = meta;
    }

    /// Takes a new id (and digest) for the same data; the data must be written again under it.
    fn rotate_id(&self, fresh: SessionMeta) {
        let mut meta = self.meta.lock();
        meta.session_id = fresh.session_id;
        meta.hmac_digest = fresh.hmac_digest;
        meta.stored_blob = None;
        meta.cookies_due = true;
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

/// The session's request handler, held weakly where it can be: the handler holds the session
/// (`self.session`), so a strong reference back would make every request a reference cycle,
/// left for the cyclic garbage collector instead of freed when the request ends.
enum HandlerRef {
    Weak(Py<PyWeakrefReference>),
    Strong(Py<PyAny>),
}

impl HandlerRef {
    fn new(handler: &Bound<'_, PyAny>) -> Self {
        match PyWeakrefReference::new(handler) {
            Ok(weak) => Self::Weak(weak.unbind()),
            // An object without weak reference support (__slots__): hold it.
            Err(_) => Self::Strong(handler.clone().unbind()),
        }
    }

    fn get(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        match self {
            Self::Weak(weak) => weak.bind(py).upgrade().map(Bound::unbind),
            Self::Strong(handler) => Some(handler.clone_ref(py)),
        }
    }
}

struct TornadoState {
    manager: Option<Py<PyAny>>,
    handler: Option<HandlerRef>,
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
        match Self::begin_load(slf)? {
            None => Ok(()),
            Some(task) => {
                task.get().run(slf.py());
                Self::end_load(slf, &task)
            }
        }
    }

    /// The manager and handler this session was built with.
    fn bound_pair(&self, py: Python<'_>) -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let state = self.state.lock();
        match (&state.manager, &state.handler) {
            (Some(manager), Some(handler)) => match handler.get(py) {
                Some(handler) => Ok((manager.clone_ref(py), handler)),
                None => Err(PyRuntimeError::new_err(
                    "the session's request handler no longer exists",
                )),
            },
            _ => Err(PyRuntimeError::new_err(
                "TornadoSession.__init__(manager, handler) was not called; a subclass's \
                 __init__ must call super().__init__(tornado_session_manager, request_handler)",
            )),
        }
    }

    fn set_load_state(&self, load: LoadState) {
        self.state.lock().load = load;
    }

    /// First load step, on the handler's thread: reads the cookies. Returns the store work
    /// still to do, or `None` when the session is already complete (loaded, or fresh).
    fn begin_load<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, StoreTask>>> {
        let py = slf.py();
        {
            let mut state = slf.get().state.lock();
            match state.load {
                LoadState::Loaded => return Ok(None),
                LoadState::Loading => {
                    return Err(PyRuntimeError::new_err(
                        "the session was used while it was being loaded",
                    ))
                }
                LoadState::Unloaded => state.load = LoadState::Loading,
            }
        }
        let started = (|| {
            let (manager, handler) = slf.get().bound_pair(py)?;
            let (manager, handler) = (manager.bind(py), handler.bind(py));
            let Some(native) = native_manager(manager, intern!(py, "get"))? else {
                Self::load_through_python(slf, manager, handler)?;
                return Ok(None);
            };
            match native.get().check_cookies(handler)? {
                CookieCheck::Fresh => {
                    slf.as_super()
                        .get()
                        .replace_meta(native.get().fresh_meta(py)?);
                    Ok(None)
                }
                CookieCheck::Verified(verified) => {
                    let task = StoreTask::new(native.clone().unbind(), Job::Load(Some(verified)));
                    Ok(Some(Bound::new(py, task)?))
                }
            }
        })();
        match &started {
            Ok(None) => slf.get().set_load_state(LoadState::Loaded),
            Ok(Some(_)) => {}
            Err(_) => slf.get().set_load_state(LoadState::Unloaded),
        }
        started
    }

    /// Last load step, on the handler's thread: turns the store's answer into the session.
    fn end_load(slf: &Bound<'_, Self>, task: &Bound<'_, StoreTask>) -> PyResult<()> {
        let py = slf.py();
        let finished = (|| {
            let (manager, verified, fetched) = task.get().take_load()?;
            let (meta, data) = manager.bind(py).get().open(py, verified, fetched)?;
            slf.as_super().get().replace_meta(meta);
            if let Some(data) = data {
                json_into_dict(&data, Self::storage(slf))?;
            }
            Ok(())
        })();
        slf.get().set_load_state(if finished.is_ok() {
            LoadState::Loaded
        } else {
            LoadState::Unloaded
        });
        finished
    }

    /// A manager whose get() is overridden (or another manager type): go through its API,
    /// exactly as the original TornadoSession did.
    fn load_through_python(
        slf: &Bound<'_, Self>,
        manager: &Bound<'_, PyAny>,
        handler: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let plain = match manager.call_method1(intern!(py, "get"), (handler,)) {
            Ok(plain) => plain,
            Err(e) if e.is_instance_of::<InvalidSessionException>(py) => {
                manager.call_method0(intern!(py, "get"))?
            }
            Err(e) => return Err(e),
        };
        dict_method(py, intern!(py, "update"))?.call1((Self::storage(slf), &plain))?;
        let meta = match plain.cast::<Session>() {
            Ok(session) => {
                let theirs = session.get().meta.lock();
                SessionMeta {
                    session_id: theirs.session_id.clone_ref(py),
                    hmac_digest: theirs.hmac_digest.clone_ref(py),
                    created: theirs.created,
                    stored_blob: theirs.stored_blob.clone(),
                    cookies_due: theirs.cookies_due,
                }
            }
            Err(_) => SessionMeta {
                session_id: plain.getattr(intern!(py, "session_id"))?.unbind(),
                hmac_digest: plain.getattr(intern!(py, "hmac_digest"))?.unbind(),
                ..SessionMeta::unset(py)
            },
        };
        slf.as_super().get().replace_meta(meta);
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

/// The manager behind `manager` when `method` (get or set) is tornsession's own, so the session
/// can skip the Python-level call (and the intermediate `Session` that `get()` builds). A
/// subclass that overrides the method is called through Python instead.
fn native_manager<'py>(
    manager: &Bound<'py, PyAny>,
    method: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, SessionManager>>> {
    let Ok(tornado_manager) = manager.cast::<TornadoSessionManager>() else {
        return Ok(None);
    };
    let py = manager.py();
    let ours = py.get_type::<TornadoSessionManager>().getattr(method)?;
    let theirs = manager.get_type().getattr(method)?;
    Ok(theirs.is(&ours).then(|| tornado_manager.as_super().clone()))
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
        Self::_bind(slf, tornado_session_manager, request_handler);
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

    /// Binds the session to a manager and handler without loading it (for `aload`).
    fn _bind(
        slf: &Bound<'_, Self>,
        tornado_session_manager: &Bound<'_, PyAny>,
        request_handler: &Bound<'_, PyAny>,
    ) {
        let mut state = slf.get().state.lock();
        state.manager = Some(tornado_session_manager.clone().unbind());
        state.handler = Some(HandlerRef::new(request_handler));
        state.load = LoadState::Unloaded;
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
            .and_then(|h| h.get(py))
            .unwrap_or_else(|| py.None())
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

    /// Writes the session to the store if it changed and sets its cookies when they are due:
    /// `manager.set(handler, self)`.
    fn save(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (manager, handler) = slf.get().bound_pair(py)?;
        manager
            .bind(py)
            .call_method1(intern!(py, "set"), (handler, slf))?;
        Ok(())
    }

    /// A new id and digest for the same data: the data is saved under the new id, the old
    /// record deleted, and the new cookies set. Call it right after a login.
    fn regenerate(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let old = Self::_rotate_id(slf)?;
        Self::save(slf)?;
        if let Some(old) = old {
            let (manager, _) = slf.get().bound_pair(py)?;
            manager
                .bind(py)
                .cast::<SessionManager>()?
                .get()
                .forget(py, &old)?;
        }
        Ok(())
    }

    /// Logout: deletes the stored record, clears both cookies and empties the session.
    fn destroy(slf: &Bound<'_, Self>) -> PyResult<()> {
        if let Some(task) = Self::_begin_destroy(slf)? {
            task.get().run(slf.py());
            task.get().take_done()?;
        }
        Self::_end_destroy(slf)
    }

    /// Queues a message for the next page: `(category, message)` pairs kept in the session
    /// under `"_flashes"` until `pop_flashes()`.
    #[pyo3(signature = (message, category = "info"))]
    fn flash(slf: &Bound<'_, Self>, message: &Bound<'_, PyAny>, category: &str) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        let py = slf.py();
        let storage = Self::storage(slf);
        let key = intern!(py, "_flashes");
        let queue = match storage.get_item(key)? {
            Some(queue) => queue.cast_into::<PyList>().map_err(|_| {
                PyTypeError::new_err(
                    "session[\"_flashes\"] is not a list; it is reserved for flash()",
                )
            })?,
            None => {
                let queue = PyList::empty(py);
                storage.set_item(key, &queue)?;
                queue
            }
        };
        queue.append(PyList::new(
            py,
            [category.into_pyobject(py)?.into_any(), message.clone()],
        )?)
    }

    /// The queued `(category, message)` pairs, oldest first, removed from the session.
    fn pop_flashes<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)>> {
        Self::ensure_loaded(slf)?;
        let py = slf.py();
        let storage = Self::storage(slf);
        let key = intern!(py, "_flashes");
        let Some(queue) = storage.get_item(key)? else {
            return Ok(Vec::new());
        };
        storage.del_item(key)?;
        queue
            .try_iter()?
            .map(|pair| {
                let pair = pair?;
                Ok((pair.get_item(0)?, pair.get_item(1)?))
            })
            .collect()
    }

    // Steps of the async API (tornsession.TornadoSession.aload/asave/aregenerate/adestroy):
    // the StoreTask's run() is what goes to a worker thread.

    /// Starts loading; returns the store work to run, or None when nothing is left to do.
    fn _begin_load<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, StoreTask>>> {
        Self::begin_load(slf)
    }

    /// Finishes loading with the result of the task's run().
    fn _end_load(slf: &Bound<'_, Self>, task: &Bound<'_, StoreTask>) -> PyResult<()> {
        Self::end_load(slf, task)
    }

    /// Starts saving: serializes now and returns the write to run, or None when there is none
    /// (unchanged, or a manager with its own set(), which this has then called).
    fn _begin_save<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, StoreTask>>> {
        let py = slf.py();
        Self::ensure_loaded(slf)?;
        let (manager, _) = slf.get().bound_pair(py)?;
        let Some(native) = native_manager(manager.bind(py), intern!(py, "set"))? else {
            Self::save(slf)?;
            return Ok(None);
        };
        match native.get().plan_save(slf.as_super())? {
            None => Ok(None),
            Some(plan) => {
                let task = StoreTask::new(native.unbind(), Job::Save(Some(plan)));
                Ok(Some(Bound::new(py, task)?))
            }
        }
    }

    /// Finishes saving: records the write and sets the cookies if they are due.
    #[pyo3(signature = (task = None))]
    fn _end_save(slf: &Bound<'_, Self>, task: Option<&Bound<'_, StoreTask>>) -> PyResult<()> {
        let py = slf.py();
        let (manager, handler) = slf.get().bound_pair(py)?;
        let Some(native) = native_manager(manager.bind(py), intern!(py, "set"))? else {
            return Ok(());
        };
        if let Some(task) = task {
            let plan = task.get().take_save()?;
            native.get().saved(py, slf.as_super(), plan);
        }
        native.get().send_cookies(handler.bind(py), slf.as_super())
    }

    /// Whether the store holds a record of this session (it was loaded from one, or saved).
    fn _is_stored(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Self::ensure_loaded(slf)?;
        Ok(slf.as_super().get().stored_id(slf.py()).is_some())
    }

    /// Gives the session a new id and digest; returns the old id when it had a stored record.
    fn _rotate_id(slf: &Bound<'_, Self>) -> PyResult<Option<String>> {
        let py = slf.py();
        Self::ensure_loaded(slf)?;
        let (manager, _) = slf.get().bound_pair(py)?;
        let manager = manager.bind(py).cast::<SessionManager>()?.clone();
        let session = slf.as_super().get();
        let old = session.stored_id(py);
        session.rotate_id(manager.get().fresh_meta(py)?);
        let token = old.as_deref().map(ids::log_token).unwrap_or_default();
        log(py, Level::Info, &format!("session {token} regenerated"));
        Ok(old)
    }

    /// The deletion of a record by id, to run off the handler's thread.
    fn _forget_task<'py>(
        slf: &Bound<'py, Self>,
        session_id: String,
    ) -> PyResult<Bound<'py, StoreTask>> {
        let py = slf.py();
        let (manager, _) = slf.get().bound_pair(py)?;
        let manager = manager.bind(py).cast::<SessionManager>()?.clone().unbind();
        Bound::new(py, StoreTask::new(manager, Job::Delete(session_id, None)))
    }

    /// Starts a logout: the deletion of the stored record, if there is one.
    fn _begin_destroy<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, StoreTask>>> {
        let py = slf.py();
        Self::ensure_loaded(slf)?;
        match slf.as_super().get().stored_id(py) {
            Some(id) => Self::_forget_task(slf, id).map(Some),
            None => Ok(None),
        }
    }

    /// Finishes a logout: clears both cookies and the data; the session is new again (a later
    /// save stores it under a new id).
    fn _end_destroy(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (manager, handler) = slf.get().bound_pair(py)?;
        let manager = manager.bind(py).cast::<SessionManager>()?.clone();
        let session = slf.as_super().get();
        let token = session
            .stored_id(py)
            .as_deref()
            .map(ids::log_token)
            .unwrap_or_default();
        manager.get().clear_cookies(handler.bind(py))?;
        Self::storage(slf).clear();
        let mut fresh = manager.get().fresh_meta(py)?;
        // Nothing to tell the browser until the new session is saved.
        fresh.cookies_due = false;
        session.replace_meta(fresh);
        log(py, Level::Info, &format!("session {token} destroyed"));
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
            if let Some(HandlerRef::Strong(handler)) = &state.handler {
                visit.call(handler)?;
            }
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

/// A finished load: the manager, the id it was for, and what the store answered.
type LoadOutcome = (
    Py<SessionManager>,
    Verified,
    Result<Option<Vec<u8>>, StoreError>,
);

/// What a [`StoreTask`] does, and then what came of it.
pub enum Job {
    Load(Option<Verified>),
    Loaded(Verified, Result<Option<Vec<u8>>, StoreError>),
    Save(Option<SavePlan>),
    Saved(SavePlan, Result<(), StoreError>),
    Delete(String, Option<Result<(), StoreError>>),
}

/// One store operation of a session, separated so it can run on a worker thread (the store
/// releases the GIL around its I/O) while the handler's thread serves other requests.
#[pyclass(module = "tornsession", frozen)]
pub struct StoreTask {
    manager: Py<SessionManager>,
    job: Mutex<Job>,
}

impl StoreTask {
    fn new(manager: Py<SessionManager>, job: Job) -> Self {
        Self {
            manager,
            job: Mutex::new(job),
        }
    }

    fn take_load(&self) -> PyResult<LoadOutcome> {
        let job = std::mem::replace(&mut *self.job.lock(), Job::Load(None));
        match job {
            Job::Loaded(verified, fetched) => {
                Python::attach(|py| Ok((self.manager.clone_ref(py), verified, fetched)))
            }
            _ => Err(PyRuntimeError::new_err("the load task has not run")),
        }
    }

    fn take_save(&self) -> PyResult<SavePlan> {
        let job = std::mem::replace(&mut *self.job.lock(), Job::Save(None));
        match job {
            Job::Saved(plan, Ok(())) => Ok(plan),
            Job::Saved(_, Err(e)) => Err(e.into()),
            _ => Err(PyRuntimeError::new_err("the save task has not run")),
        }
    }

    fn take_done(&self) -> PyResult<()> {
        let mut job = self.job.lock();
        match &mut *job {
            Job::Delete(_, done) => match done.take() {
                Some(result) => result.map_err(Into::into),
                None => Err(PyRuntimeError::new_err("the delete task has not run")),
            },
            _ => Err(PyRuntimeError::new_err("not a delete task")),
        }
    }
}

#[pymethods]
impl StoreTask {
    /// Does the store I/O; safe to call from any thread, once.
    fn run(&self, py: Python<'_>) {
        let manager = self.manager.get();
        let mut job = self.job.lock();
        *job = match std::mem::replace(&mut *job, Job::Load(None)) {
            Job::Load(Some(verified)) => {
                let fetched = manager.fetch(py, &verified.id);
                Job::Loaded(verified, fetched)
            }
            Job::Save(Some(plan)) => {
                let written = manager.write(py, &plan);
                Job::Saved(plan, written)
            }
            Job::Delete(id, None) => {
                let deleted = manager.forget(py, &id);
                Job::Delete(id, Some(deleted))
            }
            finished => finished,
        };
    }

    /// Whether run() may wait on I/O (a network or file store, or a Python store); if not, the
    /// async API runs it inline rather than paying for a thread hop.
    #[getter]
    fn blocks(&self) -> bool {
        self.manager.get().store_blocks()
    }

    /// Raises what the store raised, for a delete task (load and save raise in their end step).
    fn result(&self) -> PyResult<()> {
        self.take_done()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.manager)
    }
}
