//! Any bytes as a TOML and as a YAML config: an error list or a valid config, never a panic.
#![no_main]

use fusegate::config::{load_from_str, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for format in [Format::Toml, Format::Yaml] {
        match load_from_str(&text, format, false) {
            Ok(c) => {
                // A valid config must also build its settings without panicking.
                for rc in c.routes.values() {
                    let merged = rc.breaker.merged_over(&c.defaults.breaker);
                    let _ = fusegate::runtime::resolve_settings(&merged);
                }
            }
            Err(e) => assert!(!e.0.is_empty(), "an error carries at least one problem"),
        }
    }
});
