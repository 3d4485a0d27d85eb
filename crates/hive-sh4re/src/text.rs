//! Text an agent wrote, made safe to show the operator: characters that
//! draw nothing (or reorder or hide what follows) are written out; and a
//! shell's bytes filtered for the operator's terminal ([`terminal`]).

use std::borrow::Cow;

pub mod terminal;

/// True for a character a terminal or a browser draws as nothing, or that
/// changes how what follows reads: controls (but newline and tab), bidi and
/// zero-width controls, Unicode's other default-ignorable characters (tag
/// characters spell ASCII a model reads and no screen shows; variation
/// selectors; fillers), line and paragraph separators, and private use.
pub fn shows_nothing(c: char) -> bool {
    if c == '\n' || c == '\t' {
        return false;
    }
    c.is_control()
        || matches!(c,
            // Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties).
            '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}'
            // Line and paragraph separators, interlinear annotation.
            | '\u{2028}' | '\u{2029}' | '\u{FFF9}'..='\u{FFFB}'
            // Private use.
            | '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}')
}

/// `s` cut to at most `n` characters (`n` above 0), the last one an
/// ellipsis when it was cut.
pub fn clip(s: &str, n: usize) -> Cow<'_, str> {
    match s.char_indices().nth(n) {
        None => Cow::Borrowed(s),
        Some(_) => {
            let kept: String = s.chars().take(n.saturating_sub(1)).collect();
            Cow::Owned(kept + "…")
        }
    }
}

/// `text` with each character that [shows nothing](shows_nothing) written
/// as `⟨U+XXXX⟩`, so what the operator reads is what is there.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(shows_nothing) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if shows_nothing(c) {
            out.push_str(&format!("⟨U+{:04X}⟩", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_n_characters_the_last_an_ellipsis() {
        assert_eq!(clip("héllo", 5), "héllo");
        assert!(matches!(clip("héllo", 5), Cow::Borrowed(_)));
        assert_eq!(clip("héllo", 4), "hél…");
        assert_eq!(clip("héllo", 1), "…");
    }

    #[test]
    fn what_draws_nothing_is_written_out() {
        // "Hi" in tag characters, a variation selector, a Hangul filler, a
        // soft hyphen, a line separator, NEL, a right-to-left override, a
        // private-use character, an escape.
        let hidden = "a\u{E0048}\u{E0069}b\u{FE0F}c\u{3164}d\u{00AD}e\u{2028}f\u{0085}g\u{202E}h\u{E000}i\u{1B}j";
        assert_eq!(
            visible(hidden),
            "a⟨U+E0048⟩⟨U+E0069⟩b⟨U+FE0F⟩c⟨U+3164⟩d⟨U+00AD⟩e⟨U+2028⟩f⟨U+0085⟩g⟨U+202E⟩h⟨U+E000⟩i⟨U+001B⟩j"
        );
        let plain = "prompt = \"\"\"\n\tbe kind — ünïcödé, 日本語, emoji 🐝\n\"\"\"";
        assert!(matches!(visible(plain), Cow::Borrowed(_)), "{plain}");
    }
}
