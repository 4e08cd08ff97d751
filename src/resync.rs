//! A request from the Redis writer to the netlink thread: "dump every link
//! again".
//!
//! The writer raises it when it reconnects after losing Redis. Redis may
//! have come back from an older dump (or be a replica that missed writes),
//! so rows it acknowledged before the loss may be gone or stale; a fresh
//! link dump rewrites every port's row from the kernel. The state script
//! writes only what differs, so when nothing was lost this costs one dump.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Default)]
pub struct ResyncRequest(Arc<AtomicBool>);

impl ResyncRequest {
    pub fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once per [`raise`](Self::raise) (several raises before a take
    /// count as one).
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_are_taken_once() {
        let r = ResyncRequest::default();
        assert!(!r.take());
        r.raise();
        r.clone().raise();
        assert!(r.take());
        assert!(!r.take());
    }
}
