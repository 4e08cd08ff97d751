//! The kernel side: an rtnetlink socket we own and its parser.

mod event;
mod parse;
mod socket;

pub use event::{LinkChange, LinkEvent};
pub use parse::{NetlinkItem, ParseStats, parse_datagram, parse_link};
pub use socket::{LinkSocket, RecvOutcome, bring_link_down, present_netdevs};
