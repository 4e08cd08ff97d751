//! Logging as on a switch: the level and output come from CONFIG_DB
//! `LOGGER|portsyncd` and follow changes without a restart; the SYSLOG
//! output reaches a syslog socket with identity `portsyncd`.

mod common;
mod common_syslog;

use std::ffi::OsStr;

use common::*;
use common_syslog::SyslogSink;

const LOGGER_KEY: &str = "LOGGER|portsyncd";

/// `--no-metrics --db-config CFG EXTRA...`: no `--log-level`, so CONFIG_DB
/// decides the level.
fn start(bed: &Bed, extra: &[&str]) -> Daemon {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("--no-metrics"),
        OsStr::new("--db-config"),
        bed.redis.db_config().as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    Daemon::start_bare(&bed.ns, &args)
}

/// Creates Ethernet0 once the initial dump is over (a netdev there at start
/// is an old interface and ignored, as upstream does) and waits until it is
/// configured.
fn add_port_after_start(bed: &Bed) {
    wait_until(DEADLINE, "PortConfigDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    bed.ns.add_port("Ethernet0");
    bed.redis.wait_configured(&["Ethernet0"]);
}

fn wait_log(daemon: &mut Daemon, what: &str) {
    wait_log_after(daemon, 0, what);
}

/// Waits until the log, from byte `offset` on, contains `what`.
fn wait_log_after(daemon: &mut Daemon, offset: usize, what: &str) {
    wait_until(DEADLINE, &format!("the log to contain {what:?}"), || {
        daemon.assert_alive();
        daemon.log()[offset..].contains(what)
    });
}

fn debug_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" DEBUG ")).collect()
}

/// Turns Ethernet0 admin up or down and waits until STATE_DB has it: by
/// then the netlink thread has logged its (debug) line for that event.
fn flip(bed: &Bed, up: bool) {
    if up {
        bed.ns.set_up("Ethernet0");
    } else {
        bed.ns.set_down("Ethernet0");
    }
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", updown(up))]);
}

fn set_level(bed: &Bed, level: &str) {
    bed.redis
        .hset(CONFIG_DB, LOGGER_KEY, &[("LOGLEVEL", level)]);
}

#[test]
fn log_level_follows_config_db_without_restart() {
    let mut bed = Bed::new(&["Ethernet0"]);
    let mut daemon = start(&bed, &["--log-output", "stderr"]);
    add_port_after_start(&bed);

    // A fresh database gets SONiC's defaults.
    wait_until(DEADLINE, "LOGGER|portsyncd defaults in CONFIG_DB", || {
        bed.redis.hgetall(CONFIG_DB, LOGGER_KEY)
            == fields(&[("LOGLEVEL", "NOTICE"), ("LOGOUTPUT", "SYSLOG")])
    });
    wait_log(
        &mut daemon,
        r#"log level set level="NOTICE" source="CONFIG_DB LOGGER|portsyncd""#,
    );
    flip(&bed, true);
    assert_eq!(debug_lines(&daemon.log()), Vec::<&str>::new(), "at NOTICE");

    let offset = daemon.log().len();
    set_level(&bed, "DEBUG");
    wait_log_after(&mut daemon, offset, r#"log level set level="DEBUG""#);
    flip(&bed, false);
    let log = daemon.log();
    assert!(
        debug_lines(&log)
            .iter()
            .any(|l| l.contains("port link message link=Ethernet0")),
        "no debug line for the link change at DEBUG; log:\n{log}"
    );

    let offset = daemon.log().len();
    set_level(&bed, "NOTICE");
    wait_log_after(&mut daemon, offset, r#"log level set level="NOTICE""#);
    let seen = daemon.log().len();
    flip(&bed, true);
    let log = daemon.log();
    assert_eq!(
        debug_lines(&log[seen..]),
        Vec::<&str>::new(),
        "debug lines after going back to NOTICE"
    );

    // The subscription comes back after Redis restarts.
    let set_to_debug = daemon
        .log()
        .matches(r#"log level set level="DEBUG""#)
        .count();
    bed.redis.stop_saving();
    bed.redis.start_again();
    wait_log(&mut daemon, "lost the CONFIG_DB subscription");
    // Until the daemon has subscribed again, a change is not seen: repeat it.
    wait_until(DEADLINE, "the daemon to follow LOGGER again", || {
        set_level(&bed, "NOTICE");
        set_level(&bed, "DEBUG");
        daemon
            .log()
            .matches(r#"log level set level="DEBUG""#)
            .count()
            > set_to_debug
    });
    wait_log(&mut daemon, "following CONFIG_DB LOGGER|portsyncd again");
    daemon.assert_alive();
}

#[test]
fn present_fields_are_left_alone_and_used_at_start() {
    let bed = Bed::new(&["Ethernet0"]);
    set_level(&bed, "DEBUG");
    let mut daemon = start(&bed, &["--log-output", "stderr"]);
    add_port_after_start(&bed);
    wait_until(DEADLINE, "the missing LOGOUTPUT default", || {
        bed.redis
            .hget(CONFIG_DB, LOGGER_KEY, "LOGOUTPUT")
            .as_deref()
            == Some("SYSLOG")
    });
    assert_eq!(
        bed.redis.hget(CONFIG_DB, LOGGER_KEY, "LOGLEVEL").as_deref(),
        Some("DEBUG"),
        "the present LOGLEVEL was overwritten"
    );
    wait_log(
        &mut daemon,
        r#"log level set level="DEBUG" source="CONFIG_DB LOGGER|portsyncd""#,
    );
    flip(&bed, true);
    assert!(
        !debug_lines(&daemon.log()).is_empty(),
        "no debug lines with LOGLEVEL DEBUG at start"
    );
}

#[test]
fn command_line_level_wins_over_config_db() {
    let bed = Bed::new(&["Ethernet0"]);
    set_level(&bed, "DEBUG");
    let mut daemon = start(&bed, &["--log-output", "stderr", "--log-level", "notice"]);
    add_port_after_start(&bed);
    wait_log(
        &mut daemon,
        r#"log level set level="notice" source="--log-level""#,
    );
    wait_log(
        &mut daemon,
        r#"kept="notice" ignored="DEBUG" source="--log-level""#,
    );
    flip(&bed, true);
    assert_eq!(debug_lines(&daemon.log()), Vec::<&str>::new());
}

#[test]
fn notifications_off_is_said_once_and_the_start_level_kept() {
    let bed = Bed::new(&["Ethernet0"]);
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .exec(&mut bed.redis.con(0))
        .expect("CONFIG SET notify-keyspace-events");
    let mut daemon = start(&bed, &["--log-output", "stderr"]);
    add_port_after_start(&bed);
    wait_log(&mut daemon, "Redis has keyspace notifications off");
    wait_log(
        &mut daemon,
        r#"log level set level="NOTICE" source="CONFIG_DB"#,
    );
    set_level(&bed, "DEBUG");
    flip(&bed, true);
    flip(&bed, false);
    let log = daemon.log();
    assert_eq!(debug_lines(&log), Vec::<&str>::new(), "the level changed");
    assert_eq!(
        log.matches("keyspace notifications off").count(),
        1,
        "{log}"
    );
}

#[test]
fn syslog_output_reaches_the_socket_and_logoutput_switches_it() {
    let bed = Bed::new(&["Ethernet0"]);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("log.sock");
    let mut sink = SyslogSink::bind(&socket);
    let socket_arg = socket.display().to_string();
    // No --log-output: the output is SYSLOG, the default, then CONFIG_DB's.
    let mut daemon = start(&bed, &["--syslog-socket", &socket_arg]);
    add_port_after_start(&bed);
    let pid = daemon.pid();

    let line = sink.wait_for("portsyncd starting");
    let notice = format!("<13>portsyncd[{pid}]: ");
    assert!(line.starts_with(&notice), "{line:?} lacks {notice:?}");
    assert!(!line.ends_with('\n'), "{line:?}");
    bed.redis
        .hset(CONFIG_DB, LOGGER_KEY, &[("LOGLEVEL", "LOUD")]);
    let line = sink.wait_for(r#"LOGLEVEL "LOUD" is not one of"#);
    let warning = format!("<12>portsyncd[{pid}]: ");
    assert!(line.starts_with(&warning), "{line:?} lacks {warning:?}");
    assert!(
        daemon.log().is_empty(),
        "stderr got lines with SYSLOG output:\n{}",
        daemon.log()
    );

    bed.redis
        .hset(CONFIG_DB, LOGGER_KEY, &[("LOGOUTPUT", "STDERR")]);
    sink.wait_for(r#"log output moves output="STDERR""#);
    wait_log(&mut daemon, r#"log output set output="STDERR""#);
}
