//! The probes: `/livez` and `/readyz`, the two a machine acts on, and the
//! `/healthz` report for people (one entry per check, `pass`, `warn` or
//! `fail`; 200 unless a check fails, then 503). They read the daemon's
//! [`Status`] and a few metrics, never Redis or netlink.
//!
//! - live: the data-path loop goes round, as the systemd watchdog judges
//!   it. A Redis outage being retried is alive: restarting the daemon
//!   would not bring Redis back.
//! - ready: PortInitDone is written, Redis is reachable and the daemon is
//!   not stopping, i.e. it is doing its job right now.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{EndpointMetrics, Metrics};
use crate::status::{MIN_STALE_AFTER, Phase, Status};

/// A netlink overrun this recent turns the netlink check to `warn`.
const RECENT_OVERRUN: Duration = Duration::from_secs(60);
/// Certificates expiring within this turn the certificate check to `warn`.
const EXPIRY_WARNING_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// One check of `/healthz`: its name, verdict and why.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Verdict,
    pub detail: String,
}

fn check(name: &'static str, status: Verdict, detail: impl Into<String>) -> Check {
    let detail = detail.into();
    Check {
        name,
        status,
        detail,
    }
}

/// `/healthz`: the worst verdict, and every check.
#[derive(Debug, Serialize)]
pub struct Report {
    pub status: Verdict,
    pub checks: Vec<Check>,
}

/// A probe's answer: pass or not, and a line saying why.
pub type Answer = (bool, String);

/// What the probes read, and the memory needed to tell "overrun recently".
pub struct Health {
    status: Status,
    metrics: Metrics,
    endpoint: EndpointMetrics,
    queue_capacity: u64,
    stale_after: Duration,
    /// Overrun count last seen, and when it last changed.
    overruns: Mutex<(u64, Option<Instant>)>,
}

impl Health {
    pub fn new(status: Status, metrics: Metrics, endpoint: EndpointMetrics, queue: u64) -> Self {
        let overruns = Mutex::new((metrics.netlink_overruns.get(), None));
        let (queue_capacity, stale_after) = (queue, MIN_STALE_AFTER);
        Self {
            status,
            metrics,
            endpoint,
            queue_capacity,
            stale_after,
            overruns,
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
        let s = self.status.snapshot();
        let missing: Vec<String> = [
            (self.status.progress() != Phase::Initialized)
                .then(|| "PortInitDone not written yet".into()),
            s.redis
                .err()
                .map(|why| format!("Redis not reachable: {why}")),
            (s.phase == Phase::Stopping).then(|| "stopping".into()),
        ]
        .into_iter()
        .flatten()
        .collect();
        match missing.is_empty() {
            true => (
                true,
                "ready: PortInitDone written, Redis reachable\n".into(),
            ),
            false => (false, format!("not ready: {}\n", missing.join("; "))),
        }
    }

    /// Notes whether the overrun counter moved; called on each report and
    /// periodically by the server, so "recent" does not depend on scrapes.
    pub fn observe_overruns(&self) -> Option<Instant> {
        let now_count = self.metrics.netlink_overruns.get();
        let mut seen = self.overruns.lock().unwrap_or_else(|e| e.into_inner());
        if now_count != seen.0 {
            *seen = (now_count, Some(Instant::now()));
        }
        seen.1
    }

    pub fn report(&self) -> Report {
        use Verdict::{Fail, Pass, Warn};
        let (m, s, reached) = (
            &self.metrics,
            self.status.snapshot(),
            self.status.progress(),
        );
        let overrun = self
            .observe_overruns()
            .is_some_and(|t| t.elapsed() < RECENT_OVERRUN);
        let (depth, capacity) = (m.queue_depth.get().max(0) as u64, self.queue_capacity);
        let failing = m.redis_keys_failing.get();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let expiry = self
            .endpoint
            .expiry("server")
            .min(self.endpoint.expiry("ca"));
        let days = (expiry - now) / 86_400;
        let checks = vec![
            match s.redis {
                Ok(()) => check("redis", Pass, "connected"),
                Err(why) => check("redis", Fail, why),
            },
            match s.netlink {
                Err(why) => check("netlink", Fail, why),
                Ok(()) if overrun => check(
                    "netlink",
                    Warn,
                    "receive buffer overrun in the last minute; resynced",
                ),
                Ok(()) => check("netlink", Pass, "reading, no recent overrun"),
            },
            match self.live() {
                (true, _) => check("data_path", Pass, "goes round"),
                (false, why) => check("data_path", Fail, why.trim()),
            },
            check(
                "queue",
                match depth {
                    d if d >= capacity => Fail,
                    d if d >= capacity * 8 / 10 => Warn,
                    _ => Pass,
                },
                format!("{depth} of {capacity} keys pending"),
            ),
            match failing {
                0 => check("redis_keys", Pass, "every key is written"),
                n => check(
                    "redis_keys",
                    Warn,
                    format!(
                        "Redis refuses {n} key(s); each is retried on its own schedule and named in the log"
                    ),
                ),
            },
            match reached {
                Phase::Initialized => check("ports_initialised", Pass, "PortInitDone written"),
                _ => check("ports_initialised", Warn, "PortInitDone not written yet"),
            },
            match reached >= Phase::Configured {
                true => check("warm_restart", Pass, "reconciled (or cold start)"),
                false => check("warm_restart", Warn, "not reconciled yet"),
            },
            match expiry - now {
                left if left <= 0 => {
                    check("certificates", Fail, "a certificate in service has expired")
                }
                left if left < EXPIRY_WARNING_SECONDS => check(
                    "certificates",
                    Warn,
                    format!("a certificate expires in {days} day(s)"),
                ),
                _ => check(
                    "certificates",
                    Pass,
                    format!("{days} day(s) until the first expiry"),
                ),
            },
        ];
        let status = checks.iter().map(|c| c.status).max().unwrap_or(Pass);
        Report { status, checks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> (Status, Metrics, Health) {
        let (status, m, e) = (
            Status::default(),
            Metrics::new(),
            EndpointMetrics::default(),
        );
        status.set_redis(Ok(()));
        status.set_netlink(Ok(()));
        status.set_phase(Phase::Initialized);
        status.beat();
        let far = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 400 * 86_400;
        e.set_expiry("server", far);
        e.set_expiry("ca", far);
        let h = Health::new(status.clone(), m.clone(), e, 100);
        (status, m, h)
    }

    #[test]
    fn all_good_passes() {
        let (_, _, h) = healthy();
        let r = h.report();
        assert_eq!(r.status, Verdict::Pass, "{r:?}");
        assert_eq!(r.checks.len(), 8);
        assert!(h.ready().0 && h.live().0);
    }

    #[test]
    fn the_redis_check_says_why() {
        let (status, m, h) = healthy();
        m.redis_keys_failing.set(2);
        assert_eq!(h.report().status, Verdict::Warn);
        status.set_redis(Err("Redis refused user \"portsyncd\": WRONGPASS".into()));
        let r = h.report();
        assert_eq!(r.status, Verdict::Fail);
        assert!(r.checks[0].detail.contains("WRONGPASS"), "{r:?}");
        let (ok, why) = h.ready();
        assert!(!ok && why.contains("WRONGPASS"), "{why}");
        assert!(h.live().0, "a Redis outage is not a dead daemon");
    }

    #[test]
    fn an_overrun_warns_and_a_full_queue_fails() {
        let (_, m, h) = healthy();
        m.netlink_overruns.inc();
        assert_eq!(h.report().status, Verdict::Warn);
        m.queue_depth.set(100);
        assert_eq!(h.report().status, Verdict::Fail);
    }

    #[test]
    fn ready_needs_port_init_done_and_ends_at_stopping() {
        let status = Status::default();
        let h = Health::new(
            status.clone(),
            Metrics::new(),
            EndpointMetrics::default(),
            100,
        );
        let (ok, why) = h.ready();
        assert!(
            !ok && why.contains("PortInitDone") && why.contains("Redis"),
            "{why}"
        );
        status.set_redis(Ok(()));
        status.set_phase(Phase::Initialized);
        assert!(h.ready().0);
        status.set_phase(Phase::Stopping);
        assert!(!h.ready().0);
    }

    #[test]
    fn live_follows_the_heartbeat() {
        let (status, _, mut h) = healthy();
        h.stale_after = Duration::from_millis(50);
        std::thread::sleep(Duration::from_millis(80));
        let (ok, why) = h.live();
        assert!(!ok && why.contains("data path"), "{why}");
        status.beat();
        // A second between the beat and the question: generous for the
        // microseconds it takes, even on a loaded machine.
        h.stale_after = Duration::from_secs(1);
        assert!(h.live().0);
    }
}
