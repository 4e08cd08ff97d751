//! Settings from the command line (and the file, see `config_file`), and
//! [`validate`]: the one check of them that both the daemon and
//! `check-config` run, so the two cannot disagree. Every tunable has a
//! default that is right on a switch, so `/usr/bin/portsyncd` with no
//! arguments works there.

pub mod endpoint;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;

pub use crate::logging::LogFormat;
use crate::logging::syslog::DEFAULT_SOCKET as DEFAULT_SYSLOG_SOCKET;
use crate::logging::{LogOutput, LogSettings};
use crate::sonic::connect::{Clients, Password, RedisAccess};
use crate::sonic::db_config::{DEFAULT_DB_CONFIG, DbLayout, load_layout};

/// portsyncd: keeps SONiC's Redis in step with the kernel's front-panel ports.
#[derive(Debug, Clone, Parser)]
#[command(name = "portsyncd", version, about, long_about = None,
          after_help = "Check a configuration without starting: portsyncd check-config [--config PATH] [FLAGS]")]
pub struct Cli {
    /// TOML configuration file: each key is a flag's name with `_` for `-`
    /// (`queue_capacity = 1024`); flags on the command line win over it.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// SONiC database_config.json describing the Redis layout.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_DB_CONFIG)]
    pub db_config: PathBuf,

    /// Multi-ASIC namespace (asic0, asic1, ...) for use on the host: its
    /// database config is found through database_global.json beside
    /// --db-config. Not needed inside a `swssN` container, where the default
    /// --db-config already is the namespace's own (NAMESPACE_ID is ignored).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,

    /// Reach Redis over TCP (hostname/port of the instance) instead of its
    /// unix socket.
    #[arg(long)]
    pub redis_tcp: bool,

    /// Redis ACL user to authenticate as on every connection (see
    /// docs/examples/redis-acl.conf for a least-privilege one). Needs
    /// --redis-password-file.
    #[arg(long, value_name = "NAME")]
    pub redis_user: Option<String>,

    /// File holding the Redis password (one line; a final newline is
    /// ignored). It must not be readable by group or others. Never logged.
    #[arg(long, value_name = "PATH")]
    pub redis_password_file: Option<PathBuf>,

    /// Do not start the metrics and health endpoint.
    #[arg(long)]
    pub no_metrics: bool,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level: a SONiC level (EMERG, ALERT, CRIT, ERROR, WARN, NOTICE,
    /// INFO, DEBUG) or a tracing filter such as `portsyncd=trace`. When
    /// absent, CONFIG_DB `LOGGER|portsyncd` LOGLEVEL decides (default NOTICE).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Where log lines go. When absent, CONFIG_DB `LOGGER|portsyncd`
    /// LOGOUTPUT decides (default SYSLOG).
    #[arg(long, value_enum, value_name = "OUTPUT")]
    pub log_output: Option<LogOutput>,

    /// The local syslog socket for the SYSLOG output.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SYSLOG_SOCKET)]
    pub syslog_socket: PathBuf,

    /// Netlink receive buffer to ask the kernel for, in bytes. Large, so a
    /// burst of link events does not overrun it while Redis is slow.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    pub netlink_rcvbuf: usize,

    /// Most distinct keys waiting for Redis before the data path stops
    /// reading netlink (an overrun then, repaired by a re-dump).
    #[arg(long, value_name = "KEYS", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub queue_capacity: u64,

    /// How long SIGTERM/SIGINT waits for pending writes to reach Redis.
    #[arg(long, value_name = "SECONDS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(0..=60))]
    pub shutdown_timeout: u64,

    #[command(flatten)]
    pub metrics: endpoint::MetricsArgs,
}

/// How a refusal names a setting: the key as written in the file, and its
/// flag.
pub fn key(name: &str) -> String {
    format!("`{name}` (--{})", name.replace('_', "-"))
}

/// Longest password file read (a Redis password is a line).
const PASSWORD_CAP: u64 = 4096;

/// What [`validate`] found usable.
pub struct Checked {
    pub layout: DbLayout,
    pub access: RedisAccess,
    pub clients: Clients,
}

/// Everything the daemon refuses to start with, in one place: the daemon
/// (exit 2) and `check-config` (exit 1) both call this, with the same words.
/// The endpoint's settings and files are not in it: what is wrong there
/// keeps the endpoint closed, never the daemon down (an exit would restart
/// the whole swss container); check-config refuses those on top.
pub fn validate(cli: &Cli) -> Result<Checked> {
    if let Some(level) = &cli.log_level {
        crate::logging::check_level(level).with_context(|| key("log_level"))?;
    }
    let namespace = cli.effective_namespace();
    let layout = load_layout(&cli.db_config, namespace.as_deref()).with_context(|| {
        let ns = namespace
            .as_ref()
            .map(|ns| format!(" with {} {ns}", key("namespace")));
        format!(
            "{} {}{}",
            key("db_config"),
            cli.db_config.display(),
            ns.unwrap_or_default()
        )
    })?;
    let access = cli.redis_access()?;
    let clients = Clients::new(&layout, &access)
        .with_context(|| format!("{} {}", key("db_config"), cli.db_config.display()))?;
    Ok(Checked {
        layout,
        access,
        clients,
    })
}

impl Cli {
    /// How to reach Redis, as the flags say; reads the password file
    /// (refusing one that group or others may read).
    pub fn redis_access(&self) -> Result<RedisAccess> {
        let mut access = RedisAccess {
            tcp: self.redis_tcp,
            user: self.redis_user.clone(),
            ..RedisAccess::default()
        };
        if let Some(user) = &self.redis_user
            && (user.is_empty() || user.contains(|c: char| c.is_whitespace() || c.is_control()))
        {
            bail!("{} {user:?} is not a Redis user name", key("redis_user"));
        }
        let Some(path) = &self.redis_password_file else {
            if self.redis_user.is_some() {
                bail!(
                    "{} needs {} too: the file holding that user's password",
                    key("redis_user"),
                    key("redis_password_file")
                );
            }
            return Ok(access);
        };
        let what = key("redis_password_file");
        let bytes = crate::bounded_file::read(path, "Redis password file", PASSWORD_CAP)
            .with_context(|| what.clone())?;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("{what}: cannot examine {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{what}: {} has mode {:04o}, readable by group or others: run `chmod 600 {}` \
                 (owned by the user portsyncd runs as)",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("{what}: {} is not UTF-8 text", path.display()))?;
        let password = text.strip_suffix('\n').unwrap_or(&text);
        let password = password.strip_suffix('\r').unwrap_or(password);
        if password.is_empty() || password.contains('\n') {
            bail!(
                "{what}: {} must hold the password on one line, and nothing else",
                path.display()
            );
        }
        access.password = Some(Password::new(password.to_string()));
        access.password_file = Some(path.clone());
        Ok(access)
    }

    /// What the logger is set up with.
    pub fn log_settings(&self) -> LogSettings {
        LogSettings {
            format: self.log_format,
            level: self.log_level.clone(),
            output: self.log_output,
            syslog_socket: self.syslog_socket.clone(),
        }
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }

    /// The namespace to resolve through database_global.json: `--namespace`
    /// only. SONiC's `NAMESPACE_ID` is deliberately not read: inside
    /// `swssN` the default database config is already the namespace's own
    /// (the host's `/var/run/redisN` is mounted as `/var/run/redis`) and no
    /// database_global.json exists there; upstream portsyncd connects with
    /// `DBConnector("APPL_DB", 0)`, i.e. the default file, too.
    pub fn effective_namespace(&self) -> Option<String> {
        self.namespace.clone().filter(|ns| !ns.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_right_on_a_switch() {
        let cli = Cli::try_parse_from(["portsyncd"]).unwrap();
        assert_eq!(cli.db_config, PathBuf::from(DEFAULT_DB_CONFIG));
        assert!(!cli.redis_tcp && !cli.no_metrics);
        assert_eq!(cli.log_format, LogFormat::Text);
        assert!(cli.log_level.is_none() && cli.log_output.is_none());
        assert_eq!(cli.syslog_socket, PathBuf::from("/dev/log"));
    }

    #[test]
    fn the_documented_flags_parse() {
        let cli = Cli::try_parse_from([
            "portsyncd",
            "--db-config",
            "/x.json",
            "--namespace",
            "asic1",
            "--no-metrics",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--log-output",
            "stderr",
        ])
        .unwrap();
        assert_eq!(cli.db_config, PathBuf::from("/x.json"));
        assert_eq!(cli.effective_namespace().as_deref(), Some("asic1"));
        assert!(cli.no_metrics);
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        assert_eq!(cli.log_output, Some(LogOutput::Stderr));
    }

    #[test]
    fn only_the_flag_picks_a_namespace() {
        // NAMESPACE_ID in the environment is covered black-box by
        // tests/multi_asic.rs (setting it here would race other tests).
        let cli = Cli::try_parse_from(["portsyncd"]).unwrap();
        assert_eq!(cli.effective_namespace(), None);
        let empty = Cli::try_parse_from(["portsyncd", "--namespace", ""]).unwrap();
        assert_eq!(empty.effective_namespace(), None);
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(Cli::try_parse_from(["portsyncd", "--queue-capacity", "1"]).is_err());
        assert!(Cli::try_parse_from(["portsyncd", "--log-format", "xml"]).is_err());
    }
}
