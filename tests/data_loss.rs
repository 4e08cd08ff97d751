//! Redis loses its data while the daemon runs (flushed, or restarted
//! empty): once CONFIG_DB holds the ports again, the switch ends as after a
//! cold start, without the daemon restarting (sonic-contract.md section 9).

mod common;

use common::monitor::Monitor;
use common::*;

/// What a cold start leaves in Redis, checked after the loss.
fn assert_cold_start_state(bed: &Bed, daemon: &Daemon) {
    let names = bed.names();
    wait_until(DEADLINE, "PortConfigDone again", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    assert_eq!(
        bed.redis
            .hget(APPL_DB, "PORT_TABLE:PortConfigDone", "count"),
        Some(names.len().to_string())
    );
    for (name, fields) in &bed.ports {
        let key = format!("PORT_TABLE:{name}");
        wait_until(DEADLINE, &format!("APPL_DB {key} again"), || {
            bed.redis.exists(APPL_DB, &key)
        });
        let got = bed.redis.hgetall(APPL_DB, &key);
        for (f, v) in fields {
            assert_eq!(got.get(f), Some(v), "{key} {f}");
        }
    }
    bed.wait_all_match_kernel(DEADLINE, &names);
    wait_until(DEADLINE, "PortInitDone again", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    let warm = bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd");
    assert_eq!(warm.get("restore_count").map(String::as_str), Some("0"));
    assert_eq!(
        warm.get("state").map(String::as_str),
        Some("disabled"),
        "log:\n{}",
        daemon.log()
    );
}

/// A bed whose daemon ran cold, with ports created after PortConfigDone (as
/// syncd would) and synced.
fn synced(n: usize) -> (Bed, Daemon) {
    let names = port_names(n);
    let bed = Bed::new(&as_strs(&names));
    let daemon = bed.daemon();
    bed.redis.wait_configured(&as_strs(&names));
    for name in &names {
        bed.ns.add_port(name);
    }
    bed.ns.set_up(&names[0]);
    bed.wait_all_match_kernel(DEADLINE, &as_strs(&names));
    wait_until(DEADLINE, "PortInitDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    (bed, daemon)
}

#[test]
fn flushall_while_running_ends_as_a_cold_start_once_config_db_is_back() {
    let (bed, mut daemon) = synced(4);
    redis::cmd("FLUSHALL").exec(&mut bed.redis.con(0)).unwrap();
    // Until CONFIG_DB holds the ports again, nothing is published.
    wait_until(DEADLINE, "the daemon to wait for CONFIG_DB", || {
        daemon
            .log()
            .contains("waiting for CONFIG_DB to hold the ports again")
    });
    assert!(bed.redis.keys(APPL_DB, "*PORT_TABLE*Ethernet*").is_empty());
    // `config reload` puts CONFIG_DB back.
    bed.redis.configure_ports(&bed.names());
    assert_cold_start_state(&bed, &daemon);
    assert!(
        daemon.log().contains("Redis lost its data"),
        "log:\n{}",
        daemon.log()
    );
    daemon.assert_alive();
}

#[test]
fn redis_restarted_empty_ends_as_a_cold_start() {
    let (mut bed, mut daemon) = synced(4);
    bed.redis.kill_hard();
    // The dump file, if any, goes: Redis comes back with nothing.
    let _ = std::fs::remove_file(bed.redis.dir().join("dump.rdb"));
    bed.redis.start_again();
    bed.redis.configure_ports(&bed.names());
    assert_cold_start_state(&bed, &daemon);
    // Link changes after the loss still land.
    bed.ns.set_mtu("Ethernet4", 9100);
    bed.redis.wait_state("Ethernet4", &[("mtu", "9100")]);
    daemon.assert_alive();
}

/// SIGTERM right after Redis lost its data, with a write pending so the
/// flush has work to do: the daemon exits 0 whether it saw the loss before,
/// during or after the flush (it used to panic, exit 101, polling a
/// shutdown it had already seen when the flush found the loss).
#[test]
fn sigterm_right_after_a_data_loss_exits_zero() {
    for pause_ms in (0..=1200).step_by(100) {
        let (bed, mut daemon) = synced(2);
        redis::cmd("FLUSHALL").exec(&mut bed.redis.con(0)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        bed.ns.set_down(bed.names()[0]);
        let status = daemon.sigterm_and_wait(DEADLINE);
        assert!(
            status.success(),
            "SIGTERM {pause_ms} ms after FLUSHALL: {status}; log:\n{}",
            daemon.log()
        );
    }
    // Redis back empty while a write is pending: the flush reconnects and
    // finds the loss.
    for _ in 0..3 {
        let (mut bed, mut daemon) = synced(2);
        let reads = |d: &Daemon| d.log().matches("port link message link=Ethernet0 ").count();
        let before = reads(&daemon);
        bed.redis.kill_hard();
        bed.ns.set_down("Ethernet0");
        wait_until(DEADLINE, "the daemon to read the change", || {
            reads(&daemon) > before
        });
        bed.redis.start_again();
        let status = daemon.sigterm_and_wait(DEADLINE);
        assert!(
            status.success(),
            "SIGTERM with Redis back empty: {status}; log:\n{}",
            daemon.log()
        );
    }
}

/// One deleted key of ours is not a lost database: it is written again,
/// alone. Nothing is replayed to orchagent, restore_count is kept.
#[test]
fn one_deleted_key_of_ours_is_written_again_and_nothing_else() {
    let (bed, mut daemon) = synced(2);
    // A warm restart, so that restore_count is 1 (a reset would show).
    daemon.sigterm_and_wait(DEADLINE);
    bed.redis.hset(
        STATE_DB,
        "WARM_RESTART_ENABLE_TABLE|swss",
        &[("enable", "true")],
    );
    let mut daemon = bed.daemon();
    wait_until(DEADLINE, "the warm restart reconciled", || {
        bed.redis
            .hget(STATE_DB, "WARM_RESTART_TABLE|portsyncd", "state")
            == Some("reconciled".into())
    });
    let warm_row = bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd");
    assert_eq!(warm_row.get("restore_count").map(String::as_str), Some("1"));
    let monitor = Monitor::start(&bed.redis);
    let mut state = bed.redis.con(STATE_DB);
    redis::cmd("DEL")
        .arg("WARM_RESTART_TABLE|portsyncd")
        .exec(&mut state)
        .unwrap();
    wait_until(
        DEADLINE,
        "WARM_RESTART_TABLE|portsyncd written again",
        || bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd") == warm_row,
    );
    // STATE_DB flushed alone: the rows and the warm row come back.
    redis::cmd("FLUSHDB").exec(&mut state).unwrap();
    bed.wait_all_match_kernel(DEADLINE, &bed.names());
    wait_until(
        DEADLINE,
        "WARM_RESTART_TABLE|portsyncd after FLUSHDB",
        || bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd") == warm_row,
    );
    let replayed: Vec<_> = monitor
        .writes()
        .into_iter()
        .filter(|(_, args)| {
            args.iter()
                .any(|a| a.starts_with("_PORT_TABLE:") || a.contains("PortConfigDone"))
        })
        .collect();
    assert!(
        replayed.is_empty(),
        "replayed to APPL_DB: {replayed:?}\nlog:\n{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("Redis lost its data"),
        "taken for a lost database"
    );
    daemon.assert_alive();
}

/// A cold run's PortConfigDone deleted by someone: written again, alone.
#[test]
fn a_deleted_port_config_done_is_written_again_alone() {
    let (bed, mut daemon) = synced(2);
    let monitor = Monitor::start(&bed.redis);
    redis::cmd("DEL")
        .arg("PORT_TABLE:PortConfigDone")
        .exec(&mut bed.redis.con(APPL_DB))
        .unwrap();
    wait_until(DEADLINE, "PortConfigDone again", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    let ports: Vec<_> = monitor
        .writes()
        .into_iter()
        .filter(|(_, args)| args.iter().any(|a| a.starts_with("_PORT_TABLE:Ethernet")))
        .collect();
    assert!(ports.is_empty(), "ports replayed: {ports:?}");
    assert_eq!(
        bed.redis
            .hget(STATE_DB, "WARM_RESTART_TABLE|portsyncd", "restore_count"),
        Some("0".into())
    );
    daemon.assert_alive();
}

/// After a real loss the daemon waits for CONFIG_DB: one line when it
/// starts waiting and one when the ports are back, not one a second.
#[test]
fn waiting_for_config_db_after_a_loss_says_so_once() {
    let (bed, mut daemon) = synced(2);
    redis::cmd("FLUSHALL").exec(&mut bed.redis.con(0)).unwrap();
    wait_until(DEADLINE, "the daemon to wait for CONFIG_DB", || {
        daemon
            .log()
            .contains("waiting for CONFIG_DB to hold the ports again")
    });
    // Three of the old one-a-second lines' worth of waiting.
    std::thread::sleep(std::time::Duration::from_secs(3));
    bed.redis.configure_ports(&bed.names());
    assert_cold_start_state(&bed, &daemon);
    let log = daemon.log();
    assert_eq!(
        log.matches("waiting for CONFIG_DB to hold the ports again")
            .count(),
        1,
        "log:\n{log}"
    );
    assert_eq!(
        log.matches("CONFIG_DB holds the ports again").count(),
        1,
        "log:\n{log}"
    );
    daemon.assert_alive();
}
