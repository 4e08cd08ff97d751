//! What /proc says about the daemon: CPU time and peak RSS, summed over the
//! process tree, so a wrapper script given as `--cmd` is measured with the
//! daemon it starts.

use std::collections::HashMap;
use std::fs;

/// Nanoseconds on CPU per thread (`/proc/PID/task/TID/schedstat`), keyed by
/// thread id, with the thread's name; the times each thread was put on a
/// CPU (schedstat's third field: every wake-up and every return from a
/// preemption); plus utime+stime clock ticks per process (`/proc/PID/stat`).
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    per_thread_ns: HashMap<u32, (u64, String)>,
    per_thread_slices: HashMap<u32, u64>,
    ticks: u64,
}

impl CpuSnapshot {
    pub fn take(root: u32) -> CpuSnapshot {
        let mut snap = CpuSnapshot::default();
        for pid in tree(root) {
            snap.ticks += stat_ticks(pid).unwrap_or(0);
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for task in tasks.flatten() {
                let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                    continue;
                };
                let Ok(schedstat) = fs::read_to_string(task.path().join("schedstat")) else {
                    continue;
                };
                let fields: Vec<u64> = schedstat
                    .split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect();
                if let [ns, _waited, slices] = fields[..] {
                    let comm = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                    snap.per_thread_ns
                        .insert(tid, (ns, comm.trim().to_string()));
                    snap.per_thread_slices.insert(tid, slices);
                }
            }
        }
        snap
    }

    /// CPU spent since `before`, in microseconds, from the per-thread
    /// nanosecond counters. A thread that ended in between (an idle tokio
    /// blocking-pool thread) loses only what it ran in between.
    pub fn us_since(&self, before: &CpuSnapshot) -> f64 {
        self.us_since_in(before, |_| true)
    }

    /// The same, for the threads whose name `keep` accepts.
    pub fn us_since_in(&self, before: &CpuSnapshot, keep: impl Fn(&str) -> bool) -> f64 {
        let ns: u64 = self
            .per_thread_ns
            .iter()
            .filter(|(_, (_, comm))| keep(comm))
            .map(|(tid, (now, _))| {
                let was = before.per_thread_ns.get(tid).map_or(0, |(ns, _)| *ns);
                now.saturating_sub(was)
            })
            .sum();
        ns as f64 / 1e3
    }

    /// How many times the daemon's threads were put on a CPU since `before`.
    pub fn slices_since(&self, before: &CpuSnapshot) -> u64 {
        self.per_thread_slices
            .iter()
            .map(|(tid, now)| now.saturating_sub(*before.per_thread_slices.get(tid).unwrap_or(&0)))
            .sum()
    }

    /// The same from utime+stime (clock-tick resolution, usually 10 ms).
    pub fn ticks_us_since(&self, before: &CpuSnapshot) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.ticks.saturating_sub(before.ticks) as f64 * 1e6 / hz
    }
}

/// utime + stime of one process, in clock ticks (fields 14 and 15).
fn stat_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Peak resident set (VmHWM) of the largest process in the tree, in KiB.
pub fn peak_rss_kib(root: u32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// `root` and every descendant, found through each process's parent id.
fn tree(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let ppid = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s[s.rfind(')')? + 2..].to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                });
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
}
