//! The HTTPS server: its own thread and single-threaded runtime, so nothing
//! a client does can take time from the port-sync runtime; the data path
//! and the server share only atomics (the metrics and the status).
//!
//! Nothing here can end the daemon: when the settings or files are bad, or
//! the port is taken, the endpoint stays closed, says why (event
//! `metrics_endpoint_closed`, naming the file and the fix) and tries again
//! every 2 s and on SIGHUP; it opens as soon as it can.
//!
//! Per connection, the [`Guard`] decides at each step: a place among the
//! unverified, the TLS handshake with a timeout, a place among the verified
//! connections; then HTTP/1.1 with header-read timeout, header size/count
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
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use super::guard::{
    Guard, MAX_HEADER_BYTES, MAX_HEADERS, PRESENTED, Ticket, handshake_failure_reason,
};
use super::health::{Health, Verdict};
use super::registry::{EndpointMetrics, Metrics, PATHS, registry, render};
use super::tls::{POLL_INTERVAL, TlsState};
use crate::config::endpoint::MetricsArgs;
use crate::status::Status;

pub const ENDPOINT_OPEN: &str = "metrics_endpoint_open";
pub const ENDPOINT_CLOSED: &str = "metrics_endpoint_closed";
pub const RELOAD_WATCHER_DIED: &str = "metrics_reload_watcher_died";
/// How long a connection past its lifetime may take to finish the response
/// in progress before it is dropped.
const GRACEFUL_CLOSE: Duration = Duration::from_secs(10);

/// What the endpoint serves, built once at start whether or not it opens.
struct Content {
    registry: Registry,
    endpoint: EndpointMetrics,
    health: Health,
}

/// Everything a connection of the open endpoint needs.
struct Shared {
    args: MetricsArgs,
    tls: Arc<TlsState>,
    content: Arc<Content>,
    guard: Guard,
}

type Reply = Response<Full<Bytes>>;

/// Starts the endpoint's thread, which opens the endpoint as soon as the
/// settings, the files and the address allow and keeps trying until then.
/// Never fails: a problem is logged and keeps the endpoint (never the
/// daemon) down. Installs the SIGHUP handler before it returns, so a SIGHUP
/// never ends the daemon.
pub fn start(args: MetricsArgs, metrics: Metrics, queue_capacity: u64, status: Status) {
    super::process::record_start();
    let endpoint = EndpointMetrics::default();
    let profile = format!("{:?}", args.tls_profile).to_lowercase();
    let build = [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("tls_profile", profile),
    ];
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
        .build();
    let runtime = runtime.context("cannot start the metrics runtime")?;
    let mut sighup = {
        let _guard = runtime.enter();
        signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?
    };
    let serve = async move {
        let (hup_tx, hup) = watch::channel(0u64);
        tokio::spawn(async move {
            while sighup.recv().await.is_some() {
                hup_tx.send_modify(|n| *n += 1);
            }
        });
        // Keeps the health check's "overrun recently" right between scrapes.
        let overruns = content.clone();
        tokio::spawn(async move {
            loop {
                overruns.health.observe_overruns();
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        run(args, content, hup).await;
    };
    let thread = std::thread::Builder::new().name("metrics".into());
    thread
        .spawn(move || runtime.block_on(serve))
        .context("cannot start the metrics thread")?;
    Ok(())
}

/// Opens the endpoint, retrying until it can; then serves forever.
async fn run(args: MetricsArgs, content: Arc<Content>, mut hup: watch::Receiver<u64>) {
    let mut last_error = String::new();
    let (tls, listener) = loop {
        match open(&args, &content.endpoint) {
            Ok(opened) => break opened,
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
    };
    info!(event = ENDPOINT_OPEN, listen = %args.metrics_listen, profile = ?args.tls_profile,
          allowed_clients = ?args.metrics_allow_client,
          "metrics endpoint listening (TLS 1.3, client certificate required)");
    tokio::spawn(supervise_watcher(
        tls.clone(),
        content.endpoint.clone(),
        hup,
    ));
    let guard = Guard::new(&args, content.endpoint.clone());
    let ctx = Arc::new(Shared {
        args,
        tls,
        content,
        guard,
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ticket = ctx.guard.arrive(peer.ip());
        let ctx = ctx.clone();
        tokio::spawn(async move { serve_connection(&ctx, stream, peer, ticket).await });
        // Let the handshakes in progress move on before the next accept, so
        // a flood of connections cannot keep them from finishing.
        tokio::task::yield_now().await;
    }
}

/// Checks the settings and the files, and binds.
fn open(args: &MetricsArgs, endpoint: &EndpointMetrics) -> Result<(Arc<TlsState>, TcpListener)> {
    args.validate()?;
    let tls = Arc::new(TlsState::new(args.clone(), endpoint.clone())?);
    let listener = TcpListener::from_std(bind_v6_only(args.metrics_listen)?);
    Ok((
        tls,
        listener.context("cannot register the metrics socket with the runtime")?,
    ))
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
    let taken = || {
        format!(
            "{} (is another process using the port? choose another with --metrics-listen)",
            what()
        )
    };
    socket.bind(&addr.into()).with_context(taken)?;
    socket.listen(1024).with_context(what)?;
    Ok(socket.into())
}

/// The handshake, bounded by the timeout and by the pool (a newer
/// connection may take this one's place); the SANs the client presented.
async fn handshake(
    ctx: &Shared,
    stream: TcpStream,
    ticket: &mut Ticket,
) -> (
    Result<tokio_rustls::server::TlsStream<TcpStream>, &'static str>,
    Vec<String>,
) {
    let acceptor = TlsAcceptor::from(ctx.tls.current());
    let attempt = async {
        let outcome = tokio::select! {
            _ = &mut ticket.evicted => Err("evicted"),
            r = tokio::time::timeout(ctx.args.handshake_timeout(), acceptor.accept(stream)) => match r {
                Err(_) => Err("timeout"),
                Ok(Err(e)) => {
                    let reason = handshake_failure_reason(&e);
                    debug!(reason, error = %e, "metrics TLS handshake failed");
                    Err(reason)
                }
                Ok(Ok(tls)) => Ok(tls),
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
    let (outcome, presented) = handshake(ctx, stream, &mut ticket).await;
    drop(ticket);
    let verified = ctx
        .guard
        .verified(peer, &presented, outcome.as_ref().map(drop).map_err(|e| *e));
    let (Ok(tls), Some(_permit)) = (outcome, verified) else {
        return;
    };
    let identity = presented
        .first()
        .cloned()
        .unwrap_or_else(|| "unnamed".to_string());
    let endpoint = &ctx.content.endpoint;
    endpoint.connections_open.inc();
    let service = {
        let ctx = ctx.clone();
        service_fn(move |req| {
            let (ctx, identity) = (ctx.clone(), identity.clone());
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
    let result = tokio::select! {
        r = connection.as_mut() => Some(r),
        _ = tokio::time::sleep(ctx.args.connection_lifetime()) => {
            // At the lifetime: no new request; the one in progress finishes
            // (with `connection: close`), then the connection closes.
            connection.as_mut().graceful_shutdown();
            tokio::time::timeout(GRACEFUL_CLOSE, connection.as_mut()).await.ok()
        }
    };
    if let Some(Err(e)) = result {
        debug!(%peer, error = %e, "metrics connection ended with an error");
    }
    endpoint.connections_open.dec();
}

fn respond(ctx: &Shared, identity: &str, req: &Request<Incoming>) -> Reply {
    let mut response = route(ctx, identity, req);
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
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    ctx.content
        .endpoint
        .answered(req.uri().path(), response.status().as_u16());
    response
}

/// A response with `status`, `content_type` and `body`.
fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

fn retry_after(mut r: Reply, wait: Duration) -> Reply {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// One `match` on the path, after the method and the rate limit.
fn route(ctx: &Shared, identity: &str, req: &Request<Incoming>) -> Reply {
    let path = req.uri().path();
    if !PATHS.contains(&path) {
        return reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /healthz, /livez or /readyz\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if let Err(wait) = ctx.guard.admit(identity) {
        return retry_after(
            reply(StatusCode::TOO_MANY_REQUESTS, TEXT, "too many requests\n"),
            wait,
        );
    }
    let health = &ctx.content.health;
    let ok_or_503 = |pass: bool| {
        if pass {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    match path {
        "/livez" | "/readyz" => {
            let (pass, body) = if path == "/livez" {
                health.live()
            } else {
                health.ready()
            };
            reply(ok_or_503(pass), TEXT, body)
        }
        "/healthz" => {
            let report = health.report();
            let body = serde_json::to_vec_pretty(&report).unwrap_or_default();
            reply(
                ok_or_503(report.status != Verdict::Fail),
                "application/json",
                body,
            )
        }
        _ => {
            let Some(_scrape) = ctx.guard.scrape() else {
                let busy = reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "too many scrapes in progress\n",
                );
                return retry_after(busy, Duration::from_secs(1));
            };
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let (content_type, body) = render(&ctx.content.registry, accept);
            reply(StatusCode::OK, content_type, body)
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
