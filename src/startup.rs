//! What the daemon reads from Redis before the first link message: CONFIG_DB
//! ports and switch type, and the warm-start decision; and the pipelined
//! reads the data path makes of STATE_DB rows.
//!
//! Values are bytes: a CONFIG_DB field need not be UTF-8, and upstream
//! copies it to APPL_DB unchanged, so nothing here decodes it.

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tracing::info;

use crate::port_name::PortName;
use crate::sonic::db_config::DbLayout;
use crate::sonic::device_metadata;
use crate::sonic::producer::{PORT_TABLE, table_key};
use crate::sonic::warm_table::{self, WarmStart};
use crate::sync::STATE_FIELDS;

/// Values of the four STATE_DB fields; `None` where the row lacks one.
pub type Row = [Option<Vec<u8>>; 4];

/// One CONFIG_DB `PORT|<name>` hash.
pub type PortConfig = (PortName, Vec<(Vec<u8>, Vec<u8>)>);

/// What CONFIG_DB and STATE_DB say before any netlink message is read.
pub struct StartupInputs {
    /// `DEVICE_METADATA|localhost` `switch_type` is `dpu`.
    pub dpu: bool,
    pub warm: WarmStart,
    /// CONFIG_DB `PORT|<name>` hashes, sorted by name.
    pub ports: Vec<PortConfig>,
    /// CONFIG_DB `WARM_RESTART|swss` `portsyncd_timer`, in seconds.
    pub reconcile_timer: Option<u64>,
}

/// Reads CONFIG_DB `PORT` (one KEYS, then pipelined HGETALLs).
pub async fn read_ports(
    config: &mut MultiplexedConnection,
    layout: &DbLayout,
) -> redis::RedisResult<Vec<PortConfig>> {
    let prefix = table_key(&layout.config, "PORT", b"");
    let mut keys: Vec<Vec<u8>> = config.keys(glob_escape(&prefix)).await?;
    // KEYS matched the escaped prefix; still, never slice a key that does
    // not start with it.
    keys.retain(|k| k.len() > prefix.len() && k.starts_with(&prefix));
    keys.sort();
    let hashes: Vec<Vec<(Vec<u8>, Vec<u8>)>> = in_chunks(config, &keys, false, |pipe, key| {
        pipe.hgetall(key);
    })
    .await?;
    Ok(keys
        .iter()
        .zip(hashes)
        .map(|(key, fields)| (PortName::new(&key[prefix.len()..]), fields))
        .collect())
}

/// Keys per pipelined read at start-up. Redis's reply to a whole switch's
/// worth of keys at once is parsed into one tree of values before it is
/// converted: on 1,024 ports most of the start-up's peak memory, which
/// stays resident afterwards. Chunks keep it to a fraction, for a round
/// trip per chunk (a few milliseconds on a large switch).
const READ_CHUNK: usize = 128;

/// One pipelined command per item, sent [`READ_CHUNK`] at a time; the
/// replies in order. No items, no round trip (Redis refuses an empty
/// pipeline). `per_item_errors`: a command Redis refuses is that item's
/// `Err` rather than the whole read's.
pub(crate) async fn in_chunks<I, T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    items: &[I],
    per_item_errors: bool,
    command: impl Fn(&mut redis::Pipeline, &I),
) -> redis::RedisResult<Vec<T>> {
    let mut replies = Vec::with_capacity(items.len());
    for chunk in items.chunks(READ_CHUNK) {
        let mut pipe = redis::pipe();
        if per_item_errors {
            pipe.ignore_errors();
        }
        for item in chunk {
            command(&mut pipe, item);
        }
        let part: Vec<T> = pipe.query_async(conn).await?;
        replies.extend(part);
    }
    Ok(replies)
}

/// Reads everything the rules need to start.
pub async fn read_inputs(
    config: &mut MultiplexedConnection,
    state: &mut MultiplexedConnection,
    layout: &DbLayout,
) -> redis::RedisResult<StartupInputs> {
    let switch_type: Option<Vec<u8>> = config
        .hget(
            layout.config.key("DEVICE_METADATA", "localhost"),
            "switch_type",
        )
        .await?;
    let warm = warm_table::check_warm_start(state, &layout.state).await?;
    let reconcile_timer = warm_table::warm_restart_timer(config, &layout.config).await?;
    let ports = read_ports(config, layout).await?;
    if ports.is_empty() {
        info!("CONFIG_DB has no PORT entries; ports can be added later, continuing");
    }
    Ok(StartupInputs {
        dpu: device_metadata::is_dpu(switch_type.as_deref()),
        warm,
        ports,
        reconcile_timer,
    })
}

/// Our four fields of each port's STATE_DB row (pipelined HMGETs). A row
/// Redis cannot read (not a hash) reads as empty: its writes will say why.
pub async fn read_state_rows(
    state: &mut MultiplexedConnection,
    layout: &DbLayout,
    ports: &[PortName],
) -> redis::RedisResult<Vec<Row>> {
    let rows: Vec<redis::RedisResult<Vec<Option<Vec<u8>>>>> =
        in_chunks(state, ports, true, |pipe, port| {
            pipe.cmd("HMGET")
                .arg(table_key(&layout.state, PORT_TABLE, port.as_bytes()))
                .arg(&STATE_FIELDS[..]);
        })
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let mut row = Row::default();
            for (slot, value) in row.iter_mut().zip(r.unwrap_or_default()) {
                *slot = value;
            }
            row
        })
        .collect())
}

/// Escapes KEYS' glob characters, so a separator such as `?` or `*`
/// matches only itself.
pub(crate) fn glob_escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 2);
    for &b in raw {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'*');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_the_prefix_match_only_themselves() {
        assert_eq!(glob_escape(b"PORT|"), b"PORT|*");
        assert_eq!(glob_escape(b"PORT?"), b"PORT\\?*");
        assert_eq!(glob_escape(b"P[*]\\"), b"P\\[\\*\\]\\\\*");
    }
}
