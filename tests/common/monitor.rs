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

/// `redis-cli MONITOR` writing to a file until dropped.
pub struct Monitor {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Monitor {
    pub fn start(redis: &RedisServer) -> Monitor {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("monitor.txt");
        let child = Command::new("redis-cli")
            .arg("-s")
            .arg(redis.socket())
            .arg("monitor")
            .stdout(File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli monitor");
        let monitor = Monitor {
            child,
            out,
            _dir: dir,
        };
        wait_until(DEADLINE, "redis-cli MONITOR to start", || {
            monitor.text().starts_with("OK")
        });
        monitor
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        File::open(&self.out)
            .and_then(|mut f| f.read_to_string(&mut s))
            .unwrap();
        s
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

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
