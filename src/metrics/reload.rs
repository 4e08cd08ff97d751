//! The TLS configuration in service, and replacing it on SIGHUP or when a
//! file changes. A new configuration is built completely (every check of
//! start-up) before it replaces the old one; if anything is wrong the old
//! one stays, and the log and `portsyncd_tls_reloads_total{reason="failed"}`
//! say so. Open connections keep the configuration they started with.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Result;
use rustls::ServerConfig;
use tokio::signal::unix::Signal;
use tracing::{error, info};

use super::args::MetricsArgs;
use super::certs::{TlsMaterial, files_stamp, load};
use super::endpoint_metrics::EndpointMetrics;

/// How often the files' metadata is compared with what is in service.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

pub struct TlsState {
    args: MetricsArgs,
    endpoint: EndpointMetrics,
    current: RwLock<Arc<ServerConfig>>,
}

/// Loads, checks and builds one configuration; records the expiry times.
fn build(args: &MetricsArgs, endpoint: &EndpointMetrics) -> Result<Arc<ServerConfig>> {
    let (config, material) = build_checked(args)?;
    endpoint.set_expiry("server", material.cert_not_after);
    endpoint.set_expiry("ca", material.ca_not_after);
    Ok(config)
}

/// Loads every file and builds the configuration exactly as start-up does.
fn build_checked(args: &MetricsArgs) -> Result<(Arc<ServerConfig>, TlsMaterial)> {
    let material = load(args)?;
    let config = args
        .tls_profile
        .server_config(&material, &args.metrics_allow_client)?;
    Ok((config, material))
}

/// Every check start-up makes of the TLS files, without serving (for
/// `portsyncd check-config`). Returns the earliest `notAfter` of the server
/// certificate and the CA, in Unix seconds.
pub fn check_files(args: &MetricsArgs) -> Result<i64> {
    let (_, material) = build_checked(args)?;
    Ok(material.cert_not_after.min(material.ca_not_after))
}

impl TlsState {
    /// The configuration at start-up; an error here stops the daemon.
    pub fn new(args: MetricsArgs, endpoint: EndpointMetrics) -> Result<Self> {
        let config = build(&args, &endpoint)?;
        endpoint.tls_last_reload_ok.set(1);
        Ok(Self {
            args,
            endpoint,
            current: RwLock::new(config),
        })
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Rebuilds from the files; keeps the old configuration on any error.
    pub fn reload(&self, why: &str) {
        match build(&self.args, &self.endpoint) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                self.endpoint.reloaded("ok");
                info!(trigger = why, "metrics TLS files reloaded");
            }
            Err(e) => {
                self.endpoint.reloaded("failed");
                error!(trigger = why, error = %format!("{e:#}"),
                    "metrics TLS reload refused; the previous certificate, key and CA stay in service");
            }
        }
    }

    /// Reloads on every SIGHUP and whenever a file's metadata changes.
    pub async fn watch(self: Arc<Self>, mut sighup: Signal) {
        let mut stamp = files_stamp(&self.args);
        loop {
            tokio::select! {
                _ = sighup.recv() => {
                    stamp = files_stamp(&self.args);
                    self.reload("SIGHUP");
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => {
                    let now = files_stamp(&self.args);
                    if now != stamp {
                        stamp = now;
                        self.reload("file change");
                    }
                }
            }
        }
    }
}
