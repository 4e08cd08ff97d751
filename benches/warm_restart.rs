//! Warm-restart figures on real parts: for 64 and 512 ports, a daemon runs
//! cold, stops, and starts again warm with nothing changed. Prints, per
//! size and over several restarts, the median time to `reconciled` and the
//! writes Redis executed (from `redis-cli MONITOR`): the goal is zero port
//! writes.
//!
//! Run: `cargo bench --bench warm_restart` (as root: network namespaces).
//! `WARM_BENCH_PORTS=64,512` and `WARM_BENCH_RESTARTS=5` change the run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::monitor::Monitor;
use common::*;

struct Sample {
    /// Daemon start to `reconciled` in STATE_DB, seen from outside.
    outside: Duration,
    /// The daemon's own figure: start-up to reconciled.
    inside_ms: u64,
    writes: usize,
    port_writes: usize,
    commands: usize,
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn warm_restart(bed: &Bed) -> Sample {
    let monitor = Monitor::start(&bed.redis);
    let started = Instant::now();
    let mut daemon = bed.daemon();
    let line = wait_for(
        Duration::from_secs(60),
        "warm restart reconciled",
        || {
            daemon
                .log()
                .lines()
                .find(|l| l.contains("warm restart reconciled"))
                .map(str::to_string)
        },
        Option::is_some,
    )
    .unwrap();
    let outside = started.elapsed();
    let inside_ms = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("elapsed_ms="))
        .and_then(|v| v.parse().ok())
        .expect("elapsed_ms in the reconcile line");
    wait_until(Duration::from_secs(60), "PortInitDone produced", || {
        monitor.text().contains("PortInitDone")
    });
    assert!(daemon.sigterm_and_wait(Duration::from_secs(10)).success());
    let commands = monitor.text().lines().skip(1).count();
    Sample {
        outside,
        inside_ms,
        writes: monitor.writes().len(),
        port_writes: monitor.port_writes().len(),
        commands,
    }
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`. Test runners also start bench
    // binaries (`--list`, or no argument under `cargo test`): this one
    // takes minutes, so it runs only when asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes = env_list("WARM_BENCH_PORTS", &[64, 512]);
    let restarts = env_list("WARM_BENCH_RESTARTS", &[5])[0].max(1);
    println!(
        "{:>6} {:>9} {:>14} {:>14} {:>13} {:>12} {:>16}",
        "ports",
        "restarts",
        "to_reconciled",
        "daemon_said",
        "port_writes",
        "all_writes",
        "redis_commands"
    );
    for n in sizes {
        let bed = common::warm::bed_after_cold_run(n, Duration::from_secs(60));
        let samples: Vec<Sample> = (0..restarts).map(|_| warm_restart(&bed)).collect();
        println!(
            "{:>6} {:>9} {:>11.1} ms {:>11} ms {:>13} {:>12} {:>16}",
            n,
            restarts,
            median(samples.iter().map(|s| s.outside.as_micros()).collect()) as f64 / 1000.0,
            median(samples.iter().map(|s| s.inside_ms).collect()),
            samples.iter().map(|s| s.port_writes).max().unwrap_or(0),
            median(samples.iter().map(|s| s.writes).collect()),
            median(samples.iter().map(|s| s.commands).collect()),
        );
    }
    println!(
        "to_reconciled: daemon spawn to its 'reconciled' log line (median); daemon_said: its own \
         elapsed_ms; port_writes: most write commands naming a port in any restart (MONITOR); \
         all_writes / redis_commands: medians of every write / every command Redis executed \
         during a restart, PortInitDone's producer writes and the warm-state bookkeeping included"
    );
}
