//! Drives the daemon's own decisions (the rules, the port records' dirty
//! set and rounds, the start-up progress and its outbox) through an
//! arbitrary sequence of link events, dumps, APPL_DB changes and Redis
//! outcomes, against a model of Redis, and checks the invariants after
//! every step. What is expected comes from the kernel's sequence as this
//! model keeps it, never from the code under test. Shared by
//! `tests/decisions.rs` (a fixed set of pseudo-random sequences, in CI) and
//! `fuzz/fuzz_targets/decisions.rs` (coverage-guided).
//!
//! Invariants:
//! - every change of a port's four values (or ifindex) reaches Redis as a
//!   whole row written after it;
//! - nothing is written for a port APPL_DB lacks at that moment, and a
//!   written row is the kernel's latest word;
//! - once every port is configured and Redis takes every write, each row
//!   holds the kernel's last word (or is gone after a delete);
//! - PortInitDone only after every configured port's row was written (or
//!   Redis refused it); PortConfigDone only after every port entry landed;
//! - no panic anywhere.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use portsyncd::metrics::Metrics;
use portsyncd::netlink::{LinkChange, LinkEvent};
use portsyncd::port_name::PortName;
use portsyncd::ports::{Outcome, Ports, Take};
use portsyncd::sonic::warm_table::WarmStart;
use portsyncd::startup::StartupInputs;
use portsyncd::status::Status;
use portsyncd::sync::{Decision, Ignored, PortState, SyncRules, state_values};
use portsyncd::warm_reconcile::{Output, Progress};

const PORTS: [&str; 4] = ["Ethernet0", "Ethernet4", "Ethernet8", "PortChannel1"];
/// ifindexes 1..=3 are old interfaces (a cold, non-DPU start's snapshot).
const OLD: [u32; 3] = [1, 2, 3];

/// Bytes in, one decision at a time.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

/// What one sequence exercised, so a caller can tell that the invariants
/// were checked on something (not on empty runs).
#[derive(Debug, Default)]
pub struct Exercised {
    /// Ports whose final row was compared with the kernel's last word.
    pub rows_compared: usize,
    /// PortInitDone was produced (so its invariant was checked).
    pub port_init_done: bool,
}

/// A round in flight: each port's write with the step it was sent at, and
/// the outputs.
type InFlight = (Vec<(Take, u64)>, Vec<Output>);

/// Redis and the kernel as this model keeps them.
#[derive(Default)]
struct Model {
    /// STATE_DB rows (always whole: the daemon writes only whole rows).
    rows: HashMap<PortName, [Vec<u8>; 4]>,
    /// Ports whose consumed APPL_DB key exists.
    appl: HashSet<PortName>,
    /// APPL_DB keys produced, in order.
    produced: Vec<Vec<u8>>,
    /// The kernel's last word per port: `Some((ifindex, state))` alive.
    kernel: HashMap<PortName, Option<(u32, PortState)>>,
    /// Ports reported since the running dump started.
    seen_in_dump: Option<HashSet<PortName>>,
    /// A change not yet followed by a whole row written after it: the step
    /// of the change.
    owed: HashMap<PortName, u64>,
    /// Ports whose row landed (or Redis refused it).
    rows_landed: HashSet<PortName>,
    step: u64,
}

pub fn run(data: &[u8]) -> Exercised {
    let mut input = Input(data);
    let Some(first) = input.byte() else {
        return Exercised::default();
    };
    let warm = first & 1 == 1;
    let dpu = first & 0x40 != 0;
    let config: Vec<PortName> = PORTS[..usize::from(first >> 1) % 4]
        .iter()
        .map(|p| PortName::from(*p))
        .collect();
    let old: &[u32] = if warm || dpu { &[] } else { &OLD };
    let mut clock = Instant::now();
    let inputs = StartupInputs {
        dpu,
        warm: WarmStart {
            warm,
            restore_count: u64::from(warm),
        },
        ports: config
            .iter()
            .map(|p| (p.clone(), vec![(b"lanes".to_vec(), b"0".to_vec())]))
            .collect(),
        reconcile_timer: None,
    };
    let (mut progress, names) = Progress::start(inputs, Status::default(), Metrics::new(), clock);
    let mut ports = Ports::new(names, 64, Metrics::new());
    let rules = SyncRules::new(old.iter().copied());
    let mut m = Model::default();
    let mut in_flight: Option<InFlight> = None;
    let mut eoiu = false;

    while let Some(action) = input.byte() {
        m.step += 1;
        clock += Duration::from_millis(u64::from(action >> 4) * 50);
        match action & 0x0f {
            0..=5 => {
                let arg = input.byte().unwrap_or(0);
                let name = PORTS[usize::from(arg) % PORTS.len()];
                let ifindex = u32::from(arg >> 2) % 8 + 1;
                let del = action & 0x0f == 5;
                let state = PortState {
                    admin_up: arg & 0x40 != 0,
                    oper_up: arg & 0x80 != 0,
                    mtu: 1500 + u32::from(arg & 3),
                };
                let event = LinkEvent {
                    change: if del {
                        LinkChange::Del
                    } else {
                        LinkChange::New
                    },
                    ifindex,
                    name: name.as_bytes(),
                    kind: None,
                    master: None,
                    admin_up: state.admin_up,
                    oper_up: state.oper_up,
                    mtu: state.mtu,
                };
                let decision = rules.on_event(&event);
                if old.contains(&ifindex) {
                    assert_eq!(decision, Decision::Ignore(Ignored::OldInterface));
                    continue;
                }
                let port = PortName::from(name);
                m.kernel_says(&port, (!del).then_some((ifindex, state)), warm && !eoiu);
                match decision {
                    Decision::Set { port: p, .. } => {
                        ports.on_link(p, ifindex, state, clock);
                    }
                    Decision::Delete { port: p } => ports.on_del(p, clock),
                    Decision::Ignore(why) => panic!("{name} ignored: {why:?}"),
                }
            }
            6 => {
                ports.dump_started();
                m.seen_in_dump = Some(HashSet::new());
            }
            7 => {
                let mut vanished = ports.vanished();
                vanished.sort();
                assert_eq!(vanished, m.vanished(), "a resync's deletes");
                for port in &vanished {
                    m.kernel_says(port, None, false);
                    ports.on_del(port, clock);
                }
                if !eoiu {
                    eoiu = true;
                    progress.on_eoiu(0, 0);
                }
            }
            8 | 9 => {
                // orchagent consumes a port, or breakout removes it.
                let port =
                    PortName::from(PORTS[usize::from(input.byte().unwrap_or(0)) % PORTS.len()]);
                if action & 0x0f == 8 {
                    m.appl.insert(port.clone());
                } else {
                    m.appl.remove(&port);
                }
                ports.reconsider(&port);
            }
            10 => answer_reads(&mut ports, &mut progress, &mut m, eoiu, clock),
            11 | 12 if in_flight.is_none() => {
                ports.set_held(progress.holds_writes());
                progress.tick(&ports);
                let takes = ports.take(clock, 8);
                assert!(
                    takes.is_empty() || !progress.holds_writes(),
                    "written before the warm reconcile"
                );
                for t in &takes {
                    if let Some(row) = t.row {
                        assert!(
                            m.appl.contains(&t.port),
                            "{} written while APPL_DB lacks it",
                            t.port
                        );
                        assert_eq!(
                            Some(row),
                            m.alive(&t.port).map(|(_, s)| s),
                            "not the kernel's latest word"
                        );
                    }
                }
                let takes = takes.into_iter().map(|t| (t, m.step)).collect();
                in_flight = Some((takes, progress.outbox_mut().take(clock, 8)));
            }
            _ => {
                let outcomes = input.byte().unwrap_or(0);
                if let Some((takes, outputs)) = in_flight.take() {
                    settle(
                        &mut ports,
                        &mut progress,
                        &mut m,
                        takes,
                        outputs,
                        outcomes,
                        clock,
                    );
                }
            }
        }
        progress.tick(&ports);
        m.check_notices(&config);
    }

    // Drain: every port configured, Redis takes everything, with time for
    // every backoff and the warm timer to pass.
    for p in PORTS {
        let p = PortName::from(p);
        m.appl.insert(p.clone());
        ports.reconsider(&p);
    }
    if let Some((takes, outputs)) = in_flight.take() {
        settle(&mut ports, &mut progress, &mut m, takes, outputs, 0, clock);
    }
    for _ in 0..64 {
        clock += Duration::from_secs(31);
        answer_reads(&mut ports, &mut progress, &mut m, eoiu, clock);
        ports.set_held(progress.holds_writes());
        progress.tick(&ports);
        let takes: Vec<_> = ports
            .take(clock, 8)
            .into_iter()
            .map(|t| (t, m.step))
            .collect();
        let outputs = progress.outbox_mut().take(clock, 8);
        if takes.is_empty() && outputs.is_empty() && ports.settled() && progress.outbox_mut().idle()
        {
            break;
        }
        settle(&mut ports, &mut progress, &mut m, takes, outputs, 0, clock);
        progress.tick(&ports);
        m.check_notices(&config);
    }
    assert!(
        ports.settled() && progress.outbox_mut().idle(),
        "a write was never drained"
    );
    assert!(
        m.owed.is_empty(),
        "changes never written whole: {:?}",
        m.owed
    );
    for (port, last) in &m.kernel {
        match last {
            Some((_, s)) => assert_eq!(
                m.rows.get(port),
                Some(&state_values(s)),
                "{port}: lost a write"
            ),
            None => assert!(!m.rows.contains_key(port), "{port}: row not deleted"),
        }
    }
    Exercised {
        rows_compared: m.kernel.len(),
        port_init_done: m.produced.iter().any(|k| k == b"PortInitDone"),
    }
}

impl Model {
    fn alive(&self, port: &PortName) -> Option<(u32, PortState)> {
        self.kernel.get(port).copied().flatten()
    }

    /// The kernel's word for a port; a change is owed a whole-row write,
    /// except while a warm restart collects (the reconcile decides then).
    fn kernel_says(&mut self, port: &PortName, now: Option<(u32, PortState)>, collecting: bool) {
        if let Some(seen) = &mut self.seen_in_dump {
            seen.insert(port.clone());
        }
        let before = self.kernel.insert(port.clone(), now).flatten();
        match now {
            None => {
                self.owed.remove(port);
            }
            Some(v) if before != Some(v) && !collecting => {
                self.owed.entry(port.clone()).or_insert(self.step);
            }
            Some(_) => {}
        }
    }

    /// Alive ports the running dump did not report.
    fn vanished(&mut self) -> Vec<PortName> {
        let Some(seen) = self.seen_in_dump.take() else {
            return Vec::new();
        };
        let mut gone: Vec<PortName> = self
            .kernel
            .iter()
            .filter(|(p, k)| k.is_some() && !seen.contains(*p))
            .map(|(p, _)| p.clone())
            .collect();
        gone.sort();
        gone
    }

    fn check_notices(&self, config: &[PortName]) {
        if self.produced.iter().any(|k| k == b"PortInitDone") {
            for port in config {
                assert!(
                    self.rows_landed.contains(port),
                    "PortInitDone before {port}'s row"
                );
            }
        }
        if let Some(at) = self.produced.iter().position(|k| k == b"PortConfigDone") {
            for port in config {
                assert!(
                    self.produced[..at].contains(&port.as_bytes().to_vec()),
                    "PortConfigDone before {port}"
                );
            }
        }
    }
}

/// The reads the data path makes between rounds: which ports APPL_DB has,
/// and at a warm restart's EOIU (or timer) the rows compared with Redis.
fn answer_reads(
    ports: &mut Ports,
    progress: &mut Progress,
    m: &mut Model,
    eoiu: bool,
    now: Instant,
) {
    for port in ports.take_asks() {
        ports.set_configured(&port, m.appl.contains(&port));
    }
    if let Some(by_timer) = progress.reconcile_due(eoiu, now) {
        for (port, state) in ports.live_configured() {
            let same = m.rows.get(&port) == Some(&state_values(&state));
            if same {
                m.rows_landed.insert(port.clone());
            } else if m.appl.contains(&port) {
                m.owed.entry(port.clone()).or_insert(m.step);
            }
            ports.verified(&port, same, true);
        }
        progress.restored(by_timer);
    }
}

/// Redis answers a round: bit 7 of `outcomes` loses the whole round, bit i
/// refuses the i-th port's write; the rest is done.
fn settle(
    ports: &mut Ports,
    progress: &mut Progress,
    m: &mut Model,
    takes: Vec<(Take, u64)>,
    outputs: Vec<Output>,
    outcomes: u8,
    now: Instant,
) {
    let lost = outcomes & 0x80 != 0;
    for (i, (take, sent)) in takes.iter().enumerate() {
        let outcome = if lost {
            Outcome::Lost
        } else if outcomes & (1 << (i % 7)) != 0 {
            Outcome::Refused
        } else {
            Outcome::Done
        };
        if outcome == Outcome::Done {
            if take.del {
                m.rows.remove(&take.port);
            }
            if let Some(row) = take.row {
                m.rows.insert(take.port.clone(), state_values(&row));
                m.rows_landed.insert(take.port.clone());
                if m.owed
                    .get(&take.port)
                    .is_some_and(|changed| changed <= sent)
                {
                    m.owed.remove(&take.port);
                }
            }
        }
        let (del, hset) = (
            if take.del { outcome } else { Outcome::Done },
            if take.row.is_some() {
                outcome
            } else {
                Outcome::Done
            },
        );
        ports.settle(take, del, hset, now);
        if outcome == Outcome::Refused && ports.give_up_waiting(&take.port) {
            m.rows_landed.insert(take.port.clone());
        }
    }
    if lost {
        progress
            .outbox_mut()
            .put_back(outputs.into_iter().map(|o| (o, false)).collect(), now);
        return;
    }
    progress.outbox_mut().landed(outputs.len());
    for output in &outputs {
        if let Output::Produce { key, .. } = output {
            m.produced.push(key.clone());
        }
        progress.on_landed(output);
    }
}
