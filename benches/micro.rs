//! Criterion benches of the daemon's hot path, one stage at a time:
//! parsing a link message, the sync rules for one event, the coalescing
//! port records under a storm, and rendering `/metrics` for 64, 512 and 1024 ports.
//!
//! Run with `cargo bench --bench micro`. The end-to-end figures (real
//! links, real Redis) come from `scripts/bench.sh`; see docs/performance.md.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use portsyncd::metrics::{Metrics, PortLabels};
use portsyncd::netlink::{LinkEvent, NetlinkItem, ParseStats, parse_datagram};
use portsyncd::port_name::PortName;
use portsyncd::ports::{Outcome, Ports};
use portsyncd::sync::{Decision, PortState, SyncRules};

/// The kernel's RTM_NEWLINK for a veth `Ethernet0` (mtu 9100, up, peer up),
/// 1500 bytes with every attribute a 6.x kernel sends (stats, AF_SPEC,
/// link info...). Captured once by `benches/fixtures/capture_newlink.py`.
const NEWLINK: &[u8] = include_bytes!("fixtures/rtm_newlink_veth.bin");

fn port_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("Ethernet{}", i * 4)).collect()
}

/// The fixture parsed once, to feed the stages after the parser.
fn fixture_event() -> LinkEvent<'static> {
    let mut event = None;
    parse_datagram(NEWLINK, &mut ParseStats::default(), |item| {
        if let NetlinkItem::Link(ev) = item {
            event = Some(ev);
        }
    });
    event.expect("the fixture holds one RTM_NEWLINK")
}

/// Rules in steady state: every port seen alive once.
fn running_rules(ports: &[String]) -> SyncRules {
    let rules = SyncRules::new([]);
    let mut event = fixture_event();
    for (i, port) in ports.iter().enumerate() {
        event.name = port.as_bytes();
        event.ifindex = i as u32 + 10;
        rules.on_event(&event);
    }
    rules
}

fn parse_one_message(c: &mut Criterion) {
    let event = fixture_event();
    assert_eq!((event.name, event.mtu), (&b"Ethernet0"[..], 9100));
    let mut group = c.benchmark_group("netlink");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_rtm_newlink_1500B", |b| {
        let mut stats = ParseStats::default();
        b.iter(|| {
            let mut n = 0;
            parse_datagram(black_box(NEWLINK), &mut stats, |item| {
                n += usize::from(matches!(black_box(item), NetlinkItem::Link(_)));
            });
            n
        })
    });
    group.finish();
}

fn rules_one_event(c: &mut Criterion) {
    let ports = port_names(512);
    let rules = running_rules(&ports);
    let mut event = fixture_event();
    event.name = ports[100].as_bytes();
    event.ifindex = 110;
    let mut group = c.benchmark_group("sync");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rules_newlink_configured_port", |b| {
        b.iter(|| {
            let decision = rules.on_event(black_box(&event));
            assert!(matches!(decision, Decision::Set { .. }));
            decision
        })
    });
    group.finish();
}

/// `ports` x `rounds` x (down, up): what `ip -batch` makes the kernel send
/// for an admin storm, as (port, ifindex, state).
fn storm_messages(ports: &[String], rounds: usize) -> Vec<(PortName, u32, PortState)> {
    let names: Vec<PortName> = ports.iter().map(|p| PortName::from(p.as_str())).collect();
    let mut messages = Vec::with_capacity(ports.len() * rounds * 2);
    for _ in 0..rounds {
        for up in [false, true] {
            for (i, port) in names.iter().enumerate() {
                let state = PortState {
                    admin_up: up,
                    oper_up: up,
                    mtu: 9100,
                };
                messages.push((port.clone(), i as u32 + 1, state));
            }
        }
    }
    messages
}

fn ports_under_storm(c: &mut Criterion) {
    let names = port_names(512);
    let rounds = 10;
    let messages = storm_messages(&names, rounds);
    let mut group = c.benchmark_group("ports");
    group.throughput(Throughput::Elements(messages.len() as u64));
    // Every message is applied while the writer is away; then the writer
    // drains the dirty ports in rounds of 512, as after one slow round trip.
    group.bench_function("storm_512_ports_x10_mark_then_drain", |b| {
        b.iter_batched(
            || messages.clone(),
            |messages| {
                let configured: Vec<PortName> =
                    names.iter().map(|p| PortName::from(p.as_str())).collect();
                let mut ports = Ports::new(
                    configured.iter().cloned(),
                    65_536,
                    portsyncd::metrics::Metrics::new(),
                );
                ports.take_asks();
                for p in &configured {
                    ports.set_configured(p, true);
                }
                let now = Instant::now();
                for (port, ifindex, state) in messages {
                    ports.on_link(&port, ifindex, state, now);
                }
                assert_eq!(ports.pending(), names.len());
                loop {
                    let takes = ports.take(now, 512);
                    if takes.is_empty() {
                        break;
                    }
                    for take in &takes {
                        ports.settle(take, Outcome::Done, Outcome::Done, now);
                    }
                }
                ports
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn populated_registry(ports: usize) -> Registry {
    let metrics = Metrics::new();
    for port in port_names(ports) {
        let labels = PortLabels { port };
        metrics.port_oper_status.get_or_create(&labels).set(1);
        metrics.port_admin_status.get_or_create(&labels).set(1);
        metrics.port_flaps.get_or_create(&labels).inc_by(3);
    }
    for i in 0..1000 {
        metrics.event_latency.observe(0.000_05 * f64::from(i % 40));
        metrics.redis_latency.observe(0.000_03 * f64::from(i % 40));
    }
    metrics.link_events_received.inc_by(123_456);
    metrics.ignored("not_a_port");
    metrics.redis_error("io");
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    registry
}

fn render_metrics(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics");
    for ports in [64, 512, 1024] {
        let registry = populated_registry(ports);
        let mut size = String::new();
        encode(&mut size, &registry).expect("encode");
        assert!(size.contains(&format!("port=\"Ethernet{}\"", (ports - 1) * 4)));
        group.throughput(Throughput::Bytes(size.len() as u64));
        group.bench_with_input(BenchmarkId::new("render", ports), &registry, |b, r| {
            b.iter(|| {
                let mut out = String::with_capacity(size.len());
                encode(&mut out, black_box(r)).expect("encode");
                out
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    parse_one_message,
    rules_one_event,
    ports_under_storm,
    render_metrics
);
criterion_main!(benches);
