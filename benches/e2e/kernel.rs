//! The harness's own netlink work inside the test namespace: recording every
//! link message the kernel sends (to count them and replay them later), and
//! changing one link's MTU with a single RTM_SETLINK (for latency samples,
//! without the cost of forking `ip`).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use portsyncd::netlink::{LinkSocket, NetlinkItem, ParseStats, RecvOutcome, parse_datagram};

/// Moves the calling thread into network namespace `ns` (`ip netns` name).
pub fn enter_netns(ns: &str) {
    let file = File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("cannot open /run/netns/{ns}: {e}"));
    // SAFETY: setns on a valid namespace fd; it only changes which network
    // namespace this thread's new sockets belong to.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({ns}): {}", io::Error::last_os_error());
}

/// Everything the kernel said about links while recording.
pub struct Recording {
    pub datagrams: Vec<Vec<u8>>,
    /// Link messages in total, and those for `Ethernet*` netdevs.
    pub messages: u64,
    pub port_messages: u64,
    /// When the last `Ethernet*` message that changed what STATE_DB shows
    /// (admin, oper, MTU, carrier changes) arrived: the kernel's last change.
    /// A veth's carrier follows its admin state later, from the kernel's
    /// linkwatch work, so this can be well after `ip -batch` returns.
    pub last_port_change: Option<Instant>,
    /// Every `Ethernet*` message: when it arrived, the port, its MTU.
    pub port_events: Vec<(Instant, String, u32)>,
    /// ENOBUFS: the recorder itself fell behind (counts are then low).
    pub overruns: u64,
}

/// Records every RTNLGRP_LINK datagram of a namespace on its own thread.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Recording>,
}

impl Recorder {
    pub fn start(ns: &str) -> Recorder {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns = ns.to_string();
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            enter_netns(&ns);
            let mut socket = LinkSocket::open(256 << 20).expect("recorder netlink socket");
            ready_tx.send(()).expect("ready");
            let mut rec = Recording {
                datagrams: Vec::new(),
                messages: 0,
                port_messages: 0,
                last_port_change: None,
                port_events: Vec::new(),
                overruns: 0,
            };
            let mut shown = HashMap::new();
            while !stop2.load(Ordering::SeqCst) {
                match socket.recv().expect("recorder recv") {
                    RecvOutcome::Datagrams(datagrams) => {
                        let at = Instant::now();
                        for bytes in datagrams {
                            parse_datagram(bytes, &mut ParseStats::default(), |item| {
                                if let NetlinkItem::Link(ev) = item {
                                    rec.messages += 1;
                                    if ev.name.starts_with(b"Ethernet") {
                                        rec.port_messages += 1;
                                        let state = (ev.admin_up, ev.oper_up, ev.mtu);
                                        let name = String::from_utf8_lossy(ev.name).into_owned();
                                        rec.port_events.push((at, name.clone(), ev.mtu));
                                        if shown.insert(name, state) != Some(state) {
                                            rec.last_port_change = Some(at);
                                        }
                                    }
                                }
                            });
                            rec.datagrams.push(bytes.to_vec());
                        }
                    }
                    RecvOutcome::Overrun => rec.overruns += 1,
                    // The socket's receive timeout: look at `stop` again.
                    RecvOutcome::Idle => {}
                }
            }
            rec
        });
        ready_rx.recv().expect("recorder started");
        Recorder { stop, handle }
    }

    /// Stops recording; `poke` must make the kernel send one link message
    /// (so the blocked receive returns).
    pub fn finish(self, poke: impl FnOnce()) -> Recording {
        self.stop.store(true, Ordering::SeqCst);
        poke();
        self.handle.join().expect("recorder thread")
    }
}

/// Sets `ifindex`'s MTU with one RTM_SETLINK on `socket` (opened inside the
/// namespace) and waits for the kernel's acknowledgement.
pub fn set_mtu(socket: &Socket, seq: u32, ifindex: u32, mtu: u32) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = seq;
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.attributes = vec![LinkAttribute::Mtu(mtu)];
    let mut packet = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::SetLink(link)),
    );
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    let mut buffer = vec![0; 8192];
    loop {
        let n = socket.recv(&mut &mut buffer[..], 0)?;
        let mut answer = None;
        parse_datagram(&buffer[..n], &mut ParseStats::default(), |item| {
            if let NetlinkItem::Error { seq: s, code } = item
                && s == seq
            {
                answer = Some(code);
            }
        });
        match answer {
            Some(0) => return Ok(()),
            Some(code) => return Err(io::Error::from_raw_os_error(-code)),
            None => continue,
        }
    }
}

/// A request socket for [`set_mtu`], in the calling thread's namespace.
pub fn request_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}
