//! The endpoint: what the daemon measures about itself and how it is, over
//! HTTPS (IPv6 only, TLS 1.3 only, client certificate required):
//! `/metrics`, `/healthz`, `/livez`, `/readyz`.
//!
//! Layers, each using only those listed after it: `server` (accept, TLS,
//! HTTP, routing) -> `guard` (who may go on: unverified budget, allow-list,
//! rate limits, audit), `tls` (files, profile, reload), `health` (probes
//! from [`crate::status::Status`]) -> `registry` (every metric, one table)
//! -> `process`, `x509`; the settings are `crate::config::endpoint`.

mod guard;
mod health;
mod process;
mod registry;
mod server;
mod tls;
pub mod x509;

pub use crate::config::endpoint::{MetricsArgs, TlsProfile};
pub use registry::{EndpointMetrics, Metrics, PortLabels, ReasonLabels, RowCounts, WarmMetrics};
pub use server::start as start_server;
pub use tls::check_files as check_tls_files;
