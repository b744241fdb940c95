//! tornsession's core: every decision of a session's life and every store, with no Python in
//! it (the `tornsession` crate in crates/py wraps it as the `tornsession._core` module).
//!
//! From the bottom up: `ids`, `digest`, `time`, `codec` (records as JSON bytes),
//! `signed_cookie` (Tornado's format), `compact_cookie` (the one-cookie format),
//! `sealed_cookie` (the cookie store's: the whole session encrypted into the cookie), `policy`
//! (expiry settings both the lifecycle and the user index read), `lifecycle` (the session
//! cycle as steps), `users` (per-user sessions), `user_sessions` (listing and ending a user's
//! sessions across a store), `wire` (the Redis and memcached codecs, sans I/O), `stores`
//! (one trait, every store, the pipelined request model) and `metrics` (what sessions do,
//! counted).

pub mod codec;
pub mod compact_cookie;
pub mod digest;
pub mod ids;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod sealed_cookie;
pub mod signed_cookie;
pub mod stores;
pub mod time;
pub mod turns;
pub mod user_sessions;
pub mod users;
pub mod wire;
