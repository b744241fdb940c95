//! One file per session, `SESSION<id>` in one folder (the original module's naming), written
//! atomically: a temporary file in the same folder, then a rename over the old one.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::{SessionStore, StoreError};

/// The prefix of every session file's name, as in the original module.
pub const FILE_PREFIX: &str = "SESSION";
/// The lock file that serializes conditional saves in the folder.
const LOCK_FILE: &str = ".tornsession.lock";
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
    /// The idle timeout managers last used with this store, in milliseconds (0: none yet), so
    /// `cleanup` knows what "expired" means without being told again.
    last_ttl_ms: AtomicU64,
}

impl FileStore {
    /// Opens `folder`, creating it (mode 0700: sessions are nobody else's business) when missing.
    pub fn open(folder: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = Self {
            folder: folder.into(),
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
        let mut report = CleanupReport::default();
        let entries = fs::read_dir(&self.folder)
            .map_err(|e| StoreError::new(self, format!("cannot list the folder: {e}")))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let (limit, counter) = if name.starts_with(FILE_PREFIX) {
                (idle_timeout, &mut report.expired)
            } else if name.starts_with(TEMP_PREFIX) {
                (STALE_TEMP_AGE, &mut report.stale_temporary)
            } else {
                continue;
            };
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| idle_longer_than(modified, limit));
            // A file removed meanwhile (by another cleanup, or a logout) is simply not counted.
            if stale && fs::remove_file(entry.path()).is_ok() {
                *counter += 1;
            }
        }
        Ok(report)
    }

    fn unreadable(&self, session_id: &str, e: std::io::Error) -> StoreError {
        // One bad file (a folder in its place, no permission) loses that session, not the store.
        StoreError::unreadable_record(self, format!("cannot read {FILE_PREFIX}{session_id}: {e}"))
    }
}

impl SessionStore for FileStore {
    fn load(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(self.path_of(session_id)) {
            Ok(blob) => Ok(Some(blob)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.unreadable(session_id, e)),
        }
    }

    fn load_touching(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.remember_ttl(Some(ttl));
        let mut file = match fs::File::open(self.path_of(session_id)) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.unreadable(session_id, e)),
        };
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| self.unreadable(session_id, e))?;
        if idle_longer_than(modified, ttl) {
            self.delete(session_id)?;
            return Ok(None);
        }
        let mut blob = Vec::new();
        file.read_to_end(&mut blob)
            .map_err(|e| self.unreadable(session_id, e))?;
        // Best effort: a session that cannot be touched merely expires sooner.
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(blob))
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
        let lock_path = self.folder.join(LOCK_FILE);
        let lock = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .and_then(|file| file.lock().map(|()| file))
            .map_err(|e| StoreError::new(self, format!("cannot lock {LOCK_FILE}: {e}")))?;
        let current = match fs::read(self.path_of(session_id)) {
            Ok(current) => Some(current),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(self.unreadable(session_id, e)),
        };
        let unchanged = current.as_deref() == expected;
        if unchanged {
            self.save(session_id, blob, ttl)?;
        }
        drop(lock);
        Ok(unchanged)
    }

    fn touch(&self, session_id: &str, _ttl: Duration) -> Result<(), StoreError> {
        match fs::File::open(self.path_of(session_id)) {
            Ok(file) => {
                let _ = file.set_modified(SystemTime::now());
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.unreadable(session_id, e)),
        }
    }

    fn save(
        &self,
        session_id: &str,
        blob: &[u8],
        _ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let fail = |e: std::io::Error| {
            StoreError::new(self, format!("cannot write {FILE_PREFIX}{session_id}: {e}"))
        };
        // The temporary file lives in the same folder so the rename stays on one filesystem and
        // is atomic: readers see the old file or the new one, never a torn one.
        let mut temporary = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.folder)
            .map_err(fail)?;
        temporary.write_all(blob).map_err(fail)?;
        temporary
            .persist(self.path_of(session_id))
            .map_err(|e| fail(e.error))?;
        Ok(())
    }

    fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        match fs::remove_file(self.path_of(session_id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::new(
                self,
                format!("cannot delete {FILE_PREFIX}{session_id}: {e}"),
            )),
        }
    }

    fn describe(&self) -> String {
        format!("FileStore({:?})", self.folder.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const A: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn creates_a_private_folder() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("a/b/sessions");
        let store = FileStore::open(&folder).unwrap();
        assert!(store.folder().is_dir());
        let mode = fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn save_load_delete_with_the_original_file_name() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
        assert_eq!(store.load(A).unwrap(), None);
        store.save(A, b"first", None).unwrap();
        store.save(A, b"second", None).unwrap();
        assert_eq!(
            fs::read(root.path().join(format!("SESSION{A}"))).unwrap(),
            b"second"
        );
        assert_eq!(store.load(A).unwrap().as_deref(), Some(&b"second"[..]));
        store.delete(A).unwrap();
        store.delete(A).unwrap();
        assert_eq!(store.load(A).unwrap(), None);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn idle_files_expire_on_load_and_cleanup_unless_touched() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
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
            store.load_touching(A, ttl).unwrap().as_deref(),
            Some(&b"a"[..])
        );
        let touched = fs::metadata(store.path_of(A)).unwrap().modified().unwrap();
        assert!(!idle_longer_than(touched, Duration::from_secs(5)));
        // A 50 s timeout: B has been idle 100 s, so it is gone.
        assert_eq!(
            store.load_touching(B, Duration::from_secs(50)).unwrap(),
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
        let err = FileStore::open(&blocker).err().unwrap();
        assert!(err.store.starts_with("FileStore("), "{err}");
    }

    #[test]
    fn an_unreadable_record_is_an_error_naming_the_store() {
        let root = tempfile::tempdir().unwrap();
        let store = FileStore::open(root.path()).unwrap();
        fs::create_dir(store.path_of(A)).unwrap(); // a folder where the file should be
        let err = store.load(A).unwrap_err();
        assert!(err.to_string().contains("FileStore("), "{err}");
        assert_eq!(err.kind, crate::stores::StoreErrorKind::UnreadableRecord);
    }
}
