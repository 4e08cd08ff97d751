//! What the daemon measures about itself, and (later) how it serves it.

mod registry;
mod warm;

pub use registry::{Metrics, PortLabels, ReasonLabels};
pub use warm::{RowCounts, WarmMetrics};
