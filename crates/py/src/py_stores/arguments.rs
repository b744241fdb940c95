//! The store constructors' arguments from Python, checked once, each error naming the argument.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::prelude::*;

use crate::errors::value_error;
use crate::options::SaturatingInt;
use tornsession_core::stores;

/// The longest timeout a store takes, in seconds. A store call waiting longer than an hour is a
/// hung request; beyond it, durations overflow the clocks and integers they end up in.
const MAX_TIMEOUT_SECONDS: f64 = 3600.0;
/// The most connections a network store keeps (per server); pools allocate their slots ahead.
pub const MAX_POOL_SIZE: i64 = 1024;

/// A count from Python, refusing what is below `min` or above `max`, naming the option.
pub fn count(name: &str, value: i64, min: i64, max: i64) -> PyResult<usize> {
    if (min..=max).contains(&value) {
        usize::try_from(value).map_err(|e| value_error(format!("{name}: {e}")))
    } else {
        Err(value_error(format!(
            "{name} must be from {min} to {max}, not {value}"
        )))
    }
}

/// A timeout from Python as a `Duration`, refusing what is not a positive number of seconds up
/// to `MAX_TIMEOUT_SECONDS` (NaN and infinities included), or rounds to nothing.
pub fn positive_seconds(name: &str, seconds: f64) -> PyResult<Duration> {
    if !(seconds > 0.0 && seconds <= MAX_TIMEOUT_SECONDS) {
        return Err(value_error(format!(
            "{name} must be a positive number of seconds up to {MAX_TIMEOUT_SECONDS}, not {seconds}"
        )));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration >= Duration::from_micros(1) => Ok(duration),
        _ => Err(value_error(format!(
            "{name} must be at least a microsecond, not {seconds}"
        ))),
    }
}

/// The keyword arguments every Redis store takes, as given.
pub struct RedisArguments {
    pub prefix: String,
    pub connect_timeout: f64,
    pub timeout: f64,
    pub pool_size: SaturatingInt,
    pub ssl_ca_certs: Option<PathBuf>,
    pub ssl_certfile: Option<PathBuf>,
    pub ssl_keyfile: Option<PathBuf>,
}

impl RedisArguments {
    /// The options they stand for, checked.
    pub fn options(self) -> PyResult<stores::RedisOptions> {
        Ok(stores::RedisOptions {
            prefix: self.prefix,
            connect_timeout: positive_seconds("connect_timeout", self.connect_timeout)?,
            timeout: positive_seconds("timeout", self.timeout)?,
            pool_size: count("pool_size", self.pool_size.0, 1, MAX_POOL_SIZE)?,
            tls: stores::TlsFiles {
                ca_certs: self.ssl_ca_certs,
                certfile: self.ssl_certfile,
                keyfile: self.ssl_keyfile,
            },
        })
    }
}
