//! The sessions of one user across a store: listing them, ending all of them but one ("log
//! out everywhere else"), and ending one by the public id its owner's list shows. Pure
//! orchestration over [`UserSessionStore`]; the binding crate's engine adapts its stores to it
//! and logs what came of each call.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::codec;
use crate::digest::Secrets;
use crate::ids;
use crate::lifecycle;
use crate::policy::Policy;
use crate::stores::{StoreError, StoreErrorKind};
use crate::users::{self, Bump};

/// How often `end_all_but` tries to carry `keep` over while other saves of it keep getting in
/// first.
const CARRY_OVER_ATTEMPTS: usize = 3;

/// What the per-user operations need of a store (any store a manager takes).
pub trait UserSessionStore {
    /// The store as its errors name it.
    fn describe(&self) -> String;
    /// A record by id, up to the manager's read limit.
    fn load(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether there was a record.
    fn delete(&self, session_id: &str) -> Result<bool, StoreError>;
    fn user_session_ids(&self, user_key: &str) -> Result<Vec<String>, StoreError>;
    fn unindex_user(&self, user_key: &str, session_id: &str) -> Result<(), StoreError>;
    /// Whether sessions are ended by moving their owner's generation on (no index to list
    /// them: memcached).
    fn revokes_by_generation(&self) -> bool;
    fn bump_user_generation(&self, user_key: &str) -> Result<Bump, StoreError>;
    /// Writes only if the record still is `expected`: whether it was written (`false`: another
    /// writer got there first).
    fn save_if_unchanged(
        &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    ) -> Result<bool, StoreError>;
}

/// One session of a user, as `list` gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub id: String,
    pub public_id: String,
    pub created: u64,
    pub last_seen: Option<u64>,
    pub info: Map<String, Value>,
}

/// What `end_all_but` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// How many sessions ended, as far as the store can tell (0 where it revokes by
    /// generation: unknown).
    pub count: usize,
    /// `keep`'s record as rewritten under the owner's new generation, and that generation.
    pub kept: Option<(Vec<u8>, u64)>,
    /// How the owner's generation moved, where the store revokes by generation.
    pub bump: Option<Bump>,
}

/// The per-user operations on one store, with the manager's secrets and expiry settings.
pub struct UserSessions<'a, S: UserSessionStore + ?Sized> {
    pub store: &'a S,
    pub secrets: &'a Secrets,
    pub policy: &'a Policy,
    /// The clock, in seconds since the epoch (`time::now`; a fixed one in tests).
    pub now: fn() -> u64,
}

impl<S: UserSessionStore + ?Sized> UserSessions<'_, S> {
    /// A record by id, refused when it is bound to another id (`lifecycle::check_loaded`).
    pub fn load_checked(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let found = self.store.load(session_id);
        lifecycle::check_loaded(session_id, found, || self.store.describe())
    }

    /// Removes a record, then its entry in its owner's index; whether there was a record.
    pub fn delete(&self, session_id: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let existed = self.store.delete(session_id)?;
        if let Some(owner) = owner {
            self.store
                .unindex_user(&users::user_key(owner), session_id)?;
        }
        Ok(existed)
    }

    /// The live sessions `user_id` owns, oldest first. Entries whose record is gone (expired,
    /// destroyed) or now belongs to someone else leave the index as they are found.
    pub fn list(&self, user_id: &str) -> Result<Vec<Listed>, StoreError> {
        let key = users::user_key(user_id);
        let now = (self.now)();
        let mut listed = Vec::new();
        for id in self.store.user_session_ids(&key)? {
            let blob = match self.load_checked(&id) {
                Ok(Some(blob)) => blob,
                Ok(None) => {
                    self.store.unindex_user(&key, &id)?;
                    continue;
                }
                // One bad record hides that session, not the others; a crossed answer fails
                // the listing as the store being down does.
                Err(e)
                    if !matches!(
                        e.kind,
                        StoreErrorKind::Unavailable | StoreErrorKind::Crossed
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            let Ok(record) = codec::decode(&blob) else {
                continue;
            };
            if record.extras.user.as_deref() != Some(user_id) {
                self.store.unindex_user(&key, &id)?;
                continue;
            }
            if self
                .policy
                .for_session(&record.extras.expiry)
                .lifetime_over(record.created, now)
            {
                continue;
            }
            listed.push(Listed {
                public_id: users::public_id(self.secrets, &key, &id),
                id,
                created: record.created,
                last_seen: record.extras.seen,
                info: record.extras.info,
            });
        }
        listed.sort_by(|a, b| (a.created, &a.public_id).cmp(&(b.created, &b.public_id)));
        Ok(listed)
    }

    /// Ends every session of `user_id` but `keep` (a session id): how many, and the record
    /// `keep` was carried over with (stores that revoke by generation).
    pub fn end_all_but(&self, user_id: &str, keep: Option<&str>) -> Result<Ended, StoreError> {
        if self.store.revokes_by_generation() {
            return self.end_by_generation(user_id, keep);
        }
        let mut count = 0;
        for session in self.list(user_id)? {
            if Some(session.id.as_str()) != keep {
                self.delete(&session.id, Some(user_id))?;
                count += 1;
            }
        }
        Ok(Ended {
            count,
            kept: None,
            bump: None,
        })
    }

    /// `end_all_but` where no index lists the sessions (memcached): the owner's generation
    /// moves on, which ends every record written under an older one as it is next loaded;
    /// `keep`, when a live session of the user, is rewritten under the new one. How many ended
    /// is not known: the count is 0.
    fn end_by_generation(&self, user_id: &str, keep: Option<&str>) -> Result<Ended, StoreError> {
        let bump = self.store.bump_user_generation(&users::user_key(user_id))?;
        let kept = match keep {
            Some(id) => self.carry_over(id, user_id, bump)?,
            None => None,
        };
        Ok(Ended {
            count: 0,
            kept,
            bump: Some(bump),
        })
    }

    /// Rewrites `keep`'s record under the new generation when it is a live session of the
    /// user; the record written, or `None`. A compare-and-set, so a save of it racing this is
    /// not undone (and one that gets in first is read again).
    fn carry_over(
        &self, keep: &str, user_id: &str, bump: Bump,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        for _ in 0..CARRY_OVER_ATTEMPTS {
            let Some(blob) = self.load_checked(keep)? else {
                return Ok(None);
            };
            let Ok(record) = codec::decode(&blob) else {
                return Ok(None);
            };
            if !users::survives_bump(&record.extras, user_id, bump) {
                return Ok(None);
            }
            let ttl = self
                .policy
                .for_session(&record.extras.expiry)
                .ttl(record.created, (self.now)());
            let extras = codec::Extras {
                generation: Some(bump.after),
                ..record.extras
            };
            let rewritten = codec::encode_with(keep, record.created, &record.data, &extras);
            if self
                .store
                .save_if_unchanged(keep, Some(&blob), &rewritten, ttl)?
            {
                return Ok(Some((rewritten, bump.after)));
            }
        }
        Err(StoreError {
            store: self.store.describe(),
            cause: format!(
                "the record of session {} kept changing while it was carried over to its \
                 owner's new generation",
                ids::log_token(keep)
            ),
            kind: StoreErrorKind::Unavailable,
        })
    }

    /// The session id a public id names, if it is a live session of the user it names.
    pub fn find_public_id(&self, public_id: &str) -> Result<Option<String>, StoreError> {
        let Some(key) = users::owner_of_public_id(public_id) else {
            return Ok(None);
        };
        Ok(self
            .store
            .user_session_ids(key)?
            .into_iter()
            .find(|id| users::is_public_id_of(self.secrets, public_id, id)))
    }

    /// Ends the session a public id names: its session id, and whether its record was there;
    /// `None` when it names none.
    pub fn end_public_id(&self, public_id: &str) -> Result<Option<(String, bool)>, StoreError> {
        let Some(id) = self.find_public_id(public_id)? else {
            return Ok(None);
        };
        let key = users::owner_of_public_id(public_id).unwrap_or_default();
        let existed = self.store.delete(&id)?;
        self.store.unindex_user(key, &id)?;
        Ok(Some((id, existed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    const NOW: u64 = 1_800_000_000;

    fn now() -> u64 {
        NOW
    }

    /// A store in memory: records, a per-user index or (`by_generation`) a counter per user.
    #[derive(Default)]
    struct Store {
        records: RefCell<HashMap<String, Vec<u8>>>,
        index: RefCell<HashMap<String, Vec<String>>>,
        by_generation: bool,
        generations: RefCell<HashMap<String, u64>>,
        /// Saves of another request that get in before each compare-and-set (a race).
        racing_saves: Cell<usize>,
    }

    impl UserSessionStore for Store {
        fn describe(&self) -> String {
            "test store".to_owned()
        }
        fn load(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.records.borrow().get(session_id).cloned())
        }
        fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
            Ok(self.records.borrow_mut().remove(session_id).is_some())
        }
        fn user_session_ids(&self, user_key: &str) -> Result<Vec<String>, StoreError> {
            Ok(self
                .index
                .borrow()
                .get(user_key)
                .cloned()
                .unwrap_or_default())
        }
        fn unindex_user(&self, user_key: &str, session_id: &str) -> Result<(), StoreError> {
            if let Some(ids) = self.index.borrow_mut().get_mut(user_key) {
                ids.retain(|id| id != session_id);
            }
            Ok(())
        }
        fn revokes_by_generation(&self) -> bool {
            self.by_generation
        }
        fn bump_user_generation(&self, user_key: &str) -> Result<Bump, StoreError> {
            let mut generations = self.generations.borrow_mut();
            let before = generations.get(user_key).copied().unwrap_or(0);
            generations.insert(user_key.to_owned(), before + 1);
            Ok(Bump {
                before,
                after: before + 1,
            })
        }
        fn save_if_unchanged(
            &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], _ttl: Option<Duration>,
        ) -> Result<bool, StoreError> {
            if self.racing_saves.get() > 0 {
                self.racing_saves.set(self.racing_saves.get() - 1);
                return Ok(false);
            }
            let mut records = self.records.borrow_mut();
            if records.get(session_id).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            records.insert(session_id.to_owned(), blob.to_vec());
            Ok(true)
        }
    }

    impl Store {
        /// Stores a session of `user` created at `created`, filed in its index.
        fn put(&self, id: &str, user: Option<&str>, created: u64, generation: Option<u64>) {
            let extras = codec::Extras {
                user: user.map(str::to_owned),
                generation,
                ..codec::Extras::default()
            };
            let data = json!({ "id": id }).as_object().cloned().unwrap();
            let blob = codec::encode_with(id, created, &data, &extras);
            self.records.borrow_mut().insert(id.to_owned(), blob);
            if let Some(user) = user {
                self.index
                    .borrow_mut()
                    .entry(users::user_key(user))
                    .or_default()
                    .push(id.to_owned());
            }
        }
    }

    fn secrets() -> Secrets {
        Secrets::new(vec![b"a secret of at least thirty-two bytes!!".to_vec()]).unwrap()
    }

    fn sid(n: u8) -> String {
        format!("{n:032x}")
    }

    fn run<T>(store: &Store, policy: Policy, f: impl FnOnce(&UserSessions<'_, Store>) -> T) -> T {
        let secrets = secrets();
        f(&UserSessions {
            store,
            secrets: &secrets,
            policy: &policy,
            now,
        })
    }

    #[test]
    fn a_users_sessions_are_listed_oldest_first_and_stale_entries_leave_the_index() {
        let store = Store::default();
        store.put(&sid(1), Some("ann"), NOW - 10, None);
        store.put(&sid(2), Some("ann"), NOW - 20, None);
        store.put(&sid(3), Some("ann"), NOW - 30, None);
        store.records.borrow_mut().remove(&sid(3)); // expired
        store.put(&sid(4), Some("bob"), NOW, None);
        store
            .index
            .borrow_mut()
            .get_mut(&users::user_key("ann"))
            .unwrap()
            .push(sid(4)); // now bob's
        let listed = run(&store, Policy::default(), |users| users.list("ann")).unwrap();
        assert_eq!(
            listed.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
            vec![sid(2), sid(1)]
        );
        assert_eq!(
            store.user_session_ids(&users::user_key("ann")).unwrap(),
            vec![sid(1), sid(2)]
        );
        assert_ne!(listed[0].public_id, listed[0].id);
    }

    #[test]
    fn sessions_past_their_lifetime_are_not_listed() {
        let store = Store::default();
        store.put(&sid(1), Some("ann"), NOW - 100, None);
        store.put(&sid(2), Some("ann"), NOW - 10, None);
        let policy = Policy {
            lifetime: Some(Duration::from_secs(50)),
            ..Policy::default()
        };
        let listed = run(&store, policy, |users| users.list("ann")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, sid(2));
    }

    #[test]
    fn a_record_bound_to_another_id_fails_the_listing() {
        let store = Store::default();
        store.put(&sid(1), Some("ann"), NOW, None);
        let other = store.records.borrow()[&sid(1)].clone();
        store.put(&sid(2), Some("ann"), NOW, None);
        store.records.borrow_mut().insert(sid(2), other);
        let error = run(&store, Policy::default(), |users| users.list("ann")).unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::Crossed);
    }

    #[test]
    fn ending_all_but_one_deletes_the_others_and_unindexes_them() {
        let store = Store::default();
        for n in 1..=3 {
            store.put(&sid(n), Some("ann"), NOW - u64::from(n), None);
        }
        store.put(&sid(9), Some("bob"), NOW, None);
        let keep = sid(2);
        let ended = run(&store, Policy::default(), |users| {
            users.end_all_but("ann", Some(&keep))
        })
        .unwrap();
        assert_eq!(
            ended,
            Ended {
                count: 2,
                kept: None,
                bump: None
            }
        );
        let records = store.records.borrow();
        assert!(records.contains_key(&sid(2)) && records.contains_key(&sid(9)));
        assert_eq!(records.len(), 2);
        assert_eq!(
            store.user_session_ids(&users::user_key("ann")).unwrap(),
            vec![sid(2)]
        );
    }

    #[test]
    fn by_generation_the_kept_session_is_rewritten_under_the_new_generation() {
        let store = Store {
            by_generation: true,
            ..Store::default()
        };
        store.put(&sid(1), Some("ann"), NOW, Some(0));
        let keep = sid(1);
        let ended = run(&store, Policy::default(), |users| {
            users.end_all_but("ann", Some(&keep))
        })
        .unwrap();
        assert_eq!(
            (ended.count, ended.bump.map(|bump| bump.after)),
            (0, Some(1))
        );
        let (blob, generation) = ended.kept.expect("carried over");
        assert_eq!(generation, 1);
        assert_eq!(store.records.borrow()[&sid(1)], blob);
        assert_eq!(codec::decode(&blob).unwrap().extras.generation, Some(1));
    }

    #[test]
    fn by_generation_a_session_of_someone_else_is_not_carried_over() {
        let store = Store {
            by_generation: true,
            ..Store::default()
        };
        store.put(&sid(1), Some("bob"), NOW, Some(0));
        let keep = sid(1);
        let ended = run(&store, Policy::default(), |users| {
            users.end_all_but("ann", Some(&keep))
        })
        .unwrap();
        assert_eq!(ended.kept, None);
        assert_eq!(ended.bump.map(|bump| bump.after), Some(1));
    }

    #[test]
    fn a_carry_over_that_keeps_losing_the_race_fails_as_unavailable() {
        let store = Store {
            by_generation: true,
            ..Store::default()
        };
        store.put(&sid(1), Some("ann"), NOW, Some(0));
        store.racing_saves.set(CARRY_OVER_ATTEMPTS - 1);
        let keep = sid(1);
        let won = run(&store, Policy::default(), |users| {
            users.end_all_but("ann", Some(&keep))
        })
        .unwrap();
        assert!(won.kept.is_some(), "the last attempt gets in");
        store.racing_saves.set(CARRY_OVER_ATTEMPTS);
        let error = run(&store, Policy::default(), |users| {
            users.end_all_but("ann", Some(&keep))
        })
        .unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::Unavailable);
        assert!(
            !error.cause.contains(&keep),
            "no id in an error: {}",
            error.cause
        );
    }

    #[test]
    fn a_public_id_ends_only_the_session_it_names() {
        let store = Store::default();
        store.put(&sid(1), Some("ann"), NOW, None);
        store.put(&sid(2), Some("ann"), NOW, None);
        let public = users::public_id(&secrets(), &users::user_key("ann"), &sid(1));
        let ended = run(&store, Policy::default(), |users| {
            users.end_public_id(&public)
        })
        .unwrap();
        assert_eq!(ended, Some((sid(1), true)));
        assert!(!store.records.borrow().contains_key(&sid(1)));
        assert!(store.records.borrow().contains_key(&sid(2)));
        let again = run(&store, Policy::default(), |users| {
            users.end_public_id(&public)
        })
        .unwrap();
        assert_eq!(again, None);
        let malformed = run(&store, Policy::default(), |users| {
            users.end_public_id("nope")
        });
        assert_eq!(malformed.unwrap(), None);
    }
}
