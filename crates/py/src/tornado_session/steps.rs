//! The steps of a session's load, save and logout as the async API
//! (`tornsession._session`) and the drop-in path run them: each store operation is a
//! `StoreTask` between two steps on the handler's thread, so it may run elsewhere.

use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;

use super::dict_proxy::dict_method;
use super::{differs_from_stored, native_engine, LoadState, TornadoSession};
use crate::convert::{dict_to_json, json_into_dict};
use crate::errors::{store_error, InvalidSessionException};
use crate::log::{log, Level};
use crate::session::Session;
use crate::store_task::{Job, StoreTask};
use crate::tornado_cookies::CookiesTooLate;
use tornsession_core::lifecycle::CookieCheck;

impl TornadoSession {
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

    /// First load step, on the handler's thread: reads the cookies. Returns the store work
    /// still to do, or `None` when the session is already complete (loaded, or fresh).
    pub(super) fn begin_load<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<Option<Bound<'py, StoreTask>>> {
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
    pub(super) fn end_load<'py>(
        slf: &Bound<'py, Self>, task: &Bound<'py, StoreTask>,
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
    pub(super) fn load_through_python(
        slf: &Bound<'_, Self>, manager: &Bound<'_, PyAny>, handler: &Bound<'_, PyAny>,
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
}

#[pymethods]
impl TornadoSession {
    // Steps of the async API (tornsession.TornadoSession.aload/asave/aregenerate/adestroy)
    // and the drop-in path's load: the StoreTask's run() is what may go to a worker thread.

    /// Loads on this thread unless already loaded (what any use of the dict does).
    pub(super) fn _ensure_loaded(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::ensure_loaded(slf)
    }

    /// Gives up a load begun with `_begin_load` (its wait or its store call failed), so the
    /// session can be loaded again.
    pub(super) fn _abandon_load(&self) {
        let mut state = self.state.lock();
        if state.load == LoadState::Loading {
            state.load = LoadState::Unloaded;
        }
    }

    /// Whether this request changed the session since it loaded or last saved it; a load
    /// still running counts as a change, and so does a manager with its own `set()` (which
    /// this cannot look into). For the lease of a request's turn (`tornsession._ordering`).
    pub(super) fn _is_changed(slf: &Bound<'_, Self>) -> PyResult<bool> {
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
    pub(super) fn _is_loaded(&self) -> bool {
        self.state.lock().load == LoadState::Loaded
    }

    /// Starts loading; returns the store work to run, or None when nothing is left to do.
    pub(super) fn _begin_load<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<Option<Bound<'py, StoreTask>>> {
        Self::begin_load(slf)
    }

    /// Finishes loading with the result of the task's run(); returns the deletion of a record
    /// past its lifetime, still to run, if there is one.
    pub(super) fn _end_load<'py>(
        slf: &Bound<'py, Self>, task: &Bound<'py, StoreTask>,
    ) -> PyResult<Option<Bound<'py, StoreTask>>> {
        Self::end_load(slf, task)
    }

    /// Starts saving: serializes now and returns the write to run, or None when there is none
    /// (unchanged, or a manager with its own set(), which this has then called).
    pub(super) fn _begin_save<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<Option<Bound<'py, StoreTask>>> {
        let py = slf.py();
        Self::ensure_loaded(slf)?;
        let (manager, handler) = slf.get().bound_pair(py)?;
        let Some(engine) = native_engine(manager.bind(py), intern!(py, "set"))? else {
            Self::save(slf)?;
            return Ok(None);
        };
        match engine.plan_save(slf.as_super(), Some(handler.bind(py)))? {
            None => Ok(None),
            Some(write) => {
                engine.refuse_unsendable_cookies(handler.bind(py), slf.as_super())?;
                Ok(Some(Bound::new(
                    py,
                    StoreTask::new(engine, Job::Save(write)),
                )?))
            }
        }
    }

    /// Finishes saving: records the write and sets the cookies if they are due.
    #[pyo3(signature = (task = None))]
    pub(super) fn _end_save(
        slf: &Bound<'_, Self>, task: Option<&Bound<'_, StoreTask>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let (manager, handler) = slf.get().bound_pair(py)?;
        let Some(engine) = native_engine(manager.bind(py), intern!(py, "set"))? else {
            return Ok(());
        };
        if let Some(task) = task {
            let (write, outcome) = task.get().take_saved()?;
            engine.record_save(py, slf.as_super(), write, outcome.map_err(store_error)?);
        }
        engine.send_cookies(handler.bind(py), slf.as_super())
    }

    /// Whether the store holds a record of this session (it was loaded from one, or saved).
    pub(super) fn _is_stored(slf: &Bound<'_, Self>) -> PyResult<bool> {
        Self::ensure_loaded(slf)?;
        Ok(slf.as_super().get().state().is_stored())
    }

    /// Gives the session a new id and digest; returns the old id when its record must be
    /// deleted (before the session is saved under the new one).
    pub(super) fn _rotate_id(slf: &Bound<'_, Self>) -> PyResult<Option<String>> {
        let (_, handler) = slf.get().bound_pair(slf.py())?;
        // Before anything changes: the old record and cookie stay good.
        CookiesTooLate::Regenerate.unless_sendable(handler.bind(slf.py()))?;
        Self::ensure_loaded(slf)?;
        slf.get().engine(slf.py())?.regenerate(slf.as_super())
    }

    /// After `_rotate_id` and the deletion of the old record found nothing: the session was ended
    /// by another request, and nothing of it is saved.
    pub(super) fn _ended_elsewhere(slf: &Bound<'_, Self>, old_id: &str) -> PyResult<()> {
        slf.get()
            .engine(slf.py())?
            .ended_elsewhere(slf.as_super(), old_id);
        Ok(())
    }

    /// The deletion of a record by id (the one a regeneration left behind, filed under this
    /// session's owner), to run off the handler's thread.
    pub(super) fn _forget_task<'py>(
        slf: &Bound<'py, Self>, session_id: String,
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
    pub(super) fn _begin_destroy<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<Option<Bound<'py, StoreTask>>> {
        Self::ensure_loaded(slf)?;
        let engine = slf.get().engine(slf.py())?;
        let (_, handler) = slf.get().bound_pair(slf.py())?;
        engine.refuse_unclearable_cookies(handler.bind(slf.py()), slf.as_super())?;
        match engine.stored_id(slf.as_super()) {
            Some((id, owner)) => {
                Bound::new(slf.py(), StoreTask::new(engine, Job::Delete(id, owner))).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Finishes a logout: clears both cookies and the data; the session is new again (a later
    /// write stores it under a new id and sends its cookies).
    pub(super) fn _end_destroy(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let (_, handler) = slf.get().bound_pair(py)?;
        slf.get()
            .engine(py)?
            .destroy(Some(handler.bind(py)), slf.as_super())
    }
}
