//! Encoding the registry for a scrape with prometheus-client's own
//! encoders: OpenMetrics when the scraper's `Accept` asks for it (Prometheus
//! does), else the classic Prometheus text format 0.0.4 (curl, promtool,
//! older scrapers).

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// True when the `Accept` header names OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The body and its content type.
pub fn render(registry: &Registry, openmetrics: bool) -> (&'static str, String) {
    let mut out = String::with_capacity(16 * 1024);
    let (content_type, encoded) = if openmetrics {
        (OPENMETRICS, text::encode(&mut out, registry))
    } else {
        (
            prometheus_text::CONTENT_TYPE,
            prometheus_text::encode(&mut out, registry),
        )
    };
    // Writing to a String cannot fail; an encoder error would be a bug in a
    // metric, and an empty-but-valid body beats a panic in the server.
    if encoded.is_err() {
        out.clear();
        if openmetrics {
            out.push_str("# EOF\n");
        }
    }
    (content_type, out)
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn each_format_comes_from_its_encoder() {
        let mut registry = Registry::default();
        let c: Counter = Counter::default();
        registry.register("x", "Help text", c.clone());
        c.inc();
        let (ct, classic) = render(&registry, false);
        assert!(ct.starts_with("text/plain; version=0.0.4"));
        assert_eq!(
            classic,
            "# HELP x_total Help text.\n# TYPE x_total counter\nx_total 1\n"
        );
        let (ct, om) = render(&registry, true);
        assert!(ct.starts_with("application/openmetrics-text"));
        assert!(om.ends_with("# EOF\n"), "{om}");
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
