//! The Redis side of the data path: a round turns the dirty ports and the
//! start-up's outputs into one pipeline per database, and settles the
//! replies back into the port records and the outbox.
//!
//! STATE_DB gets, per dirty port, a `DEL` (the netdev was deleted) and/or an
//! `HSET` of all four fields, plain commands on the STATE_DB connection;
//! APPL_DB gets the producer script on its own connection. Nothing assumes
//! the two share a server. A refused command sets back its port alone; a
//! broken connection keeps every write and is opened again, between rounds,
//! after a capped, jittered backoff. Between rounds the data path also reads
//! through these connections: which ports APPL_DB has, the rows a verify
//! compares, and whether our keys are still there.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Client, ErrorKind, Pipeline, RedisError, RedisResult, ServerErrorKind, Value};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::port_name::PortName;
use crate::ports::{Outcome, Ports, Take};
use crate::sonic::connect::{Clients, RedisAccess, connect, explain};
use crate::sonic::db_config::{Database, DbLayout};
use crate::sonic::producer::{PORT_TABLE, Producer, table_key};
use crate::sonic::warm_table;
use crate::sync::{PortState, STATE_FIELDS, state_values};
use crate::warm_reconcile::{CONFIG_DONE, INIT_DONE, Missing, Outbox, Output};

/// What a round landed (or Redis refused), for the logs, the metrics and
/// the start-up progress.
#[derive(Debug)]
pub enum Landed {
    Row {
        port: PortName,
        /// When the oldest change in the write arrived.
        since: Instant,
        state: PortState,
    },
    Deleted {
        port: PortName,
        existed: bool,
    },
    Output(Output),
    RowRefused {
        port: PortName,
        failures: u32,
        error: String,
    },
    OutputRefused {
        output: Output,
        error: String,
    },
}

/// One database's connection. It is multiplexed: a round's future holds a
/// clone while the loop reads on through another.
struct Link {
    client: Client,
    db: Database,
    conn: Option<MultiplexedConnection>,
    backoff: Backoff,
    /// No reconnect attempt before this.
    retry_at: Option<Instant>,
    /// A connection was lost since the last one came up.
    lost: bool,
}

impl Link {
    fn new(client: Client, db: &Database) -> Self {
        Link {
            client,
            db: db.clone(),
            conn: None,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            retry_at: None,
            lost: false,
        }
    }

    /// The connection failed: keep every write, reconnect after a backoff.
    /// Returns the error in an operator's words.
    fn down(&mut self, e: &RedisError, access: &RedisAccess, now: Instant) -> String {
        let error = explain(e, &self.db, access);
        if self.conn.take().is_some() || !self.lost {
            warn!(error, "lost Redis; keeping pending writes and reconnecting");
        }
        self.lost = true;
        self.retry_at = Some(now + self.backoff.next_delay());
        error
    }

    fn conn(&self) -> RedisResult<MultiplexedConnection> {
        self.conn
            .clone()
            .ok_or_else(|| RedisError::from((ErrorKind::Io, "not connected", self.db.name.clone())))
    }
}

/// The error says the connection is gone, not that one command was refused.
fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

type Replies = RedisResult<Vec<RedisResult<Value>>>;

/// A side's replies once settled: `None` when it sent nothing or broke.
type Answered = Option<Vec<RedisResult<Value>>>;

/// Each side's replies; `None` for a side that sent nothing.
pub type RoundReply = (Option<Replies>, Option<Replies>);

pub type RoundFuture = Pin<Box<dyn Future<Output = RoundReply> + Send>>;

/// A round in flight: where each write sits in the pipelines.
pub struct Round {
    /// A port's write and the indexes of its DEL and HSET.
    ports: Vec<(Take, Option<usize>, Option<usize>)>,
    outputs: Vec<(Output, usize)>,
    script_load: bool,
    /// When it was sent, for the round-trip metric.
    pub sent: Instant,
}

pub struct Writer {
    state: Link,
    appl: Link,
    access: RedisAccess,
    layout: DbLayout,
    producer: Producer,
    warm_key: String,
    /// The APPL_DB script cache must be filled before the next EVALSHA.
    script_needed: bool,
    /// A connection came back after a loss: the data path re-dumps,
    /// compares rows and checks for lost data.
    reconnected: bool,
    /// Why Redis last failed, in an operator's words; `None` while it works.
    error: Option<String>,
    /// Most ports in one round.
    batch_max: usize,
}

impl Writer {
    pub fn new(layout: &DbLayout, clients: &Clients, access: &RedisAccess) -> Self {
        Writer {
            state: Link::new(clients.state.clone(), &layout.state),
            appl: Link::new(clients.appl.clone(), &layout.appl),
            access: access.clone(),
            producer: Producer::new(&layout.appl),
            warm_key: layout
                .state
                .key(warm_table::RESTART_TABLE, warm_table::APP_NAME),
            layout: layout.clone(),
            script_needed: true,
            reconnected: false,
            error: None,
            batch_max: 128,
        }
    }

    /// Hands over the connections start-up opened.
    pub fn adopt(&mut self, state: MultiplexedConnection, appl: MultiplexedConnection) {
        self.state.conn = Some(state);
        self.appl.conn = Some(appl);
    }

    /// The earliest moment a reconnect may be tried, if one waits.
    pub fn retry_at(&self) -> Option<Instant> {
        [&self.state, &self.appl]
            .iter()
            .filter(|l| l.conn.is_none())
            .filter_map(|l| l.retry_at)
            .min()
    }

    /// Most ports in one round (128: a larger start-up round parses a larger
    /// reply at once).
    pub fn set_batch_max(&mut self, ports: usize) {
        self.batch_max = ports.max(1);
    }

    /// Whether a connection came back after a loss since last asked.
    pub fn take_reconnected(&mut self) -> bool {
        std::mem::take(&mut self.reconnected)
    }

    /// Why Redis last failed, in an operator's words; `None` while it works.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn connected(&self) -> bool {
        self.state.conn.is_some() && self.appl.conn.is_some()
    }

    /// Opens the connections that are down, as their backoff allows.
    pub async fn reconnect(&mut self, now: Instant) {
        for appl in [false, true] {
            let link = if appl {
                &mut self.appl
            } else {
                &mut self.state
            };
            if link.conn.is_some() || link.retry_at.is_some_and(|t| t > now) {
                continue;
            }
            match connect(&link.client).await {
                Ok(conn) => {
                    info!(db = %link.db.name, "connected to Redis");
                    link.conn = Some(conn);
                    link.retry_at = None;
                    link.backoff.reset();
                    self.reconnected |= std::mem::take(&mut link.lost);
                    self.script_needed |= appl;
                    self.error = None;
                }
                Err(e) => self.error = Some(link.down(&e, &self.access, now)),
            }
        }
    }

    /// Builds the next round from the dirty ports and the outbox, on the
    /// connections that are up; `None` when there is nothing to send.
    pub fn plan(
        &mut self,
        ports: &mut Ports,
        outbox: &mut Outbox,
        now: Instant,
    ) -> Option<(Round, RoundFuture)> {
        let (state_up, appl_up) = (self.state.conn.is_some(), self.appl.conn.is_some());
        let takes = if state_up {
            ports.take(now, self.batch_max)
        } else {
            Vec::new()
        };
        // Outputs go in their order: only when both sides are up.
        let outputs = if state_up && appl_up {
            outbox.take(now, self.batch_max)
        } else {
            Vec::new()
        };
        if takes.is_empty() && outputs.is_empty() {
            return None;
        }
        let (mut state, mut appl) = (redis::pipe(), redis::pipe());
        let (mut n_state, mut n_appl) = (0, 0);
        let at = |n: &mut usize| {
            *n += 1;
            *n - 1
        };
        let script_load =
            self.script_needed && outputs.iter().any(|o| matches!(o, Output::Produce { .. }));
        if script_load {
            appl.add_command(self.producer.load_command());
            at(&mut n_appl);
        }
        let mut round = Round {
            ports: Vec::new(),
            outputs: Vec::new(),
            script_load,
            sent: now,
        };
        for take in takes {
            let key = table_key(&self.layout.state, PORT_TABLE, &take.port);
            let del = take.del.then(|| {
                state.cmd("DEL").arg(&key);
                at(&mut n_state)
            });
            let hset = take.row.map(|row| {
                let cmd = state.cmd("HSET").arg(&key);
                for (field, value) in STATE_FIELDS.iter().zip(state_values(&row)) {
                    cmd.arg(field).arg(value);
                }
                at(&mut n_state)
            });
            round.ports.push((take, del, hset));
        }
        for output in outputs {
            let i = match &output {
                Output::Produce { key, fields } => {
                    appl.add_command(self.producer.set(key, fields));
                    at(&mut n_appl)
                }
                Output::Warm(fields) => {
                    state.cmd("HSET").arg(&self.warm_key).arg(fields);
                    at(&mut n_state)
                }
            };
            round.outputs.push((output, i));
        }
        let job =
            |link: &Link, pipe: Pipeline, n: usize| (n > 0).then(|| (link.conn.clone(), pipe, n));
        let (state, appl) = (
            job(&self.state, state, n_state),
            job(&self.appl, appl, n_appl),
        );
        Some((
            round,
            Box::pin(async move { tokio::join!(send(state), send(appl)) }),
        ))
    }

    /// Settles a round's replies into the records and the outbox.
    pub fn settle(
        &mut self,
        round: Round,
        (state, appl): RoundReply,
        ports: &mut Ports,
        outbox: &mut Outbox,
        now: Instant,
        landed: &mut Vec<Landed>,
    ) {
        let state = self.side_back(false, state, now);
        let appl = self.side_back(true, appl, now);
        if round.script_load && appl.is_some() {
            self.script_needed = false;
        }
        for (take, del, hset) in round.ports {
            let (del_reply, hset_reply) = (reply_at(&state, del), reply_at(&state, hset));
            let outcome = |at: Option<usize>, reply: Option<&RedisResult<Value>>| match (at, reply)
            {
                (None, _) | (_, Some(Ok(_))) => Outcome::Done,
                (_, Some(Err(_))) => Outcome::Refused,
                (_, None) => Outcome::Lost,
            };
            let failures = ports.settle(
                &take,
                outcome(del, del_reply),
                outcome(hset, hset_reply),
                now,
            );
            if let Some(e) = [del_reply, hset_reply]
                .into_iter()
                .flatten()
                .find_map(|r| r.as_ref().err())
            {
                let error = explain(e, &self.state.db, &self.access);
                landed.push(Landed::RowRefused {
                    port: take.port.clone(),
                    failures,
                    error,
                });
            }
            if let Some(Ok(reply)) = del_reply {
                let existed = matches!(reply, Value::Int(n) if *n > 0);
                landed.push(Landed::Deleted {
                    port: take.port.clone(),
                    existed,
                });
            }
            if let (Some(Ok(_)), Some(state)) = (hset_reply, take.row) {
                landed.push(Landed::Row {
                    port: take.port,
                    since: take.since,
                    state,
                });
            }
        }
        self.settle_outputs(round.outputs, (&state, &appl), outbox, now, landed);
    }

    /// The outputs' share of a round: landed, refused (after a backoff), or
    /// back first in line.
    fn settle_outputs(
        &mut self,
        outputs: Vec<(Output, usize)>,
        (state, appl): (&Answered, &Answered),
        outbox: &mut Outbox,
        now: Instant,
        landed: &mut Vec<Landed>,
    ) {
        let (mut back, mut done) = (Vec::new(), 0);
        for (output, i) in outputs {
            let warm = matches!(output, Output::Warm(_));
            match reply_at(if warm { state } else { appl }, Some(i)) {
                Some(Ok(_)) => {
                    done += 1;
                    landed.push(Landed::Output(output));
                }
                Some(Err(e)) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    info!(
                        "Redis lost its script cache (restart or SCRIPT FLUSH); reloading the producer script"
                    );
                    self.script_needed = true;
                    back.push((output, false));
                }
                Some(Err(e)) => {
                    let error = explain(
                        e,
                        if warm { &self.state.db } else { &self.appl.db },
                        &self.access,
                    );
                    landed.push(Landed::OutputRefused {
                        output: output.clone(),
                        error,
                    });
                    back.push((output, true));
                }
                None => back.push((output, false)),
            }
        }
        outbox.landed(done);
        outbox.put_back(back, now);
    }

    /// Takes a side's replies; a broken connection is dropped, to be opened
    /// again after a backoff. A side that sent nothing is left as it was.
    fn side_back(&mut self, appl: bool, replies: Option<Replies>, now: Instant) -> Answered {
        match replies? {
            Ok(replies) => {
                self.error = None;
                Some(replies)
            }
            Err(e) => {
                self.failed(appl, e, now);
                None
            }
        }
    }

    /// A command or read failed: a broken connection is marked down.
    fn failed(&mut self, appl: bool, e: RedisError, now: Instant) -> RedisError {
        if is_connection_error(&e) {
            let link = if appl {
                &mut self.appl
            } else {
                &mut self.state
            };
            self.error = Some(link.down(&e, &self.access, now));
            self.script_needed |= appl;
        }
        e
    }

    /// Which of `ports` APPL_DB has now (consumed `PORT_TABLE:<port>`).
    pub async fn ask_configured(
        &mut self,
        ports: &[PortName],
        now: Instant,
    ) -> RedisResult<Vec<bool>> {
        let appl = &self.layout.appl;
        let asked =
            crate::startup::in_chunks(&mut self.appl.conn()?, ports, false, |pipe, port| {
                pipe.exists(table_key(appl, PORT_TABLE, port));
            })
            .await;
        asked.map_err(|e| self.failed(true, e, now))
    }

    /// Whether each port's STATE_DB row holds exactly these four values.
    pub async fn rows_match(
        &mut self,
        rows: &[(PortName, PortState)],
        now: Instant,
    ) -> RedisResult<Vec<bool>> {
        let names: Vec<PortName> = rows.iter().map(|(p, _)| p.clone()).collect();
        let held =
            crate::startup::read_state_rows(&mut self.state.conn()?, &self.layout, &names).await;
        let held = held.map_err(|e| self.failed(false, e, now))?;
        let same = |(s, row): (&PortState, crate::startup::Row)| {
            row.iter()
                .zip(state_values(s))
                .all(|(held, want)| held.as_deref() == Some(want.as_slice()))
        };
        Ok(rows.iter().map(|(_, s)| s).zip(held).map(same).collect())
    }

    /// What of ours Redis still holds: the notices, the CONFIG_DB ports'
    /// APPL_DB entries and the warm-restart row. `expect`: which notices
    /// landed.
    pub async fn check(
        &mut self,
        config_ports: &[PortName],
        expect: (bool, bool),
        now: Instant,
    ) -> RedisResult<Missing> {
        let both = |name: &[u8]| {
            let consumed = table_key(&self.layout.appl, PORT_TABLE, name);
            [[b"_".as_slice(), &consumed].concat(), consumed]
        };
        let mut ours: Vec<Vec<u8>> = [CONFIG_DONE, INIT_DONE]
            .into_iter()
            .flat_map(both)
            .collect();
        ours.extend(config_ports.iter().flat_map(|p| both(p)));
        let mut pipe = redis::pipe();
        pipe.exists(&ours)
            .exists(&both(CONFIG_DONE)[..])
            .exists(&both(INIT_DONE)[..]);
        let appl = pipe.query_async(&mut self.appl.conn()?).await;
        let (ours, config_done, init_done): (u64, u64, u64) =
            appl.map_err(|e| self.failed(true, e, now))?;
        let state = redis::cmd("EXISTS")
            .arg(&self.warm_key)
            .query_async(&mut self.state.conn()?)
            .await;
        let warm: u64 = state.map_err(|e| self.failed(false, e, now))?;
        Ok(Missing {
            appl_present: ours > 0,
            config_done: expect.0 && config_done == 0,
            init_done: expect.1 && init_done == 0,
            warm_row: warm == 0,
        })
    }
}

/// The reply at `at`: `None` when no command was sent or the side never
/// answered.
fn reply_at(replies: &Answered, at: Option<usize>) -> Option<&RedisResult<Value>> {
    replies.as_ref()?.get(at?)
}

/// Sends one side's pipeline; `None` when it has nothing to send.
async fn send(job: Option<(Option<MultiplexedConnection>, Pipeline, usize)>) -> Option<Replies> {
    let (conn, mut pipe, n) = job?;
    let Some(mut conn) = conn else {
        return Some(Err(RedisError::from((ErrorKind::Io, "not connected"))));
    };
    pipe.ignore_errors();
    let replies: Replies = pipe.query_async(&mut conn).await;
    Some(replies.and_then(|r| {
        if r.len() == n {
            Ok(r)
        } else {
            Err(RedisError::from((
                ErrorKind::Client,
                "pipeline answered with the wrong number of replies",
            )))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rounds that carry commands for one database only leave the other's
    /// reconnect backoff as it was.
    #[test]
    fn a_side_with_nothing_to_send_keeps_its_backoff() {
        let layout = crate::sonic::db_config::parse_layout(
            crate::sonic::db_config::STOCK_LAYOUT,
            std::path::Path::new("t.json"),
        )
        .unwrap();
        let access = RedisAccess::default();
        let clients = Clients::new(&layout, &access).unwrap();
        let mut writer = Writer::new(&layout, &clients, &access);
        let now = Instant::now();
        let e = RedisError::from((ErrorKind::Io, "gone"));
        writer.error = Some(writer.appl.down(&e, &access, now));
        let retry = writer.appl.retry_at;
        assert!(retry.is_some());
        assert!(writer.side_back(true, None, now).is_none());
        assert_eq!(writer.appl.retry_at, retry, "the backoff was reset");
        assert!(writer.appl.lost && writer.error.is_some());
    }
}
