//! Opening Redis connections the way SONiC daemons do: over the instance's
//! unix socket unless TCP is asked for, with bounded waits everywhere so a
//! frozen server cannot hang the daemon, authenticated as the configured
//! ACL user on every connection (start-up, data path, LOGGER follower).

use std::fmt;
use std::io::ErrorKind as IoKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Result, anyhow};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, ServerErrorKind,
};
use tracing::warn;

use super::db_config::{Database, DbLayout};
use crate::backoff::Backoff;
use crate::status::Status;

/// How long one command or pipeline may wait for its answer.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the operator finds the grants the daemon needs.
pub const ACL_EXAMPLE: &str = "docs/examples/redis-acl.conf";

/// A Redis password: never printed (`Debug` and `Display` say `<redacted>`).
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(text: String) -> Self {
        Password(text)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the daemon reaches Redis: the transport, and the ACL user it
/// authenticates as on every connection.
#[derive(Debug, Clone, Default)]
pub struct RedisAccess {
    /// TCP to the instance's hostname/port instead of its unix socket.
    pub tcp: bool,
    /// The ACL user (`--redis-user`); `None` is Redis's `default` user.
    pub user: Option<String>,
    /// Read from [`RedisAccess::password_file`]; never logged.
    pub password: Option<Password>,
    /// Where the password came from, for messages.
    pub password_file: Option<PathBuf>,
}

impl RedisAccess {
    /// The user, as Redis names it.
    pub fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or("default")
    }
}

/// The access the daemon runs with, kept for [`connect_with_retry`]'s
/// messages (a `redis::Client` knows its user but not the password file).
static ACCESS: OnceLock<RedisAccess> = OnceLock::new();

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
        let clients = Clients {
            config: client_for(&layout.config, access)?,
            state: client_for(&layout.state, access)?,
            appl: client_for(&layout.appl, access)?,
        };
        let _ = ACCESS.set(access.clone());
        Ok(clients)
    }
}

/// Where `db` is reached: its unix socket, or its TCP address when asked.
pub fn address(db: &Database, access: &RedisAccess) -> Result<ConnectionAddr> {
    if access.tcp {
        let host = db.instance.hostname.as_deref().unwrap_or("127.0.0.1");
        return Ok(ConnectionAddr::Tcp(
            host.to_string(),
            db.instance.port.unwrap_or(6379),
        ));
    }
    let path = db.instance.unix_socket_path.as_ref().ok_or_else(|| {
        anyhow!(
            "database config: {} is on instance {:?}, which has no unix_socket_path; add one \
             to that instance in database_config.json or use --redis-tcp",
            db.name,
            db.instance_name
        )
    })?;
    Ok(ConnectionAddr::Unix(path.clone()))
}

/// A client for `db` that selects its database and authenticates as
/// `access` says on every connection it opens.
pub fn client_for(db: &Database, access: &RedisAccess) -> Result<Client> {
    let mut redis = RedisConnectionInfo::default()
        .set_db(db.id)
        // CLIENT SETINFO is not something the least-privilege user may run.
        .set_skip_set_lib_name();
    if let Some(user) = &access.user {
        redis = redis.set_username(user);
    }
    if let Some(Password(password)) = &access.password {
        redis = redis.set_password(password);
    }
    let info = address(db, access)?
        .into_connection_info()
        .map_err(|e| anyhow!("bad Redis address for {}: {e}", db.name))?
        .set_redis_settings(redis);
    Client::open(info).map_err(|e| anyhow!("bad Redis address for {}: {e}", db.name))
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

/// Connects, waiting out a Redis that is not there yet (or refuses the
/// user: an operator fixing the ACL is waited for like a Redis coming up):
/// at start-up on a switch the database container may still be coming up,
/// and exiting would only make supervisord restart the whole swss
/// container. Every attempt beats `status` (waiting is progress the
/// watchdog must not take for a wedge) and a failure says why in it, so
/// /healthz names what is wrong.
pub async fn connect_with_retry(
    client: &Client,
    what: &str,
    status: &Status,
) -> MultiplexedConnection {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut said = String::new();
    loop {
        status.beat();
        match connect(client).await {
            Ok(conn) => return conn,
            Err(e) => {
                let why = explain_client(&e, what, client);
                let delay = backoff.next_delay();
                if why != said {
                    warn!(retry_in_ms = delay.as_millis() as u64, "{why}; waiting");
                    said = why.clone();
                }
                status.set_redis(Err(why));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// `err`, from talking to `db`, in an operator's words: what is wrong and
/// what to do (the socket or address, the ACL user and its password file,
/// the command refused). The data path logs this and puts it in the
/// [`Status`] that /healthz reports.
pub fn explain(err: &redis::RedisError, db: &Database, access: &RedisAccess) -> String {
    let addr = address(db, access).map_or_else(|e| e.to_string(), |a| a.to_string());
    describe(
        err,
        &format!("{} (instance {:?})", db.name, db.instance_name),
        &addr,
        access,
    )
}

/// The kind of the I/O error under `err`, if it is one: from the error
/// chain, else from the OS error number redis-rs puts in its text.
fn io_kind(err: &redis::RedisError) -> Option<IoKind> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    let text = err.to_string();
    let errno = text
        .split("(os error ")
        .nth(1)?
        .split(')')
        .next()?
        .parse()
        .ok()?;
    Some(std::io::Error::from_raw_os_error(errno).kind())
}

/// [`explain`] for an error of `client`'s, `what` naming the database,
/// with the access the daemon was started with.
pub fn explain_client(err: &redis::RedisError, what: &str, client: &Client) -> String {
    let info = client.get_connection_info();
    let access = ACCESS.get().cloned().unwrap_or_else(|| RedisAccess {
        user: info.redis_settings().username().map(str::to_string),
        ..RedisAccess::default()
    });
    describe(err, what, &info.addr().to_string(), &access)
}

fn describe(err: &redis::RedisError, what: &str, addr: &str, access: &RedisAccess) -> String {
    let user = access.user_name();
    let file = access.password_file.as_deref().map_or_else(
        || "(no --redis-password-file given)".to_string(),
        |p| p.display().to_string(),
    );
    let refused_auth = err.kind() == ErrorKind::AuthenticationFailed
        || err.code() == Some("WRONGPASS")
        || err.code() == Some("NOAUTH");
    if refused_auth {
        return format!(
            "Redis at {addr} for {what} refused user {user:?}: wrong password or no such \
             enabled user ({err}); check that the password file {file} holds the password \
             whose SHA-256 the ACL has for {user} (see {ACL_EXAMPLE})"
        );
    }
    // A refused SELECT comes back as "refused to switch database", NOPERM's
    // words inside.
    let text = err.to_string();
    if err.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
        || err.code() == Some("NOPERM")
        || text.contains("no permissions")
    {
        let detail = err.detail().unwrap_or(&text);
        return format!(
            "Redis at {addr} for {what} refused a command of user {user:?}: NOPERM {detail}; \
             grant the user what {ACL_EXAMPLE} lists (`ACL LOG` on the server names the \
             command and key refused)"
        );
    }
    let is_socket = Path::new(addr).is_absolute();
    match io_kind(err) {
        Some(IoKind::NotFound) if is_socket => format!(
            "cannot reach Redis for {what}: the unix socket {addr} does not exist (is Redis \
             running? is unix_socket_path in database_config.json right?)"
        ),
        Some(IoKind::PermissionDenied) if is_socket => format!(
            "cannot reach Redis for {what}: no permission to use the unix socket {addr} (run \
             portsyncd in the socket's group, e.g. SupplementaryGroups=redis)"
        ),
        Some(IoKind::ConnectionRefused) => format!(
            "cannot reach Redis for {what}: nothing accepts connections at {addr} (is Redis running?)"
        ),
        _ => format!("cannot use Redis at {addr} for {what}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sonic::db_config::{STOCK_LAYOUT, parse_layout};

    #[test]
    fn the_password_is_never_printed() {
        let access = RedisAccess {
            user: Some("portsyncd".into()),
            password: Some(Password::new("s3cret-pw".into())),
            password_file: Some("/etc/portsyncd/redis.pw".into()),
            ..RedisAccess::default()
        };
        let shown = format!("{access:?}");
        assert!(
            !shown.contains("s3cret-pw") && shown.contains("<redacted>"),
            "{shown}"
        );
        let layout = parse_layout(STOCK_LAYOUT, Path::new("x.json")).unwrap();
        let client = client_for(&layout.state, &access).unwrap();
        let shown = format!("{:?}", client.get_connection_info());
        assert!(
            !shown.contains("s3cret-pw") && shown.contains("portsyncd"),
            "{shown}"
        );
        assert_eq!(client.get_connection_info().redis_settings().db(), 6);
    }

    #[test]
    fn a_wrong_password_names_the_user_and_the_file() {
        let layout = parse_layout(STOCK_LAYOUT, Path::new("x.json")).unwrap();
        let access = RedisAccess {
            user: Some("portsyncd".into()),
            password_file: Some("/etc/portsyncd/redis.pw".into()),
            ..RedisAccess::default()
        };
        let err = redis::RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        let why = explain(&err, &layout.appl, &access);
        assert!(
            why.contains("\"portsyncd\"")
                && why.contains("/etc/portsyncd/redis.pw")
                && why.contains("APPL_DB"),
            "{why}"
        );
    }

    #[test]
    fn an_instance_without_a_socket_is_an_error_naming_it() {
        let text = STOCK_LAYOUT.replace(r#", "unix_socket_path": "/var/run/redis/redis.sock""#, "");
        let layout = parse_layout(&text, Path::new("x.json")).unwrap();
        let err = client_for(&layout.state, &RedisAccess::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("STATE_DB") && err.contains("unix_socket_path"),
            "{err}"
        );
        client_for(
            &layout.state,
            &RedisAccess {
                tcp: true,
                ..RedisAccess::default()
            },
        )
        .unwrap();
    }
}
