//! `redis-cli MONITOR` as a witness: every command Redis executed, including
//! those run inside scripts, so "no write happened" is checked on what Redis
//! did, not on what the daemon says.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{DEADLINE, RedisServer, wait_until};

/// Commands that change a key.
const WRITE_COMMANDS: &[&str] = &[
    "HSET", "HMSET", "HSETNX", "HDEL", "HINCRBY", "DEL", "UNLINK", "SET", "SETEX", "EXPIRE",
    "PEXPIRE", "RENAME", "SADD", "SREM", "SPOP", "LPUSH", "RPUSH",
];

/// `redis-cli ARGS` against the test's server, its output going to a file
/// until dropped; started once `started` accepts what it has printed.
struct RedisCli {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl RedisCli {
    fn start(redis: &RedisServer, args: &[&str], started: impl Fn(&str) -> bool) -> RedisCli {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("redis-cli.txt");
        let child = Command::new("redis-cli")
            .arg("-s")
            .arg(redis.socket())
            .args(args)
            .stdout(File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"));
        let cli = RedisCli {
            child,
            out,
            _dir: dir,
        };
        wait_until(DEADLINE, &format!("redis-cli {args:?} to start"), || {
            started(&cli.text())
        });
        cli
    }

    fn text(&self) -> String {
        let mut s = String::new();
        File::open(&self.out)
            .and_then(|mut f| f.read_to_string(&mut s))
            .unwrap();
        s
    }
}

impl Drop for RedisCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-cli MONITOR` writing to a file until dropped.
pub struct Monitor(RedisCli);

impl Monitor {
    pub fn start(redis: &RedisServer) -> Monitor {
        Monitor(RedisCli::start(redis, &["monitor"], |t| {
            t.starts_with("OK")
        }))
    }

    pub fn text(&self) -> String {
        self.0.text()
    }

    /// Every command Redis executed, as (command, arguments).
    pub fn commands(&self) -> Vec<(String, Vec<String>)> {
        self.text().lines().filter_map(parse_monitor_line).collect()
    }

    /// Every write command Redis executed, as (command, arguments).
    pub fn writes(&self) -> Vec<(String, Vec<String>)> {
        self.commands()
            .into_iter()
            .filter(|(cmd, _)| WRITE_COMMANDS.contains(&cmd.as_str()))
            .collect()
    }

    /// The write commands that name a port (key or member), e.g.
    /// `HSET PORT_TABLE|Ethernet0 ...` or `SADD PORT_TABLE_KEY_SET Ethernet0`.
    pub fn port_writes(&self) -> Vec<(String, Vec<String>)> {
        self.writes()
            .into_iter()
            .filter(|(_, args)| args.iter().any(|a| a.contains("Ethernet")))
            .collect()
    }
}

/// `1700000000.000000 [6 lua] "HSET" "PORT_TABLE|Ethernet0" "mtu" "9100"`
/// -> ("HSET", ["PORT_TABLE|Ethernet0", "mtu", "9100"]).
pub fn parse_monitor_line(line: &str) -> Option<(String, Vec<String>)> {
    let rest = &line[line.find("] ")? + 2..];
    let mut tokens = Vec::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut token = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => token.push(chars.next()?),
                c => token.push(c),
            }
        }
        tokens.push(token);
    }
    let mut tokens = tokens.into_iter();
    let cmd = tokens.next()?.to_ascii_uppercase();
    Some((cmd, tokens.collect()))
}

/// A subscriber to keyspace events of one key, as SONiC's
/// SubscriberStateTable listens (`redis-cli SUBSCRIBE
/// __keyspace@<db>__:<key>`), writing each event to a file until dropped.
pub struct KeyspaceEvents(RedisCli);

impl KeyspaceEvents {
    pub fn start(redis: &RedisServer, db: i64, key: &str) -> KeyspaceEvents {
        let channel = format!("__keyspace@{db}__:{key}");
        KeyspaceEvents(RedisCli::start(
            redis,
            &["--csv", "subscribe", &channel],
            |t| t.contains("\"subscribe\""),
        ))
    }

    /// The events received so far (`hset`, `del`, ...), oldest first.
    pub fn events(&self) -> Vec<String> {
        self.0
            .text()
            .lines()
            .filter(|l| l.starts_with("\"message\""))
            .filter_map(|l| l.rsplit(',').next())
            .map(|e| e.trim_matches('"').to_string())
            .collect()
    }
}
