//! Turns the bytes of one netlink datagram into [`NetlinkItem`]s.
//!
//! A datagram may hold many messages; every one is parsed. Only the link
//! attributes the rules need are decoded (with netlink-packet-route), so a
//! malformed or unknown attribute elsewhere costs nothing, and a malformed
//! one we need is counted and skipped rather than failing the message.

use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator, ParseableParametrized};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader};

use super::event::{LinkChange, LinkEvent};

/// One message of a datagram, as far as the reader cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkItem {
    Link(LinkEvent),
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
pub fn parse_datagram(datagram: &[u8], stats: &mut ParseStats, mut sink: impl FnMut(NetlinkItem)) {
    let mut rest = datagram;
    while !rest.is_empty() {
        let Ok(msg) = NetlinkBuffer::new_checked(rest) else {
            stats.malformed_messages += 1;
            return;
        };
        let len = msg.length() as usize;
        let seq = msg.sequence_number();
        let flags = msg.flags();
        let payload = msg.payload();
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
                    code: i32::from_ne_bytes(code.try_into().expect("four bytes")),
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
pub fn parse_link(payload: &[u8], change: LinkChange, stats: &mut ParseStats) -> Option<LinkEvent> {
    let header = LinkHeader::parse(payload).ok()?;
    let attributes = payload.get(16..).unwrap_or_default();
    let mut event = LinkEvent {
        change,
        ifindex: header.index,
        name: String::new(),
        kind: None,
        master: None,
        admin_up: header.flags.contains(LinkFlags::Up),
        oper_up: header.flags.contains(LinkFlags::Running),
        mtu: 0,
        carrier_changes: None,
        mac: None,
    };
    for nla in NlasIterator::new(attributes) {
        let Ok(nla) = nla else {
            stats.malformed_attributes += 1;
            break; // the rest of the buffer cannot be framed
        };
        let kind = nla.kind() & !(libc::NLA_F_NESTED as u16 | libc::NLA_F_NET_BYTEORDER as u16);
        if kind == libc::IFLA_LINKINFO {
            event.kind = info_kind(nla.value());
            continue;
        }
        if !matches!(
            kind,
            libc::IFLA_IFNAME
                | libc::IFLA_MTU
                | libc::IFLA_MASTER
                | libc::IFLA_ADDRESS
                | libc::IFLA_CARRIER_CHANGES
        ) {
            continue;
        }
        match LinkAttribute::parse_with_param(&nla, header.interface_family) {
            Ok(LinkAttribute::IfName(name)) => event.name = name,
            Ok(LinkAttribute::Mtu(mtu)) => event.mtu = mtu,
            Ok(LinkAttribute::Controller(master)) => event.master = (master != 0).then_some(master),
            Ok(LinkAttribute::CarrierChanges(n)) => event.carrier_changes = Some(n),
            Ok(LinkAttribute::Address(mac)) => event.mac = mac.as_slice().try_into().ok(),
            Ok(_) => {}
            Err(_) => stats.malformed_attributes += 1,
        }
    }
    (!event.name.is_empty()).then_some(event)
}

/// IFLA_INFO_KIND inside IFLA_LINKINFO, read directly: the rest of the nest
/// (per-kind data) is of no interest and need not parse.
fn info_kind(linkinfo: &[u8]) -> Option<String> {
    NlasIterator::new(linkinfo)
        .filter_map(Result::ok)
        .find_map(|nla: NlaBuffer<&[u8]>| {
            (nla.kind() == libc::IFLA_INFO_KIND).then(|| {
                let raw = nla.value();
                let raw = raw.split(|b| *b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(raw).into_owned()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::LinkMessage;

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
            (ev.name.as_str(), ev.ifindex, ev.mtu, ev.master),
            ("Ethernet4", 7, 9100, Some(3))
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
        assert_eq!(ev.name, "Ethernet0");
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
