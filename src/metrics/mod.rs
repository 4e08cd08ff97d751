//! What the daemon measures about itself, and (later) how it serves it.

mod registry;

pub use registry::{Metrics, PortLabels, ReasonLabels};
