//! `TornadoSession`: a `Session` bound to a manager and a request handler, loaded lazily and
//! saved with `save()`, and the store work its async API runs off the IOLoop (`StoreTask`).
//!
//! Lazy loading is what stops lost updates: Tornado builds a handler (and so the session, when
//! an app creates it in `__init__`) before it runs it, and lets other requests run in between.
//! Loading when the handler starts (`prepare`), after any earlier request of the same session
//! in this process has finished (`tornsession._ordering`), means a handler reads, changes and
//! saves without another request of the same session in between. The store work itself is a
//! `StoreTask` (`store_task`), which may run on a worker thread.

mod dict_proxy;
mod hooks;
mod request;
mod steps;

pub use hooks::release_when_finished_py;
pub use request::{_Ready, _mixin_finish, _mixin_prepare};

use crate::errors::store_error;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyWeakrefReference};
use pyo3::PyTraverseError;

use crate::engine::Engine;
use crate::manager::{SessionManager, TornadoSessionManager};
use crate::session::Session;
use tornsession_core::codec;
use tornsession_core::lifecycle::{self, SessionState};

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

impl TornadoSession {
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
}

/// The engine behind `manager` when `method` (get or set) is tornsession's own, so the session
/// can skip the Python-level call (and the intermediate `Session` that `get()` builds). A
/// subclass that overrides the method is called through Python instead.
fn native_engine(
    manager: &Bound<'_, PyAny>, method: &Bound<'_, PyString>,
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
    session_id: &str, state: &SessionState, data: &serde_json::Map<String, serde_json::Value>,
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
        py: Python<'_>, _args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>,
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
        slf: &Bound<'_, Self>, tornado_session_manager: &Bound<'_, PyAny>,
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
        slf: &Bound<'_, Self>, tornado_session_manager: &Bound<'_, PyAny>,
        request_handler: &Bound<'_, PyAny>,
    ) {
        let handler = HandlerRef::new(request_handler);
        let replaced = {
            let mut state = slf.get().state.lock();
            state.load = LoadState::Unloaded;
            (
                state
                    .manager
                    .replace(tornado_session_manager.clone().unbind()),
                state.handler.replace(handler),
            )
        };
        drop(replaced); // after the lock: a finalizer may call back into the session
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
        if !request::fence(slf.as_any())? {
            // Passed its turn on, changed nothing, and another request saved since.
            return Self::_end_save(slf, None);
        }
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
        slf: &Bound<'_, Self>, idle_timeout: Option<&Bound<'_, PyAny>>,
        lifetime: Option<&Bound<'_, PyAny>>, persistent: Option<bool>,
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
        let cleared = {
            let mut state = self.state.lock();
            (state.manager.take(), state.handler.take())
        };
        drop(cleared); // after the lock: a finalizer may call back into the session
    }
}

/// Stands in for `handler.prepare` until the handler starts: puts the handler's own `prepare`
/// back, then loads the session in turn with other requests of it (`request::load_then_prepare`)
/// and runs the handler's `prepare`.
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
        request::load_then_prepare(&session, &handler)
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
        let cleared = self.inner.lock().take();
        drop(cleared); // after the lock: a finalizer may call back into the hook
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
