//! The folder's lock file: conditional saves (and index rewrites) of every process take it.

use crate::stores::StoreResult;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;

use super::{FileStore, LOCK_FILE, NO_FOLLOW_NO_WAIT};
use crate::stores::StoreError;

impl FileStore {
    /// Takes the folder's lock file, which serializes conditional saves across processes.
    pub(super) fn lock_folder(&self) -> StoreResult<fs::File> {
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
    pub(super) fn replace_if_exists_locked(
        &self, session_id: &str, temporary: tempfile::NamedTempFile,
    ) -> StoreResult<bool> {
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
