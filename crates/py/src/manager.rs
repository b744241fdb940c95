//! `SessionManager` and `TornadoSessionManager`: the original module's API over a store, with
//! CSPRNG ids, HMAC-SHA256 digests, JSON records, expiry, and writes only when data changed.
//! Options are checked here once (`options`); the steps are `engine`'s.

use crate::errors::{secret_error, store_error};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use crate::convert::{json_into_dict, user_id_arg};
use crate::engine::{Engine, StoreOrigin};
use crate::errors::{argument_type_error, invalid_session, type_name, value_error};
use crate::log::{log, Level};
use crate::options;
use crate::py_stores::StoreHandle;
use crate::session::Session;
use crate::tornado_cookies::{CookieAttributes, CookieSettings};
use tornsession_core::digest::Secrets;
use tornsession_core::lifecycle::CookieCheck;
use tornsession_core::metrics::Metrics;
use tornsession_core::policy::Policy;
use tornsession_core::sealed_cookie::CookieSealer;
use tornsession_core::users::{self, ExpiryCaps};

/// How long a request waits for an earlier request of the same session by default.
const DEFAULT_ORDER_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps the secret(s) and the store; hands out and stores sessions.
#[pyclass(module = "tornsession", subclass, frozen)]
pub struct SessionManager {
    engine: Arc<Engine>,
    /// Whether requests of one session wait for each other within this process.
    order_requests: bool,
    /// How long a request waits for an earlier one of its session before `SessionBusy`.
    order_timeout: Duration,
}

/// A `SessionManager` that reads and writes the session cookies through a `RequestHandler`.
#[pyclass(module = "tornsession", extends = SessionManager, subclass, frozen)]
pub struct TornadoSessionManager;

impl SessionManager {
    /// The steps every session of this manager goes through.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Whether requests of one session wait for each other within this process.
    pub fn orders_requests(&self) -> bool {
        self.order_requests
    }

    /// The session for what was checked, loaded on this thread.
    fn session_for(&self, py: Python<'_>, check: CookieCheck) -> PyResult<Py<Session>> {
        let loaded = self.engine.load_now(py, check)?;
        let session = Session::with_meta(py, loaded.meta)?;
        if let Some(data) = loaded.data {
            json_into_dict(&data, session.bind(py).as_super())?;
        }
        Ok(session)
    }
}

#[allow(clippy::too_many_arguments)]
#[pymethods]
impl SessionManager {
    #[new]
    #[pyo3(
        text_signature = "(secret, session_dir=None, *, store=None, cookie_name='session_id', \
        digest_cookie_name='hmac_digest', cookie_format='pair', cookie_httponly=True, \
        cookie_samesite='Lax', cookie_secure='auto', cookie_domain=None, cookie_path='/', \
        cookie_expires_days=30.0, idle_timeout=None, lifetime=None, max_idle_timeout=None, \
        max_lifetime=None, max_size=None, max_read_size=None, detect_conflicts=False, \
        order_requests=True, order_timeout=10.0, metrics=True)"
    )]
    #[pyo3(signature = (
        secret, session_dir = None, *, store = None,
        cookie_name = "session_id", digest_cookie_name = "hmac_digest", cookie_format = None,
        cookie_httponly = true,
        cookie_samesite = Some("Lax"), cookie_secure = None, cookie_domain = None,
        cookie_path = "/", cookie_expires_days = Some(30.0),
        idle_timeout = None, lifetime = None, max_idle_timeout = None, max_lifetime = None,
        max_size = None, max_read_size = None,
        detect_conflicts = false, order_requests = true, order_timeout = None, metrics = true,
    ))]
    fn new(
        py: Python<'_>, secret: &Bound<'_, PyAny>, session_dir: Option<PathBuf>,
        store: Option<&Bound<'_, PyAny>>, cookie_name: &str, digest_cookie_name: &str,
        cookie_format: Option<&Bound<'_, PyAny>>, cookie_httponly: bool,
        cookie_samesite: Option<&str>, cookie_secure: Option<&Bound<'_, PyAny>>,
        cookie_domain: Option<&str>, cookie_path: &str, cookie_expires_days: Option<f64>,
        idle_timeout: Option<&Bound<'_, PyAny>>, lifetime: Option<&Bound<'_, PyAny>>,
        max_idle_timeout: Option<&Bound<'_, PyAny>>, max_lifetime: Option<&Bound<'_, PyAny>>,
        max_size: Option<options::SaturatingInt>, max_read_size: Option<options::SaturatingInt>,
        detect_conflicts: bool, order_requests: bool, order_timeout: Option<&Bound<'_, PyAny>>,
        metrics: bool,
    ) -> PyResult<Self> {
        let keys = options::secret_keys(secret)?;
        let secrets = Secrets::new(keys.clone()).map_err(secret_error)?;
        let mut policy = Policy {
            idle_timeout: idle_timeout
                .map(|v| options::duration("idle_timeout", v))
                .transpose()?,
            lifetime: lifetime
                .map(|v| options::duration("lifetime", v))
                .transpose()?,
            max_size: options::byte_size("max_size", max_size)?,
            detect_conflicts,
        };
        let caps = ExpiryCaps {
            max_idle_timeout: max_idle_timeout
                .map(|v| options::duration("max_idle_timeout", v))
                .transpose()?,
            max_lifetime: max_lifetime
                .map(|v| options::duration("max_lifetime", v))
                .transpose()?,
        };
        let max_read_size = options::read_limit(
            policy.max_size,
            options::byte_size("max_read_size", max_read_size)?,
        )?;
        let order_timeout = order_timeout
            .map(|v| options::duration("order_timeout", v))
            .transpose()?
            .unwrap_or(DEFAULT_ORDER_TIMEOUT);
        let secure = match cookie_secure {
            None => crate::tornado_cookies::SecureMode::Auto,
            Some(value) => options::secure_mode(value)?,
        };
        options::check_cookie_name("cookie_name", cookie_name).map_err(value_error)?;
        options::check_cookie_name("digest_cookie_name", digest_cookie_name)
            .map_err(value_error)?;
        if cookie_name == digest_cookie_name {
            return Err(value_error(
                "cookie_name and digest_cookie_name must be two different names".to_owned(),
            ));
        }
        let cookie_format = options::cookie_format(cookie_format)?;
        options::check_attribute("cookie_path", cookie_path).map_err(value_error)?;
        if let Some(domain) = cookie_domain {
            options::check_attribute("cookie_domain", domain).map_err(value_error)?;
        }
        options::check_samesite(cookie_samesite, secure).map_err(value_error)?;
        options::check_expires_days(cookie_expires_days).map_err(value_error)?;
        // The original's default is session_dir='', which we read as "no folder given".
        let session_dir = session_dir.filter(|dir| !dir.as_os_str().is_empty());
        let store_origin = match (store, &session_dir) {
            (Some(_), _) => StoreOrigin::Given,
            (None, Some(_)) => StoreOrigin::SessionDir,
            (None, None) => StoreOrigin::Default,
        };
        let store = match (store, session_dir) {
            (Some(_), Some(_)) => {
                return Err(value_error(
                    "pass either session_dir (a FileStore folder) or store=, not both".to_owned(),
                ))
            }
            (Some(store), None) => StoreHandle::from_object(store)?,
            (None, Some(folder)) => StoreHandle::file(py, folder)?,
            (None, None) => StoreHandle::default_memory(),
        };
        policy.max_size = Some(options::save_limit(
            policy.max_size,
            max_read_size,
            store.max_record_size(),
            &store.describe(py),
        )?);
        if detect_conflicts && !store.supports_conflict_checks(py) {
            return Err(argument_type_error(
                "detect_conflicts=True needs a store with compare_and_set(key, expected, value, \
                 ttl); this Python store has none",
            ));
        }
        let cookies = CookieSettings::new(
            py,
            &CookieAttributes {
                id_name: cookie_name,
                digest_name: digest_cookie_name,
                httponly: cookie_httponly,
                samesite: cookie_samesite,
                secure,
                domain: cookie_domain,
                path: cookie_path,
                expires_days: cookie_expires_days,
                format: cookie_format,
                sealed: store.keeps_sessions_in_cookies(),
            },
        )?;
        let sealer = store
            .keeps_sessions_in_cookies()
            .then(|| CookieSealer::new(&secrets));
        // Last, so a manager that fails to build warns about nothing.
        options::warn_if_weak(py, &keys)?;
        Ok(Self {
            engine: Arc::new(Engine {
                secrets,
                store,
                cookies,
                policy,
                max_read_size,
                caps,
                store_origin,
                settings_checked: AtomicBool::new(false),
                wire_servers: PyOnceLock::new(),
                sealer,
                metrics: metrics.then(Metrics::new),
            }),
            order_requests,
            order_timeout,
        })
    }

    /// A new session when `session_id` is None; else the stored one, after checking the digest.
    #[pyo3(signature = (session_id = None, hmac_digest = None))]
    fn get(
        &self, py: Python<'_>, session_id: Option<&Bound<'_, PyAny>>,
        hmac_digest: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Session>> {
        match self.engine.check_pair(session_id, hmac_digest) {
            CookieCheck::Invalid => {
                Err(invalid_session("the session id does not match its digest"))
            }
            check => self.session_for(py, check),
        }
    }

    /// Stores the session's items (not its attributes) if they changed since loaded or saved.
    fn set(&self, py: Python<'_>, session: &Bound<'_, PyAny>) -> PyResult<()> {
        self.engine.save_now(py, as_session(session)?)
    }

    /// Whether requests of one session wait for each other within this process.
    #[getter]
    fn order_requests(&self) -> bool {
        self.order_requests
    }

    /// How long, in seconds, a request waits for an earlier request of its session.
    #[getter]
    fn order_timeout(&self) -> f64 {
        self.order_timeout.as_secs_f64()
    }

    /// The sessions `user_id` owns (see `Session.set_user`), oldest first, as `SessionInfo`;
    /// an empty list for a user with none. Stores that cannot list raise NotImplementedError.
    fn user_sessions(
        &self, py: Python<'_>, user_id: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<SessionInfo>> {
        let user_id = user_id_arg(user_id)?;
        Ok(self
            .engine
            .user_sessions(py, &user_id)
            .map_err(store_error)?
            .into_iter()
            .map(SessionInfo::from)
            .collect())
    }

    /// Ends every session `user_id` owns ("log out everywhere"), but `keep` (a session, its id,
    /// or its `SessionInfo.id`) if given; returns how many were ended (0 on memcached, which
    /// cannot count them).
    #[pyo3(signature = (user_id, keep = None))]
    fn destroy_user_sessions(
        &self, py: Python<'_>, user_id: &Bound<'_, PyAny>, keep: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let user_id = user_id_arg(user_id)?;
        let keep = keep.filter(|k| !k.is_none());
        let keep_id = match keep {
            None => None,
            Some(keep) => self.session_id_of(py, keep)?,
        };
        let ended = self
            .engine
            .destroy_user_sessions(py, &user_id, keep_id.as_deref())
            .map_err(store_error)?;
        let kept = keep.and_then(|k| k.cast::<Session>().ok());
        // A kept session object saves under the new generation from now on (memcached).
        if let (Some((blob, generation)), Some(session)) = (ended.kept, kept) {
            session
                .get()
                .update_state(|state| state.carried_over(blob, generation));
        } else if let (Some(bump), Some(session), true) =
            (ended.bump, kept, self.engine.sealer.is_some())
        {
            // A cookie session has no record elsewhere: it carries itself over, and this
            // request's response reseals it.
            let id = session.get().id(py)?;
            session
                .get()
                .update_state(|state| state.carry_over_sealed(&id, &user_id, bump));
        }
        Ok(ended.count)
    }

    /// Ends the session a `SessionInfo.id` names ("end this session"); returns 1, or 0 when it
    /// names no live session.
    fn destroy_session(&self, py: Python<'_>, hashed_id: &Bound<'_, PyAny>) -> PyResult<usize> {
        let hashed_id: String = hashed_id
            .extract()
            .map_err(|_| argument_type_error("hashed_id must be a str (a SessionInfo.id)"))?;
        self.engine
            .destroy_session(py, &hashed_id)
            .map_err(store_error)
    }

    /// What this manager's sessions did, counted (see `tornsession_core::metrics`); all zero
    /// with `metrics=False`.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snapshot = self.engine.metrics.as_ref().map(|m| m.snapshot());
        crate::metrics::snapshot_dict(py, &snapshot.unwrap_or_default())
    }

    /// A request of this manager's sessions waited too long for its turn (SessionBusy: 503).
    fn _count_busy(&self) {
        self.engine.count(Metrics::busy);
    }

    /// A save of this manager's sessions was refused as a conflict before the store was asked
    /// (another request of the session saved after this one passed its turn on).
    fn _count_conflict(&self) {
        self.engine.count(Metrics::conflict);
    }

    /// The `SessionInfo.id` of a session with an owner (None without one), to mark "this
    /// device" in a list.
    fn hashed_id(&self, session: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let session = as_session(session)?;
        let Some(user) = session.get().state().extras.user else {
            return Ok(None);
        };
        let id = session.get().id(session.py())?;
        Ok(Some(users::public_id(
            &self.engine.secrets,
            &users::user_key(&user),
            &id,
        )))
    }

    /// `user_sessions` without blocking the IOLoop.
    fn auser_sessions<'py>(
        slf: &Bound<'py, Self>, user_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        user_id_arg(user_id)?;
        store_call(slf, "user_sessions", vec![user_id.clone()])
    }

    /// `destroy_user_sessions` without blocking the IOLoop.
    #[pyo3(signature = (user_id, keep = None))]
    fn adestroy_user_sessions<'py>(
        slf: &Bound<'py, Self>, user_id: &Bound<'py, PyAny>, keep: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        user_id_arg(user_id)?;
        let py = slf.py();
        let keep = match keep.filter(|k| !k.is_none()) {
            None => py.None().into_bound(py),
            // The session itself, so a carried-over generation reaches it (memcached).
            Some(keep) if keep.cast::<Session>().is_ok() => keep.clone(),
            Some(keep) => slf
                .get()
                .session_id_of(py, keep)?
                .into_pyobject(py)?
                .into_any(),
        };
        store_call(slf, "destroy_user_sessions", vec![user_id.clone(), keep])
    }

    /// `destroy_session` without blocking the IOLoop.
    fn adestroy_session<'py>(
        slf: &Bound<'py, Self>, hashed_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        store_call(slf, "destroy_session", vec![hashed_id.clone()])
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        format!("SessionManager(store={})", self.engine.store.describe(py))
    }
}

impl SessionManager {
    /// The session id `keep` stands for: a session, a session id, or a `SessionInfo.id`
    /// (looked up in its owner's index; None when it names nothing).
    fn session_id_of(&self, py: Python<'_>, keep: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        if let Ok(session) = keep.cast::<Session>() {
            as_session(keep)?;
            return Ok(session.get().id(py).ok());
        }
        let Ok(text) = keep.extract::<String>() else {
            return Err(argument_type_error(
                "keep must be a session, a session id or a SessionInfo.id",
            ));
        };
        if tornsession_core::ids::is_valid_session_id(&text) {
            return Ok(Some(text));
        }
        self.engine.find_public_id(py, &text).map_err(store_error)
    }
}

/// A coroutine running `manager.<method>(*args)` on a store thread (inline for a store that
/// never blocks).
fn store_call<'py>(
    slf: &Bound<'py, SessionManager>, method: &str, args: Vec<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let blocks = slf.get().engine.store.blocks();
    let call = slf.getattr(method)?;
    let args = pyo3::types::PyTuple::new(py, args)?;
    py.import(intern!(py, "tornsession._session"))?
        .call_method1(intern!(py, "_call_store"), (blocks, call, args))
}

/// One session of a user, as `SessionManager.user_sessions` lists it: safe to show and to
/// pass back (`id` is no cookie and reveals nothing of the session id).
#[pyclass(module = "tornsession", frozen, get_all)]
pub struct SessionInfo {
    /// Pass it to `destroy_session()` to end this session.
    id: String,
    /// When the session was created, in seconds since the epoch.
    created: u64,
    /// When the session was last saved, to the minute (None for a record from before it).
    last_seen: Option<u64>,
    /// What `set_info()` attached.
    info: Py<PyAny>,
}

impl From<crate::engine::Listed> for SessionInfo {
    fn from(listed: crate::engine::Listed) -> Self {
        Python::attach(|py| {
            let info = PyDict::new(py);
            let _ = json_into_dict(&listed.info, &info);
            Self {
                id: listed.public_id,
                created: listed.created,
                last_seen: listed.last_seen,
                info: info.into_any().unbind(),
            }
        })
    }
}

#[pymethods]
impl SessionInfo {
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "SessionInfo(id={:?}, created={}, last_seen={}, info={})",
            self.id,
            self.created,
            self.last_seen.map_or("None".to_owned(), |s| s.to_string()),
            self.info.bind(py).repr()?
        ))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<SessionInfo>() else {
            return Ok(false);
        };
        let other = other.get();
        Ok(self.id == other.id
            && self.created == other.created
            && self.last_seen == other.last_seen
            && self.info.bind(py).eq(other.info.bind(py))?)
    }
}

#[pymethods]
impl TornadoSessionManager {
    #[new]
    #[pyo3(
        text_signature = "(secret, session_dir=None, *, store=None, cookie_name='session_id', \
        digest_cookie_name='hmac_digest', cookie_format='pair', cookie_httponly=True, \
        cookie_samesite='Lax', cookie_secure='auto', cookie_domain=None, cookie_path='/', \
        cookie_expires_days=30.0, idle_timeout=None, lifetime=None, max_idle_timeout=None, \
        max_lifetime=None, max_size=None, max_read_size=None, detect_conflicts=False, \
        order_requests=True, order_timeout=10.0, metrics=True)"
    )]
    #[pyo3(signature = (secret, session_dir = None, **options))]
    fn new(
        py: Python<'_>, secret: &Bound<'_, PyAny>, session_dir: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<PyClassInitializer<Self>> {
        // Build the base through its own constructor, so both take exactly the same options.
        let base = py
            .get_type::<SessionManager>()
            .call((secret, session_dir), options)?
            .cast_into::<SessionManager>()?;
        let base = base.get();
        let copy = SessionManager {
            engine: base.engine.clone(),
            order_requests: base.order_requests,
            order_timeout: base.order_timeout,
        };
        Ok(PyClassInitializer::from(copy).add_subclass(Self))
    }

    /// The session named by the handler's cookies; a new one without a handler or cookie.
    #[pyo3(signature = (requestHandler = None))]
    #[allow(non_snake_case)]
    fn get(
        slf: &Bound<'_, Self>, requestHandler: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Session>> {
        let py = slf.py();
        let manager = slf.as_super().get();
        let check = match requestHandler.filter(|h| !h.is_none()) {
            None => CookieCheck::Absent,
            Some(handler) => manager.engine.check_request(handler)?,
        };
        // A sealed cookie that does not open is a new API's bad input: a fresh session and a
        // warning, as on every other path; the original's exception stays for its own cookies.
        if check == CookieCheck::Invalid && manager.engine.sealer.is_some() {
            log(
                py,
                Level::Warning,
                "invalid session cookie, starting a new session",
            );
            return manager.session_for(py, CookieCheck::Absent);
        }
        if check == CookieCheck::Invalid {
            return Err(invalid_session(
                "the session cookies do not match their digest",
            ));
        }
        manager.session_for(py, check)
    }

    /// Stores the session if it changed, then sets its cookies if they are due (new,
    /// regenerated, re-signed or a day old).
    #[allow(non_snake_case)]
    fn set(
        slf: &Bound<'_, Self>, requestHandler: &Bound<'_, PyAny>, session: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let engine = slf.as_super().get().engine();
        engine.save_for_handler(requestHandler, as_session(session)?)
    }
}

/// The session inside `value`, loaded first if it loads lazily (a `TornadoSession`, which
/// this module does not know by name: it asks for `_ensure_loaded`).
pub fn as_session<'a, 'py>(value: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, Session>> {
    let session = value.cast::<Session>().map_err(|_| {
        argument_type_error(format!(
            "expected a tornsession.Session (from SessionManager.get()), got {}",
            type_name(value)
        ))
    })?;
    let py = value.py();
    if !value.is_exact_instance_of::<Session>() && value.hasattr(intern!(py, "_ensure_loaded"))? {
        value.call_method0(intern!(py, "_ensure_loaded"))?;
    }
    Ok(session)
}
