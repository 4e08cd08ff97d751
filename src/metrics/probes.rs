//! `/livez` and `/readyz`: the two probes a machine acts on, apart from the
//! `/healthz` report for people.
//!
//! - live: the data-path loop goes round, as the systemd watchdog judges
//!   it. A Redis outage being retried is alive: restarting the daemon
//!   would not bring Redis back.
//! - ready: PortInitDone is written and Redis is reachable, i.e. the daemon
//!   is doing its job right now.

use std::time::Duration;

use crate::metrics::Metrics;
use crate::status::{MIN_STALE_AFTER, Status};

pub struct Probes {
    metrics: Metrics,
    status: Status,
    stale_after: Duration,
}

/// A probe's answer: pass or not, and a line saying why.
pub type Answer = (bool, String);

impl Probes {
    pub fn new(metrics: Metrics, status: Status) -> Self {
        Self::with_stale_after(metrics, status, MIN_STALE_AFTER)
    }

    pub fn with_stale_after(metrics: Metrics, status: Status, stale_after: Duration) -> Self {
        Self {
            metrics,
            status,
            stale_after,
        }
    }

    pub fn live(&self) -> Answer {
        match self.status.stalled(self.stale_after) {
            None => (true, "live: the data path goes round\n".into()),
            Some(age) => (
                false,
                format!(
                    "not live: the data path has not gone round for {} s\n",
                    age.as_secs()
                ),
            ),
        }
    }

    pub fn ready(&self) -> Answer {
        let mut missing = Vec::new();
        if self.metrics.port_init_done.get() != 1 {
            missing.push("PortInitDone not written yet");
        }
        if self.metrics.redis_up.get() != 1 {
            missing.push("Redis not reachable");
        }
        if missing.is_empty() {
            (
                true,
                "ready: PortInitDone written, Redis reachable\n".into(),
            )
        } else {
            (false, format!("not ready: {}\n", missing.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_port_init_done_and_redis() {
        let m = Metrics::new();
        let p = Probes::new(m.clone(), Status::default());
        let (ok, why) = p.ready();
        assert!(
            !ok && why.contains("PortInitDone") && why.contains("Redis"),
            "{why}"
        );
        m.port_init_done.set(1);
        m.redis_up.set(1);
        assert!(p.ready().0);
        m.redis_up.set(0);
        assert!(!p.ready().0);
    }

    #[test]
    fn live_follows_the_heartbeats_not_redis() {
        let m = Metrics::new();
        let status = Status::default();
        // A second between the beat and the first question: generous for
        // the microseconds it takes, even on a loaded machine.
        let p = Probes::with_stale_after(m.clone(), status.clone(), Duration::from_secs(1));
        status.beat();
        m.redis_up.set(0);
        assert!(p.live().0, "a Redis outage is not a dead daemon");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while p.live().0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (ok, why) = p.live();
        assert!(!ok && why.contains("data path"), "{why}");
        status.beat();
        assert!(p.live().0);
    }
}
