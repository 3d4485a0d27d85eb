//! The script: an ordered list of rules that decide what the model answers.
//!
//! The file format is TOML and is documented in the crate's README.md. Loading
//! compiles regexes and checks templates up front, so a broken script is refused
//! at start (or by `POST /_sim/script`) with the rule and field named.

use crate::error::ScriptError;
use crate::template;
use regex::Regex;
use serde_json::Value;

/// The built-in script used when no `--script` is given.
pub const DEFAULT_SCRIPT: &str = include_str!("default_script.toml");

/// Text that ends a turn when no rule answers.
const DEFAULT_REPLY: &str = "Done.";
/// Summary returned for `/compact` requests.
const DEFAULT_COMPACT_REPLY: &str = "<analysis>Scripted conversation.</analysis>\n\
    <summary>The conversation so far was handled by hive-model-sim; nothing is pending.</summary>";
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
    /// Pause before a compaction answer starts.
    pub compact_delay_ms: u64,
    /// Model calls per turn after which the simulator answers `default_reply`.
    pub max_steps: u32,
    /// Input tokens every answer reports (else an estimate from the request's size).
    pub input_tokens: Option<u64>,
    /// Output tokens every answer reports (else an estimate from the answer's size).
    pub output_tokens: Option<u64>,
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

    /// The regex's named groups and what they matched in `text` (empty when unmatched).
    pub fn captures(&self, text: &str) -> Vec<(String, String)> {
        let Pattern::Regex(re) = self else {
            return Vec::new();
        };
        let found = re.captures(text);
        re.capture_names()
            .flatten()
            .map(|name| {
                let value = found
                    .as_ref()
                    .and_then(|c| c.name(name))
                    .map_or("", |m| m.as_str());
                (name.to_owned(), value.to_owned())
            })
            .collect()
    }

    /// Names of the regex's named groups.
    fn group_names(&self) -> Vec<String> {
        match self {
            Pattern::Regex(re) => re.capture_names().flatten().map(str::to_owned).collect(),
            Pattern::Substring(_) => Vec::new(),
        }
    }
}

impl Trigger {
    /// The pattern, whichever text it looks at.
    pub fn pattern(&self) -> &Pattern {
        match self {
            Trigger::UserText(p) | Trigger::ToolResult(p) => p,
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

/// Typed access to one TOML table that names the offending key on error.
struct Fields<'a> {
    table: &'a toml::Table,
}

impl<'a> Fields<'a> {
    /// Wraps `value`, refusing non-tables and keys outside `known`.
    fn new(
        value: &'a toml::Value,
        what: &str,
        known: &[&str],
    ) -> Result<Fields<'a>, (String, String)> {
        let table = value.as_table().ok_or_else(|| {
            (
                String::new(),
                format!("{what} must be a table, found {}", value.type_str()),
            )
        })?;
        if let Some(key) = table.keys().find(|k| !known.contains(&k.as_str())) {
            return Err((
                key.clone(),
                format!("unknown field; known fields are {}", known.join(", ")),
            ));
        }
        Ok(Fields { table })
    }

    fn wrong(key: &str, expected: &str, found: &toml::Value) -> (String, String) {
        (
            key.to_string(),
            format!("expected {expected}, found {}", found.type_str()),
        )
    }

    fn string(&self, key: &str) -> Result<Option<String>, (String, String)> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Self::wrong(key, "a string", other)),
        }
    }

    fn bool(&self, key: &str) -> Result<bool, (String, String)> {
        match self.table.get(key) {
            None => Ok(false),
            Some(toml::Value::Boolean(b)) => Ok(*b),
            Some(other) => Err(Self::wrong(key, "true or false", other)),
        }
    }

    fn millis(&self, key: &str) -> Result<u64, (String, String)> {
        match self.table.get(key) {
            None => Ok(0),
            Some(toml::Value::Integer(n)) => {
                u64::try_from(*n).map_err(|_| (key.to_string(), "must not be negative".into()))
            }
            Some(other) => Err(Self::wrong(key, "a number of milliseconds", other)),
        }
    }

    fn array(&self, key: &str) -> Result<&'a [toml::Value], (String, String)> {
        match self.table.get(key) {
            None => Ok(&[]),
            Some(toml::Value::Array(items)) => Ok(items),
            Some(other) => Err(Self::wrong(key, "an array of tables", other)),
        }
    }
}

const TOP_FIELDS: &[&str] = &[
    "default_reply",
    "compact_reply",
    "compact_delay_ms",
    "max_steps",
    "input_tokens",
    "output_tokens",
    "rule",
];
const RULE_FIELDS: &[&str] = &[
    "name",
    "user_text",
    "user_regex",
    "tool_result",
    "tool_result_regex",
    "model",
    "sender",
    "each_message",
    "delay_ms",
    "reply",
];
const BLOCK_FIELDS: &[&str] = &["text", "tool", "input", "delay_ms"];

impl Script {
    /// Parses and validates a script from TOML text.
    pub fn parse(source: &str) -> Result<Script, ScriptError> {
        let top: toml::Value = toml::from_str::<toml::Table>(source)
            .map(toml::Value::Table)
            .map_err(|e| ScriptError::Syntax(e.to_string().trim().to_string()))?;
        let fields = Fields::new(&top, "the script", TOP_FIELDS).map_err(|(key, reason)| {
            ScriptError::Syntax(format!("top-level key `{key}`: {reason}"))
        })?;
        let setting = |(field, reason): (String, String)| {
            let field = TOP_FIELDS
                .iter()
                .copied()
                .find(|f| *f == field)
                .unwrap_or("rule");
            ScriptError::Setting { field, reason }
        };
        let max_steps = match top.get("max_steps") {
            None => DEFAULT_MAX_STEPS,
            Some(toml::Value::Integer(n)) if *n >= 1 => u32::try_from(*n).unwrap_or(u32::MAX),
            Some(_) => {
                return Err(ScriptError::Setting {
                    field: "max_steps",
                    reason: "must be a whole number of at least 1 so a turn can answer at all"
                        .into(),
                });
            }
        };
        let default_reply = fields
            .string("default_reply")
            .map_err(setting)?
            .unwrap_or_else(|| DEFAULT_REPLY.into());
        let compact_reply = fields
            .string("compact_reply")
            .map_err(setting)?
            .unwrap_or_else(|| DEFAULT_COMPACT_REPLY.into());
        for (field, text) in [
            ("default_reply", &default_reply),
            ("compact_reply", &compact_reply),
        ] {
            if text.trim().is_empty() {
                return Err(ScriptError::Setting {
                    field,
                    reason: "must not be empty".into(),
                });
            }
            template::validate(text, &[])
                .map_err(|reason| ScriptError::Setting { field, reason })?;
        }
        let compact_delay_ms = fields.millis("compact_delay_ms").map_err(setting)?;
        let tokens = |field: &'static str| match top.get(field) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Some(*n as u64)),
            Some(_) => Err(ScriptError::Setting {
                field,
                reason: "must be a whole number of tokens, 0 or more".into(),
            }),
        };
        let input_tokens = tokens("input_tokens")?;
        let output_tokens = tokens("output_tokens")?;
        let rules = fields
            .array("rule")
            .map_err(setting)?
            .iter()
            .enumerate()
            .map(|(i, value)| compile_rule(i + 1, value))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Script {
            rules,
            default_reply,
            compact_reply,
            compact_delay_ms,
            max_steps,
            input_tokens,
            output_tokens,
            source: source.to_string(),
        })
    }

    /// The built-in script (see `default_script.toml`).
    pub fn builtin() -> Script {
        Script::parse(DEFAULT_SCRIPT).expect("the built-in script is valid; a unit test checks it")
    }
}

fn compile_rule(index: usize, value: &toml::Value) -> Result<Rule, ScriptError> {
    let given_name = value
        .get("name")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let label = match &given_name {
        Some(name) => format!("rule {index} (\"{name}\")"),
        None => format!("rule {index}"),
    };
    let fail = |field: &str, reason: String| ScriptError::Rule {
        rule: label.clone(),
        field: if field.is_empty() {
            "rule".to_string()
        } else {
            field.to_string()
        },
        reason,
    };
    let failed = |(field, reason): (String, String)| fail(&field, reason);
    let fields = Fields::new(value, "each [[rule]]", RULE_FIELDS).map_err(failed)?;
    fields.string("name").map_err(failed)?;

    let mut triggers = Vec::new();
    for key in [
        "user_text",
        "user_regex",
        "tool_result",
        "tool_result_regex",
    ] {
        if let Some(text) = fields.string(key).map_err(failed)? {
            triggers.push((key, text));
        }
    }
    if triggers.len() != 1 {
        let reason = if triggers.is_empty() {
            "a rule needs exactly one of user_text, user_regex, tool_result, tool_result_regex \
             (user_text = \"\" matches any user text)"
                .to_string()
        } else {
            let keys: Vec<&str> = triggers.iter().map(|(k, _)| *k).collect();
            format!(
                "a rule takes exactly one trigger, this one has {}",
                keys.join(" and ")
            )
        };
        return Err(fail(
            triggers.get(1).map_or("user_text", |(k, _)| k),
            reason,
        ));
    }
    let (key, text) = triggers.remove(0);
    let pattern = if key.ends_with("_regex") {
        Pattern::Regex(
            Regex::new(&text)
                .map_err(|e| fail(key, format!("invalid regex: {}", one_line(&e.to_string()))))?,
        )
    } else {
        Pattern::Substring(text)
    };
    let groups = pattern.group_names();
    if let Some(taken) = groups
        .iter()
        .find(|g| template::NAMES.contains(&g.as_str()))
    {
        return Err(fail(
            key,
            format!("the group name `{taken}` is a built-in placeholder; name the group otherwise"),
        ));
    }
    let trigger = if key.starts_with("user") {
        Trigger::UserText(pattern)
    } else {
        Trigger::ToolResult(pattern)
    };
    let each_message = fields.bool("each_message").map_err(failed)?;
    if each_message && matches!(trigger, Trigger::ToolResult(_)) {
        return Err(fail(
            "each_message",
            "each_message answers inbox messages of a user prompt; use it with user_text or user_regex".into(),
        ));
    }
    let blocks = fields.array("reply").map_err(failed)?;
    if blocks.is_empty() {
        return Err(fail(
            "reply",
            "a rule needs at least one [[rule.reply]] block".into(),
        ));
    }
    let reply = blocks
        .iter()
        .enumerate()
        .map(|(i, block)| {
            compile_block(block, &groups).map_err(|(field, reason)| {
                let suffix = if field.is_empty() {
                    String::new()
                } else {
                    format!(".{field}")
                };
                fail(&format!("reply[{}]{suffix}", i + 1), reason)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        label: label.clone(),
        name: given_name.unwrap_or_else(|| format!("rule-{index}")),
        trigger,
        model: fields.string("model").map_err(failed)?,
        sender: fields.string("sender").map_err(failed)?,
        each_message,
        delay_ms: fields.millis("delay_ms").map_err(failed)?,
        reply,
    })
}

/// Compiles one reply block; errors carry the block's key (empty for the block itself).
fn compile_block(
    value: &toml::Value,
    groups: &[String],
) -> Result<BlockTemplate, (String, String)> {
    let fields = Fields::new(value, "each reply block", BLOCK_FIELDS)?;
    let delay_ms = fields.millis("delay_ms")?;
    match (fields.string("text")?, fields.string("tool")?) {
        (Some(text), None) => {
            if fields.table.contains_key("input") {
                return Err((
                    "input".into(),
                    "`input` belongs to a `tool` block, not a `text` block".into(),
                ));
            }
            template::validate(&text, groups).map_err(|r| ("text".into(), r))?;
            Ok(BlockTemplate::Text { text, delay_ms })
        }
        (None, Some(name)) => {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err((
                    "tool".into(),
                    format!("`{name}` is not a tool name; write e.g. \"mcp__hyperhive__send\""),
                ));
            }
            let input = match fields.table.get("input") {
                None => Value::Object(Default::default()),
                Some(toml_input @ toml::Value::Table(_)) => {
                    serde_json::to_value(toml_input).map_err(|e| ("input".into(), e.to_string()))?
                }
                Some(other) => {
                    return Err((
                        "input".into(),
                        format!(
                            "expected a table such as {{ to = \"{{{{sender}}}}\" }}, found {}",
                            other.type_str()
                        ),
                    ));
                }
            };
            template::validate_json(&input, groups).map_err(|r| ("input".into(), r))?;
            Ok(BlockTemplate::ToolUse {
                name,
                input,
                delay_ms,
            })
        }
        (Some(_), Some(_)) => Err((
            String::new(),
            "a block has either `text` or `tool`, not both".into(),
        )),
        (None, None) => Err((String::new(), "a block needs `text` or `tool`".into())),
    }
}

/// Joins a multi-line error message into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        Script::parse(src)
            .expect_err("script should be refused")
            .to_string()
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
        assert!(
            e.starts_with("rule 1 (\"x\"): field `user_regex`: invalid regex"),
            "{e}"
        );

        let e = err(
            "[[rule]]\nuser_text = \"a\"\n[[rule]]\nuser_text = \"b\"\n[[rule.reply]]\ntxt = \"a\"\n",
        );
        assert!(e.starts_with("rule 1: field `reply`"), "{e}");

        let e = err("[[rule]]\nuser_text = \"a\"\n[[rule.reply]]\ntxt = \"a\"\n");
        assert!(
            e.starts_with("rule 1: field `reply[1].txt`: unknown field"),
            "{e}"
        );

        let e =
            err("[[rule]]\nuser_text = \"a\"\ntool_result = \"b\"\n[[rule.reply]]\ntext = \"a\"\n");
        assert!(e.contains("exactly one trigger"), "{e}");

        let e = err("[[rule]]\nuser_text = \"a\"\n[[rule.reply]]\ntext = \"{{who}}\"\n");
        assert!(
            e.starts_with("rule 1: field `reply[1].text`: unknown placeholder"),
            "{e}"
        );

        let e = err("[[rule]]\nuser_text = \"a\"\n[[rule.reply]]\ntool = \"t\"\ninput = 3\n");
        assert!(e.starts_with("rule 1: field `reply[1].input`"), "{e}");

        let e = err("[[rule]]\nuser_txt = \"a\"\n");
        assert!(
            e.starts_with("rule 1: field `user_txt`: unknown field"),
            "{e}"
        );

        let e = err("[[rule]]\nuser_text = 5\n");
        assert_eq!(
            e,
            "rule 1: field `user_text`: expected a string, found integer"
        );

        let e = err("[[rule]]\nuser_text = \"a\"\ndelay_ms = -1\n[[rule.reply]]\ntext = \"a\"\n");
        assert!(e.starts_with("rule 1: field `delay_ms`"), "{e}");

        let e = err(
            "[[rule]]\ntool_result = \"\"\neach_message = true\n[[rule.reply]]\ntext = \"a\"\n",
        );
        assert!(e.contains("`each_message`"), "{e}");
    }

    #[test]
    fn top_level_errors() {
        assert!(err("max_steps = 0").starts_with("setting `max_steps`"));
        assert!(err("input_tokens = -1").starts_with("setting `input_tokens`"));
        let fixed = Script::parse("input_tokens = 1000\noutput_tokens = 10").unwrap();
        assert_eq!(
            (fixed.input_tokens, fixed.output_tokens),
            (Some(1000), Some(10))
        );
        assert!(err("rules = []").contains("top-level key `rules`"));
        assert!(err("default_reply = 1").starts_with("setting `default_reply`"));
        assert!(err("this is not toml").starts_with("the script is not valid"));
    }

    #[test]
    fn empty_script_is_valid() {
        let script = Script::parse("").expect("valid");
        assert!(script.rules.is_empty());
        assert_eq!(script.max_steps, DEFAULT_MAX_STEPS);
    }
}
