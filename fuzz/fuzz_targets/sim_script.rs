//! hive-model-sim: a script as `hive_model_sim::Script::parse` reads it.
//!
//! Never a panic; a script that loads keeps its source, answers something
//! (`max_steps` ≥ 1, non-empty replies), gives every rule at least one
//! block, and renders every template it accepted (with its regex's named
//! groups bound); a template without a placeholder renders as itself.
#![no_main]

use hive_model_sim::Script;
use hive_model_sim::script::BlockTemplate;
use hive_model_sim::template::{Vars, render, render_json};
use libfuzzer_sys::fuzz_target;

fn check_template(text: &str, vars: &Vars) {
    let out = render(text, vars);
    if !text.contains("{{") {
        assert_eq!(out, text);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let script = match Script::parse(source) {
        Ok(s) => s,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(script.source, source);
    assert!(script.max_steps >= 1);
    let vars = Vars {
        sender: "alice".into(),
        body: "say \"{{body}}\"".into(),
        message_id: "7".into(),
        model: "claude-haiku".into(),
        text: "<message id=\"7\" from=\"alice\">hi</message>".into(),
        tool_result: "ok".into(),
        captures: Vec::new(),
    };
    for text in [&script.default_reply, &script.compact_reply] {
        assert!(!text.trim().is_empty());
        check_template(text, &vars);
    }
    for rule in &script.rules {
        assert!(!rule.reply.is_empty(), "{}", rule.label);
        // A rule's templates may name its regex's groups: bind them as a match would.
        let vars = Vars {
            captures: rule.trigger.pattern().captures(&vars.text),
            ..vars.clone()
        };
        for block in &rule.reply {
            match block {
                BlockTemplate::Text { text, .. } => check_template(text, &vars),
                BlockTemplate::ToolUse { name, input, .. } => {
                    assert!(!name.is_empty() && !name.contains(char::is_whitespace));
                    assert!(render_json(input, &vars).is_object());
                }
            }
        }
    }
});
