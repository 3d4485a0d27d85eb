//! The script: an ordered list of rules that decide what the model answers.
//!
//! The file format is TOML and is documented in the crate's README.md. Loading
//! compiles regexes and checks templates up front, so a broken script is refused
//! at start (or by `POST /_sim/script`) with the rule and field named.

use crate::error::ScriptError;
use crate::template;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

/// The built-in script used when no `--script` is given.
pub const DEFAULT_SCRIPT: &str = include_str!("default_script.toml");

/// Text that ends a turn when no rule answers.
const DEFAULT_REPLY: &str = "Done.";
/// Summary returned for `/compact` requests.
const DEFAULT_COMPACT_REPLY: &str =
    "<summary>The conversation so far was handled by hive-model-sim; nothing is pending.</summary>";
/// Model calls allowed in one turn before the simulator ends it.
const DEFAULT_MAX_STEPS: u32 = 8;

/// A loaded, validated script.
#[derive(Debug)]
pub struct Script {
    /// Rules in file order; the first that matches answers.
    pub rules: Vec<Rule>,
    /// Text answered when no rule matches.
    pub default_reply: String,
    /// Text answered to compaction requests.
    pub compact_reply: String,
    /// Model calls per turn after which the simulator answers `default_reply`.
    pub max_steps: u32,
    /// The TOML the script was loaded from.
    pub source: String,
}

/// One rule: when it applies and what it answers.
#[derive(Debug)]
pub struct Rule {
    /// `rule N` or `rule N ("name")`, for logs and errors.
    pub label: String,
    /// The rule's `name`, or `rule-N` when it has none.
    pub name: String,
    /// What content the rule looks at.
    pub trigger: Trigger,
    /// Substring the request's model name must contain.
    pub model: Option<String>,
    /// Exact `from` the inbox message must have.
    pub sender: Option<String>,
    /// Answer each inbox message of the prompt separately.
    pub each_message: bool,
    /// Pause before the answer's content starts.
    pub delay_ms: u64,
    /// Blocks of the answer, in order.
    pub reply: Vec<BlockTemplate>,
}

/// Which part of the newest user message a rule matches.
#[derive(Debug)]
pub enum Trigger {
    /// The user's text (steps that start a turn).
    UserText(Pattern),
    /// The text of tool results (steps after claude ran a tool).
    ToolResult(Pattern),
}

/// A substring or a regex.
#[derive(Debug)]
pub enum Pattern {
    /// Matches when the text contains it; the empty string matches everything.
    Substring(String),
    /// Matches when the regex finds a match anywhere in the text.
    Regex(Regex),
}

impl Pattern {
    /// True when `text` matches.
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Substring(needle) => text.contains(needle.as_str()),
            Pattern::Regex(re) => re.is_match(text),
        }
    }
}

/// One block of an answer, before templates are rendered.
#[derive(Debug)]
pub enum BlockTemplate {
    /// A text block.
    Text {
        /// Template of the text.
        text: String,
        /// Pause before the block.
        delay_ms: u64,
    },
    /// A tool_use block.
    ToolUse {
        /// Tool name as claude offers it, e.g. `mcp__hyperhive__send`.
        name: String,
        /// Input object; its strings are templates.
        input: Value,
        /// Pause before the block.
        delay_ms: u64,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopSpec {
    default_reply: Option<String>,
    compact_reply: Option<String>,
    max_steps: Option<u32>,
    #[serde(default)]
    rule: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(rename = "name")]
    _name: Option<String>,
    user_text: Option<String>,
    user_regex: Option<String>,
    tool_result: Option<String>,
    tool_result_regex: Option<String>,
    model: Option<String>,
    sender: Option<String>,
    #[serde(default)]
    each_message: bool,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    reply: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockSpec {
    text: Option<String>,
    tool: Option<String>,
    input: Option<toml::Value>,
    #[serde(default)]
    delay_ms: u64,
}

impl Script {
    /// Parses and validates a script from TOML text.
    pub fn parse(source: &str) -> Result<Script, ScriptError> {
        let top: TopSpec =
            toml::from_str(source).map_err(|e| ScriptError::Syntax(e.to_string().trim().to_string()))?;
        let max_steps = top.max_steps.unwrap_or(DEFAULT_MAX_STEPS);
        if max_steps == 0 {
            return Err(ScriptError::Setting {
                field: "max_steps",
                reason: "must be at least 1 so a turn can answer at all".into(),
            });
        }
        let default_reply = top.default_reply.unwrap_or_else(|| DEFAULT_REPLY.into());
        let compact_reply = top.compact_reply.unwrap_or_else(|| DEFAULT_COMPACT_REPLY.into());
        for (field, text) in [("default_reply", &default_reply), ("compact_reply", &compact_reply)] {
            if text.trim().is_empty() {
                return Err(ScriptError::Setting { field, reason: "must not be empty".into() });
            }
            template::validate(text).map_err(|reason| ScriptError::Setting { field, reason })?;
        }
        let rules = top
            .rule
            .into_iter()
            .enumerate()
            .map(|(i, value)| compile_rule(i + 1, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Script { rules, default_reply, compact_reply, max_steps, source: source.to_string() })
    }

    /// The built-in script (see `default_script.toml`).
    pub fn builtin() -> Script {
        Script::parse(DEFAULT_SCRIPT).expect("the built-in script is valid; a unit test checks it")
    }
}

fn compile_rule(index: usize, value: toml::Value) -> Result<Rule, ScriptError> {
    let given_name = value.get("name").and_then(|v| v.as_str()).map(str::to_string);
    let label = match &given_name {
        Some(name) => format!("rule {index} (\"{name}\")"),
        None => format!("rule {index}"),
    };
    let fail = |field: &str, reason: String| ScriptError::Rule {
        rule: label.clone(),
        field: field.to_string(),
        reason,
    };
    if !value.is_table() {
        return Err(fail("rule", "each [[rule]] must be a table".into()));
    }
    let spec: RuleSpec = value.try_into().map_err(|e: toml::de::Error| fail("rule", clean(&e)))?;

    let triggers = [
        ("user_text", spec.user_text.is_some()),
        ("user_regex", spec.user_regex.is_some()),
        ("tool_result", spec.tool_result.is_some()),
        ("tool_result_regex", spec.tool_result_regex.is_some()),
    ];
    let set: Vec<&str> = triggers.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
    if set.len() != 1 {
        let reason = if set.is_empty() {
            "a rule needs exactly one of user_text, user_regex, tool_result, tool_result_regex \
             (user_text = \"\" matches any user text)"
                .to_string()
        } else {
            format!("a rule takes exactly one trigger, this one has {}", set.join(" and "))
        };
        return Err(fail(set.first().copied().unwrap_or("user_text"), reason));
    }
    let regex = |field: &str, src: String| {
        Regex::new(&src).map(Pattern::Regex).map_err(|e| fail(field, format!("invalid regex: {e}")))
    };
    let trigger = if let Some(s) = spec.user_text {
        Trigger::UserText(Pattern::Substring(s))
    } else if let Some(s) = spec.user_regex {
        Trigger::UserText(regex("user_regex", s)?)
    } else if let Some(s) = spec.tool_result {
        Trigger::ToolResult(Pattern::Substring(s))
    } else if let Some(s) = spec.tool_result_regex {
        Trigger::ToolResult(regex("tool_result_regex", s)?)
    } else {
        unreachable!("exactly one trigger was checked above")
    };
    if spec.each_message && matches!(trigger, Trigger::ToolResult(_)) {
        return Err(fail(
            "each_message",
            "each_message answers inbox messages of a user prompt; use it with user_text or user_regex".into(),
        ));
    }
    if spec.reply.is_empty() {
        return Err(fail("reply", "a rule needs at least one [[rule.reply]] block".into()));
    }
    let reply = spec
        .reply
        .into_iter()
        .enumerate()
        .map(|(i, block)| compile_block(block).map_err(|(field, reason)| fail(&format!("reply[{}]{field}", i + 1), reason)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        label,
        name: given_name.unwrap_or_else(|| format!("rule-{index}")),
        trigger,
        model: spec.model,
        sender: spec.sender,
        each_message: spec.each_message,
        delay_ms: spec.delay_ms,
        reply,
    })
}

/// Compiles one reply block; errors carry a field suffix such as `.input`.
fn compile_block(value: toml::Value) -> Result<BlockTemplate, (String, String)> {
    if !value.is_table() {
        return Err((String::new(), "each reply block must be a table with `text` or `tool`".into()));
    }
    let spec: BlockSpec = value.try_into().map_err(|e: toml::de::Error| (String::new(), clean(&e)))?;
    match (spec.text, spec.tool) {
        (Some(text), None) => {
            if spec.input.is_some() {
                return Err((".input".into(), "`input` belongs to a `tool` block, not a `text` block".into()));
            }
            template::validate(&text).map_err(|r| (".text".into(), r))?;
            Ok(BlockTemplate::Text { text, delay_ms: spec.delay_ms })
        }
        (None, Some(name)) => {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err((".tool".into(), format!("`{name}` is not a tool name; write e.g. \"mcp__hyperhive__send\"")));
            }
            let input = match spec.input {
                None => Value::Object(Default::default()),
                Some(toml_input) => {
                    let json = serde_json::to_value(&toml_input).map_err(|e| (".input".into(), e.to_string()))?;
                    if !json.is_object() {
                        return Err((".input".into(), "must be a table, e.g. input = { to = \"{{sender}}\" }".into()));
                    }
                    json
                }
            };
            template::validate_json(&input).map_err(|r| (".input".into(), r))?;
            Ok(BlockTemplate::ToolUse { name, input, delay_ms: spec.delay_ms })
        }
        (Some(_), Some(_)) => Err((String::new(), "a block has either `text` or `tool`, not both".into())),
        (None, None) => Err((String::new(), "a block needs `text` or `tool`".into())),
    }
}

/// One-line form of a deserialization error (toml's messages can span lines).
fn clean(e: &toml::de::Error) -> String {
    e.to_string().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        Script::parse(src).expect_err("script should be refused").to_string()
    }

    #[test]
    fn builtin_script_loads() {
        let script = Script::builtin();
        assert!(script.rules.len() >= 2);
        assert!(script.rules.iter().any(|r| r.each_message));
    }

    #[test]
    fn full_rule_parses() {
        let script = Script::parse(
            r#"
            default_reply = "bye"
            max_steps = 3
            [[rule]]
            name = "hello"
            user_regex = "(?i)^hello"
            model = "haiku"
            delay_ms = 5
            [[rule.reply]]
            text = "world from {{model}}"
            [[rule.reply]]
            tool = "mcp__hyperhive__send"
            input = { to = "{{sender}}", body = "hi", n = 2 }
            "#,
        )
        .expect("valid");
        assert_eq!(script.default_reply, "bye");
        assert_eq!(script.max_steps, 3);
        let rule = &script.rules[0];
        assert_eq!(rule.label, "rule 1 (\"hello\")");
        assert!(matches!(&rule.trigger, Trigger::UserText(p) if p.is_match("Hello there")));
        assert_eq!(rule.reply.len(), 2);
        match &rule.reply[1] {
            BlockTemplate::ToolUse { input, .. } => assert_eq!(input["n"], 2),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn errors_name_rule_and_field() {
        let e = err("[[rule]]\nname = \"x\"\nuser_regex = \"(\"\n[[rule.reply]]\ntext = \"a\"\n");
        assert!(e.starts_with("rule 1 (\"x\"): field `user_regex`: invalid regex"), "{e}");

        let e = err("[[rule]]\nuser_text = \"a\"\n[[rule]]\nuser_text = \"b\"\n[[rule.reply]]\ntxt = \"a\"\n");
        assert!(e.starts_with("rule 1: field `reply`"), "{e}");

        let e = err("[[rule]]\nuser_text = \"a\"\n[[rule.reply]]\ntxt = \"a\"\n");
        assert!(e.starts_with("rule 1: field `reply[1]`"), "{e}");
        assert!(e.contains("txt"), "{e}");

        let e = err("[[rule]]\nuser_text = \"a\"\ntool_result = \"b\"\n[[rule.reply]]\ntext = \"a\"\n");
        assert!(e.contains("exactly one trigger"), "{e}");

        let e = err("[[rule]]\nuser_text = \"a\"\n[[rule.reply]]\ntext = \"{{who}}\"\n");
        assert!(e.starts_with("rule 1: field `reply[1].text`: unknown placeholder"), "{e}");

        let e = err("[[rule]]\nuser_text = \"a\"\n[[rule.reply]]\ntool = \"t\"\ninput = 3\n");
        assert!(e.starts_with("rule 1: field `reply[1].input`"), "{e}");

        let e = err("[[rule]]\nuser_txt = \"a\"\n");
        assert!(e.starts_with("rule 1: field `rule`") && e.contains("user_txt"), "{e}");

        let e = err("[[rule]]\ntool_result = \"\"\neach_message = true\n[[rule.reply]]\ntext = \"a\"\n");
        assert!(e.contains("`each_message`"), "{e}");
    }

    #[test]
    fn top_level_errors() {
        assert!(err("max_steps = 0").starts_with("setting `max_steps`"));
        assert!(err("rules = []").starts_with("the script is not valid"));
        assert!(err("this is not toml").starts_with("the script is not valid"));
    }

    #[test]
    fn empty_script_is_valid() {
        let script = Script::parse("").expect("valid");
        assert!(script.rules.is_empty());
        assert_eq!(script.max_steps, DEFAULT_MAX_STEPS);
    }
}
