//! The HTTPS server: its own thread and single-threaded runtime, so nothing
//! a client does can take time from the port-sync runtime; the pipeline and
//! the server share only atomics (the metrics).
//!
//! Per connection: ban check, connection cap, TLS handshake with a timeout,
//! then HTTP/1.1 with header-read timeout, header size/count limits and a
//! connection lifetime; per request: route, method, rate limit, parallel
//! scrape cap.

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
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::Metrics;
use super::allow_list::NotAllowed;
use super::args::MetricsArgs;
use super::endpoint_metrics::{BuildLabels, EndpointMetrics};
use super::health::{Health, Status};
use super::limits::{HandshakeBan, Limits, RateLimiter};
use super::process::ProcessCollector;
use super::reload::TlsState;
use super::render::{render, wants_openmetrics};
use super::x509::subject_alt_names;

/// Everything a connection needs, shared.
struct Shared {
    tls: Arc<TlsState>,
    registry: Registry,
    endpoint: EndpointMetrics,
    health: Health,
    rate: RateLimiter,
    ban: HandshakeBan,
    scrapes: Semaphore,
}

/// Checks the settings and files, binds the socket, and starts the server
/// thread. Any error here is a start-up error (fail closed).
pub fn start(args: MetricsArgs, metrics: Metrics, queue_capacity: u64) -> Result<()> {
    args.validate()?;
    let endpoint = EndpointMetrics::default();
    endpoint
        .build_info
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_string(),
            tls_profile: format!("{:?}", args.tls_profile).to_lowercase(),
        })
        .set(1);
    let tls = Arc::new(TlsState::new(args.clone(), endpoint.clone())?);
    let std_listener = bind_v6_only(args.metrics_listen)?;

    let mut registry = Registry::default();
    metrics.register(&mut registry);
    endpoint.register(&mut registry);
    registry
        .sub_registry_with_prefix("portsyncd")
        .register_collector(Box::new(ProcessCollector));
    let ctx = Arc::new(Shared {
        tls: tls.clone(),
        registry,
        health: Health::new(metrics, endpoint.clone(), queue_capacity),
        endpoint,
        rate: RateLimiter::default(),
        ban: HandshakeBan::default(),
        scrapes: Semaphore::new(Limits::MAX_PARALLEL_SCRAPES),
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the metrics runtime")?;
    let (listener, sighup) = {
        let _guard = runtime.enter();
        let listener = TcpListener::from_std(std_listener)
            .context("cannot register the metrics socket with the runtime")?;
        let sighup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        (listener, sighup)
    };
    let connections = Arc::new(Semaphore::new(args.metrics_max_connections as usize));
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(tls.watch(sighup));
                tokio::spawn(observe_overruns(ctx.clone()));
                accept_loop(listener, ctx, connections).await;
            })
        })
        .context("cannot start the metrics thread")?;
    info!(listen = %args.metrics_listen, profile = ?args.tls_profile,
          allowed_clients = ?args.metrics_allow_client, "metrics endpoint listening (TLS 1.3, client certificate required)");
    Ok(())
}

/// A listening IPv6 socket with IPV6_V6ONLY set before bind, so `[::]`
/// never accepts IPv4.
fn bind_v6_only(addr: SocketAddr) -> Result<StdTcpListener> {
    let what = || format!("cannot listen on {addr} for metrics");
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).with_context(what)?;
    socket.set_only_v6(true).with_context(what)?;
    socket.set_reuse_address(true).with_context(what)?;
    socket.set_nonblocking(true).with_context(what)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("{} (is another process using the port?)", what()))?;
    socket.listen(128).with_context(what)?;
    Ok(socket.into())
}

/// Keeps the health check's "overrun recently" right between scrapes.
async fn observe_overruns(ctx: Arc<Shared>) {
    loop {
        ctx.health.observe_overruns();
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<Shared>, connections: Arc<Semaphore>) {
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
        if ctx.ban.is_banned(peer.ip()) {
            ctx.endpoint.refused("banned");
            continue;
        }
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            ctx.endpoint.refused("max_connections");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            serve_connection(&ctx, stream, peer).await;
            drop(permit);
        });
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

/// The identity the per-client rate limit is keyed on: the first SAN of the
/// verified client certificate.
fn client_identity(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> String {
    certs
        .and_then(|c| c.first())
        .and_then(|c| subject_alt_names(c))
        .and_then(|names| names.first().map(|n| n.value().to_string()))
        .unwrap_or_else(|| "unnamed".to_string())
}

async fn serve_connection(ctx: &Arc<Shared>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let acceptor = TlsAcceptor::from(ctx.tls.current());
    let tls = match tokio::time::timeout(Limits::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Err(_) => {
            // Not counted towards a ban: idle connections are bounded by the
            // connection cap and this timeout already.
            ctx.endpoint.handshake_failed("timeout");
            return;
        }
        Ok(Err(e)) => {
            let reason = handshake_failure_reason(&e);
            ctx.endpoint.handshake_failed(reason);
            debug!(%peer, reason, error = %e, "metrics TLS handshake failed");
            if reason != "connection_closed" && ctx.ban.failed(peer.ip()) {
                warn!(%peer, "metrics handshakes from this address keep failing; refusing it for a while");
            }
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let identity = client_identity(tls.get_ref().1.peer_certificates());
    ctx.endpoint.connections_open.inc();
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
        .header_read_timeout(Limits::HEADER_READ_TIMEOUT)
        .max_buf_size(Limits::MAX_HEADER_BYTES)
        .max_headers(Limits::MAX_HEADERS)
        .keep_alive(true);
    let connection = http.serve_connection(TokioIo::new(tls), service);
    // A lifetime timeout just closes the connection; the scraper reconnects.
    if let Ok(Err(e)) = tokio::time::timeout(Limits::CONNECTION_LIFETIME, connection).await {
        debug!(%peer, error = %e, "metrics connection ended with an error");
    }
    ctx.endpoint.connections_open.dec();
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
    ctx.endpoint.answered(path, response.status().as_u16());
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

fn route(ctx: &Shared, identity: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n",
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
    if path == "/healthz" {
        let report = ctx.health.report();
        let body = serde_json::to_vec_pretty(&report).unwrap_or_default();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        if report.status == Status::Fail {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let Ok(_scrape) = ctx.scrapes.try_acquire() else {
        return retry_after(
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many scrapes in progress\n",
            ),
            Duration::from_secs(1),
        );
    };
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (content_type, body) = render(&ctx.registry, wants_openmetrics(accept));
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
