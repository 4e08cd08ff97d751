//! The metrics endpoint with the clients operators use: a real Prometheus
//! scraping with client certificates, the nginx mTLS reverse-proxy example,
//! and hundreds of hostile connections that must not slow port sync.

mod common;
mod common_tls;

use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Bed, DEADLINE, Netns, as_strs, port_names, wait_for};
use common_tls::*;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples");

/// A child process killed (and reaped) on drop; prints its log when the test fails.
struct Guard {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- {} -----\n{}",
                self.log.display(),
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn spawn_logged(mut cmd: Command, log: &Path) -> Guard {
    let file = File::create(log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    Guard {
        child,
        log: log.to_path_buf(),
    }
}

/// An example file from docs/examples with its placeholders replaced.
fn example(name: &str, dir: &Path, replacements: &[(&str, String)]) -> std::path::PathBuf {
    let mut text = fs::read_to_string(Path::new(EXAMPLES).join(name)).unwrap();
    for (placeholder, value) in replacements {
        assert!(text.contains(placeholder), "{name} has no {placeholder}");
        text = text.replace(placeholder, value);
    }
    let left = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('@'))
        .count();
    assert_eq!(left, 0, "{name}: a placeholder is left:\n{text}");
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

fn plain_http_get(ns: &Netns, url: &str) -> String {
    let out = in_ns(ns, "curl")
        .args(["-sS", "--max-time", "5", "-g", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn prometheus_scrapes_with_client_certificates_and_reports_up() {
    let bed = Bed::new(&["Ethernet0"]);
    let certs = Certs::new();
    let _d = start_daemon(
        &bed,
        &certs,
        &["--metrics-allow-client", "prometheus.example"],
    );
    let dir = tempfile::Builder::new()
        .prefix("psd-prom-")
        .tempdir()
        .unwrap();
    let p = |n: &str| certs.path(n).display().to_string();
    let config = example(
        "prometheus.yml",
        dir.path(),
        &[
            ("@CA@", p("ca.crt")),
            ("@CLIENT_CERT@", p("client.crt")),
            ("@CLIENT_KEY@", p("client.key")),
            ("@TARGET@", LISTEN.to_string()),
        ],
    );
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(check.status.success(), "{check:?}");

    let mut cmd = in_ns(&bed.ns, "prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg("--web.listen-address=[::1]:19090");
    let _prometheus = spawn_logged(cmd, &dir.path().join("prometheus.log"));

    let query = |q: &str| {
        let body = plain_http_get(
            &bed.ns,
            &format!("http://[::1]:19090/api/v1/query?query={q}"),
        );
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_string)
            })
    };
    wait_for(
        Duration::from_secs(60),
        "Prometheus to report up{job=\"portsyncd\"} == 1",
        || query("up%7Bjob%3D%22portsyncd%22%7D"),
        |v| v.as_deref() == Some("1"),
    );
    // And what it scraped is the daemon's own data.
    wait_for(
        Duration::from_secs(30),
        "Prometheus to hold portsyncd_port_init_done == 1",
        || query("portsyncd_port_init_done"),
        |v| v.as_deref() == Some("1"),
    );
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

#[test]
fn port_sync_keeps_up_while_hundreds_of_hostile_connections_hold_the_endpoint() {
    let names = port_names(8);
    let names = as_strs(&names);
    let bed = Bed::new(&names);
    let certs = Certs::new();
    let mut daemon = start_daemon(&bed, &certs, &[]);
    bed.wait_all_match_kernel(DEADLINE, &names);

    let hostile = hostile_connections(&bed.ns, 300);
    assert!(
        hostile.len() >= 200,
        "only {} connections opened",
        hostile.len()
    );

    // Link changes while the endpoint is flooded still land in STATE_DB.
    for round in 0..6 {
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
        bed.ns.batch(&lines);
        bed.wait_all_match_kernel(DEADLINE, &names);
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
