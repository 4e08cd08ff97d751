//! Real clients run beside the daemon in the test's namespace: child
//! processes that are killed on drop (and print their log when the test
//! fails), the docs/examples files with their placeholders filled in, and a
//! real Prometheus scraping the daemon over mTLS with
//! docs/examples/prometheus.yml.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{Certs, LISTEN, in_ns};
use crate::common::{Netns, wait_for};

pub const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples");

/// A child process stopped (and reaped) on drop; prints its log when the
/// test fails. SIGTERM first, so that a master process (nginx) stops its
/// workers (SIGKILL left them running, orphaned), then SIGKILL after 5 s.
pub struct Guard {
    child: Child,
    log: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
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

pub fn spawn_logged(mut cmd: Command, log: &Path) -> Guard {
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

/// An example file from docs/examples with its placeholders replaced,
/// written into `dir`.
pub fn example(name: &str, dir: &Path, replacements: &[(&str, String)]) -> PathBuf {
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

/// Where Prometheus' own HTTP API listens inside the test's namespace.
const PROMETHEUS_LISTEN: &str = "[::1]:19090";

/// A real Prometheus in the test's namespace, scraping the daemon at
/// [`LISTEN`] every second with the client certificate of `certs`, as
/// docs/examples/prometheus.yml configures it (checked by `promtool check
/// config` first).
pub struct Prometheus {
    ns: String,
    _process: Guard,
    _dir: TempDir,
}

impl Prometheus {
    pub fn start(ns: &Netns, certs: &Certs) -> Prometheus {
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

        let mut cmd = in_ns(ns, "prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS_LISTEN}"));
        let process = spawn_logged(cmd, &dir.path().join("prometheus.log"));
        Prometheus {
            ns: ns.name().to_string(),
            _process: process,
            _dir: dir,
        }
    }

    /// `GET /api/v1/query` for `promql`, evaluated now: the `data.result`
    /// array. Panics when Prometheus refuses the query or answers with
    /// something else than a result: an empty list would read as "no data".
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        self.try_query(promql)
            .unwrap_or_else(|e| panic!("query {promql:?}: {e}"))
    }

    /// [`Prometheus::query`], or `Err` while Prometheus does not answer it
    /// (curl failed, or no JSON: still starting); a query Prometheus refuses
    /// as malformed panics at once.
    fn try_query(&self, promql: &str) -> Result<Vec<serde_json::Value>, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-sS", "--max-time", "5"])
            .args(["-G", "--data-urlencode"])
            .arg(format!("query={promql}"))
            .arg(format!("http://{PROMETHEUS_LISTEN}/api/v1/query"))
            .output()
            .expect("curl");
        let body = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(format!("curl {}: {stderr}{body}", out.status));
        }
        let answer: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("Prometheus answered no JSON ({e}): {body}"))?;
        match (
            answer["status"].as_str(),
            answer["data"]["result"].as_array(),
        ) {
            (Some("success"), Some(result)) => Ok(result.clone()),
            _ if answer["errorType"] == "bad_data" => {
                panic!("Prometheus refused the query {promql:?}: {answer}")
            }
            _ => Err(format!("no result: {answer}")),
        }
    }

    /// The value of the first sample `promql` returns, as Prometheus prints it.
    pub fn value(&self, promql: &str) -> Option<String> {
        first_value(&self.query(promql))
    }

    /// Waits until `promql`'s first sample is `want` (while Prometheus does
    /// not answer yet, it is asked again).
    pub fn wait_value(&self, timeout: Duration, promql: &str, want: &str) {
        let _ = wait_for(
            timeout,
            &format!("Prometheus to report {promql} == {want}"),
            || self.try_query(promql).map(|r| first_value(&r)),
            |v| matches!(v, Ok(Some(v)) if v == want),
        );
    }
}

/// The value of a query result's first sample.
fn first_value(result: &[serde_json::Value]) -> Option<String> {
    result
        .first()
        .and_then(|s| s["value"][1].as_str().map(str::to_string))
}
