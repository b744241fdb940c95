//! The embedded default: sessions in this process's memory, bounded, least recently used evicted.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use super::{SessionStore, StoreError};

/// Sessions kept in a bounded LRU map; thread-safe, lost when the process exits.
pub struct MemoryStore {
    // Keyed by the id's 16 raw bytes rather than its 32-char hex form to halve the key's footprint.
    sessions: Mutex<LruCache<u128, Entry>>,
    max_sessions: NonZeroUsize,
    /// The zero point of the entries' deadlines.
    epoch: Instant,
}

struct Entry {
    blob: Box<[u8]>,
    /// Milliseconds after `epoch` at which the entry expires; `u64::MAX` for never.
    deadline: u64,
}

impl MemoryStore {
    pub fn new(max_sessions: NonZeroUsize) -> Self {
        Self {
            sessions: Mutex::new(LruCache::new(max_sessions)),
            max_sessions,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn deadline(&self, ttl: Option<Duration>) -> u64 {
        match ttl {
            None => u64::MAX,
            Some(ttl) => self
                .now_ms()
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The blob under `key` unless expired (an expired entry is dropped), optionally moving its
    /// deadline.
    fn fetch(&self, key: u128, refresh: Option<Duration>) -> Option<Vec<u8>> {
        let now = self.now_ms();
        let new_deadline = refresh.map(|ttl| self.deadline(Some(ttl)));
        let mut sessions = self.sessions.lock();
        let entry = sessions.get_mut(&key)?;
        if entry.deadline <= now {
            sessions.pop(&key);
            return None;
        }
        if let Some(deadline) = new_deadline {
            entry.deadline = deadline;
        }
        Some(entry.blob.to_vec())
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
        Ok(self.fetch(key, None))
    }

    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> Result<(), StoreError> {
        let key = self.key(session_id)?;
        let entry = Entry {
            blob: blob.into(),
            deadline: self.deadline(ttl),
        };
        self.sessions.lock().put(key, entry);
        Ok(())
    }

    fn delete(&self, session_id: &str) -> Result<(), StoreError> {
        let key = self.key(session_id)?;
        self.sessions.lock().pop(&key);
        Ok(())
    }

    fn save_if_unchanged(
        &self,
        session_id: &str,
        expected: Option<&[u8]>,
        blob: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let key = self.key(session_id)?;
        let now = self.now_ms();
        let deadline = self.deadline(ttl);
        let mut sessions = self.sessions.lock();
        let current = sessions
            .peek(&key)
            .filter(|entry| entry.deadline > now)
            .map(|entry| &*entry.blob);
        if current != expected {
            return Ok(false);
        }
        sessions.put(
            key,
            Entry {
                blob: blob.into(),
                deadline,
            },
        );
        Ok(true)
    }

    fn touch(&self, session_id: &str, ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(session_id)?;
        self.fetch(key, Some(ttl));
        Ok(())
    }

    fn load_touching(
        &self,
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(session_id)?;
        Ok(self.fetch(key, Some(ttl)))
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
    fn entries_expire_after_their_ttl_unless_touched() {
        let s = store(10);
        let short = Duration::from_millis(60);
        s.save(A, b"a", Some(short)).unwrap();
        s.save(B, b"b", Some(short)).unwrap();
        s.save(C, b"c", None).unwrap();
        std::thread::sleep(Duration::from_millis(35));
        assert!(s.load_touching(A, short).unwrap().is_some());
        std::thread::sleep(Duration::from_millis(35));
        assert!(
            s.load(A).unwrap().is_some(),
            "touched: alive 70 ms after its save"
        );
        assert_eq!(s.load(B).unwrap(), None, "not touched: expired");
        assert!(s.load(C).unwrap().is_some(), "no ttl: never expires");
        assert_eq!(s.len(), 2, "expired entries are dropped");
    }

    #[test]
    fn conditional_saves_fail_when_another_writer_got_there_first() {
        let s = store(10);
        assert!(s.save_if_unchanged(A, None, b"one", None).unwrap());
        assert!(!s.save_if_unchanged(A, None, b"two", None).unwrap());
        assert!(!s.save_if_unchanged(A, Some(b"zzz"), b"two", None).unwrap());
        assert!(s.save_if_unchanged(A, Some(b"one"), b"two", None).unwrap());
        assert_eq!(s.load(A).unwrap().as_deref(), Some(&b"two"[..]));
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
