//! A user's sessions: the per-user index of the stores that can list them, and the
//! per-user generation of those that cannot (memcached). Kept apart from the record cases, and
//! reached through `UserIndex` and `Generations` only, so the suite follows the trait when these
//! become capabilities of their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tornsession_core::stores::{SessionStore, StoreError, StoreErrorKind};

use crate::records::{id, A, B};
use crate::subjects::Subject;

const USER: &str = "00000000000000000000000000000abc";
const OTHER_USER: &str = "00000000000000000000000000000def";

/// The per-user index, as the manager uses it.
struct UserIndex<'a>(&'a dyn SessionStore);

impl UserIndex<'_> {
    fn file(&self, user: &str, session_id: &str, ttl: Option<Duration>) {
        self.0.index_user(user, session_id, ttl).unwrap();
    }

    fn unfile(&self, user: &str, session_id: &str) {
        self.0.unindex_user(user, session_id).unwrap();
    }

    fn touch(&self, user: &str, session_id: &str, ttl: Duration) {
        self.0.touch_user(user, session_id, ttl).unwrap();
    }

    fn list(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.0.user_session_ids(user).map(|mut ids| {
            ids.sort();
            ids
        })
    }
}

/// Per-user generation counters, as "log out everywhere" uses them.
struct Generations<'a>(&'a dyn SessionStore);

impl Generations<'_> {
    fn in_use(&self) -> bool {
        self.0.revokes_by_generation()
    }

    fn current(&self, user: &str) -> Result<Option<u64>, StoreError> {
        self.0.user_generation(user)
    }

    fn bump(&self, user: &str) -> Result<tornsession_core::users::Bump, StoreError> {
        self.0.bump_user_generation(user)
    }
}

pub fn the_user_index_lists_what_was_filed(s: &Subject) {
    let index = UserIndex(&*s.store);
    let [c, d] = [id(0xc), id(0xd)];
    for session_id in [A, B, &c, &d] {
        s.store.save(session_id, b"v", None).unwrap();
    }
    index.file(USER, A, None);
    index.file(USER, B, Some(Duration::from_secs(60)));
    index.file(USER, B, Some(Duration::from_secs(60)));
    index.file(OTHER_USER, &c, None);
    if !s.lists_users() {
        // Filing is nothing to do where the generation does the work; listing is refused,
        // naming the stores that list.
        for user in [USER, OTHER_USER] {
            let e = index.list(user).unwrap_err();
            assert_eq!(e.kind, StoreErrorKind::Unsupported, "{e}");
            assert!(e.to_string().contains("SqliteStore"), "{e}");
        }
        index.touch(USER, A, Duration::from_secs(60));
        index.unfile(USER, A);
        return;
    }
    assert_eq!(index.list(USER).unwrap(), [A, B]);
    assert_eq!(index.list(OTHER_USER).unwrap(), [c.as_str()]);
    assert!(index.list(&id(0xeee)).unwrap().is_empty(), "nobody's");
    // A rewrite and a touch keep the owner.
    s.store.save(A, b"v2", None).unwrap();
    s.store.touch(B, Duration::from_secs(120)).unwrap();
    index.touch(USER, B, Duration::from_secs(120));
    assert_eq!(index.list(USER).unwrap(), [A, B]);
    // Unfiling takes out that entry only; unfiling what is not filed is not an error.
    index.unfile(USER, A);
    index.unfile(USER, &d);
    index.unfile(OTHER_USER, B);
    assert_eq!(index.list(USER).unwrap(), [B]);
    assert_eq!(index.list(OTHER_USER).unwrap(), [c.as_str()]);
    index.unfile(USER, B);
    assert!(index.list(USER).unwrap().is_empty());
    // Filed again after unfiling: listed again.
    index.file(USER, &d, None);
    assert_eq!(index.list(USER).unwrap(), [d.as_str()]);
}

pub fn index_entries_of_expired_sessions_are_not_listed(s: &Subject) {
    let index = UserIndex(&*s.store);
    let short = s.short_ttl();
    let long = Duration::from_secs(3600);
    s.store.save(A, b"v", Some(short)).unwrap();
    index.file(USER, A, Some(short));
    s.store.save(B, b"v", Some(long)).unwrap();
    index.file(USER, B, Some(long));
    let written_at = Instant::now();
    if !s.lists_users() {
        assert!(index.list(USER).is_err());
        return;
    }
    assert_eq!(index.list(USER).unwrap(), [A, B]);
    s.wait_out(&[A], short, written_at);
    // An entry's ttl runs from its filing, a moment after the record's save (Redis), so it
    // may outlive the record by that moment; then it goes, and the live session stays.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = index.list(USER).unwrap();
        if listed == [B] {
            break;
        }
        assert_eq!(listed, [A, B]);
        assert!(Instant::now() < deadline, "an expired session stays listed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn generations_revoke_only_where_the_store_cannot_list(s: &Subject) {
    let generations = Generations(&*s.store);
    assert_eq!(generations.in_use(), !s.lists_users());
    if !generations.in_use() {
        for e in [
            generations.current(USER).unwrap_err(),
            generations.bump(USER).unwrap_err(),
        ] {
            assert_eq!(e.kind, StoreErrorKind::Unsupported, "{e}");
        }
        return;
    }
    assert_eq!(generations.current(USER).unwrap(), None);
    // Eight first bumps racing: every one moves the counter past all before it.
    let store: Arc<dyn SessionStore> = s.store.clone();
    let bumps: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || Generations(&*store).bump(USER).unwrap())
        })
        .collect();
    let mut afters: Vec<u64> = bumps.into_iter().map(|b| b.join().unwrap().after).collect();
    afters.sort_unstable();
    afters.dedup();
    assert_eq!(afters.len(), 8, "{afters:?}");
    let now = generations.current(USER).unwrap().unwrap();
    assert_eq!(now, *afters.last().unwrap());
    let next = generations.bump(USER).unwrap();
    assert_eq!((next.before, next.after), (now, now + 1));
    // Counters are per user.
    assert_eq!(generations.current(OTHER_USER).unwrap(), None);
}
