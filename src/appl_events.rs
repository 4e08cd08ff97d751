//! Keyspace events of APPL_DB `PORT_TABLE:*`: how the data path learns
//! that a port was added to or removed from APPL_DB without asking on every
//! link message (upstream's `LinkSync::onMsg` reads APPL_DB each time) and
//! without polling ports that are never configured.
//!
//! An event only says "ask again": the port's configuration is then read
//! with `EXISTS` in the next round, whatever the event was (hset, del,
//! expired, rename). SONiC's database container runs Redis with
//! `notify-keyspace-events AKE`; when the subscription is (re)made, events
//! may have been missed, so every port is asked again.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::Client;
use redis::aio::PubSubStream;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::sonic::db_config::Database;
use crate::sonic::producer::{PORT_TABLE, table_key};

pub struct ApplEvents {
    client: Client,
    /// `__keyspace@<id>__:PORT_TABLE:` and the pattern made from it.
    prefix: Vec<u8>,
    pattern: Vec<u8>,
    stream: Option<PubSubStream>,
    /// Ask Redis whether it publishes keyspace events (not as an ACL user,
    /// who may not run CONFIG: that would only fill Redis's ACL LOG).
    ask_flags: bool,
    /// Redis said it publishes no keyspace events: ask every port once a
    /// second instead (as upstream asks on every message).
    off: bool,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl ApplEvents {
    pub fn new(client: Client, appl: &Database, ask_flags: bool) -> Self {
        let prefix = [
            format!("__keyspace@{}__:", appl.id).as_bytes(),
            &table_key(appl, PORT_TABLE, b""),
        ]
        .concat();
        ApplEvents {
            client,
            pattern: crate::startup::glob_escape(&prefix),
            prefix,
            stream: None,
            ask_flags,
            off: false,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            retry_at: None,
        }
    }

    /// Whether a subscription should be (re)made now.
    pub fn due(&self, now: Instant) -> bool {
        self.stream.is_none() && self.retry_at.is_none_or(|t| t <= now)
    }

    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| self.stream.is_none())
    }

    /// Subscribes; true when it did (the caller then asks every port again).
    pub async fn subscribe(&mut self, now: Instant) -> bool {
        let made = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.psubscribe(&self.pattern).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(crate::sonic::connect::RESPONSE_TIMEOUT, made).await {
            Ok(Ok(stream)) => {
                self.stream = Some(stream);
                self.retry_at = None;
                self.backoff.reset();
                info!(pattern = %String::from_utf8_lossy(&self.pattern), "following APPL_DB PORT_TABLE keyspace events");
                self.off = self.notifications_off().await;
                true
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                let delay = self.backoff.next_delay();
                warn!(
                    error,
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot subscribe to APPL_DB PORT_TABLE keyspace events; ports added to or removed from APPL_DB are noticed once it works"
                );
                self.retry_at = Some(now + delay);
                false
            }
        }
    }

    /// Whether Redis publishes no keyspace events for hashes and deletes
    /// (said once a subscription is made). Running as an ACL user, which may
    /// not run CONFIG, the server is taken to run on SONiC's settings.
    pub fn off(&self) -> bool {
        self.off
    }

    async fn notifications_off(&self) -> bool {
        if !self.ask_flags {
            return false;
        }
        let Ok(mut conn) = crate::sonic::connect::connect(&self.client).await else {
            return false;
        };
        let flags: redis::RedisResult<(String, String)> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn)
            .await;
        let Ok((_, flags)) = flags else {
            return false;
        };
        let off = !(flags.contains('K')
            && (flags.contains('A') || (flags.contains('g') && flags.contains('h'))));
        if off {
            warn!(
                notify_keyspace_events = flags,
                "Redis publishes no keyspace events for APPL_DB PORT_TABLE: asking APPL_DB about every port once a second instead (SONiC's database container runs Redis with notify-keyspace-events AKE)"
            );
        }
        off
    }

    /// The next event's port name; `None` when the subscription ended (it
    /// is made again). Pending forever while there is none.
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        let Some(stream) = self.stream.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            let Some(message) = stream.next().await else {
                self.stream = None;
                return None;
            };
            if let Ok(channel) = message.get_channel::<Vec<u8>>()
                && let Some(name) = channel.strip_prefix(self.prefix.as_slice())
            {
                return Some(name.to_vec());
            }
        }
    }
}
