//! A cookie set on a Tornado `RequestHandler` without its `set_cookie`: the `Morsel` it would
//! make, put straight into the handler's jar (see `put_morsel` for why).

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};

/// Whether the handler's class uses Tornado's own `set_cookie` (an override must be called).
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
    Ok(handler
        .get_type()
        .getattr(intern!(py, "set_cookie"))?
        .is(tornado.bind(py)))
}

/// What Tornado's `set_cookie(name, value, **kwargs)` leaves behind, a `Morsel` in the
/// handler's `_new_cookie` jar (written out by `flush()`), made here in a few calls: Tornado's
/// own goes through `Morsel.__setitem__`'s checks for every attribute and formats the expiry
/// with `email.utils`, about 10 µs, which a `CookieStore` pays on every write. The value is
/// ours (base64url and dots, nothing to quote) and the attributes were checked when the manager
/// was made. `tests/test_cookie_line.py` holds the line equal to Tornado's.
pub fn put_morsel(
    handler: &Bound<'_, PyAny>, name: &Bound<'_, PyString>, value: &str, kwargs: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let py = handler.py();
    static COOKIE_TYPES: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();
    let (morsel_type, jar_type) = COOKIE_TYPES.get_or_try_init(py, || -> PyResult<_> {
        let cookies = py.import("http.cookies")?;
        Ok((
            cookies.getattr("Morsel")?.unbind(),
            cookies.getattr("SimpleCookie")?.unbind(),
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
    let morsel = morsel_type.bind(py).call0()?;
    morsel.call_method1(intern!(py, "set"), (name, value, value))?;
    let attributes = PyDict::new(py);
    for (key, setting) in kwargs.iter() {
        if setting.is_none() {
            continue;
        }
        if key.eq(intern!(py, "expires_days"))? {
            let days: f64 = setting.extract()?;
            let expires = std::time::SystemTime::now()
                + std::time::Duration::try_from_secs_f64(days * 86_400.0).unwrap_or_default();
            attributes.set_item(intern!(py, "expires"), httpdate::fmt_http_date(expires))?;
        } else {
            attributes.set_item(key, setting)?;
        }
    }
    // Straight into the dicts (`PyDict_Update`, `PyDict_SetItem`): their Python-level
    // `update`/`__setitem__` would check again what is known good.
    morsel.cast::<PyDict>()?.update(attributes.as_mapping())?;
    let jar = jar.cast::<PyDict>()?;
    jar.del_item(name).ok();
    jar.set_item(name, morsel)
}
