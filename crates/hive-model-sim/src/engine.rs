//! Chooses the answer to one request from the script.
//!
//! Termination is built in: user-text rules fire only on the call that carries
//! the user's prompt; a tool-result rule fires at most once per turn (its
//! tool_use ids carry the rule index); after `max_steps` model calls in a turn,
//! or when nothing matches, the answer is plain text, which ends the turn.

use crate::conversation::{Conversation, Step};
use crate::ids::{self, IdGen};
use crate::inbox::InboxMessage;
use crate::script::{BlockTemplate, Rule, Script, Trigger};
use crate::template::{self, Vars};
use serde_json::Value;

/// A rendered content block of an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Pause before the block.
        delay_ms: u64,
    },
    /// A tool call.
    ToolUse {
        /// Unique id (see [`crate::ids`]).
        id: String,
        /// Tool name.
        name: String,
        /// Input object.
        input: Value,
        /// Pause before the block.
        delay_ms: u64,
    },
}

/// Why an answer was chosen, for the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// A script rule matched.
    Rule,
    /// Nothing matched; `default_reply`.
    Default,
    /// A compaction request; `compact_reply`.
    Compact,
    /// The turn reached `max_steps`; `default_reply`.
    StepLimit,
}

impl Why {
    /// Lower-case name used in the request log.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Rule => "rule",
            Why::Default => "default",
            Why::Compact => "compact",
            Why::StepLimit => "max_steps",
        }
    }
}

/// The full answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Names of the rules that produced it (several for `each_message`).
    pub rules: Vec<String>,
    /// Why this answer.
    pub why: Why,
    /// Pause before the content starts.
    pub delay_ms: u64,
    /// Content blocks, in order.
    pub blocks: Vec<Block>,
}

impl Reply {
    /// True when the answer calls a tool, i.e. the turn continues.
    pub fn uses_tools(&self) -> bool {
        self.blocks
            .iter()
            .any(|b| matches!(b, Block::ToolUse { .. }))
    }
}

/// Answers `conv` according to `script`.
pub fn answer(script: &Script, conv: &Conversation, ids: &IdGen) -> Reply {
    let base = base_vars(conv);
    let reply = if conv.step != Step::Compact && conv.steps_in_turn >= script.max_steps as usize {
        text_reply(&script.default_reply, &base, Why::StepLimit)
    } else {
        match conv.step {
            Step::Compact => Some(Reply {
                delay_ms: script.compact_delay_ms,
                ..text_reply(&script.compact_reply, &base, Why::Compact)
            }),
            Step::UserText => answer_user_text(script, conv, &base, ids),
            Step::ToolResult => answer_tool_result(script, conv, &base, ids),
            Step::Other => None,
        }
        .unwrap_or_else(|| text_reply(&script.default_reply, &base, Why::Default))
    };
    without_unoffered_tools(reply, conv, script, &base)
}

/// Variables for whole-prompt rules: the newest inbox message, if any.
fn base_vars(conv: &Conversation) -> Vars {
    let last = conv.inbox.last().cloned().unwrap_or_default();
    message_vars(conv, &last)
}

fn message_vars(conv: &Conversation, message: &InboxMessage) -> Vars {
    Vars {
        sender: message.from.clone(),
        body: message.body.clone(),
        message_id: message.id.clone(),
        model: conv.model.clone(),
        text: conv.user_text.clone(),
        tool_result: conv.tool_result.clone(),
        captures: Vec::new(),
    }
}

/// `vars` with the named groups of `rule`'s regex over `text`.
fn with_captures(mut vars: Vars, rule: &Rule, text: &str) -> Vars {
    vars.captures = rule.trigger.pattern().captures(text);
    vars
}

fn text_reply(template_text: &str, vars: &Vars, why: Why) -> Reply {
    Reply {
        rules: Vec::new(),
        why,
        delay_ms: 0,
        blocks: vec![Block::Text {
            text: template::render(template_text, vars),
            delay_ms: 0,
        }],
    }
}

fn applies(rule: &Rule, conv: &Conversation, sender: &str) -> bool {
    rule.model.as_deref().is_none_or(|m| conv.model.contains(m))
        && rule.sender.as_deref().is_none_or(|s| s == sender)
}

fn render(rule: &Rule, index: usize, vars: &Vars, ids: &IdGen) -> Vec<Block> {
    rule.reply
        .iter()
        .map(|block| match block {
            BlockTemplate::Text { text, delay_ms } => Block::Text {
                text: template::render(text, vars),
                delay_ms: *delay_ms,
            },
            BlockTemplate::ToolUse {
                name,
                input,
                delay_ms,
            } => Block::ToolUse {
                id: ids.tool_use(index),
                name: name.clone(),
                input: template::render_json(input, vars),
                delay_ms: *delay_ms,
            },
        })
        .collect()
}

/// Rules in order; `each_message` rules claim inbox messages one by one, and a
/// whole-prompt rule wins only while no message has been claimed.
fn answer_user_text(
    script: &Script,
    conv: &Conversation,
    base: &Vars,
    ids: &IdGen,
) -> Option<Reply> {
    let mut claimed: Vec<Option<(usize, &Rule)>> = vec![None; conv.inbox.len()];
    for (i, rule) in script.rules.iter().enumerate() {
        let Trigger::UserText(pattern) = &rule.trigger else {
            continue;
        };
        if rule.each_message {
            for (slot, message) in claimed.iter_mut().zip(&conv.inbox) {
                if slot.is_none()
                    && applies(rule, conv, &message.from)
                    && pattern.is_match(&message.body)
                {
                    *slot = Some((i + 1, rule));
                }
            }
        } else if claimed.iter().all(Option::is_none)
            && applies(rule, conv, &base.sender)
            && pattern.is_match(&conv.user_text)
        {
            let vars = with_captures(base.clone(), rule, &conv.user_text);
            return Some(Reply {
                rules: vec![rule.name.clone()],
                why: Why::Rule,
                delay_ms: rule.delay_ms,
                blocks: render(rule, i + 1, &vars, ids),
            });
        }
    }
    let mut reply = Reply {
        rules: Vec::new(),
        why: Why::Rule,
        delay_ms: 0,
        blocks: Vec::new(),
    };
    for (slot, message) in claimed.iter().zip(&conv.inbox) {
        let Some((index, rule)) = slot else { continue };
        if !reply.rules.contains(&rule.name) {
            reply.rules.push(rule.name.clone());
        }
        reply.delay_ms = reply.delay_ms.max(rule.delay_ms);
        let vars = with_captures(message_vars(conv, message), rule, &message.body);
        reply.blocks.extend(render(rule, *index, &vars, ids));
    }
    (!reply.blocks.is_empty()).then_some(reply)
}

fn answer_tool_result(
    script: &Script,
    conv: &Conversation,
    base: &Vars,
    ids: &IdGen,
) -> Option<Reply> {
    script.rules.iter().enumerate().find_map(|(i, rule)| {
        let Trigger::ToolResult(pattern) = &rule.trigger else {
            return None;
        };
        let prefix = ids::tool_use_prefix(i + 1);
        let fired = conv
            .tool_use_ids_in_turn
            .iter()
            .any(|id| id.starts_with(&prefix));
        (!fired && applies(rule, conv, &base.sender) && pattern.is_match(&conv.tool_result)).then(
            || Reply {
                rules: vec![rule.name.clone()],
                why: Why::Rule,
                delay_ms: rule.delay_ms,
                blocks: render(
                    rule,
                    i + 1,
                    &with_captures(base.clone(), rule, &conv.tool_result),
                    ids,
                ),
            },
        )
    })
}

/// A request that offers no tools at all (a side call such as a title request)
/// cannot take a tool_use; keep the text, or fall back to `default_reply`.
fn without_unoffered_tools(
    mut reply: Reply,
    conv: &Conversation,
    script: &Script,
    vars: &Vars,
) -> Reply {
    if conv.tools.is_empty() && reply.uses_tools() {
        reply.blocks.retain(|b| matches!(b, Block::Text { .. }));
        if reply.blocks.is_empty() {
            reply.blocks = text_reply(&script.default_reply, vars, Why::Default).blocks;
        }
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(messages: Value) -> Conversation {
        Conversation::parse(&json!({"model": "claude-haiku-5-5", "tools": [{"name": "mcp__hyperhive__send"}], "messages": messages}))
            .expect("valid request")
    }

    fn tool_inputs(reply: &Reply) -> Vec<Value> {
        reply
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::ToolUse { input, .. } => Some(input.clone()),
                Block::Text { .. } => None,
            })
            .collect()
    }

    #[test]
    fn builtin_answers_each_message_to_its_sender() {
        let c = conv(json!([{"role": "user", "content":
            "<message id=\"1\" from=\"alice\">ping</message>\n<message id=\"2\" from=\"bob\">how are you</message>"}]));
        let reply = answer(&Script::builtin(), &c, &IdGen::new());
        assert_eq!(reply.why, Why::Rule);
        assert_eq!(reply.rules, vec!["ping", "ack"]);
        assert_eq!(
            tool_inputs(&reply),
            vec![
                json!({"to": "alice", "body": "pong"}),
                json!({"to": "bob", "body": "ack: how are you"})
            ]
        );
    }

    #[test]
    fn builtin_passes_a_question_on_answers_it_and_reports_the_answer() {
        let ask = conv(json!([{"role": "user", "content":
            "<message id=\"1\" from=\"operator\">ask bob what is 6 x 7?\n</message>"}]));
        let reply = answer(&Script::builtin(), &ask, &IdGen::new());
        assert_eq!(reply.rules, vec!["ask"]);
        assert_eq!(
            tool_inputs(&reply),
            vec![json!({"to": "bob", "body": "question: what is 6 x 7?"})]
        );
        let question = conv(json!([{"role": "user", "content":
            "<message id=\"2\" from=\"alice\">question: what is 6 x 7?</message>"}]));
        let reply = answer(&Script::builtin(), &question, &IdGen::new());
        let body = tool_inputs(&reply)[0]["body"].as_str().unwrap().to_owned();
        assert_eq!(tool_inputs(&reply)[0]["to"], "alice");
        assert!(
            body.starts_with("answer: you asked \"what is 6 x 7?\""),
            "{body}"
        );
        let answered = conv(json!([{"role": "user", "content":
            format!("<message id=\"3\" from=\"bob\">{body}</message>")}]));
        let reply = answer(&Script::builtin(), &answered, &IdGen::new());
        assert_eq!(tool_inputs(&reply)[0]["to"], "operator");
        assert!(
            tool_inputs(&reply)[0]["body"]
                .as_str()
                .unwrap()
                .starts_with("bob answered: you asked"),
            "{reply:?}"
        );
        // Only the operator's `ask` is passed on; an agent's is just acknowledged.
        let from_agent = conv(json!([{"role": "user", "content":
            "<message id=\"4\" from=\"carol\">ask bob anything</message>"}]));
        let reply = answer(&Script::builtin(), &from_agent, &IdGen::new());
        assert_eq!(reply.rules, vec!["ack"]);
    }

    #[test]
    fn a_regex_group_named_like_a_placeholder_is_refused() {
        let e = Script::parse(
            "[[rule]]\nuser_regex = '(?P<body>.*)'\n[[rule.reply]]\ntext = \"{{body}}\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("group name `body`"), "{e}");
    }

    #[test]
    fn builtin_ends_the_turn_after_the_tool_result() {
        let ids = IdGen::new();
        let first =
            conv(json!([{"role": "user", "content": "<message from=\"alice\">ping</message>"}]));
        let reply = answer(&Script::builtin(), &first, &ids);
        let Block::ToolUse { id, .. } = &reply.blocks[0] else {
            panic!("expected a tool call")
        };
        let second = conv(json!([
            {"role": "user", "content": "<message from=\"alice\">ping</message>"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "mcp__hyperhive__send", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "sent"}]}
        ]));
        let reply = answer(&Script::builtin(), &second, &ids);
        assert!(!reply.uses_tools());
        assert_eq!(reply.rules, vec!["after-send"]);
    }

    #[test]
    fn whole_prompt_rules_match_text_and_model() {
        let script = Script::parse(
            "[[rule]]\nuser_text = \"hello\"\nmodel = \"opus\"\n[[rule.reply]]\ntext = \"big\"\n\
             [[rule]]\nname = \"h\"\nuser_regex = \"^hel+o$\"\ndelay_ms = 7\n[[rule.reply]]\ntext = \"world {{model}}\"\n",
        )
        .expect("valid");
        let reply = answer(
            &script,
            &conv(json!([{"role": "user", "content": "hello"}])),
            &IdGen::new(),
        );
        assert_eq!(reply.rules, vec!["h"]);
        assert_eq!(reply.delay_ms, 7);
        assert_eq!(
            reply.blocks,
            vec![Block::Text {
                text: "world claude-haiku-5-5".into(),
                delay_ms: 0
            }]
        );
        let reply = answer(
            &script,
            &conv(json!([{"role": "user", "content": "goodbye"}])),
            &IdGen::new(),
        );
        assert_eq!(reply.why, Why::Default);
    }

    #[test]
    fn a_looping_tool_result_rule_fires_once_per_turn() {
        let script = Script::parse(
            "[[rule]]\ntool_result = \"\"\n[[rule.reply]]\ntool = \"mcp__hyperhive__send\"\n",
        )
        .expect("valid");
        let ids = IdGen::new();
        let first_id = ids.tool_use(1);
        let c = conv(json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_x", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]},
        ]));
        assert!(answer(&script, &c, &ids).uses_tools());
        let c = conv(json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": first_id, "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": first_id, "content": "r"}]},
        ]));
        let reply = answer(&script, &c, &ids);
        assert!(!reply.uses_tools());
        assert_eq!(reply.why, Why::Default);
    }

    #[test]
    fn step_limit_ends_runaway_turns() {
        let script = Script::parse(
            "max_steps = 1\n[[rule]]\ntool_result = \"\"\n[[rule.reply]]\ntool = \"t\"\n",
        )
        .expect("valid");
        let c = conv(json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_x", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]},
        ]));
        assert_eq!(answer(&script, &c, &IdGen::new()).why, Why::StepLimit);
    }

    #[test]
    fn requests_without_tools_get_text_only() {
        let c = Conversation::parse(&json!({"model": "m", "messages": [{"role": "user", "content": "<message from=\"a\">x</message>"}]}))
            .expect("valid");
        let reply = answer(&Script::builtin(), &c, &IdGen::new());
        assert!(!reply.uses_tools());
        assert_eq!(
            reply.blocks,
            vec![Block::Text {
                text: "Done.".into(),
                delay_ms: 0
            }]
        );
    }

    #[test]
    fn sender_filter_and_compaction() {
        let script = Script::parse(
            "compact_reply = \"sum for {{model}}\"\ncompact_delay_ms = 9\n[[rule]]\nsender = \"bob\"\neach_message = true\nuser_text = \"\"\n[[rule.reply]]\ntext = \"hi {{sender}} #{{message_id}}\"\n",
        )
        .expect("valid");
        let c = conv(json!([{"role": "user", "content":
            "<message id=\"1\" from=\"alice\">a</message><message id=\"2\" from=\"bob\">b</message>"}]));
        let reply = answer(&script, &c, &IdGen::new());
        assert_eq!(
            reply.blocks,
            vec![Block::Text {
                text: "hi bob #2".into(),
                delay_ms: 0
            }]
        );
        let c = conv(json!([{"role": "user", "content": "Respond with TEXT ONLY. Summarize."}]));
        let reply = answer(&script, &c, &IdGen::new());
        assert_eq!(reply.why, Why::Compact);
        assert_eq!(reply.delay_ms, 9);
        assert_eq!(
            reply.blocks,
            vec![Block::Text {
                text: "sum for claude-haiku-5-5".into(),
                delay_ms: 0
            }]
        );
    }
}
