//! What the daemon measures about itself, and the HTTPS endpoint that serves
//! it (IPv6 only, TLS 1.3 only, client certificate required).

mod allow_list;
pub mod args;
mod audit;
mod certs;
mod endpoint_metrics;
mod health;
mod limits;
mod probes;
mod process;
mod registry;
mod reload;
mod render;
mod server;
pub mod tls_profile;
mod unverified;
mod warm;
pub mod x509;

pub use args::MetricsArgs;
pub use registry::{Metrics, PortLabels, ReasonLabels};
pub use reload::check_files as check_tls_files;
pub use server::start as start_server;
pub use warm::{RowCounts, WarmMetrics};
