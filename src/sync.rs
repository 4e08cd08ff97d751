//! The upstream portsyncd rules, as a pure function of what we know and one
//! link event. No I/O happens here, so every rule is a fast unit test.
//!
//! The rules follow `LinkSync::onMsg` in sonic-swss `portsyncd/linksync.cpp`,
//! in its order; the old-interface snapshot follows its constructor.

use std::collections::HashSet;

use crate::netlink::{LinkChange, LinkEvent};

/// Front-panel ports.
pub const INTFS_PREFIX: &[u8] = b"Ethernet";
/// LAGs; their members' state matters to SONiC too.
pub const LAG_PREFIX: &[u8] = b"PortChannel";
/// teamd's netdevs belong to teamsyncd.
pub const TEAM_KIND: &[u8] = b"team";

/// Why an event led to no write; logged and counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Not `Ethernet*` or `PortChannel*`: eth0, lo, veth peers, bridges.
    NotAPort,
    /// A `team` netdev: teamsyncd owns it.
    TeamLink,
    /// RTM_DELLINK of an enslaved link: it left a bridge or LAG, it still exists.
    DelWithMaster,
    /// A front-panel netdev that existed before a cold start, or any later
    /// message for its ifindex: syncd recreates host interfaces, and the old
    /// ones must not write stale state.
    OldInterface,
}

impl Ignored {
    pub fn as_str(self) -> &'static str {
        match self {
            Ignored::NotAPort => "not_a_port",
            Ignored::TeamLink => "team_link",
            Ignored::DelWithMaster => "del_with_master",
            Ignored::OldInterface => "old_interface",
        }
    }
}

/// The netdev facts portsyncd publishes for a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortState {
    pub admin_up: bool,
    pub oper_up: bool,
    pub mtu: u32,
}

/// What the rules decided for one event; names borrow the message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    Ignore(Ignored),
    /// RTM_NEWLINK of a port: the kernel's view of it (whether that is a
    /// change, and so a write, is the port record's to say).
    Set {
        port: &'a [u8],
        ifindex: u32,
        state: PortState,
    },
    /// RTM_DELLINK: delete STATE_DB `PORT_TABLE|port`.
    Delete {
        port: &'a [u8],
    },
}

/// How the daemon started, which decides the old-interface rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartMode {
    pub warm: bool,
    /// `DEVICE_METADATA|localhost` `switch_type` is `dpu`: netdevs are
    /// created early by the driver and are never old.
    pub dpu: bool,
}

/// The old interfaces among the netdevs present when the daemon started
/// (`if_nameindex()` in upstream's constructor): on a cold, non-DPU start,
/// every front-panel netdev. Upstream brings each down and ignores its
/// ifindex for good, because syncd recreates the host interfaces.
pub fn old_interfaces(mode: StartMode, present: &[(u32, Vec<u8>)]) -> Vec<(u32, Vec<u8>)> {
    if mode.warm || mode.dpu {
        return Vec::new();
    }
    present
        .iter()
        .filter(|(_, name)| name.starts_with(INTFS_PREFIX))
        .cloned()
        .collect()
}

/// What the rules remember between events.
#[derive(Default)]
pub struct SyncRules {
    /// ifindexes of old interfaces.
    old: HashSet<u32>,
}

impl SyncRules {
    pub fn new(old_ifindexes: impl IntoIterator<Item = u32>) -> Self {
        SyncRules {
            old: old_ifindexes.into_iter().collect(),
        }
    }

    /// Applies the upstream rules to one event.
    pub fn on_event<'a>(&self, ev: &LinkEvent<'a>) -> Decision<'a> {
        // Rule 1: only front-panel ports and LAGs.
        if !ev.name.starts_with(INTFS_PREFIX) && !ev.name.starts_with(LAG_PREFIX) {
            return Decision::Ignore(Ignored::NotAPort);
        }
        // Rule 2: teamd's netdevs are teamsyncd's business.
        if ev.kind == Some(TEAM_KIND) {
            return Decision::Ignore(Ignored::TeamLink);
        }
        // Rule 3: a DELLINK with a master is a port leaving a bridge or LAG.
        if ev.change == LinkChange::Del && ev.master.is_some() {
            return Decision::Ignore(Ignored::DelWithMaster);
        }
        // Rule 4: old interfaces of a cold start, by ifindex, for good.
        if self.old.contains(&ev.ifindex) {
            return Decision::Ignore(Ignored::OldInterface);
        }
        let port = ev.name;
        match ev.change {
            LinkChange::Del => Decision::Delete { port },
            LinkChange::New => Decision::Set {
                port,
                ifindex: ev.ifindex,
                state: PortState {
                    admin_up: ev.admin_up,
                    oper_up: ev.oper_up,
                    mtu: ev.mtu,
                },
            },
        }
    }
}

/// The STATE_DB `PORT_TABLE` fields portsyncd owns, exactly the four
/// upstream writes, in its order.
pub const STATE_FIELDS: [&str; 4] = ["state", "netdev_oper_status", "admin_status", "mtu"];

/// The values of [`STATE_FIELDS`] for `state`.
pub fn state_values(state: &PortState) -> [Vec<u8>; 4] {
    let updown = |up: bool| if up { b"up".to_vec() } else { b"down".to_vec() };
    [
        b"ok".to_vec(),
        updown(state.oper_up),
        updown(state.admin_up),
        state.mtu.to_string().into_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(change: LinkChange, ifindex: u32, name: &str) -> LinkEvent<'_> {
        LinkEvent {
            change,
            ifindex,
            name: name.as_bytes(),
            kind: Some(b"veth"),
            master: None,
            admin_up: true,
            oper_up: false,
            mtu: 9100,
        }
    }

    fn new(ifindex: u32, name: &str) -> LinkEvent<'_> {
        link(LinkChange::New, ifindex, name)
    }

    const COLD: StartMode = StartMode {
        warm: false,
        dpu: false,
    };
    const WARM: StartMode = StartMode {
        warm: true,
        dpu: false,
    };

    fn is_set(d: &Decision) -> bool {
        matches!(d, Decision::Set { .. })
    }

    #[test]
    fn only_ethernet_and_portchannel_names_count() {
        let rules = SyncRules::new([]);
        for name in ["eth0", "lo", "peer0", "Bridge", "Vlan1000", "docker0"] {
            assert_eq!(
                rules.on_event(&new(5, name)),
                Decision::Ignore(Ignored::NotAPort),
                "{name}"
            );
        }
        assert!(is_set(&rules.on_event(&new(6, "PortChannel1"))));
        assert!(is_set(&rules.on_event(&new(7, "Ethernet8"))));
    }

    #[test]
    fn team_links_are_left_to_teamsyncd() {
        let rules = SyncRules::new([]);
        let mut ev = new(9, "PortChannel0001");
        ev.kind = Some(b"team");
        assert_eq!(rules.on_event(&ev), Decision::Ignore(Ignored::TeamLink));
    }

    #[test]
    fn dellink_with_a_master_is_ignored_but_newlink_with_one_is_not() {
        let rules = SyncRules::new([]);
        let mut del = link(LinkChange::Del, 9, "Ethernet0");
        del.master = Some(3);
        assert_eq!(
            rules.on_event(&del),
            Decision::Ignore(Ignored::DelWithMaster)
        );
        let mut add = new(9, "Ethernet0");
        add.master = Some(3);
        assert!(is_set(&rules.on_event(&add)));
    }

    #[test]
    fn old_interfaces_are_the_front_panel_netdevs_of_the_snapshot_on_a_cold_start() {
        let present = vec![
            (10, b"Ethernet0".to_vec()),
            (11, b"PortChannel1".to_vec()),
            (1, b"lo".to_vec()),
        ];
        assert_eq!(
            old_interfaces(COLD, &present),
            vec![(10, b"Ethernet0".to_vec())]
        );
        let dpu = StartMode {
            warm: false,
            dpu: true,
        };
        assert!(old_interfaces(WARM, &present).is_empty());
        assert!(old_interfaces(dpu, &present).is_empty());
    }

    #[test]
    fn an_old_ifindex_is_ignored_for_good_and_a_recreated_netdev_is_a_port() {
        let rules = SyncRules::new([10]);
        assert_eq!(
            rules.on_event(&new(10, "Ethernet0")),
            Decision::Ignore(Ignored::OldInterface)
        );
        assert_eq!(
            rules.on_event(&link(LinkChange::Del, 10, "Ethernet0")),
            Decision::Ignore(Ignored::OldInterface)
        );
        // A netdev created after the snapshot, even during the first dump,
        // is a real port.
        assert!(is_set(&rules.on_event(&new(12, "Ethernet0"))));
        assert!(is_set(&rules.on_event(&new(13, "Ethernet4"))));
    }

    #[test]
    fn newlink_carries_the_netdev_state() {
        let rules = SyncRules::new([]);
        let Decision::Set {
            port,
            ifindex,
            state,
        } = rules.on_event(&new(4, "Ethernet4"))
        else {
            panic!("expected a write");
        };
        assert_eq!((port, ifindex), (&b"Ethernet4"[..], 4));
        assert_eq!(
            state_values(&state),
            [
                b"ok".to_vec(),
                b"down".to_vec(),
                b"up".to_vec(),
                b"9100".to_vec()
            ]
        );
    }

    #[test]
    fn dellink_deletes_the_row() {
        let rules = SyncRules::new([]);
        rules.on_event(&new(4, "Ethernet4"));
        assert_eq!(
            rules.on_event(&link(LinkChange::Del, 4, "Ethernet4")),
            Decision::Delete { port: b"Ethernet4" }
        );
    }

    #[test]
    fn names_that_are_not_utf8_are_ports_too() {
        let rules = SyncRules::new([]);
        let mut ev = new(3, "x");
        ev.name = b"Ethernet\xff";
        assert!(is_set(&rules.on_event(&ev)));
    }
}
