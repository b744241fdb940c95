//! Sessions in one SQLite database file, shared safely by several processes of one machine:
//! WAL journal (readers never wait for the writer), `synchronous=NORMAL` (a crashed process loses
//! nothing committed; `durable` makes it FULL, so a power cut loses nothing either), and a busy
//! timeout so writers queue instead of failing at once.

use crate::stores::{LoadResult, StoreResult};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};

use super::{ListedRecord, Listing, SessionStore, StoreError, TimeLeft, UserIndex};
use crate::ids;
use crate::time::now_f64;

/// How long a write waits for another process's write to finish before failing, by default.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Expired rows are swept on every `SWEEP_EVERY`th save of a process.
const SWEEP_EVERY: u64 = 100;
/// At most this many expired rows go per sweep, so no save pays for a large backlog at once.
const SWEEP_LIMIT: u32 = 500;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS tornsession_sessions (
        id TEXT PRIMARY KEY NOT NULL,
        blob BLOB NOT NULL,
        expires_at REAL,
        user_key TEXT
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS tornsession_sessions_expires_at
        ON tornsession_sessions (expires_at) WHERE expires_at IS NOT NULL;
";

/// The per-user index: the owner's key in the session's own row, so it leaves with the row
/// (deleted, expired and swept) and never needs pruning of its own. Created after the column
/// is known to exist, since tables made before it lack it.
const USER_INDEX: &str = "
    CREATE INDEX IF NOT EXISTS tornsession_sessions_user_key
        ON tornsession_sessions (user_key) WHERE user_key IS NOT NULL;
";

/// The table the sessions live in: `id`, `blob`, `expires_at` (Unix seconds, NULL = never).
pub const TABLE: &str = "tornsession_sessions";

/// Sessions as rows of one table in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    connection: Mutex<Connection>,
    saves: AtomicU64,
    durable: bool,
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path` and its table.
    /// `durable`: `synchronous=FULL`, every commit on disk before it returns.
    pub fn open(
        path: impl Into<PathBuf>, busy_timeout: Duration, durable: bool,
    ) -> StoreResult<Self> {
        let path = path.into();
        let describe = || format!("SqliteStore({:?})", path.display().to_string());
        let fail = |what: &str, e: rusqlite::Error| StoreError {
            store: describe(),
            cause: format!("{what}: {e}"),
            kind: super::StoreErrorKind::Unavailable,
        };
        let connection = Connection::open(&path).map_err(|e| fail("cannot open", e))?;
        connection
            .busy_timeout(busy_timeout)
            .map_err(|e| fail("cannot set the busy timeout", e))?;
        // journal_mode answers with the mode in force: anything but "wal" (an in-memory database,
        // a filesystem without shared memory) is not what several processes need.
        let mode: String = connection
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(|e| fail("cannot switch to WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError {
                store: describe(),
                cause: format!("WAL journal unavailable (journal_mode is {mode})"),
                kind: super::StoreErrorKind::Unavailable,
            });
        }
        let synchronous = if durable { "FULL" } else { "NORMAL" };
        connection
            .execute_batch(&format!("PRAGMA synchronous={synchronous};"))
            .map_err(|e| fail(&format!("cannot set synchronous={synchronous}"), e))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|e| fail("cannot create the table", e))?;
        let has_user_key: bool = connection
            .query_row(
                "SELECT count(*) FROM pragma_table_info('tornsession_sessions')
                 WHERE name = 'user_key'",
                [],
                |row| row.get::<_, i64>(0).map(|n| n > 0),
            )
            .map_err(|e| fail("cannot inspect the table", e))?;
        if !has_user_key {
            // Another process may add it first: a duplicate column is that, not a failure.
            match connection
                .execute_batch("ALTER TABLE tornsession_sessions ADD COLUMN user_key TEXT")
            {
                Err(e) if !e.to_string().contains("duplicate column") => {
                    return Err(fail("cannot add the user_key column", e))
                }
                _ => {}
            }
        }
        connection
            .execute_batch(USER_INDEX)
            .map_err(|e| fail("cannot create the user index", e))?;
        Ok(Self {
            path,
            connection: Mutex::new(connection),
            saves: AtomicU64::new(0),
            durable,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn durable(&self) -> bool {
        self.durable
    }

    /// The `synchronous` setting in force: 1 NORMAL, 2 FULL.
    pub fn synchronous(&self) -> StoreResult<i64> {
        self.connection
            .lock()
            .query_row("PRAGMA synchronous", [], |row| row.get(0))
            .map_err(|e| StoreError::new(self, format!("cannot read synchronous: {e}")))
    }

    /// An error of `what` on the record of `session_id`, worded without the id.
    fn fail(&self, what: &str, session_id: &str, e: rusqlite::Error) -> StoreError {
        StoreError::new(
            self,
            format!("cannot {what} session {}: {e}", ids::log_token(session_id)),
        )
    }

    /// A row read as `(length(blob), blob if within max_bytes)`, so an oversized record is
    /// measured by SQLite and never copied out.
    fn within_limit(
        &self, session_id: &str, row: Option<(i64, Option<Vec<u8>>)>, max_bytes: usize,
    ) -> LoadResult {
        match row {
            None => Ok(None),
            Some((_, Some(blob))) => Ok(Some(blob)),
            Some((size, None)) => Err(StoreError::oversized(
                self,
                session_id,
                u64::try_from(size).unwrap_or(0),
                max_bytes,
            )),
        }
    }

    /// Deletes up to `SWEEP_LIMIT` expired rows; returns how many went.
    pub fn sweep(&self) -> StoreResult<usize> {
        let connection = self.connection.lock();
        self.sweep_with(&connection)
    }

    fn sweep_with(&self, connection: &Connection) -> StoreResult<usize> {
        connection
            .prepare_cached(
                "DELETE FROM tornsession_sessions WHERE id IN (
                     SELECT id FROM tornsession_sessions
                     WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)",
            )
            .and_then(|mut statement| statement.execute(params![now_f64(), SWEEP_LIMIT]))
            .map_err(|e| StoreError::new(self, format!("cannot sweep expired sessions: {e}")))
    }
}

/// A byte limit as SQLite's 64-bit integer.
fn sql_limit(max_bytes: usize) -> i64 {
    i64::try_from(max_bytes).unwrap_or(i64::MAX)
}

impl SessionStore for SqliteStore {
    fn load(&self, session_id: &str, max_bytes: usize) -> LoadResult {
        let connection = self.connection.lock();
        let row = connection
            .prepare_cached(
                "SELECT length(blob), CASE WHEN length(blob) <= ?3 THEN blob END
                 FROM tornsession_sessions
                 WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(
                        params![session_id, now_f64(), sql_limit(max_bytes)],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
            })
            .map_err(|e| self.fail("load", session_id, e))?;
        drop(connection);
        self.within_limit(session_id, row, max_bytes)
    }

    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        let expires_at = ttl.map(|ttl| now_f64() + ttl.as_secs_f64());
        let connection = self.connection.lock();
        connection
            .prepare_cached(
                "INSERT INTO tornsession_sessions (id, blob, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET blob = excluded.blob,
                                                expires_at = excluded.expires_at",
            )
            .and_then(|mut statement| statement.execute(params![session_id, blob, expires_at]))
            .map_err(|e| self.fail("save", session_id, e))?;
        if self.saves.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            // The save itself succeeded; a sweep that fails (a busy database) is tried again later.
            let _ = self.sweep_with(&connection);
        }
        Ok(())
    }

    fn save_if_unchanged(
        &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        let mut connection = self.connection.lock();
        let fail = |e: rusqlite::Error| self.fail("save", session_id, e);
        // IMMEDIATE: the write lock is taken before the read, so no other process can slip in.
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        let now = now_f64();
        let current: Option<Vec<u8>> = transaction
            .query_row(
                "SELECT blob FROM tornsession_sessions
                 WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![session_id, now],
                |row| row.get(0),
            )
            .optional()
            .map_err(fail)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        transaction
            .execute(
                "INSERT INTO tornsession_sessions (id, blob, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET blob = excluded.blob,
                                                expires_at = excluded.expires_at",
                params![session_id, blob, ttl.map(|ttl| now + ttl.as_secs_f64())],
            )
            .map_err(fail)?;
        transaction.commit().map_err(fail)?;
        Ok(true)
    }

    fn touch(&self, session_id: &str, ttl: Duration) -> StoreResult<()> {
        let connection = self.connection.lock();
        connection
            .prepare_cached(
                "UPDATE tornsession_sessions SET expires_at = ?2
                 WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?3)",
            )
            .and_then(|mut statement| {
                let now = now_f64();
                statement.execute(params![session_id, now + ttl.as_secs_f64(), now])
            })
            .map(drop)
            .map_err(|e| self.fail("touch", session_id, e))
    }

    fn save_if_exists(
        &self, session_id: &str, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        // One UPDATE: it changes a row only where one lives, atomically against any process.
        let now = now_f64();
        let changed = self
            .connection
            .lock()
            .prepare_cached(
                "UPDATE tornsession_sessions SET blob = ?2, expires_at = ?3
                 WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?4)",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    session_id,
                    blob,
                    ttl.map(|ttl| now + ttl.as_secs_f64()),
                    now
                ])
            })
            .map_err(|e| self.fail("save", session_id, e))?;
        Ok(changed == 1)
    }

    fn load_touching(&self, session_id: &str, ttl: Duration, max_bytes: usize) -> LoadResult {
        // One statement reads and extends, so a concurrent sweep never sees it half done.
        let connection = self.connection.lock();
        let row = connection
            .prepare_cached(
                "UPDATE tornsession_sessions SET expires_at = ?2
                 WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?3)
                 RETURNING length(blob), CASE WHEN length(blob) <= ?4 THEN blob END",
            )
            .and_then(|mut statement| {
                let now = now_f64();
                statement
                    .query_row(
                        params![
                            session_id,
                            now + ttl.as_secs_f64(),
                            now,
                            sql_limit(max_bytes)
                        ],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .optional()
            })
            .map_err(|e| self.fail("load", session_id, e))?;
        drop(connection);
        self.within_limit(session_id, row, max_bytes)
    }

    fn delete(&self, session_id: &str) -> StoreResult<bool> {
        let connection = self.connection.lock();
        // An expired row counts as gone, as it does for loads.
        connection
            .prepare_cached(
                "DELETE FROM tornsession_sessions WHERE id = ?1 \
                 RETURNING expires_at IS NULL OR expires_at > ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![session_id, now_f64()], |row| row.get::<_, bool>(0))
                    .optional()
            })
            .map(|live| live.unwrap_or(false))
            .map_err(|e| self.fail("delete", session_id, e))
    }

    fn loads_inline(&self) -> bool {
        true
    }

    /// A WAL commit without fsync is a local write too; with `durable`, each waits on the disk.
    fn saves_inline(&self) -> bool {
        !self.durable
    }

    fn describe(&self) -> String {
        let path = self.path.display().to_string();
        if self.durable {
            format!("SqliteStore({path:?}, durable=True)")
        } else {
            format!("SqliteStore({path:?})")
        }
    }

    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }

    fn listing(&self) -> Option<&dyn Listing> {
        Some(self)
    }
}

impl Listing for SqliteStore {
    fn delete_if_unchanged(&self, session_id: &str, expected: &[u8]) -> StoreResult<bool> {
        self.connection
            .lock()
            .prepare_cached(
                "DELETE FROM tornsession_sessions
                 WHERE id = ?1 AND blob = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
            )
            .and_then(|mut statement| statement.execute(params![session_id, expected, now_f64()]))
            .map(|deleted| deleted > 0)
            .map_err(|e| self.fail("delete", session_id, e))
    }

    fn session_ids(&self) -> StoreResult<Vec<String>> {
        self.connection
            .lock()
            .prepare_cached(
                "SELECT id FROM tornsession_sessions WHERE expires_at IS NULL OR expires_at > ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![now_f64()], |row| row.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map(|found| {
                found
                    .into_iter()
                    .filter(|id| ids::is_valid_session_id(id))
                    .collect()
            })
            .map_err(|e| StoreError::new(self, format!("cannot list the sessions: {e}")))
    }

    fn load_listed(&self, session_id: &str, max_bytes: usize) -> StoreResult<Option<ListedRecord>> {
        let now = now_f64();
        let row: Option<(i64, Option<Vec<u8>>, Option<f64>)> = self
            .connection
            .lock()
            .prepare_cached(
                "SELECT length(blob), CASE WHEN length(blob) <= ?3 THEN blob END, expires_at
                 FROM tornsession_sessions
                 WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(params![session_id, now, sql_limit(max_bytes)], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
            })
            .map_err(|e| self.fail("load", session_id, e))?;
        let Some((size, blob, expires_at)) = row else {
            return Ok(None);
        };
        let Some(blob) = self.within_limit(session_id, Some((size, blob)), max_bytes)? else {
            return Ok(None);
        };
        let time_left = match expires_at {
            None => TimeLeft::Unlimited,
            Some(at) => TimeLeft::Within(Duration::from_secs_f64((at - now).max(0.0))),
        };
        Ok(Some(ListedRecord { blob, time_left }))
    }
}

impl UserIndex for SqliteStore {
    fn index_user(
        &self, user_key: &str, session_id: &str, _ttl: Option<Duration>,
    ) -> StoreResult<()> {
        self.connection
            .lock()
            .prepare_cached("UPDATE tornsession_sessions SET user_key = ?2 WHERE id = ?1")
            .and_then(|mut statement| statement.execute(params![session_id, user_key]))
            .map(drop)
            .map_err(|e| self.fail("index", session_id, e))
    }

    fn unindex_user(&self, user_key: &str, session_id: &str) -> StoreResult<()> {
        self.connection
            .lock()
            .prepare_cached(
                "UPDATE tornsession_sessions SET user_key = NULL WHERE id = ?1 AND user_key = ?2",
            )
            .and_then(|mut statement| statement.execute(params![session_id, user_key]))
            .map(drop)
            .map_err(|e| self.fail("unindex", session_id, e))
    }

    fn user_session_ids(&self, user_key: &str) -> StoreResult<Vec<String>> {
        self.connection
            .lock()
            .prepare_cached(
                "SELECT id FROM tornsession_sessions
                 WHERE user_key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
            )
            .and_then(|mut statement| {
                statement
                    .query_map(params![user_key, now_f64()], |row| row.get(0))?
                    .collect()
            })
            .map_err(|e| StoreError::new(self, format!("cannot list a user's sessions: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0000000000000000000000000000000a";
    const B: &str = "0000000000000000000000000000000b";
    const MAX: usize = crate::stores::DEFAULT_MAX_READ_SIZE;

    #[test]
    fn durable_means_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("d.db"), DEFAULT_BUSY_TIMEOUT, true).unwrap();
        assert!(s.durable());
        assert_eq!(s.synchronous().unwrap(), 2, "FULL");
        assert!(
            s.describe().ends_with(", durable=True)"),
            "{}",
            s.describe()
        );
        assert_eq!(open(&dir).synchronous().unwrap(), 1, "NORMAL by default");
    }

    #[test]
    fn a_locked_database_fails_without_naming_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        let s = SqliteStore::open(&path, Duration::from_millis(50), false).unwrap();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        for e in [
            s.save(A, b"x", None).unwrap_err(),
            s.save_if_exists(A, b"x", None).unwrap_err(),
            s.save_if_unchanged(A, None, b"x", None).unwrap_err(),
            s.delete(A).unwrap_err(),
        ] {
            let message = e.to_string();
            assert!(message.contains("locked"), "{message}");
            assert!(!message.contains(A), "{message}");
            assert!(message.contains(&ids::log_token(A)), "{message}");
        }
    }

    fn open(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::open(dir.path().join("sessions.db"), DEFAULT_BUSY_TIMEOUT, false).unwrap()
    }

    fn expires_at(store: &SqliteStore, id: &str) -> Option<f64> {
        store
            .connection
            .lock()
            .query_row(
                "SELECT expires_at FROM tornsession_sessions WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap()
    }

    fn rows(store: &SqliteStore) -> i64 {
        store
            .connection
            .lock()
            .query_row("SELECT count(*) FROM tornsession_sessions", [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    #[test]
    fn the_user_index_is_a_column_of_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir);
        let user = "ffffffffffffffffffffffffffffffff";
        store.save(A, b"a", None).unwrap();
        store.save(B, b"b", Some(Duration::from_millis(1))).unwrap();
        store.index_user(user, A, None).unwrap();
        store.index_user(user, B, None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        // Expired rows are not listed; a rewrite keeps the owner; unindex and delete drop it.
        assert_eq!(store.user_session_ids(user).unwrap(), [A]);
        store.save(A, b"a2", None).unwrap();
        assert_eq!(store.user_session_ids(user).unwrap(), [A]);
        store.unindex_user(user, A).unwrap();
        assert!(store.user_session_ids(user).unwrap().is_empty());
        store.index_user(user, A, None).unwrap();
        store.delete(A).unwrap();
        assert!(store.user_session_ids(user).unwrap().is_empty());
    }

    #[test]
    fn a_table_from_before_the_user_index_gains_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite3");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE tornsession_sessions (id TEXT PRIMARY KEY NOT NULL, blob BLOB NOT NULL,
             expires_at REAL) WITHOUT ROWID;
             INSERT INTO tornsession_sessions VALUES ('0000000000000000000000000000000a', x'01', NULL);",
        )
        .unwrap();
        drop(old);
        let store = SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT, false).unwrap();
        assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&[1u8][..]));
        store
            .index_user("ffffffffffffffffffffffffffffffff", A, None)
            .unwrap();
        assert_eq!(
            store
                .user_session_ids("ffffffffffffffffffffffffffffffff")
                .unwrap(),
            [A]
        );
        // A second opener finds the column there.
        SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT, false).unwrap();
    }

    #[test]
    fn uses_wal_and_normal_sync() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        let c = s.connection.lock();
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 1, "NORMAL");
    }

    #[test]
    fn ttl_sets_expires_at_and_none_means_never() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        let before = now_f64();
        s.save(A, b"a", Some(Duration::from_secs(60))).unwrap();
        s.save(B, b"b", None).unwrap();
        let at = expires_at(&s, A).unwrap();
        assert!(at >= before + 60.0 && at <= now_f64() + 60.0, "{at}");
        assert_eq!(expires_at(&s, B), None);
        // A later save without ttl clears it.
        s.save(A, b"a", None).unwrap();
        assert_eq!(expires_at(&s, A), None);
    }

    #[test]
    fn expired_rows_are_not_loaded_and_get_swept() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        s.save(A, b"a", Some(Duration::from_millis(1))).unwrap();
        s.save(B, b"b", None).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(s.load(A, MAX).unwrap(), None);
        assert_eq!(rows(&s), 2, "the expired row is still there until a sweep");
        assert_eq!(s.sweep().unwrap(), 1);
        assert_eq!(rows(&s), 1);
        assert!(s.load(B, MAX).unwrap().is_some());
    }

    #[test]
    fn every_hundredth_save_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir);
        s.save(A, b"a", Some(Duration::from_millis(1))).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..(SWEEP_EVERY - 2) {
            s.save(&format!("{:032x}", 1000 + i), b"x", None).unwrap();
        }
        assert!(expires_at(&s, A).is_some(), "not swept yet");
        s.save(B, b"b", None).unwrap();
        let gone: Option<f64> = s
            .connection
            .lock()
            .query_row(
                "SELECT expires_at FROM tornsession_sessions WHERE id = ?1",
                [A],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
            .flatten();
        assert_eq!(gone, None);
        assert_eq!(rows(&s), SWEEP_EVERY as i64 - 1);
    }

    #[test]
    fn two_handles_on_one_file_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let one = open(&dir);
        let two = open(&dir);
        one.save(A, b"from one", None).unwrap();
        assert_eq!(two.load(A, MAX).unwrap().as_deref(), Some(&b"from one"[..]));
        let handles: Vec<_> = [one, two]
            .into_iter()
            .enumerate()
            .map(|(t, s)| {
                std::thread::spawn(move || {
                    for i in 0..200u32 {
                        let id = format!("{:016x}{i:016x}", t + 1);
                        s.save(&id, id.as_bytes(), None).unwrap();
                    }
                    s
                })
            })
            .collect();
        let stores: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(rows(&stores[0]), 401);
    }

    #[test]
    fn an_unopenable_path_is_an_unavailable_error_naming_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder").join("sessions.db");
        let e = SqliteStore::open(&path, DEFAULT_BUSY_TIMEOUT, false)
            .err()
            .unwrap();
        assert_eq!(e.kind, crate::stores::StoreErrorKind::Unavailable);
        assert!(e.to_string().starts_with("SqliteStore("), "{e}");
    }
}
