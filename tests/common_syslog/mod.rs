//! A private syslog socket for tests: binds a unix datagram socket and
//! collects what the daemon sends to it.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use crate::common::DEADLINE;

/// Collects the datagrams sent to a private syslog socket.
pub struct SyslogSink {
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Where the next [`SyslogSink::wait_for`] starts looking: just after
    /// the line the previous one returned.
    next: usize,
}

impl SyslogSink {
    pub fn bind(path: &Path) -> SyslogSink {
        let socket = UnixDatagram::bind(path).expect("bind the test's syslog socket");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf) {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        SyslogSink {
            lines,
            seen: Vec::new(),
            next: 0,
        }
    }

    /// Waits for a datagram containing `what` that came after the one the
    /// previous `wait_for` returned (a line from before that does not
    /// count: it cannot be the answer to what the test did since); returns
    /// it.
    pub fn wait_for(&mut self, what: &str) -> String {
        let at = self.wait_from(self.next, what);
        self.next = at + 1;
        self.seen[at].clone()
    }

    /// Waits for a datagram containing `what`, received at any time since
    /// the sink was bound (for lines whose order against the previous
    /// [`SyslogSink::wait_for`] is not fixed); does not move where the next
    /// `wait_for` looks.
    pub fn wait_for_logged(&mut self, what: &str) -> String {
        let at = self.wait_from(0, what);
        self.seen[at].clone()
    }

    /// The index in `seen` of the first line from `from` on containing `what`.
    fn wait_from(&mut self, from: usize, what: &str) -> usize {
        if let Some(i) = self.seen[from..].iter().position(|l| l.contains(what)) {
            return from + i;
        }
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(line) => {
                    self.seen.push(line);
                    if self.seen.len() > from && self.seen.last().unwrap().contains(what) {
                        return self.seen.len() - 1;
                    }
                }
                Err(_) => panic!(
                    "no syslog datagram containing {what:?} after the {from} first; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every datagram received so far, one per line.
    pub fn received(&mut self) -> String {
        self.seen.extend(self.lines.try_iter());
        self.seen.join("\n")
    }
}
