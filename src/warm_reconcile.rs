//! The notices orchagent and the warm-reboot scripts wait for, decided from
//! what really landed in Redis: `PortConfigDone`, `PortInitDone`, and the
//! warm restart's `restored` and `reconciled`.
//!
//! - Cold start: every CONFIG_DB port goes to APPL_DB through the producer
//!   protocol; `PortConfigDone` (with the count) follows once Redis
//!   acknowledged every one of them.
//! - `PortInitDone` once every configured port's STATE_DB row landed (a
//!   link message alone is not enough: the port must be configured).
//! - Warm start: at the end of the initial link dump (EOIU), or when
//!   `portsyncd_timer` runs out first, `restored`; `reconciled` once Redis
//!   acknowledged every write queued up to then (keys Redis keeps refusing,
//!   and ports not configured yet, do not hold it up). No row is ever
//!   deleted here: on a warm reboot the kernel is new and syncd recreates
//!   the netdevs later, while STATE_DB already holds every daemon's fields.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::metrics::{Metrics, RowCounts};
use crate::port_name::PortName;
use crate::queue::{CoalescingQueue, Key, Op};
use crate::sonic::warm_table::{MAX_RECONCILE_TIMER_SECS, WarmState};
use crate::startup::StartupInputs;
use crate::writer::Landed;

/// The warm reconcile's bound when CONFIG_DB `WARM_RESTART|swss` has no
/// `portsyncd_timer`. A link dump takes milliseconds; this only matters
/// when the kernel never finishes it.
pub const DEFAULT_RECONCILE_TIMER: Duration = Duration::from_secs(30);

/// The reconcile bound: `portsyncd_timer` when set to a positive number of
/// seconds (at most [`MAX_RECONCILE_TIMER_SECS`], so that adding it to the
/// clock cannot overflow), else [`DEFAULT_RECONCILE_TIMER`].
pub fn reconcile_timer(portsyncd_timer: Option<u64>) -> Duration {
    match portsyncd_timer {
        Some(secs) if secs > 0 => Duration::from_secs(secs.min(MAX_RECONCILE_TIMER_SECS)),
        _ => DEFAULT_RECONCILE_TIMER,
    }
}

const CONFIG_DONE: &[u8] = b"PortConfigDone";
const INIT_DONE: &[u8] = b"PortInitDone";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Warm {
    /// Cold start: nothing to reconcile.
    Off,
    /// Waiting for EOIU, at most until this instant.
    Collecting(Instant),
    /// `restored` queued; `reconciled` once everything before `mark` landed.
    Restored {
        mark: u64,
        by_timer: bool,
    },
    /// `reconciled` queued; said (log, gauge) once Redis holds it, so that
    /// whoever reads the word can read the row too.
    Reconciling {
        by_timer: bool,
    },
    Reconciled,
}

/// Where the start-up stands.
pub struct Progress {
    count: usize,
    /// Cold start: producer writes of ports not acknowledged yet.
    config_pending: HashSet<Vec<u8>>,
    config_done_queued: bool,
    /// Configured ports whose STATE_DB row has not landed yet.
    awaiting_row: HashSet<PortName>,
    init_done_queued: bool,
    warm: Warm,
    warm_key: String,
    started: Instant,
    before: RowCounts,
    metrics: Metrics,
    /// PortConfigDone, PortInitDone and the reconcile (or, cold, EOIU) landed.
    pub config_done: bool,
    pub init_done: bool,
    pub reconciled: bool,
}

impl Progress {
    /// Starts the start-up: on a cold start, queues every port's producer
    /// write.
    pub fn start(
        inputs: StartupInputs,
        warm_key: String,
        queue: &mut CoalescingQueue,
        metrics: Metrics,
        started: Instant,
    ) -> Self {
        let warm = inputs.warm.warm;
        let count = inputs.ports.len();
        let awaiting_row = inputs.ports.iter().map(|(p, _)| p.clone()).collect();
        let mut config_pending = HashSet::new();
        if !warm {
            // Moved, not copied: on a large switch these hashes are most of
            // the start-up's memory.
            for (name, fields) in inputs.ports {
                let key = name.as_bytes().to_vec();
                config_pending.insert(key.clone());
                queue.push(Key::ApplPort(key), Op::Fields(fields), started);
            }
            info!(
                count,
                "port configuration queued for APPL_DB PORT_TABLE; PortConfigDone follows once Redis took every port"
            );
        } else {
            info!("warm start: APPL_DB PORT_TABLE and PortConfigDone left as they are");
        }
        let timer = reconcile_timer(inputs.reconcile_timer);
        Progress {
            count,
            config_pending,
            config_done_queued: warm,
            awaiting_row,
            init_done_queued: false,
            warm: if warm {
                Warm::Collecting(
                    started
                        .checked_add(timer)
                        .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400)),
                )
            } else {
                Warm::Off
            },
            warm_key,
            before: metrics.warm.row_counts(),
            started,
            metrics,
            config_done: false,
            init_done: false,
            reconciled: false,
        }
    }

    pub fn is_warm(&self) -> bool {
        self.warm != Warm::Off
    }

    /// When [`tick`](Self::tick) must run at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        match self.warm {
            Warm::Collecting(until) => Some(until),
            _ => None,
        }
    }

    pub fn on_landed(&mut self, landed: &Landed) {
        match landed {
            Landed::Row { port, .. } => {
                self.awaiting_row.remove(port);
            }
            Landed::Appl(key) if key.as_slice() == CONFIG_DONE => {
                self.config_done = true;
                info!(count = self.count, "PortConfigDone written to APPL_DB");
            }
            Landed::Appl(key) if key.as_slice() == INIT_DONE => {
                self.init_done = true;
                info!(
                    elapsed_ms = self.started.elapsed().as_millis() as u64,
                    "PortInitDone written to APPL_DB"
                );
            }
            Landed::Appl(key) => {
                self.config_pending.remove(key);
            }
            Landed::StateHash(key) if *key == self.warm_key => {
                if let Warm::Reconciling { by_timer } = self.warm {
                    self.reconciled(by_timer);
                }
            }
            // The reconcile itself is done; only its record is refused (a
            // key of the wrong type, say). Say so rather than never be ready.
            Landed::Refused {
                key: Key::StateHash(key),
                error,
                ..
            } if *key == self.warm_key => {
                if let Warm::Reconciling { by_timer } = self.warm {
                    warn!(key, error = %error, "Redis refuses the warm restart row; the reconcile is done, but the row does not say so until Redis takes it");
                    self.reconciled(by_timer);
                }
            }
            // A row Redis refuses is retried on its own; PortInitDone does
            // not wait for it (one bad key must not hold the switch back).
            Landed::Refused {
                key: Key::StatePort(port),
                ..
            } if self.awaiting_row.remove(port) => {
                warn!(port = %port, "PortInitDone will not wait for this port: Redis refuses its STATE_DB row");
            }
            _ => {}
        }
    }

    /// The start-up link dump finished.
    pub fn on_eoiu(&mut self, queue: &mut CoalescingQueue, live: usize) {
        info!(
            ports_alive = live,
            ports_awaiting_row = self.awaiting_row.len(),
            "end of initial link update (EOIU)"
        );
        match self.warm {
            Warm::Collecting(_) => self.restored(queue, false),
            // A cold start has nothing to reconcile: done at EOIU.
            Warm::Off => {
                self.reconciled = true;
            }
            _ => {}
        }
    }

    fn restored(&mut self, queue: &mut CoalescingQueue, by_timer: bool) {
        self.push_warm_state(queue, WarmState::Restored);
        self.warm = Warm::Restored {
            mark: queue.mark(),
            by_timer,
        };
    }

    fn push_warm_state(&self, queue: &mut CoalescingQueue, state: WarmState) {
        queue.push(
            Key::StateHash(self.warm_key.clone()),
            Op::Fields(vec![(
                b"state".to_vec(),
                state.as_str().as_bytes().to_vec(),
            )]),
            Instant::now(),
        );
    }

    /// Moves the start-up on as far as what landed allows.
    pub fn tick(&mut self, queue: &mut CoalescingQueue, now: Instant) {
        if !self.config_done_queued && self.config_pending.is_empty() {
            self.config_done_queued = true;
            queue.push(
                Key::ApplPort(CONFIG_DONE.to_vec()),
                Op::Fields(vec![(
                    b"count".to_vec(),
                    self.count.to_string().into_bytes(),
                )]),
                now,
            );
        }
        let config_done = self.warm != Warm::Off || self.config_done;
        if !self.init_done_queued && config_done && self.awaiting_row.is_empty() {
            self.init_done_queued = true;
            queue.push(
                Key::ApplPort(INIT_DONE.to_vec()),
                Op::Fields(vec![(b"lanes".to_vec(), b"0".to_vec())]),
                now,
            );
            info!("every configured port's STATE_DB row is written; PortInitDone queued");
        }
        match self.warm {
            Warm::Collecting(until) if now >= until => {
                warn!(
                    "warm restart: the initial link dump did not finish within portsyncd_timer; \
                     reconciling with what the kernel reported so far"
                );
                self.restored(queue, true);
            }
            Warm::Restored { mark, by_timer } if queue.acknowledged_through(mark) => {
                self.push_warm_state(queue, WarmState::Reconciled);
                self.warm = Warm::Reconciling { by_timer };
            }
            _ => {}
        }
    }

    fn reconciled(&mut self, by_timer: bool) {
        self.warm = Warm::Reconciled;
        let seconds = self.started.elapsed().as_secs_f64();
        let done = self
            .metrics
            .warm
            .record_reconcile(self.before, seconds, by_timer);
        self.reconciled = true;
        info!(
            event = "warm_restart_reconciled",
            rows_written = done.changed,
            rows_untouched = done.unchanged,
            rows_deleted = done.deleted,
            elapsed_ms = (seconds * 1000.0) as u64,
            by_timer,
            "warm restart reconciled"
        );
    }

    /// Ports whose row has not landed, for the waiting log line.
    pub fn awaiting_rows(&self) -> usize {
        self.awaiting_row.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sonic::warm_table::WarmStart;

    fn inputs(warm: bool, ports: &[&str]) -> StartupInputs {
        StartupInputs {
            dpu: false,
            warm: WarmStart {
                warm,
                restore_count: u64::from(warm),
            },
            ports: ports
                .iter()
                .map(|p| (PortName::from(*p), vec![(b"lanes".to_vec(), b"0".to_vec())]))
                .collect(),
            reconcile_timer: None,
        }
    }

    fn drain_appl(queue: &mut CoalescingQueue, progress: &mut Progress) -> Vec<Vec<u8>> {
        let mut taken = Vec::new();
        queue.take_due(Instant::now(), 100, &mut taken);
        let mut keys = Vec::new();
        for t in taken {
            queue.acked(&t);
            if let Key::ApplPort(k) = &t.key {
                keys.push(k.clone());
                progress.on_landed(&Landed::Appl(k.clone()));
            }
        }
        keys
    }

    #[test]
    fn port_config_done_waits_for_every_port_and_init_done_for_every_row() {
        let mut queue = CoalescingQueue::new(64);
        let now = Instant::now();
        let mut p = Progress::start(
            inputs(false, &["Ethernet0", "Ethernet4"]),
            "W".into(),
            &mut queue,
            Metrics::new(),
            now,
        );
        p.tick(&mut queue, now);
        assert_eq!(
            drain_appl(&mut queue, &mut p),
            vec![b"Ethernet0".to_vec(), b"Ethernet4".to_vec()]
        );
        p.tick(&mut queue, now);
        assert_eq!(drain_appl(&mut queue, &mut p), vec![CONFIG_DONE.to_vec()]);
        p.tick(&mut queue, now);
        assert!(queue.is_empty(), "PortInitDone waits for the rows");
        let row = |port: &str| Landed::Row {
            port: PortName::from(port),
            since: now,
            fields: 4,
            oper_up: true,
            admin_up: true,
        };
        p.on_landed(&row("Ethernet0"));
        p.tick(&mut queue, now);
        assert!(queue.is_empty());
        p.on_landed(&row("Ethernet4"));
        p.tick(&mut queue, now);
        assert_eq!(drain_appl(&mut queue, &mut p), vec![INIT_DONE.to_vec()]);
    }

    #[test]
    fn no_ports_means_both_notices_at_once() {
        let mut queue = CoalescingQueue::new(64);
        let now = Instant::now();
        let mut p = Progress::start(
            inputs(false, &[]),
            "W".into(),
            &mut queue,
            Metrics::new(),
            now,
        );
        p.tick(&mut queue, now);
        assert_eq!(drain_appl(&mut queue, &mut p), vec![CONFIG_DONE.to_vec()]);
        p.tick(&mut queue, now);
        assert_eq!(drain_appl(&mut queue, &mut p), vec![INIT_DONE.to_vec()]);
    }

    #[test]
    fn a_warm_start_reconciles_after_eoiu_or_the_timer() {
        let mut queue = CoalescingQueue::new(64);
        let now = Instant::now();
        let metrics = Metrics::new();
        let mut p = Progress::start(
            inputs(true, &["Ethernet0"]),
            "W".into(),
            &mut queue,
            metrics.clone(),
            now,
        );
        assert!(queue.is_empty(), "no producer writes on a warm start");
        p.tick(&mut queue, now + DEFAULT_RECONCILE_TIMER);
        assert!(
            queue.contains(&Key::StateHash("W".into())),
            "restored by timer"
        );
        let mut taken = Vec::new();
        queue.take_due(now, 10, &mut taken);
        queue.acked(&taken[0]);
        p.on_landed(&Landed::StateHash("W".into()));
        p.tick(&mut queue, now);
        assert!(queue.contains(&Key::StateHash("W".into())), "reconciled");
        assert!(!p.reconciled, "said only once Redis holds it");
        p.on_landed(&Landed::StateHash("W".into()));
        assert!(p.reconciled);
        assert_eq!(metrics.warm.reconcile_by_timer.get(), 1);
    }

    #[test]
    fn a_timer_at_the_end_of_time_does_not_panic() {
        assert_eq!(reconcile_timer(Some(5)), Duration::from_secs(5));
        assert_eq!(reconcile_timer(Some(0)), DEFAULT_RECONCILE_TIMER);
        assert_eq!(reconcile_timer(None), DEFAULT_RECONCILE_TIMER);
        assert_eq!(
            reconcile_timer(Some(u64::MAX)),
            Duration::from_secs(MAX_RECONCILE_TIMER_SECS)
        );
        let mut queue = CoalescingQueue::new(4);
        let mut i = inputs(true, &[]);
        i.reconcile_timer = Some(u64::MAX);
        let p = Progress::start(i, "W".into(), &mut queue, Metrics::new(), Instant::now());
        assert!(p.deadline().is_some());
    }
}
