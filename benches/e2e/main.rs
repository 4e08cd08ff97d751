//! End-to-end benchmark of a portsyncd-compatible daemon on real links and a
//! real Redis. Needs root; run it through `scripts/bench.sh`, e.g.
//!
//! ```text
//! scripts/bench.sh --ports 64,512,1024 --rounds 10
//! scripts/bench.sh --ports 512 --cmd '/path/to/other-portsyncd --config {db_config}'
//! ```
//!
//! For each port count N it builds a private network namespace, a private
//! redis-server (unix socket, its own database_config.json, keyspace
//! notifications on) with N ports in CONFIG_DB and an orchagent stand-in, and
//! measures:
//! 1. cold start: daemon start -> `PortInitDone`, with the N veth netdevs
//!    created once `PortConfigDone` is there, as syncd would;
//! 2. storm: `--rounds` rounds of admin down/up on every port in one
//!    `ip -batch`; time until STATE_DB equals the kernel's final state, the
//!    daemon's CPU and peak RSS, and what Redis did per change;
//! 3. latency: one MTU change at a time -> the STATE_DB write's keyspace
//!    notification, beside the harness's own floor (it writes a key itself);
//! 4. references: `redis-benchmark -P 32`, and a saturation run that replays
//!    the storm's recorded link messages through the crate's pipeline.
//!
//! It prints one Markdown table, one column per N, and with `--plot DIR`
//! writes the latency distribution and the CPU per change as SVG
//! (plot.rs). See docs/performance.md.

#[path = "../../tests/common/mod.rs"]
mod common;
mod kernel;
mod notify;
mod plot;
mod procfs;
mod redis_stats;
mod saturation;
mod syslog_sink;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use common::{APPL_DB, BIN, Consumer, LinkState, Netns, RedisServer, STATE_DB};
use notify::Notifications;
use procfs::CpuSnapshot;
use redis_stats::{RedisSnapshot, RedisWork, benchmark_rate};

const DEFAULT_CMD: &str = "{portsyncd} --db-config {db_config}";
/// How long anything may take before the run reports it as not done.
const PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Parser)]
#[command(about = "End-to-end benchmark of a portsyncd-compatible daemon (needs root)")]
struct Args {
    /// Port counts to measure, one table column each.
    #[arg(long, value_delimiter = ',', default_value = "64,512,1024")]
    ports: Vec<usize>,
    /// Storm rounds: each sets every port admin down, then up.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Latency samples (and as many floor samples).
    #[arg(long, default_value_t = 300)]
    samples: usize,
    /// The daemon command, split on whitespace; `{portsyncd}` is this
    /// build's binary, `{db_config}` the run's database_config.json
    /// (also in $PORTSYNCD_DB_CONFIG) and `{syslog}` the harness's syslog
    /// socket (this build's default command logs there). It runs inside
    /// the namespace.
    #[arg(long, env = "PORTSYNCD_CMD", default_value = DEFAULT_CMD)]
    cmd: String,
    /// An extra argument for the daemon (repeat for more). With the default
    /// --cmd and none given, `--no-metrics` is passed.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    daemon_args: Vec<String>,
    /// Name of the implementation, for the table's title.
    #[arg(long, default_value = "portsyncd (this build)")]
    label: String,
    /// Skip the in-process saturation run (it uses this crate's pipeline,
    /// whatever --cmd is).
    #[arg(long)]
    no_saturation: bool,
    /// Disable IPv6 on the netdevs the run creates (no duplicate-address
    /// detection or router solicitations on N links); `lo` keeps it.
    #[arg(long)]
    no_ipv6: bool,
    /// Also write the latency and CPU pictures, as SVG, into this
    /// directory (docs/performance.md shows docs/img/).
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One column of the table: everything measured for one port count.
#[derive(Default)]
struct Column {
    ports: usize,
    cold_start_ms: f64,
    init_after_last_netdev_ms: f64,
    rss_cold_kib: u64,
    changes: u64,
    kernel_messages: u64,
    kernel_port_messages: u64,
    recorder_overruns: u64,
    converged: bool,
    storm_ms: f64,
    after_last_change_ms: f64,
    cpu_us: f64,
    /// Of `cpu_us`, the part spent on the data-path thread (the main
    /// thread: it carries the process name).
    cpu_data_path_us: f64,
    cpu_ticks_us: f64,
    /// Times the daemon's threads were put on a CPU during the storm.
    cpu_slices: u64,
    redis: RedisWork,
    rss_storm_kib: u64,
    /// RTM_SETLINK sent -> STATE_DB notification, µs.
    latency: Vec<f64>,
    /// The kernel's announcement (seen by the harness's own listener) ->
    /// STATE_DB notification, µs: what the daemon adds.
    latency_from_kernel: Vec<f64>,
    floor: Vec<f64>,
    hset_rate: f64,
    /// The same HSET on a STATE_DB PORT_TABLE key, notified to a subscriber.
    hset_notified_rate: f64,
    saturation: Option<saturation::Saturation>,
    daemon_overruns: usize,
    /// WARN and ERROR lines the daemon logged in the whole run.
    daemon_warnings: usize,
}

fn main() {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("e2e: needs root (network namespaces, veth links); run scripts/bench.sh as root");
        std::process::exit(2);
    }
    let columns: Vec<Column> = args.ports.iter().map(|&n| measure(&args, n)).collect();
    print_table(&args, &columns);
    if let Some(dir) = &args.plot {
        match plot::write(dir, &args.label, &columns) {
            Ok(paths) => eprintln!("e2e: wrote {}", paths.join(", ")),
            Err(e) => {
                eprintln!("e2e: cannot write the plots: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// What every phase of one port count works on.
struct Stage {
    redis: RedisServer,
    ns: Netns,
    names: Vec<String>,
    log: PathBuf,
    /// Where the daemon's syslog lines go (this build only).
    syslog: syslog_sink::SyslogSink,
    syslog_log: PathBuf,
}

fn measure(args: &Args, n: usize) -> Column {
    eprintln!("== {n} ports");
    let mut col = Column {
        ports: n,
        changes: (n * args.rounds * 2) as u64,
        ..Column::default()
    };
    let redis = RedisServer::start();
    let names = common::port_names(n);
    redis.configure_ports(&common::as_strs(&names));
    let consumer = Consumer::start(redis.socket());
    let ns = Netns::new();
    if args.no_ipv6 {
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name(), "sysctl", "-qw"])
            // Only links created from now on: `lo` keeps IPv6, so the
            // metrics endpoint can listen on [::1].
            .arg("net.ipv6.conf.default.disable_ipv6=1")
            .status()
            .expect("sysctl");
        assert!(out.success(), "cannot disable IPv6 in the namespace");
    }
    let notes = Notifications::subscribe(
        redis.socket(),
        &[
            (APPL_DB, "_PORT_TABLE:PortInitDone"),
            (STATE_DB, "PORT_TABLE|*"),
        ],
    );
    let mut info_con = redis.con(STATE_DB);
    let log = redis.dir().join("daemon.log");
    let syslog_log = redis.dir().join("syslog.log");
    let syslog = syslog_sink::SyslogSink::start(redis.dir().join("log.sock"), &syslog_log);
    let stage = Stage {
        redis,
        ns,
        names,
        log,
        syslog,
        syslog_log,
    };

    let mut daemon = cold_start(args, &stage, &notes, &mut col);
    bring_up(&stage);
    // From here on nothing is left to pop: stop the stand-in so Redis's
    // counters hold only the daemon's and the harness's commands.
    drop(consumer);
    let recording = storm(args, &stage, &notes, daemon.id(), &mut info_con, &mut col);
    let notes = latency(args, &stage, notes, &mut col);
    // Still subscribed: the second HSET reference is notified to it.
    references(&stage, &mut info_con, &mut col);
    drop(notes);
    stop_daemon(&mut daemon);
    let syslog_log = stage.syslog_log.clone();
    drop(stage.syslog);
    let log: String = [&stage.log, &syslog_log]
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect();
    col.daemon_overruns = log.matches("receive buffer overran").count();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| {
            ["]: WARN ", "]: ERROR ", " WARN ", " ERROR "]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    for line in warnings.iter().take(5) {
        eprintln!("e2e: daemon warned: {line}");
    }
    col.daemon_warnings = warnings.len();
    if !args.no_saturation {
        // Start from an empty STATE_DB so every replayed port is written.
        redis::cmd("FLUSHDB")
            .exec(&mut info_con)
            .expect("FLUSHDB STATE_DB");
        col.saturation = Some(saturation::run(
            stage.redis.db_config(),
            &stage.names,
            &recording.datagrams,
        ));
    }
    col
}

/// Phase 1: starts the daemon; once `PortConfigDone` is there, creates the
/// netdevs as syncd would, and times `PortInitDone`.
fn cold_start(args: &Args, stage: &Stage, notes: &Notifications, col: &mut Column) -> Child {
    let Stage {
        redis, ns, names, ..
    } = stage;
    let started = Instant::now();
    let daemon = spawn_daemon(
        args,
        ns,
        redis.db_config(),
        &stage.log,
        &stage.syslog.socket,
    );
    common::wait_until(PATIENCE, "APPL_DB PortConfigDone", || {
        redis.exists(APPL_DB, "PORT_TABLE:PortConfigDone")
    });
    let create: Vec<String> = names
        .iter()
        .map(|p| format!("link add {p} type veth peer name {}", Netns::peer_of(p)))
        .collect();
    let recorder = kernel::Recorder::start(ns.name());
    ns.batch(&create);
    let init = notes
        .wait_key("_PORT_TABLE:PortInitDone", PATIENCE)
        .expect("PortInitDone was not written");
    let creation = recorder.finish(|| poke(ns));
    col.cold_start_ms = ms(init.at - started);
    let last_netdev = creation
        .last_port_change
        .expect("no Ethernet* netdev was announced");
    col.init_after_last_netdev_ms = signed_ms(init.at, last_netdev);
    col.rss_cold_kib = procfs::peak_rss_kib(daemon.id());
    daemon
}

/// Every port up with carrier, and in STATE_DB, before the storm.
fn bring_up(stage: &Stage) {
    let up: Vec<String> = stage
        .names
        .iter()
        .flat_map(|p| {
            [
                format!("link set {} up", Netns::peer_of(p)),
                format!("link set {p} up"),
            ]
        })
        .collect();
    stage.ns.batch(&up);
    assert!(
        wait_converged(&stage.redis, &settled_links(&stage.ns), &stage.names).is_some(),
        "STATE_DB did not reach the ports' state before the storm; see {}",
        stage.log.display()
    );
}

/// Phase 2: rounds of admin down/up on every port in one `ip -batch`; returns
/// what the kernel sent, for the saturation run.
fn storm(
    args: &Args,
    stage: &Stage,
    notes: &Notifications,
    pid: u32,
    info_con: &mut redis::Connection,
    col: &mut Column,
) -> kernel::Recording {
    let storm: Vec<String> = (0..args.rounds)
        .flat_map(|_| {
            let down = stage.names.iter().map(|p| format!("link set {p} down"));
            let up = stage.names.iter().map(|p| format!("link set {p} up"));
            down.chain(up).collect::<Vec<_>>()
        })
        .collect();
    let recorder = kernel::Recorder::start(stage.ns.name());
    notes.clear();
    let cpu_before = CpuSnapshot::take(pid);
    let redis_before = RedisSnapshot::take(info_con);
    let storm_start = Instant::now();
    stage.ns.batch(&storm);
    let polls = wait_converged(&stage.redis, &settled_links(&stage.ns), &stage.names);
    col.converged = polls.is_some();
    let last_write = notes.last_until_quiet("PORT_TABLE|Ethernet", Duration::from_millis(500));
    let cpu_after = CpuSnapshot::take(pid);
    let redis_after = RedisSnapshot::take(info_con);
    let recording = recorder.finish(|| poke(&stage.ns));
    if let (Some(seen), Some(last_change)) = (last_write, recording.last_port_change) {
        col.storm_ms = ms(seen.at - storm_start);
        col.after_last_change_ms = signed_ms(seen.at, last_change);
    }
    col.cpu_us = cpu_after.us_since(&cpu_before);
    col.cpu_data_path_us = cpu_after.us_since_in(&cpu_before, |name| name == "portsyncd");
    col.cpu_ticks_us = cpu_after.ticks_us_since(&cpu_before);
    col.cpu_slices = cpu_after.slices_since(&cpu_before);
    // The harness's round trips: its polls and the INFO that ends the window.
    col.redis = RedisWork::between(&redis_before, &redis_after, polls.unwrap_or(0) + 1);
    col.rss_storm_kib = procfs::peak_rss_kib(pid);
    col.kernel_messages = recording.messages;
    col.kernel_port_messages = recording.port_messages;
    col.recorder_overruns = recording.overruns;
    recording
}

/// 3. One change at a time, beside the harness's floor.
fn latency(args: &Args, stage: &Stage, notes: Notifications, col: &mut Column) -> Notifications {
    let ns = &stage.ns;
    let ifindex = ns.link("Ethernet0").expect("Ethernet0").ifindex as u32;
    let recorder = kernel::Recorder::start(ns.name());
    let (samples, floor, notes) = sample_latency(ns, &stage.redis, notes, ifindex, args.samples);
    let announced = recorder.finish(|| poke(ns)).port_events;
    col.latency = samples.iter().map(|s| us(s.written - s.sent)).collect();
    col.latency_from_kernel = samples
        .iter()
        .filter_map(|s| {
            let (at, ..) = announced
                .iter()
                .find(|(at, name, mtu)| name == "Ethernet0" && *mtu == s.mtu && *at >= s.sent)?;
            Some(signed_ms(s.written, *at) * 1e3)
        })
        .collect();
    col.floor = floor;
    notes
}

/// 4. What Redis itself can take, pipelined.
///
/// The HSET the daemon's hot path sends is the reference for the Redis CPU
/// per change: `redis-benchmark -t hset` as is, and an HSET of a STATE_DB
/// `PORT_TABLE|` key, which Redis also delivers to the harness's keyspace
/// subscriber, as it does for every write of the daemon (on a switch
/// teammgrd and the other SubscriberStateTable users subscribe the same way).
fn references(stage: &Stage, _info_con: &mut redis::Connection, col: &mut Column) {
    let socket = stage.redis.socket();
    col.hset_rate = benchmark_rate(socket, &["-n", "500000", "-t", "hset"]);
    let db = STATE_DB.to_string();
    col.hset_notified_rate = benchmark_rate(
        socket,
        &[
            "-n",
            "100000",
            "--dbnum",
            &db,
            "HSET",
            "PORT_TABLE|redis-benchmark",
            "mtu",
            "9100",
        ],
    );
}

fn spawn_daemon(args: &Args, ns: &Netns, db_config: &Path, log: &Path, syslog: &Path) -> Child {
    let config = db_config.to_str().expect("utf-8 path");
    let words: Vec<String> = args
        .cmd
        .split_whitespace()
        .map(|w| {
            w.replace("{portsyncd}", BIN)
                .replace("{db_config}", config)
                .replace("{syslog}", &syslog.to_string_lossy())
        })
        .collect();
    let mut extra = args.daemon_args.clone();
    if args.cmd == DEFAULT_CMD {
        if extra.is_empty() {
            extra.push("--no-metrics".into());
        }
        // Logs go to syslog, as on a switch, here the harness's stand-in.
        extra.push(format!("--syslog-socket={}", syslog.display()));
    }
    let out = File::create(log).expect("daemon log");
    Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(&words)
        .args(&extra)
        .env("PORTSYNCD_DB_CONFIG", db_config)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {words:?}: {e}"))
}

/// Makes the kernel announce a link (lo's MTU, changed and restored), so a
/// blocked recorder wakes up.
fn poke(ns: &Netns) {
    ns.batch(&["link set lo mtu 65535", "link set lo mtu 65536"]);
}

fn stop_daemon(daemon: &mut Child) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = daemon.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = daemon.wait();
}

/// The kernel's view of every link once it stops changing: a veth's carrier
/// (and so IFF_RUNNING and carrier_changes) follows its admin state only
/// when the kernel's linkwatch work runs, up to a second later.
fn settled_links(ns: &Netns) -> std::collections::BTreeMap<String, LinkState> {
    let mut last = ns.links();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = ns.links();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// Polls STATE_DB every 20 ms until every port's row matches `kernel`;
/// returns how many polls (round trips) that took, `None` on timeout.
fn wait_converged(
    redis: &RedisServer,
    kernel: &std::collections::BTreeMap<String, LinkState>,
    names: &[String],
) -> Option<u64> {
    let mut con = redis.con(STATE_DB);
    let deadline = Instant::now() + PATIENCE;
    let mut polls = 0;
    loop {
        let mut pipe = redis::pipe();
        for name in names {
            pipe.cmd("HGETALL").arg(format!("PORT_TABLE|{name}"));
        }
        let rows: Vec<common::Fields> = pipe.query(&mut con).expect("HGETALL pipeline");
        polls += 1;
        let all_match = names
            .iter()
            .zip(&rows)
            .all(|(name, row)| kernel[name].mismatches(row).is_empty());
        if all_match {
            return Some(polls);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One latency sample: the MTU set, when the RTM_SETLINK went out, and
/// when the STATE_DB write's notification arrived.
struct Sample {
    mtu: u32,
    sent: Instant,
    written: Instant,
}

/// Alternates Ethernet0's MTU with one RTM_SETLINK and times the STATE_DB
/// write's notification; after each, times the harness writing a key
/// itself (the floor, in µs). Runs on a thread inside the namespace.
fn sample_latency(
    ns: &Netns,
    redis: &RedisServer,
    notes: Notifications,
    ifindex: u32,
    samples: usize,
) -> (Vec<Sample>, Vec<f64>, Notifications) {
    let ns_name = ns.name().to_string();
    let mut con = redis.con(STATE_DB);
    std::thread::spawn(move || {
        kernel::enter_netns(&ns_name);
        let socket = kernel::request_socket().expect("netlink request socket");
        let (mut latency, mut floor) = (Vec::new(), Vec::new());
        for i in 0..samples {
            std::thread::sleep(Duration::from_millis(3));
            notes.clear();
            let mtu = if i % 2 == 0 { 9000 } else { 9100 };
            let t0 = Instant::now();
            kernel::set_mtu(&socket, i as u32 + 1, ifindex, mtu).expect("RTM_SETLINK mtu");
            if let Some(seen) = notes.wait_key("PORT_TABLE|Ethernet0", Duration::from_secs(5)) {
                latency.push(Sample {
                    mtu,
                    sent: t0,
                    written: seen.at,
                });
            }
            std::thread::sleep(Duration::from_millis(3));
            notes.clear();
            let t0 = Instant::now();
            redis::cmd("HSET")
                .arg("PORT_TABLE|floor")
                .arg("mtu")
                .arg(mtu)
                .exec(&mut con)
                .expect("HSET floor");
            if let Some(seen) = notes.wait_key("PORT_TABLE|floor", Duration::from_secs(5)) {
                floor.push(us(seen.at - t0));
            }
        }
        (latency, floor, notes)
    })
    .join()
    .expect("latency thread")
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `a - b` in milliseconds, negative when `a` came first.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    match a.checked_duration_since(b) {
        Some(d) => ms(d),
        None => -ms(b - a),
    }
}

/// (p50, p99, max) of `samples`, in the samples' unit.
fn percentiles(samples: &[f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    (at(50), at(99), v[v.len() - 1])
}

fn print_table(args: &Args, cols: &[Column]) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "\n### {} — {} rounds, {} latency samples, kernel {}, {} CPUs\n",
        args.label,
        args.rounds,
        args.samples,
        kernel.trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut header = "| measure |".to_string();
    let mut rule = "| --- |".to_string();
    for c in cols {
        header += &format!(" {} ports |", c.ports);
        rule += " ---: |";
    }
    println!("{header}\n{rule}");
    let row = |name: &str, f: &dyn Fn(&Column) -> String| {
        let cells: Vec<String> = cols.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    let per = |x: f64, c: &Column| x / c.changes as f64;
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    row("cold start: daemon start → PortInitDone (ms)", &|c| {
        format!("{:.0}", c.cold_start_ms)
    });
    row(
        "cold start: last netdev announced → PortInitDone (ms)",
        &|c| format!("{:.1}", c.init_after_last_netdev_ms),
    );
    row("peak RSS after cold start (MiB)", &|c| mib(c.rss_cold_kib));
    row("storm: admin changes (ports × rounds × 2)", &|c| {
        c.changes.to_string()
    });
    row("storm: kernel link messages, Ethernet* / all", &|c| {
        let lost = if c.recorder_overruns > 0 {
            " (recorder overran)"
        } else {
            ""
        };
        format!("{} / {}{lost}", c.kernel_port_messages, c.kernel_messages)
    });
    row("storm: STATE_DB equals the kernel's final state", &|c| {
        if c.converged { "yes" } else { "**no**" }.to_string()
    });
    row("storm: first change → last STATE_DB write (ms)", &|c| {
        format!("{:.0}", c.storm_ms)
    });
    row(
        "storm: kernel's last port change → last STATE_DB write (ms)",
        &|c| format!("{:.1}", c.after_last_change_ms),
    );
    row("storm: daemon CPU per change (µs, schedstat)", &|c| {
        format!("{:.2}", per(c.cpu_us, c))
    });
    row(
        "storm: of which the data-path thread / the others (µs per change)",
        &|c| {
            let main = per(c.cpu_data_path_us, c);
            format!("{main:.2} / {:.2}", per(c.cpu_us, c) - main)
        },
    );
    row("storm: daemon CPU per change (µs, utime+stime)", &|c| {
        format!("{:.1}", per(c.cpu_ticks_us, c))
    });
    row("storm: daemon CPU per Ethernet* message (µs)", &|c| {
        format!("{:.2}", c.cpu_us / c.kernel_port_messages.max(1) as f64)
    });
    row(
        "storm: daemon put on a CPU (wake-ups and preemptions) per Ethernet* message",
        &|c| {
            format!(
                "{:.3}",
                c.cpu_slices as f64 / c.kernel_port_messages.max(1) as f64
            )
        },
    );
    row("storm: commands sent per change", &|c| {
        format!("{:.3}", per(c.redis.sent as f64, c))
    });
    row("storm: commands sent per Ethernet* message", &|c| {
        format!(
            "{:.3}",
            c.redis.sent as f64 / c.kernel_port_messages.max(1) as f64
        )
    });
    row("storm: commands run inside scripts per change", &|c| {
        format!("{:.2}", per(c.redis.in_scripts as f64, c))
    });
    row("storm: round trips per change", &|c| {
        format!("{:.4}", per(c.redis.round_trips as f64, c))
    });
    row("storm: commands per round trip", &|c| {
        format!(
            "{:.0}",
            c.redis.sent as f64 / c.redis.round_trips.max(1) as f64
        )
    });
    row("storm: Redis CPU per change (µs)", &|c| {
        format!("{:.2}", per(c.redis.cpu_us, c))
    });
    row("peak RSS after storm (MiB)", &|c| mib(c.rss_storm_kib));
    row("daemon log: netlink overruns", &|c| {
        c.daemon_overruns.to_string()
    });
    row("daemon log: WARN and ERROR lines", &|c| {
        c.daemon_warnings.to_string()
    });
    let lat = |v: &[f64]| {
        let (p50, p99, max) = percentiles(v);
        format!("{p50:.0} / {p99:.0} / {max:.0}")
    };
    row(
        "latency: RTM_SETLINK sent → STATE_DB, p50 / p99 / max (µs)",
        &|c| lat(&c.latency),
    );
    row(
        "latency: kernel announces → STATE_DB, p50 / p99 / max (µs)",
        &|c| lat(&c.latency_from_kernel),
    );
    row(
        "harness floor: own HSET → notification, p50 / p99 / max (µs)",
        &|c| lat(&c.floor),
    );
    row(
        "latency p50 (from the announcement) above the floor (µs)",
        &|c| {
            format!(
                "{:.0}",
                percentiles(&c.latency_from_kernel).0 - percentiles(&c.floor).0
            )
        },
    );
    row("redis-benchmark -P 32 HSET (ops/s)", &|c| {
        format!("{:.0}", c.hset_rate)
    });
    row(
        "ratio: Redis CPU per change / one pipelined HSET (target <= 2)",
        &|c| {
            format!(
                "{:.2}",
                per(c.redis.cpu_us, c) / (1e6 / c.hset_rate.max(1.0))
            )
        },
    );
    row(
        "redis-benchmark -P 32 HSET of a STATE_DB PORT_TABLE key, notified to a subscriber (ops/s)",
        &|c| format!("{:.0}", c.hset_notified_rate),
    );
    row(
        "ratio: Redis CPU per change / one such notified HSET",
        &|c| {
            format!(
                "{:.2}",
                per(c.redis.cpu_us, c) / (1e6 / c.hset_notified_rate.max(1.0))
            )
        },
    );
    row("saturation: messages/s parsed, ruled and queued", &|c| {
        c.saturation
            .as_ref()
            .map_or("-".into(), |s| format!("{:.0}", s.fed_per_s()))
    });
    row(
        "saturation: messages/s until Redis acknowledged the last write",
        &|c| {
            c.saturation
                .as_ref()
                .map_or("-".into(), |s| format!("{:.0}", s.messages_per_s()))
        },
    );
    row(
        "ratio: daemon CPU per Ethernet* message / saturation time per message (target <= 2)",
        &|c| {
            c.saturation.as_ref().map_or("-".into(), |s| {
                let per_message = c.cpu_us / c.kernel_port_messages.max(1) as f64;
                format!("{:.2}", per_message / (1e6 / s.messages_per_s()))
            })
        },
    );
    row(
        "saturation: keys written / pipelines (the queue folds the rest)",
        &|c| {
            c.saturation.as_ref().map_or("-".into(), |s| {
                format!("{} / {}", s.keys_written, s.batches)
            })
        },
    );
}
