//! `portsyncd check-config` and `--config`, run as the real binary: exit
//! codes and messages an operator or a deployment pipeline sees.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_portsyncd");

/// A database_config.json; `state_instance` lets a test split STATE_DB off.
fn write_db_config(dir: &Path, state_instance: &str) -> PathBuf {
    let path = dir.join("database_config.json");
    let config = serde_json::json!({
        "INSTANCES": {
            "redis": {"hostname": "127.0.0.1", "port": 6379, "unix_socket_path": "/run/redis/redis.sock"},
            "redis2": {"hostname": "127.0.0.1", "port": 6380, "unix_socket_path": "/run/redis/redis2.sock"}
        },
        "DATABASES": {
            "APPL_DB": {"id": 0, "separator": ":", "instance": "redis"},
            "CONFIG_DB": {"id": 4, "separator": "|", "instance": "redis"},
            "STATE_DB": {"id": 6, "separator": "|", "instance": state_instance}
        },
        "VERSION": "1.0"
    });
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    path
}

fn write_toml(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("portsyncd.toml");
    fs::write(&path, text).unwrap();
    path
}

fn portsyncd(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("NAMESPACE_ID")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_good_file_passes_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = write_db_config(dir.path(), "redis");
    let file = write_toml(
        dir.path(),
        &format!(
            "db_config = {:?}\nqueue_capacity = 1024\nshutdown_timeout = 5\nno_metrics = true\n",
            db.to_str().unwrap()
        ),
    );
    let file = file.to_str().unwrap();
    let out = portsyncd(&["check-config", "--config", file]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("check-config: OK"), "{text}");
    assert!(text.contains(db.to_str().unwrap()), "{text}");
    assert!(text.contains("queue capacity 1024 keys"), "{text}");
    assert!(text.contains("shutdown timeout 5 s"), "{text}");

    let out = portsyncd(&["check-config", "--config", file, "--queue-capacity", "4096"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("queue capacity 4096 keys"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn bad_keys_and_values_fail_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = write_db_config(dir.path(), "redis");
    for (text, expected) in [
        ("queue_capacty = 1024\n", "unknown key `queue_capacty`"),
        ("queue_capacity = 3\n", "key `queue_capacity`"),
        ("shutdown_timeout = -1\n", "key `shutdown_timeout`"),
        ("redis_tcp = 1\n", "key `redis_tcp`"),
        ("log_format = \"xml\"\n", "key `log_format`"),
        (
            "queue_capacity = 1024\nqueue_capacity = 2048\n",
            "not valid TOML",
        ),
    ] {
        let file = write_toml(dir.path(), &format!("db_config = {db:?}\n{text}"));
        let out = portsyncd(&["check-config", "--config", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{text}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{text}: expected {expected:?} in {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("portsyncd.toml"), "{}", stderr(&out));
    }
}

#[test]
fn the_database_config_it_names_is_checked_too() {
    let dir = tempfile::tempdir().unwrap();
    // STATE_DB on an instance of its own is a layout SONiC ships: accepted,
    // and the summary names each database's instance.
    let db = write_db_config(dir.path(), "redis2");
    let file = write_toml(
        dir.path(),
        &format!("db_config = {db:?}\nno_metrics = true\n"),
    );
    let out = portsyncd(&["check-config", "--config", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout.contains("STATE_DB 6 on \"redis2\""), "{stdout}");

    let missing = dir.path().join("nope.json");
    let file = write_toml(dir.path(), &format!("db_config = {missing:?}\n"));
    let out = portsyncd(&["check-config", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.json"), "{}", stderr(&out));
}

#[test]
fn a_missing_file_fails_naming_it() {
    let out = portsyncd(&["check-config", "--config", "/nonexistent/portsyncd.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot open configuration file /nonexistent/portsyncd.toml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_daemon_refuses_to_start_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_toml(dir.path(), "netlink_buffer = 1024\n");
    let out = portsyncd(&["--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown key `netlink_buffer`"),
        "{}",
        stderr(&out)
    );
}

/// The example shipped beside the unit file is itself a valid configuration.
#[test]
fn the_shipped_example_passes() {
    let dir = tempfile::tempdir().unwrap();
    let db = write_db_config(dir.path(), "redis");
    let certs = generate_certs(dir.path());
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/portsyncd.toml");
    // As the unit does: certificate paths from the environment.
    let out = Command::new(BIN)
        .args(["check-config", "--config", example, "--db-config"])
        .arg(&db)
        .env_remove("NAMESPACE_ID")
        .env("PORTSYNCD_METRICS_CERT", certs.join("server.crt"))
        .env("PORTSYNCD_METRICS_KEY", certs.join("server.key"))
        .env("PORTSYNCD_METRICS_CA", certs.join("ca.crt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("queue capacity 65536 keys"), "{text}");
    assert!(
        text.contains("metrics endpoint: https://[::1]:7493 (Cnsa profile)"),
        "{text}"
    );
}

/// A fresh certificate set from certs-example/gen-certs.sh.
fn generate_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/certs-example/gen-certs.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "gen-certs.sh: {}", stderr(&out));
    certs
}

#[test]
fn metrics_certificates_are_checked_as_start_up_would() {
    let dir = tempfile::tempdir().unwrap();
    let db = write_db_config(dir.path(), "redis");
    let certs = generate_certs(dir.path());
    let path = |f: &str| certs.join(f).to_str().unwrap().to_string();
    let file = write_toml(
        dir.path(),
        &format!(
            "db_config = {:?}\nmetrics_cert = {:?}\nmetrics_key = {:?}\nmetrics_ca = {:?}\nmetrics_allow_client = [\"prometheus.example\"]\n",
            db.to_str().unwrap(),
            path("server.crt"),
            path("server.key"),
            path("ca.crt"),
        ),
    );
    let file = file.to_str().unwrap();
    let out = portsyncd(&["check-config", "--config", file]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("metrics endpoint: https://[::1]:7493"),
        "{text}"
    );
    assert!(text.contains("1 allowed client name(s)"), "{text}");

    // A key others may read is refused, naming the file and the fix.
    fs::set_permissions(
        certs.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = portsyncd(&["check-config", "--config", file]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&path("server.key")) && err.contains("chmod"),
        "{err}"
    );

    // A key that does not belong to the certificate is refused too.
    fs::set_permissions(
        certs.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let out = portsyncd(&[
        "check-config",
        "--config",
        file,
        "--metrics-key",
        &path("client.key"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("does not belong"), "{}", stderr(&out));
}

#[test]
fn missing_metrics_certificates_fail_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let db = write_db_config(dir.path(), "redis");
    let missing = dir.path().join("nowhere/server.crt");
    let out = portsyncd(&[
        "check-config",
        "--db-config",
        db.to_str().unwrap(),
        "--metrics-cert",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("missing"),
        "{err}"
    );
}
