//! The async API's connections to Redis and memcached: an `asyncio.Protocol` written in Rust,
//! one per server and event loop, that pipelines every request's commands on one connection.
//!
//! A request's bytes (encoded by the store, `crate::wire`) are written with the transport at
//! once; replies are parsed as they arrive in `data_received` and finish the waiting
//! [`StoreTask`]s in the order they were sent, so no thread and no lock is involved, and many
//! requests share a round trip. What no library does for us here: the asyncio protocol
//! adapters for Rust (pyo3-async-runtimes) run Rust futures on a second runtime, which is the
//! thread hop this exists to avoid.
//!
//! A connection that fails (lost, a reply that does not parse, no reply within the store's
//! timeout) fails every request waiting on it with the store's error and is dropped; the next
//! request makes a new one (`tornsession._wire`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::IntoPyObjectExt;

use crate::store_task::StoreTask;
use crate::stores::SessionStore;
use crate::wire::{self, Dialect, Reply, Request};

/// The smallest bound on what one reply may announce. A record over the manager's
/// `max_read_size` but under the bound is read and refused (a fresh session for that request
/// only); a larger announcement makes the connection unusable (every request waiting on it
/// fails), so the bound is generous: 4 times the read limit, at least this.
const MIN_REPLY_LIMIT: usize = 16 << 20;

/// One server of a store, as the async API reaches it: where, how to greet it, how long to
/// wait, and the connection currently open to it (if any).
#[pyclass(module = "tornsession._core", frozen)]
pub struct WireServer {
    #[pyo3(get)]
    host: String,
    #[pyo3(get)]
    port: u16,
    /// How long connecting may take, in seconds.
    #[pyo3(get)]
    connect_timeout: f64,
    /// The store as its errors name it.
    #[pyo3(get)]
    describe: String,
    dialect: Dialect,
    timeout: Duration,
    handshake: Option<Request>,
    /// The store, which reads the handshake's replies.
    store: Arc<dyn SessionStore>,
    /// The most bytes one reply may announce (see `MIN_REPLY_LIMIT`).
    reply_limit: usize,
    /// The open connections, one per event loop that uses the server (nearly always one);
    /// a connection leaves when it fails, its loop is closed, or the process forked.
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
                host: endpoint.host.clone(),
                port: endpoint.port,
                connect_timeout: connect_timeout.as_secs_f64(),
                describe: describe.to_owned(),
                dialect: wire.dialect(),
                timeout,
                handshake: wire.handshake(),
                store: store.clone(),
                reply_limit: max_read_size.saturating_mul(4).max(MIN_REPLY_LIMIT),
                links: Mutex::new(Vec::new()),
            })
            .collect()
    }

    fn forget(&self, link: &WireConnection) {
        self.links.lock().retain(|l| !std::ptr::eq(l.get(), link));
    }
}

#[pymethods]
impl WireServer {
    /// The open connection for `event_loop`, if there is one that has not failed. Connections
    /// of closed loops are closed and dropped on the way (an app's tests, or a script calling
    /// `asyncio.run` per job, make a loop each), as are those made before a fork: the parent's
    /// socket is shared, never to be used or closed by the child.
    fn link_for(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
    ) -> Option<Py<WireConnection>> {
        let links: Vec<Py<WireConnection>> =
            self.links.lock().iter().map(|l| l.clone_ref(py)).collect();
        let mut found = None;
        for link in links {
            let this = link.get();
            // A connection from before a fork is dropped without a call on its transport,
            // which would unregister the parent's socket from the epoll set both share.
            if this.pid != std::process::id() || this.is_broken() {
                self.forget(this);
            } else if this.event_loop.bind(py).is(event_loop) {
                found = Some(link);
            } else if this.loop_is_closed(py) {
                this.end_on_closed_loop(py);
            }
        }
        found
    }

    /// A protocol object for a new connection on `event_loop` (made by `loop.create_connection`).
    fn new_link(slf: &Bound<'_, Self>, event_loop: &Bound<'_, PyAny>) -> WireConnection {
        let server = slf.get();
        WireConnection {
            server: slf.clone().unbind(),
            event_loop: event_loop.clone().unbind(),
            dialect: server.dialect,
            timeout: server.timeout,
            reply_limit: server.reply_limit,
            pid: std::process::id(),
            state: Mutex::new(LinkState::default()),
        }
    }

    /// Makes `link`, connected and greeted, the one requests on its loop use.
    fn adopt(&self, link: &Bound<'_, WireConnection>) {
        let py = link.py();
        let event_loop = link.get().event_loop.bind(py);
        let mut links = self.links.lock();
        links.retain(|l| !l.get().event_loop.bind(py).is(event_loop));
        links.push(link.clone().unbind());
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
    waiter: Waiter,
    future: Py<PyAny>,
    replies: usize,
    got: Vec<Reply>,
    sent: Instant,
}

#[derive(Default)]
struct LinkState {
    transport: Option<Py<PyAny>>,
    received: Vec<u8>,
    pending: VecDeque<Pending>,
    /// Why the connection cannot be used any more.
    broken: Option<String>,
    /// Whether a deadline check is scheduled on the loop.
    timer_armed: bool,
    /// Requests queued since the last write: the requests of one loop iteration go out in one
    /// write (one system call, and the server answers them in one reply packet).
    outgoing: Vec<u8>,
    /// Whether a write of `outgoing` is scheduled.
    flush_scheduled: bool,
}

/// One connection to one server on one event loop; asyncio calls the protocol methods.
#[pyclass(module = "tornsession._core", frozen)]
pub struct WireConnection {
    server: Py<WireServer>,
    event_loop: Py<PyAny>,
    dialect: Dialect,
    timeout: Duration,
    reply_limit: usize,
    /// The process that made it.
    pid: u32,
    state: Mutex<LinkState>,
}

/// What to do once the state's lock is released: Python calls may re-enter the protocol.
struct Finished {
    pending: Pending,
    result: Result<Vec<Reply>, String>,
}

impl WireConnection {
    fn is_broken(&self) -> bool {
        self.state.lock().broken.is_some()
    }

    /// Ends a connection whose loop was closed under it. Its transport cannot close any more
    /// (closing schedules a callback on the loop, which raises): the TCP connection is shut
    /// down here, so the server sees it end at once, and the socket is released when Python
    /// collects the transport (with asyncio's "unclosed transport" ResourceWarning, as for any
    /// connection left open when a loop closes).
    fn end_on_closed_loop(&self, py: Python<'_>) {
        let transport = self
            .state
            .lock()
            .transport
            .as_ref()
            .map(|t| t.clone_ref(py));
        if let Some(transport) = transport {
            let _ = transport
                .call_method1(py, pyo3::intern!(py, "get_extra_info"), ("socket",))
                .and_then(|socket| socket.call_method1(py, "shutdown", (2,))); // SHUT_RDWR
        }
        // Their futures belong to the closed loop: nobody waits for them.
        drop(self.break_off(py, "its event loop was closed".to_owned()));
    }

    fn loop_is_closed(&self, py: Python<'_>) -> bool {
        self.event_loop
            .bind(py)
            .call_method0(pyo3::intern!(py, "is_closed"))
            .and_then(|closed| closed.is_truthy())
            .unwrap_or(true)
    }

    /// Writes `bytes` and queues what waits for their replies; the future it returns resolves
    /// when they are read.
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
                return Err(this.server.get().error(why));
            }
            if state.transport.is_none() {
                return Err(PyRuntimeError::new_err("the connection is not made yet"));
            }
            state.pending.push_back(Pending {
                waiter,
                future: future.clone_ref(py),
                replies,
                got: Vec::with_capacity(replies),
                sent: Instant::now(),
            });
            state.outgoing.extend_from_slice(bytes);
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
            Self::schedule_check(slf, this.timeout)?;
        }
        Ok(future)
    }

    /// One deadline check per connection at a time, for its oldest request, rather than a
    /// timer per request.
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

    /// Marks the connection unusable, takes every waiting request out (to be failed with
    /// `why`) and forgets it on its server.
    fn break_off(&self, py: Python<'_>, why: String) -> Vec<Finished> {
        let (pending, transport) = {
            let mut state = self.state.lock();
            if state.broken.is_none() {
                state.broken = Some(why.clone());
            }
            state.received.clear();
            state.outgoing.clear();
            (std::mem::take(&mut state.pending), state.transport.take())
        };
        self.server.get().forget(self);
        if let Some(transport) = transport {
            // On a closed loop this raises once the socket is unregistered; dropping the
            // transport then closes it.
            let _ = transport.call_method0(py, pyo3::intern!(py, "abort"));
        }
        pending
            .into_iter()
            .map(|pending| Finished {
                pending,
                result: Err(why.clone()),
            })
            .collect()
    }

    /// Resolves the futures of finished requests, outside the state's lock.
    fn finish(&self, py: Python<'_>, finished: Vec<Finished>) {
        for Finished { pending, result } in finished {
            let outcome: PyResult<Py<PyAny>> = match (pending.waiter, result) {
                (Waiter::Task(task), Ok(replies)) => task
                    .get()
                    .wire_done(replies)
                    .and_then(|done| done.into_py_any(py)),
                (Waiter::Task(task), Err(why)) => {
                    task.get().wire_failed(py, why);
                    true.into_py_any(py)
                }
                (Waiter::Handshake, Ok(replies)) => self
                    .server
                    .get()
                    .check_handshake(replies)
                    .map(|()| py.None()),
                (Waiter::Handshake, Err(why)) => Err(self.server.get().error(&why)),
            };
            let future = pending.future.bind(py);
            if future
                .call_method0(pyo3::intern!(py, "done"))
                .and_then(|done| done.is_truthy())
                .unwrap_or(true)
            {
                continue; // cancelled: its request no longer waits
            }
            let _ = match outcome {
                Ok(value) => future.call_method1(pyo3::intern!(py, "set_result"), (value,)),
                Err(error) => {
                    future.call_method1(pyo3::intern!(py, "set_exception"), (error.into_value(py),))
                }
            };
        }
    }
}

impl WireServer {
    /// A failure to reach this server, as `tornsession._wire` hands it to the waiting tasks
    /// (which word it as their store's error).
    fn error(&self, cause: &str) -> PyErr {
        PyConnectionError::new_err(format!("{}:{}: {cause}", self.host, self.port))
    }

    fn check_handshake(&self, replies: Vec<Reply>) -> PyResult<()> {
        match self.store.wire().map(|wire| wire.handshake_reply(replies)) {
            Some(Err(refused)) => Err(self.error(&refused.cause)),
            _ => Ok(()),
        }
    }
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
        let mut finished = Vec::new();
        let failure = {
            let mut state = self.state.lock();
            if state.broken.is_some() {
                return;
            }
            state.received.extend_from_slice(data);
            loop {
                match wire::decode(self.dialect, &mut state.received, self.reply_limit) {
                    Ok(Some(reply)) => {
                        let Some(front) = state.pending.front_mut() else {
                            break Some("the server sent a reply nobody asked for".to_owned());
                        };
                        front.got.push(reply);
                        if front.got.len() >= front.replies {
                            let mut pending = state.pending.pop_front().expect("front exists");
                            let replies = std::mem::take(&mut pending.got);
                            finished.push(Finished {
                                pending,
                                result: Ok(replies),
                            });
                        }
                    }
                    Ok(None) => break None,
                    Err(error) => break Some(error.to_string()),
                }
            }
        };
        self.finish(py, finished);
        if let Some(why) = failure {
            let failed = self.break_off(py, why);
            self.finish(py, failed);
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
        let failed = self.break_off(py, why);
        self.finish(py, failed);
    }

    /// Writes are a few hundred bytes and answered at once; the transport's buffer is enough.
    fn pause_writing(&self) {}

    fn resume_writing(&self) {}

    /// Fails every waiting request and drops the connection when the oldest has waited longer
    /// than the store's timeout: a server that stopped answering must not hold requests
    /// forever, and a reply arriving later would be matched to the wrong request.
    fn check_deadlines(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let wait = {
            let mut state = this.state.lock();
            match state.pending.front() {
                None => {
                    state.timer_armed = false;
                    return Ok(());
                }
                Some(oldest) => this.timeout.checked_sub(oldest.sent.elapsed()),
            }
        };
        match wait {
            Some(left) if !left.is_zero() => Self::schedule_check(slf, left),
            _ => {
                let failed = this.break_off(py, format!("no reply within {:?}", this.timeout));
                this.finish(py, failed);
                Ok(())
            }
        }
    }

    /// Sends the store's greeting; the future resolves to `None`, or raises the store's error.
    fn greet(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let Some(handshake) = slf.get().server.get().handshake.clone() else {
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

    /// Drops the connection (a greeting the server refused); waiting requests fail.
    fn close(&self, py: Python<'_>) {
        let failed = self.break_off(py, "the connection was closed".to_owned());
        self.finish(py, failed);
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

    /// Whether requests may be sent (made, and not failed).
    #[getter]
    fn usable(&self) -> bool {
        let state = self.state.lock();
        state.transport.is_some() && state.broken.is_none()
    }

    /// How many requests wait for replies (for tests).
    #[getter]
    fn in_flight(&self) -> usize {
        self.state.lock().pending.len()
    }
}
