//! One file per session, `SESSION<id>` in one folder (the original module's naming), written
//! atomically: a temporary file in the same folder, then a rename over the old one. The records
//! (`records`), the per-user index files (`user_index`), the sweep of idle files (`cleanup`) and
//! the folder lock that serializes conditional saves (`locking`) each have a file here.

use crate::stores::StoreResult;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::OFlags;
use rustix::io::Errno;

use super::StoreError;
use crate::ids;

mod cleanup;
mod listing;
mod locking;
mod records;
mod user_index;

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
    pub fn open(folder: impl Into<PathBuf>, durable: bool) -> StoreResult<Self> {
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
}

impl FileStore {
    /// Makes renames and unlinks in the folder survive a power cut (durable stores only).
    pub(super) fn sync_folder(&self) -> io::Result<()> {
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
    pub(super) fn io_error(&self, session_id: &str, what: &str, e: io::Error) -> StoreError {
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
}

/// `O_NOFOLLOW | O_NONBLOCK`: a symlink in a record's place fails to open (ELOOP) instead of
/// being followed, and a FIFO opens at once instead of waiting for a writer.
const NO_FOLLOW_NO_WAIT: i32 = (OFlags::NOFOLLOW.bits() | OFlags::NONBLOCK.bits()) as i32;

#[cfg(test)]
mod tests;
