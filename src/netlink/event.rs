//! What the rest of the daemon knows about one rtnetlink link message.

/// Whether the kernel announced (or re-announced) a link, or removed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkChange {
    /// RTM_NEWLINK: a link was created or one of its properties changed.
    New,
    /// RTM_DELLINK: the link is gone.
    Del,
}

/// The few facts of a link message that the SONiC rules look at.
///
/// Kept small and owned so it can cross from the netlink thread to the
/// rules without borrowing the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    pub change: LinkChange,
    /// The kernel's interface index; old interfaces are recognised by it.
    pub ifindex: u32,
    /// The netdev name, e.g. `Ethernet0`.
    pub name: String,
    /// IFLA_INFO_KIND (`veth`, `team`, `bridge`...), when the kernel sent one.
    pub kind: Option<String>,
    /// IFLA_MASTER: the bridge or LAG this link is enslaved to.
    pub master: Option<u32>,
    /// IFF_UP: the administrative state.
    pub admin_up: bool,
    /// IFF_RUNNING: the operational state, as upstream reads it.
    pub oper_up: bool,
    pub mtu: u32,
    /// IFLA_CARRIER_CHANGES, which upstream also publishes.
    pub carrier_changes: Option<u32>,
    /// The hardware address, for the log line an operator greps for.
    pub mac: Option<[u8; 6]>,
}

impl LinkEvent {
    /// The MAC in the usual colon form, or an empty string.
    pub fn mac_string(&self) -> String {
        self.mac
            .map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            })
            .unwrap_or_default()
    }
}
