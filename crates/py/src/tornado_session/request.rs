//! A request's session from `prepare()` to `finish()`, in Rust: what `SessionMixin` and the
//! drop-in path's first `prepare()` do for a request alone with its session on a store that
//! answers inline (memory, SQLite, file reads), with no Python-level step of their own. What
//! must wait (a turn another request holds, a network round trip, a thread) is handed back to
//! `tornsession.mixin` / `tornsession._session`, which await it in a coroutine.
//!
//! Each Python-level call costs a request about a microsecond and each coroutine several: the
//! issue-20 profile put half the session layer's cost in such glue, hence one call in, one out.

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PySuper, PyTuple, PyType};

use super::hooks::release_when_finished;
use super::{native_engine, TornadoSession};
use crate::errors::SessionConflict;
use crate::manager::SessionManager;
use crate::store_task::StoreTask;
use crate::turns::{self, Turn};
use tornsession_core::metrics::Metrics;

/// `SessionMixin._tornsession_state`: no save begun, a save running, nothing left to do.
const SAVING: i64 = 1;
const DONE: i64 = 2;

/// The application's session manager, as `SessionMixin.session_manager` finds it.
pub fn session_manager_of<'py>(handler: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = handler.py();
    let application = handler.getattr(intern!(py, "application"))?;
    if let Some(manager) = application.getattr_opt(intern!(py, "session_manager"))? {
        if !manager.is_none() {
            return Ok(manager);
        }
    }
    let settings = application.getattr(intern!(py, "settings"))?;
    let manager = match settings.cast::<PyDict>() {
        Ok(settings) => settings.get_item(intern!(py, "session_manager"))?,
        Err(_) => settings
            .call_method1(intern!(py, "get"), (intern!(py, "session_manager"),))
            .ok(),
    };
    match manager {
        Some(manager) if !manager.is_none() => Ok(manager),
        _ => Err(PyRuntimeError::new_err(
            "SessionMixin needs a session manager: set application.session_manager or the \
             'session_manager' application setting to a tornsession.TornadoSessionManager",
        )),
    }
}

/// Whether the manager orders its sessions' requests, and there is a loop to wait on.
fn ordered(py: Python<'_>, manager: &Bound<'_, PyAny>) -> bool {
    let orders = match manager.cast::<SessionManager>() {
        Ok(manager) => manager.get().orders_requests(),
        Err(_) => manager
            .getattr_opt(intern!(py, "order_requests"))
            .ok()
            .flatten()
            .is_some_and(|o| o.is_truthy().unwrap_or(false)),
    };
    orders && turns::running_loop(py).is_some()
}

/// The turn is the request's: the session is fenced by it, and its lease looks at the session.
fn take(session: &Bound<'_, TornadoSession>, turn: &Bound<'_, Turn>) -> PyResult<()> {
    turn.get().attach(session.as_any())?;
    session.setattr(intern!(session.py(), "_turn"), turn)
}

/// Whether the handler is a `@stream_request_body` one.
fn streams_its_body(handler: &Bound<'_, PyAny>) -> bool {
    handler
        .getattr_opt(intern!(handler.py(), "_stream_request_body"))
        .ok()
        .flatten()
        .is_some_and(|s| s.is_truthy().unwrap_or(false))
}

/// Runs a load task inline and finishes the load (and the deletion of a record past its
/// lifetime it may leave).
fn load_inline(session: &Bound<'_, TornadoSession>, task: &Bound<'_, StoreTask>) -> PyResult<()> {
    let py = session.py();
    task.get().run(py);
    if let Some(delete) = TornadoSession::end_load(session, task)? {
        delete.get().run(py);
        delete.get().take_deleted()?;
    }
    Ok(())
}

/// What the handler's turn-taking and load still need, handed back to Python to await: the
/// session, its load, and the reply of the load when it was sent over the store's protocol.
type Pending<'py> = (
    Option<Bound<'py, TornadoSession>>,
    Option<Bound<'py, StoreTask>>,
    Option<Bound<'py, PyAny>>,
);

/// Sends a blocking task's request over the store's own protocol on this event loop when a
/// connection is ready for it (`tornsession._wire` makes them): the reply, to await (it says
/// whether the task is done), or `None` for `tornsession._session._run` to take the task.
fn send_over_wire<'py>(task: &Bound<'py, StoreTask>) -> Option<Bound<'py, PyAny>> {
    let py = task.py();
    let event_loop = turns::running_loop(py)?;
    let server = task.getattr(intern!(py, "wire_server")).ok()?;
    if server.is_none() {
        return None;
    }
    let link = server
        .call_method1(intern!(py, "link_for"), (event_loop,))
        .ok()?;
    if link.is_none() {
        return None;
    }
    link.call_method1(intern!(py, "send"), (task,)).ok()
}

/// `SessionMixin.prepare()`'s work: makes the request's session (`session_class`), takes its
/// turn and loads it. `None` when done (the session is the handler's `session`); otherwise
/// `(session, task, reply)` for the coroutine to finish: without a reply, `task` waits for the
/// turn when the session has none yet, then runs over the network or on a thread; with one,
/// the request was sent. `(None, None, None)` for a manager whose `get()`/`set()` are its
/// own, which the async API's `aload` serves.
#[pyfunction]
pub fn _mixin_prepare<'py>(
    handler: &Bound<'py, PyAny>, session_class: &Bound<'py, PyType>,
) -> PyResult<Option<Pending<'py>>> {
    let py = handler.py();
    let manager = session_manager_of(handler)?;
    if native_engine(&manager, intern!(py, "get"))?.is_none() {
        return Ok(Some((None, None, None)));
    }
    let session = session_class
        .call_method1(intern!(py, "__new__"), (session_class,))?
        .cast_into::<TornadoSession>()?;
    TornadoSession::_bind(&session, &manager, handler);
    if let Some(task) = TornadoSession::begin_load(&session)? {
        let loaded = (|| {
            if ordered(py, &manager) {
                let session_id = task.get().session_id().unwrap_or_default();
                match turns::take_turn_now(py, &session_id, handler.as_ptr() as u64)? {
                    Some(turn) => {
                        take(&session, &turn)?;
                        if streams_its_body(handler) {
                            // A body cut short never runs the handler's method nor finish():
                            // the hooks release the turn when Tornado says so.
                            release_when_finished(handler, &turn)?;
                        } else {
                            // Released by SessionMixin.finish(), after the handler's on_finish().
                            turn.get().set_hooked(true);
                        }
                    }
                    None => return Ok(false),
                }
            }
            if task.get().blocks() {
                return Ok(false);
            }
            load_inline(&session, &task)?;
            Ok(true)
        })();
        match loaded {
            Ok(true) => {}
            Ok(false) => {
                let took_turn =
                    !ordered(py, &manager) || !session.getattr(intern!(py, "_turn"))?.is_none();
                let reply = if took_turn && task.get().blocks() {
                    send_over_wire(&task)
                } else {
                    None
                };
                return Ok(Some((Some(session), Some(task), reply)));
            }
            Err(error) => {
                session.get()._abandon_load();
                release_turn(&session);
                return Err(error);
            }
        }
    }
    handler.setattr(intern!(py, "_tornsession"), &session)?;
    handler.setattr(intern!(py, "session"), &session)?;
    Ok(None)
}

/// Gives up the session's turn, if it took one.
pub fn release_turn(session: &Bound<'_, PyAny>) {
    let py = session.py();
    if let Ok(turn) = session.getattr(intern!(py, "_turn")) {
        match turn.cast::<Turn>() {
            Ok(turn) => turn.get().release(py),
            Err(_) if turn.is_none() => {}
            Err(_) => {
                let _ = turn.call_method0(intern!(py, "release"));
            }
        }
    }
}

/// A write of the session is on its way: its turn stays with the request until the write is
/// answered (`Turn::begin_write`; `TornadoSession._end_write` ends it).
fn begin_write(session: &Bound<'_, PyAny>) {
    let py = session.py();
    if let Ok(turn) = session.getattr(intern!(py, "_turn")) {
        if let Ok(turn) = turn.cast::<Turn>() {
            turn.get().begin_write(py);
        }
    }
}

/// Before a write: whether to write (see `Turn.fence`); a session without a turn writes.
pub fn fence(session: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = session.py();
    let Some(turn) = session.getattr_opt(intern!(py, "_turn"))? else {
        return Ok(true);
    };
    if turn.is_none() {
        return Ok(true);
    }
    let fenced = match turn.cast::<Turn>() {
        Ok(turn) => turn.get().fence(session, false),
        Err(_) => turn
            .call_method1(intern!(py, "fence"), (session,))
            .and_then(|write| write.is_truthy()),
    };
    if fenced
        .as_ref()
        .is_err_and(|e| e.is_instance_of::<SessionConflict>(py))
    {
        if let Ok(Ok(engine)) = session.cast::<TornadoSession>().map(|s| s.get().engine(py)) {
            engine.count(Metrics::conflict);
        }
    }
    fenced
}

/// The handler's status code, as `get_status()` gives it.
fn status(handler: &Bound<'_, PyAny>) -> PyResult<i64> {
    let py = handler.py();
    match handler.getattr_opt(intern!(py, "_status_code"))? {
        Some(code) => code.extract(),
        None => handler.call_method0(intern!(py, "get_status"))?.extract(),
    }
}

/// `RequestHandler.finish(chunk)` past the mixin, then the session's turn goes to the next
/// request (after the handler's own `on_finish()`, which `finish()` calls).
fn finish_past_mixin<'py>(
    handler: &Bound<'py, PyAny>, mixin: &Bound<'py, PyType>, chunk: &Bound<'py, PyAny>,
    session: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = handler.py();
    handler.setattr(intern!(py, "_tornsession_state"), DONE)?;
    let finished = PySuper::new(mixin, handler)?
        .call_method1(intern!(py, "finish"), PyTuple::new(py, [chunk])?);
    if let Some(session) = session {
        release_turn(session);
    }
    finished
}

/// `SessionMixin.finish()`'s work. `(True, future)`: the session was saved (or had nothing to
/// save) and `RequestHandler.finish(chunk)` ran, its future returned. `(False, (task, reply))`:
/// the save must be awaited (a network store or a thread) before the response finishes; the
/// reply is there when its request was sent over the store's protocol. An error of
/// the save leaves `_tornsession_state` at saving, for `SessionMixin` to answer it.
#[pyfunction]
pub fn _mixin_finish<'py>(
    handler: &Bound<'py, PyAny>, chunk: &Bound<'py, PyAny>, mixin: &Bound<'py, PyType>,
) -> PyResult<(bool, Bound<'py, PyAny>)> {
    let py = handler.py();
    let session = handler.getattr(intern!(py, "_tornsession"))?;
    let state: i64 = handler
        .getattr(intern!(py, "_tornsession_state"))?
        .extract()?;
    let finished = handler
        .getattr_opt(intern!(py, "_finished"))?
        .is_some_and(|f| f.is_truthy().unwrap_or(false));
    let Ok(session) = session.cast_into::<TornadoSession>() else {
        return Ok((true, finish_past_mixin(handler, mixin, chunk, None)?));
    };
    if state == DONE || finished {
        return Ok((
            true,
            finish_past_mixin(handler, mixin, chunk, Some(session.as_any()))?,
        ));
    }
    handler.setattr(intern!(py, "_tornsession_state"), SAVING)?;
    let code = status(handler)?;
    // An error response is not saved (the request failed half-way); a visitor whose session
    // was never used gets no record and no cookie.
    let unsaved =
        code >= 500 || (session.as_any().len()? == 0 && !TornadoSession::_is_stored(&session)?);
    if unsaved {
        return Ok((
            true,
            finish_past_mixin(handler, mixin, chunk, Some(session.as_any()))?,
        ));
    }
    let mut task = TornadoSession::_begin_save(&session)?;
    if task.is_some() && !fence(session.as_any())? {
        task = None; // passed its turn on, changed nothing, and another request saved
    }
    // A WebSocket handshake (101) must finish now: Tornado detaches the stream right after
    // finish() returns, so a deferred finish would never answer it.
    match task {
        Some(task) if task.get().blocks() && code != 101 => {
            begin_write(session.as_any());
            let reply = send_over_wire(&task);
            Ok((
                false,
                PyTuple::new(
                    py,
                    [
                        task.into_any(),
                        reply.unwrap_or_else(|| py.None().into_bound(py)),
                    ],
                )?
                .into_any(),
            ))
        }
        task => {
            if let Some(task) = &task {
                task.get().run(py);
            }
            TornadoSession::_end_save(&session, task.as_ref())?;
            Ok((
                true,
                finish_past_mixin(handler, mixin, chunk, Some(session.as_any()))?,
            ))
        }
    }
}

/// The drop-in path's load, run in place of the handler's `prepare()`: in turn with other
/// requests of the session, then the handler's own `prepare()`.
///
/// When no earlier request of the session is in flight (nearly always), a local store's load
/// runs here, on the IOLoop, as the original module's did: a coroutine and a thread hop would
/// cost more than the read. A Redis or memcached load goes over its own protocol, and a
/// request that must wait for its turn becomes a coroutine (`tornsession._session`), which
/// waits without blocking the IOLoop.
pub fn load_then_prepare<'py>(
    session: &Bound<'py, TornadoSession>, handler: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = session.py();
    let Some(task) = TornadoSession::begin_load(session)? else {
        return handler.call_method0(intern!(py, "prepare"));
    };
    let glue = || py.import(intern!(py, "tornsession._session"));
    let manager = session.get().session_manager(py).into_bound(py);
    if ordered(py, &manager) {
        let session_id = task.get().session_id().unwrap_or_default();
        match turns::take_turn_now(py, &session_id, handler.as_ptr() as u64) {
            Ok(Some(turn)) => {
                take(session, &turn)?;
                release_when_finished(handler, &turn)?;
            }
            Ok(None) => {
                return glue()?
                    .call_method1(intern!(py, "_load_and_prepare"), (session, handler, task))
            }
            Err(error) => {
                session.get()._abandon_load();
                return Err(error);
            }
        }
    }
    if task.get().blocks() {
        let server = task.getattr(intern!(py, "wire_server"))?;
        if !server.is_none() {
            return glue()?.call_method1(
                intern!(py, "_load_over_wire_and_prepare"),
                (session, handler, task, server),
            );
        }
    }
    load_inline(session, &task)?;
    handler.call_method0(intern!(py, "prepare"))
}

/// The awaitable `SessionMixin.prepare()` returns when nothing was left to wait for: done at
/// once, so `await super().prepare()` in an app's own `prepare()` works, with no coroutine.
#[pyclass(module = "tornsession._core", frozen)]
pub struct _Ready;

#[pymethods]
impl _Ready {
    #[new]
    fn new() -> Self {
        _Ready
    }

    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self) -> Option<Py<PyAny>> {
        None
    }
}
