//! The parser on real kernel datagrams (the fuzz seeds in
//! fuzz/seeds/netlink_datagram, captured from a namespace with veth ports
//! Ethernet0 (admin up, peer up) and Ethernet4 (enslaved to bridge br0)):
//! what it reads must be what the kernel said. Keeps the seeds meaningful.

use portsyncd::netlink::{LinkChange, LinkEvent, NetlinkItem, ParseStats, parse_datagram};

fn parse(bytes: &[u8]) -> (Vec<NetlinkItem<'_>>, ParseStats) {
    let mut stats = ParseStats::default();
    let mut items = Vec::new();
    parse_datagram(bytes, &mut stats, |item| items.push(item));
    (items, stats)
}

fn links<'a>(items: &'a [NetlinkItem<'a>]) -> Vec<&'a LinkEvent<'a>> {
    items
        .iter()
        .filter_map(|i| match i {
            NetlinkItem::Link(e) => Some(e),
            _ => None,
        })
        .collect()
}

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds/netlink_datagram");

fn seed(name: &str) -> Vec<u8> {
    std::fs::read(format!("{SEEDS}/{name}")).unwrap()
}

#[test]
fn a_real_link_dump_parses_completely() {
    let seeds = ["dump-0", "dump-1", "dump-2"].map(|name| (name, seed(name)));
    let mut all = Vec::new();
    for (name, bytes) in &seeds {
        let (items, stats) = parse(bytes);
        assert_eq!(stats, ParseStats::default(), "{name}: parse failures");
        all.extend(items);
    }
    let links = links(&all);
    let names: Vec<&[u8]> = links.iter().map(|e| e.name).collect();
    for expected in [&b"lo"[..], b"Ethernet0", b"p0", b"Ethernet4", b"p4", b"br0"] {
        assert!(
            names.contains(&expected),
            "{expected:?} missing from {names:?}"
        );
    }
    let eth0 = links.iter().find(|e| e.name == b"Ethernet0").unwrap();
    assert!(eth0.admin_up && eth0.oper_up, "{eth0:?}");
    assert_eq!(eth0.kind, Some(&b"veth"[..]));
    let br0 = links.iter().find(|e| e.name == b"br0").unwrap();
    let eth4 = links.iter().find(|e| e.name == b"Ethernet4").unwrap();
    assert_eq!(eth4.master, Some(br0.ifindex));
    assert!(
        all.iter().any(|i| matches!(
            i,
            NetlinkItem::Done {
                seq: 1,
                interrupted: false
            }
        )),
        "no NLMSG_DONE for the dump"
    );
}

#[test]
fn real_notifications_parse() {
    let event3 = seed("event-3");
    let (items, _) = parse(&event3);
    let mtu = links(&items);
    assert!(
        mtu.iter().any(|e| e.name == b"Ethernet0" && e.mtu == 9100),
        "{mtu:?}"
    );
    // The first datagram after `ip link del Ethernet4` (a bridge port): the
    // kernel reports it, still with its master, before the deletion proper.
    let event4 = seed("event-4");
    let (items, stats) = parse(&event4);
    assert_eq!(stats, ParseStats::default());
    let del = links(&items);
    assert!(
        del.iter()
            .any(|e| e.name == b"Ethernet4" && e.change == LinkChange::New && e.master.is_some()),
        "{del:?}"
    );
}
