//! A request's turn ends with its handler: `release_when_finished` puts hooks on the handler
//! (Rust callables, so Tornado calling them is no Python-level step).
//!
//! Tornado calls the handler's `on_finish()` once the response is done (for a WebSocket, once
//! the handshake is answered): the turn is released after the handler's own. When the client goes
//! away while the handler runs, Tornado calls the `on_connection_close` it bound in the
//! handler's `__init__` through the connection's close callback, wrapped here so the turn is
//! passed on (the handler still finishes, and its writes are fenced). When a streamed body is
//! cut short Tornado calls the handler's attribute instead, and never runs the handler's method:
//! the turn is released.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyWeakrefReference};

use crate::turns::Turn;

/// The handler, held weakly (it holds its session, which holds the turn).
fn live_handler<'py>(
    py: Python<'py>, handler: &Py<PyWeakrefReference>,
) -> Option<Bound<'py, PyAny>> {
    handler.bind(py).upgrade()
}

/// The handler's class's own `name` method, called on it.
fn call_class_method(
    handler: &Bound<'_, PyAny>, name: &Bound<'_, pyo3::types::PyString>,
) -> PyResult<()> {
    handler.get_type().getattr(name)?.call1((handler,))?;
    Ok(())
}

/// `handler.on_finish`: the handler's own, then the turn's release.
#[pyclass(module = "tornsession._core", frozen)]
pub struct FinishHook {
    handler: Py<PyWeakrefReference>,
    own: Option<Py<PyAny>>,
    turn: Py<Turn>,
}

#[pymethods]
impl FinishHook {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let result = match (&self.own, live_handler(py, &self.handler)) {
            (Some(own), _) => own.bind(py).call0().map(drop),
            (None, Some(handler)) => call_class_method(&handler, intern!(py, "on_finish")),
            (None, None) => Ok(()),
        };
        // After the handler's own: a save there is still in turn.
        self.turn.get().release(py);
        result
    }
}

/// `handler.on_connection_close` (reached this way only for a streamed body cut short: the
/// handler never finishes): the turn is released, then the handler's own is called.
#[pyclass(module = "tornsession._core", frozen)]
pub struct CloseHook {
    handler: Py<PyWeakrefReference>,
    own: Option<Py<PyAny>>,
    turn: Py<Turn>,
}

#[pymethods]
impl CloseHook {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        self.turn.get().release(py);
        match (&self.own, live_handler(py, &self.handler)) {
            (Some(own), _) => own.bind(py).call0().map(drop),
            (None, Some(handler)) => {
                call_class_method(&handler, intern!(py, "on_connection_close"))
            }
            (None, None) => Ok(()),
        }
    }
}

/// The connection's close callback: the turn is passed on, then the callback it replaced runs.
#[pyclass(module = "tornsession._core", frozen)]
pub struct ClosedCallback {
    bound: Py<PyAny>,
    turn: Py<Turn>,
}

#[pymethods]
impl ClosedCallback {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        self.turn.get().pass_on(py);
        self.bound.bind(py).call0().map(drop)
    }
}

/// Puts the hooks on the handler, once per turn.
pub fn release_when_finished(handler: &Bound<'_, PyAny>, turn: &Bound<'_, Turn>) -> PyResult<()> {
    if turn.get().get_hooked() {
        return Ok(());
    }
    turn.get().set_hooked(true);
    let py = handler.py();
    let own = |name| -> PyResult<Option<Py<PyAny>>> {
        Ok(handler
            .getattr_opt(intern!(py, "__dict__"))?
            .and_then(|d| d.cast_into::<PyDict>().ok())
            .map(|d| d.get_item(name))
            .transpose()?
            .flatten()
            .map(Bound::unbind))
    };
    let own_finish = own(intern!(py, "on_finish"))?;
    let own_close = own(intern!(py, "on_connection_close"))?;
    let weak = PyWeakrefReference::new(handler)?.unbind();
    let finish = FinishHook {
        handler: weak.clone_ref(py),
        own: own_finish,
        turn: turn.clone().unbind(),
    };
    let close = CloseHook {
        handler: weak,
        own: own_close,
        turn: turn.clone().unbind(),
    };
    handler.setattr(intern!(py, "on_finish"), finish)?;
    handler.setattr(intern!(py, "on_connection_close"), close)?;
    let connection = handler
        .getattr_opt(intern!(py, "request"))?
        .map(|r| r.getattr_opt(intern!(py, "connection")))
        .transpose()?
        .flatten();
    let Some(connection) = connection else {
        return Ok(());
    };
    let bound = connection.getattr_opt(intern!(py, "_close_callback"))?;
    if let Some(bound) = bound.filter(|b| !b.is_none()) {
        if connection.hasattr(intern!(py, "set_close_callback"))? {
            let closed = ClosedCallback {
                bound: bound.unbind(),
                turn: turn.clone().unbind(),
            };
            connection.call_method1(intern!(py, "set_close_callback"), (closed,))?;
        }
    }
    Ok(())
}

/// See `release_when_finished` (for `tornsession._ordering`).
#[pyfunction]
#[pyo3(name = "_release_when_finished")]
pub fn release_when_finished_py(
    handler: &Bound<'_, PyAny>, turn: &Bound<'_, Turn>,
) -> PyResult<()> {
    release_when_finished(handler, turn)
}
