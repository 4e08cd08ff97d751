//! The guard in front of the service ([`Guard`]): everything that decides
//! whether a connection or a request may go on, and the audit trail of
//! what it refused.
//!
//! - **Unverified connections** (still in their TLS handshake) have a budget
//!   of their own, apart from the capacity verified clients use
//!   ([`UnverifiedPool`]): a newcomer is never the one turned away.
//! - **The allow-list** ([`AllowListVerifier`]): after the CA and CRLs,
//!   only certificates naming an allowed DNS, URI or IP SAN may scrape
//!   (never the subject CN: the rule the Prometheus exporter toolkit
//!   settled on). It notes the names a client presented ([`PRESENTED`]).
//! - **Limits** on verified clients: the verified places, token buckets
//!   (global and per client identity), the parallel scrapes; fixed
//!   request-head limits.
//! - **Audit events**: refused clients are the one event an attacker can
//!   cause at will, so they are rate limited: past the
//!   budget they are counted, and the next event that gets through says how
//!   many were left out (`suppressed`). docs/security.md lists every event.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit, oneshot};
use tracing::warn;

use super::registry::EndpointMetrics;
use super::x509::{names, subject_alt_names};
use crate::config::endpoint::MetricsArgs;

struct Entry {
    source: IpAddr,
    protected: bool,
    /// Held, never sent on: dropping it (with the entry) resolves the
    /// connection's `Ticket::evicted`, which closes it.
    _evict: oneshot::Sender<()>,
}

#[derive(Default)]
struct Pending {
    /// By admission order, oldest first.
    entries: BTreeMap<u64, Entry>,
    protected_per_source: HashMap<IpAddr, usize>,
    next: u64,
}

impl Pending {
    fn unprotect(&mut self, seq: u64) {
        let Some(entry) = self.entries.get_mut(&seq).filter(|e| e.protected) else {
            return;
        };
        entry.protected = false;
        let source = entry.source;
        if let Some(n) = self.protected_per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.protected_per_source.remove(&source);
            }
        }
    }

    fn remove(&mut self, seq: u64) -> bool {
        self.unprotect(seq);
        self.entries.remove(&seq).is_some()
    }

    fn oldest(&self, pick: impl Fn(&Entry) -> bool) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, e)| pick(e))
            .map(|(seq, _)| *seq)
    }
}

/// The pool of connections in their handshake.
pub struct UnverifiedPool {
    total: usize,
    per_source: usize,
    pending: Arc<Mutex<Pending>>,
}

/// One connection's place in the pool; dropping it (handshake over, either
/// way) gives the place back.
pub struct Ticket {
    seq: u64,
    pending: Arc<Mutex<Pending>>,
    /// Resolves when the connection is to be closed to make room.
    pub evicted: oneshot::Receiver<()>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.remove(self.seq);
    }
}

impl UnverifiedPool {
    pub fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: total.max(1),
            per_source: per_source.max(1),
            pending: Arc::default(),
        }
    }

    /// Admits a new connection from `source`; true in the second field when
    /// an older connection was closed to make room.
    pub fn admit(&self, source: IpAddr) -> (Ticket, bool) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let protected = p.protected_per_source.get(&source).copied().unwrap_or(0);
        if protected >= self.per_source
            && let Some(seq) = p.oldest(|e| e.protected && e.source == source)
        {
            p.unprotect(seq);
        }
        let mut closed = false;
        if p.entries.len() >= self.total
            && let Some(seq) = p.oldest(|e| !e.protected).or_else(|| p.oldest(|_| true))
        {
            closed = p.remove(seq);
        }
        let seq = p.next;
        p.next += 1;
        let (evict, evicted) = oneshot::channel();
        p.entries.insert(
            seq,
            Entry {
                source,
                protected: true,
                _evict: evict,
            },
        );
        *p.protected_per_source.entry(source).or_insert(0) += 1;
        drop(p);
        let ticket = Ticket {
            seq,
            pending: self.pending.clone(),
            evicted,
        };
        (ticket, closed)
    }

    /// Connections in their handshake now, and how many are protected.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let protected = p.entries.values().filter(|e| e.protected).count();
        (p.entries.len(), protected)
    }
}

tokio::task_local! {
    /// The SANs of the certificate the client of this connection's task
    /// presented, set by the verifier during the handshake.
    pub static PRESENTED: RefCell<Vec<String>>;
}

/// The CA/CRL verifier from webpki, then the allow-list.
#[derive(Debug)]
pub struct AllowListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// Empty: every certificate the CA vouches for may scrape.
    allowed: Vec<String>,
}

/// The error a certificate outside the allow-list gets; the handshake
/// failure counter maps it to `reason="client_not_allowed"`.
pub const NOT_ALLOWED: &str = "client certificate names no allowed DNS, URI or IP SAN";

impl AllowListVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Vec<String>) -> Self {
        Self { inner, allowed }
    }
}

/// True when one of the allowed names is a SAN of the certificate (see
/// [`names`] for how each kind matches), or when the list is empty.
pub fn is_allowed(cert_der: &[u8], allowed: &[String]) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| names(cert_der, a))
}

impl ClientCertVerifier for AllowListVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        // Outside a connection's task (unit tests) there is nothing to note.
        let _ = PRESENTED.try_with(|p| *p.borrow_mut() = subject_alt_names(end_entity));
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if is_allowed(end_entity, &self.allowed) {
            Ok(verified)
        } else {
            Err(Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NotAllowed)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Marker error for a certificate outside the allow-list.
#[derive(Debug)]
pub struct NotAllowed;

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(NOT_ALLOWED)
    }
}

impl std::error::Error for NotAllowed {}

/// Bytes hyper may buffer for one request head, and headers at most: fixed,
/// since a scraper's request is one short line and a few headers.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
pub const MAX_HEADERS: usize = 32;
/// Most client identities tracked; the stalest are forgotten first.
const MAX_TRACKED_CLIENTS: usize = 1024;
/// Refused-client events per second, and in a burst.
const REFUSED_PER_SECOND: f64 = 10.0;
const REFUSED_BURST: f64 = 50.0;

pub const CLIENT_REFUSED: &str = "metrics_client_refused";

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

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The guard of one open endpoint: every admission decision, counted in
/// the endpoint's metrics, and the (rate-limited) audit of every refusal.
pub struct Guard {
    /// Connections still in their handshake.
    pub unverified: UnverifiedPool,
    /// Places for verified connections (`--metrics-max-connections`).
    verified: Arc<Semaphore>,
    /// `/metrics` renders at once (`--metrics-max-parallel-scrapes`).
    scrapes: Semaphore,
    /// Requests: the global bucket, and one per client identity.
    global: Mutex<TokenBucket>,
    per_client: (f64, f64),
    clients: Mutex<HashMap<String, TokenBucket>>,
    /// The budget of refused-client events, and how many it left out.
    refusals: Mutex<TokenBucket>,
    suppressed: AtomicU64,
    endpoint: EndpointMetrics,
}

impl Guard {
    pub fn new(args: &MetricsArgs, endpoint: EndpointMetrics) -> Self {
        let now = Instant::now();
        let (rate, burst) = (
            f64::from(args.metrics_rate_limit),
            f64::from(args.metrics_rate_burst),
        );
        let per_client = (
            f64::from(args.metrics_client_rate_limit),
            f64::from(args.metrics_client_rate_burst),
        );
        Self {
            unverified: UnverifiedPool::new(
                args.metrics_max_unverified as usize,
                args.metrics_max_unverified_per_source as usize,
            ),
            verified: Arc::new(Semaphore::new(args.metrics_max_connections as usize)),
            scrapes: Semaphore::new(args.metrics_max_parallel_scrapes as usize),
            global: Mutex::new(TokenBucket::new(rate, burst, now)),
            per_client,
            clients: Mutex::default(),
            refusals: Mutex::new(TokenBucket::new(REFUSED_PER_SECOND, REFUSED_BURST, now)),
            suppressed: AtomicU64::new(0),
            endpoint,
        }
    }

    /// A new connection from `peer`: its place among the unverified (an
    /// older one may be closed for it, counted `evicted`).
    pub fn arrive(&self, peer: IpAddr) -> Ticket {
        let (ticket, closed_one) = self.unverified.admit(peer);
        if closed_one {
            self.endpoint.refused("evicted");
        }
        ticket
    }

    /// After the handshake: a place among the verified connections, or the
    /// refusal counted (a failed handshake under `reason`) and audited.
    pub fn verified(
        &self,
        peer: SocketAddr,
        presented: &[String],
        handshake: Result<(), &'static str>,
    ) -> Option<OwnedSemaphorePermit> {
        let reason = match handshake {
            Ok(()) => match self.verified.clone().try_acquire_owned() {
                Ok(permit) => return Some(permit),
                Err(_) => "max_connections",
            },
            Err(reason) => reason,
        };
        match reason {
            "evicted" => {}
            "max_connections" => self.endpoint.refused(reason),
            _ => self.endpoint.handshake_failed(reason),
        }
        self.refused(peer, presented, reason);
        None
    }

    /// One request from `client`, or the `Retry-After` delay.
    pub fn admit(&self, client: &str) -> Result<(), Duration> {
        let now = Instant::now();
        {
            let mut clients = locked(&self.clients);
            if !clients.contains_key(client) && clients.len() >= MAX_TRACKED_CLIENTS {
                let stalest = clients
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(k, _)| k.clone());
                stalest.map(|k| clients.remove(&k));
            }
            let (rate, burst) = self.per_client;
            let bucket = clients
                .entry(client.to_string())
                .or_insert_with(|| TokenBucket::new(rate, burst, now));
            bucket.take(now)?;
        }
        locked(&self.global).take(now)
    }

    /// A place to render `/metrics`, if one is free.
    pub fn scrape(&self) -> Option<SemaphorePermit<'_>> {
        self.scrapes.try_acquire().ok()
    }

    /// A client was refused: its address, the SANs it presented (empty when
    /// it presented no certificate or got no further than TCP) and why.
    fn refused(&self, peer: SocketAddr, sans: &[String], reason: &str) {
        if locked(&self.refusals).take(Instant::now()).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        warn!(event = CLIENT_REFUSED, peer = %peer.ip(), port = peer.port(), sans = %sans.join(","),
              reason, suppressed, "metrics client refused");
    }
}

/// The `reason` label of a failed handshake.
pub fn handshake_failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError as C, PeerIncompatible as P};
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return "connection_closed";
    };
    match tls {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(C::UnknownIssuer) => "unknown_issuer",
        Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "expired",
        Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "not_yet_valid",
        Error::InvalidCertificate(C::Revoked) => "revoked",
        Error::InvalidCertificate(C::BadSignature) => "bad_signature",
        Error::InvalidCertificate(C::Other(o)) if o.0.downcast_ref::<NotAllowed>().is_some() => {
            "client_not_allowed"
        }
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::PeerIncompatible(P::NoCipherSuitesInCommon) => "no_common_cipher_suite",
        Error::PeerIncompatible(P::NoKxGroupsInCommon) => "no_common_key_exchange",
        Error::PeerIncompatible(
            P::NoSignatureSchemesInCommon | P::NoCertificateRequestSignatureSchemesInCommon,
        ) => "no_common_signature_scheme",
        Error::PeerIncompatible(
            P::SupportedVersionsExtensionRequired
            | P::Tls12NotOffered
            | P::Tls12NotOfferedOrEnabled,
        ) => "no_common_version",
        Error::PeerIncompatible(_) => "peer_incompatible",
        Error::AlertReceived(_) => "alert_received",
        Error::NoApplicationProtocol => "no_common_alpn",
        Error::InvalidMessage(_) | Error::InappropriateHandshakeMessage { .. } => "invalid_message",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use tokio::sync::oneshot::error::TryRecvError;

    use super::super::x509::CLIENT_PEM;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn is_open(t: &mut Ticket) -> bool {
        matches!(t.evicted.try_recv(), Err(TryRecvError::Empty))
    }

    #[test]
    fn a_busy_source_loses_protection_of_its_oldest_but_nothing_closes() {
        let pool = UnverifiedPool::new(100, 2);
        let mut held: Vec<Ticket> = (0..5).map(|_| pool.admit(ip("::1")).0).collect();
        assert_eq!(pool.counts(), (5, 2));
        assert!(held.iter_mut().all(is_open));
    }

    #[test]
    fn a_full_pool_closes_the_oldest_unprotected_connection_first() {
        let pool = UnverifiedPool::new(3, 1);
        let (mut a1, _) = pool.admit(ip("::a"));
        let (mut a2, _) = pool.admit(ip("::a")); // a1 loses protection
        let (mut b1, _) = pool.admit(ip("::b"));
        let (mut c1, closed) = pool.admit(ip("::c"));
        assert!(closed);
        assert!(!is_open(&mut a1), "the oldest unprotected one goes");
        assert!(is_open(&mut a2) && is_open(&mut b1) && is_open(&mut c1));
        // Every one protected now: the oldest of all goes.
        let (_d1, closed) = pool.admit(ip("::d"));
        assert!(closed);
        assert!(!is_open(&mut a2));
        assert!(is_open(&mut b1) && is_open(&mut c1));
    }

    #[test]
    fn a_finished_handshake_frees_its_place() {
        let pool = UnverifiedPool::new(1, 1);
        let (done, _) = pool.admit(ip("::1"));
        drop(done);
        let (_next, closed) = pool.admit(ip("::1"));
        assert!(!closed);
        assert_eq!(pool.counts(), (1, 1));
    }

    fn allowed(names: &[&str]) -> bool {
        let der = CertificateDer::from_pem_slice(CLIENT_PEM.as_bytes()).unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        is_allowed(&der, &names)
    }

    #[test]
    fn dns_and_uri_sans_match_exactly() {
        assert!(allowed(&[]));
        assert!(allowed(&["prometheus.example"]));
        assert!(allowed(&["PROMETHEUS.example"]));
        assert!(allowed(&["other", "spiffe://example/prometheus"]));
        assert!(!allowed(&["spiffe://example/Prometheus"]));
        assert!(!allowed(&["example", "prometheus", "*.example", "::1"]));
    }

    #[test]
    fn garbage_is_never_allowed_by_a_list() {
        assert!(!is_allowed(b"junk", &["prometheus.example".to_string()]));
    }

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
        use clap::Parser;
        let cli = crate::config::Cli::try_parse_from(["portsyncd"]).unwrap();
        let guard = Guard::new(&cli.metrics, EndpointMetrics::default());
        for _ in 0..20 {
            guard.admit("a").unwrap();
        }
        assert!(guard.admit("a").is_err());
        guard.admit("b").unwrap();
    }
}
