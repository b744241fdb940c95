//! Listing the folder's records, for the operating commands (see `stores::listing`).

use std::fs;
use std::io::ErrorKind;
use std::time::{Duration, SystemTime};

use super::{FileStore, FILE_PREFIX};
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
        let Some((file, size)) = self.open_record(session_id)? else {
            return Ok(None);
        };
        let modified = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| self.io_error(session_id, "inspect", e))?;
        let blob = self.read_record(session_id, file, size, max_bytes)?;
        let idle_for = SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO);
        Ok(Some(ListedRecord {
            blob,
            time_left: TimeLeft::IdleFor(idle_for),
        }))
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
