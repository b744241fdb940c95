//! Time to live: a record idle for longer than its ttl is never returned, and counts as gone
//! for every write; touching moves the expiry either way; no ttl means never.

use std::time::{Duration, Instant};

use crate::records::{id, MAX};
use crate::subjects::Subject;

/// Far beyond any wait here.
const LONG: Duration = Duration::from_secs(3600);

/// Every way of giving a record its expiry, saved together and waited out once.
pub fn records_live_as_long_as_their_ttl_says(s: &Subject) {
    let store = &*s.store;
    let short = s.short_ttl();
    let [gone, touched, load_touched, refreshed, forever, cleared, replaced, swapped, shortened] =
        [0, 1, 2, 3, 4, 5, 6, 7, 8].map(id);
    for session_id in [&gone, &touched, &load_touched, &refreshed, &cleared] {
        store.save(session_id, b"v", Some(short)).unwrap();
    }
    store.save(&forever, b"v", None).unwrap();
    store.save(&replaced, b"v", None).unwrap();
    store.save(&swapped, b"v", None).unwrap();
    store.save(&shortened, b"v", Some(LONG)).unwrap();
    // Kept alive: by a touch, a touching load, a refreshing load with the record's own ttl.
    store.touch(&touched, LONG).unwrap();
    assert!(store
        .load_touching(&load_touched, LONG, MAX)
        .unwrap()
        .is_some());
    let own_ttl = |_: &[u8]| Some(LONG);
    let found = store.load_refreshing(&refreshed, Some(short), &own_ttl, MAX);
    assert!(found.unwrap().is_some());
    // A save without a ttl clears one; conditional saves set theirs; a touch can shorten.
    store.save(&cleared, b"v2", None).unwrap();
    assert!(store.save_if_exists(&replaced, b"v2", Some(short)).unwrap());
    let swapped_in = store.save_if_unchanged(&swapped, Some(b"v"), b"v2", Some(short));
    assert!(swapped_in.unwrap());
    store.touch(&shortened, short).unwrap();
    let written_at = Instant::now();

    s.wait_out(&[&gone, &replaced, &swapped, &shortened], short, written_at);

    let judged = |session_id: &str, ttl| s.alive(session_id, Some(ttl));
    assert!(!judged(&gone, short), "not touched: expired");
    assert!(judged(&touched, LONG), "touched");
    assert!(judged(&load_touched, LONG), "touched by a load");
    assert!(
        store
            .load_refreshing(&refreshed, Some(short), &own_ttl, MAX)
            .unwrap()
            .is_some(),
        "judged by its own ttl"
    );
    assert!(s.alive(&forever, None), "no ttl: never expires");
    assert!(s.alive(&cleared, None), "saved again without a ttl");
    assert!(!judged(&replaced, short), "save_if_exists gave it a ttl");
    assert!(!judged(&swapped, short), "save_if_unchanged gave it a ttl");
    assert!(!judged(&shortened, short), "touched to a shorter ttl");

    // Expired counts as gone for every operation.
    assert_eq!(store.load(&gone, MAX).unwrap(), None);
    assert_eq!(store.load_touching(&gone, LONG, MAX).unwrap(), None);
    assert!(
        !store.delete(&gone).unwrap(),
        "an expired record is not there"
    );
    assert!(!store.save_if_exists(&gone, b"x", None).unwrap());
    assert!(!store
        .save_if_unchanged(&replaced, Some(b"v2"), b"x", None)
        .unwrap());
    assert_eq!(store.load(&replaced, MAX).unwrap(), None);
    assert!(store.save_if_unchanged(&gone, None, b"new", None).unwrap());
    assert_eq!(
        store.load(&gone, MAX).unwrap().as_deref(),
        Some(&b"new"[..])
    );
}
