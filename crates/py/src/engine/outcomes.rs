//! What came of each step, told twice: in the log (a line per outcome worth a line) and in the
//! manager's metrics (a count per outcome, see `tornsession_core::metrics`).

use std::time::Instant;

use pyo3::prelude::*;

use super::Engine;
use crate::log::{log, Level};
use tornsession_core::ids;
use tornsession_core::lifecycle::FreshReason;
use tornsession_core::metrics::{LoadResult, Metrics, StoreOp};
use tornsession_core::stores::{StoreError, StoreErrorKind};

impl Engine {
    /// Counts with the manager's metrics, unless it was made with `metrics=False`.
    pub fn count(&self, record: impl FnOnce(&Metrics)) {
        if let Some(metrics) = &self.metrics {
            record(metrics);
        }
    }

    /// When a store call starts, for [`Engine::observe`]; `None` (no clock read) without
    /// metrics.
    pub fn started(&self) -> Option<Instant> {
        self.metrics.as_ref().map(|_| Instant::now())
    }

    /// A blocking store call ended: its latency, and its error's kind when it failed. A
    /// conflict is counted as one, not as an error; a record bound to another id also means
    /// the connection it came over was replaced (a resync).
    pub fn observe<T>(
        &self, op: StoreOp, started: Option<Instant>, result: &Result<T, StoreError>,
    ) {
        let failed = result.as_ref().err().map(|e| e.kind);
        self.observe_kind(op, started, failed);
        if failed == Some(StoreErrorKind::Crossed) && started.is_some() {
            self.count(Metrics::resync);
        }
    }

    /// A request over the store's own protocol ended (`crate::wire_link`, which counts the
    /// connections it replaces itself): its latency, and its error's kind when it failed.
    pub fn observe_kind(
        &self, op: StoreOp, started: Option<Instant>, failed: Option<StoreErrorKind>,
    ) {
        let (Some(metrics), Some(started)) = (&self.metrics, started) else {
            return;
        };
        metrics.latency(op, started.elapsed());
        match failed {
            Some(StoreErrorKind::Conflict) => metrics.conflict(),
            Some(kind) => metrics.store_error(kind),
            None => {}
        }
    }

    /// A load that gives a fresh session: logged with its reason, and counted.
    pub(super) fn report_fresh(&self, py: Python<'_>, session_id: &str, why: FreshReason) {
        let token = ids::log_token(session_id);
        let (level, result, message) = match why {
            FreshReason::Missing => (
                Level::Info,
                LoadResult::Missing,
                format!("session {token} expired or unknown, starting a new session"),
            ),
            FreshReason::LifetimeOver => (
                Level::Info,
                LoadResult::Expired,
                format!("session {token} reached its lifetime, starting a new session"),
            ),
            FreshReason::Revoked => (
                Level::Info,
                LoadResult::Expired,
                format!(
                    "session {token} was ended with all its owner's sessions, starting a new \
                     session"
                ),
            ),
            FreshReason::Unreadable(why) => (
                Level::Warning,
                LoadResult::Unreadable,
                format!("unreadable record for session {token}, starting a new session: {why}"),
            ),
            FreshReason::Oversized(why) => (
                Level::Warning,
                LoadResult::Unreadable,
                format!(
                    "record of session {token} over the read limit, starting a new session: {why}"
                ),
            ),
            FreshReason::Pickle => (
                Level::Warning,
                LoadResult::Unreadable,
                match self.store.pickle_advice() {
                    Some(advice) => format!(
                        "session {token} is a pickle of the original session.py, which \
                         tornsession never loads, starting a new session: {advice}"
                    ),
                    None => format!(
                        "session {token} is a pickle of the original session.py in {}, which \
                         tornsession never loads, starting a new session",
                        self.store.describe(py)
                    ),
                },
            ),
            FreshReason::Corrupt(why) => (
                Level::Warning,
                LoadResult::Unreadable,
                format!(
                    "corrupt record for session {token} in {}, starting a new session: {why}",
                    self.store.describe(py)
                ),
            ),
        };
        log(py, level, &message);
        self.count(|metrics| {
            metrics.load(result);
            metrics.fresh();
        });
    }
}
