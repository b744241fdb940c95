//! One Redis server.

use crate::stores::{LoadResult, StoreResult};
use redis::{Client, RedisResult};

use super::commands::*;
use super::connection::{connect, BlockingConnection};
use super::options::{check_options, is_tls_url, redact_url};
use super::pool::Pool;
use super::session_store::redis_session_store;
use super::wire::WireTarget;
use super::RedisOptions;
use crate::stores::{within_limit, SessionStore, StoreError};
use std::time::Duration;

/// Sessions in one Redis server: `redis://[user:password@]host[:port][/db]` or
/// `unix:///path/to/redis.sock[?db=N]`.
pub struct RedisStore {
    client: Client,
    url: String,
    pub(super) options: RedisOptions,
    pool: Pool<BlockingConnection>,
    /// The server as the pipelined connections reach it; `None` when they cannot (see
    /// [`WireTarget::of`]).
    pub(super) wire: Option<WireTarget>,
}

impl RedisStore {
    /// Parses the URL and checks the options; connects only when first used.
    pub fn new(url: &str, options: RedisOptions) -> StoreResult<Self> {
        let describe = format!("RedisStore('{}')", redact_url(url));
        let fail = |cause: String| StoreError::not_made(&describe, cause);
        check_options(&options).map_err(fail)?;
        let certificates = options.tls.certificates().map_err(fail)?;
        let client = match certificates {
            Some(_) if !is_tls_url(url) => {
                return Err(fail("ssl_* files need a rediss:// URL".to_owned()))
            }
            Some(certificates) => Client::build_with_tls(url, certificates),
            None => Client::open(url),
        }
        .map_err(|e| fail(format!("bad URL: {e}")))?;
        Ok(Self {
            wire: WireTarget::of(client.get_connection_info()),
            client,
            url: redact_url(url),
            pool: Pool::new(options.pool_size),
            options,
        })
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn connect(&self) -> RedisResult<BlockingConnection> {
        connect(&self.client, &self.options)
    }

    pub(super) fn run<T>(
        &self, command: impl Fn(&mut BlockingConnection) -> RedisResult<T>,
    ) -> StoreResult<T> {
        self.pool
            .run(|| self.connect(), command)
            .map_err(|cause| StoreError::new(self, cause))
    }
}

redis_session_store!(
    RedisStore,
    |store| format!("RedisStore('{}')", store.url),
    |store| store
        .wire
        .as_ref()
        .map(|_| store as &dyn crate::stores::WireStore)
);
