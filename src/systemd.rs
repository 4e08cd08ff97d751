//! Talking to systemd: readiness, status, stopping and the watchdog
//! (`sd_notify(3)`), over the datagram socket named by `$NOTIFY_SOCKET`.
//!
//! A few lines of our own instead of a crate: the protocol is one datagram
//! of `KEY=value` lines to a unix socket (a path, or an abstract name
//! written with a leading `@`).
//!
//! The watchdog ping is the daemon's claim that its data path makes
//! progress, so it is sent only while the data-path loop beats: it bumps a
//! [`Heartbeat`] on every turn, idle turns included (it wakes at least once
//! a second). A loop that is wedged stops bumping, the pings stop, and
//! systemd restarts the service. A loop that is retrying a Redis outage with
//! backoff is alive: every attempt ends within the connection's timeouts,
//! and restarting the daemon would not bring Redis back, so the pings go on.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::sonic::redis_value::{Reading, decimal, shown};
use crate::status::{MIN_STALE_AFTER, Phase, Snapshot, Status};

/// How often idle loops wake up just to beat.
pub const IDLE_BEAT: Duration = Duration::from_secs(1);

/// Sends notifications to systemd; does nothing when not started by it.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a notifier that does nothing when it is unset.
    pub fn from_env() -> io::Result<Self> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier { target: None }),
            Some(path) => Self::to_address(path.as_encoded_bytes()),
        }
    }

    /// To `address`: a filesystem path, or `@name` for an abstract socket.
    pub fn to_address(address: &[u8]) -> io::Result<Self> {
        let addr = parse_address(address)?;
        let socket = UnixDatagram::unbound()?;
        // A receiver that stops reading fills its queue; a blocking send
        // would then stall a runtime thread (and with it the pipeline).
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            target: Some((socket, addr)),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` lines) without ever
    /// blocking. A failure is logged, never fatal: systemd's own timeouts
    /// handle a lost message.
    pub fn notify(&self, state: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        match socket.send_to_addr(state.as_bytes(), addr) {
            Ok(_) => debug!(state, "sd_notify sent"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                debug!(state, "systemd's notify queue is full; message dropped")
            }
            Err(e) => warn!(error = %e, state, "cannot notify systemd"),
        }
    }
}

fn parse_address(address: &[u8]) -> io::Result<SocketAddr> {
    match address.split_first() {
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is empty",
        )),
        Some((b'@', name)) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        Some((b'/', _)) => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(address))
        }
        Some(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET must be an absolute path or start with @",
        )),
    }
}

/// The longest watchdog period used. systemd never asks for more than a
/// few minutes in practice; pinging more often than asked is harmless, and
/// the cap keeps every deadline computed from it far from overflow.
pub const MAX_WATCHDOG_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// The watchdog period systemd asked for (`$WATCHDOG_USEC`), if it is meant
/// for this process (`$WATCHDOG_PID`, when set, names us).
pub fn watchdog_period() -> Option<Duration> {
    let reading = watchdog_period_from(
        std::env::var_os("WATCHDOG_PID").as_deref(),
        std::env::var_os("WATCHDOG_USEC").as_deref(),
        std::process::id(),
    );
    if let Some(note) = &reading.note {
        warn!("{note}");
    }
    reading.value
}

/// [`watchdog_period`] from the variables' raw values (any bytes) and our
/// pid: `None` when the watchdog is off, not ours, or the period is not a
/// positive whole number of microseconds; capped at [`MAX_WATCHDOG_PERIOD`].
pub fn watchdog_period_from(
    pid: Option<&std::ffi::OsStr>,
    usec: Option<&std::ffi::OsStr>,
    own_pid: u32,
) -> Reading<Option<Duration>> {
    if let Some(pid) = pid
        && decimal(pid.as_encoded_bytes()) != Some(u64::from(own_pid))
    {
        return Reading::as_stored(None);
    }
    let Some(usec) = usec.map(std::ffi::OsStr::as_encoded_bytes) else {
        return Reading::as_stored(None);
    };
    match decimal(usec) {
        Some(0) => Reading::as_stored(None),
        Some(us) if Duration::from_micros(us) > MAX_WATCHDOG_PERIOD => Reading::decided(
            Some(MAX_WATCHDOG_PERIOD),
            format!(
                "WATCHDOG_USEC {} is longer than {} s; pinging at that period instead",
                shown(usec),
                MAX_WATCHDOG_PERIOD.as_secs()
            ),
        ),
        Some(us) => Reading::as_stored(Some(Duration::from_micros(us))),
        None => Reading::decided(
            None,
            format!(
                "WATCHDOG_USEC {} is not a whole number of microseconds; no watchdog pings \
                 (systemd will restart the daemon if its unit sets WatchdogSec=)",
                shown(usec)
            ),
        ),
    }
}

/// Pings the watchdog at half its period while the data path
/// is alive ([`Status::stalled`]); withholds the ping (and says why in the log and STATUS=) when not.
pub async fn run_watchdog(notifier: Arc<Notifier>, period: Duration, status: Status) {
    let stale_after = period.max(MIN_STALE_AFTER);
    let mut ticks = tokio::time::interval(period / 2);
    let mut withheld = false;
    info!(
        period_ms = period.as_millis() as u64,
        "systemd watchdog enabled"
    );
    loop {
        ticks.tick().await;
        match status.stalled(stale_after) {
            None => {
                notifier.notify("WATCHDOG=1");
                if withheld {
                    withheld = false;
                    info!("the pipeline makes progress again; watchdog pings resumed");
                    notifier.notify("STATUS=Syncing ports (pipeline progressing again)");
                }
            }
            Some(age) => {
                if !withheld {
                    withheld = true;
                    warn!(
                        stalled_ms = age.as_millis() as u64,
                        "no progress; withholding the systemd watchdog ping so systemd restarts the daemon"
                    );
                    notifier.notify(&format!(
                        "STATUS=Stalled: the data path has not gone round for {} s",
                        age.as_secs()
                    ));
                }
            }
        }
    }
}

/// Follows [`Status`]: READY=1 once the initial sync is done (the phase
/// reaches [`Phase::Configured`]: PortConfigDone landed on a cold start,
/// the reconcile on a warm one), and a STATUS= line whenever what an
/// operator should know changes (waiting for Redis and why, netlink
/// failing, PortInitDone, a new start-up after data loss). Wakes only on
/// real changes.
pub async fn follow_status(notifier: Arc<Notifier>, status: Status) {
    let mut changes = status.subscribe();
    let mut ready = false;
    let mut said = String::new();
    loop {
        let s = changes.borrow_and_update().clone();
        let line = status_line(&s);
        if !ready && s.phase >= Phase::Configured && s.phase != Phase::Stopping {
            ready = true;
            let how = if s.warm {
                "warm reconcile finished"
            } else {
                "PortConfigDone written"
            };
            notifier.notify(&format!("READY=1\nSTATUS={line}"));
            info!(how, "initial sync done; told systemd we are ready");
        } else if line != said {
            notifier.notify(&format!("STATUS={line}"));
        }
        said = line;
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// What `systemctl status` shows for `s`.
fn status_line(s: &Snapshot) -> String {
    let trouble = match (&s.redis, &s.netlink) {
        (Err(why), _) if s.phase != Phase::Starting || why != "not connected yet" => {
            format!(" ({why})")
        }
        (_, Err(why)) if s.phase != Phase::Starting => format!(" (netlink: {why})"),
        _ => String::new(),
    };
    let what = match (s.phase, s.warm) {
        (Phase::Starting, _) => "Waiting for Redis and the initial link dump",
        (Phase::Configured, true) => "Syncing ports (warm reconcile finished)",
        (Phase::Configured, false) => "Syncing ports (PortConfigDone written)",
        (Phase::Initialized, _) => "Syncing ports (PortInitDone written)",
        (Phase::Stopping, _) => "Stopping: flushing pending writes",
    };
    format!("{what}{trouble}")
}

/// Starts the readiness and watchdog tasks for the daemon's lifetime.
pub fn start(notifier: Arc<Notifier>, status: Status) {
    if !notifier.is_enabled() {
        return;
    }
    tokio::spawn(follow_status(notifier.clone(), status.clone()));
    if let Some(period) = watchdog_period() {
        tokio::spawn(run_watchdog(notifier, period, status));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to_address(path.as_os_str().as_encoded_bytes()).unwrap();
        notifier.notify("READY=1");
        assert_eq!(receive(&listener), "READY=1");
    }

    #[test]
    fn notifies_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("portsyncd-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::to_address(format!("@{name}").as_bytes()).unwrap();
        notifier.notify("WATCHDOG=1");
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[test]
    fn a_full_receiver_never_blocks_the_sender() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to_address(path.as_os_str().as_encoded_bytes()).unwrap();
        // Far more than a unix datagram queue holds (net.unix.max_dgram_qlen),
        // in a thread, so a send that blocks fails the test after a second
        // (each send takes microseconds) instead of hanging it.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..10_000 {
                notifier.notify("WATCHDOG=1");
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(1))
            .expect("10000 notifications to a full receiver took over a second: a send blocked");
        // What the queue held did arrive: a notifier that sends nothing
        // does not pass.
        listener.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        let mut received = 0;
        while let Ok(n) = listener.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1");
            received += 1;
        }
        assert!(received > 0, "no notification arrived");
        assert!(received < 10_000, "the queue never filled ({received})");
    }

    #[tokio::test]
    async fn ready_follows_the_status_not_a_gauge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Arc::new(Notifier::to_address(path.as_os_str().as_encoded_bytes()).unwrap());
        let status = Status::default();
        tokio::spawn(follow_status(notifier, status.clone()));
        let listener = tokio::task::spawn_blocking(move || {
            assert_eq!(
                receive(&listener),
                "STATUS=Waiting for Redis and the initial link dump"
            );
            listener
        })
        .await
        .unwrap();
        status.set_redis(Err("the unix socket /x does not exist".into()));
        status.set_phase(Phase::Configured);
        let got = tokio::task::spawn_blocking(move || receive(&listener))
            .await
            .unwrap();
        assert!(
            got.starts_with(
                "READY=1\nSTATUS=Syncing ports (PortConfigDone written) (the unix socket /x"
            ),
            "{got}"
        );
    }

    #[test]
    fn refuses_relative_and_empty_addresses() {
        assert!(Notifier::to_address(b"run/notify").is_err());
        assert!(Notifier::to_address(b"").is_err());
    }

    #[test]
    fn watchdog_variables_at_their_extremes() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let os = |b: &'static [u8]| Some(OsStr::from_bytes(b));
        let period = |pid, usec| watchdog_period_from(pid, usec, 42).value;
        assert_eq!(period(None, os(b"2000000")), Some(Duration::from_secs(2)));
        assert_eq!(
            period(os(b"42"), os(b"2000000")),
            Some(Duration::from_secs(2))
        );
        assert_eq!(period(os(b"43"), os(b"2000000")), None, "not ours");
        assert_eq!(period(os(b"\xff"), os(b"2000000")), None, "not ours");
        assert_eq!(period(os(b"18446744073709551615"), os(b"1")), None);
        assert_eq!(period(None, None), None);
        assert_eq!(period(None, os(b"0")), None);
        for huge in [&b"18446744073709551615"[..], b"999999999999999999999999"] {
            let r = watchdog_period_from(None, Some(OsStr::from_bytes(huge)), 42);
            assert_eq!(r.value, Some(MAX_WATCHDOG_PERIOD));
            assert!(r.note.is_some());
        }
        for junk in [&b"-1"[..], b"", b"NaN", b"\xfe\xff", b"1.5"] {
            let r = watchdog_period_from(None, Some(OsStr::from_bytes(junk)), 42);
            assert_eq!(r.value, None);
            assert!(r.note.is_some());
        }
    }

    #[test]
    fn notify_socket_at_its_extremes_is_refused_clearly() {
        let long = [b"/".as_slice(), &[b'a'; 200]].concat();
        for bad in [&b""[..], b"relative", &long] {
            let err = Notifier::to_address(bad).err().expect("refused");
            assert!(!err.to_string().is_empty());
        }
        assert!(Notifier::to_address(b"/tmp/\xff\xfe-not-utf8").is_ok());
    }
}
