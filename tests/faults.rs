//! Fault injection: Redis killed and restarted from an older dump, Redis
//! frozen longer than the daemon's timeouts, the netlink socket overrun on
//! purpose, SIGTERM in the middle of a storm. Each test ends with every
//! STATE_DB PORT_TABLE row equal to what the kernel says.
//! (tests/resilience.rs covers a clean SHUTDOWN SAVE restart and a daemon
//! started before Redis.)

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const PORTS: usize = 16;
/// Convergence after a fault may include reconnect backoff (up to 5 s) and a
/// full re-dump; generous, never a speed claim.
const CONVERGE: Duration = Duration::from_secs(40);

/// `rounds` rounds of changes on every port, each round leaving a different
/// mix of admin state, carrier (veth peer) and MTU. Round `r` of port `i`:
/// admin up when `i + r` is even, carrier when `i + r` is a multiple of 3,
/// MTU 1500 + 100 * ((i + r) % 4).
fn storm(names: &[&str], first_round: usize, rounds: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for r in first_round..first_round + rounds {
        for (i, n) in names.iter().enumerate() {
            let k = i + r;
            let peer = Netns::peer_of(n);
            let carrier = if k.is_multiple_of(3) { "up" } else { "down" };
            let admin = if k.is_multiple_of(2) { "up" } else { "down" };
            lines.push(format!("link set dev {peer} {carrier}"));
            lines.push(format!("link set dev {n} mtu {}", 1500 + 100 * (k % 4)));
            lines.push(format!("link set dev {n} {admin}"));
        }
    }
    lines
}

/// A bed with `PORTS` veth ports created, configured and in STATE_DB, and
/// the daemon (started with `args`) that got it there.
fn synced_bed(args: &[&str]) -> (Bed, Daemon, Vec<String>) {
    let names = port_names(PORTS);
    let bed = Bed::new(&as_strs(&names));
    let daemon = Daemon::start(&bed.ns, bed.redis.db_config(), args);
    bed.redis.wait_configured(&as_strs(&names));
    for n in &names {
        bed.ns.add_port(n);
    }
    wait_until(Duration::from_secs(20), "PortInitDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    bed.wait_all_settled(CONVERGE, &as_strs(&names));
    (bed, daemon, names)
}

/// Redis is SIGKILLed after a storm it had fully acknowledged, and comes
/// back from a dump taken half-way through that storm: every row written
/// after the dump is gone or stale in the restarted Redis. The daemon sees
/// the reconnect, re-dumps every link, and rewrites what was lost.
#[test]
fn redis_killed_and_restarted_from_an_older_dump_converges() {
    let (mut bed, mut daemon, names) = synced_bed(&[]);
    let names = as_strs(&names);

    bed.ns.batch(&storm(&names, 0, 3));
    bed.wait_all_settled(CONVERGE, &names);
    redis::cmd("SAVE").exec(&mut bed.redis.con(0)).unwrap();
    let rows_in_dump = bed.wait_all_settled(CONVERGE, &names);

    bed.ns.batch(&storm(&names, 3, 4));
    let rows_acked = bed.wait_all_settled(CONVERGE, &names);
    assert_ne!(
        rows_in_dump, rows_acked,
        "the second half of the storm changed nothing: the dump would not be stale"
    );
    bed.redis.kill_hard();
    bed.redis.start_again();

    bed.wait_all_settled(CONVERGE, &names);
    assert!(
        daemon
            .log()
            .contains("re-dumping every link to rewrite STATE_DB"),
        "converged without the reconnect re-dump?"
    );
    daemon.assert_alive();
}

/// Redis stopped with SIGSTOP for 12 s (longer than the 2 s connect and 5 s
/// response timeouts) while links change: the daemon keeps running, and
/// the rows converge once Redis continues.
#[test]
fn redis_frozen_longer_than_the_timeouts_converges() {
    let (bed, mut daemon, names) = synced_bed(&[]);
    let names = as_strs(&names);

    bed.redis.signal(libc::SIGSTOP);
    bed.ns.batch(&storm(&names, 0, 5));
    // Stay frozen until the writer's requests have timed out at least once.
    wait_until(Duration::from_secs(30), "the writer to time out", || {
        daemon.log().contains("lost Redis")
    });
    thread::sleep(Duration::from_secs(5));
    daemon.assert_alive();
    bed.ns.batch(&storm(&names, 5, 2));
    bed.redis.signal(libc::SIGCONT);

    bed.wait_all_settled(CONVERGE, &names);
    daemon.assert_alive();
}

/// The daemon, with the smallest netlink buffer the kernel grants, is
/// stopped (SIGSTOP) while a storm fills its socket, then continued: it
/// must hit ENOBUFS (asserted from its log), re-dump, and converge.
#[test]
fn netlink_overrun_while_stopped_is_repaired_by_a_redump() {
    let (bed, mut daemon, names) = synced_bed(&["--netlink-rcvbuf", "4096"]);
    let names = as_strs(&names);

    daemon.signal(libc::SIGSTOP);
    bed.ns.batch(&storm(&names, 0, 6));
    daemon.signal(libc::SIGCONT);

    wait_until(
        Duration::from_secs(20),
        "an overrun in the daemon log",
        || daemon.log().contains("netlink receive buffer overran"),
    );
    bed.wait_all_settled(CONVERGE, &names);
    daemon.assert_alive();
}

/// SIGTERM while a storm is being applied: the daemon flushes and exits 0;
/// a new daemon, started as a warm restart (what an upgrade does; a cold
/// start would, like upstream, take the existing ports for old interfaces
/// and wait for them to be recreated), converges to the kernel's final state.
#[test]
fn sigterm_mid_storm_exits_zero_and_a_restart_converges() {
    let (bed, mut daemon, names) = synced_bed(&[]);
    let names = as_strs(&names);

    // The storm runs, batch after batch, until the daemon has exited: the
    // SIGTERM lands in the middle of it whatever the machine's speed.
    let daemon_gone = std::sync::atomic::AtomicBool::new(false);
    let status = thread::scope(|s| {
        let storm = s.spawn(|| {
            let mut round = 0;
            while !daemon_gone.load(std::sync::atomic::Ordering::Relaxed) {
                bed.ns.batch(&storm(&names, round, 2));
                round += 2;
            }
        });
        wait_until(
            Duration::from_secs(20),
            "storm events to reach the daemon",
            || daemon.log().matches("published port state").count() > 2 * PORTS,
        );
        let status = daemon.sigterm_and_wait(Duration::from_secs(20));
        daemon_gone.store(true, std::sync::atomic::Ordering::Relaxed);
        storm.join().expect("storm thread");
        status
    });
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(daemon.log().contains("shutting down"), "no shutdown line");

    bed.redis.hset(
        STATE_DB,
        "WARM_RESTART_ENABLE_TABLE|swss",
        &[("enable", "true")],
    );
    let restarted = Daemon::start(&bed.ns, bed.redis.db_config(), &[]);
    bed.wait_all_settled(CONVERGE, &names);
    assert!(
        restarted.log().contains("warm=true"),
        "the restart was not a warm start"
    );
}

/// A netlink receive that fails (ENOMEM injected with strace into the
/// daemon's next recvmmsg) may have lost a message: the daemon re-dumps, and
/// the port the failed receive was about is right without any other
/// traffic. Its netlink health comes back with the next good receive.
#[test]
fn a_failed_netlink_receive_is_repaired_by_a_redump() {
    let bed = Bed::new(&["Ethernet0"]);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&["Ethernet0"]);
    bed.ns.add_port("Ethernet0");
    bed.wait_all_match_kernel(CONVERGE, &["Ethernet0"]);
    // The daemon is idle in epoll: its next recvmmsg is the one that reads
    // the change below.
    let strace = fail_next_netlink_receive(daemon.pid());
    bed.ns.set_up("Ethernet0");
    wait_until(
        CONVERGE,
        "the injected receive error in the daemon log",
        || daemon.log().contains("netlink receive failed"),
    );
    bed.wait_all_match_kernel(CONVERGE, &["Ethernet0"]);
    drop(strace);
    daemon.assert_alive();
}

/// `--shutdown-timeout 1` with Redis hanging (every client paused): the
/// timeout bounds the whole flush, a round in flight included.
#[test]
fn the_shutdown_timeout_bounds_a_flush_into_a_hanging_redis() {
    let (bed, mut daemon, names) = synced_bed(&["--shutdown-timeout", "1"]);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4_000)
        .arg("ALL")
        .query(&mut bed.redis.con(0))
        .unwrap();
    bed.ns.set_up(&names[0]);
    wait_until(CONVERGE, "the daemon to read the change", || {
        daemon
            .log()
            .contains(&format!("port link message link={} ", names[0]))
    });
    let started = Instant::now();
    let status = daemon.sigterm_and_wait(Duration::from_secs(20));
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    // 1 s, and the process' own exit; the old loop took 4.5 s (it waited
    // for the round's 5 s response timeout).
    assert!(
        took < Duration::from_millis(2500),
        "exit took {took:?}; log:\n{}",
        daemon.log()
    );
}
