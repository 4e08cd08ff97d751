//! The HTTPS server: its own thread and single-threaded runtime, so nothing
//! a client does can take time from the port-sync runtime; the pipeline and
//! the server share only atomics (the metrics and the heartbeats).
//!
//! Nothing here can end the daemon: when the files are missing or bad, or
//! the port is taken, the endpoint stays closed, says why (event
//! `metrics_endpoint_closed`, naming the file and the fix) and tries again
//! every 2 s and on SIGHUP; it opens as soon as it can.
//!
//! Per connection: a place in the unverified pool (bounded in total and per
//! source; a newcomer always gets in, the oldest unprotected connection is
//! closed for it, see [`super::unverified`]), the
//! TLS handshake with a timeout, then a place among the verified
//! connections, then HTTP/1.1 with header-read timeout, header size/count
//! limits and a lifetime after which the connection is closed gracefully;
//! per request: route, method, rate limit, parallel scrape cap.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use rustls::{CertificateError, PeerIncompatible};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use super::guard::{
    ENDPOINT_CLOSED, ENDPOINT_OPEN, MAX_HEADER_BYTES, MAX_HEADERS, NotAllowed, PRESENTED,
    RELOAD_WATCHER_DIED, Rate, RateLimiter, RefusalLog, Ticket, UnverifiedPool,
};
use super::health::{Health, Verdict};
use super::registry::{BuildLabels, EndpointMetrics, Metrics, PATHS, registry, render};
use super::tls::{POLL_INTERVAL, TlsState};
use crate::config::endpoint::MetricsArgs;
use crate::status::Status;

/// How long a connection past its lifetime may take to finish the response
/// in progress before it is dropped.
const GRACEFUL_CLOSE: Duration = Duration::from_secs(10);

/// What the endpoint serves, built once at start whether or not it opens.
struct Content {
    registry: Registry,
    endpoint: EndpointMetrics,
    health: Health,
}

/// Everything a connection needs, shared.
struct Shared {
    args: MetricsArgs,
    tls: Arc<TlsState>,
    content: Arc<Content>,
    rate: RateLimiter,
    unverified: UnverifiedPool,
    verified: Arc<Semaphore>,
    scrapes: Semaphore,
    audit: RefusalLog,
}

/// Starts the endpoint's thread, which opens the endpoint as soon as the
/// files and the address allow and keeps trying until then. Never fails:
/// a problem is logged and keeps the endpoint (never the daemon) down.
/// Installs the SIGHUP handler before it returns, so a SIGHUP never ends
/// the daemon.
pub fn start(args: MetricsArgs, metrics: Metrics, queue_capacity: u64, status: Status) {
    super::process::record_start();
    let endpoint = EndpointMetrics::default();
    let profile = format!("{:?}", args.tls_profile).to_lowercase();
    let build = BuildLabels {
        version: env!("CARGO_PKG_VERSION").to_string(),
        tls_profile: profile,
    };
    endpoint.build_info.get_or_create(&build).set(1);
    let content = Arc::new(Content {
        registry: registry(&metrics, &endpoint, &status),
        health: Health::new(status, metrics, endpoint.clone(), queue_capacity),
        endpoint,
    });
    if let Err(e) = spawn_thread(args, content) {
        error!(event = ENDPOINT_CLOSED, error = %format!("{e:#}"),
               "the metrics endpoint cannot run at all; port sync goes on without it");
    }
}

fn spawn_thread(args: MetricsArgs, content: Arc<Content>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the metrics runtime")?;
    let mut sighup = {
        let _guard = runtime.enter();
        signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?
    };
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let (hup_tx, hup) = watch::channel(0u64);
                tokio::spawn(async move {
                    while sighup.recv().await.is_some() {
                        hup_tx.send_modify(|n| *n += 1);
                    }
                });
                tokio::spawn(observe_overruns(content.clone()));
                run(args, content, hup).await;
            })
        })
        .context("cannot start the metrics thread")?;
    Ok(())
}

/// Opens the endpoint, retrying until it can; then serves forever.
async fn run(args: MetricsArgs, content: Arc<Content>, mut hup: watch::Receiver<u64>) {
    let mut last_error = String::new();
    loop {
        match open(&args, &content.endpoint) {
            Ok((tls, listener)) => {
                info!(event = ENDPOINT_OPEN, listen = %args.metrics_listen,
                      profile = ?args.tls_profile, allowed_clients = ?args.metrics_allow_client,
                      "metrics endpoint listening (TLS 1.3, client certificate required)");
                serve(args, tls, content, listener, hup).await;
                return;
            }
            Err(e) => {
                let error = format!("{e:#}");
                // Said once per distinct reason, not every retry.
                if error != last_error {
                    warn!(event = ENDPOINT_CLOSED, listen = %args.metrics_listen, error,
                          "metrics endpoint closed; port sync goes on; retrying every {} s and on SIGHUP",
                          POLL_INTERVAL.as_secs());
                    last_error = error;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    _ = hup.changed() => {}
                }
            }
        }
    }
}

/// Checks the settings and the files, and binds.
fn open(args: &MetricsArgs, endpoint: &EndpointMetrics) -> Result<(Arc<TlsState>, TcpListener)> {
    args.validate()?;
    let tls = Arc::new(TlsState::new(args.clone(), endpoint.clone())?);
    let listener = TcpListener::from_std(bind_v6_only(args.metrics_listen)?)
        .context("cannot register the metrics socket with the runtime")?;
    Ok((tls, listener))
}

async fn serve(
    args: MetricsArgs,
    tls: Arc<TlsState>,
    content: Arc<Content>,
    listener: TcpListener,
    hup: watch::Receiver<u64>,
) {
    tokio::spawn(supervise_watcher(
        tls.clone(),
        content.endpoint.clone(),
        hup,
    ));
    let rate = |per_second: u32, burst: u32| Rate {
        per_second: f64::from(per_second),
        burst: f64::from(burst),
    };
    let ctx = Arc::new(Shared {
        rate: RateLimiter::new(
            rate(args.metrics_rate_limit, args.metrics_rate_burst),
            rate(
                args.metrics_client_rate_limit,
                args.metrics_client_rate_burst,
            ),
        ),
        unverified: UnverifiedPool::new(
            args.metrics_max_unverified as usize,
            args.metrics_max_unverified_per_source as usize,
        ),
        verified: Arc::new(Semaphore::new(args.metrics_max_connections as usize)),
        scrapes: Semaphore::new(args.metrics_max_parallel_scrapes as usize),
        audit: RefusalLog::default(),
        args,
        tls,
        content,
    });
    accept_loop(listener, ctx).await;
}

/// Runs the reload watcher, and if it ever ends (it never should) says so
/// loudly, marks the last reload as failed and starts it again: a dead
/// watcher cannot go unnoticed.
async fn supervise_watcher(
    tls: Arc<TlsState>,
    endpoint: EndpointMetrics,
    hup: watch::Receiver<u64>,
) {
    loop {
        let ended = tokio::spawn(tls.clone().watch(hup.clone())).await;
        watcher_ended(&endpoint, ended.err());
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn watcher_ended(endpoint: &EndpointMetrics, error: Option<tokio::task::JoinError>) {
    endpoint.tls_last_reload_ok.set(0);
    endpoint.reload_watcher_restarts.inc();
    let error = error.map_or_else(|| "it returned".to_string(), |e| e.to_string());
    error!(
        event = RELOAD_WATCHER_DIED,
        error, "the metrics TLS reload watcher ended (a bug: please report it); restarting it"
    );
}

/// A listening IPv6 socket with IPV6_V6ONLY set before bind, so `[::]`
/// never accepts IPv4.
fn bind_v6_only(addr: SocketAddr) -> Result<StdTcpListener> {
    let what = || format!("cannot listen on {addr} for metrics");
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).with_context(what)?;
    socket.set_only_v6(true).with_context(what)?;
    socket.set_reuse_address(true).with_context(what)?;
    socket.set_nonblocking(true).with_context(what)?;
    socket.bind(&addr.into()).with_context(|| {
        format!(
            "{} (is another process using the port? choose another with --metrics-listen)",
            what()
        )
    })?;
    socket.listen(1024).with_context(what)?;
    Ok(socket.into())
}

/// Keeps the health check's "overrun recently" right between scrapes.
async fn observe_overruns(content: Arc<Content>) {
    loop {
        content.health.observe_overruns();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (ticket, closed_one) = ctx.unverified.admit(peer.ip());
        if closed_one {
            ctx.content.endpoint.refused("evicted");
        }
        let ctx2 = ctx.clone();
        tokio::spawn(async move { serve_connection(&ctx2, stream, peer, ticket).await });
        // Let the handshakes in progress move on before the next accept, so
        // a flood of connections cannot keep them from finishing.
        tokio::task::yield_now().await;
    }
}

/// The `reason` label of a failed handshake.
fn handshake_failure_reason(e: &std::io::Error) -> &'static str {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "connection_closed";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unknown_issuer",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::Other(o) if o.0.downcast_ref::<NotAllowed>().is_some() => {
                "client_not_allowed"
            }
            _ => "bad_certificate",
        },
        rustls::Error::PeerIncompatible(p) => match p {
            PeerIncompatible::NoCipherSuitesInCommon => "no_common_cipher_suite",
            PeerIncompatible::NoKxGroupsInCommon => "no_common_key_exchange",
            PeerIncompatible::NoSignatureSchemesInCommon
            | PeerIncompatible::NoCertificateRequestSignatureSchemesInCommon => {
                "no_common_signature_scheme"
            }
            PeerIncompatible::SupportedVersionsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled => "no_common_version",
            _ => "peer_incompatible",
        },
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::NoApplicationProtocol => "no_common_alpn",
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateHandshakeMessage { .. } => {
            "invalid_message"
        }
        _ => "other",
    }
}

/// How a connection's handshake went.
enum Handshake {
    Done(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Closed to make room in the unverified pool.
    Displaced,
    Timeout,
    Failed(std::io::Error),
}

/// The handshake, bounded by the timeout and by the pool (a newer
/// connection may take this one's place); returns the SANs the client
/// presented too.
async fn handshake(
    ctx: &Shared,
    stream: TcpStream,
    ticket: &mut Ticket,
) -> (Handshake, Vec<String>) {
    let acceptor = TlsAcceptor::from(ctx.tls.current());
    let attempt = async {
        let outcome = tokio::select! {
            _ = &mut ticket.evicted => Handshake::Displaced,
            r = tokio::time::timeout(ctx.args.handshake_timeout(), acceptor.accept(stream)) => match r {
                Err(_) => Handshake::Timeout,
                Ok(Err(e)) => Handshake::Failed(e),
                Ok(Ok(tls)) => Handshake::Done(Box::new(tls)),
            },
        };
        (outcome, PRESENTED.with(|p| p.take()))
    };
    PRESENTED.scope(RefCell::new(Vec::new()), attempt).await
}

async fn serve_connection(
    ctx: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut ticket: Ticket,
) {
    let endpoint = &ctx.content.endpoint;
    let (outcome, presented) = handshake(ctx, stream, &mut ticket).await;
    drop(ticket);
    let tls = match outcome {
        Handshake::Done(tls) => tls,
        Handshake::Displaced => {
            ctx.audit.refused(peer, &presented, "evicted");
            return;
        }
        Handshake::Timeout => {
            endpoint.handshake_failed("timeout");
            ctx.audit.refused(peer, &presented, "timeout");
            return;
        }
        Handshake::Failed(e) => {
            let reason = handshake_failure_reason(&e);
            endpoint.handshake_failed(reason);
            debug!(%peer, reason, error = %e, "metrics TLS handshake failed");
            ctx.audit.refused(peer, &presented, reason);
            return;
        }
    };
    let Ok(_permit) = ctx.verified.clone().try_acquire_owned() else {
        endpoint.refused("max_connections");
        ctx.audit.refused(peer, &presented, "max_connections");
        return;
    };
    let identity = presented
        .first()
        .cloned()
        .unwrap_or_else(|| "unnamed".to_string());
    endpoint.connections_open.inc();
    let service = {
        let ctx = ctx.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let identity = identity.clone();
            async move { Ok::<_, Infallible>(respond(&ctx, &identity, &req)) }
        })
    };
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(ctx.args.header_read_timeout())
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    let connection = http.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let lifetime = tokio::time::sleep(ctx.args.connection_lifetime());
    tokio::pin!(lifetime);
    let ended = tokio::select! {
        r = connection.as_mut() => Some(r),
        _ = &mut lifetime => None,
    };
    let result = match ended {
        Some(r) => Some(r),
        None => {
            // At the lifetime: no new request; the one in progress finishes
            // (with `connection: close`), then the connection closes.
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(GRACEFUL_CLOSE, connection.as_mut())
                .await
                .ok()
        }
    };
    if let Some(Err(e)) = result {
        debug!(%peer, error = %e, "metrics connection ended with an error");
    }
    endpoint.connections_open.dec();
}

fn respond(ctx: &Shared, identity: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let mut response = route(ctx, identity, req);
    let headers = response.headers_mut();
    for (name, value) in [
        ("strict-transport-security", "max-age=31536000"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    ctx.content
        .endpoint
        .answered(path, response.status().as_u16());
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn retry_after(mut r: Response<Full<Bytes>>, wait: Duration) -> Response<Full<Bytes>> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

fn typed(
    mut r: Response<Full<Bytes>>,
    content_type: &'static str,
    ok: bool,
) -> Response<Full<Bytes>> {
    if !ok {
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// One `match` on the path, after the method and the rate limit.
fn route(ctx: &Shared, identity: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !PATHS.contains(&path) {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz, /livez or /readyz\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Err(wait) = ctx.rate.admit(identity) {
        return retry_after(
            plain(StatusCode::TOO_MANY_REQUESTS, "too many requests\n"),
            wait,
        );
    }
    let health = &ctx.content.health;
    let text = "text/plain; charset=utf-8";
    match path {
        "/livez" | "/readyz" => {
            let (pass, body) = if path == "/livez" {
                health.live()
            } else {
                health.ready()
            };
            typed(Response::new(Full::new(Bytes::from(body))), text, pass)
        }
        "/healthz" => {
            let report = health.report();
            let body = serde_json::to_vec_pretty(&report).unwrap_or_default();
            typed(
                Response::new(Full::new(Bytes::from(body))),
                "application/json",
                report.status != Verdict::Fail,
            )
        }
        _ => {
            let Ok(_scrape) = ctx.scrapes.try_acquire() else {
                let busy = plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many scrapes in progress\n",
                );
                return retry_after(busy, Duration::from_secs(1));
            };
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (content_type, body) = render(&ctx.content.registry, accept);
            typed(
                Response::new(Full::new(Bytes::from(body))),
                content_type,
                true,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watcher_that_died_is_counted_and_marks_the_reload_failed() {
        let endpoint = EndpointMetrics::default();
        endpoint.tls_last_reload_ok.set(1);
        let died = tokio::spawn(async { panic!("a bug in the watcher") }).await;
        watcher_ended(&endpoint, died.err());
        assert_eq!(endpoint.tls_last_reload_ok.get(), 0);
        assert_eq!(endpoint.reload_watcher_restarts.get(), 1);
    }
}
