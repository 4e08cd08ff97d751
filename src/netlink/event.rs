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
/// It borrows the name and kind from the receive buffer: parsing a message
/// allocates nothing, and the rules intern the name only when they keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent<'a> {
    pub change: LinkChange,
    /// The kernel's interface index; old interfaces are recognised by it.
    pub ifindex: u32,
    /// The netdev name as the kernel holds it (bytes, not always UTF-8).
    pub name: &'a [u8],
    /// IFLA_INFO_KIND (`veth`, `team`, `bridge`...), when the kernel sent one.
    pub kind: Option<&'a [u8]>,
    /// IFLA_MASTER: the bridge or LAG this link is enslaved to.
    pub master: Option<u32>,
    /// IFF_UP: the administrative state.
    pub admin_up: bool,
    /// IFF_RUNNING: the operational state, as upstream reads it.
    pub oper_up: bool,
    pub mtu: u32,
}
