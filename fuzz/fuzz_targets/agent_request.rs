//! agent.sock: one request line, as `hive_sh4re::agent::AgentRequest::from_line` reads it.
//!
//! A line never panics the parser; a request that parses serializes to a
//! line that parses to the same request (floats within a rounding error).
#![no_main]

use hive_sh4re::agent::AgentRequest;
use hyperhive_fuzz::assert_same_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match AgentRequest::from_line(line) {
        Ok(req) => {
            let again = serde_json::to_vec(&req).expect("a request serializes");
            let back = AgentRequest::from_line(&again).unwrap_or_else(|e| {
                panic!(
                    "{} does not parse back: {e}",
                    String::from_utf8_lossy(&again)
                )
            });
            assert_same_json(&back, &req);
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
