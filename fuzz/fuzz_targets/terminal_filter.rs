//! The filter between an agent's shell and the operator's terminal
//! (`hive_sh4re::text::terminal`), fed what the shell printed.
//!
//! Whatever comes in, what goes out is UTF-8 with no C1 control, no string
//! begins in it (OSC, DCS, SOS, PM, APC, `ESC k`), no coding switch
//! (`ESC %`), no ENQ or DECID (`ESC Z`), and it ends on no unfinished `ESC`;
//! and the input read in two pieces, cut where the first byte says, comes
//! out the same as read whole.
#![no_main]

use hive_sh4re::text::terminal::TerminalFilter;
use libfuzzer_sys::fuzz_target;

fn filtered(pieces: &[&[u8]]) -> Vec<u8> {
    let mut f = TerminalFilter::new();
    let mut out = Vec::new();
    for p in pieces {
        f.push(p, &mut out);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = filtered(&[input]);
    let at = usize::from(cut) * input.len() / 256;
    assert_eq!(
        filtered(&[&input[..at], &input[at..]]),
        whole,
        "cut at {at}"
    );
    let text = std::str::from_utf8(&whole).expect("UTF-8 out");
    assert!(
        !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)),
        "a C1 control: {text:?}"
    );
    assert!(!whole.contains(&0x05), "ENQ: {text:?}");
    for (i, _) in whole.iter().enumerate().filter(|(_, b)| **b == 0x1b) {
        let next = whole.get(i + 1).copied();
        assert!(
            next.is_some_and(|n| !b"]PX^_k%\\Z\x1b".contains(&n)),
            "ESC then {next:?}: {text:?}"
        );
    }
});
