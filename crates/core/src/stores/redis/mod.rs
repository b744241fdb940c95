//! Sessions in Redis (one server, a Redis Cluster, or the master Redis Sentinel names), over the
//! `redis` crate's blocking API; `rediss://` URLs connect over TLS (rustls, the system's CA roots
//! unless a CA file is given).
//!
//! Each store keeps a few connections for reuse. Every failure is `Unavailable`: a dead server
//! must fail the request, never look like a missing session. A connection that failed is dropped;
//! the next request connects afresh, so the store recovers by itself when the server is back.
//!
//! One concept per file: `options` (options, TLS files, URLs), `commands` (keys, the raw `EVAL`
//! scripts and the commands of every operation), `pool` (idle connections, retried once when
//! stale), `connection` and `deadline` (the blocking connections), `session_store` (the
//! `SessionStore` methods all three stores share), `store` and `wire` (one server, and its
//! pipelined protocol), `cluster`, `sentinel`.

use std::time::Duration;

mod cluster;
mod commands;
mod connection;
mod deadline;
mod listing;
mod options;
mod pool;
mod sentinel;
mod session_store;
mod store;
mod wire;

pub use cluster::RedisClusterStore;
pub use commands::{ex_seconds, key, user_index_key};
pub use options::{redact_url, RedisOptions, TlsFiles};
pub use sentinel::{RedisSentinelStore, SentinelMasterOptions};
pub use store::RedisStore;

/// The prefix of every key unless told otherwise.
pub const DEFAULT_PREFIX: &str = "tornsession:";
/// How long connecting may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one command may wait to be written or answered, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// How many idle connections a store keeps for reuse, by default.
pub const DEFAULT_POOL_SIZE: usize = 8;

#[cfg(test)]
mod tests;
