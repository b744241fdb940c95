//! The stores under test, each as a `Subject`: the store, what kind it is (which decides the
//! few places the trait lets stores differ), and what it runs on (a folder, its servers).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tornsession_core::stores::sqlite::DEFAULT_BUSY_TIMEOUT;
use tornsession_core::stores::{
    FileStore, MemcachedOptions, MemcachedStore, MemoryStore, RedisClusterStore, RedisOptions,
    RedisStore, SessionStore, SqliteStore,
};

use crate::support::{self, RedisCluster, Server};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory,
    Sqlite,
    File,
    Redis,
    RedisCluster,
    Memcached,
}

/// What a network store's servers are, so a case can stop them.
#[derive(Clone)]
pub enum Servers {
    None,
    Each(Arc<Mutex<Vec<Server>>>),
    Cluster(Arc<Mutex<RedisCluster>>),
}

pub struct Subject {
    pub store: Arc<dyn SessionStore>,
    pub kind: Kind,
    servers: Servers,
    /// The folder a SQLite or file store lives in.
    _folder: Option<tempfile::TempDir>,
}

impl Subject {
    /// The time to live of records a case waits out: short enough to wait for, long enough
    /// that what a case does right after a save is done well before the record can expire
    /// (Redis counts whole seconds, a file's index entries too, and memcached's clock ticks once
    /// a second, so a 1 s item may go at once).
    pub fn short_ttl(&self) -> Duration {
        match self.kind {
            Kind::Memcached => Duration::from_secs(2),
            _ => Duration::from_secs(1),
        }
    }

    /// Whether the store drops a record when its time to live runs out, whatever reads it next.
    /// FileStore does not: a file's age is judged by the idle timeout a `load_touching` or
    /// `load_refreshing` is given (and by cleanup); a plain load returns it whatever its age.
    pub fn expires_by_itself(&self) -> bool {
        self.kind != Kind::File
    }

    /// Whether the store keeps a per-user index (memcached revokes by generation instead).
    pub fn lists_users(&self) -> bool {
        self.kind != Kind::Memcached
    }

    pub fn is_network(&self) -> bool {
        matches!(
            self.kind,
            Kind::Redis | Kind::RedisCluster | Kind::Memcached
        )
    }

    /// How the store names itself in messages, up to its arguments.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Memory => "MemoryStore(",
            Kind::Sqlite => "SqliteStore(",
            Kind::File => "FileStore(",
            Kind::Redis => "RedisStore(",
            Kind::RedisCluster => "RedisClusterStore(",
            Kind::Memcached => "MemcachedStore(",
        }
    }

    /// Whether the record is there for a reader whose idle timeout is `judged_by` (`None`: a
    /// manager without one, which loads plainly). Stores that expire records themselves are
    /// asked without side effects; a file store is asked as a manager would, so an idle file
    /// goes.
    pub fn alive(&self, session_id: &str, judged_by: Option<Duration>) -> bool {
        let found = match judged_by {
            Some(ttl) if !self.expires_by_itself() => {
                self.store.load_touching(session_id, ttl, usize::MAX)
            }
            _ => self.store.load(session_id, usize::MAX),
        };
        found.unwrap().is_some()
    }

    /// Returns once every one of `session_ids`, last written with `ttl` at `written_at` or
    /// before, has outlived it: for stores that expire records themselves, when a load no
    /// longer finds them (their clocks are their own); for a file store, once `ttl` has passed
    /// since `written_at` (a file's age is the clock).
    pub fn wait_out(&self, session_ids: &[&str], ttl: Duration, written_at: Instant) {
        if !self.expires_by_itself() {
            let margin = Duration::from_millis(50);
            let until = written_at + ttl + margin;
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            return;
        }
        let deadline = written_at + ttl + Duration::from_secs(5);
        for session_id in session_ids {
            while self.store.load(session_id, usize::MAX).unwrap().is_some() {
                assert!(
                    Instant::now() < deadline,
                    "{} kept a record written for {ttl:?}",
                    self.store.describe()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops the servers of a network store.
    pub fn stop_servers(&self) {
        match &self.servers {
            Servers::None => panic!("{} has no servers", self.store.describe()),
            Servers::Each(servers) => servers.lock().unwrap().iter_mut().for_each(Server::stop),
            Servers::Cluster(cluster) => cluster.lock().unwrap().stop(),
        }
    }
}

pub fn memory() -> Option<Subject> {
    let store = MemoryStore::new(
        NonZeroUsize::new(100_000).unwrap(),
        NonZeroUsize::new(1 << 30).unwrap(),
    );
    Some(Subject {
        store: Arc::new(store),
        kind: Kind::Memory,
        servers: Servers::None,
        _folder: None,
    })
}

pub fn sqlite() -> Option<Subject> {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("sessions.db");
    let store = SqliteStore::open(path, DEFAULT_BUSY_TIMEOUT, false).unwrap();
    Some(Subject {
        store: Arc::new(store),
        kind: Kind::Sqlite,
        servers: Servers::None,
        _folder: Some(folder),
    })
}

pub fn file() -> Option<Subject> {
    let folder = tempfile::tempdir().unwrap();
    let store = FileStore::open(folder.path(), false).unwrap();
    Some(Subject {
        store: Arc::new(store),
        kind: Kind::File,
        servers: Servers::None,
        _folder: Some(folder),
    })
}

/// The default timeouts (1 s): a dead loopback server refuses at once, and on a busy machine
/// shorter ones fail live servers.
fn redis_options(prefix: &str) -> RedisOptions {
    RedisOptions {
        prefix: prefix.to_owned(),
        ..RedisOptions::default()
    }
}

pub fn redis() -> Option<Subject> {
    let server = support::redis()?;
    let store = RedisStore::new(&server.redis_url(), redis_options("tornsession:")).unwrap();
    Some(Subject {
        store: Arc::new(store),
        kind: Kind::Redis,
        servers: Servers::Each(Arc::new(Mutex::new(vec![server]))),
        _folder: None,
    })
}

pub fn memcached() -> Option<Subject> {
    let server = support::memcached()?;
    let store = MemcachedStore::new(&[server.address()], MemcachedOptions::default()).unwrap();
    Some(Subject {
        store: Arc::new(store),
        kind: Kind::Memcached,
        servers: Servers::Each(Arc::new(Mutex::new(vec![server]))),
        _folder: None,
    })
}

/// A store over `cluster` whose keys start with `prefix`, so cases sharing the cluster never
/// meet each other's records.
pub fn redis_cluster(cluster: &Arc<Mutex<RedisCluster>>, prefix: &str) -> Subject {
    let urls = cluster.lock().unwrap().urls();
    let store = RedisClusterStore::new(&urls, redis_options(prefix)).unwrap();
    Subject {
        store: Arc::new(store),
        kind: Kind::RedisCluster,
        servers: Servers::Cluster(cluster.clone()),
        _folder: None,
    }
}
