//! The master Redis Sentinel names, followed across failovers.

use crate::stores::{LoadResult, StoreResult};
use std::time::Duration;

use redis::{
    Client, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, RedisError, RedisResult,
    TlsCertificates,
};

use super::commands::*;
use super::connection::{connect, BlockingConnection};
use super::options::check_options;
use super::pool::Pool;
use super::session_store::redis_session_store;
use super::RedisOptions;
use crate::stores::pool::PerProcess;
use crate::stores::{quoted_list, within_limit, SessionStore, StoreError};

#[derive(Debug, Clone, Default)]
pub struct SentinelMasterOptions {
    /// TLS to the master (with `RedisOptions::tls`'s files, else the system's CA roots).
    pub ssl: bool,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `"host:port"` (or `"[::1]:port"`) as a sentinel's address.
pub(super) fn sentinel_addr(address: &str) -> Result<ConnectionAddr, String> {
    let bad = || format!("a sentinel is \"host:port\", not {address:?}");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(ConnectionAddr::Tcp(host.to_owned(), port))
}

/// Sessions in the master of a Redis replica set watched by Redis Sentinel. The master's address
/// comes from the sentinels and is kept until a connection to it fails; then it is asked for
/// again, so the store follows a failover by itself (requests fail until the sentinels have
/// promoted a replica).
pub struct RedisSentinelStore {
    /// The sentinels' addresses, asked in turn. (The redis crate's `SentinelClient` has no
    /// timeouts: one sentinel that accepts and never answers would hang every request.)
    sentinel_addresses: Vec<ConnectionAddr>,
    /// How to reach the master once named.
    master_options: SentinelMasterOptions,
    certificates: Option<TlsCertificates>,
    /// The master the sentinels named last; `None` once it failed (and in a new child process,
    /// which asks again).
    master: PerProcess<Option<Client>>,
    sentinels: Vec<String>,
    service_name: String,
    options: RedisOptions,
    pool: Pool<BlockingConnection>,
}

impl RedisSentinelStore {
    /// Checks the addresses and options; asks the sentinels only when first used.
    pub fn new(
        sentinels: &[String], service_name: &str, master: SentinelMasterOptions,
        options: RedisOptions,
    ) -> StoreResult<Self> {
        let describe = describe_sentinel(sentinels, service_name);
        let fail = |cause: String| StoreError::not_made(&describe, cause);
        check_options(&options).map_err(fail)?;
        if sentinels.is_empty() {
            return Err(fail("no sentinel addresses given".to_owned()));
        }
        if service_name.is_empty() {
            return Err(fail("service_name is empty".to_owned()));
        }
        let addresses = sentinels
            .iter()
            .map(|a| sentinel_addr(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let certificates = options.tls.certificates().map_err(fail)?;
        if certificates.is_some() && !master.ssl {
            return Err(fail("ssl_* files need ssl=True".to_owned()));
        }
        Ok(Self {
            sentinel_addresses: addresses,
            master_options: master,
            certificates,
            master: PerProcess::new(),
            sentinels: sentinels.to_vec(),
            service_name: service_name.to_owned(),
            pool: Pool::new(options.pool_size),
            options,
        })
    }

    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    pub fn sentinels(&self) -> &[String] {
        &self.sentinels
    }

    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    pub(super) fn forget_master(&self) {
        self.master.with(|master| *master = None);
    }

    /// The master the sentinels name: each sentinel in turn, within the store's timeouts.
    pub(super) fn ask_sentinels(&self) -> RedisResult<Client> {
        let mut last_error = None;
        for sentinel in &self.sentinel_addresses {
            match self.master_named_by(sentinel) {
                Ok(client) => {
                    self.master.with(|master| *master = Some(client.clone()));
                    return Ok(client);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| RedisError::from((redis::ErrorKind::IoError, "no sentinel to ask"))))
    }

    pub(super) fn master_named_by(&self, sentinel: &ConnectionAddr) -> RedisResult<Client> {
        let sentinel = Client::open(ConnectionInfo {
            addr: sentinel.clone(),
            redis: RedisConnectionInfo::default(),
        })?;
        let mut connection = connect(&sentinel, &self.options)?.untagged();
        let (host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.service_name)
            .query(&mut connection)?;
        let master = &self.master_options;
        let addr = if master.ssl {
            ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host, port)
        };
        let info = ConnectionInfo {
            addr,
            redis: RedisConnectionInfo {
                db: master.db,
                username: master.username.clone(),
                password: master.password.clone(),
                ..RedisConnectionInfo::default()
            },
        };
        match &self.certificates {
            Some(certificates) => Client::build_with_tls(info, certificates.clone()),
            None => Client::open(info),
        }
    }

    /// A connection to the known master; when that fails (it may have moved), to the one the
    /// sentinels name now.
    pub(super) fn connect(&self) -> RedisResult<BlockingConnection> {
        let known = self.master.with(|master| master.clone()).flatten();
        if let Some(client) = known {
            if let Ok(connection) = connect(&client, &self.options) {
                return Ok(connection);
            }
            self.forget_master();
        }
        let client = self
            .ask_sentinels()
            .map_err(|e| sentinel_error(e, &self.service_name))?;
        connect(&client, &self.options).inspect_err(|_| self.forget_master())
    }

    pub(super) fn run<T>(
        &self, command: impl Fn(&mut BlockingConnection) -> RedisResult<T>,
    ) -> StoreResult<T> {
        self.pool.run(|| self.connect(), command).map_err(|cause| {
            // Whatever failed (a dead master, a demoted one answering READONLY), the next request
            // asks the sentinels again, on fresh connections.
            self.forget_master();
            self.pool.idle.clear();
            StoreError::new(self, cause)
        })
    }
}

pub(super) fn sentinel_error(error: RedisError, service_name: &str) -> RedisError {
    RedisError::from((
        error.kind(),
        "no master from the sentinels",
        format!("service {service_name:?}: {error}"),
    ))
}

pub(super) fn describe_sentinel(sentinels: &[String], service_name: &str) -> String {
    format!(
        "RedisSentinelStore({}, '{service_name}')",
        quoted_list(sentinels)
    )
}

// No pipelined path either: the master's address comes from the sentinels and moves on
// failover, which the blocking path follows.
redis_session_store!(
    RedisSentinelStore,
    |store| describe_sentinel(&store.sentinels, &store.service_name),
    |_| None
);
