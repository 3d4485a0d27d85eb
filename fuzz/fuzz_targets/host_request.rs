//! host.sock: one request line, as `hive_sh4re::host::Request::from_line` reads it.
//!
//! A line never panics the parser; a request that parses serializes to a
//! line that parses to the same request, and names a verb the daemon knows.
#![no_main]

use hive_sh4re::host::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match Request::from_line(line) {
        Ok(req) => {
            assert!(Request::COMMANDS.contains(&req.cmd()));
            let again = serde_json::to_vec(&req).expect("a request serializes");
            let back = Request::from_line(&again).unwrap_or_else(|e| {
                panic!(
                    "{} does not parse back: {e}",
                    String::from_utf8_lossy(&again)
                )
            });
            assert_eq!(back, req);
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
