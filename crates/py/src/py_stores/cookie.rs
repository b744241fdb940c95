//! `CookieStore`: the store class of sessions sealed in their cookies (see
//! `tornsession_core::stores::CookieStore` and `tornsession_core::sealed_cookie`).

use std::sync::Arc;

use pyo3::prelude::*;

use super::{PyStore, StoreHandle};
use crate::errors::value_error;
use tornsession_core::stores;

/// Sessions sealed (XChaCha20-Poly1305) in their visitors' cookies: nothing is kept on the
/// server. `revocation`, any server store, keeps a per-user generation counter so that
/// `destroy_user_sessions()` can end a user's cookie sessions.
#[pyclass(module = "tornsession", frozen, extends = PyStore, name = "CookieStore")]
pub struct PyCookieStore {
    revocation: Option<Py<PyAny>>,
}

#[pymethods]
impl PyCookieStore {
    #[new]
    #[pyo3(signature = (*, revocation = None), text_signature = "(*, revocation=None)")]
    fn new(revocation: Option<&Bound<'_, PyAny>>) -> PyResult<PyClassInitializer<Self>> {
        let revocation = revocation.filter(|store| !store.is_none());
        let counters = match revocation {
            Some(store) if store.cast::<PyCookieStore>().is_ok() => {
                return Err(value_error(
                    "revocation= takes a store that keeps records on a server (MemoryStore, \
                     SqliteStore, RedisStore, MemcachedStore ...), not a CookieStore",
                ))
            }
            Some(store) => Some(StoreHandle::from_object(store)?.shared()),
            None => None,
        };
        let store = stores::CookieStore::new(counters);
        let revocation = revocation.map(|store| store.clone().unbind());
        Ok(PyStore::initializer(
            store,
            |_: Arc<stores::CookieStore>| Self { revocation },
        ))
    }

    /// The store that keeps the per-user generation counters, or None.
    #[getter]
    fn revocation(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.revocation.as_ref().map(|store| store.clone_ref(py))
    }
}
