//! The layouts SONiC ships, beyond one Redis and a cold start: APPL_DB on an
//! instance of its own (multi-DB), a DPU whose netdevs exist before any port
//! is configured, and a warm reboot whose kernel is new.

mod common;

use std::path::PathBuf;

use common::monitor::Monitor;
use common::*;

/// sonic-buildimage's multi_database_config.json.j2, rendered (see
/// tests/fixtures/README.md).
const MULTI_DB: &str = include_str!("fixtures/multi_database_config.json");

/// Two redis-servers laid out as the multi-DB template: `redis` holds
/// CONFIG_DB and STATE_DB, `redis1` holds APPL_DB.
struct MultiDb {
    _consumer: Consumer,
    ns: Netns,
    main: RedisServer,
    appl: RedisServer,
    db_config: PathBuf,
}

impl MultiDb {
    fn new(ports: &[&str]) -> MultiDb {
        let main = RedisServer::start();
        let appl = RedisServer::start();
        let text = MULTI_DB
            .replace("/var/run/redis/redis.sock", main.socket().to_str().unwrap())
            .replace(
                "/var/run/redis/redis1.sock",
                appl.socket().to_str().unwrap(),
            );
        let db_config = main.dir().join("multi_database_config.json");
        std::fs::write(&db_config, text).unwrap();
        main.configure_ports(ports);
        MultiDb {
            _consumer: Consumer::start(appl.socket()),
            ns: Netns::new(),
            main,
            appl,
            db_config,
        }
    }
}

/// Multi-DB: every database is written on its own server. APPL_DB's
/// producer writes and notices land on `redis1`, STATE_DB rows on `redis`,
/// and nothing of ours lands on the other server's APPL_DB number.
#[test]
fn multi_instance_layout_writes_each_database_on_its_own_server() {
    let bed = MultiDb::new(&["Ethernet0", "Ethernet4"]);
    let mut daemon = Daemon::start(&bed.ns, &bed.db_config, &[]);
    wait_until(DEADLINE, "APPL_DB on redis1 to be configured", || {
        bed.appl.exists(APPL_DB, "PORT_TABLE:Ethernet0")
            && bed.appl.exists(APPL_DB, "PORT_TABLE:Ethernet4")
            && bed.appl.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    bed.ns.add_port("Ethernet0");
    bed.ns.add_port("Ethernet4");
    bed.ns.set_up("Ethernet4");
    bed.main
        .wait_state("Ethernet0", &[("state", "ok"), ("admin_status", "down")]);
    bed.main.wait_state("Ethernet4", &[("admin_status", "up")]);
    wait_until(DEADLINE, "PortInitDone on redis1", || {
        bed.appl.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    assert_eq!(
        bed.appl.hget(APPL_DB, "PORT_TABLE:PortConfigDone", "count"),
        Some("2".to_string())
    );
    assert!(
        bed.main.keys(APPL_DB, "*PORT_TABLE*").is_empty(),
        "APPL_DB keys on the CONFIG_DB/STATE_DB server: {:?}",
        bed.main.keys(APPL_DB, "*")
    );
    assert!(bed.appl.keys(STATE_DB, "*").is_empty());
    assert_eq!(
        bed.main
            .hget(STATE_DB, "WARM_RESTART_TABLE|portsyncd", "state"),
        Some("disabled".to_string())
    );
    daemon.assert_alive();
}

/// Multi-DB, with warm restart enabled: the APPL_DB instance (`redis1`)
/// restarts empty while CONFIG_DB and STATE_DB live on. The daemon sees
/// its PortConfigDone gone and publishes everything again as a cold start
/// does (warm restart or not: orchagent needs it all), ending with
/// PortInitDone on `redis1`.
#[test]
fn an_appl_db_instance_that_restarts_empty_gets_everything_again() {
    let mut bed = MultiDb::new(&["Ethernet0", "Ethernet4"]);
    bed.main.hset(
        STATE_DB,
        "WARM_RESTART_ENABLE_TABLE|system",
        &[("enable", "true")],
    );
    let mut daemon = Daemon::start(&bed.ns, &bed.db_config, &[]);
    wait_until(DEADLINE, "the ports configured on redis1", || {
        bed.appl.exists(APPL_DB, "PORT_TABLE:Ethernet4")
    });
    bed.ns.add_port("Ethernet0");
    bed.ns.add_port("Ethernet4");
    wait_until(DEADLINE, "PortInitDone on redis1", || {
        bed.appl.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    bed.appl.kill_hard();
    let _ = std::fs::remove_file(bed.appl.dir().join("dump.rdb"));
    bed.appl.start_again();
    wait_until(DEADLINE, "PortConfigDone again on redis1", || {
        bed.appl.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    for n in ["Ethernet0", "Ethernet4"] {
        assert!(bed.appl.exists(APPL_DB, &format!("PORT_TABLE:{n}")));
    }
    wait_until(DEADLINE, "PortInitDone again on redis1", || {
        bed.appl.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    assert_eq!(
        bed.main
            .hget(STATE_DB, "WARM_RESTART_TABLE|portsyncd", "restore_count"),
        Some("0".into())
    );
    assert!(
        daemon.log().contains("Redis lost its data"),
        "{}",
        daemon.log()
    );
    daemon.assert_alive();
}

/// `portsyncd check-config` accepts the multi-DB layout and names each
/// database's instance.
#[test]
fn check_config_accepts_the_multi_instance_layout() {
    let bed = MultiDb::new(&[]);
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--no-metrics", "--db-config"])
        .arg(&bed.db_config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("APPL_DB 0 on instance \"redis1\""), "{text}");
}

/// A DPU: the netdevs exist (and are never old) before orchagent consumed
/// any port. No row is written while the ports are not configured, and
/// PortInitDone waits; once the consumer runs, every row is written with
/// no further link message, then PortInitDone.
#[test]
fn dpu_ports_are_written_as_soon_as_they_are_configured() {
    let names = ["Ethernet0", "Ethernet4", "Ethernet8"];
    let redis = RedisServer::start();
    redis.configure_ports(&names);
    redis.hset(
        CONFIG_DB,
        "DEVICE_METADATA|localhost",
        &[("switch_type", "dpu")],
    );
    let ns = Netns::new();
    for n in names {
        ns.add_port(n);
    }
    ns.set_up("Ethernet4");
    let monitor = Monitor::start(&redis);
    let mut daemon = Daemon::start(&ns, redis.db_config(), &[]);
    wait_until(
        DEADLINE,
        "the ports to reach the producer's key set",
        || redis.exists(APPL_DB, "_PORT_TABLE:Ethernet8"),
    );
    wait_until(DEADLINE, "the daemon to see the netdevs", || {
        daemon.log().contains("end of initial link update")
    });
    // Several configuration polls later (seen in what Redis executed: the
    // daemon asked APPL_DB about every port three times), still nothing:
    // no port is configured.
    // A row written meanwhile ends the wait at once.
    let (asked, rows) = wait_for(
        DEADLINE,
        "three questions to APPL_DB about each port",
        || {
            let commands = monitor.commands();
            let asked = names.map(|n| {
                let key = format!("PORT_TABLE:{n}");
                commands
                    .iter()
                    .filter(|(_, args)| args.contains(&key))
                    .count()
            });
            (asked, redis.keys(STATE_DB, "PORT_TABLE|*"))
        },
        |(asked, rows)| asked.iter().all(|&n| n >= 3) || !rows.is_empty(),
    );
    assert!(
        rows.is_empty(),
        "rows written for ports that are not configured, after {asked:?} questions: {rows:?}"
    );
    assert!(!redis.exists(APPL_DB, "_PORT_TABLE:PortInitDone"));
    assert!(!daemon.log().contains("old interface"), "{}", daemon.log());

    let _consumer = Consumer::start(redis.socket());
    for n in names {
        redis.wait_state(n, &[("state", "ok")]);
    }
    redis.wait_state("Ethernet4", &[("admin_status", "up")]);
    wait_until(DEADLINE, "PortInitDone", || {
        redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    daemon.assert_alive();
}

/// A warm reboot: STATE_DB comes back from the saved dump with every
/// daemon's fields, and the kernel is new (no netdev at EOIU; syncd
/// recreates them later). No row and no field is deleted; when the netdevs
/// appear, our four fields follow them and the others stay.
#[test]
fn warm_reboot_keeps_other_daemons_rows_and_fields() {
    let bed = common::warm::bed_after_cold_run(4, DEADLINE);
    let names = bed.names();
    for n in &names {
        bed.redis.hset(
            STATE_DB,
            &format!("PORT_TABLE|{n}"),
            &[
                ("host_tx_ready", "true"),
                ("supported_speeds", "100000,400000"),
            ],
        );
    }
    // The new kernel: none of the old netdevs.
    for n in &names {
        bed.ns.del_link(n);
    }
    let before = bed.redis.hgetall(STATE_DB, "PORT_TABLE|Ethernet0");
    let monitor = Monitor::start(&bed.redis);
    let mut daemon = bed.daemon();
    wait_until(DEADLINE, "the warm reconcile", || {
        daemon.log().contains("warm restart reconciled")
    });
    assert_eq!(
        bed.redis
            .hget(STATE_DB, "WARM_RESTART_TABLE|portsyncd", "state"),
        Some("reconciled".into())
    );
    assert!(
        monitor.port_writes().is_empty(),
        "port writes at a warm reboot's EOIU: {:?}",
        monitor.port_writes()
    );
    assert_eq!(bed.redis.hgetall(STATE_DB, "PORT_TABLE|Ethernet0"), before);

    // syncd recreates the host interfaces, with another MTU.
    for n in &names {
        bed.ns.add_port(n);
        bed.ns.set_mtu(n, 9100);
    }
    for n in &names {
        let row = bed
            .redis
            .wait_state(n, &[("mtu", "9100"), ("admin_status", "down")]);
        assert_eq!(
            row.get("host_tx_ready").map(String::as_str),
            Some("true"),
            "{row:?}"
        );
        assert_eq!(
            row.get("supported_speeds").map(String::as_str),
            Some("100000,400000")
        );
    }
    daemon.assert_alive();
}

/// The multi-DB template with the instance of APPL_DB, or of STATE_DB,
/// lacking `unix_socket_path`: the daemon names the database, the instance
/// and the fix, and exits 2 as for any refused configuration (it used to
/// panic, 101).
#[test]
fn an_instance_without_a_socket_path_is_a_clear_error() {
    let redis = RedisServer::start();
    let socket = redis.socket().to_str().unwrap();
    for (db, instance) in [("APPL_DB", "redis1"), ("STATE_DB", "redis_state")] {
        let mut config: serde_json::Value = serde_json::from_str(MULTI_DB).unwrap();
        for (_, inst) in config["INSTANCES"].as_object_mut().unwrap() {
            inst["unix_socket_path"] = socket.into();
        }
        // The database on an instance of its own, with no socket path.
        config["INSTANCES"][instance] = serde_json::json!({"hostname": "127.0.0.1", "port": 6399});
        config["DATABASES"][db]["instance"] = instance.into();
        let path = redis.dir().join(format!("no-socket-{db}.json"));
        std::fs::write(&path, config.to_string()).unwrap();
        let mut daemon = Daemon::start_here(&path, &[]);
        let status = daemon.wait_exit(DEADLINE);
        let log = daemon.log();
        assert_eq!(status.code(), Some(2), "{db}: {status}; log:\n{log}");
        for word in [db, instance, "unix_socket_path", "--redis-tcp"] {
            assert!(
                log.contains(word),
                "{db}: the error does not say {word:?}:\n{log}"
            );
        }
    }
}
