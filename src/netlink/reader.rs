//! The netlink thread: read, parse, apply the rules, queue the writes.
//!
//! It runs on its own OS thread with a blocking socket, so a busy async
//! runtime never delays reading and the socket buffer drains as fast as the
//! kernel fills it. On an overrun it re-dumps every link: the rules then
//! rewrite every port's latest state and delete the ports that vanished, so
//! nothing lost in the overrun stays wrong.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use super::event::{LinkChange, LinkEvent};
use super::parse::{NetlinkItem, ParseStats, parse_datagram};
use super::socket::{LinkSocket, RecvOutcome, bring_link_down};
use crate::hooks::LoopHooks;
use crate::metrics::{Metrics, PortLabels};
use crate::queue::{CoalescingQueue, Target, Write};
use crate::sync::{Decision, SyncRules};

/// What the reader tells the start-up sequence.
pub struct ReaderSignals {
    /// End of the initial update: the start-up dump finished. Carries the
    /// ports seen alive, for the warm-restart reconcile.
    pub eoiu: oneshot::Receiver<HashSet<String>>,
    /// Turns true once every CONFIG_DB port has been seen as a netdev.
    pub all_ports_seen: watch::Receiver<bool>,
}

/// Where the dump state machine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dump {
    Idle,
    /// A dump with this sequence number is running; `again` asks for another
    /// one when it ends, because an overrun happened during it.
    Running {
        seq: u32,
        again: bool,
    },
}

pub struct LinkReader {
    socket: LinkSocket,
    rules: SyncRules,
    queue: Arc<CoalescingQueue>,
    metrics: Metrics,
    dump: Dump,
    /// A dump request could not be sent; the loop asks again on its next
    /// turn (at least once a second), whether it was the start-up dump or a
    /// resync.
    dump_request_failed: bool,
    eoiu: Option<oneshot::Sender<HashSet<String>>>,
    all_ports_seen: watch::Sender<bool>,
    /// Last oper status per port, to count flaps.
    last_oper: HashMap<String, bool>,
    stats: ParseStats,
    /// Heartbeat and re-dump request (see [`crate::hooks`]).
    hooks: LoopHooks,
}

impl LinkReader {
    pub fn new(
        socket: LinkSocket,
        rules: SyncRules,
        queue: Arc<CoalescingQueue>,
        metrics: Metrics,
    ) -> (Self, ReaderSignals) {
        let (eoiu_tx, eoiu_rx) = oneshot::channel();
        let (seen_tx, seen_rx) = watch::channel(rules.all_ports_seen());
        metrics
            .netlink_receive_buffer_bytes
            .set(i64::try_from(socket.granted_rcvbuf).unwrap_or(i64::MAX));
        let reader = LinkReader {
            socket,
            rules,
            queue,
            metrics,
            dump: Dump::Idle,
            dump_request_failed: false,
            eoiu: Some(eoiu_tx),
            all_ports_seen: seen_tx,
            last_oper: HashMap::new(),
            stats: ParseStats::default(),
            hooks: LoopHooks::default(),
        };
        (
            reader,
            ReaderSignals {
                eoiu: eoiu_rx,
                all_ports_seen: seen_rx,
            },
        )
    }

    /// Connects the loop to the watchdog and the re-dump request.
    pub fn with_hooks(mut self, hooks: LoopHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Starts the thread. It lives as long as the process.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("netlink".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        self.start_dump();
        self.metrics.netlink_up.set(1);
        let mut items = Vec::new();
        loop {
            self.hooks.heartbeat.beat();
            let received = Instant::now();
            match self.socket.recv() {
                Ok(RecvOutcome::Datagram(bytes)) => {
                    let before = self.stats;
                    parse_datagram(bytes, &mut self.stats, |item| items.push(item));
                    self.count_parse_failures(before);
                    for item in items.drain(..) {
                        self.handle(item, received);
                    }
                    if self.rules.all_ports_seen() && !*self.all_ports_seen.borrow() {
                        let _ = self.all_ports_seen.send(true);
                    }
                }
                Ok(RecvOutcome::Overrun) => self.on_overrun(),
                Ok(RecvOutcome::Idle) => {}
                Err(e) => {
                    self.metrics.netlink_up.set(0);
                    error!(error = %e, "netlink receive failed; retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                    self.metrics.netlink_up.set(1);
                }
            }
            if std::mem::take(&mut self.dump_request_failed) && self.dump == Dump::Idle {
                self.start_dump();
            }
            if self.hooks.resync.take() {
                info!(
                    "Redis is back and may have lost writes; re-dumping every link to rewrite STATE_DB"
                );
                self.redump();
            }
            self.metrics.queue_depth.set(self.queue.len() as i64);
        }
    }

    fn count_parse_failures(&self, before: ParseStats) {
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

    fn start_dump(&mut self) {
        match self.socket.request_dump() {
            Ok(seq) => {
                self.rules.dump_started();
                self.dump = Dump::Running { seq, again: false };
                debug!(seq, "link dump requested");
            }
            Err(e) => {
                // The loop asks again on its next turn; say so loudly.
                error!(error = %e, "cannot request a link dump; will retry");
                std::thread::sleep(Duration::from_millis(100));
                self.dump = Dump::Idle;
                self.dump_request_failed = true;
            }
        }
    }

    fn on_overrun(&mut self) {
        self.metrics.netlink_overruns.inc();
        warn!(
            "netlink receive buffer overran: link messages were lost; re-dumping every link to repair STATE_DB"
        );
        self.redump();
    }

    /// Asks for a fresh dump, or for another one after the running dump.
    fn redump(&mut self) {
        match self.dump {
            Dump::Running { seq, .. } => self.dump = Dump::Running { seq, again: true },
            Dump::Idle => {
                self.metrics.netlink_resyncs.inc();
                self.start_dump();
            }
        }
    }

    fn handle(&mut self, item: NetlinkItem, received: Instant) {
        match item {
            NetlinkItem::Link(event) => self.on_link(event, received),
            NetlinkItem::Done { seq, interrupted } => self.on_dump_done(seq, interrupted, received),
            NetlinkItem::Error { seq, code } => {
                if matches!(self.dump, Dump::Running { seq: s, .. } if s == seq) && code != 0 {
                    warn!(code, "the kernel refused the link dump; asking again");
                    self.dump = Dump::Idle;
                    self.metrics.netlink_resyncs.inc();
                    self.start_dump();
                }
            }
        }
    }

    fn on_link(&mut self, event: LinkEvent, received: Instant) {
        self.metrics.link_events_received.inc();
        match self.rules.on_event(&event) {
            Decision::Ignore(reason) => {
                self.metrics.ignored(reason.as_str());
                debug!(link = %event.name, ifindex = event.ifindex, reason = reason.as_str(), "link message ignored");
            }
            Decision::BringDownOld { ifindex, name } => {
                self.metrics.ignored("old_interface");
                match bring_link_down(ifindex) {
                    Ok(()) => {
                        info!(link = %name, ifindex, "old interface brought down; ignored until recreated")
                    }
                    Err(e) => {
                        warn!(link = %name, ifindex, error = %e, "cannot bring old interface down")
                    }
                }
            }
            Decision::Write { port, write } => {
                self.metrics.link_events_processed.inc();
                debug!(
                    link = %port,
                    ifindex = event.ifindex,
                    change = ?event.change,
                    admin_up = event.admin_up,
                    oper_up = event.oper_up,
                    mtu = event.mtu,
                    mac = %event.mac_string(),
                    master = event.master.unwrap_or(0),
                    "port link message"
                );
                self.count_flap(&event);
                if self.queue.push(Target::StatePort(port), write, received) {
                    self.metrics.queue_coalesced.inc();
                }
            }
        }
    }

    fn count_flap(&mut self, event: &LinkEvent) {
        if event.change == LinkChange::Del {
            self.last_oper.remove(&event.name);
            return;
        }
        let before = self.last_oper.insert(event.name.clone(), event.oper_up);
        if before.is_some_and(|was| was != event.oper_up) {
            self.metrics
                .port_flaps
                .get_or_create(&PortLabels {
                    port: event.name.clone(),
                })
                .inc();
        }
    }

    fn on_dump_done(&mut self, seq: u32, interrupted: bool, received: Instant) {
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
            // skipped a link. Finish nothing, walk again.
            info!("link dump was interrupted by a change; dumping again");
            self.metrics.netlink_resyncs.inc();
            self.start_dump();
            return;
        }
        for port in self.rules.dump_finished() {
            info!(link = %port, "port vanished while netlink messages were lost; deleting its STATE_DB row");
            if self
                .queue
                .push(Target::StatePort(port), Write::delete(), received)
            {
                self.metrics.queue_coalesced.inc();
            }
        }
        self.dump = Dump::Idle;
        if let Some(eoiu) = self.eoiu.take() {
            info!(
                ports_alive = self.rules.live_ports().len(),
                ports_awaiting_netdev = self.rules.ports_awaiting_netdev(),
                "end of initial link update (EOIU)"
            );
            let _ = eoiu.send(self.rules.live_ports());
        }
        if again {
            self.metrics.netlink_resyncs.inc();
            self.start_dump();
        }
    }
}
