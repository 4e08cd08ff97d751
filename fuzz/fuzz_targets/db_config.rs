//! Any text as database_config.json: parse_layout returns a layout or an
//! error, never panics; a layout it accepts yields well-formed keys.
//! The body is fuzz/entries.rs's `db_config`, which tests/fuzz_seeds.rs runs on
//! fuzz/seeds/db_config/ in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

fuzz_target!(|data: &[u8]| {
    entries::db_config(data);
});
