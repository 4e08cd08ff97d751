//! Black-box test harness for the `portsyncd` binary.
//!
//! Every test builds its own real parts: a private `redis-server` on a unix
//! socket in a temporary directory, a private network namespace with veth
//! ports, a consumer that pops APPL_DB PORT_TABLE the way orchagent does, and
//! the daemon itself running inside the namespace. Everything is torn down on
//! drop, also when the test panics.
//!
//! Tests wait on Redis with deadlines ([`wait_for`], [`wait_until`]), never on
//! fixed sleeps.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod monitor;
pub mod warm;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// APPL_DB, CONFIG_DB and STATE_DB ids, as written into the test's
/// `database_config.json`.
pub const APPL_DB: i64 = 0;
pub const CONFIG_DB: i64 = 4;
pub const STATE_DB: i64 = 6;

/// Default deadline for a state to show up in Redis.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The orchagent stand-in, shared with the scripts.
pub const CONSUMER_LUA: &str = include_str!("../../scripts/consumer.lua");

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portsyncd");

/// Field/value pairs of a hash, sorted so that failures print readably.
pub type Fields = BTreeMap<String, String>;

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

/// These tests need root (network namespaces, veth) and the `ip` and
/// `redis-server` commands. Fail clearly, once, when that is not the case.
pub fn require_root_and_tools() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "these tests need root (network namespaces and veth links); \
             run them as root, e.g. via scripts/test.sh"
        );
        for tool in ["ip", "redis-server"] {
            let found = Command::new(tool)
                .arg(if tool == "ip" { "-V" } else { "--version" })
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "`{tool}` is needed by these tests; install it \
                 (apt-get install -y iproute2 redis-server) or run scripts/test.sh"
            );
        }
    });
}

/// Runs `cmd` to completion; panics with its output unless it succeeded.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `probe` until `ok` accepts its value or `timeout` passes; returns the
/// accepted value. On timeout, panics with `what` and the last value seen.
pub fn wait_for<T: Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> T,
    mut ok: impl FnMut(&T) -> bool,
) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        let value = probe();
        if ok(&value) {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!(
                "timed out after {:?} waiting for {what}; last observed value: {value:#?}",
                timeout
            );
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Polls `cond` until it returns true or `timeout` passes (then panics naming
/// `what`). Prefer [`wait_for`] when there is a value worth printing.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, &mut cond, |v| *v);
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// A private redis-server listening only on a unix socket in its own
/// temporary directory.
pub struct RedisServer {
    dir: TempDir,
    socket: PathBuf,
    db_config: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts the server, waits until it answers PING, and writes a
    /// `database_config.json` that points at it.
    pub fn start() -> RedisServer {
        require_root_and_tools();
        let dir = tempfile::Builder::new()
            .prefix("psd-redis-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("redis.sock");
        let db_config = dir.path().join("database_config.json");
        let config = serde_json::json!({
            "INSTANCES": {
                "redis": {
                    "hostname": "127.0.0.1",
                    "port": 6379,
                    "unix_socket_path": socket,
                }
            },
            "DATABASES": {
                "APPL_DB": {"id": APPL_DB, "separator": ":", "instance": "redis"},
                "CONFIG_DB": {"id": CONFIG_DB, "separator": "|", "instance": "redis"},
                "STATE_DB": {"id": STATE_DB, "separator": "|", "instance": "redis"},
            },
            "VERSION": "1.0"
        });
        fs::write(&db_config, serde_json::to_vec_pretty(&config).unwrap())
            .expect("write database_config.json");
        let mut server = RedisServer {
            dir,
            socket,
            db_config,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&self.socket)
            .args([
                "--unixsocketperm",
                "777",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--notify-keyspace-events", "AKE", "--dir"])
            .arg(self.dir.path())
            .args(["--dbfilename", "dump.rdb", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start redis-server");
        self.child = Some(child);
        let what = format!("redis-server on {} to answer PING", self.socket.display());
        let _ = wait_for(
            DEADLINE,
            &what,
            || self.try_ping(),
            |r| matches!(r, Ok(s) if s == "PONG"),
        );
    }

    fn try_ping(&mut self) -> Result<String, String> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            panic!(
                "redis-server exited with {status}; log:\n{}",
                fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
        }
        let mut con = self.try_con(0).map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query::<String>(&mut con)
            .map_err(|e| e.to_string())
    }

    /// The unix socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The `database_config.json` that points at this server.
    pub fn db_config(&self) -> &Path {
        &self.db_config
    }

    /// The server's temporary directory (holds the dump, its log, ...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A new connection to database `db`, or the error.
    pub fn try_con(&self, db: i64) -> redis::RedisResult<redis::Connection> {
        let url = format!("redis+unix://{}?db={db}", self.socket.display());
        let client = redis::Client::open(url)?;
        let con = client.get_connection_with_timeout(Duration::from_secs(5))?;
        con.set_read_timeout(Some(Duration::from_secs(10)))?;
        con.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(con)
    }

    /// A new connection to database `db`; panics if Redis is not there.
    pub fn con(&self, db: i64) -> redis::Connection {
        self.try_con(db)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.socket.display()))
    }

    /// `SHUTDOWN SAVE`: the data is dumped to `dump.rdb` and the server goes
    /// away; waits until the process has exited.
    pub fn stop_saving(&mut self) {
        let mut con = self.con(0);
        // The server closes the connection instead of answering.
        let _ = redis::cmd("SHUTDOWN").arg("SAVE").exec(&mut con);
        let mut child = self.child.take().expect("redis-server is not running");
        let pid = child.id();
        let status = wait_for(
            DEADLINE,
            &format!("redis-server (pid {pid}) to exit after SHUTDOWN SAVE"),
            || child.try_wait().ok().flatten(),
            Option::is_some,
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "redis-server exited with {status:?}"
        );
        assert!(
            self.dir.path().join("dump.rdb").exists(),
            "SHUTDOWN SAVE left no dump.rdb"
        );
    }

    /// Starts the server again on the same socket and directory; it reloads
    /// the data saved by [`RedisServer::stop_saving`].
    pub fn start_again(&mut self) {
        self.spawn();
    }

    // -- small conveniences ------------------------------------------------

    pub fn hgetall(&self, db: i64, key: &str) -> Fields {
        redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.con(db))
            .unwrap_or_else(|e| panic!("HGETALL {key} in db {db}: {e}"))
    }

    pub fn hget(&self, db: i64, key: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query(&mut self.con(db))
            .unwrap_or_else(|e| panic!("HGET {key} {field} in db {db}: {e}"))
    }

    pub fn hset(&self, db: i64, key: &str, fields: &[(&str, &str)]) {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(key);
        for (f, v) in fields {
            cmd.arg(*f).arg(*v);
        }
        cmd.exec(&mut self.con(db))
            .unwrap_or_else(|e| panic!("HSET {key} in db {db}: {e}"));
    }

    pub fn exists(&self, db: i64, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut self.con(db))
            .unwrap_or_else(|e| panic!("EXISTS {key} in db {db}: {e}"))
            == 1
    }

    /// All keys of database `db` matching `pattern`, sorted.
    pub fn keys(&self, db: i64, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query(&mut self.con(db))
            .unwrap_or_else(|e| panic!("KEYS {pattern} in db {db}: {e}"));
        keys.sort();
        keys
    }

    /// Writes CONFIG_DB `PORT|<name>` for each port with typical fields.
    /// Ports are numbered by their position in `names`.
    pub fn configure_ports(&self, names: &[&str]) -> Vec<(String, Fields)> {
        let mut con = self.con(CONFIG_DB);
        let mut out = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let fields = port_config_fields(i);
            let mut cmd = redis::cmd("HSET");
            cmd.arg(format!("PORT|{name}"));
            for (f, v) in &fields {
                cmd.arg(f).arg(v);
            }
            cmd.exec(&mut con).expect("HSET PORT|...");
            out.push((name.to_string(), fields));
        }
        out
    }

    /// Waits until every port has been popped into APPL_DB `PORT_TABLE:<name>`
    /// (so the daemon treats it as configured).
    pub fn wait_configured(&self, names: &[&str]) {
        for name in names {
            let key = format!("PORT_TABLE:{name}");
            wait_until(DEADLINE, &format!("APPL_DB {key} to exist"), || {
                self.exists(APPL_DB, &key)
            });
        }
    }

    /// Waits until STATE_DB `PORT_TABLE|<name>` has all of `want` (other
    /// fields may be there too); returns the whole hash.
    pub fn wait_state(&self, name: &str, want: &[(&str, &str)]) -> Fields {
        self.wait_state_within(DEADLINE, name, want)
    }

    pub fn wait_state_within(
        &self,
        timeout: Duration,
        name: &str,
        want: &[(&str, &str)],
    ) -> Fields {
        let key = format!("PORT_TABLE|{name}");
        wait_for(
            timeout,
            &format!("STATE_DB {key} to have {want:?}"),
            || self.hgetall(STATE_DB, &key),
            |h| {
                want.iter()
                    .all(|(f, v)| h.get(*f).map(String::as_str) == Some(*v))
            },
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The CONFIG_DB fields of the `i`-th test port.
pub fn port_config_fields(i: usize) -> Fields {
    let lane = i * 4;
    [
        (
            "lanes",
            format!("{},{},{},{}", lane, lane + 1, lane + 2, lane + 3),
        ),
        ("alias", format!("etp{}", i + 1)),
        ("speed", "100000".to_string()),
        ("mtu", "9100".to_string()),
        ("admin_status", "up".to_string()),
        ("index", i.to_string()),
        ("fec", "rs".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// `Ethernet0, Ethernet4, ...`: `n` front-panel port names, step 4.
pub fn port_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("Ethernet{}", i * 4)).collect()
}

pub fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

static NS_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

/// What the kernel says about one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub ifindex: u64,
    /// IFF_UP.
    pub admin_up: bool,
    /// IFF_RUNNING, i.e. operstate UP (or UNKNOWN).
    pub oper_up: bool,
    pub mtu: u64,
    /// The kernel's carrier_changes counter (IFLA_CARRIER_CHANGES).
    pub carrier_changes: u64,
    pub flags: Vec<String>,
}

impl LinkState {
    /// The fields portsyncd should write to STATE_DB for this link: exactly
    /// the four upstream writes.
    pub fn expected_state_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("state", "ok".to_string()),
            ("admin_status", updown(self.admin_up).to_string()),
            ("netdev_oper_status", updown(self.oper_up).to_string()),
            ("mtu", self.mtu.to_string()),
        ]
    }

    /// The fields of `expected_state_fields` that `row` gets wrong, as
    /// `field: row value != kernel value`.
    pub fn mismatches(&self, row: &Fields) -> Vec<String> {
        self.expected_state_fields()
            .into_iter()
            .filter(|(f, v)| row.get(*f) != Some(v))
            .map(|(f, v)| format!("{f}: {:?} != {v:?}", row.get(f)))
            .collect()
    }
}

pub fn updown(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

impl Netns {
    /// Creates `psd-<pid>-<counter>` with `lo` up. Namespaces left behind by
    /// earlier test processes that no longer exist are removed first.
    pub fn new() -> Netns {
        require_root_and_tools();
        reap_stale_namespaces();
        let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("psd-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NS <args>`, panicking on failure; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run(Command::new("ip").args(["-n", &self.name]).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The veth peer name used for `port`: never starts with `Ethernet`.
    /// `Ethernet12` -> `p12`, `eth1` -> `p_eth1`.
    pub fn peer_of(port: &str) -> String {
        match port.strip_prefix("Ethernet") {
            Some(rest) => format!("p{rest}"),
            None => format!("p_{port}"),
        }
    }

    /// Creates the veth pair `name` + [`Netns::peer_of`]`(name)`, both down.
    pub fn add_port(&self, name: &str) {
        let peer = Self::peer_of(name);
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
    }

    pub fn add_bridge(&self, name: &str) {
        self.ip(&["link", "add", name, "type", "bridge"]);
    }

    pub fn set_up(&self, name: &str) {
        self.ip(&["link", "set", "dev", name, "up"]);
    }

    pub fn set_down(&self, name: &str) {
        self.ip(&["link", "set", "dev", name, "down"]);
    }

    /// Carrier of `port` follows its veth peer's admin state.
    pub fn set_peer_up(&self, port: &str) {
        self.set_up(&Self::peer_of(port));
    }

    pub fn set_peer_down(&self, port: &str) {
        self.set_down(&Self::peer_of(port));
    }

    pub fn set_mtu(&self, name: &str, mtu: u32) {
        self.ip(&["link", "set", "dev", name, "mtu", &mtu.to_string()]);
    }

    pub fn del_link(&self, name: &str) {
        self.ip(&["link", "del", "dev", name]);
    }

    /// Runs many `ip` commands at once: `ip -n NS -batch FILE`, one command
    /// per line without the leading `ip` (e.g. `link set Ethernet0 up`).
    pub fn batch<S: AsRef<str>>(&self, lines: &[S]) {
        let mut file = tempfile::Builder::new()
            .prefix("psd-batch-")
            .tempfile()
            .expect("batch file");
        for line in lines {
            writeln!(file, "{}", line.as_ref()).unwrap();
        }
        file.flush().unwrap();
        run(Command::new("ip")
            .args(["-n", &self.name, "-batch"])
            .arg(file.path()));
    }

    /// What the kernel says about `name`, or `None` if there is no such link.
    pub fn link(&self, name: &str) -> Option<LinkState> {
        let out = Command::new("ip")
            .args([
                "-n", &self.name, "-j", "-s", "-s", "link", "show", "dev", name,
            ])
            .output()
            .expect("ip link show");
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        Some(parse_link(&v[0]).1)
    }

    /// What the kernel says about every link of the namespace, by name.
    pub fn links(&self) -> BTreeMap<String, LinkState> {
        let out =
            run(Command::new("ip").args(["-n", &self.name, "-j", "-s", "-s", "link", "show"]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
        v.as_array()
            .expect("ip -j link show: array")
            .iter()
            .map(parse_link)
            .collect()
    }

    /// The kernel's `carrier_changes` counter of `name`.
    pub fn carrier_changes(&self, name: &str) -> String {
        self.link(name)
            .unwrap_or_else(|| panic!("no link {name}"))
            .carrier_changes
            .to_string()
    }
}

fn parse_link(l: &serde_json::Value) -> (String, LinkState) {
    let flags: Vec<String> = l["flags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let operstate = l["operstate"].as_str().unwrap_or("");
    let name = l["ifname"].as_str().expect("ifname").to_string();
    let state = LinkState {
        ifindex: l["ifindex"].as_u64().expect("ifindex"),
        admin_up: flags.iter().any(|f| f == "UP"),
        oper_up: operstate == "UP" || operstate == "UNKNOWN",
        mtu: l["mtu"].as_u64().expect("mtu"),
        carrier_changes: l["stats64"]["tx"]["carrier_changes"]
            .as_u64()
            .expect("carrier_changes in ip -s -s -j output"),
        flags,
    };
    (name, state)
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Deletes `psd-<pid>-<n>` namespaces whose test process is gone (left over
/// by a test run that was killed).
fn reap_stale_namespaces() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            let Some(rest) = name.strip_prefix("psd-") else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Consumer (orchagent stand-in)
// ---------------------------------------------------------------------------

/// A thread that runs `scripts/consumer.lua` on APPL_DB PORT_TABLE every
/// ~5 ms, reconnecting whenever Redis goes away. Stops on drop. An error
/// other than Redis being away (the script failing, a reply of the wrong
/// type) fails the test: [`Consumer::popped`] and the drop panic with it,
/// instead of the consumer quietly popping nothing.
pub struct Consumer {
    stop: Arc<AtomicBool>,
    popped: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
    handle: Option<JoinHandle<()>>,
}

/// Whether `e` only says that Redis is away, stopped, or restarting: the
/// consumer connects again, as orchagent would.
fn redis_is_away(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
}

impl Consumer {
    pub fn start(socket: &Path) -> Consumer {
        Self::start_table(socket, "PORT_TABLE")
    }

    pub fn start_table(socket: &Path, table: &str) -> Consumer {
        let stop = Arc::new(AtomicBool::new(false));
        let popped = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(None));
        let url = format!("redis+unix://{}?db={APPL_DB}", socket.display());
        let table = table.to_string();
        let handle = {
            let stop = stop.clone();
            let popped = popped.clone();
            let failed = failed.clone();
            thread::Builder::new()
                .name("consumer".into())
                .spawn(move || {
                    let client = redis::Client::open(url).expect("consumer url");
                    let script = redis::Script::new(CONSUMER_LUA);
                    let mut con: Option<redis::Connection> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if con.is_none() {
                            con = client
                                .get_connection_with_timeout(Duration::from_secs(1))
                                .ok();
                            if let Some(c) = con.as_ref() {
                                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                            }
                        }
                        if let Some(c) = con.as_mut() {
                            match script.arg(&table).invoke::<i64>(c) {
                                Ok(n) => {
                                    popped.fetch_add(n as usize, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    if !redis_is_away(&e) {
                                        let mut failed = failed.lock().unwrap();
                                        failed.get_or_insert(format!(
                                            "the consumer's script on {table} failed: {e}"
                                        ));
                                    }
                                    con = None;
                                }
                            }
                        }
                        thread::sleep(Duration::from_millis(5));
                    }
                })
                .expect("consumer thread")
        };
        Consumer {
            stop,
            popped,
            failed,
            handle: Some(handle),
        }
    }

    /// How many keys it has popped so far; panics if its script failed.
    pub fn popped(&self) -> usize {
        self.assert_ok();
        self.popped.load(Ordering::Relaxed)
    }

    /// Panics with the first error of the consumer's script, if any.
    pub fn assert_ok(&self) {
        if let Some(e) = self.failed.lock().unwrap().as_ref() {
            panic!("{e}");
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        if thread::panicking() {
            if let Some(e) = self.failed.lock().unwrap().as_ref() {
                eprintln!("{e}");
            }
        } else {
            self.assert_ok();
        }
    }
}

// ---------------------------------------------------------------------------
// The daemon under test
// ---------------------------------------------------------------------------

static DAEMON_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `portsyncd` running inside a network namespace, stderr to a log file.
/// Killed on drop; its log is printed when the test is failing.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Runs `ip netns exec NS portsyncd --no-metrics --db-config CFG
    /// --log-level debug --log-output stderr EXTRA...` (without
    /// `--no-metrics` when EXTRA has `--metrics-listen`; `ip netns exec`
    /// execs, so the child's pid
    /// is the daemon's).
    pub fn start(ns: &Netns, db_config: &Path, extra_args: &[&str]) -> Daemon {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), BIN]);
        Self::spawn(cmd, db_config, extra_args)
    }

    /// Runs the daemon in the test's own network namespace (for tests that
    /// never get as far as netlink, e.g. a bad config file).
    pub fn start_here(db_config: &Path, extra_args: &[&str]) -> Daemon {
        Self::spawn(Command::new(BIN), db_config, extra_args)
    }

    fn spawn(mut cmd: Command, db_config: &Path, extra_args: &[&str]) -> Daemon {
        // Tests of the metrics endpoint pass --metrics-listen; all others
        // run without it.
        if !extra_args.contains(&"--metrics-listen") {
            cmd.arg("--no-metrics");
        }
        cmd.arg("--db-config")
            .arg(db_config)
            .args(["--log-level", "debug", "--log-output", "stderr"])
            .args(extra_args);
        Self::launch(cmd)
    }

    /// Runs `ip netns exec NS portsyncd ARGS` with only the given arguments
    /// (no `--log-level`, no `--log-output`), for tests of what the daemon
    /// does without them.
    pub fn start_bare(ns: &Netns, args: &[&std::ffi::OsStr]) -> Daemon {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), BIN]).args(args);
        Self::launch(cmd)
    }

    /// Runs `cmd` (which ends in the daemon) as [`Daemon::start`] does.
    pub fn launch(mut cmd: Command) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("psd-daemon-")
            .tempdir()
            .expect("tempdir");
        let n = DAEMON_COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = dir.path().join(format!("portsyncd-{n}.log"));
        let log_file = File::create(&log).expect("daemon log");
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Daemon {
            child: Some(child),
            log,
            _dir: dir,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon already reaped").id()
    }

    /// Everything the daemon wrote to stdout/stderr so far. A log that
    /// cannot be read fails the test: an empty string would let "the log
    /// does not contain X" pass.
    pub fn log(&self) -> String {
        self.try_log().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Daemon::log`], or why it cannot be read.
    fn try_log(&self) -> Result<String, String> {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|e| format!("cannot read the daemon's log {}: {e}", self.log.display()))
    }

    /// The exit status if it has exited, `None` while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.status = child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Panics (with the log) unless the daemon is still running.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.try_status() {
            panic!("portsyncd exited with {status}; log:\n{}", self.log());
        }
    }

    /// Waits for the daemon to exit by itself; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if start.elapsed() > timeout {
                panic!(
                    "portsyncd did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn sigterm_and_wait(&mut self, timeout: Duration) -> ExitStatus {
        self.assert_alive();
        let pid = self.pid() as libc::pid_t;
        // SAFETY: plain kill(2) on our own, not yet reaped child.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        self.wait_exit(timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Whether it was still running when the test ended (if not: how it
        // ended), for the failure report.
        let state = match self.try_status() {
            Some(status) => format!("had exited with {status}"),
            None => "was running".to_string(),
        };
        if let Some(mut child) = self.child.take() {
            if self.status.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if thread::panicking() {
            // Already panicking: a log that cannot be read is said, not
            // raised again.
            let log = self.try_log().unwrap_or_else(|e| e);
            eprintln!(
                "----- portsyncd ({state}) log {} -----\n{log}\n----- end of portsyncd log -----",
                self.log.display(),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// A whole test bed
// ---------------------------------------------------------------------------

/// Redis + consumer + namespace, with `ports` configured in CONFIG_DB.
/// Field order matters for drop order: consumer, then namespace, then Redis.
pub struct Bed {
    pub consumer: Consumer,
    pub ns: Netns,
    pub redis: RedisServer,
    pub ports: Vec<(String, Fields)>,
}

impl Bed {
    pub fn new(ports: &[&str]) -> Bed {
        let redis = RedisServer::start();
        let ports = redis.configure_ports(ports);
        let consumer = Consumer::start(redis.socket());
        let ns = Netns::new();
        Bed {
            consumer,
            ns,
            redis,
            ports,
        }
    }

    /// Starts portsyncd in the bed's namespace (cold start).
    pub fn daemon(&self) -> Daemon {
        Daemon::start(&self.ns, self.redis.db_config(), &[])
    }

    pub fn names(&self) -> Vec<&str> {
        self.ports.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Waits until STATE_DB `PORT_TABLE|<name>` matches what the kernel says
    /// about `name` right now (re-read on every poll).
    pub fn wait_state_matches_kernel(&self, timeout: Duration, name: &str) -> Fields {
        self.wait_all_match_kernel(timeout, &[name])
            .remove(name)
            .expect("row")
    }

    /// Waits until, for every port in `names`, STATE_DB `PORT_TABLE|<name>`
    /// matches the kernel's current state of that netdev (both re-read on
    /// every poll). On timeout the panic lists every port still wrong.
    /// Returns at the first poll that matches: after a fault, where a stale
    /// write may still land, use [`Bed::wait_all_settled`].
    pub fn wait_all_match_kernel(
        &self,
        timeout: Duration,
        names: &[&str],
    ) -> BTreeMap<String, Fields> {
        let mut rows = BTreeMap::new();
        wait_for(
            timeout,
            &format!(
                "STATE_DB PORT_TABLE rows of {} ports to match the kernel",
                names.len()
            ),
            || {
                let (now, wrong) = self.rows_against_kernel(names);
                rows = now;
                wrong
            },
            BTreeMap::is_empty,
        );
        rows
    }

    /// Like [`Bed::wait_all_match_kernel`], then the rows must stay right
    /// for [`SETTLE`] (at least [`SETTLE_POLLS`] polls, kernel and Redis
    /// re-read each time): a first match can be a coincidence while the
    /// daemon still works through older changes, and a stale write landing
    /// after it would otherwise go unseen. Rows that go wrong again are
    /// waited for again, up to `timeout` in all; the panic then names the
    /// rows that did not stay right.
    pub fn wait_all_settled(&self, timeout: Duration, names: &[&str]) -> BTreeMap<String, Fields> {
        let start = Instant::now();
        loop {
            let rows = self.wait_all_match_kernel(timeout.saturating_sub(start.elapsed()), names);
            let matched = Instant::now();
            let mut polls = 0;
            let went_wrong = loop {
                if polls >= SETTLE_POLLS && matched.elapsed() >= SETTLE {
                    break None;
                }
                thread::sleep(SETTLE / SETTLE_POLLS as u32);
                let (_, wrong) = self.rows_against_kernel(names);
                if !wrong.is_empty() {
                    break Some(wrong);
                }
                polls += 1;
            };
            let Some(wrong) = went_wrong else {
                return rows;
            };
            assert!(
                start.elapsed() < timeout,
                "STATE_DB PORT_TABLE rows matched the kernel, then went wrong \
                 {:?} later and did not settle within {timeout:?}: {wrong:#?}",
                matched.elapsed()
            );
            eprintln!("rows matched the kernel, then went wrong: {wrong:?}; waiting again");
        }
    }

    /// Every row of `names` as STATE_DB holds it now, and what each gets
    /// wrong against the kernel right now.
    fn rows_against_kernel(
        &self,
        names: &[&str],
    ) -> (BTreeMap<String, Fields>, BTreeMap<String, Vec<String>>) {
        let kernel = self.ns.links();
        let mut con = self.redis.con(STATE_DB);
        let mut rows = BTreeMap::new();
        let mut wrong = BTreeMap::new();
        for name in names {
            let key = format!("PORT_TABLE|{name}");
            let row: Fields = redis::cmd("HGETALL")
                .arg(&key)
                .query(&mut con)
                .unwrap_or_else(|e| panic!("HGETALL {key}: {e}"));
            let bad = match kernel.get(*name) {
                Some(k) => k.mismatches(&row),
                None => vec!["no such netdev".to_string()],
            };
            if !bad.is_empty() {
                wrong.insert(name.to_string(), bad);
            }
            rows.insert(name.to_string(), row);
        }
        (rows, wrong)
    }
}

/// How long rows must keep matching the kernel to count as settled
/// ([`Bed::wait_all_settled`]), and the fewest polls in that time.
pub const SETTLE: Duration = Duration::from_millis(500);
pub const SETTLE_POLLS: usize = 5;

/// Helper for hash comparisons in assertions.
pub fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Converts a HashMap to the sorted form used everywhere here.
pub fn sorted(h: HashMap<String, String>) -> Fields {
    h.into_iter().collect()
}

// ---------------------------------------------------------------------------
// Daemon with extra environment (systemd notify tests)
// ---------------------------------------------------------------------------

impl Daemon {
    /// Like [`Daemon::start`], with `env` added to the daemon's environment
    /// (`ip netns exec` passes it through).
    pub fn start_with_env(
        ns: &Netns,
        db_config: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), BIN]);
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, db_config, extra_args)
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on our own, not yet reaped child.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }
}

// ---------------------------------------------------------------------------
// Hard Redis faults (fault-injection tests)
// ---------------------------------------------------------------------------

impl RedisServer {
    /// SIGKILL: no final save; a restart ([`RedisServer::start_again`])
    /// reloads whatever `dump.rdb` the last SAVE left.
    pub fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("redis-server is not running");
        child.kill().expect("SIGKILL redis-server");
        let _ = child.wait();
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the running server.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("redis-server is not running") as libc::pid_t;
        // SAFETY: plain kill(2) on our own, not yet reaped child.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({signal}) on redis-server failed");
    }
}

/// strace attached to `pid`, making its next `recvmmsg` fail with ENOMEM
/// (a netlink receive error, as the kernel can return one); detached on
/// drop. Returns once the tracer is attached.
pub struct FailedReceive(Child);

pub fn fail_next_netlink_receive(pid: u32) -> FailedReceive {
    let child = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=recvmmsg"])
        .args(["-e", "inject=recvmmsg:error=ENOMEM:when=1", "-p"])
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace (scripts/test.sh installs it)");
    // strace prints nothing until the first traced call: wait for the
    // tracer to show in the daemon's status instead.
    wait_until(DEADLINE, "strace to attach", || {
        fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("TracerPid:") && !l.ends_with("\t0"))
        })
    });
    FailedReceive(child)
}

impl Drop for FailedReceive {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
