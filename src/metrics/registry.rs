//! Every metric the daemon keeps, each declared, registered and described
//! in one line of a [`metrics!`] table, all named `portsyncd_*`; the
//! status gauges (`redis_up`, `port_init_done`, ...) are not kept here but
//! read from [`Status`] at each scrape ([`StatusCollector`]). docs/metrics.md
//! lists the same names (a unit test keeps the two equal).
//!
//! The data path updates these with atomic operations only; a scrape never
//! takes a lock that port sync waits on.

use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

use crate::status::{Phase, Status};

/// A label set naming one port.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub port: String,
}

/// A label set naming why something happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// The paths served; anything else is 404 (and counted as `other`).
pub const PATHS: [&str; 4] = ["/metrics", "/healthz", "/livez", "/readyz"];

/// Labels of the endpoint's own families: an HTTP answer's `path` (only
/// the served ones, else `other`) and `code`; a certificate `file`
/// (`server`, `ca`); the build's `version` and `tls_profile`.
pub type Labels<const N: usize> = [(&'static str, String); N];

type Reasons = Family<ReasonLabels, Counter>;
type F64Gauge = Gauge<f64, AtomicU64>;

/// `name: Type = init, "registered name", unit, "help";` per metric: the
/// struct field, its registration under `portsyncd_` and its help text.
/// After the table, `+ field: Type;` nests another table (registered with
/// it).
macro_rules! metrics {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty = $init:expr, $reg:literal, $unit:expr, $help:literal;)* $(+ $(#[$ndoc:meta])* $nested:ident: $nty:ty;)* }) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name { $($(#[$fdoc])* pub $field: $ty,)* $($(#[$ndoc])* pub $nested: $nty,)* }
        impl Default for $name {
            fn default() -> Self { Self { $($field: $init,)* $($nested: <$nty>::default(),)* } }
        }
        impl $name {
            fn register_in(&self, r: &mut Registry) {
                $(add(r, $reg, $help, $unit, self.$field.clone());)*
                $(self.$nested.register_in(r);)*
            }
        }
    };
}

fn add(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, metric: impl Metric) {
    match unit {
        Some(unit) => r.register_with_unit(name, help, unit, metric),
        None => r.register(name, help, metric),
    }
}

const SECONDS: Option<Unit> = Some(Unit::Seconds);

metrics! {
    /// The data path's metrics. Cloning shares the underlying values.
    Metrics {
        link_events_received: Counter = Counter::default(), "link_events_received", None, "Link messages read from netlink";
        /// Link messages that produced a pending STATE_DB write.
        link_events_processed: Counter = Counter::default(), "link_events_processed", None, "Link messages that produced a STATE_DB write";
        link_events_ignored: Reasons = Family::default(), "link_events_ignored", None, "Link messages ignored by rule";
        link_events_failed: Reasons = Family::default(), "link_events_failed", None, "Netlink input that could not be parsed";
        /// Each overrun (ENOBUFS) triggers a resync dump.
        netlink_overruns: Counter = Counter::default(), "netlink_overruns", None, "Netlink receive buffer overruns (ENOBUFS)";
        netlink_resyncs: Counter = Counter::default(), "netlink_resyncs", None, "Link dumps requested to repair lost messages";
        netlink_receive_buffer_bytes: Gauge = Gauge::default(), "netlink_receive_buffer", Some(Unit::Bytes), "Receive buffer granted by the kernel";
        port_flaps: Family<PortLabels, Counter> = Family::default(), "port_flaps", None, "Oper status changes per port";
        port_oper_status: Family<PortLabels, Gauge> = Family::default(), "port_oper_status", None, "Port oper status (1 up, 0 down)";
        port_admin_status: Family<PortLabels, Gauge> = Family::default(), "port_admin_status", None, "Port admin status (1 up, 0 down)";
        queue_depth: Gauge = Gauge::default(), "queue_depth", None, "Distinct keys waiting to be written";
        queue_coalesced: Counter = Counter::default(), "queue_coalesced", None, "Events folded into a pending write";
        event_latency: Histogram = Histogram::new(exponential_buckets(0.000_05, 2.0, 18)), "event_latency", SECONDS, "From netlink receipt to Redis acknowledgement";
        redis_latency: Histogram = Histogram::new(exponential_buckets(0.000_025, 2.0, 18)), "redis_latency", SECONDS, "Redis batch round trip";
        redis_reconnects: Counter = Counter::default(), "redis_reconnects", None, "Redis reconnections";
        /// 0 when every key is written.
        redis_keys_failing: Gauge = Gauge::default(), "redis_keys_failing", None, "Keys Redis refused on their last try, each retried on its own schedule";
        redis_errors: Reasons = Family::default(), "redis_errors", None, "Failed Redis operations by kind";
        redis_keys_written: Counter = Counter::default(), "redis_keys_written", None, "Keys written to Redis";
        redis_batches: Counter = Counter::default(), "redis_batches", None, "Pipelined batches sent to Redis";
        state_writes_skipped_unconfigured: Counter = Counter::default(), "state_writes_skipped_unconfigured", None, "STATE_DB writes skipped because the port is not in APPL_DB";
        /// Not `_count`: that suffix is reserved for histograms.
        warm_restart_count: Gauge = Gauge::default(), "warm_restart_restores", None, "restore_count of WARM_RESTART_TABLE|portsyncd after start-up";
        log_lines_dropped: Counter = crate::logging::syslog::LINES_DROPPED.clone(), "log_lines_dropped", None, "Log lines dropped: the syslog socket was full";
        + /// The warm-restart reconcile and the STATE_DB row outcomes.
        warm: WarmMetrics;
    }
}

metrics! {
    /// What the warm-restart reconcile did, and the STATE_DB write outcomes
    /// it is computed from.
    WarmMetrics {
        state_rows_changed: Counter = Counter::default(), "state_rows_changed", None, "STATE_DB port rows written because a field differed";
        state_rows_unchanged: Counter = Counter::default(), "state_rows_unchanged", None, "STATE_DB port writes skipped because the row already held the values";
        state_rows_deleted: Counter = Counter::default(), "state_rows_deleted", None, "STATE_DB port rows deleted";
        reconcile_duration_seconds: F64Gauge = Gauge::default(), "warm_reconcile_duration", SECONDS, "Start-up to reconciled on the last warm restart";
        reconcile_rows_written: Gauge = Gauge::default(), "warm_reconcile_rows_written", None, "STATE_DB port rows the last warm reconcile changed";
        reconcile_rows_untouched: Gauge = Gauge::default(), "warm_reconcile_rows_untouched", None, "STATE_DB port rows the last warm reconcile found already right";
        reconcile_rows_deleted: Gauge = Gauge::default(), "warm_reconcile_rows_deleted", None, "STATE_DB port rows the last warm reconcile deleted (netdev gone)";
        reconcile_by_timer: Gauge = Gauge::default(), "warm_reconcile_by_timer", None, "1 when the last reconcile ran on portsyncd_timer without EOIU";
    }
}

metrics! {
    /// The endpoint's own metrics.
    EndpointMetrics {
        /// no_client_certificate, unknown_issuer, expired, revoked, client_not_allowed, timeout, ...
        tls_handshake_failures: Reasons = Family::default(), "tls_handshake_failures", None, "TLS handshakes that failed, by reason";
        /// `evicted` (a newer unverified connection took its place), `max_connections`.
        connections_refused: Reasons = Family::default(), "metrics_connections_refused", None, "Connections refused, by reason";
        connections_open: Gauge = Gauge::default(), "metrics_connections_open", None, "TLS connections open on the metrics endpoint";
        requests: Family<Labels<2>, Counter> = Family::default(), "metrics_requests", None, "HTTP answers of the metrics endpoint by path and code";
        tls_reloads: Reasons = Family::default(), "tls_reloads", None, "Reloads of the TLS files, by result";
        /// 0 also when the reload watcher had died.
        tls_last_reload_ok: Gauge = Gauge::default(), "tls_last_reload_success", None, "1 when the last TLS reload succeeded, 0 when the old files stayed in service";
        reload_watcher_restarts: Counter = Counter::default(), "tls_reload_watcher_restarts", None, "Times the TLS reload watcher ended and was restarted (a bug if above 0)";
        certificate_expiry: Family<Labels<1>, Gauge> = Family::default(), "tls_certificate_expiry_timestamp", SECONDS, "notAfter of the certificate in service, Unix time";
        build_info: Family<Labels<2>, Gauge> = Family::default(), "build_info", None, "Constant 1, labelled with the version and TLS profile";
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the data path's metrics alone under `portsyncd_` (the
    /// endpoint serves [`registry`], which has them all).
    pub fn register(&self, registry: &mut Registry) {
        self.register_in(registry.sub_registry_with_prefix("portsyncd"));
    }

    pub fn ignored(&self, reason: &str) {
        inc(&self.link_events_ignored, reason, 1);
    }

    pub fn failed(&self, reason: &str, n: u64) {
        if n > 0 {
            inc(&self.link_events_failed, reason, n);
        }
    }

    pub fn redis_error(&self, kind: &str) {
        inc(&self.redis_errors, kind, 1);
    }
}

fn inc(family: &Reasons, reason: &str, n: u64) {
    family
        .get_or_create(&ReasonLabels {
            reason: reason.to_string(),
        })
        .inc_by(n);
}

/// The three row counters at one moment, to measure a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCounts {
    pub changed: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl WarmMetrics {
    pub fn row_counts(&self) -> RowCounts {
        RowCounts {
            changed: self.state_rows_changed.get(),
            unchanged: self.state_rows_unchanged.get(),
            deleted: self.state_rows_deleted.get(),
        }
    }

    /// Publishes what happened between `before` and now as the last
    /// reconcile's outcome.
    pub fn record_reconcile(&self, before: RowCounts, seconds: f64, by_timer: bool) -> RowCounts {
        let now = self.row_counts();
        let done = RowCounts {
            changed: now.changed - before.changed,
            unchanged: now.unchanged - before.unchanged,
            deleted: now.deleted - before.deleted,
        };
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.reconcile_rows_written.set(gauge(done.changed));
        self.reconcile_rows_untouched.set(gauge(done.unchanged));
        self.reconcile_rows_deleted.set(gauge(done.deleted));
        self.reconcile_duration_seconds.set(seconds);
        self.reconcile_by_timer.set(i64::from(by_timer));
        done
    }
}

impl EndpointMetrics {
    pub fn handshake_failed(&self, reason: &str) {
        inc(&self.tls_handshake_failures, reason, 1);
    }

    pub fn refused(&self, reason: &str) {
        inc(&self.connections_refused, reason, 1);
    }

    pub fn answered(&self, path: &str, code: u16) {
        let path = if PATHS.contains(&path) { path } else { "other" };
        let labels = [("path", path.to_string()), ("code", code.to_string())];
        self.requests.get_or_create(&labels).inc();
    }

    pub fn reloaded(&self, result: &str) {
        inc(&self.tls_reloads, result, 1);
        self.tls_last_reload_ok.set(i64::from(result == "ok"));
    }

    pub fn set_expiry(&self, file: &str, not_after: i64) {
        self.certificate_expiry
            .get_or_create(&[("file", file.to_string())])
            .set(not_after);
    }

    pub fn expiry(&self, file: &str) -> i64 {
        self.certificate_expiry
            .get_or_create(&[("file", file.to_string())])
            .get()
    }
}

/// The status gauges, computed from [`Status`] at each scrape: metrics
/// report the status, they do not carry it.
#[derive(Debug)]
pub struct StatusCollector(pub Status);

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        let reached = self.0.progress();
        let done = reached >= Phase::Configured;
        for (name, help, on) in [
            (
                "portsyncd_port_config_done",
                "1 once PortConfigDone was written (cold start)",
                done && !s.warm,
            ),
            (
                "portsyncd_port_init_done",
                "1 once PortInitDone was written",
                reached == Phase::Initialized,
            ),
            (
                "portsyncd_warm_restart",
                "1 when this run is a warm restart",
                s.warm,
            ),
            (
                "portsyncd_warm_restart_reconciled",
                "1 once the warm restart is reconciled or the cold start configured",
                done,
            ),
            (
                "portsyncd_redis_up",
                "1 while Redis is reachable",
                s.redis.is_ok(),
            ),
            (
                "portsyncd_netlink_up",
                "1 while the netlink socket is being read",
                s.netlink.is_ok(),
            ),
        ] {
            let gauge = ConstGauge::new(i64::from(on));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Everything a scrape shows, in one registry.
pub fn registry(metrics: &Metrics, endpoint: &EndpointMetrics, status: &Status) -> Registry {
    let mut registry = Registry::default();
    let r = registry.sub_registry_with_prefix("portsyncd");
    metrics.register_in(r);
    endpoint.register_in(r);
    registry.register_collector(Box::new(StatusCollector(status.clone())));
    registry.register_collector(Box::new(super::process::ProcessCollector));
    registry
}

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The body and its content type: OpenMetrics when the scraper's `Accept`
/// asks for it (Prometheus does), else the Prometheus text format 0.0.4.
pub fn render(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let mut out = String::with_capacity(16 * 1024);
    let openmetrics = accept.is_some_and(|a| a.contains("application/openmetrics-text"));
    let (content_type, encoded) = if openmetrics {
        (OPENMETRICS, text::encode(&mut out, registry))
    } else {
        (
            prometheus_text::CONTENT_TYPE,
            prometheus_text::encode(&mut out, registry),
        )
    };
    // Writing to a String cannot fail; an encoder error would be a bug in a
    // metric, and an empty-but-valid body beats a panic in the server.
    if encoded.is_err() {
        out.clear();
        if openmetrics {
            out.push_str("# EOF\n");
        }
    }
    (content_type, out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A scrape with one sample in every family (an empty one shows nothing).
    fn scrape(status: &Status, accept: Option<&str>) -> String {
        let (m, e) = (Metrics::new(), EndpointMetrics::default());
        let (port, reason) = (
            PortLabels {
                port: "Ethernet0".into(),
            },
            "x",
        );
        m.ignored(reason);
        m.failed(reason, 1);
        m.redis_error(reason);
        m.port_flaps.get_or_create(&port).inc();
        m.port_oper_status.get_or_create(&port).set(1);
        m.port_admin_status.get_or_create(&port).set(1);
        e.handshake_failed(reason);
        e.refused(reason);
        e.answered("/metrics", 200);
        e.reloaded("ok");
        e.set_expiry("ca", 1);
        let build = [
            ("version", "1".to_string()),
            ("tls_profile", "cnsa".to_string()),
        ];
        e.build_info.get_or_create(&build).set(1);
        render(&registry(&m, &e, status), accept).1
    }

    /// Every metric family served is in docs/metrics.md's tables, and every
    /// name there is served: one list, kept in step.
    #[test]
    fn docs_list_exactly_the_metrics_served() {
        let served: BTreeSet<String> = scrape(&Status::default(), None)
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .filter(|n| n.starts_with("portsyncd_"))
            .collect();
        let docs = include_str!("../../docs/metrics.md");
        let documented: BTreeSet<String> = docs
            .lines()
            .filter_map(|l| l.strip_prefix("| `portsyncd_"))
            .map(|l| format!("portsyncd_{}", l.split('`').next().unwrap()))
            .collect();
        assert_eq!(served, documented);
    }

    #[test]
    fn status_gauges_follow_the_status() {
        let status = Status::default();
        let body = scrape(&status, None);
        assert!(
            body.contains("portsyncd_redis_up 0") && body.contains("portsyncd_port_init_done 0"),
            "{body}"
        );
        status.set_redis(Ok(()));
        status.set_phase(Phase::Initialized);
        status.set_phase(Phase::Stopping);
        let body = scrape(&status, None);
        for line in [
            "portsyncd_redis_up 1",
            "portsyncd_port_config_done 1",
            "portsyncd_port_init_done 1",
        ] {
            assert!(body.contains(line), "{line} in {body}");
        }
    }

    #[test]
    fn accept_header_selects_the_encoder() {
        let status = Status::default();
        assert!(
            scrape(&status, Some("application/openmetrics-text;version=1.0.0"))
                .ends_with("# EOF\n")
        );
        assert!(!scrape(&status, Some("*/*")).contains("# EOF"));
    }
}
