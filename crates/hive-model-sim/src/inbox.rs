//! The prompt convention that tells the simulator who wrote to the agent.
//!
//! The hyperhive harness renders each inbox message in the prompt as
//! `<message id="7" from="alice">body</message>`. The simulator reads these tags
//! to fill `{{sender}}`, `{{body}}` and `{{message_id}}`, and to answer every
//! message separately with `each_message` rules.

use regex::Regex;
use std::sync::LazyLock;

/// One inbox message found in a prompt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboxMessage {
    /// The `id` attribute (empty when absent).
    pub id: String,
    /// The `from` attribute (empty when absent).
    pub from: String,
    /// The text between the tags, trimmed, with XML entities decoded.
    pub body: String,
}

static TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)<message\b([^>]*)>(.*?)</message>").expect("static regex is valid")
});
static ATTR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*"([^"]*)""#).expect("static regex is valid")
});

/// Every `<message …>…</message>` in `text`, in order.
pub fn parse(text: &str) -> Vec<InboxMessage> {
    TAG.captures_iter(text)
        .map(|tag| {
            let mut message = InboxMessage {
                body: unescape(tag[2].trim()),
                ..InboxMessage::default()
            };
            for attr in ATTR.captures_iter(&tag[1]) {
                match &attr[1] {
                    "id" => message.id = unescape(&attr[2]),
                    "from" => message.from = unescape(&attr[2]),
                    _ => {}
                }
            }
            message
        })
        .collect()
}

/// Decodes the five XML entities; `&amp;` last so `&amp;lt;` stays `&lt;`.
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_in_order() {
        let text = "You have mail.\n<message id=\"1\" from=\"alice\">ping</message>\n\
                    <message from=\"bob\" id=\"2\">\n  two\n  lines\n</message>";
        let got = parse(text);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            InboxMessage {
                id: "1".into(),
                from: "alice".into(),
                body: "ping".into()
            }
        );
        assert_eq!(got[1].from, "bob");
        assert_eq!(got[1].id, "2");
        assert_eq!(got[1].body, "two\n  lines");
    }

    #[test]
    fn decodes_entities() {
        let got = parse(r#"<message from="o&amp;p">a &lt;b&gt; &amp;lt;</message>"#);
        assert_eq!(got[0].from, "o&p");
        assert_eq!(got[0].body, "a <b> &lt;");
    }

    #[test]
    fn no_tags_no_messages() {
        assert!(parse("hello from alice").is_empty());
        assert!(parse("<messages>x</messages>").is_empty());
    }
}
