//! What a Redis store is told: its options, the TLS files, and its URLs as messages show them.

use std::path::PathBuf;
use std::time::Duration;

use redis::{ClientTlsConfig, TlsCertificates};

use super::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_PREFIX, DEFAULT_TIMEOUT};

/// Options shared by [`RedisStore`], [`RedisClusterStore`] and [`RedisSentinelStore`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub prefix: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub pool_size: usize,
    pub tls: TlsFiles,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            tls: TlsFiles::default(),
        }
    }
}

/// PEM files for TLS connections, as redis-py names them: `ca_certs`, the CA(s) to trust instead
/// of the system's roots; `certfile` and `keyfile`, a client certificate for servers that ask.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_certs: Option<PathBuf>,
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
}

impl TlsFiles {
    pub(super) fn is_empty(&self) -> bool {
        self.ca_certs.is_none() && self.certfile.is_none() && self.keyfile.is_none()
    }

    /// The files' contents, read now so a wrong path fails at construction, not per request.
    pub(super) fn certificates(&self) -> Result<Option<TlsCertificates>, String> {
        if self.is_empty() {
            return Ok(None);
        }
        let read = |name: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {name} {}: {e}", path.display()))
        };
        let client_tls = match (&self.certfile, &self.keyfile) {
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read("ssl_certfile", cert)?,
                client_key: read("ssl_keyfile", key)?,
            }),
            (None, None) => None,
            _ => return Err("ssl_certfile and ssl_keyfile go together".to_owned()),
        };
        let root_cert = match &self.ca_certs {
            Some(path) => Some(read("ssl_ca_certs", path)?),
            None => None,
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

pub(super) fn is_tls_url(url: &str) -> bool {
    url.get(..9)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://"))
}

/// The URL with any password replaced by `***`, fit for error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                // `redis://secret@host`: the crate takes a lone userinfo as the password.
                "***".to_owned()
            };
            format!(
                "{}{masked}{}",
                &url[..scheme_end + 3],
                &rest[at..] // "@host..." onwards
            )
        }
        None => url.to_owned(),
    }
}

pub(super) fn check_options(options: &RedisOptions) -> Result<(), String> {
    if options.connect_timeout.is_zero() || options.timeout.is_zero() {
        return Err("connect_timeout and timeout must be above 0".to_owned());
    }
    if options.pool_size == 0 {
        return Err("pool_size must be at least 1".to_owned());
    }
    Ok(())
}
