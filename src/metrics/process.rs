//! The standard process metrics (CPU seconds, resident memory, open and
//! maximum file descriptors, start time), read from `/proc/self` at each
//! scrape and exposed as `portsyncd_process_*`.

use std::fs;

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
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<i64>,
}

fn sysconf(name: libc::c_int) -> Option<i64> {
    // SAFETY: sysconf only reads a system constant; it has no preconditions.
    let v = unsafe { libc::sysconf(name) };
    (v > 0).then_some(v)
}

/// Fields of /proc/self/stat after the `(comm)` field, which may hold spaces.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().collect())
}

/// Parses /proc/self/stat, /proc/self/statm, /proc/stat's btime and
/// /proc/self/limits; pure so it can be unit tested.
pub fn parse(
    stat: &str,
    statm: &str,
    proc_stat: &str,
    limits: &str,
    ticks: i64,
    page: i64,
) -> ProcessStats {
    let fields = stat_fields(stat);
    // After the comm field: state is index 0, utime 11, stime 12, starttime 19.
    let field = |i: usize| fields.as_ref()?.get(i)?.parse::<i64>().ok();
    let cpu_seconds = match (field(11), field(12)) {
        (Some(u), Some(s)) => Some((u + s) as f64 / ticks as f64),
        _ => None,
    };
    let btime = proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok());
    let start_time_seconds = match (field(19), btime) {
        (Some(start), Some(b)) => Some(b + start / ticks),
        _ => None,
    };
    let resident_bytes = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<i64>().ok())
        .map(|p| p * page);
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<i64>().ok());
    ProcessStats {
        cpu_seconds,
        resident_bytes,
        open_fds: None,
        max_fds,
        start_time_seconds,
    }
}

/// Reads the current values.
pub fn read() -> ProcessStats {
    let get = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let ticks = sysconf(libc::_SC_CLK_TCK).unwrap_or(100);
    let page = sysconf(libc::_SC_PAGESIZE).unwrap_or(4096);
    let mut stats = parse(
        &get("/proc/self/stat"),
        &get("/proc/self/statm"),
        &get("/proc/stat"),
        &get("/proc/self/limits"),
        ticks,
        page,
    );
    stats.open_fds = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64);
    stats
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = read();
        if let Some(v) = s.cpu_seconds {
            let m = ConstCounter::new(v);
            m.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time",
                Some(&Unit::Seconds),
                m.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size",
                Some(Unit::Bytes),
                s.resident_bytes,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Limit of open file descriptors",
                None,
                s.max_fds,
            ),
            (
                "process_start_time",
                "Start time, Unix time",
                Some(Unit::Seconds),
                s.start_time_seconds,
            ),
        ];
        for (name, help, unit, value) in gauges {
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

    #[test]
    fn proc_files_parse() {
        let stat =
            "42 (port syncd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 1000 300";
        let s = parse(
            stat,
            "5000 1200 300 1 0 400 0",
            "cpu 1 2\nbtime 1700000000\n",
            "Limit Soft Hard Units\nMax open files            1024                 4096                 files\n",
            100,
            4096,
        );
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.resident_bytes, Some(1200 * 4096));
        assert_eq!(s.max_fds, Some(1024));
        assert_eq!(s.start_time_seconds, Some(1_700_000_010));
    }

    #[test]
    fn this_process_reads() {
        let s = read();
        assert!(s.open_fds.unwrap() > 0 && s.resident_bytes.unwrap() > 0);
    }
}
