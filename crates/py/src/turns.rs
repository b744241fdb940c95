//! The process's turn table (`tornsession_core::turns`) on asyncio: requests of one session
//! take turns, whichever event loop (thread) serves them.
//!
//! One table per process behind one lock. Nothing that can run Python code (a call, a
//! finalizer) happens under it: the table's effects are carried out after it is let go, and a
//! turn dropped while the table is locked (a finalizer run by an allocation in the middle of a
//! locked section) is forgotten by whoever next takes the lock. A waiter on another loop is
//! woken with `call_soon_threadsafe`; a holder's lease is checked on its own loop, where its
//! session lives.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyWeakrefReference;

use crate::errors::SessionConflict;
use tornsession_core::turns::{ClaimId, Effect, Fence, Taken, Turns, LEASE};

/// What a claim holds on the Python side.
struct ClaimLinks {
    event_loop: Py<PyAny>,
    waiter: Option<Py<PyAny>>,
    /// The lease check's timer, when it was set on the loop's own thread: cancelled when the
    /// request finishes, so a finished claim is not kept for the rest of its lease.
    timer: Option<Py<PyAny>>,
    /// The sessions the request loaded: the lease looks at them for a change.
    sessions: Vec<Py<PyWeakrefReference>>,
    /// The claim's `_Turn`, so a second load of the request gets the same one.
    turn: Option<Py<PyWeakrefReference>>,
}

static TABLE: LazyLock<Mutex<Turns<ClaimLinks>>> = LazyLock::new(Mutex::default);
static DEFERRED: Mutex<Vec<ClaimId>> = Mutex::new(Vec::new());
static ANY_DEFERRED: AtomicBool = AtomicBool::new(false);

type Effects = Vec<Effect<ClaimLinks>>;

/// Runs `f` on the table under its lock, after forgetting the claims dropped while it was
/// taken; the effects it left are carried out after the lock is let go.
fn with_table<R>(py: Python<'_>, f: impl FnOnce(&mut Turns<ClaimLinks>, &mut Effects) -> R) -> R {
    let mut effects = Vec::new();
    let result = {
        let mut table = TABLE.lock();
        if ANY_DEFERRED.swap(false, Ordering::AcqRel) {
            for claim in std::mem::take(&mut *DEFERRED.lock()) {
                table.forget(claim, &mut effects);
            }
        }
        f(&mut table, &mut effects)
    };
    if !effects.is_empty() {
        carry_out(py, effects);
    }
    result
}

pub fn running_loop(py: Python<'_>) -> Option<Bound<'_, PyAny>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let get = GET
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
        })
        .ok()?;
    get.bind(py).call0().ok()
}

/// Sets a waiter's result unless it is done (cancelled, timed out).
#[pyfunction]
pub fn _resolve_turn_waiter(waiter: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = waiter.py();
    if !waiter.call_method0(intern!(py, "done"))?.is_truthy()? {
        waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
    }
    Ok(())
}

/// Runs a scheduled lease check (on the holder's loop).
#[pyfunction]
pub fn _check_turn_lease(py: Python<'_>, claim: ClaimId) {
    let sessions = with_table(py, |table, _| {
        if let Some(links) = table.payload_mut(claim) {
            links.timer = None;
        }
        if !table.lease_check(claim) {
            return None;
        }
        table.payload(claim).map(|l| {
            l.sessions
                .iter()
                .map(|s| s.clone_ref(py))
                .collect::<Vec<_>>()
        })
    });
    let Some(sessions) = sessions else {
        return;
    };
    let changed = sessions.iter().any(|weak| {
        let Some(session) = weak.bind(py).upgrade() else {
            return false;
        };
        // A session it cannot look into counts as changed: keeping the turn loses nothing.
        session
            .call_method0(intern!(py, "_is_changed"))
            .and_then(|c| c.is_truthy())
            .unwrap_or(true)
    });
    drop(sessions);
    with_table(py, |table, effects| {
        table.lease_outcome(claim, changed, effects)
    });
}

fn on_own_loop(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> bool {
    running_loop(py).is_some_and(|running| running.is(event_loop))
}

/// Carries out the table's effects, outside its lock.
fn carry_out(py: Python<'_>, effects: Effects) {
    for effect in effects {
        match effect {
            Effect::Wake(claim) => {
                let links = with_table(py, |table, _| {
                    table.payload(claim).map(|l| {
                        (
                            l.event_loop.clone_ref(py),
                            l.waiter.as_ref().map(|w| w.clone_ref(py)),
                        )
                    })
                });
                if let Some((event_loop, Some(waiter))) = links {
                    if !wake(py, event_loop.bind(py), waiter.bind(py)) {
                        // Its loop is closed: nobody will take the turn up.
                        with_table(py, |table, effects| table.finish(claim, effects));
                    }
                }
            }
            Effect::CheckLease(claim, delay) => {
                let event_loop = with_table(py, |table, _| {
                    table.payload(claim).map(|l| l.event_loop.clone_ref(py))
                });
                let Some(event_loop) = event_loop else {
                    continue;
                };
                match schedule_lease_check(py, event_loop.bind(py), claim, delay) {
                    Ok(timer) => {
                        // Kept to be cancelled when the claim finishes; cancelled now if it has.
                        let stale = with_table(py, |table, _| match table.payload_mut(claim) {
                            Some(links) => {
                                links.timer = timer;
                                None
                            }
                            None => timer,
                        });
                        if let Some(timer) = stale {
                            let _ = timer.bind(py).call_method0(intern!(py, "cancel"));
                        }
                    }
                    Err(_) if is_closed(event_loop.bind(py)) => {
                        // The holder's loop is gone (an app shut it down mid-request): nothing
                        // there will ever finish the request, and its session would be busy
                        // for the rest of the process.
                        with_table(py, |table, effects| table.abandon(claim, effects));
                    }
                    Err(_) => with_table(py, |table, _| table.lease_check_lost(claim)),
                }
            }
            Effect::Released(links) => {
                if let Some(timer) = &links.timer {
                    cancel_timer(py, links.event_loop.bind(py), timer.bind(py));
                }
                drop(links);
            }
        }
    }
}

/// Finishes the claims whose event loop was closed under them (an app shut a loop down with
/// requests in flight): nothing there will ever finish them, and their session's entry would
/// stay in the table for the rest of the process.
fn finish_claims_of_closed_loops(py: Python<'_>, claims: Vec<(ClaimId, Py<PyAny>)>) {
    for (claim, event_loop) in claims {
        if is_closed(event_loop.bind(py)) {
            with_table(py, |table, effects| table.abandon(claim, effects));
        }
    }
}

fn is_closed(event_loop: &Bound<'_, PyAny>) -> bool {
    event_loop
        .call_method0(intern!(event_loop.py(), "is_closed"))
        .and_then(|closed| closed.is_truthy())
        .unwrap_or(false)
}

/// In a forked child: the table starts empty. The claims it copied are the parent's
/// requests, which nothing in the child can finish (registered with `os.register_at_fork`).
#[pyfunction]
pub fn _clear_turns_after_fork() {
    if TABLE.is_locked() {
        // Held by a thread of the parent, which does not exist in the child.
        // SAFETY: the child runs only the forking thread, which holds no lock of the table
        // (nothing that can fork runs under it).
        unsafe { TABLE.force_unlock() };
    }
    if DEFERRED.is_locked() {
        // SAFETY: as above.
        unsafe { DEFERRED.force_unlock() };
    }
    let payloads = TABLE.lock().clear();
    DEFERRED.lock().clear();
    ANY_DEFERRED.store(false, Ordering::Release);
    drop(payloads); // outside the lock: dropping them can run Python code
}

fn wake(py: Python<'_>, event_loop: &Bound<'_, PyAny>, waiter: &Bound<'_, PyAny>) -> bool {
    if on_own_loop(py, event_loop) {
        return _resolve_turn_waiter(waiter).is_ok();
    }
    let Ok(resolve) = wrap_pyfunction!(_resolve_turn_waiter, py) else {
        return false;
    };
    event_loop
        .call_method1(intern!(py, "call_soon_threadsafe"), (resolve, waiter))
        .is_ok()
}

fn schedule_lease_check(
    py: Python<'_>, event_loop: &Bound<'_, PyAny>, claim: ClaimId, delay: std::time::Duration,
) -> PyResult<Option<Py<PyAny>>> {
    let check = wrap_pyfunction!(_check_turn_lease, py)?;
    let delay = delay.as_secs_f64();
    if on_own_loop(py, event_loop) {
        let timer = event_loop.call_method1(intern!(py, "call_later"), (delay, check, claim))?;
        return Ok(Some(timer.unbind()));
    }
    let call_later = event_loop.getattr(intern!(py, "call_later"))?;
    event_loop.call_method1(
        intern!(py, "call_soon_threadsafe"),
        (call_later, delay, check, claim),
    )?;
    Ok(None)
}

fn cancel_timer(py: Python<'_>, event_loop: &Bound<'_, PyAny>, timer: &Bound<'_, PyAny>) {
    if on_own_loop(py, event_loop) {
        let _ = timer.call_method0(intern!(py, "cancel"));
        return;
    }
    if let Ok(cancel) = timer.getattr(intern!(py, "cancel")) {
        // Its loop closed: the timer will never run.
        let _ = event_loop.call_method1(intern!(py, "call_soon_threadsafe"), (cancel,));
    }
}

/// A request's turn with its session: `release()` once the request finished (or, as a safety
/// net, when nothing refers to it any more); `pass_on()` to give it up early.
#[pyclass(name = "_Turn", module = "tornsession._core", frozen, weakref)]
pub struct Turn {
    /// None: stands for a turn whose `_Turn` is being dropped (its drop frees the turn).
    claim: Option<ClaimId>,
    session_id: String,
    hooked: AtomicBool,
}

impl Turn {
    fn new_bound<'py>(
        py: Python<'py>, claim: Option<ClaimId>, session_id: &str,
    ) -> PyResult<Bound<'py, Turn>> {
        let turn = Bound::new(
            py,
            Turn {
                claim,
                session_id: session_id.to_owned(),
                hooked: AtomicBool::new(claim.is_none()),
            },
        )?;
        if let Some(claim) = claim {
            let weak = PyWeakrefReference::new(&turn)?.unbind();
            let unused = with_table(py, |table, _| match table.payload_mut(claim) {
                Some(links) => links.turn.replace(weak),
                None => Some(weak),
            });
            drop(unused); // outside the lock
        }
        Ok(turn)
    }

    /// The `_Turn` of a request's existing claim, or one that does nothing if it is being dropped.
    fn own<'py>(py: Python<'py>, claim: ClaimId, session_id: &str) -> PyResult<Bound<'py, Turn>> {
        let weak = with_table(py, |table, _| {
            table
                .payload(claim)
                .and_then(|l| l.turn.as_ref().map(|t| t.clone_ref(py)))
        });
        if let Some(turn) = weak.and_then(|w| w.bind(py).upgrade()) {
            if let Ok(turn) = turn.cast_into::<Turn>() {
                return Ok(turn);
            }
        }
        Turn::new_bound(py, None, session_id)
    }

    /// Whether the request holds the turn with no other request of the session loaded.
    pub fn alone(&self, py: Python<'_>) -> bool {
        let Some(claim) = self.claim else {
            return true;
        };
        with_table(py, |table, _| table.alone(claim))
    }
}

/// The turn if no other request of the session holds it or waits for it, else None (without
/// waiting). A request that has the turn already gets it again.
pub fn take_turn_now<'py>(
    py: Python<'py>, session_id: &str, owner: u64,
) -> PyResult<Option<Bound<'py, Turn>>> {
    let Some(event_loop) = running_loop(py) else {
        return Err(PyRuntimeError::new_err("no running event loop"));
    };
    let links = ClaimLinks {
        event_loop: event_loop.unbind(),
        waiter: None,
        timer: None,
        sessions: Vec::new(),
        turn: None,
    };
    // On Busy the links (the running loop, alive) are dropped under the lock: no finalizer runs.
    let taken = with_table(py, |table, _| table.take_now(session_id, owner, links));
    match taken {
        Taken::Granted(claim) => Turn::new_bound(py, Some(claim), session_id).map(Some),
        Taken::Own(claim) => Turn::own(py, claim, session_id).map(Some),
        Taken::Busy | Taken::Queued(_) => Ok(None),
    }
}

/// See `take_turn_now`.
#[pyfunction]
#[pyo3(name = "_take_turn_now")]
pub fn take_turn_now_py<'py>(
    py: Python<'py>, session_id: &str, owner: u64,
) -> PyResult<Option<Bound<'py, Turn>>> {
    take_turn_now(py, session_id, owner)
}

/// A claim on the session's turn, on `event_loop`: `(turn, None)` when it holds the turn now
/// (or the request had it already), `(turn, waiter)` when it must await the waiter first.
#[pyfunction]
pub fn _enqueue_for_turn<'py>(
    py: Python<'py>, session_id: &str, owner: u64, event_loop: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, Turn>, Option<Bound<'py, PyAny>>)> {
    let waiter = event_loop.call_method0(intern!(py, "create_future"))?;
    let links = ClaimLinks {
        event_loop: event_loop.clone().unbind(),
        waiter: Some(waiter.clone().unbind()),
        timer: None,
        sessions: Vec::new(),
        turn: None,
    };
    let taken = with_table(py, |table, effects| {
        table.enqueue(session_id, owner, links, effects)
    });
    Ok(match taken {
        Taken::Own(claim) => (Turn::own(py, claim, session_id)?, None),
        Taken::Granted(claim) => (Turn::new_bound(py, Some(claim), session_id)?, None),
        Taken::Queued(claim) => (Turn::new_bound(py, Some(claim), session_id)?, Some(waiter)),
        Taken::Busy => unreachable!("enqueue queues instead"),
    })
}

/// How many sessions have a request in flight in this process, and how many claims the table
/// still knows (for tests and metrics).
#[pyfunction]
pub fn _turns_in_table() -> (usize, usize) {
    let table = TABLE.lock();
    (table.sessions_in_flight(), table.claims())
}

#[pymethods]
impl Turn {
    #[getter]
    fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Whether the request's finish hooks are in place.
    #[getter]
    pub fn get_hooked(&self) -> bool {
        self.hooked.load(Ordering::Relaxed)
    }

    #[setter]
    pub fn set_hooked(&self, value: bool) {
        self.hooked.store(value, Ordering::Relaxed);
    }

    /// The request finished: the next request of the session takes the turn.
    pub fn release(&self, py: Python<'_>) {
        if let Some(claim) = self.claim {
            let others = with_table(py, |table, effects| {
                // This request's loop runs (it is releasing on it): only the claims of other
                // loops can be of a closed one.
                let own_loop = table.payload(claim).map(|l| l.event_loop.as_ptr());
                table.finish(claim, effects);
                table
                    .live_claims(&self.session_id)
                    .into_iter()
                    .filter_map(|other| {
                        let event_loop = &table.payload(other)?.event_loop;
                        (Some(event_loop.as_ptr()) != own_loop)
                            .then(|| (other, event_loop.clone_ref(py)))
                    })
                    .collect::<Vec<_>>()
            });
            if !others.is_empty() {
                finish_claims_of_closed_loops(py, others);
            }
        }
    }

    /// A write of the request's session is on its way to the store: the turn stays with the
    /// request until `end_write()`, whatever else asks it to move on (`Turns::begin_write`).
    pub fn begin_write(&self, py: Python<'_>) {
        if let Some(claim) = self.claim {
            with_table(py, |table, _| table.begin_write(claim));
        }
    }

    /// The write `begin_write()` announced was answered or failed.
    pub fn end_write(&self, py: Python<'_>) {
        if let Some(claim) = self.claim {
            with_table(py, |table, effects| table.end_write(claim, effects));
        }
    }

    /// The request keeps running but gives up its turn; its later writes are fenced.
    pub fn pass_on(&self, py: Python<'_>) {
        if let Some(claim) = self.claim {
            with_table(py, |table, effects| table.pass_on(claim, effects));
        }
    }

    /// `session` is one this request loaded: the lease looks at it for changes.
    pub fn attach(&self, session: &Bound<'_, PyAny>) -> PyResult<()> {
        let Some(claim) = self.claim else {
            return Ok(());
        };
        let weak = PyWeakrefReference::new(session)?.unbind();
        let unused = with_table(session.py(), |table, _| match table.payload_mut(claim) {
            Some(links) => {
                links.sessions.push(weak);
                None
            }
            None => Some(weak),
        });
        drop(unused); // outside the lock
        Ok(())
    }

    /// Called before the request writes `session`: whether to write. A request alone with its
    /// session writes. Otherwise: `SessionConflict` if another request of the session saved
    /// since this one loaded and this one changed the session (or regenerates it), False
    /// (nothing to write) if it did not change it, else True, counted as a save.
    #[pyo3(signature = (session, regenerating = false))]
    pub fn fence(&self, session: &Bound<'_, PyAny>, regenerating: bool) -> PyResult<bool> {
        let Some(claim) = self.claim else {
            return Ok(true);
        };
        let py = session.py();
        if self.alone(py) {
            return Ok(true);
        }
        let id = session.getattr(intern!(py, "session_id"))?;
        if !id.eq(&self.session_id)? {
            return Ok(true); // regenerated or logged out since: a record no other request loaded
        }
        let changed = regenerating
            || session
                .call_method0(intern!(py, "_is_changed"))?
                .is_truthy()?;
        let fence = with_table(py, |table, _| table.fence(claim, changed));
        match fence {
            Fence::Write => Ok(true),
            Fence::Skip => Ok(false),
            Fence::Conflict => Err(SessionConflict::new_err(format!(
                "another request of this session saved it after this one passed its turn on \
                 (it held it {} s without a change, or called release()); nothing was \
                 written: see order_requests in the README",
                LEASE.as_secs_f64()
            ))),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(claim) = self.claim else {
            return;
        };
        let Some(mut table) = TABLE.try_lock() else {
            // Dropped inside a locked section: the next one forgets it.
            DEFERRED.lock().push(claim);
            ANY_DEFERRED.store(true, Ordering::Release);
            return;
        };
        let mut effects = Vec::new();
        table.forget(claim, &mut effects);
        drop(table);
        if !effects.is_empty() {
            Python::attach(|py| carry_out(py, effects));
        }
    }
}
