//! The metrics endpoint with the clients operators use: a real Prometheus
//! scraping with client certificates, the nginx mTLS reverse-proxy example,
//! and hundreds of hostile connections that must not slow port sync.

mod common;
mod common_tls;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Bed, DEADLINE, Netns, as_strs, port_names, wait_for};
use common_tls::prometheus::{Prometheus, example, spawn_logged};
use common_tls::*;

#[test]
fn prometheus_scrapes_with_client_certificates_and_reports_up() {
    let bed = Bed::new(&["Ethernet0"]);
    let certs = Certs::new();
    let _d = start_daemon(
        &bed,
        &certs,
        &["--metrics-allow-client", "prometheus.example"],
    );
    let prometheus = Prometheus::start(&bed.ns, &certs);
    prometheus.wait_value(Duration::from_secs(60), "up{job=\"portsyncd\"}", "1");
    // And what it scraped is the daemon's own data.
    prometheus.wait_value(Duration::from_secs(30), "portsyncd_port_init_done", "1");
}

#[test]
fn nginx_example_proxies_a_scrape_end_to_end() {
    let bed = Bed::new(&["Ethernet0"]);
    let certs = Certs::new();
    // nginx has its own identity towards the daemon, and only it may scrape.
    let (nginx_cert, nginx_key) =
        certs.sign_client("nginx", "nginx.example", "spiffe://example/nginx", None);
    let _d = start_daemon(
        &bed,
        &certs,
        &["--metrics-allow-client", "spiffe://example/nginx"],
    );
    let dir = tempfile::Builder::new()
        .prefix("psd-nginx-")
        .tempdir()
        .unwrap();
    let p = |n: &str| certs.path(n).display().to_string();
    let config = example(
        "nginx.conf",
        dir.path(),
        &[
            ("@PREFIX@", dir.path().display().to_string()),
            ("@LISTEN@", "[::1]:8443".to_string()),
            ("@PROXY_CERT@", p("server.crt")),
            ("@PROXY_KEY@", p("server.key")),
            ("@UPSTREAM_CLIENT_CERT@", nginx_cert.display().to_string()),
            ("@UPSTREAM_CLIENT_KEY@", nginx_key.display().to_string()),
            ("@CA@", p("ca.crt")),
            ("@UPSTREAM@", LISTEN.to_string()),
        ],
    );
    let mut cmd = in_ns(&bed.ns, "nginx");
    cmd.arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&config)
        .args(["-g", "daemon off;"]);
    let _nginx = spawn_logged(cmd, &dir.path().join("nginx.out"));

    let (cert, key) = certs.client();
    let url = "https://[::1]:8443/metrics";
    let r = wait_for(
        DEADLINE,
        "a scrape through nginx",
        || curl_as(&bed.ns, &certs, (&cert, &key), &[], url),
        |r| r.code == "200",
    );
    assert!(
        sample(&r.body, "portsyncd_link_events_received_total").is_some(),
        "{}",
        r.body
    );
    // The scraper itself is refused by nginx without a client certificate
    // (nginx answers 400), and directly by the daemon (not on the list).
    let no_cert = curl(&bed.ns, &certs.path("ca.crt"), None, &[], url);
    assert_eq!(no_cert.code, "400", "{no_cert:?}");
    let direct = curl_as(&bed.ns, &certs, (&cert, &key), &[], METRICS_URL);
    assert_refused(&direct);
}

/// Opens up to `n` TCP connections to the endpoint from inside `ns`. Every
/// other one sends the first bytes of a TLS record and stalls; the rest
/// send nothing.
fn hostile_connections(ns: &Netns, n: usize) -> Vec<TcpStream> {
    spawn_in_ns(ns, move || {
        let addr: SocketAddr = LISTEN.parse().unwrap();
        let mut held = Vec::new();
        for i in 0..n {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
                continue;
            };
            if i % 2 == 0 {
                // A handshake record header promising 512 bytes that never come.
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
            }
            held.push(s);
        }
        held
    })
    .join()
    .unwrap()
}

/// Rounds of link changes on every port (admin and carrier up, or carrier
/// down and a new MTU); how long each took until every row matched the
/// kernel.
fn rounds(bed: &Bed, names: &[&str], which: std::ops::Range<usize>) -> Vec<Duration> {
    which
        .map(|round| {
            let lines: Vec<String> = names
                .iter()
                .map(|n| {
                    let peer = Netns::peer_of(n);
                    if round % 2 == 0 {
                        format!("link set {n} up\nlink set {peer} up")
                    } else {
                        format!("link set {peer} down\nlink set {n} mtu {}", 1500 + round)
                    }
                })
                .collect();
            let started = Instant::now();
            bed.ns.batch(&lines);
            bed.wait_all_match_kernel(DEADLINE, names);
            started.elapsed()
        })
        .collect()
}

#[test]
fn port_sync_keeps_up_while_hundreds_of_hostile_connections_hold_the_endpoint() {
    let names = port_names(8);
    let names = as_strs(&names);
    let bed = Bed::new(&names);
    let certs = Certs::new();
    let mut daemon = start_daemon(&bed, &certs, &[]);
    bed.wait_all_match_kernel(DEADLINE, &names);
    // The baseline: the same kind of rounds, no flood.
    let baseline = rounds(&bed, &names, 0..6);

    let hostile = hostile_connections(&bed.ns, 300);
    assert!(
        hostile.len() >= 200,
        "only {} connections opened",
        hostile.len()
    );

    // Link changes while the endpoint is flooded still land in STATE_DB,
    // as fast as the same rounds did before the flood.
    let flooded = rounds(&bed, &names, 6..12);
    eprintln!("rounds converged in {flooded:?} with the flood, {baseline:?} without");
    let bound = *baseline.iter().max().unwrap() * 2 + Duration::from_secs(1);
    for (i, took) in flooded.iter().enumerate() {
        assert!(
            *took < bound,
            "round {i} took {took:?} with the endpoint flooded, over {bound:?} \
             (the same rounds without the flood: {baseline:?}; all flooded rounds: {flooded:?})"
        );
    }
    daemon.assert_alive();
    drop(hostile);

    // The endpoint held the flood within its unverified budget (closing
    // the oldest to make room) and is fine after it.
    let body = wait_sample_at_least(
        &bed.ns,
        &certs,
        "portsyncd_metrics_connections_refused_total{reason=\"evicted\"}",
        1.0,
    );
    assert!(
        sample(&body, "portsyncd_link_events_processed_total").unwrap_or(0.0) >= 8.0,
        "{body}"
    );
}
