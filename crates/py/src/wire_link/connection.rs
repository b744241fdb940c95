//! `WireConnection`: one connection to one server on one event loop, an `asyncio.Protocol`
//! around a [`ReplyQueue`] (which tags the requests, matches the replies to them and keeps their
//! deadlines); this file does the transport's I/O and resolves the callers' futures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::{IntoPyObjectExt, PyTraverseError, PyVisit};

use super::{Load, ServerInfo, STALLED_AFTER};
use tornsession_core::stores::reply_queue::{Delivery, Failure, ReplyQueue};
use tornsession_core::stores::StoreErrorKind;
use tornsession_core::wire::Reply;

/// What a sent request waits for.
enum Waiter {
    /// A session operation (a task object the server's `sink_of` reads as a `ReplySink`): it
    /// reads the replies, then the future says whether it is done (`False`: it must still run
    /// on a worker thread).
    Task(Py<PyAny>),
    /// The connection's greeting (AUTH, SELECT): the future gets `None`, or the store's error.
    Handshake,
}

/// Who waits for a request's replies, and the future they await.
type Waiting = (Waiter, Py<PyAny>);

/// A request's outcome, delivered once the state's lock is released (Python calls may
/// re-enter the protocol).
type Answer = (Waiting, Result<Vec<Reply>, Failure>);

struct LinkState {
    transport: Option<Py<PyAny>>,
    queue: ReplyQueue<Waiting>,
    /// Why the connection cannot be used any more.
    broken: Option<String>,
    /// It takes no new requests (a deadline passed, or a reply could not be vouched for),
    /// and closes once nobody waits on it.
    retired: bool,
    /// Whether a deadline check is scheduled on the loop.
    timer_armed: bool,
    /// Whether a write of the queued requests is scheduled: the requests of one loop
    /// iteration go out in one write (one system call, and the server answers them in one
    /// reply packet).
    flush_scheduled: bool,
}

/// One connection to one server on one event loop; asyncio calls the protocol methods.
#[pyclass(module = "tornsession._core", name = "_WireConnection", frozen)]
pub struct WireConnection {
    info: Arc<ServerInfo>,
    pub(super) event_loop: Py<PyAny>,
    /// The process that made it.
    pub(super) pid: u32,
    state: Mutex<LinkState>,
}

impl WireConnection {
    pub(super) fn new(info: Arc<ServerInfo>, event_loop: Py<PyAny>) -> Self {
        let queue = ReplyQueue::new(info.dialect, info.timeout, info.reply_limit);
        Self {
            info,
            event_loop,
            pid: std::process::id(),
            state: Mutex::new(LinkState {
                transport: None,
                queue,
                broken: None,
                retired: false,
                timer_armed: false,
                flush_scheduled: false,
            }),
        }
    }

    pub(super) fn is_broken(&self) -> bool {
        self.state.lock().broken.is_some()
    }

    /// How busy it is; `None` when it takes no new requests.
    pub(super) fn load(&self, now: Instant) -> Option<Load> {
        let state = self.state.lock();
        if state.retired || state.broken.is_some() || state.transport.is_none() {
            return None;
        }
        Some(Load {
            pending: state.queue.len(),
            batching: state.flush_scheduled,
            stalled: state.queue.stalled(now, STALLED_AFTER),
        })
    }

    /// Ends a connection whose loop was closed under it. Its transport cannot close the usual
    /// way any more (closing schedules a callback on the loop, which raises): it is finished
    /// here as its own scheduled callback would have (socket closed, protocol told), or, on a
    /// transport without that step (another loop implementation), shut down so the server sees
    /// the connection end at once, the socket released when Python collects the transport.
    pub(super) fn end_on_closed_loop(&self, py: Python<'_>) {
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

    pub(super) fn loop_is_closed(&self, py: Python<'_>) -> bool {
        self.event_loop
            .bind(py)
            .call_method0(pyo3::intern!(py, "is_closed"))
            .and_then(|closed| closed.is_truthy())
            .unwrap_or(true)
    }

    /// Queues `bytes`, tagged, and what waits for their replies; the future it returns
    /// resolves when they are read.
    fn send_request(
        slf: &Bound<'_, Self>, waiter: Waiter, bytes: &[u8], replies: usize,
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
            let waiting = (waiter, future.clone_ref(py));
            state.queue.send(waiting, bytes, replies, Instant::now());
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
        let (waiters, transport) = {
            let mut state = self.state.lock();
            if state.broken.is_none() {
                state.broken = Some(failure.cause.clone());
            }
            (state.queue.take_waiters(), state.transport.take())
        };
        if let Some(transport) = transport {
            // On a closed loop this raises once the socket is unregistered; dropping the
            // transport then closes it.
            let _ = transport.call_method0(py, pyo3::intern!(py, "abort"));
        }
        waiters
            .map(|waiting| (waiting, Err(failure.clone())))
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
        for ((waiter, future), result) in answers {
            let result = match (&crossed, result) {
                (Some(failure), Ok(_)) => Err(failure.clone()),
                (_, result) => result,
            };
            let outcome: PyResult<Py<PyAny>> = match (waiter, result) {
                (Waiter::Task(task), result) => {
                    let task = task.bind(py);
                    match (self.info.sink_of)(task) {
                        None => Err(PyTypeError::new_err("not a store task")),
                        Some(sink) => match result {
                            Ok(replies) => match sink.replied(replies) {
                                Ok(Delivery::Done) => true.into_py_any(py),
                                Ok(Delivery::NeedsFollowUp) => false.into_py_any(py),
                                Ok(Delivery::Crossed) => {
                                    crossed = Some(Failure::unavailable(
                                        "replies out of step with requests: a record of \
                                         another session came back on this connection",
                                    ));
                                    true.into_py_any(py) // the task's result is the crossed error
                                }
                                Err(misuse) => Err(PyRuntimeError::new_err(misuse)),
                            },
                            Err(failure) => {
                                sink.failed(failure);
                                true.into_py_any(py)
                            }
                        },
                    }
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
    pub(super) fn retire(&self, py: Python<'_>) {
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
                .queue
                .waiters()
                .map(|(_, future)| future.clone_ref(py))
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

/// Bytes asked of the socket per read (see `connection_made`).
const READ_SIZE: usize = 64 * 1024;

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
        // asyncio's socket transport reads with `sock.recv(max_size)`, 256 KiB by default:
        // a fresh buffer of that size per read, which glibc serves with mmap/munmap (over its
        // 128 KiB threshold) at ~12 µs a read. Our replies are small: 64 KiB comes from the
        // heap, and a larger reply simply takes several reads.
        let _ = transport.setattr(pyo3::intern!(py, "max_size"), READ_SIZE);
        self.state.lock().transport = Some(transport.unbind());
        Ok(())
    }

    fn data_received(&self, py: Python<'_>, data: &[u8]) {
        let (received, retired) = {
            let mut state = self.state.lock();
            if state.broken.is_some() {
                return;
            }
            let received = state.queue.receive(data);
            if received.unchecked && !state.retired {
                state.retired = true;
                self.info.count_resync();
            }
            (received, state.retired)
        };
        let crossed = self.deliver(py, received.answered);
        if let Some(failure) = received.failure.or(crossed) {
            if failure.kind == StoreErrorKind::Crossed {
                self.info.count_resync();
            }
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
        let expired = {
            let mut state = this.state.lock();
            let expired = state.queue.expire(Instant::now());
            if expired.overdue && !state.retired {
                state.retired = true;
                this.info.count_resync();
            }
            state.timer_armed = expired.next.is_some();
            expired
        };
        let failed = expired
            .expired
            .into_iter()
            .map(|(waiting, failure)| (waiting, Err(failure)))
            .collect();
        this.deliver(py, failed);
        if expired.overdue {
            this.close_if_drained(py);
        }
        if let Some(left) = expired.next {
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
    fn send(slf: &Bound<'_, Self>, task: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let Some(sink) = (slf.get().info.sink_of)(&task) else {
            return Err(PyTypeError::new_err("not a store task"));
        };
        let Some(request) = sink.take_request() else {
            return Err(PyRuntimeError::new_err(
                "this task has no request for the store's protocol",
            ));
        };
        Self::send_request(
            slf,
            Waiter::Task(task.unbind()),
            &request.bytes,
            request.replies,
        )
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
            let outgoing = state.queue.take_outgoing();
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
        self.state.lock().queue.len()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        if let Some(state) = self.state.try_lock() {
            visit.call(&state.transport)?;
            for (waiter, future) in state.queue.waiters() {
                visit.call(future)?;
                if let Waiter::Task(task) = waiter {
                    visit.call(task)?;
                }
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (transport, waiters) = {
            let mut state = self.state.lock();
            state.broken.get_or_insert_with(|| "collected".to_owned());
            (state.transport.take(), state.queue.take_waiters())
        };
        drop((transport, waiters)); // after the lock: their finalizers may call back in
    }
}
