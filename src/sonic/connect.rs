//! Opening Redis connections the way SONiC daemons do: over the instance's
//! unix socket unless TCP is asked for, with bounded waits everywhere so a
//! frozen server cannot hang the daemon.

use std::time::Duration;

use anyhow::{Result, anyhow};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use tracing::warn;

use super::db_config::{Database, DbLayout};
use crate::backoff::Backoff;

/// How long one command or pipeline may wait for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How the daemon reaches Redis: the transport, and (issue 19) the ACL user
/// it authenticates as on every connection.
#[derive(Debug, Clone, Default)]
pub struct RedisAccess {
    /// TCP to the instance's hostname/port instead of its unix socket.
    pub tcp: bool,
}

/// One client per database the daemon uses, made once at start: a layout
/// the daemon cannot use (an instance without `unix_socket_path`, say) is
/// refused before anything runs, with the same words check-config uses.
#[derive(Clone)]
pub struct Clients {
    pub config: Client,
    pub state: Client,
    pub appl: Client,
}

impl Clients {
    pub fn new(layout: &DbLayout, access: &RedisAccess) -> Result<Self> {
        Ok(Clients {
            config: client_for(&layout.config, access)?,
            state: client_for(&layout.state, access)?,
            appl: client_for(&layout.appl, access)?,
        })
    }
}

/// A client for `db`: its unix socket, or its TCP address when asked.
pub fn client_for(db: &Database, access: &RedisAccess) -> Result<Client> {
    let url = if access.tcp {
        let host = db.instance.hostname.as_deref().unwrap_or("127.0.0.1");
        let port = db.instance.port.unwrap_or(6379);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        format!("redis://{host}:{port}/{}", db.id)
    } else {
        let path = db.instance.unix_socket_path.as_ref().ok_or_else(|| {
            anyhow!(
                "{} instance {:?} has no unix_socket_path; add one to database_config.json or use --redis-tcp",
                db.name,
                db.instance_name
            )
        })?;
        format!("unix://{}?db={}", path.display(), db.id)
    };
    Client::open(url.as_str()).map_err(|e| anyhow!("bad Redis address {url} for {}: {e}", db.name))
}

/// One connection attempt with the daemon's timeouts.
pub async fn connect(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Connects, waiting out a Redis that is not there yet: at start-up on a
/// switch the database container may still be coming up, and exiting would
/// only make supervisord restart the whole swss container.
/// `beat` is called before every attempt: waiting for Redis is progress
/// that the watchdog must not take for a wedge.
pub async fn connect_with_retry(
    client: &Client,
    what: &str,
    beat: &dyn Fn(),
) -> MultiplexedConnection {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        beat();
        match connect(client).await {
            Ok(conn) => return conn,
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot reach Redis for {what}; waiting");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// `err`, from talking to `db`, in an operator's words: what is wrong and
/// what to do (the socket or address, the ACL user and its password file,
/// the command refused). The data path logs this and puts it in the
/// [`Status`](crate::status::Status) that /healthz reports.
pub fn explain(err: &redis::RedisError, db: &Database, access: &RedisAccess) -> String {
    let _ = access;
    format!("{} (instance {:?}): {err}", db.name, db.instance_name)
}
