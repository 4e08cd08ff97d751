//! The standard process metrics under the names every Prometheus dashboard
//! expects (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), read from `/proc/self` at each scrape.
//!
//! Only `/proc/self` is read, never `/proc/stat` or `/proc/uptime`, which
//! the shipped unit's `ProcSubset=pid` hides. The start time is the wall
//! clock now minus the process' age, its age being the boot-time clock
//! (`CLOCK_BOOTTIME`, no /proc needed) minus the start tick in
//! `/proc/self/stat`; computed once, when the endpoint starts.

use std::fs;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Reads `/proc/self` when encoded; holds no state.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// The values of one reading; `None` where /proc did not answer.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
}

static START_TIME: OnceLock<f64> = OnceLock::new();

/// Records the process' start time (Unix seconds); later calls keep the
/// first value.
pub fn record_start() -> f64 {
    *START_TIME.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let age = stat.and_then(|stat| age_seconds(&stat, boot_clock_seconds()?, ticks()));
        now - age.unwrap_or(0.0)
    })
}

fn sysconf(name: libc::c_int, default: i64) -> i64 {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 { v } else { default }
}

fn ticks() -> i64 {
    sysconf(libc::_SC_CLK_TCK, 100)
}

/// Seconds since boot, suspend included (the clock /proc/self/stat's start
/// tick counts on).
fn boot_clock_seconds() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

/// Field `i` of /proc/self/stat after the `(comm)` field, which may hold
/// spaces (state is 0, utime 11, stime 12, starttime 19).
fn stat_field(stat: &str, i: usize) -> Option<i64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    after.split_whitespace().nth(i)?.parse().ok()
}

/// The process' age from its stat line and the boot clock.
fn age_seconds(stat: &str, boot_clock: f64, ticks: i64) -> Option<f64> {
    let start = stat_field(stat, 19)?;
    Some((boot_clock - start as f64 / ticks as f64).max(0.0))
}

/// Parses /proc/self/stat, /proc/self/statm and /proc/self/limits; pure so
/// it can be unit tested.
pub fn parse(stat: &str, statm: &str, limits: &str, ticks: i64, page: i64) -> ProcessStats {
    let cpu = stat_field(stat, 11).zip(stat_field(stat, 12));
    let pages = |i: usize| {
        statm
            .split_whitespace()
            .nth(i)?
            .parse::<i64>()
            .ok()
            .map(|p| p * page)
    };
    let max_fds = limits.lines().find(|l| l.starts_with("Max open files"));
    ProcessStats {
        cpu_seconds: cpu.map(|(user, system)| (user + system) as f64 / ticks as f64),
        resident_bytes: pages(1),
        virtual_bytes: pages(0),
        open_fds: None,
        max_fds: max_fds.and_then(|l| l.split_whitespace().nth(3)?.parse().ok()),
    }
}

/// Reads the current values.
pub fn read() -> ProcessStats {
    let get = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let (stat, statm, limits) = (
        get("/proc/self/stat"),
        get("/proc/self/statm"),
        get("/proc/self/limits"),
    );
    let mut stats = parse(
        &stat,
        &statm,
        &limits,
        ticks(),
        sysconf(libc::_SC_PAGESIZE, 4096),
    );
    stats.open_fds = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64);
    stats
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = read();
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            let help = "Total user and system CPU time spent in seconds";
            let unit = Some(&Unit::Seconds);
            m.encode(encoder.encode_descriptor("process_cpu", help, unit, m.metric_type())?)?;
        }
        let start = Some(record_start() as i64);
        for (name, help, unit, value) in [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                s.resident_bytes,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                s.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                s.max_fds,
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch in seconds",
                Some(Unit::Seconds),
                start,
            ),
        ] {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, unit.as_ref(), m.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "42 (port syncd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 1000 300";

    #[test]
    fn proc_files_parse() {
        let s = parse(
            STAT,
            "5000 1200 300 1 0 400 0",
            "Limit Soft Hard Units\nMax open files            1024                 4096                 files\n",
            100,
            4096,
        );
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.resident_bytes, Some(1200 * 4096));
        assert_eq!(s.virtual_bytes, Some(5000 * 4096));
        assert_eq!(s.max_fds, Some(1024));
    }

    #[test]
    fn age_is_the_boot_clock_minus_the_start_tick() {
        // Started at tick 1000 (10 s after boot at 100 Hz); now 70 s after boot.
        assert_eq!(age_seconds(STAT, 70.0, 100), Some(60.0));
        assert_eq!(age_seconds("garbage", 70.0, 100), None);
    }

    #[test]
    fn this_process_reads_and_started_recently() {
        let s = read();
        assert!(s.open_fds.unwrap() > 0 && s.resident_bytes.unwrap() > 0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = record_start();
        // The test binary started within the last hour, and not in the future.
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
    }
}
