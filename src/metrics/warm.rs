//! What the warm-restart reconcile did, and the STATE_DB write outcomes it
//! is computed from. Kept apart from the main registry because only the
//! reconcile and the writer touch it.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Default)]
pub struct WarmMetrics {
    /// STATE_DB port rows where at least one field differed and was written.
    pub state_rows_changed: Counter,
    /// STATE_DB port rows the daemon wanted to write but that already held
    /// exactly those values: no write happened.
    pub state_rows_unchanged: Counter,
    /// STATE_DB port rows deleted.
    pub state_rows_deleted: Counter,
    /// From start-up to `reconciled` on the last warm restart.
    pub reconcile_duration_seconds: Gauge<f64, AtomicU64>,
    /// Rows the last warm reconcile changed, left untouched, and deleted.
    pub reconcile_rows_written: Gauge,
    pub reconcile_rows_untouched: Gauge,
    pub reconcile_rows_deleted: Gauge,
    /// 1 when the last reconcile ran on the `portsyncd_timer` because the
    /// initial link dump did not finish in time.
    pub reconcile_by_timer: Gauge,
}

/// The three row counters at one moment, to measure a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCounts {
    pub changed: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl WarmMetrics {
    pub fn row_counts(&self) -> RowCounts {
        RowCounts {
            changed: self.state_rows_changed.get(),
            unchanged: self.state_rows_unchanged.get(),
            deleted: self.state_rows_deleted.get(),
        }
    }

    /// Publishes what happened between `before` and now as the last
    /// reconcile's outcome.
    pub fn record_reconcile(&self, before: RowCounts, seconds: f64, by_timer: bool) -> RowCounts {
        let now = self.row_counts();
        let done = RowCounts {
            changed: now.changed - before.changed,
            unchanged: now.unchanged - before.unchanged,
            deleted: now.deleted - before.deleted,
        };
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.reconcile_rows_written.set(gauge(done.changed));
        self.reconcile_rows_untouched.set(gauge(done.unchanged));
        self.reconcile_rows_deleted.set(gauge(done.deleted));
        self.reconcile_duration_seconds.set(seconds);
        self.reconcile_by_timer.set(i64::from(by_timer));
        done
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "state_rows_changed",
            "STATE_DB port rows written because a field differed",
            self.state_rows_changed.clone(),
        );
        r.register(
            "state_rows_unchanged",
            "STATE_DB port writes skipped because the row already held the values",
            self.state_rows_unchanged.clone(),
        );
        r.register(
            "state_rows_deleted",
            "STATE_DB port rows deleted",
            self.state_rows_deleted.clone(),
        );
        r.register_with_unit(
            "warm_reconcile_duration",
            "Start-up to reconciled on the last warm restart",
            Unit::Seconds,
            self.reconcile_duration_seconds.clone(),
        );
        r.register(
            "warm_reconcile_rows_written",
            "STATE_DB port rows the last warm reconcile changed",
            self.reconcile_rows_written.clone(),
        );
        r.register(
            "warm_reconcile_rows_untouched",
            "STATE_DB port rows the last warm reconcile found already right",
            self.reconcile_rows_untouched.clone(),
        );
        r.register(
            "warm_reconcile_rows_deleted",
            "STATE_DB port rows the last warm reconcile deleted (netdev gone)",
            self.reconcile_rows_deleted.clone(),
        );
        r.register(
            "warm_reconcile_by_timer",
            "1 when the last reconcile ran on portsyncd_timer without EOIU",
            self.reconcile_by_timer.clone(),
        );
    }
}
