//! Schedules: a `when` as `hive_c0re::hive::schedules::When::parse` reads it.
//!
//! Never a panic (nor an overflow); a repeat is at least a second apart and
//! its next time is strictly after the time asked about; a refusal lists
//! the forms that work.
#![no_main]

use hive_c0re::hive::schedules::When;
use libfuzzer_sys::fuzz_target;

/// 2026-05-28, a plausible "now"; and the year 2999, a distant one.
const NOWS: [i64; 3] = [0, 1_780_000_000_000, 32_503_680_000_000];

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    for now in NOWS {
        match When::parse(spec, now) {
            Ok(w) => {
                if let When::Every(ms) = w {
                    assert!(ms >= 1000, "{spec:?} repeats every {ms} ms");
                }
                assert_eq!(w.repeating(), !matches!(w, When::At(_)));
                if let Some(next) = w.after(now) {
                    assert!(next > now, "{spec:?}: next {next} is not after {now}");
                }
                let _ = w.first(now);
            }
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("every:15m"), "{e}");
            }
        }
    }
});
