//! The data path: one thread, one loop. Each wake-up drains every datagram
//! the netlink socket holds, applies the rules, folds the writes into the
//! queue, and, when no round is in flight, sends what is due as one
//! pipeline per database. While a round is in flight the loop goes on
//! reading, so during a storm the next round carries everything that
//! arrived meanwhile; a lone change goes out at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::unix::AsyncFd;
use tracing::{debug, error, info, warn};

use crate::metrics::{Metrics, PortLabels};
use crate::netlink::{LinkSocket, NetlinkItem, ParseStats, RecvOutcome, parse_datagram};
use crate::port_name::PortName;
use crate::queue::{CoalescingQueue, Key, Op};
use crate::status::Status;
use crate::sync::{Decision, SyncRules};
use crate::systemd::IDLE_BEAT;
use crate::warm_reconcile::Progress;
use crate::writer::{Landed, Round, RoundFuture, RoundReply, Writer};

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT, after the flush.
    Shutdown,
    /// Redis lost its data: the start-up must run again.
    DataLost,
}

/// Where the dump state machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dump {
    /// No dump running; `wanted` asks for one on the next turn.
    Idle { wanted: bool },
    /// A dump with this sequence number is running; `again` asks for another
    /// one when it ends, because an overrun happened during it.
    Running { seq: u32, again: bool },
}

/// A port's metric labels, flap counter and state gauges, made once so the
/// hot path allocates and hashes nothing. A deleted port's state series are
/// removed from the registry and the gauges forgotten, so they come back
/// (looked up again) with the port's next row.
struct PortGauges {
    labels: PortLabels,
    flaps: Counter,
    last_oper: Option<bool>,
    /// oper and admin status, while the series exist.
    state: Option<(Gauge, Gauge)>,
}

/// Everything but the socket, so a datagram borrowed from the socket's
/// buffer can be handled while the loop holds the socket.
pub struct Core {
    pub rules: SyncRules,
    pub queue: CoalescingQueue,
    pub writer: Writer,
    pub progress: Progress,
    pub metrics: Metrics,
    /// What systemd and the probes read; set from here only.
    pub status: Status,
    dump: Dump,
    eoiu_seen: bool,
    stats: ParseStats,
    ports: HashMap<PortName, PortGauges>,
    landed: Vec<Landed>,
}

impl Core {
    pub fn new(
        rules: SyncRules,
        queue: CoalescingQueue,
        writer: Writer,
        progress: Progress,
        metrics: Metrics,
    ) -> Self {
        Core {
            rules,
            queue,
            writer,
            progress,
            metrics,
            status: Status::default(),
            dump: Dump::Idle { wanted: true },
            eoiu_seen: false,
            stats: ParseStats::default(),
            ports: HashMap::new(),
            landed: Vec::new(),
        }
    }

    /// Sends what is due as one round, unless nothing is.
    pub fn plan_round(&mut self, now: Instant) -> Option<(Round, RoundFuture)> {
        let round = self.writer.plan(&mut self.queue, now, &mut self.landed);
        if !self.landed.is_empty() {
            self.on_landed(now);
        }
        round
    }

    /// Settles a round's replies; `Some(Exit::DataLost)` when a marker
    /// says Redis lost its data.
    pub async fn settle_round(&mut self, done: Round, reply: RoundReply) -> Option<Exit> {
        let now = Instant::now();
        self.metrics.redis_batches.inc();
        self.metrics
            .redis_latency
            .observe(now.saturating_duration_since(done.sent).as_secs_f64());
        let outcome = self
            .writer
            .settle(done, reply, &mut self.queue, now, &mut self.landed);
        self.on_landed(now);
        if let Some(e) = &outcome.connection_error {
            self.metrics.redis_error("io");
            debug!(error = %e, "Redis round failed");
        }
        if outcome.data_lost {
            warn!(
                "Redis lost its data (restarted empty or flushed): publishing everything again as on a cold start"
            );
            return Some(Exit::DataLost);
        }
        if outcome.reconnected_after_loss {
            self.metrics.redis_reconnects.inc();
            info!(
                "Redis is back and may have lost writes; re-reading STATE_DB and re-dumping every link to rewrite STATE_DB"
            );
            self.writer.check_markers = true;
            if let Err(e) = reseed(self).await {
                warn!(error = %e, "cannot re-read STATE_DB after reconnecting; writing every field");
                self.writer.image.clear();
            }
            self.redump();
        }
        None
    }

    /// Parses one datagram and folds what the rules decide into the queue.
    pub fn on_datagram(&mut self, bytes: &[u8], now: Instant) {
        let before = self.stats;
        let mut stats = self.stats;
        parse_datagram(bytes, &mut stats, |item| self.on_item(item, now));
        self.stats = stats;
        self.metrics.failed(
            "malformed_message",
            self.stats.malformed_messages - before.malformed_messages,
        );
        self.metrics.failed(
            "malformed_attribute",
            self.stats.malformed_attributes - before.malformed_attributes,
        );
        if self.stats.malformed_messages > before.malformed_messages {
            warn!(
                total = self.stats.malformed_messages,
                "skipped a malformed netlink message"
            );
        }
    }

    fn on_item(&mut self, item: NetlinkItem<'_>, now: Instant) {
        match item {
            NetlinkItem::Link(event) => {
                self.metrics.link_events_received.inc();
                match self.rules.on_event(&event) {
                    Decision::Ignore(reason) => {
                        self.metrics.ignored(reason.as_str());
                        debug!(link = %String::from_utf8_lossy(event.name), ifindex = event.ifindex, reason = reason.as_str(), "link message ignored");
                    }
                    Decision::Set {
                        port,
                        state,
                        recreated,
                    } => {
                        self.metrics.link_events_processed.inc();
                        debug!(link = %port, ifindex = event.ifindex, admin_up = state.admin_up, oper_up = state.oper_up, mtu = state.mtu, recreated, "port link message");
                        self.count_flap(&port, state.oper_up);
                        let folded = self.queue.push(
                            Key::StatePort(port),
                            Op::port_set(state, recreated),
                            now,
                        );
                        if folded {
                            self.metrics.queue_coalesced.inc();
                        }
                    }
                    Decision::Delete { port } => {
                        self.metrics.link_events_processed.inc();
                        self.delete_row(port, now);
                    }
                }
            }
            NetlinkItem::Done { seq, interrupted } => self.on_dump_done(seq, interrupted, now),
            NetlinkItem::Error { seq, code } => {
                if matches!(self.dump, Dump::Running { seq: s, .. } if s == seq) && code != 0 {
                    warn!(code, "the kernel refused the link dump; asking again");
                    self.dump = Dump::Idle { wanted: true };
                }
            }
        }
    }

    fn delete_row(&mut self, port: PortName, now: Instant) {
        // The netdev is gone; if the port comes back, ask again whether it
        // is configured (dynamic port breakout removes APPL_DB entries too).
        self.writer.configured.remove(&port);
        if let Some(gauges) = self.ports.get_mut(&port) {
            gauges.last_oper = None;
        }
        if self
            .queue
            .push(Key::StatePort(port), Op::port_delete(), now)
        {
            self.metrics.queue_coalesced.inc();
        }
    }

    fn count_flap(&mut self, port: &PortName, oper_up: bool) {
        let metrics = &self.metrics;
        let gauges = self.ports.entry(port.clone()).or_insert_with(|| {
            let labels = PortLabels {
                port: port.to_string(),
            };
            PortGauges {
                flaps: metrics.port_flaps.get_or_create(&labels).clone(),
                labels,
                last_oper: None,
                state: None,
            }
        });
        if gauges.last_oper.is_some_and(|was| was != oper_up) {
            gauges.flaps.inc();
        }
        gauges.last_oper = Some(oper_up);
    }

    fn on_dump_done(&mut self, seq: u32, interrupted: bool, now: Instant) {
        let Dump::Running {
            seq: running,
            again,
        } = self.dump
        else {
            return;
        };
        if running != seq {
            return;
        }
        if interrupted {
            // The link list changed under the kernel's walk: it may have
            // skipped a link. Conclude nothing, walk again.
            info!("link dump was interrupted by a change; dumping again");
            self.dump = Dump::Idle { wanted: true };
            return;
        }
        for port in self.rules.dump_finished() {
            info!(link = %port, "port vanished while netlink messages were lost; deleting its STATE_DB row");
            self.delete_row(port, now);
        }
        self.dump = Dump::Idle { wanted: again };
        if !self.eoiu_seen {
            self.eoiu_seen = true;
            self.progress
                .on_eoiu(&mut self.queue, self.rules.live_count());
        }
    }

    /// Asks for a fresh dump, or for another one after the running dump.
    pub fn redump(&mut self) {
        self.metrics.netlink_resyncs.inc();
        self.dump = match self.dump {
            Dump::Running { seq, .. } => Dump::Running { seq, again: true },
            Dump::Idle { .. } => Dump::Idle { wanted: true },
        };
    }

    fn start_dump_if_wanted(&mut self, socket: &mut LinkSocket) {
        if self.dump != (Dump::Idle { wanted: true }) {
            return;
        }
        match socket.request_dump() {
            Ok(seq) => {
                self.rules.dump_started();
                self.dump = Dump::Running { seq, again: false };
                debug!(seq, "link dump requested");
            }
            // The loop asks again on its next turn, at least once a second.
            Err(e) => error!(error = %e, "cannot request a link dump; will retry"),
        }
    }

    /// Metrics, logs and start-up progress for what a round settled.
    fn on_landed(&mut self, now: Instant) {
        for landed in std::mem::take(&mut self.landed) {
            self.progress.on_landed(&landed);
            match &landed {
                Landed::Row {
                    port,
                    since,
                    fields,
                    oper_up,
                    admin_up,
                } => {
                    self.metrics
                        .event_latency
                        .observe(now.saturating_duration_since(*since).as_secs_f64());
                    if let Some(g) = self.ports.get_mut(port) {
                        let m = &self.metrics;
                        let (oper, admin) = g.state.get_or_insert_with(|| {
                            (
                                m.port_oper_status.get_or_create(&g.labels).clone(),
                                m.port_admin_status.get_or_create(&g.labels).clone(),
                            )
                        });
                        oper.set(i64::from(*oper_up));
                        admin.set(i64::from(*admin_up));
                    }
                    if *fields == 0 {
                        self.metrics.warm.state_rows_unchanged.inc();
                    } else {
                        self.metrics.warm.state_rows_changed.inc();
                        self.metrics.redis_keys_written.inc();
                        info!(port = %port, admin_status = updown(*admin_up), netdev_oper_status = updown(*oper_up), fields_changed = fields, "published port state to STATE_DB");
                    }
                }
                Landed::RowDeleted { port, existed } => {
                    if let Some(g) = self.ports.get_mut(port) {
                        self.metrics.port_oper_status.remove(&g.labels);
                        self.metrics.port_admin_status.remove(&g.labels);
                        g.state = None;
                    }
                    self.metrics.redis_keys_written.inc();
                    if *existed {
                        self.metrics.warm.state_rows_deleted.inc();
                        info!(port = %port, "deleted STATE_DB PORT_TABLE row");
                    }
                }
                Landed::Appl(key) => {
                    if key.as_slice() == b"PortConfigDone" {
                        self.writer.markers.appl = Some(self.writer.appl_marker_keys());
                    }
                    self.metrics.redis_keys_written.inc();
                    debug!(key = %String::from_utf8_lossy(key), "APPL_DB PORT_TABLE entry produced");
                }
                Landed::StateHash(key) => debug!(key, "STATE_DB entry written"),
                Landed::NotConfigured(port) => {
                    self.metrics.state_writes_skipped_unconfigured.inc();
                    debug!(port = %port, "not in APPL_DB PORT_TABLE yet; its STATE_DB row waits");
                }
                Landed::Refused {
                    key,
                    failures,
                    error,
                } => {
                    self.metrics.redis_error("key_refused");
                    let retry_ms = crate::queue::refusal_delay(*failures).as_millis() as u64;
                    warn!(key = %describe(key), error = %error, failures, retry_in_ms = retry_ms, "Redis refused a write; this key is retried on its own schedule, the others go on");
                }
            }
        }
        self.metrics
            .redis_keys_failing
            .set(self.queue.failing().count() as i64);
        self.progress.tick(&mut self.queue, now);
        self.publish_phase();
    }

    /// The start-up's phase, from what landed.
    fn publish_phase(&self) {
        let p = &self.progress;
        let configured = if p.is_warm() {
            p.reconciled
        } else {
            p.config_done
        };
        if configured {
            self.status.set_phase(if p.init_done {
                crate::status::Phase::Initialized
            } else {
                crate::status::Phase::Configured
            });
        }
    }
}

fn updown(up: bool) -> &'static str {
    if up { "up" } else { "down" }
}

/// A queue key as an operator reads it in the log.
fn describe(key: &Key) -> String {
    match key {
        Key::StatePort(port) => format!("STATE_DB PORT_TABLE|{port}"),
        Key::ApplPort(k) => format!("APPL_DB PORT_TABLE:{}", String::from_utf8_lossy(k)),
        Key::StateHash(k) => format!("STATE_DB {k}"),
    }
}

/// During a storm the kernel hands link messages over one by one, tens of
/// microseconds apart, and a wake-up per message (a context switch, an
/// epoll_wait, a receive) costs more than the message's work. When the
/// socket became readable again less than [`STORM_GAP`](Self::STORM_GAP)
/// (longer than the linger, so a storm stays one) after the previous
/// wake-up, the loop plans its round and puts the thread to sleep for
/// [`LINGER`](Self::LINGER): a plain sleep, not a timer in the event loop,
/// because the event loop's epoll (edge-triggered) would be woken by every
/// datagram and by Redis' reply, which is the cost the linger is there to
/// save. After it, the round goes out (a round's future sends when first
/// polled; polling it and yielding before the sleep measured worse: more
/// preemptions) and the next turns take its reply and what gathered.
/// A lone change after a quiet spell is read at once: the linger never adds
/// latency outside a storm. Nothing else runs on this thread (the endpoint
/// and the LOGGER follower have their own), so the sleep delays nobody.
/// 3 ms: at a storm's ~20,000 messages a second it gathers ~60 per wake-up,
/// which makes a wake-up's cost (~20 µs on the benchmark's VM) small per
/// message, and a change inside a storm lands at most that much later;
/// 1 ms cost a quarter more CPU per message, 5 ms measured no better
/// (docs/performance.md).
#[derive(Debug, Default)]
struct StormLinger {
    last_wake: Option<Instant>,
    /// Do not read the socket before this.
    hold_until: Option<Instant>,
}

impl StormLinger {
    const STORM_GAP: Duration = Duration::from_millis(4);
    const LINGER: Duration = Duration::from_millis(3);

    fn woke(&mut self, now: Instant) {
        let storm = self
            .last_wake
            .is_some_and(|last| now.saturating_duration_since(last) < Self::STORM_GAP);
        self.last_wake = Some(now);
        self.hold_until = storm.then(|| now + Self::LINGER);
    }
}

/// Runs the loop until shutdown (then flushes, bounded by
/// `shutdown_timeout`) or until Redis is found to have lost its data.
pub async fn run(
    socket: &mut AsyncFd<LinkSocket>,
    core: &mut Core,
    status: &Status,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
    shutdown_timeout: Duration,
) -> Exit {
    let mut round: Option<(Round, RoundFuture)> = None;
    let mut next_tick = Instant::now();
    let mut stopping: Option<Instant> = None;
    let mut linger = StormLinger::default();
    loop {
        let now = Instant::now();
        status.beat();
        if now >= next_tick {
            next_tick = now + IDLE_BEAT;
            // Once a second: is the data still there (see Writer::markers)?
            core.writer.check_markers = true;
            core.metrics.queue_depth.set(core.queue.len() as i64);
            core.status.set_redis(if core.writer.connected() {
                Ok(())
            } else {
                Err("the data path has no working Redis connection; retrying".into())
            });
            core.progress.tick(&mut core.queue, now);
        }
        core.start_dump_if_wanted(socket.get_mut());
        if round.is_none() {
            round = core.plan_round(now);
        }
        if let Some(deadline) = stopping
            && round.is_none()
            && (core.queue.settled() || now >= deadline)
        {
            if core.queue.settled() {
                info!("all pending writes reached Redis; bye");
            } else {
                warn!(
                    pending = core.queue.len(),
                    "Redis did not take every pending write in time; the next start re-syncs them"
                );
            }
            return Exit::Shutdown;
        }
        // Wake for the next timed thing only: while a round is in flight its
        // reply wakes the loop, and a time already past would spin it.
        let timers = [
            round.is_none().then(|| core.queue.next_due()).flatten(),
            round.is_none().then(|| core.writer.retry_at()).flatten(),
            core.progress.deadline(),
            stopping,
        ];
        let wake = timers
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .fold(next_tick, Instant::min);
        if let Some(until) = linger.hold_until.take()
            && until > now
        {
            std::thread::sleep(until - now);
            continue;
        }
        let reading = stopping.is_none() && !core.queue.is_full();
        tokio::select! {
            biased;
            reply = async { round.as_mut().expect("guarded").1.as_mut().await }, if round.is_some() => {
                let (done, _) = round.take().expect("guarded");
                if core.settle_round(done, reply).await == Some(Exit::DataLost) {
                    return Exit::DataLost;
                }
            }
            guard = socket.readable_mut(), if reading => {
                let Ok(mut guard) = guard else { continue };
                let received = Instant::now();
                linger.woke(received);
                // Drain everything the socket holds, then write once.
                loop {
                    match guard.get_inner_mut().recv() {
                        Ok(RecvOutcome::Datagrams(datagrams)) => {
                            core.status.set_netlink(Ok(()));
                            for bytes in datagrams {
                                core.on_datagram(bytes, received);
                            }
                            if core.queue.is_full() {
                                break;
                            }
                        }
                        Ok(RecvOutcome::Overrun) => {
                            core.metrics.netlink_overruns.inc();
                            warn!("netlink receive buffer overran: link messages were lost; re-dumping every link to repair STATE_DB");
                            core.redump();
                        }
                        Ok(RecvOutcome::Idle) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            core.status.set_netlink(Err(format!("netlink receive failed: {e}")));
                            error!(error = %e, "netlink receive failed; retrying");
                            guard.clear_ready();
                            break;
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
            () = &mut *shutdown, if stopping.is_none() => {
                info!(pending = core.queue.len(), "shutting down; flushing pending writes");
                stopping = Some(Instant::now() + shutdown_timeout);
            }
        }
    }
}

/// Re-reads our fields of every known row after Redis came back: it may
/// have restarted from an older dump.
async fn reseed(core: &mut Core) -> anyhow::Result<()> {
    let ports = core.writer.image.ports();
    let rows = core.writer.read_rows(&ports).await?;
    for (port, row) in ports.into_iter().zip(rows) {
        core.writer.image.seed(port, row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_wake_up_close_behind_the_previous_one_lingers() {
        let mut linger = StormLinger::default();
        let t0 = Instant::now();
        linger.woke(t0);
        assert_eq!(linger.hold_until, None, "a first change is read at once");
        let apart = StormLinger::STORM_GAP + Duration::from_millis(1);
        linger.woke(t0 + apart);
        assert_eq!(
            linger.hold_until, None,
            "changes further apart are no storm"
        );
        let t1 = t0 + apart + Duration::from_micros(50);
        linger.woke(t1);
        assert_eq!(linger.hold_until, Some(t1 + StormLinger::LINGER));
    }
}
