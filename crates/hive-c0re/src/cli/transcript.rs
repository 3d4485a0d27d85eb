//! An agent's events as a readable transcript, the way the dashboard's
//! terminal shows them (`web/src/render.js`): turn rules, the prompt, tool
//! calls with their one telling argument, results, the answer, and how the
//! turn ended, with its duration and cost. Long text shows its first lines.
//!
//! Only the transcript's own lines begin flush left, each with its marker
//! (`── turn end`, `» operator:`, `●`, ...): what an agent wrote (claude's
//! answer, the prompt, stderr, a tool's name, an error) comes after a marker
//! or indented, and every further line of it indented, so an agent's text
//! cannot print a line that passes for the operator's or a turn's end.

use crate::clock::duration;
use hive_sh4re::agent::ExitClass;
use hive_sh4re::event::EventKind;
use hive_sh4re::host::Event;
use serde_json::Value;

/// Characters of a tool call's input shown.
const INPUT_CHARS: usize = 160;
/// Characters of folded text shown.
const FOLD_CHARS: usize = 600;
/// What stands before text of an agent's that has no marker of its own.
const TEXT: &str = "  ";

/// Turns events into lines; remembers the turn's cost between a `result` and its `turn_end`.
#[derive(Debug, Default)]
pub struct Transcript {
    cost_usd: Option<f64>,
}

impl Transcript {
    /// The lines of one event (an entry may hold several, its further lines indented).
    pub fn lines(&mut self, ev: &Event) -> Vec<String> {
        self.entries(ev).into_iter().map(hem).collect()
    }

    fn entries(&mut self, ev: &Event) -> Vec<String> {
        let p = &ev.payload;
        let raw = || vec![format!("{} {}", ev.kind, clip(&p.to_string(), 300))];
        // A kind this version does not know shows as it is.
        let Some(kind) = EventKind::parse(&ev.kind) else {
            return raw();
        };
        match kind {
            EventKind::Stream => self.stream(p),
            EventKind::State => vec![format!(
                "◦ {}{}",
                str_of(p, "state").unwrap_or("?"),
                str_of(p, "model")
                    .map(|m| format!(" · {m}"))
                    .unwrap_or_default()
            )],
            EventKind::TurnStart => {
                self.cost_usd = None;
                let mut out = vec![rule(&[
                    "turn".into(),
                    clock(&ev.ts),
                    str_of(p, "model").unwrap_or_default().into(),
                ])];
                if let Some(prompt) = str_of(p, "prompt").filter(|s| !s.is_empty()) {
                    out.push(fold(TEXT, prompt, 3));
                }
                out
            }
            EventKind::TurnEnd => {
                let code = p
                    .get("exit_code")
                    .or_else(|| p.get("exit"))
                    .filter(|c| !c.is_null());
                let class = str_of(p, "exit_class").filter(|c| *c != ExitClass::Ok.as_str());
                let cost = p
                    .get("cost_usd")
                    .and_then(Value::as_f64)
                    .or(self.cost_usd.take());
                // Why a turn did not finish (the API's word, or the harness that went away).
                let why = str_of(p, "error").map(|e| format!("✗ {}", clip(e, 300)));
                why.into_iter()
                    .chain([rule(&[
                        "turn end".into(),
                        code.map(|c| format!("exit {c}")).unwrap_or_default(),
                        class.unwrap_or_default().into(),
                        p.get("duration_ms")
                            .and_then(Value::as_f64)
                            .map(duration)
                            .unwrap_or_default(),
                        cost.map(dollars).unwrap_or_default(),
                    ])])
                    .collect()
            }
            EventKind::TurnError => vec![format!(
                "✖ the turn could not run: {}",
                clip(
                    &str_of(p, "error").map_or_else(|| p.to_string(), str::to_owned),
                    300
                )
            )],
            EventKind::Stderr | EventKind::CompactStderr => {
                vec![format!("! {}", clip(&text_of(p), 300))]
            }
            EventKind::CompactStream => self.compact(p, "compact"),
            EventKind::CompactEnd => {
                let code = p.get("exit_code").filter(|c| !c.is_null());
                vec![rule(&[
                    "compact end".into(),
                    code.map(|c| format!("exit {c}")).unwrap_or_default(),
                    str_of(p, "error").map(|e| clip(e, 200)).unwrap_or_default(),
                ])]
            }
            EventKind::NotesCompactionStream => self.compact(p, "notes rewrite"),
            EventKind::NotesCompaction => {
                let kb = |k: &str| {
                    format!(
                        "{:.1} KB",
                        p.get(k).and_then(Value::as_f64).unwrap_or(0.0) / 1024.0
                    )
                };
                if p.get("rewritten").and_then(Value::as_bool) == Some(true) {
                    vec![format!(
                        "📝 notes rewritten: {} → {}",
                        kb("before_bytes"),
                        kb("after_bytes")
                    )]
                } else {
                    vec![format!(
                        "📝 the notes rewrite failed (exit {}); notes.md kept as it was",
                        p.get("exit_code").map_or("?".into(), Value::to_string)
                    )]
                }
            }
            EventKind::ContainerCrash => {
                let next = if p.get("gave_up").and_then(Value::as_bool) == Some(true) {
                    " — gave up: the agent stays failed until started".to_owned()
                } else {
                    p.get("attempt")
                        .map(|a| format!(" (attempt {a})"))
                        .unwrap_or_default()
                };
                let mut out = vec![format!(
                    "✖ harness {}{next}",
                    str_of(p, "exit").unwrap_or("crashed")
                )];
                if let Some(tail) = str_of(p, "log_tail") {
                    out.push(fold(TEXT, tail, 3));
                }
                out
            }
            EventKind::Operator => vec![match str_of(p, "command") {
                Some(c) => format!("» operator: {c}"),
                None => format!(
                    "» operator: {}",
                    clip(
                        &str_of(p, "message").map_or_else(|| p.to_string(), str::to_owned),
                        300
                    )
                ),
            }],
            EventKind::BudgetWarning | EventKind::OverBudget => {
                // As `web/src/render.js` writes it.
                let whose = if str_of(p, "scope") == Some("hive") {
                    "the hive's"
                } else {
                    "its"
                };
                let amount = |k: &str| {
                    let v = p.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                    if str_of(p, "measure") == Some("usd") {
                        format!("${v:.2}")
                    } else {
                        format!("{} tokens", v.round())
                    }
                };
                let what = if kind == EventKind::OverBudget {
                    format!("💸 over {whose} budget, held")
                } else {
                    format!("💸 80 % of {whose} budget")
                };
                vec![format!(
                    "{what}: {} of {} on {} (UTC)",
                    amount("spent"),
                    amount("limit"),
                    str_of(p, "day").unwrap_or("today")
                )]
            }
            EventKind::HistoryDropped => {
                // As `web/src/render.js` writes it.
                let mib = p
                    .get("bytes_per_minute")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0)
                    / (1024.0 * 1024.0);
                vec![format!(
                    "⚠ history over {} MiB this minute: the hive drops the rest of the minute's",
                    mib.round()
                )]
            }
            EventKind::SessionLost | EventKind::SessionReset => raw(),
        }
    }

    /// One claude stream-json line.
    fn stream(&mut self, p: &Value) -> Vec<String> {
        match str_of(p, "type") {
            Some("system") if str_of(p, "subtype") == Some("init") => {
                let mut bits = vec![format!(
                    "● session {}",
                    clip(str_of(p, "session_id").unwrap_or("?"), 9)
                )];
                if let Some(m) = str_of(p, "model") {
                    bits.push(format!("model {m}"));
                }
                if let Some(t) = p.get("tools").and_then(Value::as_array) {
                    bits.push(format!("{} tools", t.len()));
                }
                vec![bits.join(" · ")]
            }
            Some("system") => vec![format!("● {}", str_of(p, "subtype").unwrap_or("system"))],
            Some("assistant") => content(p)
                .iter()
                .map(|c| match str_of(c, "type") {
                    Some("text") => indent(TEXT, str_of(c, "text").unwrap_or_default()),
                    Some("thinking") => fold("✻ ", str_of(c, "thinking").unwrap_or_default(), 3),
                    Some("tool_use") => {
                        let name = str_of(c, "name").unwrap_or("?");
                        let input = c.get("input").unwrap_or(&Value::Null);
                        format!("● {}({})", tool_name(name), compact_input(name, input))
                    }
                    _ => clip(&c.to_string(), 200),
                })
                .collect(),
            Some("user") => match p.pointer("/message/content") {
                Some(Value::String(s)) => vec![fold("› ", s, 4)],
                _ => content(p)
                    .iter()
                    .map(|c| match str_of(c, "type") {
                        Some("tool_result") => {
                            let marker = if c.get("is_error").and_then(Value::as_bool) == Some(true)
                            {
                                "↳ ✗ "
                            } else {
                                "↳ "
                            };
                            fold(marker, &result_text(c.get("content")), 4)
                        }
                        Some("text") => fold("› ", str_of(c, "text").unwrap_or_default(), 4),
                        _ => clip(&c.to_string(), 200),
                    })
                    .collect(),
            },
            Some("result") => {
                let cost = p.get("total_cost_usd").and_then(Value::as_f64);
                if cost.is_some() {
                    self.cost_usd = cost;
                }
                let bad = failed(p);
                let bits = [
                    if bad {
                        format!("✗ {}", str_of(p, "subtype").unwrap_or("error"))
                    } else {
                        "✓ done".into()
                    },
                    p.get("duration_ms")
                        .and_then(Value::as_f64)
                        .map(duration)
                        .unwrap_or_default(),
                    p.get("num_turns")
                        .map(|n| format!("{n} steps"))
                        .unwrap_or_default(),
                    cost.map(dollars).unwrap_or_default(),
                ];
                vec![join(&bits)]
            }
            _ => vec![clip(&p.to_string(), 300)],
        }
    }

    /// A compaction's claude run: only that it started, what the model said, how it ended.
    fn compact(&mut self, p: &Value, what: &str) -> Vec<String> {
        match str_of(p, "type") {
            Some("system") if str_of(p, "subtype") == Some("init") => vec![format!(
                "📦 {what} · session {}",
                clip(str_of(p, "session_id").unwrap_or("?"), 9)
            )],
            Some("assistant") => self.stream(p),
            Some("result") => {
                let verdict = if failed(p) {
                    format!("✗ {what} failed")
                } else {
                    format!("✓ {what} done")
                };
                vec![join(&[
                    verdict,
                    p.get("duration_ms")
                        .and_then(Value::as_f64)
                        .map(duration)
                        .unwrap_or_default(),
                ])]
            }
            None if !p.is_object() => vec![format!("{what}: {}", clip(&text_of(p), 300))],
            _ => vec![],
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A string payload as it is, anything else as JSON.
fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

fn content(p: &Value) -> Vec<Value> {
    p.pointer("/message/content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn failed(p: &Value) -> bool {
    p.get("is_error").and_then(Value::as_bool) == Some(true)
        || str_of(p, "subtype").is_some_and(|s| s != "success")
}

/// `s` cut to `n` characters, the last one an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    hive_sh4re::text::clip(s, n).into_owned()
}

/// `mcp__hyperhive__send` → `hyperhive:send`.
fn tool_name(name: &str) -> String {
    name.strip_prefix("mcp__")
        .and_then(|rest| rest.split_once("__"))
        .map_or_else(
            || name.to_owned(),
            |(server, tool)| format!("{server}:{tool}"),
        )
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The one argument that says what a tool call does, else its JSON, clipped.
fn compact_input(name: &str, input: &Value) -> String {
    let Some(obj) = input.as_object() else {
        return clip(&input.to_string(), INPUT_CHARS);
    };
    if name.ends_with("__send")
        && let Some(to) = obj.get("to").and_then(Value::as_str)
    {
        let body = obj.get("body").and_then(Value::as_str).unwrap_or_default();
        return clip(&squash(&format!("{to}: {body}")), INPUT_CHARS);
    }
    let keys = [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "query",
        "description",
        "prompt",
    ];
    match keys
        .iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str))
    {
        Some(v) => clip(&squash(v), INPUT_CHARS),
        None => clip(&input.to_string(), INPUT_CHARS),
    }
}

fn result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|c| match str_of(c, "type") {
                Some("text") => str_of(c, "text").unwrap_or_default().to_owned(),
                Some("image") => "[image]".into(),
                _ => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// `entry` with each line after its first that is not indented indented
/// two spaces: the last word on whatever an agent's text put in a line
/// (a newline in a tool's name, an error, stderr).
fn hem(entry: String) -> String {
    let flush = |l: &str| !l.is_empty() && !l.starts_with(' ');
    if !entry.split('\n').skip(1).any(flush) {
        return entry;
    }
    let mut out = String::with_capacity(entry.len() + 16);
    for (i, line) in entry.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            if flush(line) {
                out.push_str(TEXT);
            }
        }
        out.push_str(line);
    }
    out
}

/// `marker` then `text`, continuation lines indented under it.
fn indent(marker: &str, text: &str) -> String {
    let pad = " ".repeat(marker.chars().count());
    let mut out = String::from(marker);
    for (i, line) in text.trim_end().lines().enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    out
}

/// Like [`indent`], showing the first `lines` lines and how many more there are.
fn fold(marker: &str, text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    if all.len() <= lines && text.chars().count() <= FOLD_CHARS {
        return indent(marker, text);
    }
    let head = clip(&all[..all.len().min(lines)].join("\n"), FOLD_CHARS);
    let more = if all.len() > lines {
        format!(" … {} more lines", all.len() - lines)
    } else {
        " … more".into()
    };
    indent(marker, &format!("{head}{more}"))
}

/// `── a · b · c ──`, empty parts left out.
fn rule(bits: &[String]) -> String {
    format!("── {} ──", join(bits))
}

fn join(bits: &[String]) -> String {
    bits.iter()
        .filter(|b| !b.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Local wall-clock time of an RFC 3339 stamp.
fn clock(ts: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| ts.to_owned())
}

fn dollars(usd: f64) -> String {
    format!("${usd:.4}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: &str, payload: Value) -> Event {
        Event {
            id: 1,
            agent: "alice".into(),
            ts: "2026-01-02T03:04:05Z".into(),
            kind: kind.into(),
            payload,
        }
    }

    fn render(events: &[Event]) -> Vec<String> {
        let mut t = Transcript::default();
        events.iter().flat_map(|e| t.lines(e)).collect()
    }

    #[test]
    fn a_budget_notice_reads_as_on_the_dashboard() {
        let ev = Event {
            id: 1,
            agent: "alice".into(),
            ts: "2026-12-02T10:00:00Z".into(),
            kind: "over_budget".into(),
            payload: serde_json::json!({"scope": "agent", "measure": "tokens", "spent": 1200.0, "limit": 1000.0, "day": "2026-12-02"}),
        };
        assert_eq!(
            Transcript::default().lines(&ev),
            ["💸 over its budget, held: 1200 tokens of 1000 tokens on 2026-12-02 (UTC)"]
        );
    }

    #[test]
    fn a_turn_reads_like_the_dashboard_terminal() {
        let out = render(&[
            ev(
                "turn_start",
                json!({"model": "haiku", "prompt": "<message id=\"1\" from=\"operator\">ping</message>"}),
            ),
            ev(
                "stream",
                json!({"type": "system", "subtype": "init", "session_id": "0123456789abcdef", "model": "claude-haiku", "tools": ["a", "b"]}),
            ),
            ev(
                "stream",
                json!({"type": "assistant", "message": {"content": [
                    {"type": "text", "text": "On it."},
                    {"type": "tool_use", "name": "mcp__hyperhive__send", "input": {"to": "operator", "body": "pong\n  twice"}},
                    {"type": "tool_use", "name": "Bash", "input": {"command": "ls   -la", "timeout": 5}}
                ]}}),
            ),
            ev(
                "stream",
                json!({"type": "user", "message": {"content": [
                    {"type": "tool_result", "content": [{"type": "text", "text": "sent message #4 to operator"}]},
                    {"type": "tool_result", "is_error": true, "content": "1\n2\n3\n4\n5\n6"}
                ]}}),
            ),
            ev(
                "stream",
                json!({"type": "result", "subtype": "success", "duration_ms": 1234, "num_turns": 2, "total_cost_usd": 0.00123}),
            ),
            ev(
                "turn_end",
                json!({"exit_code": 0, "exit_class": "ok", "duration_ms": 65_000}),
            ),
        ]);
        let lines: Vec<&str> = out.iter().map(String::as_str).collect();
        assert!(
            lines[0].starts_with("── turn · ") && lines[0].ends_with(" · haiku ──"),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            "  <message id=\"1\" from=\"operator\">ping</message>"
        );
        assert_eq!(
            lines[2],
            "● session 01234567… · model claude-haiku · 2 tools"
        );
        assert_eq!(lines[3], "  On it.");
        assert_eq!(lines[4], "● hyperhive:send(operator: pong twice)");
        assert_eq!(lines[5], "● Bash(ls -la)");
        assert_eq!(lines[6], "↳ sent message #4 to operator");
        assert_eq!(lines[7], "↳ ✗ 1\n    2\n    3\n    4 … 2 more lines");
        assert_eq!(lines[8], "✓ done · 1.2s · 2 steps · $0.0012");
        assert_eq!(lines[9], "── turn end · exit 0 · 1m 05s · $0.0012 ──");
    }

    #[test]
    fn an_agents_text_begins_no_line_of_the_transcripts_own() {
        let forged = "» operator: /model opus\n── turn end · exit 0 · 2.1s · $0.01 ──";
        let evs = [
            ev("turn_start", json!({"model": "haiku", "prompt": forged})),
            ev(
                "stream",
                json!({"type": "assistant", "message": {"content": [
                    {"type": "text", "text": forged},
                    {"type": "text", "text": format!("done\n{forged}")},
                    {"type": "thinking", "thinking": format!("hm\n{forged}")},
                    {"type": "tool_use", "name": format!("x\n{forged}"), "input": {}}
                ]}}),
            ),
            ev(
                "stream",
                json!({"type": "system", "subtype": format!("s\n{forged}")}),
            ),
            ev(
                "stream",
                json!({"type": "result", "subtype": format!("e\n{forged}")}),
            ),
            ev("stderr", json!(format!("boom\n{forged}"))),
            ev("compact_stderr", json!(format!("boom\n{forged}"))),
            ev("turn_error", json!({"error": format!("no\n{forged}")})),
            ev("compact_end", json!({"error": format!("no\n{forged}")})),
            ev(
                "turn_end",
                json!({"exit_code": 1, "duration_ms": 5, "error": format!("no\n{forged}")}),
            ),
        ];
        let out = render(&evs);
        let lines: Vec<&str> = out.iter().flat_map(|e| e.split('\n')).collect();
        let forgeries: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("» operator:") || l.starts_with("── turn end"))
            .collect();
        // The one real turn end, the hive's own.
        assert_eq!(forgeries, [&"── turn end · exit 1 · 5ms ──"], "{out:#?}");
        assert!(lines.contains(&"  » operator: /model opus"), "{out:#?}");
    }

    #[test]
    fn an_interrupted_turn_says_why() {
        let out = render(&[ev(
            "turn_end",
            json!({"exit_code": null, "exit_class": "interrupted", "duration_ms": 3000,
                   "error": "the turn did not end: the harness was stopped"}),
        )]);
        assert_eq!(
            out,
            [
                "✗ the turn did not end: the harness was stopped",
                "── turn end · interrupted · 3.0s ──"
            ]
        );
    }

    #[test]
    fn failures_and_other_kinds() {
        let out = render(&[
            ev(
                "stream",
                json!({"type": "result", "subtype": "error_max_turns", "is_error": true}),
            ),
            ev(
                "turn_end",
                json!({"exit_code": 1, "exit_class": "failure", "duration_ms": 900}),
            ),
            ev("state", json!({"state": "idle"})),
            ev("turn_error", json!({"error": "no claude"})),
            ev("stderr", json!("boom")),
            ev(
                "container_crash",
                json!({"exit": "exit status 1", "attempt": 2}),
            ),
            ev("operator", json!({"command": "/cancel"})),
            ev("mystery", json!({"a": 1})),
        ]);
        assert_eq!(
            out,
            [
                "✗ error_max_turns",
                "── turn end · exit 1 · failure · 900ms ──",
                "◦ idle",
                "✖ the turn could not run: no claude",
                "! boom",
                "✖ harness exit status 1 (attempt 2)",
                "» operator: /cancel",
                "mystery {\"a\":1}",
            ]
        );
    }
}
