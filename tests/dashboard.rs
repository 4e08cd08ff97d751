//! The Grafana dashboard and the alert rules of docs/examples against a
//! running daemon: a real Prometheus scrapes it over mTLS (as
//! docs/examples/prometheus.yml configures it), the daemon sees link flaps,
//! a client without a certificate and a Redis outage, and then every
//! panel's query, with Grafana's variables filled in, must return data
//! through Prometheus' HTTP API. Every metric the rules and the dashboard
//! name must be one the daemon exports.

mod common;
mod common_tls;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Bed, DEADLINE, Daemon};
use common_tls::prometheus::Prometheus;
use common_tls::*;

const DASHBOARD: &str = include_str!("../docs/examples/grafana-dashboard.json");
const RULES: &str = include_str!("../docs/examples/alerts.yml");

/// Grafana's variables as a dashboard user sees them by default: the job
/// of docs/examples/prometheus.yml, every instance, and the intervals for
/// a 10-minute range with Prometheus scraping every second.
const VARIABLES: [(&str, &str); 5] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "10m"),
    ("$instance", ".+"),
    ("$job", "portsyncd"),
];

/// The standard process metric names the dashboard and the rules use.
const PROCESS_METRICS: [&str; 5] = [
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
];

/// (panel title, query) for every target of every panel; rows have none,
/// every other panel must have one.
fn panel_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("grafana-dashboard.json is not JSON");
    let panels = dashboard["panels"].as_array().expect("no panels");
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate panel id: {title}"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{title}: datasource"
        );
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a target without expr");
            queries.push((title.clone(), expr.to_string()));
        }
    }
    queries
}

fn with_variables(expr: &str) -> String {
    let mut q = expr.to_string();
    for (name, value) in VARIABLES {
        q = q.replace(name, value);
    }
    assert!(!q.contains('$'), "an unknown variable in {expr}");
    q
}

/// A daemon with two ports, scraped by a real Prometheus, that has seen
/// what the panels show: ports going up, a port that flaps, a scraper
/// without a client certificate, and Redis going away and coming back.
struct Busy {
    bed: Bed,
    certs: Certs,
    _daemon: Daemon,
    prometheus: Prometheus,
}

impl Busy {
    fn start() -> Busy {
        let ports = ["Ethernet0", "Ethernet4"];
        let mut bed = Bed::new(&ports);
        let certs = Certs::new();
        let daemon = start_daemon(
            &bed,
            &certs,
            &["--metrics-allow-client", "prometheus.example"],
        );
        let prometheus = Prometheus::start(&bed.ns, &certs);
        prometheus.wait_value(Duration::from_secs(60), "up{job=\"portsyncd\"}", "1");

        for port in ports {
            bed.ns.set_up(port);
            bed.ns.set_peer_up(port);
        }
        bed.wait_all_match_kernel(DEADLINE, &ports);
        bed.ns.set_peer_down("Ethernet0");
        bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");
        bed.ns.set_peer_up("Ethernet0");
        bed.wait_state_matches_kernel(DEADLINE, "Ethernet0");

        let refused = curl(&bed.ns, &certs.path("ca.crt"), None, &[], METRICS_URL);
        assert_refused(&refused);

        bed.redis.stop_saving();
        // The writer finds Redis gone when it has something to write.
        bed.ns.set_peer_down("Ethernet4");
        prometheus.wait_value(DEADLINE, "portsyncd_redis_up", "0");
        bed.redis.start_again();
        bed.wait_state_matches_kernel(DEADLINE, "Ethernet4");
        prometheus.wait_value(DEADLINE, "portsyncd_redis_up", "1");
        Busy {
            bed,
            certs,
            _daemon: daemon,
            prometheus,
        }
    }
}

#[test]
fn every_dashboard_panel_query_returns_data_from_a_real_prometheus() {
    let queries = panel_queries();
    let busy = Busy::start();
    let prometheus = &busy.prometheus;

    // Every query returns data.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut empty = Vec::new();
        for (title, expr) in &queries {
            let q = with_variables(expr);
            if prometheus.query(&q).is_empty() {
                empty.push(format!("{title}: {q}"));
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "panel queries without data after 60 s:\n{}",
            empty.join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every `portsyncd_*` and standard `process_*` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            let name = &text[i..end];
            let standard = PROCESS_METRICS.contains(&name);
            if name.starts_with("portsyncd_") || standard {
                names.insert(name.to_string());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// The metric families of a scrape, from its `# TYPE` lines, with the
/// sample names each gives (`_total` of a counter, `_bucket`/`_sum`/
/// `_count` of a histogram).
fn exported_names(body: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(family.to_string());
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

/// Label families that have no sample, and so no `# TYPE` line, until
/// their first failure, which a test cannot cause (malformed netlink
/// input). Their names are looked for in the daemon's source instead.
const CREATED_ON_FIRST_FAILURE: [&str; 1] = ["portsyncd_link_events_failed_total"];

/// Whether the daemon's source under src/ registers `name` (without the
/// `portsyncd_` prefix and the `_total` suffix, as the registry spells it):
/// a `register("name"` or `register_with_unit("name"` call outside a
/// comment, not merely the name somewhere in a string or a comment.
fn registered_in_source(name: &str) -> bool {
    let short = name
        .strip_prefix("portsyncd_")
        .and_then(|n| n.strip_suffix("_total"))
        .unwrap_or(name);
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                if registers(&text, short) {
                    return true;
                }
            }
        }
    }
    false
}

/// Whether Rust source `text` has a `.register(` or `.register_with_unit(`
/// call whose first argument is the literal `"short"`, or a line of a
/// `metrics!` table naming it (`field: Type = init, "short", UNIT, "help";`),
/// outside comments.
fn registers(text: &str, short: &str) -> bool {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let literal = format!("\"{short}\"");
    let table_line = |line: &str| {
        let mut parts = line.split(',').map(str::trim);
        parts.any(|p| p == literal) && line.contains(" = ") && line.trim_end().ends_with("\";")
    };
    if code.contains("metrics! {") && code.lines().any(table_line) {
        return true;
    }
    [".register(", ".register_with_unit("].iter().any(|call| {
        code.match_indices(call)
            .any(|(at, _)| code[at + call.len()..].trim_start().starts_with(&literal))
    })
}

#[test]
fn only_a_registration_counts_as_registered() {
    let source = r#"
        // r.register("in_a_comment", "help", c.clone());
        const NAME: &str = "only_a_string";
        r.register(
            "registered",
            "help",
            c.clone(),
        );
        r.register_with_unit("with_unit", "help", Unit::Seconds, h.clone());
    "#;
    assert!(registers(source, "registered"));
    assert!(registers(source, "with_unit"));
    assert!(!registers(source, "in_a_comment"));
    assert!(!registers(source, "only_a_string"));
    // And the family the dashboard needs this for is registered that way.
    assert!(registered_in_source("portsyncd_link_events_failed_total"));
}

#[test]
fn alert_rules_and_dashboard_name_only_metrics_the_daemon_exports() {
    let busy = Busy::start();
    let exported = exported_names(&scrape(&busy.bed.ns, &busy.certs));
    assert!(
        exported.contains("portsyncd_redis_up"),
        "no # TYPE lines in the scrape?"
    );
    for (file, text) in [("alerts.yml", RULES), ("grafana-dashboard.json", DASHBOARD)] {
        let names = metric_names(text);
        assert!(names.len() > 10, "{file}: only {names:?}");
        for name in names {
            if exported.contains(&name) {
                continue;
            }
            if CREATED_ON_FIRST_FAILURE.contains(&name.as_str()) {
                assert!(
                    registered_in_source(&name),
                    "{file} uses {name}, which src/ does not register"
                );
                continue;
            }
            panic!("{file} uses {name}, which the daemon does not export");
        }
    }
}
