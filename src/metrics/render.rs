//! Encoding the registry for a scrape: OpenMetrics when the scraper's
//! `Accept` asks for it (Prometheus does), else the classic Prometheus text
//! format 0.0.4 (curl, promtool, older scrapers).

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when the `Accept` header names OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The body and its content type.
pub fn render(registry: &Registry, openmetrics: bool) -> (&'static str, String) {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; an encoder error would be a bug in a
    // metric, and an empty-but-valid body beats a panic in the server.
    if encode(&mut out, registry).is_err() {
        out.clear();
        out.push_str("# EOF\n");
    }
    if openmetrics {
        (OPENMETRICS, out)
    } else {
        (PROMETHEUS_TEXT, to_prometheus_text(&out))
    }
}

/// Converts OpenMetrics text to Prometheus text 0.0.4: no `# UNIT` or
/// `# EOF` lines, and counter families named with their `_total` suffix (in
/// OpenMetrics the family name omits it, in the classic format it is part of
/// the name).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending_help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            pending_help = Some((name, help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some((help_name, help)) = pending_help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {help_name}{suffix} {help}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_name_and_openmetrics_lines_go() {
        let om = "# HELP a_x Help text.\n# TYPE a_x counter\na_x_total 3\n\
                  # HELP a_l Latency.\n# TYPE a_l histogram\n# UNIT a_l seconds\na_l_count 1\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_x_total Help text.\n# TYPE a_x_total counter\na_x_total 3\n\
             # HELP a_l Latency.\n# TYPE a_l histogram\na_l_count 1\n"
        );
    }

    #[test]
    fn accept_header_selects_the_format() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
