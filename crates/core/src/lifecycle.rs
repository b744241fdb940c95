//! The session lifecycle: every decision between a request's cookies and the store, with no
//! PyO3 in it, so the rules are tested here directly and every API path (the drop-in
//! `TornadoSession`, `manager.get/set(handler)`, the mixin, the async methods) takes the same
//! steps through `engine`:
//!
//! 1. [`verify`] the cookies: a genuine id (and whether its cookies must be sent again), none,
//!    or a forgery;
//! 2. [`open`] what the store answered: the session, or a fresh one (and why, and whether the
//!    old record must be deleted);
//! 3. [`plan_save`]: nothing when nothing changed, else the record and *how* to write it, so a
//!    save never brings back a record another request destroyed or regenerated;
//! 4. [`SessionState::record_write`] what came of the write, and [`SessionState::cookies_to_send`];
//! 5. [`SessionState::destroy`] and [`SessionState::regenerate`].

use std::time::Duration;

use serde_json::{Map, Value};

use crate::codec::{self, Extras};
use crate::digest::{DigestCheck, Secrets};
use crate::ids;
use crate::policy::{seen_stamp, Policy};
use crate::stores::{StoreError, StoreErrorKind};
use crate::users::Bump;

/// Re-send the cookies of an active session once they are this old, well inside Tornado's
/// 31-day limit on signed cookies and the 30-day default cookie expiry.
pub const COOKIE_REFRESH_AGE: u64 = 24 * 3600;

/// What a request's cookies say, before the store is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieCheck {
    /// No session cookie: a new session.
    Absent,
    /// A cookie that is not a genuine pair (forged, foreign, malformed, digest missing).
    Invalid,
    /// A genuine session id.
    Verified(Verified),
}

/// A genuine session id, and whether its cookies must be sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub id: String,
    /// Signed with an older secret or in the original's format, or the id cookie is getting old.
    pub cookies_due: bool,
    /// The session's record, when the cookie itself carried it sealed (`CookieStore`): the
    /// load is then this, not a store's answer.
    pub sealed: Option<Vec<u8>>,
}

/// Checks an id and digest as read from the request. `id_signed_at` is when the signed id
/// cookie was made (when known): one rule, for every API path, decides when it is re-sent.
pub fn verify(
    secrets: &Secrets, id: Option<&str>, digest: Option<&str>, id_signed_at: Option<u64>, now: u64,
) -> CookieCheck {
    let Some(id) = id else {
        return CookieCheck::Absent;
    };
    let Some(digest) = digest else {
        return CookieCheck::Invalid;
    };
    if !ids::is_valid_session_id(id) {
        return CookieCheck::Invalid;
    }
    let outdated = match secrets.verify(id, digest.as_bytes()) {
        DigestCheck::Invalid => return CookieCheck::Invalid,
        DigestCheck::Current => false,
        DigestCheck::Outdated => true,
    };
    CookieCheck::Verified(Verified {
        id: id.to_owned(),
        cookies_due: outdated || cookie_aging(id_signed_at, now),
        sealed: None,
    })
}

/// Whether a cookie made at `signed_at` (when known) is old enough to be sent again: the one
/// refresh rule of both cookie formats.
pub fn cookie_aging(signed_at: Option<u64>, now: u64) -> bool {
    signed_at.is_some_and(|signed| now.saturating_sub(signed) > COOKIE_REFRESH_AGE)
}

/// What a session knows about itself between load and save, apart from its id and data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionState {
    /// When the session was created, in seconds since the epoch (`None`: not yet known; the
    /// first save decides).
    pub created: Option<u64>,
    /// The record as the store held it when this request loaded or last saved it; `None` when
    /// no record exists for this session's id as far as this request knows.
    pub stored: Option<Vec<u8>>,
    /// Whether the cookies must be sent once a record exists.
    pub cookies_due: bool,
    /// Set by [`SessionState::destroy`]: an empty session is not written (a logout leaves no
    /// record behind), a non-empty one is a new session.
    pub destroyed: bool,
    /// Another request removed the record after this one loaded it (a logout or a
    /// regeneration): nothing of this session is written or sent again.
    pub gone: bool,
    /// Owner, info and own expiry, saved with the record.
    pub extras: Extras,
    /// The owner the stored record is indexed under, if any (so a change of owner, a destroy
    /// or a regeneration takes the id out of that owner's index).
    pub stored_user: Option<String>,
}

impl SessionState {
    /// A new session, not stored yet.
    pub fn fresh(now: u64) -> Self {
        Self {
            created: Some(now),
            stored: None,
            cookies_due: true,
            destroyed: false,
            gone: false,
            extras: Extras::default(),
            stored_user: None,
        }
    }

    /// A session opened from its stored record.
    pub fn opened(created: u64, blob: Vec<u8>, cookies_due: bool) -> Self {
        Self {
            created: Some(created),
            stored: Some(blob),
            cookies_due,
            destroyed: false,
            gone: false,
            extras: Extras::default(),
            stored_user: None,
        }
    }

    /// The record's extras as this session will save them at `now`: an owned session carries
    /// its "last seen" stamp.
    pub fn extras_for_save(&self, now: u64) -> Extras {
        let mut extras = self.extras.clone();
        if extras.user.is_some() {
            extras.seen = Some(seen_stamp(now));
        }
        extras
    }

    /// The limits this session lives by.
    pub fn policy(&self, manager: &Policy) -> Policy {
        manager.for_session(&self.extras.expiry)
    }

    /// Whether a record exists for this session's id (loaded or saved by this request).
    pub fn is_stored(&self) -> bool {
        self.stored.is_some() && !self.gone
    }

    /// Whether the cookies go out now: they are due and a record exists for them to name. A
    /// session whose record is gone, or that was never stored, gets no cookie.
    pub fn cookies_to_send(&self) -> bool {
        self.cookies_due && self.is_stored()
    }

    /// Logout: the data goes, the id is replaced by the caller. Returns whether the old record
    /// must be deleted. A write after this stores a new session and sends its cookies.
    pub fn destroy(&mut self, now: u64) -> bool {
        let delete = self.is_stored();
        *self = Self {
            destroyed: true,
            ..Self::fresh(now)
        };
        delete
    }

    /// `set_user`: a new owner's generation is not known until the save asks the store for
    /// it; the same owner keeps the one the session was loaded with.
    pub fn set_owner(&mut self, user_id: String) {
        if self.extras.user.as_deref() != Some(user_id.as_str()) {
            self.extras.generation = None;
        }
        self.extras.user = Some(user_id);
    }

    /// A "log out everywhere" that kept this session rewrote its record under the owner's new
    /// generation: later saves carry that one, and compare against the record as it now is.
    pub fn carried_over(&mut self, blob: Vec<u8>, generation: u64) {
        if self.is_stored() {
            self.stored = Some(blob);
            self.extras.generation = Some(generation);
        }
    }

    /// A "log out everywhere" of `user_id` that keeps this session, kept in its cookie
    /// (`CookieStore`): with no record elsewhere to rewrite, its own moves to the new
    /// generation and its cookie is due, so this request's response carries it on. Whether
    /// it was carried over (it is the user's, and was not ended by an earlier bump).
    pub fn carry_over_sealed(&mut self, session_id: &str, user_id: &str, bump: Bump) -> bool {
        let Some(stored) = self.stored.as_deref().filter(|_| !self.gone) else {
            return false;
        };
        if !crate::users::survives_bump(&self.extras, user_id, bump) {
            return false;
        }
        let Ok(blob) = codec::with_generation(session_id, stored, bump.after) else {
            return false;
        };
        self.carried_over(blob, bump.after);
        self.cookies_due = true;
        true
    }

    /// The owner whose index the record of this session must leave when it is deleted.
    pub fn indexed_owner(&self) -> Option<String> {
        self.stored_user.clone()
    }

    /// A new id for the same data (the caller replaces the id): returns whether the old record
    /// must be deleted, *before* the data is saved under the new id: if that deletion finds no
    /// record, another request ended the session meanwhile and the caller calls
    /// [`SessionState::end_elsewhere`], so regenerating never revives it. A session already
    /// known to be gone stays gone.
    pub fn regenerate(&mut self) -> bool {
        if self.gone {
            return false;
        }
        let delete = self.stored.take().is_some();
        // The new id is not indexed until it is saved; the old one leaves with its record.
        self.stored_user = None;
        self.cookies_due = true;
        delete
    }

    /// Records what came of writing `plan`; true when this was the session's first write.
    pub fn record_write(&mut self, plan: SavePlan, outcome: WriteOutcome) -> bool {
        match outcome {
            WriteOutcome::Written => {
                self.created = Some(plan.created);
                let first = self.stored.is_none();
                self.stored = Some(plan.blob);
                self.destroyed = false;
                if self.extras.user == plan.user {
                    self.extras.generation = plan.generation;
                }
                self.stored_user = plan.user;
                first
            }
            WriteOutcome::Gone => {
                self.end_elsewhere();
                false
            }
        }
    }

    /// Another request removed the record (a logout, a regeneration): nothing of this session
    /// is written or sent any more.
    pub fn end_elsewhere(&mut self) {
        self.gone = true;
        self.stored = None;
        self.stored_user = None;
        self.cookies_due = false;
    }
}

/// Why a load ended in a fresh session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreshReason {
    /// No record: expired, destroyed, or never saved.
    Missing,
    /// The store has a record it cannot read (a planted or damaged file, say).
    Unreadable(String),
    /// The record is larger than the read limit.
    Oversized(String),
    /// The record is not a tornsession record of a known version.
    Corrupt(String),
    /// The record is one of the original module's pickles, never loaded.
    Pickle,
    /// The session outlived the manager's `lifetime`.
    LifetimeOver,
    /// Its owner's sessions were ended by generation since it was saved (memcached's "log out
    /// everywhere").
    Revoked,
}

/// What the store answered for a verified id, as the lifecycle distinguishes it. A store that
/// failed as a whole is an error before this point: it never becomes a fresh session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Record(Vec<u8>),
    Missing,
    Unreadable(String),
    Oversized(String),
    /// An owned record written under an older generation than its owner's counter (see
    /// `users::is_revoked`): ended, and deleted as it is found.
    Revoked,
}

/// What a store answered for `session_id`, once the record's binding is checked: a record bound
/// to another id (the store or its connection answered with another key's value) is a
/// `Crossed` error, so it is never served, nor deleted as unreadable. Every load of a record by
/// id goes through this before anything in the record is looked at; `store` names the store.
pub fn check_loaded(
    session_id: &str, found: Result<Option<Vec<u8>>, StoreError>, store: impl FnOnce() -> String,
) -> Result<Option<Vec<u8>>, StoreError> {
    if let Ok(Some(blob)) = &found {
        if let Err(crossed) = codec::check_binding(blob, session_id) {
            return Err(StoreError {
                store: store(),
                cause: format!("load of session {}: {crossed}", ids::log_token(session_id)),
                kind: StoreErrorKind::Crossed,
            });
        }
    }
    found
}

/// What a load comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    Existing {
        state: SessionState,
        data: Map<String, Value>,
    },
    /// A fresh session with a new id (so a bad or expired record is never written over under
    /// the old one); `delete_old` when the old record must be removed.
    Fresh {
        state: SessionState,
        why: FreshReason,
        delete_old: bool,
    },
}

/// Turns what the store answered for `verified` into the session.
pub fn open(policy: &Policy, verified: &Verified, fetched: Fetched, now: u64) -> Opened {
    let fresh = |why, delete_old| Opened::Fresh {
        state: SessionState::fresh(now),
        why,
        delete_old,
    };
    let blob = match fetched {
        Fetched::Record(blob) => blob,
        Fetched::Missing => return fresh(FreshReason::Missing, false),
        Fetched::Unreadable(why) => return fresh(FreshReason::Unreadable(why), false),
        Fetched::Oversized(why) => return fresh(FreshReason::Oversized(why), false),
        Fetched::Revoked => return fresh(FreshReason::Revoked, true),
    };
    let record = match codec::decode(&blob) {
        Ok(record) => record,
        Err(codec::CodecError::Pickle) => return fresh(FreshReason::Pickle, false),
        Err(e) => return fresh(FreshReason::Corrupt(e.to_string()), false),
    };
    if policy
        .for_session(&record.extras.expiry)
        .lifetime_over(record.created, now)
    {
        return fresh(FreshReason::LifetimeOver, true);
    }
    let mut state = SessionState::opened(record.created, blob, verified.cookies_due);
    state.stored_user = record.extras.user.clone();
    state.extras = record.extras;
    Opened::Existing {
        state,
        data: record.data,
    }
}

/// How a planned record must be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// A session not stored yet: create (or replace) the record.
    Create,
    /// A session loaded or saved before: only while its record still exists, so a `destroy()`
    /// or `regenerate()` by another request or process is never undone.
    IfExists,
    /// With conflict detection: only if the record still is this (`None`: there is none).
    IfUnchanged(Option<Vec<u8>>),
}

/// A decided write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavePlan {
    pub blob: Vec<u8>,
    pub created: u64,
    pub ttl: Option<Duration>,
    pub mode: WriteMode,
    /// The owner to index the record under once written.
    pub user: Option<String>,
    /// An earlier owner whose index the id must leave (the owner changed).
    pub unindex: Option<String>,
    /// The owner's generation the record is written under (`None`: not known yet; a store
    /// that revokes by generation asks for it before writing, see `engine`).
    pub generation: Option<u64>,
}

/// What came of a conditional write (a conflict is an error of its own, raised by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// The record no longer exists: another request ended or regenerated the session.
    Gone,
}

/// Why a session cannot be saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    #[error(
        "the session is {size} bytes serialized, over max_size={max_size}; the stored session \
         was not changed"
    )]
    TooLarge { size: usize, max_size: usize },
}

/// The creation time a save records: the known one, else now.
pub fn created_for_save(state: &SessionState, now: u64) -> u64 {
    state.created.unwrap_or(now)
}

/// Decides what to write for a session whose serialized form is `blob` (encoded with
/// [`created_for_save`]); `None` when nothing must be written.
pub fn plan_save(
    policy: &Policy, state: &SessionState, blob: Vec<u8>, data_is_empty: bool, now: u64,
) -> Result<Option<SavePlan>, SaveError> {
    if state.gone || state.stored.as_deref() == Some(blob.as_slice()) {
        return Ok(None);
    }
    if state.destroyed && data_is_empty && state.stored.is_none() {
        return Ok(None);
    }
    if let Some(max_size) = policy.max_size {
        if blob.len() > max_size {
            return Err(SaveError::TooLarge {
                size: blob.len(),
                max_size,
            });
        }
    }
    let mode = match (&state.stored, policy.detect_conflicts) {
        (stored, true) => WriteMode::IfUnchanged(stored.clone()),
        (Some(_), false) => WriteMode::IfExists,
        (None, false) => WriteMode::Create,
    };
    let created = created_for_save(state, now);
    let user = state.extras.user.clone();
    Ok(Some(SavePlan {
        ttl: state.policy(policy).ttl(created, now),
        created,
        blob,
        mode,
        unindex: state
            .stored_user
            .clone()
            .filter(|old| Some(old) != user.as_ref()),
        generation: state.extras.generation,
        user,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;
    /// The id test records are bound to.
    const SID: &str = "0123456789abcdef0123456789abcdef";

    fn secrets() -> Secrets {
        Secrets::new(vec![
            b"new secret of enough length, 32+".to_vec(),
            b"old".to_vec(),
        ])
        .unwrap()
    }

    fn id() -> String {
        ids::new_session_id().unwrap()
    }

    fn data(pairs: &[(&str, i64)]) -> Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect()
    }

    fn verified(cookies_due: bool) -> Verified {
        Verified {
            id: id(),
            cookies_due,
            sealed: None,
        }
    }

    #[test]
    fn verify_tells_absent_invalid_current_outdated_and_aging_apart() {
        let s = secrets();
        let id = id();
        let digest = s.sign(&id);
        assert_eq!(verify(&s, None, None, None, NOW), CookieCheck::Absent);
        assert_eq!(verify(&s, Some(&id), None, None, NOW), CookieCheck::Invalid);
        assert_eq!(
            verify(&s, Some(&id), Some("0".repeat(64).as_str()), None, NOW),
            CookieCheck::Invalid
        );
        assert_eq!(
            verify(&s, Some("../../etc/passwd"), Some(&digest), None, NOW),
            CookieCheck::Invalid
        );
        let current = verify(&s, Some(&id), Some(&digest), Some(NOW - 60), NOW);
        assert_eq!(
            current,
            CookieCheck::Verified(Verified {
                id: id.clone(),
                cookies_due: false,
                sealed: None,
            })
        );
        // Signed with the older secret: re-sent with the current digest.
        let old = Secrets::new(vec![b"old".to_vec()]).unwrap().sign(&id);
        assert!(matches!(
            verify(&s, Some(&id), Some(&old), None, NOW),
            CookieCheck::Verified(Verified {
                cookies_due: true,
                ..
            })
        ));
        // A cookie signed three days ago is re-sent, whatever the API path.
        assert!(matches!(
            verify(&s, Some(&id), Some(&digest), Some(NOW - 3 * 86_400), NOW),
            CookieCheck::Verified(Verified {
                cookies_due: true,
                ..
            })
        ));
    }

    #[test]
    fn open_gives_the_session_or_a_fresh_one_with_the_reason() {
        let policy = Policy::default();
        let v = verified(false);
        let blob = codec::encode(SID, NOW - 10, &data(&[("n", 1)]));
        match open(&policy, &v, Fetched::Record(blob.clone()), NOW) {
            Opened::Existing { state, data: d } => {
                assert_eq!(d, data(&[("n", 1)]));
                assert_eq!(state.stored, Some(blob));
                assert_eq!(state.created, Some(NOW - 10));
                assert!(!state.cookies_to_send());
            }
            other => panic!("expected the stored session, got {other:?}"),
        }
        let reasons = [
            (Fetched::Missing, FreshReason::Missing),
            (
                Fetched::Unreadable("a FIFO".into()),
                FreshReason::Unreadable("a FIFO".into()),
            ),
            (
                Fetched::Oversized("2 MB".into()),
                FreshReason::Oversized("2 MB".into()),
            ),
        ];
        for (fetched, expected) in reasons {
            match open(&policy, &v, fetched, NOW) {
                Opened::Fresh {
                    state,
                    why,
                    delete_old,
                } => {
                    assert_eq!(why, expected);
                    assert!(!delete_old);
                    assert_eq!(state, SessionState::fresh(NOW));
                }
                other => panic!("expected a fresh session, got {other:?}"),
            }
        }
        assert!(matches!(
            open(
                &policy,
                &v,
                Fetched::Record(b"\x80\x03pickle".to_vec()),
                NOW
            ),
            Opened::Fresh {
                why: FreshReason::Pickle,
                delete_old: false,
                ..
            }
        ));
    }

    #[test]
    fn a_session_past_its_lifetime_is_fresh_and_its_record_deleted() {
        let policy = Policy {
            lifetime: Some(Duration::from_secs(100)),
            ..Policy::default()
        };
        let v = verified(false);
        let old = codec::encode(SID, NOW - 100, &data(&[]));
        assert!(matches!(
            open(&policy, &v, Fetched::Record(old), NOW),
            Opened::Fresh {
                why: FreshReason::LifetimeOver,
                delete_old: true,
                ..
            }
        ));
        let young = codec::encode(SID, NOW - 99, &data(&[]));
        assert!(matches!(
            open(&policy, &v, Fetched::Record(young), NOW),
            Opened::Existing { .. }
        ));
    }

    #[test]
    fn a_revoked_record_is_a_fresh_session_and_is_deleted() {
        let opened = open(&Policy::default(), &verified(false), Fetched::Revoked, NOW);
        assert!(matches!(
            opened,
            Opened::Fresh {
                why: FreshReason::Revoked,
                delete_old: true,
                ..
            }
        ));
    }

    /// `plan`, with the extras a save encodes.
    fn plan_owned(
        policy: &Policy, state: &SessionState, d: &Map<String, Value>,
    ) -> Option<SavePlan> {
        let blob = codec::encode_with(
            SID,
            created_for_save(state, NOW),
            d,
            &state.extras_for_save(NOW),
        );
        plan_save(policy, state, blob, d.is_empty(), NOW).unwrap()
    }

    #[test]
    fn a_kept_session_saves_under_the_new_generation() {
        let policy = Policy::default();
        let mut extras = Extras {
            user: Some("ann".to_owned()),
            generation: Some(3),
            seen: Some(seen_stamp(NOW)),
            ..Extras::default()
        };
        let blob = codec::encode_with(SID, NOW, &data(&[]), &extras);
        let Opened::Existing { mut state, .. } =
            open(&policy, &verified(false), Fetched::Record(blob), NOW)
        else {
            panic!("not opened");
        };
        assert_eq!(state.extras.generation, Some(3));
        extras.generation = Some(4);
        let rewritten = codec::encode_with(SID, NOW, &data(&[]), &extras);
        state.carried_over(rewritten.clone(), 4);
        // Nothing changed since the rewrite: nothing to write; a change writes generation 4.
        assert_eq!(plan_owned(&policy, &state, &data(&[])), None);
        let write = plan_owned(&policy, &state, &data(&[("n", 1)])).unwrap();
        assert_eq!(write.generation, Some(4));
        assert_eq!(
            codec::decode(&write.blob).unwrap().extras.generation,
            Some(4)
        );
        // A session never stored has no record to carry over.
        let mut fresh = SessionState::fresh(NOW);
        fresh.carried_over(rewritten, 4);
        assert_eq!((fresh.stored, fresh.extras.generation), (None, None));
    }

    #[test]
    fn a_generation_learnt_at_the_write_is_kept_for_the_next_saves() {
        let policy = Policy::default();
        let mut state = SessionState::fresh(NOW);
        state.set_owner("ann".to_owned());
        let mut write = plan_owned(&policy, &state, &data(&[("n", 1)])).unwrap();
        assert_eq!(write.generation, None);
        write.generation = Some(9); // as the engine fills it in
        state.record_write(write, WriteOutcome::Written);
        assert_eq!(state.extras.generation, Some(9));
    }

    #[test]
    fn a_new_owner_forgets_the_generation_the_same_owner_keeps_it() {
        let mut state = SessionState::fresh(NOW);
        state.set_owner("ann".to_owned());
        state.extras.generation = Some(7);
        state.set_owner("ann".to_owned());
        assert_eq!(state.extras.generation, Some(7));
        state.set_owner("bob".to_owned());
        assert_eq!(state.extras.generation, None);
        assert_eq!(state.extras.user.as_deref(), Some("bob"));
    }

    #[test]
    fn ttl_is_the_idle_timeout_cut_short_by_the_lifetime() {
        let idle = Policy {
            idle_timeout: Some(Duration::from_secs(600)),
            ..Policy::default()
        };
        assert_eq!(idle.ttl(NOW, NOW), Some(Duration::from_secs(600)));
        let both = Policy {
            lifetime: Some(Duration::from_secs(3600)),
            ..idle.clone()
        };
        assert_eq!(both.ttl(NOW - 3300, NOW), Some(Duration::from_secs(300)));
        assert_eq!(both.ttl(NOW - 9999, NOW), Some(Duration::from_secs(1)));
        assert_eq!(Policy::default().ttl(NOW, NOW), None);
    }

    fn plan(policy: &Policy, state: &SessionState, d: &Map<String, Value>) -> Option<SavePlan> {
        let blob = codec::encode(SID, created_for_save(state, NOW), d);
        plan_save(policy, state, blob, d.is_empty(), NOW).unwrap()
    }

    #[test]
    fn a_new_session_is_created_then_rewritten_only_while_its_record_exists() {
        let policy = Policy::default();
        let mut state = SessionState::fresh(NOW);
        assert!(!state.cookies_to_send(), "no cookie before a record exists");
        let first = plan(&policy, &state, &data(&[("n", 1)])).unwrap();
        assert_eq!(first.mode, WriteMode::Create);
        assert!(state.record_write(first, WriteOutcome::Written));
        assert!(state.cookies_to_send());
        // Unchanged: nothing to write.
        assert_eq!(plan(&policy, &state, &data(&[("n", 1)])), None);
        let second = plan(&policy, &state, &data(&[("n", 2)])).unwrap();
        assert_eq!(second.mode, WriteMode::IfExists);
        assert!(!state.record_write(second, WriteOutcome::Written));
    }

    #[test]
    fn a_loaded_session_whose_record_is_gone_is_never_written_again_nor_its_cookies_sent() {
        let policy = Policy::default();
        let blob = codec::encode(SID, NOW, &data(&[("user", 1)]));
        let mut state = SessionState::opened(NOW, blob, true);
        let write = plan(&policy, &state, &data(&[("user", 1), ("n", 2)])).unwrap();
        assert_eq!(write.mode, WriteMode::IfExists);
        state.record_write(write, WriteOutcome::Gone);
        assert!(state.gone && !state.cookies_to_send() && !state.is_stored());
        assert_eq!(plan(&policy, &state, &data(&[("n", 3)])), None);
        // Nor does regenerating revive it.
        assert!(!state.regenerate());
        assert_eq!(plan(&policy, &state, &data(&[("n", 3)])), None);
    }

    #[test]
    fn conflict_detection_writes_only_over_the_record_it_loaded() {
        let policy = Policy {
            detect_conflicts: true,
            ..Policy::default()
        };
        let fresh = SessionState::fresh(NOW);
        assert_eq!(
            plan(&policy, &fresh, &data(&[("n", 1)])).unwrap().mode,
            WriteMode::IfUnchanged(None)
        );
        let blob = codec::encode(SID, NOW, &data(&[("n", 1)]));
        let loaded = SessionState::opened(NOW, blob.clone(), false);
        assert_eq!(
            plan(&policy, &loaded, &data(&[("n", 2)])).unwrap().mode,
            WriteMode::IfUnchanged(Some(blob))
        );
    }

    #[test]
    fn destroy_deletes_the_record_and_a_later_write_is_a_new_session_with_cookies() {
        let policy = Policy::default();
        let blob = codec::encode(SID, NOW, &data(&[("user", 1)]));
        let mut state = SessionState::opened(NOW, blob, false);
        assert!(state.destroy(NOW), "the stored record must be deleted");
        assert!(!state.cookies_to_send());
        // Logout with nothing written after it leaves no record.
        assert_eq!(plan(&policy, &state, &data(&[])), None);
        // A flash after logout: a new record and its cookies.
        let write = plan(&policy, &state, &data(&[("flash", 1)])).unwrap();
        assert_eq!(write.mode, WriteMode::Create);
        state.record_write(write, WriteOutcome::Written);
        assert!(state.cookies_to_send());
        // Destroying a session never stored deletes nothing.
        assert!(!SessionState::fresh(NOW).destroy(NOW));
    }

    #[test]
    fn regenerate_moves_the_data_to_a_new_record_and_deletes_the_old() {
        let policy = Policy::default();
        let blob = codec::encode(SID, NOW - 5, &data(&[("user", 1)]));
        let mut state = SessionState::opened(NOW - 5, blob, false);
        assert!(state.regenerate());
        assert!(state.cookies_due && !state.is_stored());
        let write = plan(&policy, &state, &data(&[("user", 1)])).unwrap();
        assert_eq!(write.mode, WriteMode::Create);
        assert_eq!(
            write.created,
            NOW - 5,
            "the creation time travels with the data"
        );
        state.record_write(write, WriteOutcome::Written);
        assert!(state.cookies_to_send());
    }

    #[test]
    fn a_regeneration_that_finds_the_old_record_gone_writes_nothing() {
        let policy = Policy::default();
        let blob = codec::encode(SID, NOW, &data(&[("user", 1)]));
        let mut state = SessionState::opened(NOW, blob, false);
        assert!(state.regenerate(), "the old record is to be deleted first");
        // The deletion found nothing: another request logged the session out.
        state.end_elsewhere();
        assert_eq!(plan(&policy, &state, &data(&[("user", 1)])), None);
        assert!(!state.cookies_to_send());
    }

    #[test]
    fn max_size_refuses_and_leaves_the_state_alone() {
        let policy = Policy {
            max_size: Some(64),
            ..Policy::default()
        };
        let state = SessionState::fresh(NOW);
        let big = codec::encode(SID, NOW, &data(&[("x".repeat(100).as_str(), 1)]));
        let size = big.len();
        assert_eq!(
            plan_save(&policy, &state, big, false, NOW),
            Err(SaveError::TooLarge { size, max_size: 64 })
        );
        assert_eq!(state, SessionState::fresh(NOW));
    }

    #[test]
    fn a_session_lives_by_its_own_expiry_and_carries_its_owner() {
        let policy = Policy {
            idle_timeout: Some(Duration::from_secs(600)),
            lifetime: Some(Duration::from_secs(3600)),
            ..Policy::default()
        };
        let extras = Extras {
            user: Some("ann".into()),
            expiry: codec::Expiry {
                idle_timeout: Some(30 * 86_400),
                lifetime: Some(90 * 86_400),
                persistent: Some(true),
            },
            ..Extras::default()
        };
        // Past the manager's lifetime, within its own: still open, owner known.
        let blob = codec::encode_with(SID, NOW - 7200, &data(&[]), &extras);
        let Opened::Existing { state, .. } =
            open(&policy, &verified(false), Fetched::Record(blob), NOW)
        else {
            panic!("a remember-me session outlives the manager's lifetime");
        };
        assert_eq!(state.stored_user.as_deref(), Some("ann"));
        assert_eq!(state.extras, extras);
        // Its own lifetime still ends it.
        let old = codec::encode_with(SID, NOW - 91 * 86_400, &data(&[]), &extras);
        assert!(matches!(
            open(&policy, &verified(false), Fetched::Record(old), NOW),
            Opened::Fresh {
                why: FreshReason::LifetimeOver,
                delete_old: true,
                ..
            }
        ));
        // A save is indexed under the owner, for its own idle timeout; a new owner unindexes
        // the old one; a regeneration leaves no owner indexed until the next save.
        let mut state = state;
        let first = plan(&policy, &state, &data(&[("a", 1)])).unwrap();
        assert_eq!(first.ttl, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(
            (first.user.as_deref(), first.unindex.as_deref()),
            (Some("ann"), None)
        );
        state.extras.user = Some("bob".into());
        let second = plan(&policy, &state, &data(&[("a", 1)])).unwrap();
        assert_eq!(
            (second.user.as_deref(), second.unindex.as_deref()),
            (Some("bob"), Some("ann"))
        );
        state.record_write(second, WriteOutcome::Written);
        assert_eq!(state.stored_user.as_deref(), Some("bob"));
        assert!(state.regenerate());
        assert_eq!(state.stored_user, None);
        assert_eq!(
            state.extras.user.as_deref(),
            Some("bob"),
            "regenerate keeps the owner"
        );
        state.destroy(NOW);
        assert_eq!(
            state.extras,
            Extras::default(),
            "a logout forgets the owner"
        );
    }

    proptest! {
        /// Whatever happens to a session, a write is planned over an existing record only in
        /// IfExists/IfUnchanged mode, never as a plain create; and after "gone" nothing is.
        #[test]
        fn no_sequence_of_steps_resurrects_a_gone_record(steps in proptest::collection::vec(0u8..5, 1..40)) {
            let policy = Policy::default();
            let mut state = SessionState::opened(NOW, codec::encode(SID, NOW, &data(&[])), false);
            let mut n = 0;
            for step in steps {
                n += 1;
                match step {
                    0 => {
                        if let Some(p) = plan(&policy, &state, &data(&[("n", n)])) {
                            if state.stored.is_some() {
                                prop_assert_eq!(&p.mode, &WriteMode::IfExists);
                            }
                            state.record_write(p, WriteOutcome::Gone);
                        }
                    }
                    1 => {
                        if let Some(p) = plan(&policy, &state, &data(&[("n", n)])) {
                            state.record_write(p, WriteOutcome::Written);
                        }
                    }
                    2 => { state.regenerate(); }
                    3 => { state.destroy(NOW); }
                    _ => {}
                }
                if state.gone {
                    prop_assert!(!state.cookies_to_send());
                    prop_assert!(plan(&policy, &state, &data(&[("z", 1)])).is_none());
                }
                prop_assert!(!state.cookies_to_send() || state.stored.is_some());
            }
        }

        #[test]
        fn ttl_never_panics_and_never_exceeds_the_idle_timeout(
            idle in proptest::option::of(1u64..10_000_000),
            lifetime in proptest::option::of(1u64..10_000_000),
            created in 0u64..u64::MAX,
            now in 0u64..u64::MAX,
        ) {
            let policy = Policy {
                idle_timeout: idle.map(Duration::from_secs),
                lifetime: lifetime.map(Duration::from_secs),
                ..Policy::default()
            };
            let ttl = policy.ttl(created, now);
            if let (Some(ttl), Some(idle)) = (ttl, idle) {
                prop_assert!(ttl <= Duration::from_secs(idle));
            }
            if let Some(ttl) = ttl {
                prop_assert!(ttl >= Duration::from_secs(1));
            }
        }
    }

    #[test]
    fn a_load_serves_only_a_record_bound_to_its_id() {
        let other = id();
        let blob = codec::encode(SID, NOW, &data(&[("n", 1)]));
        let store = || "Store()".to_owned();
        assert_eq!(
            check_loaded(SID, Ok(Some(blob.clone())), store).unwrap(),
            Some(blob.clone())
        );
        let e = check_loaded(&other, Ok(Some(blob)), store).unwrap_err();
        assert_eq!(e.kind, StoreErrorKind::Crossed);
        assert!(!e.to_string().contains(&other), "{e}");
        assert!(e.to_string().contains("another session id"), "{e}");
        // A 0.1.0 record (no binding) loads for any id; nothing and errors pass through.
        let old = br#"{"v":1,"c":1,"d":{}}"#.to_vec();
        assert!(check_loaded(&other, Ok(Some(old)), store).is_ok());
        assert_eq!(check_loaded(&other, Ok(None), store).unwrap(), None);
        let down = StoreError {
            store: store(),
            cause: "down".into(),
            kind: StoreErrorKind::Unavailable,
        };
        assert_eq!(
            check_loaded(&other, Err(down), store).unwrap_err().kind,
            StoreErrorKind::Unavailable
        );
    }
}
