//! Warm restart: the restart bookkeeping, EOIU, and a reconcile that writes
//! only what changed while the daemon was down (contract section 6).
//!
//! Every test first runs the daemon cold so that STATE_DB holds the truth,
//! then restarts it warm. `redis-cli MONITOR` records every command Redis
//! executed during the warm start, including those run inside scripts, so
//! "no write" is checked on what Redis did, not on what the daemon says.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::thread;

use common::monitor::Monitor;
use common::*;

fn bed_after_cold_run(n: usize) -> Bed {
    common::warm::bed_after_cold_run(n, DEADLINE)
}

/// Starts the daemon warm and waits until it says `reconciled`.
fn warm_start(bed: &Bed) -> Daemon {
    let daemon = bed.daemon();
    wait_reconciled(bed, &daemon);
    daemon
}

fn wait_reconciled(bed: &Bed, daemon: &Daemon) {
    // The row may still say `reconciled` from the previous run: wait for
    // this daemon's own word first, then check what it recorded.
    wait_until(DEADLINE, "the daemon to log the reconcile", || {
        daemon.log().contains("warm restart reconciled")
    });
    // Both ends of a warm restart are audit events (docs/security.md).
    let log = daemon.log();
    assert!(
        log.contains("event=\"warm_restart_check\" warm=true")
            && log.contains("event=\"warm_restart_reconciled\""),
        "{log}"
    );
    let warm = bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd");
    assert_eq!(
        warm.get("state").map(String::as_str),
        Some("reconciled"),
        "daemon log:\n{}",
        daemon.log()
    );
}

/// Waits until MONITOR shows the producer writing PortInitDone: the last
/// thing a warm start does.
fn wait_port_init_done_written(monitor: &Monitor) {
    wait_until(DEADLINE, "PortInitDone to be produced again", || {
        monitor
            .writes()
            .iter()
            .any(|(_, args)| args.iter().any(|a| a.ends_with("PortInitDone")))
    });
}

/// The four fields of a whole row.
fn whole_row() -> BTreeSet<String> {
    ["state", "netdev_oper_status", "admin_status", "mtu"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// key -> set of fields written by HSET, from MONITOR's port writes.
fn fields_written(writes: &[(String, Vec<String>)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_key: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (cmd, args) in writes {
        assert_eq!(cmd, "HSET", "unexpected port write {cmd} {args:?}");
        let entry = by_key.entry(args[0].clone()).or_default();
        entry.extend(args[1..].chunks(2).map(|fv| fv[0].clone()));
    }
    by_key
}

#[test]
fn unchanged_warm_restart_writes_no_port_data() {
    let bed = bed_after_cold_run(8);
    let monitor = Monitor::start(&bed.redis);
    let _daemon = warm_start(&bed);
    wait_port_init_done_written(&monitor);

    assert_eq!(
        monitor.port_writes(),
        Vec::new(),
        "port writes on an unchanged warm restart"
    );
    // Read (the daemon checks its notices are still there), never written.
    let touched: Vec<_> = monitor
        .writes()
        .into_iter()
        .filter(|(_, args)| args.iter().any(|a| a.contains("PortConfigDone")))
        .collect();
    assert!(
        touched.is_empty(),
        "PortConfigDone written on a warm start: {touched:?}"
    );
    let warm = bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd");
    assert_eq!(warm.get("restore_count").map(String::as_str), Some("1"));
    assert_eq!(warm.get("state").map(String::as_str), Some("reconciled"));
    bed.wait_all_match_kernel(DEADLINE, &bed.names());
}

#[test]
fn changes_while_down_are_written_and_nothing_else() {
    let bed = bed_after_cold_run(8);
    // While the daemon is down: Ethernet0 loses carrier, Ethernet4's MTU changes.
    bed.ns.set_peer_down("Ethernet0");
    bed.ns.set_mtu("Ethernet4", 9100);
    let monitor = Monitor::start(&bed.redis);
    let daemon = warm_start(&bed);
    wait_port_init_done_written(&monitor);

    bed.wait_all_match_kernel(DEADLINE, &bed.names());
    // The two rows that differ, each written whole (sonic-contract.md
    // section 4); nothing else.
    let written = fields_written(&monitor.port_writes());
    let expected: BTreeMap<String, BTreeSet<String>> =
        ["PORT_TABLE|Ethernet0", "PORT_TABLE|Ethernet4"]
            .into_iter()
            .map(|k| (k.to_string(), whole_row()))
            .collect();
    assert_eq!(written, expected, "daemon log:\n{}", daemon.log());
}

/// More ports than one start-up read takes (the daemon reads CONFIG_DB,
/// STATE_DB and APPL_DB 128 keys per round trip): every port is copied on
/// the cold start, and every row is compared on the warm one, so only the
/// row that changed meanwhile, in the last chunk, is written (whole).
#[test]
fn a_switch_larger_than_one_start_up_read_is_read_whole() {
    let bed = bed_after_cold_run(300);
    let done = bed.redis.hgetall(APPL_DB, "PORT_TABLE:PortConfigDone");
    assert_eq!(done.get("count").map(String::as_str), Some("300"));
    // The greatest name: the daemon reads keys in byte order.
    let last = bed.names().into_iter().max().expect("ports");
    bed.ns.set_mtu(last, 9100);
    let monitor = Monitor::start(&bed.redis);
    let daemon = warm_start(&bed);
    wait_port_init_done_written(&monitor);
    bed.wait_all_match_kernel(DEADLINE, &bed.names());
    let written = fields_written(&monitor.port_writes());
    let expected: BTreeMap<String, BTreeSet<String>> =
        [(format!("PORT_TABLE|{last}"), whole_row())]
            .into_iter()
            .collect();
    assert_eq!(written, expected, "daemon log:\n{}", daemon.log());
}

/// A configured port without a netdev at EOIU keeps its STATE_DB row: on a
/// warm reboot syncd recreates the netdevs only later, and the row carries
/// other daemons' fields (sonic-contract.md section 6). Only RTM_DELLINK
/// deletes a row.
#[test]
fn a_configured_port_without_netdev_at_eoiu_keeps_its_row() {
    let bed = bed_after_cold_run(4);
    bed.ns.del_link("Ethernet8");
    let row = bed.redis.hgetall(STATE_DB, "PORT_TABLE|Ethernet8");
    let monitor = Monitor::start(&bed.redis);
    let daemon = warm_start(&bed);
    // A later change, seen landing in MONITOR: whatever the warm start
    // wrote came before it, and is in MONITOR's output by then (read
    // straight after the log line, a late write could be missed).
    bed.ns.set_mtu("Ethernet0", 4321);
    wait_until(DEADLINE, "the later change's write in MONITOR", || {
        monitor
            .port_writes()
            .iter()
            .any(|(_, args)| args[0] == "PORT_TABLE|Ethernet0" && args.contains(&"4321".into()))
    });
    assert_eq!(
        bed.redis.hgetall(STATE_DB, "PORT_TABLE|Ethernet8"),
        row,
        "log:\n{}",
        daemon.log()
    );
    let others: Vec<_> = monitor
        .port_writes()
        .into_iter()
        .filter(|(_, args)| args[0] != "PORT_TABLE|Ethernet0")
        .collect();
    assert!(others.is_empty(), "{others:?}");
    assert!(bed.redis.exists(APPL_DB, "PORT_TABLE:Ethernet8"));
    bed.wait_all_match_kernel(DEADLINE, &["Ethernet0", "Ethernet4", "Ethernet12"]);
}

#[test]
fn warm_enabled_without_restore_count_starts_cold() {
    let bed = Bed::new(&as_strs(&port_names(2)));
    bed.redis.hset(
        STATE_DB,
        "WARM_RESTART_ENABLE_TABLE|swss",
        &[("enable", "true")],
    );
    let daemon = bed.daemon();
    let warm = wait_for(
        DEADLINE,
        "WARM_RESTART_TABLE|portsyncd state",
        || bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd"),
        |h| h.contains_key("state"),
    );
    assert_eq!(warm.get("restore_count").map(String::as_str), Some("0"));
    assert_eq!(warm.get("state").map(String::as_str), Some("disabled"));
    // A cold start publishes the configuration.
    wait_until(
        DEADLINE,
        "PortConfigDone on the fallback cold start",
        || bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone"),
    );
    assert!(
        daemon.log().contains("falling back to a cold start"),
        "log:\n{}",
        daemon.log()
    );
}

#[test]
fn link_changes_right_after_eoiu_land_normally() {
    let bed = bed_after_cold_run(4);
    let daemon = bed.daemon();
    wait_reconciled(&bed, &daemon);
    bed.ns.set_down("Ethernet0");
    bed.ns.set_mtu("Ethernet4", 9000);
    bed.ns.set_peer_down("Ethernet8");
    // The kernel drops a veth's carrier a moment after its peer goes down:
    // wait for each change itself, then for every row to match.
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", "down")]);
    bed.redis.wait_state("Ethernet4", &[("mtu", "9000")]);
    bed.redis
        .wait_state("Ethernet8", &[("netdev_oper_status", "down")]);
    bed.wait_all_match_kernel(DEADLINE, &bed.names());
}

#[test]
fn warm_restart_during_a_link_burst_ends_with_every_row_right() {
    let bed = bed_after_cold_run(16);
    let names = bed.names();
    let mut daemon = bed.daemon();
    wait_reconciled(&bed, &daemon);
    let monitor = Monitor::start(&bed.redis);
    // The burst goes on until both restarts are done, however long they
    // take: each restart lands in the middle of it.
    let burst_over = std::sync::atomic::AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            let mut round = 0usize;
            while !burst_over.load(std::sync::atomic::Ordering::Relaxed) {
                let lines: Vec<String> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let up = (i + round).is_multiple_of(2);
                        format!("link set dev {n} {}", updown(up))
                    })
                    .collect();
                bed.ns.batch(&lines);
                round += 1;
            }
        });
        // Restart in the middle of the burst, twice: each time once this
        // daemon has written burst changes (seen in MONITOR), not after a
        // fixed time that a slow machine spends starting up.
        for _ in 0..2 {
            let before = monitor.port_writes().len();
            wait_until(DEADLINE, "the daemon to write burst changes", || {
                monitor.port_writes().len() >= before + names.len()
            });
            assert!(daemon.sigterm_and_wait(DEADLINE).success());
            daemon = bed.daemon();
            wait_reconciled(&bed, &daemon);
        }
        burst_over.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let warm = bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd");
    assert_eq!(warm.get("restore_count").map(String::as_str), Some("3"));
    bed.wait_all_match_kernel(DEADLINE, &names);
}

#[test]
fn monitor_lines_parse() {
    let line = r#"1700000000.123456 [6 lua] "HSET" "PORT_TABLE|Ethernet0" "alias" "a \"b\"""#;
    assert_eq!(
        common::monitor::parse_monitor_line(line),
        Some((
            "HSET".to_string(),
            vec![
                "PORT_TABLE|Ethernet0".to_string(),
                "alias".to_string(),
                "a \"b\"".to_string()
            ]
        ))
    );
    assert_eq!(common::monitor::parse_monitor_line("OK"), None);
}
