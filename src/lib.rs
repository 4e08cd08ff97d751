//! portsyncd: a drop-in replacement for SONiC's port-sync daemon.
//!
//! Data flow, on one thread: netlink socket (parse, rules) -> coalescing
//! queue -> one Redis pipeline per database. The metrics endpoint and the
//! LOGGER follower run on threads of their own.

pub mod appl_events;
pub mod backoff;
pub mod bounded_file;
pub mod check_config;
pub mod config;
pub mod config_file;
pub mod data_path;
pub mod logging;
pub mod metrics;
pub mod netlink;
pub mod port_name;
pub mod ports;
pub mod sonic;
pub mod startup;
pub mod status;
pub mod sync;
pub mod systemd;
pub mod warm_reconcile;
pub mod writer;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use redis::aio::MultiplexedConnection;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::appl_events::ApplEvents;
use crate::config::Cli;
use crate::data_path::{Core, Exit};
use crate::metrics::Metrics;
use crate::netlink::{LinkSocket, bring_link_down, present_netdevs};
use crate::ports::Ports;
use crate::sonic::connect::{Clients, connect_with_retry};
use crate::sonic::db_config::{DbLayout, load_layout};
use crate::sonic::warm_table::{self, WarmState};
use crate::startup::StartupInputs;
use crate::status::{Phase, Status};
use crate::sync::{StartMode, SyncRules, old_interfaces};
use crate::warm_reconcile::Progress;
use crate::writer::Writer;

/// Runs the daemon until SIGTERM or SIGINT, then flushes what is pending
/// (bounded by `--shutdown-timeout`) and returns.
///
/// One straight line: read the inputs, open the socket, run the loop. If
/// APPL_DB loses its data, the loop ends and the start-up runs again, as a
/// cold start, once CONFIG_DB holds the ports again (see sonic-contract.md
/// section 9): the switch ends as after a restart, without one.
pub async fn run(cli: Cli) -> Result<()> {
    let namespace = cli.effective_namespace();
    let layout = load_layout(&cli.db_config, namespace.as_deref())?;
    let access = cli.redis_access()?;
    let clients = Clients::new(&layout, &access)?;
    info!(version = env!("CARGO_PKG_VERSION"), db_config = %cli.db_config.display(), namespace = namespace.as_deref().unwrap_or(""), "portsyncd starting");
    sonic::logger_table::spawn(&layout.config, clients.config.clone())?;
    let metrics = Metrics::new();
    let status = Status::default();
    start_endpoint(&cli, &metrics, &status)?;
    let notifier = Arc::new(systemd::Notifier::from_env().context("bad NOTIFY_SOCKET")?);
    watch_signals(notifier.clone(), status.clone())?;
    systemd::start(notifier.clone(), status.clone());

    let mut socket: Option<(AsyncFd<LinkSocket>, Vec<u32>)> = None;
    let mut after_data_loss = false;
    loop {
        let started = Instant::now();
        let Some((inputs, conns)) = until_stopping(
            &status,
            read_inputs(&clients, &layout, after_data_loss, &status),
        )
        .await
        else {
            return Ok(());
        };
        let mode = StartMode {
            warm: inputs.warm.warm,
            dpu: inputs.dpu,
        };
        metrics
            .warm_restart_count
            .set(i64::try_from(inputs.warm.restore_count).unwrap_or(i64::MAX));
        status.set_warm(mode.warm);
        info!(
            warm = mode.warm,
            dpu = mode.dpu,
            ports = inputs.ports.len(),
            "start-up configuration read"
        );
        let (socket, old) = match &mut socket {
            Some(open) => open,
            None => socket.insert(open_socket(&cli, mode, &metrics, &status)?),
        };
        let (progress, config_ports) =
            Progress::start(inputs, status.clone(), metrics.clone(), started);
        let mut writer = Writer::new(&layout, &clients, &access);
        writer.adopt(conns.state, conns.appl);
        let mut core = Core::new(
            SyncRules::new(old.iter().copied()),
            Ports::new(
                config_ports.iter().cloned(),
                cli.queue_capacity as usize,
                metrics.clone(),
            ),
            writer,
            progress,
            ApplEvents::new(clients.appl.clone(), &layout.appl, access.user.is_none()),
            config_ports,
            metrics.clone(),
            status.clone(),
        );
        match data_path::run(socket, &mut core, cli.shutdown_timeout()).await {
            Exit::Shutdown => return Ok(()),
            Exit::DataLost => {
                after_data_loss = true;
                status.set_phase(Phase::Starting);
            }
        }
    }
}

/// The connections start-up opened, handed on to the writer.
struct Conns {
    state: MultiplexedConnection,
    appl: MultiplexedConnection,
}

/// Reads CONFIG_DB and STATE_DB, decides warm or cold and records the first
/// warm-restart state, retrying until Redis answers. After Redis lost its
/// data it also waits until CONFIG_DB holds ports again.
async fn read_inputs(
    clients: &Clients,
    layout: &DbLayout,
    after_data_loss: bool,
    status: &Status,
) -> (StartupInputs, Conns) {
    let Clients {
        config,
        state,
        appl,
    } = clients;
    let mut backoff = backoff::Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut said_waiting = false;
    loop {
        // Waiting for Redis (or for CONFIG_DB after a data loss) is progress
        // the watchdog must not mistake for a wedge (connect_with_retry beats).
        let mut config_conn = connect_with_retry(config, "CONFIG_DB", status).await;
        let mut state_conn = connect_with_retry(state, "STATE_DB", status).await;
        let appl_conn = connect_with_retry(appl, "APPL_DB", status).await;
        if after_data_loss {
            match startup::read_ports(&mut config_conn, layout).await {
                Ok(ports) if ports.is_empty() => {
                    if !std::mem::replace(&mut said_waiting, true) {
                        info!("waiting for CONFIG_DB to hold the ports again");
                    }
                    tokio::time::sleep(systemd::IDLE_BEAT).await;
                    continue;
                }
                Ok(ports) if said_waiting => {
                    info!(ports = ports.len(), "CONFIG_DB holds the ports again");
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "cannot read CONFIG_DB PORT; retrying"),
            }
        }
        let result = async {
            let mut inputs =
                startup::read_inputs(&mut config_conn, &mut state_conn, layout).await?;
            if after_data_loss && inputs.warm.warm {
                // Another instance lost APPL_DB: whatever warm restart says,
                // orchagent needs everything again, as after a cold start.
                info!(
                    "Redis lost data: starting over cold, whatever WARM_RESTART_ENABLE_TABLE says"
                );
                inputs.warm = warm_table::WarmStart {
                    warm: false,
                    restore_count: 0,
                };
                warm_table::set_restore_count(&mut state_conn, &layout.state, 0).await?;
            }
            let first = if inputs.warm.warm {
                WarmState::Initialized
            } else {
                WarmState::Disabled
            };
            warm_table::set_warm_state(&mut state_conn, &layout.state, first).await?;
            Ok::<_, redis::RedisError>(inputs)
        }
        .await;
        match result {
            Ok(inputs) => {
                return (
                    inputs,
                    Conns {
                        state: state_conn,
                        appl: appl_conn,
                    },
                );
            }
            Err(e) => {
                warn!(error = %e, "cannot read the start-up configuration from Redis; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Opens the netlink socket, takes the snapshot of the netdevs present now
/// and, on a cold non-DPU start, brings the old front-panel ones down (as
/// upstream's LinkSync constructor, over netlink instead of a forked `ip`).
fn open_socket(
    cli: &Cli,
    mode: StartMode,
    metrics: &Metrics,
    status: &Status,
) -> Result<(AsyncFd<LinkSocket>, Vec<u32>)> {
    let mut socket = LinkSocket::open(cli.netlink_rcvbuf).context(
        "cannot open the rtnetlink socket (is this Linux, and may this process use netlink?)",
    )?;
    let present = present_netdevs().context("cannot list the netdevs (if_nameindex)")?;
    let mut old = Vec::new();
    for (ifindex, name) in old_interfaces(mode, &present) {
        let name = String::from_utf8_lossy(&name).into_owned();
        match bring_link_down(ifindex) {
            Ok(()) => {
                info!(link = %name, ifindex, "old interface brought down; ignored until recreated")
            }
            Err(e) => warn!(link = %name, ifindex, error = %e, "cannot bring old interface down"),
        }
        old.push(ifindex);
    }
    socket
        .set_nonblocking()
        .context("cannot make the netlink socket non-blocking")?;
    if let Err(e) = socket.keep_only_ports() {
        warn!(error = %e, "cannot attach the netlink socket filter; every link message is read and the rules sort them");
    }
    metrics
        .netlink_receive_buffer_bytes
        .set(i64::try_from(socket.granted_rcvbuf).unwrap_or(i64::MAX));
    status.set_netlink(Ok(()));
    info!(
        granted_bytes = socket.granted_rcvbuf,
        old_interfaces = old.len(),
        "netlink socket open, subscribed to link events"
    );
    // SAFETY: the LinkSocket owns its fd for its whole life (it closes it
    // only when dropped, which the AsyncFd does) and as_raw_fd always
    // returns that same fd.
    let socket = unsafe { AsyncFd::register(socket) }
        .map_err(|e| anyhow::anyhow!("cannot register the netlink socket: {e}"))?;
    Ok((socket, old))
}

/// The endpoint runs on its own thread; a failure to start it is reported
/// and never stops port sync.
fn start_endpoint(cli: &Cli, metrics: &Metrics, status: &Status) -> Result<()> {
    if !cli.no_metrics {
        // Never fails: a broken endpoint stays closed and retries; port sync runs.
        crate::metrics::start_server(
            cli.metrics.clone(),
            metrics.clone(),
            cli.queue_capacity,
            status.clone(),
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
    Ok(())
}

/// On the first SIGTERM or SIGINT: the phase becomes Stopping (the data
/// path flushes and ends; every wait for it sees it, however late) and
/// systemd hears STOPPING=1 before the flush, so `systemctl status` says so
/// while it runs.
fn watch_signals(notifier: Arc<systemd::Notifier>, status: Status) -> Result<()> {
    let mut sigterm =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut sigint =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => info!(signal = "SIGTERM", "signal received"),
            _ = sigint.recv() => info!(signal = "SIGINT", "signal received"),
        }
        status.set_phase(Phase::Stopping);
        notifier.notify("STOPPING=1");
    });
    Ok(())
}

/// `work`, unless SIGTERM or SIGINT comes first.
async fn until_stopping<T>(status: &Status, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        v = work => Some(v),
        () = status.stopping() => None,
    }
}
