//! Redis going away, link storms: the daemon stays up and STATE_DB converges
//! to what the kernel says.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Batch lines that create each port as a veth pair (peer `pN`).
fn create_lines(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| format!("link add {n} type veth peer name {}", Netns::peer_of(n)))
        .collect()
}

/// `rounds` rounds of admin up then admin down on every port.
fn flap_lines(names: &[&str], rounds: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..rounds {
        for n in names {
            lines.push(format!("link set dev {n} up"));
        }
        for n in names {
            lines.push(format!("link set dev {n} down"));
        }
    }
    lines
}

/// The final mix: port i admin up when i is even, carrier (peer up) when i
/// is a multiple of 3, MTU 9100 when i is a multiple of 5.
fn final_lines(names: &[&str]) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let peer = Netns::peer_of(n);
        if i.is_multiple_of(3) {
            lines.push(format!("link set dev {peer} up"));
        } else {
            lines.push(format!("link set dev {peer} down"));
        }
        if i.is_multiple_of(5) {
            lines.push(format!("link set dev {n} mtu 9100"));
        }
        lines.push(format!(
            "link set dev {n} {}",
            if i.is_multiple_of(2) { "up" } else { "down" }
        ));
    }
    lines
}

/// The STATE_DB fields the final mix must produce for port i.
fn final_expected(i: usize) -> [(&'static str, &'static str); 4] {
    let admin = i.is_multiple_of(2);
    let carrier = admin && i.is_multiple_of(3);
    [
        ("state", "ok"),
        ("admin_status", updown(admin)),
        ("netdev_oper_status", updown(carrier)),
        ("mtu", if i.is_multiple_of(5) { "9100" } else { "1500" }),
    ]
}

fn assert_final_mix(bed: &Bed, names: &[&str], rows: &std::collections::BTreeMap<String, Fields>) {
    for (i, n) in names.iter().enumerate() {
        let row = &rows[*n];
        for (f, v) in final_expected(i) {
            assert_eq!(
                row.get(f).map(String::as_str),
                Some(v),
                "{n}: field {f} in STATE_DB row {row:?}; kernel: {:?}",
                bed.ns.link(n)
            );
        }
    }
}

/// Redis is shut down (SHUTDOWN SAVE) in the middle of a burst of link
/// changes and comes back a few seconds later with its data: the same daemon
/// process brings STATE_DB to the kernel's final state.
#[test]
fn redis_restart_mid_burst_converges_without_daemon_restart() {
    let names = port_names(8);
    let names = as_strs(&names);
    let mut bed = Bed::new(&names);
    let mut daemon = bed.daemon();
    let pid = daemon.pid();
    bed.redis.wait_configured(&names);
    bed.ns.batch(&create_lines(&names));
    wait_until(DEADLINE, "PortInitDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    bed.wait_all_settled(DEADLINE, &names);

    // First half of the burst, with Redis still there.
    bed.ns.batch(&flap_lines(&names, 5));
    bed.redis.stop_saving();

    // The rest of the burst while Redis is away, spread over a few seconds.
    let down_since = Instant::now();
    for _ in 0..4 {
        bed.ns.batch(&flap_lines(&names, 3));
        thread::sleep(Duration::from_millis(500));
        daemon.assert_alive();
    }
    bed.ns.batch(&final_lines(&names));
    while down_since.elapsed() < Duration::from_secs(3) {
        thread::sleep(Duration::from_millis(100));
    }
    daemon.assert_alive();

    bed.redis.start_again();
    let rows = bed.wait_all_settled(Duration::from_secs(20), &names);
    assert_final_mix(&bed, &names, &rows);

    daemon.assert_alive();
    assert_eq!(daemon.pid(), pid);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon process {pid} is gone"
    );

    // And it keeps working afterwards.
    bed.ns.set_up(names[1]);
    bed.redis.wait_state(names[1], &[("admin_status", "up")]);
    daemon.assert_alive();
}

/// The daemon is started while Redis is down: it waits instead of exiting,
/// and does its cold start once Redis is there.
#[test]
fn daemon_started_before_redis_waits_for_it() {
    let names = port_names(2);
    let names = as_strs(&names);
    let mut bed = Bed::new(&names);
    bed.redis.stop_saving();

    let mut daemon = bed.daemon();
    // Let it try (and fail) to connect for a while.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        daemon.assert_alive();
        thread::sleep(Duration::from_millis(100));
    }
    bed.redis.start_again();

    let done = wait_for(
        Duration::from_secs(20),
        "APPL_DB PORT_TABLE:PortConfigDone",
        || bed.redis.hgetall(APPL_DB, "PORT_TABLE:PortConfigDone"),
        |h| !h.is_empty(),
    );
    assert_eq!(done, fields(&[("count", "2")]));
    bed.redis.wait_configured(&names);
    for n in &names {
        bed.ns.add_port(n);
        bed.ns.set_up(n);
    }
    for n in &names {
        bed.redis
            .wait_state(n, &[("state", "ok"), ("admin_status", "up")]);
    }
    daemon.assert_alive();
}

/// 64 ports x 20 rounds of admin up/down through `ip -batch`, then a final
/// mix of admin, carrier and MTU: every row ends right.
#[test]
fn storm_of_64_ports_ends_in_the_right_state() {
    let names = port_names(64);
    let names = as_strs(&names);
    let bed = Bed::new(&names);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&names);
    bed.ns.batch(&create_lines(&names));
    wait_until(Duration::from_secs(20), "PortInitDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });

    let mut lines = flap_lines(&names, 20);
    lines.extend(final_lines(&names));
    bed.ns.batch(&lines);

    let rows = bed.wait_all_settled(Duration::from_secs(20), &names);
    assert_final_mix(&bed, &names, &rows);
    daemon.assert_alive();
}
