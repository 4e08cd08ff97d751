//! The rtnetlink socket, owned directly on netlink-sys.
//!
//! We do not use rtnetlink's connection layer: it buffers without bound and
//! does not handle overruns. Here an overrun (ENOBUFS) is reported to the
//! caller, who repairs state with a fresh dump.

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use socket2::{SockFilter, SockRef};

use super::parse::{NetlinkItem, ParseStats, parse_datagram};

/// NLM_F_MULTI: a message of a multipart (dump) reply.
const NLM_F_MULTI: u16 = 0x2;

/// Large enough for any datagram the kernel sends for link dumps (it sizes
/// them to at most 32 KiB, or one link message if that is larger).
const DATAGRAM_SPACE: usize = 256 * 1024;
/// Datagrams taken by one receive (`recvmmsg`): during a storm a wake-up
/// finds tens of notifications, one datagram each, and a system call per
/// datagram would cost more than parsing it. The buffer is allocated
/// zeroed, so only the pages the kernel writes into become resident.
const DATAGRAMS_PER_RECEIVE: usize = 8;

/// What one receive produced.
pub enum RecvOutcome<'a> {
    /// One to [`DATAGRAMS_PER_RECEIVE`] datagrams, in arrival order: parse
    /// each with [`parse_datagram`](super::parse_datagram).
    Datagrams(Datagrams<'a>),
    /// ENOBUFS, or a datagram larger than its buffer: messages were lost.
    /// State must be re-dumped.
    Overrun,
    /// Nothing arrived within the receive timeout: the caller's loop turns
    /// anyway, so its liveness shows (see [`crate::systemd`]).
    Idle,
}

/// The datagrams of one receive.
pub struct Datagrams<'a> {
    buffer: &'a [u8],
    lengths: std::slice::Iter<'a, usize>,
    next: usize,
}

impl<'a> Iterator for Datagrams<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let length = *self.lengths.next()?;
        let start = self.next * DATAGRAM_SPACE;
        self.next += 1;
        Some(&self.buffer[start..start + length])
    }
}

/// A NETLINK_ROUTE socket subscribed to RTNLGRP_LINK.
pub struct LinkSocket {
    socket: Socket,
    /// [`DATAGRAMS_PER_RECEIVE`] slots of [`DATAGRAM_SPACE`] bytes.
    buffer: Vec<u8>,
    /// The length of each datagram of the last receive.
    lengths: Vec<usize>,
    next_seq: u32,
    /// The receive buffer the kernel actually granted, in bytes.
    pub granted_rcvbuf: usize,
}

impl LinkSocket {
    /// Opens the socket, joins RTNLGRP_LINK and asks for a `rcvbuf`-byte
    /// receive buffer: SO_RCVBUFFORCE first (needs CAP_NET_ADMIN, ignores
    /// net.core.rmem_max), then SO_RCVBUF; the granted size is read back.
    pub fn open(rcvbuf: usize) -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let options = SockRef::from(&socket);
        if force_receive_buffer(&socket, rcvbuf).is_err() {
            options.set_recv_buffer_size(rcvbuf)?;
        }
        let granted_rcvbuf = options.recv_buffer_size()?;
        options.set_read_timeout(Some(crate::systemd::IDLE_BEAT))?;
        socket.add_membership(libc::RTNLGRP_LINK)?;
        Ok(LinkSocket {
            socket,
            buffer: vec![0; DATAGRAM_SPACE * DATAGRAMS_PER_RECEIVE],
            lengths: Vec::with_capacity(DATAGRAMS_PER_RECEIVE),
            next_seq: 1,
            granted_rcvbuf,
        })
    }

    /// Has the kernel drop, before they are queued to this socket, link
    /// notifications of netdevs whose name starts with neither `Ethe` nor
    /// `Port` (veth peers, bridges, `lo`...): the rules would ignore them
    /// anyway (rule 1), and during a storm they are a third or more of what
    /// the kernel sends. Everything else passes: dump replies (NLM_F_MULTI;
    /// a notification can carry the sequence number of the request that
    /// caused it, so that cannot tell them apart), NLMSG_DONE and errors,
    /// any message whose first attribute is not IFLA_IFNAME (the kernel
    /// always puts it first).
    pub fn keep_only_ports(&self) -> io::Result<()> {
        // Classic BPF reads netlink headers as big-endian words: compare
        // against host-order constants read the same way.
        let be16 = |v: u16| u32::from(u16::from_be_bytes(v.to_ne_bytes()));
        let ifname = be16(libc::IFLA_IFNAME);
        let prefix = |p: &[u8; 4]| u32::from_be_bytes(*p);
        let program = [
            bpf_stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 4), // nlmsg_type
            bpf_jump(libc::BPF_JEQ, be16(libc::RTM_NEWLINK), 1, 0),
            bpf_jump(libc::BPF_JEQ, be16(libc::RTM_DELLINK), 0, 7),
            bpf_stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 6), // nlmsg_flags
            bpf_jump(libc::BPF_JSET, be16(NLM_F_MULTI), 5, 0),
            bpf_stmt(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 34), // first nla_type
            bpf_jump(libc::BPF_JEQ, ifname, 0, 3),
            bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 36), // name[0..4]
            bpf_jump(libc::BPF_JEQ, prefix(b"Ethe"), 1, 0),
            bpf_jump(libc::BPF_JEQ, prefix(b"Port"), 0, 1),
            bpf_stmt(libc::BPF_RET | libc::BPF_K, u32::MAX), // keep all of it
            bpf_stmt(libc::BPF_RET | libc::BPF_K, 0),        // drop
        ];
        SockRef::from(&self.socket).attach_filter(&program)
    }

    /// Makes [`recv`](Self::recv) return [`RecvOutcome::Idle`] at once when
    /// nothing is queued, for an event loop that waits for readiness.
    pub fn set_nonblocking(&mut self) -> io::Result<()> {
        self.socket.set_non_blocking(true)
    }

    /// Sends an RTM_GETLINK dump request; returns its sequence number.
    pub fn request_dump(&mut self) -> io::Result<u32> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1).max(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = seq;
        send(
            &self.socket,
            header,
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(seq)
    }

    /// Waits (up to the receive timeout, unless non-blocking) for the next
    /// datagram, and takes whatever else is queued behind it, up to
    /// [`DATAGRAMS_PER_RECEIVE`], in the same system call.
    pub fn recv(&mut self) -> io::Result<RecvOutcome<'_>> {
        let base = self.buffer.as_mut_ptr();
        let mut iovecs: [libc::iovec; DATAGRAMS_PER_RECEIVE] =
            std::array::from_fn(|i| libc::iovec {
                // SAFETY: slot i lies inside `self.buffer` (its length is
                // DATAGRAM_SPACE * DATAGRAMS_PER_RECEIVE).
                iov_base: unsafe { base.add(i * DATAGRAM_SPACE) }.cast(),
                iov_len: DATAGRAM_SPACE,
            });
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut headers: [libc::mmsghdr; DATAGRAMS_PER_RECEIVE] = unsafe { std::mem::zeroed() };
        for (header, iovec) in headers.iter_mut().zip(iovecs.iter_mut()) {
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        let received = loop {
            // SAFETY: the fd is this socket's; `headers` holds as many
            // entries as passed, each with one iovec into its own slot of
            // `self.buffer`, which outlives the call and is not borrowed
            // elsewhere meanwhile; the kernel writes at most iov_len bytes.
            let n = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    headers.as_mut_ptr(),
                    DATAGRAMS_PER_RECEIVE as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if let Ok(n) = usize::try_from(n) {
                break &headers[..n];
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS) => return Ok(RecvOutcome::Overrun),
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(RecvOutcome::Idle),
                _ => return Err(e),
            }
        };
        if received
            .iter()
            .any(|h| h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
        {
            return Ok(RecvOutcome::Overrun);
        }
        self.lengths.clear();
        self.lengths
            .extend(received.iter().map(|h| h.msg_len as usize));
        Ok(RecvOutcome::Datagrams(Datagrams {
            buffer: &self.buffer,
            lengths: self.lengths.iter(),
            next: 0,
        }))
    }
}

fn bpf_stmt(code: u32, k: u32) -> SockFilter {
    SockFilter::new(code as u16, 0, 0, k)
}

fn bpf_jump(op: u32, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter::new((libc::BPF_JMP | op | libc::BPF_K) as u16, jt, jf, k)
}

impl AsRawFd for LinkSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.socket.as_raw_fd()
    }
}

/// The netdevs that exist right now, as `(ifindex, name)`: one snapshot,
/// as upstream's `if_nameindex()`.
pub fn present_netdevs() -> io::Result<Vec<(u32, Vec<u8>)>> {
    // SAFETY: if_nameindex returns a heap array terminated by an entry with
    // index 0 and a null name, or null on failure; we read it only up to
    // that terminator, copy the names out, and free it exactly once.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut entry = list;
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*entry).if_name);
            out.push(((*entry).if_index, name.to_bytes().to_vec()));
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
        Ok(out)
    }
}

/// Sets IFF_UP off on `ifindex` with RTM_SETLINK and waits for the kernel's
/// answer: what upstream does by forking `ip link set <name> down`.
pub fn bring_link_down(ifindex: u32) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    link.header.flags = LinkFlags::empty();
    link.header.change_mask = LinkFlags::Up;
    send(&socket, header, RouteNetlinkMessage::SetLink(link))?;
    let mut buffer = vec![0; 8192];
    loop {
        let n = socket.recv(&mut &mut buffer[..], 0)?;
        let mut answer = None;
        parse_datagram(&buffer[..n], &mut ParseStats::default(), |item| {
            if let NetlinkItem::Error { seq: 1, code } = item {
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

fn send(socket: &Socket, header: NetlinkHeader, msg: RouteNetlinkMessage) -> io::Result<()> {
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    Ok(())
}

/// SO_RCVBUFFORCE (needs CAP_NET_ADMIN; not among socket2's options).
fn force_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is a live socket owned by `socket`; we pass a pointer
    // to a c_int that outlives the call, with its exact size, as the kernel
    // expects for SO_RCVBUFFORCE.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
