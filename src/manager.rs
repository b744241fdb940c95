//! `SessionManager` and `TornadoSessionManager`: the original module's API over a store, with
//! CSPRNG ids, HMAC-SHA256 digests, JSON records, expiry, and writes only when data changed.
//!
//! Loading and saving are split into steps so the async API can run the store I/O on a worker
//! thread while everything that touches the handler stays on the IOLoop's thread:
//! `check_cookies` (handler) -> `fetch` (store) -> `open` (Python objects), and
//! `plan_save` (Python objects) -> `write` (store) -> `saved` + `send_cookies` (handler).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use serde_json::{Map, Value};

use crate::codec;
use crate::convert::{dict_to_json, json_into_dict};
use crate::digest::{DigestCheck, Secrets};
use crate::errors::InvalidSessionException;
use crate::ids;
use crate::py_stores::StoreHandle;
use crate::session::{Session, SessionMeta, TornadoSession};
use crate::signed_cookie;
use crate::stores::{StoreError, StoreErrorKind};

/// Re-send the cookies of an active session once they are this old, well inside Tornado's
/// 31-day limit on signed cookies and the 30-day default cookie expiry.
const COOKIE_REFRESH_AGE: u64 = 24 * 3600;

/// How the two cookies are named and sent.
struct CookieSettings {
    id_name: Py<PyString>,
    digest_name: Py<PyString>,
    /// Keyword arguments for `set_secure_cookie`, built once.
    set_kwargs: Py<PyDict>,
    /// Keyword arguments for `clear_cookie` (the same path and domain).
    clear_kwargs: Py<PyDict>,
    /// Whether both names can be read from the header directly (see `plain_cookie_name`).
    native_names: bool,
}

/// What a request's cookies say, before the store is asked.
pub enum CookieCheck {
    /// No usable cookie (missing, forged, foreign, malformed): a new session.
    Fresh,
    /// A genuine session id.
    Verified(Verified),
}

/// A genuine session id, and whether its cookies must be sent again.
pub struct Verified {
    pub id: String,
    /// Signed with an older secret or in the original's format, or the cookie is getting old.
    pub cookies_due: bool,
}

/// A decided write: the record to store (None when the data did not change).
pub struct SavePlan {
    pub id: String,
    pub blob: Option<Vec<u8>>,
    pub ttl: Option<Duration>,
    /// With conflict detection: the record the store must still hold for the write to happen.
    pub expected: Option<Option<Vec<u8>>>,
}

/// Keeps the secret(s) and the store; hands out and stores sessions.
#[pyclass(module = "tornsession", subclass, frozen)]
pub struct SessionManager {
    secrets: Secrets,
    store: StoreHandle,
    cookies: CookieSettings,
    /// How long a session may go unused.
    idle_timeout: Option<Duration>,
    /// How long a session may live from its creation, however active.
    lifetime: Option<Duration>,
    /// The largest stored record, in bytes.
    max_size: Option<usize>,
    /// Whether saves check that nobody else saved the session since it was loaded.
    detect_conflicts: bool,
}

/// A `SessionManager` that reads and writes the session cookies through a `RequestHandler`.
#[pyclass(module = "tornsession", extends = SessionManager, subclass, frozen)]
pub struct TornadoSessionManager;

#[allow(clippy::too_many_arguments)]
#[pymethods]
impl SessionManager {
    #[new]
    #[pyo3(
        text_signature = "(secret, session_dir=None, *, store=None, cookie_name='session_id', \
        digest_cookie_name='hmac_digest', cookie_httponly=True, cookie_samesite='Lax', \
        cookie_secure=False, cookie_domain=None, cookie_path='/', cookie_expires_days=30.0, \
        idle_timeout=None, lifetime=None, max_size=None, detect_conflicts=False)"
    )]
    #[pyo3(signature = (
        secret,
        session_dir = None,
        *,
        store = None,
        cookie_name = "session_id",
        digest_cookie_name = "hmac_digest",
        cookie_httponly = true,
        cookie_samesite = Some("Lax"),
        cookie_secure = false,
        cookie_domain = None,
        cookie_path = "/",
        cookie_expires_days = Some(30.0),
        idle_timeout = None,
        lifetime = None,
        max_size = None,
        detect_conflicts = false,
    ))]
    fn new(
        py: Python<'_>,
        secret: &Bound<'_, PyAny>,
        session_dir: Option<PathBuf>,
        store: Option<&Bound<'_, PyAny>>,
        cookie_name: &str,
        digest_cookie_name: &str,
        cookie_httponly: bool,
        cookie_samesite: Option<&str>,
        cookie_secure: bool,
        cookie_domain: Option<&str>,
        cookie_path: &str,
        cookie_expires_days: Option<f64>,
        idle_timeout: Option<&Bound<'_, PyAny>>,
        lifetime: Option<&Bound<'_, PyAny>>,
        max_size: Option<usize>,
        detect_conflicts: bool,
    ) -> PyResult<Self> {
        let secrets = Secrets::new(secret_keys(secret)?)?;
        let idle_timeout = idle_timeout.map(seconds).transpose()?;
        let lifetime = lifetime.map(seconds).transpose()?;
        if max_size == Some(0) {
            return Err(PyValueError::new_err(
                "max_size must be a positive number of bytes",
            ));
        }
        // The original's default is session_dir='', which we read as "no folder given".
        let session_dir = session_dir.filter(|dir| !dir.as_os_str().is_empty());
        let store = match (store, session_dir) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "pass either session_dir (a FileStore folder) or store=, not both",
                ))
            }
            (Some(store), None) => StoreHandle::from_object(store)?,
            (None, Some(folder)) => StoreHandle::file(py, folder)?,
            (None, None) => StoreHandle::default_memory(),
        };
        if detect_conflicts && !store.supports_conflict_checks(py) {
            return Err(PyTypeError::new_err(
                "detect_conflicts=True needs a store with compare_and_set(key, expected, value, \
                 ttl); this Python store has none",
            ));
        }
        if cookie_name.is_empty()
            || digest_cookie_name.is_empty()
            || cookie_name == digest_cookie_name
        {
            return Err(PyValueError::new_err(
                "cookie_name and digest_cookie_name must be two different non-empty names",
            ));
        }
        if let Some(samesite) = cookie_samesite {
            if !["Lax", "Strict", "None"].contains(&samesite) {
                return Err(PyValueError::new_err(format!(
                    "cookie_samesite must be 'Lax', 'Strict', 'None' or None, not {samesite:?}"
                )));
            }
        }
        let clear_kwargs = PyDict::new(py);
        clear_kwargs.set_item("path", cookie_path)?;
        if let Some(domain) = cookie_domain {
            clear_kwargs.set_item("domain", domain)?;
        }
        let set_kwargs = clear_kwargs.copy()?;
        set_kwargs.set_item("expires_days", cookie_expires_days)?;
        // Only non-default flags are passed, so Tornado versions whose set_cookie takes them as
        // plain morsel attributes see nothing they would misread.
        if cookie_httponly {
            set_kwargs.set_item("httponly", true)?;
        }
        if cookie_secure {
            set_kwargs.set_item("secure", true)?;
        }
        if let Some(samesite) = cookie_samesite {
            set_kwargs.set_item("samesite", samesite)?;
        }
        Ok(Self {
            secrets,
            store,
            cookies: CookieSettings {
                id_name: PyString::new(py, cookie_name).unbind(),
                digest_name: PyString::new(py, digest_cookie_name).unbind(),
                set_kwargs: set_kwargs.unbind(),
                clear_kwargs: clear_kwargs.unbind(),
                native_names: plain_cookie_name(cookie_name)
                    && plain_cookie_name(digest_cookie_name),
            },
            idle_timeout,
            lifetime,
            max_size,
            detect_conflicts,
        })
    }

    /// A new session when `session_id` is None; else the stored one, after checking the digest.
    #[pyo3(signature = (session_id = None, hmac_digest = None))]
    fn get(
        slf: &Bound<'_, Self>,
        session_id: Option<&Bound<'_, PyAny>>,
        hmac_digest: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Session>> {
        let py = slf.py();
        let manager = slf.get();
        let check = match session_id {
            None => CookieCheck::Fresh,
            Some(id) => match manager.check_pair(Some(id), hmac_digest) {
                Some(verified) => CookieCheck::Verified(verified),
                None => {
                    return Err(InvalidSessionException::new_err(
                        "the session id does not match its digest",
                    ))
                }
            },
        };
        manager.session_for(py, check)
    }

    /// Stores the session's items (not its attributes) if they changed since loaded or saved.
    fn set(&self, py: Python<'_>, session: &Bound<'_, PyAny>) -> PyResult<()> {
        let session = as_session(session)?;
        if let Some(plan) = self.plan_save(session)? {
            self.write(py, &plan)?;
            self.saved(py, session, plan);
        }
        Ok(())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("SessionManager(store={})", self.store.describe(py))
    }
}

#[pymethods]
impl TornadoSessionManager {
    #[new]
    #[pyo3(
        text_signature = "(secret, session_dir=None, *, store=None, cookie_name='session_id', \
        digest_cookie_name='hmac_digest', cookie_httponly=True, cookie_samesite='Lax', \
        cookie_secure=False, cookie_domain=None, cookie_path='/', cookie_expires_days=30.0, \
        idle_timeout=None, lifetime=None, max_size=None, detect_conflicts=False)"
    )]
    #[pyo3(signature = (secret, session_dir = None, **options))]
    fn new(
        py: Python<'_>,
        secret: &Bound<'_, PyAny>,
        session_dir: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        // Build the base through its own constructor, so both take exactly the same options.
        let base = py
            .get_type::<SessionManager>()
            .call((secret, session_dir), options)?
            .cast_into::<SessionManager>()?;
        let base = base.get();
        let copy = SessionManager {
            secrets: base.secrets.clone(),
            store: base.store.clone_ref(py),
            cookies: CookieSettings {
                id_name: base.cookies.id_name.clone_ref(py),
                digest_name: base.cookies.digest_name.clone_ref(py),
                set_kwargs: base.cookies.set_kwargs.clone_ref(py),
                clear_kwargs: base.cookies.clear_kwargs.clone_ref(py),
                native_names: base.cookies.native_names,
            },
            idle_timeout: base.idle_timeout,
            lifetime: base.lifetime,
            max_size: base.max_size,
            detect_conflicts: base.detect_conflicts,
        };
        Ok(PyClassInitializer::from(copy).add_subclass(Self))
    }

    /// The session named by the handler's cookies; a new one without a handler or cookie.
    #[pyo3(signature = (requestHandler = None))]
    #[allow(non_snake_case)]
    fn get(
        slf: &Bound<'_, Self>,
        requestHandler: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Session>> {
        let py = slf.py();
        let manager = slf.as_super().get();
        let check = match requestHandler.filter(|h| !h.is_none()) {
            None => CookieCheck::Fresh,
            Some(handler) => {
                let cookies = manager.request_cookies(handler)?;
                match cookies.id {
                    None => CookieCheck::Fresh,
                    Some(id) => match manager.check_text_pair(id, cookies.digest.as_deref()) {
                        Some(verified) => CookieCheck::Verified(verified),
                        None => {
                            return Err(InvalidSessionException::new_err(
                                "the session cookies do not match their digest",
                            ))
                        }
                    },
                }
            }
        };
        manager.session_for(py, check)
    }

    /// Stores the session if it changed, then sets its cookies if they are due (new,
    /// regenerated, re-signed or getting old).
    #[allow(non_snake_case)]
    fn set(
        slf: &Bound<'_, Self>,
        requestHandler: &Bound<'_, PyAny>,
        session: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let manager = slf.as_super().get();
        manager.set(py, session)?;
        manager.send_cookies(requestHandler, as_session(session)?)
    }
}

impl SessionManager {
    /// A new id, its digest and the creation time; nothing is stored until saved.
    pub fn fresh_meta(&self, py: Python<'_>) -> PyResult<SessionMeta> {
        let id = ids::new_session_id()
            .map_err(|e| PyOSError::new_err(format!("the OS random source failed: {e}")))?;
        let digest = self.secrets.sign(&id);
        Ok(SessionMeta::new(py, &id, &digest, now(), None, true))
    }

    /// The request's two cookies: read in Rust straight from the `Cookie` header when the
    /// handler uses Tornado's own cookie methods, else through its `get_secure_cookie`.
    fn request_cookies(&self, handler: &Bound<'_, PyAny>) -> PyResult<RequestCookies> {
        if let Some(cookies) = self.read_cookies_natively(handler)? {
            return Ok(cookies);
        }
        let py = handler.py();
        let get = handler.getattr(intern!(py, "get_secure_cookie"))?;
        let id = get.call1((self.cookies.id_name.bind(py),))?;
        if id.is_none() {
            return Ok(RequestCookies::default());
        }
        let digest = get.call1((self.cookies.digest_name.bind(py),))?;
        let id_signed_at = handler
            .call_method1(intern!(py, "get_cookie"), (self.cookies.id_name.bind(py),))
            .ok()
            .and_then(|raw| raw.extract::<String>().ok())
            .and_then(|raw| signed_cookie::signed_at(&raw));
        Ok(RequestCookies {
            id: Some(text(&id).unwrap_or_default()),
            digest: (!digest.is_none()).then(|| text(&digest).unwrap_or_default()),
            id_signed_at,
        })
    }

    /// Tornado's `get_secure_cookie` for both cookies, done in Rust (byte for byte what Tornado
    /// accepts: `tests/test_signed_cookies.py`); `None` when Tornado must answer itself (an
    /// overridden cookie method, a version-1 or unusual value, no usable cookie_secret).
    fn read_cookies_natively(
        &self,
        handler: &Bound<'_, PyAny>,
    ) -> PyResult<Option<RequestCookies>> {
        let py = handler.py();
        if !self.cookies.native_names || !uses_tornado_cookie_methods(handler)? {
            return Ok(None);
        }
        let header = handler
            .getattr(intern!(py, "request"))?
            .getattr(intern!(py, "headers"))?
            .call_method1(intern!(py, "get"), (intern!(py, "Cookie"),))?;
        if header.is_none() {
            return Ok(Some(RequestCookies::default()));
        }
        let Ok(header) = header.cast::<PyString>() else {
            return Ok(None);
        };
        let header = header.to_str()?;
        let settings = handler
            .getattr(intern!(py, "application"))?
            .getattr(intern!(py, "settings"))?;
        let Some(secret) = cookie_secret_from(&settings)? else {
            return Ok(None);
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let read = |name: &Py<PyString>| -> PyResult<Option<Option<(String, u64)>>> {
            let name = name.bind(py).to_str()?;
            let raw = match signed_cookie::find_cookie(header, name) {
                signed_cookie::Found::Value(raw) => raw,
                signed_cookie::Found::Missing => return Ok(Some(None)),
                signed_cookie::Found::AskTornado => return Ok(None),
            };
            Ok(
                match signed_cookie::decode(&secret, name, raw, now, TORNADO_MAX_AGE_DAYS) {
                    signed_cookie::Decoded::Value(value, signed_at) => Some(
                        String::from_utf8(value)
                            .ok()
                            .map(|value| (value, signed_at)),
                    ),
                    signed_cookie::Decoded::Rejected => Some(None),
                    signed_cookie::Decoded::AskTornado => None,
                },
            )
        };
        let (Some(id), Some(digest)) = (
            read(&self.cookies.id_name)?,
            read(&self.cookies.digest_name)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(RequestCookies {
            id_signed_at: id.as_ref().map(|(_, signed_at)| *signed_at),
            id: id.map(|(id, _)| id),
            digest: digest.map(|(digest, _)| digest),
        }))
    }

    /// What the handler's cookies name: a verified id, or a fresh session (logged when the
    /// cookies were there but not genuine).
    pub fn check_cookies(&self, handler: &Bound<'_, PyAny>) -> PyResult<CookieCheck> {
        let py = handler.py();
        let cookies = self.request_cookies(handler)?;
        let Some(id) = cookies.id else {
            return Ok(CookieCheck::Fresh);
        };
        let Some(mut verified) = self.check_text_pair(id, cookies.digest.as_deref()) else {
            log(
                py,
                Level::Warning,
                "invalid session cookie, starting a new session",
            );
            return Ok(CookieCheck::Fresh);
        };
        if !verified.cookies_due {
            verified.cookies_due = cookies
                .id_signed_at
                .is_some_and(|signed| now().saturating_sub(signed) > COOKIE_REFRESH_AGE);
        }
        Ok(CookieCheck::Verified(verified))
    }

    /// Checks an id and digest (str or bytes); `None` when they are not a genuine pair.
    fn check_pair(
        &self,
        session_id: Option<&Bound<'_, PyAny>>,
        hmac_digest: Option<&Bound<'_, PyAny>>,
    ) -> Option<Verified> {
        let id = session_id.and_then(text)?;
        let digest = hmac_digest.and_then(text);
        self.check_text_pair(id, digest.as_deref())
    }

    fn check_text_pair(&self, id: String, digest: Option<&str>) -> Option<Verified> {
        let digest = digest?;
        if !ids::is_valid_session_id(&id) {
            return None;
        }
        match self.secrets.verify(&id, digest.as_bytes()) {
            DigestCheck::Invalid => None,
            DigestCheck::Current => Some(Verified {
                id,
                cookies_due: false,
            }),
            // An older secret or the original's format: the next save sends the current digest.
            DigestCheck::Outdated => Some(Verified {
                id,
                cookies_due: true,
            }),
        }
    }

    /// The record for a verified id, refreshing its idle expiry as it is read.
    pub fn fetch(&self, py: Python<'_>, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        // The manager's own option for the limit is to come; the stores' default until then.
        self.store.load(
            py,
            session_id,
            self.idle_timeout,
            crate::stores::DEFAULT_MAX_READ_SIZE,
        )
    }

    /// Turns what the store returned into a session: its identity and data, or a fresh session
    /// when the record is missing, expired, unreadable or corrupt (with a new id, so the bad or
    /// expired record is never written over under the old one).
    pub fn open(
        &self,
        py: Python<'_>,
        verified: Verified,
        fetched: Result<Option<Vec<u8>>, StoreError>,
    ) -> PyResult<(SessionMeta, Option<Map<String, Value>>)> {
        let token = ids::log_token(&verified.id);
        let blob = match fetched {
            Ok(Some(blob)) => blob,
            Ok(None) => {
                log(
                    py,
                    Level::Info,
                    &format!("session {token} expired or unknown, starting a new session"),
                );
                return Ok((self.fresh_meta(py)?, None));
            }
            Err(e) if e.kind == StoreErrorKind::UnreadableRecord => {
                log(
                    py,
                    Level::Warning,
                    &format!("unreadable session record, starting a new session: {e}"),
                );
                return Ok((self.fresh_meta(py)?, None));
            }
            Err(e) => return Err(e.into()),
        };
        let record = match codec::decode(&blob) {
            Ok(record) => record,
            Err(e) => {
                log(
                    py,
                    Level::Warning,
                    &format!(
                        "corrupt record for session {token} in {}, starting a new session: {e}",
                        self.store.describe(py)
                    ),
                );
                return Ok((self.fresh_meta(py)?, None));
            }
        };
        if let Some(lifetime) = self.lifetime {
            if now() >= record.created.saturating_add(lifetime.as_secs()) {
                log(
                    py,
                    Level::Info,
                    &format!("session {token} reached its lifetime, starting a new session"),
                );
                self.store.delete(py, &verified.id)?;
                return Ok((self.fresh_meta(py)?, None));
            }
        }
        let digest = self.secrets.sign(&verified.id);
        let meta = SessionMeta::new(
            py,
            &verified.id,
            &digest,
            record.created,
            Some(blob),
            verified.cookies_due,
        );
        Ok((meta, Some(record.data)))
    }

    /// All three load steps in a row, for the synchronous API.
    pub fn load(
        &self,
        py: Python<'_>,
        check: CookieCheck,
    ) -> PyResult<(SessionMeta, Option<Map<String, Value>>)> {
        match check {
            CookieCheck::Fresh => Ok((self.fresh_meta(py)?, None)),
            CookieCheck::Verified(verified) => {
                let fetched = self.fetch(py, &verified.id);
                self.open(py, verified, fetched)
            }
        }
    }

    /// A plain `Session` for what the cookies (or the id and digest) name.
    fn session_for(&self, py: Python<'_>, check: CookieCheck) -> PyResult<Py<Session>> {
        let (meta, data) = self.load(py, check)?;
        let session = Session::with_meta(py, meta)?;
        if let Some(data) = data {
            json_into_dict(&data, session.bind(py).as_super())?;
        }
        Ok(session)
    }

    /// How long the record may live from now: the idle timeout, cut short by the lifetime.
    fn ttl(&self, created: u64) -> Option<Duration> {
        let remaining = self.lifetime.map(|lifetime| {
            let age = Duration::from_secs(now().saturating_sub(created));
            lifetime.saturating_sub(age).max(Duration::from_secs(1))
        });
        match (self.idle_timeout, remaining) {
            (Some(idle), Some(remaining)) => Some(idle.min(remaining)),
            (idle, remaining) => idle.or(remaining),
        }
    }

    /// Serializes the session and decides what to write: `None` when nothing changed since it
    /// was loaded or last saved (compared on the serialized form, so nested changes count).
    pub fn plan_save(&self, session: &Bound<'_, Session>) -> PyResult<Option<SavePlan>> {
        let py = session.py();
        let (id, created) = session.get().id_and_created(py)?;
        let data = dict_to_json(session.as_super())?;
        let blob = codec::encode(created, &data);
        if session.get().is_stored_as(&blob) {
            return Ok(None);
        }
        if let Some(max_size) = self.max_size {
            if blob.len() > max_size {
                return Err(PyValueError::new_err(format!(
                    "the session is {} bytes serialized, over max_size={max_size}; \
                     the stored session was not changed",
                    blob.len()
                )));
            }
        }
        let expected = self.detect_conflicts.then(|| session.get().stored_blob());
        Ok(Some(SavePlan {
            ttl: self.ttl(created),
            id,
            blob: Some(blob),
            expected,
        }))
    }

    /// Writes a planned record to the store.
    pub fn write(&self, py: Python<'_>, plan: &SavePlan) -> Result<(), StoreError> {
        match (&plan.blob, &plan.expected) {
            (None, _) => Ok(()),
            (Some(blob), None) => self.store.save(py, &plan.id, blob, plan.ttl),
            (Some(blob), Some(expected)) => {
                self.store
                    .save_if_unchanged(py, &plan.id, expected.as_deref(), blob, plan.ttl)
            }
        }
    }

    /// Records that `plan` was written, so an unchanged session is not written again.
    pub fn saved(&self, py: Python<'_>, session: &Bound<'_, Session>, plan: SavePlan) {
        if let Some(blob) = plan.blob {
            if session.get().mark_stored(blob) {
                log(
                    py,
                    Level::Info,
                    &format!("session {} created", ids::log_token(&plan.id)),
                );
            }
        }
    }

    /// Sets the id cookie and a freshly computed digest cookie, if they are due.
    pub fn send_cookies(
        &self,
        handler: &Bound<'_, PyAny>,
        session: &Bound<'_, Session>,
    ) -> PyResult<()> {
        let py = handler.py();
        let Some(id) = session.get().take_cookies_due(py)? else {
            return Ok(());
        };
        let digest = self.secrets.sign(&id);
        session.get().set_digest(py, &digest);
        let set = handler.getattr(intern!(py, "set_secure_cookie"))?;
        let kwargs = self.cookies.set_kwargs.bind(py);
        set.call((self.cookies.id_name.bind(py), &id), Some(kwargs))?;
        set.call((self.cookies.digest_name.bind(py), &digest), Some(kwargs))?;
        Ok(())
    }

    /// Tells the browser to drop both cookies.
    pub fn clear_cookies(&self, handler: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = handler.py();
        let kwargs = self.cookies.clear_kwargs.bind(py);
        for name in [&self.cookies.id_name, &self.cookies.digest_name] {
            handler.call_method(intern!(py, "clear_cookie"), (name.bind(py),), Some(kwargs))?;
        }
        Ok(())
    }

    /// Whether store calls may wait on I/O.
    pub fn store_blocks(&self) -> bool {
        self.store.blocks()
    }

    /// Removes a session's record from the store.
    pub fn forget(&self, py: Python<'_>, session_id: &str) -> Result<(), StoreError> {
        self.store.delete(py, session_id)
    }
}

/// A request's two cookies, as `get_secure_cookie` returns them (decoded to text).
#[derive(Default)]
struct RequestCookies {
    id: Option<String>,
    digest: Option<String>,
    /// When the id cookie was signed, to know when to send it again.
    id_signed_at: Option<u64>,
}

/// `get_secure_cookie`'s default `max_age_days`.
const TORNADO_MAX_AGE_DAYS: f64 = 31.0;

/// Whether the handler's class uses Tornado's own `get_secure_cookie` and `get_cookie` (an app
/// that overrides either must see its override called).
fn uses_tornado_cookie_methods(handler: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = handler.py();
    static TORNADO_METHODS: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();
    let (get_secure, get_cookie) = TORNADO_METHODS.get_or_try_init(py, || -> PyResult<_> {
        let base = py.import("tornado.web")?.getattr("RequestHandler")?;
        Ok((
            base.getattr("get_secure_cookie")?.unbind(),
            base.getattr("get_cookie")?.unbind(),
        ))
    })?;
    let class = handler.get_type();
    Ok(class
        .getattr(intern!(py, "get_secure_cookie"))?
        .is(get_secure.bind(py))
        && class
            .getattr(intern!(py, "get_cookie"))?
            .is(get_cookie.bind(py)))
}

/// The app's `cookie_secret` setting in the shapes Tornado takes: str, bytes, or a dict of key
/// versions; `None` for anything else (Tornado then raises its own error).
fn cookie_secret_from(
    settings: &Bound<'_, PyAny>,
) -> PyResult<Option<signed_cookie::CookieSecret>> {
    let py = settings.py();
    let Ok(settings) = settings.cast::<PyDict>() else {
        return Ok(None);
    };
    let Some(secret) = settings.get_item(intern!(py, "cookie_secret"))? else {
        return Ok(None);
    };
    let key = |value: &Bound<'_, PyAny>| -> Option<Vec<u8>> {
        if let Ok(text) = value.cast::<PyString>() {
            return text.to_str().ok().map(|t| t.as_bytes().to_vec());
        }
        value.cast::<PyBytes>().ok().map(|b| b.as_bytes().to_vec())
    };
    if let Ok(versions) = secret.cast::<PyDict>() {
        let mut keys = Vec::with_capacity(versions.len());
        for (version, value) in versions.iter() {
            let (Ok(version), Some(value)) = (version.extract::<i64>(), key(&value)) else {
                return Ok(None);
            };
            keys.push((version, value));
        }
        return Ok(Some(signed_cookie::CookieSecret::Versioned(keys)));
    }
    Ok(key(&secret).map(signed_cookie::CookieSecret::Single))
}

/// Whether a cookie name is one Tornado's cookie jar keeps as it is (plain token characters,
/// not a cookie attribute's name), so reading the header directly finds what Tornado finds.
fn plain_cookie_name(name: &str) -> bool {
    const ATTRIBUTES: [&str; 9] = [
        "expires", "path", "comment", "domain", "max-age", "secure", "httponly", "version",
        "samesite",
    ];
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !ATTRIBUTES.contains(&name.to_ascii_lowercase().as_str())
}

/// The session inside `value`, loaded first if it is a lazy `TornadoSession`.
pub fn as_session<'a, 'py>(value: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, Session>> {
    if let Ok(tornado) = value.cast::<TornadoSession>() {
        TornadoSession::ensure_loaded(tornado)?;
    }
    value.cast::<Session>().map_err(|_| {
        PyTypeError::new_err(format!(
            "expected a tornsession.Session (from SessionManager.get()), got {}",
            value
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    })
}

/// The keys from `secret=`: a str or bytes, or a list or tuple of them, newest first.
fn secret_keys(secret: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let one = |value: &Bound<'_, PyAny>| -> PyResult<Vec<u8>> {
        if let Ok(text) = value.cast::<PyString>() {
            return Ok(text.to_str()?.as_bytes().to_vec());
        }
        if let Ok(bytes) = value.cast::<PyBytes>() {
            return Ok(bytes.as_bytes().to_vec());
        }
        Err(PyTypeError::new_err(format!(
            "secret must be a str or bytes (or a list of them, newest first), not {}",
            value.get_type().name()?
        )))
    };
    if let Ok(list) = secret.cast::<PyList>() {
        return list.iter().map(|s| one(&s)).collect();
    }
    if let Ok(tuple) = secret.cast::<PyTuple>() {
        return tuple.iter().map(|s| one(&s)).collect();
    }
    Ok(vec![one(secret)?])
}

/// A cookie value as text: `get_secure_cookie` gives bytes on Python 3, apps may pass str.
fn text(value: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return std::str::from_utf8(bytes.as_bytes())
            .ok()
            .map(str::to_owned);
    }
    value
        .cast::<PyString>()
        .ok()?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// A duration given as seconds (int or float) or a `datetime.timedelta`.
fn seconds(value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = match value.extract::<Duration>() {
        Ok(duration) => duration.as_secs_f64(),
        Err(_) => value.extract().map_err(|_| {
            PyTypeError::new_err("a timeout must be a number of seconds or a datetime.timedelta")
        })?,
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(PyValueError::new_err(format!(
            "a timeout must be a positive number of seconds, not {secs}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone, Copy)]
pub enum Level {
    Info,
    Warning,
}

/// Logs on the `tornsession` logger; a logging failure never fails the request. Session ids
/// never appear in messages, only `ids::log_token` hashes.
pub fn log(py: Python<'_>, level: Level, message: &str) {
    static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let logger = LOGGER.get_or_try_init(py, || {
        py.import("logging")?
            .call_method1("getLogger", ("tornsession",))
            .map(Bound::unbind)
    });
    if let Ok(logger) = logger {
        let method = match level {
            Level::Info => intern!(py, "info"),
            Level::Warning => intern!(py, "warning"),
        };
        let _ = logger.bind(py).call_method1(method, (message,));
    }
}

/// Reads signed cookie `name` from a `Cookie` header as tornsession's Rust reader does: `(True,
/// value or None)` when it decided, `(False, None)` when it leaves the cookie to Tornado. For
/// tests that hold it to `tornado.web.decode_signed_value`.
#[pyfunction]
#[pyo3(signature = (cookie_secret, name, cookie_header, now, max_age_days = 31.0))]
pub fn _read_signed_cookie<'py>(
    py: Python<'py>,
    cookie_secret: &Bound<'py, PyAny>,
    name: &str,
    cookie_header: &str,
    now: f64,
    max_age_days: f64,
) -> PyResult<(bool, Option<Bound<'py, PyBytes>>)> {
    let settings = PyDict::new(py);
    settings.set_item("cookie_secret", cookie_secret)?;
    let Some(secret) = cookie_secret_from(&settings)? else {
        return Ok((false, None));
    };
    let raw = match signed_cookie::find_cookie(cookie_header, name) {
        signed_cookie::Found::Value(raw) => raw,
        signed_cookie::Found::Missing => return Ok((true, None)),
        signed_cookie::Found::AskTornado => return Ok((false, None)),
    };
    Ok(
        match signed_cookie::decode(&secret, name, raw, now, max_age_days) {
            signed_cookie::Decoded::Value(value, _) => (true, Some(PyBytes::new(py, &value))),
            signed_cookie::Decoded::Rejected => (true, None),
            signed_cookie::Decoded::AskTornado => (false, None),
        },
    )
}
