//! The metrics as Python reads them: `SessionManager.metrics()` and the process's totals
//! (`tornsession.metrics`), one dict shape for both.

use pyo3::prelude::*;
use pyo3::types::PyDict;

use tornsession_core::metrics::{
    error_kind_name, process_totals, Snapshot, StoreOp, ERROR_KINDS, LATENCY_BOUNDS,
};

/// `{"loads": {"found": n, ...}, "fresh": n, "saves": {...}, "conflicts": n, "busy": n,
/// "store_errors": {kind: n}, "resyncs": n, "cookies_sent": n, "latency": {op: {"buckets":
/// [(le, n), ..., (inf, n)], "count": n, "sum": seconds}}}`, buckets cumulative as Prometheus
/// keeps them.
pub fn snapshot_dict<'py>(py: Python<'py>, snapshot: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let named = |names: &[&str], counts: &[u64]| -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, count) in names.iter().zip(counts) {
            dict.set_item(name, count)?;
        }
        Ok(dict)
    };
    let dict = PyDict::new(py);
    let loads = ["found", "missing", "expired", "unreadable"];
    dict.set_item("loads", named(&loads, &snapshot.loads)?)?;
    dict.set_item("fresh", snapshot.fresh)?;
    let saves = ["written", "unchanged", "dropped"];
    dict.set_item("saves", named(&saves, &snapshot.saves)?)?;
    dict.set_item("conflicts", snapshot.conflicts)?;
    dict.set_item("busy", snapshot.busy)?;
    let kinds: Vec<&str> = ERROR_KINDS.iter().map(|k| error_kind_name(*k)).collect();
    dict.set_item("store_errors", named(&kinds, &snapshot.store_errors)?)?;
    dict.set_item("resyncs", snapshot.resyncs)?;
    dict.set_item("cookies_sent", snapshot.cookies_sent)?;
    let latency = PyDict::new(py);
    for op in StoreOp::ALL {
        let histogram = &snapshot.latency[op as usize];
        let bounds = LATENCY_BOUNDS.iter().copied().chain([f64::INFINITY]);
        let mut total = 0;
        let buckets: Vec<(f64, u64)> = bounds
            .zip(histogram.buckets)
            .map(|(bound, count)| {
                total += count;
                (bound, total)
            })
            .collect();
        let one = PyDict::new(py);
        one.set_item("buckets", buckets)?;
        one.set_item("count", total)?;
        one.set_item("sum", histogram.sum_nanos as f64 / 1e9)?;
        latency.set_item(op.name(), one)?;
    }
    dict.set_item("latency", latency)?;
    Ok(dict)
}

/// Every manager's metrics of this process added up, dropped managers' included.
#[pyfunction]
pub fn _process_metrics(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    snapshot_dict(py, &process_totals())
}
