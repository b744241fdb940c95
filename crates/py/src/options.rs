//! The manager's options: parsed from Python values and checked when the manager is built, each
//! error naming the option, so a bad option never surfaces later as a 500 on every request.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyList, PyString, PyTuple};

use crate::errors::{argument_type_error, value_error, wrong_type, WeakSecretWarning};
use crate::tornado_cookies::SecureMode;
use tornsession_core::compact_cookie::CookieFormat;
use tornsession_core::stores::DEFAULT_MAX_READ_SIZE;
use tornsession_core::time;

/// Secrets shorter than this are guessable offline from one digest cookie.
pub const MIN_SECRET_BYTES: usize = 32;

/// An integer option as given, with ints beyond 64 bits saturated, so that a range check names
/// the option instead of PyO3 raising a bare `OverflowError` for `2**64`.
#[derive(Debug, Clone, Copy)]
pub struct SaturatingInt(pub i64);

impl<'a, 'py> FromPyObject<'a, 'py> for SaturatingInt {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        let int = obj
            .cast::<PyInt>()
            .map_err(|_| wrong_type("expected an int", &obj))?;
        match int.extract::<i64>() {
            Ok(value) => Ok(Self(value)),
            Err(_) if int.lt(0)? => Ok(Self(i64::MIN)),
            Err(_) => Ok(Self(i64::MAX)),
        }
    }
}

/// A duration option given as seconds (int or float) or a `datetime.timedelta`.
pub fn duration(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let py = value.py();
    let seconds: f64 = match value.extract::<Duration>() {
        Ok(duration) => duration.as_secs_f64(),
        // A negative timedelta is not a Duration, but it is a number of seconds to refuse.
        Err(_) if value.is_instance(&py.import("datetime")?.getattr("timedelta")?)? => {
            value.call_method0("total_seconds")?.extract()?
        }
        Err(_) if value.is_instance_of::<PyBool>() => {
            return Err(argument_type_error(format!(
                "{name} must be a number of seconds or a datetime.timedelta, not a bool"
            )))
        }
        Err(_) => value.extract().map_err(|_| {
            argument_type_error(format!(
                "{name} must be a number of seconds or a datetime.timedelta"
            ))
        })?,
    };
    time::positive_duration(seconds).map_err(|e| value_error(format!("{name} {e}")))
}

/// A positive size in bytes.
pub fn byte_size(name: &str, value: Option<SaturatingInt>) -> PyResult<Option<usize>> {
    match value {
        None => Ok(None),
        Some(SaturatingInt(bytes)) if bytes > 0 => {
            Ok(Some(usize::try_from(bytes).unwrap_or(usize::MAX)))
        }
        Some(SaturatingInt(bytes)) => Err(value_error(format!(
            "{name} must be a positive number of bytes, not {bytes}"
        ))),
    }
}

/// The read limit: `max_read_size` when given (and then at least `max_size`, so what can be
/// saved can be loaded), else 1 MiB, or `max_size` when larger.
pub fn read_limit(max_size: Option<usize>, max_read_size: Option<usize>) -> PyResult<usize> {
    match (max_size, max_read_size) {
        (Some(size), Some(read)) if read < size => Err(value_error(format!(
            "max_read_size={read} is below max_size={size}: sessions could be saved that no \
             load reads back; raise max_read_size or lower max_size"
        ))),
        (_, Some(read)) => Ok(read),
        (size, None) => Ok(DEFAULT_MAX_READ_SIZE.max(size.unwrap_or(0))),
    }
}

/// The largest record a save writes: `max_size` when given, else the read limit; never above
/// what the store takes (`store_limit`, memcached's item size), which a larger `max_size`
/// given by hand is refused for.
pub fn save_limit(
    max_size: Option<usize>, read_limit: usize, store_limit: Option<usize>, store: &str,
) -> PyResult<usize> {
    match (max_size, store_limit) {
        (Some(size), Some(limit)) if size > limit => Err(value_error(format!(
            "max_size={size} is more than {store} takes: records of up to {limit} bytes"
        ))),
        (size, limit) => Ok(size.unwrap_or(read_limit).min(limit.unwrap_or(usize::MAX))),
    }
}

/// `cookie_secure`: True, False or "auto".
pub fn secure_mode(value: &Bound<'_, PyAny>) -> PyResult<SecureMode> {
    if let Ok(flag) = value.cast::<PyBool>() {
        return Ok(if flag.is_true() {
            SecureMode::Always
        } else {
            SecureMode::Never
        });
    }
    match value
        .cast::<PyString>()
        .map(|s| s.to_str().map(str::to_owned))
    {
        Ok(Ok(text)) if text == "auto" => Ok(SecureMode::Auto),
        _ => Err(value_error(format!(
            "cookie_secure must be True, False or 'auto', not {}",
            value.repr()?
        ))),
    }
}

/// `cookie_format`: 'pair' or 'compact' (anything else, a str or not, is a ValueError naming both).
pub fn cookie_format(value: Option<&Bound<'_, PyAny>>) -> PyResult<CookieFormat> {
    let Some(value) = value else {
        return Ok(CookieFormat::default());
    };
    match value
        .cast::<PyString>()
        .map(|s| s.to_str().map(str::to_owned))
    {
        Ok(Ok(text)) => CookieFormat::parse(&text).map_err(value_error),
        _ => Err(value_error(format!(
            "cookie_format must be 'pair' or 'compact', not {}",
            value.repr()?
        ))),
    }
}

/// Checks a cookie name: an RFC 6265 token (visible ASCII but separators).
pub fn check_cookie_name(option: &str, name: &str) -> Result<(), String> {
    const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={} \t";
    if name.is_empty() {
        return Err(format!("{option} must not be empty"));
    }
    match name
        .bytes()
        .find(|b| !b.is_ascii_graphic() || SEPARATORS.contains(b))
    {
        None => Ok(()),
        Some(_) => Err(format!(
            "{option} {name:?} is not a cookie name: use letters, digits and !#$%&'*+-.^_`|~ \
             (RFC 6265), no spaces, separators or non-ASCII"
        )),
    }
}

/// Checks a cookie attribute value (Path, Domain): no `;`, `,`, spaces or control characters,
/// which would end the attribute or split the header.
pub fn check_attribute(option: &str, value: &str) -> Result<(), String> {
    match value
        .chars()
        .find(|c| *c == ';' || *c == ',' || c.is_whitespace() || c.is_control() || !c.is_ascii())
    {
        None => Ok(()),
        Some(c) => Err(format!(
            "{option} {value:?} contains {c:?}; cookie attributes cannot hold ';', ',', spaces, \
             control or non-ASCII characters"
        )),
    }
}

/// Checks `cookie_samesite` against `cookie_secure` (browsers drop SameSite=None without Secure).
pub fn check_samesite(samesite: Option<&str>, secure: SecureMode) -> Result<(), String> {
    match samesite {
        None | Some("Lax") | Some("Strict") => Ok(()),
        Some("None") if secure == SecureMode::Always => Ok(()),
        Some("None") => Err(
            "cookie_samesite='None' needs cookie_secure=True: browsers refuse SameSite=None \
             cookies without Secure"
                .to_owned(),
        ),
        Some(other) => Err(format!(
            "cookie_samesite must be 'Lax', 'Strict', 'None' or None, not {other:?}"
        )),
    }
}

/// Checks `cookie_expires_days`: finite and positive, or None for a browser-session cookie.
pub fn check_expires_days(days: Option<f64>) -> Result<(), String> {
    match days {
        Some(days) if !(days.is_finite() && days > 0.0 && days <= 36_500.0) => Err(format!(
            "cookie_expires_days must be a positive number of days (at most 36500) or None, not {days}"
        )),
        _ => Ok(()),
    }
}

/// The keys from `secret=`: a str or bytes, or a list or tuple of them, newest first.
pub fn secret_keys(secret: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    let one = |value: &Bound<'_, PyAny>| -> PyResult<Vec<u8>> {
        if let Ok(text) = value.cast::<PyString>() {
            return Ok(text.to_str()?.as_bytes().to_vec());
        }
        if let Ok(bytes) = value.cast::<PyBytes>() {
            return Ok(bytes.as_bytes().to_vec());
        }
        Err(argument_type_error(format!(
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

/// Warns (`WeakSecretWarning`, a `UserWarning`) when a secret is short enough to guess.
pub fn warn_if_weak(py: Python<'_>, keys: &[Vec<u8>]) -> PyResult<()> {
    if keys.iter().any(|key| key.len() < MIN_SECRET_BYTES) {
        let category = py.get_type::<WeakSecretWarning>();
        let message = std::ffi::CString::new(format!(
            "a session secret is shorter than {MIN_SECRET_BYTES} bytes, so it can be guessed \
             offline from one digest cookie; use a random one, e.g. the output of: python -c \
             \"import secrets; print(secrets.token_hex(32))\""
        ))
        .expect("no NUL in the message");
        PyErr::warn(py, &category, &message, 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_names_are_rfc6265_tokens() {
        for good in ["session_id", "__Host-sid", "a.b~c!#$%&'*+^`|"] {
            assert_eq!(check_cookie_name("cookie_name", good), Ok(()), "{good}");
        }
        for bad in [
            "", "a b", "a;b", "a=b", "a,b", "sé", "a\tb", "a\"b", "a\u{7f}",
        ] {
            let error = check_cookie_name("cookie_name", bad).unwrap_err();
            assert!(error.starts_with("cookie_name"), "{error}");
        }
    }

    #[test]
    fn attributes_refuse_what_would_split_the_header() {
        assert_eq!(check_attribute("cookie_path", "/app"), Ok(()));
        assert_eq!(check_attribute("cookie_domain", ".example.com"), Ok(()));
        for bad in ["/a;b", "/a,b", "a b", "a\nb", "é"] {
            assert!(check_attribute("cookie_path", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn samesite_none_needs_secure() {
        assert!(check_samesite(Some("None"), SecureMode::Always).is_ok());
        assert!(check_samesite(Some("None"), SecureMode::Auto).is_err());
        assert!(check_samesite(Some("None"), SecureMode::Never).is_err());
        assert!(check_samesite(Some("lax"), SecureMode::Always).is_err());
        assert!(check_samesite(None, SecureMode::Never).is_ok());
    }

    #[test]
    fn expires_days_is_finite_and_positive() {
        assert!(check_expires_days(Some(30.0)).is_ok());
        assert!(check_expires_days(None).is_ok());
        for bad in [f64::NAN, f64::INFINITY, 0.0, -1.0, 1e300] {
            assert!(check_expires_days(Some(bad)).is_err(), "{bad}");
        }
    }
}
