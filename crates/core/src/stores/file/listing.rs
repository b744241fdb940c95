//! Listing the folder's records, for the operating commands (see `stores::listing`).

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, SystemTime};

use rustix::fs::{renameat_with, RenameFlags, CWD};

use super::{FileStore, FILE_PREFIX, NO_FOLLOW_NO_WAIT, TEMP_PREFIX};
use crate::ids;
use crate::stores::{ListedRecord, Listing, StoreError, StoreResult, TimeLeft};

impl Listing for FileStore {
    /// The `SESSION<id>` files with a valid id (a stray file is nobody's session).
    fn session_ids(&self) -> StoreResult<Vec<String>> {
        let fail =
            |e: std::io::Error| StoreError::new(self, format!("cannot list the folder: {e}"));
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.folder).map_err(fail)? {
            let name = entry.map_err(fail)?.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_prefix(FILE_PREFIX))
            else {
                continue;
            };
            if ids::is_valid_session_id(id) {
                found.push(id.to_owned());
            }
        }
        Ok(found)
    }

    /// The record and how long ago it was last used (its modification time).
    fn load_listed(&self, session_id: &str, max_bytes: usize) -> StoreResult<Option<ListedRecord>> {
        let Some((file, size, modified)) = self.open_record_with_last_use(session_id)? else {
            return Ok(None);
        };
        let blob = self.read_record(session_id, file, size, max_bytes)?;
        let idle_for = SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO);
        Ok(Some(ListedRecord {
            blob,
            time_left: TimeLeft::IdleFor(idle_for),
        }))
    }

    /// Takes the record out of its place (a rename to a temporary name: atomic against every
    /// writer), compares it, and puts it back when it is not `expected` (a save of the app that
    /// landed first). A save landing in the instant the name is free finds no record, as it
    /// would after a logout. Under the folder lock, so conditional saves wait.
    fn delete_if_unchanged(&self, session_id: &str, expected: &[u8]) -> StoreResult<bool> {
        let lock = self.lock_folder()?;
        let path = self.path_of(session_id);
        let aside = self
            .folder
            .join(format!("{TEMP_PREFIX}delete-{session_id}"));
        match fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io_error(session_id, "set aside", e)),
        }
        let taken = fs::File::options()
            .read(true)
            .custom_flags(NO_FOLLOW_NO_WAIT)
            .open(&aside)
            .and_then(|file| {
                let mut blob = Vec::with_capacity(expected.len());
                file.take(expected.len() as u64 + 1)
                    .read_to_end(&mut blob)?;
                Ok(blob)
            });
        let unchanged = taken.as_deref().is_ok_and(|blob| blob == expected);
        if unchanged {
            fs::remove_file(&aside).map_err(|e| self.io_error(session_id, "delete", e))?;
        } else {
            // Back where it was, unless a new record took the name meanwhile (that one wins).
            match renameat_with(CWD, &aside, CWD, &path, RenameFlags::NOREPLACE) {
                Ok(()) => {}
                Err(_) => {
                    let _ = fs::remove_file(&aside);
                }
            }
        }
        self.sync_folder()
            .map_err(|e| self.io_error(session_id, "sync", e))?;
        drop(lock);
        Ok(unchanged)
    }

    fn set_idle_for(&self, session_id: &str, idle_for: Duration) -> StoreResult<()> {
        let Some((file, _)) = self.open_record(session_id)? else {
            return Ok(());
        };
        let last_use = SystemTime::now()
            .checked_sub(idle_for)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match file.set_modified(last_use) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error(session_id, "set the last use of", e)),
        }
    }
}
