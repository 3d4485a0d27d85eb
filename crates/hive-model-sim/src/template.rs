//! `{{name}}` placeholders in reply text and tool input.
//!
//! Templates are checked when a script loads (unknown names are script errors) and
//! rendered per request, so a typo fails loudly at start instead of mid-test.
//! Besides [`NAMES`], a rule's template may use the named groups of its own
//! regex trigger (`(?P<peer>\w+)` gives `{{peer}}`).

use serde_json::Value;

/// The names a template may use.
pub const NAMES: &[&str] = &[
    "sender",
    "body",
    "message_id",
    "model",
    "text",
    "tool_result",
];

/// Values bound to the placeholders for one reply.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// `from` of the inbox message being answered (empty when there is none).
    pub sender: String,
    /// Body of that inbox message.
    pub body: String,
    /// `id` of that inbox message.
    pub message_id: String,
    /// Model name of the request.
    pub model: String,
    /// The user text that started the turn.
    pub text: String,
    /// Text of the newest tool results (empty on a user-text step).
    pub tool_result: String,
    /// Named groups of the rule's regex over the text it matched.
    pub captures: Vec<(String, String)>,
}

impl Vars {
    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "sender" => &self.sender,
            "body" => &self.body,
            "message_id" => &self.message_id,
            "model" => &self.model,
            "text" => &self.text,
            "tool_result" => &self.tool_result,
            _ => {
                return self
                    .captures
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str());
            }
        })
    }
}

/// One piece of a template: literal text or a placeholder name.
enum Piece<'a> {
    Literal(&'a str),
    Var(&'a str),
}

/// Splits a template into pieces; `{{` without a closing `}}` stays literal.
fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        if open > 0 {
            out.push(Piece::Literal(&rest[..open]));
        }
        out.push(Piece::Var(rest[open + 2..open + 2 + close].trim()));
        rest = &rest[open + 2 + close + 2..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    out
}

/// Checks that every placeholder in `template` is a known name or one of `groups`.
pub fn validate(template: &str, groups: &[String]) -> Result<(), String> {
    for piece in pieces(template) {
        if let Piece::Var(name) = piece
            && !NAMES.contains(&name)
            && !groups.iter().any(|g| g == name)
        {
            return Err(format!(
                "unknown placeholder `{{{{{name}}}}}`; use one of {}",
                NAMES
                    .iter()
                    .copied()
                    .chain(groups.iter().map(String::as_str))
                    .map(|n| format!("{{{{{n}}}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(())
}

/// Checks every string (keys excluded) inside a JSON value.
pub fn validate_json(value: &Value, groups: &[String]) -> Result<(), String> {
    match value {
        Value::String(s) => validate(s, groups),
        Value::Array(items) => items.iter().try_for_each(|v| validate_json(v, groups)),
        Value::Object(map) => map.values().try_for_each(|v| validate_json(v, groups)),
        _ => Ok(()),
    }
}

/// Replaces the placeholders of `template` with `vars`; unknown names render empty.
pub fn render(template: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(template.len());
    for piece in pieces(template) {
        match piece {
            Piece::Literal(text) => out.push_str(text),
            Piece::Var(name) => out.push_str(vars.get(name).unwrap_or_default()),
        }
    }
    out
}

/// Renders every string inside a JSON value; substituting into parsed strings
/// (not into JSON text) keeps quotes in a message body from breaking the input.
pub fn render_json(value: &Value, vars: &Vars) -> Value {
    match value {
        Value::String(s) => Value::String(render(s, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|v| render_json(v, vars)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), render_json(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Vars {
        Vars {
            sender: "alice".into(),
            body: "say \"hi\"".into(),
            model: "claude-haiku".into(),
            ..Vars::default()
        }
    }

    #[test]
    fn renders_known_names_with_and_without_spaces() {
        assert_eq!(
            render("to {{sender}} via {{ model }}", &vars()),
            "to alice via claude-haiku"
        );
    }

    #[test]
    fn unclosed_braces_stay_literal() {
        assert_eq!(render("a {{sender", &vars()), "a {{sender");
        assert_eq!(render("{{sender}}}", &vars()), "alice}");
    }

    #[test]
    fn validate_rejects_unknown_names() {
        assert!(validate("{{sender}} {{body}}", &[]).is_ok());
        let err = validate("hi {{senderr}}", &[]).unwrap_err();
        assert!(err.contains("{{senderr}}"), "{err}");
        assert!(validate_json(&json!({"a": ["{{nope}}"]}), &[]).is_err());
        assert!(validate_json(&json!({"a": ["{{peer}}"]}), &["peer".into()]).is_ok());
    }

    #[test]
    fn renders_regex_groups() {
        let v = Vars {
            captures: vec![("peer".into(), "bob".into())],
            ..vars()
        };
        assert_eq!(
            render("to {{peer}} from {{sender}}", &v),
            "to bob from alice"
        );
    }

    #[test]
    fn json_rendering_keeps_quotes_inside_strings() {
        let input = json!({"to": "{{sender}}", "body": "ack: {{body}}", "n": 1});
        let out = render_json(&input, &vars());
        assert_eq!(
            out,
            json!({"to": "alice", "body": "ack: say \"hi\"", "n": 1})
        );
    }
}
