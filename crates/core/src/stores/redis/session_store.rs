//! The `SessionStore` methods of every Redis store, written once.

/// The `SessionStore` methods of a Redis store: the same commands whatever the connection; only
/// `run` (how a connection is had) and `describe` differ.
macro_rules! redis_session_store {
    ($store:ty, $describe:expr, $wire:expr) => {
        impl SessionStore for $store {
            // Redis cannot be asked for the length and the value in one plain command, so the
            // limit is checked after the fetch; it still spares the decoding.
            fn load(&self, session_id: &str, max_bytes: usize) -> LoadResult {
                let blob = self.run(|c| get(&self.options.prefix, session_id, c))?;
                within_limit(self, session_id, blob, max_bytes)
            }

            fn save(
                &self, session_id: &str, blob: &[u8], ttl: Option<Duration>,
            ) -> StoreResult<()> {
                self.run(|c| set(&self.options.prefix, session_id, blob, ttl, c))
            }

            fn delete(&self, session_id: &str) -> StoreResult<bool> {
                self.run(|c| del(&self.options.prefix, session_id, c))
            }

            fn touch(&self, session_id: &str, ttl: Duration) -> StoreResult<()> {
                self.run(|c| expire(&self.options.prefix, session_id, ttl, c))
            }

            fn save_if_unchanged(
                &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8],
                ttl: Option<Duration>,
            ) -> StoreResult<bool> {
                self.run(|c| {
                    set_if_unchanged(&self.options.prefix, session_id, expected, blob, ttl, c)
                })
            }

            fn save_if_exists(
                &self, session_id: &str, blob: &[u8], ttl: Option<Duration>,
            ) -> StoreResult<bool> {
                self.run(|c| set_if_exists(&self.options.prefix, session_id, blob, ttl, c))
            }

            fn load_touching(
                &self, session_id: &str, ttl: Duration, max_bytes: usize,
            ) -> LoadResult {
                let blob = self.run(|c| get_touching(&self.options.prefix, session_id, ttl, c))?;
                within_limit(self, session_id, blob, max_bytes)
            }

            fn describe(&self) -> String {
                let describe: fn(&Self) -> String = $describe;
                describe(self)
            }

            fn wire(&self) -> Option<&dyn crate::stores::WireStore> {
                let wire: fn(&Self) -> Option<&dyn crate::stores::WireStore> = $wire;
                wire(self)
            }

            fn user_index(&self) -> Option<&dyn $crate::stores::UserIndex> {
                Some(self)
            }

            fn listing(&self) -> Option<&dyn $crate::stores::Listing> {
                Some(self)
            }
        }

        impl $crate::stores::UserIndex for $store {
            fn index_user(
                &self, user_key: &str, session_id: &str, ttl: Option<Duration>,
            ) -> StoreResult<()> {
                let prefix = &self.options.prefix;
                self.run(|c| index_user(prefix, user_key, session_id, ttl, false, c))
            }

            fn touch_user(
                &self, user_key: &str, session_id: &str, ttl: Duration,
            ) -> StoreResult<()> {
                let prefix = &self.options.prefix;
                self.run(|c| index_user(prefix, user_key, session_id, Some(ttl), true, c))
            }

            fn unindex_user(&self, user_key: &str, session_id: &str) -> StoreResult<()> {
                let index = user_index_key(&self.options.prefix, user_key);
                self.run(|c| {
                    redis::cmd("ZREM")
                        .arg(&index)
                        .arg(session_id)
                        .query::<i64>(c)
                        .map(drop)
                })
            }

            fn user_session_ids(&self, user_key: &str) -> StoreResult<Vec<String>> {
                let index = user_index_key(&self.options.prefix, user_key);
                self.run(|c| {
                    redis::cmd("EVAL")
                        .arg(USER_SESSION_IDS)
                        .arg(1)
                        .arg(&index)
                        .query::<Vec<String>>(c)
                })
            }
        }
    };
}

pub(super) use redis_session_store;
