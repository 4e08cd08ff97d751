//! Every metric the daemon keeps, in one registry, all named `portsyncd_*`.
//!
//! The pipeline updates these with atomic operations only; a scrape never
//! takes a lock that port sync waits on.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::warm::WarmMetrics;

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

/// The daemon's metrics. Cloning shares the underlying values.
#[derive(Clone)]
pub struct Metrics {
    /// Link messages read from netlink (RTM_NEWLINK and RTM_DELLINK).
    pub link_events_received: Counter,
    /// Link messages that produced a pending STATE_DB write.
    pub link_events_processed: Counter,
    /// Link messages the upstream rules ignore, by rule.
    pub link_events_ignored: Family<ReasonLabels, Counter>,
    /// Netlink messages or attributes that could not be parsed.
    pub link_events_failed: Family<ReasonLabels, Counter>,
    /// Receive-buffer overruns (ENOBUFS); each one triggers a resync dump.
    pub netlink_overruns: Counter,
    /// Dumps requested after the start-up one, to repair lost messages.
    pub netlink_resyncs: Counter,
    /// 1 while the netlink socket is open and being read.
    pub netlink_up: Gauge,
    /// The receive buffer the kernel granted.
    pub netlink_receive_buffer_bytes: Gauge,
    /// Oper-status changes per port, as the kernel reported them.
    pub port_flaps: Family<PortLabels, Counter>,
    /// 1 = up, 0 = down, per port, as last written to STATE_DB.
    pub port_oper_status: Family<PortLabels, Gauge>,
    pub port_admin_status: Family<PortLabels, Gauge>,
    /// Distinct keys waiting for Redis.
    pub queue_depth: Gauge,
    /// Events folded into an already pending write for the same key.
    pub queue_coalesced: Counter,
    /// From netlink receipt to Redis acknowledgement.
    pub event_latency: Histogram,
    /// One pipelined batch round trip.
    pub redis_latency: Histogram,
    /// 1 while the writer holds a working Redis connection.
    pub redis_up: Gauge,
    pub redis_reconnects: Counter,
    /// Keys Redis refused on their last try (each retried on its own
    /// schedule); 0 when every key is written.
    pub redis_keys_failing: Gauge,
    /// Failed Redis operations, by kind (io, noscript, server).
    pub redis_errors: Family<ReasonLabels, Counter>,
    /// Keys written per batch.
    pub redis_keys_written: Counter,
    pub redis_batches: Counter,
    /// STATE_DB rows left alone because the port is not configured in APPL_DB.
    pub state_writes_skipped_unconfigured: Counter,
    /// 1 once PortConfigDone / PortInitDone are in APPL_DB.
    pub port_config_done: Gauge,
    pub port_init_done: Gauge,
    /// 1 when this run is a warm restart.
    pub warm_restart: Gauge,
    /// `restore_count` of WARM_RESTART_TABLE|portsyncd after start-up.
    pub warm_restart_count: Gauge,
    /// 1 once the warm-restart state is `reconciled` (or `disabled`).
    pub warm_restart_reconciled: Gauge,
    /// The warm-restart reconcile and the STATE_DB row outcomes.
    pub warm: WarmMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            link_events_received: Counter::default(),
            link_events_processed: Counter::default(),
            link_events_ignored: Family::default(),
            link_events_failed: Family::default(),
            netlink_overruns: Counter::default(),
            netlink_resyncs: Counter::default(),
            netlink_up: Gauge::default(),
            netlink_receive_buffer_bytes: Gauge::default(),
            port_flaps: Family::default(),
            port_oper_status: Family::default(),
            port_admin_status: Family::default(),
            queue_depth: Gauge::default(),
            queue_coalesced: Counter::default(),
            event_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            redis_latency: Histogram::new(exponential_buckets(0.000_025, 2.0, 18)),
            redis_up: Gauge::default(),
            redis_reconnects: Counter::default(),
            redis_keys_failing: Gauge::default(),
            redis_errors: Family::default(),
            redis_keys_written: Counter::default(),
            redis_batches: Counter::default(),
            state_writes_skipped_unconfigured: Counter::default(),
            port_config_done: Gauge::default(),
            port_init_done: Gauge::default(),
            warm_restart: Gauge::default(),
            warm_restart_count: Gauge::default(),
            warm_restart_reconciled: Gauge::default(),
            warm: WarmMetrics::default(),
        }
    }

    /// Registers every metric under the `portsyncd` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("portsyncd");
        r.register(
            "link_events_received",
            "Link messages read from netlink",
            self.link_events_received.clone(),
        );
        r.register(
            "link_events_processed",
            "Link messages that produced a STATE_DB write",
            self.link_events_processed.clone(),
        );
        r.register(
            "link_events_ignored",
            "Link messages ignored by rule",
            self.link_events_ignored.clone(),
        );
        r.register(
            "link_events_failed",
            "Netlink input that could not be parsed",
            self.link_events_failed.clone(),
        );
        r.register(
            "netlink_overruns",
            "Netlink receive buffer overruns (ENOBUFS)",
            self.netlink_overruns.clone(),
        );
        r.register(
            "netlink_resyncs",
            "Link dumps requested to repair lost messages",
            self.netlink_resyncs.clone(),
        );
        r.register(
            "netlink_up",
            "1 while the netlink socket is being read",
            self.netlink_up.clone(),
        );
        r.register_with_unit(
            "netlink_receive_buffer",
            "Receive buffer granted by the kernel",
            Unit::Bytes,
            self.netlink_receive_buffer_bytes.clone(),
        );
        r.register(
            "port_flaps",
            "Oper status changes per port",
            self.port_flaps.clone(),
        );
        r.register(
            "port_oper_status",
            "Port oper status (1 up, 0 down)",
            self.port_oper_status.clone(),
        );
        r.register(
            "port_admin_status",
            "Port admin status (1 up, 0 down)",
            self.port_admin_status.clone(),
        );
        r.register(
            "queue_depth",
            "Distinct keys waiting to be written",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_coalesced",
            "Events folded into a pending write",
            self.queue_coalesced.clone(),
        );
        r.register_with_unit(
            "event_latency",
            "From netlink receipt to Redis acknowledgement",
            Unit::Seconds,
            self.event_latency.clone(),
        );
        r.register_with_unit(
            "redis_latency",
            "Redis batch round trip",
            Unit::Seconds,
            self.redis_latency.clone(),
        );
        r.register(
            "redis_up",
            "1 while Redis is reachable",
            self.redis_up.clone(),
        );
        r.register(
            "redis_reconnects",
            "Redis reconnections",
            self.redis_reconnects.clone(),
        );
        r.register(
            "redis_keys_failing",
            "Keys Redis refused on their last try, each retried on its own schedule",
            self.redis_keys_failing.clone(),
        );
        r.register(
            "redis_errors",
            "Failed Redis operations by kind",
            self.redis_errors.clone(),
        );
        r.register(
            "redis_keys_written",
            "Keys written to Redis",
            self.redis_keys_written.clone(),
        );
        r.register(
            "redis_batches",
            "Pipelined batches sent to Redis",
            self.redis_batches.clone(),
        );
        r.register(
            "state_writes_skipped_unconfigured",
            "STATE_DB writes skipped because the port is not in APPL_DB",
            self.state_writes_skipped_unconfigured.clone(),
        );
        r.register(
            "port_config_done",
            "1 once PortConfigDone was written",
            self.port_config_done.clone(),
        );
        r.register(
            "port_init_done",
            "1 once PortInitDone was written",
            self.port_init_done.clone(),
        );
        r.register(
            "warm_restart",
            "1 when this run is a warm restart",
            self.warm_restart.clone(),
        );
        r.register(
            // Not `_count`: that suffix is reserved for histograms/summaries.
            "warm_restart_restores",
            "restore_count of WARM_RESTART_TABLE|portsyncd after start-up",
            self.warm_restart_count.clone(),
        );
        r.register(
            "warm_restart_reconciled",
            "1 once the warm restart is reconciled or disabled",
            self.warm_restart_reconciled.clone(),
        );
        self.warm.register(r);
        r.register(
            "log_lines_dropped",
            "Log lines dropped: the syslog socket was full",
            crate::logging::syslog::LINES_DROPPED.clone(),
        );
    }

    pub fn ignored(&self, reason: &str) {
        self.link_events_ignored
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn failed(&self, reason: &str, n: u64) {
        if n > 0 {
            self.link_events_failed
                .get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                })
                .inc_by(n);
        }
    }

    pub fn redis_error(&self, kind: &str) {
        self.redis_errors
            .get_or_create(&ReasonLabels {
                reason: kind.to_string(),
            })
            .inc();
    }
}
