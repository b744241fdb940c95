//! The dict protocol of `TornadoSession`: every method loads the session first, then works on
//! the dict's own storage. Overriding `__iter__` and `keys` also routes `dict(s)`, `{**s}` and
//! `json.dumps(s)` through here instead of the (possibly not yet loaded) storage.

use pyo3::exceptions::PyKeyError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};

use super::TornadoSession;

/// `dict.<name>`, looked up once: calls on the dict's own storage, bypassing our overrides.
pub(super) fn dict_method<'py>(
    py: Python<'py>, name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    py.get_type::<PyDict>().getattr(name)
}

impl TornadoSession {
    /// The session's own dict storage.
    pub(super) fn storage<'a, 'py>(slf: &'a Bound<'py, Self>) -> &'a Bound<'py, PyDict> {
        slf.as_super().as_super()
    }

    /// Loads, then calls `dict.<name>(self, *args)` on the storage.
    fn call_dict<'py>(
        slf: &Bound<'py, Self>, name: &Bound<'py, PyString>, args: &[&Bound<'py, PyAny>],
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::ensure_loaded(slf)?;
        let py = slf.py();
        let mut all = vec![Self::storage(slf).as_any()];
        all.extend_from_slice(args);
        dict_method(py, name)?.call1(PyTuple::new(py, all)?)
    }
}

#[pymethods]
impl TornadoSession {
    // The dict protocol, each loading first. Overriding __iter__ and keys also routes dict(s),
    // {**s} and json.dumps(s) through here instead of the (possibly not yet loaded) storage.

    fn __getitem__<'py>(
        slf: &Bound<'py, Self>, key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::ensure_loaded(slf)?;
        Self::storage(slf)
            .get_item(key)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __setitem__(
        slf: &Bound<'_, Self>, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>,
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
        slf: &Bound<'py, Self>, other: &Bound<'py, PyAny>, op: CompareOp,
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
        slf: &Bound<'py, Self>, other: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "__or__"), &[other])
    }

    fn __ror__<'py>(
        slf: &Bound<'py, Self>, other: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::call_dict(slf, intern!(slf.py(), "__ror__"), &[other])
    }

    fn __ior__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::call_dict(slf, intern!(slf.py(), "__ior__"), &[other]).map(drop)
    }

    #[pyo3(signature = (key, default = None, /))]
    fn get<'py>(
        slf: &Bound<'py, Self>, key: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>,
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
        slf: &Bound<'py, Self>, key: &Bound<'py, PyAny>, default: &Bound<'py, PyTuple>,
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
        slf: &Bound<'py, Self>, key: &Bound<'py, PyAny>, default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let default = default.unwrap_or_else(|| slf.py().None().into_bound(slf.py()));
        Self::call_dict(slf, intern!(slf.py(), "setdefault"), &[key, &default])
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn update(
        slf: &Bound<'_, Self>, args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>,
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
}
