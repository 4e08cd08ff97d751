//! What SONiC's consumers see of the STATE_DB write path, checked as they
//! see it: a keyspace subscriber (as SubscriberStateTable is) that re-reads
//! the row on every event. Every change of a port's four values reaches
//! them as a whole row written after it, even when it folds into one round
//! and ends where Redis already was (intfmgrd replays IPv6 link-local
//! addresses on every `admin_status=up` write); rows other writers damaged
//! are made whole; a port gone from APPL_DB is not written.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::monitor::Monitor;
use common::*;

/// A keyspace subscriber on STATE_DB `PORT_TABLE|*`: each event with the
/// row as read right after it, as a SONiC subscriber sees it.
struct Subscriber {
    seen: Arc<Mutex<Vec<(String, String, Fields)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Subscriber {
    fn start(redis: &RedisServer) -> Subscriber {
        let mut events = redis.con(STATE_DB);
        let mut reads = redis.con(STATE_DB);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let (seen2, stop2, ready2) = (seen.clone(), stop.clone(), ready.clone());
        let thread = thread::spawn(move || {
            let mut pubsub = events.as_pubsub();
            pubsub
                .psubscribe(format!("__keyspace@{STATE_DB}__:PORT_TABLE|*"))
                .expect("PSUBSCRIBE");
            pubsub
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("read timeout");
            ready2.store(true, Ordering::SeqCst);
            while !stop2.load(Ordering::SeqCst) {
                let Ok(msg) = pubsub.get_message() else {
                    continue;
                };
                let channel: String = msg.get_channel().expect("channel");
                let key = channel.split_once(':').expect("keyspace channel").1;
                let event: String = msg.get_payload().expect("event");
                let row: Fields = redis::cmd("HGETALL")
                    .arg(key)
                    .query(&mut reads)
                    .expect("HGETALL after the event");
                let port = key.trim_start_matches("PORT_TABLE|").to_string();
                seen2.lock().unwrap().push((port, event, row));
            }
        });
        wait_until(DEADLINE, "the keyspace subscriber", || {
            ready.load(Ordering::SeqCst)
        });
        Subscriber {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Forgets what was seen so far.
    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// Waits for a write to `port` whose row, read after it, holds `want`
    /// and all four fields.
    fn wait_write(&self, port: &str, want: &[(&str, &str)]) {
        wait_until(
            DEADLINE,
            &format!("a subscriber to see a whole-row write of {port} with {want:?}"),
            || {
                self.seen.lock().unwrap().iter().any(|(p, event, row)| {
                    p == port
                        && event == "hset"
                        && ["state", "netdev_oper_status", "admin_status", "mtu"]
                            .iter()
                            .all(|f| row.contains_key(*f))
                        && want
                            .iter()
                            .all(|(f, v)| row.get(*f).map(String::as_str) == Some(*v))
                })
            },
        );
    }

    /// Events seen for `port`.
    fn events(&self, port: &str) -> Vec<(String, Fields)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == port)
            .map(|(_, e, r)| (e.clone(), r.clone()))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A bed with `ports` configured, their netdevs up and their rows written.
fn synced(ports: &[&str]) -> (Bed, Daemon) {
    let bed = Bed::new(ports);
    let daemon = bed.daemon();
    bed.redis.wait_configured(ports);
    for p in ports {
        bed.ns.add_port(p);
        bed.ns.set_up(p);
    }
    bed.wait_all_match_kernel(DEADLINE, ports);
    (bed, daemon)
}

/// Waits until the daemon's log shows it read `n` link messages of `port`
/// with `admin_up=<up>` (what it read, not what it wrote).
fn wait_read(daemon: &Daemon, port: &str, up: bool, n: usize) {
    let needle = format!("port link message link={port} ");
    let admin = format!("admin_up={up}");
    wait_until(
        DEADLINE,
        &format!("the daemon to read {port} admin_up={up}"),
        || {
            daemon
                .log()
                .lines()
                .filter(|l| l.contains(&needle) && l.contains(&admin))
                .count()
                >= n
        },
    );
}

/// `config interface shutdown` + `startup` while the daemon cannot read
/// (frozen): both messages fold into one round whose final values equal
/// what Redis holds, and the port is written all the same.
#[test]
fn a_shut_no_shut_folded_by_a_fast_bounce_is_written_with_admin_up() {
    let (bed, mut daemon) = synced(&["Ethernet0"]);
    let sub = Subscriber::start(&bed.redis);
    daemon.signal(libc::SIGSTOP);
    bed.ns.set_down("Ethernet0");
    bed.ns.set_up("Ethernet0");
    daemon.signal(libc::SIGCONT);
    sub.wait_write("Ethernet0", &[("admin_status", "up")]);
    daemon.assert_alive();
}

/// The same bounce while a round for another port is held up in Redis:
/// the two messages fold behind it, and still reach the subscriber.
#[test]
fn a_shut_no_shut_folded_while_another_round_is_in_flight_is_written() {
    let (bed, mut daemon) = synced(&["Ethernet0", "Ethernet4"]);
    let sub = Subscriber::start(&bed.redis);
    let mut admin = bed.redis.con(STATE_DB);
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query(&mut admin)
        .unwrap();
    bed.ns.set_down("Ethernet4");
    wait_read(&daemon, "Ethernet4", false, 1);
    bed.ns.set_down("Ethernet0");
    bed.ns.set_up("Ethernet0");
    wait_read(&daemon, "Ethernet0", true, 2);
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut admin)
        .unwrap();
    sub.wait_write("Ethernet4", &[("admin_status", "down")]);
    sub.wait_write("Ethernet0", &[("admin_status", "up")]);
    daemon.assert_alive();
}

/// A message that changes none of the four values writes nothing.
#[test]
fn a_message_that_changes_nothing_writes_nothing() {
    let (bed, mut daemon) = synced(&["Ethernet0"]);
    let monitor = Monitor::start(&bed.redis);
    // A change of a field portsyncd does not publish: the kernel sends
    // RTM_NEWLINK, the four values are the same.
    bed.ns
        .ip(&["link", "set", "Ethernet0", "txqueuelen", "2000"]);
    bed.ns.set_mtu("Ethernet0", 9100);
    bed.redis.wait_state("Ethernet0", &[("mtu", "9100")]);
    // MONITOR is in Redis' order: once the MTU write shows, a write for the
    // txqueuelen message would show before it.
    let writes = || -> Vec<_> {
        monitor
            .port_writes()
            .into_iter()
            .filter(|(_, args)| args.first().is_some_and(|k| k == "PORT_TABLE|Ethernet0"))
            .collect()
    };
    wait_until(DEADLINE, "the MTU write in MONITOR", || {
        writes()
            .iter()
            .any(|(_, a)| a.contains(&"9100".to_string()))
    });
    let writes = writes();
    assert_eq!(
        writes.len(),
        1,
        "only the MTU change was written: {writes:?}"
    );
    daemon.assert_alive();
}

/// Another writer deleted the row, trimmed it, or put wrong values in our
/// fields: the next change writes the whole row.
#[test]
fn a_row_another_writer_damaged_is_made_whole_by_the_next_change() {
    let (bed, mut daemon) = synced(&["Ethernet0"]);
    let key = "PORT_TABLE|Ethernet0";
    let mut con = bed.redis.con(STATE_DB);

    let _: () = redis::cmd("DEL").arg(key).query(&mut con).unwrap();
    bed.ns.set_mtu("Ethernet0", 9000);
    bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");

    let _: () = redis::cmd("HDEL")
        .arg(key)
        .arg("state")
        .arg("mtu")
        .query(&mut con)
        .unwrap();
    bed.ns.set_down("Ethernet0");
    bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");

    bed.redis.hset(
        STATE_DB,
        key,
        &[("state", "bogus"), ("netdev_oper_status", "up")],
    );
    bed.ns.set_up("Ethernet0");
    let row = bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");
    assert_eq!(row.get("state").map(String::as_str), Some("ok"));
    daemon.assert_alive();
}

/// The same damage with no link change after it: a re-dump (here after a
/// netlink overrun) reads the rows and writes the ones that differ.
#[test]
fn damaged_rows_are_made_whole_by_a_redump() {
    let ports = ["Ethernet0", "Ethernet4", "Ethernet8"];
    let bed = Bed::new(&ports);
    let mut daemon = Daemon::start(
        &bed.ns,
        bed.redis.db_config(),
        &["--netlink-rcvbuf", "4096"],
    );
    bed.redis.wait_configured(&ports);
    for p in ports {
        bed.ns.add_port(p);
    }
    bed.wait_all_match_kernel(DEADLINE, &ports);
    let mut con = bed.redis.con(STATE_DB);
    let _: () = redis::cmd("DEL")
        .arg("PORT_TABLE|Ethernet0")
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("HDEL")
        .arg("PORT_TABLE|Ethernet4")
        .arg("state")
        .query(&mut con)
        .unwrap();
    bed.redis
        .hset(STATE_DB, "PORT_TABLE|Ethernet8", &[("admin_status", "up")]);
    // Overrun the 4 KiB buffer with netdevs that are never configured
    // (their names pass the daemon's socket filter): nothing of the three
    // ports changes, so only the re-dump can repair them.
    daemon.signal(libc::SIGSTOP);
    let lines: Vec<String> = (0..40)
        .flat_map(|i| {
            [
                format!("link add Ethernet{} type veth peer name q{i}", 200 + i),
                format!("link del Ethernet{}", 200 + i),
            ]
        })
        .collect();
    bed.ns.batch(&lines);
    daemon.signal(libc::SIGCONT);
    wait_until(DEADLINE, "an overrun in the daemon log", || {
        daemon.log().contains("netlink receive buffer overran")
    });
    bed.wait_all_match_kernel(DEADLINE, &ports);
    daemon.assert_alive();
}

/// Dynamic port breakout: a port whose key left APPL_DB is not written
/// while its netdev lingers, and is written again, with no further link
/// message, once it is back.
#[test]
fn a_port_removed_from_appl_db_is_not_written_and_is_written_when_it_comes_back() {
    let (bed, mut daemon) = synced(&["Ethernet0"]);
    let fields = bed.redis.hgetall(APPL_DB, "PORT_TABLE:Ethernet0");
    let monitor = Monitor::start(&bed.redis);
    let mut appl = bed.redis.con(APPL_DB);
    let _: () = redis::cmd("DEL")
        .arg("PORT_TABLE:Ethernet0")
        .query(&mut appl)
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg("PORT_TABLE|Ethernet0")
        .query(&mut bed.redis.con(STATE_DB))
        .unwrap();
    // The keyspace event makes the daemon ask APPL_DB again.
    wait_until(
        DEADLINE,
        "the daemon to ask APPL_DB about Ethernet0 again",
        || {
            monitor
                .text()
                .contains("\"EXISTS\" \"PORT_TABLE:Ethernet0\"")
        },
    );
    bed.ns.set_down("Ethernet0");
    bed.ns.set_mtu("Ethernet0", 9000);
    wait_read(&daemon, "Ethernet0", false, 1);
    // The daemon read both messages; another round trip for anything it
    // might still send, then nothing may have been written.
    bed.ns.set_peer_up("Ethernet0");
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        assert!(
            !bed.redis.exists(STATE_DB, "PORT_TABLE|Ethernet0"),
            "written while APPL_DB lacks the port"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // The test's own DEL of the row aside, nothing touched it.
    let written: Vec<_> = monitor
        .port_writes()
        .into_iter()
        .filter(|(c, a)| c == "HSET" && a.first().is_some_and(|k| k == "PORT_TABLE|Ethernet0"))
        .collect();
    assert!(
        written.is_empty(),
        "written while APPL_DB lacks it: {written:?}"
    );

    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    bed.redis.hset(APPL_DB, "PORT_TABLE:Ethernet0", &pairs);
    let row = bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");
    assert_eq!(row.get("mtu").map(String::as_str), Some("9000"));
    daemon.assert_alive();
}

/// Netdevs named like ports that are never configured are asked about
/// once, not polled.
#[test]
fn unconfigured_netdevs_are_not_polled() {
    let (bed, mut daemon) = synced(&["Ethernet0"]);
    for i in 1..=20 {
        bed.ns.add_port(&format!("Ethernet{}", 100 + i));
    }
    let monitor = Monitor::start(&bed.redis);
    // Long enough for the old 200 ms poll to ask each of them ten times.
    thread::sleep(Duration::from_secs(2));
    let exists = monitor
        .text()
        .lines()
        .filter(|l| l.contains("\"EXISTS\"") && l.contains("PORT_TABLE:Ethernet1"))
        .count();
    assert!(
        exists <= 20,
        "{exists} EXISTS for 20 unconfigured netdevs in 2 s"
    );
    daemon.assert_alive();
}

/// A keyspace subscriber sees every whole-row write with its values: the
/// row never lacks `state` after a write, even while other writers
/// delete it between the daemon's writes.
#[test]
fn every_write_a_subscriber_sees_is_a_whole_row() {
    let (bed, mut daemon) = synced(&["Ethernet0"]);
    let sub = Subscriber::start(&bed.redis);
    for i in 0..10 {
        let _: () = redis::cmd("DEL")
            .arg("PORT_TABLE|Ethernet0")
            .query(&mut bed.redis.con(STATE_DB))
            .unwrap();
        if i % 2 == 0 {
            bed.ns.set_down("Ethernet0");
        } else {
            bed.ns.set_up("Ethernet0");
        }
        bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");
    }
    for (event, row) in sub.events("Ethernet0") {
        if event == "hset" {
            assert_eq!(
                row.get("state").map(String::as_str),
                Some("ok"),
                "a partial row: {row:?}"
            );
        }
    }
    sub.clear();
    daemon.assert_alive();
}

/// Redis accepts the DEL of a recreated port's row but refuses its HSET
/// (noeviction at maxmemory refuses what adds memory, not a DEL): the DEL
/// is not sent again with every retry, which would wipe the fields other
/// daemons write meanwhile.
#[test]
fn an_accepted_del_is_sent_once_while_its_hset_is_refused() {
    let (bed, mut daemon) = synced(&["Ethernet0"]);
    let monitor = Monitor::start(&bed.redis);
    let mut admin = bed.redis.con(STATE_DB);
    let config = |max: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(max)
            .query(&mut bed.redis.con(STATE_DB))
            .unwrap();
    };
    config("1");
    // The delete and the new netdev fold into one round: DEL and HSET.
    daemon.signal(libc::SIGSTOP);
    bed.ns.del_link("Ethernet0");
    bed.ns.add_port("Ethernet0");
    daemon.signal(libc::SIGCONT);
    wait_until(DEADLINE, "two refusals of the row", || {
        daemon.log().matches("Redis refused a write").count() >= 2
    });
    let dels = |m: &Monitor| {
        m.port_writes()
            .iter()
            .filter(|(c, a)| c == "DEL" && a.first().is_some_and(|k| k == "PORT_TABLE|Ethernet0"))
            .count()
    };
    assert_eq!(
        dels(&monitor),
        1,
        "the DEL was sent again: {:?}",
        monitor.port_writes()
    );
    config("0");
    let _: () = redis::cmd("PING").query(&mut admin).unwrap();
    bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");
    assert_eq!(dels(&monitor), 1);
    daemon.assert_alive();
}

/// A Redis that publishes no keyspace events (not SONiC's setting): the
/// daemon says so, and asks APPL_DB about its ports once a second instead,
/// so a port configured only after its netdev appeared is still written.
#[test]
fn without_keyspace_events_ports_are_asked_about_once_a_second() {
    let bed = Bed::new(&["Ethernet0"]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .query(&mut bed.redis.con(0))
        .unwrap();
    let mut daemon = bed.daemon();
    wait_until(DEADLINE, "the warning about keyspace events", || {
        daemon
            .log()
            .contains("Redis publishes no keyspace events for APPL_DB PORT_TABLE")
    });
    bed.redis.wait_configured(&["Ethernet0"]);
    // The port leaves APPL_DB before its netdev appears, and comes back
    // after: no event says so.
    let fields = bed.redis.hgetall(APPL_DB, "PORT_TABLE:Ethernet0");
    let _: () = redis::cmd("DEL")
        .arg("PORT_TABLE:Ethernet0")
        .query(&mut bed.redis.con(APPL_DB))
        .unwrap();
    bed.ns.add_port("Ethernet0");
    wait_read(&daemon, "Ethernet0", false, 1);
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    bed.redis.hset(APPL_DB, "PORT_TABLE:Ethernet0", &pairs);
    bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");
    daemon.assert_alive();
}
