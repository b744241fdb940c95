//! Records are kept under their own id only: never answered for another, however many
//! requests run at once. The codec's binding of a record to its id is what a load checks.

use std::time::Duration;

use serde_json::{Map, Value};
use tornsession_core::codec::{self, Crossed};

use crate::records::{id, A, B, MAX};
use crate::subjects::{Kind, Subject};

fn record(session_id: &str) -> Vec<u8> {
    let mut data = Map::new();
    data.insert("id".to_owned(), Value::String(session_id.to_owned()));
    codec::encode(session_id, 1, &data)
}

/// The record holds what was saved for `session_id`, and is bound to it.
fn check(session_id: &str, blob: Option<Vec<u8>>) {
    let blob = blob.unwrap_or_else(|| panic!("no record for {session_id}"));
    assert_eq!(codec::check_binding(&blob, session_id), Ok(()));
    let data = codec::decode(&blob).unwrap().data;
    assert_eq!(data["id"], session_id);
}

pub fn records_never_cross_under_concurrent_use(s: &Subject) {
    const THREADS: u128 = 8;
    // Thousands where a save is a map insert; where it is a file, a row or a round trip, enough
    // to keep every pooled connection busy.
    let each: u128 = if s.kind == Kind::Memory { 500 } else { 25 };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = s.store.clone();
            std::thread::spawn(move || {
                let ids: Vec<String> = (0..each).map(|n| id(t * 1000 + n)).collect();
                for session_id in &ids {
                    store.save(session_id, &record(session_id), None).unwrap();
                    check(session_id, store.load(session_id, MAX).unwrap());
                }
                let ttl = Duration::from_secs(60);
                for session_id in &ids {
                    check(
                        session_id,
                        store.load_touching(session_id, ttl, MAX).unwrap(),
                    );
                    let blob = record(session_id);
                    assert!(store.save_if_exists(session_id, &blob, None).unwrap());
                    let written = store.save_if_unchanged(session_id, Some(&blob), &blob, None);
                    assert!(written.unwrap());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    for n in (0..THREADS).flat_map(|t| (0..each).map(move |n| t * 1000 + n)) {
        check(&id(n), s.store.load(&id(n), MAX).unwrap());
    }
}

pub fn a_record_keeps_its_binding_through_the_store(s: &Subject) {
    // A's record under B, as a store answering with another key's value would hand it over:
    // the bytes come back as they went in, so the load's check finds it crossed.
    let planted = record(A);
    s.store.save(B, &planted, None).unwrap();
    let found = s.store.load(B, MAX).unwrap().unwrap();
    assert_eq!(found, planted);
    assert_eq!(codec::check_binding(&found, B), Err(Crossed));
    assert_eq!(codec::check_binding(&found, A), Ok(()));
}
