//! Any bytes as one rtnetlink datagram: the parser must never panic, and
//! every link event it yields must go through the sync rules without panic.
//! The body is fuzz/entries.rs's `netlink_datagram`, which tests/fuzz_seeds.rs runs on
//! fuzz/seeds/netlink_datagram/ in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

fuzz_target!(|data: &[u8]| {
    entries::netlink_datagram(data);
});
