//! The endpoint's audit trail: one structured log event per thing a SIEM
//! wants to see, each with a fixed `event` field (a JSON field under
//! `--log-format json`, `event="..."` in text), listed with their fields in
//! docs/security.md.
//!
//! Refused clients are the one event an attacker can cause at will, so
//! they are rate limited: past the budget they are counted, and the next
//! event that gets through says how many were left out (`suppressed`).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::{info, warn};

use super::limits::TokenBucket;

/// Refused-client events per second, and in a burst.
const REFUSED_PER_SECOND: f64 = 10.0;
const REFUSED_BURST: f64 = 50.0;

pub const CLIENT_REFUSED: &str = "metrics_client_refused";
pub const TLS_RELOAD: &str = "metrics_tls_reload";
pub const ENDPOINT_OPEN: &str = "metrics_endpoint_open";
pub const ENDPOINT_CLOSED: &str = "metrics_endpoint_closed";
pub const RELOAD_WATCHER_DIED: &str = "metrics_reload_watcher_died";

/// The budget of refused-client events.
pub struct RefusalLog {
    bucket: Mutex<TokenBucket>,
    suppressed: AtomicU64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            bucket: Mutex::new(TokenBucket::new(
                REFUSED_PER_SECOND,
                REFUSED_BURST,
                Instant::now(),
            )),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl RefusalLog {
    /// A client was refused: its address, the SANs it presented (empty when
    /// it presented no certificate or got no further than TCP) and why.
    pub fn refused(&self, peer: SocketAddr, sans: &[String], reason: &str) {
        let admitted = self
            .bucket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Instant::now())
            .is_ok();
        if !admitted {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        warn!(
            event = CLIENT_REFUSED,
            peer = %peer.ip(),
            port = peer.port(),
            sans = %sans.join(","),
            reason,
            suppressed,
            "metrics client refused"
        );
    }
}

/// A reload of the TLS files: `ok`, or `kept_old` with the error (which
/// names the file).
pub fn reload(trigger: &str, files: &str, error: Option<&str>) {
    match error {
        None => info!(
            event = TLS_RELOAD,
            result = "ok",
            trigger,
            files,
            "metrics TLS files reloaded"
        ),
        Some(error) => warn!(
            event = TLS_RELOAD,
            result = "kept_old",
            trigger,
            files,
            error,
            "metrics TLS reload refused; the previous certificate, key and CA stay in service"
        ),
    }
}
