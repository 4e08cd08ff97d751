//! `/healthz`: one entry per check, each `pass`, `warn` or `fail`; the
//! answer is 200 unless a check fails, then 503. Every input is a metric the
//! pipeline already keeps, so a health check never touches Redis or netlink.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Metrics;
use super::endpoint_metrics::{EndpointMetrics, FileLabels};

/// A netlink overrun this recent turns the netlink check to `warn`.
const RECENT_OVERRUN: Duration = Duration::from_secs(60);
/// Certificates expiring within this turn the certificate check to `warn`.
const EXPIRY_WARNING_SECONDS: i64 = 30 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub status: Status,
    pub checks: Vec<Check>,
}

/// Health inputs, and the memory needed to tell "overrun recently".
pub struct Health {
    metrics: Metrics,
    endpoint: EndpointMetrics,
    queue_capacity: u64,
    /// Overrun count last seen, and when it last changed.
    overruns: Mutex<(u64, Option<Instant>)>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

impl Health {
    pub fn new(metrics: Metrics, endpoint: EndpointMetrics, queue_capacity: u64) -> Self {
        let seen = metrics.netlink_overruns.get();
        Self {
            metrics,
            endpoint,
            queue_capacity,
            overruns: Mutex::new((seen, None)),
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
        let m = &self.metrics;
        let mut checks = Vec::new();
        checks.push(if m.redis_up.get() == 1 {
            check("redis", Status::Pass, "connected")
        } else {
            check("redis", Status::Fail, "no working Redis connection")
        });
        let last_overrun = self.observe_overruns();
        checks.push(if m.netlink_up.get() != 1 {
            check(
                "netlink",
                Status::Fail,
                "the netlink socket is not being read",
            )
        } else if last_overrun.is_some_and(|t| t.elapsed() < RECENT_OVERRUN) {
            check(
                "netlink",
                Status::Warn,
                "receive buffer overrun in the last minute; resynced",
            )
        } else {
            check("netlink", Status::Pass, "reading, no recent overrun")
        });
        let depth = m.queue_depth.get().max(0) as u64;
        let high_water = self.queue_capacity * 8 / 10;
        let detail = format!("{depth} of {} keys pending", self.queue_capacity);
        checks.push(if depth >= self.queue_capacity {
            check("queue", Status::Fail, detail)
        } else if depth >= high_water {
            check("queue", Status::Warn, detail)
        } else {
            check("queue", Status::Pass, detail)
        });
        let failing = m.redis_keys_failing.get();
        checks.push(if failing > 0 {
            check(
                "redis_keys",
                Status::Warn,
                format!(
                    "Redis refuses {failing} key(s); each is retried on its own schedule and named in the log"
                ),
            )
        } else {
            check("redis_keys", Status::Pass, "every key is written")
        });
        checks.push(if m.port_init_done.get() == 1 {
            check("ports_initialised", Status::Pass, "PortInitDone written")
        } else {
            check(
                "ports_initialised",
                Status::Warn,
                "PortInitDone not written yet",
            )
        });
        checks.push(if m.warm_restart_reconciled.get() == 1 {
            check("warm_restart", Status::Pass, "reconciled (or cold start)")
        } else {
            check("warm_restart", Status::Warn, "not reconciled yet")
        });
        checks.push(self.certificate_check());
        let status = checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Pass);
        Report { status, checks }
    }

    fn certificate_check(&self) -> Check {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let expiry = |file: &str| {
            self.endpoint
                .certificate_expiry
                .get_or_create(&FileLabels {
                    file: file.to_string(),
                })
                .get()
        };
        let soonest = expiry("server").min(expiry("ca"));
        let days = (soonest - now) / 86_400;
        if soonest <= now {
            check(
                "certificates",
                Status::Fail,
                "a certificate in service has expired",
            )
        } else if soonest - now < EXPIRY_WARNING_SECONDS {
            check(
                "certificates",
                Status::Warn,
                format!("a certificate expires in {days} day(s)"),
            )
        } else {
            check(
                "certificates",
                Status::Pass,
                format!("{days} day(s) until the first expiry"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> (Metrics, EndpointMetrics) {
        let m = Metrics::new();
        m.redis_up.set(1);
        m.netlink_up.set(1);
        m.port_init_done.set(1);
        m.warm_restart_reconciled.set(1);
        let e = EndpointMetrics::default();
        let far = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 400 * 86_400;
        e.set_expiry("server", far);
        e.set_expiry("ca", far);
        (m, e)
    }

    #[test]
    fn all_good_passes() {
        let (m, e) = healthy();
        let r = Health::new(m, e, 100).report();
        assert_eq!(r.status, Status::Pass, "{r:?}");
        assert_eq!(r.checks.len(), 7);
    }

    #[test]
    fn a_key_redis_refuses_warns_and_names_the_count() {
        let (m, e) = healthy();
        let h = Health::new(m.clone(), e, 100);
        m.redis_keys_failing.set(2);
        let r = h.report();
        assert_eq!(r.status, Status::Warn);
        let check = r.checks.iter().find(|c| c.name == "redis_keys").unwrap();
        assert!(check.detail.contains("2 key(s)"), "{}", check.detail);
    }

    #[test]
    fn redis_down_fails_and_an_overrun_warns() {
        let (m, e) = healthy();
        let h = Health::new(m.clone(), e, 100);
        m.netlink_overruns.inc();
        assert_eq!(h.report().status, Status::Warn);
        m.redis_up.set(0);
        assert_eq!(h.report().status, Status::Fail);
    }

    #[test]
    fn queue_high_water_warns_then_full_fails() {
        let (m, e) = healthy();
        let h = Health::new(m.clone(), e, 100);
        m.queue_depth.set(80);
        assert_eq!(h.report().status, Status::Warn);
        m.queue_depth.set(100);
        assert_eq!(h.report().status, Status::Fail);
    }

    #[test]
    fn a_certificate_close_to_expiry_warns() {
        let (m, e) = healthy();
        let soon = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 86_400;
        e.set_expiry("ca", soon);
        assert_eq!(Health::new(m, e, 100).report().status, Status::Warn);
    }
}
