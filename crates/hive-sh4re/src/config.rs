//! `agent.toml`: an agent's configuration, parsed and validated in one place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Mailbox;
use crate::tools::Tool;

/// Default model of a new agent.
pub const DEFAULT_MODEL: &str = "haiku";

/// An agent's configuration as written in `agent.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Claude model name or alias.
    #[serde(default = "default_model")]
    pub model: String,
    /// claude-code `--allowedTools` entries, e.g. `Read`, `Bash(git *)`.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// Whom the agent may send to; empty means anyone in the hive.
    #[serde(default)]
    pub allowed_recipients: Vec<String>,
    /// Extra environment for claude.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra stdio MCP servers, by name.
    #[serde(default)]
    pub mcp_servers: BTreeMap<String, McpServer>,
    /// The agent's standing instructions.
    #[serde(default)]
    pub prompt: String,
    /// Size of `/state/notes.md` above which the notes are compacted.
    #[serde(default)]
    pub notes_max_bytes: Option<u64>,
    /// Longest one turn may run before it is stopped (`"45m"`, `"2h"`, `"90s"`,
    /// or seconds); the hive's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_timeout: Option<TurnTimeout>,
    /// The agent's daily spending budget (UTC days); none when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// A daily spending budget, `{ usd_per_day = 5.0, tokens_per_day = 2_000_000 }`
/// (either or both): an agent's in `agent.toml`, the hive's in `hive.toml`.
/// Tokens are what claude reports as input plus output tokens; dollars its
/// `total_cost_usd`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<f64>,
    /// Signed so that a negative count is refused by name, not by a type error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<i64>,
}

impl Budget {
    /// Checks the budget, naming the wrong field under `field` (`budget`).
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.usd_per_day.is_none() && self.tokens_per_day.is_none() {
            return Err(ConfigError(format!(
                "field `{field}` sets no limit: give usd_per_day, tokens_per_day or both"
            )));
        }
        if let Some(usd) = self.usd_per_day
            && !(usd.is_finite() && usd > 0.0)
        {
            return Err(ConfigError(format!(
                "field `{field}.usd_per_day`: {usd} is not a budget: give a number of dollars above 0"
            )));
        }
        if let Some(t) = self.tokens_per_day
            && t <= 0
        {
            return Err(ConfigError(format!(
                "field `{field}.tokens_per_day`: {t} is not a budget: give a number of tokens above 0"
            )));
        }
        Ok(())
    }

    /// The token limit, once validated.
    pub fn tokens(&self) -> Option<u64> {
        self.tokens_per_day.map(|t| t.max(0) as u64)
    }

    /// Parses and validates a budget written as a TOML inline table (the hive's `budget` setting).
    pub fn from_toml_inline(text: &str) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Wrap {
            budget: Budget,
        }
        let w: Wrap = toml::from_str(&format!("budget = {text}")).map_err(|e| {
            ConfigError(format!(
                "field `budget`: {} (write it as {{ usd_per_day = 50.0, tokens_per_day = 20000000 }})",
                e.message()
            ))
        })?;
        w.budget.validate("budget")?;
        Ok(w.budget)
    }
}

/// Longest turn allowed in `turn_timeout`: a week, an operator question's longest wait.
pub const MAX_TURN_TIMEOUT_SECS: u64 = 7 * 24 * 3600;

/// A turn time limit as `agent.toml` writes it: seconds, or a duration (`45m`, see [`crate::duration`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TurnTimeout {
    Seconds(u64),
    Text(String),
}

impl TurnTimeout {
    /// The limit in seconds, or why the text is not one.
    pub fn seconds(&self) -> Result<u64, String> {
        let secs = match self {
            Self::Seconds(s) => *s,
            Self::Text(t) => crate::duration::parse(t)
                .map_err(|e| e.to_string())?
                .as_secs(),
        };
        if secs == 0 || secs > MAX_TURN_TIMEOUT_SECS {
            return Err(format!(
                "{secs}s is not a turn time limit: give between 1s and {}h",
                MAX_TURN_TIMEOUT_SECS / 3600
            ));
        }
        Ok(secs)
    }
}

/// A stdio MCP server claude starts for the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServer {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Model aliases the claude CLI resolves itself (`docs/claude-cli.md`).
pub const CLAUDE_MODEL_ALIASES: [&str; 4] = ["haiku", "sonnet", "opus", "opusplan"];

/// True for a claude alias (with an optional context suffix such as
/// `sonnet[1m]`) or a claude model id (`claude-...`). Anything else still
/// runs, sent as given, which only a custom model server understands.
pub fn is_claude_model(model: &str) -> bool {
    let base = model.split_once('[').map_or(model, |(b, _)| b);
    CLAUDE_MODEL_ALIASES.contains(&base)
        || model
            .strip_prefix("claude-")
            .is_some_and(|rest| !rest.is_empty())
}

/// The one rule for a model's name, in a config and in what a harness
/// reports: 1-100 of letters, digits and `-._:[]`.
pub fn is_model_name(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 100
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c))
}

fn default_model() -> String {
    DEFAULT_MODEL.to_owned()
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            model: default_model(),
            allowed_tools: vec![],
            allowed_recipients: vec![],
            env: BTreeMap::new(),
            mcp_servers: BTreeMap::new(),
            prompt: String::new(),
            notes_max_bytes: None,
            turn_timeout: None,
            budget: None,
        }
    }
}

/// Why an `agent.toml` was refused; always names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent.toml is invalid: {0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    /// Parses and validates the text of an `agent.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| ConfigError(e.message().to_owned() + &field_hint(&e)))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as `agent.toml` text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("AgentConfig always serializes")
    }

    /// Checks every field, naming the first one that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.model;
        if !is_model_name(m) {
            return Err(ConfigError(format!(
                "field `model`: {m:?} is not a model name (letters, digits, '-', '.', '_' only)"
            )));
        }
        for (i, t) in self.allowed_tools.iter().enumerate() {
            validate_tool(t)
                .map_err(|why| ConfigError(format!("field `allowed_tools[{i}]`: {t:?} {why}")))?;
        }
        for (i, r) in self.allowed_recipients.iter().enumerate() {
            Mailbox::parse(r)
                .map_err(|e| ConfigError(format!("field `allowed_recipients[{i}]`: {e}")))?;
        }
        for k in self.env.keys() {
            if k.is_empty()
                || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || k.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(ConfigError(format!(
                    "field `env`: {k:?} is not an environment variable name"
                )));
            }
        }
        if let Some(t) = &self.turn_timeout {
            t.seconds()
                .map_err(|why| ConfigError(format!("field `turn_timeout`: {why}")))?;
        }
        if let Some(b) = &self.budget {
            b.validate("budget")?;
        }
        for (name, s) in &self.mcp_servers {
            if name == crate::tools::SERVER {
                return Err(ConfigError(
                    "field `mcp_servers`: the name \"hyperhive\" is the hive's own server".into(),
                ));
            }
            if s.command.trim().is_empty() {
                return Err(ConfigError(format!(
                    "field `mcp_servers.{name}.command` is empty"
                )));
            }
        }
        Ok(())
    }

    /// True when this agent may send to `to` (the operator and system are always reachable).
    pub fn may_send_to(&self, to: &Mailbox) -> bool {
        match to {
            Mailbox::Operator | Mailbox::System => true,
            Mailbox::Agent(n) => {
                self.allowed_recipients.is_empty()
                    || self.allowed_recipients.iter().any(|r| r == n.as_str())
            }
        }
    }

    /// The `--allowedTools` list: the hive's tools (the manager's too, for
    /// the manager), then the config's.
    pub fn allowed_tools_arg(&self, manager: bool) -> String {
        let mut all: Vec<&str> = Tool::granted(manager).map(Tool::qualified).collect();
        all.extend(self.allowed_tools.iter().map(String::as_str));
        all.join(",")
    }
}

fn field_hint(e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!(" (at byte {})", span.start),
        None => String::new(),
    }
}

/// Checks one `--allowedTools` entry: `Name` or `Name(pattern)`.
fn validate_tool(t: &str) -> Result<(), &'static str> {
    let (name, rest) = match t.find('(') {
        Some(i) => (&t[..i], Some(&t[i..])),
        None => (t, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("is not a tool name such as Read or Bash(git *)");
    }
    if let Some(rest) = rest {
        if !rest.ends_with(')') || rest.len() < 3 {
            return Err("has an unclosed or empty pattern: write Bash(git *)");
        }
        // claude splits a list on spaces between entries: `Bash(git log)
        // Bash(*)` would be two, the second granting every command.
        let mut depth = 0u32;
        for c in rest[1..rest.len() - 1].chars() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    return Err(
                        "closes its pattern before its end: give each tool as its own entry",
                    );
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
        if depth != 0 {
            return Err("has a parenthesis its pattern does not close");
        }
    }
    if t.contains(',') {
        return Err("contains a comma: give each tool as its own entry");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = AgentConfig::from_toml(
            r#"
model = "sonnet"
allowed_tools = ["Read", "Bash(git *)"]
allowed_recipients = ["bob", "operator"]
prompt = "be kind"
[env]
FOO = "1"
[mcp_servers.fs]
command = "fs-mcp"
args = ["--root", "/state"]
"#,
        )
        .unwrap();
        assert_eq!(c.model, "sonnet");
        assert_eq!(c.allowed_tools, ["Read", "Bash(git *)"]);
        assert!(c.may_send_to(&Mailbox::parse("bob").unwrap()));
        assert!(!c.may_send_to(&Mailbox::parse("carol").unwrap()));
        assert!(c.allowed_tools_arg(false).ends_with(",Read,Bash(git *)"));
    }

    #[test]
    fn the_allowed_tools_start_with_the_hives() {
        let c = AgentConfig {
            allowed_tools: vec!["Read".into()],
            ..AgentConfig::default()
        };
        let agent = c.allowed_tools_arg(false);
        assert!(agent.starts_with("mcp__hyperhive__send,"), "{agent}");
        assert!(agent.ends_with(",mcp__hyperhive__nap,Read"), "{agent}");
        assert!(!agent.contains("ask_operator"), "{agent}");
        let manager = c.allowed_tools_arg(true);
        assert!(
            manager.contains(",mcp__hyperhive__ask_operator,"),
            "{manager}"
        );
        assert!(manager.ends_with(",Read"), "{manager}");
    }

    #[test]
    fn claude_models_are_aliases_and_ids() {
        assert!(is_claude_model("haiku") && is_claude_model("sonnet[1m]"));
        assert!(is_claude_model("claude-sonnet-4-5"));
        assert!(!is_claude_model("sonet") && !is_claude_model("claude-"));
        assert!(!is_claude_model("gpt-4"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = AgentConfig::from_toml("allowed_tools = [\"Bash(git *\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowed_tools[0]"), "{e}");
        // One entry that claude would split into two, the second granting every command.
        for smuggled in ["Bash(git log) Bash(*)", "Bash(x)Read(", "Bash(a (b)"] {
            let e = AgentConfig::from_toml(&format!("allowed_tools = [{smuggled:?}]"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("allowed_tools[0]"), "{smuggled}: {e}");
        }
        AgentConfig::from_toml(r#"allowed_tools = ["Bash(echo $(date))", "Bash(git log *)"]"#)
            .unwrap();
        let e = AgentConfig::from_toml("allowed_recipients = [\"../x\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowed_recipients[0]"), "{e}");
        let e = AgentConfig::from_toml("model = 3").unwrap_err().to_string();
        assert!(e.contains("model") || e.contains("string"), "{e}");
        let e = AgentConfig::from_toml("modle = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("modle"), "{e}");
    }

    #[test]
    fn turn_timeout_takes_seconds_or_units() {
        let secs = |t: &str| {
            AgentConfig::from_toml(&format!("turn_timeout = {t}"))
                .map(|c| c.turn_timeout.unwrap().seconds().unwrap())
        };
        assert_eq!(secs("90"), Ok(90));
        assert_eq!(secs("\"90s\""), Ok(90));
        assert_eq!(secs("\"45m\""), Ok(2700));
        assert_eq!(secs("\"2h\""), Ok(7200));
        for bad in ["0", "\"10d\"", "\"soon\"", "\"9999h\""] {
            let e = secs(bad).unwrap_err().to_string();
            assert!(e.contains("turn_timeout"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_budget_takes_dollars_tokens_or_both() {
        let b =
            |t: &str| AgentConfig::from_toml(&format!("budget = {t}")).map(|c| c.budget.unwrap());
        let both = b("{ usd_per_day = 5.0, tokens_per_day = 2_000_000 }").unwrap();
        assert_eq!(
            (both.usd_per_day, both.tokens()),
            (Some(5.0), Some(2_000_000))
        );
        assert_eq!(b("{ usd_per_day = 2 }").unwrap().usd_per_day, Some(2.0));
        assert_eq!(b("{ tokens_per_day = 10 }").unwrap().usd_per_day, None);
        for (bad, field) in [
            ("{ usd_per_day = -1.0 }", "budget.usd_per_day"),
            ("{ usd_per_day = 0.0 }", "budget.usd_per_day"),
            ("{ usd_per_day = nan }", "budget.usd_per_day"),
            ("{ usd_per_day = inf }", "budget.usd_per_day"),
            ("{ tokens_per_day = -5 }", "budget.tokens_per_day"),
            ("{ tokens_per_day = 0 }", "budget.tokens_per_day"),
            ("{}", "budget"),
            ("{ usd = 5.0 }", "usd"),
        ] {
            let e = b(bad).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
        let c = AgentConfig::from_toml("budget = { tokens_per_day = 7 }").unwrap();
        assert_eq!(
            AgentConfig::from_toml(&c.to_toml()).unwrap(),
            c,
            "round trip"
        );
        assert_eq!(
            Budget::from_toml_inline("{ usd_per_day = 50.0 }")
                .unwrap()
                .usd_per_day,
            Some(50.0)
        );
        let e = Budget::from_toml_inline("{ usd_per_day = -5.0 }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("budget.usd_per_day"), "{e}");
        let e = Budget::from_toml_inline("{ dollars = 5.0 }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dollars"), "{e}");
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(AgentConfig::from_toml("").unwrap(), AgentConfig::default());
        let c = AgentConfig::default();
        assert_eq!(AgentConfig::from_toml(&c.to_toml()).unwrap(), c);
    }
}
