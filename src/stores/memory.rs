//! The embedded default: sessions in this process's memory, bounded, least recently used evicted.

use std::num::NonZeroUsize;

use lru::LruCache;
use parking_lot::Mutex;

use super::{SessionStore, StoreError};

/// Sessions kept in a bounded LRU map; thread-safe, lost when the process exits.
pub struct MemoryStore {
    // Keyed by the id's 16 raw bytes rather than its 32-char hex form to halve the key's footprint.
    sessions: Mutex<LruCache<u128, Box<[u8]>>>,
    max_sessions: NonZeroUsize,
}

impl MemoryStore {
    pub fn new(max_sessions: NonZeroUsize) -> Self {
        Self {
            sessions: Mutex::new(LruCache::new(max_sessions)),
            max_sessions,
        }
    }

    /// How many sessions are held now.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_sessions(&self) -> usize {
        self.max_sessions.get()
    }

    fn key(&self, session_id: &str) -> Result<u128, StoreError> {
        u128::from_str_radix(session_id, 16)
            .map_err(|_| StoreError::new(self, format!("not a session id: {session_id:?}")))
    }
}

impl SessionStore for MemoryStore {
    fn load(&self, session_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(session_id)?;
        Ok(self.sessions.lock().get(&key).map(|blob| blob.to_vec()))
    }

    fn save(
        &self,
        session_id: &str,
        blob: &[u8],
        _ttl: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        let key = self.key(session_id)?;
        self.sessions.lock().put(key, blob.into());
        Ok(())
    }

    fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        let key = self.key(session_id)?;
        self.sessions.lock().pop(&key);
        Ok(())
    }

    fn describe(&self) -> String {
        format!("MemoryStore(max_sessions={})", self.max_sessions)
    }

    fn blocks(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0000000000000000000000000000000a";
    const B: &str = "0000000000000000000000000000000b";
    const C: &str = "0000000000000000000000000000000c";

    fn store(max: usize) -> MemoryStore {
        MemoryStore::new(NonZeroUsize::new(max).unwrap())
    }

    #[test]
    fn save_load_delete() {
        let s = store(10);
        assert_eq!(s.load(A).unwrap(), None);
        s.save(A, b"one", None).unwrap();
        s.save(A, b"two", None).unwrap();
        assert_eq!(s.load(A).unwrap().as_deref(), Some(&b"two"[..]));
        s.delete(A).unwrap();
        s.delete(A).unwrap();
        assert_eq!(s.load(A).unwrap(), None);
    }

    #[test]
    fn evicts_the_least_recently_used_at_the_bound() {
        let s = store(2);
        s.save(A, b"a", None).unwrap();
        s.save(B, b"b", None).unwrap();
        s.load(A).unwrap(); // A is now more recent than B
        s.save(C, b"c", None).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.load(B).unwrap(), None);
        assert!(s.load(A).unwrap().is_some());
        assert!(s.load(C).unwrap().is_some());
    }

    #[test]
    fn is_safe_across_threads() {
        let s = std::sync::Arc::new(store(10_000));
        let handles: Vec<_> = (0..4u128)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u128 {
                        let id = format!("{:032x}", t * 1_000_000 + i);
                        s.save(&id, id.as_bytes(), None).unwrap();
                        assert_eq!(s.load(&id).unwrap().unwrap(), id.as_bytes());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(s.len(), 4000);
    }
}
