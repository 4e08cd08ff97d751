//! The warm-restart tables of STATE_DB, as swss-common's `WarmStart` uses
//! them for application `portsyncd` in container `swss`.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

use super::db_config::Database;
use super::redis_value::{Reading, decimal, shown};

pub const APP_NAME: &str = "portsyncd";
pub const CONTAINER_NAME: &str = "swss";
const ENABLE_TABLE: &str = "WARM_RESTART_ENABLE_TABLE";
pub const RESTART_TABLE: &str = "WARM_RESTART_TABLE";

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

/// The largest `restore_count` kept. swss-common holds the count in a
/// `uint32_t` (`(uint32_t)stoul(value)`, then `++`), so a larger stored
/// value wraps there and a non-number throws; here it saturates.
pub const MAX_RESTORE_COUNT: u64 = u32::MAX as u64;

/// The largest `portsyncd_timer` used, in seconds: swss-common's
/// `MAXIMUM_WARMRESTART_TIMER_VALUE`. Upstream ignores a larger value (and
/// falls back to its default); here it is capped, which keeps the
/// operator's intent of a long bound.
pub const MAX_RECONCILE_TIMER_SECS: u64 = 9999;

/// Whether a `WARM_RESTART_ENABLE_TABLE` `enable` value turns warm restart
/// on: exactly `true`, as swss-common compares it.
pub fn enable_is_true(raw: Option<&[u8]>) -> bool {
    raw == Some(b"true")
}

/// The warm-start decision from the two `enable` values and the stored
/// `restore_count`, as swss-common's `WarmStart::checkWarmStart`: warm only
/// if enabled **and** a count exists; warm increments the count, cold sets
/// 0. A count that is not a number counts from 0 (upstream: `stoul`
/// throws and the daemon dies); one beyond [`MAX_RESTORE_COUNT`] saturates
/// there (upstream: wraps).
pub fn warm_start_from(
    system_enable: Option<&[u8]>,
    swss_enable: Option<&[u8]>,
    restore_count: Option<&[u8]>,
) -> Reading<WarmStart> {
    let cold = WarmStart {
        warm: false,
        restore_count: 0,
    };
    if !(enable_is_true(system_enable) || enable_is_true(swss_enable)) {
        return Reading::as_stored(cold);
    }
    let Some(raw) = restore_count else {
        return Reading::decided(
            cold,
            "warm restart is enabled but there is no restore_count: falling back to a cold start"
                .into(),
        );
    };
    let mut notes = Vec::new();
    let previous = decimal(raw).unwrap_or_else(|| {
        notes.push(format!(
            "restore_count {} is not a whole number; counting from 0",
            shown(raw)
        ));
        0
    });
    let next = previous.saturating_add(1).min(MAX_RESTORE_COUNT);
    if next == MAX_RESTORE_COUNT {
        notes.push(format!(
            "restore_count {} reached the maximum; it stays at {MAX_RESTORE_COUNT}",
            shown(raw)
        ));
    }
    let warm = WarmStart {
        warm: true,
        restore_count: next,
    };
    match notes.is_empty() {
        true => Reading::as_stored(warm),
        false => Reading::decided(warm, notes.join("; ")),
    }
}

/// CONFIG_DB `WARM_RESTART|swss` `portsyncd_timer` as the seconds to use:
/// `None` (the caller's default) when absent, 0 or not a whole number, as
/// swss-common's `getWarmStartTimer`; capped at
/// [`MAX_RECONCILE_TIMER_SECS`].
pub fn reconcile_timer_from(raw: Option<&[u8]>) -> Reading<Option<u64>> {
    let Some(raw) = raw else {
        return Reading::as_stored(None);
    };
    match decimal(raw) {
        Some(0) => Reading::as_stored(None),
        Some(secs) if secs > MAX_RECONCILE_TIMER_SECS => Reading::decided(
            Some(MAX_RECONCILE_TIMER_SECS),
            format!(
                "portsyncd_timer {} is above the maximum; using {MAX_RECONCILE_TIMER_SECS} s",
                shown(raw)
            ),
        ),
        Some(secs) => Reading::as_stored(Some(secs)),
        None => Reading::decided(
            None,
            format!(
                "portsyncd_timer {} is not a whole number of seconds; using the default",
                shown(raw)
            ),
        ),
    }
}

/// Reads the warm-start inputs from STATE_DB, decides with
/// [`warm_start_from`] and writes the new `restore_count`. Values are read
/// as bytes, so no stored value can make this fail.
pub async fn check_warm_start(
    conn: &mut MultiplexedConnection,
    state: &Database,
) -> redis::RedisResult<WarmStart> {
    let system: Option<Vec<u8>> = conn
        .hget(state.key(ENABLE_TABLE, "system"), "enable")
        .await?;
    let swss: Option<Vec<u8>> = conn
        .hget(state.key(ENABLE_TABLE, CONTAINER_NAME), "enable")
        .await?;
    let app_key = state.key(RESTART_TABLE, APP_NAME);
    let count: Option<Vec<u8>> = conn.hget(&app_key, "restore_count").await?;
    let reading = warm_start_from(system.as_deref(), swss.as_deref(), count.as_deref());
    if let Some(note) = &reading.note {
        warn!("{app_key}: {note}");
    }
    let outcome = reading.value;
    set_restore_count(conn, state, outcome.restore_count).await?;
    info!(
        event = "warm_restart_check",
        warm = outcome.warm,
        restore_count = outcome.restore_count,
        "warm start check done"
    );
    Ok(outcome)
}

/// Sets `WARM_RESTART_TABLE|portsyncd` `restore_count`.
pub async fn set_restore_count(
    conn: &mut MultiplexedConnection,
    state: &Database,
    count: u64,
) -> redis::RedisResult<()> {
    conn.hset(state.key(RESTART_TABLE, APP_NAME), "restore_count", count)
        .await
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

/// `WARM_RESTART|swss` `portsyncd_timer` from CONFIG_DB, in seconds, as
/// [`reconcile_timer_from`] reads it (the decision is logged).
pub async fn warm_restart_timer(
    conn: &mut MultiplexedConnection,
    config: &Database,
) -> redis::RedisResult<Option<u64>> {
    let key = config.key("WARM_RESTART", CONTAINER_NAME);
    let value: Option<Vec<u8>> = conn.hget(&key, "portsyncd_timer").await?;
    let reading = reconcile_timer_from(value.as_deref());
    if let Some(note) = &reading.note {
        warn!("CONFIG_DB {key}: {note}");
    }
    Ok(reading.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warm(count: u64) -> WarmStart {
        WarmStart {
            warm: true,
            restore_count: count,
        }
    }

    const COLD: WarmStart = WarmStart {
        warm: false,
        restore_count: 0,
    };

    #[test]
    fn warm_only_when_enabled_and_counted() {
        let on = Some(&b"true"[..]);
        assert_eq!(warm_start_from(None, None, Some(b"3")).value, COLD);
        assert_eq!(warm_start_from(on, None, Some(b"3")).value, warm(4));
        assert_eq!(warm_start_from(None, on, Some(b"0")).value, warm(1));
        let no_count = warm_start_from(on, None, None);
        assert_eq!(no_count.value, COLD);
        assert!(no_count.note.is_some());
        for not_on in [&b"TRUE"[..], b"true ", b"1", b"", b"\xff"] {
            assert_eq!(warm_start_from(Some(not_on), None, Some(b"1")).value, COLD);
        }
    }

    #[test]
    fn restore_count_saturates_and_says_so() {
        let on = Some(&b"true"[..]);
        for (stored, next) in [
            (&b"18446744073709551615"[..], MAX_RESTORE_COUNT),
            (b"99999999999999999999999999", MAX_RESTORE_COUNT),
            (b"4294967295", MAX_RESTORE_COUNT),
            (b"4294967294", MAX_RESTORE_COUNT),
            (b"4294967293", MAX_RESTORE_COUNT - 1),
        ] {
            let r = warm_start_from(on, None, Some(stored));
            assert_eq!(r.value, warm(next), "{}", shown(stored));
            assert_eq!(r.note.is_some(), next == MAX_RESTORE_COUNT);
        }
        for junk in [&b"-1"[..], b"NaN", b"", b"\xff\xfe", b"1e9"] {
            let r = warm_start_from(on, None, Some(junk));
            assert_eq!(r.value, warm(1), "{}", shown(junk));
            assert!(r.note.unwrap().contains("not a whole number"));
        }
    }

    #[test]
    fn timer_is_capped_and_junk_means_the_default() {
        assert_eq!(reconcile_timer_from(None), Reading::as_stored(None));
        assert_eq!(reconcile_timer_from(Some(b"0")).value, None);
        assert_eq!(
            reconcile_timer_from(Some(b"120")),
            Reading::as_stored(Some(120))
        );
        for huge in [
            &b"18446744073709551615"[..],
            b"10000",
            b"1000000000000000000000",
        ] {
            let r = reconcile_timer_from(Some(huge));
            assert_eq!(r.value, Some(MAX_RECONCILE_TIMER_SECS));
            assert!(r.note.unwrap().contains("maximum"));
        }
        for junk in [&b"-1"[..], b"NaN", b"", b"\xff", b"1.5", b"0x1E"] {
            let r = reconcile_timer_from(Some(junk));
            assert_eq!(r.value, None, "{}", shown(junk));
            assert!(r.note.is_some());
        }
    }
}
