//! The session records: opened without following symlinks or waiting on FIFOs, read within a
//! byte limit, written to a temporary file and renamed into place.

use crate::stores::{LoadResult, StoreResult};
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, SystemTime};

use rustix::fs::{renameat_with, RenameFlags, CWD};
use rustix::io::Errno;

use super::{idle_longer_than, FileStore, NO_FOLLOW_NO_WAIT, TEMP_PREFIX};
use crate::ids;
use crate::stores::{SessionStore, StoreError, StoreErrorKind, UserIndex};

impl FileStore {
    /// Opens the record of `session_id` for reading, with its metadata; `None` when there is
    /// none. Never follows a symlink (one to /dev/zero or another user's file) and never waits
    /// on a FIFO; anything but a regular file is an unreadable record.
    pub(super) fn open_record(&self, session_id: &str) -> StoreResult<Option<(fs::File, u64)>> {
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

    /// `open_record` for a load under the idle timeout `ttl` (remembered for `cleanup`), with
    /// the record's last modification: its last use.
    pub(super) fn open_record_with_ttl(
        &self, session_id: &str, ttl: Duration,
    ) -> StoreResult<Option<(fs::File, u64, SystemTime)>> {
        self.remember_ttl(Some(ttl));
        self.open_record_with_last_use(session_id)
    }

    /// `open_record`, with the record's last modification: its last use.
    pub(super) fn open_record_with_last_use(
        &self, session_id: &str,
    ) -> StoreResult<Option<(fs::File, u64, SystemTime)>> {
        let Some((file, size)) = self.open_record(session_id)? else {
            return Ok(None);
        };
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| self.io_error(session_id, "inspect", e))?;
        Ok(Some((file, size, modified)))
    }

    /// Reads an open record of `size` bytes (as fstat said), refusing more than `max_bytes`
    /// before reading and while reading (a file grown meanwhile).
    pub(super) fn read_record(
        &self, session_id: &str, file: fs::File, size: u64, max_bytes: usize,
    ) -> StoreResult<Vec<u8>> {
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
    pub(super) fn write_temporary(
        &self, session_id: &str, blob: &[u8],
    ) -> StoreResult<tempfile::NamedTempFile> {
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
}

impl SessionStore for FileStore {
    fn load(&self, session_id: &str, max_bytes: usize) -> LoadResult {
        let Some((file, size)) = self.open_record(session_id)? else {
            return Ok(None);
        };
        self.read_record(session_id, file, size, max_bytes)
            .map(Some)
    }

    fn load_touching(&self, session_id: &str, ttl: Duration, max_bytes: usize) -> LoadResult {
        let Some((file, size, modified)) = self.open_record_with_ttl(session_id, ttl)? else {
            return Ok(None);
        };
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
        &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
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
        &self, session_id: &str, blob: &[u8], _ttl: Option<Duration>,
    ) -> StoreResult<bool> {
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

    fn touch(&self, session_id: &str, _ttl: Duration) -> StoreResult<()> {
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

    fn save(&self, session_id: &str, blob: &[u8], _ttl: Option<Duration>) -> StoreResult<()> {
        let temporary = self.write_temporary(session_id, blob)?;
        temporary
            .persist(self.path_of(session_id))
            .map_err(|e| self.io_error(session_id, "write", e.error))?;
        self.sync_folder()
            .map_err(|e| self.io_error(session_id, "sync", e))
    }

    fn delete(&self, session_id: &str) -> StoreResult<bool> {
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
        &self, session_id: &str, ttl: Option<Duration>, ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
        max_bytes: usize,
    ) -> LoadResult {
        let Some(ttl) = ttl else {
            return self.load(session_id, max_bytes);
        };
        let Some((file, size, modified)) = self.open_record_with_ttl(session_id, ttl)? else {
            return Ok(None);
        };
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

    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }

    fn listing(&self) -> Option<&dyn crate::stores::Listing> {
        Some(self)
    }

    fn pickle_advice(&self) -> Option<String> {
        self.folder.is_dir().then(|| {
            format!(
                "convert the session folder once with `python -m tornsession migrate {}`",
                self.folder.display()
            )
        })
    }
}
