//! Cold start: CONFIG_DB -> APPL_DB PORT_TABLE, PortConfigDone, PortInitDone,
//! WARM_RESTART_TABLE, and refusing a broken database_config.json.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

/// Every CONFIG_DB `PORT|<name>` ends up (after the consumer) as APPL_DB
/// `PORT_TABLE:<name>` with exactly the same fields; PortConfigDone carries
/// the port count; the warm-restart row says "cold".
#[test]
fn cold_start_copies_config_db_ports_to_appl_db() {
    let names = port_names(4);
    let bed = Bed::new(&as_strs(&names));
    let mut daemon = bed.daemon();

    for (name, config) in &bed.ports {
        let key = format!("PORT_TABLE:{name}");
        wait_for(
            DEADLINE,
            &format!("APPL_DB {key} to equal CONFIG_DB PORT|{name}"),
            || bed.redis.hgetall(APPL_DB, &key),
            |h| h == config,
        );
    }

    let done = wait_for(
        DEADLINE,
        "APPL_DB PORT_TABLE:PortConfigDone",
        || bed.redis.hgetall(APPL_DB, "PORT_TABLE:PortConfigDone"),
        |h| !h.is_empty(),
    );
    assert_eq!(done, fields(&[("count", "4")]), "PortConfigDone");

    let warm = wait_for(
        DEADLINE,
        "STATE_DB WARM_RESTART_TABLE|portsyncd",
        || bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd"),
        |h| h.contains_key("restore_count") && h.contains_key("state"),
    );
    assert_eq!(warm.get("restore_count").map(String::as_str), Some("0"));
    assert_eq!(warm.get("state").map(String::as_str), Some("disabled"));

    // Nothing is left staged, and the producer never wrote anything else
    // into PORT_TABLE than the ports and the notice.
    wait_until(DEADLINE, "PORT_TABLE_KEY_SET to be drained", || {
        bed.redis.keys(APPL_DB, "_PORT_TABLE:*").is_empty()
            && !bed.redis.exists(APPL_DB, "PORT_TABLE_KEY_SET")
    });
    let mut expected: Vec<String> = names.iter().map(|n| format!("PORT_TABLE:{n}")).collect();
    expected.push("PORT_TABLE:PortConfigDone".into());
    expected.sort();
    assert_eq!(bed.redis.keys(APPL_DB, "PORT_TABLE:*"), expected);
    // No netdev exists yet, so the ports are not initialised.
    assert!(
        !bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone"),
        "PortInitDone before any netdev exists"
    );
    assert!(
        bed.redis.keys(STATE_DB, "PORT_TABLE|*").is_empty(),
        "STATE_DB PORT_TABLE rows without netdevs: {:?}",
        bed.redis.keys(STATE_DB, "PORT_TABLE|*")
    );
    daemon.assert_alive();
}

/// PortInitDone appears only once the last configured port's netdev exists,
/// and then with the single field `lanes` = `0`.
#[test]
fn port_init_done_only_after_last_netdev_appears() {
    let names = port_names(3);
    let names = as_strs(&names);
    let bed = Bed::new(&names);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&names);
    wait_until(DEADLINE, "PortConfigDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });

    // All but the last port come up, like syncd creating host interfaces.
    for name in &names[..names.len() - 1] {
        bed.ns.add_port(name);
        bed.redis
            .wait_state(name, &[("state", "ok"), ("admin_status", "down")]);
    }
    // The daemon has handled those messages (their rows are written), so
    // PortInitDone would be there already if it were sent too early.
    assert!(
        !bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
            && !bed.redis.exists(APPL_DB, "_PORT_TABLE:PortInitDone"),
        "PortInitDone sent while {} has no netdev",
        names[names.len() - 1]
    );

    bed.ns.add_port(names[names.len() - 1]);
    let init = wait_for(
        DEADLINE,
        "APPL_DB PORT_TABLE:PortInitDone",
        || bed.redis.hgetall(APPL_DB, "PORT_TABLE:PortInitDone"),
        |h| !h.is_empty(),
    );
    assert_eq!(init, fields(&[("lanes", "0")]), "PortInitDone");
    daemon.assert_alive();
}

/// With no configured port at all, both notices are sent at once.
#[test]
fn no_configured_ports_sends_both_notices() {
    let bed = Bed::new(&[]);
    let mut daemon = bed.daemon();
    let done = wait_for(
        DEADLINE,
        "APPL_DB PORT_TABLE:PortConfigDone",
        || bed.redis.hgetall(APPL_DB, "PORT_TABLE:PortConfigDone"),
        |h| !h.is_empty(),
    );
    assert_eq!(done, fields(&[("count", "0")]));
    let init = wait_for(
        DEADLINE,
        "APPL_DB PORT_TABLE:PortInitDone",
        || bed.redis.hgetall(APPL_DB, "PORT_TABLE:PortInitDone"),
        |h| !h.is_empty(),
    );
    assert_eq!(init, fields(&[("lanes", "0")]));
    daemon.assert_alive();
}

/// SIGTERM: the daemon exits 0 within 5 s.
#[test]
fn sigterm_exits_zero_within_5s() {
    let names = port_names(2);
    let names = as_strs(&names);
    let bed = Bed::new(&names);
    let mut daemon = bed.daemon();
    bed.redis.wait_configured(&names);
    for name in &names {
        bed.ns.add_port(name);
        bed.ns.set_up(name);
    }
    for name in &names {
        bed.redis.wait_state(name, &[("admin_status", "up")]);
    }
    let status = daemon.sigterm_and_wait(Duration::from_secs(5));
    assert!(
        status.success(),
        "portsyncd exited with {status} after SIGTERM; log:\n{}",
        daemon.log()
    );
}

fn assert_refused(config_text: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("database_config.json");
    fs::write(&path, config_text).unwrap();
    let mut daemon = Daemon::start_here(&path, &[]);
    let status = daemon.wait_exit(Duration::from_secs(10));
    let log = daemon.log();
    assert!(
        !status.success(),
        "portsyncd accepted a database_config.json with {what}: {status}; log:\n{log}"
    );
    assert!(
        log.contains(&path.display().to_string()),
        "the error for {what} does not name the file {}; log:\n{log}",
        path.display()
    );
}

#[test]
fn invalid_json_db_config_is_refused() {
    assert_refused(r#"{"INSTANCES": {"redis": "#, "invalid JSON");
}

#[test]
fn db_config_without_state_db_is_refused() {
    let text = serde_json::json!({
        "INSTANCES": {"redis": {"hostname": "127.0.0.1", "port": 6379,
                                "unix_socket_path": "/nonexistent/redis.sock"}},
        "DATABASES": {
            "APPL_DB": {"id": 0, "separator": ":", "instance": "redis"},
            "CONFIG_DB": {"id": 4, "separator": "|", "instance": "redis"}
        },
        "VERSION": "1.0"
    })
    .to_string();
    assert_refused(&text, "no STATE_DB");
}

#[test]
fn missing_db_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-database_config.json");
    let mut daemon = Daemon::start_here(&path, &[]);
    let status = daemon.wait_exit(Duration::from_secs(10));
    let log = daemon.log();
    assert!(!status.success(), "portsyncd ran without its config: {log}");
    assert!(
        log.contains(&path.display().to_string()),
        "the error does not name {}; log:\n{log}",
        path.display()
    );
}
