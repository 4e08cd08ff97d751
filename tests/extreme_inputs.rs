//! No input ends the process or stalls it (issue 11, item 10).
//!
//! Every value the daemon reads, from Redis, from a file or from the
//! environment, is tried at the extremes of its type and beyond. The
//! inputs, and where each is parsed:
//!
//! | source | input | parser |
//! | --- | --- | --- |
//! | STATE_DB | `WARM_RESTART_ENABLE_TABLE\|system`, `\|swss` `enable` | `warm_table::warm_start_from` |
//! | STATE_DB | `WARM_RESTART_TABLE\|portsyncd` `restore_count` | `warm_table::warm_start_from` |
//! | CONFIG_DB | `WARM_RESTART\|swss` `portsyncd_timer` | `warm_table::reconcile_timer_from`, `warm_reconcile::reconcile_timer` |
//! | CONFIG_DB | `LOGGER\|portsyncd` `LOGLEVEL`, `LOGOUTPUT` | `logger_table::settings_from` |
//! | CONFIG_DB | `DEVICE_METADATA\|localhost` `switch_type` | `device_metadata::is_dpu` |
//! | file | database_config.json (`id`, `port`, `separator`, `instance`, paths) | `db_config::parse_layout`, `load_layout` |
//! | file | database_global.json (`INCLUDES`) | `db_config::load_layout` |
//! | file | the TOML file, every key | `config_file::from_file_text`, `load` |
//! | env | `WATCHDOG_USEC`, `WATCHDOG_PID` | `systemd::watchdog_period_from` |
//! | env | `NOTIFY_SOCKET` | `systemd::Notifier::to_address` |
//!
//! (CONFIG_DB `PORT|*` fields and key names are copied, not parsed: item 8
//! covers their bytes. Certificates and CRLs are issue 12's.) Then the
//! daemon itself runs against a real Redis holding such values, and is
//! given files that would hang or bloat a naive reader.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use portsyncd::config::Cli;
use portsyncd::config_file::{self, LoadError};
use portsyncd::sonic::db_config::{load_layout, parse_layout};
use portsyncd::sonic::device_metadata;
use portsyncd::sonic::logger_table::{RawFields, settings_from};
use portsyncd::sonic::warm_table::{
    MAX_RECONCILE_TIMER_SECS, MAX_RESTORE_COUNT, reconcile_timer_from, warm_start_from,
};
use portsyncd::systemd::{MAX_WATCHDOG_PERIOD, Notifier, watchdog_period_from};
use portsyncd::warm_reconcile::reconcile_timer;

use common::*;

/// Byte strings at and beyond the edges of what a field may hold.
fn extremes() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        &b"18446744073709551615"[..],
        b"18446744073709551616",
        b"9223372036854775807",
        b"-9223372036854775808",
        b"-1",
        b"0",
        b"",
        b" ",
        b"NaN",
        b"inf",
        b"-0",
        b"1e400",
        b"0x7fffffff",
        b"\xff\xfe\xfd",
        b"\xc3",
        b"12\x0034",
        b"true\n",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    v.push(vec![b'9'; 100_000]);
    v.push(vec![0xff; 100_000]);
    v
}

fn assert_bounded_note(note: &Option<String>) {
    if let Some(note) = note {
        assert!(note.len() < 1024, "log line of {} bytes", note.len());
    }
}

#[test]
fn every_redis_value_at_its_extremes_gives_a_bounded_decision() {
    let on = Some(&b"true"[..]);
    for raw in extremes() {
        let raw = raw.as_slice();
        // enable (both keys), restore_count
        for (system, swss, count) in [
            (Some(raw), None, Some(&b"1"[..])),
            (None, Some(raw), Some(b"1")),
            (on, None, Some(raw)),
        ] {
            let r = warm_start_from(system, swss, count);
            assert!(r.value.restore_count <= MAX_RESTORE_COUNT);
            assert_eq!(r.value.warm, r.value.restore_count > 0);
            assert_bounded_note(&r.note);
        }
        // portsyncd_timer, and the deadline the warm start computes from it
        let t = reconcile_timer_from(Some(raw));
        assert!(
            t.value
                .is_none_or(|s| (1..=MAX_RECONCILE_TIMER_SECS).contains(&s))
        );
        assert_bounded_note(&t.note);
        let _deadline = Instant::now() + reconcile_timer(t.value);
        let _deadline = tokio::time::Instant::now() + reconcile_timer(Some(u64::MAX));
        // LOGLEVEL, LOGOUTPUT
        let fields: RawFields = [
            (b"LOGLEVEL".to_vec(), raw.to_vec()),
            (b"LOGOUTPUT".to_vec(), raw.to_vec()),
        ]
        .into();
        let s = settings_from(&fields);
        assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
        assert!(s.problems.iter().all(|p| p.len() < 1024));
        // switch_type
        assert!(!device_metadata::is_dpu(Some(raw)));
        assert!(device_metadata::describe(Some(raw)).len() < 1024);
        // WATCHDOG_USEC, WATCHDOG_PID
        let os = OsStr::from_bytes(raw);
        let w = watchdog_period_from(None, Some(os), 1);
        assert!(
            w.value
                .is_none_or(|d| !d.is_zero() && d <= MAX_WATCHDOG_PERIOD)
        );
        assert_bounded_note(&w.note);
        let not_ours = watchdog_period_from(Some(os), Some(OsStr::new("1000000")), 1);
        assert_eq!(not_ours.value, None, "pid {:?}", os);
        // NOTIFY_SOCKET: an address or a clear error, never a panic
        let mut path = b"/".to_vec();
        path.extend_from_slice(raw);
        let _ = Notifier::to_address(&path).map_err(|e| assert!(!e.to_string().is_empty()));
        let _ = Notifier::to_address(raw).map_err(|e| assert!(!e.to_string().is_empty()));
    }
    // The capped values the daemon then writes and uses.
    let max = warm_start_from(on, None, Some(b"18446744073709551615"));
    assert_eq!(max.value.restore_count, MAX_RESTORE_COUNT);
    assert!(max.note.unwrap().contains("maximum"));
    let timer = reconcile_timer_from(Some(b"18446744073709551615"));
    assert_eq!(timer.value, Some(MAX_RECONCILE_TIMER_SECS));
}

const DB_CONFIG: &str = r#"{
    "INSTANCES": {"redis": {"hostname": "127.0.0.1", "port": @PORT@, "unix_socket_path": @PATH@}},
    "DATABASES": {
        "APPL_DB": {"id": @ID@, "separator": @SEP@, "instance": @INST@},
        "CONFIG_DB": {"id": 4, "separator": "|", "instance": "redis"},
        "STATE_DB": {"id": 6, "separator": "|", "instance": "redis"}
    },
    "VERSION": "1.0"
}"#;

/// JSON values at the edges, for every field of database_config.json.
const JSON_EXTREMES: &[&str] = &[
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "-1",
    "1e400",
    "1.5",
    "null",
    "\"\"",
    "\"NaN\"",
    "true",
    "[]",
    "{}",
    "\"\\u0000\"",
    "\"\\ud800\"",
];

#[test]
fn every_database_config_field_at_its_extremes_is_used_or_refused_naming_the_file() {
    let origin = Path::new("/etc/extreme/database_config.json");
    let good = [
        ("@PORT@", "6379"),
        ("@PATH@", "\"/run/redis.sock\""),
        ("@ID@", "0"),
        ("@SEP@", "\":\""),
        ("@INST@", "\"redis\""),
    ];
    let render = |field: &str, value: &str| {
        good.iter().fold(DB_CONFIG.to_string(), |text, (f, v)| {
            text.replace(f, if *f == field { value } else { v })
        })
    };
    assert!(parse_layout(&render("", ""), origin).is_ok());
    let huge = format!("\"{}\"", "x".repeat(200_000));
    for (field, _) in good {
        for value in JSON_EXTREMES.iter().copied().chain([huge.as_str()]) {
            if let Err(e) = parse_layout(&render(field, value), origin) {
                let text = format!("{e:#}");
                assert!(text.contains("/etc/extreme/"), "{field}={value}: {text}");
            }
        }
    }
    // The ids SONiC could never have written are refused, not wrapped.
    for id in ["18446744073709551615", "-1", "1000001"] {
        assert!(
            parse_layout(&render("@ID@", id), origin).is_err(),
            "id {id}"
        );
    }
}

#[test]
fn database_global_json_at_its_extremes_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("database_config.json");
    let global = dir.path().join("database_global.json");
    let fifo = dir.path().join("fifo.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let long_include = format!(
        r#"{{"INCLUDES": [{{"namespace": "asic0", "include": "{}"}}]}}"#,
        "a/".repeat(5000)
    );
    let cases: Vec<Vec<u8>> = vec![
        br#"{"INCLUDES": 18446744073709551615}"#.to_vec(),
        br#"{"INCLUDES": [{"namespace": "asic0"}]}"#.to_vec(),
        br#"{"INCLUDES": [{"namespace": null, "include": "x"}]}"#.to_vec(),
        br#"{"INCLUDES": [{"namespace": "asic0", "include": "/dev/zero"}]}"#.to_vec(),
        format!(
            r#"{{"INCLUDES": [{{"namespace": "asic0", "include": "{}"}}]}}"#,
            fifo.display()
        )
        .into_bytes(),
        br#"{"INCLUDES": [{"namespace": "asic0", "include": "."}]}"#.to_vec(),
        long_include.into_bytes(),
        b"\xff\xfe{}".to_vec(),
        Vec::new(),
        vec![b'['; 100_000],
    ];
    for case in cases {
        fs::write(&global, &case).unwrap();
        let started = Instant::now();
        let err = load_layout(&config, Some("asic0")).expect_err("refused");
        let text = format!("{err:#}");
        assert!(
            text.contains(dir.path().to_str().unwrap()) || text.contains("/dev/zero"),
            "{text}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{text}");
    }
}

#[test]
fn every_toml_key_at_its_extremes_is_used_or_refused_naming_the_key_and_file() {
    let path = Path::new("/etc/extreme/portsyncd.toml");
    let command = Cli::command();
    let keys: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !matches!(*l, "config" | "help" | "version"))
        .map(|l| l.replace('-', "_"))
        .collect();
    assert!(keys.len() >= 15, "{keys:?}");
    let mut values: Vec<String> = [
        "18446744073709551615",
        "9223372036854775807",
        "-9223372036854775808",
        "-1",
        "0",
        "nan",
        "-inf",
        "1e400",
        "true",
        "[]",
        "{}",
        "\"18446744073709551615\"",
        "\"-1\"",
        "\"\"",
        "\"NaN\"",
        "\"\\u0000\"",
        "[\"18446744073709551615\", \"\"]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    values.push(format!("\"{}\"", "9".repeat(100_000)));
    let mut accepted = 0;
    for key in &keys {
        for value in &values {
            match config_file::from_file_text(&format!("{key} = {value}\n"), path) {
                Ok(cli) => {
                    accepted += 1;
                    // Whatever was accepted stays within the flag's range.
                    assert!((16..=1_048_576).contains(&cli.queue_capacity));
                    assert!(cli.shutdown_timeout() <= Duration::from_secs(60));
                    // Every key, not only those two: the value the file
                    // sets is the one its flag would set, and a value the
                    // flag refuses is not accepted from the file.
                    let words = flag_words(key, value);
                    let flags = Cli::try_parse_from(
                        std::iter::once("portsyncd".to_string()).chain(words.clone()),
                    )
                    .unwrap_or_else(|e| {
                        panic!("`{key} = {value:.40}` was accepted, {words:.80?} is refused: {e}")
                    });
                    assert_eq!(
                        format!("{cli:?}"),
                        format!("{flags:?}"),
                        "`{key} = {value:.40}` sets other settings than {words:.80?}"
                    );
                }
                Err(e) => {
                    let text = format!("{e:#}");
                    assert!(
                        text.contains("/etc/extreme/portsyncd.toml"),
                        "{key}: {text}"
                    );
                    assert!(text.len() < 200_000, "{key}: error of {} bytes", text.len());
                }
            }
        }
    }
    assert!(accepted > 0, "no extreme value was acceptable for any key");
}

/// The command line that the file's `key = value` stands for
/// (docs: file keys are flag names with `_` for `-`): a switch is the bare
/// flag when true, an array the flag once per item, anything else the flag
/// and the value as text.
fn flag_words(key: &str, value: &str) -> Vec<String> {
    let long = key.replace('_', "-");
    let flag = format!("--{long}");
    let command = Cli::command();
    let switch = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
        .is_some_and(|a| matches!(a.get_action(), clap::ArgAction::SetTrue));
    let table: toml::Table = format!("v = {value}").parse().expect("a TOML value");
    let text = |v: &toml::Value| match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => panic!("{key} = {value}: no flag takes {other:?}"),
    };
    match &table["v"] {
        toml::Value::Boolean(true) if switch => vec![flag],
        toml::Value::Boolean(false) if switch => Vec::new(),
        toml::Value::Array(items) => items
            .iter()
            .flat_map(|item| [flag.clone(), text(item)])
            .collect(),
        other => vec![flag, text(other)],
    }
}

#[test]
fn files_that_would_hang_or_bloat_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let big = dir.path().join("big.toml");
    fs::write(&big, vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let bytes = dir.path().join("bytes.toml");
    fs::write(&bytes, b"queue_capacity = 1024 # \xff\n").unwrap();
    for path in [Path::new("/dev/zero"), &fifo, dir.path(), &big, &bytes] {
        let started = Instant::now();
        let err = load_layout(path, None).expect_err("refused");
        assert!(
            format!("{err:#}").contains(path.to_str().unwrap()),
            "{err:#}"
        );
        let args = [
            OsStr::new("portsyncd"),
            OsStr::new("--config"),
            path.as_os_str(),
        ];
        match config_file::load(args) {
            Err(LoadError::Config(e)) => {
                assert!(format!("{e:#}").contains(path.to_str().unwrap()), "{e:#}")
            }
            other => panic!("{}: {:?}", path.display(), other.map(|_| ())),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// The daemon, black-box: a FIFO or /dev/zero given as its database config
/// ends start-up at once with the reason (today's main hangs on the FIFO
/// and grows on /dev/zero).
#[test]
fn the_daemon_refuses_a_fifo_or_dev_zero_as_its_config_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("database_config.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, flag) in [
        (fifo.as_path(), "--db-config"),
        (Path::new("/dev/zero"), "--db-config"),
        (fifo.as_path(), "--config"),
    ] {
        let db_config = if flag == "--db-config" {
            path
        } else {
            Path::new("/nonexistent")
        };
        let extra: Vec<&str> = match flag {
            "--config" => vec!["--config", path.to_str().unwrap()],
            _ => vec![],
        };
        let mut daemon = Daemon::start_here(db_config, &extra);
        let status = daemon.wait_exit(DEADLINE);
        assert!(!status.success(), "{}", daemon.log());
        assert!(
            daemon.log().contains("not a regular file"),
            "{}",
            daemon.log()
        );
    }
}

fn hset_bytes(redis: &RedisServer, db: i64, key: &str, field: &str, value: &[u8]) {
    redis::cmd("HSET")
        .arg(key)
        .arg(field)
        .arg(value)
        .exec(&mut redis.con(db))
        .unwrap_or_else(|e| panic!("HSET {key} {field}: {e}"));
}

/// The daemon, black-box, warm-restarted against a Redis whose every field
/// it reads is at an extreme: it does not panic (today's main panics on the
/// timer, "overflow when adding duration to instant", and never starts on
/// the non-UTF-8 `enable`), records the capped `restore_count`, reconciles
/// and keeps syncing link changes.
#[test]
fn the_daemon_syncs_with_every_redis_value_at_its_extreme() {
    let bed = common::warm::bed_after_cold_run(1, DEADLINE);
    let r = &bed.redis;
    hset_bytes(
        r,
        STATE_DB,
        "WARM_RESTART_ENABLE_TABLE|swss",
        "enable",
        b"true",
    );
    hset_bytes(
        r,
        STATE_DB,
        "WARM_RESTART_ENABLE_TABLE|system",
        "enable",
        b"\xff\xfe",
    );
    let u64_max = b"18446744073709551615";
    hset_bytes(
        r,
        STATE_DB,
        "WARM_RESTART_TABLE|portsyncd",
        "restore_count",
        u64_max,
    );
    hset_bytes(
        r,
        CONFIG_DB,
        "WARM_RESTART|swss",
        "portsyncd_timer",
        u64_max,
    );
    hset_bytes(
        r,
        CONFIG_DB,
        "LOGGER|portsyncd",
        "LOGLEVEL",
        b"\xff\xfeDEBUG",
    );
    hset_bytes(r, CONFIG_DB, "LOGGER|portsyncd", "LOGOUTPUT", b"-1");
    // UTF-8 here: a switch_type that is not UTF-8 is item 8's (start-up).
    hset_bytes(
        r,
        CONFIG_DB,
        "DEVICE_METADATA|localhost",
        "switch_type",
        u64_max,
    );

    let mut daemon = bed.daemon();
    wait_until(DEADLINE, "the warm restart to be reconciled", || {
        daemon.assert_alive();
        daemon.log().contains("warm restart reconciled")
    });
    let warm = r.hgetall(STATE_DB, "WARM_RESTART_TABLE|portsyncd");
    assert_eq!(
        warm.get("restore_count").map(String::as_str),
        Some(MAX_RESTORE_COUNT.to_string().as_str())
    );
    assert_eq!(warm.get("state").map(String::as_str), Some("reconciled"));

    bed.ns.set_mtu("Ethernet0", 9000);
    r.wait_state("Ethernet0", &[("mtu", "9000"), ("state", "ok")]);
    daemon.assert_alive();
    let log = daemon.log();
    for said in [
        r#"portsyncd_timer "18446744073709551615" is above the maximum; using 9999 s"#,
        r#"restore_count "18446744073709551615" reached the maximum"#,
        r#"LOGLEVEL "\xff\xfeDEBUG" is not one of"#,
        r#"LOGOUTPUT "-1" is not one of"#,
    ] {
        assert!(log.contains(said), "log lacks {said:?}:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}
