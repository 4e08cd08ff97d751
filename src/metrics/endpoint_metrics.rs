//! Metrics about the metrics endpoint itself: TLS handshake failures by
//! reason, refused connections, requests, reloads, certificate expiry and
//! build information. Kept apart from the port-sync [`super::Metrics`] so
//! the two evolve independently; both end up in one registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::ReasonLabels;

/// One HTTP answer: path (only the served ones, else `other`) and code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub path: String,
    pub code: String,
}

/// Which certificate file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabels {
    pub file: String,
}

/// What was built, as labels of a constant 1.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub tls_profile: String,
}

#[derive(Clone, Default)]
pub struct EndpointMetrics {
    /// Handshakes that failed, by reason (no_client_certificate,
    /// unknown_issuer, expired, revoked, client_not_allowed,
    /// no_common_version, no_common_cipher_suite, timeout, ...).
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    /// Connections refused: `evicted` (a newer unverified connection took
    /// its place), `max_connections` (verified, but every place taken).
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// TLS connections currently open.
    pub connections_open: Gauge,
    /// Answers by path and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Successful and refused reloads of the TLS files.
    pub tls_reloads: Family<ReasonLabels, Counter>,
    /// 1 when the last reload attempt succeeded (or none was needed); 0
    /// also when the reload watcher had died.
    pub tls_last_reload_ok: Gauge,
    /// Times the reload watcher ended and was started again (a bug if > 0).
    pub reload_watcher_restarts: Counter,
    /// notAfter of the server certificate and of the CA.
    pub certificate_expiry: Family<FileLabels, Gauge>,
    pub build_info: Family<BuildLabels, Gauge>,
}

impl EndpointMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("portsyncd");
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed, by reason",
            self.tls_handshake_failures.clone(),
        );
        r.register(
            "metrics_connections_refused",
            "Connections refused, by reason",
            self.connections_refused.clone(),
        );
        r.register(
            "metrics_connections_open",
            "TLS connections open on the metrics endpoint",
            self.connections_open.clone(),
        );
        r.register(
            "metrics_requests",
            "HTTP answers of the metrics endpoint by path and code",
            self.requests.clone(),
        );
        r.register(
            "tls_reloads",
            "Reloads of the TLS files, by result",
            self.tls_reloads.clone(),
        );
        r.register(
            "tls_last_reload_success",
            "1 when the last TLS reload succeeded, 0 when the old files stayed in service",
            self.tls_last_reload_ok.clone(),
        );
        r.register(
            "tls_reload_watcher_restarts",
            "Times the TLS reload watcher ended and was restarted (a bug if above 0)",
            self.reload_watcher_restarts.clone(),
        );
        r.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "notAfter of the certificate in service, Unix time",
            Unit::Seconds,
            self.certificate_expiry.clone(),
        );
        r.register(
            "build_info",
            "Constant 1, labelled with the version and TLS profile",
            self.build_info.clone(),
        );
    }

    pub fn handshake_failed(&self, reason: &str) {
        self.tls_handshake_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn answered(&self, path: &str, code: u16) {
        let path = match path {
            p if super::server::PATHS.contains(&p) => p,
            _ => "other",
        };
        self.requests
            .get_or_create(&RequestLabels {
                path: path.to_string(),
                code: code.to_string(),
            })
            .inc();
    }

    pub fn reloaded(&self, result: &str) {
        self.tls_reloads
            .get_or_create(&ReasonLabels {
                reason: result.to_string(),
            })
            .inc();
        self.tls_last_reload_ok.set(i64::from(result == "ok"));
    }

    pub fn set_expiry(&self, file: &str, not_after: i64) {
        self.certificate_expiry
            .get_or_create(&FileLabels {
                file: file.to_string(),
            })
            .set(not_after);
    }
}
