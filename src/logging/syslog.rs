//! A log writer for the local syslog socket (`/dev/log`), the way glibc's
//! `syslog(3)` talks to it: one datagram per line, `<PRI>portsyncd[PID]: MSG`
//! (RFC 3164 without timestamp and hostname, which the local syslog daemon
//! fills in on receipt).
//!
//! Log calls sit on the paths that write STATE_DB, so a send never waits:
//! the socket is non-blocking, and a line the syslog daemon cannot take at
//! once (its queue is full: a wedged or slow rsyslogd) is dropped and
//! counted in [`LINES_DROPPED`] (metric `portsyncd_log_lines_dropped_total`).
//! glibc's `syslog(3)`, which the upstream daemon uses, blocks instead.

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

use super::severity::syslog_severity;

/// The identity swss daemons log under.
pub const IDENTITY: &str = "portsyncd";
/// The local syslog socket on Linux.
pub const DEFAULT_SOCKET: &str = "/dev/log";
/// Facility `user`, as the swss daemons use.
const FACILITY_USER: u8 = 1;
/// Longer messages are cut: the default maximum of rsyslog and journald.
const MAX_MESSAGE: usize = 8 * 1024;
/// Lines dropped because the syslog socket could not take them at once.
/// A counter the metrics registry shares (cloning shares the value).
pub static LINES_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// How many log lines were dropped so far (see [`LINES_DROPPED`]).
pub fn lines_dropped() -> u64 {
    LINES_DROPPED.get()
}

/// Hands out one [`SyslogLine`] per log event.
#[derive(Clone)]
pub struct SyslogWriter {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// Connected once, as glibc's `openlog` does: a send to a connected
    /// socket skips the path lookup an unconnected `sendto` pays per line.
    socket: Mutex<Connection>,
    pid: u32,
}

/// The socket to the syslog daemon, and when connecting last failed.
#[derive(Default)]
struct Connection {
    socket: Option<UnixDatagram>,
    failed_at: Option<Instant>,
}

/// A syslog daemon that is not there is looked for again at most this often
/// (meanwhile lines go to stderr).
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

impl Connection {
    /// The connected socket, connecting (again) if there is none and the
    /// last attempt is not too recent.
    fn get(&mut self, path: &PathBuf) -> Option<&UnixDatagram> {
        if self.socket.is_none()
            && self
                .failed_at
                .is_none_or(|t| t.elapsed() >= RECONNECT_EVERY)
        {
            let connected = UnixDatagram::unbound().and_then(|s| {
                s.set_nonblocking(true)?;
                s.connect(path)?;
                Ok(s)
            });
            match connected {
                Ok(s) => self.socket = Some(s),
                Err(_) => self.failed_at = Some(Instant::now()),
            }
        }
        self.socket.as_ref()
    }

    /// One line; `false` when it could not be handed to the syslog daemon
    /// (the caller falls back to stderr).
    fn send(&mut self, path: &PathBuf, datagram: &[u8]) -> bool {
        for _ in 0..2 {
            let Some(socket) = self.get(path) else {
                return false;
            };
            match socket.send(datagram) {
                Ok(_) => return true,
                // The syslog daemon is there but its queue is full: waiting
                // would hold up port sync, so the line is dropped and counted.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    LINES_DROPPED.inc();
                    return true;
                }
                // The daemon restarted (its socket is new): connect again.
                Err(_) => self.socket = None,
            }
        }
        false
    }
}

impl SyslogWriter {
    pub fn new(path: PathBuf) -> SyslogWriter {
        SyslogWriter {
            inner: Arc::new(Inner {
                path,
                socket: Mutex::new(Connection::default()),
                pid: std::process::id(),
            }),
        }
    }

    fn line(&self, severity: u8) -> SyslogLine {
        SyslogLine {
            writer: self.inner.clone(),
            severity,
            buf: Vec::with_capacity(256),
        }
    }
}

impl<'a> MakeWriter<'a> for SyslogWriter {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        self.line(5)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SyslogLine {
        self.line(syslog_severity(meta.level()))
    }
}

/// One formatted event; sent as one datagram when dropped.
pub struct SyslogLine {
    writer: Arc<Inner>,
    severity: u8,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let datagram = format_datagram(self.severity, self.writer.pid, &self.buf);
        let sent = self
            .writer
            .socket
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .send(&self.writer.path, &datagram);
        if !sent {
            // No syslog daemon (yet): like LOG_CONS, do not lose the line;
            // under supervisord stderr reaches syslog by another path.
            let _ = io::stderr().write_all(&self.buf);
        }
    }
}

/// `<PRI>portsyncd[PID]: MSG` with the padding and newline removed and the
/// message cut to [`MAX_MESSAGE`] bytes.
pub fn format_datagram(severity: u8, pid: u32, message: &[u8]) -> Vec<u8> {
    let mut message = message;
    while let [rest @ .., b'\n' | b'\r'] = message {
        message = rest;
    }
    // The text format pads the level (" INFO"); the header already ends in
    // a space.
    while let [b' ', rest @ ..] = message {
        message = rest;
    }
    let message = &message[..message.len().min(MAX_MESSAGE)];
    let pri = FACILITY_USER * 8 + severity;
    let mut out = format!("<{pri}>{IDENTITY}[{pid}]: ").into_bytes();
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_has_priority_identity_and_pid() {
        let d = format_datagram(3, 42, b" ERROR cannot reach Redis\n");
        assert_eq!(d, b"<11>portsyncd[42]: ERROR cannot reach Redis");
        let d = format_datagram(7, 1, b"x");
        assert_eq!(d, b"<15>portsyncd[1]: x");
    }

    #[test]
    fn long_messages_are_cut() {
        let d = format_datagram(5, 1, &vec![b'a'; 3 * MAX_MESSAGE]);
        assert_eq!(d.len(), "<13>portsyncd[1]: ".len() + MAX_MESSAGE);
    }

    #[test]
    fn a_full_socket_drops_and_counts_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wedged.sock");
        // Bound, never read: its queue fills and stays full.
        let _wedged = UnixDatagram::bind(&path).unwrap();
        let writer = SyslogWriter::new(path);
        let before = lines_dropped();
        // Far more than a unix datagram queue holds (net.unix.max_dgram_qlen),
        // in a thread: a send that waits (the old 200 ms timeout per line, or
        // a blocking socket) is caught here after a second, not at the
        // test's own timeout.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let started = Instant::now();
            for _ in 0..5_000 {
                let mut line = writer.line(5);
                line.write_all(b"NOTICE filler\n").unwrap();
            }
            let _ = done.send(started.elapsed());
        });
        // Each send takes microseconds; one that waited even once for the
        // old timeout would already use a fifth of this.
        let took = finished
            .recv_timeout(Duration::from_secs(1))
            .expect("5000 lines to a full socket took over a second: a send waited");
        let dropped = lines_dropped() - before;
        assert!(dropped > 0, "nothing was dropped");
        assert!(dropped <= 5_000);
        eprintln!("5000 lines, {dropped} dropped, in {took:?}");
    }

    #[test]
    fn lines_reach_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let writer = SyslogWriter::new(path);
        {
            let mut line = writer.line(4);
            line.write_all(b"WARN hello\n").unwrap();
        }
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        let expected = format!("<12>portsyncd[{}]: WARN hello", std::process::id());
        assert_eq!(&buf[..n], expected.as_bytes());
    }

    #[test]
    fn a_restarted_syslog_daemon_gets_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let writer = SyslogWriter::new(path.clone());
        let mut buf = [0u8; 256];
        let first = UnixDatagram::bind(&path).unwrap();
        writer.line(5).write_all(b"one\n").unwrap();
        assert!(first.recv(&mut buf).unwrap() > 0);
        // rsyslogd restarts: a new socket at the same path.
        drop(first);
        std::fs::remove_file(&path).unwrap();
        let second = UnixDatagram::bind(&path).unwrap();
        second.set_nonblocking(true).unwrap();
        writer.line(5).write_all(b"two\n").unwrap();
        let n = second
            .recv(&mut buf)
            .expect("the line reached the new socket");
        assert!(buf[..n].ends_with(b"two"));
    }
}
