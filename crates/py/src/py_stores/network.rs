//! The network store classes: Redis (one server, a cluster, a sentinel-watched master) and
//! memcached.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;

use super::arguments::{count, positive_seconds, RedisArguments, MAX_POOL_SIZE};
use super::PyStore;
use crate::errors::store_argument_error;
use crate::options::SaturatingInt;
use tornsession_core::stores;

/// A Redis store class: `new` takes the class's own arguments, then the keyword arguments every
/// Redis store takes (`RedisArguments`, written once here), then the class's own keyword
/// arguments; `open` makes the store from the checked `RedisOptions`.
macro_rules! redis_class {
    (
        $(#[doc = $doc:literal])*
        $class:ident($store:ty) as $name:literal,
        text_signature = $text:literal,
        new($($arg:ident: $arg_ty:ty),*; $($kwarg:ident: $kwarg_ty:ty = $default:tt),*),
        open = $open:expr,
        $($getters:tt)*
    ) => {
        $(#[doc = $doc])*
        #[pyclass(module = "tornsession", frozen, extends = PyStore, name = $name)]
        pub struct $class {
            store: Arc<$store>,
        }

        #[pymethods]
        impl $class {
            #[new]
            #[pyo3(
                signature = ($($arg,)* *, prefix = stores::redis::DEFAULT_PREFIX.to_owned(), connect_timeout = 1.0, timeout = 1.0, pool_size = SaturatingInt(stores::redis::DEFAULT_POOL_SIZE as i64), ssl_ca_certs = None, ssl_certfile = None, ssl_keyfile = None $(, $kwarg = $default)*),
                text_signature = $text
            )]
            #[allow(clippy::too_many_arguments, reason = "Python keyword arguments")]
            fn new(
                $($arg: $arg_ty,)*
                prefix: String,
                connect_timeout: f64,
                timeout: f64,
                pool_size: SaturatingInt,
                ssl_ca_certs: Option<PathBuf>,
                ssl_certfile: Option<PathBuf>,
                ssl_keyfile: Option<PathBuf>,
                $($kwarg: $kwarg_ty,)*
            ) -> PyResult<PyClassInitializer<Self>> {
                let options = RedisArguments {
                    prefix,
                    connect_timeout,
                    timeout,
                    pool_size,
                    ssl_ca_certs,
                    ssl_certfile,
                    ssl_keyfile,
                }
                .options()?;
                let store = ($open)(options).map_err(store_argument_error)?;
                Ok(PyStore::initializer(store, |store| Self { store }))
            }

            #[getter]
            fn prefix(&self) -> &str {
                &self.store.options().prefix
            }

            $($getters)*
        }
    };
}

redis_class!(
    /// Sessions in one Redis server, `redis://`, `rediss://` (TLS) or `unix://` URL.
    PyRedisStore(stores::RedisStore) as "RedisStore",
    text_signature = "(url, *, prefix='tornsession:', connect_timeout=1.0, timeout=1.0, pool_size=8, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None)",
    new(url: &str;),
    open = |options| stores::RedisStore::new(url, options),
    #[getter]
    fn url(&self) -> &str {
        self.store.url()
    }
);

redis_class!(
    /// Sessions in a Redis Cluster, given the URLs of one or more of its nodes.
    PyRedisClusterStore(stores::RedisClusterStore) as "RedisClusterStore",
    text_signature = "(urls, *, prefix='tornsession:', connect_timeout=1.0, timeout=1.0, pool_size=8, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None)",
    new(urls: Vec<String>;),
    open = |options| stores::RedisClusterStore::new(&urls, options),
    #[getter]
    fn urls(&self) -> Vec<String> {
        self.store.urls().to_vec()
    }
);

redis_class!(
    /// Sessions in the master of a Redis replica set that Redis Sentinel watches; follows failovers.
    PyRedisSentinelStore(stores::RedisSentinelStore) as "RedisSentinelStore",
    text_signature = "(sentinels, service_name, *, prefix='tornsession:', connect_timeout=1.0, timeout=1.0, pool_size=8, ssl=False, ssl_ca_certs=None, ssl_certfile=None, ssl_keyfile=None, db=0, username=None, password=None)",
    new(sentinels: Vec<String>, service_name: &str; ssl: bool = false, db: i64 = 0, username: Option<String> = None, password: Option<String> = None),
    open = |options| {
        let master = stores::SentinelMasterOptions {
            ssl,
            db,
            username,
            password,
        };
        stores::RedisSentinelStore::new(&sentinels, service_name, master, options)
    },
    #[getter]
    fn sentinels(&self) -> Vec<String> {
        self.store.sentinels().to_vec()
    }

    #[getter]
    fn service_name(&self) -> &str {
        self.store.service_name()
    }
);

/// Sessions in one or several memcached servers, keys spread across them.
#[pyclass(module = "tornsession", frozen, extends = PyStore, name = "MemcachedStore")]
pub struct PyMemcachedStore {
    store: Arc<stores::MemcachedStore>,
}

#[pymethods]
impl PyMemcachedStore {
    #[new]
    #[pyo3(
        signature = (servers, *, prefix = stores::memcached::DEFAULT_PREFIX.to_owned(), connect_timeout = 1.0, timeout = 1.0, pool_size = SaturatingInt(i64::from(stores::memcached::DEFAULT_POOL_SIZE))),
        text_signature = "(servers, *, prefix='tornsession:', connect_timeout=1.0, timeout=1.0, pool_size=8)"
    )]
    fn new(
        servers: Vec<String>,
        prefix: String,
        connect_timeout: f64,
        timeout: f64,
        pool_size: SaturatingInt,
    ) -> PyResult<PyClassInitializer<Self>> {
        let pool_size = count("pool_size", pool_size.0, 1, MAX_POOL_SIZE)?;
        let options = stores::MemcachedOptions {
            prefix,
            connect_timeout: positive_seconds("connect_timeout", connect_timeout)?,
            timeout: positive_seconds("timeout", timeout)?,
            pool_size: u32::try_from(pool_size).unwrap_or(u32::MAX),
        };
        let store = stores::MemcachedStore::new(&servers, options).map_err(store_argument_error)?;
        Ok(PyStore::initializer(store, |store| Self { store }))
    }

    #[getter]
    fn servers(&self) -> Vec<String> {
        self.store.servers().to_vec()
    }

    #[getter]
    fn prefix(&self) -> &str {
        &self.store.options().prefix
    }
}
