//! Any text as the TOML configuration file: the loader returns settings or
//! an error naming the problem, never panics; settings it accepts are within
//! the ranges the flags promise.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portsyncd::config_file::from_file_text;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match from_file_text(text, Path::new("fuzz.toml")) {
        Ok(cli) => {
            assert!((16..=1_048_576).contains(&cli.queue_capacity));
            assert!(cli.shutdown_timeout <= 60);
        }
        Err(e) => assert!(!format!("{e:#}").is_empty()),
    }
});
