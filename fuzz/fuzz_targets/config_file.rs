//! Any text as the TOML configuration file: the loader returns settings or
//! an error naming the problem, never panics; settings it accepts are within
//! the ranges the flags promise.
//! The body is fuzz/entries.rs's `config_file`, which tests/fuzz_seeds.rs runs on
//! fuzz/seeds/config_file/ in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../entries.rs"]
mod entries;

fuzz_target!(|data: &[u8]| {
    entries::config_file(data);
});
