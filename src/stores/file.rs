//! One file per session, `SESSION<id>` in one folder (the original module's naming), written
//! atomically: a temporary file in the same folder, then a rename over the old one.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{SessionStore, StoreError};

/// The prefix of every session file's name, as in the original module.
pub const FILE_PREFIX: &str = "SESSION";

/// Sessions as files in one folder; safe for several processes of one machine.
pub struct FileStore {
    folder: PathBuf,
}

impl FileStore {
    /// Opens `folder`, creating it (mode 0700: sessions are nobody else's business) when missing.
    pub fn open(folder: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = Self {
            folder: folder.into(),
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

    /// The file that holds `session_id`.
    pub fn path_of(&self, session_id: &str) -> PathBuf {
        self.folder.join(format!("{FILE_PREFIX}{session_id}"))
    }
}

impl SessionStore for FileStore {
    fn load(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(self.path_of(session_id)) {
            Ok(blob) => Ok(Some(blob)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            // One bad file (a folder in its place, no permission) loses that session, not the store.
            Err(e) => Err(StoreError::unreadable_record(
                self,
                format!("cannot read {FILE_PREFIX}{session_id}: {e}"),
            )),
        }
    }

    fn save(
        &self,
        session_id: &str,
        blob: &[u8],
        _ttl: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        let fail = |e: std::io::Error| {
            StoreError::new(self, format!("cannot write {FILE_PREFIX}{session_id}: {e}"))
        };
        // The temporary file lives in the same folder so the rename stays on one filesystem and
        // is atomic: readers see the old file or the new one, never a torn one.
        let mut temporary = tempfile::Builder::new()
            .prefix(".tmp-")
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
