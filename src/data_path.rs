//! The data path: one thread, one loop. Each wake-up drains every datagram
//! the netlink socket holds, applies the rules to the port records, and,
//! when no round is in flight, writes every dirty port as one pipeline per
//! database. While a round is in flight the loop goes on reading, so during
//! a storm the next round carries everything that arrived meanwhile; a lone
//! change goes out at once. Between rounds it asks APPL_DB about ports
//! whose configuration is unknown, compares rows with Redis after a
//! re-dump (or at a warm restart's EOIU), and once a second checks that
//! what it gave Redis is still there.

use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tracing::{debug, error, info, warn};

use crate::appl_events::ApplEvents;
use crate::metrics::Metrics;
use crate::netlink::{LinkSocket, NetlinkItem, ParseStats, RecvOutcome, parse_datagram};
use crate::port_name::PortName;
use crate::ports::Ports;
use crate::status::Status;
use crate::sync::{Decision, SyncRules};
use crate::systemd::IDLE_BEAT;
use crate::warm_reconcile::{Output, Progress};
use crate::writer::{Landed, Round, RoundFuture, RoundReply, Writer};

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT, after the flush.
    Shutdown,
    /// APPL_DB lost what the daemon gave it: the start-up must run again.
    DataLost,
}

/// Where the dump state machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dump {
    /// No dump running; `wanted` asks for one on the next turn.
    Idle { wanted: bool },
    /// A dump with this sequence number is running; `again` asks for another
    /// one when it ends, because messages were lost during it.
    Running { seq: u32, again: bool },
}

/// Everything but the socket, so a datagram borrowed from the socket's
/// buffer can be handled while the loop holds the socket.
pub struct Core {
    rules: SyncRules,
    ports: Ports,
    writer: Writer,
    progress: Progress,
    events: ApplEvents,
    /// The CONFIG_DB ports, whose APPL_DB entries the check looks for.
    config_ports: Vec<PortName>,
    metrics: Metrics,
    status: Status,
    dump: Dump,
    eoiu_seen: bool,
    /// Compare every configured row with Redis before the next round.
    verify: bool,
    /// Check once a second that our keys are still in Redis.
    check_due: bool,
    /// After a failed read between rounds, none before this.
    io_retry_at: Option<Instant>,
    /// The last receive failed: the next good one says netlink is healthy.
    netlink_failed: bool,
    stats: ParseStats,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rules: SyncRules,
        ports: Ports,
        writer: Writer,
        progress: Progress,
        events: ApplEvents,
        config_ports: Vec<PortName>,
        metrics: Metrics,
        status: Status,
    ) -> Self {
        Core {
            rules,
            ports,
            writer,
            progress,
            events,
            config_ports,
            metrics,
            status,
            dump: Dump::Idle { wanted: true },
            eoiu_seen: false,
            verify: false,
            check_due: false,
            io_retry_at: None,
            netlink_failed: false,
            stats: ParseStats::default(),
        }
    }

    /// Sends what is due as one round, unless nothing is.
    pub fn plan_round(&mut self, now: Instant) -> Option<(Round, RoundFuture)> {
        self.ports.set_held(self.progress.holds_writes());
        self.progress.tick(&self.ports);
        self.writer
            .plan(&mut self.ports, self.progress.outbox_mut(), now)
    }

    /// Settles a round's replies.
    pub fn settle_round(&mut self, round: Round, reply: RoundReply) {
        let now = Instant::now();
        self.metrics.redis_batches.inc();
        self.metrics
            .redis_latency
            .observe(now.saturating_duration_since(round.sent).as_secs_f64());
        let mut landed = Vec::new();
        self.writer.settle(
            round,
            reply,
            &mut self.ports,
            self.progress.outbox_mut(),
            now,
            &mut landed,
        );
        for l in landed {
            self.on_landed(l, now);
        }
        self.after_redis();
        self.metrics
            .redis_keys_failing
            .set((self.ports.failing() + self.progress.outbox().failing()) as i64);
        self.progress.tick(&self.ports);
    }

    /// What a round or a read says of Redis: its health, and after a
    /// reconnect the repair (a re-dump, a row compare, a check for lost data).
    fn after_redis(&mut self) {
        match self.writer.error() {
            Some(e) => {
                if self
                    .status
                    .snapshot()
                    .redis
                    .as_ref()
                    .err()
                    .map(String::as_str)
                    != Some(e)
                {
                    self.metrics.redis_error("io");
                }
                self.status.set_redis(Err(e.to_string()));
            }
            None if self.writer.connected() => self.status.set_redis(Ok(())),
            None => {}
        }
        if self.writer.take_reconnected() {
            self.metrics.redis_reconnects.inc();
            info!(
                "Redis is back and may have lost writes; re-dumping every link to rewrite STATE_DB (every row is compared)"
            );
            self.redump();
            self.check_due = true;
        }
    }

    /// What goes between rounds: connections that are down are opened
    /// again; unless stopping, the reads (raced against SIGTERM; a failed
    /// one is tried again after a second). `Some(DataLost)` when APPL_DB
    /// lost what the daemon gave it.
    async fn between_rounds(
        &mut self,
        socket: &mut LinkSocket,
        now: Instant,
        stopping: Option<Instant>,
    ) -> Option<Exit> {
        if let Some(deadline) = stopping {
            let _ = tokio::time::timeout_at(deadline.into(), self.writer.reconnect(now)).await;
            self.after_redis();
            return None;
        }
        self.start_dump_if_wanted(socket);
        if !self.reads_due(now) {
            return None;
        }
        let status = self.status.clone();
        let done = tokio::select! {
            r = self.reads(now) => r,
            () = status.stopping() => return None,
        };
        self.after_redis();
        done.unwrap_or_else(|e| {
            debug!(error = %e, "a read between rounds failed; trying again in a second");
            self.io_retry_at = Some(now + IDLE_BEAT);
            None
        })
    }

    /// Whether [`reads`](Self::reads) has anything to do: the common turn
    /// (a link change, nothing else) skips it without a wait or an await.
    fn reads_due(&self, now: Instant) -> bool {
        let connecting =
            !self.writer.connected() && self.writer.retry_at().is_none_or(|t| t <= now);
        let subscribing = self.events.due(now);
        let work = self.ports.has_asks()
            || self.verify
            || self.check_due
            || self.progress.reconcile_due(self.eoiu_seen, now).is_some();
        connecting || subscribing || (work && self.io_retry_at.is_none_or(|t| t <= now))
    }

    async fn reads(&mut self, now: Instant) -> redis::RedisResult<Option<Exit>> {
        self.writer.reconnect(now).await;
        if self.events.due(now) && self.writer.connected() && self.events.subscribe(now).await {
            self.ports.reconsider_all();
        }
        if self.io_retry_at.is_some_and(|t| t > now) || !self.writer.connected() {
            return Ok(None);
        }
        let asks = self.ports.take_asks();
        if !asks.is_empty() {
            match self.writer.ask_configured(&asks, now).await {
                Ok(answers) => {
                    for (port, configured) in asks.iter().zip(answers) {
                        self.ports.set_configured(port, configured);
                    }
                }
                Err(e) => {
                    self.ports.ask_again(asks);
                    return Err(e);
                }
            }
        }
        if let Some(by_timer) = self.progress.reconcile_due(self.eoiu_seen, now) {
            self.compare_rows(true).await?;
            self.progress.restored(by_timer);
        } else if self.verify && !self.progress.holds_writes() {
            self.compare_rows(false).await?;
        }
        if self.check_due {
            let missing = self
                .writer
                .check(&self.config_ports, self.progress.expects(), now)
                .await?;
            self.check_due = false;
            if !self.progress.repair(missing) {
                warn!(
                    "Redis lost its data (restarted empty or flushed): publishing everything again as on a cold start"
                );
                return Ok(Some(Exit::DataLost));
            }
            if missing.warm_row {
                self.verify = true;
            }
        }
        Ok(None)
    }

    /// Reads every configured row and marks those that differ from the
    /// kernel's view dirty: the repair after lost messages or another
    /// writer's damage. `reconcile`: the warm restart's, which also takes
    /// matching rows as written.
    async fn compare_rows(&mut self, reconcile: bool) -> redis::RedisResult<()> {
        let rows = self.ports.live_configured();
        let matches = self.writer.rows_match(&rows, Instant::now()).await?;
        self.verify = false;
        for ((port, _), same) in rows.iter().zip(matches) {
            if same {
                self.metrics.warm.state_rows_unchanged.inc();
            }
            self.ports.verified(port, same, reconcile);
        }
        Ok(())
    }

    /// Parses one datagram and applies what the rules decide to the records.
    pub fn on_datagram(&mut self, bytes: &[u8], now: Instant) {
        let before = self.stats;
        let mut stats = self.stats;
        parse_datagram(bytes, &mut stats, |item| self.on_item(item, now));
        self.stats = stats;
        let malformed = self.stats.malformed_messages - before.malformed_messages;
        self.metrics.failed("malformed_message", malformed);
        self.metrics.failed(
            "malformed_attribute",
            self.stats.malformed_attributes - before.malformed_attributes,
        );
        if malformed > 0 {
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
                        ifindex,
                        state,
                    } => {
                        if !self.ports.on_link(port, ifindex, state, now) {
                            self.metrics.ignored("unchanged");
                            return;
                        }
                        self.metrics.link_events_processed.inc();
                        debug!(link = %String::from_utf8_lossy(port), ifindex, admin_up = state.admin_up, oper_up = state.oper_up, mtu = state.mtu, "port link message");
                    }
                    Decision::Delete { port } => {
                        self.metrics.link_events_processed.inc();
                        self.ports.on_del(port, now);
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
        for port in self.ports.vanished() {
            info!(link = %port, "port vanished while netlink messages were lost; deleting its STATE_DB row");
            self.ports.on_del(&port, now);
        }
        self.dump = Dump::Idle { wanted: again };
        if self.eoiu_seen {
            // A resync: rows may be wrong in ways no message will show.
            self.verify = true;
        } else {
            self.eoiu_seen = true;
            self.progress
                .on_eoiu(self.ports.alive(), self.ports.awaiting_init());
        }
    }

    /// Asks for a fresh dump (and a row compare after it), or for another
    /// one after the running dump.
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
                self.ports.dump_started();
                self.dump = Dump::Running { seq, again: false };
                debug!(seq, "link dump requested");
            }
            // The loop asks again on its next turn, at least once a second.
            Err(e) => error!(error = %e, "cannot request a link dump; will retry"),
        }
    }

    /// Metrics, logs and start-up progress for one thing a round settled.
    fn on_landed(&mut self, landed: Landed, now: Instant) {
        match landed {
            Landed::Row { port, since, state } => {
                self.metrics
                    .event_latency
                    .observe(now.saturating_duration_since(since).as_secs_f64());
                self.metrics.warm.state_rows_changed.inc();
                self.metrics.redis_keys_written.inc();
                info!(port = %port, admin_status = updown(state.admin_up), netdev_oper_status = updown(state.oper_up), mtu = state.mtu, "published port state to STATE_DB");
            }
            Landed::Deleted { port, existed } => {
                self.ports.forget_if_gone(&port);
                self.metrics.redis_keys_written.inc();
                if existed {
                    self.metrics.warm.state_rows_deleted.inc();
                    info!(port = %port, "deleted STATE_DB PORT_TABLE row");
                }
            }
            Landed::Output(output) => {
                self.metrics.redis_keys_written.inc();
                if let Output::Produce { key, .. } = &output {
                    debug!(key = %String::from_utf8_lossy(key), "APPL_DB PORT_TABLE entry produced");
                }
                self.progress.on_landed(&output);
            }
            Landed::RowRefused {
                port,
                failures,
                error,
            } => {
                self.metrics.redis_error("key_refused");
                let retry_ms = crate::ports::refusal_delay(failures).as_millis() as u64;
                let key = format!("STATE_DB PORT_TABLE|{port}");
                warn!(
                    key,
                    error,
                    failures,
                    retry_in_ms = retry_ms,
                    "Redis refused a write; this port is retried on its own schedule, the others go on"
                );
                if self.ports.give_up_waiting(&port) {
                    warn!(port = %port, "PortInitDone will not wait for this port: Redis refuses its STATE_DB row");
                }
            }
            Landed::OutputRefused { output, error } => {
                self.metrics.redis_error("key_refused");
                let key = match &output {
                    Output::Produce { key, .. } => {
                        format!("APPL_DB PORT_TABLE:{}", String::from_utf8_lossy(key))
                    }
                    Output::Warm(_) => "STATE_DB WARM_RESTART_TABLE|portsyncd".into(),
                };
                warn!(
                    key,
                    error, "Redis refused a write; retried after a backoff, the others go on"
                );
                self.progress.on_refused(&output);
            }
        }
    }

    /// Reads everything the socket holds (then one round writes it all).
    /// True when the socket is empty: its readiness is used up.
    fn drain(&mut self, socket: &mut LinkSocket, received: Instant) -> bool {
        loop {
            match socket.recv() {
                Ok(RecvOutcome::Datagrams(datagrams)) => {
                    if std::mem::take(&mut self.netlink_failed) {
                        self.status.set_netlink(Ok(()));
                    }
                    for bytes in datagrams {
                        self.on_datagram(bytes, received);
                    }
                    if self.ports.is_full() {
                        return false;
                    }
                }
                Ok(RecvOutcome::Overrun) => {
                    self.metrics.netlink_overruns.inc();
                    warn!(
                        "netlink receive buffer overran: link messages were lost; re-dumping every link to repair STATE_DB"
                    );
                    self.redump();
                }
                Ok(RecvOutcome::Idle) => return true,
                Err(e) => {
                    // A failed receive may have lost a message: repair as
                    // after an overrun.
                    error!(error = %e, "netlink receive failed; re-dumping every link to repair STATE_DB");
                    let why = format!("netlink receive failed: {e}; re-dumping");
                    self.status.set_netlink(Err(why));
                    self.netlink_failed = true;
                    self.redump();
                    return true;
                }
            }
        }
    }

    /// When the loop must wake at the latest: the next timed thing. While a
    /// round is in flight its reply wakes the loop, and a time already past
    /// would spin it.
    fn next_wake(
        &self,
        idle: bool,
        stopping: Option<Instant>,
        tick: Instant,
        now: Instant,
    ) -> Instant {
        let timers = [
            idle.then(|| self.ports.next_retry()).flatten(),
            idle.then(|| self.progress.outbox().next_retry()).flatten(),
            idle.then(|| self.writer.retry_at()).flatten(),
            self.events.retry_at(),
            self.io_retry_at,
            self.progress.deadline(),
            stopping,
        ];
        timers
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .fold(tick, Instant::min)
    }

    /// Nothing that can be written now is pending.
    pub fn settled(&self) -> bool {
        self.ports.settled() && self.progress.outbox().idle()
    }

    /// What the loop's once-a-second turn reports.
    fn report(&mut self) {
        self.check_due = true;
        if self.events.off() {
            self.ports.reconsider_all();
        }
        self.metrics.queue_depth.set(self.ports.pending() as i64);
    }
}

fn updown(up: bool) -> &'static str {
    if up { "up" } else { "down" }
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
/// save. A lone change after a quiet spell is read at once: the linger never
/// adds latency outside a storm. Nothing else runs on this thread (the
/// endpoint and the LOGGER follower have their own), so the sleep delays
/// nobody. 3 ms: at a storm's ~20,000 messages a second it gathers ~60 per
/// wake-up; 1 ms cost a quarter more CPU per message, 5 ms measured no
/// better (docs/performance.md).
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

/// Runs the loop until shutdown (then flushes; `shutdown_timeout` bounds
/// the whole flush, a round in flight included) or until APPL_DB is found
/// to have lost its data.
pub async fn run(
    socket: &mut AsyncFd<LinkSocket>,
    core: &mut Core,
    shutdown_timeout: Duration,
) -> Exit {
    let mut round: Option<(Round, RoundFuture)> = None;
    let mut next_tick = Instant::now();
    let mut stopping: Option<Instant> = None;
    let mut linger = StormLinger::default();
    let status = core.status.clone();
    let mut sigterm = std::pin::pin!(status.stopping());
    loop {
        let now = Instant::now();
        status.beat();
        if now >= next_tick {
            next_tick = now + IDLE_BEAT;
            core.report();
        }
        if round.is_none()
            && let Some(exit) = core.between_rounds(socket.get_mut(), now, stopping).await
        {
            return exit;
        }
        if round.is_none() {
            round = core.plan_round(Instant::now());
        }
        if let Some(deadline) = stopping {
            if round.is_none() && core.settled() {
                info!("all pending writes reached Redis; bye");
                return Exit::Shutdown;
            }
            if now >= deadline {
                warn!(
                    pending = core.ports.pending(),
                    "Redis did not take every pending write in time; the next start re-syncs them"
                );
                return Exit::Shutdown;
            }
        }
        let wake = core.next_wake(round.is_none(), stopping, next_tick, now);
        if let Some(until) = linger.hold_until.take()
            && until > now
        {
            std::thread::sleep(until - now);
            continue;
        }
        let reading = stopping.is_none() && !core.ports.is_full();
        tokio::select! {
            biased;
            reply = async { round.as_mut().expect("guarded").1.as_mut().await }, if round.is_some() => {
                let (done, _) = round.take().expect("guarded");
                core.settle_round(done, reply);
            }
            guard = socket.readable_mut(), if reading => {
                let Ok(mut guard) = guard else { continue };
                let received = Instant::now();
                linger.woke(received);
                if core.drain(guard.get_inner_mut(), received) {
                    guard.clear_ready();
                }
            }
            name = core.events.next() => match name {
                Some(name) => {
                    debug!(port = %String::from_utf8_lossy(&name), "APPL_DB PORT_TABLE entry changed; asking again");
                    core.ports.reconsider(&PortName::new(&name));
                }
                None => warn!("the APPL_DB keyspace subscription ended; subscribing again"),
            },
            () = tokio::time::sleep_until(wake.into()) => {}
            () = &mut sigterm, if stopping.is_none() => {
                info!(pending = core.ports.pending(), "shutting down; flushing pending writes");
                stopping = Some(Instant::now() + shutdown_timeout);
            }
        }
    }
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
