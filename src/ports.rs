//! One record per port: everything the daemon knows of it, and whether a
//! round must write it.
//!
//! The shape is client-go's workqueue: a dirty mark on the record and a
//! queue of names, never a queue of commands. A link message that changes
//! any of the four values (or the ifindex) since the previous message marks
//! the port dirty; a round writes every dirty port as one whole row (all
//! four fields, even when Redis already holds them: intfmgrd replays its
//! IPv6 link-local addresses on every `admin_status=up` write it sees) and
//! the mark clears when Redis acknowledges, unless a newer message set it
//! again meanwhile. One write per port per round, memory bounded by the
//! number of ports, and nothing a subscriber must see is folded away.
//!
//! "Configured" is whether APPL_DB `PORT_TABLE:<port>` exists now, as
//! upstream's `LinkSync::onMsg` asks on every message; here it is asked
//! once when a port is first seen and again whenever a keyspace event says
//! the key changed, so a port removed from APPL_DB is not written while its
//! netdev lingers, and is written again, without another link message, once
//! it is back.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{Metrics, PortLabels};
use crate::port_name::PortName;
use crate::sync::PortState;

/// What one port's write in a round carries; given back with its outcome.
#[derive(Debug)]
pub struct Take {
    pub port: PortName,
    /// DEL the row first (the netdev was deleted since the last write).
    pub del: bool,
    /// Then HSET these four values.
    pub row: Option<PortState>,
    /// When the oldest change in this write arrived.
    pub since: Instant,
}

/// How one command of a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Never answered (the connection broke): send it again as it was.
    Lost,
    /// Redis refused it: retry on this port's own backoff.
    Refused,
}

#[derive(Debug)]
struct Port {
    /// The kernel's view: ifindex and the four values; `None` without a
    /// netdev (never seen, or deleted).
    kernel: Option<(u32, PortState)>,
    /// APPL_DB had the port's consumed key when last asked.
    configured: bool,
    /// To be asked again before its row is written (first sight, or its
    /// APPL_DB key changed).
    asking: bool,
    /// PortInitDone still waits for this port's row.
    awaiting_init: bool,
    /// The row must be written (HSET of all four fields).
    dirty: bool,
    /// The row must be deleted first (RTM_DELLINK since the last write).
    del: bool,
    /// In [`Ports::queue`].
    queued: bool,
    in_flight: bool,
    /// The oldest change not written yet, for the latency metric.
    since: Option<Instant>,
    /// Refusals in a row, and when the next try may go.
    failures: u32,
    retry_at: Option<Instant>,
    /// Reported by the dump in progress.
    seen_in_dump: bool,
    /// Its metric series, looked up once so the hot path only does atomic
    /// adds.
    gauges: PortGauges,
}

/// A port's metric labels, flap counter and, while its row exists, the
/// oper and admin status gauges.
#[derive(Debug)]
struct PortGauges {
    labels: PortLabels,
    flaps: Counter,
    state: Option<(Gauge, Gauge)>,
}

impl PortGauges {
    fn new(name: &PortName, metrics: &Metrics) -> Self {
        let labels = PortLabels {
            port: name.to_string(),
        };
        PortGauges {
            flaps: metrics.port_flaps.get_or_create(&labels).clone(),
            labels,
            state: None,
        }
    }

    /// Shows the row as written (`None`: deleted, its series go).
    fn show(&mut self, metrics: &Metrics, row: Option<PortState>) {
        let Some(s) = row else {
            metrics.port_oper_status.remove(&self.labels);
            metrics.port_admin_status.remove(&self.labels);
            self.state = None;
            return;
        };
        let (oper, admin) = self.state.get_or_insert_with(|| {
            (
                metrics.port_oper_status.get_or_create(&self.labels).clone(),
                metrics
                    .port_admin_status
                    .get_or_create(&self.labels)
                    .clone(),
            )
        });
        oper.set(i64::from(s.oper_up));
        admin.set(i64::from(s.admin_up));
    }
}

impl Port {
    fn new(gauges: PortGauges) -> Self {
        Port {
            kernel: None,
            configured: false,
            asking: true,
            awaiting_init: false,
            dirty: false,
            del: false,
            queued: false,
            in_flight: false,
            since: None,
            failures: 0,
            retry_at: None,
            seen_in_dump: false,
            gauges,
        }
    }

    fn has_work(&self) -> bool {
        self.del || self.dirty
    }

    /// Its row can be written now.
    fn writable(&self) -> bool {
        self.dirty && self.configured && !self.asking && self.kernel.is_some()
    }
}

/// The records, the queue of dirty ports, and the ports whose
/// configuration must be asked.
pub struct Ports {
    records: HashMap<PortName, Port>,
    /// Dirty ports not in flight, oldest first, each at most once.
    queue: VecDeque<PortName>,
    /// Dirty ports waiting out a refusal's backoff.
    backing_off: Vec<PortName>,
    /// Ports whose configuration must be asked, each at most once.
    to_ask: Vec<PortName>,
    /// While a warm restart collects (until EOIU), nothing is written.
    held: bool,
    capacity: usize,
    metrics: Metrics,
}

/// How long a port Redis refused waits before its next try: 100 ms
/// doubling to 30 s.
pub fn refusal_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_millis(100u64 << exp).min(Duration::from_secs(30))
}

impl Ports {
    /// Records for the CONFIG_DB ports, each awaited by PortInitDone; their
    /// configuration is asked in the first round.
    pub fn new(
        config_ports: impl IntoIterator<Item = PortName>,
        capacity: usize,
        metrics: Metrics,
    ) -> Self {
        let mut ports = Ports {
            records: HashMap::new(),
            queue: VecDeque::new(),
            backing_off: Vec::new(),
            to_ask: Vec::new(),
            held: false,
            capacity: capacity.max(1),
            metrics,
        };
        for name in config_ports {
            ports.record(name.as_bytes()).1.awaiting_init = true;
        }
        ports
    }

    /// The port's name and record, made (with its configuration to be
    /// asked) on first sight; the name is the record's own, shared.
    fn record(&mut self, name: &[u8]) -> (PortName, &mut Port) {
        let name = match self.records.get_key_value(name) {
            Some((known, _)) => known.clone(),
            None => {
                let new = PortName::new(name);
                self.to_ask.push(new.clone());
                let gauges = PortGauges::new(&new, &self.metrics);
                self.records.insert(new.clone(), Port::new(gauges));
                new
            }
        };
        let port = self.records.get_mut(&name).expect("made above");
        (name, port)
    }

    /// Puts the port in line if it has work and is not in line or in flight.
    fn enqueue(&mut self, name: &PortName) {
        if let Some(p) = self.records.get_mut(name)
            && p.has_work()
            && !p.queued
            && !p.in_flight
        {
            p.queued = true;
            self.queue.push_back(name.clone());
        }
    }

    /// RTM_NEWLINK: records the kernel's view. True when any of the four
    /// values or the ifindex differs from the previous message's: the port
    /// is dirty.
    pub fn on_link(&mut self, name: &[u8], ifindex: u32, state: PortState, now: Instant) -> bool {
        let (name, p) = self.record(name);
        p.seen_in_dump = true;
        let before = p.kernel.replace((ifindex, state));
        if before.is_some_and(|(_, s)| s.oper_up != state.oper_up) {
            p.gauges.flaps.inc();
        }
        let dirty = before != Some((ifindex, state));
        if dirty {
            // Folded with a change not written yet: one write for both.
            let folded = p.dirty || p.in_flight;
            p.dirty = true;
            p.since.get_or_insert(now);
            if folded {
                self.metrics.queue_coalesced.inc();
            }
            self.enqueue(&name);
        }
        dirty
    }

    /// RTM_DELLINK (or a port a resync dump no longer shows): the row goes.
    /// Upstream deletes on RTM_DELLINK whatever APPL_DB says; so do we.
    pub fn on_del(&mut self, name: &[u8], now: Instant) {
        let (name, p) = self.record(name);
        p.kernel = None;
        p.dirty = false;
        p.del = true;
        p.since.get_or_insert(now);
        self.enqueue(&name);
    }

    /// A dump starts: the ports it reports are marked as it goes.
    pub fn dump_started(&mut self) {
        for p in self.records.values_mut() {
            p.seen_in_dump = false;
        }
    }

    /// A dump ended: the ports alive before that it did not report lost
    /// their RTM_DELLINK in an overrun; returns them (the caller deletes).
    pub fn vanished(&self) -> Vec<PortName> {
        self.records
            .iter()
            .filter(|(_, p)| p.kernel.is_some() && !p.seen_in_dump)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// APPL_DB answered whether the port is configured. A port that became
    /// configured is written with what the kernel said last, without
    /// waiting for another link message.
    pub fn set_configured(&mut self, name: &PortName, configured: bool) {
        let Some(p) = self.records.get_mut(name) else {
            return;
        };
        p.asking = false;
        let was = std::mem::replace(&mut p.configured, configured);
        if configured && !was && p.kernel.is_some() {
            p.dirty = true;
            p.since.get_or_insert_with(Instant::now);
        }
        // A row that waited for this answer goes back in line.
        self.enqueue(name);
    }

    /// The port's APPL_DB key changed (a keyspace event): its row waits
    /// until APPL_DB is asked again. A name without a record is asked when
    /// its netdev is first seen.
    pub fn reconsider(&mut self, name: &PortName) {
        let Some(p) = self.records.get_mut(name) else {
            return;
        };
        if !p.asking {
            p.asking = true;
            self.to_ask.push(name.clone());
        }
    }

    /// Ask every port again (the keyspace subscription was re-made and
    /// events may have been missed, or Redis publishes none).
    pub fn reconsider_all(&mut self) {
        let names: Vec<PortName> = self.records.keys().cloned().collect();
        for name in &names {
            self.reconsider(name);
        }
    }

    /// While a warm restart collects (until EOIU), nothing is written.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
    }

    /// Some port's configuration must be asked.
    pub fn has_asks(&self) -> bool {
        !self.to_ask.is_empty()
    }

    /// Ports whose configuration must be asked now.
    pub fn take_asks(&mut self) -> Vec<PortName> {
        std::mem::take(&mut self.to_ask)
    }

    /// The asking failed: ask these again later.
    pub fn ask_again(&mut self, names: Vec<PortName>) {
        self.to_ask.extend(names);
    }

    /// Ports with a netdev that APPL_DB has, and the kernel's values: the
    /// rows a verify compares with what Redis holds.
    pub fn live_configured(&self) -> Vec<(PortName, PortState)> {
        self.records
            .iter()
            .filter(|(_, p)| p.configured && !p.asking)
            .filter_map(|(n, p)| p.kernel.map(|(_, s)| (n.clone(), s)))
            .collect()
    }

    /// A verify found the row as Redis holds it: `matches` when it holds
    /// all four values. A row that differs is written whole. On a warm
    /// restart's reconcile (`reconcile`), a matching row is not written
    /// (the first message of a new process is no change) and counts as
    /// written for PortInitDone.
    pub fn verified(&mut self, name: &PortName, matches: bool, reconcile: bool) {
        let Some(p) = self.records.get_mut(name) else {
            return;
        };
        if !matches {
            p.dirty = true;
            p.since.get_or_insert_with(Instant::now);
            self.enqueue(name);
        } else if reconcile && !p.in_flight && !p.del {
            p.dirty = false;
            p.since = None;
            p.awaiting_init = false;
        }
    }

    /// Up to `max` ports to write now, oldest change first. A port whose
    /// row waits for its configuration leaves the line (it comes back when
    /// APPL_DB has it); one in backoff waits aside.
    pub fn take(&mut self, now: Instant, max: usize) -> Vec<Take> {
        let mut out = Vec::new();
        if self.held {
            return out;
        }
        let due: Vec<PortName> = self
            .backing_off
            .extract_if(.., |n| {
                self.records
                    .get(n)
                    .is_none_or(|p| p.retry_at.is_none_or(|t| t <= now))
            })
            .collect();
        for name in due {
            self.enqueue(&name);
        }
        while out.len() < max {
            let Some(name) = self.queue.pop_front() else {
                break;
            };
            let Some(p) = self.records.get_mut(&name) else {
                continue;
            };
            p.queued = false;
            if p.retry_at.is_some_and(|t| t > now) {
                self.backing_off.push(name);
                continue;
            }
            let row = p.writable().then(|| p.kernel.map(|(_, s)| s)).flatten();
            if !p.del && row.is_none() {
                // Waits for its configuration: no longer a key Redis refuses.
                self.metrics.state_writes_skipped_unconfigured.inc();
                p.failures = 0;
                p.retry_at = None;
                continue;
            }
            let take = Take {
                del: std::mem::take(&mut p.del),
                row,
                since: p.since.take().unwrap_or(now),
                port: name,
            };
            p.dirty &= row.is_none();
            p.in_flight = true;
            out.push(take);
        }
        out
    }

    /// A round settled `take`: `del` and `hset` are how its two commands
    /// ended (`Done` for one not sent). What was not done is marked again;
    /// a refusal waits out the port's own backoff. Returns the port's
    /// refusals in a row.
    pub fn settle(&mut self, take: &Take, del: Outcome, hset: Outcome, now: Instant) -> u32 {
        let Some(p) = self.records.get_mut(&take.port) else {
            return 0;
        };
        p.in_flight = false;
        if take.del && del == Outcome::Done {
            p.gauges.show(&self.metrics, None);
        }
        if let Some(row) = take.row.filter(|_| hset == Outcome::Done) {
            p.gauges.show(&self.metrics, Some(row));
        }
        if take.del && del != Outcome::Done {
            p.del = true;
        }
        if take.row.is_some() && hset != Outcome::Done {
            p.dirty = true;
        }
        if del == Outcome::Refused || hset == Outcome::Refused {
            p.failures += 1;
            p.retry_at = Some(now + refusal_delay(p.failures));
        } else if del != Outcome::Lost && hset != Outcome::Lost {
            p.failures = 0;
            p.retry_at = None;
            if take.row.is_some() {
                p.awaiting_init = false;
            }
        }
        let redo =
            (take.del && del != Outcome::Done) || (take.row.is_some() && hset != Outcome::Done);
        if redo {
            p.since = Some(p.since.map_or(take.since, |s| s.min(take.since)));
        }
        let failures = p.failures;
        if failures > 0 && p.has_work() {
            self.backing_off.push(take.port.clone());
        } else {
            self.enqueue(&take.port);
        }
        failures
    }

    /// Redis refuses this port's row: PortInitDone does not wait for it
    /// (one bad key must not hold the switch back). True when it was awaited.
    pub fn give_up_waiting(&mut self, name: &PortName) -> bool {
        self.records
            .get_mut(name)
            .is_some_and(|p| std::mem::take(&mut p.awaiting_init))
    }

    /// Ports PortInitDone still waits for.
    pub fn awaiting_init(&self) -> usize {
        self.records.values().filter(|p| p.awaiting_init).count()
    }

    /// Ports Redis refused on their last try.
    pub fn failing(&self) -> usize {
        self.records.values().filter(|p| p.failures > 0).count()
    }

    /// Nothing that can be written now is waiting or in flight (ports that
    /// wait for their configuration or a refusal's backoff do not count).
    pub fn settled(&self) -> bool {
        self.records
            .values()
            .all(|p| !p.in_flight && (p.failures > 0 || !(p.del || p.writable())))
    }

    /// When a port in backoff may be tried again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.backing_off
            .iter()
            .filter_map(|n| self.records.get(n)?.retry_at)
            .min()
    }

    /// Ports waiting to be written.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.backing_off.len()
    }

    /// Ports with a netdev, for the EOIU log line.
    pub fn alive(&self) -> usize {
        self.records.values().filter(|p| p.kernel.is_some()).count()
    }

    /// More ports than `--queue-capacity`: the data path stops reading
    /// netlink until rounds shrink it (an overrun then, which a re-dump
    /// repairs). Only a flood of distinct names gets here.
    pub fn is_full(&self) -> bool {
        self.records.len() >= self.capacity
    }

    /// Forgets a port that has nothing left: no netdev, nothing to write,
    /// not awaited, so deleted netdevs with ever new names cannot grow the
    /// records without bound.
    pub fn forget_if_gone(&mut self, name: &PortName) {
        if self.records.get(name).is_some_and(|p| {
            p.kernel.is_none() && !p.has_work() && !p.in_flight && !p.awaiting_init && !p.configured
        }) {
            self.records.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: PortState = PortState {
        admin_up: true,
        oper_up: true,
        mtu: 9100,
    };
    const DOWN: PortState = PortState {
        admin_up: false,
        oper_up: false,
        mtu: 9100,
    };

    fn configured(name: &str) -> (Ports, PortName) {
        let name = PortName::from(name);
        let mut ports = Ports::new([name.clone()], 64, Metrics::new());
        assert_eq!(ports.take_asks(), vec![name.clone()]);
        ports.set_configured(&name, true);
        (ports, name)
    }

    #[test]
    fn a_shut_no_shut_folded_into_one_round_is_still_written_whole() {
        let (mut ports, p) = configured("Ethernet0");
        let now = Instant::now();
        ports.on_link(&p, 5, UP, now);
        let t = ports.take(now, 8);
        ports.settle(&t[0], Outcome::Done, Outcome::Done, now);
        // down and up arrive before the next round: the end state equals
        // what Redis holds, and the port is written all the same.
        assert!(ports.on_link(&p, 5, DOWN, now));
        assert!(ports.on_link(&p, 5, UP, now));
        let t = ports.take(now, 8);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].row, Some(UP));
        // A message that changes nothing writes nothing.
        ports.settle(&t[0], Outcome::Done, Outcome::Done, now);
        assert!(!ports.on_link(&p, 5, UP, now));
        assert!(ports.take(now, 8).is_empty());
    }

    #[test]
    fn a_change_while_in_flight_is_written_again_after_the_ack() {
        let (mut ports, p) = configured("Ethernet0");
        let now = Instant::now();
        ports.on_link(&p, 5, UP, now);
        let t = ports.take(now, 8);
        ports.on_link(&p, 5, DOWN, now);
        assert!(
            ports.take(now, 8).is_empty(),
            "one write per port in flight"
        );
        ports.settle(&t[0], Outcome::Done, Outcome::Done, now);
        assert_eq!(ports.take(now, 8)[0].row, Some(DOWN));
    }

    #[test]
    fn an_accepted_del_is_not_sent_again_when_its_hset_was_refused() {
        let (mut ports, p) = configured("Ethernet0");
        let now = Instant::now();
        ports.on_link(&p, 5, UP, now);
        let t = ports.take(now, 8);
        ports.settle(&t[0], Outcome::Done, Outcome::Done, now);
        ports.on_del(&p, now);
        ports.on_link(&p, 6, UP, now);
        let t = ports.take(now, 8);
        assert!(t[0].del && t[0].row.is_some());
        assert_eq!(ports.settle(&t[0], Outcome::Done, Outcome::Refused, now), 1);
        assert!(ports.take(now, 8).is_empty(), "waits out its backoff");
        let later = now + refusal_delay(1);
        let t = ports.take(later, 8);
        assert!(!t[0].del, "the DEL landed; only the row is written again");
        assert_eq!(t[0].row, Some(UP));
        ports.settle(&t[0], Outcome::Done, Outcome::Done, later);
        assert_eq!(ports.failing(), 0);
    }

    #[test]
    fn a_refused_port_that_now_waits_for_its_configuration_is_not_failing() {
        let (mut ports, p) = configured("Ethernet0");
        let now = Instant::now();
        ports.on_link(&p, 5, UP, now);
        let t = ports.take(now, 8);
        ports.settle(&t[0], Outcome::Done, Outcome::Refused, now);
        assert_eq!(ports.failing(), 1);
        ports.reconsider(&p);
        ports.take_asks();
        ports.set_configured(&p, false);
        assert!(ports.take(now + Duration::from_secs(1), 8).is_empty());
        assert_eq!(ports.failing(), 0, "waiting for APPL_DB is not a refusal");
    }

    #[test]
    fn a_port_apl_db_lacks_is_not_written_and_is_written_when_it_comes_back() {
        let (mut ports, p) = configured("Ethernet0");
        let now = Instant::now();
        ports.reconsider(&p);
        assert_eq!(ports.take_asks(), vec![p.clone()]);
        ports.set_configured(&p, false);
        ports.on_link(&p, 5, UP, now);
        assert!(ports.take(now, 8).is_empty());
        assert_eq!(ports.awaiting_init(), 1);
        ports.set_configured(&p, true);
        let t = ports.take(now, 8);
        assert_eq!(t[0].row, Some(UP), "written with no further link message");
        ports.settle(&t[0], Outcome::Done, Outcome::Done, now);
        assert_eq!(ports.awaiting_init(), 0);
    }

    #[test]
    fn a_lost_round_is_sent_again_and_keeps_its_oldest_time() {
        let (mut ports, p) = configured("Ethernet0");
        let t0 = Instant::now();
        ports.on_link(&p, 5, UP, t0);
        let t = ports.take(t0, 8);
        let t1 = t0 + Duration::from_millis(5);
        ports.on_link(&p, 5, DOWN, t1);
        ports.settle(&t[0], Outcome::Lost, Outcome::Lost, t1);
        let t = ports.take(t1, 8);
        assert_eq!((t[0].row, t[0].since), (Some(DOWN), t0));
        ports.settle(&t[0], Outcome::Done, Outcome::Done, t1);
        // Acknowledged: the next change's latency starts at that change.
        let t2 = t1 + Duration::from_millis(5);
        ports.on_link(&p, 5, UP, t2);
        assert_eq!(ports.take(t2, 8)[0].since, t2);
    }

    #[test]
    fn a_warm_reconcile_writes_only_rows_that_differ() {
        let (mut ports, p) = configured("Ethernet0");
        let q = PortName::from("Ethernet4");
        ports.set_held(true);
        let now = Instant::now();
        ports.on_link(&p, 5, UP, now);
        ports.on_link(&q, 6, UP, now);
        ports.set_configured(&q, true);
        assert!(ports.take(now, 8).is_empty(), "held until EOIU");
        ports.verified(&p, true, true);
        ports.verified(&q, false, true);
        ports.set_held(false);
        let t = ports.take(now, 8);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].port, q);
        assert_eq!(ports.awaiting_init(), 0, "a matching row counts as written");
    }
}
