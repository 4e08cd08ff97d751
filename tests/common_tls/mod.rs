//! Helpers for the metrics endpoint tests: certificates made per test by
//! `certs-example/gen-certs.sh` (plus `tests/support/test-ca.sh` for
//! the odd ones), the daemon started with the endpoint on, and real TLS
//! clients (curl, openssl) run inside the test's network namespace.

#![allow(dead_code)]

pub mod prometheus;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::{Bed, DEADLINE, Daemon, Netns, wait_for, wait_until};

/// Where the daemon listens inside the test's namespace (each test has its
/// own namespace, so the port never clashes).
pub const LISTEN: &str = "[::1]:7493";
pub const METRICS_URL: &str = "https://[::1]:7493/metrics";
pub const HEALTH_URL: &str = "https://[::1]:7493/healthz";
pub const LIVE_URL: &str = "https://[::1]:7493/livez";
pub const READY_URL: &str = "https://[::1]:7493/readyz";

const GEN_CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs-example/gen-certs.sh");
const TEST_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/test-ca.sh");

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A certificate set in a temporary directory: ca, server, client.
pub struct Certs {
    dir: TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("psd-certs-")
            .tempdir()
            .unwrap();
        run_ok(Command::new("bash").arg(GEN_CERTS).arg(dir.path()));
        Certs { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The good client: (cert, key).
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (self.path("client.crt"), self.path("client.key"))
    }

    /// A client certificate from this CA with the given SANs, and optionally
    /// a validity window (`YYYYMMDDHHMMSSZ`).
    pub fn sign_client(
        &self,
        name: &str,
        dns: &str,
        uri: &str,
        window: Option<(&str, &str)>,
    ) -> (PathBuf, PathBuf) {
        self.sign_client_with_cn(name, dns, dns, uri, window)
    }

    /// As [`Certs::sign_client`], with a subject CN other than the DNS SAN.
    pub fn sign_client_with_cn(
        &self,
        name: &str,
        cn: &str,
        dns: &str,
        uri: &str,
        window: Option<(&str, &str)>,
    ) -> (PathBuf, PathBuf) {
        self.sign(name, &[("CN", cn)], dns, uri, window)
    }

    /// A client certificate with an IP SAN besides its DNS and URI SANs.
    pub fn sign_client_with_ip(
        &self,
        name: &str,
        dns: &str,
        uri: &str,
        ip: &str,
    ) -> (PathBuf, PathBuf) {
        self.sign(name, &[("CN", dns), ("IP", ip)], dns, uri, None)
    }

    fn sign(
        &self,
        name: &str,
        env: &[(&str, &str)],
        dns: &str,
        uri: &str,
        window: Option<(&str, &str)>,
    ) -> (PathBuf, PathBuf) {
        let prefix = self.path(name);
        let mut cmd = Command::new("bash");
        cmd.envs(env.iter().copied());
        cmd.args([TEST_CA, "sign"])
            .arg(self.dir.path())
            .arg(&prefix)
            .args([dns, uri]);
        if let Some((start, end)) = window {
            cmd.args([start, end]);
        }
        run_ok(&mut cmd);
        (prefix.with_extension("crt"), prefix.with_extension("key"))
    }

    /// A CRL from this set's CA that revokes `cert`.
    pub fn revoke(&self, cert: &Path) -> PathBuf {
        let crl = self.path("revoked.crl");
        run_ok(
            Command::new("bash")
                .args([TEST_CA, "revoke"])
                .arg(self.dir.path())
                .arg(cert)
                .arg(&crl),
        );
        crl
    }

    /// A whole second set (another CA, with another name) under `other/`.
    pub fn other_ca_set(&self) -> PathBuf {
        let other = self.path("other");
        run_ok(
            Command::new("bash")
                .arg(GEN_CERTS)
                .arg(&other)
                .env("CA_NAME", "some other CA"),
        );
        other
    }

    /// The `--metrics-*` flags pointing at this set, then `extra`; a
    /// listen/cert/key/CA flag in `extra` replaces the set's own.
    pub fn daemon_args(&self, extra: &[&str]) -> Vec<String> {
        let p = |n: &str| self.path(n).display().to_string();
        let defaults = [
            ("--metrics-listen", LISTEN.to_string()),
            ("--metrics-cert", p("server.crt")),
            ("--metrics-key", p("server.key")),
            ("--metrics-ca", p("ca.crt")),
        ];
        let mut args = Vec::new();
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag.to_string(), value]);
            }
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }
}

/// Runs `f` on a new thread inside `ns` (setns changes only that thread's
/// network namespace; sockets it opens stay in `ns`).
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let netns = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid namespace fd; it changes only this
        // thread's network namespace.
        let rc =
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&netns), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
}

/// `ip netns exec NS program`.
pub fn in_ns(ns: &Netns, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name(), program]);
    cmd
}

/// Starts the daemon in the bed's namespace with the endpoint on, waits
/// until it listens and has read the initial link dump, then creates the
/// bed's ports that have no netdev yet (as syncd does, so start-up
/// completes).
pub fn start_daemon(bed: &Bed, certs: &Certs, extra: &[&str]) -> Daemon {
    start_daemon_waiting_for(bed, certs, extra, "metrics endpoint listening")
}

/// As [`start_daemon`], waiting for `endpoint_says` in the log instead of
/// "metrics endpoint listening" (e.g. for an endpoint that stays closed).
pub fn start_daemon_waiting_for(
    bed: &Bed,
    certs: &Certs,
    extra: &[&str],
    endpoint_says: &str,
) -> Daemon {
    let args = certs.daemon_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start(&bed.ns, bed.redis.db_config(), &args);
    // Netdevs that exist before the initial link dump ends are "old
    // interfaces" on a cold start and stay ignored (upstream's rule), so the
    // ports are created only after it.
    wait_until(
        DEADLINE,
        &format!("{endpoint_says:?} and the end of the initial dump"),
        || {
            daemon.assert_alive();
            let log = daemon.log();
            log.contains(endpoint_says) && log.contains("end of initial link update")
        },
    );
    // Like syncd, create the netdevs once orchagent (here the consumer) has
    // the ports: a STATE_DB write for a port not yet in APPL_DB is skipped,
    // as upstream does.
    bed.redis.wait_configured(&bed.names());
    for name in bed.names() {
        if bed.ns.link(name).is_none() {
            bed.ns.add_port(name);
        }
    }
    daemon
}

/// What one curl run saw.
#[derive(Debug)]
pub struct Curl {
    pub exit: Option<i32>,
    /// `%{http_code}`: "000" when there was no HTTP answer.
    pub code: String,
    pub body: String,
    pub stderr: String,
}

/// `curl --tlsv1.3` inside the namespace, trusting the set's CA, with an
/// optional client certificate and extra flags.
pub fn curl(
    ns: &Netns,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    extra: &[&str],
    url: &str,
) -> Curl {
    let body = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = in_ns(ns, "curl");
    cmd.args(["-sS", "-g", "--max-time", "10", "--tlsv1.3", "--cacert"])
        .arg(ca)
        .arg("-o")
        .arg(body.path())
        .args(["-w", "%{http_code}"]);
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cmd.args(extra).arg(url);
    let out = cmd.output().expect("curl");
    Curl {
        exit: out.status.code(),
        code: String::from_utf8_lossy(&out.stdout).to_string(),
        body: std::fs::read_to_string(body.path()).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// curl with `client` (cert, key) as the client certificate, trusting the
/// set's CA.
pub fn curl_as(
    ns: &Netns,
    certs: &Certs,
    client: (&Path, &Path),
    extra: &[&str],
    url: &str,
) -> Curl {
    curl(ns, &certs.path("ca.crt"), Some(client), extra, url)
}

/// A scrape by the good client; panics unless it gets 200.
pub fn scrape(ns: &Netns, certs: &Certs) -> String {
    let (cert, key) = certs.client();
    let r = curl_as(ns, certs, (&cert, &key), &[], METRICS_URL);
    assert_eq!(r.code, "200", "good client scrape: {r:?}");
    r.body
}

/// The value of the sample whose name-and-labels is exactly `series`.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until a good scrape shows `series` at `value` or more. Polls
/// gently: the endpoint's per-client rate limit answers 429 to a client that
/// scrapes many times a second, which counts as "not yet". On timeout the
/// panic shows the samples of the same family.
pub fn wait_sample_at_least(ns: &Netns, certs: &Certs, series: &str, value: f64) -> String {
    let (cert, key) = certs.client();
    let family = series.split('{').next().unwrap_or(series);
    let mut last = String::new();
    wait_for(
        DEADLINE,
        &format!("{series} >= {value}"),
        || {
            let r = curl_as(ns, certs, (&cert, &key), &[], METRICS_URL);
            if r.code != "200" {
                assert_eq!(r.code, "429", "good client scrape: {r:?}");
                std::thread::sleep(Duration::from_millis(300));
                return (false, "429".to_string());
            }
            last = r.body;
            let found = sample(&last, series).is_some_and(|v| v >= value);
            let seen: Vec<&str> = last.lines().filter(|l| l.starts_with(family)).collect();
            (found, seen.join("\n"))
        },
        |(found, _)| *found,
    );
    last
}

/// Asserts a refused request: curl got no HTTP answer at all.
pub fn assert_refused(r: &Curl) {
    assert_ne!(r.exit, Some(0), "curl should have failed: {r:?}");
    assert_eq!(r.code, "000", "no HTTP answer expected: {r:?}");
}

/// SHA-256 fingerprint of the certificate the server presents, as openssl
/// s_client sees it.
pub fn served_fingerprint(ns: &Netns, certs: &Certs) -> String {
    let (cert, key) = certs.client();
    let mut s_client = in_ns(ns, "openssl");
    s_client
        .args(["s_client", "-connect", LISTEN, "-tls1_3", "-CAfile"])
        .arg(certs.path("ca.crt"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null());
    let out = s_client.output().expect("openssl s_client");
    let pem = String::from_utf8_lossy(&out.stdout).to_string();
    let start = pem.find("-----BEGIN CERTIFICATE-----");
    let end = pem.find("-----END CERTIFICATE-----");
    // A handshake that failed is the test's failure, not an empty
    // fingerprint that merely differs from the one expected.
    let (Some(start), Some(end)) = (start, end) else {
        panic!(
            "openssl s_client got no server certificate (exit {}):\n{pem}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    fingerprint_of_pem(&pem[start..end + "-----END CERTIFICATE-----".len()])
}

/// SHA-256 fingerprint of a PEM certificate.
pub fn fingerprint_of_pem(pem: &str) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{pem}\n")).unwrap();
    let out = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(file.path()),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A little patience for things that settle on their own (reload polling).
pub const RELOAD_DEADLINE: Duration = Duration::from_secs(15);
