//! Any text as database_config.json: parse_layout returns a layout or an
//! error, never panics; a layout it accepts yields well-formed keys.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use portsyncd::sonic::db_config::parse_layout;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(layout) = parse_layout(text, Path::new("fuzz.json")) {
        for db in [&layout.appl, &layout.config, &layout.state] {
            let key = db.key("PORT", "Ethernet0");
            assert!(key.starts_with("PORT") && key.ends_with("Ethernet0"));
        }
    }
});
