//! What Redis says it did: commands by name, reads from clients (one per
//! round trip a client makes, as long as a request fits one read), and its
//! own CPU; and the reference rate from `redis-benchmark`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Commands the daemon sends itself (everything else it causes runs inside
/// its scripts). The harness's own commands are named in `HARNESS`.
const DAEMON_SENDS: &[&str] = &["evalsha", "hset", "del", "exists", "hmget", "script"];
/// Commands only this harness uses, so its polling does not count as the
/// daemon's work.
const HARNESS: &[&str] = &["info", "hgetall", "ping", "psubscribe"];

#[derive(Debug, Clone, Default)]
pub struct RedisSnapshot {
    calls: BTreeMap<String, u64>,
    reads: u64,
    cpu_s: f64,
}

impl RedisSnapshot {
    pub fn take(con: &mut redis::Connection) -> RedisSnapshot {
        let info: String = redis::cmd("INFO")
            .arg("everything")
            .query(con)
            .expect("INFO everything");
        let mut snap = RedisSnapshot::default();
        for line in info.lines() {
            if let Some(rest) = line.strip_prefix("cmdstat_") {
                // cmdstat_hset:calls=3,usec=...
                let (name, stats) = rest.split_once(':').unwrap_or_default();
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                snap.calls.insert(name.to_string(), calls);
            } else if let Some(v) = line.strip_prefix("total_reads_processed:") {
                snap.reads = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                snap.cpu_s += v.trim().parse::<f64>().unwrap_or(0.0);
            }
        }
        snap
    }

    fn calls(&self, name: &str) -> u64 {
        self.calls.get(name).copied().unwrap_or(0)
    }
}

/// What the daemon made Redis do between two snapshots.
#[derive(Debug, Clone, Default)]
pub struct RedisWork {
    /// Commands the daemon sent (EVALSHA).
    pub sent: u64,
    /// Commands its scripts ran inside Redis (SELECT, HGET, HSET...).
    pub in_scripts: u64,
    /// Client reads, less the harness's own round trips.
    pub round_trips: u64,
    /// Redis's CPU time, in microseconds.
    pub cpu_us: f64,
}

impl RedisWork {
    /// `harness_round_trips`: requests the harness itself made in between
    /// (each INFO and poll), subtracted from Redis's read count.
    pub fn between(
        before: &RedisSnapshot,
        after: &RedisSnapshot,
        harness_round_trips: u64,
    ) -> RedisWork {
        let mut work = RedisWork {
            round_trips: (after.reads - before.reads).saturating_sub(harness_round_trips),
            cpu_us: (after.cpu_s - before.cpu_s) * 1e6,
            ..RedisWork::default()
        };
        for name in after.calls.keys() {
            let delta = after.calls(name) - before.calls(name);
            if DAEMON_SENDS.contains(&name.as_str()) {
                work.sent += delta;
            } else if !HARNESS.contains(&name.as_str()) {
                work.in_scripts += delta;
            }
        }
        work
    }
}

/// `redis-benchmark -s SOCKET -P 32 -q ARGS...`: requests per second.
pub fn benchmark_rate(socket: &Path, args: &[&str]) -> f64 {
    let out = Command::new("redis-benchmark")
        .arg("-s")
        .arg(socket)
        .args(["-P", "32", "-c", "4", "-q"])
        .args(args)
        .output()
        .expect("cannot run redis-benchmark (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "...: 123456.79 requests per second, p50=..." (the last line wins:
    // progress lines are separated by carriage returns).
    let last = text
        .rsplit(['\r', '\n'])
        .find(|l| l.contains("requests per second"));
    last.and_then(|l| {
        let before = l.split(" requests per second").next()?;
        before.rsplit(' ').next()?.parse().ok()
    })
    .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"))
}
