//! What keeps a hostile or broken client from costing more than a bounded
//! share: token buckets (global and per client identity) for requests, and a
//! temporary ban for an address whose handshakes keep failing.
//! Connection and parallel-scrape caps are semaphores in the server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Fixed limits of the endpoint; generous for Prometheus (one scrape every
/// few seconds per scraper), tight for anything that hammers it.
pub struct Limits;

impl Limits {
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
    /// A whole connection, however many keep-alive requests it carries.
    pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
    /// Bytes hyper may buffer for one request head.
    pub const MAX_HEADER_BYTES: usize = 8 * 1024;
    pub const MAX_HEADERS: usize = 32;
    pub const MAX_PARALLEL_SCRAPES: usize = 4;
    /// Global bucket: requests per second and burst.
    pub const GLOBAL_RATE: f64 = 50.0;
    pub const GLOBAL_BURST: f64 = 100.0;
    /// Per client identity.
    pub const CLIENT_RATE: f64 = 5.0;
    pub const CLIENT_BURST: f64 = 20.0;
    /// Most client identities tracked; the stalest are forgotten first.
    pub const MAX_TRACKED_CLIENTS: usize = 1024;
    /// Failed handshakes from one address within the window before a ban.
    pub const BAN_AFTER_FAILURES: u32 = 10;
    pub const BAN_WINDOW: Duration = Duration::from_secs(60);
    pub const BAN_DURATION: Duration = Duration::from_secs(60);
}

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

/// The global and per-client buckets.
pub struct RateLimiter {
    global: Mutex<TokenBucket>,
    clients: Mutex<HashMap<String, TokenBucket>>,
}

impl Default for RateLimiter {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            global: Mutex::new(TokenBucket::new(
                Limits::GLOBAL_RATE,
                Limits::GLOBAL_BURST,
                now,
            )),
            clients: Mutex::new(HashMap::new()),
        }
    }
}

impl RateLimiter {
    /// Admits one request from `client`, or gives the `Retry-After` delay.
    pub fn admit(&self, client: &str) -> Result<(), Duration> {
        let now = Instant::now();
        {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if !clients.contains_key(client)
                && clients.len() >= Limits::MAX_TRACKED_CLIENTS
                && let Some(stalest) = clients
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(k, _)| k.clone())
            {
                clients.remove(&stalest);
            }
            clients
                .entry(client.to_string())
                .or_insert_with(|| TokenBucket::new(Limits::CLIENT_RATE, Limits::CLIENT_BURST, now))
                .take(now)?;
        }
        self.global
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(now)
    }
}

/// Per address: failures in the current window, window start, ban end.
type PeerFailures = (u32, Instant, Option<Instant>);

/// Addresses whose handshakes keep failing are refused for a while.
#[derive(Default)]
pub struct HandshakeBan {
    peers: Mutex<HashMap<IpAddr, PeerFailures>>,
}

impl HandshakeBan {
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get(&ip) {
            Some((_, _, Some(until))) if *until > now => true,
            Some((_, _, Some(_))) => {
                peers.remove(&ip);
                false
            }
            _ => false,
        }
    }

    /// Records a failed handshake; true when this one started a ban.
    pub fn failed(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= Limits::MAX_TRACKED_CLIENTS && !peers.contains_key(&ip) {
            peers.retain(|_, (_, start, ban)| {
                now.duration_since(*start) < Limits::BAN_WINDOW || ban.is_some_and(|b| b > now)
            });
        }
        let entry = peers.entry(ip).or_insert((0, now, None));
        if now.duration_since(entry.1) >= Limits::BAN_WINDOW {
            *entry = (0, now, None);
        }
        entry.0 += 1;
        if entry.0 >= Limits::BAN_AFTER_FAILURES && entry.2.is_none() {
            entry.2 = Some(now + Limits::BAN_DURATION);
            return true;
        }
        false
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
        let r = RateLimiter::default();
        let burst = Limits::CLIENT_BURST as usize;
        for _ in 0..burst {
            r.admit("a").unwrap();
        }
        assert!(r.admit("a").is_err());
        r.admit("b").unwrap();
    }

    #[test]
    fn repeated_failures_ban_an_address() {
        let ban = HandshakeBan::default();
        let ip: IpAddr = "::1".parse().unwrap();
        for _ in 1..Limits::BAN_AFTER_FAILURES {
            assert!(!ban.failed(ip));
        }
        assert!(!ban.is_banned(ip));
        assert!(ban.failed(ip));
        assert!(ban.is_banned(ip));
        assert!(!ban.is_banned("::2".parse().unwrap()));
    }
}
