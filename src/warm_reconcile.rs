//! The start-up's outputs, in the order they must land, decided from what
//! really landed in Redis: the ports' producer writes, `PortConfigDone`,
//! `PortInitDone`, and the warm restart's `restored` and `reconciled`.
//!
//! - Cold start: every CONFIG_DB port goes to APPL_DB through the producer
//!   protocol; `PortConfigDone` (with the count) follows once Redis
//!   acknowledged every one of them.
//! - `PortInitDone` once every configured port's STATE_DB row landed (a
//!   link message alone is not enough: the port must be configured).
//! - Warm start: nothing is written until the end of the initial link dump
//!   (EOIU), or until `portsyncd_timer` runs out first; then the rows are
//!   compared with what Redis holds, only those that differ are written,
//!   `restored` is recorded, and `reconciled` once every such write landed.
//!   No row is ever deleted here: on a warm reboot the kernel is new and
//!   syncd recreates the netdevs later, while STATE_DB already holds every
//!   daemon's fields.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::metrics::{Metrics, RowCounts};
use crate::port_name::PortName;
use crate::ports::{Ports, refusal_delay};
use crate::sonic::warm_table::{MAX_RECONCILE_TIMER_SECS, WarmState};
use crate::startup::StartupInputs;
use crate::status::{Phase, Status};

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

pub const CONFIG_DONE: &[u8] = b"PortConfigDone";
pub const INIT_DONE: &[u8] = b"PortInitDone";

pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One thing the start-up tells Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// An APPL_DB `PORT_TABLE` entry through the producer protocol: a port,
    /// `PortConfigDone` or `PortInitDone`.
    Produce { key: Vec<u8>, fields: Fields },
    /// Fields of STATE_DB `WARM_RESTART_TABLE|portsyncd`.
    Warm(Fields),
}

/// Outputs waiting for a round, in the order they are sent. What must
/// follow something else is pushed only once that landed (see
/// [`Progress::tick`]), so a refused output waits out its backoff without
/// holding up the others.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Each output, with the time before which it may not be sent again.
    items: VecDeque<(Output, Option<Instant>)>,
    in_flight: usize,
    /// Refusals in a row, for the backoff.
    failures: u32,
}

impl Outbox {
    fn push(&mut self, output: Output) {
        self.items.push_back((output, None));
    }

    /// Up to `max` outputs that are due, in order.
    pub fn take(&mut self, now: Instant, max: usize) -> Vec<Output> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.items.len() && out.len() < max {
            if self.items[i].1.is_none_or(|t| t <= now) {
                out.extend(self.items.remove(i).map(|(o, _)| o));
            } else {
                i += 1;
            }
        }
        self.in_flight += out.len();
        out
    }

    /// Outputs a round did not land go back first in line, in their order;
    /// a refused one (`true`) after a backoff.
    pub fn put_back(&mut self, outputs: Vec<(Output, bool)>, now: Instant) {
        self.in_flight -= outputs.len();
        let refused = outputs.iter().any(|(_, r)| *r);
        if refused {
            self.failures += 1;
        }
        let delay = refusal_delay(self.failures);
        for (output, r) in outputs.into_iter().rev() {
            self.items.push_front((output, r.then(|| now + delay)));
        }
    }

    /// Outputs that landed.
    pub fn landed(&mut self, n: usize) {
        self.in_flight -= n;
        if n > 0 && self.items.iter().all(|(_, t)| t.is_none()) {
            self.failures = 0;
        }
    }

    pub fn idle(&self) -> bool {
        self.items.is_empty() && self.in_flight == 0
    }

    pub fn next_retry(&self) -> Option<Instant> {
        self.items.iter().filter_map(|(_, t)| *t).min()
    }

    /// Outputs Redis refused on their last try.
    pub fn failing(&self) -> usize {
        self.items.iter().filter(|(_, t)| t.is_some()).count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    Waiting,
    Queued,
    Landed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Warm {
    /// Cold start: nothing to reconcile.
    Off,
    /// Collecting until EOIU, at most until this instant.
    Collecting(Instant),
    /// `restored` queued; `reconciled` once every write queued up to then
    /// landed.
    Restored {
        by_timer: bool,
    },
    /// `reconciled` queued; said once Redis holds it.
    Reconciling {
        by_timer: bool,
    },
    Reconciled,
}

/// What a periodic check found missing in Redis.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    /// Something the daemon gave APPL_DB (a notice, a port entry) is there.
    pub appl_present: bool,
    pub config_done: bool,
    pub init_done: bool,
    pub warm_row: bool,
}

/// Where the start-up stands, and the outputs it still has to send.
pub struct Progress {
    outbox: Outbox,
    count: usize,
    /// Producer writes of ports not landed yet (cold start).
    producing: usize,
    /// Something of ours was seen in APPL_DB (PortConfigDone landed, or a
    /// check found our entries on a warm start): from then on, finding none
    /// of it means APPL_DB lost its data.
    appl_seen: bool,
    config_done: Notice,
    init_done: Notice,
    warm: Warm,
    restore_count: u64,
    /// The last warm-restart state sent, to write the row again if it goes.
    warm_state: WarmState,
    started: Instant,
    before: RowCounts,
    status: Status,
    metrics: Metrics,
}

impl Progress {
    /// Starts the start-up: on a cold start, queues every port's producer
    /// write. Returns the CONFIG_DB ports, for their records.
    pub fn start(
        inputs: StartupInputs,
        status: Status,
        metrics: Metrics,
        started: Instant,
    ) -> (Self, Vec<PortName>) {
        let warm = inputs.warm.warm;
        let count = inputs.ports.len();
        let mut outbox = Outbox::default();
        let mut names = Vec::with_capacity(count);
        // Moved, not copied: on a large switch these hashes are most of the
        // start-up's memory.
        for (name, fields) in inputs.ports {
            if !warm {
                let key = name.as_bytes().to_vec();
                outbox.push(Output::Produce { key, fields });
            }
            names.push(name);
        }
        if warm {
            info!("warm start: APPL_DB PORT_TABLE and PortConfigDone left as they are");
        } else {
            info!(
                count,
                "port configuration queued for APPL_DB PORT_TABLE; PortConfigDone follows once Redis took every port"
            );
        }
        let until = started
            .checked_add(reconcile_timer(inputs.reconcile_timer))
            .unwrap_or_else(|| started + Duration::from_secs(365 * 86_400));
        let progress = Progress {
            outbox,
            count,
            producing: if warm { 0 } else { count },
            appl_seen: false,
            config_done: if warm {
                Notice::Landed
            } else {
                Notice::Waiting
            },
            init_done: Notice::Waiting,
            warm: if warm {
                Warm::Collecting(until)
            } else {
                Warm::Off
            },
            restore_count: inputs.warm.restore_count,
            warm_state: if warm {
                WarmState::Initialized
            } else {
                WarmState::Disabled
            },
            before: metrics.warm.row_counts(),
            started,
            status,
            metrics,
        };
        (progress, names)
    }

    /// The outputs waiting for a round.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Writes are held until the warm reconcile.
    pub fn holds_writes(&self) -> bool {
        matches!(self.warm, Warm::Collecting(_))
    }

    /// When [`reconcile_due`](Self::reconcile_due) must be asked at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        match self.warm {
            Warm::Collecting(until) => Some(until),
            _ => None,
        }
    }

    /// The warm reconcile must run now: at EOIU, or when the timer ran out
    /// first (`Some(true)`).
    pub fn reconcile_due(&self, eoiu: bool, now: Instant) -> Option<bool> {
        match self.warm {
            Warm::Collecting(_) if eoiu => Some(false),
            Warm::Collecting(until) if now >= until => Some(true),
            _ => None,
        }
    }

    /// The warm reconcile compared the rows; their writes are queued.
    pub fn restored(&mut self, by_timer: bool) {
        if by_timer {
            warn!(
                "warm restart: the initial link dump did not finish within portsyncd_timer; reconciling with what the kernel reported so far"
            );
        }
        self.push_warm_state(WarmState::Restored);
        self.warm = Warm::Restored { by_timer };
    }

    /// The start-up link dump finished.
    pub fn on_eoiu(&mut self, alive: usize, awaiting: usize) {
        info!(
            ports_alive = alive,
            ports_awaiting_row = awaiting,
            "end of initial link update (EOIU)"
        );
    }

    fn push_warm_state(&mut self, state: WarmState) {
        self.warm_state = state;
        self.outbox.push(Output::Warm(vec![(
            b"state".to_vec(),
            state.as_str().as_bytes().to_vec(),
        )]));
    }

    /// An output landed.
    pub fn on_landed(&mut self, output: &Output) {
        match output {
            Output::Produce { key, .. } if key == CONFIG_DONE => {
                self.config_done = Notice::Landed;
                self.appl_seen = true;
                info!(count = self.count, "PortConfigDone written to APPL_DB");
            }
            Output::Produce { key, .. } if key == INIT_DONE => {
                self.init_done = Notice::Landed;
                info!(
                    elapsed_ms = self.started.elapsed().as_millis() as u64,
                    "PortInitDone written to APPL_DB"
                );
            }
            Output::Produce { .. } => self.producing = self.producing.saturating_sub(1),
            Output::Warm(fields) if is_reconciled(fields) => self.reconciled(),
            Output::Warm(_) => {}
        }
        self.publish_phase();
    }

    /// Redis refused an output. The reconcile's record alone is said done
    /// all the same (it is done; only its row is refused), rather than never
    /// be ready.
    pub fn on_refused(&mut self, output: &Output) {
        if let Output::Warm(fields) = output
            && is_reconciled(fields)
            && matches!(self.warm, Warm::Reconciling { .. })
        {
            warn!(
                "Redis refuses the warm restart row; the reconcile is done, but the row does not say so until Redis takes it"
            );
            self.reconciled();
            self.publish_phase();
        }
    }

    /// Moves the start-up on as far as what landed allows.
    pub fn tick(&mut self, ports: &Ports) {
        if self.config_done == Notice::Waiting && self.producing == 0 {
            self.config_done = Notice::Queued;
            self.outbox.push(Output::Produce {
                key: CONFIG_DONE.to_vec(),
                fields: vec![(b"count".to_vec(), self.count.to_string().into_bytes())],
            });
        }
        if self.init_done == Notice::Waiting
            && self.config_done == Notice::Landed
            && !self.holds_writes()
            && ports.awaiting_init() == 0
        {
            self.init_done = Notice::Queued;
            self.outbox.push(Output::Produce {
                key: INIT_DONE.to_vec(),
                fields: vec![(b"lanes".to_vec(), b"0".to_vec())],
            });
            info!("every configured port's STATE_DB row is written; PortInitDone queued");
        }
        if let Warm::Restored { by_timer } = self.warm
            && ports.settled()
            && self.outbox.idle()
        {
            self.push_warm_state(WarmState::Reconciled);
            self.warm = Warm::Reconciling { by_timer };
        }
    }

    fn reconciled(&mut self) {
        let Warm::Reconciling { by_timer } = self.warm else {
            return;
        };
        self.warm = Warm::Reconciled;
        let seconds = self.started.elapsed().as_secs_f64();
        let done = self
            .metrics
            .warm
            .record_reconcile(self.before, seconds, by_timer);
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

    /// The phase systemd and the probes read: configured once PortConfigDone
    /// landed (cold) or the reconcile did (warm); initialized once
    /// PortInitDone landed too.
    fn publish_phase(&self) {
        let configured = match self.warm {
            Warm::Off => self.config_done == Notice::Landed,
            w => w == Warm::Reconciled,
        };
        if configured {
            self.status.set_phase(if self.init_done == Notice::Landed {
                Phase::Initialized
            } else {
                Phase::Configured
            });
        }
    }

    /// Which notices the periodic check must find: those this run wrote
    /// (a warm start leaves PortConfigDone as it found it).
    pub fn expects(&self) -> (bool, bool) {
        (
            self.warm == Warm::Off && self.config_done == Notice::Landed,
            self.init_done == Notice::Landed,
        )
    }

    /// Someone deleted one of our keys (not a lost database): write just
    /// that key again. Returns false when APPL_DB lost everything we gave
    /// it, which needs the whole start-up again.
    pub fn repair(&mut self, missing: Missing) -> bool {
        if self.appl_seen && !missing.appl_present {
            return false;
        }
        self.appl_seen |= missing.appl_present;
        if missing.config_done && self.config_done == Notice::Landed {
            warn!("APPL_DB PORT_TABLE:PortConfigDone is gone; writing it again");
            self.config_done = Notice::Waiting;
        }
        if missing.init_done && self.init_done == Notice::Landed {
            warn!("APPL_DB PORT_TABLE:PortInitDone is gone; writing it again");
            self.init_done = Notice::Waiting;
        }
        if missing.warm_row {
            warn!("STATE_DB WARM_RESTART_TABLE|portsyncd is gone; writing it again");
            self.outbox.push(Output::Warm(vec![
                (
                    b"restore_count".to_vec(),
                    self.restore_count.to_string().into_bytes(),
                ),
                (
                    b"state".to_vec(),
                    self.warm_state.as_str().as_bytes().to_vec(),
                ),
            ]));
        }
        true
    }
}

fn is_reconciled(fields: &Fields) -> bool {
    fields
        .iter()
        .any(|(f, v)| f == b"state" && v.as_slice() == WarmState::Reconciled.as_str().as_bytes())
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

    /// Lands everything in the outbox; the keys and warm states, in order.
    fn land_all(p: &mut Progress) -> Vec<Vec<u8>> {
        let taken = p.outbox.take(Instant::now(), 1000);
        p.outbox.landed(taken.len());
        let mut said = Vec::new();
        for o in &taken {
            p.on_landed(o);
            said.push(match o {
                Output::Produce { key, .. } => key.clone(),
                Output::Warm(fields) => fields[0].1.clone(),
            });
        }
        said
    }

    #[test]
    fn port_config_done_waits_for_every_port_and_init_done_for_every_row() {
        let now = Instant::now();
        let (mut p, names) = Progress::start(
            inputs(false, &["Ethernet0", "Ethernet4"]),
            Status::default(),
            Metrics::new(),
            now,
        );
        let mut ports = Ports::new(names.clone(), 64, Metrics::new());
        p.tick(&ports);
        assert_eq!(
            land_all(&mut p),
            vec![b"Ethernet0".to_vec(), b"Ethernet4".to_vec()]
        );
        p.tick(&ports);
        assert_eq!(land_all(&mut p), vec![CONFIG_DONE.to_vec()]);
        assert_eq!(p.status.phase(), Phase::Configured);
        p.tick(&ports);
        assert!(p.outbox.idle(), "PortInitDone waits for the rows");
        for n in &names {
            ports.give_up_waiting(n);
        }
        p.tick(&ports);
        assert_eq!(land_all(&mut p), vec![INIT_DONE.to_vec()]);
        assert_eq!(p.status.phase(), Phase::Initialized);
        // One deleted notice is written again, alone.
        assert!(p.repair(Missing {
            appl_present: true,
            config_done: true,
            ..Missing::default()
        }));
        p.tick(&ports);
        assert_eq!(land_all(&mut p), vec![CONFIG_DONE.to_vec()]);
        assert!(!p.repair(Missing::default()), "APPL_DB holds none of it");
    }

    #[test]
    fn a_warm_start_reconciles_after_eoiu_or_the_timer_and_says_so_once_it_landed() {
        let now = Instant::now();
        let metrics = Metrics::new();
        let (mut p, names) = Progress::start(
            inputs(true, &["Ethernet0"]),
            Status::default(),
            metrics.clone(),
            now,
        );
        let ports = Ports::new(names, 64, Metrics::new());
        assert!(p.outbox.idle(), "no producer writes on a warm start");
        assert!(p.holds_writes());
        assert_eq!(p.reconcile_due(false, now), None);
        assert_eq!(
            p.reconcile_due(false, now + DEFAULT_RECONCILE_TIMER),
            Some(true)
        );
        p.restored(true);
        p.tick(&ports);
        assert_eq!(land_all(&mut p), vec![b"restored".to_vec()]);
        p.tick(&ports);
        let taken = p.outbox.take(now, 10);
        assert_eq!(taken.len(), 1);
        assert_eq!(
            p.status.phase(),
            Phase::Starting,
            "said only once Redis holds it"
        );
        p.outbox.landed(1);
        p.on_landed(&taken[0]);
        assert_eq!(metrics.warm.reconcile_by_timer.get(), 1);
        assert_eq!(p.status.phase(), Phase::Configured);
    }

    #[test]
    fn refused_outputs_wait_out_a_backoff_in_their_order_and_hold_up_nobody() {
        let mut o = Outbox::default();
        for k in [b"a", b"b", b"c"] {
            o.push(Output::Produce {
                key: k.to_vec(),
                fields: Vec::new(),
            });
        }
        let now = Instant::now();
        let first = o.take(now, 2);
        o.put_back(first.into_iter().map(|x| (x, true)).collect(), now);
        assert_eq!(o.take(now, 3).len(), 1, "only the one never refused goes");
        o.landed(1);
        let all = o.take(now + Duration::from_secs(1), 3);
        let keys: Vec<_> = all
            .iter()
            .map(|x| match x {
                Output::Produce { key, .. } => key.clone(),
                Output::Warm(_) => Vec::new(),
            })
            .collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()], "in their order");
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
        let mut i = inputs(true, &[]);
        i.reconcile_timer = Some(u64::MAX);
        let (p, _) = Progress::start(i, Status::default(), Metrics::new(), Instant::now());
        assert!(p.deadline().is_some());
    }
}
