//! Drives the daemon's decisions (rules, coalescing queue, STATE_DB image,
//! start-up progress) through an arbitrary sequence of link events, dumps,
//! overruns, configuration changes and Redis outcomes, against a model of
//! Redis, and checks the invariants after every step. Shared by
//! `tests/decisions.rs` (a fixed set of pseudo-random sequences, in CI) and
//! `fuzz/fuzz_targets/decisions.rs` (coverage-guided).
//!
//! Invariants:
//! - one queue slot per key, never more keys than exist;
//! - nothing lost: once every port is configured and Redis takes every
//!   write, each STATE_DB row holds the last state the kernel reported (or
//!   is gone when the last word was a delete);
//! - PortInitDone only after every configured port's row was written (or
//!   Redis refused it); PortConfigDone only after every port entry landed;
//! - no panic anywhere.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use portsyncd::metrics::Metrics;
use portsyncd::netlink::{LinkChange, LinkEvent};
use portsyncd::port_name::PortName;
use portsyncd::queue::{CoalescingQueue, Key, Op};
use portsyncd::sonic::warm_table::WarmStart;
use portsyncd::startup::StartupInputs;
use portsyncd::state_image::StateImage;
use portsyncd::sync::{Decision, PortState, STATE_FIELDS, SyncRules, state_values};
use portsyncd::warm_reconcile::Progress;
use portsyncd::writer::Landed;

const PORTS: [&str; 4] = ["Ethernet0", "Ethernet4", "Ethernet8", "PortChannel1"];
/// ifindexes 1..=3 are old interfaces (a cold start's snapshot).
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

/// Redis as far as these decisions can tell.
#[derive(Default)]
struct ModelRedis {
    /// STATE_DB rows: our four fields.
    rows: HashMap<PortName, [Vec<u8>; 4]>,
    /// Ports whose consumed APPL_DB key exists.
    configured: HashSet<PortName>,
    /// APPL_DB keys produced.
    produced: HashSet<Vec<u8>>,
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

pub fn run(data: &[u8]) -> Exercised {
    let mut input = Input(data);
    let Some(first) = input.byte() else {
        return Exercised::default();
    };
    let warm = first & 1 == 1;
    let config_ports = usize::from(first >> 1) % 4;
    let now = Instant::now();
    let metrics = Metrics::new();
    let inputs = StartupInputs {
        dpu: first & 0x40 != 0,
        warm: WarmStart {
            warm,
            restore_count: u64::from(warm),
        },
        ports: PORTS[..config_ports]
            .iter()
            .map(|p| (PortName::from(*p), vec![(b"lanes".to_vec(), b"0".to_vec())]))
            .collect(),
        reconcile_timer: None,
    };
    let configured_in_config_db: HashSet<PortName> =
        inputs.ports.iter().map(|(p, _)| p.clone()).collect();
    let mut queue = CoalescingQueue::new(64);
    let mut progress = Progress::start(inputs, "W".into(), &mut queue, metrics.clone(), now);
    let mut rules = SyncRules::new(if warm { Vec::new() } else { OLD.to_vec() });
    let mut image = StateImage::default();
    let mut redis = ModelRedis::default();
    // What the kernel said last, per port: Some(state) alive, None deleted.
    let mut truth: HashMap<PortName, Option<PortState>> = HashMap::new();
    let mut rows_landed: HashSet<PortName> = HashSet::new();
    let mut refused: HashSet<PortName> = HashSet::new();
    let mut clock = now;
    let mut in_flight = Vec::new();

    while let Some(action) = input.byte() {
        clock += Duration::from_millis(u64::from(action >> 4) * 50);
        match action & 0x0f {
            0..=5 => {
                let arg = input.byte().unwrap_or(0);
                let port = PORTS[usize::from(arg) % PORTS.len()];
                let ifindex = u32::from(arg >> 2) % 8 + 1;
                let event = LinkEvent {
                    change: if action & 0x0f == 5 {
                        LinkChange::Del
                    } else {
                        LinkChange::New
                    },
                    ifindex,
                    name: port.as_bytes(),
                    kind: None,
                    master: None,
                    admin_up: arg & 0x40 != 0,
                    oper_up: arg & 0x80 != 0,
                    mtu: 1500 + u32::from(arg & 3),
                };
                match rules.on_event(&event) {
                    Decision::Set {
                        port,
                        state,
                        recreated,
                    } => {
                        truth.insert(port.clone(), Some(state));
                        queue.push(Key::StatePort(port), Op::port_set(state, recreated), clock);
                    }
                    Decision::Delete { port } => {
                        truth.insert(port.clone(), None);
                        queue.push(Key::StatePort(port), Op::port_delete(), clock);
                    }
                    Decision::Ignore(_) => {}
                }
            }
            6 => rules.dump_started(),
            7 => {
                for port in rules.dump_finished() {
                    truth.insert(port.clone(), None);
                    queue.push(Key::StatePort(port), Op::port_delete(), clock);
                }
                progress.on_eoiu(&mut queue, 0);
            }
            8 => {
                // orchagent consumes a port.
                let arg = input.byte().unwrap_or(0);
                redis
                    .configured
                    .insert(PortName::from(PORTS[usize::from(arg) % PORTS.len()]));
            }
            9 | 10 if in_flight.is_empty() => {
                // A round leaves; events may fold in before it is settled.
                queue.take_due(clock, 8, &mut in_flight);
            }
            _ => {
                // The round's replies: each key acknowledged, refused or
                // returned by the byte that follows.
                let outcomes = input.byte().unwrap_or(0);
                let taken = std::mem::take(&mut in_flight);
                settle(
                    &taken,
                    &mut queue,
                    &mut image,
                    &mut redis,
                    clock,
                    outcomes,
                    &mut |l| {
                        note(&mut progress, &mut rows_landed, &mut refused, &l);
                    },
                );
            }
        }
        progress.tick(&mut queue, clock);
        check_progress(
            &progress,
            &configured_in_config_db,
            &rows_landed,
            &refused,
            &redis,
        );
        assert!(
            queue.len() <= PORTS.len() + config_ports + 3,
            "one slot per key"
        );
    }

    // Drain: every port configured, Redis takes everything.
    for p in PORTS {
        redis.configured.insert(PortName::from(p));
    }
    // The round still in flight is answered first, then Redis takes
    // whatever comes due, with time enough for every backoff to pass.
    let mut taken = std::mem::take(&mut in_flight);
    for _ in 0..64 {
        settle(
            &taken,
            &mut queue,
            &mut image,
            &mut redis,
            clock,
            0,
            &mut |l| {
                note(&mut progress, &mut rows_landed, &mut refused, &l);
            },
        );
        progress.tick(&mut queue, clock);
        if queue.is_empty() {
            break;
        }
        clock += Duration::from_secs(31);
        taken.clear();
        queue.take_due(clock, 8, &mut taken);
    }
    assert!(queue.is_empty(), "a write was never drained");
    for (port, last) in &truth {
        let row = redis.rows.get(port);
        match last {
            Some(state) => assert_eq!(row, Some(&state_values(state)), "{port}: lost a write"),
            None => assert!(row.is_none(), "{port}: row not deleted"),
        }
    }
    check_progress(
        &progress,
        &configured_in_config_db,
        &rows_landed,
        &refused,
        &redis,
    );
    Exercised {
        rows_compared: truth.len(),
        port_init_done: redis.produced.contains(&b"PortInitDone"[..]),
    }
}

fn note(
    progress: &mut Progress,
    rows_landed: &mut HashSet<PortName>,
    refused: &mut HashSet<PortName>,
    landed: &Landed,
) {
    match landed {
        Landed::Row { port, .. } => {
            rows_landed.insert(port.clone());
        }
        Landed::Refused {
            key: Key::StatePort(port),
            ..
        } => {
            refused.insert(port.clone());
        }
        _ => {}
    }
    progress.on_landed(landed);
}

fn check_progress(
    progress: &Progress,
    config: &HashSet<PortName>,
    rows_landed: &HashSet<PortName>,
    refused: &HashSet<PortName>,
    redis: &ModelRedis,
) {
    if redis.produced.contains(&b"PortInitDone"[..]) || progress.init_done {
        for port in config {
            assert!(
                rows_landed.contains(port) || refused.contains(port),
                "PortInitDone before {port}'s row"
            );
        }
    }
    if redis.produced.contains(&b"PortConfigDone"[..]) {
        for port in config {
            assert!(
                redis.produced.contains(port.as_bytes()),
                "PortConfigDone before {port}"
            );
        }
    }
}

/// Settles a round against the model: the writer's decisions (configured
/// check, image diff, delete first) with the model's outcomes. Bit i of
/// `outcomes` refuses the i-th key (bit 7 returns the whole round).
fn settle(
    taken: &[portsyncd::queue::Taken],
    queue: &mut CoalescingQueue,
    image: &mut StateImage,
    redis: &mut ModelRedis,
    now: Instant,
    outcomes: u8,
    landed: &mut dyn FnMut(Landed),
) {
    for (i, t) in taken.iter().enumerate() {
        if outcomes & 0x80 != 0 {
            queue.returned(t);
            continue;
        }
        if outcomes & (1 << (i % 7)) != 0 {
            let failures = queue.refused(t, now);
            landed(Landed::Refused {
                key: t.key.clone(),
                failures,
                error: "WRONGTYPE".into(),
            });
            continue;
        }
        match (&t.key, &t.op) {
            (
                Key::StatePort(port),
                Op::Port {
                    delete_first,
                    set,
                    full,
                },
            ) => {
                if *delete_first {
                    redis.rows.remove(port);
                    image.deleted(port);
                }
                match set {
                    Some(s) if redis.configured.contains(port) => {
                        let values = state_values(s);
                        let fields = image.changes(port, &values, *full || *delete_first);
                        let row = redis.rows.entry(port.clone()).or_default();
                        for &f in &fields {
                            row[f] = values[f].clone();
                        }
                        image.written(port, &values, &fields);
                        assert_eq!(STATE_FIELDS.len(), row.len());
                        queue.acked(t);
                        landed(Landed::Row {
                            port: port.clone(),
                            since: t.since,
                            fields: fields.len(),
                            oper_up: s.oper_up,
                            admin_up: s.admin_up,
                        });
                    }
                    Some(s) => queue.partly_done(
                        t,
                        Op::port_set(*s, *full),
                        Some(now + Duration::from_millis(200)),
                    ),
                    None => queue.acked(t),
                }
            }
            (Key::ApplPort(key), _) => {
                redis.produced.insert(key.clone());
                queue.acked(t);
                landed(Landed::Appl(key.clone()));
            }
            (Key::StateHash(key), _) => {
                queue.acked(t);
                landed(Landed::StateHash(key.clone()));
            }
            _ => queue.acked(t),
        }
    }
}
