//! Multi-ASIC layouts as SONiC lays them out (contract section 1).
//!
//! docker-database-init.sh, run for namespace N, writes that namespace's
//! `database_config.json` into `/var/run/redisN/sonic-db/` on the host, and
//! only the host's (global) database writes `database_global.json`, into
//! `/var/run/redis/sonic-db/`, listing every namespace's file. The `swssN`
//! container gets the host's `/var/run/redisN` mounted as its
//! `/var/run/redis` and `NAMESPACE_ID=N` in its environment; portsyncd
//! there runs with no arguments and must use the default path as it is.
//! A host-side run reaches a namespace with `--namespace asicN` through
//! `database_global.json`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The host's `/var/run` as docker-database-init.sh leaves it on a
/// two-namespace switch: `redis/` (global), `redis0/` and `redis1/`. Only
/// asic0's instance is a live server (the test's); the others point at
/// sockets nobody listens on, so using the wrong file cannot sync.
struct HostRun {
    dir: tempfile::TempDir,
}

impl HostRun {
    fn new(asic0_socket: &Path) -> HostRun {
        let dir = tempfile::Builder::new()
            .prefix("psd-varrun-")
            .tempdir()
            .unwrap();
        let host = HostRun { dir };
        let nobody = |name: &str| host.dir.path().join(name).join("redis.sock");
        host.write_db_config("redis", &nobody("redis"));
        host.write_db_config("redis0", asic0_socket);
        host.write_db_config("redis1", &nobody("redis1"));
        let global = serde_json::json!({
            "INCLUDES": [
                {"include": "../../redis/sonic-db/database_config.json"},
                {"namespace": "asic0", "include": "../../redis0/sonic-db/database_config.json"},
                {"namespace": "asic1", "include": "../../redis1/sonic-db/database_config.json"}
            ],
            "VERSION": "1.0"
        });
        fs::write(
            host.sonic_db("redis").join("database_global.json"),
            serde_json::to_vec_pretty(&global).unwrap(),
        )
        .unwrap();
        host
    }

    /// `/var/run/<redis_dir>/sonic-db` of the host.
    fn sonic_db(&self, redis_dir: &str) -> PathBuf {
        self.dir.path().join(redis_dir).join("sonic-db")
    }

    fn redis_dir(&self, redis_dir: &str) -> PathBuf {
        self.dir.path().join(redis_dir)
    }

    fn write_db_config(&self, redis_dir: &str, socket: &Path) {
        fs::create_dir_all(self.sonic_db(redis_dir)).unwrap();
        let config = serde_json::json!({
            "INSTANCES": {
                "redis": {"hostname": "127.0.0.1", "port": 6379, "unix_socket_path": socket}
            },
            "DATABASES": {
                "APPL_DB": {"id": APPL_DB, "separator": ":", "instance": "redis"},
                "CONFIG_DB": {"id": CONFIG_DB, "separator": "|", "instance": "redis"},
                "STATE_DB": {"id": STATE_DB, "separator": "|", "instance": "redis"}
            },
            "VERSION": "1.0"
        });
        fs::write(
            self.sonic_db(redis_dir).join("database_config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
    }
}

/// Creates Ethernet0 after the initial dump (so it is not an old
/// interface), brings it up and waits for its STATE_DB row.
fn port_syncs(bed: &Bed, daemon: &mut Daemon) {
    wait_until(DEADLINE, "PortConfigDone", || {
        daemon.assert_alive();
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    bed.ns.add_port("Ethernet0");
    bed.redis.wait_configured(&["Ethernet0"]);
    bed.ns.set_up("Ethernet0");
    bed.redis.wait_state(
        "Ethernet0",
        &[("state", "ok"), ("admin_status", "up"), ("mtu", "1500")],
    );
    daemon.assert_alive();
}

/// No endpoint, every log line on stderr, where the tests read it.
const QUIET_DEBUG: [&str; 5] = [
    "--no-metrics",
    "--log-level",
    "debug",
    "--log-output",
    "stderr",
];

#[test]
fn in_a_swss0_container_with_namespace_id_the_default_config_is_used() {
    let bed = Bed::new(&["Ethernet0"]);
    let host = HostRun::new(bed.redis.socket());
    // What swss0 sees: /var/run/redis is the host's /var/run/redis0, with
    // no database_global.json in it.
    let mounted = host.redis_dir("redis0");
    assert!(!mounted.join("sonic-db/database_global.json").exists());
    // A private mount namespace inside the test's network namespace: a
    // fresh /run with the host's redis0 bound at /run/redis, as docker
    // mounts it. The daemon gets no --db-config: the default path is it.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", bed.ns.name()])
        .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            r#"mount -t tmpfs tmpfs /run && mkdir /run/redis && mount --bind "$1" /run/redis \
               && shift && exec "$@""#,
        )
        .arg("sh")
        .arg(&mounted)
        .arg(BIN)
        .args(QUIET_DEBUG)
        .env("NAMESPACE_ID", "0");
    let mut daemon = Daemon::launch(cmd);
    port_syncs(&bed, &mut daemon);
    assert!(
        daemon
            .log()
            .contains("db_config=/var/run/redis/sonic-db/database_config.json"),
        "{}",
        daemon.log()
    );
}

#[test]
fn on_the_host_namespace_selects_the_config_through_database_global_json() {
    let bed = Bed::new(&["Ethernet0"]);
    let host = HostRun::new(bed.redis.socket());
    let global_default = host.sonic_db("redis").join("database_config.json");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", bed.ns.name(), BIN])
        .args(QUIET_DEBUG)
        .arg("--db-config")
        .arg(&global_default)
        .args(["--namespace", "asic0"])
        .env_remove("NAMESPACE_ID");
    let mut daemon = Daemon::launch(cmd);
    port_syncs(&bed, &mut daemon);
    assert!(
        daemon.log().contains(r#"namespace="asic0""#),
        "{}",
        daemon.log()
    );
}

#[test]
fn namespace_without_database_global_json_says_what_to_do() {
    let host = HostRun::new(Path::new("/nonexistent/redis.sock"));
    let inside = host.sonic_db("redis0").join("database_config.json");
    let mut daemon = Daemon::start_here(&inside, &["--namespace", "asic0"]);
    let status = daemon.wait_exit(DEADLINE);
    // A configuration the daemon refuses exits 2 (the unit does not retry it).
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("database_global.json"), "{log}");
    assert!(log.contains("drop --namespace"), "{log}");
}
