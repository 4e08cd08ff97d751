//! portsyncd: a drop-in replacement for SONiC's port-sync daemon.
//!
//! Data flow: netlink thread (parse, rules) -> coalescing queue -> Redis
//! writer. See docs/architecture in the repository for the picture.

pub mod backoff;
pub mod bounded_file;
pub mod check_config;
pub mod config;
pub mod config_file;
pub mod hooks;
pub mod logging;
pub mod metrics;
pub mod netlink;
pub mod queue;
pub mod resync;
pub mod sonic;
pub mod startup;
pub mod sync;
pub mod systemd;
pub mod warm_reconcile;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::config::Cli;
use crate::metrics::Metrics;
use crate::netlink::{LinkReader, LinkSocket};
use crate::queue::CoalescingQueue;
use crate::sonic::connect::{client_for, connect_with_retry};
use crate::sonic::db_config::{DbLayout, load_layout};
use crate::sonic::scripts::Scripts;
use crate::sonic::warm_table::{WarmState, WarmStateRecorder};
use crate::sync::{StartMode, SyncRules};
use crate::warm_reconcile::{WarmReconcile, reconcile_timer, wait_for_eoiu};
use crate::writer::Writer;

/// Runs the daemon until SIGTERM or SIGINT, then flushes what is pending
/// (bounded by `--shutdown-timeout`) and returns.
pub async fn run(cli: Cli) -> Result<()> {
    let namespace = cli.effective_namespace();
    let layout = load_layout(&cli.db_config, namespace.as_deref())?;
    check_config::require_one_redis_instance(&layout)?;
    info!(version = env!("CARGO_PKG_VERSION"), db_config = %cli.db_config.display(), namespace = namespace.as_deref().unwrap_or(""), "portsyncd starting");
    sonic::logger_table::spawn(&layout.config, cli.redis_tcp)?;

    let mut sigterm =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut sigint =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let metrics = Metrics::new();
    let liveness = systemd::Liveness::default();
    if !cli.no_metrics {
        // Never fails: a broken endpoint stays closed and retries; port sync runs.
        crate::metrics::start_server(
            cli.metrics.clone(),
            metrics.clone(),
            cli.queue_capacity,
            liveness.clone(),
        );
    } else {
        // The endpoint owns SIGHUP (reload); without it, SIGHUP's default
        // action would end the daemon on `systemctl reload`.
        let mut sighup =
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        tokio::spawn(async move {
            while sighup.recv().await.is_some() {
                info!("SIGHUP: nothing to reload (the metrics endpoint is off)");
            }
        });
    }
    let queue = Arc::new(CoalescingQueue::new(cli.queue_capacity as usize));
    let notifier = Arc::new(systemd::Notifier::from_env().context("bad NOTIFY_SOCKET")?);
    systemd::start(
        notifier.clone(),
        metrics.clone(),
        liveness.clone(),
        queue.clone(),
    );
    let pipeline = tokio::spawn(pipeline(
        cli.clone(),
        layout,
        queue.clone(),
        metrics.clone(),
        liveness,
    ));

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        result = pipeline => {
            return match result {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("the pipeline task failed: {e}")),
            };
        }
    };
    notifier.notify("STOPPING=1\nSTATUS=Flushing pending writes, then exiting");
    info!(
        signal = signal_name,
        pending = queue.len(),
        "shutting down; flushing pending writes"
    );
    let deadline = Instant::now() + cli.shutdown_timeout();
    while !queue.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if queue.is_empty() {
        info!("all pending writes reached Redis; bye");
    } else {
        warn!(
            pending = queue.len(),
            "Redis did not take every pending write in time; the next start re-syncs them"
        );
    }
    queue.close();
    Ok(())
}

/// Start-up, then the steady state: the netlink thread and the writer run
/// until the process ends.
async fn pipeline(
    cli: Cli,
    layout: DbLayout,
    queue: Arc<CoalescingQueue>,
    metrics: Metrics,
    liveness: systemd::Liveness,
) -> Result<()> {
    let started = Instant::now();
    let config_client = client_for(&layout.config, cli.redis_tcp)?;
    let state_client = client_for(&layout.state, cli.redis_tcp)?;
    let appl_client = client_for(&layout.appl, cli.redis_tcp)?;

    let mut backoff = backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let (inputs, state_conn) = loop {
        let mut config_conn = connect_with_retry(&config_client, "CONFIG_DB").await;
        let mut state_conn = connect_with_retry(&state_client, "STATE_DB").await;
        match startup::read_inputs(&mut config_conn, &mut state_conn, &layout).await {
            Ok(inputs) => break (inputs, state_conn),
            Err(e) => {
                warn!(error = %e, "cannot read the start-up configuration from Redis; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    let warm = inputs.warm.warm;
    metrics.warm_restart.set(i64::from(warm));
    metrics
        .warm_restart_count
        .set(inputs.warm.restore_count as i64);
    let mode = StartMode {
        warm,
        dpu: inputs.switch_type == "dpu",
    };
    info!(warm, switch_type = %inputs.switch_type, ports = inputs.ports.len(), "start-up configuration read");
    let first_state = if warm {
        WarmState::Initialized
    } else {
        WarmState::Disabled
    };
    let configured: Vec<String> = inputs.ports.iter().map(|(name, _)| name.clone()).collect();
    let mut recorder = WarmStateRecorder::new(state_conn, state_client, layout.state.clone());
    recorder.record(first_state).await;
    let reconcile = WarmReconcile {
        queue: queue.clone(),
        metrics: metrics.clone(),
        configured: configured.clone(),
        started,
        before: metrics.warm.row_counts(),
    };

    let rules = SyncRules::new(mode, configured);
    let socket = LinkSocket::open(cli.netlink_rcvbuf).context(
        "cannot open the rtnetlink socket (is this Linux, and may this process use netlink?)",
    )?;
    info!(
        granted_bytes = socket.granted_rcvbuf,
        "netlink socket open, subscribed to link events"
    );
    let (reader, signals) = LinkReader::new(socket, rules, queue.clone(), metrics.clone());
    let resync = resync::ResyncRequest::default();
    let reader = reader.with_hooks(hooks::LoopHooks {
        heartbeat: liveness.netlink,
        resync: resync.clone(),
    });
    reader.spawn().context("cannot start the netlink thread")?;

    let writer = Writer::new(
        appl_client,
        Scripts::new(&layout),
        queue.clone(),
        metrics.clone(),
    )
    .with_hooks(hooks::LoopHooks {
        heartbeat: liveness.writer,
        resync,
    });
    let writer = tokio::spawn(writer.run());

    let timer = reconcile_timer(inputs.reconcile_timer);
    let update = wait_for_eoiu(signals.eoiu, warm.then_some(timer)).await?;
    if warm {
        reconcile.run(update, timer, &mut recorder).await?;
    }
    metrics.warm_restart_reconciled.set(1);
    startup::publish(
        &inputs,
        queue.clone(),
        signals.all_ports_seen.clone(),
        started,
    )
    .await?;
    writer.await.context("the Redis writer stopped")?;
    Ok(())
}
