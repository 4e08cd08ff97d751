//! The Prometheus alert rules shipped in docs/examples/alerts.yml: valid for
//! `promtool check rules`, and each one shown firing and staying quiet by
//! the unit tests in docs/examples/alerts.test.yml (`promtool test rules`).
//! That the metrics they name exist is checked against a live daemon in
//! tests/dashboard.rs.

use std::collections::BTreeMap;
use std::process::Command;

mod common;
use common::run;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples");
const RULES: &str = include_str!("../docs/examples/alerts.yml");
const RULE_TESTS: &str = include_str!("../docs/examples/alerts.test.yml");

/// The alerts issue 13 asks for, by the name they have in alerts.yml.
const REQUIRED: [&str; 8] = [
    "PortsyncdSyncStalled",
    "PortsyncdRedisUnreachable",
    "PortsyncdNetlinkOverrunsRepeating",
    "PortsyncdQueueNearFull",
    "PortsyncdPortInitDoneMissing",
    "PortsyncdCertificateExpiringSoon",
    "PortsyncdTlsHandshakeFailures",
    "PortsyncdWarmRestartNotReconciled",
];

fn alert_names() -> Vec<&'static str> {
    RULES
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect()
}

/// `promtool ARGS` in docs/examples (where the test file finds
/// alerts.yml); panics with its report unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let out = run(Command::new("promtool").args(args).current_dir(EXAMPLES));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn promtool_check_rules_accepts_every_rule() {
    let names = alert_names();
    let report = promtool(&["check", "rules", "alerts.yml"]);
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{report}"
    );
    for name in REQUIRED {
        assert!(names.contains(&name), "alerts.yml has no {name}");
    }
}

/// For each alert name, how many test cases expect it firing and how many
/// expect silence, read from the `alertname:` / `exp_alerts:` pairs.
fn cases() -> BTreeMap<String, (usize, usize)> {
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in RULE_TESTS.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current
                .take()
                .unwrap_or_else(|| panic!("exp_alerts without an alertname: {line}"));
            let entry = cases.entry(name).or_default();
            if rest.trim().starts_with("[]") {
                entry.1 += 1;
            } else {
                entry.0 += 1;
            }
        }
    }
    cases
}

#[test]
fn every_alert_fires_and_stays_quiet_in_promtool_unit_tests() {
    let cases = cases();
    for name in alert_names() {
        let (firing, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(
            firing >= 1 && quiet >= 1,
            "{name}: {firing} firing and {quiet} quiet cases in alerts.test.yml; it needs both"
        );
    }
    for name in cases.keys() {
        assert!(
            alert_names().contains(&name.as_str()),
            "alerts.test.yml tests {name}, which alerts.yml does not define"
        );
    }
    let report = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(report.contains("SUCCESS"), "{report}");
}
