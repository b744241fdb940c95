//! `StoreTask`: one store operation of a session, split from the steps around it so the async
//! API can run it on a worker thread while the IOLoop's thread serves other requests.

use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::engine::{Engine, PlannedWrite};
use crate::lifecycle::{Fetched, Verified, WriteOutcome};
use crate::stores::StoreError;

/// What a [`StoreTask`] does, and then what came of it.
pub enum Job {
    Load(Verified),
    Loaded(Verified, Result<Fetched, StoreError>),
    Save(PlannedWrite),
    Saved(PlannedWrite, Result<WriteOutcome, StoreError>),
    /// Delete a record, then its entry in its owner's index.
    Delete(String, Option<String>),
    Deleted(Result<bool, StoreError>),
    /// Its result was taken.
    Taken,
}

/// One store operation of a session, separated so it can run on a worker thread (the store
/// releases the GIL around its I/O) while the handler's thread serves other requests.
#[pyclass(module = "tornsession", frozen)]
pub struct StoreTask {
    pub engine: Arc<Engine>,
    job: Mutex<Job>,
}

impl StoreTask {
    pub fn new(engine: Arc<Engine>, job: Job) -> Self {
        Self {
            engine,
            job: Mutex::new(job),
        }
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

    pub fn take_saved(&self) -> PyResult<(PlannedWrite, Result<WriteOutcome, StoreError>)> {
        match self.take() {
            Job::Saved(write, outcome) => Ok((write, outcome)),
            _ => Err(PyRuntimeError::new_err("the save task has not run")),
        }
    }

    /// Whether the deleted record was there.
    pub fn take_deleted(&self) -> PyResult<bool> {
        match self.take() {
            Job::Deleted(result) => result.map_err(Into::into),
            _ => Err(PyRuntimeError::new_err("the delete task has not run")),
        }
    }
}

#[pymethods]
impl StoreTask {
    /// Does the store I/O; safe to call from any thread, once.
    pub fn run(&self, py: Python<'_>) {
        let job = self.take();
        let done = match job {
            Job::Load(verified) => {
                let fetched = self.engine.fetch(py, &verified.id);
                Job::Loaded(verified, fetched)
            }
            Job::Save(mut write) => {
                let outcome = self.engine.write(py, &mut write);
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
    fn blocks(&self) -> bool {
        let store = &self.engine.store;
        match &*self.job.lock() {
            Job::Load(_) | Job::Loaded(..) => !store.loads_inline(),
            _ => !store.saves_inline(),
        }
    }

    /// The session id a load task is for (what requests of one session are ordered by).
    #[getter]
    fn session_id(&self) -> Option<String> {
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
