//! Turns the bytes of one netlink datagram into [`NetlinkItem`]s.
//!
//! A datagram may hold many messages; every one is parsed. Only the link
//! attributes the rules need are decoded (with netlink-packet-route), so a
//! malformed or unknown attribute elsewhere costs nothing, and a malformed
//! one we need is counted and skipped rather than failing the message.

use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};
use netlink_packet_route::link::{LinkFlags, LinkHeader};

use super::event::{LinkChange, LinkEvent};

/// One message of a datagram, as far as the reader cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkItem<'a> {
    Link(LinkEvent<'a>),
    /// NLMSG_DONE: the end of a dump. `interrupted` is NLM_F_DUMP_INTR:
    /// the link list changed while the kernel walked it, so dump again.
    Done {
        seq: u32,
        interrupted: bool,
    },
    /// NLMSG_ERROR; `code` 0 is an acknowledgement.
    Error {
        seq: u32,
        code: i32,
    },
}

/// Counts of what could not be understood, for metrics and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ParseStats {
    /// Messages dropped whole: truncated headers, no name.
    pub malformed_messages: u64,
    /// Attributes skipped inside otherwise good messages.
    pub malformed_attributes: u64,
}

/// Parses every message of `datagram`, handing each item to `sink`.
pub fn parse_datagram<'a>(
    datagram: &'a [u8],
    stats: &mut ParseStats,
    mut sink: impl FnMut(NetlinkItem<'a>),
) {
    let mut rest = datagram;
    while !rest.is_empty() {
        let Ok(msg) = NetlinkBuffer::new_checked(rest) else {
            stats.malformed_messages += 1;
            return;
        };
        let len = msg.length() as usize;
        let seq = msg.sequence_number();
        let flags = msg.flags();
        // The payload borrows `rest`, not `msg`, so events can outlive it.
        let payload = rest.get(16..len.min(rest.len())).unwrap_or_default();
        match msg.message_type() {
            t if t == libc::RTM_NEWLINK || t == libc::RTM_DELLINK => {
                let change = if t == libc::RTM_NEWLINK {
                    LinkChange::New
                } else {
                    LinkChange::Del
                };
                match parse_link(payload, change, stats) {
                    Some(event) => sink(NetlinkItem::Link(event)),
                    None => stats.malformed_messages += 1,
                }
            }
            t if t == libc::NLMSG_DONE as u16 => sink(NetlinkItem::Done {
                seq,
                interrupted: flags & netlink_packet_core::NLM_F_DUMP_INTR != 0,
            }),
            t if t == libc::NLMSG_ERROR as u16 => match payload.get(..4) {
                Some(code) => sink(NetlinkItem::Error {
                    seq,
                    code: i32::from_ne_bytes([code[0], code[1], code[2], code[3]]),
                }),
                None => stats.malformed_messages += 1,
            },
            _ => {}
        }
        // Messages are 4-byte aligned; the last one may lack its padding.
        let advance = len.next_multiple_of(4).min(rest.len());
        rest = &rest[advance..];
    }
}

/// Decodes one RTM_NEWLINK/RTM_DELLINK payload; `None` when it has no usable
/// header or name.
pub fn parse_link<'a>(
    payload: &'a [u8],
    change: LinkChange,
    stats: &mut ParseStats,
) -> Option<LinkEvent<'a>> {
    let header = LinkHeader::parse(payload).ok()?;
    let attributes = payload.get(16..).unwrap_or_default();
    let mut event = LinkEvent {
        change,
        ifindex: header.index,
        name: &[],
        kind: None,
        master: None,
        admin_up: header.flags.contains(LinkFlags::Up),
        oper_up: header.flags.contains(LinkFlags::Running),
        mtu: 0,
    };
    for nla in NlasIterator::new(attributes) {
        let Ok(nla) = nla else {
            stats.malformed_attributes += 1;
            break; // the rest of the buffer cannot be framed
        };
        let kind = nla.kind() & !(libc::NLA_F_NESTED as u16 | libc::NLA_F_NET_BYTEORDER as u16);
        let value: &'a [u8] = nla_value(attributes, &nla);
        match kind {
            libc::IFLA_LINKINFO => event.kind = info_kind(value),
            // The name is read as bytes: the kernel allows names that are not
            // UTF-8, and a string parser would refuse them.
            libc::IFLA_IFNAME => event.name = until_nul(value),
            libc::IFLA_MTU | libc::IFLA_MASTER => match <[u8; 4]>::try_from(value) {
                Ok(raw) if kind == libc::IFLA_MTU => event.mtu = u32::from_ne_bytes(raw),
                Ok(raw) => event.master = Some(u32::from_ne_bytes(raw)).filter(|m| *m != 0),
                Err(_) => stats.malformed_attributes += 1,
            },
            _ => {}
        }
    }
    (!event.name.is_empty()).then_some(event)
}

/// The value of `nla`, borrowed from the buffer it was framed in (the
/// iterator's items borrow only for their own lifetime).
fn nla_value<'a>(buffer: &'a [u8], nla: &NlaBuffer<&[u8]>) -> &'a [u8] {
    let value = nla.value();
    let start = (value.as_ptr() as usize).saturating_sub(buffer.as_ptr() as usize);
    buffer.get(start..start + value.len()).unwrap_or_default()
}

fn until_nul(raw: &[u8]) -> &[u8] {
    raw.split(|b| *b == 0).next().unwrap_or_default()
}

/// IFLA_INFO_KIND inside IFLA_LINKINFO, read directly: the rest of the nest
/// (per-kind data) is of no interest and need not parse.
fn info_kind(linkinfo: &[u8]) -> Option<&[u8]> {
    NlasIterator::new(linkinfo)
        .filter_map(Result::ok)
        .find_map(|nla: NlaBuffer<&[u8]>| {
            (nla.kind() == libc::IFLA_INFO_KIND).then(|| until_nul(nla_value(linkinfo, &nla)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    fn newlink_bytes(name: &str) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = 7;
        link.header.flags = LinkFlags::Up | LinkFlags::Running;
        link.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Mtu(9100),
            LinkAttribute::Controller(3),
        ];
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(link)),
        );
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn every_message_of_a_datagram_is_parsed() {
        let mut datagram = newlink_bytes("Ethernet0");
        datagram.extend(newlink_bytes("Ethernet4"));
        let mut items = Vec::new();
        parse_datagram(&datagram, &mut ParseStats::default(), |i| items.push(i));
        assert_eq!(items.len(), 2);
        let NetlinkItem::Link(ev) = &items[1] else {
            panic!("{items:?}")
        };
        assert_eq!(
            (ev.name, ev.ifindex, ev.mtu, ev.master),
            (&b"Ethernet4"[..], 7, 9100, Some(3))
        );
        assert!(ev.admin_up && ev.oper_up);
    }

    #[test]
    fn a_malformed_attribute_is_counted_and_skipped() {
        let mut bytes = newlink_bytes("Ethernet0");
        // Shrink the MTU attribute's value to 2 bytes (its length field sits
        // 4 bytes before its value): the u32 parser must refuse it.
        let mtu_at = bytes
            .windows(4)
            .position(|w| w == 9100u32.to_ne_bytes())
            .unwrap();
        bytes[mtu_at - 4..mtu_at - 2].copy_from_slice(&6u16.to_ne_bytes());
        let mut stats = ParseStats::default();
        let mut items = Vec::new();
        parse_datagram(&bytes, &mut stats, |i| items.push(i));
        assert!(stats.malformed_attributes >= 1, "{stats:?}");
        let NetlinkItem::Link(ev) = &items[0] else {
            panic!("{items:?}")
        };
        assert_eq!(ev.name, b"Ethernet0");
    }

    #[test]
    fn garbage_never_panics() {
        let good = newlink_bytes("Ethernet0");
        let mut stats = ParseStats::default();
        for cut in 0..good.len() {
            parse_datagram(&good[..cut], &mut stats, |_| {});
        }
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            parse_datagram(&bytes, &mut stats, |_| {});
        }
        assert!(stats.malformed_messages > 0);
    }
}
