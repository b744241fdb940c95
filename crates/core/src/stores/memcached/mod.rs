//! Sessions in one or several memcached servers, each key on the server its hash picks, spoken
//! to in the meta protocol (`crate::wire::meta`, memcached 1.6+): every operation is one request
//! written at once and one reply, on pooled connections that are not pinged when checked out.
//! Every failure is `Unavailable`.
//!
//! `options` (options, servers, prefixes), `keys` (which server a key lives on, expiry times),
//! `connection` (the blocking client), `store` (the store and its calls), `wire` (its requests
//! and replies, which the blocking methods in `session_store` run one at a time).

use std::time::Duration;

mod connection;
mod keys;
mod listing;
mod options;
mod session_store;
mod store;
mod wire;

pub use keys::{exptime, server_index};
pub use options::{endpoint, MemcachedOptions};
pub use store::MemcachedStore;

/// The prefix of every key unless told otherwise.
pub const DEFAULT_PREFIX: &str = "tornsession:";
/// How long connecting may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may wait to be written or answered, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many connections a store keeps per server, by default.
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// Longest key memcached takes.
pub(super) const MAX_KEY_LEN: usize = 250;
/// The largest record saved: memcached's default item size (1 MiB, its `-I`), less 1 KiB for
/// the key and the item's header, which count against that size too (a 44-byte key leaves
/// 100-150 bytes fewer for the value; the longest key, about 300).
pub const MAX_RECORD_SIZE: usize = (1 << 20) - 1024;
/// memcached reads an exptime above 30 days as a Unix time, not a duration.
pub(super) const RELATIVE_EXPTIME_LIMIT: u64 = 60 * 60 * 24 * 30;
/// The longest generation counter read: 20 digits hold any u64.
pub(super) const MAX_COUNTER_LEN: usize = 64;

#[cfg(test)]
mod tests;
