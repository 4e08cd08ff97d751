//! The upstream portsyncd rules, as a pure function of what we know and one
//! link event. No I/O happens here, so every rule is a fast unit test.
//!
//! The rules follow `portsyncd/linksync.cpp` of sonic-swss, in its order.

use std::collections::{HashMap, HashSet};

use crate::netlink::{LinkChange, LinkEvent};
use crate::queue::Write;

/// Front-panel ports.
pub const INTFS_PREFIX: &str = "Ethernet";
/// LAGs; their members' state matters to SONiC too.
pub const LAG_PREFIX: &str = "PortChannel";
/// teamd's netdevs belong to teamsyncd.
pub const TEAM_KIND: &str = "team";

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

/// What the rules decided for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Ignore(Ignored),
    /// Write STATE_DB `PORT_TABLE|port` (sets are applied only if the port
    /// is configured; the writer checks that atomically in Redis).
    Write {
        port: String,
        write: Write,
    },
    /// An old interface seen for the first time: bring it down (once) and
    /// ignore it from now on.
    BringDownOld {
        ifindex: u32,
        name: String,
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

/// What the rules remember between events.
#[derive(Debug)]
pub struct SyncRules {
    mode: StartMode,
    /// True until the start-up dump ends; on a cold, non-DPU start every
    /// front-panel netdev reported until then is old.
    initial_dump: bool,
    /// ifindex -> name of old interfaces.
    old: HashMap<u32, String>,
    /// CONFIG_DB ports not yet seen as a live, non-old netdev.
    awaiting_netdev: HashSet<String>,
    /// Ports seen alive (name -> ifindex), so a resync dump can find the
    /// ones whose RTM_DELLINK was lost in an overrun.
    live: HashMap<String, u32>,
    /// Ports reported by the resync dump in progress, if any.
    seen_in_dump: Option<HashSet<String>>,
}

impl SyncRules {
    pub fn new(mode: StartMode, configured_ports: impl IntoIterator<Item = String>) -> Self {
        SyncRules {
            mode,
            initial_dump: true,
            old: HashMap::new(),
            awaiting_netdev: configured_ports.into_iter().collect(),
            live: HashMap::new(),
            seen_in_dump: None,
        }
    }

    /// Applies the upstream rules to one event.
    pub fn on_event(&mut self, ev: &LinkEvent) -> Decision {
        // Rule 1: only front-panel ports and LAGs.
        if !ev.name.starts_with(INTFS_PREFIX) && !ev.name.starts_with(LAG_PREFIX) {
            return Decision::Ignore(Ignored::NotAPort);
        }
        // Rule 2: teamd's netdevs are teamsyncd's business.
        if ev.kind.as_deref() == Some(TEAM_KIND) {
            return Decision::Ignore(Ignored::TeamLink);
        }
        // Rule 3: a DELLINK with a master is a port leaving a bridge or LAG.
        if ev.change == LinkChange::Del && ev.master.is_some() {
            return Decision::Ignore(Ignored::DelWithMaster);
        }
        // Rule 4: old interfaces of a cold start, by ifindex, for good.
        if self.old.contains_key(&ev.ifindex) {
            return Decision::Ignore(Ignored::OldInterface);
        }
        if self.initial_dump
            && !self.mode.warm
            && !self.mode.dpu
            && ev.name.starts_with(INTFS_PREFIX)
        {
            self.old.insert(ev.ifindex, ev.name.clone());
            return Decision::BringDownOld {
                ifindex: ev.ifindex,
                name: ev.name.clone(),
            };
        }
        if let Some(seen) = &mut self.seen_in_dump {
            seen.insert(ev.name.clone());
        }
        match ev.change {
            LinkChange::Del => {
                self.live.remove(&ev.name);
                Decision::Write {
                    port: ev.name.clone(),
                    write: Write::delete(),
                }
            }
            LinkChange::New => {
                self.live.insert(ev.name.clone(), ev.ifindex);
                self.awaiting_netdev.remove(&ev.name);
                Decision::Write {
                    port: ev.name.clone(),
                    write: Write::set(state_fields(ev)),
                }
            }
        }
    }

    /// A dump starts (the start-up one, or a resync after an overrun).
    pub fn dump_started(&mut self) {
        self.seen_in_dump = Some(HashSet::new());
    }

    /// A dump ended. Returns the ports that were alive before but that the
    /// dump no longer shows: their RTM_DELLINK was lost, so delete them now.
    pub fn dump_finished(&mut self) -> Vec<String> {
        self.initial_dump = false;
        let Some(seen) = self.seen_in_dump.take() else {
            return Vec::new();
        };
        let gone: Vec<String> = self
            .live
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        for name in &gone {
            self.live.remove(name);
        }
        gone
    }

    /// Every CONFIG_DB port has been seen as a live, non-old netdev: time
    /// for `PortInitDone`.
    pub fn all_ports_seen(&self) -> bool {
        self.awaiting_netdev.is_empty()
    }

    /// Ports still without a netdev, for the log line that explains a wait.
    pub fn ports_awaiting_netdev(&self) -> usize {
        self.awaiting_netdev.len()
    }

    /// Names of the ports seen alive, for the warm-restart reconcile.
    pub fn live_ports(&self) -> HashSet<String> {
        self.live.keys().cloned().collect()
    }
}

/// The STATE_DB `PORT_TABLE` fields portsyncd owns, as upstream writes them.
pub fn state_fields(ev: &LinkEvent) -> Vec<(String, String)> {
    let updown = |up: bool| if up { "up" } else { "down" }.to_string();
    let mut fields = vec![
        ("state".to_string(), "ok".to_string()),
        ("netdev_oper_status".to_string(), updown(ev.oper_up)),
        ("admin_status".to_string(), updown(ev.admin_up)),
        ("mtu".to_string(), ev.mtu.to_string()),
    ];
    if let Some(changes) = ev.carrier_changes {
        fields.push(("carrier_changes".to_string(), changes.to_string()));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(change: LinkChange, ifindex: u32, name: &str) -> LinkEvent {
        LinkEvent {
            change,
            ifindex,
            name: name.to_string(),
            kind: Some("veth".into()),
            master: None,
            admin_up: true,
            oper_up: false,
            mtu: 9100,
            carrier_changes: Some(3),
            mac: None,
        }
    }

    fn new(ifindex: u32, name: &str) -> LinkEvent {
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

    /// Rules past the start-up dump, as in steady state.
    fn running(mode: StartMode, ports: &[&str]) -> SyncRules {
        let mut rules = SyncRules::new(mode, ports.iter().map(|p| p.to_string()));
        rules.dump_started();
        rules.dump_finished();
        rules
    }

    #[test]
    fn only_ethernet_and_portchannel_names_count() {
        let mut rules = running(COLD, &[]);
        for name in ["eth0", "lo", "peer0", "Bridge", "Vlan1000", "docker0"] {
            assert_eq!(
                rules.on_event(&new(5, name)),
                Decision::Ignore(Ignored::NotAPort),
                "{name}"
            );
        }
        assert!(matches!(
            rules.on_event(&new(6, "PortChannel1")),
            Decision::Write { .. }
        ));
        assert!(matches!(
            rules.on_event(&new(7, "Ethernet8")),
            Decision::Write { .. }
        ));
    }

    #[test]
    fn team_links_are_left_to_teamsyncd() {
        let mut rules = running(COLD, &[]);
        let mut ev = new(9, "PortChannel0001");
        ev.kind = Some("team".into());
        assert_eq!(rules.on_event(&ev), Decision::Ignore(Ignored::TeamLink));
    }

    #[test]
    fn dellink_with_a_master_is_ignored_but_newlink_with_one_is_not() {
        let mut rules = running(COLD, &[]);
        let mut del = link(LinkChange::Del, 9, "Ethernet0");
        del.master = Some(3);
        assert_eq!(
            rules.on_event(&del),
            Decision::Ignore(Ignored::DelWithMaster)
        );
        let mut add = new(9, "Ethernet0");
        add.master = Some(3);
        assert!(matches!(rules.on_event(&add), Decision::Write { .. }));
    }

    #[test]
    fn cold_start_brings_down_old_front_panel_netdevs_and_ignores_their_ifindex() {
        let mut rules = SyncRules::new(COLD, ["Ethernet0".to_string()]);
        rules.dump_started();
        assert_eq!(
            rules.on_event(&new(10, "Ethernet0")),
            Decision::BringDownOld {
                ifindex: 10,
                name: "Ethernet0".into()
            }
        );
        // LAGs are never old.
        assert!(matches!(
            rules.on_event(&new(11, "PortChannel1")),
            Decision::Write { .. }
        ));
        rules.dump_finished();
        // Later messages for the old ifindex, even a delete, are ignored.
        assert_eq!(
            rules.on_event(&new(10, "Ethernet0")),
            Decision::Ignore(Ignored::OldInterface)
        );
        assert_eq!(
            rules.on_event(&link(LinkChange::Del, 10, "Ethernet0")),
            Decision::Ignore(Ignored::OldInterface)
        );
        assert!(!rules.all_ports_seen());
        // Recreated by syncd: a new ifindex, handled normally.
        assert!(matches!(
            rules.on_event(&new(12, "Ethernet0")),
            Decision::Write { .. }
        ));
        assert!(rules.all_ports_seen());
    }

    #[test]
    fn warm_and_dpu_starts_have_no_old_interfaces() {
        for mode in [
            WARM,
            StartMode {
                warm: false,
                dpu: true,
            },
        ] {
            let mut rules = SyncRules::new(mode, ["Ethernet0".to_string()]);
            rules.dump_started();
            assert!(
                matches!(
                    rules.on_event(&new(10, "Ethernet0")),
                    Decision::Write { .. }
                ),
                "{mode:?}"
            );
            assert!(rules.all_ports_seen());
        }
    }

    #[test]
    fn newlink_writes_the_four_upstream_fields_and_carrier_changes() {
        let mut rules = running(COLD, &[]);
        let Decision::Write { port, write } = rules.on_event(&new(4, "Ethernet4")) else {
            panic!("expected a write");
        };
        assert_eq!(port, "Ethernet4");
        assert!(!write.delete_first);
        let get = |f: &str| {
            write
                .fields
                .iter()
                .find(|(k, _)| k == f)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("state"), Some("ok"));
        assert_eq!(get("admin_status"), Some("up"));
        assert_eq!(get("netdev_oper_status"), Some("down"));
        assert_eq!(get("mtu"), Some("9100"));
        assert_eq!(get("carrier_changes"), Some("3"));
    }

    #[test]
    fn dellink_deletes_the_row() {
        let mut rules = running(COLD, &[]);
        rules.on_event(&new(4, "Ethernet4"));
        assert_eq!(
            rules.on_event(&link(LinkChange::Del, 4, "Ethernet4")),
            Decision::Write {
                port: "Ethernet4".into(),
                write: Write::delete()
            }
        );
    }

    #[test]
    fn port_init_waits_for_every_configured_port() {
        let mut rules = running(COLD, &["Ethernet0", "Ethernet4"]);
        assert!(!rules.all_ports_seen());
        rules.on_event(&new(20, "Ethernet0"));
        assert_eq!(rules.ports_awaiting_netdev(), 1);
        // A delete does not count as seeing the port.
        rules.on_event(&link(LinkChange::Del, 21, "Ethernet4"));
        assert!(!rules.all_ports_seen());
        rules.on_event(&new(22, "Ethernet4"));
        assert!(rules.all_ports_seen());
    }

    #[test]
    fn no_configured_ports_means_init_is_done_at_once() {
        assert!(SyncRules::new(COLD, Vec::new()).all_ports_seen());
    }

    #[test]
    fn a_resync_dump_finds_ports_whose_dellink_was_lost() {
        let mut rules = running(WARM, &[]);
        rules.on_event(&new(1, "Ethernet0"));
        rules.on_event(&new(2, "Ethernet4"));
        rules.dump_started();
        rules.on_event(&new(1, "Ethernet0"));
        assert_eq!(rules.dump_finished(), vec!["Ethernet4".to_string()]);
        assert_eq!(rules.live_ports(), HashSet::from(["Ethernet0".to_string()]));
        // Without a dump in progress nothing is inferred.
        assert!(rules.dump_finished().is_empty());
    }
}
