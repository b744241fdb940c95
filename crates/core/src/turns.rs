//! Requests of one session take turns within a process: the table, as pure state.
//!
//! Tornado lets other requests run wherever one awaits, so two requests of one visitor that both
//! load before either saves would each write over the other's change. A request of a session
//! therefore waits, before loading it, until the earlier request of that session in this process
//! has finished or passed its turn on (PHP and ASP.NET lock sessions the same way).
//!
//! A turn is a lease: a holder that has not changed its session for [`LEASE`] while another
//! request waits passes the turn on, and from then on its writes are fenced (a version per
//! session: a write goes through only if no other request of the session saved since this one
//! loaded). A request alone with its session (nearly always) skips the check.
//!
//! The table knows nothing of event loops or futures: each operation returns the [`Effect`]s
//! its caller must carry out (wake a waiter, schedule a lease check, let a claim's payload go)
//! once it has let go of the table's lock. `X` is the caller's per-claim payload.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a holder that has not changed its session keeps its turn while another request of
/// the session waits (checked again every `LEASE` while it has changed it).
pub const LEASE: Duration = Duration::from_millis(300);

/// A request's place in its session's entry.
pub type ClaimId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimState {
    Waiting,
    Holding,
    /// Passed its turn on and still running: its writes are fenced.
    Passed,
    Done,
}

/// What the caller must do after an operation, outside the table's lock.
#[derive(Debug)]
pub enum Effect<X> {
    /// The claim holds the turn now: resolve its waiter. If that cannot be done (its event loop
    /// is gone), `finish` the claim.
    Wake(ClaimId),
    /// Call `lease_check` for the holder after `Duration`.
    CheckLease(ClaimId, Duration),
    /// The claim is done: its payload leaves the table (cancel what it scheduled, drop it).
    Released(X),
}

/// What `take_now` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The request's own claim on the session, from an earlier load.
    Own(ClaimId),
    /// A new claim, holding the turn.
    Granted(ClaimId),
    /// Another request holds the turn or waits for it.
    Busy,
    /// A new claim, waiting in line (`enqueue` only).
    Queued(ClaimId),
}

/// What a write of a session must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    Write,
    /// Nothing to write: this request changed nothing and another one saved since.
    Skip,
    /// This request changed the session, and another one saved since it loaded it.
    Conflict,
}

#[derive(Default)]
struct Entry {
    /// Tells a new entry of a session apart from one that went away.
    serial: u64,
    holder: Option<ClaimId>,
    waiters: VecDeque<ClaimId>,
    /// A request's (its handler's) claim: a second load of the request finds its turn.
    owners: HashMap<u64, ClaimId>,
    /// Saves by fenced requests and by those they share the session with.
    version: u64,
    /// Claims that loaded (or will, once granted) and have not finished.
    loaded: u32,
}

impl Entry {
    fn is_idle(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty() && self.loaded == 0
    }
}

struct Claim<X> {
    session_id: String,
    owner: u64,
    entry_serial: u64,
    state: ClaimState,
    seen: u64,
    taken_at: Instant,
    /// A lease check is scheduled.
    checking: bool,
    /// Writes of the request in flight (`begin_write`): while one is, the turn stays with it
    /// (see `begin_write`), and what `after_writes` says happens when the last one ends.
    writes: u32,
    after_writes: AfterWrites,
    payload: Option<X>,
}

/// What was asked of a claim while a write of its request was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AfterWrites {
    Nothing,
    PassOn,
    Finish,
}

/// The table: one per process, behind the caller's lock.
pub struct Turns<X> {
    entries: HashMap<String, Entry>,
    claims: HashMap<ClaimId, Claim<X>>,
    next_claim: ClaimId,
    next_serial: u64,
}

impl<X> Default for Turns<X> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            claims: HashMap::new(),
            next_claim: 1,
            next_serial: 1,
        }
    }
}

impl<X> Turns<X> {
    /// Sessions with a request in flight.
    pub fn sessions_in_flight(&self) -> usize {
        self.entries.len()
    }

    /// Claims not yet forgotten (done ones included until their turn object goes).
    pub fn claims(&self) -> usize {
        self.claims.len()
    }

    pub fn state(&self, claim: ClaimId) -> ClaimState {
        self.claims
            .get(&claim)
            .map_or(ClaimState::Done, |c| c.state)
    }

    pub fn session_id(&self, claim: ClaimId) -> Option<&str> {
        self.claims.get(&claim).map(|c| c.session_id.as_str())
    }

    pub fn payload(&self, claim: ClaimId) -> Option<&X> {
        self.claims.get(&claim).and_then(|c| c.payload.as_ref())
    }

    pub fn payload_mut(&mut self, claim: ClaimId) -> Option<&mut X> {
        self.claims.get_mut(&claim).and_then(|c| c.payload.as_mut())
    }

    /// The claim this request (`owner`) has on the session already, if it is not done.
    pub fn own(&self, session_id: &str, owner: u64) -> Option<ClaimId> {
        let claim = *self.entries.get(session_id)?.owners.get(&owner)?;
        (self.state(claim) != ClaimState::Done).then_some(claim)
    }

    fn entry(&mut self, session_id: &str) -> &mut Entry {
        if !self.entries.contains_key(session_id) {
            let serial = self.next_serial;
            self.next_serial += 1;
            self.entries.insert(
                session_id.to_owned(),
                Entry {
                    serial,
                    ..Entry::default()
                },
            );
        }
        self.entries.get_mut(session_id).expect("inserted above")
    }

    fn new_claim(&mut self, session_id: &str, owner: u64, payload: X) -> ClaimId {
        let id = self.next_claim;
        self.next_claim += 1;
        let entry = self.entry(session_id);
        entry.owners.insert(owner, id);
        let entry_serial = entry.serial;
        self.claims.insert(
            id,
            Claim {
                session_id: session_id.to_owned(),
                owner,
                entry_serial,
                state: ClaimState::Waiting,
                seen: 0,
                taken_at: Instant::now(),
                checking: false,
                writes: 0,
                after_writes: AfterWrites::Nothing,
                payload: Some(payload),
            },
        );
        id
    }

    fn grant(&mut self, claim: ClaimId) {
        let Some(c) = self.claims.get_mut(&claim) else {
            return;
        };
        let entry = self
            .entries
            .get_mut(&c.session_id)
            .expect("a live claim has its entry");
        c.state = ClaimState::Holding;
        c.seen = entry.version;
        c.taken_at = Instant::now();
        entry.holder = Some(claim);
        entry.loaded += 1;
    }

    /// The turn without waiting: the request's own, a new one if nobody holds or waits for it,
    /// else `Busy` (`payload` is then dropped).
    pub fn take_now(&mut self, session_id: &str, owner: u64, payload: X) -> Taken {
        if let Some(own) = self.own(session_id, owner) {
            return Taken::Own(own);
        }
        if let Some(entry) = self.entries.get(session_id) {
            if entry.holder.is_some() || !entry.waiters.is_empty() {
                return Taken::Busy;
            }
        }
        let claim = self.new_claim(session_id, owner, payload);
        self.grant(claim);
        Taken::Granted(claim)
    }

    /// A claim that holds the turn at once when it is free, else waits in line (`Queued`; the
    /// holder's lease is then checked). `Own` when the request has a claim already.
    pub fn enqueue(
        &mut self, session_id: &str, owner: u64, payload: X, effects: &mut Vec<Effect<X>>,
    ) -> Taken {
        if let Some(own) = self.own(session_id, owner) {
            return Taken::Own(own);
        }
        let busy = self
            .entries
            .get(session_id)
            .is_some_and(|e| e.holder.is_some() || !e.waiters.is_empty());
        if !busy {
            let claim = self.new_claim(session_id, owner, payload);
            self.grant(claim);
            return Taken::Granted(claim);
        }
        let claim = self.new_claim(session_id, owner, payload);
        let entry = self.entries.get_mut(session_id).expect("made by new_claim");
        entry.waiters.push_back(claim);
        if let Some(holder) = entry.holder {
            self.schedule_lease_check(holder, effects);
        }
        Taken::Queued(claim)
    }

    /// Hands a free turn to the first waiter.
    fn next(&mut self, session_id: &str, effects: &mut Vec<Effect<X>>) {
        loop {
            let Some(entry) = self.entries.get_mut(session_id) else {
                return;
            };
            let Some(claim) = entry.waiters.pop_front() else {
                return;
            };
            let more = !entry.waiters.is_empty();
            if self.state(claim) != ClaimState::Waiting {
                continue;
            }
            self.grant(claim);
            effects.push(Effect::Wake(claim));
            if more {
                self.schedule_lease_check(claim, effects);
            }
            return;
        }
    }

    /// The session's claims that have not finished (none once its last request finished).
    pub fn live_claims(&self, session_id: &str) -> Vec<ClaimId> {
        self.entries
            .get(session_id)
            .map(|e| e.owners.values().copied().collect())
            .unwrap_or_default()
    }

    /// Forgets every claim (a forked child's copy of the table: the requests it holds run in
    /// the parent), returning their payloads. Ids keep counting, so a stale claim id of the
    /// parent's never names a new claim.
    pub fn clear(&mut self) -> Vec<X> {
        self.entries.clear();
        self.claims
            .drain()
            .filter_map(|(_, mut c)| c.payload.take())
            .collect()
    }

    /// A write of the claim's session is on its way to the store (a network round trip, a
    /// thread). Until `end_write`, the turn stays with the claim whatever else is asked (its
    /// client went away, `pass_on`, `finish` by a hook): the next request's load, on another
    /// connection or thread, could overtake the write and read the record from before it, and
    /// its save would then drop this one's change with no conflict seen by either.
    pub fn begin_write(&mut self, claim: ClaimId) {
        if let Some(c) = self.claims.get_mut(&claim) {
            if c.state == ClaimState::Holding {
                c.writes += 1;
            }
        }
    }

    /// The write `begin_write` announced was answered (or failed): what was asked meanwhile
    /// happens now.
    pub fn end_write(&mut self, claim: ClaimId, effects: &mut Vec<Effect<X>>) {
        let Some(c) = self.claims.get_mut(&claim) else {
            return;
        };
        if c.writes == 0 {
            return;
        }
        c.writes -= 1;
        if c.writes > 0 {
            return;
        }
        match std::mem::replace(&mut c.after_writes, AfterWrites::Nothing) {
            AfterWrites::Nothing => {}
            AfterWrites::PassOn => self.pass_on(claim, effects),
            AfterWrites::Finish => self.finish(claim, effects),
        }
    }

    /// Holds back `then` while a write of the claim is in flight: whether it was.
    fn while_writing(&mut self, claim: ClaimId, then: AfterWrites) -> bool {
        match self.claims.get_mut(&claim) {
            Some(c) if c.writes > 0 => {
                c.after_writes = c.after_writes.max(then);
                true
            }
            _ => false,
        }
    }

    /// The request keeps running but gives up its turn; its later writes are fenced.
    pub fn pass_on(&mut self, claim: ClaimId, effects: &mut Vec<Effect<X>>) {
        if self.while_writing(claim, AfterWrites::PassOn) {
            return;
        }
        let Some(c) = self.claims.get_mut(&claim) else {
            return;
        };
        if c.state != ClaimState::Holding {
            return;
        }
        c.state = ClaimState::Passed;
        let session_id = c.session_id.clone();
        if let Some(entry) = self.entries.get_mut(&session_id) {
            entry.holder = None;
        }
        self.next(&session_id, effects);
    }

    /// The request finished (or gave up waiting): the next request of the session takes the
    /// turn. The claim stays known (done) until `forget`, for the fence of a late write.
    pub fn finish(&mut self, claim: ClaimId, effects: &mut Vec<Effect<X>>) {
        if self.while_writing(claim, AfterWrites::Finish) {
            return;
        }
        let Some(c) = self.claims.get_mut(&claim) else {
            return;
        };
        let state = c.state;
        if state == ClaimState::Done {
            return;
        }
        c.state = ClaimState::Done;
        c.checking = false;
        if let Some(payload) = c.payload.take() {
            effects.push(Effect::Released(payload));
        }
        let (session_id, owner, serial) = (c.session_id.clone(), c.owner, c.entry_serial);
        let Some(entry) = self.entries.get_mut(&session_id) else {
            return;
        };
        if entry.serial != serial {
            return;
        }
        if state == ClaimState::Waiting {
            entry.waiters.retain(|&w| w != claim);
        } else {
            entry.loaded -= 1;
        }
        if entry.owners.get(&owner) == Some(&claim) {
            entry.owners.remove(&owner);
        }
        if entry.holder == Some(claim) {
            entry.holder = None;
            self.next(&session_id, effects);
        }
        if self.entries.get(&session_id).is_some_and(Entry::is_idle) {
            self.entries.remove(&session_id);
        }
    }

    /// The claim's request can never end its writes nor finish (its event loop is gone):
    /// finishes it now, writes in flight or not.
    pub fn abandon(&mut self, claim: ClaimId, effects: &mut Vec<Effect<X>>) {
        if let Some(c) = self.claims.get_mut(&claim) {
            c.writes = 0;
            c.after_writes = AfterWrites::Nothing;
        }
        self.finish(claim, effects);
    }

    /// The claim's turn object is gone: finishes it if it was not, and forgets it.
    pub fn forget(&mut self, claim: ClaimId, effects: &mut Vec<Effect<X>>) {
        self.abandon(claim, effects); // nothing is left to end its writes
        self.claims.remove(&claim);
    }

    fn schedule_lease_check(&mut self, holder: ClaimId, effects: &mut Vec<Effect<X>>) {
        let Some(c) = self.claims.get_mut(&holder) else {
            return;
        };
        if c.checking {
            return;
        }
        c.checking = true;
        let delay = (c.taken_at + LEASE).saturating_duration_since(Instant::now());
        effects.push(Effect::CheckLease(holder, delay));
    }

    /// The lease check the caller scheduled could not be (the holder's event loop is gone).
    pub fn lease_check_lost(&mut self, holder: ClaimId) {
        if let Some(c) = self.claims.get_mut(&holder) {
            c.checking = false;
        }
    }

    /// A scheduled lease check runs: whether the caller must look at the holder's sessions
    /// for a change (it still holds the turn and someone waits) and call `lease_outcome`.
    pub fn lease_check(&mut self, holder: ClaimId) -> bool {
        let Some(c) = self.claims.get_mut(&holder) else {
            return false;
        };
        c.checking = false;
        self.is_holder_with_waiters(holder)
    }

    fn is_holder_with_waiters(&self, holder: ClaimId) -> bool {
        let Some(c) = self.claims.get(&holder) else {
            return false;
        };
        self.entries
            .get(&c.session_id)
            .is_some_and(|e| e.holder == Some(holder) && !e.waiters.is_empty())
    }

    /// After `lease_check`: a holder that changed its session keeps its turn for another
    /// lease, one that did not passes it on.
    pub fn lease_outcome(&mut self, holder: ClaimId, changed: bool, effects: &mut Vec<Effect<X>>) {
        if !self.is_holder_with_waiters(holder) {
            return;
        }
        if changed {
            if let Some(c) = self.claims.get_mut(&holder) {
                c.taken_at = Instant::now();
            }
            self.schedule_lease_check(holder, effects);
        } else {
            self.pass_on(holder, effects);
        }
    }

    /// Whether the claim holds its session's turn alone (no other request loaded it): its
    /// writes need no fence, and its caller need not look for a change.
    pub fn alone(&self, claim: ClaimId) -> bool {
        let Some(c) = self.claims.get(&claim) else {
            return false;
        };
        c.state == ClaimState::Holding
            && self
                .entries
                .get(&c.session_id)
                .is_some_and(|e| e.serial == c.entry_serial && e.loaded == 1)
    }

    /// Before a write of the claim's session by a request that is not `alone`: `changed` says
    /// whether it changed the session (or regenerates it). A write that goes through counts
    /// as a save. After the session's last request finished the entry is gone, and a write
    /// (a WebSocket's after its 101) is unordered, as before turns.
    pub fn fence(&mut self, claim: ClaimId, changed: bool) -> Fence {
        let Some(c) = self.claims.get_mut(&claim) else {
            return Fence::Write;
        };
        let Some(entry) = self
            .entries
            .get_mut(&c.session_id)
            .filter(|e| e.serial == c.entry_serial)
        else {
            return Fence::Write;
        };
        if c.seen != entry.version {
            return if changed {
                Fence::Conflict
            } else {
                Fence::Skip
            };
        }
        if changed {
            entry.version += 1;
            c.seen = entry.version;
        }
        Fence::Write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "0123456789abcdef0123456789abcdef";

    fn wakes(effects: &[Effect<u32>]) -> Vec<ClaimId> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Wake(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    fn granted(taken: Taken) -> ClaimId {
        match taken {
            Taken::Granted(c) => c,
            other => panic!("not granted: {other:?}"),
        }
    }

    #[test]
    fn a_turn_stays_with_a_write_in_flight_until_it_is_answered() {
        let mut turns = Turns::default();
        let first = granted(turns.take_now(S, 1, 0));
        let mut effects = Vec::new();
        let Taken::Queued(second) = turns.enqueue(S, 2, 0, &mut effects) else {
            panic!("should wait");
        };
        effects.clear();
        turns.begin_write(first);
        turns.pass_on(first, &mut effects);
        turns.finish(first, &mut effects);
        assert!(
            wakes(&effects).is_empty(),
            "nobody takes the turn mid-write"
        );
        assert_eq!(turns.state(first), ClaimState::Holding);
        turns.end_write(first, &mut effects);
        assert_eq!(
            wakes(&effects),
            vec![second],
            "the write answered, the finish happens"
        );
        assert_eq!(turns.state(first), ClaimState::Done);
        // A turn whose object is gone is freed even mid-write.
        effects.clear();
        turns.begin_write(second);
        turns.forget(second, &mut effects);
        assert_eq!((turns.sessions_in_flight(), turns.claims()), (0, 1));
    }

    #[test]
    fn a_cleared_table_never_mistakes_an_old_claim_for_a_new_one() {
        let mut turns = Turns::default();
        let old = granted(turns.take_now(S, 1, 7));
        assert_eq!(turns.clear(), vec![7]);
        let new = granted(turns.take_now(S, 1, 8));
        assert_ne!(old, new);
        let mut effects = Vec::new();
        turns.forget(old, &mut effects);
        assert_eq!(turns.state(new), ClaimState::Holding);
    }

    #[test]
    fn a_request_alone_takes_the_turn_and_leaves_nothing_behind() {
        let mut turns = Turns::default();
        let claim = granted(turns.take_now(S, 1, 7));
        assert!(turns.alone(claim));
        assert_eq!(turns.take_now(S, 1, 8), Taken::Own(claim));
        let mut effects = Vec::new();
        turns.forget(claim, &mut effects);
        assert!(matches!(effects.as_slice(), [Effect::Released(7)]));
        assert_eq!((turns.sessions_in_flight(), turns.claims()), (0, 0));
    }

    #[test]
    fn a_second_request_waits_and_is_woken_when_the_first_finishes() {
        let mut turns = Turns::default();
        let first = granted(turns.take_now(S, 1, 0));
        assert_eq!(turns.take_now(S, 2, 0), Taken::Busy);
        let mut effects = Vec::new();
        let Taken::Queued(second) = turns.enqueue(S, 2, 0, &mut effects) else {
            panic!("should wait");
        };
        assert!(
            matches!(effects.as_slice(), [Effect::CheckLease(c, _)] if *c == first),
            "the holder's lease is checked"
        );
        effects.clear();
        turns.finish(first, &mut effects);
        assert_eq!(wakes(&effects), vec![second]);
        assert_eq!(turns.state(second), ClaimState::Holding);
        assert!(turns.alone(second));
    }

    #[test]
    fn a_holder_that_changed_nothing_passes_its_turn_on_at_its_lease() {
        let mut turns = Turns::default();
        let first = granted(turns.take_now(S, 1, 0));
        let mut effects = Vec::new();
        let Taken::Queued(second) = turns.enqueue(S, 2, 0, &mut effects) else {
            panic!("should wait");
        };
        assert!(turns.lease_check(first));
        effects.clear();
        turns.lease_outcome(first, true, &mut effects);
        assert!(matches!(effects.as_slice(), [Effect::CheckLease(c, _)] if *c == first));
        assert!(turns.lease_check(first));
        effects.clear();
        turns.lease_outcome(first, false, &mut effects);
        assert_eq!(wakes(&effects), vec![second]);
        assert_eq!(turns.state(first), ClaimState::Passed);
        // Both loaded now: the second's save counts, the first's change then conflicts.
        assert!(!turns.alone(second));
        assert_eq!(turns.fence(second, true), Fence::Write);
        assert_eq!(turns.fence(first, true), Fence::Conflict);
        assert_eq!(turns.fence(first, false), Fence::Skip);
    }

    #[test]
    fn a_late_write_after_the_sessions_last_request_finished_is_unordered() {
        let mut turns = Turns::default();
        let claim = granted(turns.take_now(S, 1, 0));
        let mut effects = Vec::new();
        turns.finish(claim, &mut effects);
        assert_eq!(turns.sessions_in_flight(), 0);
        assert_eq!(turns.fence(claim, true), Fence::Write);
        // A new entry of the same session is another one: the old claim does not see it.
        let other = granted(turns.take_now(S, 2, 0));
        turns.pass_on(other, &mut effects);
        assert_eq!(turns.fence(claim, true), Fence::Write);
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_the_line() {
        let mut turns = Turns::default();
        let first = granted(turns.take_now(S, 1, 0));
        let mut effects = Vec::new();
        let Taken::Queued(second) = turns.enqueue(S, 2, 0, &mut effects) else {
            panic!("should wait");
        };
        effects.clear();
        turns.forget(second, &mut effects);
        turns.finish(first, &mut effects);
        assert!(wakes(&effects).is_empty());
        assert_eq!(turns.sessions_in_flight(), 0);
    }

    #[test]
    fn a_lease_check_of_a_finished_holder_does_nothing() {
        let mut turns = Turns::default();
        let first = granted(turns.take_now(S, 1, 0));
        let mut effects = Vec::new();
        turns.enqueue(S, 2, 0, &mut effects);
        turns.finish(first, &mut effects);
        assert!(!turns.lease_check(first));
    }
}
