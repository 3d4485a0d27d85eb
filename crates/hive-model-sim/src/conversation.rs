//! What the simulator needs to know about one `/v1/messages` request.
//!
//! claude sends the whole conversation on every call. The newest user message
//! says which step of a turn this is: the user's prompt (text), the results of
//! tools claude just ran, or claude's own compaction prompt. Text claude adds by
//! itself (`<system-reminder>` blocks, `(no content)` placeholders) is ignored.

use crate::inbox::{self, InboxMessage};
use regex::Regex;
use serde_json::Value;
use std::sync::LazyLock;

/// Marker in the prompt claude sends for `/compact` (and auto-compaction).
const COMPACT_MARKER: &str = "Respond with TEXT ONLY";

static REMINDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)<system-reminder>.*?</system-reminder>").expect("static regex is valid")
});

/// Which step of a turn a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The newest user message is the user's prompt.
    UserText,
    /// The newest user message carries tool results.
    ToolResult,
    /// claude asks for a summary of the conversation (`/compact`).
    Compact,
    /// Anything else (empty or synthetic user content).
    Other,
}

impl Step {
    /// Lower-case name used in the request log.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::UserText => "user_text",
            Step::ToolResult => "tool_result",
            Step::Compact => "compact",
            Step::Other => "other",
        }
    }
}

/// The parts of a request that rules look at.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// Model name as sent (claude resolves aliases such as `haiku` itself).
    pub model: String,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Names of the tools offered.
    pub tools: Vec<String>,
    /// Characters of system prompt.
    pub system_len: usize,
    /// Which step of the turn this is.
    pub step: Step,
    /// The user text that started the current turn.
    pub user_text: String,
    /// Text of the tool results in the newest user message.
    pub tool_result: String,
    /// Inbox messages found in `user_text`.
    pub inbox: Vec<InboxMessage>,
    /// Assistant messages since `user_text`, i.e. model calls already made this turn.
    pub steps_in_turn: usize,
    /// Ids of the tool_use blocks the assistant sent this turn.
    pub tool_use_ids_in_turn: Vec<String>,
    /// Rough count of input characters, for plausible usage numbers.
    pub input_chars: usize,
}

/// A request body the simulator cannot use; answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

impl Conversation {
    /// Reads a Messages API request body.
    pub fn parse(body: &Value) -> Result<Conversation, BadRequest> {
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| BadRequest("model: field required".into()))?
            .to_string();
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| BadRequest("messages: field required (an array)".into()))?;
        let tools = body
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let system_len = body.get("system").map(text_len).unwrap_or(0);

        let newest_user = messages.iter().rposition(|m| role(m) == "user");
        let turn_start = messages
            .iter()
            .rposition(|m| role(m) == "user" && !has_tool_result(m) && !user_text(m).is_empty());

        let newest_text = newest_user
            .map(|i| raw_text(&messages[i]))
            .unwrap_or_default();
        let step = match newest_user {
            _ if newest_text.contains(COMPACT_MARKER) => Step::Compact,
            Some(i) if has_tool_result(&messages[i]) => Step::ToolResult,
            Some(i) if Some(i) == turn_start => Step::UserText,
            _ => Step::Other,
        };
        let user_text = turn_start
            .map(|i| user_text(&messages[i]))
            .unwrap_or_default();
        let tool_result = match (step, newest_user) {
            (Step::ToolResult, Some(i)) => tool_result_text(&messages[i]),
            _ => String::new(),
        };
        let after_start = &messages[turn_start.map_or(0, |i| i + 1)..];
        let assistant: Vec<&Value> = after_start
            .iter()
            .filter(|m| role(m) == "assistant")
            .collect();
        let tool_use_ids_in_turn = assistant
            .iter()
            .flat_map(|m| blocks(m))
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
            .filter_map(|b| b.get("id").and_then(Value::as_str).map(str::to_string))
            .collect();

        Ok(Conversation {
            model,
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            tools,
            system_len,
            step,
            inbox: inbox::parse(&user_text),
            user_text,
            tool_result,
            steps_in_turn: assistant.len(),
            tool_use_ids_in_turn,
            input_chars: system_len + messages.iter().map(text_len).sum::<usize>(),
        })
    }
}

fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

/// Content blocks of a message; a plain-string content becomes one text block.
fn blocks(message: &Value) -> Vec<Value> {
    match message.get("content") {
        Some(Value::String(s)) => vec![serde_json::json!({"type": "text", "text": s})],
        Some(Value::Array(items)) => items.clone(),
        _ => Vec::new(),
    }
}

fn has_tool_result(message: &Value) -> bool {
    blocks(message)
        .iter()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
}

/// All text blocks of a message joined, untouched.
fn raw_text(message: &Value) -> String {
    blocks(message)
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The user's own words: text blocks without claude's reminders and placeholders.
fn user_text(message: &Value) -> String {
    let text = REMINDER
        .replace_all(&raw_text(message), "")
        .trim()
        .to_string();
    if text == "(no content)" {
        String::new()
    } else {
        text
    }
}

/// Text of every tool_result block in a message (string or text-block content).
fn tool_result_text(message: &Value) -> String {
    blocks(message)
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        .map(|b| match b.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Characters of text in a string, block list or message.
fn text_len(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        Value::Array(items) => items.iter().map(text_len).sum(),
        Value::Object(map) => {
            ["text", "content"]
                .iter()
                .filter_map(|k| map.get(*k))
                .map(text_len)
                .sum::<usize>()
                + map.get("input").map_or(0, |i| i.to_string().len())
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reminder() -> Value {
        json!({"type": "text", "text": "<system-reminder>\nhello world\n</system-reminder>\n"})
    }

    #[test]
    fn first_call_of_a_turn_is_user_text() {
        let body = json!({
            "model": "claude-haiku-5-5", "stream": true,
            "system": [{"type": "text", "text": "abc"}],
            "tools": [{"name": "Bash"}, {"name": "mcp__hyperhive__send"}],
            "messages": [
                {"role": "user", "content": [reminder(), {"type": "text", "text": "<message id=\"3\" from=\"alice\">ping</message>"}]},
                {"role": "system", "content": [{"type": "text", "text": "env"}]}
            ]
        });
        let c = Conversation::parse(&body).expect("valid");
        assert_eq!(c.step, Step::UserText);
        assert_eq!(c.model, "claude-haiku-5-5");
        assert!(c.stream);
        assert_eq!(c.tools, vec!["Bash", "mcp__hyperhive__send"]);
        assert_eq!(c.system_len, 3);
        assert!(
            !c.user_text.contains("hello world"),
            "reminders are dropped"
        );
        assert_eq!(c.inbox[0].from, "alice");
        assert_eq!(c.steps_in_turn, 0);
    }

    #[test]
    fn tool_result_step_keeps_the_turns_user_text() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "old prompt"},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_sim1_a", "name": "x", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_sim1_a", "content": [{"type": "text", "text": "sent"}]},
                    reminder()
                ]},
                {"role": "system", "content": "tokens left"}
            ]
        });
        let c = Conversation::parse(&body).expect("valid");
        assert_eq!(c.step, Step::ToolResult);
        assert_eq!(c.user_text, "hello");
        assert_eq!(c.tool_result, "sent");
        assert_eq!(c.steps_in_turn, 1);
        assert_eq!(c.tool_use_ids_in_turn, vec!["toolu_sim1_a"]);
        assert!(!c.stream);
    }

    #[test]
    fn compact_and_placeholder_steps() {
        let compact = json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"},
                {"type": "text", "text": "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools."}]}
        ]});
        assert_eq!(
            Conversation::parse(&compact).expect("valid").step,
            Step::Compact
        );
        let placeholder =
            json!({"model": "m", "messages": [{"role": "user", "content": "(no content)"}]});
        assert_eq!(
            Conversation::parse(&placeholder).expect("valid").step,
            Step::Other
        );
    }

    #[test]
    fn missing_fields_are_bad_requests() {
        assert!(Conversation::parse(&json!({"messages": []})).is_err());
        assert!(Conversation::parse(&json!({"model": "m"})).is_err());
    }
}
