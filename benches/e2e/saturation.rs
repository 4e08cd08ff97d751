//! The daemon's own ceiling: link messages recorded from the storm are fed
//! straight into parse -> rules -> coalescing queue -> Redis writer, through
//! the crate's public API, with no kernel in the way. Its rate next to
//! `redis-benchmark`'s says which of the two limits a storm.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portsyncd::metrics::Metrics;
use portsyncd::netlink::{NetlinkItem, ParseStats, parse_datagram};
use portsyncd::queue::{CoalescingQueue, Target};
use portsyncd::sonic::connect::client_for;
use portsyncd::sonic::db_config::load_layout;
use portsyncd::sonic::scripts::Scripts;
use portsyncd::sync::{Decision, StartMode, SyncRules};
use portsyncd::writer::Writer;

pub struct Saturation {
    /// Link messages fed in (all netdevs, as the kernel sent them).
    pub messages: u64,
    /// Wall time from the first message to the last one queued: the
    /// netlink side's ceiling (parse, rules, queue).
    pub feed_seconds: f64,
    /// Wall time from the first message to the last write acknowledged.
    pub seconds: f64,
    /// Keys Redis acknowledged (fewer than messages: the queue coalesces).
    pub keys_written: u64,
    pub batches: u64,
}

impl Saturation {
    pub fn messages_per_s(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
    pub fn fed_per_s(&self) -> f64 {
        self.messages as f64 / self.feed_seconds
    }
}

pub fn run(db_config: &Path, ports: &[String], datagrams: &[Vec<u8>]) -> Saturation {
    let layout = load_layout(db_config, None).expect("database_config.json");
    let client = client_for(&layout.appl, false).expect("Redis client");
    let queue = Arc::new(CoalescingQueue::new(65_536));
    let metrics = Metrics::new();
    let writer = Writer::new(
        client,
        Scripts::new(&layout),
        queue.clone(),
        metrics.clone(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.spawn(writer.run());

    // Steady state: configured ports, start-up dump over.
    let mode = StartMode {
        warm: false,
        dpu: false,
    };
    let mut rules = SyncRules::new(mode, ports.iter().cloned());
    rules.dump_started();
    rules.dump_finished();

    let started = Instant::now();
    let mut messages = 0;
    let mut stats = ParseStats::default();
    for datagram in datagrams {
        parse_datagram(datagram, &mut stats, |item| {
            let NetlinkItem::Link(event) = item else {
                return;
            };
            messages += 1;
            if let Decision::Write { port, write } = rules.on_event(&event) {
                queue.push(Target::StatePort(port), write, Instant::now());
            }
        });
    }
    let feed_seconds = started.elapsed().as_secs_f64();
    while !queue.is_empty() {
        std::thread::sleep(Duration::from_micros(100));
    }
    let seconds = started.elapsed().as_secs_f64();
    let result = Saturation {
        messages,
        feed_seconds,
        seconds,
        keys_written: metrics.redis_keys_written.get(),
        batches: metrics.redis_batches.get(),
    };
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
