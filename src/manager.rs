//! `SessionManager` and `TornadoSessionManager`: the original module's API over a store, with
//! CSPRNG ids, HMAC-SHA256 digests and JSON records.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::codec::{self, SessionRecord};
use crate::convert::{dict_to_json, json_into_dict};
use crate::digest::{DigestCheck, Secrets};
use crate::errors::InvalidSessionException;
use crate::ids;
use crate::py_stores::StoreHandle;
use crate::session::{Session, SessionMeta, TornadoSession};
use crate::stores::StoreErrorKind;

/// How the two cookies are named and sent.
struct CookieSettings {
    id_name: Py<PyString>,
    digest_name: Py<PyString>,
    /// Keyword arguments for `set_secure_cookie`, built once.
    set_kwargs: Py<PyDict>,
}

/// The raw `(session_id, hmac_digest)` cookie values of a request, when present.
type CookiePair<'py> = (Option<Bound<'py, PyAny>>, Option<Bound<'py, PyAny>>);

/// What a request's id and digest lead to.
pub enum Lookup {
    /// The pair is forged, foreign or malformed.
    Invalid,
    /// A genuine session, with its data when the store has a readable record.
    Genuine {
        meta: SessionMeta,
        data: Option<SessionRecord>,
    },
}

/// Keeps the secret(s) and the store; hands out and stores sessions.
#[pyclass(module = "tornsession", subclass, frozen)]
pub struct SessionManager {
    secrets: Secrets,
    store: StoreHandle,
    cookies: CookieSettings,
    /// How long a session may go unused; passed to the store as the record's time to live.
    idle_timeout: Option<Duration>,
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
        idle_timeout=None)"
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
    ) -> PyResult<Self> {
        let idle_timeout = idle_timeout.map(seconds).transpose()?;
        let secrets = Secrets::new(secret_keys(secret)?)?;
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
        let set_kwargs = PyDict::new(py);
        set_kwargs.set_item("expires_days", cookie_expires_days)?;
        set_kwargs.set_item("path", cookie_path)?;
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
        if let Some(domain) = cookie_domain {
            set_kwargs.set_item("domain", domain)?;
        }
        Ok(Self {
            secrets,
            store,
            cookies: CookieSettings {
                id_name: PyString::new(py, cookie_name).unbind(),
                digest_name: PyString::new(py, digest_cookie_name).unbind(),
                set_kwargs: set_kwargs.unbind(),
            },
            idle_timeout,
        })
    }

    /// A new session when `session_id` is None; else the stored one, after checking the digest.
    #[pyo3(signature = (session_id = None, hmac_digest = None))]
    fn get(
        &self,
        py: Python<'_>,
        session_id: Option<&Bound<'_, PyAny>>,
        hmac_digest: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Session>> {
        let meta = match session_id {
            None => self.fresh_meta(py)?,
            Some(id) => match self.lookup(py, Some(id), hmac_digest)? {
                Lookup::Invalid => {
                    return Err(InvalidSessionException::new_err(
                        "the session id does not match its digest",
                    ))
                }
                Lookup::Genuine { meta, data } => {
                    let session = Session::with_meta(py, meta)?;
                    if let Some(record) = data {
                        json_into_dict(&record.data, session.bind(py).as_super())?;
                    }
                    return Ok(session);
                }
            },
        };
        Session::with_meta(py, meta)
    }

    /// Stores the session's items (not its attributes), replacing what was stored.
    fn set(&self, py: Python<'_>, session: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store_session(py, session)
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
        idle_timeout=None)"
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
    ))]
    #[allow(clippy::too_many_arguments)]
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
    ) -> PyResult<PyClassInitializer<Self>> {
        let base = SessionManager::new(
            py,
            secret,
            session_dir,
            store,
            cookie_name,
            digest_cookie_name,
            cookie_httponly,
            cookie_samesite,
            cookie_secure,
            cookie_domain,
            cookie_path,
            cookie_expires_days,
            idle_timeout,
        )?;
        Ok(PyClassInitializer::from(base).add_subclass(Self))
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
        let Some(handler) = requestHandler.filter(|h| !h.is_none()) else {
            return manager.get(py, None, None);
        };
        let (id, digest) = manager.read_cookies(handler)?;
        match id {
            None => manager.get(py, None, None),
            Some(id) => manager.get(py, Some(&id), digest.as_ref()),
        }
    }

    /// Stores the session, then sets both cookies on the handler.
    #[allow(non_snake_case)]
    fn set(
        slf: &Bound<'_, Self>,
        requestHandler: &Bound<'_, PyAny>,
        session: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let manager = slf.as_super().get();
        manager.store_session(py, session)?;
        manager.write_cookies(requestHandler, session)
    }
}

impl SessionManager {
    /// A new id, its digest and the creation time; nothing is stored until saved.
    pub fn fresh_meta(&self, py: Python<'_>) -> PyResult<SessionMeta> {
        let id = ids::new_session_id()
            .map_err(|e| PyOSError::new_err(format!("the OS random source failed: {e}")))?;
        let digest = self.secrets.sign(&id);
        Ok(SessionMeta::new(py, &id, &digest, now()))
    }

    /// Reads `(session_id, hmac_digest)` through the handler's own `get_secure_cookie`.
    pub fn read_cookies<'py>(&self, handler: &Bound<'py, PyAny>) -> PyResult<CookiePair<'py>> {
        let py = handler.py();
        let get = handler.getattr(intern!(py, "get_secure_cookie"))?;
        let id = get.call1((self.cookies.id_name.bind(py),))?;
        if id.is_none() {
            return Ok((None, None));
        }
        let digest = get.call1((self.cookies.digest_name.bind(py),))?;
        Ok((Some(id), (!digest.is_none()).then_some(digest)))
    }

    /// Checks an id and digest (str or bytes) and loads the record they name.
    pub fn lookup(
        &self,
        py: Python<'_>,
        session_id: Option<&Bound<'_, PyAny>>,
        hmac_digest: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Lookup> {
        let (Some(id), Some(digest)) = (session_id.and_then(text), hmac_digest.and_then(text))
        else {
            return Ok(Lookup::Invalid);
        };
        if !ids::is_valid_session_id(&id) {
            return Ok(Lookup::Invalid);
        }
        let check = self.secrets.verify(&id, digest.as_bytes());
        if check == DigestCheck::Invalid {
            return Ok(Lookup::Invalid);
        }
        // An outdated digest (older secret, original format) is replaced by the current one, so
        // the next save sends the re-signed cookie.
        let current_digest = if check == DigestCheck::Current {
            digest
        } else {
            self.secrets.sign(&id)
        };
        let blob = match self.store.load(py, &id) {
            Ok(blob) => blob,
            Err(e) if e.kind == StoreErrorKind::UnreadableRecord => {
                warn(
                    py,
                    &format!("unreadable session record, starting a new session: {e}"),
                );
                return Ok(Lookup::Genuine {
                    meta: self.fresh_meta(py)?,
                    data: None,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let Some(blob) = blob else {
            return Ok(Lookup::Genuine {
                meta: SessionMeta::new(py, &id, &current_digest, now()),
                data: None,
            });
        };
        match codec::decode(&blob) {
            Ok(record) => Ok(Lookup::Genuine {
                meta: SessionMeta::new(py, &id, &current_digest, record.created),
                data: Some(record),
            }),
            Err(e) => {
                // A new id, so saving the fresh session never overwrites the bad record.
                warn(
                    py,
                    &format!(
                        "corrupt record for session {} in {}, starting a new session: {e}",
                        ids::log_token(&id),
                        self.store.describe(py)
                    ),
                );
                Ok(Lookup::Genuine {
                    meta: self.fresh_meta(py)?,
                    data: None,
                })
            }
        }
    }

    /// What `TornadoSession` loads: the cookie's session, or a fresh one when the cookies are
    /// missing, forged or foreign (as the original, which swallowed `InvalidSessionException`).
    pub fn load_for_handler(
        &self,
        handler: &Bound<'_, PyAny>,
    ) -> PyResult<(SessionMeta, Option<SessionRecord>)> {
        let py = handler.py();
        let (id, digest) = self.read_cookies(handler)?;
        if id.is_none() {
            return Ok((self.fresh_meta(py)?, None));
        }
        match self.lookup(py, id.as_ref(), digest.as_ref())? {
            Lookup::Genuine { meta, data } => Ok((meta, data)),
            Lookup::Invalid => {
                warn(
                    py,
                    "session cookies do not match their digest, starting a new session",
                );
                Ok((self.fresh_meta(py)?, None))
            }
        }
    }

    /// Serializes a session's items and writes them to the store.
    pub fn store_session(&self, py: Python<'_>, session: &Bound<'_, PyAny>) -> PyResult<()> {
        let session = as_session(session)?;
        let (id, created) = session.get().id_and_created(py)?;
        let data = dict_to_json(session.as_super())?;
        let blob = codec::encode(created, &data);
        self.store.save(py, &id, &blob, self.idle_timeout)?;
        Ok(())
    }

    /// Sets the id cookie and a freshly computed digest cookie on the handler.
    pub fn write_cookies(
        &self,
        handler: &Bound<'_, PyAny>,
        session: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let py = handler.py();
        let session = as_session(session)?;
        let (id, _) = session.get().id_and_created(py)?;
        let digest = self.secrets.sign(&id);
        session.get().set_digest(py, &digest);
        let set = handler.getattr(intern!(py, "set_secure_cookie"))?;
        let kwargs = self.cookies.set_kwargs.bind(py);
        set.call((self.cookies.id_name.bind(py), &id), Some(kwargs))?;
        set.call((self.cookies.digest_name.bind(py), &digest), Some(kwargs))?;
        Ok(())
    }
}

/// The session inside `value`, loaded first if it is a lazy `TornadoSession`.
fn as_session<'a, 'py>(value: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, Session>> {
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

/// Logs a warning on the `tornsession` logger; a logging failure never fails the request.
pub fn warn(py: Python<'_>, message: &str) {
    static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let logger = LOGGER.get_or_try_init(py, || {
        py.import("logging")?
            .call_method1("getLogger", ("tornsession",))
            .map(Bound::unbind)
    });
    if let Ok(logger) = logger {
        let _ = logger
            .bind(py)
            .call_method1(intern!(py, "warning"), (message,));
    }
}
