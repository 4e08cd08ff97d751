//! Keyspace notifications, timestamped the moment they arrive: the harness's
//! view of when a write became visible in Redis.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One notification: when it arrived, and for which key.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub key: String,
}

/// A subscriber thread on `__keyspace@DB__:PATTERN` channels.
pub struct Notifications {
    pub rx: Receiver<Seen>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Notifications {
    /// `patterns` are (database, key pattern) pairs.
    pub fn subscribe(socket: &Path, patterns: &[(i64, &str)]) -> Notifications {
        let url = format!("redis+unix://{}", socket.display());
        let mut con = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("subscriber connection");
        let channels: Vec<String> = patterns
            .iter()
            .map(|(db, p)| format!("__keyspace@{db}__:{p}"))
            .collect();
        let (tx, rx) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let (ready_tx, ready_rx) = channel();
        let handle = std::thread::spawn(move || {
            let mut pubsub = con.as_pubsub();
            for c in &channels {
                pubsub.psubscribe(c).expect("PSUBSCRIBE");
            }
            pubsub
                .set_read_timeout(Some(Duration::from_millis(100)))
                .expect("read timeout");
            ready_tx.send(()).expect("ready");
            while !stop2.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(msg) => {
                        let at = Instant::now();
                        let channel = msg.get_channel_name();
                        let key = channel.split_once("__:").map_or(channel, |(_, k)| k);
                        let _ = tx.send(Seen {
                            at,
                            key: key.to_string(),
                        });
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(e) => panic!("keyspace subscriber: {e}"),
                }
            }
        });
        ready_rx.recv().expect("subscriber ready");
        Notifications {
            rx,
            stop,
            handle: Some(handle),
        }
    }

    /// Drops every notification received so far.
    pub fn clear(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// The first notification for `key` within `timeout`, skipping others.
    pub fn wait_key(&self, key: &str, timeout: Duration) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(seen) if seen.key == key => return Some(seen),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => panic!("keyspace subscriber ended"),
            }
        }
    }

    /// Collects notifications until none arrives for `quiet`; returns the
    /// last one whose key starts with `prefix`, if any.
    pub fn last_until_quiet(&self, prefix: &str, quiet: Duration) -> Option<Seen> {
        let mut last = None;
        while let Ok(seen) = self.rx.recv_timeout(quiet) {
            if seen.key.starts_with(prefix) {
                last = Some(seen);
            }
        }
        last
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
