//! CONFIG_DB `LOGGER|portsyncd`: where every swss daemon takes its log level
//! and output from, and what `swssloglevel -l DEBUG -c portsyncd` writes.
//!
//! At start the missing fields get SONiC's defaults; then a keyspace
//! subscription on the key re-reads it on every change and applies it to the
//! logger without a restart. This task has its own connections and never
//! holds up port sync: while Redis is away it just keeps trying.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Result, anyhow};
use futures_util::StreamExt;
use redis::Client;
use redis::aio::MultiplexedConnection;
use tracing::{debug, info, warn};

use super::connect::{connect, explain_client};
use super::db_config::Database;
use super::redis_value::shown;
use crate::backoff::Backoff;
use crate::logging::{self, LogOutput, Severity};

pub const TABLE: &str = "LOGGER";
pub const DAEMON: &str = "portsyncd";
pub const LEVEL_FIELD: &str = "LOGLEVEL";
pub const OUTPUT_FIELD: &str = "LOGOUTPUT";

const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the entry asks for, with SONiC's defaults put in for missing or
/// unknown values, and what was wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub struct LoggerSettings {
    pub level: Severity,
    pub output: LogOutput,
    pub problems: Vec<String>,
}

/// The entry's fields as Redis holds them: byte strings, not necessarily
/// UTF-8 (an HGETALL into text would fail on one bad byte anywhere).
pub type RawFields = HashMap<Vec<u8>, Vec<u8>>;

/// Reads the entry's fields the way upstream does: anything not understood
/// (also bytes that are not UTF-8) is reported and replaced by the default.
pub fn settings_from(fields: &RawFields) -> LoggerSettings {
    let mut problems = Vec::new();
    let text = |field: &str| {
        fields
            .get(field.as_bytes())
            .map(|v| (v, std::str::from_utf8(v).ok()))
    };
    let level = match text(LEVEL_FIELD) {
        None => Severity::DEFAULT,
        Some((raw, v)) => v.and_then(Severity::from_db).unwrap_or_else(|| {
            problems.push(format!(
                "{LEVEL_FIELD} {} is not one of EMERG, ALERT, CRIT, ERROR, WARN, NOTICE, \
                 INFO, DEBUG; using {}",
                shown(raw),
                Severity::DEFAULT.as_str()
            ));
            Severity::DEFAULT
        }),
    };
    let output = match text(OUTPUT_FIELD) {
        None => LogOutput::DEFAULT,
        Some((raw, v)) => v.and_then(LogOutput::from_db).unwrap_or_else(|| {
            problems.push(format!(
                "{OUTPUT_FIELD} {} is not one of SYSLOG, STDOUT, STDERR; using {}",
                shown(raw),
                LogOutput::DEFAULT.as_str()
            ));
            LogOutput::DEFAULT
        }),
    };
    LoggerSettings {
        level,
        output,
        problems,
    }
}

/// Whether `notify-keyspace-events` flags publish keyspace events for hash
/// commands: `K` plus `h` or `A` (SONiC's database container sets `AKE`).
pub fn notifications_cover_hashes(flags: &str) -> bool {
    flags.contains('K') && (flags.contains('A') || flags.contains('h'))
}

/// Starts following `LOGGER|portsyncd` of `config` on a thread of its own,
/// off the data path.
pub fn spawn(config: &Database, client: Client) -> Result<()> {
    let key = config.key(TABLE, DAEMON);
    let channel = format!("__keyspace@{}__:{key}", config.id);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("logger-table".into())
        .spawn(move || runtime.block_on(follow(client, key, channel)))?;
    Ok(())
}

/// Runs for the life of the process, reconnecting whenever Redis goes away
/// (the key may have changed meanwhile, so it is re-read every time).
async fn follow(client: Client, key: String, channel: String) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut said_notifications_off = false;
    let mut failures = 0u32;
    let mut followed_before = false;
    loop {
        let said = &mut said_notifications_off;
        let result = follow_once(&client, &key, &channel, said, &mut followed_before).await;
        match result {
            Ok(()) => {
                failures = 0;
                backoff.reset();
                warn!("lost the CONFIG_DB subscription to {key}; reconnecting");
            }
            Err(e) => {
                // Once is enough in the log while Redis stays away.
                if failures == 0 {
                    warn!(error = %e, "cannot follow CONFIG_DB {key}; retrying");
                } else {
                    debug!(error = %e, "cannot follow CONFIG_DB {key}; retrying");
                }
                failures += 1;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Subscribes, writes the defaults, applies the entry, then applies every
/// change until the subscription ends.
async fn follow_once(
    client: &Client,
    key: &str,
    channel: &str,
    said_notifications_off: &mut bool,
    followed_before: &mut bool,
) -> Result<()> {
    // Subscribe before reading, so no change slips in between.
    let mut pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| anyhow!("connecting for the keyspace subscription timed out"))?
        .map_err(|e| {
            anyhow!(
                "keyspace subscription: {}",
                explain_client(&e, "CONFIG_DB", client)
            )
        })?;
    pubsub.subscribe(channel).await.map_err(|e| {
        anyhow!(
            "subscribing to {channel}: {}",
            explain_client(&e, "CONFIG_DB", client)
        )
    })?;
    let mut conn = connect(client)
        .await
        .map_err(|e| anyhow!("{}", explain_client(&e, "CONFIG_DB", client)))?;
    // A least-privilege user may not read the server's settings (CONFIG
    // GET): do not ask, so its refusal never shows in the server's ACL LOG.
    let may_read_config = client
        .get_connection_info()
        .redis_settings()
        .username()
        .is_none();
    if may_read_config && !*said_notifications_off {
        *said_notifications_off = warn_if_notifications_off(&mut conn, key).await;
    }
    write_defaults(&mut conn, key).await?;
    apply(&mut conn, key).await?;
    if *followed_before {
        info!("following CONFIG_DB {key} again");
    }
    *followed_before = true;
    let mut changes = pubsub.on_message();
    while let Some(message) = changes.next().await {
        debug!(
            channel = message.get_channel_name(),
            "CONFIG_DB {key} changed"
        );
        apply(&mut conn, key).await?;
    }
    Ok(())
}

/// Says once that changes will not be followed when the server does not
/// publish them. Returns whether it said so.
async fn warn_if_notifications_off(conn: &mut MultiplexedConnection, key: &str) -> bool {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await;
    match reply {
        Ok(pair) => {
            let flags = pair.get(1).map(String::as_str).unwrap_or("");
            if notifications_cover_hashes(flags) {
                return false;
            }
            warn!(
                notify_keyspace_events = flags,
                "Redis has keyspace notifications off, so changes to CONFIG_DB {key} are not \
                 followed: the log level read at start-up stays until portsyncd restarts \
                 (SONiC's database container runs Redis with notify-keyspace-events AKE)"
            );
            true
        }
        Err(e) => {
            debug!(error = %e, "cannot read notify-keyspace-events; assuming notifications are on");
            false
        }
    }
}

/// Writes SONiC's default for each missing field, leaving present ones alone.
async fn write_defaults(conn: &mut MultiplexedConnection, key: &str) -> Result<()> {
    let (level_written, output_written): (bool, bool) = redis::pipe()
        .atomic()
        .hset_nx(key, LEVEL_FIELD, Severity::DEFAULT.as_str())
        .hset_nx(key, OUTPUT_FIELD, LogOutput::DEFAULT.as_str())
        .query_async(conn)
        .await
        .map_err(|e| anyhow!("cannot write the defaults of {key}: {e}"))?;
    if level_written || output_written {
        info!(
            level_written,
            output_written, "wrote the missing defaults of CONFIG_DB {key}"
        );
    }
    Ok(())
}

/// Reads the entry and hands it to the logger.
async fn apply(conn: &mut MultiplexedConnection, key: &str) -> Result<()> {
    let fields: RawFields = redis::cmd("HGETALL")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(|e| anyhow!("cannot read {key}: {e}"))?;
    let settings = settings_from(&fields);
    for problem in &settings.problems {
        warn!("CONFIG_DB {key}: {problem}");
    }
    if let Some(control) = logging::control() {
        let source = format!("CONFIG_DB {key}");
        control.apply_db_level(settings.level, &source);
        control.apply_db_output(settings.output, &source);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &[u8])]) -> RawFields {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn missing_fields_take_sonic_defaults() {
        let s = settings_from(&HashMap::new());
        assert_eq!((s.level, s.output), (Severity::Notice, LogOutput::Syslog));
        assert!(s.problems.is_empty());
    }

    #[test]
    fn present_fields_are_used() {
        let s = settings_from(&fields(&[("LOGLEVEL", b"DEBUG"), ("LOGOUTPUT", b"STDERR")]));
        assert_eq!((s.level, s.output), (Severity::Debug, LogOutput::Stderr));
    }

    #[test]
    fn unknown_values_are_reported_and_defaulted() {
        let s = settings_from(&fields(&[("LOGLEVEL", b"LOUD"), ("LOGOUTPUT", b"FILE")]));
        assert_eq!((s.level, s.output), (Severity::Notice, LogOutput::Syslog));
        assert_eq!(s.problems.len(), 2);
        assert!(s.problems[0].contains("\"LOUD\""), "{:?}", s.problems);
    }

    #[test]
    fn bytes_that_are_not_text_are_reported_and_defaulted() {
        let huge = vec![b'D'; 1 << 20];
        for (level, output) in [
            (&b"\xff\xfeDEBUG"[..], &b"\xc3"[..]),
            (b"", b""),
            (b"18446744073709551615", b"-1"),
            (b"NaN", b"STDERR\x00"),
            (&huge[..], b"stderr"),
        ] {
            let s = settings_from(&fields(&[("LOGLEVEL", level), ("LOGOUTPUT", output)]));
            assert_eq!((s.level, s.output), (Severity::Notice, LogOutput::Syslog));
            assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
            assert!(s.problems.iter().all(|p| p.len() < 300), "{:?}", s.problems);
        }
        // A field of another writer that is not UTF-8 spoils nothing.
        let mut f = fields(&[("LOGLEVEL", b"INFO")]);
        f.insert(b"\xffother".to_vec(), b"\xff".to_vec());
        assert_eq!(settings_from(&f).level, Severity::Info);
    }

    #[test]
    fn notification_flags_are_understood() {
        assert!(notifications_cover_hashes("AKE"));
        assert!(notifications_cover_hashes("Kh"));
        assert!(!notifications_cover_hashes(""));
        assert!(
            !notifications_cover_hashes("AE"),
            "keyevent only is not enough"
        );
        assert!(!notifications_cover_hashes("Kg"));
    }
}
