//! What the daemon is doing right now, in one place: the phase of its
//! start-up, whether Redis and netlink work, and the data path's heartbeat.
//!
//! The data path is the only writer (it calls the setters); systemd's
//! notifications (READY, STATUS, STOPPING, WATCHDOG) and the endpoint's
//! probes (/livez, /readyz, /healthz) only read. Metrics report it; they do
//! not carry it. It sits below both sides so neither imports the other.
//!
//! Setters are cheap and only wake readers when a value really changes, so
//! the data path may call them on every round.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How far the start-up has come. Within one run the data path only moves it
/// forward; after Redis lost its data the start-up runs again from
/// [`Phase::Starting`]. [`Phase::Stopping`] is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Reading the start-up configuration, waiting for Redis or CONFIG_DB.
    Starting,
    /// The initial sync is done: on a cold start PortConfigDone landed in
    /// APPL_DB; on a warm start the reconcile at EOIU landed (`reconciled`).
    /// systemd's READY=1 means this.
    Configured,
    /// PortInitDone landed too: every configured port's row is written.
    Initialized,
    /// SIGTERM or SIGINT arrived; pending writes are being flushed.
    Stopping,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Configured => "configured",
            Phase::Initialized => "initialized",
            Phase::Stopping => "stopping",
        }
    }
}

/// Whether a dependency works; when it does not, why (said to the operator
/// as is: name what is wrong and what to do).
pub type Health = Result<(), String>;

/// Everything but the heartbeat, which changes too often to wake readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    /// This run is a warm restart.
    pub warm: bool,
    /// Every database the data path uses answers.
    pub redis: Health,
    /// The netlink socket is open and read without errors.
    pub netlink: Health,
}

/// Shared handle; cloning shares the values.
#[derive(Clone, Debug)]
pub struct Status {
    state: Arc<watch::Sender<Snapshot>>,
    /// Milliseconds since [`clock_ms`]'s origin at the data path's last turn;
    /// 0 before the first.
    heartbeat: Arc<AtomicU64>,
    /// The furthest phase this run of the start-up reached
    /// ([`Status::progress`]); [`Phase::Stopping`] does not change it.
    reached: Arc<std::sync::Mutex<Phase>>,
}

impl Default for Status {
    fn default() -> Self {
        let (state, _) = watch::channel(Snapshot {
            phase: Phase::Starting,
            warm: false,
            redis: Err("not connected yet".into()),
            netlink: Err("not open yet".into()),
        });
        Status {
            state: Arc::new(state),
            heartbeat: Arc::default(),
            reached: Arc::new(std::sync::Mutex::new(Phase::Starting)),
        }
    }
}

impl Status {
    // --- setters: the data path only -------------------------------------

    /// Moves to `phase`. Going back is refused except to
    /// [`Phase::Starting`] (a new start-up after data loss); nothing leaves
    /// [`Phase::Stopping`].
    pub fn set_phase(&self, phase: Phase) {
        self.state.send_if_modified(|s| {
            let allowed =
                s.phase != Phase::Stopping && (phase > s.phase || phase == Phase::Starting);
            if allowed && s.phase != phase {
                s.phase = phase;
                if phase != Phase::Stopping {
                    *self.reached.lock().unwrap_or_else(|e| e.into_inner()) = phase;
                }
                true
            } else {
                false
            }
        });
    }

    pub fn set_warm(&self, warm: bool) {
        self.modify(|s| &mut s.warm, warm);
    }

    pub fn set_redis(&self, health: Health) {
        self.modify(|s| &mut s.redis, health);
    }

    pub fn set_netlink(&self, health: Health) {
        self.modify(|s| &mut s.netlink, health);
    }

    /// The data path went round once more.
    pub fn beat(&self) {
        self.heartbeat.store(clock_ms().max(1), Ordering::Relaxed);
    }

    fn modify<T: PartialEq>(&self, field: impl Fn(&mut Snapshot) -> &mut T, value: T) {
        self.state.send_if_modified(|s| {
            let slot = field(s);
            if *slot == value {
                false
            } else {
                *slot = value;
                true
            }
        });
    }

    // --- readers ----------------------------------------------------------

    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    pub fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    /// The furthest phase this run of the start-up reached: the phase, but
    /// kept through [`Phase::Stopping`] (what landed before SIGTERM).
    pub fn progress(&self) -> Phase {
        *self.reached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that wakes on every change of the [`Snapshot`].
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    /// Completes once SIGTERM or SIGINT arrived, at once if it already did:
    /// any number of waits, before or after, see it.
    pub async fn stopping(&self) {
        let mut changes = self.state.subscribe();
        let _ = changes.wait_for(|s| s.phase == Phase::Stopping).await;
    }

    /// Time since the data path last went round; `None` before its first
    /// turn.
    pub fn heartbeat_age(&self) -> Option<Duration> {
        match self.heartbeat.load(Ordering::Relaxed) {
            0 => None,
            last => Some(Duration::from_millis(clock_ms().saturating_sub(last))),
        }
    }
}

/// A heartbeat older than this is stale even when `WatchdogSec=` is shorter:
/// the loop's slowest healthy turn (a re-read of STATE_DB after a reconnect,
/// bounded by the 5 s response timeout) must never look like a wedge.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(20);

impl Status {
    /// How long the data path has not gone round, when that is longer than
    /// `stale_after`; `None` while it is alive (or has not started: systemd's
    /// start timeout covers that). A Redis outage being retried is alive:
    /// every attempt ends within the connection's timeouts.
    pub fn stalled(&self, stale_after: Duration) -> Option<Duration> {
        self.heartbeat_age().filter(|age| *age > stale_after)
    }
}

fn clock_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_moves_forward_restarts_from_starting_and_ends_at_stopping() {
        let s = Status::default();
        s.set_phase(Phase::Initialized);
        s.set_phase(Phase::Configured);
        assert_eq!(s.phase(), Phase::Initialized, "no step back");
        s.set_phase(Phase::Starting);
        assert_eq!(s.phase(), Phase::Starting, "a new start-up after data loss");
        s.set_phase(Phase::Stopping);
        s.set_phase(Phase::Starting);
        assert_eq!(s.phase(), Phase::Stopping);
    }

    #[test]
    fn readers_wake_only_on_a_real_change() {
        let s = Status::default();
        let mut rx = s.subscribe();
        s.set_redis(Err("not connected yet".into()));
        assert!(!rx.has_changed().unwrap());
        s.set_redis(Ok(()));
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().redis, Ok(()));
        s.beat();
        assert!(!rx.has_changed().unwrap(), "the heartbeat wakes nobody");
        assert!(s.heartbeat_age().unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn a_stale_data_path_is_stalled() {
        let s = Status::default();
        assert_eq!(
            s.stalled(Duration::ZERO),
            None,
            "not started is not stalled"
        );
        s.beat();
        assert_eq!(s.stalled(Duration::from_secs(60)), None);
        std::thread::sleep(Duration::from_millis(20));
        assert!(s.stalled(Duration::from_millis(10)).is_some());
    }
}
