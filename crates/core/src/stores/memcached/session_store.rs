//! The blocking `SessionStore` methods: the pipelined requests, run one at a time, and the
//! per-user generation counters.

use crate::stores::{LoadResult, StoreResult};
use std::time::Duration;

use super::keys::exptime;
use super::store::parse_counter;
use super::{MemcachedStore, MAX_COUNTER_LEN, MAX_RECORD_SIZE};
use crate::stores::{
    quoted_list, Revocation, SaveMode, SessionStore, StoreError, StoreErrorKind, WireStore,
};
use crate::wire::meta::{self, SetMode};
use crate::wire::Reply;

impl SessionStore for MemcachedStore {
    // memcached has no command for a value's length, so the limit is checked on the reply's
    // size line: an oversized value is not read (its connection is dropped instead).
    fn load(&self, session_id: &str, max_bytes: usize) -> LoadResult {
        let replies = self.run(
            session_id,
            &WireStore::load(self, session_id, None),
            max_bytes,
        )?;
        self.load_reply(session_id, replies, max_bytes)
    }

    fn load_touching(&self, session_id: &str, ttl: Duration, max_bytes: usize) -> LoadResult {
        let request = WireStore::load(self, session_id, Some(ttl));
        let replies = self.run(session_id, &request, max_bytes)?;
        self.load_reply(session_id, replies, max_bytes)
    }

    fn save_if_exists(
        &self, session_id: &str, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        let request = WireStore::save(self, session_id, blob, ttl, SaveMode::IfExists);
        let replies = self.run(session_id, &request, 0)?;
        self.save_reply(session_id, replies)
    }

    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        let request = WireStore::save(self, session_id, blob, ttl, SaveMode::Always);
        let replies = self.run(session_id, &request, 0)?;
        match self.save_reply(session_id, replies)? {
            true => Ok(()),
            false => Err(StoreError::new(self, "ms: a plain set was not stored")),
        }
    }

    fn delete(&self, session_id: &str) -> StoreResult<bool> {
        let replies = self.run(session_id, &WireStore::delete(self, session_id), 0)?;
        self.delete_reply(session_id, replies)
    }

    fn save_if_unchanged(
        &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        let key = self.key(session_id);
        let exptime = exptime(ttl, crate::time::now());
        let Some(expected) = expected else {
            // ME (add) stores only where there is nothing, and says whether it did.
            let request = meta::set(&key, blob, exptime, SetMode::Add);
            let reply = self.call(session_id, &key, &request, 0)?;
            return self.stored(session_id, &reply);
        };
        // A value longer than the expected one is not it: not read at all.
        let found = match self.call(session_id, &key, &meta::get_with_cas(&key), expected.len()) {
            Err(e) if e.kind == StoreErrorKind::OversizedRecord => return Ok(false),
            found => found?,
        };
        let cas = match &found {
            Reply::Meta {
                code: [b'V', b'A'],
                value: Some(current),
                flags,
            } => {
                if current.as_slice() != expected {
                    return Ok(false);
                }
                meta::flag(flags, 'c')
                    .and_then(|token| token.parse::<u64>().ok())
                    .ok_or_else(|| StoreError::new(self, "mg: the reply carries no CAS token"))?
            }
            Reply::Meta {
                code: [b'E', b'N'], ..
            } => return Ok(false),
            reply => return Err(self.unexpected(session_id, "mg", reply)),
        };
        // EX (changed since the mg) and NF (deleted since) both mean another writer won.
        let request = meta::set(&key, blob, exptime, SetMode::Cas(cas));
        let reply = self.call(session_id, &key, &request, 0)?;
        self.stored(session_id, &reply)
    }

    fn touch(&self, session_id: &str, ttl: Duration) -> StoreResult<()> {
        let key = self.key(session_id);
        let request = meta::touch(&key, exptime(Some(ttl), crate::time::now()));
        match self.call(session_id, &key, &request, 0)? {
            // EN: a missing record stays missing.
            Reply::Meta { code, .. } if &code == b"HD" || &code == b"EN" => Ok(()),
            reply => Err(self.unexpected(session_id, "mg", &reply)),
        }
    }

    fn max_record_size(&self) -> Option<usize> {
        Some(MAX_RECORD_SIZE)
    }

    fn describe(&self) -> String {
        format!("MemcachedStore({})", quoted_list(&self.servers))
    }

    fn wire(&self) -> Option<&dyn WireStore> {
        Some(self)
    }

    fn revocation(&self) -> Option<&dyn Revocation> {
        Some(self)
    }

    fn listing(&self) -> Option<&dyn crate::stores::Listing> {
        Some(self)
    }

    // The original module's copies kept pickles under the raw id: what this store reads with
    // an empty prefix.
    fn pickle_advice(&self) -> Option<String> {
        Some(format!(
            "convert them once with `python -m tornsession migrate --from memcached://{}`",
            self.servers.join(",")
        ))
    }
}

impl Revocation for MemcachedStore {
    // No index here: the generation in each owned record does its work, so filing and
    // unfiling are nothing to do (see `capabilities`).
    fn why_no_index(&self) -> &'static str {
        "memcached keeps no index of a user's sessions"
    }

    fn user_generation(&self, user_key: &str) -> StoreResult<Option<u64>> {
        let key = self.generation_key(user_key);
        let not_a_number =
            || StoreError::new(self, "a generation counter holds something not a number");
        match self.call("", &key, &meta::get(&key, None), MAX_COUNTER_LEN) {
            Ok(Reply::Meta {
                code: [b'V', b'A'],
                value: Some(value),
                ..
            }) => parse_counter(&value).map(Some).ok_or_else(not_a_number),
            Ok(Reply::Meta {
                code: [b'E', b'N'], ..
            }) => Ok(None),
            Ok(reply) => Err(self.unexpected("", "mg", &reply)),
            Err(e) if e.kind == StoreErrorKind::OversizedRecord => Err(not_a_number()),
            Err(e) => Err(e),
        }
    }

    // ma is atomic; a missing counter is created with ME (add), which stores only where there
    // is nothing, so of two first bumps racing one add wins and both then ma: each bump moves
    // the counter past every generation handed out before it. The counter never expires (it
    // must outlive the user's sessions); if evicted, `users::first_generation` covers it.
    fn bump_user_generation(&self, user_key: &str) -> StoreResult<crate::users::Bump> {
        let key = self.generation_key(user_key);
        if let Some(after) = self.increment(&key)? {
            return Ok(crate::users::Bump {
                before: after.saturating_sub(1),
                after,
            });
        }
        let first = crate::users::first_generation(crate::time::now_micros());
        let add = meta::set(&key, first.to_string().as_bytes(), 0, SetMode::Add);
        // HD or NS: either way there is a counter now.
        self.stored("", &self.call("", &key, &add, 0)?)?;
        match self.increment(&key)? {
            // No counter before: every live record counted as generation 0.
            Some(after) => Ok(crate::users::Bump { before: 0, after }),
            None => Err(StoreError::new(
                self,
                "ma: the generation counter vanished as it was created",
            )),
        }
    }
}
