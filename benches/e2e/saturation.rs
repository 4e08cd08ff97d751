//! The daemon's own ceiling: link messages recorded from the storm are fed
//! straight into parse -> rules -> port records -> Redis rounds, through
//! the crate's public API, with no kernel in the way. Its rate next to
//! `redis-benchmark`'s says which of the two limits a storm.

use std::path::Path;
use std::time::{Duration, Instant};

use portsyncd::appl_events::ApplEvents;
use portsyncd::data_path::Core;
use portsyncd::metrics::Metrics;
use portsyncd::port_name::PortName;
use portsyncd::ports::Ports;
use portsyncd::sonic::connect::{Clients, RedisAccess, connect};
use portsyncd::sonic::db_config::load_layout;
use portsyncd::sonic::warm_table::WarmStart;
use portsyncd::startup::StartupInputs;
use portsyncd::status::Status;
use portsyncd::sync::SyncRules;
use portsyncd::warm_reconcile::Progress;
use portsyncd::writer::Writer;

pub struct Saturation {
    /// Link messages fed in (all netdevs, as the kernel sent them).
    pub messages: u64,
    /// Wall time from the first message to the last one queued: the
    /// netlink side's ceiling (parse, rules, queue).
    pub feed_seconds: f64,
    /// Wall time from the first message to the last write acknowledged.
    pub seconds: f64,
    /// Keys Redis acknowledged (fewer than messages: rounds fold changes).
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

/// Feeds every datagram through the data path's own `Core` (rules, port
/// records, writer) on one thread, as the daemon's loop does: a round goes out when
/// none is in flight, and the next carries what arrived meanwhile.
pub fn run(db_config: &Path, ports: &[String], datagrams: &[Vec<u8>]) -> Saturation {
    let layout = load_layout(db_config, None).expect("database_config.json");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let access = RedisAccess::default();
        let clients = Clients::new(&layout, &access).expect("Redis clients");
        let mut writer = Writer::new(&layout, &clients, &access);
        writer.adopt(
            connect(&clients.state).await.expect("STATE_DB"),
            connect(&clients.appl).await.expect("APPL_DB"),
        );
        // Rounds of 512 keys, as the daemon sent until it took 128 to keep
        // its start-up memory down: bigger rounds make this reference
        // faster (by a quarter, measured), so the ratio against it is not
        // flattered by the daemon's smaller rounds.
        writer.set_batch_max(512);
        let metrics = Metrics::new();
        // Steady state: every port configured, no CONFIG_DB port awaited.
        let inputs = StartupInputs {
            dpu: false,
            warm: WarmStart {
                warm: false,
                restore_count: 0,
            },
            ports: Vec::new(),
            reconcile_timer: None,
        };
        let status = Status::default();
        let (progress, _) =
            Progress::start(inputs, status.clone(), metrics.clone(), Instant::now());
        let names: Vec<PortName> = ports.iter().map(|p| PortName::from(p.as_str())).collect();
        let mut records = Ports::new(names.iter().cloned(), 65_536, metrics.clone());
        records.take_asks();
        for name in &names {
            records.set_configured(name, true);
        }
        let mut core = Core::new(
            SyncRules::new([]),
            records,
            writer,
            progress,
            ApplEvents::new(clients.appl.clone(), &layout.appl, true),
            Vec::new(),
            metrics.clone(),
            status,
        );

        let started = Instant::now();
        let mut round = None;
        for datagram in datagrams {
            core.on_datagram(datagram, Instant::now());
            if round.is_none() {
                round = core.plan_round(Instant::now());
            }
            if let Some((done, future)) = &mut round
                && let Some(reply) = futures_util::FutureExt::now_or_never(future.as_mut())
            {
                let _ = done;
                let (done, _) = round.take().expect("just matched");
                core.settle_round(done, reply);
            }
        }
        let feed_seconds = started.elapsed().as_secs_f64();
        loop {
            if round.is_none() {
                round = core.plan_round(Instant::now());
            }
            let Some((done, future)) = round.take() else {
                if core.settled() {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(100)).await;
                continue;
            };
            let reply = future.await;
            core.settle_round(done, reply);
        }
        let seconds = started.elapsed().as_secs_f64();
        Saturation {
            messages: metrics.link_events_received.get(),
            feed_seconds,
            seconds,
            keys_written: metrics.redis_keys_written.get(),
            batches: metrics.redis_batches.get(),
        }
    })
}
