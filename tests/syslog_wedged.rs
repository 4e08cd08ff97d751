//! Logging never blocks port sync (issue 11, item 12): with the SYSLOG
//! output going to a syslog socket that is bound but never read, and full
//! before the daemon starts, link changes still reach STATE_DB, and the
//! lines that could not be sent are counted in
//! `portsyncd_log_lines_dropped_total`.
//!
//! Upstream logs through glibc's `syslog(3)`, which blocks on a full
//! socket; today's main waited up to 200 ms per line on the STATE_DB path.

mod common;
mod common_syslog;
mod common_tls;

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use common_syslog::SyslogSink;
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

/// A daemon on its own bed, logging at debug level (several lines per link
/// event) to the syslog socket `socket`, that has written PortConfigDone
/// and sees its 8 ports configured.
struct Run {
    // Stopped before its bed goes away.
    daemon: Daemon,
    bed: Bed,
    names: Vec<String>,
}

impl Run {
    fn start(certs: &Certs, socket: &Path) -> Run {
        let names = port_names(8);
        let bed = Bed::new(&as_strs(&names));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", bed.ns.name(), BIN])
            .arg("--db-config")
            .arg(bed.redis.db_config())
            .args(["--log-level", "debug", "--log-output", "syslog"])
            .arg("--syslog-socket")
            .arg(socket)
            .args(certs.daemon_args(&[]));
        let mut daemon = Daemon::launch(cmd);
        // The log is the syslog socket's: progress is seen in Redis.
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
        Run { daemon, bed, names }
    }

    /// Six rounds of 8 admin changes; how long each took to reach STATE_DB.
    fn rounds(&mut self) -> Vec<Duration> {
        let mut rounds = Vec::new();
        for round in 0..6 {
            let up = round % 2 == 0;
            let verb = if up { "up" } else { "down" };
            let lines: Vec<String> = self
                .names
                .iter()
                .map(|n| format!("link set dev {n} {verb}"))
                .collect();
            let started = Instant::now();
            self.bed.ns.batch(&lines);
            for name in &self.names {
                self.bed
                    .redis
                    .wait_state(name, &[("admin_status", verb), ("state", "ok")]);
            }
            rounds.push(started.elapsed());
        }
        self.daemon.assert_alive();
        rounds
    }
}

#[test]
fn a_wedged_syslog_socket_never_slows_port_sync() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();

    // The baseline: the same rounds with a syslog socket that is read.
    let healthy_socket = dir.path().join("healthy.sock");
    let mut sink = SyslogSink::bind(&healthy_socket);
    let mut healthy = Run::start(&certs, &healthy_socket);
    let baseline = healthy.rounds();
    // The baseline did log through the socket, at debug level.
    sink.wait_for("portsyncd[");
    drop(healthy);

    let socket = dir.path().join("log.sock");
    let _wedged = UnixDatagram::bind(&socket).unwrap();
    let queued = fill(&socket);
    assert!(queued > 0);
    let mut run = Run::start(&certs, &socket);
    let rounds = run.rounds();
    eprintln!(
        "rounds of 8 admin changes converged in {rounds:?} with the syslog socket wedged, \
         {baseline:?} with it read"
    );
    // Each round against the same rounds with a healthy socket: sending
    // never waits, so the wedged socket costs nothing measurable. With a
    // 200 ms wait per log line (several lines per port) a round of 8 ports
    // took seconds; the second of slack absorbs a noisy shared machine.
    let bound = *baseline.iter().max().unwrap() * 2 + Duration::from_secs(1);
    for (i, took) in rounds.iter().enumerate() {
        assert!(
            *took < bound,
            "round {i} took {took:?} with the syslog socket wedged, over {bound:?} \
             (the same rounds with it read: {baseline:?}; all wedged rounds: {rounds:?})"
        );
    }
    let Run { daemon, bed, names } = run;
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
