//! The async API's connections to Redis and memcached: an `asyncio.Protocol` written in Rust,
//! a few per server and event loop, each pipelining the requests sent on it.
//!
//! A request's bytes (encoded by the store, `tornsession_core::wire`) are queued with the
//! transport at once and written with the others of the same loop iteration; replies are parsed
//! as they arrive in `data_received` and finish the waiting tasks (a
//! [`ReplySink`](tornsession_core::stores::reply_queue::ReplySink) each) in the order they were
//! sent, so no thread and no lock is involved, and many requests share a round trip. What no
//! library does for us here: the asyncio protocol adapters for Rust (pyo3-async-runtimes) run
//! Rust futures on a second runtime, which is the thread hop this exists to avoid.
//!
//! Replies are never matched to a request by position alone: each request carries the
//! connection's next sequence number as a tag the server echoes, and its replies are used only
//! once their tag is its own (the connection's `tornsession_core::stores::reply_queue`). A
//! wrong tag, or a loaded record bound to another session id (`StoreErrorKind::Crossed`), means
//! the connection is out of step (a proxy lost, doubled or added a reply): every request
//! waiting on it fails with the store's error, it is closed, and the next request connects
//! again. A request whose caller gave up (cancelled, timed out around it) keeps its place in
//! the queue, so its reply is read and dropped, never handed to the request behind it.
//!
//! Each request has its own deadline, the store's `timeout` from its send. One that passes
//! fails that request alone; its connection takes no new requests, answers those already sent
//! as their replies come (or their own deadlines pass), then closes. New requests go to an idle
//! connection of the loop, or the one already collecting this loop iteration's requests, or a
//! new one (up to [`MAX_LINKS_PER_LOOP`]), so one slow reply holds up few others.
//!
//! Connections hold nothing of their server but plain data and a weak reference to the store:
//! a manager (or store) that is dropped drops its servers, which close their connections.

mod connection;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pyo3::exceptions::PyConnectionError;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};

pub use connection::WireConnection;
use tornsession_core::metrics::Metrics;
use tornsession_core::stores::reply_queue::ReplySink;
use tornsession_core::stores::{Request, SessionStore};
use tornsession_core::wire::{Dialect, Reply};

/// Reads a task object as the [`ReplySink`] its replies go to (`None`: not a task). The task
/// type gives it when it makes the servers: this module knows no task type, so the arrows run
/// engine -> wire_link <- store_task, with no cycle.
pub type SinkOf = for<'a, 'py> fn(&'a Bound<'py, PyAny>) -> Option<&'a dyn ReplySink>;

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
    /// What reads the tasks sent to it.
    sink_of: SinkOf,
    /// The manager's metrics, which count the connections replaced to get back in step.
    metrics: Option<Arc<Metrics>>,
}

impl ServerInfo {
    /// A connection was dropped or retired because its replies went out of step or came late.
    fn count_resync(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.resync();
        }
    }
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
#[pyclass(module = "tornsession._core", name = "_WireServer", frozen)]
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
        store: &Arc<dyn SessionStore>, describe: &str, max_read_size: usize, sink_of: SinkOf,
        metrics: Option<Arc<Metrics>>,
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
                    sink_of,
                    metrics: metrics.clone(),
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
        &self, py: Python<'_>, event_loop: &Bound<'_, PyAny>, busy_ok: bool,
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
        WireConnection::new(self.info.clone(), event_loop.clone().unbind())
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
