//! Server-sent events of a streamed Messages API answer.
//!
//! The sequence is the real API's: `message_start`, `ping`, then per block
//! `content_block_start`, deltas (`text_delta` / `input_json_delta`),
//! `content_block_stop`, and finally `message_delta` (stop_reason, usage) and
//! `message_stop`. Each frame carries the pause to wait before sending it.

use crate::engine::{Block, Reply};
use crate::wire;
use serde_json::{Value, json};

/// Characters per text delta; small enough that claude sees a real stream.
const TEXT_CHUNK: usize = 24;
/// Characters per input_json delta.
const JSON_CHUNK: usize = 32;

/// One SSE frame and the pause before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Milliseconds to wait before sending.
    pub delay_ms: u64,
    /// `event: …\ndata: …\n\n`.
    pub text: String,
}

/// Formats one event; the data is compact JSON, which never contains a newline.
pub fn frame(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// All frames of the answer `reply`, reporting `(input, output)` tokens.
pub fn frames(
    reply: &Reply,
    message_id: &str,
    model: &str,
    (input_tokens, output_tokens): (u64, u64),
) -> Vec<Frame> {
    let mut out = Vec::new();
    let mut push = |delay_ms: u64, event: &str, data: Value| {
        out.push(Frame {
            delay_ms,
            text: frame(event, &data),
        })
    };

    let start = wire::message(
        message_id,
        model,
        Vec::new(),
        None,
        wire::usage(input_tokens, 1),
    );
    push(
        0,
        "message_start",
        json!({"type": "message_start", "message": start}),
    );
    push(0, "ping", json!({"type": "ping"}));

    for (index, block) in reply.blocks.iter().enumerate() {
        let lead = if index == 0 { reply.delay_ms } else { 0 };
        match block {
            Block::Text { text, delay_ms } => {
                push(
                    lead + delay_ms,
                    "content_block_start",
                    json!({
                        "type": "content_block_start", "index": index,
                        "content_block": {"type": "text", "text": ""}
                    }),
                );
                for piece in chunks(text, TEXT_CHUNK) {
                    push(
                        0,
                        "content_block_delta",
                        json!({
                            "type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": piece}
                        }),
                    );
                }
            }
            Block::ToolUse {
                id,
                name,
                input,
                delay_ms,
            } => {
                push(
                    lead + delay_ms,
                    "content_block_start",
                    json!({
                        "type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}
                    }),
                );
                for piece in chunks(&input.to_string(), JSON_CHUNK) {
                    push(
                        0,
                        "content_block_delta",
                        json!({
                            "type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": piece}
                        }),
                    );
                }
            }
        }
        push(
            0,
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
    }

    push(
        0,
        "message_delta",
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": wire::stop_reason(reply), "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}
        }),
    );
    push(0, "message_stop", json!({"type": "message_stop"}));
    out
}

/// Splits `s` into pieces of at most `size` characters, on char boundaries.
fn chunks(s: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in s.char_indices() {
        if count == size {
            out.push(&s[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    if start < s.len() || out.is_empty() {
        out.push(&s[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Why;

    fn reply(blocks: Vec<Block>) -> Reply {
        Reply {
            rules: vec![],
            why: Why::Rule,
            delay_ms: 50,
            blocks,
        }
    }

    /// Parses frames back into (event, data) pairs the way an SSE client would.
    fn parse(frames: &[Frame]) -> Vec<(String, Value)> {
        frames
            .iter()
            .map(|f| {
                assert!(f.text.ends_with("\n\n"), "frame must end with a blank line");
                let mut lines = f.text.trim_end().lines();
                let event = lines
                    .next()
                    .and_then(|l| l.strip_prefix("event: "))
                    .expect("event line");
                let data = lines
                    .next()
                    .and_then(|l| l.strip_prefix("data: "))
                    .expect("data line");
                assert!(lines.next().is_none(), "one data line per frame");
                (
                    event.to_string(),
                    serde_json::from_str(data).expect("data is JSON"),
                )
            })
            .collect()
    }

    #[test]
    fn frame_format() {
        assert_eq!(
            frame("ping", &json!({"type": "ping"})),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        assert_eq!(
            frame("x", &json!({"t": "a\nb"})),
            "event: x\ndata: {\"t\":\"a\\nb\"}\n\n"
        );
    }

    #[test]
    fn text_then_tool_use_sequence() {
        let r = reply(vec![
            Block::Text {
                text: "w".repeat(30),
                delay_ms: 0,
            },
            Block::ToolUse {
                id: "toolu_1".into(),
                name: "send".into(),
                input: json!({"to": "alice"}),
                delay_ms: 5,
            },
        ]);
        let frames = frames(&r, "msg_1", "claude-x", (10, 3));
        let events: Vec<(String, Value)> = parse(&frames);
        let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        for (event, data) in &events {
            assert_eq!(
                data["type"],
                event.as_str(),
                "data.type repeats the event name"
            );
        }
        assert_eq!(events[0].1["message"]["id"], "msg_1");
        assert_eq!(events[0].1["message"]["model"], "claude-x");
        let text: String = events[3..5]
            .iter()
            .map(|(_, d)| d["delta"]["text"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(text, "w".repeat(30));
        assert_eq!(events[6].1["content_block"]["name"], "send");
        assert_eq!(events[7].1["delta"]["partial_json"], "{\"to\":\"alice\"}");
        assert_eq!(events[9].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(frames[2].delay_ms, 50, "rule delay before the first block");
        assert_eq!(frames[6].delay_ms, 5, "block delay before its block");
    }

    #[test]
    fn text_only_ends_turn() {
        let events = parse(&frames(
            &reply(vec![Block::Text {
                text: String::new(),
                delay_ms: 0,
            }]),
            "m",
            "x",
            (1, 1),
        ));
        let delta = events
            .iter()
            .find(|(e, _)| e == "message_delta")
            .expect("message_delta");
        assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");
        assert!(delta.1["usage"]["output_tokens"].as_u64().is_some());
    }

    #[test]
    fn chunks_respect_char_boundaries() {
        assert_eq!(chunks("", 3), vec![""]);
        assert_eq!(chunks("abcdefg", 3), vec!["abc", "def", "g"]);
        assert_eq!(chunks("ééé", 2), vec!["éé", "é"]);
    }
}
