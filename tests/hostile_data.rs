//! Data nobody planned for: bytes that are not UTF-8, glob characters in a
//! separator, a hash too large for one Lua call, keys Redis refuses, a
//! netdev recreated under the same name, a netdev born during the first
//! dump. Each ends with Redis right, and no key holds the others back.

mod common;

use std::time::{Duration, Instant};

use common::monitor::{KeyspaceEvents, Monitor};
use common::*;

fn hgetall_bytes(redis: &RedisServer, db: i64, key: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(key)
        .query(&mut redis.con(db))
        .unwrap();
    pairs.sort();
    pairs
}

/// CONFIG_DB values, a port name and `switch_type` that are not UTF-8: the
/// start-up does not stall on them, APPL_DB gets them byte for byte, and
/// the other ports sync as usual.
#[test]
fn bytes_that_are_not_utf8_are_copied_byte_for_byte() {
    let bed = Bed::new(&["Ethernet0"]);
    let mut con = bed.redis.con(CONFIG_DB);
    let odd_port: &[u8] = b"Ethernet\xe98";
    let fields: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"alias".to_vec(), b"caf\xe9".to_vec()),
        (b"description".to_vec(), b"\xff\xfe\x00 uplink".to_vec()),
        (b"lanes".to_vec(), b"8,9".to_vec()),
    ];
    let mut key = b"PORT|".to_vec();
    key.extend_from_slice(odd_port);
    let mut cmd = redis::cmd("HSET");
    cmd.arg(&key);
    for (f, v) in &fields {
        cmd.arg(f).arg(v);
    }
    cmd.exec(&mut con).unwrap();
    redis::cmd("HSET")
        .arg("PORT|Ethernet0")
        .arg("description")
        .arg(&b"\xc3\x28 bad utf8"[..])
        .exec(&mut con)
        .unwrap();
    redis::cmd("HSET")
        .arg("DEVICE_METADATA|localhost")
        .arg("switch_type")
        .arg(&b"sw\xfftch"[..])
        .exec(&mut con)
        .unwrap();

    let mut daemon = bed.daemon();
    let mut appl_key = b"PORT_TABLE:".to_vec();
    appl_key.extend_from_slice(odd_port);
    wait_until(DEADLINE, "the odd port in APPL_DB", || {
        !hgetall_bytes(&bed.redis, APPL_DB, &appl_key).is_empty()
    });
    let mut want = fields.clone();
    want.sort();
    assert_eq!(hgetall_bytes(&bed.redis, APPL_DB, &appl_key), want);
    // PortConfigDone follows the ports it counts; the consumer pops it a
    // moment later.
    bed.redis.wait_configured(&["Ethernet0", "PortConfigDone"]);
    let eth0 = hgetall_bytes(&bed.redis, APPL_DB, b"PORT_TABLE:Ethernet0");
    assert!(eth0.contains(&(b"description".to_vec(), b"\xc3\x28 bad utf8".to_vec())));
    assert_eq!(
        bed.redis
            .hget(APPL_DB, "PORT_TABLE:PortConfigDone", "count"),
        Some("2".into())
    );
    bed.ns.add_port("Ethernet0");
    bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
    daemon.assert_alive();
}

/// A separator that is a glob character (`?`) and a key with a multi-byte
/// character right after the table name: KEYS must match only the table's
/// own keys, and nothing may slice inside a character.
#[test]
fn a_glob_separator_matches_only_the_tables_keys() {
    let redis = RedisServer::start();
    let text = std::fs::read_to_string(redis.db_config()).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["DATABASES"]["CONFIG_DB"]["separator"] = "?".into();
    let db_config = redis.dir().join("glob_separator.json");
    std::fs::write(&db_config, serde_json::to_vec(&config).unwrap()).unwrap();
    redis.hset(CONFIG_DB, "PORT?Ethernet0", &[("lanes", "0")]);
    redis.hset(CONFIG_DB, "PORTé", &[("lanes", "1")]);
    redis.hset(CONFIG_DB, "PORTS", &[("lanes", "2")]);
    let _consumer = Consumer::start(redis.socket());
    let ns = Netns::new();
    let mut daemon = Daemon::start(&ns, &db_config, &[]);
    wait_until(DEADLINE, "PortConfigDone", || {
        redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    assert_eq!(
        redis.hget(APPL_DB, "PORT_TABLE:PortConfigDone", "count"),
        Some("1".into()),
        "log:\n{}",
        daemon.log()
    );
    assert!(redis.exists(APPL_DB, "PORT_TABLE:Ethernet0"));
    daemon.assert_alive();
}

/// A CONFIG_DB PORT hash with 4,501 fields (9,002 values: more than Lua's
/// unpack takes at once) reaches APPL_DB whole.
#[test]
fn a_port_hash_too_large_for_one_unpack_is_written_whole() {
    let bed = Bed::new(&["Ethernet0"]);
    let mut cmd = redis::cmd("HSET");
    cmd.arg("PORT|Ethernet0");
    for i in 0..4_500 {
        cmd.arg(format!("extra_{i}")).arg(i);
    }
    cmd.exec(&mut bed.redis.con(CONFIG_DB)).unwrap();
    let total = bed.redis.hgetall(CONFIG_DB, "PORT|Ethernet0").len();
    assert!(total >= 4_501, "{total}");
    let mut daemon = bed.daemon();
    wait_until(DEADLINE, "PortConfigDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    assert_eq!(
        bed.redis.hgetall(APPL_DB, "PORT_TABLE:Ethernet0").len(),
        total
    );
    daemon.assert_alive();
}

/// APPL_DB's staging hash of Ethernet4 is a string, so the producer write
/// of that port is refused. The others are produced at once, PortConfigDone
/// waits for the refused entry, and follows once the key is fixed. (No
/// consumer runs meanwhile: orchagent's pop would trip over the same key.)
#[test]
fn a_refused_producer_write_holds_back_port_config_done_only() {
    let redis = RedisServer::start();
    let names = port_names(4);
    redis.configure_ports(&as_strs(&names));
    redis::cmd("SET")
        .arg("_PORT_TABLE:Ethernet4")
        .arg("not a hash")
        .exec(&mut redis.con(APPL_DB))
        .unwrap();
    let ns = Netns::new();
    let mut daemon = Daemon::start(&ns, redis.db_config(), &[]);
    wait_until(DEADLINE, "the refusal to be logged with its key", || {
        daemon.log().contains("APPL_DB PORT_TABLE:Ethernet4")
    });
    for n in ["Ethernet0", "Ethernet8", "Ethernet12"] {
        let key = format!("_PORT_TABLE:{n}");
        wait_until(DEADLINE, &key, || redis.exists(APPL_DB, &key));
    }
    assert!(
        !redis.exists(APPL_DB, "_PORT_TABLE:PortConfigDone"),
        "PortConfigDone counted an entry Redis refused"
    );
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("PORT_TABLE_KEY_SET")
        .query(&mut redis.con(APPL_DB))
        .unwrap();
    assert!(
        !members.contains(&"Ethernet4".to_string()),
        "a refused write left its key in the key set: {members:?}"
    );
    redis::cmd("DEL")
        .arg("_PORT_TABLE:Ethernet4")
        .exec(&mut redis.con(APPL_DB))
        .unwrap();
    wait_until(Duration::from_secs(20), "PortConfigDone", || {
        redis.exists(APPL_DB, "_PORT_TABLE:PortConfigDone")
    });
    assert!(redis.exists(APPL_DB, "_PORT_TABLE:Ethernet4"));
    daemon.assert_alive();
}

/// STATE_DB `PORT_TABLE|Ethernet0` is a string (WRONGTYPE for HSET). Every
/// other port keeps its normal latency, the log names the refused key,
/// PortInitDone does not wait for the refused row; once the key is fixed,
/// the row is written.
#[test]
fn a_key_redis_refuses_never_holds_the_others_back() {
    let names = port_names(8);
    let bed = Bed::new(&as_strs(&names));
    let mut con = bed.redis.con(STATE_DB);
    redis::cmd("SET")
        .arg("PORT_TABLE|Ethernet0")
        .arg("not a hash")
        .exec(&mut con)
        .unwrap();
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&as_strs(&names));
    for n in &names {
        bed.ns.add_port(n);
    }
    let others: Vec<&str> = names[1..].iter().map(String::as_str).collect();
    bed.wait_all_match_kernel(DEADLINE, &others);
    wait_until(DEADLINE, "the refusal to be logged with its key", || {
        daemon.log().contains("STATE_DB PORT_TABLE|Ethernet0")
    });
    wait_until(DEADLINE, "PortInitDone without the refused row", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    // While Ethernet0 is refused again and again, a change of another port
    // lands as fast as usual.
    let started = Instant::now();
    bed.ns.set_up("Ethernet8");
    bed.redis.wait_state("Ethernet8", &[("admin_status", "up")]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a healthy port took {took:?} while another key was refused"
    );
    redis::cmd("DEL")
        .arg("PORT_TABLE|Ethernet0")
        .exec(&mut con)
        .unwrap();
    bed.wait_all_match_kernel(Duration::from_secs(45), &["Ethernet0"]);
    daemon.assert_alive();
}

/// A netdev deleted and created again under the same name gets its full
/// write (DEL, then all four fields), so subscribers such as teammgrd see a
/// SET even though the values are the same as before.
#[test]
fn a_recreated_port_gets_its_full_write() {
    let bed = Bed::new(&["Ethernet0"]);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&["Ethernet0"]);
    bed.ns.add_port("Ethernet0");
    bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
    let monitor = Monitor::start(&bed.redis);
    bed.ns.del_link("Ethernet0");
    bed.ns.add_port("Ethernet0");
    bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
    wait_until(DEADLINE, "the full write in MONITOR", || {
        monitor.port_writes().iter().any(|(cmd, args)| {
            cmd == "HSET" && args.len() == 9 && args[0] == "PORT_TABLE|Ethernet0"
        })
    });
    let writes = monitor.port_writes();
    let del = writes.iter().position(|(c, _)| c == "DEL");
    let set = writes
        .iter()
        .rposition(|(c, a)| c == "HSET" && a.len() == 9);
    assert!(del.is_some() && set > del, "{writes:?}");
    daemon.assert_alive();
}

/// A netdev deleted and created again while the daemon cannot see the
/// delete (frozen with SIGSTOP while a storm on unconfigured ports overruns
/// its smallest netlink buffer, so the RTM_DELLINK is lost): the re-dump shows
/// the same name with a new ifindex and the very same values, and the row
/// still gets a whole-row write (all four fields), which a keyspace
/// subscriber (teammgrd re-enslaving the port) sees.
#[test]
fn a_port_recreated_behind_an_overrun_gets_its_whole_row() {
    let bed = Bed::new(&["Ethernet0"]);
    let mut daemon = Daemon::start(
        &bed.ns,
        bed.redis.db_config(),
        &["--netlink-rcvbuf", "4096"],
    );
    bed.redis.wait_configured(&["Ethernet0"]);
    // Front-panel names (the kernel drops the daemon's notifications of
    // other links), not configured: they only fill the socket.
    let others: Vec<String> = (1..=32).map(|i| format!("Ethernet{}", 100 + i)).collect();
    for name in &others {
        bed.ns.add_port(name);
    }
    bed.ns.add_port("Ethernet0");
    let before = bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
    let old_ifindex = bed.ns.link("Ethernet0").unwrap().ifindex;
    let subscriber = KeyspaceEvents::start(&bed.redis, STATE_DB, "PORT_TABLE|Ethernet0");
    let monitor = Monitor::start(&bed.redis);

    daemon.signal(libc::SIGSTOP);
    let churn: Vec<String> = others
        .iter()
        .flat_map(|n| [format!("link set {n} up"), format!("link set {n} down")])
        .collect();
    bed.ns.batch(&churn);
    bed.ns.del_link("Ethernet0");
    bed.ns.add_port("Ethernet0");
    bed.ns.batch(&churn);
    daemon.signal(libc::SIGCONT);

    let new_ifindex = bed.ns.link("Ethernet0").unwrap().ifindex;
    assert_ne!(old_ifindex, new_ifindex, "the netdev was not recreated");
    wait_until(DEADLINE, "the overrun in the daemon's log", || {
        daemon.log().contains("netlink receive buffer overran")
    });
    wait_until(
        DEADLINE,
        "a whole-row write of Ethernet0 in MONITOR",
        || {
            monitor.port_writes().iter().any(|(cmd, args)| {
                cmd == "HSET" && args.len() == 9 && args[0] == "PORT_TABLE|Ethernet0"
            })
        },
    );
    let after = bed.wait_all_settled(DEADLINE, &["Ethernet0"]);
    assert_eq!(before, after, "the recreated netdev has other values");
    // The daemon never saw the delete (it would have deleted the row).
    let deletes: Vec<_> = monitor
        .port_writes()
        .into_iter()
        .filter(|(cmd, args)| cmd == "DEL" && args[0] == "PORT_TABLE|Ethernet0")
        .collect();
    assert!(
        deletes.is_empty(),
        "the RTM_DELLINK was not lost: {deletes:?}"
    );
    wait_until(DEADLINE, "the subscriber to see the write", || {
        subscriber.events().iter().any(|e| e == "hset")
    });
    daemon.assert_alive();
}

/// The pids of `pid`'s children (its main thread's).
fn fs_children(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// SIGKILLs a process of the test's own when dropped.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test started (strace's child).
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// The old interfaces of a cold start are the netdevs present when the
/// daemon started (one snapshot, as upstream's `if_nameindex()`), not every
/// netdev reported until the first dump ends. With 300 other links the
/// start-up dump takes several datagrams; a port created while it runs
/// (checked: the dump was requested and had not ended when the port was
/// there) is still a real port and is written, while the old interface is
/// brought down and ignored. (Older kernels also interrupt such a dump,
/// NLM_F_DUMP_INTR, and the daemon dumps again; 6.x link dumps are no
/// longer marked, so that is not required here.)
#[test]
fn a_netdev_created_after_start_is_a_port_not_an_old_interface() {
    let bed = Bed::new(&["Ethernet0", "Ethernet4"]);
    let others: Vec<String> = (0..150)
        .map(|i| format!("link add vx{i} type veth peer name vy{i}"))
        .collect();
    bed.ns.batch(&others);
    bed.ns.add_port("Ethernet0");
    // Every netlink receive waits 200 ms first (strace's syscall delay
    // injection): the kernel makes the rest of a dump only as it is read,
    // so the dump lasts long enough for the port to be created during it
    // on any machine, not only on a slow one.
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", bed.ns.name()])
        .args([
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=recvmmsg",
        ])
        .args(["-e", "inject=recvmmsg:delay_enter=200000"])
        .args([BIN, "--no-metrics", "--db-config"])
        .arg(bed.redis.db_config())
        .args(["--log-level", "debug", "--log-output", "stderr"]);
    let mut daemon = Daemon::launch(cmd);
    // The daemon is strace's child: stopping strace (the Daemon's pid)
    // would leave it running, so it is stopped by its own pid first.
    let traced = wait_for(
        DEADLINE,
        "strace to start the daemon",
        || {
            let pid = daemon.pid();
            fs_children(pid)
        },
        |children| children.len() == 1,
    );
    let _stop_traced = KillOnDrop(traced[0]);
    wait_until(DEADLINE, "the start-up dump to be requested", || {
        daemon.log().contains("link dump requested")
    });
    bed.ns.add_port("Ethernet4");
    let log = daemon.log();
    assert!(
        !log.contains("end of initial link update"),
        "the start-up dump ended before Ethernet4 was created:\n{log}"
    );
    bed.redis.wait_configured(&["Ethernet0", "Ethernet4"]);
    bed.wait_all_match_kernel(DEADLINE, &["Ethernet4"]);
    wait_until(DEADLINE, "the old interface to be brought down", || {
        daemon.log().contains("old interface brought down")
    });
    assert!(
        !bed.redis.exists(STATE_DB, "PORT_TABLE|Ethernet0"),
        "the old interface wrote state"
    );
    daemon.assert_alive();
}
