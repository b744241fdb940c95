//! Sizes: the byte limit a load is given, and the largest record a store takes.

use std::time::Duration;

use tornsession_core::ids;
use tornsession_core::stores::memcached::MAX_RECORD_SIZE;
use tornsession_core::stores::{StoreErrorKind, DEFAULT_MAX_READ_SIZE};

use crate::records::{A, B};
use crate::subjects::{Kind, Subject};

pub fn oversized_records_are_refused_without_naming_the_session(s: &Subject) {
    let store = &*s.store;
    store.save(A, &[b'x'; 100], None).unwrap();
    assert_eq!(store.load(A, 100).unwrap().unwrap().len(), 100);
    let ttl = Duration::from_secs(60);
    for e in [
        store.load(A, 99).unwrap_err(),
        store.load(A, 0).unwrap_err(),
        store.load_touching(A, ttl, 99).unwrap_err(),
        store
            .load_refreshing(A, Some(ttl), &|_| None, 99)
            .unwrap_err(),
        store.load_refreshing(A, None, &|_| None, 99).unwrap_err(),
    ] {
        assert_eq!(e.kind, StoreErrorKind::OversizedRecord, "{e}");
        let message = e.to_string();
        assert!(message.contains("holds 100 bytes"), "{message}");
        assert!(!message.contains(A), "{message}");
        assert!(message.contains(&ids::log_token(A)), "{message}");
        assert_eq!(e.store, store.describe());
        assert!(e.store.starts_with(s.name()), "{}", e.store);
    }
    // The store works on (memcached drops the connection the value was left unread on), and
    // the record was neither changed nor removed.
    let found = store.load(A, 100).unwrap();
    assert_eq!(found.as_deref(), Some(&[b'x'; 100][..]));
    store.save(B, b"small", None).unwrap();
    assert_eq!(store.load(B, 5).unwrap().as_deref(), Some(&b"small"[..]));
}

pub fn records_up_to_the_largest_a_load_reads_round_trip(s: &Subject) {
    // memcached's item size is its only limit of its own; the manager keeps records below it.
    let own_limit = match s.kind {
        Kind::Memcached => Some(MAX_RECORD_SIZE),
        _ => None,
    };
    assert_eq!(s.store.max_record_size(), own_limit);
    let largest = own_limit.unwrap_or(DEFAULT_MAX_READ_SIZE);
    let blob: Vec<u8> = (0..largest).map(|n| (n % 251) as u8).collect();
    s.store.save(A, &blob, None).unwrap();
    let found = s.store.load(A, DEFAULT_MAX_READ_SIZE).unwrap().unwrap();
    assert!(found == blob, "{} bytes came back", found.len());
    assert!(s.store.save_if_exists(A, &blob[1..], None).unwrap());
    let found = s.store.load(A, largest - 1).unwrap().unwrap();
    assert!(found == blob[1..], "{} bytes came back", found.len());
}
