//! The TLS configuration in service, and replacing it on SIGHUP or when a
//! file changes. A new configuration is built completely (every check of
//! start-up) before it replaces the old one; if anything is wrong the old
//! one stays, and the log (event `metrics_tls_reload`, `kept_old`) and
//! `portsyncd_tls_reloads_total{reason="failed"}` say so. Open connections
//! keep the configuration they started with.
//!
//! Building never panics the watcher: the parsers are maintained and
//! fuzzed, and a panic all the same is caught and refused like a bad file.
//! The watcher task itself is supervised by the server (a watcher that
//! ended is logged, counted and restarted).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Result, anyhow};
use rustls::ServerConfig;
use tokio::sync::watch;

use super::args::MetricsArgs;
use super::audit;
use super::certs::{TlsMaterial, files_stamp, load};
use super::endpoint_metrics::EndpointMetrics;

/// How often the files' metadata is compared with what is in service (and
/// how often a closed endpoint tries to open).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

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

/// Loads every file and builds the configuration exactly as start-up does;
/// a panic anywhere in it is an error like any other.
fn build_checked(args: &MetricsArgs) -> Result<(Arc<ServerConfig>, TlsMaterial)> {
    catch_unwind(AssertUnwindSafe(|| {
        let material = load(args)?;
        let config = args
            .tls_profile
            .server_config(&material, &args.metrics_allow_client)?;
        Ok((config, material))
    }))
    .unwrap_or_else(|_| {
        Err(anyhow!(
            "reading the metrics TLS files ({}) failed inside a parser (a bug: please report \
             it with the files); replace them with a set from certs-example/gen-certs.sh",
            files(args)
        ))
    })
}

/// The files behind a configuration, for logs.
pub fn files(args: &MetricsArgs) -> String {
    [&args.metrics_cert, &args.metrics_key, &args.metrics_ca]
        .into_iter()
        .chain(args.metrics_crl.iter())
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Every check start-up makes of the TLS files, without serving (for
/// `portsyncd check-config`). Returns the earliest `notAfter` of the server
/// certificate and the CA, in Unix seconds.
pub fn check_files(args: &MetricsArgs) -> Result<i64> {
    let (_, material) = build_checked(args)?;
    Ok(material.cert_not_after.min(material.ca_not_after))
}

impl TlsState {
    /// The configuration the endpoint opens with.
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
        let files = files(&self.args);
        match build(&self.args, &self.endpoint) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                self.endpoint.reloaded("ok");
                audit::reload(why, &files, None);
            }
            Err(e) => {
                self.endpoint.reloaded("failed");
                audit::reload(why, &files, Some(&format!("{e:#}")));
            }
        }
    }

    /// Reloads on every SIGHUP (`hup` changes) and whenever a file's
    /// metadata changes.
    pub async fn watch(self: Arc<Self>, mut hup: watch::Receiver<u64>) {
        let mut stamp = files_stamp(&self.args);
        loop {
            tokio::select! {
                changed = hup.changed() => {
                    if changed.is_err() {
                        // The SIGHUP forwarder is gone: poll only.
                        tokio::time::sleep(POLL_INTERVAL).await;
                        continue;
                    }
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
