//! `TornadoSession`: a `Session` bound to a manager and a request handler, loaded lazily and
//! saved with `save()`, and the store work its async API runs off the IOLoop (`StoreTask`).
//!
//! Lazy loading is what stops lost updates: Tornado builds a handler (and so the session, when
//! an app creates it in `__init__`) before it runs it, and lets other requests run in between.
//! Loading when the handler starts (`prepare`), after any earlier request of the same session
//! in this process has finished (`tornsession._ordering`), means a handler reads, changes and
//! saves without another request of the same session in between. The store work itself is a
//! `StoreTask` (`store_task`), which may run on a worker thread.

use crate::errors::store_error;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType, PyWeakrefReference};
use pyo3::PyTraverseError;

use crate::convert::{dict_to_json, json_into_dict};
use crate::engine::{refuse_unsendable_cookies, Engine};
use crate::errors::InvalidSessionException;
use crate::log::{log, Level};
use crate::manager::{SessionManager, TornadoSessionManager};
use crate::session::Session;
use crate::store_task::{Job, StoreTask};
use crate::tornado_cookies::CookiesTooLate;
use tornsession_core::codec;
use tornsession_core::lifecycle::{self, CookieCheck, SessionState};

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

    /// Loads the session from the store unless it already has been (on this thread).
    pub fn ensure_loaded(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if let Some(task) = Self::begin_load(slf)? {
            task.get().run(py);
            if let Some(delete) = Self::end_load(slf, &task)? {
                delete.get().run(py);
                delete.get().take_deleted()?;
            }
        }
        Ok(())
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

    /// The engine of the bound manager, which must be a tornsession manager.
    fn engine(&self, py: Python<'_>) -> PyResult<Arc<Engine>> {
        let (manager, _) = self.bound_pair(py)?;
        let manager = manager.bind(py).cast::<SessionManager>().map_err(|_| {
            PyTypeError::new_err("this needs a tornsession SessionManager as the session's manager")
        })?;
        Ok(manager.get().engine().clone())
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
            let Some(engine) = native_engine(manager, intern!(py, "get"))? else {
                Self::load_through_python(slf, manager, handler)?;
                return Ok(None);
            };
            let check = engine.check_request(handler)?;
            let verified = match check {
                CookieCheck::Verified(verified) => verified,
                CookieCheck::Absent | CookieCheck::Invalid => {
                    if check == CookieCheck::Invalid {
                        log(
                            py,
                            Level::Warning,
                            "invalid session cookie, starting a new session",
                        );
                    }
                    slf.as_super().get().replace_meta(engine.fresh_meta(py)?);
                    return Ok(None);
                }
            };
            let task = StoreTask::new(engine, Job::Load(verified));
            Ok(Some(Bound::new(py, task)?))
        })();
        match &started {
            Ok(None) => slf.get().set_load_state(LoadState::Loaded),
            Ok(Some(_)) => {}
            Err(_) => slf.get().set_load_state(LoadState::Unloaded),
        }
        started
    }

    /// Last load step, on the handler's thread: turns the store's answer into the session.
    /// Returns the deletion of a record past its lifetime, still to run.
    fn end_load<'py>(
        slf: &Bound<'py, Self>,
        task: &Bound<'py, StoreTask>,
    ) -> PyResult<Option<Bound<'py, StoreTask>>> {
        let py = slf.py();
        let finished = (|| {
            let (verified, fetched) = task.get().take_loaded()?;
            let engine = task.get().engine.clone();
            let loaded = engine.open(py, &verified, fetched.map_err(store_error)?)?;
            slf.as_super().get().replace_meta(loaded.meta);
            if let Some(data) = loaded.data {
                json_into_dict(&data, Self::storage(slf))?;
            }
            loaded
                .delete_old
                .map(|old| Bound::new(py, StoreTask::new(engine, Job::Delete(old, None))))
                .transpose()
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
            Ok(session) => session.get().copy_meta(py),
            Err(_) => Session::foreign_meta(
                py,
                plain.getattr(intern!(py, "session_id"))?.unbind(),
                plain.getattr(intern!(py, "hmac_digest"))?.unbind(),
            ),
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

/// The engine behind `manager` when `method` (get or set) is tornsession's own, so the session
/// can skip the Python-level call (and the intermediate `Session` that `get()` builds). A
/// subclass that overrides the method is called through Python instead.
fn native_engine(
    manager: &Bound<'_, PyAny>,
    method: &Bound<'_, PyString>,
) -> PyResult<Option<Arc<Engine>>> {
    let Ok(tornado_manager) = manager.cast::<TornadoSessionManager>() else {
        return Ok(None);
    };
    let py = manager.py();
    let ours = py.get_type::<TornadoSessionManager>().getattr(method)?;
    let theirs = manager.get_type().getattr(method)?;
    Ok(theirs
        .is(&ours)
        .then(|| tornado_manager.as_super().get().engine().clone()))
}

/// Whether a request's session differs from its record as the request loaded or last saved it
/// (owner, info and expiry included; the owner's "last seen" stamp, which a save refreshes,
/// not). A session that has no record and no data has not changed; one whose record another
/// request removed will write nothing, so has not either.
fn differs_from_stored(
    session_id: &str,
    state: &SessionState,
    data: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    if state.gone {
        return false;
    }
    match &state.stored {
        None => !data.is_empty(),
        Some(stored) => {
            let now = tornsession_core::time::now();
            let record = codec::encode_with(
                session_id,
                lifecycle::created_for_save(state, now),
                data,
                &state.extras,
            );
            // A record of 0.1.0 gets its binding at its next save, but is no change for that.
            record != *stored && !codec::same_but_unbound(&record, stored)
        }
    }
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
        PyClassInitializer::from(Session::blank(py)).add_subclass(TornadoSession {
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
    /// `manager.set(handler, self)`. A new session after the headers are out is refused.
    fn save(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (manager, handler) = slf.get().bound_pair(py)?;
        manager
            .bind(py)
            .call_method1(intern!(py, "set"), (handler, slf))?;
        Ok(())
    }

    /// A new id and digest for the same data: the data is saved under the new id, the old
    /// record deleted, and the new cookies set. Call it right after a login, before the
    /// headers are out (after them it is refused, see `_rotate_id`).
    fn regenerate(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if let Some(old) = Self::_rotate_id(slf)? {
            // Delete first: if the record is already gone, the session was ended meanwhile and
            // must not come back under the new id.
            let owner = slf.as_super().get().state().extras.user;
            let engine = slf.get().engine(py)?;
            if !engine
                .delete(py, &old, owner.as_deref())
                .map_err(store_error)?
            {
                engine.ended_elsewhere(slf.as_super(), &old);
            }
        }
        Self::save(slf)
    }

    /// Logout: deletes the stored record, clears both cookies and empties the session. Data
    /// written after it is a new session, with a new id and cookies.
    fn destroy(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if let Some(task) = Self::_begin_destroy(slf)? {
            task.get().run(py);
            task.get().take_deleted()?;
        }
        Self::_end_destroy(slf)
    }

    /// Records who owns the session (saved with it, and filed in the store's per-user index so
    /// `manager.user_sessions()` lists it and `destroy_user_sessions()` ends it). Call it
    /// after `regenerate()` at login; `regenerate()` keeps the owner.
    fn set_user(slf: &Bound<'_, Self>, user_id: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        slf.as_super().get().set_user(user_id)
    }

    /// The owner given to `set_user()`, or None.
    #[getter]
    fn user_id(slf: &Bound<'_, Self>) -> PyResult<Option<String>> {
        Self::ensure_loaded(slf)?;
        Ok(slf.as_super().get().state().extras.user)
    }

    /// Attaches small metadata shown in the owner's session list (a user agent, a place);
    /// JSON values, merged into what was set before.
    #[pyo3(signature = (**fields))]
    fn set_info(slf: &Bound<'_, Self>, fields: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        slf.as_super().get().set_info(fields)
    }

    /// Changes this session's own limits: `idle_timeout` and `lifetime` in seconds (up to the
    /// manager's `max_idle_timeout`/`max_lifetime`, else up to its own), and whether its
    /// cookies outlive the browser (`persistent=False`: gone when the browser closes). None
    /// leaves a value as it is.
    #[pyo3(signature = (idle_timeout = None, lifetime = None, persistent = None))]
    fn set_expiry(
        slf: &Bound<'_, Self>,
        idle_timeout: Option<&Bound<'_, PyAny>>,
        lifetime: Option<&Bound<'_, PyAny>>,
        persistent: Option<bool>,
    ) -> PyResult<()> {
        Self::ensure_loaded(slf)?;
        let engine = slf.get().engine(slf.py())?;
        let idle_timeout = idle_timeout
            .map(|v| crate::options::duration("idle_timeout", v))
            .transpose()?;
        let lifetime = lifetime
            .map(|v| crate::options::duration("lifetime", v))
            .transpose()?;
        let session = slf.as_super().get();
        let expiry = tornsession_core::users::change_expiry(
            &engine.policy,
            &engine.caps,
            session.state().extras.expiry,
            idle_timeout,
            lifetime,
            persistent,
        )
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        session.update_state(|state| {
            if state.extras.expiry != expiry {
                state.extras.expiry = expiry;
                // The cookies' own expiry changes with it.
                state.cookies_due = true;
            }
        });
        Ok(())
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

    // Steps of the async API (tornsession.TornadoSession.aload/asave/aregenerate/adestroy)
    // and the drop-in path's load: the StoreTask's run() is what may go to a worker thread.

    /// Loads on this thread unless already loaded (what any use of the dict does).
    fn _ensure_loaded(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::ensure_loaded(slf)
    }

    /// Gives up a load begun with `_begin_load` (its wait or its store call failed), so the
    /// session can be loaded again.
    fn _abandon_load(&self) {
        let mut state = self.state.lock();
        if state.load == LoadState::Loading {
            state.load = LoadState::Unloaded;
        }
    }

    /// Whether this request changed the session since it loaded or last saved it; a load
    /// still running counts as a change, and so does a manager with its own `set()` (which
    /// this cannot look into). For the lease of a request's turn (`tornsession._ordering`).
    fn _is_changed(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        match slf.get().state.lock().load {
            LoadState::Unloaded => return Ok(false),
            LoadState::Loading => return Ok(true),
            LoadState::Loaded => {}
        }
        let (manager, _) = slf.get().bound_pair(py)?;
        if native_engine(manager.bind(py), intern!(py, "set"))?.is_none() {
            return Ok(true);
        }
        // A value JSON cannot hold is a change: its save will fail and say why.
        let Ok(data) = dict_to_json(Self::storage(slf)) else {
            return Ok(true);
        };
        let session = slf.as_super().get();
        Ok(differs_from_stored(
            &session.id(py)?,
            &session.state(),
            &data,
        ))
    }

    /// Whether the session is loaded (or fresh) already.
    fn _is_loaded(&self) -> bool {
        self.state.lock().load == LoadState::Loaded
    }

    /// Starts loading; returns the store work to run, or None when nothing is left to do.
    fn _begin_load<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, StoreTask>>> {
        Self::begin_load(slf)
    }

    /// Finishes loading with the result of the task's run(); returns the deletion of a record
    /// past its lifetime, still to run, if there is one.
    fn _end_load<'py>(
        slf: &Bound<'py, Self>,
        task: &Bound<'py, StoreTask>,
    ) -> PyResult<Option<Bound<'py, StoreTask>>> {
        Self::end_load(slf, task)
    }

    /// Starts saving: serializes now and returns the write to run, or None when there is none
    /// (unchanged, or a manager with its own set(), which this has then called).
    fn _begin_save<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, StoreTask>>> {
        let py = slf.py();
        Self::ensure_loaded(slf)?;
        let (manager, handler) = slf.get().bound_pair(py)?;
        let Some(engine) = native_engine(manager.bind(py), intern!(py, "set"))? else {
            Self::save(slf)?;
            return Ok(None);
        };
        match engine.plan_save(slf.as_super())? {
            None => Ok(None),
            Some(write) => {
                refuse_unsendable_cookies(handler.bind(py), slf.as_super())?;
                Ok(Some(Bound::new(
                    py,
                    StoreTask::new(engine, Job::Save(write)),
                )?))
            }
        }
    }

    /// Finishes saving: records the write and sets the cookies if they are due.
    #[pyo3(signature = (task = None))]
    fn _end_save(slf: &Bound<'_, Self>, task: Option<&Bound<'_, StoreTask>>) -> PyResult<()> {
        let py = slf.py();
        let (manager, handler) = slf.get().bound_pair(py)?;
        let Some(engine) = native_engine(manager.bind(py), intern!(py, "set"))? else {
            return Ok(());
        };
        if let Some(task) = task {
            let (write, outcome) = task.get().take_saved()?;
            engine.record_write(py, slf.as_super(), write, outcome.map_err(store_error)?);
        }
        engine.send_cookies(handler.bind(py), slf.as_super())
    }

    /// Whether the store holds a record of this session (it was loaded from one, or saved).
    fn _is_stored(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Self::ensure_loaded(slf)?;
        Ok(slf.as_super().get().state().is_stored())
    }

    /// Gives the session a new id and digest; returns the old id when its record must be
    /// deleted (before the session is saved under the new one).
    fn _rotate_id(slf: &Bound<'_, Self>) -> PyResult<Option<String>> {
        let (_, handler) = slf.get().bound_pair(slf.py())?;
        // Before anything changes: the old record and cookie stay good.
        CookiesTooLate::Regenerate.unless_sendable(handler.bind(slf.py()))?;
        Self::ensure_loaded(slf)?;
        slf.get().engine(slf.py())?.regenerate(slf.as_super())
    }

    /// After `_rotate_id` and the deletion of the old record found nothing: the session was ended
    /// by another request, and nothing of it is saved.
    fn _ended_elsewhere(slf: &Bound<'_, Self>, old_id: &str) -> PyResult<()> {
        slf.get()
            .engine(slf.py())?
            .ended_elsewhere(slf.as_super(), old_id);
        Ok(())
    }

    /// The deletion of a record by id (the one a regeneration left behind, filed under this
    /// session's owner), to run off the handler's thread.
    fn _forget_task<'py>(
        slf: &Bound<'py, Self>,
        session_id: String,
    ) -> PyResult<Bound<'py, StoreTask>> {
        let engine = slf.get().engine(slf.py())?;
        let owner = slf.as_super().get().state().extras.user;
        Bound::new(
            slf.py(),
            StoreTask::new(engine, Job::Delete(session_id, owner)),
        )
    }

    /// Starts a logout: the deletion of the stored record, if there is one. Nothing changes
    /// until it is done, so a failed deletion leaves the session as it was.
    fn _begin_destroy<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, StoreTask>>> {
        Self::ensure_loaded(slf)?;
        let engine = slf.get().engine(slf.py())?;
        match engine.stored_id(slf.as_super()) {
            Some((id, owner)) => {
                Bound::new(slf.py(), StoreTask::new(engine, Job::Delete(id, owner))).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Finishes a logout: clears both cookies and the data; the session is new again (a later
    /// write stores it under a new id and sends its cookies).
    fn _end_destroy(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (_, handler) = slf.get().bound_pair(py)?;
        slf.get()
            .engine(py)?
            .destroy(Some(handler.bind(py)), slf.as_super())
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

/// Stands in for `handler.prepare` until the handler starts: puts the handler's own `prepare`
/// back, then hands over to `tornsession._session._load_then_prepare`, which waits for an
/// earlier request of the same session, loads (off the IOLoop for a blocking store) and runs
/// the handler's `prepare`.
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
        py.import(intern!(py, "tornsession._session"))?
            .call_method1(intern!(py, "_load_then_prepare"), (&session, &handler))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    const SID: &str = "0123456789abcdef0123456789abcdef";

    fn data(n: i64) -> Map<String, Value> {
        json!({ "n": n }).as_object().cloned().unwrap()
    }

    fn loaded_with(n: i64) -> SessionState {
        let blob = codec::encode_with(SID, 1_800_000_000, &data(n), &codec::Extras::default());
        SessionState::opened(1_800_000_000, blob, false)
    }

    #[test]
    fn a_session_as_loaded_has_not_changed_and_one_with_new_data_has() {
        assert!(!differs_from_stored(SID, &loaded_with(1), &data(1)));
        assert!(differs_from_stored(SID, &loaded_with(1), &data(2)));
    }

    #[test]
    fn a_record_of_0_1_0_as_loaded_has_not_changed() {
        let legacy = br#"{"v":1,"c":1800000000,"d":{"n":1}}"#.to_vec();
        let state = SessionState::opened(1_800_000_000, legacy, false);
        assert!(!differs_from_stored(SID, &state, &data(1)));
        assert!(differs_from_stored(SID, &state, &data(2)));
    }

    #[test]
    fn an_owned_sessions_last_seen_stamp_alone_is_no_change() {
        let mut state = loaded_with(1);
        state.extras.user = Some("ann".to_owned());
        state.extras.seen = Some(1_799_999_940);
        state.stored = Some(codec::encode_with(
            SID,
            1_800_000_000,
            &data(1),
            &state.extras,
        ));
        assert!(!differs_from_stored(SID, &state, &data(1)));
        state.extras.user = Some("bob".to_owned());
        assert!(
            differs_from_stored(SID, &state, &data(1)),
            "a new owner is a change"
        );
    }

    #[test]
    fn a_session_without_a_record_changed_only_when_it_holds_data() {
        let fresh = SessionState::fresh(1_800_000_000);
        assert!(!differs_from_stored(SID, &fresh, &Map::new()));
        assert!(differs_from_stored(SID, &fresh, &data(1)));
        let gone = SessionState {
            gone: true,
            ..loaded_with(1)
        };
        assert!(
            !differs_from_stored(SID, &gone, &data(2)),
            "a write of it would be dropped"
        );
    }
}
