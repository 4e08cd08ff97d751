//! A log writer for the local syslog socket (`/dev/log`), the way glibc's
//! `syslog(3)` talks to it: one datagram per line, `<PRI>portsyncd[PID]: MSG`
//! (RFC 3164 without timestamp and hostname, which the local syslog daemon
//! fills in on receipt).

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
/// A stuck syslog daemon must not stall the daemon for long.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// Hands out one [`SyslogLine`] per log event.
#[derive(Clone)]
pub struct SyslogWriter {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// An unbound datagram socket, so each send goes to `path` afresh and a
    /// restarted syslog daemon is picked up without reconnecting.
    socket: Option<UnixDatagram>,
    pid: u32,
}

impl SyslogWriter {
    pub fn new(path: PathBuf) -> SyslogWriter {
        let socket = UnixDatagram::unbound().ok().inspect(|s| {
            let _ = s.set_write_timeout(Some(SEND_TIMEOUT));
        });
        SyslogWriter {
            inner: Arc::new(Inner {
                path,
                socket,
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
            .as_ref()
            .is_some_and(|s| s.send_to(&datagram, &self.writer.path).is_ok());
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
}
