//! A bed ready for a warm restart, shared by the warm-restart tests and
//! benchmark.

use std::time::Duration;

use super::{APPL_DB, Bed, Netns, STATE_DB, as_strs, port_names, wait_until};

/// A bed whose daemon ran cold once: ports created after PortConfigDone (as
/// syncd does; earlier they would be "old" on a cold start), all up with
/// carrier, STATE_DB right, PortInitDone sent. The daemon is stopped and
/// warm restart is enabled, so the next start is warm. `timeout` bounds
/// each wait.
pub fn bed_after_cold_run(n: usize, timeout: Duration) -> Bed {
    let names = port_names(n);
    let bed = Bed::new(&as_strs(&names));
    bed.redis.hset(
        STATE_DB,
        "WARM_RESTART_ENABLE_TABLE|system",
        &[("enable", "true")],
    );
    let mut daemon = bed.daemon();
    wait_until(timeout, "PortConfigDone after the cold start", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    let mut lines = Vec::new();
    for name in &names {
        let peer = Netns::peer_of(name);
        lines.push(format!("link add {name} type veth peer name {peer}"));
        lines.push(format!("link set dev {name} up"));
        lines.push(format!("link set dev {peer} up"));
    }
    bed.ns.batch(&lines);
    bed.wait_all_match_kernel(timeout, &bed.names());
    wait_until(timeout, "PortInitDone after the cold start", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    let status = daemon.sigterm_and_wait(timeout);
    assert!(status.success(), "cold run exit: {status:?}");
    bed
}
