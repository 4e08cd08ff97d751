//! The metrics endpoint against real TLS clients (curl, openssl, promtool):
//! the good client gets its scrape; every other client is refused, each in
//! its own test, and the refusal is counted by reason; start-up refuses an
//! unsafe configuration; the certificate reloads on SIGHUP.

mod common;
mod common_tls;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Bed, DEADLINE, Daemon, RedisServer, wait_for, wait_until};
use common_tls::*;

/// A test's running endpoint: the daemon (dropped first), its certificate
/// set, and the bed with one configured port ([`start_daemon`] creates its
/// netdev).
struct Endpoint {
    daemon: Daemon,
    certs: Certs,
    bed: Bed,
}

impl Endpoint {
    fn start(daemon_args: &[&str]) -> Endpoint {
        Self::start_with(Certs::new(), daemon_args)
    }

    fn start_with(certs: Certs, daemon_args: &[&str]) -> Endpoint {
        let bed = Bed::new(&["Ethernet0"]);
        let daemon = start_daemon(&bed, &certs, daemon_args);
        Endpoint { daemon, certs, bed }
    }

    /// One curl run with `client` as the client certificate.
    fn request_as(&self, client: (&Path, &Path), curl_args: &[&str], url: &str) -> Curl {
        curl_as(&self.bed.ns, &self.certs, client, curl_args, url)
    }

    /// One curl run by the good client.
    fn request(&self, curl_args: &[&str], url: &str) -> Curl {
        let (cert, key) = self.certs.client();
        self.request_as((&cert, &key), curl_args, url)
    }

    /// `r` got no HTTP answer, and the good client then sees the refusal
    /// counted under `reason`.
    fn assert_refused_and_counted(&self, r: &Curl, reason: &str) {
        assert_refused(r);
        let series = format!("portsyncd_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        wait_sample_at_least(&self.bed.ns, &self.certs, &series, 1.0);
    }
}

#[test]
fn good_client_gets_metrics_promtool_accepts_and_healthz_passes() {
    let e = Endpoint::start(&[]);
    // Wait for start-up to finish so every metric has its steady value.
    let body = wait_sample_at_least(&e.bed.ns, &e.certs, "portsyncd_port_init_done", 1.0);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the body: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for family in [
        "portsyncd_link_events_received_total",
        "portsyncd_tls_certificate_expiry_timestamp_seconds{file=\"server\"}",
        "portsyncd_process_resident_memory_bytes",
        "portsyncd_process_open_fds",
        "portsyncd_redis_up",
    ] {
        assert!(sample(&body, family).is_some(), "{family} missing:\n{body}");
    }

    let health = e.request(&[], HEALTH_URL);
    assert_eq!(health.code, "200", "{health:?}");
    let json: serde_json::Value = serde_json::from_str(&health.body).expect("healthz JSON");
    assert_eq!(json["status"], "pass", "{json:#}");
    let names: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "redis",
            "netlink",
            "queue",
            "ports_initialised",
            "warm_restart",
            "certificates"
        ]
    );
}

#[test]
fn openmetrics_is_served_when_asked_for() {
    let e = Endpoint::start(&[]);
    let r = e.request(
        &["-H", "Accept: application/openmetrics-text; version=1.0.0"],
        METRICS_URL,
    );
    assert_eq!(r.code, "200", "{r:?}");
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    assert!(
        r.body
            .contains("# UNIT portsyncd_event_latency_seconds seconds"),
        "{}",
        r.body
    );
}

#[test]
fn a_client_that_scrapes_too_often_gets_429_with_retry_after() {
    let e = Endpoint::start(&[]);
    // One curl, one connection, 40 requests back to back: more than the
    // per-client burst. Headers go to stdout, where `code` collects them.
    let mut args = vec!["-D", "/dev/stdout", "-o", "/dev/null"];
    args.extend(std::iter::repeat_n(HEALTH_URL, 40));
    let r = e.request(&args, METRICS_URL);
    assert!(r.code.contains("HTTP/1.1 200"), "{r:?}");
    assert!(r.code.contains("HTTP/1.1 429"), "{r:?}");
    assert!(r.code.to_lowercase().contains("retry-after: "), "{r:?}");
}

#[test]
fn only_get_and_head_on_metrics_and_healthz() {
    let e = Endpoint::start(&[]);
    let post = e.request(&["-X", "POST"], METRICS_URL);
    assert_eq!(post.code, "405", "{post:?}");
    let other = e.request(&[], "https://[::1]:9090/");
    assert_eq!(other.code, "404", "{other:?}");
    let head = e.request(&["-I"], METRICS_URL);
    assert_eq!(head.code, "200", "{head:?}");
    assert!(
        head.body.contains("x-content-type-options: nosniff"),
        "{head:?}"
    );
}

#[test]
fn refused_without_a_client_certificate() {
    let e = Endpoint::start(&[]);
    let r = curl(&e.bed.ns, &e.certs.path("ca.crt"), None, &[], METRICS_URL);
    e.assert_refused_and_counted(&r, "no_client_certificate");
}

#[test]
fn refused_with_a_certificate_from_another_ca() {
    let e = Endpoint::start(&[]);
    let other = e.certs.other_ca_set();
    let r = e.request_as(
        (&other.join("client.crt"), &other.join("client.key")),
        &[],
        METRICS_URL,
    );
    e.assert_refused_and_counted(&r, "unknown_issuer");
}

#[test]
fn refused_with_an_expired_certificate() {
    let e = Endpoint::start(&[]);
    let (cert, key) = e.certs.sign_client(
        "expired",
        "prometheus.example",
        "spiffe://example/prometheus",
        Some(("20200101000000Z", "20200102000000Z")),
    );
    let r = e.request_as((&cert, &key), &[], METRICS_URL);
    e.assert_refused_and_counted(&r, "expired");
}

#[test]
fn refused_with_a_revoked_certificate_when_a_crl_is_given() {
    let certs = Certs::new();
    let (cert, key) = certs.sign_client(
        "revoked",
        "prometheus.example",
        "spiffe://example/prometheus",
        None,
    );
    let crl = certs.revoke(&cert);
    let e = Endpoint::start_with(certs, &["--metrics-crl", crl.to_str().unwrap()]);
    let r = e.request_as((&cert, &key), &[], METRICS_URL);
    // The good client (not revoked) still scrapes and sees the count.
    e.assert_refused_and_counted(&r, "revoked");
}

#[test]
fn refused_outside_the_allow_list_even_with_a_matching_cn() {
    let e = Endpoint::start(&["--metrics-allow-client", "prometheus.example"]);
    // The subject CN is the allowed name; the SANs are not: the CN must not count.
    let (cert, key) = e.certs.sign_client_with_cn(
        "intruder",
        "prometheus.example",
        "intruder.example",
        "spiffe://example/intruder",
        None,
    );
    let r = e.request_as((&cert, &key), &[], METRICS_URL);
    e.assert_refused_and_counted(&r, "client_not_allowed");
}

#[test]
fn allow_list_matches_a_uri_san() {
    let e = Endpoint::start(&["--metrics-allow-client", "spiffe://example/scraper"]);
    let (cert, key) =
        e.certs
            .sign_client("scraper", "other.example", "spiffe://example/scraper", None);
    let r = e.request_as((&cert, &key), &[], METRICS_URL);
    assert_eq!(r.code, "200", "{r:?}");
}

#[test]
fn refused_to_a_tls12_client() {
    let e = Endpoint::start(&[]);
    // --tls-max 1.2 overrides the helper's --tlsv1.3 minimum: a pure TLS 1.2 client.
    let r = e.request(&["--tlsv1.2", "--tls-max", "1.2"], METRICS_URL);
    e.assert_refused_and_counted(&r, "no_common_version");
}

#[test]
fn refused_to_an_aes128_only_tls13_client_under_cnsa() {
    let e = Endpoint::start(&[]);
    let r = e.request(&["--tls13-ciphers", "TLS_AES_128_GCM_SHA256"], METRICS_URL);
    e.assert_refused_and_counted(&r, "no_common_cipher_suite");
}

#[test]
fn aes128_is_accepted_under_the_modern_profile() {
    let e = Endpoint::start(&["--tls-profile", "modern"]);
    let r = e.request(&["--tls13-ciphers", "TLS_AES_128_GCM_SHA256"], METRICS_URL);
    assert_eq!(r.code, "200", "{r:?}");
}

/// Starts the daemon with `args` and expects it to exit non-zero with a log
/// that contains every one of `expected`.
fn assert_startup_refused(args: &[&str], expected: &[&str]) {
    let redis = RedisServer::start();
    let mut d = Daemon::start_here(redis.db_config(), args);
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "start-up should fail: {}", d.log());
    let log = d.log();
    for e in expected {
        assert!(log.contains(e), "log should say {e:?}:\n{log}");
    }
}

#[test]
fn startup_refuses_an_ipv4_address() {
    let certs = Certs::new();
    let args = certs.daemon_args(&["--metrics-listen", "127.0.0.1:9090"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_startup_refused(&args, &["127.0.0.1:9090 is an IPv4 address", "[::1]:9090"]);
    let args = certs.daemon_args(&["--metrics-listen", "[::ffff:127.0.0.1]:9090"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_startup_refused(&args, &["IPv4-mapped"]);
}

#[test]
fn startup_refuses_a_missing_key() {
    let certs = Certs::new();
    let missing = certs.path("nope.key").display().to_string();
    let args = certs.daemon_args(&["--metrics-key", &missing]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_startup_refused(&args, &[&missing, "is missing", "--metrics-key"]);
}

#[test]
fn startup_refuses_a_world_readable_key() {
    let certs = Certs::new();
    let key = certs.path("server.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let args = certs.daemon_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_startup_refused(&args, &[&key.display().to_string(), "chmod 600"]);
}

#[test]
fn startup_refuses_a_key_that_does_not_match_the_certificate() {
    let certs = Certs::new();
    let other_key = certs.path("client.key").display().to_string();
    let args = certs.daemon_args(&["--metrics-key", &other_key]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_startup_refused(&args, &["does not belong to the certificate"]);
}

/// Re-signs the server certificate (same key, new serial) and installs it
/// by rename, as a certificate manager would.
fn renew_server_cert(certs: &Certs) -> String {
    let dir = certs.dir();
    let ext = dir.join("renew.ext");
    fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:::1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let csr = dir.join("renew.csr");
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-subj",
            "/CN=portsyncd renewed",
            "-sha384",
            "-key",
        ])
        .arg(dir.join("server.key"))
        .arg("-out")
        .arg(&csr)
        .status()
        .unwrap();
    assert!(out.success());
    let new = dir.join("server.crt.new");
    let out = Command::new("openssl")
        .args([
            "x509",
            "-req",
            "-days",
            "30",
            "-sha384",
            "-set_serial",
            "4242",
            "-in",
        ])
        .arg(&csr)
        .arg("-CA")
        .arg(dir.join("ca.crt"))
        .arg("-CAkey")
        .arg(dir.join("ca.key"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&new)
        .status()
        .unwrap();
    assert!(out.success());
    let pem = fs::read_to_string(&new).unwrap();
    fs::rename(&new, dir.join("server.crt")).unwrap();
    fingerprint_of_pem(pem.trim())
}

fn sighup(d: &Daemon) {
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
}

#[test]
fn sighup_serves_a_renewed_certificate_and_garbage_keeps_the_old_one() {
    let mut e = Endpoint::start(&[]);
    let (bed, certs, d) = (&e.bed, &e.certs, &e.daemon);
    let original = fingerprint_of_pem(fs::read_to_string(certs.path("server.crt")).unwrap().trim());
    assert_eq!(served_fingerprint(&bed.ns, certs), original);

    let renewed = renew_server_cert(certs);
    assert_ne!(renewed, original);
    sighup(d);
    wait_until(
        RELOAD_DEADLINE,
        "the renewed certificate to be served",
        || served_fingerprint(&bed.ns, certs) == renewed,
    );

    fs::write(certs.path("server.crt.new"), "this is not a certificate\n").unwrap();
    fs::rename(certs.path("server.crt.new"), certs.path("server.crt")).unwrap();
    sighup(d);
    wait_sample_at_least(
        &bed.ns,
        certs,
        "portsyncd_tls_reloads_total{reason=\"failed\"}",
        1.0,
    );
    let body = scrape(&bed.ns, certs);
    assert_eq!(
        sample(&body, "portsyncd_tls_last_reload_success"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(served_fingerprint(&bed.ns, certs), renewed);
    let log = d.log();
    e.daemon.assert_alive();
    assert!(log.contains("metrics TLS reload refused"), "{log}");
}

#[test]
fn a_changed_certificate_file_is_served_without_sighup() {
    let e = Endpoint::start(&[]);
    let renewed = renew_server_cert(&e.certs);
    wait_until(
        RELOAD_DEADLINE,
        "the renewed certificate to be served after the file changed",
        || served_fingerprint(&e.bed.ns, &e.certs) == renewed,
    );
    wait_sample_at_least(
        &e.bed.ns,
        &e.certs,
        "portsyncd_tls_reloads_total{reason=\"ok\"}",
        1.0,
    );
}

#[test]
fn healthz_answers_503_while_redis_is_down() {
    let mut e = Endpoint::start(&[]);
    wait_sample_at_least(&e.bed.ns, &e.certs, "portsyncd_redis_up", 1.0);
    e.bed.redis.stop_saving();
    // The writer learns that Redis is gone when it next writes: give it a
    // link change to write.
    e.bed.ns.set_up("Ethernet0");
    let down = wait_for(
        DEADLINE,
        "/healthz to answer 503",
        || e.request(&[], HEALTH_URL),
        |r| r.code == "503",
    );
    let json: serde_json::Value = serde_json::from_str(&down.body).expect("healthz JSON");
    assert_eq!(json["status"], "fail", "{json:#}");
    assert_eq!(json["checks"][0]["name"], "redis", "{json:#}");
    assert_eq!(json["checks"][0]["status"], "fail", "{json:#}");
    e.bed.redis.start_again();
    wait_for(
        DEADLINE,
        "/healthz to answer 200 again",
        || e.request(&[], HEALTH_URL),
        |r| r.code == "200",
    );
}

#[test]
fn the_ipv6_wildcard_never_accepts_ipv4() {
    let certs = Certs::new();
    let e = Endpoint::start_with(certs, &["--metrics-listen", "[::]:9091"]);
    let v6 = e.request(&[], "https://[::1]:9091/metrics");
    assert_eq!(v6.code, "200", "{v6:?}");
    // curl exit 7: could not connect (nothing listens on IPv4).
    let v4 = e.request(
        &["--resolve", "localhost:9091:127.0.0.1"],
        "https://localhost:9091/metrics",
    );
    assert_eq!(v4.exit, Some(7), "{v4:?}");
}

#[test]
fn a_client_that_sends_no_request_after_the_handshake_is_disconnected() {
    let e = Endpoint::start(&[]);
    let (cert, key) = e.certs.client();
    // openssl s_client completes the handshake and then waits on its stdin,
    // which we keep open and silent: the header-read timeout must end it.
    let mut s_client = in_ns(&e.bed.ns, "openssl")
        .args([
            "s_client", "-quiet", "-connect", LISTEN, "-tls1_3", "-CAfile",
        ])
        .arg(e.certs.path("ca.crt"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let _silent_stdin = s_client.stdin.take();
    let status = wait_for(
        Duration::from_secs(30),
        "the server to close the silent connection",
        || s_client.try_wait().expect("try_wait"),
        Option::is_some,
    );
    assert!(status.is_some());
    wait_sample_at_least(
        &e.bed.ns,
        &e.certs,
        "portsyncd_metrics_connections_open",
        0.0,
    );
    let body = scrape(&e.bed.ns, &e.certs);
    // Only the scrape's own connection is open.
    assert_eq!(
        sample(&body, "portsyncd_metrics_connections_open"),
        Some(1.0),
        "{body}"
    );
}

#[test]
fn an_address_that_keeps_failing_handshakes_is_refused_for_a_while() {
    let e = Endpoint::start(&[]);
    let ca = e.certs.path("ca.crt");
    // Ten handshakes without a client certificate from ::1 ...
    for _ in 0..10 {
        assert_refused(&curl(&e.bed.ns, &ca, None, &[], METRICS_URL));
    }
    // ... and then even the good client from that address is cut off before
    // the handshake (curl: TLS connect error), until the ban ends.
    let banned = e.request(&[], METRICS_URL);
    assert_refused(&banned);
    let log = e.daemon.log();
    assert!(
        log.contains("keep failing; refusing it for a while"),
        "{log}"
    );
}

/// Fault injection (issue 5): the server certificate and key vanish while
/// the daemon runs. The endpoint keeps serving the set it has, says the
/// reload failed, and port sync never notices; putting the files back is
/// picked up without a restart.
#[test]
fn deleted_certificate_files_keep_the_old_set_and_port_sync_going() {
    let mut e = Endpoint::start(&[]);
    let (bed, certs) = (&e.bed, &e.certs);
    let original = fingerprint_of_pem(fs::read_to_string(certs.path("server.crt")).unwrap().trim());
    let saved: Vec<(std::path::PathBuf, Vec<u8>)> = ["server.crt", "server.key"]
        .iter()
        .map(|f| (certs.path(f), fs::read(certs.path(f)).unwrap()))
        .collect();
    for (path, _) in &saved {
        fs::remove_file(path).unwrap();
    }
    wait_sample_at_least(
        &bed.ns,
        certs,
        "portsyncd_tls_reloads_total{reason=\"failed\"}",
        1.0,
    );
    assert_eq!(served_fingerprint(&bed.ns, certs), original);
    assert!(e.daemon.log().contains("metrics TLS reload refused"));

    // Port sync goes on.
    bed.ns.set_up("Ethernet0");
    bed.redis.wait_state("Ethernet0", &[("admin_status", "up")]);
    bed.ns.set_down("Ethernet0");
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", "down")]);

    // The files come back (key first, private, as an operator would).
    for (path, bytes) in saved.iter().rev() {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    wait_sample_at_least(&bed.ns, certs, "portsyncd_tls_last_reload_success", 1.0);
    assert_eq!(served_fingerprint(&bed.ns, certs), original);
    e.daemon.assert_alive();
}
