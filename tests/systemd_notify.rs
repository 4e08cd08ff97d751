//! The sd_notify protocol against a real unix datagram socket the test
//! listens on as `$NOTIFY_SOCKET`: READY=1 only once PortConfigDone is in
//! Redis, WATCHDOG=1 while the pipeline makes progress (also through a Redis
//! freeze longer than the daemon's timeouts), none while the daemon is
//! stopped, STOPPING=1 as soon as SIGTERM arrives (before the flush).

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

/// The test's end of `$NOTIFY_SOCKET`.
struct NotifyListener {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: String,
}

impl NotifyListener {
    fn bind() -> NotifyListener {
        let dir = tempfile::Builder::new()
            .prefix("psd-notify-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifyListener {
            socket,
            path: path.to_str().unwrap().to_string(),
            _dir: dir,
        }
    }

    /// The next message, or `None` when nothing arrives within `timeout`.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 1024];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Receives until a message has a line `line`; returns every message
    /// seen before it (and it). Panics after `timeout`.
    fn wait_for_line(&self, timeout: Duration, line: &str) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < timeout {
            if let Some(msg) = self.recv(Duration::from_millis(200)) {
                let found = msg.lines().any(|l| l == line);
                seen.push(msg);
                if found {
                    return seen;
                }
            }
        }
        panic!("no {line:?} within {timeout:?}; received: {seen:?}");
    }

    /// Waits for `n` WATCHDOG=1 pings that arrive before `until`.
    fn pings_before(&self, n: usize, until: Instant) -> usize {
        let mut pings = 0;
        while pings < n && Instant::now() < until {
            if let Some(msg) = self.recv(Duration::from_millis(200))
                && msg.lines().any(|l| l == "WATCHDOG=1")
            {
                pings += 1;
            }
        }
        pings
    }

    /// Discards everything already queued on the socket.
    fn drain(&self) {
        while self.recv(Duration::from_millis(1)).is_some() {}
    }
}

fn port_config_done_in_redis(redis: &RedisServer) -> bool {
    // The producer writes `_PORT_TABLE:<key>`; the consumer moves it to
    // `PORT_TABLE:<key>`.
    redis.exists(APPL_DB, "_PORT_TABLE:PortConfigDone")
        || redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
}

#[test]
fn ready_after_port_config_done_then_watchdog_tracks_progress() {
    let names = port_names(4);
    let names = as_strs(&names);
    let bed = Bed::new(&names);
    let notify = NotifyListener::bind();

    // Writes are held back for 3 s (less than the daemon's 5 s response
    // timeout): a READY=1 sent before PortConfigDone is acknowledged would
    // arrive while it is still missing from Redis.
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "3000", "WRITE"])
        .exec(&mut bed.redis.con(0))
        .unwrap();
    let mut daemon = Daemon::start_with_env(
        &bed.ns,
        bed.redis.db_config(),
        &[],
        &[
            ("NOTIFY_SOCKET", &notify.path),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let before_ready = notify.wait_for_line(Duration::from_secs(30), "READY=1");
    assert!(
        port_config_done_in_redis(&bed.redis),
        "READY=1 arrived before PortConfigDone was in APPL_DB; messages: {before_ready:?}"
    );
    assert!(
        before_ready.iter().any(|m| m.starts_with("STATUS=")),
        "no STATUS= line before READY=1: {before_ready:?}"
    );

    // Steady state: pings keep coming (period 1 s, so one per 0.5 s).
    assert_eq!(
        notify.pings_before(3, Instant::now() + Duration::from_secs(20)),
        3
    );

    // Redis frozen for 8 s, longer than the 5 s response timeout, while the
    // links change: the writer retries with backoff, which is progress, so
    // the pings go on during the freeze.
    for n in &names {
        bed.ns.add_port(n);
    }
    let paused_until = Instant::now() + Duration::from_secs(8);
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "8000", "ALL"])
        .exec(&mut bed.redis.con(0))
        .unwrap();
    for n in &names {
        bed.ns.set_up(n);
    }
    assert_eq!(
        notify.pings_before(4, paused_until),
        4,
        "the watchdog pings stopped while Redis was frozen"
    );
    // The harness' own connections would block on the paused server too.
    while Instant::now() < paused_until {
        notify.recv(Duration::from_millis(100));
    }
    bed.wait_all_match_kernel(Duration::from_secs(30), &names);
    daemon.assert_alive();

    // A daemon that cannot run sends nothing; it resumes when continued.
    daemon.signal(libc::SIGSTOP);
    notify.drain();
    assert_eq!(notify.recv(Duration::from_secs(3)), None);
    daemon.signal(libc::SIGCONT);
    assert_eq!(
        notify.pings_before(1, Instant::now() + Duration::from_secs(20)),
        1
    );

    // SIGTERM with a write pending that Redis holds back (for 2 s, less
    // than the 3 s the flush may take): STOPPING=1 comes when the stop
    // begins, while the flush still waits, not after it; then a clean exit
    // with the write in Redis.
    redis::cmd("CLIENT")
        .arg(&["PAUSE", "2000", "WRITE"])
        .exec(&mut bed.redis.con(0))
        .unwrap();
    bed.ns.set_down(names[0]);
    // The write is pending when Redis holds a client back on STATE_DB
    // (CLIENT LIST: flag b, db 6), not after a guessed 100 ms.
    wait_until(
        DEADLINE,
        "the daemon's STATE_DB write to be held back",
        || {
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut bed.redis.con(0))
                .unwrap();
            clients.lines().any(|c| {
                let field = |name: &str| {
                    c.split(' ')
                        .find_map(|f| f.strip_prefix(name))
                        .unwrap_or_default()
                };
                field("db=") == STATE_DB.to_string() && field("flags=").contains('b')
            })
        },
    );
    notify.drain();
    daemon.signal(libc::SIGTERM);
    notify.wait_for_line(Duration::from_secs(1), "STOPPING=1");
    daemon.assert_alive();
    let status = daemon.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    bed.wait_all_match_kernel(Duration::from_secs(5), &names);
}

/// Warm restart: READY=1 once the reconcile is recorded in STATE_DB
/// (`WARM_RESTART_TABLE|portsyncd` state `reconciled`), without any
/// PortConfigDone from this process.
#[test]
fn warm_restart_is_ready_after_the_reconcile() {
    let names = port_names(2);
    let names = as_strs(&names);
    let bed = Bed::new(&names);
    for n in &names {
        bed.ns.add_port(n);
    }
    bed.redis.hset(
        STATE_DB,
        "WARM_RESTART_ENABLE_TABLE|swss",
        &[("enable", "true")],
    );
    bed.redis.hset(
        STATE_DB,
        "WARM_RESTART_TABLE|portsyncd",
        &[("restore_count", "0")],
    );
    let notify = NotifyListener::bind();
    let _daemon = Daemon::start_with_env(
        &bed.ns,
        bed.redis.db_config(),
        &[],
        &[("NOTIFY_SOCKET", &notify.path)],
    );
    let seen = notify.wait_for_line(Duration::from_secs(30), "READY=1");
    assert_eq!(
        bed.redis
            .hget(STATE_DB, "WARM_RESTART_TABLE|portsyncd", "state")
            .as_deref(),
        Some("reconciled"),
        "READY=1 before the warm reconcile was recorded; messages: {seen:?}"
    );
    assert!(
        seen.iter().any(|m| m.contains("warm reconcile finished")),
        "{seen:?}"
    );
    assert!(!port_config_done_in_redis(&bed.redis));
}
