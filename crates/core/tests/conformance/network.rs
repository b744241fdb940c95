//! What a network store does when its servers are gone.

use std::time::Duration;

use tornsession_core::stores::StoreErrorKind;

use crate::records::{A, MAX};
use crate::subjects::Subject;

/// With the servers gone, every operation fails as Unavailable, naming the store, never the id.
pub fn a_dead_server_fails_without_naming_the_session(s: &Subject) {
    assert!(s.is_network());
    let store = &*s.store;
    // Pooled connections first: they must fail too, not only new ones.
    store.save(A, b"v", None).unwrap();
    assert!(store.load(A, MAX).unwrap().is_some());
    s.stop_servers();
    let ttl = Duration::from_secs(1);
    let errors = [
        store.load(A, MAX).unwrap_err(),
        store.load_touching(A, ttl, MAX).unwrap_err(),
        store.save(A, b"x", None).unwrap_err(),
        store.save_if_exists(A, b"x", None).unwrap_err(),
        store.save_if_unchanged(A, None, b"x", None).unwrap_err(),
        store
            .save_if_unchanged(A, Some(b"v"), b"x", None)
            .unwrap_err(),
        store.touch(A, ttl).unwrap_err(),
        store.delete(A).unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.kind, StoreErrorKind::Unavailable, "{e}");
        let message = e.to_string();
        assert!(!message.contains(A), "{message}");
        assert!(e.store.starts_with(s.name()), "{message}");
    }
}
