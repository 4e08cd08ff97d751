//! What keeps a verified client that asks too much from costing more than
//! a bounded share: token buckets (global and per client identity) for
//! requests. The limits themselves are operator settings
//! ([`super::MetricsArgs`]); unverified clients are bounded separately, by
//! [`super::unverified::UnverifiedPool`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes hyper may buffer for one request head, and headers at most: fixed,
/// since a scraper's request is one short line and a few headers.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_HEADERS: usize = 32;
/// Most client identities tracked; the stalest are forgotten first.
const MAX_TRACKED_CLIENTS: usize = 1024;

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// Rate and burst of one kind of bucket.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    fn bucket(self, now: Instant) -> TokenBucket {
        TokenBucket::new(self.per_second, self.burst, now)
    }
}

/// The global and per-client buckets.
pub struct RateLimiter {
    per_client: Rate,
    global: Mutex<TokenBucket>,
    clients: Mutex<HashMap<String, TokenBucket>>,
}

impl RateLimiter {
    pub fn new(global: Rate, per_client: Rate) -> Self {
        Self {
            per_client,
            global: Mutex::new(global.bucket(Instant::now())),
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request from `client`, or gives the `Retry-After` delay.
    pub fn admit(&self, client: &str) -> Result<(), Duration> {
        let now = Instant::now();
        {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if !clients.contains_key(client)
                && clients.len() >= MAX_TRACKED_CLIENTS
                && let Some(stalest) = clients
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(k, _)| k.clone())
            {
                clients.remove(&stalest);
            }
            clients
                .entry(client.to_string())
                .or_insert_with(|| self.per_client.bucket(now))
                .take(now)?;
        }
        self.global
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_when() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        for _ in 0..3 {
            b.take(t0).unwrap();
        }
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        b.take(t0 + Duration::from_millis(500)).unwrap();
    }

    #[test]
    fn one_client_cannot_use_up_another_clients_share() {
        let r = RateLimiter::new(
            Rate {
                per_second: 50.0,
                burst: 100.0,
            },
            Rate {
                per_second: 5.0,
                burst: 20.0,
            },
        );
        for _ in 0..20 {
            r.admit("a").unwrap();
        }
        assert!(r.admit("a").is_err());
        r.admit("b").unwrap();
    }
}
