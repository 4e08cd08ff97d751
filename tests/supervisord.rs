//! A real supervisord runs the daemon from the example program section
//! (docs/examples/supervisord-portsyncd.conf) exactly as shipped, as the
//! swss container does, on a machine where no metrics certificate was
//! provisioned: it reaches RUNNING while Redis is away, syncs with the
//! endpoint closed, stays RUNNING across a Redis restart, and
//! `supervisorctl stop` ends it with exit status 0.
//!
//! The section runs unchanged (`command=/usr/bin/portsyncd`, no argument,
//! stdout/stderr to syslog) except for the `dependent_startup*` lines: the
//! dependent-startup listener is a PyPI plugin that Debian does not ship, so
//! the test starts the program with `supervisorctl start`, which is what the
//! listener does. The switch around it is made in a private mount namespace
//! (overlays, so nothing on the host changes) inside the test's network
//! namespace: `/usr/bin/portsyncd` is the binary under test,
//! `/var/run/redis/sonic-db/database_config.json` names the test's Redis,
//! `/dev/log` is the test's syslog socket, and `/etc/portsyncd` does not
//! exist.

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
    /// Its configuration, log and socket go to `dir`; `command` launches
    /// supervisord, the configuration's path being its last argument.
    fn start(dir: tempfile::TempDir, program_section: &str, mut command: Command) -> Supervisord {
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
        let child = command
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

/// The example's program section as shipped, less the `dependent_startup*`
/// lines (see the module comment).
fn program_section() -> String {
    let mut out = String::new();
    for line in EXAMPLE.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(';') || line.starts_with("dependent_startup") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Sets up the switch's paths in a private mount namespace, then execs
/// supervisord with the configuration given as its last argument.
/// $1 work dir, $2 binary, $3 database config, $4 syslog socket.
const SWITCH_SETUP: &str = r#"set -eu
work=$1 bin=$2 db=$3 log=$4 conf=$5
overlay() { # overlay DIR NAME: writes under DIR go to $work/NAME
    mkdir -p "$work/$2.up" "$work/$2.work"
    mount -t overlay overlay -o "lowerdir=$1,upperdir=$work/$2.up,workdir=$work/$2.work" "$1"
}
overlay /usr/bin usr-bin
cp "$bin" /usr/bin/portsyncd
overlay /run run
mkdir -p /run/redis/sonic-db
cp "$db" /run/redis/sonic-db/database_config.json
overlay /dev dev
touch /dev/log
mount --bind "$log" /dev/log
overlay /etc etc
rm -rf /etc/portsyncd
exec supervisord -c "$conf"
"#;

/// supervisord in the test's network namespace and a private mount
/// namespace set up by [`SWITCH_SETUP`].
fn supervisord_on_a_switch(ns: &Netns, work: &Path, db_config: &Path, syslog: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        ns.name(),
        "unshare",
        "-m",
        "--propagation",
        "private",
    ])
    .args(["sh", "-c", SWITCH_SETUP, "switch-setup"])
    .arg(work)
    .arg(BIN)
    .arg(db_config)
    .arg(syslog)
    .env_remove("NAMESPACE_ID");
    cmd
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
    let work = tempfile::Builder::new()
        .prefix("psd-switch-")
        .tempdir()
        .unwrap();
    let command =
        supervisord_on_a_switch(&bed.ns, work.path(), bed.redis.db_config(), &syslog_path);
    let sup = Supervisord::start(dir, &program_section(), command);

    let started = sup.ctl(&["start", "portsyncd"]);
    assert!(
        started.contains("portsyncd: started"),
        "{started}\n{}",
        sup.logs()
    );
    let pid = sup.running_pid();
    syslog.wait_for("cannot reach Redis");
    assert_eq!(sup.running_pid(), pid, "restarted while Redis was away");
    // No certificate on this switch: the endpoint stays closed and says
    // which file is missing and how to fix it; the daemon runs on.
    let closed = syslog.wait_for("metrics endpoint closed");
    assert!(
        closed.contains("/etc/portsyncd/metrics/server.crt") && closed.contains("gen-certs.sh"),
        "{closed}"
    );

    bed.redis.start_again();
    wait_until(DEADLINE, "PortConfigDone", || {
        bed.redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    bed.ns.add_port("Ethernet0");
    bed.redis.wait_configured(&["Ethernet0"]);
    bed.redis
        .wait_state("Ethernet0", &[("admin_status", "down")]);
    let probe = Command::new("ip")
        .args([
            "netns",
            "exec",
            bed.ns.name(),
            "curl",
            "-sS",
            "-g",
            "-k",
            "https://[::1]:7493/livez",
        ])
        .output()
        .unwrap();
    assert_eq!(
        probe.status.code(),
        Some(7),
        "nothing should listen: {probe:?}"
    );

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
}
