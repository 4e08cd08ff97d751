//! The coalescing queue between the link rules and Redis.
//!
//! It holds at most one pending write per Redis key: a port that flaps a
//! thousand times while Redis is slow or away occupies one slot holding its
//! latest state. Memory is bounded by the number of distinct keys, never by
//! the number of events, and nothing is lost: an entry leaves the queue only
//! once Redis acknowledged it.
//!
//! Every key keeps its own schedule: a key Redis refuses waits out its own
//! capped backoff while every other key is written at once, and a port that
//! is not configured yet waits for its configuration without holding up the
//! others. The queue is owned by the data-path thread; no lock is needed.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::port_name::PortName;
use crate::sync::PortState;

/// Which Redis hash a pending write is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// STATE_DB `PORT_TABLE|<port>`: written only while the port is configured.
    StatePort(PortName),
    /// APPL_DB `PORT_TABLE:<key>` through the producer-state-table protocol
    /// (ports, `PortConfigDone`, `PortInitDone`).
    ApplPort(Vec<u8>),
    /// A plain STATE_DB hash (`WARM_RESTART_TABLE|portsyncd`).
    StateHash(String),
}

/// What to do to one key. Folding a newer op into an older one gives the
/// same end state as applying both in order, which makes coalescing lossless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// STATE_DB port row: delete it first (RTM_DELLINK), then set it from
    /// `set` when present; `full` writes every field even if Redis holds
    /// the same values (a recreated netdev).
    Port {
        delete_first: bool,
        set: Option<PortState>,
        full: bool,
    },
    /// Field/value pairs to set (producer set, or a plain hash).
    Fields(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Op {
    pub fn port_set(state: PortState, full: bool) -> Self {
        Op::Port {
            delete_first: false,
            set: Some(state),
            full,
        }
    }

    pub fn port_delete() -> Self {
        Op::Port {
            delete_first: true,
            set: None,
            full: false,
        }
    }

    fn absorb(&mut self, newer: Op) {
        match (self, newer) {
            (
                Op::Port {
                    delete_first,
                    set,
                    full,
                },
                Op::Port {
                    delete_first: newer_delete,
                    set: newer_set,
                    full: newer_full,
                },
            ) => {
                if newer_delete {
                    *delete_first = true;
                    *full = newer_full;
                } else {
                    *full |= newer_full;
                }
                *set = newer_set;
            }
            (Op::Fields(fields), Op::Fields(newer)) => {
                for (field, value) in newer {
                    match fields.iter_mut().find(|(f, _)| *f == field) {
                        Some(slot) => slot.1 = value,
                        None => fields.push((field, value)),
                    }
                }
            }
            (this, newer) => *this = newer,
        }
    }
}

/// One pending key.
#[derive(Debug)]
struct Entry {
    op: Op,
    /// When the oldest event folded into this entry arrived; the latency
    /// metric measures from here to Redis' acknowledgement.
    since: Instant,
    /// Sequence number of the oldest write folded in that Redis has not
    /// acknowledged: both the entry's place in line and what
    /// [`CoalescingQueue::acknowledged_through`] compares.
    oldest: u64,
    /// Sequence number of the latest write folded in.
    seq: u64,
    in_flight: bool,
    /// The first write folded in while a copy was in flight: once that copy
    /// is acknowledged, the oldest write still unacknowledged.
    first_since_take: Option<u64>,
    /// A delete / a full write folded in while a copy was in flight: once
    /// that copy is acknowledged, only these still have to be repeated (a
    /// second DEL would wipe fields other daemons wrote since).
    delete_since_take: bool,
    full_since_take: bool,
    /// Not to be sent before this instant (refused by Redis, or waiting
    /// for its port to be configured).
    not_before: Option<Instant>,
    /// Refusals in a row; 0 for a healthy key.
    failures: u32,
}

impl Entry {
    /// What was sent is done: of its delete and full flags, keep only those
    /// that newer writes brought.
    fn keep_only_newer_flags(&mut self) {
        if let Op::Port {
            delete_first, full, ..
        } = &mut self.op
        {
            *delete_first = self.delete_since_take;
            *full = self.full_since_take;
        }
    }
}

/// A copy of one entry handed to the writer.
#[derive(Debug, Clone)]
pub struct Taken {
    pub key: Key,
    pub op: Op,
    pub since: Instant,
    /// Give this back with the outcome.
    pub seq: u64,
}

/// How long a key that Redis refused waits before its next try: 100 ms
/// doubling to 30 s.
pub fn refusal_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(9);
    Duration::from_millis(100u64 << exp).min(Duration::from_secs(30))
}

/// A bounded, coalescing, lossless queue with a schedule per key.
pub struct CoalescingQueue {
    entries: HashMap<Key, Entry>,
    /// Keys by their oldest unacknowledged write: a key keeps its place
    /// when it is updated, and moves back only once what it held landed.
    order: BTreeMap<u64, Key>,
    capacity: usize,
    next_seq: u64,
    /// Events folded into an existing entry, for the metrics.
    pub coalesced_total: u64,
}

impl CoalescingQueue {
    pub fn new(capacity: usize) -> Self {
        CoalescingQueue {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            capacity: capacity.max(1),
            next_seq: 0,
            coalesced_total: 0,
        }
    }

    /// Adds a write, folding it into a pending one for the same key.
    /// Returns `true` when it was folded. The caller stops reading input
    /// while [`is_full`](Self::is_full) (the netlink socket then overruns,
    /// which a re-dump repairs): the queue itself never grows past capacity
    /// by more than the keys of one receive's datagrams.
    pub fn push(&mut self, key: Key, op: Op, now: Instant) -> bool {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(entry) = self.entries.get_mut(&key) {
            if let Op::Port {
                delete_first, full, ..
            } = &op
            {
                entry.delete_since_take |= *delete_first;
                entry.full_since_take |= *full;
            }
            if entry.in_flight {
                entry.first_since_take.get_or_insert(seq);
            }
            entry.op.absorb(op);
            entry.seq = seq;
            // A newer write deserves a prompt try, also for a parked key.
            if entry.failures == 0 {
                entry.not_before = None;
            }
            self.coalesced_total += 1;
            return true;
        }
        self.order.insert(seq, key.clone());
        self.entries.insert(
            key,
            Entry {
                op,
                since: now,
                oldest: seq,
                seq,
                in_flight: false,
                first_since_take: None,
                delete_since_take: false,
                full_since_take: false,
                not_before: None,
                failures: 0,
            },
        );
        false
    }

    /// Copies up to `max` of the oldest entries that are due and not in
    /// flight. They stay queued until settled.
    pub fn take_due(&mut self, now: Instant, max: usize, out: &mut Vec<Taken>) {
        self.take_due_where(now, max, out, |_, _| true);
    }

    /// [`take_due`](Self::take_due), only for entries `can_send` accepts
    /// (a database that is down leaves its keys for a later round).
    pub fn take_due_where(
        &mut self,
        now: Instant,
        max: usize,
        out: &mut Vec<Taken>,
        can_send: impl Fn(&Key, &Op) -> bool,
    ) {
        for key in self.order.values() {
            if out.len() >= max {
                break;
            }
            let Some(entry) = self.entries.get_mut(key) else {
                continue;
            };
            if entry.in_flight
                || entry.not_before.is_some_and(|t| t > now)
                || !can_send(key, &entry.op)
            {
                continue;
            }
            entry.in_flight = true;
            entry.first_since_take = None;
            entry.delete_since_take = false;
            entry.full_since_take = false;
            out.push(Taken {
                key: key.clone(),
                op: entry.op.clone(),
                since: entry.since,
                seq: entry.seq,
            });
        }
    }

    /// Redis acknowledged what was taken. The entry leaves unless a newer
    /// write was folded in meanwhile; that one is sent next.
    pub fn acked(&mut self, taken: &Taken) {
        let Some(entry) = self.entries.get_mut(&taken.key) else {
            return;
        };
        self.order.remove(&entry.oldest);
        if entry.seq == taken.seq {
            self.entries.remove(&taken.key);
            return;
        }
        entry.in_flight = false;
        entry.failures = 0;
        entry.not_before = None;
        entry.oldest = entry.first_since_take.unwrap_or(entry.seq);
        self.order.insert(entry.oldest, taken.key.clone());
        entry.keep_only_newer_flags();
    }

    /// Part of what was taken was done; `rest` is what remains (a delete
    /// went through, the set waits for the port's configuration).
    pub fn partly_done(&mut self, taken: &Taken, rest: Op, wait: Option<Instant>) {
        let Some(entry) = self.entries.get_mut(&taken.key) else {
            return;
        };
        entry.in_flight = false;
        if entry.seq == taken.seq {
            entry.op = rest;
        } else {
            entry.keep_only_newer_flags();
        }
        entry.not_before = wait;
    }

    /// Redis refused the key: it waits out its own backoff. Returns the
    /// number of refusals in a row.
    pub fn refused(&mut self, taken: &Taken, now: Instant) -> u32 {
        let Some(entry) = self.entries.get_mut(&taken.key) else {
            return 0;
        };
        entry.in_flight = false;
        entry.failures = entry.failures.saturating_add(1);
        entry.not_before = Some(now + refusal_delay(entry.failures));
        entry.failures
    }

    /// The round never reached Redis (connection lost): try again as is.
    pub fn returned(&mut self, taken: &Taken) {
        if let Some(entry) = self.entries.get_mut(&taken.key) {
            entry.in_flight = false;
        }
    }

    /// The earliest instant a waiting key becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.in_flight)
            .filter_map(|e| e.not_before)
            .min()
    }

    /// Keys Redis refused on their last try.
    pub fn failing(&self) -> impl Iterator<Item = &Key> {
        self.entries
            .iter()
            .filter(|(_, e)| e.failures > 0)
            .map(|(k, _)| k)
    }

    /// True when nothing is left that could be written now or soon: only
    /// keys that wait for configuration or that Redis keeps refusing.
    pub fn settled(&self) -> bool {
        self.entries
            .values()
            .all(|e| !e.in_flight && e.not_before.is_some())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    pub fn contains(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// A mark for every write pushed so far; pass it to
    /// [`acknowledged_through`](Self::acknowledged_through).
    pub fn mark(&self) -> u64 {
        self.next_seq
    }

    /// True once Redis has acknowledged every write pushed before `mark`,
    /// leaving out keys Redis keeps refusing (one bad key must not hold the
    /// warm reconcile hostage) and keys waiting for their configuration.
    pub fn acknowledged_through(&self, mark: u64) -> bool {
        self.entries
            .values()
            .all(|e| e.oldest >= mark || e.failures > 0 || e.not_before.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str) -> Key {
        Key::StatePort(PortName::from(name))
    }

    fn state(admin_up: bool) -> PortState {
        PortState {
            admin_up,
            oper_up: false,
            mtu: 9100,
        }
    }

    fn take(q: &mut CoalescingQueue, now: Instant) -> Vec<Taken> {
        let mut out = Vec::new();
        q.take_due(now, 100, &mut out);
        out
    }

    #[test]
    fn a_flapping_port_holds_one_slot_with_its_latest_state() {
        let mut q = CoalescingQueue::new(8);
        let now = Instant::now();
        for i in 0..1000 {
            q.push(
                port("Ethernet0"),
                Op::port_set(state(i % 2 == 0), false),
                now,
            );
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.coalesced_total, 999);
        assert_eq!(take(&mut q, now)[0].op, Op::port_set(state(false), false));
    }

    #[test]
    fn delete_then_set_keeps_the_delete_and_the_latest_set() {
        let mut op = Op::port_set(state(true), false);
        op.absorb(Op::port_delete());
        op.absorb(Op::port_set(state(false), false));
        assert_eq!(
            op,
            Op::Port {
                delete_first: true,
                set: Some(state(false)),
                full: false
            }
        );
        op.absorb(Op::port_set(state(true), true));
        assert!(matches!(op, Op::Port { full: true, .. }));
    }

    #[test]
    fn fields_merge_latest_value_wins() {
        let f = |pairs: &[(&str, &str)]| {
            Op::Fields(
                pairs
                    .iter()
                    .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec()))
                    .collect(),
            )
        };
        let mut op = f(&[("a", "1"), ("b", "2")]);
        op.absorb(f(&[("b", "3"), ("c", "4")]));
        assert_eq!(op, f(&[("a", "1"), ("b", "3"), ("c", "4")]));
    }

    #[test]
    fn entries_stay_until_acked_and_newer_writes_survive_an_ack() {
        let mut q = CoalescingQueue::new(8);
        let now = Instant::now();
        q.push(port("Ethernet0"), Op::port_set(state(true), false), now);
        q.push(port("Ethernet4"), Op::port_set(state(true), false), now);
        let batch = take(&mut q, now);
        assert_eq!(batch.len(), 2);
        assert!(take(&mut q, now).is_empty(), "in flight, not taken twice");
        q.push(port("Ethernet0"), Op::port_set(state(false), false), now);
        for t in &batch {
            q.acked(t);
        }
        let rest = take(&mut q, now);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].key, port("Ethernet0"));
        assert_eq!(rest[0].op, Op::port_set(state(false), false));
        q.acked(&rest[0]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_refused_key_waits_on_its_own_while_the_others_go_on() {
        let mut q = CoalescingQueue::new(8);
        let now = Instant::now();
        for name in ["Ethernet0", "Ethernet4", "Ethernet8"] {
            q.push(port(name), Op::port_set(state(true), false), now);
        }
        let batch = take(&mut q, now);
        q.acked(&batch[0]);
        assert_eq!(q.refused(&batch[1], now), 1);
        q.acked(&batch[2]);
        // Newer writes for other keys go out at once; the refused one waits.
        q.push(port("Ethernet12"), Op::port_set(state(true), false), now);
        let next = take(&mut q, now);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].key, port("Ethernet12"));
        q.acked(&next[0]);
        assert_eq!(q.failing().count(), 1);
        assert_eq!(q.next_due(), Some(now + refusal_delay(1)));
        let later = take(&mut q, now + refusal_delay(1));
        assert_eq!(later[0].key, port("Ethernet4"));
        assert_eq!(q.refused(&later[0], now), 2);
        assert_eq!(refusal_delay(2), Duration::from_millis(200));
        assert_eq!(refusal_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn acknowledged_through_ignores_later_writes_and_refused_keys() {
        let mut q = CoalescingQueue::new(8);
        let now = Instant::now();
        q.push(port("Ethernet0"), Op::port_set(state(true), false), now);
        q.push(port("Ethernet4"), Op::port_set(state(true), false), now);
        let mark = q.mark();
        assert!(!q.acknowledged_through(mark));
        let batch = take(&mut q, now);
        // Ethernet0 changes after the mark while the batch is in flight,
        // and a new port arrives: neither holds the mark back.
        q.push(port("Ethernet0"), Op::port_set(state(false), false), now);
        q.push(port("Ethernet8"), Op::port_set(state(true), false), now);
        q.acked(&batch[0]);
        assert!(!q.acknowledged_through(mark));
        q.refused(&batch[1], now);
        assert!(
            q.acknowledged_through(mark),
            "a refused key is not waited for"
        );
        assert!(!q.acknowledged_through(q.mark()));
    }

    #[test]
    fn a_parked_key_is_due_again_at_its_time_or_on_a_newer_write() {
        let mut q = CoalescingQueue::new(8);
        let now = Instant::now();
        q.push(port("Ethernet0"), Op::port_set(state(true), false), now);
        let t = take(&mut q, now);
        q.partly_done(&t[0], t[0].op.clone(), Some(now + Duration::from_secs(1)));
        assert!(take(&mut q, now).is_empty());
        assert!(q.settled(), "a parked key does not hold up a flush");
        q.push(port("Ethernet4"), Op::port_delete(), now);
        assert!(!q.settled());
        let t4 = take(&mut q, now);
        q.refused(&t4[0], now);
        assert!(q.settled(), "nor does a key Redis refuses");
        assert_eq!(take(&mut q, now + Duration::from_secs(1)).len(), 2);
        q.returned(&t[0]);
        q.push(port("Ethernet0"), Op::port_set(state(false), false), now);
        assert_eq!(take(&mut q, now).len(), 1, "a newer write is due at once");
    }

    #[test]
    fn a_delete_acknowledged_is_not_repeated_for_a_set_folded_in_meanwhile() {
        let mut q = CoalescingQueue::new(8);
        let now = Instant::now();
        q.push(port("Ethernet0"), Op::port_delete(), now);
        let t = take(&mut q, now);
        q.push(port("Ethernet0"), Op::port_set(state(true), true), now);
        q.acked(&t[0]);
        let next = take(&mut q, now);
        assert_eq!(
            next[0].op,
            Op::Port {
                delete_first: false,
                set: Some(state(true)),
                full: true
            }
        );
        // A refused copy keeps everything it carried.
        q.push(port("Ethernet0"), Op::port_delete(), now);
        q.refused(&next[0], now);
        assert!(matches!(
            take(&mut q, now + refusal_delay(1))[0].op,
            Op::Port {
                delete_first: true,
                ..
            }
        ));
    }

    #[test]
    fn batches_come_out_in_arrival_order() {
        let mut q = CoalescingQueue::new(8);
        let now = Instant::now();
        for name in ["a", "b", "c"] {
            q.push(Key::ApplPort(name.into()), Op::Fields(vec![]), now);
        }
        q.push(Key::ApplPort("a".into()), Op::Fields(vec![]), now);
        let taken = take(&mut q, now);
        let order: Vec<_> = taken.iter().map(|t| t.key.clone()).collect();
        assert_eq!(order, ["a", "b", "c"].map(|n| Key::ApplPort(n.into())));
        // While the copies are in flight "a" and "c" change and "d" arrives:
        // once the copies landed, each key waits in line by its oldest write
        // not yet landed, so "a", "c", "d".
        q.push(Key::ApplPort("a".into()), Op::Fields(vec![]), now);
        q.push(Key::ApplPort("c".into()), Op::Fields(vec![]), now);
        q.push(Key::ApplPort("d".into()), Op::Fields(vec![]), now);
        q.acked(&taken[2]);
        q.acked(&taken[0]);
        q.acked(&taken[1]);
        let order: Vec<_> = take(&mut q, now).into_iter().map(|t| t.key).collect();
        assert_eq!(order, ["a", "c", "d"].map(|n| Key::ApplPort(n.into())));
    }

    #[test]
    fn capacity_counts_distinct_keys() {
        let mut q = CoalescingQueue::new(2);
        let now = Instant::now();
        q.push(port("Ethernet0"), Op::port_delete(), now);
        q.push(port("Ethernet0"), Op::port_delete(), now);
        assert!(!q.is_full());
        q.push(port("Ethernet4"), Op::port_delete(), now);
        assert!(q.is_full());
    }
}
