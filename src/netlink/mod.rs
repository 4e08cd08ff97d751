//! The kernel side: an rtnetlink socket we own, its parser, and the thread
//! that turns link messages into pending Redis writes.

mod event;
mod parse;
mod reader;
mod socket;

pub use event::{LinkChange, LinkEvent};
pub use parse::{NetlinkItem, ParseStats, parse_datagram, parse_link};
pub use reader::{LinkReader, ReaderSignals};
pub use socket::{LinkSocket, RecvOutcome, bring_link_down};
