//! Loading, saving and deleting one record, in every save mode.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::subjects::Subject;

pub const A: &str = "0000000000000000000000000000000a";
pub const B: &str = "0000000000000000000000000000000b";
pub const MAX: usize = usize::MAX;

/// The `n`th test id.
pub fn id(n: u128) -> String {
    format!("{n:032x}")
}

pub fn save_load_delete(s: &Subject) {
    let store = &*s.store;
    assert_eq!(store.load(A, MAX).unwrap(), None);
    store.save(A, b"one", None).unwrap();
    store.save(A, b"two", None).unwrap();
    assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"two"[..]));
    assert!(store.delete(A).unwrap(), "the record was there");
    assert_eq!(store.load(A, MAX).unwrap(), None);
    // Deleting a missing record is not an error, and says there was none.
    assert!(!store.delete(A).unwrap(), "and then it was not");
    assert_eq!(store.load(A, MAX).unwrap(), None);
}

pub fn blobs_come_back_byte_for_byte(s: &Subject) {
    let every_byte: Vec<u8> = (0..=255).collect();
    let blobs: [&[u8]; 7] = [
        b"",
        b"\0",
        b"line\r\nEND\r\nline",
        b"$5\r\nhello\r\n*2\r\n",
        b"mn\r\nVA 2\r\n",
        "caf\u{e9} \u{1f36a}".as_bytes(),
        &every_byte,
    ];
    for (n, blob) in blobs.iter().enumerate() {
        s.store.save(&id(n as u128), blob, None).unwrap();
    }
    for (n, blob) in blobs.iter().enumerate() {
        let found = s.store.load(&id(n as u128), MAX).unwrap();
        assert_eq!(found.as_deref(), Some(*blob), "blob {n}");
        let touched = s
            .store
            .load_touching(&id(n as u128), Duration::from_secs(60), MAX)
            .unwrap();
        assert_eq!(touched.as_deref(), Some(*blob), "blob {n}");
    }
}

pub fn ids_are_kept_apart(s: &Subject) {
    // Neighbours in every digit position that matters to a key, a path or a hash.
    let ids = [
        "00000000000000000000000000000000",
        "00000000000000000000000000000001",
        "10000000000000000000000000000000",
        "ffffffffffffffffffffffffffffffff",
        "fffffffffffffffffffffffffffffffe",
        "0123456789abcdef0123456789abcdef",
        "0123456789abcdef0123456789abcdee",
    ];
    for session_id in ids {
        s.store
            .save(session_id, session_id.as_bytes(), None)
            .unwrap();
    }
    for session_id in ids {
        let found = s.store.load(session_id, MAX).unwrap();
        assert_eq!(found.as_deref(), Some(session_id.as_bytes()));
    }
    assert!(s.store.delete(ids[0]).unwrap());
    for session_id in &ids[1..] {
        let found = s.store.load(session_id, MAX).unwrap();
        assert_eq!(
            found.as_deref(),
            Some(session_id.as_bytes()),
            "{session_id}"
        );
    }
}

pub fn save_if_exists_writes_only_over_a_record(s: &Subject) {
    let store = &*s.store;
    assert!(!store.save_if_exists(B, b"one", None).unwrap());
    assert_eq!(store.load(B, MAX).unwrap(), None, "nothing written");
    store.save(B, b"one", None).unwrap();
    assert!(store.save_if_exists(B, b"two", None).unwrap());
    assert_eq!(store.load(B, MAX).unwrap().as_deref(), Some(&b"two"[..]));
    let ttl = Some(Duration::from_secs(60));
    assert!(store.save_if_exists(B, b"three", ttl).unwrap());
    assert_eq!(store.load(B, MAX).unwrap().as_deref(), Some(&b"three"[..]));
    store.delete(B).unwrap();
    assert!(!store.save_if_exists(B, b"four", None).unwrap());
    assert_eq!(store.load(B, MAX).unwrap(), None);
}

pub fn save_if_unchanged_compares_and_sets(s: &Subject) {
    let store = &*s.store;
    assert!(store.save_if_unchanged(A, None, b"first", None).unwrap());
    assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"first"[..]));
    // "Only if there is none" refuses where there is a record, even an identical one.
    assert!(!store.save_if_unchanged(A, None, b"first", None).unwrap());
    // Another value, a prefix of it, or a longer one: not it.
    for other in [&b"other"[..], b"firs", b"firstx", b""] {
        assert!(!store.save_if_unchanged(A, Some(other), b"x", None).unwrap());
    }
    assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"first"[..]));
    let ttl = Some(Duration::from_secs(60));
    assert!(store
        .save_if_unchanged(A, Some(b"first"), b"second", ttl)
        .unwrap());
    assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"second"[..]));
    store.delete(A).unwrap();
    assert!(!store
        .save_if_unchanged(A, Some(b"second"), b"x", None)
        .unwrap());
    assert_eq!(store.load(A, MAX).unwrap(), None);
}

pub fn conditional_saves_race_to_one_winner(s: &Subject) {
    const WRITERS: usize = 8;
    // Each round's blobs are new: a writer putting back what it expected would let another
    // writer expecting it in too.
    let race = |round: u8, expected: Option<Vec<u8>>| -> Vec<Vec<u8>> {
        let start = Arc::new(Barrier::new(WRITERS));
        let writers: Vec<_> = (0..WRITERS)
            .map(|n| {
                let (store, start, expected) = (s.store.clone(), start.clone(), expected.clone());
                std::thread::spawn(move || {
                    let blob = format!("round {round}, writer {n}").into_bytes();
                    start.wait();
                    let won = store
                        .save_if_unchanged(A, expected.as_deref(), &blob, None)
                        .unwrap();
                    won.then_some(blob)
                })
            })
            .collect();
        writers
            .into_iter()
            .filter_map(|w| w.join().unwrap())
            .collect()
    };
    // All create at once: one record, the one winner's.
    let winners = race(1, None);
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(s.store.load(A, MAX).unwrap().as_ref(), Some(&winners[0]));
    // All replace what they loaded at once: one wins, the others find it changed.
    let winners = race(2, Some(winners[0].clone()));
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(s.store.load(A, MAX).unwrap().as_ref(), Some(&winners[0]));
}

pub fn touching_keeps_a_record_and_leaves_a_missing_one_missing(s: &Subject) {
    let store = &*s.store;
    let ttl = Duration::from_secs(60);
    store.touch(A, ttl).unwrap();
    assert_eq!(store.load(A, MAX).unwrap(), None);
    assert_eq!(store.load_touching(A, ttl, MAX).unwrap(), None);
    assert_eq!(store.load(A, MAX).unwrap(), None);
    let refreshed = store.load_refreshing(A, Some(ttl), &|_| Some(2 * ttl), MAX);
    assert_eq!(refreshed.unwrap(), None);
    assert_eq!(store.load(A, MAX).unwrap(), None);
    store.save(A, b"v", Some(ttl)).unwrap();
    store.touch(A, ttl).unwrap();
    assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"v"[..]));
    let touched = store.load_touching(A, 2 * ttl, MAX).unwrap();
    assert_eq!(touched.as_deref(), Some(&b"v"[..]));
    for own in [None, Some(3 * ttl)] {
        let refreshed = store.load_refreshing(A, Some(ttl), &|_| own, MAX).unwrap();
        assert_eq!(refreshed.as_deref(), Some(&b"v"[..]));
    }
    let plain = store.load_refreshing(A, None, &|_| None, MAX).unwrap();
    assert_eq!(plain.as_deref(), Some(&b"v"[..]));
}

pub fn malformed_ids_are_answered_without_panicking_or_naming_them(s: &Subject) {
    // Ids are validated before a store sees them (`ids::is_valid_session_id`); handed anything
    // else, a store may refuse it or keep it, but never panics, and never quotes it.
    let store = &*s.store;
    let ttl = Some(Duration::from_secs(60));
    for bad in [
        "",
        "*",
        "../../outside",
        "0000000000000000000000000000000A",
        "000000000000000000000000000000000",
        "0000000000000000000000000000000g",
        "with space\r\nand lines",
    ] {
        let errors = [
            store.save(bad, b"x", ttl).err(),
            store.load(bad, MAX).err(),
            store.save_if_exists(bad, b"y", ttl).err(),
            store.load_touching(bad, Duration::from_secs(60), MAX).err(),
            store.delete(bad).err(),
        ];
        for e in errors.into_iter().flatten() {
            let message = e.to_string();
            assert!(bad.len() < 2 || !message.contains(bad), "{message}");
            assert!(e.store.starts_with(s.name()), "{message}");
        }
    }
    // Nothing was put out of step (a connection, a folder): the store works on.
    store.save(A, b"after", None).unwrap();
    assert_eq!(store.load(A, MAX).unwrap().as_deref(), Some(&b"after"[..]));
}
