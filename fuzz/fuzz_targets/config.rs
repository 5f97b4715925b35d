//! Any text as a config file: validation never panics, and every error names
//! the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("/nonexistent/fuzz/gatehouse.toml");
        if let Err(error) = gatehouse::config::Config::from_toml(path, text) {
            let message = error.to_string();
            assert!(message.starts_with("/nonexistent/fuzz/"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }
});
