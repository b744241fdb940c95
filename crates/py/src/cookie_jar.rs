//! A cookie set on a Tornado `RequestHandler` without its `set_cookie`: the `Morsel` it would
//! make, put straight into the handler's jar with its line made here (see `put_line` for why).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

/// Whether the handler's `set_cookie` is Tornado's own: an override, in its class or put on the
/// instance (`mock.patch.object`), must be called.
pub fn uses_tornado_set_cookie(handler: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = handler.py();
    static TORNADO_SET_COOKIE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let tornado = TORNADO_SET_COOKIE.get_or_try_init(py, || -> PyResult<_> {
        Ok(py
            .import("tornado.web")?
            .getattr("RequestHandler")?
            .getattr("set_cookie")?
            .unbind())
    })?;
    let method = handler.getattr(intern!(py, "set_cookie"))?;
    Ok(method
        .getattr_opt(intern!(py, "__func__"))?
        .is_some_and(|function| function.is(tornado.bind(py))))
}

/// A cookie's attributes as `Morsel.OutputString` writes them after the value: sorted by name,
/// so an `expires` falls between `Domain` and `HttpOnly`. Made once per manager and `Secure`.
pub struct LineAttributes {
    before_expires: String,
    after_expires: String,
    /// The same attributes as the `Morsel` Tornado's `set_cookie` fills holds them (every key
    /// a `Morsel` has, those not set empty), but `expires`.
    morsel: Py<PyDict>,
}

impl LineAttributes {
    pub fn new(
        py: Python<'_>, domain: Option<&str>, httponly: bool, path: &str, samesite: Option<&str>,
        secure: bool,
    ) -> PyResult<Self> {
        let morsel = PyDict::new(py);
        morsel.update(morsel_type(py)?.call0()?.cast::<PyDict>()?.as_mapping())?;
        // As Tornado's `set_cookie`: an empty domain, path or SameSite is left out.
        let domain = domain.filter(|d| !d.is_empty());
        let before_expires = domain.map_or_else(String::new, |d| format!("; Domain={d}"));
        if let Some(domain) = domain {
            morsel.set_item("domain", domain)?;
        }
        let mut after_expires = String::new();
        if httponly {
            after_expires.push_str("; HttpOnly");
            morsel.set_item("httponly", true)?;
        }
        if !path.is_empty() {
            after_expires.push_str("; Path=");
            after_expires.push_str(path);
            morsel.set_item("path", path)?;
        }
        if let Some(samesite) = samesite.filter(|s| !s.is_empty()) {
            after_expires.push_str("; SameSite=");
            after_expires.push_str(samesite);
            morsel.set_item("samesite", samesite)?;
        }
        if secure {
            after_expires.push_str("; Secure");
            morsel.set_item("secure", true)?;
        }
        Ok(Self {
            before_expires,
            after_expires,
            morsel: morsel.unbind(),
        })
    }

    /// The most bytes these attributes take after the value: with an `expires`, whose date
    /// is always 29 bytes.
    pub fn max_len(&self) -> usize {
        const EXPIRES: usize = "; expires=".len() + "Thu, 01 Jan 2026 00:00:00 GMT".len();
        self.before_expires.len() + EXPIRES + self.after_expires.len()
    }

    /// Sets cookie `name` to `value` on the handler as Tornado's `set_cookie` would with these
    /// attributes, expiring `expires_days` from now (Tornado's `expires_days`: a
    /// browser-session cookie without), in its `_new_cookie` jar (written out by `flush()`).
    pub fn put(
        &self, handler: &Bound<'_, PyAny>, name: &Bound<'_, PyString>, value: &str,
        expires_days: Option<f64>,
    ) -> PyResult<()> {
        let py = handler.py();
        let name_text = name.to_str()?;
        let mut line = String::with_capacity(
            name_text.len()
                + value.len()
                + self.before_expires.len()
                + self.after_expires.len()
                + 40,
        );
        line.push_str(name_text);
        line.push('=');
        line.push_str(value);
        line.push_str(&self.before_expires);
        let morsel = self.morsel.bind(py).copy()?;
        if let Some(days) = expires_days {
            let expires = std::time::SystemTime::now()
                + std::time::Duration::try_from_secs_f64(days * 86_400.0).unwrap_or_default();
            let expires = httpdate::fmt_http_date(expires);
            line.push_str("; expires=");
            line.push_str(&expires);
            morsel.set_item("expires", expires)?;
        }
        line.push_str(&self.after_expires);
        put_line(handler, name, value, line, &morsel)
    }
}

/// `http.cookies.Morsel`.
fn morsel_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static MORSEL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    MORSEL
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("http.cookies")?.getattr("Morsel")?.unbind())
        })
        .map(|morsel| morsel.bind(py))
}

/// What Tornado's `set_cookie(name, value, ...)` leaves behind, in the handler's `_new_cookie`
/// jar (written out by `flush()`), as a `tornsession._cookie_line.CookieLine` carrying the line
/// `LineAttributes` made: Tornado's own checks every attribute through `Morsel.__setitem__` and
/// formats the expiry with `email.utils` (about 10 µs), and a plain `Morsel` formats its line
/// again at flush (about 3 µs more), which a `CookieStore` pays on every write. The value is
/// ours (base64url and dots, nothing to quote) and the attributes were checked when the manager
/// was made. `tests/test_cookie_line.py` holds the line equal to Tornado's.
fn put_line(
    handler: &Bound<'_, PyAny>, name: &Bound<'_, PyString>, value: &str, line: String,
    morsel: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let py = handler.py();
    static TYPES: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();
    let (line_type, jar_type) = TYPES.get_or_try_init(py, || -> PyResult<_> {
        Ok((
            py.import("tornsession._cookie_line")?
                .getattr("CookieLine")?
                .unbind(),
            py.import("http.cookies")?.getattr("SimpleCookie")?.unbind(),
        ))
    })?;
    let jar = match handler.getattr_opt(intern!(py, "_new_cookie"))? {
        Some(jar) if !jar.is_none() => jar,
        _ => {
            let jar = jar_type.bind(py).call0()?;
            handler.setattr(intern!(py, "_new_cookie"), &jar)?;
            jar
        }
    };
    let cookie = line_type.bind(py).call1((name, value, line, morsel))?;
    // Straight into the dict (`PyDict_SetItem`): `BaseCookie.__setitem__` would check again
    // what is known good. Deleted first, as Tornado does, so it goes last in the jar.
    let jar = jar.cast::<PyDict>()?;
    jar.del_item(name).ok();
    jar.set_item(name, cookie)
}
