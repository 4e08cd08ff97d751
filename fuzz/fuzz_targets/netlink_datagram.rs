//! Any bytes as one rtnetlink datagram: the parser must never panic, and
//! every link event it yields must go through the sync rules without panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portsyncd::netlink::{NetlinkItem, ParseStats, parse_datagram};
use portsyncd::sync::SyncRules;

fuzz_target!(|data: &[u8]| {
    let mut rules = SyncRules::new([3, 7]);
    let mut stats = ParseStats::default();
    parse_datagram(data, &mut stats, |item| {
        if let NetlinkItem::Link(event) = item {
            let _ = rules.on_event(&event);
        }
    });
});
