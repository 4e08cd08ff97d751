//! Logging never blocks port sync (issue 11, item 12): with the SYSLOG
//! output going to a syslog socket that is bound but never read, and full
//! before the daemon starts, link changes still reach STATE_DB, and the
//! lines that could not be sent are counted in
//! `portsyncd_log_lines_dropped_total`.
//!
//! Upstream logs through glibc's `syslog(3)`, which blocks on a full
//! socket; today's main waited up to 200 ms per line on the STATE_DB path.

mod common;
mod common_tls;

use std::io;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Instant;

use common::*;
use common_tls::{Certs, METRICS_URL, curl_as, wait_sample_at_least};

/// Fills `wedged`'s receive queue from another socket until the kernel
/// refuses more; returns how many datagrams it took.
fn fill(wedged: &std::path::Path) -> usize {
    let sender = UnixDatagram::unbound().unwrap();
    sender.set_nonblocking(true).unwrap();
    let mut n = 0;
    loop {
        match sender.send_to(b"<13>filler: queue stuffing", wedged) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return n,
            Err(e) => panic!("cannot fill the syslog socket: {e}"),
        }
        assert!(n < 1_000_000, "the socket never filled");
    }
}

#[test]
fn a_wedged_syslog_socket_never_slows_port_sync() {
    let names = port_names(8);
    let bed = Bed::new(&as_strs(&names));
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("log.sock");
    let _wedged = UnixDatagram::bind(&socket).unwrap();
    let queued = fill(&socket);
    assert!(queued > 0);

    // Debug level: several lines per link event, all to the wedged socket.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", bed.ns.name(), BIN])
        .arg("--db-config")
        .arg(bed.redis.db_config())
        .args(["--log-level", "debug", "--log-output", "syslog"])
        .arg("--syslog-socket")
        .arg(&socket)
        .args(certs.daemon_args(&[]));
    let mut daemon = Daemon::launch(cmd);
    // The log is the wedged socket's: progress is seen in Redis.
    wait_until(
        DEADLINE,
        "PortConfigDone (the initial dump is over)",
        || {
            daemon.assert_alive();
            bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
        },
    );
    bed.redis.wait_configured(&bed.names());
    for name in bed.names() {
        bed.ns.add_port(name);
    }

    let mut rounds = Vec::new();
    for round in 0..6 {
        let up = round % 2 == 0;
        let verb = if up { "up" } else { "down" };
        let lines: Vec<String> = names
            .iter()
            .map(|n| format!("link set dev {n} {verb}"))
            .collect();
        let started = Instant::now();
        bed.ns.batch(&lines);
        for name in &names {
            bed.redis
                .wait_state(name, &[("admin_status", verb), ("state", "ok")]);
        }
        rounds.push(started.elapsed());
    }
    daemon.assert_alive();
    // Measured, not asserted tightly: on an idle 2-core machine each round
    // (8 ports) converges in milliseconds; with a 200 ms wait per log line
    // it took seconds.
    eprintln!("rounds of 8 admin changes converged in {rounds:?}");
    let slowest = rounds.iter().max().unwrap();
    assert!(*slowest < DEADLINE, "{rounds:?}");

    // The endpoint is up by now (the daemon started it before Redis).
    let (cert, key) = certs.client();
    wait_until(DEADLINE, "the metrics endpoint to answer", || {
        curl_as(&bed.ns, &certs, (&cert, &key), &[], METRICS_URL).code != "000"
    });
    let body = wait_sample_at_least(
        &bed.ns,
        &certs,
        "portsyncd_log_lines_dropped_total",
        (6 * names.len()) as f64,
    );
    let dropped = common_tls::sample(&body, "portsyncd_log_lines_dropped_total").unwrap();
    eprintln!("log lines dropped: {dropped} (the socket held {queued} before the start)");
    // Nothing went to stderr instead: dropping is the decision, not a detour.
    let stderr = daemon.log();
    assert!(!stderr.contains("published port state"), "{stderr}");
}
