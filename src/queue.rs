//! The coalescing queue between the netlink side and the Redis writer.
//!
//! It holds at most one pending write per Redis key: a port that flaps a
//! thousand times while Redis is slow or away occupies one slot holding its
//! latest state. Memory is bounded by the number of distinct keys, never by
//! the number of events, and nothing is lost: an entry leaves the queue only
//! once the writer reports that Redis acknowledged it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Which Redis hash a pending write is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// STATE_DB `PORT_TABLE|<port>`: written only while the port is configured.
    StatePort(String),
    /// APPL_DB `PORT_TABLE:<key>` through the producer-state-table protocol
    /// (ports, `PortConfigDone`, `PortInitDone`).
    ApplPort(String),
}

/// What to do to one key. Merging two of these gives the same end state as
/// applying both in order, which is what makes coalescing lossless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Remove the hash before writing `fields` (RTM_DELLINK, producer del).
    pub delete_first: bool,
    /// Field/value pairs to set; empty with `delete_first` is a plain delete.
    pub fields: Vec<(String, String)>,
}

impl Write {
    pub fn set(fields: Vec<(String, String)>) -> Self {
        Write {
            delete_first: false,
            fields,
        }
    }

    pub fn delete() -> Self {
        Write {
            delete_first: true,
            fields: Vec::new(),
        }
    }

    /// Folds a newer write for the same key into this one.
    fn absorb(&mut self, newer: Write) {
        if newer.delete_first {
            *self = newer;
            return;
        }
        for (field, value) in newer.fields {
            match self.fields.iter_mut().find(|(f, _)| *f == field) {
                Some(slot) => slot.1 = value,
                None => self.fields.push((field, value)),
            }
        }
    }
}

/// One entry handed to the writer.
#[derive(Debug, Clone)]
pub struct Pending {
    pub target: Target,
    pub write: Write,
    /// When the oldest event folded into this entry was received; the
    /// latency metric measures from here to Redis' acknowledgement.
    pub since: Instant,
    /// Changes each time the entry absorbs a newer write, so a commit can
    /// tell whether what Redis acknowledged is still the latest.
    generation: u64,
    /// The oldest write folded into this entry that Redis has not
    /// acknowledged yet; see [`CoalescingQueue::acknowledged_through`].
    oldest_unacked: u64,
    /// The first write folded in since the writer last copied this entry:
    /// if that copy is acknowledged, this is the oldest write still pending.
    first_since_peek: Option<u64>,
}

struct Inner {
    entries: HashMap<Target, Pending>,
    /// Arrival order of keys; a key keeps its place when it is updated.
    order: VecDeque<Target>,
    /// Events folded into an existing entry, for the metrics.
    coalesced_total: u64,
    next_generation: u64,
    closed: bool,
}

/// A bounded, coalescing, lossless queue. Producers block (never drop) when
/// `capacity` distinct keys are pending; on the netlink side that turns into
/// a socket overrun, which the reader repairs with a fresh dump.
pub struct CoalescingQueue {
    inner: Mutex<Inner>,
    capacity: usize,
    /// Wakes the writer when work arrives.
    work: Notify,
    /// Wakes blocked producers when the writer frees space.
    space: Condvar,
}

impl CoalescingQueue {
    pub fn new(capacity: usize) -> Self {
        CoalescingQueue {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                coalesced_total: 0,
                next_generation: 0,
                closed: false,
            }),
            capacity: capacity.max(1),
            work: Notify::new(),
            space: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent
        // in a way that matters more than losing the daemon, so recover.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a write, folding it into a pending one for the same key.
    /// Blocks while the queue is full of other keys. Returns `true` when the
    /// write was folded into an existing entry.
    pub fn push(&self, target: Target, write: Write, since: Instant) -> bool {
        let mut inner = self.lock();
        let generation = inner.next_generation;
        inner.next_generation += 1;
        if let Some(entry) = inner.entries.get_mut(&target) {
            entry.write.absorb(write);
            entry.generation = generation;
            entry.first_since_peek.get_or_insert(generation);
            inner.coalesced_total += 1;
            return true;
        }
        while inner.entries.len() >= self.capacity && !inner.closed {
            inner = self.space.wait(inner).unwrap_or_else(|p| p.into_inner());
        }
        inner.order.push_back(target.clone());
        inner.entries.insert(
            target.clone(),
            Pending {
                target,
                write,
                since,
                generation,
                oldest_unacked: generation,
                first_since_peek: None,
            },
        );
        drop(inner);
        self.work.notify_one();
        false
    }

    /// Copies up to `max` of the oldest entries for the writer. They stay
    /// queued until [`commit`](Self::commit): a failed write loses nothing.
    pub fn peek_batch(&self, max: usize) -> Vec<Pending> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner
            .order
            .iter()
            .take(max)
            .filter_map(|t| {
                let entry = inner.entries.get_mut(t)?;
                entry.first_since_peek = None;
                Some(entry.clone())
            })
            .collect()
    }

    /// Settles a batch taken with [`peek_batch`](Self::peek_batch):
    /// `acked[i]` says whether Redis acknowledged `batch[i]`. Acknowledged
    /// entries leave; one that absorbed a newer write while in flight, and
    /// one Redis did not take, keep their place at the front and are
    /// written again.
    pub fn commit(&self, batch: &[Pending], acked: &[bool]) {
        let mut inner = self.lock();
        let mut kept = Vec::new();
        for (done, &acked) in batch.iter().zip(acked) {
            let current = inner.entries.get(&done.target).map(|e| e.generation);
            if acked && current == Some(done.generation) {
                inner.entries.remove(&done.target);
                continue;
            }
            let Some(entry) = inner.entries.get_mut(&done.target) else {
                continue;
            };
            if acked {
                // Everything up to the acknowledged write is in Redis; only
                // what was folded in while the batch was in flight is not.
                entry.oldest_unacked = entry.first_since_peek.unwrap_or(entry.generation);
            }
            kept.push(done.target.clone());
        }
        // The batch was the front of `order`; rebuild that front.
        let n = batch.len().min(inner.order.len());
        inner.order.drain(..n);
        for target in kept.into_iter().rev() {
            inner.order.push_front(target);
        }
        let has_work = !inner.entries.is_empty();
        drop(inner);
        self.space.notify_all();
        if has_work {
            self.work.notify_one();
        }
    }

    /// Waits until there is something to write (returns at once if there is).
    pub async fn wait_for_work(&self) {
        loop {
            let notified = self.work.notified();
            if !self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }

    /// A mark for every write pushed so far; pass it to
    /// [`acknowledged_through`](Self::acknowledged_through).
    pub fn mark(&self) -> u64 {
        self.lock().next_generation
    }

    /// True once Redis has acknowledged every write pushed before `mark`
    /// was taken, whatever was pushed since. The warm-restart reconcile uses
    /// it to say `reconciled` only when its writes are really in Redis.
    pub fn acknowledged_through(&self, mark: u64) -> bool {
        self.lock()
            .entries
            .values()
            .all(|e| e.oldest_unacked >= mark)
    }

    /// True while producers would block: `capacity` distinct keys pending.
    pub fn is_full(&self) -> bool {
        self.lock().entries.len() >= self.capacity
    }

    pub fn coalesced_total(&self) -> u64 {
        self.lock().coalesced_total
    }

    /// Age of the oldest pending entry: a writer that makes no progress
    /// shows here (health, watchdog).
    pub fn oldest_age(&self) -> Option<Duration> {
        let inner = self.lock();
        inner
            .order
            .front()
            .and_then(|t| inner.entries.get(t))
            .map(|e| e.since.elapsed())
    }

    /// Releases producers blocked on a full queue at shutdown.
    pub fn close(&self) {
        self.lock().closed = true;
        self.space.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str) -> Target {
        Target::StatePort(name.to_string())
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_flapping_port_holds_one_slot_with_its_latest_state() {
        let q = CoalescingQueue::new(8);
        let now = Instant::now();
        for i in 0..1000 {
            let state = if i % 2 == 0 { "up" } else { "down" };
            q.push(
                port("Ethernet0"),
                Write::set(fields(&[("admin_status", state)])),
                now,
            );
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.coalesced_total(), 999);
        let batch = q.peek_batch(10);
        assert_eq!(batch[0].write.fields, fields(&[("admin_status", "down")]));
    }

    #[test]
    fn delete_then_set_keeps_the_delete() {
        let mut w = Write::set(fields(&[("mtu", "1500"), ("x", "1")]));
        w.absorb(Write::delete());
        w.absorb(Write::set(fields(&[("mtu", "9100")])));
        assert!(w.delete_first);
        assert_eq!(w.fields, fields(&[("mtu", "9100")]));
    }

    #[test]
    fn set_then_set_merges_fields() {
        let mut w = Write::set(fields(&[("a", "1"), ("b", "2")]));
        w.absorb(Write::set(fields(&[("b", "3"), ("c", "4")])));
        assert_eq!(w.fields, fields(&[("a", "1"), ("b", "3"), ("c", "4")]));
    }

    #[test]
    fn entries_stay_until_committed_and_newer_writes_survive_a_commit() {
        let q = CoalescingQueue::new(8);
        let now = Instant::now();
        q.push(
            port("Ethernet0"),
            Write::set(fields(&[("mtu", "1500")])),
            now,
        );
        q.push(
            port("Ethernet4"),
            Write::set(fields(&[("mtu", "1500")])),
            now,
        );
        let batch = q.peek_batch(10);
        assert_eq!(batch.len(), 2);
        // A failed write: nothing committed, the same batch comes back.
        assert_eq!(q.peek_batch(10).len(), 2);
        // Ethernet0 changes while the batch is in flight.
        q.push(
            port("Ethernet0"),
            Write::set(fields(&[("mtu", "9100")])),
            now,
        );
        q.commit(&batch, &vec![true; batch.len()]);
        let rest = q.peek_batch(10);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].target, port("Ethernet0"));
        assert_eq!(rest[0].write.fields, fields(&[("mtu", "9100")]));
        q.commit(&rest, &vec![true; rest.len()]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_key_redis_refused_keeps_its_place_and_is_written_again() {
        let q = CoalescingQueue::new(8);
        let now = Instant::now();
        for name in ["Ethernet0", "Ethernet4", "Ethernet8"] {
            q.push(port(name), Write::set(fields(&[("mtu", "1500")])), now);
        }
        let batch = q.peek_batch(10);
        // Redis took the first and the last, refused the middle one.
        q.commit(&batch, &[true, false, true]);
        let rest = q.peek_batch(10);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].target, port("Ethernet4"));
        q.commit(&rest, &[true]);
        assert!(q.is_empty());
        assert!(q.peek_batch(10).is_empty());
    }

    #[test]
    fn acknowledged_through_ignores_writes_pushed_after_the_mark() {
        let q = CoalescingQueue::new(8);
        let now = Instant::now();
        let set = |mtu: &str| Write::set(fields(&[("mtu", mtu)]));
        q.push(port("Ethernet0"), set("1500"), now);
        q.push(port("Ethernet4"), set("1500"), now);
        let mark = q.mark();
        assert!(!q.acknowledged_through(mark));
        let batch = q.peek_batch(10);
        // Ethernet0 changes after the mark while the batch is in flight,
        // and a new port arrives: neither holds the mark back.
        q.push(port("Ethernet0"), set("9100"), now);
        q.push(port("Ethernet8"), set("1500"), now);
        assert!(!q.acknowledged_through(mark));
        q.commit(&batch, &vec![true; batch.len()]);
        assert_eq!(q.len(), 2);
        assert!(q.acknowledged_through(mark));
        assert!(!q.acknowledged_through(q.mark()));
    }

    #[test]
    fn batches_come_out_in_arrival_order() {
        let q = CoalescingQueue::new(8);
        let now = Instant::now();
        for name in ["a", "b", "c"] {
            q.push(Target::ApplPort(name.into()), Write::set(vec![]), now);
        }
        q.push(Target::ApplPort("a".into()), Write::set(vec![]), now);
        let order: Vec<_> = q.peek_batch(10).into_iter().map(|p| p.target).collect();
        let names = ["a", "b", "c"].map(|n| Target::ApplPort(n.into()));
        assert_eq!(order, names);
    }

    #[test]
    fn a_full_queue_blocks_the_producer_until_the_writer_commits() {
        let q = std::sync::Arc::new(CoalescingQueue::new(1));
        let now = Instant::now();
        q.push(port("Ethernet0"), Write::delete(), now);
        let q2 = q.clone();
        let producer = std::thread::spawn(move || q2.push(port("Ethernet4"), Write::delete(), now));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.len(), 1, "the second key must wait for space");
        let batch = q.peek_batch(1);
        q.commit(&batch, &vec![true; batch.len()]);
        producer.join().unwrap();
        assert_eq!(q.peek_batch(1)[0].target, port("Ethernet4"));
    }
}
