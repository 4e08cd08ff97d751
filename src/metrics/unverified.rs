//! The budget of connections that have not proven who they are yet (still
//! in their TLS handshake), apart from the capacity verified clients use.
//!
//! It is bounded in total and per source address. When a bound is reached,
//! the new connection is never the one turned away: it takes the place of
//! the *oldest* connection still handshaking (the oldest of its own address
//! when that address is at its bound). A real client finishes its handshake
//! in milliseconds, so the oldest pending connections are the idle, stalled
//! or slow ones, and no client is refused for what others at its address
//! (a NAT, a proxy, the scraper's own host) do: nothing here is a penalty
//! keyed on an address.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default)]
struct Pending {
    /// By admission order (oldest first): source and the eviction signal.
    entries: BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    per_source: HashMap<IpAddr, usize>,
    next: u64,
}

impl Pending {
    fn remove(&mut self, seq: u64) -> Option<oneshot::Sender<()>> {
        let (ip, evict) = self.entries.remove(&seq)?;
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
        Some(evict)
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
    /// Resolves when a newer connection took this one's place.
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

    /// Admits a new connection from `ip`; true in the second field when an
    /// older one had to give up its place for it.
    pub fn admit(&self, ip: IpAddr) -> (Ticket, bool) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let victim = if p.per_source.get(&ip).copied().unwrap_or(0) >= self.per_source {
            p.entries
                .iter()
                .find(|(_, (source, _))| *source == ip)
                .map(|(seq, _)| *seq)
        } else if p.entries.len() >= self.total {
            p.entries.keys().next().copied()
        } else {
            None
        };
        // Dropping the sender wakes the victim's `evicted` receiver.
        let evicted = victim.and_then(|seq| p.remove(seq)).is_some();
        let seq = p.next;
        p.next += 1;
        let (tx, rx) = oneshot::channel();
        p.entries.insert(seq, (ip, tx));
        *p.per_source.entry(ip).or_insert(0) += 1;
        drop(p);
        (
            Ticket {
                seq,
                pending: self.pending.clone(),
                evicted: rx,
            },
            evicted,
        )
    }

    /// Connections in their handshake now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_full_source_gives_up_its_oldest_place_not_the_newcomer() {
        let pool = UnverifiedPool::new(100, 2);
        let (mut first, _) = pool.admit(ip("::1"));
        let (mut second, _) = pool.admit(ip("::1"));
        let (other, _) = pool.admit(ip("::2"));
        let (mut third, evicted) = pool.admit(ip("::1"));
        assert!(evicted);
        assert!(first.evicted.try_recv().is_err(), "the oldest of ::1 goes");
        assert!(matches!(
            second.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert!(matches!(
            third.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(pool.len(), 3);
        drop((first, second, third, other));
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn a_full_pool_gives_up_the_oldest_of_any_source() {
        let pool = UnverifiedPool::new(2, 2);
        let (mut a, _) = pool.admit(ip("::a"));
        let (mut b, _) = pool.admit(ip("::b"));
        let (_c, evicted) = pool.admit(ip("::c"));
        assert!(evicted);
        assert!(a.evicted.try_recv().is_err());
        assert!(matches!(
            b.evicted.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn a_finished_handshake_frees_its_place() {
        let pool = UnverifiedPool::new(1, 1);
        let (done, _) = pool.admit(ip("::1"));
        drop(done);
        let (_next, evicted) = pool.admit(ip("::1"));
        assert!(!evicted);
    }
}
