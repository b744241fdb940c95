//! The async API's connections to Redis and memcached: an `asyncio.Protocol` written in Rust,
//! a few per server and event loop, each pipelining the requests sent on it.
//!
//! A request's bytes (encoded by the store, `tornsession_core::wire`) are queued with the transport at
//! once and written with the others of the same loop iteration; replies are parsed as they
//! arrive in `data_received` and finish the waiting [`StoreTask`]s in the order they were sent,
//! so no thread and no lock is involved, and many requests share a round trip. What no library
//! does for us here: the asyncio protocol adapters for Rust (pyo3-async-runtimes) run Rust
//! futures on a second runtime, which is the thread hop this exists to avoid.
//!
//! Replies are never matched to a request by position alone: each request carries the
//! connection's next sequence number as a tag the server echoes (`tornsession_core::wire::check_tag`), and
//! its replies are used only once their tag is its own. A wrong tag, or a loaded record bound to
//! another session id (`StoreErrorKind::Crossed`), means the connection is out of step (a
//! proxy lost, doubled or added a reply): every request waiting on it fails with the store's
//! error, it is closed, and the next request connects again. A request whose caller gave up
//! (cancelled, timed out around it) keeps its place in the queue, so its reply is read and
//! dropped, never handed to the request behind it.
//!
//! Each request has its own deadline, the store's `timeout` from its send. One that passes
//! fails that request alone; its connection takes no new requests, answers those already sent
//! as their replies come (or their own deadlines pass), then closes. New requests go to an idle
//! connection of the loop, or the one already collecting this loop iteration's requests, or a
//! new one (up to [`MAX_LINKS_PER_LOOP`]), so one slow reply holds up few others.
//!
//! Connections hold nothing of their server but plain data and a weak reference to the store:
//! a manager (or store) that is dropped drops its servers, which close their connections.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{IntoPyObjectExt, PyTraverseError, PyVisit};

use crate::store_task::{StoreTask, WireDone};
use tornsession_core::stores::Request;
use tornsession_core::stores::{SessionStore, StoreErrorKind};
use tornsession_core::wire::{self, Dialect, Reply, TagCheck};

/// The smallest bound on what one reply may announce. A record over the manager's
/// `max_read_size` but under the bound is read and refused (a fresh session for that request
/// only); a larger announcement makes the connection unusable (every request waiting on it
/// fails), so the bound is generous: 4 times the read limit, at least this.
const MIN_REPLY_LIMIT: usize = 16 << 20;

/// How many connections one server gets per event loop: enough that a reply held up (a slow
/// server, a big record) delays few other requests, few enough that requests still share
/// round trips.
pub const MAX_LINKS_PER_LOOP: usize = 4;

/// How long a connection's oldest request may wait before new requests prefer another
/// connection even when every one is busy.
const STALLED_AFTER: Duration = Duration::from_millis(10);

/// What a server's connections need of it: plain data, and the store only weakly (a dropped
/// store is not kept alive by the event loop that holds its connections).
struct ServerInfo {
    host: String,
    port: u16,
    dialect: Dialect,
    timeout: Duration,
    handshake: Option<Request>,
    /// The store, which reads the handshake's replies.
    store: Weak<dyn SessionStore>,
    /// The most bytes one reply may announce (see `MIN_REPLY_LIMIT`).
    reply_limit: usize,
}

impl ServerInfo {
    /// A failure to reach this server, as `tornsession._wire` hands it to the waiting tasks
    /// (which word it as their store's error).
    fn error(&self, cause: &str) -> PyErr {
        PyConnectionError::new_err(format!("{}:{}: {cause}", self.host, self.port))
    }

    fn check_handshake(&self, replies: Vec<Reply>) -> PyResult<()> {
        let Some(store) = self.store.upgrade() else {
            return Err(self.error("the store is gone"));
        };
        match store.wire().map(|wire| wire.handshake_reply(replies)) {
            Some(Err(refused)) => Err(self.error(&refused.cause)),
            _ => Ok(()),
        }
    }
}

/// One server of a store, as the async API reaches it: where, how to greet it, how long to
/// wait, and the connections open to it.
#[pyclass(module = "tornsession._core", frozen)]
pub struct WireServer {
    info: Arc<ServerInfo>,
    /// How long connecting may take, in seconds.
    #[pyo3(get)]
    connect_timeout: f64,
    /// The store as its errors name it.
    #[pyo3(get)]
    describe: String,
    /// The open connections, a few per event loop that uses the server; a connection leaves
    /// when it fails or closes, its loop is closed, or the process forked.
    links: Mutex<Vec<Py<WireConnection>>>,
}

impl WireServer {
    /// One per server of `store`; none when it has no wire protocol.
    pub fn for_store(
        store: &Arc<dyn SessionStore>,
        describe: &str,
        max_read_size: usize,
    ) -> Vec<Self> {
        let Some(wire) = store.wire() else {
            return Vec::new();
        };
        let (timeout, connect_timeout) = wire.timeouts();
        wire.endpoints()
            .iter()
            .map(|endpoint| Self {
                info: Arc::new(ServerInfo {
                    host: endpoint.host.clone(),
                    port: endpoint.port,
                    dialect: wire.dialect(),
                    timeout,
                    handshake: wire.handshake(),
                    store: Arc::downgrade(store),
                    reply_limit: max_read_size.saturating_mul(4).max(MIN_REPLY_LIMIT),
                }),
                connect_timeout: connect_timeout.as_secs_f64(),
                describe: describe.to_owned(),
                links: Mutex::new(Vec::new()),
            })
            .collect()
    }
}

/// Closes `links` from whatever thread drops them: on their loop's thread (the transport is
/// the loop's), or at once when that loop is closed.
fn close_links(py: Python<'_>, links: Vec<Py<WireConnection>>) {
    for link in links {
        let this = link.get();
        if this.pid != std::process::id() {
            continue; // the parent's socket: never closed by the child
        }
        let scheduled = link
            .bind(py)
            .getattr(pyo3::intern!(py, "close"))
            .and_then(|close| {
                this.event_loop
                    .bind(py)
                    .call_method1(pyo3::intern!(py, "call_soon_threadsafe"), (close,))
            });
        if scheduled.is_err() {
            this.end_on_closed_loop(py);
        }
    }
}

impl Drop for WireServer {
    fn drop(&mut self) {
        let links = std::mem::take(self.links.get_mut());
        if !links.is_empty() {
            // Dropped by Python's deallocation, which holds the GIL.
            Python::attach(|py| close_links(py, links));
        }
    }
}

/// What choosing a connection sees of one.
struct Load {
    pending: usize,
    /// It already collects this loop iteration's requests: joining costs no write.
    batching: bool,
    stalled: bool,
}

#[pymethods]
impl WireServer {
    #[getter]
    fn host(&self) -> &str {
        &self.info.host
    }

    #[getter]
    fn port(&self) -> u16 {
        self.info.port
    }

    /// The connection of `event_loop` a new request goes to: one that collects this loop
    /// iteration's requests already, an idle one, else the least loaded. `None` when the loop
    /// has none, or (unless `busy_ok`) all it has are busy and another may be made. Connections
    /// of closed loops are closed and dropped on the way (an app's tests, or a script calling
    /// `asyncio.run` per job, make a loop each), as are those made before a fork: the parent's
    /// socket is shared, never to be used or closed by the child.
    #[pyo3(signature = (event_loop, busy_ok=false))]
    fn link_for(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        busy_ok: bool,
    ) -> Option<Py<WireConnection>> {
        let links: Vec<Py<WireConnection>> =
            self.links.lock().iter().map(|l| l.clone_ref(py)).collect();
        let now = Instant::now();
        let mut gone = Vec::new();
        let mut usable = 0;
        let mut best: Option<(Load, Py<WireConnection>)> = None;
        let mut free: Option<Py<WireConnection>> = None;
        for link in links {
            let this = link.get();
            // A connection from before a fork is dropped without a call on its transport,
            // which would unregister the parent's socket from the epoll set both share.
            if this.pid != std::process::id() || this.is_broken() {
                gone.push(link);
            } else if this.event_loop.bind(py).is(event_loop) {
                let Some(load) = this.load(now) else {
                    continue; // retired: drains, then closes
                };
                usable += 1;
                if free.is_some() {
                    continue;
                }
                if !load.stalled && (load.batching || load.pending == 0) {
                    free = Some(link);
                    continue;
                }
                let better = best.as_ref().is_none_or(|(held, _)| {
                    (load.stalled, load.pending) < (held.stalled, held.pending)
                });
                if better {
                    best = Some((load, link));
                }
            } else if this.loop_is_closed(py) {
                this.end_on_closed_loop(py);
                gone.push(link);
            }
        }
        if !gone.is_empty() {
            self.links.lock().retain(|l| !gone.iter().any(|g| g.is(l)));
        }
        if free.is_some() {
            return free;
        }
        let (_, link) = best?;
        (busy_ok || usable >= MAX_LINKS_PER_LOOP).then_some(link)
    }

    /// A protocol object for a new connection on `event_loop` (made by `loop.create_connection`).
    fn new_link(&self, event_loop: &Bound<'_, PyAny>) -> WireConnection {
        WireConnection {
            info: self.info.clone(),
            event_loop: event_loop.clone().unbind(),
            pid: std::process::id(),
            state: Mutex::new(LinkState::default()),
        }
    }

    /// Adds `link`, connected and greeted, to those requests on its loop use. Past
    /// [`MAX_LINKS_PER_LOOP`], the link it replaces (an idle one if there is one) takes no new
    /// requests and closes once those it has are answered.
    fn adopt(&self, link: &Bound<'_, WireConnection>) {
        let py = link.py();
        let event_loop = link.get().event_loop.bind(py);
        let replaced = {
            let mut links = self.links.lock();
            links.push(link.clone().unbind());
            let now = Instant::now();
            let same_loop: Vec<(usize, Load)> = links
                .iter()
                .enumerate()
                .filter(|(_, l)| l.get().event_loop.bind(py).is(event_loop))
                .filter_map(|(at, l)| l.get().load(now).map(|load| (at, load)))
                .collect();
            if same_loop.len() > MAX_LINKS_PER_LOOP {
                let (at, _) = same_loop
                    .iter()
                    .min_by_key(|(_, load)| load.pending)
                    .expect("more than the maximum");
                Some(links.remove(*at))
            } else {
                None
            }
        };
        if let Some(replaced) = replaced {
            replaced.get().retire(py);
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(links) = self.links.try_lock() {
            for link in links.iter() {
                visit.call(link)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let links = std::mem::take(&mut *self.links.lock());
        if !links.is_empty() {
            Python::attach(|py| close_links(py, links));
        }
    }
}

/// What a sent request waits for.
enum Waiter {
    /// A session operation: its task reads the replies, then the future says whether the task
    /// is done (`False`: it must still run on a worker thread).
    Task(Py<StoreTask>),
    /// The connection's greeting (AUTH, SELECT): the future gets `None`, or the store's error.
    Handshake,
}

struct Pending {
    /// Who waits, and the future they await; `None` once its deadline passed (it failed
    /// then), while its replies are still to be read and dropped.
    waiter: Option<(Waiter, Py<PyAny>)>,
    /// The sequence number its replies must echo.
    tag: u64,
    /// How many replies answer it, its tag's included.
    replies: usize,
    got: Vec<Reply>,
    deadline: Instant,
}

/// Why requests failed, and of what kind for their store error.
#[derive(Clone)]
struct Failure {
    cause: String,
    kind: StoreErrorKind,
}

impl Failure {
    fn unavailable(cause: impl Into<String>) -> Self {
        Self {
            cause: cause.into(),
            kind: StoreErrorKind::Unavailable,
        }
    }
}

/// A request's outcome, delivered once the state's lock is released (Python calls may
/// re-enter the protocol).
struct Answer {
    waiter: Waiter,
    future: Py<PyAny>,
    result: Result<Vec<Reply>, Failure>,
}

#[derive(Default)]
struct LinkState {
    transport: Option<Py<PyAny>>,
    received: Vec<u8>,
    pending: VecDeque<Pending>,
    /// Why the connection cannot be used any more.
    broken: Option<String>,
    /// It takes no new requests (a deadline passed, or a reply could not be vouched for),
    /// and closes once nobody waits on it.
    retired: bool,
    /// Whether a deadline check is scheduled on the loop.
    timer_armed: bool,
    /// Requests queued since the last write: the requests of one loop iteration go out in one
    /// write (one system call, and the server answers them in one reply packet).
    outgoing: Vec<u8>,
    /// Whether a write of `outgoing` is scheduled.
    flush_scheduled: bool,
    /// The tag of the next request.
    next_tag: u64,
}

/// One connection to one server on one event loop; asyncio calls the protocol methods.
#[pyclass(module = "tornsession._core", frozen)]
pub struct WireConnection {
    info: Arc<ServerInfo>,
    event_loop: Py<PyAny>,
    /// The process that made it.
    pid: u32,
    state: Mutex<LinkState>,
}

impl WireConnection {
    fn is_broken(&self) -> bool {
        self.state.lock().broken.is_some()
    }

    /// How busy it is; `None` when it takes no new requests.
    fn load(&self, now: Instant) -> Option<Load> {
        let state = self.state.lock();
        if state.retired || state.broken.is_some() || state.transport.is_none() {
            return None;
        }
        let stalled = state.pending.front().is_some_and(|oldest| {
            let sent = oldest.deadline.checked_sub(self.info.timeout);
            sent.is_some_and(|sent| now.saturating_duration_since(sent) > STALLED_AFTER)
        });
        Some(Load {
            pending: state.pending.len(),
            batching: state.flush_scheduled,
            stalled,
        })
    }

    /// Ends a connection whose loop was closed under it. Its transport cannot close the usual
    /// way any more (closing schedules a callback on the loop, which raises): it is finished
    /// here as its own scheduled callback would have (socket closed, protocol told), or, on a
    /// transport without that step (another loop implementation), shut down so the server sees
    /// the connection end at once, the socket released when Python collects the transport.
    fn end_on_closed_loop(&self, py: Python<'_>) {
        let transport = self
            .state
            .lock()
            .transport
            .as_ref()
            .map(|t| t.clone_ref(py));
        if let Some(transport) = transport {
            let finished = transport.call_method1(
                py,
                pyo3::intern!(py, "_call_connection_lost"),
                (py.None(),),
            );
            if finished.is_err() {
                let _ = transport
                    .call_method1(py, pyo3::intern!(py, "get_extra_info"), ("socket",))
                    .and_then(|socket| socket.call_method1(py, "shutdown", (2,)));
                // SHUT_RDWR
            }
        }
        // Their futures belong to the closed loop: nobody waits for them.
        drop(self.break_off(
            py,
            Failure::unavailable("its event loop was closed".to_owned()),
        ));
    }

    fn loop_is_closed(&self, py: Python<'_>) -> bool {
        self.event_loop
            .bind(py)
            .call_method0(pyo3::intern!(py, "is_closed"))
            .and_then(|closed| closed.is_truthy())
            .unwrap_or(true)
    }

    /// Queues `bytes`, tagged, and what waits for their replies; the future it returns
    /// resolves when they are read.
    fn send_request(
        slf: &Bound<'_, Self>,
        waiter: Waiter,
        bytes: &[u8],
        replies: usize,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let future = this
            .event_loop
            .bind(py)
            .call_method0(pyo3::intern!(py, "create_future"))?
            .unbind();
        let (flush, arm) = {
            let mut state = this.state.lock();
            if let Some(why) = &state.broken {
                return Err(this.info.error(why));
            }
            if state.retired {
                return Err(this.info.error("the connection takes no new requests"));
            }
            if state.transport.is_none() {
                return Err(PyRuntimeError::new_err("the connection is not made yet"));
            }
            let tag = state.next_tag;
            state.next_tag += 1;
            wire::write_tagged(this.info.dialect, bytes, tag, &mut state.outgoing);
            let replies = wire::tagged_replies(this.info.dialect, replies);
            state.pending.push_back(Pending {
                waiter: Some((waiter, future.clone_ref(py))),
                tag,
                replies,
                got: Vec::with_capacity(replies),
                deadline: Instant::now() + this.info.timeout,
            });
            let flush = !state.flush_scheduled;
            state.flush_scheduled = true;
            let arm = !state.timer_armed;
            state.timer_armed = true;
            (flush, arm)
        };
        if flush {
            let event_loop = this.event_loop.bind(py);
            event_loop.call_method1(
                pyo3::intern!(py, "call_soon"),
                (slf.getattr(pyo3::intern!(py, "flush"))?,),
            )?;
        }
        if arm {
            Self::schedule_check(slf, this.info.timeout)?;
        }
        Ok(future)
    }

    /// One deadline check per connection at a time, for its oldest request not yet past its
    /// deadline (requests are sent in order, so theirs come in order), rather than a timer per
    /// request.
    fn schedule_check(slf: &Bound<'_, Self>, delay: Duration) -> PyResult<()> {
        let py = slf.py();
        slf.get().event_loop.bind(py).call_method1(
            pyo3::intern!(py, "call_later"),
            (
                delay.as_secs_f64(),
                slf.getattr(pyo3::intern!(py, "check_deadlines"))?,
            ),
        )?;
        Ok(())
    }

    /// Marks the connection unusable and takes every waiting request out, to be failed with
    /// `failure`.
    fn break_off(&self, py: Python<'_>, failure: Failure) -> Vec<Answer> {
        let (pending, transport) = {
            let mut state = self.state.lock();
            if state.broken.is_none() {
                state.broken = Some(failure.cause.clone());
            }
            state.received.clear();
            state.outgoing.clear();
            (std::mem::take(&mut state.pending), state.transport.take())
        };
        if let Some(transport) = transport {
            // On a closed loop this raises once the socket is unregistered; dropping the
            // transport then closes it.
            let _ = transport.call_method0(py, pyo3::intern!(py, "abort"));
        }
        pending
            .into_iter()
            .filter_map(|pending| pending.waiter)
            .map(|(waiter, future)| Answer {
                waiter,
                future,
                result: Err(failure.clone()),
            })
            .collect()
    }

    /// Breaks the connection off for `failure`, failing everyone waiting on it.
    fn fail_all(&self, py: Python<'_>, failure: Failure) {
        let failed = self.break_off(py, failure);
        self.deliver(py, failed);
    }

    /// Resolves the futures of finished requests, outside the state's lock, in order. A load
    /// whose record turns out bound to another id puts the connection out of step: the answers
    /// after it fail too, and the failure is returned for the caller to break the connection
    /// off with.
    fn deliver(&self, py: Python<'_>, answers: Vec<Answer>) -> Option<Failure> {
        let mut crossed: Option<Failure> = None;
        for Answer {
            waiter,
            future,
            result,
        } in answers
        {
            let result = match (&crossed, result) {
                (Some(failure), Ok(_)) => Err(failure.clone()),
                (_, result) => result,
            };
            let outcome: PyResult<Py<PyAny>> = match (waiter, result) {
                (Waiter::Task(task), Ok(replies)) => match task.get().wire_done(replies) {
                    Ok(WireDone::Done) => true.into_py_any(py),
                    Ok(WireDone::NeedsThread) => false.into_py_any(py),
                    Ok(WireDone::Crossed) => {
                        crossed = Some(Failure::unavailable(
                            "replies out of step with requests: a record of another session \
                             came back on this connection",
                        ));
                        true.into_py_any(py) // the task's result is the crossed error
                    }
                    Err(e) => Err(e),
                },
                (Waiter::Task(task), Err(failure)) => {
                    task.get().wire_failed_as(py, failure.cause, failure.kind);
                    true.into_py_any(py)
                }
                (Waiter::Handshake, Ok(replies)) => {
                    self.info.check_handshake(replies).map(|()| py.None())
                }
                (Waiter::Handshake, Err(failure)) => Err(self.info.error(&failure.cause)),
            };
            let future = future.bind(py);
            if is_done(future) {
                continue; // cancelled: its caller no longer waits
            }
            let _ = match outcome {
                Ok(value) => future.call_method1(pyo3::intern!(py, "set_result"), (value,)),
                Err(error) => {
                    future.call_method1(pyo3::intern!(py, "set_exception"), (error.into_value(py),))
                }
            };
        }
        crossed
    }

    /// Takes no new requests from now on; closes at once when nobody waits on it.
    fn retire(&self, py: Python<'_>) {
        self.state.lock().retired = true;
        self.close_if_drained(py);
    }

    /// Closes a retired connection once no caller waits on it (those whose deadline passed or
    /// who were cancelled do not).
    fn close_if_drained(&self, py: Python<'_>) {
        let futures: Vec<Py<PyAny>> = {
            let state = self.state.lock();
            if !state.retired || state.broken.is_some() {
                return;
            }
            state
                .pending
                .iter()
                .filter_map(|p| p.waiter.as_ref().map(|(_, future)| future.clone_ref(py)))
                .collect()
        };
        if futures.iter().all(|future| is_done(future.bind(py))) {
            self.fail_all(
                py,
                Failure::unavailable("the connection was retired after a late or unchecked reply"),
            );
        }
    }
}

fn is_done(future: &Bound<'_, PyAny>) -> bool {
    future
        .call_method0(pyo3::intern!(future.py(), "done"))
        .and_then(|done| done.is_truthy())
        .unwrap_or(true)
}

#[pymethods]
impl WireConnection {
    fn connection_made(&self, transport: Bound<'_, PyAny>) -> PyResult<()> {
        // Requests are small and latency-bound: never let Nagle hold one back.
        let py = transport.py();
        if let Ok(socket) = transport.call_method1(pyo3::intern!(py, "get_extra_info"), ("socket",))
        {
            if !socket.is_none() {
                let socket_module = py.import("socket")?;
                let _ = socket.call_method1(
                    "setsockopt",
                    (
                        socket_module.getattr("IPPROTO_TCP")?,
                        socket_module.getattr("TCP_NODELAY")?,
                        1,
                    ),
                );
            }
        }
        self.state.lock().transport = Some(transport.unbind());
        Ok(())
    }

    fn data_received(&self, py: Python<'_>, data: &[u8]) {
        let mut answers = Vec::new();
        let (failure, retired) = {
            let mut state = self.state.lock();
            if state.broken.is_some() {
                return;
            }
            state.received.extend_from_slice(data);
            let failure = loop {
                let reply = match wire::decode(
                    self.info.dialect,
                    &mut state.received,
                    self.info.reply_limit,
                ) {
                    Ok(Some(reply)) => reply,
                    Ok(None) => break None,
                    Err(error) => break Some(Failure::unavailable(error.to_string())),
                };
                let Some(front) = state.pending.front_mut() else {
                    break Some(Failure {
                        cause: "the server sent a reply nobody asked for".to_owned(),
                        kind: StoreErrorKind::Crossed,
                    });
                };
                front.got.push(reply);
                if front.got.len() < front.replies {
                    continue;
                }
                let mut done = state.pending.pop_front().expect("front exists");
                let mut replies = std::mem::take(&mut done.got);
                // The tag first: nothing of replies that may be another request's is used.
                let check = wire::check_tag(self.info.dialect, done.tag, &mut replies);
                let result = match check {
                    TagCheck::InStep => Ok(replies),
                    TagCheck::Unchecked => {
                        state.retired = true;
                        Ok(replies)
                    }
                    TagCheck::OutOfStep(ref why) => Err(Failure {
                        cause: why.clone(),
                        kind: StoreErrorKind::Crossed,
                    }),
                };
                let out_of_step = result.as_ref().err().cloned();
                if let Some((waiter, future)) = done.waiter {
                    answers.push(Answer {
                        waiter,
                        future,
                        result,
                    });
                }
                if let Some(failure) = out_of_step {
                    break Some(failure);
                }
            };
            (failure, state.retired)
        };
        let crossed = self.deliver(py, answers);
        if let Some(failure) = failure.or(crossed) {
            self.fail_all(py, failure);
        } else if retired {
            self.close_if_drained(py);
        }
    }

    /// The server closed its side: the transport closes, and `connection_lost` follows.
    fn eof_received(&self) -> bool {
        false
    }

    #[pyo3(signature = (exc=None))]
    fn connection_lost(&self, py: Python<'_>, exc: Option<Bound<'_, PyAny>>) {
        let why = match exc {
            Some(exc) => format!("connection lost: {exc}"),
            None => "the server closed the connection".to_owned(),
        };
        self.fail_all(py, Failure::unavailable(why));
    }

    /// Writes are a few hundred bytes and answered at once; the transport's buffer is enough.
    fn pause_writing(&self) {}

    fn resume_writing(&self) {}

    /// Fails each request whose own deadline passed (the store's timeout from its send),
    /// alone: the requests behind it wait for their replies until their own deadlines. A
    /// connection with a deadline passed takes no new requests and closes once nobody waits
    /// on it; a reply arriving later is read and dropped, never given to another request.
    fn check_deadlines(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let now = Instant::now();
        let (expired, next, overdue) = {
            let mut state = this.state.lock();
            let mut expired = Vec::new();
            let mut next = None;
            let mut overdue = false;
            for pending in state.pending.iter_mut() {
                if pending.deadline > now {
                    next = Some(pending.deadline - now);
                    break;
                }
                overdue = true;
                if let Some((waiter, future)) = pending.waiter.take() {
                    expired.push(Answer {
                        waiter,
                        future,
                        result: Err(Failure::unavailable(format!(
                            "no reply within {:?}",
                            this.info.timeout
                        ))),
                    });
                }
            }
            if overdue {
                state.retired = true;
            }
            state.timer_armed = next.is_some();
            (expired, next, overdue)
        };
        this.deliver(py, expired);
        if overdue {
            this.close_if_drained(py);
        }
        if let Some(left) = next {
            Self::schedule_check(slf, left)?;
        }
        Ok(())
    }

    /// Sends the store's greeting; the future resolves to `None`, or raises the store's error.
    fn greet(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let Some(handshake) = slf.get().info.handshake.clone() else {
            return Ok(None);
        };
        Self::send_request(slf, Waiter::Handshake, &handshake.bytes, handshake.replies).map(Some)
    }

    /// Sends `task`'s request; the future resolves to whether the task is done (`False`: its
    /// answer needs more than this protocol's commands, and it runs on a worker thread).
    fn send(slf: &Bound<'_, Self>, task: Py<StoreTask>) -> PyResult<Py<PyAny>> {
        let Some(request) = task.get().take_wire_request() else {
            return Err(PyRuntimeError::new_err(
                "this task has no request for the store's protocol",
            ));
        };
        Self::send_request(slf, Waiter::Task(task), &request.bytes, request.replies)
    }

    /// Drops the connection (a greeting the server refused, its store dropped); waiting
    /// requests fail.
    fn close(&self, py: Python<'_>) {
        self.fail_all(py, Failure::unavailable("the connection was closed"));
    }

    /// Writes the requests queued in this loop iteration, in the order they were sent.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let (transport, outgoing) = {
            let mut state = self.state.lock();
            state.flush_scheduled = false;
            let outgoing = std::mem::take(&mut state.outgoing);
            match state.transport.as_ref() {
                Some(transport) if !outgoing.is_empty() => (transport.clone_ref(py), outgoing),
                _ => return Ok(()), // failed meanwhile: its requests were failed with it
            }
        };
        transport.call_method1(
            py,
            pyo3::intern!(py, "write"),
            (PyBytes::new(py, &outgoing),),
        )?;
        Ok(())
    }

    /// Whether new requests may be sent (made, not failed, not retired).
    #[getter]
    fn usable(&self) -> bool {
        let state = self.state.lock();
        state.transport.is_some() && state.broken.is_none() && !state.retired
    }

    /// How many requests wait for replies (for tests), those given up on included.
    #[getter]
    fn in_flight(&self) -> usize {
        self.state.lock().pending.len()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        if let Some(state) = self.state.try_lock() {
            visit.call(&state.transport)?;
            for pending in &state.pending {
                if let Some((waiter, future)) = &pending.waiter {
                    visit.call(future)?;
                    if let Waiter::Task(task) = waiter {
                        visit.call(task)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (transport, pending) = {
            let mut state = self.state.lock();
            state.broken.get_or_insert_with(|| "collected".to_owned());
            (state.transport.take(), std::mem::take(&mut state.pending))
        };
        drop((transport, pending)); // after the lock: their finalizers may call back in
    }
}
