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

use common::{Bed, DEADLINE, Daemon, wait_for, wait_until};
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
        "portsyncd_redis_up",
        // The standard process metrics, under their standard names.
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(sample(&body, family).is_some(), "{family} missing:\n{body}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = sample(&body, "process_start_time_seconds").unwrap();
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "start time {started} is not within the last two minutes ({now})"
    );
    // Every metric docs/metrics.md lists is served under that name.
    let docs = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    // Metric table rows: | `name` | type | labels | meaning |. A family
    // with labels has no series (and no TYPE line) until its first event.
    let listed: Vec<(&str, bool)> = docs
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let labelled = !cells.get(3)?.is_empty();
            (name.starts_with("portsyncd_") || name.starts_with("process_"))
                .then_some((name, labelled))
        })
        .collect();
    assert!(listed.len() > 40, "{listed:?}");
    for (name, labelled) in listed {
        assert!(
            body.contains(&format!("# TYPE {name} ")) || labelled,
            "docs/metrics.md lists {name}, the endpoint does not serve it:\n{body}"
        );
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
            "data_path",
            "queue",
            "redis_keys",
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
    let other = e.request(&[], "https://[::1]:7493/");
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

/// Runs the daemon with `extra` endpoint flags against `certs` and checks
/// that the endpoint stays closed saying every one of `expected`, while the
/// daemon runs and syncs a port.
fn assert_endpoint_closed_but_port_sync_runs(certs: &Certs, extra: &[&str], expected: &[&str]) {
    let bed = Bed::new(&["Ethernet0"]);
    let mut d = start_daemon_waiting_for(&bed, certs, extra, "metrics endpoint closed");
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", "down")]);
    d.assert_alive();
    let log = d.log();
    for e in expected
        .iter()
        .chain(&["event=\"metrics_endpoint_closed\"", "port sync goes on"])
    {
        assert!(log.contains(e), "the log should say {e:?}:\n{log}");
    }
    assert!(!log.contains("metrics endpoint listening"), "{log}");
}

#[test]
fn bad_endpoint_settings_keep_the_endpoint_closed_and_port_sync_running() {
    let certs = Certs::new();
    assert_endpoint_closed_but_port_sync_runs(
        &certs,
        &["--metrics-listen", "127.0.0.1:7493"],
        &["127.0.0.1:7493 is an IPv4 address", "[::1]:7493"],
    );
    let missing = certs.path("nope.key").display().to_string();
    assert_endpoint_closed_but_port_sync_runs(
        &certs,
        &["--metrics-key", &missing],
        &[&missing, "is missing", "--metrics-key"],
    );
    let other_key = certs.path("client.key").display().to_string();
    assert_endpoint_closed_but_port_sync_runs(
        &certs,
        &["--metrics-key", &other_key],
        &["does not belong to the certificate"],
    );
    let key = certs.path("server.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    assert_endpoint_closed_but_port_sync_runs(
        &certs,
        &[],
        &[&key.display().to_string(), "chmod 600"],
    );
}

#[test]
fn the_endpoint_opens_without_a_restart_once_the_files_appear() {
    let certs = Certs::new();
    let key = certs.path("server.key");
    let saved = fs::read(&key).unwrap();
    fs::remove_file(&key).unwrap();
    let bed = Bed::new(&["Ethernet0"]);
    let mut d = start_daemon_waiting_for(&bed, &certs, &[], "metrics endpoint closed");
    assert!(d.log().contains(&key.display().to_string()), "{}", d.log());
    let (cert, client_key) = certs.client();
    let closed = curl_as(&bed.ns, &certs, (&cert, &client_key), &[], METRICS_URL);
    assert_eq!(
        closed.exit,
        Some(7),
        "nothing should listen yet: {closed:?}"
    );
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", "down")]);

    fs::write(&key, saved).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    wait_until(DEADLINE, "the endpoint to open", || {
        d.log().contains("metrics endpoint listening")
    });
    let body = wait_sample_at_least(&bed.ns, &certs, "portsyncd_port_init_done", 1.0);
    assert!(sample(&body, "portsyncd_redis_up").is_some(), "{body}");
    d.assert_alive();
}

#[test]
fn a_taken_port_keeps_the_endpoint_closed_until_it_is_free() {
    let certs = Certs::new();
    let bed = Bed::new(&["Ethernet0"]);
    // Something else (a local Prometheus, say) holds the port first.
    let squatter = listen_in(&bed.ns, LISTEN);
    let mut d = start_daemon_waiting_for(&bed, &certs, &[], "metrics endpoint closed");
    assert!(
        d.log().contains("is another process using the port?"),
        "{}",
        d.log()
    );
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", "down")]);
    d.assert_alive();
    drop(squatter);
    wait_until(
        DEADLINE,
        "the endpoint to open once the port is free",
        || d.log().contains("metrics endpoint listening"),
    );
    scrape(&bed.ns, &certs);
}

/// A TCP listener on `addr` inside `ns`.
fn listen_in(ns: &common::Netns, addr: &str) -> std::net::TcpListener {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    spawn_in_ns(ns, move || std::net::TcpListener::bind(addr).unwrap())
        .join()
        .unwrap()
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
fn healthz_and_readyz_answer_503_while_redis_is_down_and_livez_200() {
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
    // Riding out a Redis outage is what the daemon is for: alive, not ready.
    let live = e.request(&[], LIVE_URL);
    assert_eq!(live.code, "200", "{live:?}");
    let ready = e.request(&[], READY_URL);
    assert_eq!(ready.code, "503", "{ready:?}");
    assert!(ready.body.contains("Redis not reachable"), "{ready:?}");
    e.bed.redis.start_again();
    wait_for(
        DEADLINE,
        "/healthz to answer 200 again",
        || e.request(&[], HEALTH_URL),
        |r| r.code == "200",
    );
    wait_for(
        DEADLINE,
        "/readyz to answer 200 again",
        || e.request(&[], READY_URL),
        |r| r.code == "200",
    );
}

/// `/livez` fails when the data-path loop stops going round, while the
/// endpoint's own thread goes on answering. The data path runs on the main
/// thread (its thread id is the pid); ptrace stops that one thread alone
/// (SIGSTOP would stop the endpoint too). Released, it is live again and
/// port sync goes on.
#[test]
fn livez_answers_503_while_the_data_path_thread_is_frozen() {
    let mut e = Endpoint::start(&[]);
    e.bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
    let live = e.request(&[], LIVE_URL);
    assert_eq!(live.code, "200", "{live:?}");
    let tid = e.daemon.pid() as libc::pid_t;
    // SAFETY: plain ptrace(2)/waitpid(2) calls on our own child's main
    // thread, all from this thread (the tracer); nothing else waits on the
    // child until it is detached.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
            0,
            "PTRACE_SEIZE"
        );
        assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
        let mut status = 0;
        assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid);
        assert!(libc::WIFSTOPPED(status), "status {status:#x}");
    }
    // The verdict turns after 20 s without a beat (systemd::MIN_STALE_AFTER).
    let frozen = wait_for(
        Duration::from_secs(40),
        "/livez to answer 503 while the data path is frozen",
        || e.request(&[], LIVE_URL),
        |r| r.code == "503",
    );
    assert!(
        frozen
            .body
            .contains("not live: the data path has not gone round for"),
        "{frozen:?}"
    );
    // SAFETY: as above; detaching resumes the thread.
    assert_eq!(
        unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) },
        0,
        "PTRACE_DETACH"
    );
    wait_for(
        DEADLINE,
        "/livez to answer 200 once the data path runs again",
        || e.request(&[], LIVE_URL),
        |r| r.code == "200",
    );
    e.daemon.assert_alive();
    e.bed.ns.set_down("Ethernet0");
    e.bed.wait_all_match_kernel(DEADLINE, &["Ethernet0"]);
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
        .args(["s_client", "-connect", LISTEN, "-tls1_3", "-CAfile"])
        .arg(e.certs.path("ca.crt"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    let _silent_stdin = s_client.stdin.take();
    let started = std::time::Instant::now();
    let status = wait_for(
        Duration::from_secs(30),
        "the server to close the silent connection",
        || s_client.try_wait().expect("try_wait"),
        Option::is_some,
    );
    let took = started.elapsed();
    let out = s_client.wait_with_output().unwrap();
    let said = format!(
        "s_client exited {status:?} after {took:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The handshake succeeded, verified both ways (a server that closed
    // at once on a failed handshake would also end s_client)...
    assert!(
        said.contains("Verify return code: 0 (ok)") && said.contains("TLSv1.3"),
        "{said}"
    );
    // ...and the server closed the connection at the header-read timeout
    // (5 s by default), not at once and not much later. (s_client exits 1
    // on a close without close_notify, so its status tells nothing here.)
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "closed after {took:?}, the header-read timeout is 5 s: {said}"
    );
    // Only the scrape's own connection is open.
    let body = wait_for(
        DEADLINE,
        "the silent connection to be gone from connections_open",
        || scrape(&e.bed.ns, &e.certs),
        |b| sample(b, "portsyncd_metrics_connections_open") == Some(1.0),
    );
    assert_eq!(
        sample(&body, "portsyncd_metrics_connections_open"),
        Some(1.0),
        "{body}"
    );
}

#[test]
fn failed_handshakes_from_the_scrapers_address_never_lock_the_scraper_out() {
    let e = Endpoint::start(&[]);
    let ca = e.certs.path("ca.crt");
    let other = e.certs.other_ca_set();
    // From ::1, the scraper's own address: handshakes without a certificate
    // and with one from another CA, far more than the old ban allowed ...
    for _ in 0..15 {
        assert_refused(&curl(&e.bed.ns, &ca, None, &[], METRICS_URL));
        assert_refused(&e.request_as(
            (&other.join("client.crt"), &other.join("client.key")),
            &[],
            METRICS_URL,
        ));
    }
    // ... and the good client at that address still gets its scrape.
    let r = e.request(&[], METRICS_URL);
    assert_eq!(r.code, "200", "{r:?}");
    assert!(
        sample(
            &r.body,
            "portsyncd_tls_handshake_failures_total{reason=\"unknown_issuer\"}"
        )
        .is_some_and(|v| v >= 15.0),
        "{}",
        r.body
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

#[test]
fn allow_list_matches_an_ip_san_exactly() {
    let e = Endpoint::start(&["--metrics-allow-client", "2001:db8::7"]);
    let (cert, key) =
        e.certs
            .sign_client_with_ip("by-ip", "a.example", "spiffe://example/a", "2001:db8::7");
    let r = e.request_as((&cert, &key), &[], METRICS_URL);
    assert_eq!(r.code, "200", "{r:?}");
    let (cert, key) =
        e.certs
            .sign_client_with_ip("other-ip", "b.example", "spiffe://example/b", "2001:db8::8");
    let r = e.request_as((&cert, &key), &[], METRICS_URL);
    assert_refused(&r);
}

#[test]
fn at_its_lifetime_a_connection_closes_gracefully_between_responses() {
    let e = Endpoint::start(&[
        "--metrics-connection-lifetime",
        "1",
        "--metrics-client-rate-limit",
        "100",
        "--metrics-client-rate-burst",
        "100",
    ]);
    let (cert, key) = e.certs.client();
    // One curl, keep-alive, 12 scrapes at 4 a second: three seconds over a
    // one-second lifetime. Each transfer prints its code and how many new
    // connections it needed.
    let mut cmd = in_ns(&e.bed.ns, "curl");
    cmd.args([
        "-sS",
        "-g",
        "--tlsv1.3",
        "--max-time",
        "20",
        "--rate",
        "4/s",
        "--cacert",
    ])
    .arg(e.certs.path("ca.crt"))
    .arg("--cert")
    .arg(&cert)
    .arg("--key")
    .arg(&key)
    .args(["-w", "%{http_code} %{num_connects}\n"]);
    for _ in 0..12 {
        cmd.args(["-o", "/dev/null", METRICS_URL]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "a response was cut: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<(&str, u32)> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(code, n)| (code, n.parse().unwrap()))
        .collect();
    assert_eq!(lines.len(), 12, "{text}");
    assert!(lines.iter().all(|(code, _)| *code == "200"), "{text}");
    let connections: u32 = lines.iter().map(|(_, n)| n).sum();
    assert!(
        connections >= 2,
        "the lifetime should have closed the first connection: {text}"
    );
}

/// `cert`'s `notAfter` replaced by `1é000000000Z` (13 bytes, a non-ASCII
/// character inside the time), written as PEM to `out`.
fn with_non_ascii_not_after(cert: &Path, out: &Path) {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut der = CertificateDer::from_pem_file(cert).unwrap().to_vec();
    let pos = der
        .windows(2)
        .enumerate()
        .filter(|(_, w)| w == &[0x17, 0x0d])
        .nth(1)
        .expect("notAfter is a UTCTime")
        .0;
    der[pos + 2..pos + 15].copy_from_slice("1é000000000Z".as_bytes());
    let mut base64 = Command::new("openssl")
        .args(["base64", "-e"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    base64.stdin.take().unwrap().write_all(&der).unwrap();
    let encoded = base64.wait_with_output().unwrap();
    assert!(encoded.status.success());
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}-----END CERTIFICATE-----\n",
        String::from_utf8(encoded.stdout).unwrap()
    );
    fs::write(out, pem).unwrap();
}

#[test]
fn a_certificate_with_a_non_ascii_not_after_is_refused_and_reloads_go_on() {
    let mut e = Endpoint::start(&[]);
    let bad = e.certs.path("bad.crt");
    with_non_ascii_not_after(&e.certs.path("server.crt"), &bad);

    // check-config: exit 1 naming the file (it used to panic: exit 101).
    let out = Command::new(common::BIN)
        .args(["check-config", "--db-config"])
        .arg(e.bed.redis.db_config())
        .args(
            e.certs
                .daemon_args(&["--metrics-cert", bad.to_str().unwrap()]),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(bad.to_str().unwrap()) && err.contains("not a readable X.509 certificate"),
        "{err}"
    );

    // The running daemon refuses it, keeps the old set, and its reload
    // watcher lives on: a renewed certificate is still picked up.
    fs::copy(&bad, e.certs.path("server.crt")).unwrap();
    let body = wait_sample_at_least(
        &e.bed.ns,
        &e.certs,
        "portsyncd_tls_reloads_total{reason=\"failed\"}",
        1.0,
    );
    assert_eq!(
        sample(&body, "portsyncd_tls_last_reload_success"),
        Some(0.0)
    );
    let renewed = renew_server_cert(&e.certs);
    wait_until(
        RELOAD_DEADLINE,
        "the renewed certificate to be served",
        || served_fingerprint(&e.bed.ns, &e.certs) == renewed,
    );
    let body = wait_sample_at_least(
        &e.bed.ns,
        &e.certs,
        "portsyncd_tls_last_reload_success",
        1.0,
    );
    assert_eq!(
        sample(&body, "portsyncd_tls_reload_watcher_restarts_total"),
        Some(0.0),
        "{body}"
    );
    e.daemon.assert_alive();
}

/// The structured events of a JSON log, as (event, whole line).
fn events(log: &str) -> Vec<(String, serde_json::Value)> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("event")?.as_str()?.to_string(), v)))
        .collect()
}

fn find_event<'a>(
    events: &'a [(String, serde_json::Value)],
    name: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> Option<&'a serde_json::Value> {
    events
        .iter()
        .filter(|(e, _)| e == name)
        .map(|(_, v)| v)
        .find(|v| matches(v))
}

#[test]
fn the_audit_trail_records_refusals_reloads_the_endpoint_and_log_level_changes() {
    let bed = Bed::new(&["Ethernet0"]);
    let certs = Certs::new();
    let mut args: Vec<std::ffi::OsString> = vec![
        "--db-config".into(),
        bed.redis.db_config().into(),
        "--log-output".into(),
        "stderr".into(),
        "--log-format".into(),
        "json".into(),
    ];
    args.extend(certs.daemon_args(&[]).into_iter().map(Into::into));
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let d = Daemon::start_bare(&bed.ns, &args);
    wait_until(DEADLINE, "the endpoint to open", || {
        find_event(&events(&d.log()), "metrics_endpoint_open", |_| true).is_some()
    });

    // Refused: no certificate, and a certificate from another CA.
    let ca = certs.path("ca.crt");
    assert_refused(&curl(&bed.ns, &ca, None, &[], METRICS_URL));
    let other = certs.other_ca_set();
    let (ocert, okey) = (other.join("client.crt"), other.join("client.key"));
    assert_refused(&curl_as(&bed.ns, &certs, (&ocert, &okey), &[], METRICS_URL));
    // A reload that works, and one that keeps the old set.
    renew_server_cert(&certs);
    sighup(&d);
    wait_until(DEADLINE, "a reload event", || {
        find_event(&events(&d.log()), "metrics_tls_reload", |v| {
            v["result"] == "ok"
        })
        .is_some()
    });
    fs::write(certs.path("server.crt"), "garbage\n").unwrap();
    sighup(&d);
    // A log level change from CONFIG_DB (swssloglevel -l DEBUG -c portsyncd).
    bed.redis.hset(
        common::CONFIG_DB,
        "LOGGER|portsyncd",
        &[("LOGLEVEL", "DEBUG")],
    );

    let all = wait_for(
        DEADLINE,
        "every audit event",
        || events(&d.log()),
        |ev| {
            find_event(ev, "metrics_tls_reload", |v| v["result"] == "kept_old").is_some()
                && find_event(ev, "log_level_changed", |v| v["level"] == "DEBUG").is_some()
                && find_event(ev, "metrics_client_refused", |v| {
                    v["reason"] == "unknown_issuer"
                })
                .is_some()
        },
    );
    let unknown = find_event(&all, "metrics_client_refused", |v| {
        v["reason"] == "unknown_issuer"
    })
    .unwrap();
    assert_eq!(unknown["peer"], "::1", "{unknown}");
    assert_eq!(
        unknown["sans"], "prometheus.example,spiffe://example/prometheus",
        "the SANs the client presented: {unknown}"
    );
    let anonymous = find_event(&all, "metrics_client_refused", |v| {
        v["reason"] == "no_client_certificate"
    })
    .expect("a refusal without a certificate");
    assert_eq!(anonymous["sans"], "", "{anonymous}");
    let kept = find_event(&all, "metrics_tls_reload", |v| v["result"] == "kept_old").unwrap();
    let crt = certs.path("server.crt").display().to_string();
    assert!(
        kept["files"].as_str().unwrap().contains(&crt)
            && kept["error"].as_str().unwrap().contains(&crt),
        "{kept}"
    );
    let level = find_event(&all, "log_level_changed", |v| v["level"] == "DEBUG").unwrap();
    assert!(
        level["source"].as_str().unwrap().starts_with("CONFIG_DB"),
        "{level}"
    );
}

#[test]
fn process_start_time_is_served_under_proc_subset_pid() {
    // The shipped unit's ProcSubset=pid: /proc shows the processes only, so
    // /proc/stat (btime) and /proc/uptime are not there.
    let certs = Certs::new();
    let bed = Bed::new(&["Ethernet0"]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", bed.ns.name(), "unshare", "-m", "--propagation", "private"])
        .args([
            "sh",
            "-c",
            "mount -t proc -o subset=pid proc /proc || exit 3
             if [ -e /proc/stat ]; then echo '/proc/stat is visible: subset=pid not in effect'; exit 4; fi
             exec \"$@\"",
            "proc-subset-pid",
            common::BIN,
            "--db-config",
        ])
        .arg(bed.redis.db_config())
        .args(["--log-level", "debug", "--log-output", "stderr"])
        .args(certs.daemon_args(&[]));
    let mut d = Daemon::launch(cmd);
    wait_until(DEADLINE, "the endpoint to open", || {
        d.assert_alive();
        d.log().contains("metrics endpoint listening")
    });
    let body = scrape(&bed.ns, &certs);
    let started = sample(&body, "process_start_time_seconds").expect("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started >= before - 2.0 && started <= now,
        "start time {started} outside [{before}, {now}]"
    );
    for series in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_max_fds",
    ] {
        assert!(sample(&body, series).is_some(), "{series} missing:\n{body}");
    }
}

/// The unverified budget of the file (32 in all, 4 protected per source)
/// and its handshake timeout (3 s), against the defaults (256, 8, 5 s).
/// Idle TCP connections (no ClientHello) from other addresses: `first`
/// alone from one address, then 31 from four others (8, 8, 8, 7). The
/// 33rd finds the budget full: with 4 protected per source the others'
/// oldest unprotected one is closed and `first` stays; with 8, all would
/// be protected and `first`, the oldest, would go; with 256 nothing would.
fn unverified_limits_take_effect(e: &Endpoint) {
    use std::io::Read;
    use std::net::{IpAddr, SocketAddr, TcpStream};
    use std::time::Instant;

    let source = |n: u16| -> IpAddr { format!("fd00:b0d6::{n}").parse().unwrap() };
    for n in 1..=6 {
        e.bed.ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{}/128", source(n)),
            "dev",
            "lo",
            "nodad",
        ]);
    }
    let connect = move |from: IpAddr| -> TcpStream {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
        let target: SocketAddr = LISTEN.parse().unwrap();
        socket
            .connect_timeout(&target.into(), Duration::from_secs(2))
            .unwrap();
        socket.into()
    };
    // Closed by the server: read returns 0 (or the connection was reset).
    let closed = |s: &mut TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => panic!("{n} bytes from a server that got no ClientHello"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(e) => panic!("reading a silent connection: {e}"),
        }
    };
    // The 33 connections must all be open well within the handshake
    // timeout; a machine too busy for that gets another try.
    let mut tries = 0;
    let (mut first, opened, mut others, newcomer) = loop {
        tries += 1;
        let (first, others, newcomer) = spawn_in_ns(&e.bed.ns, move || {
            let first = (connect(source(1)), Instant::now());
            let others: Vec<TcpStream> = [8, 8, 8, 7]
                .into_iter()
                .enumerate()
                .flat_map(|(i, n)| (0..n).map(move |_| i as u16 + 2))
                .map(|n| connect(source(n)))
                .collect();
            let newcomer = connect(source(6));
            (first, others, newcomer)
        })
        .join()
        .unwrap();
        let (first, opened) = first;
        if opened.elapsed() < Duration::from_millis(1500) || tries == 3 {
            break (first, opened, others, newcomer);
        }
        eprintln!("opening 33 connections took {:?}; again", opened.elapsed());
    };
    // (All of them stay open until the end: one closed by the test would
    // leave room in the budget.)
    let other_closed = closed(&mut others[0], Duration::from_secs(1));
    let first_closed = closed(&mut first, Duration::from_millis(200));
    assert!(
        other_closed || first_closed,
        "the 33rd connection closed nothing: the budget is not 32"
    );
    assert!(
        other_closed && !first_closed,
        "the oldest connection was closed, not the oldest unprotected one: \
         more than 4 are protected per source"
    );
    // And the rest of the handshake time, then the timeout closes it.
    assert!(
        closed(&mut first, Duration::from_secs(10)),
        "the handshake timeout never closed a silent connection"
    );
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(4500),
        "a silent connection was closed after {took:?}; the file says 3 s (default 5 s)"
    );
    drop((newcomer, others));
    wait_sample_at_least(
        &e.bed.ns,
        &e.certs,
        "portsyncd_metrics_connections_refused_total{reason=\"evicted\"}",
        1.0,
    );
}

#[test]
fn limits_set_in_the_toml_file_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("portsyncd.toml");
    fs::write(
        &toml,
        "metrics_client_rate_limit = 1\nmetrics_client_rate_burst = 2\n\
         metrics_max_parallel_scrapes = 2\nmetrics_max_unverified = 32\n\
         metrics_max_unverified_per_source = 4\nmetrics_handshake_timeout = 3\n",
    )
    .unwrap();
    let e = Endpoint::start(&["--config", toml.to_str().unwrap()]);
    // One connection, four requests back to back: a burst of 2, then 429.
    let mut args = vec!["-D", "/dev/stdout", "-o", "/dev/null"];
    args.extend(std::iter::repeat_n(HEALTH_URL, 3));
    let r = e.request(&args, METRICS_URL);
    assert_eq!(r.code.matches("HTTP/1.1 200").count(), 2, "{r:?}");
    assert!(r.code.contains("HTTP/1.1 429"), "{r:?}");
    unverified_limits_take_effect(&e);

    // And an out-of-range value is refused, naming the key.
    fs::write(&toml, "metrics_max_unverified = 0\n").unwrap();
    let out = Command::new(common::BIN)
        .args(["check-config", "--config"])
        .arg(&toml)
        .arg("--db-config")
        .arg(e.bed.redis.db_config())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("metrics_max_unverified"), "{err}");
}

/// A port whose netdev is deleted loses its state series; when the netdev
/// comes back, so do they (the data path keeps the labels, not detached
/// gauges).
#[test]
fn a_recreated_ports_state_series_come_back() {
    let bed = Bed::new(&["Ethernet0"]);
    let certs = Certs::new();
    let _daemon = start_daemon(&bed, &certs, &[]);
    let series = "portsyncd_port_admin_status{port=\"Ethernet0\"}";
    bed.ns.set_up("Ethernet0");
    wait_sample_at_least(&bed.ns, &certs, series, 1.0);
    bed.ns.del_link("Ethernet0");
    wait_until(DEADLINE, "the series to go with the row", || {
        !bed.redis.exists(common::STATE_DB, "PORT_TABLE|Ethernet0")
            && sample(&scrape(&bed.ns, &certs), series).is_none()
    });
    bed.ns.add_port("Ethernet0");
    bed.ns.set_up("Ethernet0");
    wait_sample_at_least(&bed.ns, &certs, series, 1.0);
}

/// A burst of SIGHUPs (100 within a second) is one reload and one log line.
#[test]
fn a_burst_of_sighups_is_one_reload_and_one_line() {
    let e = Endpoint::start(&[]);
    let reloads = |log: &str| log.matches("event=\"metrics_tls_reload\"").count();
    let before = reloads(&e.daemon.log());
    for _ in 0..100 {
        sighup(&e.daemon);
        std::thread::sleep(Duration::from_millis(9));
    }
    wait_sample_at_least(
        &e.bed.ns,
        &e.certs,
        "portsyncd_tls_reloads_total{reason=\"ok\"}",
        1.0,
    );
    // Long enough for a second reload, were there one.
    std::thread::sleep(Duration::from_secs(3));
    let log = e.daemon.log();
    assert_eq!(reloads(&log) - before, 1, "{log}");
    assert!(log.contains("trigger=\"100 SIGHUPs\""), "{log}");
    let body = scrape(&e.bed.ns, &e.certs);
    assert_eq!(
        sample(&body, "portsyncd_tls_reloads_total{reason=\"ok\"}"),
        Some(1.0),
        "{body}"
    );
}

/// A Redis that refuses the daemon's ACL user: /healthz and /readyz say so,
/// naming the user and the password file (never the password).
#[test]
fn healthz_names_the_redis_user_redis_refuses() {
    let certs = Certs::new();
    let bed = Bed::new(&["Ethernet0"]);
    redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "portsyncd",
            "on",
            ">the-right-one",
            "~*",
            "&*",
            "+@all",
        ])
        .exec(&mut bed.redis.con(0))
        .unwrap();
    let pw = certs.path("redis.pw");
    fs::write(&pw, "not-the-right-one\n").unwrap();
    fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
    let pw_arg = pw.to_str().unwrap();
    let args = certs.daemon_args(&["--redis-user", "portsyncd", "--redis-password-file", pw_arg]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&bed.ns, bed.redis.db_config(), &args);
    wait_until(
        DEADLINE,
        "the endpoint to open and Redis to refuse the user",
        || {
            let log = daemon.log();
            log.contains("metrics endpoint listening") && log.contains("refused user \"portsyncd\"")
        },
    );
    let (cert, key) = certs.client();
    let health = curl_as(&bed.ns, &certs, (&cert, &key), &[], HEALTH_URL);
    assert_eq!(health.code, "503", "{health:?}");
    let json: serde_json::Value = serde_json::from_str(&health.body).expect("healthz JSON");
    let redis = &json["checks"][0];
    assert_eq!(redis["name"], "redis");
    let detail = redis["detail"].as_str().unwrap();
    assert!(
        detail.contains("refused user \"portsyncd\"") && detail.contains(pw_arg),
        "{json:#}"
    );
    assert!(!health.body.contains("not-the-right-one"), "{json:#}");
    let ready = curl_as(&bed.ns, &certs, (&cert, &key), &[], READY_URL);
    assert_eq!(ready.code, "503");
    assert!(
        ready.body.contains("refused user \"portsyncd\""),
        "{ready:?}"
    );
}
