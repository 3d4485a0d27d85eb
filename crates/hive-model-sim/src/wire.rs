//! JSON shapes of the Anthropic Messages API that the simulator sends.

use crate::engine::{Block, Reply};
use serde_json::{Value, json};

/// Models listed by `GET /v1/models`; any other name is accepted too.
pub const MODELS: &[(&str, &str)] = &[
    ("claude-opus-4-1", "Claude Opus 4.1"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
];

/// Token estimate from characters (about four per token, at least one).
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64 / 4).max(1)
}

/// The `usage` object.
pub fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard"
    })
}

/// `tool_use` when the reply calls a tool (claude runs it and calls again), else `end_turn`.
pub fn stop_reason(reply: &Reply) -> &'static str {
    if reply.uses_tools() {
        "tool_use"
    } else {
        "end_turn"
    }
}

/// Output tokens a reply would plausibly cost.
pub fn output_tokens(reply: &Reply) -> u64 {
    let chars: usize = reply
        .blocks
        .iter()
        .map(|b| match b {
            Block::Text { text, .. } => text.len(),
            Block::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
        })
        .sum();
    estimate_tokens(chars)
}

/// A complete content block as it appears in a non-streaming message.
pub fn block(block: &Block) -> Value {
    match block {
        Block::Text { text, .. } => json!({"type": "text", "text": text}),
        Block::ToolUse {
            id, name, input, ..
        } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
    }
}

/// A message object; `content` is empty and `stop_reason` null in `message_start`.
pub fn message(
    id: &str,
    model: &str,
    content: Vec<Value>,
    stop_reason: Option<&str>,
    usage: Value,
) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage
    })
}

/// An API error body, e.g. `error("invalid_request_error", "messages: field required")`.
pub fn error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// One entry of the models list.
pub fn model_info(id: &str, display_name: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": display_name, "created_at": "2025-01-01T00:00:00Z"})
}

/// The body of `GET /v1/models`.
pub fn models() -> Value {
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, name)| model_info(id, name))
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": MODELS.first().map(|m| m.0),
        "last_id": MODELS.last().map(|m| m.0)
    })
}
