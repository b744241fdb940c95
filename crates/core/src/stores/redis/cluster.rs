//! A Redis Cluster, through the redis crate's cluster client.

use crate::stores::{LoadResult, StoreResult};
use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::RedisResult;

use super::commands::*;
use super::options::{check_options, is_tls_url, redact_url};
use super::pool::Pool;
use super::session_store::redis_session_store;
use super::RedisOptions;
use crate::stores::{quoted_list, within_limit, SessionStore, StoreError};

/// Sessions in a Redis Cluster, given the URLs of one or more of its nodes; keys are routed to
/// the node owning their slot.
pub struct RedisClusterStore {
    client: ClusterClient,
    urls: Vec<String>,
    options: RedisOptions,
    pool: Pool<ClusterConnection>,
}

impl RedisClusterStore {
    /// Parses the URLs and checks the options; connects only when first used.
    pub fn new(urls: &[String], options: RedisOptions) -> StoreResult<Self> {
        let redacted: Vec<String> = urls.iter().map(|u| redact_url(u)).collect();
        let describe = format!("RedisClusterStore({})", quoted_list(&redacted));
        let fail = |cause: String| StoreError::not_made(&describe, cause);
        check_options(&options).map_err(fail)?;
        if urls.is_empty() {
            return Err(fail("no node URLs given".to_owned()));
        }
        let certificates = options.tls.certificates().map_err(fail)?;
        if certificates.is_some() && !urls.iter().all(|url| is_tls_url(url)) {
            return Err(fail("ssl_* files need rediss:// URLs".to_owned()));
        }
        let mut builder =
            ClusterClient::builder(urls.iter().map(String::as_str).collect::<Vec<_>>());
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        let client = builder
            .connection_timeout(options.connect_timeout)
            .response_timeout(options.timeout)
            // Few, quick retries: redirections during resharding are followed, a dead node is
            // reported within a small multiple of the timeouts rather than after 16 tries.
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(|e| fail(format!("bad URL: {e}")))?;
        Ok(Self {
            client,
            urls: redacted,
            pool: Pool::new(options.pool_size),
            options,
        })
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub(super) fn connect(&self) -> RedisResult<ClusterConnection> {
        let connection = self.client.get_connection()?;
        connection.set_read_timeout(Some(self.options.timeout))?;
        connection.set_write_timeout(Some(self.options.timeout))?;
        Ok(connection)
    }

    pub(super) fn run<T>(
        &self, command: impl Fn(&mut ClusterConnection) -> RedisResult<T>,
    ) -> StoreResult<T> {
        self.pool
            .run(|| self.connect(), command)
            .map_err(|cause| StoreError::new(self, cause))
    }
}

// No pipelined path for a cluster: keys are routed by slot, and MOVED / ASK redirections during
// resharding are followed by the redis crate's cluster client, on the blocking path.
redis_session_store!(
    RedisClusterStore,
    |store| format!("RedisClusterStore({})", quoted_list(&store.urls)),
    |_| None
);
