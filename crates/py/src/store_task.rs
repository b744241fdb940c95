//! `StoreTask`: one store operation of a session, split from the steps around it so the async
//! API can run it on a worker thread while the IOLoop's thread serves other requests.

use crate::errors::store_error;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::engine::{Engine, PlannedSave};
use crate::wire_link::WireServer;
use tornsession_core::lifecycle::{Fetched, Verified, WriteMode, WriteOutcome};
use tornsession_core::metrics::StoreOp;
use tornsession_core::stores::reply_queue::{Delivery, Failure, ReplySink};
use tornsession_core::stores::{Request, SaveMode};
use tornsession_core::stores::{StoreError, StoreErrorKind};
use tornsession_core::wire::Reply;

/// What a [`StoreTask`] does, and then what came of it.
pub enum Job {
    Load(Verified),
    Loaded(Verified, Result<Fetched, StoreError>),
    Save(PlannedSave),
    Saved(PlannedSave, Result<WriteOutcome, StoreError>),
    /// Delete a record, then its entry in its owner's index.
    Delete(String, Option<String>),
    Deleted(Result<bool, StoreError>),
    /// Its result was taken.
    Taken,
}

/// One store operation of a session, separated so it can run on a worker thread (the store
/// releases the GIL around its I/O) while the handler's thread serves other requests, or be
/// sent over the store's own protocol on the event loop (`crate::wire_link`).
#[pyclass(module = "tornsession", name = "_StoreTask", frozen)]
pub struct StoreTask {
    pub engine: Arc<Engine>,
    job: Mutex<Job>,
    /// The request `wire_server` prepared, until a connection sends it.
    wire_request: Mutex<Option<Request>>,
    /// When a connection took that request, for its latency (with metrics on).
    wire_sent: Mutex<Option<Instant>>,
}

impl Job {
    /// The store operation a job not yet run does.
    fn op(&self) -> Option<StoreOp> {
        match self {
            Job::Load(_) => Some(StoreOp::Load),
            Job::Save(_) => Some(StoreOp::Save),
            Job::Delete(..) => Some(StoreOp::Delete),
            _ => None,
        }
    }
}

impl StoreTask {
    /// A load's result as the wire delivers it: a record bound to another id puts the
    /// connection out of step.
    fn loaded(verified: Verified, fetched: Result<Fetched, StoreError>) -> (Delivery, Job) {
        match fetched {
            Err(e) if e.kind == StoreErrorKind::Crossed => {
                (Delivery::Crossed, Job::Loaded(verified, Err(e)))
            }
            fetched => (Delivery::Done, Job::Loaded(verified, fetched)),
        }
    }

    pub fn new(engine: Arc<Engine>, job: Job) -> Self {
        Self {
            engine,
            job: Mutex::new(job),
            wire_request: Mutex::new(None),
            wire_sent: Mutex::new(None),
        }
    }

    /// Reads a task object as the sink of its wire request's replies (what `WireServer`s
    /// are made with).
    fn as_sink<'a>(task: &'a Bound<'_, PyAny>) -> Option<&'a dyn ReplySink> {
        task.cast::<StoreTask>()
            .ok()
            .map(|task| task.get() as &dyn ReplySink)
    }

    /// The request failed before its replies could be used (see `wire_failed`), for a reason
    /// of `kind` (`Crossed`: the connection was out of step).
    fn wire_failed_as(&self, py: Python<'_>, cause: String, kind: StoreErrorKind) {
        let error = StoreError {
            store: self.engine.store.describe(py),
            cause,
            kind,
        };
        let started = self.wire_sent.lock().take();
        let mut job = self.job.lock();
        if let Some(op) = job.op() {
            self.engine.observe_kind(op, started, Some(error.kind));
        }
        *job = match std::mem::replace(&mut *job, Job::Taken) {
            Job::Load(verified) => Job::Loaded(verified, Err(error)),
            Job::Save(write) => Job::Saved(write, Err(error)),
            Job::Delete(..) => Job::Deleted(Err(error)),
            other => other,
        };
    }

    fn take(&self) -> Job {
        std::mem::replace(&mut *self.job.lock(), Job::Taken)
    }

    pub fn take_loaded(&self) -> PyResult<(Verified, Result<Fetched, StoreError>)> {
        match self.take() {
            Job::Loaded(verified, fetched) => Ok((verified, fetched)),
            _ => Err(PyRuntimeError::new_err("the load task has not run")),
        }
    }

    pub fn take_saved(&self) -> PyResult<(PlannedSave, Result<WriteOutcome, StoreError>)> {
        match self.take() {
            Job::Saved(write, outcome) => Ok((write, outcome)),
            _ => Err(PyRuntimeError::new_err("the save task has not run")),
        }
    }

    /// Whether the deleted record was there.
    pub fn take_deleted(&self) -> PyResult<bool> {
        match self.take() {
            Job::Deleted(result) => result.map_err(store_error),
            _ => Err(PyRuntimeError::new_err("the delete task has not run")),
        }
    }
}

/// Reads the replies to the task's wire request into its result, as `run()` would have set it.
/// Only replies whose tag was checked reach here (`crate::wire_link`).
impl ReplySink for StoreTask {
    fn take_request(&self) -> Option<Request> {
        let request = self.wire_request.lock().take();
        *self.wire_sent.lock() = self.engine.started();
        request
    }

    /// `NeedsFollowUp` when the record needs more than the protocol's one request (an owned
    /// session, or one with its own idle timeout): the task is left as it was, to run.
    fn replied(&self, replies: Vec<Reply>) -> Result<Delivery, String> {
        let Some(store) = self.engine.store.wire() else {
            return Err("the store has no wire protocol".to_owned());
        };
        let mut job = self.job.lock();
        let (done, finished) = match std::mem::replace(&mut *job, Job::Taken) {
            Job::Load(verified) => {
                let found = store.load_reply(&verified.id, replies, self.engine.max_read_size);
                match self.engine.loaded_without_follow_up(&verified.id, found) {
                    // Run again on a thread, which observes the whole load.
                    None => (Delivery::NeedsFollowUp, Job::Load(verified)),
                    Some(fetched) => {
                        let sent = self.wire_sent.lock().take();
                        let failed = fetched.as_ref().err().map(|e| e.kind);
                        self.engine.observe_kind(StoreOp::Load, sent, failed);
                        Self::loaded(verified, fetched)
                    }
                }
            }
            Job::Save(write) => {
                let outcome = store.save_reply(&write.id, replies).map(|written| {
                    if written {
                        WriteOutcome::Written
                    } else {
                        WriteOutcome::Gone
                    }
                });
                let sent = self.wire_sent.lock().take();
                let failed = outcome.as_ref().err().map(|e| e.kind);
                self.engine.observe_kind(StoreOp::Save, sent, failed);
                (Delivery::Done, Job::Saved(write, outcome))
            }
            Job::Delete(id, owner) => {
                let deleted = store.delete_reply(&id, replies);
                let sent = self.wire_sent.lock().take();
                let failed = deleted.as_ref().err().map(|e| e.kind);
                self.engine.observe_kind(StoreOp::Delete, sent, failed);
                let _ = owner; // none: owned deletes unindex too, and run on a thread
                (Delivery::Done, Job::Deleted(deleted))
            }
            other => {
                *job = other;
                return Err("the task has no request in flight".to_owned());
            }
        };
        *job = finished;
        Ok(done)
    }

    fn failed(&self, failure: Failure) {
        // Delivered on the event loop's thread, which holds the GIL.
        Python::attach(|py| self.wire_failed_as(py, failure.cause, failure.kind));
    }
}

#[pymethods]
impl StoreTask {
    /// The connection failed before the replies came (refused, lost, unparsable, timed out):
    /// the task's result is the store's error, raised where a worker thread's would be.
    pub fn wire_failed(&self, py: Python<'_>, cause: String) {
        self.wire_failed_as(py, cause, StoreErrorKind::Unavailable);
    }

    /// Does the store I/O; safe to call from any thread, once.
    pub fn run(&self, py: Python<'_>) {
        let job = self.take();
        let done = match job {
            Job::Load(verified) => {
                let fetched = self.engine.load(py, &verified);
                Job::Loaded(verified, fetched)
            }
            Job::Save(mut write) => {
                let outcome = self.engine.save(py, &mut write);
                Job::Saved(write, outcome)
            }
            Job::Delete(id, owner) => Job::Deleted(self.engine.delete(py, &id, owner.as_deref())),
            finished => finished,
        };
        *self.job.lock() = done;
    }

    /// Whether run() may wait on I/O (a network store, a file write, a Python store); if not
    /// (memory, SQLite, a file read), the async API runs it inline rather than paying for a
    /// thread hop that costs more than the work.
    #[getter]
    pub fn blocks(&self) -> bool {
        let store = &self.engine.store;
        match &*self.job.lock() {
            Job::Load(_) | Job::Loaded(..) => !store.loads_inline(),
            _ => !store.saves_inline(),
        }
    }

    /// The server of the store's own protocol this task goes to, its request prepared for
    /// `WireConnection.send`; `None` when the task runs on a worker thread instead: the store
    /// has no such protocol here, or the operation needs more than one request of it (an owned
    /// session's index, a conditional save against the loaded record).
    #[getter]
    fn wire_server(&self, py: Python<'_>) -> PyResult<Option<Py<WireServer>>> {
        let Some(store) = self.engine.store.wire() else {
            return Ok(None);
        };
        let request = match &*self.job.lock() {
            Job::Load(verified) => store.load(&verified.id, self.engine.policy.idle_timeout),
            Job::Save(PlannedSave { id, plan })
                if plan.user.is_none() && plan.unindex.is_none() =>
            {
                let mode = match plan.mode {
                    WriteMode::Create => SaveMode::Always,
                    WriteMode::IfExists => SaveMode::IfExists,
                    WriteMode::IfUnchanged(_) => return Ok(None),
                };
                store.save(id, &plan.blob, plan.ttl, mode)
            }
            Job::Delete(id, None) => store.delete(id),
            _ => return Ok(None),
        };
        let Some(server) = self
            .engine
            .wire_servers(py, Self::as_sink)?
            .get(request.server)
        else {
            return Ok(None);
        };
        let server = server.clone_ref(py);
        *self.wire_request.lock() = Some(request);
        Ok(Some(server))
    }

    /// The session id a load task is for (what requests of one session are ordered by).
    #[getter]
    pub fn session_id(&self) -> Option<String> {
        match &*self.job.lock() {
            Job::Load(verified) | Job::Loaded(verified, _) => Some(verified.id.clone()),
            _ => None,
        }
    }

    /// For a delete task: whether there was a record, or what the store raised (load and save
    /// raise in their end step).
    fn result(&self) -> PyResult<bool> {
        self.take_deleted()
    }
}
