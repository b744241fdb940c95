//! Listing and copying records, for `python -m tornsession copy` and `stats` (see
//! `tornsession_core::stores::listing`): native stores only, each call with the GIL released.

use std::sync::Arc;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{checked_id, PyStore};
use crate::errors::{argument_type_error, store_error, value_error};
use tornsession_core::stores::{SessionStore, DEFAULT_MAX_READ_SIZE};

fn native(store: &Bound<'_, PyAny>) -> PyResult<Arc<dyn SessionStore>> {
    match store.cast::<PyStore>() {
        Ok(store) => Ok(store.get().store().clone()),
        Err(_) => Err(argument_type_error(
            "listing needs one of tornsession's stores (a Python store cannot list its records)",
        )),
    }
}

/// Seconds as a duration; `None` stays `None`.
fn seconds(name: &str, value: Option<f64>) -> PyResult<Option<Duration>> {
    value
        .map(|value| {
            Duration::try_from_secs_f64(value)
                .map_err(|_| value_error(format!("{name} must be a number of seconds >= 0")))
        })
        .transpose()
}

/// The id of every session record the store holds.
#[pyfunction]
pub fn _store_session_ids(py: Python<'_>, store: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    let store = native(store)?;
    py.detach(|| store.list_session_ids()).map_err(store_error)
}

/// The record and the seconds it has left (`None`: no limit), or `None` when there is no live
/// record to copy.
#[pyfunction]
#[pyo3(signature = (store, session_id, idle_timeout = None))]
pub fn _store_load_listed<'py>(
    py: Python<'py>, store: &Bound<'py, PyAny>, session_id: &str, idle_timeout: Option<f64>,
) -> PyResult<Option<(Bound<'py, PyBytes>, Option<f64>)>> {
    let session_id = checked_id(session_id)?;
    let idle_timeout = seconds("idle_timeout", idle_timeout)?;
    let store = native(store)?;
    let found = py
        .detach(|| store.load_for_copy(session_id, idle_timeout, DEFAULT_MAX_READ_SIZE))
        .map_err(store_error)?;
    Ok(found.map(|(blob, left)| (PyBytes::new(py, &blob), left.map(|left| left.as_secs_f64()))))
}

/// Writes a copied record if the one there still is `expected`; whether it did.
#[pyfunction]
#[pyo3(signature = (store, session_id, blob, remaining, expected, idle_timeout = None))]
pub fn _store_copy_in(
    py: Python<'_>, store: &Bound<'_, PyAny>, session_id: &str, blob: &[u8],
    remaining: Option<f64>, expected: Option<&[u8]>, idle_timeout: Option<f64>,
) -> PyResult<bool> {
    let session_id = checked_id(session_id)?;
    let remaining = seconds("remaining", remaining)?;
    let idle_timeout = seconds("idle_timeout", idle_timeout)?;
    let store = native(store)?;
    py.detach(|| store.copy_in(session_id, blob, remaining, expected, idle_timeout))
        .map_err(store_error)
}

/// Deletes a record (with `expected`, only while it still is that record) and its owner's
/// index entry; whether there was a live record and it went.
#[pyfunction]
#[pyo3(signature = (store, session_id, expected = None))]
pub fn _store_delete_listed(
    py: Python<'_>, store: &Bound<'_, PyAny>, session_id: &str, expected: Option<&[u8]>,
) -> PyResult<bool> {
    let session_id = checked_id(session_id)?;
    let store = native(store)?;
    py.detach(|| store.delete_listed(session_id, expected))
        .map_err(store_error)
}
