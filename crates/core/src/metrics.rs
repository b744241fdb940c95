//! What sessions do, counted as they do it: loads by what they found, saves by what they wrote,
//! conflicts, requests that waited too long for their turn, store errors by kind, connections
//! replaced to get back in step, cookies sent, and how long each store operation took.
//!
//! Every count is one relaxed atomic add on the manager's own [`Metrics`] (a few nanoseconds,
//! no lock): the numbers are for dashboards, read while requests run, and need no ordering
//! with anything else. Latencies go into fixed buckets, as Prometheus histograms keep them.
//!
//! A process's totals ([`process_totals`]) add up every manager's, those dropped included, so
//! a counter a scraper reads never goes down while the process lives.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::stores::StoreErrorKind;

/// What a load of a session's record found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadResult {
    /// A record, opened.
    Found,
    /// No record (never saved, ended, or dropped by the store when idle for too long).
    Missing,
    /// A record past its lifetime, or ended with all its owner's sessions.
    Expired,
    /// A record that cannot be used (not a record, corrupt, over the read limit).
    Unreadable,
}

/// What a save did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveResult {
    Written,
    /// Nothing to write: the stored session was unchanged. (A new session left empty is no
    /// save at all: it gets no record and no cookie.)
    Unchanged,
    /// Not written: another request ended the session since this one loaded it.
    Dropped,
}

/// The store operations whose latency is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Load,
    Save,
    Delete,
}

impl StoreOp {
    pub const ALL: [StoreOp; 3] = [StoreOp::Load, StoreOp::Save, StoreOp::Delete];

    pub fn name(self) -> &'static str {
        match self {
            StoreOp::Load => "load",
            StoreOp::Save => "save",
            StoreOp::Delete => "delete",
        }
    }
}

/// The store error kinds counted as errors, in the order [`Snapshot::store_errors`] lists them
/// (a conflict is counted as one, in `conflicts`).
pub const ERROR_KINDS: [StoreErrorKind; 5] = [
    StoreErrorKind::Unavailable,
    StoreErrorKind::UnreadableRecord,
    StoreErrorKind::OversizedRecord,
    StoreErrorKind::Unsupported,
    StoreErrorKind::Crossed,
];

/// A store error kind's name in the metrics.
pub fn error_kind_name(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::Unavailable => "unavailable",
        StoreErrorKind::UnreadableRecord => "unreadable_record",
        StoreErrorKind::Conflict => "conflict",
        StoreErrorKind::OversizedRecord => "oversized_record",
        StoreErrorKind::Unsupported => "unsupported",
        StoreErrorKind::Crossed => "crossed",
    }
}

/// The upper bounds of the latency buckets, in seconds (Prometheus's `le`): from 100 µs (a
/// local read) to 5 s (a store at its timeout); anything slower is counted in `+Inf`.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One latency histogram: a count per bucket (the last is `+Inf`), and the sum.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    fn read(&self) -> LatencySnapshot {
        LatencySnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_nanos: self.sum_nanos.load(Relaxed),
        }
    }

    fn absorb(&self, other: &LatencySnapshot) {
        for (bucket, count) in self.buckets.iter().zip(other.buckets) {
            bucket.fetch_add(count, Relaxed);
        }
        self.sum_nanos.fetch_add(other.sum_nanos, Relaxed);
    }
}

/// A manager's counters.
#[derive(Default)]
pub struct Metrics {
    loads: [AtomicU64; 4],
    fresh: AtomicU64,
    saves: [AtomicU64; 3],
    conflicts: AtomicU64,
    busy: AtomicU64,
    store_errors: [AtomicU64; ERROR_KINDS.len()],
    resyncs: AtomicU64,
    cookies_sent: AtomicU64,
    latency: [Histogram; 3],
}

impl Metrics {
    /// New counters, counted in the process's totals for as long as they live and after.
    pub fn new() -> Arc<Self> {
        let metrics = Arc::new(Self::default());
        let mut live = registry().lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|weak| weak.strong_count() > 0);
        live.push(Arc::downgrade(&metrics));
        metrics
    }

    pub fn load(&self, result: LoadResult) {
        self.loads[result as usize].fetch_add(1, Relaxed);
    }

    pub fn fresh(&self) {
        self.fresh.fetch_add(1, Relaxed);
    }

    pub fn save(&self, result: SaveResult) {
        self.saves[result as usize].fetch_add(1, Relaxed);
    }

    pub fn conflict(&self) {
        self.conflicts.fetch_add(1, Relaxed);
    }

    pub fn busy(&self) {
        self.busy.fetch_add(1, Relaxed);
    }

    /// An error of `kind` (a conflict is no error here: see [`Metrics::conflict`]).
    pub fn store_error(&self, kind: StoreErrorKind) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.store_errors[i].fetch_add(1, Relaxed);
        }
    }

    pub fn resync(&self) {
        self.resyncs.fetch_add(1, Relaxed);
    }

    pub fn cookies_sent(&self) {
        self.cookies_sent.fetch_add(1, Relaxed);
    }

    pub fn latency(&self, op: StoreOp, took: Duration) {
        self.latency[op as usize].observe(took);
    }

    /// The counts now (each read on its own: a snapshot taken while requests run may be a
    /// request apart between two counters).
    pub fn snapshot(&self) -> Snapshot {
        let read = |counters: &[AtomicU64]| counters.iter().map(|c| c.load(Relaxed)).collect();
        let loads: Vec<u64> = read(&self.loads);
        let saves: Vec<u64> = read(&self.saves);
        Snapshot {
            loads: [loads[0], loads[1], loads[2], loads[3]],
            fresh: self.fresh.load(Relaxed),
            saves: [saves[0], saves[1], saves[2]],
            conflicts: self.conflicts.load(Relaxed),
            busy: self.busy.load(Relaxed),
            store_errors: std::array::from_fn(|i| self.store_errors[i].load(Relaxed)),
            resyncs: self.resyncs.load(Relaxed),
            cookies_sent: self.cookies_sent.load(Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].read()),
        }
    }

    /// Adds `other`'s counts to these.
    fn absorb(&self, other: &Snapshot) {
        let add = |counters: &[AtomicU64], counts: &[u64]| {
            for (counter, count) in counters.iter().zip(counts) {
                counter.fetch_add(*count, Relaxed);
            }
        };
        add(&self.loads, &other.loads);
        add(std::slice::from_ref(&self.fresh), &[other.fresh]);
        add(&self.saves, &other.saves);
        add(std::slice::from_ref(&self.conflicts), &[other.conflicts]);
        add(std::slice::from_ref(&self.busy), &[other.busy]);
        add(&self.store_errors, &other.store_errors);
        add(std::slice::from_ref(&self.resyncs), &[other.resyncs]);
        add(
            std::slice::from_ref(&self.cookies_sent),
            &[other.cookies_sent],
        );
        for (histogram, snapshot) in self.latency.iter().zip(&other.latency) {
            histogram.absorb(snapshot);
        }
    }
}

impl Drop for Metrics {
    /// A dropped manager's counts stay in the process's totals.
    fn drop(&mut self) {
        retired().absorb(&self.snapshot());
    }
}

/// The counts of one manager, or of the process, at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// By [`LoadResult`]: found, missing, expired, unreadable.
    pub loads: [u64; 4],
    pub fresh: u64,
    /// By [`SaveResult`]: written, unchanged, dropped.
    pub saves: [u64; 3],
    pub conflicts: u64,
    pub busy: u64,
    /// By [`ERROR_KINDS`].
    pub store_errors: [u64; ERROR_KINDS.len()],
    pub resyncs: u64,
    pub cookies_sent: u64,
    /// By [`StoreOp`]: load, save, delete.
    pub latency: [LatencySnapshot; 3],
}

/// One operation's latencies: a count per bucket of [`LATENCY_BOUNDS`] then `+Inf` (not
/// cumulative), and their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    pub buckets: [u64; LATENCY_BOUNDS.len() + 1],
    pub sum_nanos: u64,
}

impl LatencySnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// The managers whose counters live now.
fn registry() -> &'static Mutex<Vec<Weak<Metrics>>> {
    static LIVE: Mutex<Vec<Weak<Metrics>>> = Mutex::new(Vec::new());
    &LIVE
}

/// The counts of every manager dropped so far (never in the registry: no `Drop` of its own
/// runs, being static).
fn retired() -> &'static Metrics {
    static RETIRED: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    RETIRED.get_or_init(Metrics::default)
}

/// The counts of every manager of the process, those dropped included.
pub fn process_totals() -> Snapshot {
    let total = Metrics::default();
    let live: Vec<Arc<Metrics>> = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    for metrics in live.iter().map(|m| m.snapshot()) {
        total.absorb(&metrics);
    }
    total.absorb(&retired().snapshot());
    let snapshot = total.snapshot();
    // `total` is a scratch sum: its drop must not count it as a retired manager.
    std::mem::forget(total);
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_latencies_add_up() {
        let metrics = Metrics::new();
        metrics.load(LoadResult::Found);
        metrics.load(LoadResult::Expired);
        metrics.save(SaveResult::Dropped);
        metrics.store_error(StoreErrorKind::Crossed);
        metrics.latency(StoreOp::Save, Duration::from_micros(300));
        metrics.latency(StoreOp::Save, Duration::from_secs(9));
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.loads, [1, 0, 1, 0]);
        assert_eq!(snapshot.saves, [0, 0, 1]);
        assert_eq!(snapshot.store_errors[4], 1);
        let save = &snapshot.latency[StoreOp::Save as usize];
        assert_eq!(save.count(), 2);
        assert_eq!(save.buckets[2], 1, "300 µs is within 500 µs");
        assert_eq!(
            save.buckets[LATENCY_BOUNDS.len()],
            1,
            "9 s is past every bound"
        );
        assert_eq!(save.sum_nanos, 9_000_300_000);
    }

    #[test]
    fn the_process_totals_keep_a_dropped_managers_counts() {
        let before = process_totals().conflicts;
        let metrics = Metrics::new();
        metrics.conflict();
        metrics.conflict();
        assert!(process_totals().conflicts >= before + 2);
        drop(metrics);
        // Other tests run at once and only add: at least these two stay.
        assert!(process_totals().conflicts >= before + 2);
    }
}
