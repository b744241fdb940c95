//! Sweeping the folder: idle session files, and temporary files a crash left behind.

use crate::stores::StoreResult;
use std::fs;
use std::io::ErrorKind;
use std::time::Duration;

use super::{idle_longer_than, CleanupReport, FileStore, FILE_PREFIX, STALE_TEMP_AGE, TEMP_PREFIX};
use crate::ids;
use crate::stores::StoreError;

impl FileStore {
    /// Deletes session files unused for longer than `idle_timeout` (a file's modification time
    /// is its last use: saves write it, loads touch it) and temporary files a crash left behind.
    pub fn cleanup(&self, idle_timeout: Duration) -> StoreResult<CleanupReport> {
        self.cleanup_with(idle_timeout, &|_| None)
    }

    /// `cleanup`, keeping a session idle for longer than `idle_timeout` while it is within its
    /// own (`ttl_of(record)`: a "remember me" session); then drops index entries of sessions
    /// that are gone, and index files left empty.
    pub fn cleanup_with(
        &self, idle_timeout: Duration, ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
    ) -> StoreResult<CleanupReport> {
        let report = self.cleanup_records(idle_timeout, ttl_of)?;
        self.prune_indexes()?;
        Ok(report)
    }

    pub(super) fn cleanup_records(
        &self, idle_timeout: Duration, ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
    ) -> StoreResult<CleanupReport> {
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
    pub(super) fn within_own_ttl(
        &self, name: &str, metadata: &fs::Metadata, ttl_of: &dyn Fn(&[u8]) -> Option<Duration>,
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
}
