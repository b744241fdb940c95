//! One file per session, `SESSION<id>` in one folder (the original module's naming), written
//! atomically: a temporary file in the same folder, then a rename over the old one.

use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::{renameat_with, OFlags, RenameFlags, CWD};
use rustix::io::Errno;

use super::{SessionStore, StoreError, StoreErrorKind};
use crate::ids;

/// The prefix of every session file's name, as in the original module.
pub const FILE_PREFIX: &str = "SESSION";
/// The lock file that serializes conditional saves in the folder.
const LOCK_FILE: &str = ".tornsession.lock";
/// Prefix of a user's index file: `USERS<user key>`, a line per session: its id and, when it
/// expires, its idle timeout in seconds (so entries of idle sessions go without a cleanup).
pub const USER_PREFIX: &str = "USERS";
/// The largest index file read (about 1.5 million sessions of one user); a larger one is an
/// error, never read in part.
const MAX_INDEX_BYTES: usize = 64 << 20;
/// The prefix of temporary files, which are renamed over session files when complete.
const TEMP_PREFIX: &str = ".tmp-";
/// Temporary files older than this were left by a crash mid-save; cleanup removes them.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// What [`FileStore::cleanup`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanupReport {
    /// Session files idle for longer than the timeout.
    pub expired: usize,
    /// Temporary files a crash left behind.
    pub stale_temporary: usize,
}

/// Whether a file last modified at `modified` has been idle for longer than `ttl`.
fn idle_longer_than(modified: SystemTime, ttl: Duration) -> bool {
    SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|idle| idle > ttl)
}

/// Sessions as files in one folder; safe for several processes of one machine.
pub struct FileStore {
    folder: PathBuf,
    /// Whether writes are flushed to disk (file, then folder) before they count as done.
    durable: bool,
    /// The idle timeout managers last used with this store, in milliseconds (0: none yet), so
    /// `cleanup` knows what "expired" means without being told again.
    last_ttl_ms: AtomicU64,
}

impl FileStore {
    /// Opens `folder`, creating it (mode 0700: sessions are nobody else's business) when missing.
    /// `durable`: every save and delete is on disk (fsync of the file, then of the folder)
    /// before it returns, at a few milliseconds each; otherwise a power cut may lose the last
    /// seconds of writes (a crashed process loses nothing either way).
    pub fn open(folder: impl Into<PathBuf>, durable: bool) -> Result<Self, StoreError> {
        let store = Self {
            folder: folder.into(),
            durable,
            last_ttl_ms: AtomicU64::new(0),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&store.folder)
            .map_err(|e| StoreError::new(&store, format!("cannot create the folder: {e}")))?;
        if !store.folder.is_dir() {
            return Err(StoreError::new(&store, "not a folder"));
        }
        Ok(store)
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn durable(&self) -> bool {
        self.durable
    }

    /// The idle timeout managers last used with this store, if any.
    pub fn last_ttl(&self) -> Option<Duration> {
        match self.last_ttl_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    fn remember_ttl(&self, ttl: Option<Duration>) {
        if let Some(ttl) = ttl {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            self.last_ttl_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// The file that holds `session_id`.
    pub fn path_of(&self, session_id: &str) -> PathBuf {
        self.folder.join(format!("{FILE_PREFIX}{session_id}"))
    }

    /// Deletes session files unused for longer than `idle_timeout` (a file's modification time
    /// is its last use: saves write it, loads touch it) and temporary files a crash left behind.
    pub fn cleanup(&self, idle_timeout: Duration) -> Result<CleanupReport, StoreError> {
        self.cleanup_with(idle_timeout, &|_| None)
    }

    /// `cleanup`, keeping a session idle for longer than `idle_timeout` while it is within its
    /// own (`ttl_of(record)`: a "remember me" session); then drops index entries of sessions
    /// that are gone, and index files left empty.
    pub fn cleanup_with(
        &self,
        idle_timeout: Duration,
        ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
    ) -> Result<CleanupReport, StoreError> {
        let report = self.cleanup_records(idle_timeout, ttl_of)?;
        self.prune_indexes()?;
        Ok(report)
    }

    fn cleanup_records(
        &self,
        idle_timeout: Duration,
        ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
    ) -> Result<CleanupReport, StoreError> {
        let mut report = CleanupReport::default();
        let entries = fs::read_dir(&self.folder)
            .map_err(|e| StoreError::new(self, format!("cannot list the folder: {e}")))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| StoreError::new(self, format!("cannot list the folder: {e}")))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let (limit, counter) = if name.starts_with(FILE_PREFIX) {
                (idle_timeout, &mut report.expired)
            } else if name.starts_with(TEMP_PREFIX) {
                (STALE_TEMP_AGE, &mut report.stale_temporary)
            } else {
                continue;
            };
            // lstat: a symlink is judged (and removed) itself, never its target.
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::new(self, format!("cannot inspect a file: {e}"))),
            };
            // A folder is nothing we wrote; unlink could not remove it anyway.
            if metadata.is_dir()
                || !metadata
                    .modified()
                    .is_ok_and(|m| idle_longer_than(m, limit))
            {
                continue;
            }
            if name.starts_with(FILE_PREFIX) && self.within_own_ttl(&name, &metadata, ttl_of) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => *counter += 1,
                // Removed meanwhile (by another cleanup, or a logout): simply not counted.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::new(self, format!("cannot delete a file: {e}"))),
            }
        }
        Ok(report)
    }

    /// Whether the session file `name` asks for a longer idle timeout of its own and is
    /// within it.
    fn within_own_ttl(
        &self,
        name: &str,
        metadata: &fs::Metadata,
        ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
    ) -> bool {
        let id = &name[FILE_PREFIX.len()..];
        if !ids::is_valid_session_id(id) {
            return false;
        }
        let own = match self.open_record(id) {
            Ok(Some((file, size))) => self
                .read_record(id, file, size, crate::stores::DEFAULT_MAX_READ_SIZE)
                .ok()
                .and_then(|blob| ttl_of(&blob)),
            _ => None,
        };
        match (own, metadata.modified()) {
            (Some(own), Ok(modified)) => !idle_longer_than(modified, own),
            _ => false,
        }
    }

    fn index_path(&self, user_key: &str) -> PathBuf {
        self.folder.join(format!("{USER_PREFIX}{user_key}"))
    }

    /// The entries of an index file (none when it is missing); with the folder lock held.
    fn read_index(&self, user_key: &str) -> Result<Vec<(String, Option<u64>)>, StoreError> {
        let path = self.index_path(user_key);
        let file = match fs::File::options()
            .read(true)
            .custom_flags(NO_FOLLOW_NO_WAIT)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StoreError::new(
                    self,
                    format!("cannot open a user index: {e}"),
                ))
            }
        };
        let mut text = String::new();
        file.take(MAX_INDEX_BYTES as u64 + 1)
            .read_to_string(&mut text)
            .map_err(|e| StoreError::new(self, format!("cannot read a user index: {e}")))?;
        // Never cut it short: an index read in part and written back would forget sessions,
        // which "log out everywhere" would then miss.
        if text.len() > MAX_INDEX_BYTES {
            return Err(StoreError::new(
                self,
                format!("a user index is over {MAX_INDEX_BYTES} bytes; refusing to truncate it"),
            ));
        }
        // Anything that is not an id (a planted or torn line) is simply not a member.
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let id = parts.next().filter(|id| ids::is_valid_session_id(id))?;
                let ttl = parts.next().and_then(|ttl| ttl.parse().ok());
                Some((id.to_owned(), ttl))
            })
            .collect())
    }

    /// Whether an index entry still names a live record: the file exists and has not been
    /// idle for longer than the entry's idle timeout.
    fn entry_lives(&self, id: &str, ttl: Option<u64>) -> bool {
        match fs::symlink_metadata(self.path_of(id)) {
            Ok(metadata) => match (ttl, metadata.modified()) {
                (Some(ttl), Ok(modified)) => !idle_longer_than(modified, Duration::from_secs(ttl)),
                _ => true,
            },
            Err(_) => false,
        }
    }

    /// Replaces an index file atomically (removes it when empty); with the folder lock held.
    fn write_index(
        &self,
        user_key: &str,
        members: &[(String, Option<u64>)],
    ) -> Result<(), StoreError> {
        let fail = |e: io::Error| StoreError::new(self, format!("cannot write a user index: {e}"));
        let path = self.index_path(user_key);
        if members.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => self.sync_folder().map_err(fail),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(fail(e)),
            };
        }
        let mut temporary = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.folder)
            .map_err(fail)?;
        let text: String = members
            .iter()
            .map(|(id, ttl)| match ttl {
                Some(ttl) => format!("{id} {ttl}\n"),
                None => format!("{id}\n"),
            })
            .collect();
        temporary.write_all(text.as_bytes()).map_err(fail)?;
        if self.durable {
            temporary.as_file().sync_all().map_err(fail)?;
        }
        temporary.persist(&path).map_err(|e| fail(e.error))?;
        self.sync_folder().map_err(fail)
    }

    /// Changes a user's index under the folder lock, keeping only members whose record
    /// still exists.
    fn update_index(
        &self,
        user_key: &str,
        change: impl FnOnce(&mut Vec<(String, Option<u64>)>),
    ) -> Result<Vec<String>, StoreError> {
        let lock = self.lock_folder()?;
        let before = self.read_index(user_key)?;
        let mut members = before.clone();
        change(&mut members);
        members.retain(|(id, ttl)| self.entry_lives(id, *ttl));
        if members != before {
            self.write_index(user_key, &members)?;
        }
        drop(lock);
        Ok(members.into_iter().map(|(id, _)| id).collect())
    }

    /// Drops index entries whose session file is gone, and empty index files.
    fn prune_indexes(&self) -> Result<(), StoreError> {
        let entries = fs::read_dir(&self.folder)
            .map_err(|e| StoreError::new(self, format!("cannot list the folder: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(user_key) = name.strip_prefix(USER_PREFIX) {
                if ids::is_valid_session_id(user_key) {
                    self.update_index(user_key, |_| {})?;
                }
            }
        }
        Ok(())
    }

    /// Makes renames and unlinks in the folder survive a power cut (durable stores only).
    fn sync_folder(&self) -> io::Result<()> {
        if self.durable {
            fs::File::open(&self.folder)?.sync_all()?;
        }
        Ok(())
    }

    /// An I/O error on the record of `session_id`, worded without the id. Only a record of the
    /// wrong shape (a symlink, a socket, a folder: planted, not written by us) loses that one
    /// session; anything else (EMFILE, EIO, EACCES, ENOSPC ...) may be passing or hit every
    /// session, so the request fails rather than carry on with an empty session that would later
    /// overwrite the real one.
    fn io_error(&self, session_id: &str, what: &str, e: io::Error) -> StoreError {
        let cause = format!(
            "cannot {what} the record of session {}: {e}",
            ids::log_token(session_id)
        );
        let hostile = Errno::from_io_error(&e)
            .is_some_and(|errno| [Errno::LOOP, Errno::NXIO, Errno::ISDIR].contains(&errno));
        if hostile {
            StoreError::unreadable_record(self, cause)
        } else {
            StoreError::new(self, cause)
        }
    }

    /// Opens the record of `session_id` for reading, with its metadata; `None` when there is
    /// none. Never follows a symlink (one to /dev/zero or another user's file) and never waits
    /// on a FIFO; anything but a regular file is an unreadable record.
    fn open_record(&self, session_id: &str) -> Result<Option<(fs::File, u64)>, StoreError> {
        let file = match fs::File::options()
            .read(true)
            .custom_flags(NO_FOLLOW_NO_WAIT)
            .open(self.path_of(session_id))
        {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error(session_id, "open", e)),
        };
        let metadata = file
            .metadata()
            .map_err(|e| self.io_error(session_id, "inspect", e))?;
        if !metadata.file_type().is_file() {
            return Err(StoreError::unreadable_record(
                self,
                format!(
                    "the record of session {} is not a regular file",
                    ids::log_token(session_id)
                ),
            ));
        }
        Ok(Some((file, metadata.len())))
    }

    /// Reads an open record of `size` bytes (as fstat said), refusing more than `max_bytes`
    /// before reading and while reading (a file grown meanwhile).
    fn read_record(
        &self,
        session_id: &str,
        file: fs::File,
        size: u64,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX);
        if size > limit {
            return Err(StoreError::oversized(self, session_id, size, max_bytes));
        }
        let mut blob = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(limit.saturating_add(1))
            .read_to_end(&mut blob)
            .map_err(|e| self.io_error(session_id, "read", e))?;
        if blob.len() > max_bytes {
            return Err(StoreError::oversized(
                self,
                session_id,
                blob.len() as u64,
                max_bytes,
            ));
        }
        Ok(blob)
    }

    /// Writes `blob` to a new temporary file in the folder (flushed to disk if durable), ready
    /// to be renamed into place.
    fn write_temporary(
        &self,
        session_id: &str,
        blob: &[u8],
    ) -> Result<tempfile::NamedTempFile, StoreError> {
        let fail = |e: io::Error| self.io_error(session_id, "write", e);
        // The temporary file lives in the same folder so the rename stays on one filesystem and
        // is atomic: readers see the old file or the new one, never a torn one.
        let mut temporary = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.folder)
            .map_err(fail)?;
        temporary.write_all(blob).map_err(fail)?;
        if self.durable {
            temporary.as_file().sync_all().map_err(fail)?;
        }
        Ok(temporary)
    }

    /// Takes the folder's lock file, which serializes conditional saves across processes.
    fn lock_folder(&self) -> Result<fs::File, StoreError> {
        fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(NO_FOLLOW_NO_WAIT)
            .open(self.folder.join(LOCK_FILE))
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| StoreError::new(self, format!("cannot lock {LOCK_FILE}: {e}")))
    }

    /// The fallback of `save_if_exists` where the filesystem cannot exchange two names: check,
    /// then rename, under the folder lock. The lock keeps other conditional saves out, but plain
    /// deletes do not take it, so a delete (of another process) landing between the check and
    /// the rename is undone: a window of one rename, on filesystems without RENAME_EXCHANGE.
    fn replace_if_exists_locked(
        &self,
        session_id: &str,
        temporary: tempfile::NamedTempFile,
    ) -> Result<bool, StoreError> {
        let lock = self.lock_folder()?;
        match fs::symlink_metadata(self.path_of(session_id)) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io_error(session_id, "inspect", e)),
        }
        temporary
            .persist(self.path_of(session_id))
            .map_err(|e| self.io_error(session_id, "write", e.error))?;
        drop(lock);
        Ok(true)
    }
}

/// `O_NOFOLLOW | O_NONBLOCK`: a symlink in a record's place fails to open (ELOOP) instead of
/// being followed, and a FIFO opens at once instead of waiting for a writer.
const NO_FOLLOW_NO_WAIT: i32 = (OFlags::NOFOLLOW.bits() | OFlags::NONBLOCK.bits()) as i32;

impl SessionStore for FileStore {
    fn load(&self, session_id: &str, max_bytes: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((file, size)) = self.open_record(session_id)? else {
            return Ok(None);
        };
        self.read_record(session_id, file, size, max_bytes)
            .map(Some)
    }

    fn load_touching(
        &self,
        session_id: &str,
        ttl: Duration,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.remember_ttl(Some(ttl));
        let Some((file, size)) = self.open_record(session_id)? else {
            return Ok(None);
        };
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| self.io_error(session_id, "inspect", e))?;
        if idle_longer_than(modified, ttl) {
            self.delete(session_id)?;
            return Ok(None);
        }
        // Touched before reading, with the file still open: an oversized record read later
        // fails the same way, and its expiry makes cleanup remove it in due course.
        // Best effort: a session that cannot be touched merely expires sooner.
        let _ = file.set_modified(SystemTime::now());
        self.read_record(session_id, file, size, max_bytes)
            .map(Some)
    }

    fn save_if_unchanged(
        &self,
        session_id: &str,
        expected: Option<&[u8]>,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        // One lock file for the folder: conditional saves (opt-in) are serialized across
        // processes; plain saves stay lock-free, atomic by rename.
        let lock = self.lock_folder()?;
        let unchanged = match (self.open_record(session_id)?, expected) {
            (None, None) => true,
            // Sizes first: a record of another size differs without being read.
            (Some((file, size)), Some(expected)) if size == expected.len() as u64 => {
                self.read_record(session_id, file, size, expected.len())? == expected
            }
            _ => false,
        };
        if unchanged {
            self.save(session_id, blob, ttl)?;
        }
        drop(lock);
        Ok(unchanged)
    }

    fn save_if_exists(
        &self,
        session_id: &str,
        blob: &[u8],
        _ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let path = self.path_of(session_id);
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_file() => {}
            Ok(_) => {
                return Err(StoreError::unreadable_record(
                    self,
                    format!(
                        "the record of session {} is not a regular file",
                        ids::log_token(session_id)
                    ),
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io_error(session_id, "inspect", e)),
        }
        let temporary = self.write_temporary(session_id, blob)?;
        // RENAME_EXCHANGE swaps the two names in one step and fails (ENOENT) when the record is
        // gone: atomic against deletes of any process, without a lock. The old record ends up
        // under the temporary name, which closing the temporary file removes.
        match renameat_with(CWD, temporary.path(), CWD, &path, RenameFlags::EXCHANGE) {
            Ok(()) => {
                let _ = temporary.close();
            }
            Err(Errno::NOENT) => return Ok(false),
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                if !self.replace_if_exists_locked(session_id, temporary)? {
                    return Ok(false);
                }
            }
            Err(e) => return Err(self.io_error(session_id, "replace", e.into())),
        }
        self.sync_folder()
            .map_err(|e| self.io_error(session_id, "sync", e))?;
        Ok(true)
    }

    fn touch(&self, session_id: &str, _ttl: Duration) -> Result<(), StoreError> {
        match self.open_record(session_id) {
            Ok(Some((file, _))) => {
                let _ = file.set_modified(SystemTime::now());
                Ok(())
            }
            Ok(None) => Ok(()),
            // Nothing to keep alive; the load reports such a record.
            Err(e) if e.kind == StoreErrorKind::UnreadableRecord => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn save(
        &self,
        session_id: &str,
        blob: &[u8],
        _ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let temporary = self.write_temporary(session_id, blob)?;
        temporary
            .persist(self.path_of(session_id))
            .map_err(|e| self.io_error(session_id, "write", e.error))?;
        self.sync_folder()
            .map_err(|e| self.io_error(session_id, "sync", e))
    }

    fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        // unlink never follows a symlink: a planted one is removed, not its target. (A file
        // idle past its ttl but not yet cleaned up counts as there: the store does not know
        // the ttl of a file it did not write in this process.)
        match fs::remove_file(self.path_of(session_id)) {
            Ok(()) => self
                .sync_folder()
                .map(|()| true)
                .map_err(|e| self.io_error(session_id, "sync", e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.io_error(session_id, "delete", e)),
        }
    }

    /// Reads are opened non-blocking and bounded, so a planted FIFO cannot stall the loop;
    /// writes (a temporary file, a rename, fsyncs with `durable`) keep their worker thread.
    fn loads_inline(&self) -> bool {
        true
    }

    fn load_refreshing(
        &self,
        session_id: &str,
        ttl: Option<Duration>,
        ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(ttl) = ttl else {
            return self.load(session_id, max_bytes);
        };
        self.remember_ttl(Some(ttl));
        let Some((file, size)) = self.open_record(session_id)? else {
            return Ok(None);
        };
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| self.io_error(session_id, "inspect", e))?;
        // Idleness is the file's age, so the record is read first when it may have a longer
        // idle timeout of its own; it is judged by its own.
        let blob = self.read_record(session_id, file, size, max_bytes)?;
        if idle_longer_than(modified, ttl_of(&blob).unwrap_or(ttl)) {
            self.delete(session_id)?;
            return Ok(None);
        }
        self.touch(session_id, ttl)?;
        Ok(Some(blob))
    }

    fn index_user(
        &self,
        user_key: &str,
        session_id: &str,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let ttl = ttl.map(crate::time::whole_seconds);
        self.update_index(user_key, |members| {
            members.retain(|(id, _)| id != session_id);
            members.push((session_id.to_owned(), ttl));
        })
        .map(drop)
    }

    fn unindex_user(&self, user_key: &str, session_id: &str) -> Result<(), StoreError> {
        self.update_index(user_key, |members| {
            members.retain(|(id, _)| id != session_id)
        })
        .map(drop)
    }

    fn user_session_ids(&self, user_key: &str) -> Result<Vec<String>, StoreError> {
        self.update_index(user_key, |_| {})
    }

    fn describe(&self) -> String {
        if self.durable {
            format!(
                "FileStore({:?}, durable=True)",
                self.folder.display().to_string()
            )
        } else {
            format!("FileStore({:?})", self.folder.display().to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_index_keeps_every_session_past_64_kib() {
        // 3,000 entries are about 100 KiB: an index read in part, then written back by the
        // next login, would forget the rest.
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path(), false).unwrap();
        let mut ids: Vec<String> = (0..3000).map(|n| format!("{n:032x}")).collect();
        let mut index = String::new();
        for id in &ids {
            fs::write(store.path_of(id), b"{}").unwrap();
            index.push_str(id);
            index.push('\n');
        }
        fs::write(store.index_path("user"), index).unwrap();
        let one_more = format!("{:032x}", 3000);
        store.save(&one_more, b"{}", None).unwrap();
        store.index_user("user", &one_more, None).unwrap();
        ids.push(one_more);
        let mut listed = store.user_session_ids("user").unwrap();
        listed.sort();
        assert_eq!(listed, ids);
    }
    use std::os::unix::fs::PermissionsExt;

    use crate::stores::StoreErrorKind;
    use std::os::unix::fs::symlink;
    use std::time::Instant;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const MAX: usize = crate::stores::DEFAULT_MAX_READ_SIZE;

    fn store() -> (tempfile::TempDir, FileStore) {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path(), false).unwrap();
        (root, store)
    }

    fn make_fifo(path: &Path) {
        rustix::fs::mknodat(
            CWD,
            path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn a_fifo_record_is_unreadable_and_never_blocks() {
        let (_root, store) = store();
        make_fifo(&store.path_of(A));
        let started = Instant::now();
        for e in [
            store.load(A, MAX).unwrap_err(),
            store
                .load_touching(A, Duration::from_secs(60), MAX)
                .unwrap_err(),
        ] {
            assert_eq!(e.kind, StoreErrorKind::UnreadableRecord, "{e}");
            assert!(!e.to_string().contains(A), "{e}");
        }
        store.touch(A, Duration::from_secs(60)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "blocked on the FIFO"
        );
        // It can be deleted like any record, and cleanup removes it when old.
        store.delete(A).unwrap();
        assert!(fs::symlink_metadata(store.path_of(A)).is_err());
    }

    #[test]
    fn a_symlink_record_is_never_followed() {
        let (root, store) = store();
        symlink("/dev/zero", store.path_of(A)).unwrap();
        let e = store.load(A, MAX).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::UnreadableRecord, "{e}");
        assert!(!e.to_string().contains(A), "{e}");
        // A symlink to a readable regular file is refused just the same.
        let outside = root.path().join("outside");
        fs::write(&outside, br#"{"v":1,"c":1,"d":{}}"#).unwrap();
        const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        symlink(&outside, store.path_of(B)).unwrap();
        let e = store.load(B, MAX).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::UnreadableRecord, "{e}");
        // Neither conditional save writes through it.
        assert!(store.save_if_exists(B, b"new", None).is_err());
        assert!(store
            .save_if_unchanged(B, Some(b"x"), b"new", None)
            .is_err());
        assert_eq!(fs::read(&outside).unwrap(), br#"{"v":1,"c":1,"d":{}}"#);
        // delete removes the link, never its target.
        store.delete(A).unwrap();
        store.delete(B).unwrap();
        assert!(outside.exists());
    }

    #[test]
    fn a_folder_as_record_is_unreadable() {
        let (_root, store) = store();
        fs::create_dir(store.path_of(A)).unwrap();
        let e = store.load(A, MAX).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::UnreadableRecord, "{e}");
        assert!(!e.to_string().contains(A), "{e}");
        let e = store.delete(A).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::UnreadableRecord, "{e}");
        store.touch(A, Duration::from_secs(60)).unwrap();
        // cleanup leaves folders alone rather than failing.
        store.cleanup(Duration::from_nanos(1)).unwrap();
    }

    #[test]
    fn an_inaccessible_record_is_a_store_failure_not_a_lost_session() {
        let (_root, store) = store();
        store.save(A, b"x", None).unwrap();
        fs::set_permissions(store.path_of(A), fs::Permissions::from_mode(0o000)).unwrap();
        if fs::read(store.path_of(A)).is_ok() {
            eprintln!("skipped: this user (root) reads files whatever their mode");
            return;
        }
        let e = store.load(A, MAX).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Unavailable, "{e}");
    }

    #[test]
    fn oversized_records_are_refused_by_their_size() {
        let (_root, store) = store();
        store.save(A, &[b'x'; 100], None).unwrap();
        assert_eq!(store.load(A, 100).unwrap().unwrap().len(), 100);
        for e in [
            store.load(A, 99).unwrap_err(),
            store
                .load_touching(A, Duration::from_secs(60), 99)
                .unwrap_err(),
        ] {
            assert_eq!(e.kind, StoreErrorKind::OversizedRecord, "{e}");
            assert!(!e.to_string().contains(A), "{e}");
        }
        // A sparse 1 TiB record: refused by fstat's size, never read.
        const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        let huge = fs::File::create(store.path_of(B)).unwrap();
        huge.set_len(1 << 40).unwrap();
        let e = store.load(B, MAX).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::OversizedRecord, "{e}");
        assert!(e.to_string().contains("1099511627776 bytes"), "{e}");
    }

    #[test]
    fn save_if_exists_replaces_only_an_existing_record() {
        let (root, store) = store();
        assert!(!store.save_if_exists(A, b"one", None).unwrap());
        assert_eq!(store.load(A, MAX).unwrap(), None, "nothing was written");
        store.save(A, b"one", None).unwrap();
        assert!(store.save_if_exists(A, b"two", None).unwrap());
        assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"two"[..]));
        store.delete(A).unwrap();
        assert!(!store.save_if_exists(A, b"three", None).unwrap());
        assert_eq!(store.load(A, MAX).unwrap(), None);
        // No temporary file is left behind either way.
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_locked_fallback_replaces_only_an_existing_record() {
        let (_root, store) = store();
        let temporary = store.write_temporary(A, b"one").unwrap();
        assert!(!store.replace_if_exists_locked(A, temporary).unwrap());
        assert_eq!(store.load(A, MAX).unwrap(), None);
        store.save(A, b"one", None).unwrap();
        let temporary = store.write_temporary(A, b"two").unwrap();
        assert!(store.replace_if_exists_locked(A, temporary).unwrap());
        assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"two"[..]));
    }

    #[test]
    fn durable_stores_work_the_same_and_say_so() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path(), true).unwrap();
        assert!(store.durable());
        assert!(
            store.describe().ends_with(", durable=True)"),
            "{}",
            store.describe()
        );
        store.save(A, b"one", None).unwrap();
        assert!(store.save_if_exists(A, b"two", None).unwrap());
        assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"two"[..]));
        store.delete(A).unwrap();
        assert_eq!(store.load(A, MAX).unwrap(), None);
        assert!(!FileStore::open(root.path(), false)
            .unwrap()
            .describe()
            .contains("durable"));
    }

    #[test]
    fn a_user_index_file_keeps_only_live_sessions() {
        const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        const U: &str = "ffffffffffffffffffffffffffffffff";
        let (dir, s) = store();
        s.save(A, b"a", None).unwrap();
        s.save(B, b"b", None).unwrap();
        s.index_user(U, A, None).unwrap();
        s.index_user(U, B, None).unwrap();
        s.index_user(U, B, None).unwrap();
        assert_eq!(s.user_session_ids(U).unwrap(), [A, B]);
        s.delete(A).unwrap();
        assert_eq!(s.user_session_ids(U).unwrap(), [B]);
        s.unindex_user(U, B).unwrap();
        assert!(s.user_session_ids(U).unwrap().is_empty());
        assert!(
            !dir.path().join(format!("{USER_PREFIX}{U}")).exists(),
            "an empty index goes"
        );
        // Cleanup drops entries of expired sessions and the index file with them.
        s.index_user(U, B, None).unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(s.path_of(B))
            .unwrap()
            .set_modified(old)
            .unwrap();
        s.cleanup(Duration::from_secs(3600)).unwrap();
        assert!(!dir.path().join(format!("{USER_PREFIX}{U}")).exists());
    }

    #[test]
    fn a_session_with_its_own_idle_timeout_is_judged_by_it() {
        let (_dir, s) = store();
        s.save(A, b"long", None).unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(s.path_of(A))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let own = |blob: &[u8]| (blob == b"long").then(|| Duration::from_secs(86_400));
        assert_eq!(
            s.cleanup_with(Duration::from_secs(3600), &own)
                .unwrap()
                .expired,
            0
        );
        let hour = Some(Duration::from_secs(3600));
        assert!(s.load_refreshing(A, hour, &own, MAX).unwrap().is_some());
        fs::File::options()
            .write(true)
            .open(s.path_of(A))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(s
            .load_refreshing(A, hour, &|_| None, MAX)
            .unwrap()
            .is_none());
    }

    #[test]
    fn creates_a_private_folder() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("a/b/sessions");
        let store = FileStore::open(&folder, false).unwrap();
        assert!(store.folder().is_dir());
        let mode = fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn save_load_delete_with_the_original_file_name() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path(), false).unwrap();
        assert_eq!(store.load(A, MAX).unwrap(), None);
        store.save(A, b"first", None).unwrap();
        store.save(A, b"second", None).unwrap();
        assert_eq!(
            fs::read(root.path().join(format!("SESSION{A}"))).unwrap(),
            b"second"
        );
        assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"second"[..]));
        assert!(store.delete(A).unwrap(), "the record was there");
        assert!(!store.delete(A).unwrap(), "and then it was not");
        assert_eq!(store.load(A, MAX).unwrap(), None);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn idle_files_expire_on_load_and_cleanup_unless_touched() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path(), false).unwrap();
        const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        store.save(A, b"a", None).unwrap();
        store.save(B, b"b", None).unwrap();
        let old = SystemTime::now() - Duration::from_secs(100);
        for id in [A, B] {
            fs::File::open(store.path_of(id))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // A 1000 s timeout: still alive, and the load touches it.
        let ttl = Duration::from_secs(1000);
        assert_eq!(
            store.load_touching(A, ttl, MAX).unwrap().as_deref(),
            Some(&b"a"[..])
        );
        let touched = fs::metadata(store.path_of(A)).unwrap().modified().unwrap();
        assert!(!idle_longer_than(touched, Duration::from_secs(5)));
        // A 50 s timeout: B has been idle 100 s, so it is gone.
        assert_eq!(
            store
                .load_touching(B, Duration::from_secs(50), MAX)
                .unwrap(),
            None
        );
        assert!(!store.path_of(B).exists());
        // Cleanup removes idle files and stale temporary files, nothing else.
        fs::File::open(store.path_of(A))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let temp = root.path().join(".tmp-crashed");
        fs::write(&temp, b"half").unwrap();
        fs::File::options()
            .write(true)
            .open(&temp)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        fs::write(root.path().join("unrelated"), b"x").unwrap();
        let report = store.cleanup(Duration::from_secs(50)).unwrap();
        assert_eq!(
            report,
            CleanupReport {
                expired: 1,
                stale_temporary: 1
            }
        );
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_in_the_way_of_the_folder_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("taken");
        fs::write(&blocker, b"x").unwrap();
        let err = FileStore::open(&blocker, false).err().unwrap();
        assert!(err.store.starts_with("FileStore("), "{err}");
    }

    #[test]
    fn an_unreadable_record_is_an_error_naming_the_store() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path(), false).unwrap();
        fs::create_dir(store.path_of(A)).unwrap(); // a folder where the file should be
        let err = store.load(A, MAX).unwrap_err();
        assert!(err.to_string().contains("FileStore("), "{err}");
        assert_eq!(err.kind, crate::stores::StoreErrorKind::UnreadableRecord);
    }
}
