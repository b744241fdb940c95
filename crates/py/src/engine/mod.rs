//! The lifecycle's steps on real objects: the store, the request handler's cookies, and the
//! `Session` whose state they change. Every API path (drop-in `TornadoSession`,
//! `manager.get/set`, the mixin, the async methods) goes through these, and the decisions are
//! `lifecycle`'s.
//!
//! Loading and saving are split so the async API can run the store I/O on a worker thread while
//! everything that touches the handler or Python objects stays on the IOLoop's thread:
//! `check_request` (handler) -> `load` (store) -> `open` (Python objects), and `plan_save`
//! (Python objects) -> `save` (store) -> `record_save` + `send_cookies` (handler).

use crate::errors::store_error;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use serde_json::{Map, Value};

use crate::convert::dict_to_json;
use crate::log::{log, Level};
use crate::py_stores::StoreHandle;
use crate::session::{Session, SessionMeta};
use crate::tornado_cookies::{headers_written, text, CookieSettings, CookiesTooLate};
use crate::wire_link::{SinkOf, WireServer};

mod outcomes;
mod sealed;
mod user_sessions;
use tornsession_core::codec;
use tornsession_core::compact_cookie;
use tornsession_core::digest::Secrets;
use tornsession_core::ids;
use tornsession_core::lifecycle::{
    self, CookieCheck, Fetched, Opened, SavePlan, SessionState, Verified, WriteMode, WriteOutcome,
};
use tornsession_core::metrics::{LoadResult, Metrics, SaveResult, StoreOp};
use tornsession_core::policy::Policy;
use tornsession_core::sealed_cookie::CookieSealer;
use tornsession_core::stores::{StoreError, StoreErrorKind};
use tornsession_core::time;
pub use tornsession_core::user_sessions::Listed;
use tornsession_core::users::{self, ExpiryCaps};

/// Everything a manager decides with: secrets, store, cookies, limits.
pub struct Engine {
    pub secrets: Secrets,
    pub store: StoreHandle,
    pub cookies: CookieSettings,
    pub policy: Policy,
    /// The largest record a load reads; larger ones give a fresh session.
    pub max_read_size: usize,
    /// How far `set_expiry` may go.
    pub caps: ExpiryCaps,
    /// Where the store came from, to tell an app migrating from a `session.py` that kept
    /// sessions elsewhere that its sessions now live in files or memory.
    pub store_origin: StoreOrigin,
    /// Whether an app's settings were looked at (once, at the first request with a handler).
    pub settings_checked: AtomicBool,
    /// The store's servers as the async API's connections reach them (made at first use).
    pub wire_servers: PyOnceLock<Vec<Py<WireServer>>>,
    /// Seals sessions into their cookies and opens them, for a store that keeps them there
    /// (`CookieStore`); its keys come from `secrets`.
    pub sealer: Option<CookieSealer>,
    /// What sessions do, counted (`None` with `metrics=False`).
    pub metrics: Option<Arc<Metrics>>,
}

/// How the manager got its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOrigin {
    /// `store=`: the app chose.
    Given,
    /// `session_dir`: a FileStore, as the original module.
    SessionDir,
    /// Neither: the MemoryStore.
    Default,
}

/// Application settings that a `session.py` of some app used to pick another store.
fn suggests_another_store(setting: &str) -> Option<&'static str> {
    let name = setting.to_ascii_lowercase();
    if name.contains("memcache") {
        Some("memcached (tornsession.MemcachedStore)")
    } else if name.contains("redis") {
        Some("Redis (tornsession.RedisStore)")
    } else if [
        "session_storage",
        "session_store",
        "session_engine",
        "session_backend",
    ]
    .contains(&name.as_str())
    {
        Some("another store")
    } else {
        None
    }
}

/// A finished load: the session's identity and state, its data, and the record to delete (a
/// session past its lifetime) before the session is used.
pub struct Loaded {
    pub meta: SessionMeta,
    pub data: Option<Map<String, Value>>,
    pub delete_old: Option<String>,
}

/// A decided write of one session's record.
pub struct PlannedSave {
    pub id: String,
    pub plan: SavePlan,
}

impl Engine {
    /// A new id and its digest.
    pub fn new_identity(&self) -> PyResult<(String, String)> {
        let id = ids::new_session_id()
            .map_err(|e| PyOSError::new_err(format!("the OS random source failed: {e}")))?;
        let digest = self.secrets.sign(&id);
        Ok((id, digest))
    }

    /// A new session: a new id, nothing stored until saved.
    pub fn fresh_meta(&self, py: Python<'_>) -> PyResult<SessionMeta> {
        self.count(Metrics::fresh);
        let (id, digest) = self.new_identity()?;
        Ok(SessionMeta::new(
            py,
            &id,
            &digest,
            SessionState::fresh(time::now()),
        ))
    }

    /// What the handler's cookies name.
    pub fn check_request(&self, handler: &Bound<'_, PyAny>) -> PyResult<CookieCheck> {
        if !self.settings_checked.swap(true, Ordering::Relaxed) {
            self.warn_about_ignored_settings(handler);
        }
        let cookies = self.cookies.request_cookies(handler)?;
        let now = time::now();
        if let Some(sealer) = &self.sealer {
            return Ok(self.open_sealed(handler.py(), sealer, cookies.sealed.as_deref(), now));
        }
        let pair = lifecycle::verify(
            &self.secrets,
            cookies.id.as_deref(),
            cookies.digest.as_deref(),
            cookies.id_signed_at,
            now,
        );
        let compact = cookies
            .compact
            .as_deref()
            .map_or(CookieCheck::Absent, |value| {
                compact_cookie::verify(&self.secrets, value, now)
            });
        // Both formats are read, so switching cookie_format logs nobody out.
        Ok(compact_cookie::pick(self.cookies.format, compact, pair))
    }

    /// Says once, in the log, when the app's settings name a store (memcached, Redis ...) that
    /// this manager does not use because it was given `session_dir` or nothing: an app that
    /// swapped its `session.py` for tornsession would otherwise move its sessions silently.
    fn warn_about_ignored_settings(&self, handler: &Bound<'_, PyAny>) {
        if self.store_origin == StoreOrigin::Given {
            return;
        }
        let py = handler.py();
        let Some(settings) = handler
            .getattr_opt("application")
            .ok()
            .flatten()
            .and_then(|app| app.getattr_opt("settings").ok().flatten())
        else {
            return;
        };
        let Ok(settings) = settings.cast_into::<PyDict>() else {
            return;
        };
        for key in settings.keys() {
            let Ok(key) = key.extract::<String>() else {
                continue;
            };
            let Some(suggested) = suggests_another_store(&key) else {
                continue;
            };
            let origin = match self.store_origin {
                StoreOrigin::SessionDir => "from session_dir",
                _ => "the default, as no store= was given",
            };
            log(
                py,
                Level::Warning,
                &format!(
                    "the application setting {key:?} suggests sessions in {suggested}, but this \
                     TornadoSessionManager keeps them in {} ({origin}); pass store= to use \
                     that store",
                    self.store.describe(py)
                ),
            );
            return;
        }
    }

    /// What an id and digest given by hand (str or bytes) name.
    pub fn check_pair(
        &self, session_id: Option<&Bound<'_, PyAny>>, hmac_digest: Option<&Bound<'_, PyAny>>,
    ) -> CookieCheck {
        let Some(id) = session_id.map(text) else {
            return CookieCheck::Absent;
        };
        let digest = hmac_digest.and_then(text);
        match id {
            Some(id) => lifecycle::verify(
                &self.secrets,
                Some(&id),
                digest.as_deref(),
                None,
                time::now(),
            ),
            None => CookieCheck::Invalid,
        }
    }

    /// The record for a verified id, refreshing its idle expiry as it is read (or the one its
    /// cookie carried sealed). Only a store failing as a whole, or answering with a record bound
    /// to another id, is an error; a record it cannot use is a fresh session.
    pub fn load(&self, py: Python<'_>, verified: &Verified) -> Result<Fetched, StoreError> {
        let started = self.started().filter(|_| verified.sealed.is_none());
        let fetched = self.load_from_store(py, verified);
        self.observe(StoreOp::Load, started, &fetched);
        fetched
    }

    fn load_from_store(&self, py: Python<'_>, verified: &Verified) -> Result<Fetched, StoreError> {
        let session_id = verified.id.as_str();
        let policy = &self.policy;
        // Runs inside the store's load: a record of another id gives nothing to go by.
        let own_idle = |blob: &[u8]| {
            codec::check_binding(blob, session_id).ok()?;
            codec::peek_extras(blob)
                .filter(|extras| extras.expiry.idle_timeout.is_some())
                .and_then(|extras| policy.for_session(&extras.expiry).idle_timeout)
        };
        let found = match &verified.sealed {
            Some(record) => Ok(Some(record.clone())),
            None => self.store.load_refreshing(
                py,
                session_id,
                self.policy.idle_timeout,
                &own_idle,
                self.max_read_size,
            ),
        };
        let found = self.check_loaded(py, session_id, found);
        if let Ok(Some(blob)) = &found {
            // An owned session's index entry lives as long as its record (Redis).
            if let Some(extras) = codec::peek_extras(blob) {
                let ttl = self.policy.for_session(&extras.expiry).idle_timeout;
                if let (Some(user), Some(ttl)) = (&extras.user, ttl) {
                    self.store
                        .touch_user(py, &users::user_key(user), session_id, ttl)?;
                }
                // Where no index can end it, its owner's counter may have (memcached): the
                // one extra round trip of an owned load there.
                if let Some(user) = extras.user.as_deref() {
                    if self.store.revokes_by_generation() {
                        let counter = self.store.user_generation(py, &users::user_key(user))?;
                        if users::is_revoked(extras.generation, counter) {
                            return Ok(Fetched::Revoked);
                        }
                    }
                }
            }
        }
        Self::fetched(found)
    }

    /// What a load that needed no more than reading the record of `session_id` (with the
    /// manager's idle timeout applied) found; `None` when the record asks for more, which only
    /// `load` does: an owner (index, generation) or an idle timeout of its own (another
    /// expiry). A record bound to another id is a `Crossed` error, whatever it holds.
    pub fn loaded_without_follow_up(
        &self, session_id: &str, found: Result<Option<Vec<u8>>, StoreError>,
    ) -> Option<Result<Fetched, StoreError>> {
        let found = Python::attach(|py| self.check_loaded(py, session_id, found));
        if let Ok(Some(blob)) = &found {
            if codec::peek_extras(blob)
                .is_some_and(|extras| extras.user.is_some() || extras.expiry.idle_timeout.is_some())
            {
                return None;
            }
        }
        Some(Self::fetched(found))
    }

    /// A store's answer to a load of `session_id`, refused when the record is bound to another
    /// id (see `lifecycle::check_loaded`): every read of a record by id goes through this first.
    fn check_loaded(
        &self, py: Python<'_>, session_id: &str, found: Result<Option<Vec<u8>>, StoreError>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        lifecycle::check_loaded(session_id, found, || self.store.describe(py))
    }

    /// A store's answer to a load as the lifecycle reads it: a record, none, or one that is
    /// lost (unreadable, oversized); any other error fails the request.
    fn fetched(found: Result<Option<Vec<u8>>, StoreError>) -> Result<Fetched, StoreError> {
        match found {
            Ok(Some(blob)) => Ok(Fetched::Record(blob)),
            Ok(None) => Ok(Fetched::Missing),
            Err(e) if e.kind == StoreErrorKind::UnreadableRecord => {
                Ok(Fetched::Unreadable(e.to_string()))
            }
            Err(e) if e.kind == StoreErrorKind::OversizedRecord => {
                Ok(Fetched::Oversized(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// The store's servers for the async API's connections, made once per engine.
    pub fn wire_servers(&self, py: Python<'_>, sink_of: SinkOf) -> PyResult<&Vec<Py<WireServer>>> {
        self.wire_servers.get_or_try_init(py, || {
            let StoreHandle::Native(store) = &self.store else {
                return Ok(Vec::new());
            };
            let describe = self.store.describe(py);
            let metrics = self.metrics.clone();
            WireServer::for_store(store, &describe, self.max_read_size, sink_of, metrics)
                .into_iter()
                .map(|server| Py::new(py, server))
                .collect()
        })
    }

    pub fn open(&self, py: Python<'_>, verified: &Verified, fetched: Fetched) -> PyResult<Loaded> {
        let now = time::now();
        match lifecycle::open(&self.policy, verified, fetched, now) {
            Opened::Existing { mut state, data } => {
                self.count(|metrics| metrics.load(LoadResult::Found));
                // A record without a generation was live as generation 0: saved as that, not
                // as whatever the counter says by then (which would revive it after a bump).
                if self.store.revokes_by_generation() && state.extras.user.is_some() {
                    state.extras.generation.get_or_insert(0);
                }
                let digest = self.secrets.sign(&verified.id);
                Ok(Loaded {
                    meta: SessionMeta::new(py, &verified.id, &digest, state),
                    data: Some(data),
                    delete_old: None,
                })
            }
            Opened::Fresh {
                state,
                why,
                delete_old,
            } => {
                self.report_fresh(py, &verified.id, why);
                let (id, digest) = self.new_identity()?;
                Ok(Loaded {
                    meta: SessionMeta::new(py, &id, &digest, state),
                    data: None,
                    delete_old: delete_old.then(|| verified.id.clone()),
                })
            }
        }
    }

    /// All load steps in a row, on this thread (the synchronous API).
    pub fn load_now(&self, py: Python<'_>, check: CookieCheck) -> PyResult<Loaded> {
        let verified = match check {
            CookieCheck::Verified(verified) => verified,
            CookieCheck::Absent | CookieCheck::Invalid => {
                return Ok(Loaded {
                    meta: self.fresh_meta(py)?,
                    data: None,
                    delete_old: None,
                })
            }
        };
        let fetched = self.load(py, &verified).map_err(store_error)?;
        let loaded = self.open(py, &verified, fetched)?;
        if let Some(old) = &loaded.delete_old {
            self.delete(py, old, None).map_err(store_error)?;
        }
        Ok(loaded)
    }

    /// Serializes the session and decides what to write (`None`: nothing). With the request's
    /// `handler`, a session kept in its cookie is refused here when that cookie would be too
    /// large.
    pub fn plan_save(
        &self, session: &Bound<'_, Session>, handler: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<PlannedSave>> {
        let id = session.get().id(session.py())?;
        let state = session.get().state();
        let data = dict_to_json(session.as_super())?;
        let now = time::now();
        let blob = codec::encode_with(
            &id,
            lifecycle::created_for_save(&state, now),
            &data,
            &state.extras_for_save(now),
        );
        let plan = lifecycle::plan_save(&self.policy, &state, blob, data.is_empty(), now)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        if plan.is_none() && state.is_stored() {
            self.count(|metrics| metrics.save(SaveResult::Unchanged));
        }
        if let (Some(plan), Some(handler)) = (&plan, self.sealer.as_ref().and(handler)) {
            self.check_sealed_size(handler, plan)?;
        }
        Ok(plan.map(|plan| PlannedSave { id, plan }))
    }

    /// Writes a planned record as its mode says. A conditional write that finds no record is
    /// `Gone`; one that finds another writer's record is a conflict error.
    ///
    /// On a store that revokes by generation, a record of a new owner is first given the
    /// owner's current generation: one `get` per login, none for saves of loaded sessions,
    /// which keep the generation they were loaded with (so one ended meanwhile stays ended).
    pub fn save(
        &self, py: Python<'_>, write: &mut PlannedSave,
    ) -> Result<WriteOutcome, StoreError> {
        let started = self.started();
        let outcome = self.save_to_store(py, write);
        self.observe(StoreOp::Save, started, &outcome);
        outcome
    }

    fn save_to_store(
        &self, py: Python<'_>, write: &mut PlannedSave,
    ) -> Result<WriteOutcome, StoreError> {
        if let (Some(user), None) = (&write.plan.user, write.plan.generation) {
            if self.store.revokes_by_generation() {
                let generation = self
                    .store
                    .user_generation(py, &users::user_key(user))?
                    .unwrap_or(0);
                if let Ok(blob) = codec::with_generation(&write.id, &write.plan.blob, generation) {
                    write.plan.blob = blob;
                    write.plan.generation = Some(generation);
                }
            }
        }
        let outcome = self.save_record(py, write)?;
        let PlannedSave { id, plan } = write;
        if outcome == WriteOutcome::Written {
            if let Some(user) = &plan.user {
                self.store
                    .index_user(py, &users::user_key(user), id, plan.ttl)?;
            }
            if let Some(old) = &plan.unindex {
                self.store.unindex_user(py, &users::user_key(old), id)?;
            }
        }
        Ok(outcome)
    }

    fn save_record(&self, py: Python<'_>, write: &PlannedSave) -> Result<WriteOutcome, StoreError> {
        let PlannedSave { id, plan } = write;
        match &plan.mode {
            WriteMode::Create => self
                .store
                .save(py, id, &plan.blob, plan.ttl)
                .map(|()| WriteOutcome::Written),
            WriteMode::IfExists => Ok(
                if self.store.save_if_exists(py, id, &plan.blob, plan.ttl)? {
                    WriteOutcome::Written
                } else {
                    WriteOutcome::Gone
                },
            ),
            WriteMode::IfUnchanged(expected) => {
                match self.store.save_if_unchanged(
                    py,
                    id,
                    expected.as_deref(),
                    &plan.blob,
                    plan.ttl,
                ) {
                    Ok(()) => Ok(WriteOutcome::Written),
                    // The record it loaded is gone rather than changed: ended by another request.
                    Err(e) if e.kind == StoreErrorKind::Conflict && expected.is_some() => {
                        match self.load_record(py, id) {
                            Ok(None) => Ok(WriteOutcome::Gone),
                            _ => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Records what came of a write in the session (and logs a new or a dropped session).
    pub fn record_save(
        &self, py: Python<'_>, session: &Bound<'_, Session>, write: PlannedSave,
        outcome: WriteOutcome,
    ) {
        let token = ids::log_token(&write.id);
        let sealed = self.sealer.is_some();
        let first = session.get().update_state(|state| {
            let first = state.record_write(write.plan, outcome);
            // What was written goes out in the cookie.
            state.cookies_due |= sealed && outcome == WriteOutcome::Written;
            first
        });
        self.count(|metrics| {
            metrics.save(match outcome {
                WriteOutcome::Written => SaveResult::Written,
                WriteOutcome::Gone => SaveResult::Dropped,
            })
        });
        match outcome {
            WriteOutcome::Written if first => {
                log(py, Level::Info, &format!("session {token} created"))
            }
            WriteOutcome::Written => {}
            WriteOutcome::Gone => log(
                py,
                Level::Warning,
                &format!(
                    "session {token} was ended or regenerated by another request since this one \
                     loaded it; this request's changes were dropped"
                ),
            ),
        }
    }

    /// Plans, writes and records, on this thread (the synchronous API).
    pub fn save_now(&self, py: Python<'_>, session: &Bound<'_, Session>) -> PyResult<()> {
        if self.sealer.is_some() {
            return Err(PyValueError::new_err(
                "a CookieStore session is saved in its cookie: save it with the request handler \
                 (manager.set(handler, session), or session.save() of a TornadoSession)",
            ));
        }
        if let Some(mut write) = self.plan_save(session, None)? {
            let outcome = self.save(py, &mut write).map_err(store_error)?;
            self.record_save(py, session, write, outcome);
        }
        Ok(())
    }

    /// `save_now` for a request: refuses a write whose cookies could no longer be sent (see
    /// `refuse_unsendable_cookies`), then sets the cookies when they are due.
    pub fn save_for_handler(
        &self, handler: &Bound<'_, PyAny>, session: &Bound<'_, Session>,
    ) -> PyResult<()> {
        let py = handler.py();
        if let Some(mut write) = self.plan_save(session, Some(handler))? {
            self.refuse_unsendable_cookies(handler, session)?;
            let outcome = self.save(py, &mut write).map_err(store_error)?;
            self.record_save(py, session, write, outcome);
        }
        self.send_cookies(handler, session)
    }

    /// Sets the cookies of the configured format, with a freshly computed digest, when they are
    /// due. Once the headers are out only a refresh can be due (a write that needed them was
    /// refused before it was made): the browser's cookie still names the session, and a later
    /// response sends it.
    pub fn send_cookies(
        &self, handler: &Bound<'_, PyAny>, session: &Bound<'_, Session>,
    ) -> PyResult<()> {
        let py = handler.py();
        if !session.get().update_state(|state| state.cookies_to_send()) || headers_written(handler)
        {
            return Ok(());
        }
        session
            .get()
            .update_state(|state| state.cookies_due = false);
        self.count(Metrics::cookies_sent);
        let id = session.get().id(py)?;
        let state = session.get().state();
        // A sealed cookie carries no digest (the session's own was made with its id).
        if let Some(sealer) = &self.sealer {
            return self.send_sealed(handler, sealer, id, &state);
        }
        let digest = self.secrets.sign(&id);
        session.get().set_digest(py, &digest);
        self.cookies.send(
            handler,
            &self.secrets,
            &id,
            &digest,
            state.extras.expiry.persistent,
        )
    }

    /// The id of the session's record, if one exists (what a logout must delete), and the
    /// owner whose index it is filed in.
    pub fn stored_id(&self, session: &Bound<'_, Session>) -> Option<(String, Option<String>)> {
        let state = session.get().state();
        if state.is_stored() {
            let id = session.get().id(session.py()).ok()?;
            Some((id, state.indexed_owner()))
        } else {
            None
        }
    }

    /// Logout, once the record is deleted: a new id, no data, the cookies of both formats
    /// cleared (while the headers are not out yet). A write after this stores a new session and
    /// sends its cookies.
    pub fn destroy(
        &self, handler: Option<&Bound<'_, PyAny>>, session: &Bound<'_, Session>,
    ) -> PyResult<()> {
        let py = session.py();
        let old = session.get().id(py).ok();
        session
            .get()
            .update_state(|state| state.destroy(time::now()));
        let (id, digest) = self.new_identity()?;
        session.get().set_identity(py, &id, &digest);
        session.as_super().clear();
        // Once the headers are out (flush(), a WebSocket) the browser keeps its cookies: they
        // name a record that is gone, so its next request starts a new session all the same.
        if let Some(handler) = handler.filter(|handler| !headers_written(handler)) {
            self.cookies.clear(handler)?;
        }
        let token = old.as_deref().map(ids::log_token).unwrap_or_default();
        log(py, Level::Info, &format!("session {token} destroyed"));
        Ok(())
    }

    /// A new id for the same data (saved under it next). Returns the id whose record must be
    /// deleted once that save is done.
    pub fn regenerate(&self, session: &Bound<'_, Session>) -> PyResult<Option<String>> {
        let py = session.py();
        let old = session.get().id(py).ok();
        let delete = session.get().update_state(SessionState::regenerate);
        if session.get().state().gone {
            return Ok(None);
        }
        let (id, digest) = self.new_identity()?;
        session.get().set_identity(py, &id, &digest);
        let token = old.as_deref().map(ids::log_token).unwrap_or_default();
        log(py, Level::Info, &format!("session {token} regenerated"));
        Ok(old.filter(|_| delete))
    }
}

impl Engine {
    /// A regeneration deleted the old record and found none: another request ended the session
    /// first, so its data is not written under the new id and no cookie is sent.
    pub fn ended_elsewhere(&self, session: &Bound<'_, Session>, old_id: &str) {
        session.get().update_state(SessionState::end_elsewhere);
        log(
            session.py(),
            Level::Warning,
            &format!(
                "session {} was ended by another request before this one regenerated it; \
                 nothing was saved",
                ids::log_token(old_id)
            ),
        );
    }
}

impl Engine {
    /// Refuses, before the store is touched, a planned write of a session the browser has no
    /// cookie for (new, regenerated, or written again after a logout) once the response's
    /// headers are out: its record would be an orphan no request can name, and the visitor
    /// would lose it. A session kept in its cookie is refused whatever it is: its cookie is
    /// its record.
    pub fn refuse_unsendable_cookies(
        &self, handler: &Bound<'_, PyAny>, session: &Bound<'_, Session>,
    ) -> Result<(), CookiesTooLate> {
        if self.sealer.is_some() {
            return CookiesTooLate::SealedSave.unless_sendable(handler);
        }
        if session.get().update_state(|state| state.is_stored()) {
            return Ok(());
        }
        CookiesTooLate::Save.unless_sendable(handler)
    }

    /// Refuses a logout of a session kept in its cookie once the response's headers are out:
    /// the cookie could not be cleared, and the session would live on.
    pub fn refuse_unclearable_cookies(
        &self, handler: &Bound<'_, PyAny>, session: &Bound<'_, Session>,
    ) -> Result<(), CookiesTooLate> {
        if self.sealer.is_none() || !session.get().state().is_stored() {
            return Ok(());
        }
        CookiesTooLate::SealedDestroy.unless_sendable(handler)
    }
}
