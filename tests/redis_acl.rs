//! The daemon as the least-privilege Redis user of
//! docs/examples/redis-acl.conf, the file as shipped (only its password
//! placeholder filled in), against real redis-servers: its whole life works
//! with exactly those grants (Redis's `ACL LOG` records no refusal of it),
//! and what the user must not do, Redis refuses.
//!
//! The tests' own connections (the consumer, the seeding, the FLUSHALL of
//! a data loss) are the `default` user: the admin of the instance.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const ACL_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/redis-acl.conf");
const PLACEHOLDER: &str = "SHA256_OF_THE_PASSWORD";
const USER: &str = "portsyncd";
const PASSWORD: &str = "acl-test-password-7d1f";

fn sha256_hex(text: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The shipped file with the placeholder filled in for `password`: one
/// line, the user's rules.
fn shipped_acl(password: &str) -> String {
    let text = std::fs::read_to_string(ACL_FILE).expect("docs/examples/redis-acl.conf");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one user, one line: {text}");
    assert!(lines[0].starts_with("user portsyncd on #"), "{}", lines[0]);
    assert!(lines[0].contains(PLACEHOLDER), "the documented placeholder");
    lines[0].replace(PLACEHOLDER, &sha256_hex(password))
}

/// Loads the shipped user into a running server, as `ACL LOAD` of the file
/// would (each rule of the line, in order).
fn grant(redis: &RedisServer) {
    let line = shipped_acl(PASSWORD);
    let rules: Vec<&str> = line.split_whitespace().skip(1).collect();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&rules)
        .exec(&mut redis.con(0))
        .unwrap_or_else(|e| panic!("ACL SETUSER {rules:?}: {e}"));
}

/// What Redis refused the daemon's user since the last reset.
fn refusals(redis: &RedisServer) -> Vec<String> {
    let log: Vec<redis::Value> = redis::cmd("ACL")
        .arg("LOG")
        .query(&mut redis.con(0))
        .expect("ACL LOG");
    log.iter()
        .map(|entry| format!("{entry:?}"))
        .filter(|entry| entry.contains(USER))
        .collect()
}

/// A password file the way the docs install it: mode 0600.
fn password_file(dir: &Path, password: &str) -> PathBuf {
    let path = dir.join("redis.pw");
    std::fs::write(&path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The daemon as the ACL user, with no `--log-level`, so that CONFIG_DB
/// `LOGGER|portsyncd` decides the level (the LOGGER follower's life).
fn daemon_as_user(ns: &Netns, db_config: &Path, pw: &Path) -> Daemon {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns.name(),
        BIN,
        "--no-metrics",
        "--db-config",
    ])
    .arg(db_config)
    .args([
        "--log-output",
        "stderr",
        "--redis-user",
        USER,
        "--redis-password-file",
    ])
    .arg(pw);
    Daemon::launch(cmd)
}

fn wait_log(daemon: &Daemon, what: &str) {
    wait_until(DEADLINE, &format!("the log to say {what:?}"), || {
        daemon.log().contains(what)
    });
}

/// Creates `names` as veth ports, up with carrier, and waits for STATE_DB.
fn bring_up(bed: &Bed) {
    for name in bed.names() {
        bed.ns.add_port(name);
        bed.ns.set_peer_up(name);
        bed.ns.set_up(name);
    }
    bed.wait_all_match_kernel(DEADLINE, &bed.names());
}

fn wait_cold_start_done(redis: &RedisServer) {
    for notice in ["PortConfigDone", "PortInitDone"] {
        wait_until(DEADLINE, notice, || {
            redis.exists(APPL_DB, &format!("PORT_TABLE:{notice}"))
        });
    }
    wait_until(DEADLINE, "WARM_RESTART_TABLE|portsyncd disabled", || {
        redis.hget(STATE_DB, "WARM_RESTART_TABLE|portsyncd", "state") == Some("disabled".into())
    });
}

#[test]
fn a_whole_life_as_the_least_privilege_user() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), PASSWORD);
    let mut bed = Bed::new(&["Ethernet0", "Ethernet4"]);
    grant(&bed.redis);
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .exec(&mut bed.redis.con(0))
        .unwrap();
    let mut daemon = daemon_as_user(&bed.ns, bed.redis.db_config(), &pw);

    // Cold start, then the ports appear (as syncd creates them).
    bed.redis.wait_configured(&bed.names());
    bring_up(&bed);
    wait_cold_start_done(&bed.redis);

    // The LOGGER follower wrote the defaults and follows a change.
    wait_until(DEADLINE, "LOGGER|portsyncd defaults", || {
        bed.redis
            .hget(CONFIG_DB, "LOGGER|portsyncd", "LOGOUTPUT")
            .is_some()
    });
    bed.redis
        .hset(CONFIG_DB, "LOGGER|portsyncd", &[("LOGLEVEL", "INFO")]);
    wait_log(&daemon, "level=\"INFO\"");

    // A link change.
    bed.ns.set_mtu("Ethernet4", 9100);
    bed.redis.wait_state("Ethernet4", &[("mtu", "9100")]);
    bed.ns.set_peer_down("Ethernet0");
    bed.redis
        .wait_state("Ethernet0", &[("netdev_oper_status", "down")]);

    // Redis loses its data: an admin's FLUSHALL, then `config reload`.
    redis::cmd("FLUSHALL").exec(&mut bed.redis.con(0)).unwrap();
    wait_log(&daemon, "waiting for CONFIG_DB to hold the ports again");
    bed.redis.configure_ports(&bed.names());
    wait_cold_start_done(&bed.redis);
    bed.wait_all_match_kernel(DEADLINE, &bed.names());
    let refused = refusals(&bed.redis);
    assert!(
        refused.is_empty(),
        "Redis refused the daemon: {refused:#?}\nlog:\n{}",
        daemon.log()
    );

    // An outage that loses the ACL too: until the admin loads it again the
    // user does not exist; the daemon says so, names the user and the file,
    // and waits as for an unreachable Redis.
    bed.redis.kill_hard();
    let _ = std::fs::remove_file(bed.redis.dir().join("dump.rdb"));
    bed.redis.start_again();
    wait_log(&daemon, "refused user \"portsyncd\"");
    let log = daemon.log();
    assert!(
        log.contains(pw.to_str().unwrap()),
        "names the password file:\n{log}"
    );
    assert!(
        !log.contains(PASSWORD),
        "the password is never logged:\n{log}"
    );
    daemon.assert_alive();
    grant(&bed.redis);
    // The log holds the refused logins of the missing user; start afresh.
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .exec(&mut bed.redis.con(0))
        .unwrap();
    bed.redis.configure_ports(&bed.names());
    wait_cold_start_done(&bed.redis);
    bed.wait_all_match_kernel(DEADLINE, &bed.names());
    bed.ns.set_peer_up("Ethernet0");
    bed.redis
        .wait_state("Ethernet0", &[("netdev_oper_status", "up")]);
    let refused = refusals(&bed.redis);
    assert!(
        refused.is_empty(),
        "Redis refused the daemon: {refused:#?}\nlog:\n{}",
        daemon.log()
    );
    daemon.assert_alive();
    let status = daemon.sigterm_and_wait(DEADLINE);
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_warm_restart_as_the_least_privilege_user() {
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), PASSWORD);
    let bed = common::warm::bed_after_cold_run(4, DEADLINE);
    grant(&bed.redis);
    redis::cmd("ACL")
        .arg("LOG")
        .arg("RESET")
        .exec(&mut bed.redis.con(0))
        .unwrap();
    bed.ns.set_mtu("Ethernet4", 9100);
    let daemon = daemon_as_user(&bed.ns, bed.redis.db_config(), &pw);
    wait_log(&daemon, "warm restart reconciled");
    let warm = bed.redis.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd");
    assert_eq!(warm.get("restore_count").map(String::as_str), Some("1"));
    assert_eq!(warm.get("state").map(String::as_str), Some("reconciled"));
    bed.redis.wait_state("Ethernet4", &[("mtu", "9100")]);
    wait_until(DEADLINE, "PortInitDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    let refused = refusals(&bed.redis);
    assert!(
        refused.is_empty(),
        "Redis refused the daemon: {refused:#?}\nlog:\n{}",
        daemon.log()
    );
}

#[test]
fn the_multi_db_layout_as_the_least_privilege_user() {
    // SONiC's multi-DB layout: APPL_DB on an instance of its own.
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path(), PASSWORD);
    let main = RedisServer::start();
    let appl = RedisServer::start();
    grant(&main);
    grant(&appl);
    let db_config = dir.path().join("database_config.json");
    let config = serde_json::json!({
        "INSTANCES": {
            "redis": {"hostname": "127.0.0.1", "port": 6379, "unix_socket_path": main.socket()},
            "redis1": {"hostname": "127.0.0.1", "port": 6380, "unix_socket_path": appl.socket()},
        },
        "DATABASES": {
            "APPL_DB": {"id": APPL_DB, "separator": ":", "instance": "redis1"},
            "CONFIG_DB": {"id": CONFIG_DB, "separator": "|", "instance": "redis"},
            "STATE_DB": {"id": STATE_DB, "separator": "|", "instance": "redis"},
        },
        "VERSION": "1.0"
    });
    std::fs::write(&db_config, serde_json::to_vec(&config).unwrap()).unwrap();
    let names = ["Ethernet0", "Ethernet8"];
    main.configure_ports(&names);
    let _consumer = Consumer::start(appl.socket());
    let ns = Netns::new();
    let daemon = daemon_as_user(&ns, &db_config, &pw);
    appl.wait_configured(&names);
    for name in names {
        ns.add_port(name);
        ns.set_peer_up(name);
        ns.set_up(name);
    }
    for name in names {
        main.wait_state(name, &[("state", "ok"), ("netdev_oper_status", "up")]);
    }
    wait_until(DEADLINE, "PortInitDone in the APPL_DB instance", || {
        appl.exists(APPL_DB, "PORT_TABLE:PortInitDone")
    });
    for redis in [&main, &appl] {
        let refused = refusals(redis);
        assert!(
            refused.is_empty(),
            "Redis refused the daemon: {refused:#?}\nlog:\n{}",
            daemon.log()
        );
    }
}

/// A wrong password and a missing grant are said in the operator's words,
/// retried, and never end the daemon.
#[test]
fn a_wrong_password_or_a_missing_grant_is_named_and_waited_out() {
    let dir = tempfile::tempdir().unwrap();
    let bed = Bed::new(&["Ethernet0"]);
    grant(&bed.redis);
    let wrong = password_file(dir.path(), "not-the-password");
    let mut daemon = daemon_as_user(&bed.ns, bed.redis.db_config(), &wrong);
    wait_log(&daemon, "refused user \"portsyncd\"");
    let log = daemon.log();
    assert!(
        log.contains(wrong.to_str().unwrap()) && log.contains("CONFIG_DB"),
        "{log}"
    );
    assert!(
        !log.contains("not-the-password"),
        "the password is never logged:\n{log}"
    );
    daemon.assert_alive();
    drop(daemon);

    // The user may not SELECT: NOPERM, naming the user and the command.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(USER)
        .arg("-select")
        .exec(&mut bed.redis.con(0))
        .unwrap();
    let pw = password_file(dir.path(), PASSWORD);
    let mut daemon = daemon_as_user(&bed.ns, bed.redis.db_config(), &pw);
    wait_log(&daemon, "refused a command of user \"portsyncd\": NOPERM");
    assert!(daemon.log().contains("select"), "{}", daemon.log());
    daemon.assert_alive();
    // Granted again, it goes on by itself.
    grant(&bed.redis);
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(USER)
        .arg("+select")
        .exec(&mut bed.redis.con(0))
        .unwrap();
    bed.redis.wait_configured(&["Ethernet0"]);
    daemon.assert_alive();
}

/// What the user is refused, asked of a redis-server that loaded the
/// shipped file with `--aclfile` (so the file is valid ACL-file syntax).
#[test]
fn the_user_is_refused_everything_it_does_not_need() {
    require_root_and_tools();
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("users.acl");
    std::fs::write(
        &acl,
        format!(
            "user default on nopass ~* &* +@all\n{}\n",
            shipped_acl(PASSWORD)
        ),
    )
    .unwrap();
    let socket = dir.path().join("redis.sock");
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            // DEBUG enabled, so that it is the ACL that refuses it.
            "--enable-debug-command",
            "yes",
            "--unixsocket",
        ])
        .arg(&socket)
        .arg("--aclfile")
        .arg(&acl)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let url = format!("redis+unix://{}?db={CONFIG_DB}", socket.display());
    let client = redis::Client::open(url).unwrap();
    wait_until(DEADLINE, "redis-server with the shipped ACL file", || {
        client.get_connection().is_ok()
    });
    let mut admin = client.get_connection().unwrap();
    let as_user = |db: i64| {
        let url = format!("redis+unix://{}?db={db}", socket.display());
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).unwrap();
        let settings = info
            .redis_settings()
            .clone()
            .set_username(USER)
            .set_password(PASSWORD);
        redis::Client::open(info.set_redis_settings(settings))
            .unwrap()
            .get_connection()
            .expect("the user logs in")
    };
    redis::cmd("HSET")
        .arg("PORT|Ethernet0")
        .arg("mtu")
        .arg("9100")
        .exec(&mut admin)
        .unwrap();
    let mut conns = [as_user(APPL_DB), as_user(CONFIG_DB), as_user(STATE_DB)];
    let (appl, config, state) = (0, 1, 2);
    let cmd = |words: &[&str]| {
        let mut c = redis::Cmd::new();
        for w in words {
            c.arg(*w);
        }
        c
    };
    let refused = [
        ("FLUSHALL", config, cmd(&["FLUSHALL"])),
        ("FLUSHDB", state, cmd(&["FLUSHDB"])),
        ("CONFIG GET", config, cmd(&["CONFIG", "GET", "*"])),
        ("CONFIG SET", config, cmd(&["CONFIG", "SET", "save", ""])),
        ("DEBUG", config, cmd(&["DEBUG", "SLEEP", "0"])),
        ("ACL LIST", config, cmd(&["ACL", "LIST"])),
        ("SHUTDOWN", config, cmd(&["SHUTDOWN"])),
        ("EVAL", appl, cmd(&["EVAL", "return 1", "0"])),
        (
            "HSET CONFIG_DB PORT",
            config,
            cmd(&["HSET", "PORT|Ethernet0", "mtu", "1500"]),
        ),
        (
            "DEL CONFIG_DB PORT",
            config,
            cmd(&["DEL", "PORT|Ethernet0"]),
        ),
        (
            "HSET DEVICE_METADATA",
            config,
            cmd(&["HSET", "DEVICE_METADATA|localhost", "switch_type", "dpu"]),
        ),
        (
            "HSET another APPL_DB table",
            appl,
            cmd(&["HSET", "ROUTE_TABLE:10.0.0.0/8", "nexthop", "x"]),
        ),
        (
            "HSET the consumed PORT_TABLE",
            appl,
            cmd(&["HSET", "PORT_TABLE:Ethernet0", "mtu", "1"]),
        ),
        (
            "HSET another STATE_DB table",
            state,
            cmd(&["HSET", "NEIGH_STATE_TABLE|x", "state", "x"]),
        ),
        (
            "HSET WARM_RESTART_ENABLE_TABLE",
            state,
            cmd(&["HSET", "WARM_RESTART_ENABLE_TABLE|system", "enable", "true"]),
        ),
        (
            "HSET another daemon's WARM_RESTART_TABLE row",
            state,
            cmd(&["HSET", "WARM_RESTART_TABLE|orchagent", "state", "x"]),
        ),
        (
            "PUBLISH another channel",
            appl,
            cmd(&["PUBLISH", "ROUTE_TABLE_CHANNEL@0", "G"]),
        ),
        (
            "SUBSCRIBE another channel",
            config,
            cmd(&["SUBSCRIBE", "__keyspace@4__:PORT|Ethernet0"]),
        ),
        ("CLIENT KILL", config, cmd(&["CLIENT", "KILL", "ID", "1"])),
        ("SET", config, cmd(&["SET", "x", "y"])),
    ];
    let mut shown = String::new();
    for (what, db, cmd) in &refused {
        let err = cmd.query::<redis::Value>(&mut conns[*db]).expect_err(what);
        shown.push_str(&format!("{what}: {err}\n"));
        assert_eq!(err.code(), Some("NOPERM"), "{what}: {err}");
    }
    println!("refused, as run:\n{shown}");
    // What it needs, it may do.
    let got: Option<String> = cmd(&["HGET", "PORT|Ethernet0", "mtu"])
        .query(&mut conns[config])
        .unwrap();
    assert_eq!(got.as_deref(), Some("9100"));
    for (db, words) in [
        (
            config,
            &["HSET", "LOGGER|portsyncd", "LOGLEVEL", "NOTICE"][..],
        ),
        (state, &["HSET", "PORT_TABLE|Ethernet0", "state", "ok"]),
        (
            state,
            &["HSET", "WARM_RESTART_TABLE|portsyncd", "state", "disabled"],
        ),
        (
            state,
            &["HGET", "WARM_RESTART_ENABLE_TABLE|system", "enable"],
        ),
        (appl, &["HSET", "_PORT_TABLE:Ethernet0", "mtu", "9100"]),
        (appl, &["EXISTS", "PORT_TABLE:Ethernet0"]),
    ] {
        cmd(words)
            .exec(&mut conns[db])
            .unwrap_or_else(|e| panic!("{words:?}: {e}"));
    }
    let _ = server.kill();
    let _ = server.wait();
}

/// check-config shows the user and the file, never the password, and
/// refuses a password file group or others may read.
#[test]
fn check_config_shows_the_user_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let pw = password_file(dir.path(), PASSWORD);
    let run = |pw: &Path| {
        Command::new(BIN)
            .args(["check-config", "--no-metrics", "--db-config"])
            .arg(redis.db_config())
            .args(["--redis-user", USER, "--redis-password-file"])
            .arg(pw)
            .output()
            .unwrap()
    };
    let out = run(&pw);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Redis user \"portsyncd\"") && text.contains(pw.to_str().unwrap()),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = run(&pw);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("`redis_password_file`") && text.contains("0640") && !text.contains(PASSWORD),
        "{text}"
    );
}

/// Before any user or password matters: a socket that is not there is
/// named (today's words were `No such file or directory` for a missing
/// socket and a missing database config alike); a missing database config
/// is refused naming its path.
#[test]
fn a_missing_socket_or_database_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nowhere/redis.sock");
    let db_config = dir.path().join("database_config.json");
    let config = serde_json::json!({
        "INSTANCES": {"redis": {"unix_socket_path": socket}},
        "DATABASES": {
            "APPL_DB": {"id": APPL_DB, "separator": ":", "instance": "redis"},
            "CONFIG_DB": {"id": CONFIG_DB, "separator": "|", "instance": "redis"},
            "STATE_DB": {"id": STATE_DB, "separator": "|", "instance": "redis"},
        },
    });
    std::fs::write(&db_config, serde_json::to_vec(&config).unwrap()).unwrap();
    let mut daemon = Daemon::start_here(&db_config, &[]);
    wait_log(
        &daemon,
        &format!("the unix socket {} does not exist", socket.display()),
    );
    daemon.assert_alive();
    let missing = dir.path().join("missing.json");
    let mut daemon = Daemon::start_here(&missing, &[]);
    let status = daemon.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(2), "{}", daemon.log());
    assert!(
        daemon.log().contains(missing.to_str().unwrap()),
        "{}",
        daemon.log()
    );
}
