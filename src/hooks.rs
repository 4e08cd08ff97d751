//! What each pipeline loop (the netlink thread, the Redis writer) shares
//! with the rest of the daemon besides the queue: the heartbeat the systemd
//! watchdog reads, and the re-dump request the writer raises after Redis
//! came back.

use crate::resync::ResyncRequest;
use crate::systemd::Heartbeat;

#[derive(Clone, Default)]
pub struct LoopHooks {
    /// Bumped on every loop turn (see [`crate::systemd`]).
    pub heartbeat: Heartbeat,
    /// Raised by the writer, taken by the netlink thread (see [`crate::resync`]).
    pub resync: ResyncRequest,
}
