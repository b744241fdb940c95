//! The per-user index: one file per user key, a line per session (its id and, when it expires,
//! its idle timeout in seconds), rewritten whole under the folder lock.

use crate::stores::StoreResult;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    idle_longer_than, FileStore, MAX_INDEX_BYTES, NO_FOLLOW_NO_WAIT, TEMP_PREFIX, USER_PREFIX,
};
use crate::ids;
use crate::stores::{StoreError, UserIndex};

impl FileStore {
    pub(super) fn index_path(&self, user_key: &str) -> PathBuf {
        self.folder.join(format!("{USER_PREFIX}{user_key}"))
    }

    /// The entries of an index file (none when it is missing); with the folder lock held.
    pub(super) fn read_index(&self, user_key: &str) -> StoreResult<Vec<(String, Option<u64>)>> {
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
    pub(super) fn entry_lives(&self, id: &str, ttl: Option<u64>) -> bool {
        match fs::symlink_metadata(self.path_of(id)) {
            Ok(metadata) => match (ttl, metadata.modified()) {
                (Some(ttl), Ok(modified)) => !idle_longer_than(modified, Duration::from_secs(ttl)),
                _ => true,
            },
            Err(_) => false,
        }
    }

    /// Replaces an index file atomically (removes it when empty); with the folder lock held.
    pub(super) fn write_index(
        &self, user_key: &str, members: &[(String, Option<u64>)],
    ) -> StoreResult<()> {
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
    pub(super) fn update_index(
        &self, user_key: &str, change: impl FnOnce(&mut Vec<(String, Option<u64>)>),
    ) -> StoreResult<Vec<String>> {
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
    pub(super) fn prune_indexes(&self) -> StoreResult<()> {
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
}

impl UserIndex for FileStore {
    fn index_user(
        &self, user_key: &str, session_id: &str, ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let ttl = ttl.map(crate::time::whole_seconds);
        self.update_index(user_key, |members| {
            members.retain(|(id, _)| id != session_id);
            members.push((session_id.to_owned(), ttl));
        })
        .map(drop)
    }

    fn unindex_user(&self, user_key: &str, session_id: &str) -> StoreResult<()> {
        self.update_index(user_key, |members| {
            members.retain(|(id, _)| id != session_id)
        })
        .map(drop)
    }

    fn user_session_ids(&self, user_key: &str) -> StoreResult<Vec<String>> {
        self.update_index(user_key, |_| {})
    }
}
