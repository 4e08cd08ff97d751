//! Redis loses its data while the daemon runs (flushed, or restarted
//! empty): once CONFIG_DB holds the ports again, the switch ends as after a
//! cold start, without the daemon restarting (sonic-contract.md section 9).

mod common;

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
