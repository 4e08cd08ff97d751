//! The warm-restart tables of STATE_DB, as swss-common's `WarmStart` uses
//! them for application `portsyncd` in container `swss`.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

use super::connect::connect_with_retry;
use super::db_config::Database;
use crate::backoff::Backoff;

pub const APP_NAME: &str = "portsyncd";
pub const CONTAINER_NAME: &str = "swss";
const ENABLE_TABLE: &str = "WARM_RESTART_ENABLE_TABLE";
const RESTART_TABLE: &str = "WARM_RESTART_TABLE";

/// The values of `WARM_RESTART_TABLE|portsyncd` `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmState {
    Initialized,
    Restored,
    Replayed,
    Reconciled,
    Disabled,
}

impl WarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            WarmState::Initialized => "initialized",
            WarmState::Restored => "restored",
            WarmState::Replayed => "replayed",
            WarmState::Reconciled => "reconciled",
            WarmState::Disabled => "disabled",
        }
    }
}

/// The outcome of the warm-start check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmStart {
    pub warm: bool,
    pub restore_count: u64,
}

/// Decides warm or cold exactly as swss-common: warm only if warm restart is
/// enabled for the system or for `swss` **and** a `restore_count` already
/// exists; a warm start increments it, a cold one sets it to 0.
pub async fn check_warm_start(
    conn: &mut MultiplexedConnection,
    state: &Database,
) -> redis::RedisResult<WarmStart> {
    let enabled = |v: Option<String>| v.as_deref() == Some("true");
    let system: Option<String> = conn
        .hget(state.key(ENABLE_TABLE, "system"), "enable")
        .await?;
    let swss: Option<String> = conn
        .hget(state.key(ENABLE_TABLE, CONTAINER_NAME), "enable")
        .await?;
    let app_key = state.key(RESTART_TABLE, APP_NAME);
    let count: Option<String> = conn.hget(&app_key, "restore_count").await?;
    let outcome = match (enabled(system) || enabled(swss), count) {
        (false, _) => WarmStart {
            warm: false,
            restore_count: 0,
        },
        (true, None) => {
            warn!(
                "warm restart is enabled but {app_key} has no restore_count: falling back to a cold start"
            );
            WarmStart {
                warm: false,
                restore_count: 0,
            }
        }
        (true, Some(count)) => {
            let previous = count.trim().parse::<u64>().unwrap_or_else(|_| {
                warn!(value = %count, "restore_count is not a number; counting from 0");
                0
            });
            WarmStart {
                warm: true,
                restore_count: previous + 1,
            }
        }
    };
    let _: () = conn
        .hset(&app_key, "restore_count", outcome.restore_count.to_string())
        .await?;
    info!(
        event = "warm_restart_check",
        warm = outcome.warm,
        restore_count = outcome.restore_count,
        "warm start check done"
    );
    Ok(outcome)
}

/// Records the application's progress in `WARM_RESTART_TABLE|portsyncd`.
pub async fn set_warm_state(
    conn: &mut MultiplexedConnection,
    state: &Database,
    value: WarmState,
) -> redis::RedisResult<()> {
    let _: () = conn
        .hset(state.key(RESTART_TABLE, APP_NAME), "state", value.as_str())
        .await?;
    info!(state = value.as_str(), "warm restart state recorded");
    Ok(())
}

/// Records the warm-restart state, waiting out Redis outages: the state is
/// what tells operators and tools where the restart stands, so it is never
/// skipped.
pub struct WarmStateRecorder {
    conn: MultiplexedConnection,
    client: redis::Client,
    state: Database,
}

impl WarmStateRecorder {
    pub fn new(conn: MultiplexedConnection, client: redis::Client, state: Database) -> Self {
        WarmStateRecorder {
            conn,
            client,
            state,
        }
    }

    pub async fn record(&mut self, value: WarmState) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        while let Err(e) = set_warm_state(&mut self.conn, &self.state, value).await {
            warn!(error = %e, state = value.as_str(), "cannot record the warm-restart state; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
            self.conn = connect_with_retry(&self.client, "STATE_DB").await;
        }
    }
}

/// `WARM_RESTART|swss` `portsyncd_timer` from CONFIG_DB, in seconds.
pub async fn warm_restart_timer(
    conn: &mut MultiplexedConnection,
    config: &Database,
) -> redis::RedisResult<Option<u64>> {
    let value: Option<String> = conn
        .hget(
            config.key("WARM_RESTART", CONTAINER_NAME),
            "portsyncd_timer",
        )
        .await?;
    Ok(value.and_then(|v| v.trim().parse().ok()))
}
