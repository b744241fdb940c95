//! Which server a key lives on, and how long it lives.

use std::time::Duration;

use super::RELATIVE_EXPTIME_LIMIT;

/// The memcached `exptime` for `ttl`: 0 for none, whole seconds rounded up (at least 1), and an
/// absolute Unix time beyond 30 days, as memcached reads larger numbers that way.
pub fn exptime(ttl: Option<Duration>, now_unix: u64) -> u32 {
    let Some(ttl) = ttl else { return 0 };
    let seconds = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
    let value = if seconds > RELATIVE_EXPTIME_LIMIT {
        now_unix.saturating_add(seconds)
    } else {
        seconds
    };
    u32::try_from(value).unwrap_or(u32::MAX)
}

/// Which server a key goes to: FNV-1a, stable across builds and Rust versions, so processes
/// built apart still agree.
pub(super) fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The index of the server `key` lives on, among `servers` servers (the rule of the `memcache`
/// crate this store used before, so sessions stay where they were).
pub fn server_index(key: &str, servers: usize) -> usize {
    (fnv1a(key) % servers as u64) as usize
}
