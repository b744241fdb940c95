use super::*;
use crate::stores::{SessionStore, UserIndex};
use rustix::fs::CWD;

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
    set_modified(s.path_of(B), old);
    s.cleanup(Duration::from_secs(3600)).unwrap();
    assert!(!dir.path().join(format!("{USER_PREFIX}{U}")).exists());
}

#[test]
fn a_session_with_its_own_idle_timeout_is_judged_by_it() {
    let (_dir, s) = store();
    s.save(A, b"long", None).unwrap();
    let old = SystemTime::now() - Duration::from_secs(7200);
    set_modified(s.path_of(A), old);
    let own = |blob: &[u8]| (blob == b"long").then(|| Duration::from_secs(86_400));
    assert_eq!(
        s.cleanup_with(Duration::from_secs(3600), &own)
            .unwrap()
            .expired,
        0
    );
    let hour = Some(Duration::from_secs(3600));
    assert!(s.load_refreshing(A, hour, &own, MAX).unwrap().is_some());
    set_modified(s.path_of(A), old);
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
        set_modified(store.path_of(id), old);
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
    set_modified(store.path_of(A), old);
    let temp = root.path().join(".tmp-crashed");
    fs::write(&temp, b"half").unwrap();
    set_modified(temp, SystemTime::now() - Duration::from_secs(7200));
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

/// Sets the last modification (a record's last use) of the file at `path`.
fn set_modified(path: impl AsRef<Path>, when: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}
