//! The shipped unit file passes `systemd-analyze verify` and keeps its
//! `systemd-analyze security` exposure at or below 2.0 (Debian 12's
//! systemd 252; scripts/test.sh installs the `systemd` package for it).

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../systemd/portsyncd.service");
const BIN: &str = env!("CARGO_BIN_EXE_portsyncd");

/// The unit with its ExecStart= pointing at the binary under test, written
/// to a temporary directory (verify checks that the executable exists).
fn unit_under_test() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portsyncd.service");
    std::fs::write(&path, UNIT.replace("/usr/bin/portsyncd", BIN)).unwrap();
    (dir, path)
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze is needed (apt-get install systemd, or run scripts/test.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let (_dir, unit) = unit_under_test();
    let (ok, text) = analyze(&["verify"], &unit);
    assert!(ok, "systemd-analyze verify failed:\n{text}");
    assert!(
        !text.contains("portsyncd.service:"),
        "systemd-analyze verify complained about the unit:\n{text}"
    );
}

#[test]
fn unit_file_exposure_is_at_most_2_0() {
    let (_dir, unit) = unit_under_test();
    let (_, text) = analyze(&["security", "--offline=true"], &unit);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line in:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score from {line:?}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}

#[test]
fn unit_file_has_the_required_settings() {
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=on-failure",
        // A configuration the daemon refuses (exit 2) is not retried, and
        // a failing ExecStartPre= check stops after 5 tries in a minute.
        "RestartPreventExitStatus=2",
        "StartLimitBurst=5",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "AmbientCapabilities=CAP_NET_ADMIN",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET6",
        "SystemCallFilter=@system-service",
        "Environment=PORTSYNCD_METRICS_CERT=/etc/portsyncd/metrics/server.crt",
    ] {
        assert!(
            UNIT.lines().any(|l| l == line),
            "the unit file lost {line:?}"
        );
    }
}
