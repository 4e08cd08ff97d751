//! A real supervisord runs the daemon from the example program section
//! (docs/examples/supervisord-portsyncd.conf), as the swss container does:
//! it reaches RUNNING while Redis is away, stays RUNNING across a Redis
//! restart, and `supervisorctl stop` ends it with exit status 0.
//!
//! The test runs a variant of the example, generated from it: `command` runs
//! the binary under test in the test's network namespace with the test's
//! database config and syslog socket; the `dependent_startup*` lines go (the
//! dependent-startup listener is a PyPI plugin that Debian does not ship), so
//! the test starts the program with `supervisorctl start`, which is what the
//! listener does; stdout/stderr go to files instead of the host's syslog.

mod common;
mod common_syslog;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use common_syslog::SyslogSink;

const EXAMPLE: &str = include_str!("../docs/examples/supervisord-portsyncd.conf");

/// A private supervisord with its own socket, log and configuration.
struct Supervisord {
    dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

impl Supervisord {
    /// Its configuration, log, socket and the program's output files go to
    /// `dir`.
    fn start(dir: tempfile::TempDir, program_section: &str) -> Supervisord {
        let d = dir.path().display();
        let conf = dir.path().join("supervisord.conf");
        let text = format!(
            "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
             [supervisord]\nnodaemon=true\nuser=root\nlogfile={d}/supervisord.log\n\
             pidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
             [rpcinterface:supervisor]\n\
             supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
             [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n{program_section}"
        );
        fs::write(&conf, text).unwrap();
        let child = Command::new("supervisord")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("supervisord.out")).unwrap())
            .stderr(File::create(dir.path().join("supervisord.err")).unwrap())
            .spawn()
            .expect("cannot start supervisord (apt-get install supervisor)");
        let s = Supervisord {
            dir,
            conf,
            child: Some(child),
        };
        wait_until(DEADLINE, "supervisord to answer", || {
            s.ctl(&["status", "portsyncd"]).contains("portsyncd")
        });
        s
    }

    /// `supervisorctl -c CONF ARGS`: what it printed.
    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .expect("supervisorctl");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// `RUNNING pid N` of portsyncd, or panics with the status line.
    fn running_pid(&self) -> u32 {
        let status = self.ctl(&["status", "portsyncd"]);
        let pid = status
            .split_whitespace()
            .skip_while(|w| *w != "RUNNING")
            .nth(2)
            .and_then(|p| p.trim_end_matches(',').parse().ok());
        pid.unwrap_or_else(|| panic!("portsyncd is not RUNNING: {status}\n{}", self.logs()))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("supervisord.log")).unwrap_or_default()
    }

    fn logs(&self) -> String {
        let out = |name| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- supervisord stderr\n{}--- supervisord.log\n{}--- portsyncd stdout\n{}--- portsyncd stderr\n{}",
            out("supervisord.err"),
            self.log(),
            out("portsyncd.out"),
            out("portsyncd.err")
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        let _ = self.ctl(&["shutdown"]);
        if let Some(mut child) = self.child.take() {
            let exited = wait_for_exit(&mut child, DEADLINE);
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The example's program section, with the test's command and log files in
/// place of the switch's (see the module comment).
fn program_variant(command: &str, dir: &Path) -> String {
    let d = dir.display();
    let mut out = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with("dependent_startup") {
            continue;
        }
        let line = match line.split_once('=').map(|(k, _)| k) {
            Some("command") => format!("command={command}"),
            Some("stdout_logfile") => format!("stdout_logfile={d}/portsyncd.out"),
            Some("stderr_logfile") => format!("stderr_logfile={d}/portsyncd.err"),
            Some("stdout_syslog" | "stderr_syslog") => continue,
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn example_section_has_what_the_swss_container_needs() {
    let section: Vec<&str> = EXAMPLE.lines().map(str::trim).collect();
    for line in [
        "[program:portsyncd]",
        "command=/usr/bin/portsyncd",
        "autostart=false",
        "autorestart=false",
        "stdout_syslog=true",
        "stderr_syslog=true",
        "dependent_startup=true",
        "dependent_startup_wait_for=rsyslogd:running",
    ] {
        assert!(section.contains(&line), "the example lacks {line:?}");
    }
}

#[test]
fn supervisord_runs_it_through_redis_outages_and_stops_it_cleanly() {
    let mut bed = Bed::new(&["Ethernet0"]);
    let sock_dir = tempfile::tempdir().unwrap();
    let syslog_path = sock_dir.path().join("log.sock");
    let mut syslog = SyslogSink::bind(&syslog_path);

    // Redis is away when supervisord starts the daemon.
    bed.redis.stop_saving();
    let dir = tempfile::Builder::new()
        .prefix("psd-supervisord-")
        .tempdir()
        .unwrap();
    let command = format!(
        "ip netns exec {} {BIN} --no-metrics --db-config {} --syslog-socket {}",
        bed.ns.name(),
        bed.redis.db_config().display(),
        syslog_path.display()
    );
    let section = program_variant(&command, dir.path());
    let sup = Supervisord::start(dir, &section);

    let started = sup.ctl(&["start", "portsyncd"]);
    assert!(
        started.contains("portsyncd: started"),
        "{started}\n{}",
        sup.logs()
    );
    let pid = sup.running_pid();
    syslog.wait_for("cannot reach Redis");
    assert_eq!(sup.running_pid(), pid, "restarted while Redis was away");

    bed.redis.start_again();
    wait_until(DEADLINE, "PortConfigDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    bed.ns.add_port("Ethernet0");
    bed.redis.wait_configured(&["Ethernet0"]);
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", "down")]);

    // Redis goes away again under a running daemon, with a change pending.
    bed.redis.stop_saving();
    bed.ns.set_up("Ethernet0");
    syslog.wait_for("lost Redis");
    assert_eq!(sup.running_pid(), pid, "restarted while Redis was away");
    bed.redis.start_again();
    bed.redis.wait_state("Ethernet0", &[("admin_status", "up")]);
    assert_eq!(sup.running_pid(), pid);

    let stopped = sup.ctl(&["stop", "portsyncd"]);
    assert!(
        stopped.contains("portsyncd: stopped"),
        "{stopped}\n{}",
        sup.logs()
    );
    wait_until(DEADLINE, "supervisord to log the exit status", || {
        sup.log().contains("stopped: portsyncd (exit status 0)")
    });
    let said = syslog.wait_for("shutting down");
    assert!(
        said.starts_with(&format!("<13>portsyncd[{pid}]: ")),
        "{said}"
    );
    assert!(
        !sup.path("portsyncd.err").exists()
            || fs::read_to_string(sup.path("portsyncd.err"))
                .unwrap()
                .is_empty(),
        "stderr was written with the SYSLOG output:\n{}",
        sup.logs()
    );
}
