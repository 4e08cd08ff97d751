//! A stand-in for rsyslogd: the daemon logs to it as it does on a switch
//! (one datagram per line on a unix socket, `--syslog-socket`), so the CPU
//! measured includes sending log lines the way a switch has them sent, and
//! it appends every line to a file for the overrun count.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct SyslogSink {
    pub socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SyslogSink {
    /// Listens on `socket`, writing each line to `out`.
    pub fn start(socket: PathBuf, out: &Path) -> SyslogSink {
        let listener = UnixDatagram::bind(&socket).expect("bind the syslog socket");
        listener
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("receive timeout");
        let mut out = BufWriter::new(File::create(out).expect("syslog file"));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok(n) = listener.recv(&mut buf) {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.write_all(b"\n");
                }
            }
            let _ = out.flush();
        });
        SyslogSink {
            socket,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
