//! The end of the initial update (EOIU) and, on a warm restart, the
//! reconcile that follows it.
//!
//! Until EOIU the netlink thread feeds the start-up dump through the normal
//! path; the STATE_DB script writes only fields whose value differs, so a
//! port that did not change while the daemon was down costs no write. What
//! the dump cannot say by itself is which configured ports have *no* netdev
//! any more: that is known only at EOIU, and is the reconcile's own work.
//! `reconciled` is recorded once Redis has acknowledged every write queued
//! up to that point, so the state never claims more than Redis holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::metrics::{Metrics, RowCounts};
use crate::queue::{CoalescingQueue, Target, Write};
use crate::sonic::warm_table::{WarmState, WarmStateRecorder};

/// How often a cold start's wait for EOIU says it is still waiting.
pub const EOIU_PATIENCE: Duration = Duration::from_secs(10);

/// The warm reconcile's bound when CONFIG_DB `WARM_RESTART|swss` has no
/// `portsyncd_timer`. A link dump takes milliseconds; this only matters
/// when the kernel never finishes it.
pub const DEFAULT_RECONCILE_TIMER: Duration = Duration::from_secs(30);

/// The reconcile bound: `portsyncd_timer` when set to a positive number of
/// seconds, else [`DEFAULT_RECONCILE_TIMER`].
pub fn reconcile_timer(portsyncd_timer: Option<u64>) -> Duration {
    match portsyncd_timer {
        Some(secs) if secs > 0 => Duration::from_secs(secs),
        _ => DEFAULT_RECONCILE_TIMER,
    }
}

/// How the initial update ended.
pub enum InitialUpdate {
    /// The dump finished; the ports it reported alive.
    Eoiu(HashSet<String>),
    /// The warm-restart timer expired first. The receiver still delivers
    /// EOIU if the dump ever finishes.
    TimedOut(oneshot::Receiver<HashSet<String>>),
}

/// Waits for EOIU. `limit` bounds the wait (warm restart); without it the
/// wait is unbounded but logged every [`EOIU_PATIENCE`].
pub async fn wait_for_eoiu(
    mut eoiu: oneshot::Receiver<HashSet<String>>,
    limit: Option<Duration>,
) -> Result<InitialUpdate> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    loop {
        let patience = tokio::time::Instant::now() + EOIU_PATIENCE;
        let until = deadline.map_or(patience, |d| d.min(patience));
        match tokio::time::timeout_at(until, &mut eoiu).await {
            Ok(Ok(live)) => return Ok(InitialUpdate::Eoiu(live)),
            Ok(Err(_)) => bail!("the netlink thread ended before the initial link dump finished"),
            Err(_) if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) => {
                return Ok(InitialUpdate::TimedOut(eoiu));
            }
            Err(_) => warn!("still waiting for the initial link dump to finish"),
        }
    }
}

/// A warm restart's reconcile, from the collected initial update to
/// `reconciled`.
pub struct WarmReconcile {
    pub queue: Arc<CoalescingQueue>,
    pub metrics: Metrics,
    /// CONFIG_DB ports, whose STATE_DB rows the reconcile answers for.
    pub configured: Vec<String>,
    /// When start-up began, for the duration metric.
    pub started: Instant,
    /// The STATE_DB row counters before the netlink thread started, so the
    /// reconcile counts the writes of the whole initial update.
    pub before: RowCounts,
}

impl WarmReconcile {
    /// Runs the reconcile and records `restored` then `reconciled`.
    pub async fn run(
        self,
        update: InitialUpdate,
        timer: Duration,
        recorder: &mut WarmStateRecorder,
    ) -> Result<()> {
        let by_timer = match update {
            InitialUpdate::Eoiu(live) => {
                self.delete_vanished(&live).await?;
                false
            }
            InitialUpdate::TimedOut(eoiu) => {
                warn!(
                    timer_secs = timer.as_secs(),
                    "warm restart: the initial link dump did not finish within portsyncd_timer; \
                     reconciling with what the kernel reported so far. Rows of configured ports \
                     whose netdev is gone are deleted when the dump finishes"
                );
                let late = WarmReconcile {
                    queue: self.queue.clone(),
                    metrics: self.metrics.clone(),
                    configured: self.configured.clone(),
                    started: self.started,
                    before: self.before,
                };
                tokio::spawn(async move {
                    if let Ok(live) = eoiu.await {
                        info!("the initial link dump finished after the warm-restart timer");
                        let _ = late.delete_vanished(&live).await;
                    }
                });
                true
            }
        };
        recorder.record(WarmState::Restored).await;
        let mark = self.queue.mark();
        while !self.queue.acknowledged_through(mark) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let done = self
            .metrics
            .warm
            .record_reconcile(self.before, seconds, by_timer);
        recorder.record(WarmState::Reconciled).await;
        info!(
            event = "warm_restart_reconciled",
            rows_written = done.changed,
            rows_untouched = done.unchanged,
            rows_deleted = done.deleted,
            elapsed_ms = (seconds * 1000.0) as u64,
            by_timer,
            "warm restart reconciled"
        );
        Ok(())
    }

    /// Queues the deletion of STATE_DB rows of configured ports that have
    /// no netdev any more (the script skips rows that do not exist).
    async fn delete_vanished(&self, live: &HashSet<String>) -> Result<()> {
        let gone: Vec<String> = self
            .configured
            .iter()
            .filter(|port| !live.contains(*port))
            .cloned()
            .collect();
        info!(
            ports_alive = live.len(),
            ports_gone = gone.len(),
            "warm restart: initial link state collected"
        );
        for port in &gone {
            info!(port = %port, "warm restart: configured port has no netdev; deleting its STATE_DB row if present");
        }
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            for port in gone {
                queue.push(Target::StatePort(port), Write::delete(), now);
            }
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_timer_uses_portsyncd_timer_when_positive() {
        assert_eq!(reconcile_timer(Some(5)), Duration::from_secs(5));
        assert_eq!(reconcile_timer(Some(0)), DEFAULT_RECONCILE_TIMER);
        assert_eq!(reconcile_timer(None), DEFAULT_RECONCILE_TIMER);
    }

    #[tokio::test]
    async fn a_bounded_wait_times_out_and_keeps_the_receiver() {
        let (tx, rx) = oneshot::channel();
        let update = wait_for_eoiu(rx, Some(Duration::from_millis(20)))
            .await
            .unwrap();
        let InitialUpdate::TimedOut(rx) = update else {
            panic!("expected the timer to expire first");
        };
        tx.send(HashSet::from(["Ethernet0".to_string()])).unwrap();
        assert_eq!(rx.await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn eoiu_before_the_timer_carries_the_live_ports() {
        let (tx, rx) = oneshot::channel();
        tx.send(HashSet::from(["Ethernet4".to_string()])).unwrap();
        match wait_for_eoiu(rx, Some(Duration::from_secs(25)))
            .await
            .unwrap()
        {
            InitialUpdate::Eoiu(live) => assert!(live.contains("Ethernet4")),
            InitialUpdate::TimedOut(_) => panic!("EOIU was ready"),
        }
    }
}
