//! The daemon's netlink health, as /healthz and the metrics report it,
//! comes back after a failed receive (it used to stay down for good after
//! one error, so /healthz answered 503 until a restart).

mod common;
mod common_tls;

use common::*;
use common_tls::*;

#[test]
fn netlink_health_comes_back_after_a_failed_receive() {
    let bed = Bed::new(&["Ethernet0"]);
    let certs = Certs::new();
    // Starts the daemon, then makes the ports' netdevs, as syncd does.
    let mut daemon = start_daemon(&bed, &certs, &[]);
    bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
    assert_eq!(
        sample(&scrape(&bed.ns, &certs), "portsyncd_netlink_up"),
        Some(1.0)
    );
    let strace = fail_next_netlink_receive(daemon.pid());
    bed.ns.set_up("Ethernet0");
    wait_until(
        DEADLINE,
        "the injected receive error in the daemon log",
        || daemon.log().contains("netlink receive failed"),
    );
    drop(strace);
    // Polls gently (the endpoint rate-limits a client that scrapes fast).
    wait_sample_at_least(&bed.ns, &certs, "portsyncd_netlink_up", 1.0);
    bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
    daemon.assert_alive();
}
