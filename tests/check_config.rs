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

/// How one configuration fares: the daemon refused it (its message) or kept
/// running; check-config refused it (its message) or passed it.
struct Verdicts {
    daemon: Option<String>,
    check: Option<String>,
}

/// Runs the daemon (for at most a second and a half: a daemon that accepts
/// the settings waits for a Redis that is not there) and check-config on
/// the same file.
fn judge(file: &Path) -> Verdicts {
    let file = file.to_str().unwrap();
    let mut daemon = Command::new(BIN)
        .args(["--config", file, "--log-output", "stderr"])
        .env_remove("NAMESPACE_ID")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1500);
    let exited = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if exited.is_none() {
        daemon.kill().unwrap();
    }
    let out = daemon.wait_with_output().unwrap();
    let daemon = exited.map(|status| {
        assert_eq!(
            status.code(),
            Some(2),
            "a refusal exits 2: {}",
            stderr(&out)
        );
        let text = stderr(&out);
        let line = text
            .lines()
            .find(|l| l.starts_with("portsyncd: "))
            .unwrap_or_else(|| panic!("{text}"));
        line.trim_start_matches("portsyncd: ").to_string()
    });
    let out = portsyncd(&["check-config", "--config", file]);
    let check = (!out.status.success()).then(|| {
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        stderr(&out)
            .trim()
            .trim_start_matches("portsyncd check-config: ")
            .to_string()
    });
    Verdicts { daemon, check }
}

/// Every key of the file and every field of the database config, each with
/// a value that cannot work: check-config refuses every one, naming the key
/// (or the database config field); whatever the daemon refuses, it refuses
/// with the same words; the rest (the endpoint's settings) keep only the
/// endpoint closed, and the daemon runs.
#[test]
fn whatever_the_daemon_refuses_check_config_refuses_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("redis.pw");
    fs::write(&pw, "secret\n").unwrap();
    fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let pw = pw.to_str().unwrap().to_string();
    // key, TOML value, the daemon refuses (else only the endpoint stays closed).
    let keys: &[(&str, &str, bool)] = &[
        ("db_config", "\"/nonexistent/database_config.json\"", true),
        ("namespace", "\"asic9\"", true),
        ("redis_tcp", "\"yes\"", true),
        ("redis_user", "\"portsyncd\"", true), // without a password file
        ("redis_password_file", &format!("{pw:?}"), true), // mode 0644
        ("no_metrics", "1", true),
        ("log_format", "\"xml\"", true),
        ("log_level", "\"verbose\"", true),
        ("log_output", "\"console\"", true),
        ("syslog_socket", "[\"/dev/log\"]", true),
        ("netlink_rcvbuf", "\"lots\"", true),
        ("queue_capacity", "\"lots\"", true),
        ("shutdown_timeout", "61", true),
        ("metrics_listen", "\"127.0.0.1:7493\"", false),
        ("metrics_cert", "\"/nonexistent/server.crt\"", false),
        ("metrics_key", "\"/nonexistent/server.key\"", false),
        ("metrics_ca", "\"/nonexistent/ca.crt\"", false),
        ("metrics_crl", "[\"/nonexistent/ca.crl\"]", false),
        ("metrics_allow_client", "[\"prométheus.example\"]", false),
        ("tls_profile", "\"CNSA\"", true),
        ("metrics_max_connections", "0", true),
        ("metrics_max_unverified", "0", true),
        ("metrics_max_unverified_per_source", "0", true),
        ("metrics_handshake_timeout", "0", true),
        ("metrics_header_read_timeout", "61", true),
        ("metrics_connection_lifetime", "0", true),
        ("metrics_max_parallel_scrapes", "0", true),
        ("metrics_rate_limit", "0", true),
        ("metrics_rate_burst", "0", true),
        ("metrics_client_rate_limit", "0", true),
        ("metrics_client_rate_burst", "0", true),
    ];
    // Every key the daemon takes is in the table.
    let help = stdout(&portsyncd(&["--help"]));
    let flags: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim().strip_prefix("--"))
        .map(|l| l.split([' ', '=']).next().unwrap().replace('-', "_"))
        .filter(|k| !["config", "help", "version"].contains(&k.as_str()))
        .collect();
    let covered: Vec<&str> = keys.iter().map(|(k, _, _)| *k).collect();
    for flag in &flags {
        assert!(covered.contains(&flag.as_str()), "no row for key `{flag}`");
    }
    // The database config: each field of the layout, broken.
    let good = std::fs::read_to_string(write_db_config(dir.path(), "redis")).unwrap();
    let layouts: Vec<(&str, String)> = vec![
        (
            "unix_socket_path",
            good.replace(
                "\"unix_socket_path\": \"/run/redis/redis.sock\"",
                "\"hostname_only\": 1",
            ),
        ),
        (
            "instance",
            good.replacen("\"instance\": \"redis\"", "\"instance\": \"redis9\"", 1),
        ),
        ("id", good.replace("\"id\": 6", "\"id\": 4")),
        ("id", good.replace("\"id\": 6", "\"id\": -1")),
        (
            "separator",
            good.replace("\"separator\": \"|\"", "\"separator\": \"\""),
        ),
        ("STATE_DB", good.replace("\"STATE_DB\"", "\"OTHER_DB\"")),
        ("port", good.replace("\"port\": 6379", "\"port\": \"x\"")),
        ("INSTANCES", good.replace("\"INSTANCES\"", "\"INSTANCE\"")),
    ];
    for (field, text) in &layouts {
        assert_ne!(text, &good, "{field}: the replacement changed nothing");
    }
    // Each file holds good settings (a certificate set, the database
    // config) but for the one key under test.
    let certs = generate_certs(dir.path());
    let mut cases: Vec<(String, String, bool)> = Vec::new();
    for (i, (key, value, daemon_refuses)) in keys.iter().enumerate() {
        let sub = subdir(dir.path(), &format!("k{i}"));
        let db = write_db_config(&sub, "redis");
        let good = [
            ("db_config", format!("{db:?}")),
            ("metrics_cert", format!("{:?}", certs.join("server.crt"))),
            ("metrics_key", format!("{:?}", certs.join("server.key"))),
            ("metrics_ca", format!("{:?}", certs.join("ca.crt"))),
        ];
        let mut text: String = good
            .iter()
            .filter(|(k, _)| k != key)
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        text.push_str(&format!("{key} = {value}\n"));
        let file = write_toml(&sub, &text);
        cases.push((
            format!("`{key}`"),
            file.to_str().unwrap().to_string(),
            *daemon_refuses,
        ));
    }
    for (i, (field, text)) in layouts.iter().enumerate() {
        let sub = subdir(dir.path(), &format!("d{i}"));
        let db = sub.join("database_config.json");
        fs::write(&db, text).unwrap();
        let file = write_toml(&sub, &format!("db_config = {db:?}\n"));
        cases.push((field.to_string(), file.to_str().unwrap().to_string(), true));
    }
    let verdicts: Vec<Verdicts> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(_, file, _)| s.spawn(move || judge(Path::new(file))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((what, file, daemon_refuses), v) in cases.iter().zip(verdicts) {
        let check = v
            .check
            .unwrap_or_else(|| panic!("{what}: check-config passed {file}"));
        assert!(
            check.contains(what.as_str()),
            "{what}: check-config does not name it: {check}"
        );
        match (daemon_refuses, v.daemon) {
            (true, Some(daemon)) => assert_eq!(
                daemon, check,
                "{what}: the daemon and check-config disagree"
            ),
            (true, None) => panic!("{what}: the daemon ran with {file}"),
            (false, Some(daemon)) => {
                panic!("{what}: the daemon stopped for an endpoint setting: {daemon}")
            }
            (false, None) => {}
        }
    }
}

/// `check-config --help` is its own.
#[test]
fn check_config_has_its_own_help() {
    let out = portsyncd(&["check-config", "--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("Usage: portsyncd check-config [--config PATH] [FLAGS]"),
        "{text}"
    );
    assert!(
        text.contains("exits 0 when the daemon would start"),
        "{text}"
    );
}

/// A CRL the parser refuses is named with the reason (here: no CRL Number
/// extension, which RFC 5280 requires).
#[test]
fn a_crl_without_a_crl_number_is_refused_naming_the_file_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = write_db_config(dir.path(), "redis");
    let certs = generate_certs(dir.path());
    let work = dir.path().join("ca");
    fs::create_dir(&work).unwrap();
    fs::write(work.join("index.txt"), "").unwrap();
    let cnf = work.join("ca.cnf");
    // No `crlnumber`: openssl then writes a CRL without the CRL Number.
    fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = c\n[c]\ndatabase = {}/index.txt\ndefault_md = sha384\ndefault_crl_days = 30\n",
            work.display()
        ),
    )
    .unwrap();
    let crl = work.join("ca.crl");
    let out = Command::new("openssl")
        .args(["ca", "-gencrl", "-batch", "-config"])
        .arg(&cnf)
        .arg("-cert")
        .arg(certs.join("ca.crt"))
        .arg("-keyfile")
        .arg(certs.join("ca.key"))
        .arg("-out")
        .arg(&crl)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    let out = Command::new(BIN)
        .args(["check-config", "--db-config"])
        .arg(&db)
        .arg("--metrics-cert")
        .arg(certs.join("server.crt"))
        .arg("--metrics-key")
        .arg(certs.join("server.key"))
        .arg("--metrics-ca")
        .arg(certs.join("ca.crt"))
        .arg("--metrics-crl")
        .arg(&crl)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(crl.to_str().unwrap()) && err.contains("could not be parsed: "),
        "{err}"
    );
    assert!(err.contains("CRL Number"), "{err}");
}

fn subdir(dir: &Path, name: &str) -> PathBuf {
    let sub = dir.join(name);
    fs::create_dir_all(&sub).unwrap();
    sub
}
