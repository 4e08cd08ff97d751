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
        }
    }

    /// Waits for a datagram containing `what`; returns it.
    pub fn wait_for(&mut self, what: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(what)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(DEADLINE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no syslog datagram containing {what:?}; got:\n{}",
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
