//! `CookieStore`: sessions kept in their visitors' cookies, sealed (see `sealed_cookie`), so
//! the server keeps no record at all. As a [`SessionStore`] it is the place the engine's
//! record operations go and find nothing to do: a load's record comes from the cookie, a save's
//! goes out in it, and a delete is the cookie cleared.
//!
//! What a cookie cannot do by itself is be ended from elsewhere: a copied cookie stays good
//! until it expires. Given a revocation store (any server store), a per-user generation
//! counter kept there ends all of a user's cookie sessions at once, as memcached's does.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::capabilities::Revocation;
use super::{LoadResult, SessionStore, StoreError, StoreErrorKind, StoreResult};
use crate::codec::{self, Extras};
use crate::users::{self, Bump};

/// How often a bump retries a compare-and-set that another bump got in before.
const BUMP_ATTEMPTS: usize = 16;

/// Sessions sealed in their cookies; optionally a server store for per-user revocation.
pub struct CookieStore {
    revocation: Option<Arc<dyn SessionStore>>,
}

impl CookieStore {
    pub fn new(revocation: Option<Arc<dyn SessionStore>>) -> Self {
        Self { revocation }
    }

    /// The revocation store, when one was given.
    pub fn revocation_store(&self) -> Option<&dyn SessionStore> {
        self.revocation.as_deref()
    }
}

/// Where a user's counter lives in a revocation store without counters of its own: a record
/// under an id of the session-id shape (so every store takes it), derived from the user key
/// under a label of its own (so it can never be a session's id).
pub fn counter_id(user_key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"tornsession revocation counter\0");
    hash.update(user_key.as_bytes());
    hex::encode(&hash.finalize()[..crate::ids::SESSION_ID_LEN / 2])
}

/// A counter as a record of the codec (so a store's cleanup or a listing reads it as one, with
/// no expiry of its own).
fn counter_record(id: &str, generation: u64) -> Vec<u8> {
    let mut data = Map::new();
    data.insert("generation".to_owned(), Value::from(generation));
    codec::encode_with(id, crate::time::now(), &data, &Extras::default())
}

fn counter_of(blob: &[u8]) -> Option<u64> {
    codec::decode(blob).ok()?.data.get("generation")?.as_u64()
}

impl SessionStore for CookieStore {
    // The record operations: nothing is kept here, so a load finds nothing (the engine never
    // asks: the record came with the cookie), and every write and delete succeeds.
    fn load(&self, _session_id: &str, _max_bytes: usize) -> LoadResult {
        Ok(None)
    }

    fn save(&self, _session_id: &str, _blob: &[u8], _ttl: Option<Duration>) -> StoreResult<()> {
        Ok(())
    }

    fn save_if_unchanged(
        &self, _session_id: &str, _expected: Option<&[u8]>, _blob: &[u8], _ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        Ok(true)
    }

    fn save_if_exists(
        &self, _session_id: &str, _blob: &[u8], _ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        Ok(true)
    }

    /// The cookie is cleared by the engine; a regeneration must see "there was one".
    fn delete(&self, _session_id: &str) -> StoreResult<bool> {
        Ok(true)
    }

    fn touch(&self, _session_id: &str, _ttl: Duration) -> StoreResult<()> {
        Ok(())
    }

    fn revocation(&self) -> Option<&dyn Revocation> {
        self.revocation.as_ref().map(|_| self as &dyn Revocation)
    }

    fn keeps_sessions_in_cookies(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        match &self.revocation {
            Some(store) => format!("CookieStore(revocation={})", store.describe()),
            None => "CookieStore()".to_owned(),
        }
    }

    /// Only the revocation store is ever waited on.
    fn blocks(&self) -> bool {
        self.revocation.as_ref().is_some_and(|store| store.blocks())
    }

    fn loads_inline(&self) -> bool {
        self.revocation
            .as_ref()
            .is_none_or(|store| store.loads_inline())
    }

    fn saves_inline(&self) -> bool {
        self.revocation
            .as_ref()
            .is_none_or(|store| store.saves_inline())
    }
}

impl Revocation for CookieStore {
    fn why_no_index(&self) -> &'static str {
        "a CookieStore keeps each session in its visitor's browser, where nothing can list them"
    }

    fn user_generation(&self, user_key: &str) -> StoreResult<Option<u64>> {
        let store = self.counters()?;
        if let Some(own) = store.revocation() {
            return own.user_generation(user_key);
        }
        let id = counter_id(user_key);
        match store.load(&id, super::DEFAULT_MAX_READ_SIZE)? {
            None => Ok(None),
            Some(blob) => counter_of(&blob).map(Some).ok_or_else(|| {
                StoreError::new(store, "a revocation counter holds something not a counter")
            }),
        }
    }

    // A store with counters of its own (memcached) bumps atomically; elsewhere a
    // compare-and-set on the counter's record, retried when another bump got in first. A store
    // that cannot compare (a Python store without compare_and_set) is written plainly: two bumps
    // racing may then both end at the same generation, which still ends every session before.
    fn bump_user_generation(&self, user_key: &str) -> StoreResult<Bump> {
        let store = self.counters()?;
        if let Some(own) = store.revocation() {
            return own.bump_user_generation(user_key);
        }
        let id = counter_id(user_key);
        for _ in 0..BUMP_ATTEMPTS {
            let old = store.load(&id, super::DEFAULT_MAX_READ_SIZE)?;
            let before = match &old {
                Some(blob) => counter_of(blob).ok_or_else(|| {
                    StoreError::new(store, "a revocation counter holds something not a counter")
                })?,
                None => 0,
            };
            let after = match old {
                Some(_) => before.saturating_add(1),
                None => users::first_generation(crate::time::now_micros()),
            };
            let record = counter_record(&id, after);
            match store.save_if_unchanged(&id, old.as_deref(), &record, None) {
                Ok(true) => return Ok(Bump { before, after }),
                Ok(false) => continue,
                Err(e) if e.kind == StoreErrorKind::Unsupported => {
                    store.save(&id, &record, None)?;
                    return Ok(Bump { before, after });
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::new(
            store,
            "the revocation counter kept changing under this bump; try again",
        ))
    }
}

impl CookieStore {
    fn counters(&self) -> StoreResult<&dyn SessionStore> {
        self.revocation
            .as_deref()
            .ok_or_else(|| without_revocation_store(self.describe()))
    }
}

/// What a `CookieStore` without a revocation store answers to per-user operations.
pub fn without_revocation_store(store: String) -> StoreError {
    StoreError {
        store,
        cause: "a CookieStore keeps each session in its visitor's browser, where nothing can list \
                them (user_sessions(), destroy_session()); ending all of a user's sessions \
                (destroy_user_sessions()) needs a store for their generation counters: \
                CookieStore(revocation=<a server store>)"
            .to_owned(),
        kind: StoreErrorKind::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::MemoryStore;

    fn with_memory() -> CookieStore {
        CookieStore::new(Some(Arc::new(MemoryStore::new(
            1000.try_into().unwrap(),
            (1 << 20).try_into().unwrap(),
        ))))
    }

    #[test]
    fn records_go_nowhere_and_a_delete_always_finds_one() {
        let store = CookieStore::new(None);
        let id = "0123456789abcdef0123456789abcdef";
        store.save(id, b"{}", None).unwrap();
        assert_eq!(store.load(id, 100).unwrap(), None);
        assert!(store.delete(id).unwrap());
        assert!(store.save_if_exists(id, b"{}", None).unwrap());
        assert!(store.keeps_sessions_in_cookies());
        assert!(!store.blocks());
    }

    #[test]
    fn without_a_revocation_store_user_operations_are_unsupported() {
        let store: &dyn SessionStore = &CookieStore::new(None);
        assert!(!store.revokes_by_generation());
        let error = store.bump_user_generation("u").unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::Unsupported);
        assert!(error.to_string().contains("revocation="), "{error}");
        let error = store.user_session_ids("u").unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::Unsupported);
        assert!(error.to_string().contains("revocation="), "{error}");
    }

    #[test]
    fn a_revocation_store_keeps_counters_that_only_go_up() {
        let cookies = with_memory();
        let store: &dyn SessionStore = &cookies;
        assert!(store.revokes_by_generation());
        assert_eq!(store.user_generation("u").unwrap(), None);
        let first = store.bump_user_generation("u").unwrap();
        assert_eq!(first.before, 0);
        assert!(first.after > 1_000_000, "a new counter starts at the time");
        let second = store.bump_user_generation("u").unwrap();
        assert_eq!(second.before, first.after);
        assert_eq!(second.after, first.after + 1);
        assert_eq!(store.user_generation("u").unwrap(), Some(second.after));
        assert_eq!(store.user_generation("other").unwrap(), None);
        // Listing stays impossible: the sessions are in browsers.
        let error = store.user_session_ids("u").unwrap_err();
        assert_eq!(error.kind, StoreErrorKind::Unsupported);
        assert!(error.to_string().contains("browser"), "{error}");
    }

    #[test]
    fn a_counter_is_a_record_under_an_id_no_session_has() {
        let id = counter_id(&users::user_key("u"));
        assert!(crate::ids::is_valid_session_id(&id));
        assert_ne!(id, counter_id(&users::user_key("v")));
        let record = counter_record(&id, 42);
        assert_eq!(counter_of(&record), Some(42));
        codec::check_binding(&record, &id).unwrap();
    }
}
