//! The session's cookies on a Tornado `RequestHandler`, in either format (`cookie_format`: the
//! original's two signed cookies, or one compact cookie): both formats read (in Rust straight
//! from the `Cookie` header when the handler uses Tornado's own cookie methods), the configured
//! one sent, and both cleared, with the same attributes.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::cookie_jar::{self, LineAttributes};
use tornsession_core::compact_cookie::{self, CookieFormat};
use tornsession_core::digest::Secrets;
use tornsession_core::sealed_cookie;
use tornsession_core::signed_cookie;
use tornsession_core::time;

/// Whether the cookies carry `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureMode {
    Always,
    Never,
    /// Exactly when the request is HTTPS as Tornado sees it (`request.protocol`, so a TLS proxy
    /// with `xheaders=True` counts).
    Auto,
}

/// The attributes the cookies are sent with, checked when the manager is built.
pub struct CookieAttributes<'a> {
    pub id_name: &'a str,
    pub digest_name: &'a str,
    pub httponly: bool,
    pub samesite: Option<&'a str>,
    pub secure: SecureMode,
    pub domain: Option<&'a str>,
    pub path: &'a str,
    pub expires_days: Option<f64>,
    pub format: CookieFormat,
    /// The id cookie carries the whole session, sealed (`CookieStore`).
    pub sealed: bool,
}

/// How the cookies are named and sent.
pub struct CookieSettings {
    pub id_name: Py<PyString>,
    pub digest_name: Py<PyString>,
    /// Which cookies are sent (both formats are read).
    pub format: CookieFormat,
    /// The id cookie carries the whole session, sealed (`CookieStore`): only it is read and
    /// sent, whatever `format` says.
    pub sealed: bool,
    /// The id cookie's attributes as its line has them, without and with `Secure`.
    line_attributes: [LineAttributes; 2],
    expires_days: Option<f64>,
    /// Keyword arguments for `set_secure_cookie`, without and with `secure`, built once.
    set_kwargs: [Py<PyDict>; 2],
    /// Keyword arguments for the clearing `set_cookie`: the same path, domain, SameSite,
    /// HttpOnly and Secure as the cookies they clear (browsers ignore a clearing cookie for a
    /// `__Host-`/`__Secure-` name without them), an expiry in the past and `max_age=0`.
    clear_kwargs: [Py<PyDict>; 2],
    secure: SecureMode,
    /// Whether both names can be read from the header directly (see `plain_cookie_name`).
    native_names: bool,
}

impl CookieSettings {
    pub fn new(py: Python<'_>, a: &CookieAttributes<'_>) -> PyResult<Self> {
        let build = |secure: bool, clearing: bool| -> PyResult<Py<PyDict>> {
            let kwargs = PyDict::new(py);
            kwargs.set_item("path", a.path)?;
            if let Some(domain) = a.domain {
                kwargs.set_item("domain", domain)?;
            }
            if clearing {
                let past = py
                    .import("datetime")?
                    .getattr("datetime")?
                    .call1((2000, 1, 1))?;
                kwargs.set_item("expires", past)?;
                kwargs.set_item("max_age", 0)?;
            } else {
                kwargs.set_item("expires_days", a.expires_days)?;
            }
            // Only non-default flags are passed, so Tornado versions whose set_cookie takes
            // them as plain morsel attributes see nothing they would misread.
            if a.httponly {
                kwargs.set_item("httponly", true)?;
            }
            if secure {
                kwargs.set_item("secure", true)?;
            }
            if let Some(samesite) = a.samesite {
                kwargs.set_item("samesite", samesite)?;
            }
            Ok(kwargs.unbind())
        };
        Ok(Self {
            id_name: PyString::new(py, a.id_name).unbind(),
            digest_name: PyString::new(py, a.digest_name).unbind(),
            set_kwargs: [build(false, false)?, build(true, false)?],
            clear_kwargs: [build(false, true)?, build(true, true)?],
            secure: a.secure,
            format: a.format,
            sealed: a.sealed,
            line_attributes: [
                LineAttributes::new(py, a.domain, a.httponly, a.path, a.samesite, false)?,
                LineAttributes::new(py, a.domain, a.httponly, a.path, a.samesite, true)?,
            ],
            expires_days: a.expires_days,
            native_names: plain_cookie_name(a.id_name) && plain_cookie_name(a.digest_name),
        })
    }

    /// Whether this request's cookies carry `Secure`.
    fn secure_for(&self, handler: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(match self.secure {
            SecureMode::Always => true,
            SecureMode::Never => false,
            SecureMode::Auto => {
                // Something shaped like a handler without a request (a test double) is not HTTPS.
                let py = handler.py();
                handler
                    .getattr_opt(intern!(py, "request"))?
                    .map(|request| request.getattr_opt(intern!(py, "protocol")))
                    .transpose()?
                    .flatten()
                    .is_some_and(|protocol| {
                        protocol
                            .cast::<PyString>()
                            .is_ok_and(|p| p.to_str().is_ok_and(|p| p == "https"))
                    })
            }
        })
    }

    /// Sets the session's cookies in the configured format: both signed cookies, or the one
    /// compact cookie (and clears a digest cookie the request still carried, left from the
    /// pair). `persistent=Some(false)` makes them browser-session cookies (no expiry: gone
    /// when the browser closes), `Some(true)` gives them the configured expiry (30 days when
    /// the manager has none).
    pub fn send(
        &self, handler: &Bound<'_, PyAny>, secrets: &Secrets, id: &str, digest: &str,
        persistent: Option<bool>,
    ) -> PyResult<()> {
        let py = handler.py();
        if self.format == CookieFormat::Compact {
            // Made with the manager's secrets, so it needs no Tornado cookie_secret.
            let value = compact_cookie::encode(secrets, id, time::now());
            return self.send_id_cookie(handler, &value, persistent);
        }
        let kwargs = self.set_kwargs_for(handler, persistent)?;
        let set = handler.getattr(intern!(py, "set_secure_cookie"))?;
        set.call((self.id_name.bind(py), id), Some(&kwargs))?;
        set.call((self.digest_name.bind(py), digest), Some(&kwargs))?;
        Ok(())
    }

    /// The most bytes the attributes after the id cookie's value can take on its `Set-Cookie`
    /// line in this request's response.
    pub fn attributes_len(&self, handler: &Bound<'_, PyAny>) -> PyResult<usize> {
        Ok(self.line_attributes[usize::from(self.secure_for(handler)?)].max_len())
    }

    /// The id cookie alone (compact, or a sealed session made by the caller for this request's
    /// attributes, see `attributes_len`), and a digest cookie the request still carried, left
    /// from the pair, cleared.
    pub fn send_id_cookie(
        &self, handler: &Bound<'_, PyAny>, value: &str, persistent: Option<bool>,
    ) -> PyResult<()> {
        let py = handler.py();
        if cookie_jar::uses_tornado_set_cookie(handler)? {
            let secure = self.secure_for(handler)?;
            let name = self.id_name.bind(py);
            self.line_attributes[usize::from(secure)].put(
                handler,
                name,
                value,
                self.expires_days_for(persistent),
            )?;
        } else {
            handler.call_method(
                intern!(py, "set_cookie"),
                (self.id_name.bind(py), value),
                Some(&self.set_kwargs_for(handler, persistent)?),
            )?;
        }
        if self.request_has_cookie(handler, &self.digest_name)? {
            self.clear_names(handler, &[&self.digest_name])?;
        }
        Ok(())
    }

    /// The keyword arguments of this request's cookies (see `send` for `persistent`).
    fn set_kwargs_for<'py>(
        &self, handler: &Bound<'py, PyAny>, persistent: Option<bool>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let py = handler.py();
        let shared = self.set_kwargs[usize::from(self.secure_for(handler)?)].bind(py);
        let Some(persistent) = persistent else {
            return Ok(shared.clone());
        };
        let own = shared.copy()?;
        own.set_item("expires_days", self.expires_days_for(Some(persistent)))?;
        Ok(own)
    }

    /// How many days the cookies live: the configured `cookie_expires_days`, none for a
    /// browser-session cookie (`persistent=False`), 30 for a persistent one of a manager
    /// configured without.
    fn expires_days_for(&self, persistent: Option<bool>) -> Option<f64> {
        match persistent {
            None => self.expires_days,
            Some(false) => None,
            Some(true) => self.expires_days.or(Some(30.0)),
        }
    }

    /// Whether the request's `Cookie` header may hold cookie `name` (true when it cannot be
    /// told without Tornado: clearing a cookie that is not there is harmless).
    fn request_has_cookie(
        &self, handler: &Bound<'_, PyAny>, name: &Py<PyString>,
    ) -> PyResult<bool> {
        let py = handler.py();
        let Some(header) = request_cookie_header(handler)? else {
            return Ok(false);
        };
        let Ok(header) = header.cast::<PyString>() else {
            return Ok(true);
        };
        Ok(!matches!(
            signed_cookie::find_cookie(header.to_str()?, name.bind(py).to_str()?),
            signed_cookie::Found::Missing
        ))
    }

    /// Tells the browser to drop both cookie names, whatever the format (a jar may hold either
    /// format's cookies).
    pub fn clear(&self, handler: &Bound<'_, PyAny>) -> PyResult<()> {
        self.clear_names(handler, &[&self.id_name, &self.digest_name])
    }

    /// Clears cookies through `set_cookie` with the attributes they were set with (Tornado's
    /// `clear_cookie` takes only path and domain before 6.3), or `clear_cookie` on a
    /// handler-like object without `set_cookie`.
    fn clear_names(&self, handler: &Bound<'_, PyAny>, names: &[&Py<PyString>]) -> PyResult<()> {
        let py = handler.py();
        let kwargs = self.clear_kwargs[usize::from(self.secure_for(handler)?)].bind(py);
        if let Some(set_cookie) = handler.getattr_opt(intern!(py, "set_cookie"))? {
            for name in names.iter() {
                set_cookie.call((name.bind(py), intern!(py, "")), Some(kwargs))?;
            }
            return Ok(());
        }
        let path_and_domain = PyDict::new(py);
        for key in [intern!(py, "path"), intern!(py, "domain")] {
            if let Some(value) = kwargs.get_item(key)? {
                path_and_domain.set_item(key, value)?;
            }
        }
        for name in names.iter() {
            handler.call_method(
                intern!(py, "clear_cookie"),
                (name.bind(py),),
                Some(&path_and_domain),
            )?;
        }
        Ok(())
    }

    /// The request's cookies of both formats: read in Rust straight from the `Cookie` header
    /// when the handler uses Tornado's own cookie methods, else through its `get_cookie` (a
    /// compact value) and `get_secure_cookie` (the pair).
    pub fn request_cookies(&self, handler: &Bound<'_, PyAny>) -> PyResult<RequestCookies> {
        if self.sealed {
            return self.read_sealed_cookie(handler);
        }
        if let Some(cookies) = self.read_cookies_natively(handler)? {
            return Ok(cookies);
        }
        let py = handler.py();
        let raw = handler
            .call_method1(intern!(py, "get_cookie"), (self.id_name.bind(py),))
            .ok()
            .and_then(|raw| raw.extract::<String>().ok());
        // A compact value is checked as one, never handed to Tornado (which would refuse it).
        if let Some(raw) = raw
            .as_deref()
            .filter(|raw| compact_cookie::is_compact_shaped(raw))
        {
            return Ok(RequestCookies::compact(raw.to_owned()));
        }
        // Without a cookie_secret no pair can be read (Tornado would raise): a compact-format
        // app needs none.
        if self.format == CookieFormat::Compact && !has_cookie_secret(handler)? {
            return Ok(RequestCookies::default());
        }
        let get = handler.getattr(intern!(py, "get_secure_cookie"))?;
        let id = get.call1((self.id_name.bind(py),))?;
        if id.is_none() {
            return Ok(RequestCookies::default());
        }
        let digest = get.call1((self.digest_name.bind(py),))?;
        let id_signed_at = raw.as_deref().and_then(signed_cookie::signed_at);
        Ok(RequestCookies {
            id: Some(text(&id).unwrap_or_default()),
            digest: (!digest.is_none()).then(|| text(&digest).unwrap_or_default()),
            id_signed_at,
            compact: None,
            sealed: None,
        })
    }

    /// The id cookie's value when it is shaped like a sealed session (anything else under the
    /// name, such as a server store's cookie from before a switch, is no session): straight from
    /// the `Cookie` header where that finds what Tornado finds, else through `get_cookie`.
    fn read_sealed_cookie(&self, handler: &Bound<'_, PyAny>) -> PyResult<RequestCookies> {
        let py = handler.py();
        let sealed = |raw: &str| RequestCookies {
            sealed: sealed_cookie::is_sealed_shaped(raw).then(|| raw.to_owned()),
            ..RequestCookies::default()
        };
        if self.native_names && uses_tornado_cookie_methods(handler)? {
            let Some(header) = request_cookie_header(handler)? else {
                return Ok(RequestCookies::default());
            };
            if let Ok(header) = header.cast::<PyString>() {
                match signed_cookie::find_cookie(header.to_str()?, self.id_name.bind(py).to_str()?)
                {
                    signed_cookie::Found::Value(raw) => return Ok(sealed(raw)),
                    signed_cookie::Found::Missing => return Ok(RequestCookies::default()),
                    signed_cookie::Found::AskTornado => {}
                }
            }
        }
        let raw = handler
            .call_method1(intern!(py, "get_cookie"), (self.id_name.bind(py),))
            .ok()
            .and_then(|raw| raw.extract::<String>().ok());
        Ok(raw.as_deref().map(sealed).unwrap_or_default())
    }

    /// Tornado's `get_secure_cookie` for the pair, done in Rust (byte for byte what Tornado
    /// accepts: `tests/test_signed_cookies.py`), and the compact cookie; `None` when Tornado
    /// must answer itself (an overridden cookie method, a version-1 or unusual value, no usable
    /// cookie_secret for a pair).
    fn read_cookies_natively(
        &self, handler: &Bound<'_, PyAny>,
    ) -> PyResult<Option<RequestCookies>> {
        let py = handler.py();
        if !self.native_names || !uses_tornado_cookie_methods(handler)? {
            return Ok(None);
        }
        let Some(header) = request_cookie_header(handler)? else {
            return Ok(Some(RequestCookies::default()));
        };
        let Ok(header) = header.cast::<PyString>() else {
            return Ok(None);
        };
        let header = header.to_str()?;
        let raw_id = match signed_cookie::find_cookie(header, self.id_name.bind(py).to_str()?) {
            signed_cookie::Found::Value(raw) => raw,
            signed_cookie::Found::Missing => return Ok(Some(RequestCookies::default())),
            signed_cookie::Found::AskTornado => return Ok(None),
        };
        if compact_cookie::is_compact_shaped(raw_id) {
            return Ok(Some(RequestCookies::compact(raw_id.to_owned())));
        }
        let settings = handler
            .getattr(intern!(py, "application"))?
            .getattr(intern!(py, "settings"))?;
        let Some(secret) = cookie_secret_from(&settings)? else {
            return Ok(None);
        };
        let now = time::now_f64();
        let decode = |name: &Py<PyString>,
                      raw: signed_cookie::Found<'_>|
         -> PyResult<Option<Option<(String, u64)>>> {
            let raw = match raw {
                signed_cookie::Found::Value(raw) => raw,
                signed_cookie::Found::Missing => return Ok(Some(None)),
                signed_cookie::Found::AskTornado => return Ok(None),
            };
            let name = name.bind(py).to_str()?;
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
        let raw_digest = signed_cookie::find_cookie(header, self.digest_name.bind(py).to_str()?);
        let (Some(id), Some(digest)) = (
            decode(&self.id_name, signed_cookie::Found::Value(raw_id))?,
            decode(&self.digest_name, raw_digest)?,
        ) else {
            return Ok(None);
        };
        Ok(Some(RequestCookies {
            id_signed_at: id.as_ref().map(|(_, signed_at)| *signed_at),
            id: id.map(|(id, _)| id),
            digest: digest.map(|(digest, _)| digest),
            compact: None,
            sealed: None,
        }))
    }
}

/// `tornado.httputil.HTTPHeaders`.
fn tornado_headers_type(py: Python<'_>) -> &Py<PyAny> {
    static TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    TYPE.get_or_init(py, || {
        py.import("tornado.httputil")
            .and_then(|m| m.getattr("HTTPHeaders"))
            .map_or_else(|_| py.None(), Bound::unbind)
    })
}

/// The request's `Cookie` header (`None` when it has none, or the handler no request: a test
/// double).
fn request_cookie_header<'py>(handler: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = handler.py();
    let Some(request) = handler.getattr_opt(intern!(py, "request"))? else {
        return Ok(None);
    };
    let headers = request.getattr(intern!(py, "headers"))?;
    // Tornado's HTTPHeaders (4.x to 6.6) keeps each header's values in a plain dict of lists
    // under its normalized name: read there, as get() joins them, its Mapping.get() is two
    // Python-level calls. Anything else (another headers class) is asked through get().
    let values = match headers.getattr_opt(intern!(py, "_as_list"))? {
        Some(table) if headers.get_type().is(tornado_headers_type(py).bind(py)) => {
            table.cast_into::<PyDict>().ok()
        }
        _ => None,
    };
    let header = match values {
        Some(table) => match table.get_item(intern!(py, "Cookie"))? {
            None => None,
            Some(list) => match list.cast::<PyList>() {
                Ok(list) if list.len() == 1 => Some(list.get_item(0)?),
                Ok(list) => Some(intern!(py, ",").call_method1(intern!(py, "join"), (list,))?),
                Err(_) => Some(headers.call_method1(intern!(py, "get"), (intern!(py, "Cookie"),))?),
            },
        },
        None => Some(headers.call_method1(intern!(py, "get"), (intern!(py, "Cookie"),))?),
    };
    Ok(header.filter(|h| !h.is_none()))
}

/// Whether the handler's application has a `cookie_secret` (true when it cannot be told: the
/// handler's own `get_secure_cookie` then decides).
fn has_cookie_secret(handler: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = handler.py();
    let Some(application) = handler.getattr_opt(intern!(py, "application"))? else {
        return Ok(true);
    };
    let Some(settings) = application.getattr_opt(intern!(py, "settings"))? else {
        return Ok(true);
    };
    let Ok(settings) = settings.cast::<PyDict>() else {
        return Ok(true);
    };
    Ok(settings
        .get_item(intern!(py, "cookie_secret"))?
        .is_some_and(|secret| !secret.is_none()))
}

/// Whether the response's headers are already out (after `flush()`, or a WebSocket's 101): a
/// cookie set now never reaches the browser. Tornado's own flag; an object without it (a test
/// double) has sent nothing.
pub fn headers_written(handler: &Bound<'_, PyAny>) -> bool {
    let py = handler.py();
    handler
        .getattr_opt(intern!(py, "_headers_written"))
        .ok()
        .flatten()
        .is_some_and(|written| written.is_truthy().unwrap_or(false))
}

/// What needed cookies that could no longer be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookiesTooLate {
    /// A write of a session the browser has no cookie for (new, regenerated, or made again
    /// after a logout): its record would be an orphan.
    Save,
    /// A regeneration: the browser would keep the old id, whose record it deletes.
    Regenerate,
    /// A write of a session kept in its cookie (`CookieStore`): the cookie is the record.
    SealedSave,
    /// A logout of a session kept in its cookie: only clearing the cookie ends it.
    SealedDestroy,
}

impl std::fmt::Display for CookiesTooLate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, cure) = match self {
            Self::Save => (
                "the session was not saved: it is new (or regenerated, or written again after \
                 destroy()) and its cookie",
                "Save the session before flush() (or do not flush)",
            ),
            Self::Regenerate => (
                "regenerate() was refused and the session left as it was: the new id's cookie",
                "Regenerate before flush() (or do not flush)",
            ),
            Self::SealedSave => (
                "the session was not saved: it lives in its cookie (CookieStore), and that cookie",
                "Save the session before flush() (or do not flush)",
            ),
            Self::SealedDestroy => (
                "destroy() was refused and the session left as it was: it lives in its cookie \
                 (CookieStore), and the cookie that clears it",
                "Destroy it before flush() (or do not flush)",
            ),
        };
        write!(
            f,
            "{what} can no longer be sent, as this response's headers are already written (by \
             flush(), or a WebSocket handshake's 101), so the browser would never learn its id. \
             {cure}; in a WebSocket handler, before the handshake: in prepare(), or in get() \
             before super().get()"
        )
    }
}

impl CookiesTooLate {
    /// `Err(self)` when the handler's headers are already out.
    pub fn unless_sendable(self, handler: &Bound<'_, PyAny>) -> Result<(), Self> {
        if headers_written(handler) {
            Err(self)
        } else {
            Ok(())
        }
    }
}

/// A request's session cookies: the pair as `get_secure_cookie` returns them (decoded to
/// text), or the compact cookie's value as sent (checked by `compact_cookie::verify`).
#[derive(Default)]
pub struct RequestCookies {
    pub id: Option<String>,
    pub digest: Option<String>,
    /// When the id cookie was signed, to know when to send it again.
    pub id_signed_at: Option<u64>,
    /// A compact-shaped value under the id cookie's name.
    pub compact: Option<String>,
    /// A sealed session under the id cookie's name (read only for a `CookieStore`).
    pub sealed: Option<String>,
}

impl RequestCookies {
    fn compact(value: String) -> Self {
        Self {
            compact: Some(value),
            ..Self::default()
        }
    }
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

/// A cookie value (or an id or digest given by hand) as text: `get_secure_cookie` gives bytes
/// on Python 3, apps may pass str.
pub fn text(value: &Bound<'_, PyAny>) -> Option<String> {
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

/// Reads signed cookie `name` from a `Cookie` header as tornsession's Rust reader does: `(True,
/// value or None)` when it decided, `(False, None)` when it leaves the cookie to Tornado. For
/// tests that hold it to `tornado.web.decode_signed_value`.
#[pyfunction]
#[pyo3(signature = (cookie_secret, name, cookie_header, now, max_age_days = 31.0))]
pub fn _read_signed_cookie<'py>(
    py: Python<'py>, cookie_secret: &Bound<'py, PyAny>, name: &str, cookie_header: &str, now: f64,
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
