//! Every value the daemon reads from Redis (and the watchdog variables),
//! as arbitrary bytes, through the parsers the daemon uses: none panics,
//! and what they return stays within the documented bounds (the layout of
//! the input: fuzz/entries.rs, `redis_values`).
//! The body is fuzz/entries.rs's `redis_values`, which tests/fuzz_seeds.rs runs on
//! fuzz/seeds/redis_values/ in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

fuzz_target!(|data: &[u8]| {
    entries::redis_values(data);
});
