//! A shell's bytes on their way to the operator's terminal (`hive-c0re shell`).
//!
//! What runs in an agent's container prints what the agent wants (a file it
//! wrote, which the operator `cat`s), and the operator's terminal obeys more
//! than colours: OSC 52 sets the clipboard (kitty, WezTerm, foot, Alacritty,
//! Windows Terminal, tmux) to a command to paste, OSC 8 gives words a link
//! to anywhere, OSC 0/1/2 retitle the window, DCS, APC, PM and SOS strings
//! reach tmux passthrough, image protocols and the like, and a mode left on
//! (the alternate screen, mouse tracking) outlives the shell. A query (the
//! cursor's place, the terminal's name, a mode, the window's title, a
//! checksum of the screen) is answered by the terminal writing to its own
//! input: the agent reads what it asked, and an answer that comes after the
//! shell ended is typed at the operator's own prompt. An interactive shell,
//! vim or less still need colours and the cursor moved (CSI).
//!
//! So [`TerminalFilter`] passes text (whole UTF-8 characters; what is not
//! UTF-8 as U+FFFD, as a terminal shows it) and the control sequences (CSI)
//! that act on the screen, but not those the terminal answers nor window
//! operations; it drops ENQ and `ESC Z` (answered too), every string (OSC,
//! DCS, SOS, PM, APC, and screen's `ESC k` title) whole, and a switch of
//! the terminal's character coding (`ESC %`, after which bytes inside UTF-8
//! characters would act as controls). C1 controls written in UTF-8
//! (U+0080..=U+009F, which some terminals obey) are read as their `ESC`
//! forms, so they meet the same rules. A sequence may be split across reads
//! anywhere; what is held between reads is bounded, and a string that does
//! not end within [`MAX_STRING`] bytes is read as text from there on, so one
//! that never ends cannot hide the rest of the session.
//! [`reset`] puts back the modes a program can leave on.
//!
//! Everything else an agent wrote that the CLI prints (messages, events)
//! is escaped whole instead: `hive-c0re`'s `cli::output::printable`.

/// Bytes of an escape or control sequence held until it ends; a longer one is dropped.
pub const MAX_SEQUENCE: usize = 256;
/// Bytes of a string (OSC, DCS, ...) dropped before the rest reads as text.
pub const MAX_STRING: usize = 64 * 1024;

const ESC: u8 = 0x1b;
/// U+FFFD, what a terminal shows for bytes that are not UTF-8.
const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

/// Filters a shell's output stream for the operator's terminal (see the module doc).
#[derive(Debug, Default)]
pub struct TerminalFilter {
    state: State,
    /// The sequence begun and not yet ended, from its `ESC`.
    pending: Vec<u8>,
    /// Bytes of the current string dropped so far.
    dropped: usize,
    /// The UTF-8 character begun and not yet whole: its bytes so far, and how many it has.
    char_buf: [u8; 4],
    char_len: usize,
    char_need: usize,
    /// The program switched to the alternate screen and has not left it.
    alt_screen: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Text,
    /// After `ESC`.
    Escape,
    /// `ESC` and intermediate bytes (`ESC ( B`).
    EscapeIntermediate,
    /// A control sequence (`ESC [`), kept until its final byte.
    Csi,
    /// A control sequence over [`MAX_SEQUENCE`], dropped to its final byte.
    CsiDropped,
    /// A string, dropped to its end.
    String,
}

impl TerminalFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends to `out` what of `input` may reach the terminal; holds an
    /// unfinished sequence for the next call.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.byte(b, out);
        }
    }

    /// Whether what passed so far left the terminal on its alternate screen.
    pub fn alt_screen(&self) -> bool {
        self.alt_screen
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Text => self.text(b, out),
            State::Escape => self.escape(b, out),
            State::EscapeIntermediate => match b {
                0x20..=0x2f if self.pending.len() < MAX_SEQUENCE => self.pending.push(b),
                0x20..=0x2f => self.abandon(),
                0x30..=0x7e => {
                    self.pending.push(b);
                    // `ESC %`: another character coding, where bytes of UTF-8
                    // characters would act as C1 controls.
                    if self.pending[1] != b'%' {
                        out.extend_from_slice(&self.pending);
                    }
                    self.abandon();
                }
                _ => self.interrupted(b, out),
            },
            State::Csi => match b {
                0x20..=0x3f if self.pending.len() < MAX_SEQUENCE => self.pending.push(b),
                0x20..=0x3f => {
                    self.pending.clear();
                    self.state = State::CsiDropped;
                }
                0x40..=0x7e => {
                    self.pending.push(b);
                    self.control_sequence(out);
                    self.abandon();
                }
                _ => self.interrupted(b, out),
            },
            State::CsiDropped => match b {
                0x20..=0x3f => {}
                0x40..=0x7e => self.state = State::Text,
                _ => self.interrupted(b, out),
            },
            State::String => match b {
                // BEL ends an OSC (and, for some terminals, any string); CAN
                // and SUB cancel one; ESC ends it (`ESC \`) or cuts it short.
                0x07 | 0x18 | 0x1a => self.state = State::Text,
                ESC => self.begin_escape(),
                _ => {
                    self.dropped += 1;
                    if self.dropped > MAX_STRING {
                        self.state = State::Text;
                    }
                }
            },
        }
    }

    /// Text: whole, well-formed UTF-8 characters only, so no terminal's
    /// decoder can read a byte of a broken one (0x80..=0x9F) as a control.
    fn text(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.char_len > 0 {
            if self.continues(b) {
                self.char_buf[self.char_len] = b;
                self.char_len += 1;
                if self.char_len == self.char_need {
                    self.character(out);
                }
                return;
            }
            // A character cut short shows as the terminal would show it; `b` is read afresh.
            self.char_len = 0;
            out.extend_from_slice(REPLACEMENT);
        }
        match b {
            ESC => self.begin_escape(),
            // ENQ: the terminal answers with its answerback message (PuTTY's is "PuTTY").
            0x05 => {}
            0x00..=0x7f => out.push(b),
            0xc2..=0xdf => self.begin_char(b, 2),
            0xe0..=0xef => self.begin_char(b, 3),
            0xf0..=0xf4 => self.begin_char(b, 4),
            // A continuation byte alone, or a byte UTF-8 never has.
            _ => out.extend_from_slice(REPLACEMENT),
        }
    }

    fn begin_char(&mut self, lead: u8, need: usize) {
        self.char_buf[0] = lead;
        self.char_len = 1;
        self.char_need = need;
    }

    /// Whether `b` may come next in the character held (well-formed UTF-8:
    /// no overlong form, surrogate or code point past U+10FFFF).
    fn continues(&self, b: u8) -> bool {
        let next = match (self.char_len, self.char_buf[0]) {
            (1, 0xe0) => 0xa0..=0xbf,
            (1, 0xed) => 0x80..=0x9f,
            (1, 0xf0) => 0x90..=0xbf,
            (1, 0xf4) => 0x80..=0x8f,
            _ => 0x80..=0xbf,
        };
        next.contains(&b)
    }

    /// The character held, whole: passed on, or read as the C1 control it is (U+0080..=U+009F).
    fn character(&mut self, out: &mut Vec<u8>) {
        let (buf, n) = (self.char_buf, self.char_need);
        self.char_len = 0;
        if buf[0] == 0xc2 && buf[1] <= 0x9f {
            self.c1(buf[1], out);
        } else {
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// A C1 control (0x80..=0x9F) as its 7-bit form, `ESC` and `b - 0x40`.
    fn c1(&mut self, b: u8, out: &mut Vec<u8>) {
        self.begin_escape();
        self.escape(b - 0x40, out);
    }

    fn begin_escape(&mut self) {
        self.pending.clear();
        self.pending.push(ESC);
        self.state = State::Escape;
    }

    fn escape(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'[' => {
                self.pending.push(b);
                self.state = State::Csi;
            }
            b']' | b'P' | b'X' | b'^' | b'_' | b'k' => {
                self.pending.clear();
                self.dropped = 0;
                self.state = State::String;
            }
            // ST: the end of a string (dropped with it), and nothing on its own.
            b'\\' => self.abandon(),
            // DECID: the terminal answers with its attributes, as to DA.
            b'Z' => self.abandon(),
            0x20..=0x2f => {
                self.pending.push(b);
                self.state = State::EscapeIntermediate;
            }
            0x30..=0x7e => {
                self.pending.push(b);
                out.extend_from_slice(&self.pending);
                self.abandon();
            }
            _ => self.interrupted(b, out),
        }
    }

    /// A byte that cannot go on the sequence under way: the sequence is
    /// dropped, and the byte read afresh (an `ESC` begins the next one).
    fn interrupted(&mut self, b: u8, out: &mut Vec<u8>) {
        self.abandon();
        self.text(b, out);
    }

    fn abandon(&mut self) {
        self.pending.clear();
        self.state = State::Text;
    }

    /// A whole CSI in `pending`: passed on if it may reach the terminal (see
    /// [`Csi::passes`]), noting the alternate screen; a mode set or reset
    /// loses the modes [`mode_passes`] keeps from the terminal.
    fn control_sequence(&mut self, out: &mut Vec<u8>) {
        let Some(csi) = Csi::parse(&self.pending[2..]) else {
            return;
        };
        if !csi.passes() {
            return;
        }
        let dec = csi.marker == Some(b'?');
        if !((dec || csi.marker.is_none())
            && csi.intermediate.is_none()
            && b"hl".contains(&csi.last))
        {
            out.extend_from_slice(&self.pending);
            return;
        }
        let set = csi.last == b'h';
        let mut modes = Vec::new();
        for p in csi.params.split(|c| *c == b';') {
            // What is no plain number names no mode, and a terminal could read `2048:1` as 2048.
            let Some(mode) = number(p) else { continue };
            if dec && matches!(mode, 47 | 1047 | 1049) {
                self.alt_screen = set;
            }
            if mode_passes(dec, set, mode) {
                modes.push(p);
            }
        }
        if modes.is_empty() {
            return;
        }
        out.extend_from_slice(if dec { b"\x1b[?" } else { b"\x1b[" });
        out.extend_from_slice(&modes.join(&b';'));
        out.push(csi.last);
    }
}

/// Whether setting (`set`) or resetting DEC private (`dec`) or ANSI mode
/// `mode` may reach the terminal. Not: in-band resize reports (`?2048h`),
/// answered at once; VT52 mode (`?2l`), in which no CSI is read, the
/// exit's reset neither; the keyboard locked (KAM, `2h`), which leaves the
/// operator no key to leave the shell with; local echo (SRM, `12l`), which
/// shows what the operator types where the program did not.
fn mode_passes(dec: bool, set: bool, mode: u32) -> bool {
    !matches!(
        (dec, set, mode),
        (true, true, 2048) | (true, false, 2) | (false, true, 2) | (false, false, 12)
    )
}

/// A parameter's number, saturating as terminals read it; `None` if it is
/// empty or has a sub-parameter (`:`).
fn number(p: &[u8]) -> Option<u32> {
    if p.is_empty() || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(p.iter().fold(0u32, |n, d| {
        n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    }))
}

/// A control sequence's parts, by ECMA-48's grammar: after `ESC [`,
/// parameter bytes (0x30..=0x3F, a private marker `<`, `=`, `>` or `?`
/// only first), intermediate bytes (0x20..=0x2F), a final byte (0x40..=0x7E).
struct Csi<'a> {
    marker: Option<u8>,
    params: &'a [u8],
    intermediate: Option<u8>,
    last: u8,
}

impl<'a> Csi<'a> {
    /// Reads what follows `ESC [` (bytes 0x20..=0x3F, then a final byte).
    /// `None` for bytes out of the grammar's order or two intermediates:
    /// no terminal defines such a sequence, and they differ in what they
    /// make of one, so its meaning here could not be its meaning there.
    fn parse(seq: &'a [u8]) -> Option<Self> {
        let (&last, rest) = seq.split_last()?;
        let (marker, rest) = match rest.split_first() {
            Some((&m @ b'<'..=b'?', rest)) => (Some(m), rest),
            _ => (None, rest),
        };
        let n = rest
            .iter()
            .take_while(|b| (b'0'..=b';').contains(b))
            .count();
        let (params, intermediates) = rest.split_at(n);
        let intermediate = match *intermediates {
            [] => None,
            [i @ 0x20..=0x2f] => Some(i),
            _ => return None,
        };
        Some(Self {
            marker,
            params,
            intermediate,
            last,
        })
    }

    /// Whether it may reach the terminal: not when the terminal answers it
    /// (xterm's and DEC's queries, kitty's, the colour scheme's) nor when it
    /// acts on the window rather than on the screen.
    fn passes(&self) -> bool {
        let m = self.marker;
        let dropped = match (self.intermediate, self.last) {
            // Every `t`: XTWINOPS moves, resizes and iconifies the operator's
            // window or reports on it (21 t types its title back), none of it
            // the agent's business; DECRARA (`$ t`) and DECSWBV (`SP t`) go
            // with it, no shell program needs them.
            (_, b't') => true,
            // DECSCPP and DECSNLS resize the window, DECAC recolours it past
            // the shell; XTREPORTSGR and DECRQLP are answered.
            (Some(_), b'|') => true,
            // DA1, DA3, DA2 (`CSI c`, `CSI = c`, `CSI > c`); with an
            // intermediate, `c` and `n` mean nothing, and a terminal that
            // skips it would answer.
            (_, b'c') => true,
            // DSR: status, the cursor's place (CPR, DECXCPR), DEC's device
            // reports, the colour scheme (`? 996`); `CSI > n` only turns a
            // key modifier option off.
            (_, b'n') => m != Some(b'>'),
            // DECREQTPARM.
            (None, b'x') => true,
            // XTVERSION.
            (None, b'q') => m == Some(b'>'),
            // XTQMODKEYS, XTQFMTKEYS, kitty's keyboard flags, XTSMGRAPHICS
            // (answered even when it sets); unmarked, these are SGR, TBC,
            // SCORC and SU.
            (None, b'm' | b'g' | b'u' | b'S') => m == Some(b'?'),
            // DECRQM, DECRQTSR, DECRQPSR.
            (Some(b'$'), b'p' | b'u' | b'w') => true,
            // DECSR (confirmed with DECSRC), DECRQPKFM.
            (Some(b'+'), b'p' | b'x') => true,
            // DECRQUPSS.
            (Some(b'&'), b'u') => true,
            // DECRQDE.
            (Some(b'"'), b'v') => true,
            // DECRQKD.
            (Some(b','), b'w') => true,
            // DECRQCRA: a checksum of any part of the screen, which reads it back.
            (Some(b'*'), b'y') => true,
            // XTREPORTCOLORS, XTTITLEPOS.
            (Some(b'#'), b'R' | b'S') => true,
            // DEC's locator: DECEFR, DECELR and DECSLE turn on reports of
            // the mouse that no reset turns off.
            (Some(b'\''), b'w' | b'z' | b'{') => true,
            _ => false,
        };
        !dropped
    }
}

/// Puts back what a program may have left on: ANSI mode (out of VT52's),
/// the normal screen (only when
/// `alt_screen`: leaving it also restores the cursor saved on entering), a
/// soft reset (DECSTR: insert and origin modes, autowrap, margins, keeping
/// the screen and the cursor's place), the scroll region whole (DECSTBM: not
/// every terminal's soft reset does it) with the cursor kept where it is,
/// newline mode off, the keyboard unlocked and no local echo, side margins
/// off, the keyboard's modes (kitty's flags popped,
/// modifyOtherKeys off: either left on sends the operator's Ctrl-C as an
/// escape sequence), mouse tracking and its encodings, focus, colour scheme
/// and paste (kitty's 5522) reports, bracketed paste and cursor-key mode
/// off, the keypad numeric, the cursor shown, attributes and the character
/// set reset.
pub fn reset(alt_screen: bool) -> Vec<u8> {
    // Out of VT52 mode first, should a terminal be in it: it reads no CSI.
    let mut out = b"\x1b<".to_vec();
    if alt_screen {
        out.extend_from_slice(b"\x1b[?1049l");
    }
    out.extend_from_slice(b"\x1b[!p");
    // DECSTBM homes the cursor: between a save and a restore, made after the
    // alternate screen's own restore so the save does not stand in for it.
    out.extend_from_slice(b"\x1b7\x1b[r\x1b8");
    out.extend_from_slice(b"\x1b[20l\x1b[2l\x1b[12h\x1b[<99u\x1b[>4m");
    for mode in [
        "69", "9", "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1015", "1016", "2031",
        "5522", "2004", "1",
    ] {
        out.extend_from_slice(format!("\x1b[?{mode}l").as_bytes());
    }
    out.extend_from_slice(b"\x1b>\x1b[?25h\x1b[0m\x1b(B\x0f");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        TerminalFilter::new().push(input, &mut out);
        out
    }

    /// What the filter makes of `input` read in pieces cut at `cuts`.
    fn in_pieces(input: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut f = TerminalFilter::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain([&input.len()]) {
            f.push(&input[from..c], &mut out);
            from = c;
        }
        out
    }

    const HOSTILE: &[u8] = "plain \x1b[1;31mred\x1b[0m é ✓ 🐝\r\n\
        \x1b]52;c;cm0gLXJmIH4K\x07\
        \x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\\
        \x1b]0;icon and title\x07\x1b]1;icon\x1b\\\x1b]2;title\x07\
        \x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\\
        \x1b_Gf=100;AAAA\x1b\\\x1b^private\x1b\\\x1bXsos\x1b\\\x1bkscreen title\x1b\\\
        \u{9d}52;c;dXRmOA==\u{9c}\u{90}dcs\u{9c}\
        \x1b[21t\x1b[8;100;200t\x1b[6n\x1b[c\x1b[?1$p\x1b[?u\x1b[>q\x05\x1bZ\x1b%@\x1b(0q\x1b(B\x1b7\x1b[2J\x1b[H\x1b8\x1b[?1049h\x1b[?1000;1006h\
        end"
    .as_bytes();

    const KEPT: &[u8] = "plain \x1b[1;31mred\x1b[0m é ✓ 🐝\r\nclick\
        \x1b(0q\x1b(B\x1b7\x1b[2J\x1b[H\x1b8\x1b[?1049h\x1b[?1000;1006h\
        end"
    .as_bytes();

    #[test]
    fn strings_go_and_text_and_control_sequences_stay() {
        assert_eq!(
            String::from_utf8_lossy(&filter(HOSTILE)),
            String::from_utf8_lossy(KEPT)
        );
    }

    #[test]
    fn a_sequence_split_at_any_byte_reads_the_same() {
        for i in 0..=HOSTILE.len() {
            assert_eq!(in_pieces(HOSTILE, &[i]), KEPT, "cut at {i}");
        }
        let every: Vec<usize> = (1..HOSTILE.len()).collect();
        assert_eq!(in_pieces(HOSTILE, &every), KEPT, "a byte at a time");
    }

    #[test]
    fn c1_controls_are_read_as_escapes_and_characters_stay_whole() {
        // OSC and CSI as UTF-8 C1 controls, and "”" whose last byte is 0x9D:
        // inside a character it is no control.
        let out = filter("a\u{9d}2;t\x07b\u{9b}1mc”d".as_bytes());
        assert_eq!(out, "ab\x1b[1mc”d".as_bytes());
        // Alone, the same bytes are no UTF-8.
        let out = filter(b"a\x9d2;t\x07b\x9b1mc");
        assert_eq!(out, "a\u{FFFD}2;t\x07b\u{FFFD}1mc".as_bytes());
    }

    #[test]
    fn what_is_not_utf8_shows_as_a_replacement_character() {
        // A lone continuation byte, a cut character, an overlong form, a
        // surrogate, a lead byte UTF-8 never has.
        let out = filter(b"a\xbfb\xe2\x80c\xe0\x80\x9dd\xed\xa0\x80e\xffz");
        let shown = std::str::from_utf8(&out).expect("UTF-8 out");
        assert!(
            !shown.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)),
            "{shown:?}"
        );
        assert!(
            shown.starts_with("a\u{FFFD}b\u{FFFD}c\u{FFFD}"),
            "{shown:?}"
        );
        assert!(shown.ends_with("\u{FFFD}z"), "{shown:?}");
    }

    /// What comes out is UTF-8 with no C1 control, opens no string, switches
    /// no coding and leaves no `ESC` unfinished, however the input is cut
    /// (as `fuzz/fuzz_targets/terminal_filter.rs` checks at length).
    #[test]
    fn no_input_gets_a_string_to_the_terminal() {
        let alphabet =
            b"\x1b\x1b[]P\\\x07\x18\xc2\x9d\x9b\x9c\xe2\x80\xf0\xbf\xff%(?1;0hlmtkX^_ a6nc$p>uZ\x05";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let whole = filter(&input);
            let text = std::str::from_utf8(&whole).expect("UTF-8 out");
            assert!(
                !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)),
                "{input:?} -> {text:?}"
            );
            assert!(!whole.contains(&0x05), "{input:?} -> {text:?}");
            for (i, _) in whole.iter().enumerate().filter(|(_, b)| **b == ESC) {
                let after = whole.get(i + 1).copied();
                assert!(
                    after.is_some_and(|n| !b"]PX^_k%\\Z\x1b".contains(&n)),
                    "{input:?} -> {text:?}"
                );
                if after == Some(b'[') {
                    let len = whole[i + 2..]
                        .iter()
                        .position(|b| (0x40..=0x7e).contains(b))
                        .expect("a whole CSI");
                    let csi = Csi::parse(&whole[i + 2..=i + 2 + len]);
                    assert!(csi.is_some_and(|c| c.passes()), "{input:?} -> {text:?}");
                }
            }
            for cut in 0..=input.len() {
                assert_eq!(in_pieces(&input, &[cut]), whole, "{input:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn what_is_held_is_bounded() {
        // A control sequence too long to hold is dropped whole, text after it kept.
        let mut long = b"\x1b[".to_vec();
        long.extend(std::iter::repeat_n(b'1', 10 * MAX_SEQUENCE));
        long.extend_from_slice(b"mafter");
        let mut f = TerminalFilter::new();
        let mut out = Vec::new();
        f.push(&long, &mut out);
        assert_eq!(out, b"after");
        assert!(f.pending.len() <= MAX_SEQUENCE);
        // A string that never ends hides MAX_STRING bytes, not the rest of the session.
        let mut unended = b"\x1b]52;c;".to_vec();
        unended.extend(std::iter::repeat_n(b'A', MAX_STRING));
        unended.extend_from_slice(b"\r\n$ visible");
        assert!(filter(&unended).ends_with(b"\r\n$ visible"));
    }

    /// `seq` between two words leaves only the words, read whole or cut in two at any byte.
    fn assert_dropped(seq: &[u8]) {
        let input = [b"a", seq, b"b"].concat();
        for cut in 0..=input.len() {
            let out = in_pieces(&input, &[cut]);
            assert_eq!(
                String::from_utf8_lossy(&out),
                "ab",
                "{:?} cut at {cut}",
                String::from_utf8_lossy(seq)
            );
        }
    }

    #[test]
    fn device_status_reports_go() {
        for seq in [
            &b"\x1b[5n"[..],
            b"\x1b[6n",
            b"\x1b[n",
            b"\x1b[?6n",
            b"\x1b[?15n",
            b"\x1b[?63;1n",
            b"\x1b[?996n",
            b"\x1b[6 n",
            "\u{9b}6n".as_bytes(),
        ] {
            assert_dropped(seq);
        }
    }

    #[test]
    fn device_attributes_and_the_answerback_go() {
        for seq in [
            &b"\x1b[c"[..],
            b"\x1b[0c",
            b"\x1b[>c",
            b"\x1b[>0c",
            b"\x1b[=c",
            b"\x1b[?c",
            b"\x1bZ",
            "\u{9a}".as_bytes(),
            b"\x05",
            b"\x1b\x05",
        ] {
            assert_dropped(seq);
        }
    }

    #[test]
    fn mode_requests_go() {
        for seq in [&b"\x1b[4$p"[..], b"\x1b[?2004$p", b"\x1b[?2026$p"] {
            assert_dropped(seq);
        }
    }

    #[test]
    fn window_operations_go() {
        for seq in [
            &b"\x1b[1t"[..],
            b"\x1b[2t",
            b"\x1b[3;0;0t",
            b"\x1b[8;100;200t",
            b"\x1b[9;1t",
            b"\x1b[11t",
            b"\x1b[13t",
            b"\x1b[14t",
            b"\x1b[14;2t",
            b"\x1b[16t",
            b"\x1b[18t",
            b"\x1b[19t",
            b"\x1b[20t",
            b"\x1b[21t",
            b"\x1b[22;0t",
            b"\x1b[23;0t",
            b"\x1b[48t",
            b"\x1b[>0;1t",
            b"\x1b[132$|",
            b"\x1b[60*|",
            b"\x1b[1;0;0,|",
        ] {
            assert_dropped(seq);
        }
    }

    #[test]
    fn keyboard_and_version_queries_go() {
        for seq in [
            &b"\x1b[?u"[..],
            b"\x1b[>q",
            b"\x1b[>0q",
            b"\x1b[?4m",
            b"\x1b[?4g",
            b"\x1b[?1;1S",
            b"\x1b[?2;4S",
            b"\x1b[x",
            b"\x1b[1x",
        ] {
            assert_dropped(seq);
        }
    }

    #[test]
    fn dec_reports_and_the_locator_go() {
        for seq in [
            // The screen read back, a checksum at a time.
            &b"\x1b[1;1;1;1;10;80*y"[..],
            b"\x1b[1$w",
            b"\x1b[2$w",
            b"\x1b[1$u",
            b"\x1b[&u",
            b"\x1b[\"v",
            b"\x1b[23;1,w",
            b"\x1b[+x",
            b"\x1b[1234+p",
            b"\x1b[#R",
            b"\x1b[#S",
            b"\x1b[1;1;10;80#|",
            b"\x1b[1;0'z",
            b"\x1b[1'{",
            b"\x1b['|",
            b"\x1b[1;1;2;2'w",
        ] {
            assert_dropped(seq);
        }
    }

    #[test]
    fn sequences_out_of_the_grammar_go() {
        // A marker not first, a parameter after an intermediate, two intermediates.
        for seq in [&b"\x1b[1;?31m"[..], b"\x1b[?>1h", b"\x1b[ 1m", b"\x1b[1 $q"] {
            assert_dropped(seq);
        }
    }

    #[test]
    fn in_band_resize_reports_are_not_turned_on() {
        for seq in [&b"\x1b[?2048h"[..], b"\x1b[?02048h", b"\x1b[?2048:1h"] {
            assert_dropped(seq);
        }
        let input = b"a\x1b[?1049;2048;1000hb";
        for cut in 0..=input.len() {
            assert_eq!(
                in_pieces(input, &[cut]),
                b"a\x1b[?1049;1000hb",
                "cut at {cut}"
            );
        }
        let mut f = TerminalFilter::new();
        f.push(input, &mut Vec::new());
        assert!(f.alt_screen());
        // Turning them off is no report.
        assert_eq!(filter(b"\x1b[?2048l"), b"\x1b[?2048l");
    }

    #[test]
    fn modes_that_take_the_keyboard_or_every_later_sequence_are_not_set() {
        // VT52 mode, the keyboard locked, local echo on: alone, dropped.
        for seq in [&b"\x1b[?2l"[..], b"\x1b[2h", b"\x1b[12l", b"\x1b[002h"] {
            assert_dropped(seq);
        }
        // Among others, only they go; the opposite settings pass.
        let input = b"a\x1b[?2;25l\x1b[4;2h\x1b[12;20lb\x1b[?2h\x1b[2l\x1b[12h";
        for cut in 0..=input.len() {
            assert_eq!(
                in_pieces(input, &[cut]),
                b"a\x1b[?25l\x1b[4h\x1b[20lb\x1b[?2h\x1b[2l\x1b[12h",
                "cut at {cut}"
            );
        }
        // And the exit leaves VT52 mode first, unlocks, echoes nothing, drops side margins.
        let r = reset(false);
        assert!(r.starts_with(b"\x1b<"));
        for part in [&b"\x1b[2l"[..], b"\x1b[12h", b"\x1b[?69l"] {
            assert!(r.windows(part.len()).any(|w| w == part), "{part:?}");
        }
    }

    #[test]
    fn display_sequences_pass() {
        for seq in [
            &b"\x1b[1;31m"[..],
            b"\x1b[38:2::255:0:0m",
            b"\x1b[2A",
            b"\x1b[2J",
            b"\x1b[5;20r",
            b"\x1b[r",
            b"\x1b[2S",
            b"\x1b[3g",
            b"\x1b[u",
            b"\x1b[>1u",
            b"\x1b[<u",
            b"\x1b[=1;1u",
            b"\x1b[>4;2m",
            b"\x1b[>4n",
            b"\x1b[2 q",
            b"\x1b[!p",
            b"\x1b[?25l",
            b"\x1b[?2004h",
            b"\x1b[1;1;5;5$z",
        ] {
            let input = [b"a", seq, b"b"].concat();
            for cut in 0..=input.len() {
                assert_eq!(
                    String::from_utf8_lossy(&in_pieces(&input, &[cut])),
                    String::from_utf8_lossy(&input),
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn the_scroll_region_is_reset_with_the_cursor_kept() {
        for alt in [false, true] {
            let r = reset(alt);
            let at = |s: &[u8]| r.windows(s.len()).position(|w| w == s);
            let region = at(b"\x1b7\x1b[r\x1b8").expect("DECSTBM between DECSC and DECRC");
            assert_eq!(r.windows(3).filter(|w| w == b"\x1b[r").count(), 1, "{r:?}");
            if alt {
                assert!(at(b"\x1b[?1049l").is_some_and(|l| l < region), "{r:?}");
            }
        }
    }

    #[test]
    fn the_alternate_screen_is_left_only_when_entered() {
        let mut f = TerminalFilter::new();
        let mut out = Vec::new();
        f.push(b"\x1b[?1049h", &mut out);
        assert!(f.alt_screen());
        assert!(reset(f.alt_screen()).starts_with(b"\x1b<\x1b[?1049l"));
        f.push(b"\x1b[?25;1049l", &mut out);
        assert!(!f.alt_screen());
        let r = reset(false);
        let has = |s: &[u8]| r.windows(s.len()).any(|w| w == s);
        assert!(!has(b"\x1b[?1049l"), "{r:?}");
        for mode in [
            &b"\x1b[!p"[..],
            b"\x1b[<99u",
            b"\x1b[>4m",
            b"\x1b[?1000l",
            b"\x1b[?1006l",
            b"\x1b[?2004l",
            b"\x1b[?25h",
            b"\x1b[0m",
        ] {
            assert!(has(mode), "{mode:?}");
        }
    }
}
