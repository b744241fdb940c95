//! The embedded default: sessions in this process's memory, bounded in count and in bytes.
//!
//! Eviction is a segmented LRU: a new session enters a probation segment and moves to a
//! protected one when used again; eviction takes the least recently used probationary session
//! first. A flood of sessions used once (crawlers, scripted logins) then only churns probation,
//! while returning visitors keep theirs. Chosen over `moka` (TinyLFU admission): moka evicts
//! lazily on its own maintenance schedule, so "evicts at the bound" and per-entry deadlines would
//! become approximate, and this is a few dozen deterministic lines over two `lru` maps.

use crate::stores::{LoadResult, StoreResult};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use super::{ListedRecord, Listing, SessionStore, StoreError, TimeLeft, UserIndex};

/// What an entry costs beyond its blob, roughly: its key, deadline, list links and hash slot.
/// Counted so that a bound in bytes also bounds a flood of tiny sessions.
const ENTRY_OVERHEAD: usize = 96;

/// The protected segment's share of both bounds, in fifths: the rest stays for newcomers, so a
/// new session is never evicted by its own arrival while returning ones hold everything.
const PROTECTED_FIFTHS: usize = 4;

/// Sessions kept in a bounded segmented LRU; thread-safe, lost when the process exits.
pub struct MemoryStore {
    segments: Mutex<Segments>,
    max_sessions: NonZeroUsize,
    max_bytes: NonZeroUsize,
    /// The zero point of the entries' deadlines.
    epoch: Instant,
}

struct Entry {
    blob: Box<[u8]>,
    /// Milliseconds after `epoch` at which the entry expires; `u64::MAX` for never.
    deadline: u64,
    /// The user key it is indexed under: the index entry leaves with the entry, however it
    /// goes (deleted, expired, evicted), so the index never outgrows the store's bounds.
    owner: Option<u128>,
}

impl Entry {
    fn cost(&self) -> usize {
        self.blob.len() + ENTRY_OVERHEAD
    }
}

/// The two segments; keyed by the id's 16 raw bytes rather than its 32-char hex form to halve
/// the key's footprint. Both maps are unbounded: the bounds are ours, in count and bytes.
struct Segments {
    /// Sessions seen once since they entered (or were demoted); evicted first.
    probation: LruCache<u128, Entry>,
    /// Sessions used on more than one request.
    protected: LruCache<u128, Entry>,
    /// What the protected segment's entries cost, in bytes.
    protected_bytes: usize,
    /// What all entries cost, in bytes.
    bytes: usize,
    max_protected: usize,
    max_protected_bytes: usize,
    /// User key -> the ids of that user's entries.
    owners: HashMap<u128, HashSet<u128>>,
}

impl Segments {
    fn new(max_sessions: NonZeroUsize, max_bytes: NonZeroUsize) -> Self {
        Self {
            probation: LruCache::unbounded(),
            protected: LruCache::unbounded(),
            protected_bytes: 0,
            bytes: 0,
            max_protected: max_sessions.get() / 5 * PROTECTED_FIFTHS
                + max_sessions.get() % 5 * PROTECTED_FIFTHS / 5,
            max_protected_bytes: max_bytes.get() / 5 * PROTECTED_FIFTHS
                + max_bytes.get() % 5 * PROTECTED_FIFTHS / 5,
            owners: HashMap::new(),
        }
    }

    /// Takes an entry that is leaving (or changing owner) out of its owner's index.
    fn unindex(&mut self, key: u128, owner: Option<u128>) {
        let Some(owner) = owner else { return };
        if let Some(ids) = self.owners.get_mut(&owner) {
            ids.remove(&key);
            if ids.is_empty() {
                self.owners.remove(&owner);
            }
        }
    }

    fn peek_mut(&mut self, key: &u128) -> Option<&mut Entry> {
        if self.protected.contains(key) {
            self.protected.peek_mut(key)
        } else {
            self.probation.peek_mut(key)
        }
    }

    /// Drops a few expired entries from the cold end of probation, so sessions that are never
    /// asked for again (and their index entries) go before eviction would take them.
    fn sweep_expired(&mut self, now: u64) {
        for _ in 0..2 {
            match self.probation.peek_lru() {
                Some((&key, entry)) if entry.deadline <= now => {
                    self.remove(&key);
                }
                _ => break,
            }
        }
    }

    fn len(&self) -> usize {
        self.probation.len() + self.protected.len()
    }

    fn peek(&self, key: &u128) -> Option<&Entry> {
        self.protected
            .peek(key)
            .or_else(|| self.probation.peek(key))
    }

    /// The entry, marked as used: a probationary one is promoted.
    fn use_entry(&mut self, key: u128) -> Option<&mut Entry> {
        if self.protected.contains(&key) {
            return self.protected.get_mut(&key);
        }
        let entry = self.probation.pop(&key)?;
        self.protected_bytes += entry.cost();
        self.protected.put(key, entry);
        self.demote_excess(key);
        // A promotion beyond a tiny protected share (max_sessions < 2) demotes the entry itself.
        if self.protected.contains(&key) {
            self.protected.get_mut(&key)
        } else {
            self.probation.get_mut(&key)
        }
    }

    /// Moves the least recently used protected entries back to probation while the protected
    /// segment is over its share, never `keep` unless nothing else is left.
    fn demote_excess(&mut self, keep: u128) {
        while self.protected.len() > self.max_protected
            || self.protected_bytes > self.max_protected_bytes
        {
            let Some((key, entry)) = self.protected.pop_lru() else {
                break;
            };
            self.protected_bytes -= entry.cost();
            self.probation.put(key, entry);
            if key == keep {
                break;
            }
        }
    }

    fn remove(&mut self, key: &u128) -> Option<Entry> {
        if let Some(entry) = self.protected.pop(key) {
            self.protected_bytes -= entry.cost();
            self.bytes -= entry.cost();
            self.unindex(*key, entry.owner);
            return Some(entry);
        }
        let entry = self.probation.pop(key)?;
        self.bytes -= entry.cost();
        self.unindex(*key, entry.owner);
        Some(entry)
    }

    /// Stores `entry`: over an existing one (a use, so promoted), or new on probation; then
    /// evicts down to the bounds.
    fn insert(&mut self, key: u128, mut entry: Entry, max_sessions: usize, max_bytes: usize) {
        let cost = entry.cost();
        if let Some(old) = self.use_entry(key) {
            let old_cost = old.cost();
            entry.owner = old.owner;
            *old = entry;
            self.bytes = self.bytes - old_cost + cost;
            if self.protected.contains(&key) {
                self.protected_bytes = self.protected_bytes - old_cost + cost;
                self.demote_excess(key);
            }
        } else {
            self.bytes += cost;
            self.probation.put(key, entry);
        }
        while self.len() > max_sessions || self.bytes > max_bytes {
            // The oldest probationary session goes first, but never the one being stored while
            // another could go instead.
            let from_probation = match self.probation.peek_lru() {
                Some((&oldest, _)) => oldest != key || self.protected.is_empty(),
                None => false,
            };
            let evicted = if from_probation {
                self.probation.pop_lru()
            } else {
                let evicted = self.protected.pop_lru();
                if let Some((_, entry)) = &evicted {
                    self.protected_bytes -= entry.cost();
                }
                evicted
            };
            let Some((evicted_key, evicted)) = evicted else {
                break;
            };
            self.bytes -= evicted.cost();
            self.unindex(evicted_key, evicted.owner);
        }
    }
}

impl MemoryStore {
    pub fn new(max_sessions: NonZeroUsize, max_bytes: NonZeroUsize) -> Self {
        Self {
            segments: Mutex::new(Segments::new(max_sessions, max_bytes)),
            max_sessions,
            max_bytes,
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

    /// The blob under `key` unless expired (an expired entry is dropped) or over `max_bytes`,
    /// marking it used and optionally moving its deadline.
    fn fetch(&self, session_id: &str, refresh: Option<Duration>, max_bytes: usize) -> LoadResult {
        let key = self.key(session_id)?;
        let now = self.now_ms();
        let new_deadline = refresh.map(|ttl| self.deadline(Some(ttl)));
        let mut segments = self.segments.lock();
        if segments
            .peek(&key)
            .is_some_and(|entry| entry.deadline <= now)
        {
            segments.remove(&key);
            return Ok(None);
        }
        let Some(entry) = segments.use_entry(key) else {
            return Ok(None);
        };
        if let Some(deadline) = new_deadline {
            entry.deadline = deadline;
        }
        if entry.blob.len() > max_bytes {
            let size = entry.blob.len() as u64;
            drop(segments);
            return Err(StoreError::oversized(self, session_id, size, max_bytes));
        }
        Ok(Some(entry.blob.to_vec()))
    }

    /// Stores `blob` if `condition` holds for what is there now (an unexpired entry or none),
    /// checked under the same lock as the write.
    fn store_if(
        &self, session_id: &str, blob: &[u8], ttl: Option<Duration>,
        condition: impl FnOnce(Option<&[u8]>) -> bool,
    ) -> StoreResult<bool> {
        let key = self.key(session_id)?;
        if blob.len() + ENTRY_OVERHEAD > self.max_bytes.get() {
            return Err(StoreError::new(
                self,
                format!(
                    "a record of {} bytes cannot fit in max_bytes={}",
                    blob.len(),
                    self.max_bytes
                ),
            ));
        }
        let now = self.now_ms();
        let entry = Entry {
            blob: blob.into(),
            deadline: self.deadline(ttl),
            owner: None,
        };
        let mut segments = self.segments.lock();
        segments.sweep_expired(now);
        let current = segments
            .peek(&key)
            .filter(|entry| entry.deadline > now)
            .map(|entry| &*entry.blob);
        if !condition(current) {
            return Ok(false);
        }
        segments.insert(key, entry, self.max_sessions.get(), self.max_bytes.get());
        Ok(true)
    }

    /// How many sessions are held now.
    pub fn len(&self) -> usize {
        self.segments.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn max_sessions(&self) -> usize {
        self.max_sessions.get()
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes.get()
    }

    /// What the sessions held now cost, in bytes (blobs plus a fixed overhead per entry).
    pub fn bytes(&self) -> usize {
        self.segments.lock().bytes
    }

    /// How many users have indexed sessions now.
    pub fn indexed_users(&self) -> usize {
        self.segments.lock().owners.len()
    }

    fn key(&self, session_id: &str) -> StoreResult<u128> {
        u128::from_str_radix(session_id, 16).map_err(|_| StoreError::new(self, "not a session id"))
    }
}

impl SessionStore for MemoryStore {
    fn load(&self, session_id: &str, max_bytes: usize) -> LoadResult {
        self.fetch(session_id, None, max_bytes)
    }

    fn save(&self, session_id: &str, blob: &[u8], ttl: Option<Duration>) -> StoreResult<()> {
        self.store_if(session_id, blob, ttl, |_| true).map(drop)
    }

    fn delete(&self, session_id: &str) -> StoreResult<bool> {
        let key = self.key(session_id)?;
        let now = self.now_ms();
        let removed = self.segments.lock().remove(&key);
        Ok(removed.is_some_and(|entry| entry.deadline > now))
    }

    fn save_if_unchanged(
        &self, session_id: &str, expected: Option<&[u8]>, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        self.store_if(session_id, blob, ttl, |current| current == expected)
    }

    fn save_if_exists(
        &self, session_id: &str, blob: &[u8], ttl: Option<Duration>,
    ) -> StoreResult<bool> {
        self.store_if(session_id, blob, ttl, |current| current.is_some())
    }

    fn touch(&self, session_id: &str, ttl: Duration) -> StoreResult<()> {
        self.fetch(session_id, Some(ttl), usize::MAX).map(drop)
    }

    fn load_touching(&self, session_id: &str, ttl: Duration, max_bytes: usize) -> LoadResult {
        self.fetch(session_id, Some(ttl), max_bytes)
    }

    fn describe(&self) -> String {
        format!(
            "MemoryStore(max_sessions={}, max_bytes={})",
            self.max_sessions, self.max_bytes
        )
    }

    fn blocks(&self) -> bool {
        false
    }

    fn user_index(&self) -> Option<&dyn UserIndex> {
        Some(self)
    }

    fn listing(&self) -> Option<&dyn Listing> {
        Some(self)
    }
}

/// Listing, for tests of the operating commands (a MemoryStore lives in one process).
impl Listing for MemoryStore {
    fn delete_if_unchanged(&self, session_id: &str, expected: &[u8]) -> StoreResult<bool> {
        let (key, now) = (self.key(session_id)?, self.now_ms());
        let mut segments = self.segments.lock();
        let unchanged = segments
            .peek(&key)
            .is_some_and(|entry| entry.deadline > now && &*entry.blob == expected);
        if unchanged {
            segments.remove(&key);
        }
        Ok(unchanged)
    }

    fn session_ids(&self) -> StoreResult<Vec<String>> {
        let now = self.now_ms();
        let segments = self.segments.lock();
        let entries = segments.probation.iter().chain(segments.protected.iter());
        Ok(entries
            .filter(|(_, entry)| entry.deadline > now)
            .map(|(key, _)| format!("{key:032x}"))
            .collect())
    }

    fn load_listed(&self, session_id: &str, max_bytes: usize) -> StoreResult<Option<ListedRecord>> {
        let (key, now) = (self.key(session_id)?, self.now_ms());
        let segments = self.segments.lock();
        let Some(entry) = segments.peek(&key).filter(|entry| entry.deadline > now) else {
            return Ok(None);
        };
        if entry.blob.len() > max_bytes {
            let size = entry.blob.len() as u64;
            return Err(StoreError::oversized(self, session_id, size, max_bytes));
        }
        let time_left = match entry.deadline {
            u64::MAX => TimeLeft::Unlimited,
            deadline => TimeLeft::Within(Duration::from_millis(deadline - now)),
        };
        Ok(Some(ListedRecord {
            blob: entry.blob.to_vec(),
            time_left,
        }))
    }
}

impl UserIndex for MemoryStore {
    fn index_user(
        &self, user_key: &str, session_id: &str, _ttl: Option<Duration>,
    ) -> StoreResult<()> {
        let (owner, key) = (self.key(user_key)?, self.key(session_id)?);
        let mut segments = self.segments.lock();
        let Some(entry) = segments.peek_mut(&key) else {
            return Ok(());
        };
        let previous = entry.owner.replace(owner);
        if previous != Some(owner) {
            segments.unindex(key, previous);
            segments.owners.entry(owner).or_default().insert(key);
        }
        Ok(())
    }

    fn unindex_user(&self, user_key: &str, session_id: &str) -> StoreResult<()> {
        let (owner, key) = (self.key(user_key)?, self.key(session_id)?);
        let mut segments = self.segments.lock();
        if let Some(entry) = segments.peek_mut(&key) {
            if entry.owner == Some(owner) {
                entry.owner = None;
                segments.unindex(key, Some(owner));
            }
        }
        Ok(())
    }

    fn user_session_ids(&self, user_key: &str) -> StoreResult<Vec<String>> {
        let owner = self.key(user_key)?;
        let now = self.now_ms();
        let mut segments = self.segments.lock();
        let ids: Vec<u128> = segments
            .owners
            .get(&owner)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        let mut live = Vec::with_capacity(ids.len());
        for key in ids {
            if segments
                .peek(&key)
                .is_some_and(|entry| entry.deadline > now)
            {
                live.push(format!("{key:032x}"));
            } else {
                segments.remove(&key);
            }
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0000000000000000000000000000000a";
    const B: &str = "0000000000000000000000000000000b";
    const C: &str = "0000000000000000000000000000000c";

    const MAX: usize = crate::stores::DEFAULT_MAX_READ_SIZE;

    fn store(max: usize) -> MemoryStore {
        MemoryStore::new(
            NonZeroUsize::new(max).unwrap(),
            NonZeroUsize::new(1 << 30).unwrap(),
        )
    }

    fn id(n: u128) -> String {
        format!("{n:032x}")
    }

    #[test]
    fn returning_sessions_outlive_a_flood_of_one_shot_sessions() {
        let s = store(5000);
        let returning = id(u128::MAX);
        s.save(&returning, b"regular", None).unwrap();
        s.load(&returning, MAX).unwrap();
        s.load(&returning, MAX).unwrap();
        for n in 0..12_000 {
            s.save(&id(n), b"once", None).unwrap();
        }
        assert_eq!(s.len(), 5000);
        assert_eq!(
            s.load(&returning, MAX).unwrap().as_deref(),
            Some(&b"regular"[..])
        );
        // Among the one-shot sessions, the newest are kept.
        assert!(s.load(&id(11_999), MAX).unwrap().is_some());
        assert_eq!(s.load(&id(0), MAX).unwrap(), None);
    }

    #[test]
    fn the_user_index_follows_its_entries_out_however_they_go() {
        let s = store(3);
        let user = id(u128::MAX - 1);
        for n in 0..3 {
            s.save(&id(n), b"x", None).unwrap();
            s.index_user(&user, &id(n), None).unwrap();
        }
        let mut listed = s.user_session_ids(&user).unwrap();
        listed.sort();
        assert_eq!(listed, [id(0), id(1), id(2)]);
        // Deleted, unindexed, evicted: gone from the list; a rewrite keeps the owner.
        s.delete(&id(0)).unwrap();
        s.unindex_user(&user, &id(1)).unwrap();
        s.save(&id(2), b"y", None).unwrap();
        assert_eq!(s.user_session_ids(&user).unwrap(), [id(2)]);
        let evicting = store(3);
        evicting.save(&id(0), b"x", None).unwrap();
        evicting.index_user(&user, &id(0), None).unwrap();
        for n in 10..20 {
            evicting.save(&id(n), b"z", None).unwrap();
        }
        assert_eq!(
            evicting.user_session_ids(&user).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(evicting.indexed_users(), 0);
        s.delete(&id(2)).unwrap();
        assert_eq!(s.indexed_users(), 0);
        // Indexing an id without a record files nothing.
        s.index_user(&user, &id(99), None).unwrap();
        assert_eq!(s.indexed_users(), 0);
    }

    #[test]
    fn expired_entries_leave_the_index() {
        let s = store(100_000);
        for n in 0..1000u128 {
            s.save(&id(n), b"x", Some(Duration::from_millis(1)))
                .unwrap();
            s.index_user(&id(u128::MAX - n), &id(n), None).unwrap();
            std::thread::sleep(Duration::from_micros(20));
        }
        std::thread::sleep(Duration::from_millis(5));
        for n in 1000..1010u128 {
            s.save(&id(n), b"x", None).unwrap();
        }
        // Expired entries go as new ones arrive, two per save, owners and all.
        assert!(s.len() < 1000, "{}", s.len());
        assert!(s.indexed_users() < 1000, "{}", s.indexed_users());
    }

    #[test]
    fn the_byte_bound_evicts_when_exceeded() {
        let entry = 1000 + ENTRY_OVERHEAD;
        let s = MemoryStore::new(
            NonZeroUsize::new(1000).unwrap(),
            NonZeroUsize::new(3 * entry).unwrap(),
        );
        for n in 0..3 {
            s.save(&id(n), &[b'x'; 1000], None).unwrap();
        }
        assert_eq!((s.len(), s.bytes()), (3, 3 * entry));
        s.save(&id(3), &[b'x'; 1000], None).unwrap();
        assert_eq!((s.len(), s.bytes()), (3, 3 * entry));
        assert_eq!(s.load(&id(0), MAX).unwrap(), None, "the oldest went");
        // Growing one record evicts others; shrinking frees its bytes.
        s.save(&id(3), &[b'x'; 2000], None).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.bytes() <= 3 * entry);
        assert!(
            s.load(&id(3), MAX).unwrap().is_some(),
            "not the one being stored"
        );
        s.save(&id(3), b"", None).unwrap();
        assert_eq!(s.bytes(), entry + ENTRY_OVERHEAD);
        // A record that cannot fit at all is refused, not stored and evicted at once.
        let e = s.save(&id(9), &vec![0; 4 * entry], None).unwrap_err();
        assert!(e.to_string().contains("max_bytes"), "{e}");
        assert_eq!(s.load(&id(9), MAX).unwrap(), None);
    }

    #[test]
    fn a_tiny_store_still_keeps_the_newest() {
        let s = store(1);
        s.save(A, b"a", None).unwrap();
        s.load(A, MAX).unwrap();
        s.save(B, b"b", None).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s.load(B, MAX).unwrap().is_some());
    }

    #[test]
    fn evicts_the_least_recently_used_at_the_bound() {
        let s = store(2);
        s.save(A, b"a", None).unwrap();
        s.save(B, b"b", None).unwrap();
        s.load(A, MAX).unwrap(); // A is now more recent than B
        s.save(C, b"c", None).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.load(B, MAX).unwrap(), None);
        assert!(s.load(A, MAX).unwrap().is_some());
        assert!(s.load(C, MAX).unwrap().is_some());
    }

    #[test]
    fn expired_entries_are_dropped_as_they_are_read() {
        // That they expire, and what keeps them alive, is the conformance suite's to test.
        let s = store(10);
        s.save(A, b"a", Some(Duration::from_millis(1))).unwrap();
        s.save(B, b"b", None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(s.load(A, MAX).unwrap(), None);
        assert_eq!(s.len(), 1, "the expired entry is dropped");
    }
}
