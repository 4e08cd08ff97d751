//! The Redis side: drains the coalescing queue in batches, one pipelined
//! round trip per batch, one EVALSHA per key.
//!
//! A batch leaves the queue only once Redis acknowledged it. A broken
//! connection keeps the batch, reconnects with capped, jittered backoff,
//! reloads the scripts and writes again; the daemon never exits because
//! Redis went away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{Client, ErrorKind, RedisError, ServerErrorKind, Value};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::hooks::LoopHooks;
use crate::metrics::{Metrics, PortLabels};
use crate::queue::{CoalescingQueue, Pending, Target};
use crate::sonic::connect::connect;
use crate::sonic::scripts::Scripts;
use crate::systemd::IDLE_BEAT;

/// What one batch attempt ended with.
enum BatchError {
    /// The connection is unusable: drop it and reconnect.
    Connection(RedisError),
    /// Redis answered, but could not take the writes now (NOSCRIPT,
    /// LOADING, a script error): retry after a pause on the same connection.
    Server(RedisError),
}

pub struct Writer {
    client: Client,
    scripts: Scripts,
    queue: Arc<CoalescingQueue>,
    metrics: Metrics,
    /// Most keys sent in one pipeline: large enough to absorb a storm in a
    /// few round trips, small enough to keep one reply's latency low.
    batch_max: usize,
    conn: Option<MultiplexedConnection>,
    backoff: Backoff,
    /// Heartbeat and re-dump request (see [`crate::hooks`]).
    hooks: LoopHooks,
    /// Set when a connection broke; the next connect raises the re-dump
    /// request, since Redis may have restarted from an older dump.
    lost_connection: bool,
    /// Tells a storm from a lone change; see [`StormLinger`].
    linger: StormLinger,
}

/// During a storm the kernel hands link messages over one by one, so a
/// writer that sends as soon as it wakes pays a round trip (and two thread
/// wake-ups) for every two or three keys. When the previous batch carried
/// more than one key and ended a moment ago, the writer waits one short
/// linger before taking the next batch, so keys gather and a port that
/// changes twice costs one write. A lone change after a quiet spell is
/// written at once: the linger never adds latency outside a storm.
#[derive(Debug, Default)]
struct StormLinger {
    last_batch_keys: usize,
    last_batch_end: Option<Instant>,
}

impl StormLinger {
    /// How long keys may gather during a storm.
    const LINGER: Duration = Duration::from_millis(1);
    /// A gap longer than this since the last batch ends a storm.
    const QUIET: Duration = Duration::from_millis(5);

    fn in_storm(&self, now: Instant) -> bool {
        self.last_batch_keys > 1
            && self
                .last_batch_end
                .is_some_and(|end| now.duration_since(end) < Self::QUIET)
    }

    fn batch_done(&mut self, keys: usize, now: Instant) {
        self.last_batch_keys = keys;
        self.last_batch_end = Some(now);
    }
}

impl Writer {
    pub fn new(
        client: Client,
        scripts: Scripts,
        queue: Arc<CoalescingQueue>,
        metrics: Metrics,
    ) -> Self {
        Writer {
            client,
            scripts,
            queue,
            metrics,
            batch_max: 512,
            conn: None,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            hooks: LoopHooks::default(),
            lost_connection: false,
            linger: StormLinger::default(),
        }
    }

    /// Connects the loop to the watchdog and the re-dump request.
    pub fn with_hooks(mut self, hooks: LoopHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Writes for as long as the process lives. The flush at shutdown is
    /// the caller's: it waits, bounded, for the queue to empty.
    pub async fn run(mut self) {
        loop {
            self.hooks.heartbeat.beat();
            let idle = tokio::time::timeout(IDLE_BEAT, self.queue.wait_for_work())
                .await
                .is_err();
            let result = if idle {
                self.check_connection().await
            } else {
                if self.linger.in_storm(Instant::now()) && self.queue.len() < self.batch_max {
                    tokio::time::sleep(StormLinger::LINGER).await;
                }
                let batch = self.queue.peek_batch(self.batch_max);
                let result = self.write_batch(&batch).await;
                self.linger.batch_done(batch.len(), Instant::now());
                result
            };
            match result {
                Ok(()) => self.backoff.reset(),
                Err(BatchError::Connection(e)) => {
                    if self.conn.take().is_some() {
                        self.lost_connection = true;
                        warn!(error = %e, pending = self.queue.len(), "lost Redis; keeping pending writes and reconnecting");
                    }
                    self.metrics.redis_up.set(0);
                    self.metrics.redis_error("io");
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
                Err(BatchError::Server(e)) => {
                    self.metrics.redis_error(server_error_label(&e));
                    if is_noscript(&e) {
                        info!(
                            "Redis lost its script cache (restart or SCRIPT FLUSH); reloading scripts"
                        );
                        self.hooks.resync.raise();
                        if self.load_scripts().await.is_err() {
                            debug!("script reload failed; reconnecting");
                            self.conn = None;
                        }
                        continue;
                    }
                    let delay = self.backoff.next_delay();
                    warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis refused a write; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
            self.metrics.queue_depth.set(self.queue.len() as i64);
        }
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, BatchError> {
        if self.conn.is_none() {
            let conn = connect(&self.client)
                .await
                .map_err(BatchError::Connection)?;
            self.conn = Some(conn);
            if let Err(e) = self.load_scripts().await {
                self.conn = None;
                return Err(e);
            }
            self.metrics.redis_reconnects.inc();
            self.metrics.redis_up.set(1);
            info!("connected to Redis; scripts loaded");
            if std::mem::take(&mut self.lost_connection) {
                self.hooks.resync.raise();
            }
        }
        Ok(self.conn.as_mut().expect("connection just set"))
    }

    /// PING while idle, so a Redis that went away (and perhaps came back
    /// from an older dump) is noticed without waiting for the next write.
    async fn check_connection(&mut self) -> Result<(), BatchError> {
        let conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<()>(conn)
            .await
            .map_err(classify)
    }

    async fn load_scripts(&mut self) -> Result<(), BatchError> {
        let mut pipe = redis::pipe();
        for cmd in self.scripts.load_commands() {
            pipe.add_command(cmd);
        }
        let conn = self.conn.as_mut().expect("called with a connection");
        pipe.query_async::<()>(conn).await.map_err(classify)
    }

    async fn write_batch(&mut self, batch: &[Pending]) -> Result<(), BatchError> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for pending in batch {
            pipe.add_command(self.scripts.command(&pending.target, &pending.write));
        }
        let started = Instant::now();
        let conn = self.connection().await?;
        let replies: Vec<redis::RedisResult<Value>> =
            pipe.query_async(conn).await.map_err(classify)?;
        let acked = Instant::now();
        self.metrics
            .redis_latency
            .observe((acked - started).as_secs_f64());
        self.metrics.redis_batches.inc();

        let mut acked_keys = Vec::with_capacity(batch.len());
        let mut first_error = None;
        for (pending, reply) in batch.iter().zip(replies) {
            match reply {
                Ok(value) => {
                    self.record(pending, &value, acked);
                    acked_keys.push(true);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    acked_keys.push(false);
                }
            }
        }
        self.queue.commit(batch, &acked_keys);
        match first_error {
            None => Ok(()),
            Some(e) => Err(classify(e)),
        }
    }

    /// Metrics and the log line an operator greps for, per acknowledged key.
    fn record(&self, pending: &Pending, reply: &Value, acked: Instant) {
        self.metrics.redis_keys_written.inc();
        self.metrics
            .event_latency
            .observe(acked.duration_since(pending.since).as_secs_f64());
        let result = match reply {
            Value::Int(n) => *n,
            _ => 0,
        };
        match &pending.target {
            Target::StatePort(port) => {
                let labels = PortLabels { port: port.clone() };
                match result {
                    -1 => {
                        self.metrics.state_writes_skipped_unconfigured.inc();
                        debug!(port = %port, "not in APPL_DB PORT_TABLE yet; STATE_DB left alone");
                    }
                    -2 | -3 => {
                        self.metrics.port_oper_status.remove(&labels);
                        self.metrics.port_admin_status.remove(&labels);
                        if result == -2 {
                            self.metrics.warm.state_rows_deleted.inc();
                            info!(port = %port, "deleted STATE_DB PORT_TABLE row");
                        } else {
                            debug!(port = %port, "STATE_DB PORT_TABLE row already absent");
                        }
                    }
                    changed => {
                        let field = |name: &str| {
                            pending
                                .write
                                .fields
                                .iter()
                                .find(|(f, _)| f == name)
                                .map(|(_, v)| v.as_str())
                        };
                        let up = |v: Option<&str>| i64::from(v == Some("up"));
                        self.metrics
                            .port_oper_status
                            .get_or_create(&labels)
                            .set(up(field("netdev_oper_status")));
                        self.metrics
                            .port_admin_status
                            .get_or_create(&labels)
                            .set(up(field("admin_status")));
                        if changed == 0 {
                            self.metrics.warm.state_rows_unchanged.inc();
                        } else {
                            self.metrics.warm.state_rows_changed.inc();
                            info!(
                                port = %port,
                                admin_status = field("admin_status").unwrap_or(""),
                                netdev_oper_status = field("netdev_oper_status").unwrap_or(""),
                                mtu = field("mtu").unwrap_or(""),
                                fields_changed = changed,
                                "published port state to STATE_DB"
                            );
                        }
                    }
                }
            }
            Target::ApplPort(key) => match key.as_str() {
                "PortConfigDone" => {
                    self.metrics.port_config_done.set(1);
                    info!("PortConfigDone written to APPL_DB");
                }
                "PortInitDone" => {
                    self.metrics.port_init_done.set(1);
                    info!("PortInitDone written to APPL_DB");
                }
                _ => debug!(key = %key, "APPL_DB PORT_TABLE entry produced"),
            },
        }
    }
}

/// Connection-level failures need a new connection; server answers do not.
fn classify(e: RedisError) -> BatchError {
    match e.kind() {
        ErrorKind::Server(_) | ErrorKind::Extension => BatchError::Server(e),
        _ => BatchError::Connection(e),
    }
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

fn server_error_label(e: &RedisError) -> &'static str {
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::NoScript) => "noscript",
        ErrorKind::Server(ServerErrorKind::BusyLoading) => "loading",
        _ => "server",
    }
}

#[cfg(test)]
mod linger_tests {
    use std::time::{Duration, Instant};

    use super::StormLinger;

    #[test]
    fn only_a_multi_key_batch_that_just_ended_means_a_storm() {
        let mut linger = StormLinger::default();
        let t0 = Instant::now();
        assert!(!linger.in_storm(t0), "nothing written yet");
        linger.batch_done(1, t0);
        assert!(!linger.in_storm(t0), "a lone change is no storm");
        linger.batch_done(3, t0);
        assert!(linger.in_storm(t0 + Duration::from_millis(1)));
        assert!(
            !linger.in_storm(t0 + Duration::from_millis(50)),
            "a quiet spell ends the storm"
        );
    }
}
