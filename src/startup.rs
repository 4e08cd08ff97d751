//! The start-up sequence: read CONFIG_DB, decide warm or cold, and publish
//! the port configuration and the two notices orchagent waits for.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::queue::{CoalescingQueue, Target, Write};
use crate::sonic::db_config::DbLayout;
use crate::sonic::warm_table::{self, WarmStart};

/// What CONFIG_DB and STATE_DB say before any netlink message is read.
pub struct StartupInputs {
    pub switch_type: String,
    pub warm: WarmStart,
    /// CONFIG_DB `PORT|<name>` hashes, sorted by name.
    pub ports: Vec<(String, Vec<(String, String)>)>,
    /// CONFIG_DB `WARM_RESTART|swss` `portsyncd_timer`, in seconds.
    pub reconcile_timer: Option<u64>,
}

/// Reads everything the rules need to start.
pub async fn read_inputs(
    config: &mut MultiplexedConnection,
    state: &mut MultiplexedConnection,
    layout: &DbLayout,
) -> redis::RedisResult<StartupInputs> {
    let switch_type: Option<String> = config
        .hget(
            layout.config.key("DEVICE_METADATA", "localhost"),
            "switch_type",
        )
        .await?;
    let switch_type = switch_type.unwrap_or_else(|| "switch".to_string());
    let warm = warm_table::check_warm_start(state, &layout.state).await?;
    let reconcile_timer = warm_table::warm_restart_timer(config, &layout.config).await?;
    let prefix = layout.config.key("PORT", "");
    let mut keys: Vec<String> = config.keys(format!("{prefix}*")).await?;
    keys.sort();
    // One round trip for all ports: a 512-port switch would otherwise wait
    // out 512 of them before the first link message is read.
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.hgetall(key);
    }
    let hashes: Vec<Vec<(String, String)>> = if keys.is_empty() {
        Vec::new() // Redis refuses an empty pipeline.
    } else {
        pipe.query_async(config).await?
    };
    let ports: Vec<_> = keys
        .iter()
        .zip(hashes)
        .map(|(key, fields)| (key[prefix.len()..].to_string(), fields))
        .collect();
    if ports.is_empty() {
        info!("CONFIG_DB has no PORT entries; ports can be added later, continuing");
    }
    Ok(StartupInputs {
        switch_type,
        warm,
        ports,
        reconcile_timer,
    })
}

/// After the end of the initial update: publish the configuration (cold)
/// then `PortInitDone` once every port has a netdev.
pub async fn publish(
    inputs: &StartupInputs,
    queue: Arc<CoalescingQueue>,
    mut all_ports_seen: watch::Receiver<bool>,
    started: Instant,
) -> Result<()> {
    if !inputs.warm.warm {
        let ports = inputs.ports.clone();
        let count = ports.len();
        let q = queue.clone();
        tokio::task::spawn_blocking(move || {
            let now = Instant::now();
            for (name, fields) in ports {
                q.push(Target::ApplPort(name), Write::set(fields), now);
            }
            q.push(
                Target::ApplPort("PortConfigDone".into()),
                Write::set(vec![("count".into(), count.to_string())]),
                now,
            );
        })
        .await?;
        info!(
            count,
            "port configuration queued for APPL_DB PORT_TABLE, then PortConfigDone"
        );
    } else {
        info!("warm start: APPL_DB PORT_TABLE and PortConfigDone left as they are");
    }
    if !*all_ports_seen.borrow() {
        info!("waiting for every configured port to appear as a kernel netdev");
    }
    while !*all_ports_seen.borrow_and_update() {
        if all_ports_seen.changed().await.is_err() {
            warn!("the netlink thread stopped; PortInitDone will not be sent");
            return Ok(());
        }
    }
    let q = queue.clone();
    tokio::task::spawn_blocking(move || {
        q.push(
            Target::ApplPort("PortInitDone".into()),
            Write::set(vec![("lanes".into(), "0".into())]),
            Instant::now(),
        );
    })
    .await?;
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "every configured port has a netdev; PortInitDone queued"
    );
    Ok(())
}
