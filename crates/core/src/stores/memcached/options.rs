//! What a memcached store is told: its servers, prefix and timeouts.

use super::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_PREFIX, DEFAULT_TIMEOUT, MAX_KEY_LEN,
};
use crate::stores::Endpoint;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct MemcachedOptions {
    pub prefix: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub pool_size: u32,
}

impl Default for MemcachedOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

/// Where `host:port`, `memcache://host:port` or `[v6 address]:port` points (an IPv6 host
/// without its brackets, as sockets take it).
pub fn endpoint(server: &str) -> Result<Endpoint, String> {
    let server = server.trim();
    let address = match server.split_once("://") {
        Some(("memcache", rest)) => rest.strip_suffix('/').unwrap_or(rest),
        Some(_) => {
            return Err(format!(
                "bad server {server:?}: expected host:port or memcache://host:port"
            ))
        }
        None => server,
    };
    let expected = || format!("bad server {server:?}: expected host:port");
    let bracketed = address.starts_with('[');
    let (host, port) = match address.strip_prefix('[') {
        Some(v6) => {
            let (host, rest) = v6.split_once(']').ok_or_else(expected)?;
            (host, rest.strip_prefix(':').ok_or_else(expected)?)
        }
        None => address.rsplit_once(':').ok_or_else(expected)?,
    };
    let bad_byte =
        |b: u8| b.is_ascii_whitespace() || b.is_ascii_control() || b"/@?#[]".contains(&b);
    // An IPv6 address without brackets cannot be told from its port.
    if host.is_empty() || host.bytes().any(bad_byte) || (host.contains(':') && !bracketed) {
        return Err(expected());
    }
    let port = Some(port)
        .filter(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|port| port.parse::<u16>().ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| format!("bad server {server:?}: invalid port number"))?;
    Ok(Endpoint {
        host: host.to_owned(),
        port,
    })
}

pub(super) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > MAX_KEY_LEN - 64 {
        return Err(format!("prefix longer than {} bytes", MAX_KEY_LEN - 64));
    }
    if prefix
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("prefix may not hold spaces or control characters".to_owned());
    }
    Ok(())
}
