//! The Redis side of the data path: turns what is due in the queue into one
//! pipeline per database and settles the queue from the replies.
//!
//! STATE_DB gets plain `HSET`s of the fields that changed (from the
//! [`StateImage`]) and `DEL`s, on the STATE_DB connection; APPL_DB gets the
//! producer script and, for a port not yet known to be configured, an
//! `EXISTS PORT_TABLE:<port>`, on the APPL_DB connection. Nothing assumes
//! the two share a server. A reply that refuses one key sets back that key
//! alone; a broken connection keeps every write and reconnects with capped,
//! jittered backoff.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Client, ErrorKind, Pipeline, RedisError, ServerErrorKind, Value};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::port_name::PortName;
use crate::queue::{CoalescingQueue, Key, Op, Taken};
use crate::sonic::connect::connect;
use crate::sonic::db_config::DbLayout;
use crate::sonic::producer::{PORT_TABLE, Producer, table_key};
use crate::state_image::StateImage;
use crate::sync::{STATE_FIELDS, state_values};

/// How often a port that is not configured yet is asked about again.
pub const CONFIGURED_POLL: Duration = Duration::from_millis(200);

/// What landed in Redis, for the start-up progress and the metrics.
#[derive(Debug)]
pub enum Landed {
    /// The port's STATE_DB row holds its state (written now, or already).
    /// `fields` is how many fields were written (0: it already held them).
    Row {
        port: PortName,
        /// When the oldest event folded into the write arrived.
        since: Instant,
        fields: usize,
        oper_up: bool,
        admin_up: bool,
    },
    RowDeleted {
        port: PortName,
        existed: bool,
    },
    /// The port is not configured yet: its row waits, and is asked about
    /// again every [`CONFIGURED_POLL`].
    NotConfigured(PortName),
    Appl(Vec<u8>),
    StateHash(String),
    /// A key Redis refused; it waits out its own backoff.
    Refused {
        key: Key,
        failures: u32,
        error: String,
    },
}

/// One database connection of the data path.
struct DbLink {
    client: Client,
    conn: Option<MultiplexedConnection>,
    what: &'static str,
    backoff: Backoff,
    /// No reconnect attempt before this.
    retry_at: Option<Instant>,
    /// A connection was lost: the next one asks for a re-dump and a re-seed.
    lost: bool,
}

impl DbLink {
    fn new(client: Client, what: &'static str) -> Self {
        DbLink {
            client,
            conn: None,
            what,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            retry_at: None,
            lost: false,
        }
    }
}

/// What one side of a round brings back.
pub struct SideReply {
    conn: Option<MultiplexedConnection>,
    fresh: bool,
    replies: Result<Vec<redis::RedisResult<Value>>, RedisError>,
}

/// Both sides of a round.
pub struct RoundReply {
    state: SideReply,
    appl: SideReply,
}

pub type RoundFuture = Pin<Box<dyn Future<Output = RoundReply> + Send>>;

/// Where one queue entry's commands sit in the round's pipelines.
enum Plan {
    Port {
        taken: Taken,
        port: PortName,
        del: Option<usize>,
        hset: Option<(usize, [Vec<u8>; 4], Vec<usize>)>,
        probe: Option<usize>,
        /// The set that waits for the port's configuration.
        waiting: Option<Op>,
    },
    Appl {
        taken: Taken,
        at: usize,
    },
    StateHash {
        taken: Taken,
        at: usize,
    },
}

/// A round in flight: its plans, and which extra commands lead each side.
pub struct Round {
    plans: Vec<Plan>,
    /// Index of the marker EXISTS in each pipeline, if checked this round.
    state_marker: Option<usize>,
    appl_marker: Option<usize>,
    /// The APPL pipeline starts with SCRIPT LOAD.
    appl_script_load: bool,
    /// When the round was sent, for the round-trip metric.
    pub sent: Instant,
}

/// Keys whose disappearance says Redis lost its data (see
/// [`Writer::check_markers`]).
pub struct Markers {
    pub state: Option<String>,
    pub appl: Option<(Vec<u8>, Vec<u8>)>,
}

pub struct Writer {
    state: DbLink,
    appl: DbLink,
    layout: DbLayout,
    producer: Producer,
    pub image: StateImage,
    /// Ports whose consumed APPL_DB key was seen: asked once, remembered
    /// until the port's netdev is deleted.
    pub configured: HashSet<PortName>,
    /// The APPL_DB script cache must be filled before the next EVALSHA.
    script_needed: bool,
    pub markers: Markers,
    /// Check the markers on the next round.
    pub check_markers: bool,
    /// Most keys in one round.
    pub batch_max: usize,
}

/// What one try of [`Writer::plan`] came to.
enum Planned {
    Round(Round, RoundFuture),
    /// Keys were taken, and every one was settled without a command.
    AllSettled,
    Nothing,
}

/// How a round ended, as far as the caller must act.
#[derive(Debug, Default)]
pub struct RoundOutcome {
    /// A connection was (re)established after a loss: re-seed and re-dump.
    pub reconnected_after_loss: bool,
    /// A marker key is gone: Redis lost its data.
    pub data_lost: bool,
    pub connection_error: Option<String>,
}

impl Writer {
    pub fn new(layout: &DbLayout, state: Client, appl: Client) -> Self {
        Writer {
            state: DbLink::new(state, "STATE_DB"),
            appl: DbLink::new(appl, "APPL_DB"),
            producer: Producer::new(&layout.appl),
            layout: layout.clone(),
            image: StateImage::default(),
            configured: HashSet::new(),
            script_needed: true,
            markers: Markers {
                state: None,
                appl: None,
            },
            check_markers: false,
            batch_max: 128,
        }
    }

    /// Hands over the connections start-up opened.
    pub fn adopt(&mut self, state: MultiplexedConnection, appl: MultiplexedConnection) {
        self.state.conn = Some(state);
        self.appl.conn = Some(appl);
        self.script_needed = true;
    }

    /// The earliest moment a reconnect may be tried, if one waits.
    pub fn retry_at(&self) -> Option<Instant> {
        [self.state.retry_at, self.appl.retry_at]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn connected(&self) -> bool {
        self.state.conn.is_some() && self.appl.conn.is_some()
    }

    /// Our fields of `ports`' STATE_DB rows, read on the STATE_DB connection.
    pub async fn read_rows(
        &mut self,
        ports: &[PortName],
    ) -> redis::RedisResult<Vec<crate::state_image::Row>> {
        let Some(conn) = self.state.conn.as_mut() else {
            return Err(RedisError::from((
                ErrorKind::Io,
                "STATE_DB is not connected",
            )));
        };
        crate::startup::read_state_rows(conn, &self.layout, ports).await
    }

    /// APPL_DB `PORT_TABLE:PortConfigDone` and its staging hash: once one of
    /// them exists, both gone means APPL_DB lost its data.
    pub fn appl_marker_keys(&self) -> (Vec<u8>, Vec<u8>) {
        let consumed = table_key(&self.layout.appl, PORT_TABLE, b"PortConfigDone");
        let mut staged = b"_".to_vec();
        staged.extend_from_slice(&consumed);
        (consumed, staged)
    }

    /// The STATE_DB key of a port's row.
    pub fn state_key(&self, port: &PortName) -> Vec<u8> {
        table_key(&self.layout.state, PORT_TABLE, port.as_bytes())
    }

    fn appl_key(&self, port: &PortName) -> Vec<u8> {
        table_key(&self.layout.appl, PORT_TABLE, port.as_bytes())
    }

    /// Builds the next round from what is due. Entries that need no Redis
    /// command (the row already holds the state) are settled at once and
    /// reported in `landed`. Returns `None` when there is nothing to send.
    pub fn plan(
        &mut self,
        queue: &mut CoalescingQueue,
        now: Instant,
        landed: &mut Vec<Landed>,
    ) -> Option<(Round, RoundFuture)> {
        // A database whose connection waits out its backoff leaves its keys
        // for a later round; the other database's keys go now.
        let state_up = self.state.retry_at.is_none_or(|t| t <= now);
        let appl_up = self.appl.retry_at.is_none_or(|t| t <= now);
        if !state_up && !appl_up {
            return None;
        }
        // Everything taken may be settled at once (the rows already hold
        // it, as after a storm whose downs and ups folded): then the next due
        // keys are taken now. Left for the loop, they would wait for its next
        // timer, up to a second, with nothing to wake it. Each turn takes keys
        // off the queue, so this ends.
        loop {
            match self.plan_once(queue, now, landed, state_up, appl_up) {
                Planned::Round(round, future) => return Some((round, future)),
                Planned::AllSettled => continue,
                Planned::Nothing => return None,
            }
        }
    }

    /// One try of [`plan`](Self::plan): takes up to a round of due keys.
    fn plan_once(
        &mut self,
        queue: &mut CoalescingQueue,
        now: Instant,
        landed: &mut Vec<Landed>,
        state_up: bool,
        appl_up: bool,
    ) -> Planned {
        let mut taken = Vec::new();
        let configured = &self.configured;
        queue.take_due_where(now, self.batch_max, &mut taken, |key, op| match (key, op) {
            (Key::StatePort(port), Op::Port { set, .. }) => {
                state_up && (appl_up || set.is_none() || configured.contains(port))
            }
            (Key::ApplPort(_), _) => appl_up,
            (Key::StateHash(_), _) => state_up,
            _ => true,
        });
        if taken.is_empty() && !self.check_markers {
            return Planned::Nothing;
        }
        let took_any = !taken.is_empty();
        let mut state = redis::pipe();
        let mut appl = redis::pipe();
        let (mut n_state, mut n_appl) = (0usize, 0usize);
        let appl_script_load = self.script_needed;
        if appl_script_load {
            appl.add_command(self.producer.load_command());
            n_appl += 1;
        }
        let mut round = Round {
            plans: Vec::with_capacity(taken.len()),
            state_marker: None,
            appl_marker: None,
            appl_script_load,
            sent: now,
        };
        for taken in taken {
            match (&taken.key, &taken.op) {
                (
                    Key::StatePort(port),
                    Op::Port {
                        delete_first,
                        set,
                        full,
                    },
                ) => {
                    let port = port.clone();
                    let del = delete_first.then(|| {
                        state.cmd("DEL").arg(self.state_key(&port));
                        n_state += 1;
                        n_state - 1
                    });
                    let (mut hset, mut probe, mut waiting) = (None, None, None);
                    if let Some(s) = set {
                        if self.configured.contains(&port) {
                            let values = state_values(s);
                            // After a DEL in the same round the row is empty.
                            let fields = if *delete_first {
                                vec![0, 1, 2, 3]
                            } else {
                                self.image.changes(&port, &values, *full)
                            };
                            if !fields.is_empty() {
                                let cmd = state.cmd("HSET").arg(self.state_key(&port));
                                for &i in &fields {
                                    cmd.arg(STATE_FIELDS[i]).arg(&values[i]);
                                }
                                n_state += 1;
                                hset = Some((n_state - 1, values, fields));
                            }
                        } else {
                            appl.cmd("EXISTS").arg(self.appl_key(&port));
                            n_appl += 1;
                            probe = Some(n_appl - 1);
                            waiting = Some(Op::port_set(*s, *full));
                        }
                    }
                    if del.is_none() && hset.is_none() && probe.is_none() {
                        // The row already holds this state.
                        queue.acked(&taken);
                        if let Some(s) = set {
                            landed.push(Landed::Row {
                                port,
                                since: taken.since,
                                fields: 0,
                                oper_up: s.oper_up,
                                admin_up: s.admin_up,
                            });
                        }
                        continue;
                    }
                    round.plans.push(Plan::Port {
                        taken,
                        port,
                        del,
                        hset,
                        probe,
                        waiting,
                    });
                }
                (Key::ApplPort(key), Op::Fields(fields)) => {
                    appl.add_command(self.producer.set(key, fields));
                    n_appl += 1;
                    round.plans.push(Plan::Appl {
                        at: n_appl - 1,
                        taken,
                    });
                }
                (Key::StateHash(key), Op::Fields(fields)) => {
                    let cmd = state.cmd("HSET").arg(key.as_str());
                    for (f, v) in fields {
                        cmd.arg(f).arg(v);
                    }
                    n_state += 1;
                    round.plans.push(Plan::StateHash {
                        at: n_state - 1,
                        taken,
                    });
                }
                _ => {
                    warn!(key = ?taken.key, "a queue entry of the wrong kind was dropped");
                    queue.acked(&taken);
                }
            }
        }
        let mut pinged = false;
        if self.check_markers && state_up && appl_up {
            if let Some(key) = &self.markers.state {
                state.cmd("EXISTS").arg(key.as_str());
                n_state += 1;
                round.state_marker = Some(n_state - 1);
            }
            if let Some((consumed, staged)) = &self.markers.appl {
                appl.cmd("EXISTS").arg(consumed).arg(staged);
                round.appl_marker = Some(n_appl);
            } else {
                // No marker yet: a PING keeps the connection (and redis_up)
                // honest all the same.
                appl.cmd("PING");
            }
            n_appl += 1;
            pinged = true;
            self.check_markers = false;
        }
        if round.plans.is_empty() && !pinged {
            return if took_any {
                Planned::AllSettled
            } else {
                Planned::Nothing
            };
        }
        if n_appl == usize::from(appl_script_load) {
            // Nothing for APPL_DB but the script: keep it for a later round.
            round.appl_script_load = false;
            appl = redis::pipe();
            n_appl = 0;
        }
        let future = Box::pin(run_round(
            side(&mut self.state, state, n_state),
            side(&mut self.appl, appl, n_appl),
        ));
        Planned::Round(round, future)
    }

    /// Settles the queue from a round's replies.
    pub fn settle(
        &mut self,
        round: Round,
        reply: RoundReply,
        queue: &mut CoalescingQueue,
        now: Instant,
        landed: &mut Vec<Landed>,
    ) -> RoundOutcome {
        let mut outcome = RoundOutcome::default();
        let state = self.side_back(Side::State, reply.state, now, &mut outcome);
        let appl = self.side_back(Side::Appl, reply.appl, now, &mut outcome);
        if round.appl_script_load && appl.is_some() {
            self.script_needed = false;
        }
        if let (Some(replies), Some(at)) = (&state, round.state_marker)
            && matches!(replies.get(at), Some(Ok(Value::Int(0))))
        {
            outcome.data_lost = true;
        }
        if let (Some(replies), Some(at)) = (&appl, round.appl_marker)
            && matches!(replies.get(at), Some(Ok(Value::Int(0))))
        {
            outcome.data_lost = true;
        }
        for plan in round.plans {
            match plan {
                Plan::Port {
                    taken,
                    port,
                    del,
                    hset,
                    probe,
                    waiting,
                } => {
                    let del_reply = Self::reply_of(&state, del);
                    let hset_reply = Self::reply_of(&state, hset.as_ref().map(|h| h.0));
                    let probe_reply = Self::reply_of(&appl, probe);
                    // A side that never answered: everything comes back.
                    if [&del_reply, &hset_reply, &probe_reply]
                        .iter()
                        .any(|r| matches!(r, Some(None)))
                    {
                        queue.returned(&taken);
                        continue;
                    }
                    let error = [&del_reply, &hset_reply, &probe_reply]
                        .into_iter()
                        .flatten()
                        .flatten()
                        .find_map(|r| match r {
                            Err(e) => Some(e.to_string()),
                            Ok(_) => None,
                        });
                    if let Some(error) = error {
                        refuse(queue, &taken, now, error, landed);
                        continue;
                    }
                    if del.is_some() {
                        self.image.deleted(&port);
                        let existed = matches!(del_reply, Some(Some(Ok(Value::Int(n)))) if *n > 0);
                        landed.push(Landed::RowDeleted {
                            port: port.clone(),
                            existed,
                        });
                    }
                    if let Some((_, values, fields)) = &hset {
                        self.image.written(&port, values, fields);
                        if let Op::Port { set: Some(s), .. } = &taken.op {
                            landed.push(Landed::Row {
                                port: port.clone(),
                                since: taken.since,
                                fields: fields.len(),
                                oper_up: s.oper_up,
                                admin_up: s.admin_up,
                            });
                        }
                    }
                    match (probe_reply, waiting) {
                        (Some(Some(Ok(Value::Int(1)))), Some(rest)) => {
                            self.configured.insert(port);
                            queue.partly_done(&taken, rest, None);
                        }
                        (Some(_), Some(rest)) => {
                            queue.partly_done(&taken, rest, Some(now + CONFIGURED_POLL));
                            landed.push(Landed::NotConfigured(port));
                        }
                        _ => queue.acked(&taken),
                    }
                }
                Plan::Appl { taken, at } => match appl.as_ref().and_then(|r| r.get(at)) {
                    None => queue.returned(&taken),
                    Some(Ok(_)) => {
                        queue.acked(&taken);
                        if let Key::ApplPort(key) = taken.key {
                            landed.push(Landed::Appl(key));
                        }
                    }
                    Some(Err(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        info!(
                            "Redis lost its script cache (restart or SCRIPT FLUSH); reloading the producer script"
                        );
                        self.script_needed = true;
                        queue.returned(&taken);
                    }
                    Some(Err(e)) => refuse(queue, &taken, now, e.to_string(), landed),
                },
                Plan::StateHash { taken, at } => match state.as_ref().and_then(|r| r.get(at)) {
                    None => queue.returned(&taken),
                    Some(Ok(_)) => {
                        queue.acked(&taken);
                        if let Key::StateHash(key) = taken.key {
                            landed.push(Landed::StateHash(key));
                        }
                    }
                    Some(Err(e)) => refuse(queue, &taken, now, e.to_string(), landed),
                },
            }
        }
        outcome
    }

    /// The reply at `at`: `None` when no command was sent, `Some(None)` when
    /// the side never answered.
    fn reply_of(
        replies: &Option<Vec<redis::RedisResult<Value>>>,
        at: Option<usize>,
    ) -> Option<Option<&redis::RedisResult<Value>>> {
        at.map(|i| replies.as_ref().and_then(|r| r.get(i)))
    }

    /// Takes a side's connection back; on a connection failure schedules
    /// the reconnect. Returns the replies when the side answered.
    fn side_back(
        &mut self,
        which: Side,
        reply: SideReply,
        now: Instant,
        outcome: &mut RoundOutcome,
    ) -> Option<Vec<redis::RedisResult<Value>>> {
        let link = match which {
            Side::State => &mut self.state,
            Side::Appl => &mut self.appl,
        };
        match reply.replies {
            Ok(replies) => {
                link.conn = reply.conn;
                link.retry_at = None;
                link.backoff.reset();
                if reply.fresh {
                    info!(db = link.what, "connected to Redis");
                    if std::mem::take(&mut link.lost) {
                        outcome.reconnected_after_loss = true;
                    }
                    if matches!(which, Side::Appl) {
                        self.script_needed = true;
                    }
                }
                Some(replies)
            }
            Err(e) => {
                if link.conn.take().is_some() || !link.lost {
                    warn!(db = link.what, error = %e, "lost Redis; keeping pending writes and reconnecting");
                }
                link.lost = true;
                link.conn = None;
                let delay = link.backoff.next_delay();
                link.retry_at = Some(now + delay);
                if matches!(which, Side::Appl) {
                    self.script_needed = true;
                }
                outcome.connection_error = Some(format!("{}: {e}", link.what));
                None
            }
        }
    }
}

/// Redis refused `taken`: it waits out its own backoff; the caller hears why.
fn refuse(
    queue: &mut CoalescingQueue,
    taken: &Taken,
    now: Instant,
    error: String,
    landed: &mut Vec<Landed>,
) {
    let failures = queue.refused(taken, now);
    landed.push(Landed::Refused {
        key: taken.key.clone(),
        failures,
        error,
    });
}

#[derive(Clone, Copy)]
enum Side {
    State,
    Appl,
}

/// What a side of the round needs, taken out of its link so the round's
/// future owns it while the data path goes on reading netlink.
struct SideJob {
    client: Client,
    conn: Option<MultiplexedConnection>,
    pipe: Pipeline,
    commands: usize,
}

fn side(link: &mut DbLink, mut pipe: Pipeline, commands: usize) -> SideJob {
    pipe.ignore_errors();
    SideJob {
        client: link.client.clone(),
        conn: link.conn.take(),
        pipe,
        commands,
    }
}

async fn run_side(job: SideJob) -> SideReply {
    let fresh = job.conn.is_none();
    let mut conn = match job.conn {
        Some(conn) => conn,
        None if job.commands == 0 => {
            return SideReply {
                conn: None,
                fresh: false,
                replies: Ok(Vec::new()),
            };
        }
        None => match connect(&job.client).await {
            Ok(conn) => conn,
            Err(e) => {
                return SideReply {
                    conn: None,
                    fresh: true,
                    replies: Err(e),
                };
            }
        },
    };
    if job.commands == 0 {
        return SideReply {
            conn: Some(conn),
            fresh,
            replies: Ok(Vec::new()),
        };
    }
    let replies = job
        .pipe
        .query_async::<Vec<redis::RedisResult<Value>>>(&mut conn)
        .await
        .and_then(|r| {
            if r.len() == job.commands {
                Ok(r)
            } else {
                Err(RedisError::from((
                    ErrorKind::Client,
                    "pipeline answered with the wrong number of replies",
                )))
            }
        });
    let conn = replies.is_ok().then_some(conn);
    SideReply {
        conn,
        fresh,
        replies,
    }
}

async fn run_round(state: SideJob, appl: SideJob) -> RoundReply {
    let (state, appl) = tokio::join!(run_side(state), run_side(appl));
    RoundReply { state, appl }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::PortState;

    #[test]
    fn keys_behind_a_full_round_of_unchanged_rows_go_out_at_once() {
        let layout = crate::sonic::db_config::parse_layout(
            crate::sonic::db_config::STOCK_LAYOUT,
            std::path::Path::new("t.json"),
        )
        .unwrap();
        let client = || Client::open("redis://127.0.0.1:1/").unwrap();
        let mut writer = Writer::new(&layout, client(), client());
        writer.script_needed = false;
        let state = PortState {
            admin_up: true,
            oper_up: true,
            mtu: 9100,
        };
        let values = state_values(&state);
        let mut queue = CoalescingQueue::new(1024);
        let now = Instant::now();
        // More unchanged rows than one round takes, then one real change.
        for i in 0..writer.batch_max + 10 {
            let port = PortName::from(format!("Ethernet{}", i * 4).as_str());
            writer.image.written(&port, &values, &[0, 1, 2, 3]);
            writer.configured.insert(port.clone());
            queue.push(Key::StatePort(port), Op::port_set(state, false), now);
        }
        let changed = PortName::from("Ethernet9996");
        writer.configured.insert(changed.clone());
        queue.push(Key::StatePort(changed), Op::port_set(state, false), now);
        let mut landed = Vec::new();
        let round = writer.plan(&mut queue, now, &mut landed);
        assert!(
            round.is_some(),
            "the changed row was left for a later wake-up"
        );
        assert_eq!(
            landed.len(),
            writer.batch_max + 10,
            "every unchanged row settled"
        );
        assert_eq!(queue.len(), 1, "only the changed row is in flight");
    }
}
