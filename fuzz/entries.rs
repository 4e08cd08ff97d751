//! The fuzz targets' bodies, one function a target (`decisions` runs
//! tests/support/decisions_model.rs's `run`). Each target in fuzz_targets/
//! calls its function here, and tests/fuzz_seeds.rs feeds every file of
//! fuzz/seeds/<target>/ through the same function in every test run, so an
//! input that once crashed a target (add it to its seeds) cannot crash it
//! again unnoticed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Instant;

use portsyncd::config_file::from_file_text;
use portsyncd::metrics::x509::{names, not_after, subject_alt_names};
use portsyncd::netlink::{NetlinkItem, ParseStats, parse_datagram};
use portsyncd::sonic::db_config::parse_layout;
use portsyncd::sonic::device_metadata;
use portsyncd::sonic::logger_table::{RawFields, settings_from};
use portsyncd::sonic::redis_value::{decimal, shown};
use portsyncd::sonic::warm_table::{
    MAX_RECONCILE_TIMER_SECS, MAX_RESTORE_COUNT, enable_is_true, reconcile_timer_from,
    warm_start_from,
};
use portsyncd::sync::SyncRules;
use portsyncd::systemd::{MAX_WATCHDOG_PERIOD, watchdog_period_from};
use portsyncd::warm_reconcile::reconcile_timer;

/// Any bytes as a DER certificate: the facts the metrics endpoint reads
/// from one (SANs, notAfter, the allow-list match) are an answer or
/// nothing, never a panic.
pub fn certificate(data: &[u8]) {
    let _ = not_after(data);
    for san in subject_alt_names(data) {
        let _ = names(data, &san);
    }
    let _ = names(data, "prometheus.example");
    let _ = names(data, "spiffe://example/prometheus");
    let _ = names(data, "::1");
}

/// Any text as the TOML configuration file: the loader returns settings or
/// an error naming the problem, never panics; settings it accepts are within
/// the ranges the flags promise.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match from_file_text(text, Path::new("fuzz.toml")) {
        Ok(cli) => {
            assert!((16..=1_048_576).contains(&cli.queue_capacity));
            assert!(cli.shutdown_timeout <= 60);
        }
        Err(e) => assert!(!format!("{e:#}").is_empty()),
    }
}

/// Any text as database_config.json: parse_layout returns a layout or an
/// error, never panics; a layout it accepts yields well-formed keys.
pub fn db_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(layout) = parse_layout(text, Path::new("fuzz.json")) {
        for db in [&layout.appl, &layout.config, &layout.state] {
            let key = db.key("PORT", "Ethernet0");
            assert!(key.starts_with("PORT") && key.ends_with("Ethernet0"));
        }
    }
}

/// Any bytes as one rtnetlink datagram: the parser must never panic, and
/// every link event it yields must go through the sync rules without panic.
pub fn netlink_datagram(data: &[u8]) {
    let rules = SyncRules::new([3, 7]);
    let mut stats = ParseStats::default();
    parse_datagram(data, &mut stats, |item| {
        if let NetlinkItem::Link(event) = item {
            let _ = rules.on_event(&event);
        }
    });
}

/// The input of [`redis_values`] cut at 0xFF 0x00.
fn pieces(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(2).position(|w| w == [0xFF, 0x00]) {
        out.push(&rest[..at]);
        rest = &rest[at + 2..];
    }
    out.push(rest);
    out
}

/// Every value the daemon reads from Redis (and the watchdog variables),
/// as arbitrary bytes, through the parsers the daemon uses: none panics,
/// and what they return stays within the documented bounds.
///
/// The input is cut at 0xFF 0x00 into the values, in this order: STATE_DB
/// `WARM_RESTART_ENABLE_TABLE|system` and `|swss` `enable`,
/// `WARM_RESTART_TABLE|portsyncd` `restore_count`, CONFIG_DB
/// `WARM_RESTART|swss` `portsyncd_timer`, `LOGGER|portsyncd` `LOGLEVEL` and
/// `LOGOUTPUT`, `DEVICE_METADATA|localhost` `switch_type`, then
/// `WATCHDOG_PID` and `WATCHDOG_USEC`. A missing piece is an absent value.
pub fn redis_values(data: &[u8]) {
    let p = pieces(data);
    let get = |i: usize| p.get(i).copied();

    for piece in &p {
        let _ = decimal(piece);
        assert!(shown(piece).len() <= 4 * 64 + 40);
    }

    let warm = warm_start_from(get(0), get(1), get(2));
    assert!(warm.value.restore_count <= MAX_RESTORE_COUNT);
    if warm.value.warm {
        assert!(enable_is_true(get(0)) || enable_is_true(get(1)));
        assert!(warm.value.restore_count >= 1);
    } else {
        assert_eq!(warm.value.restore_count, 0);
    }

    let timer = reconcile_timer_from(get(3));
    assert!(
        timer
            .value
            .is_none_or(|s| (1..=MAX_RECONCILE_TIMER_SECS).contains(&s))
    );
    // What the warm start does with it: a deadline on the clock.
    let _deadline = Instant::now() + reconcile_timer(timer.value);

    let mut fields = RawFields::new();
    if let Some(level) = get(4) {
        fields.insert(b"LOGLEVEL".to_vec(), level.to_vec());
    }
    if let Some(output) = get(5) {
        fields.insert(b"LOGOUTPUT".to_vec(), output.to_vec());
    }
    let settings = settings_from(&fields);
    assert!(settings.problems.len() <= 2);
    assert!(settings.problems.iter().all(|m| m.len() < 1024));

    let switch_type = get(6);
    let _ = device_metadata::is_dpu(switch_type);
    let _ = device_metadata::describe(switch_type);

    let watchdog = watchdog_period_from(
        get(7).map(OsStr::from_bytes),
        get(8).map(OsStr::from_bytes),
        4242,
    );
    assert!(
        watchdog
            .value
            .is_none_or(|d| d <= MAX_WATCHDOG_PERIOD && !d.is_zero())
    );
}
