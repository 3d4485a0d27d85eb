//! A shell's bytes on their way to the operator's terminal (`hive-c0re shell`).
//!
//! What runs in an agent's container prints what the agent wants (a file it
//! wrote, which the operator `cat`s), and the operator's terminal obeys more
//! than colours: OSC 52 sets the clipboard (kitty, WezTerm, foot, Alacritty,
//! Windows Terminal, tmux) to a command to paste, OSC 8 gives words a link
//! to anywhere, OSC 0/1/2 retitle the window, DCS, APC, PM and SOS strings
//! reach tmux passthrough, image protocols and the like, and a mode left on
//! (the alternate screen, mouse tracking) outlives the shell. An interactive
//! shell, vim or less still need colours and the cursor moved (CSI).
//!
//! So [`TerminalFilter`] passes text (whole UTF-8 characters; what is not
//! UTF-8 as U+FFFD, as a terminal shows it) and control sequences (CSI) but
//! window operations, drops every string (OSC, DCS, SOS, PM, APC, and
//! screen's `ESC k` title) whole, and drops a switch of the terminal's
//! character coding (`ESC %`, after which bytes inside UTF-8 characters
//! would act as controls). C1 controls written in UTF-8 (U+0080..=U+009F,
//! which some terminals obey) are read as their `ESC` forms, so they meet
//! the same rules. A sequence may be split across reads anywhere; what is
//! held between reads is bounded, and a string that does not end within
//! [`MAX_STRING`] bytes is read as text from there on, so one that never
//! ends cannot hide the rest of the session.
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

    /// A whole CSI in `pending`: passed on unless it is a window operation
    /// (`t`: move, resize, iconify, report the title), noting the alternate screen.
    fn control_sequence(&mut self, out: &mut Vec<u8>) {
        let Some((&last, body)) = self.pending[2..].split_last() else {
            return;
        };
        if last == b't' {
            return;
        }
        if let Some(modes) = body.strip_prefix(b"?")
            && (last == b'h' || last == b'l')
        {
            for m in modes.split(|c| *c == b';') {
                if matches!(m, b"47" | b"1047" | b"1049") {
                    self.alt_screen = last == b'h';
                }
            }
        }
        out.extend_from_slice(&self.pending);
    }
}

/// Puts back what a program may have left on: the normal screen (only when
/// `alt_screen`: leaving it also restores the cursor saved on entering), a
/// soft reset (DECSTR: insert and origin modes, autowrap, margins, keeping
/// the screen and the cursor's place), newline mode off, the keyboard's
/// modes (kitty's flags popped, modifyOtherKeys off: either left on sends
/// the operator's Ctrl-C as an escape sequence), mouse tracking and its
/// encodings, focus reports, bracketed paste and cursor-key mode off, the
/// keypad numeric, the cursor shown, attributes and the character set reset.
pub fn reset(alt_screen: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if alt_screen {
        out.extend_from_slice(b"\x1b[?1049l");
    }
    out.extend_from_slice(b"\x1b[!p\x1b[20l\x1b[<99u\x1b[>4m");
    for mode in [
        "9", "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1015", "1016", "2004", "1",
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
        \x1b[21t\x1b[8;100;200t\x1b%@\x1b(0q\x1b(B\x1b7\x1b[2J\x1b[H\x1b8\x1b[?1049h\x1b[?1000;1006h\
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
        let alphabet = b"\x1b\x1b[]P\\\x07\x18\xc2\x9d\x9b\x9c\xe2\x80\xf0\xbf\xff%(?1;0hlmtkX^_ a";
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
            for (i, _) in whole.iter().enumerate().filter(|(_, b)| **b == ESC) {
                let after = whole.get(i + 1).copied();
                assert!(
                    after.is_some_and(|n| !b"]PX^_k%\\\x1b".contains(&n)),
                    "{input:?} -> {text:?}"
                );
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

    #[test]
    fn the_alternate_screen_is_left_only_when_entered() {
        let mut f = TerminalFilter::new();
        let mut out = Vec::new();
        f.push(b"\x1b[?1049h", &mut out);
        assert!(f.alt_screen());
        assert!(reset(f.alt_screen()).starts_with(b"\x1b[?1049l"));
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
