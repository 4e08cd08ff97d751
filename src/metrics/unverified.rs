//! The budget of connections that have not proven who they are yet (still
//! in their TLS handshake), apart from the capacity verified clients use.
//!
//! Two bounds, and in both the newcomer is never the one turned away:
//!
//! - Per source address, at most `per_source` connections are *protected*.
//!   A newcomer is always protected; when its address is at the bound, the
//!   oldest protected connection of that address loses its protection (it
//!   goes on with its handshake, it is not closed).
//! - In total, at most `total` connections are in their handshake. When the
//!   pool is full, the oldest *unprotected* connection is closed (the
//!   oldest of all only when every one is protected).
//!
//! A real client finishes its handshake in milliseconds, so the ones left
//! unprotected and closed are the old, idle, stalled or slow ones. Losing
//! protection closes nothing, so an attacker holding many connections from
//! the scraper's own address (a NAT, a proxy, the scraper's host) sees no
//! closures to react to, and a newcomer from that address still gets a
//! protected place. Nothing here is a penalty keyed on an address.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

struct Entry {
    source: IpAddr,
    protected: bool,
    /// Held, never sent on: dropping it (with the entry) resolves the
    /// connection's `Ticket::evicted`, which closes it.
    _evict: oneshot::Sender<()>,
}

#[derive(Default)]
struct Pending {
    /// By admission order, oldest first.
    entries: BTreeMap<u64, Entry>,
    protected_per_source: HashMap<IpAddr, usize>,
    next: u64,
}

impl Pending {
    fn unprotect(&mut self, seq: u64) {
        let Some(entry) = self.entries.get_mut(&seq).filter(|e| e.protected) else {
            return;
        };
        entry.protected = false;
        let source = entry.source;
        if let Some(n) = self.protected_per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.protected_per_source.remove(&source);
            }
        }
    }

    fn remove(&mut self, seq: u64) -> bool {
        self.unprotect(seq);
        self.entries.remove(&seq).is_some()
    }

    fn oldest(&self, pick: impl Fn(&Entry) -> bool) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| pick(e))
            .map(|(seq, _)| *seq)
    }
}

/// The pool of connections in their handshake.
pub struct UnverifiedPool {
    total: usize,
    per_source: usize,
    pending: Arc<Mutex<Pending>>,
}

/// One connection's place in the pool; dropping it (handshake over, either
/// way) gives the place back.
pub struct Ticket {
    seq: u64,
    pending: Arc<Mutex<Pending>>,
    /// Resolves when the connection is to be closed to make room.
    pub evicted: oneshot::Receiver<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(self.seq);
    }
}

impl UnverifiedPool {
    pub fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: total.max(1),
            per_source: per_source.max(1),
            pending: Arc::default(),
        }
    }

    /// Admits a new connection from `source`; true in the second field when
    /// an older connection was closed to make room.
    pub fn admit(&self, source: IpAddr) -> (Ticket, bool) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let protected = p.protected_per_source.get(&source).copied().unwrap_or(0);
        if protected >= self.per_source
            && let Some(seq) = p.oldest(|e| e.protected && e.source == source)
        {
            p.unprotect(seq);
        }
        let mut closed = false;
        if p.entries.len() >= self.total
            && let Some(seq) = p.oldest(|e| !e.protected).or_else(|| p.oldest(|_| true))
        {
            closed = p.remove(seq);
        }
        let seq = p.next;
        p.next += 1;
        let (evict, evicted) = oneshot::channel();
        p.entries.insert(
            seq,
            Entry {
                source,
                protected: true,
                _evict: evict,
            },
        );
        *p.protected_per_source.entry(source).or_insert(0) += 1;
        drop(p);
        let ticket = Ticket {
            seq,
            pending: self.pending.clone(),
            evicted,
        };
        (ticket, closed)
    }

    /// Connections in their handshake now, and how many are protected.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let protected = p.entries.values().filter(|e| e.protected).count();
        (p.entries.len(), protected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot::error::TryRecvError;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn is_open(t: &mut Ticket) -> bool {
        matches!(t.evicted.try_recv(), Err(TryRecvError::Empty))
    }

    #[test]
    fn a_busy_source_loses_protection_of_its_oldest_but_nothing_closes() {
        let pool = UnverifiedPool::new(100, 2);
        let mut held: Vec<Ticket> = (0..5).map(|_| pool.admit(ip("::1")).0).collect();
        assert_eq!(pool.counts(), (5, 2));
        assert!(held.iter_mut().all(is_open));
    }

    #[test]
    fn a_full_pool_closes_the_oldest_unprotected_connection_first() {
        let pool = UnverifiedPool::new(3, 1);
        let (mut a1, _) = pool.admit(ip("::a"));
        let (mut a2, _) = pool.admit(ip("::a")); // a1 loses protection
        let (mut b1, _) = pool.admit(ip("::b"));
        let (mut c1, closed) = pool.admit(ip("::c"));
        assert!(closed);
        assert!(!is_open(&mut a1), "the oldest unprotected one goes");
        assert!(is_open(&mut a2) && is_open(&mut b1) && is_open(&mut c1));
        // Every one protected now: the oldest of all goes.
        let (_d1, closed) = pool.admit(ip("::d"));
        assert!(closed);
        assert!(!is_open(&mut a2));
        assert!(is_open(&mut b1) && is_open(&mut c1));
    }

    #[test]
    fn a_finished_handshake_frees_its_place() {
        let pool = UnverifiedPool::new(1, 1);
        let (done, _) = pool.admit(ip("::1"));
        drop(done);
        let (_next, closed) = pool.admit(ip("::1"));
        assert!(!closed);
        assert_eq!(pool.counts(), (1, 1));
    }
}
