//! How the CLI prints rows: aligned tables for people, JSON lines for scripts.

use std::io::Write;

use hive_sh4re::host::{
    AgentStatusRow, Approval, Message, Question, Schedule, SecretRow, StatsSummary,
};
use hive_sh4re::notification::{Notification, WebhookStatus};

/// Writes one line to stdout (what `out!` expands to). A reader that went
/// away (`hive-c0re status | head -2`) ends the process quietly with success:
/// it had what it wanted. Any other failure to write is reported.
pub fn line(args: std::fmt::Arguments<'_>) {
    let text = args.to_string();
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_all(printable(&text).as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
    {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(super::exit::DONE);
        }
        eprintln!("hive-c0re: could not write the output: {e}");
        std::process::exit(super::exit::REFUSED);
    }
}

/// `s` with each character that [shows nothing](hive_sh4re::text::shows_nothing)
/// but newline and tab written as `\uXXXX` (JSON's own escape, a surrogate
/// pair past U+FFFF, so a JSON line reads the same): what agents wrote (a
/// message, claude's output, a question) reaches the operator's terminal,
/// and an escape sequence in it could move the cursor over what was
/// printed, retitle the window or set the clipboard to a command to paste;
/// a bidi override or a zero-width character makes it read otherwise than
/// it is. (`hive-c0re shell` keeps what a terminal program needs, colours
/// and the cursor's moves, and drops the rest:
/// [`hive_sh4re::text::terminal`].)
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = hive_sh4re::text::shows_nothing;
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Prints rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(one_line(c).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.iter().map(|c| one_line(c)).collect());
    }
}

/// A table cell on one line: a cell's own line breaks (a manager's
/// description) would print lines that pass for rows of the table.
fn one_line(cell: &str) -> String {
    cell.replace('\n', " ⏎ ")
}

/// Prints one JSON object per line.
pub fn json_lines<T: serde::Serialize>(items: &[T]) {
    for i in items {
        out!("{}", serde_json::to_string(i).unwrap_or_default());
    }
}

/// The free-space alarm, above the status table.
pub fn space_alarm(a: &hive_sh4re::host::SpaceAlarm) {
    out!("DISK NEARLY FULL since {}: {}", a.since, a.message);
    out!("");
}

/// The status table.
pub fn status(rows: &[AgentStatusRow]) {
    if rows.is_empty() {
        out!("no agents yet: create one with hive-c0re spawn NAME");
        return;
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let running = match (r.health.as_deref(), r.restarts) {
                (Some(h), n) if n > 0 => format!("{h} ({n} restarts)"),
                (Some(h), _) => h.to_owned(),
                _ if r.failed => "failed".to_owned(),
                _ if r.running => "running".to_owned(),
                _ => "stopped".to_owned(),
            };
            let mut flags = vec![];
            if r.paused {
                flags.push("paused");
            }
            if r.needs_login {
                flags.push("needs-login");
            }
            if !r.isolated {
                flags.push("not-isolated");
            }
            // `over_budget` reads as two words, as the dashboard shows it.
            let shown = r.state.replace('_', " ");
            let state = match (&r.state_detail, r.question) {
                // Its turn is blocked on the operator, not on the model.
                (_, Some(q)) if r.state == "thinking" => format!("waiting on you · question #{q}"),
                (Some(d), _) => format!("{shown} · {d} · {}", age(&r.state_since)),
                (None, _) if r.queue_position.is_some() => {
                    format!("{shown} {}", age(&r.state_since))
                }
                (None, _) => shown,
            };
            vec![
                r.name.clone(),
                running,
                state,
                r.active_model.clone(),
                r.inbox_depth.to_string(),
                r.deployed_sha.clone().unwrap_or_else(|| "-".into()),
                r.last_turn_at.clone().unwrap_or_else(|| "-".into()),
                format!(
                    "{}{}",
                    r.runtime,
                    if flags.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", flags.join(", "))
                    }
                ),
            ]
        })
        .collect();
    let mut header = vec![
        "NAME",
        "RUNNING",
        "STATE",
        "MODEL",
        "INBOX",
        "CONFIG",
        "LAST TURN",
        "RUNTIME",
    ];
    let mut body = body;
    // One node says nothing a row needs; with several, each row says where it lives.
    let nodes: std::collections::BTreeSet<Option<&str>> =
        rows.iter().map(|r| r.node.as_deref()).collect();
    if nodes.len() > 1 {
        header.insert(1, "NODE");
        for (cells, r) in body.iter_mut().zip(rows) {
            cells.insert(1, r.node.clone().unwrap_or_else(|| "-".into()));
        }
    }
    table(&header, &body);
}

/// The hive's nodes: name, address, agents, last heartbeat and whether alive.
pub fn nodes(rows: &[hive_sh4re::host::NodeRow]) {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                if n.alive { "alive" } else { "down" }.to_owned(),
                n.agents.to_string(),
                format!("{} ({} ago)", n.last_heartbeat, age(&n.last_heartbeat)),
                if n.address.is_empty() {
                    "-".to_owned()
                } else {
                    n.address.clone()
                },
            ]
        })
        .collect();
    table(
        &["NODE", "ALIVE", "AGENTS", "LAST HEARTBEAT", "ADDRESS"],
        &body,
    );
}

/// Today's spend against the budgets: the hive's row first (`(hive)`).
pub fn budgets(rows: &[hive_sh4re::host::BudgetRow]) {
    use hive_sh4re::host::BudgetSource;
    let Some(day) = rows.first().map(|r| r.day.clone()) else {
        return;
    };
    out!("spend today ({day} UTC):");
    let limit = |l: Option<String>| l.unwrap_or_else(|| "-".into());
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.agent.clone().unwrap_or_else(|| "(hive)".into()),
                format!("${:.4}", r.spent_usd),
                limit(r.usd_per_day.map(|u| format!("${u:.2}"))),
                r.spent_tokens.to_string(),
                limit(r.tokens_per_day.map(|t| t.to_string())),
                if r.usd_per_day.is_some() || r.tokens_per_day.is_some() {
                    format!("{:.0}%", r.fraction * 100.0)
                } else {
                    "-".into()
                },
                match r.source {
                    BudgetSource::None => "none",
                    BudgetSource::Config => "config",
                    BudgetSource::Operator => "operator (today)",
                    BudgetSource::Lifted => "lifted (today)",
                }
                .into(),
                if r.over {
                    "OVER BUDGET".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    table(
        &[
            "BUDGET",
            "SPENT",
            "USD/DAY",
            "TOKENS",
            "TOKENS/DAY",
            "USED",
            "FROM",
            "",
        ],
        &body,
    );
}

/// How long ago an RFC 3339 time was (`12s`, `5m`, `2h`), `-` when unreadable.
fn age(since: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(since) else {
        return "-".into();
    };
    let s = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

/// The hive-wide API backoff, above the status table.
pub fn api_backoff(b: &hive_sh4re::host::ApiBackoff) {
    out!(
        "the model API fails: the hive backs off since {} ({}); next try {}{}",
        b.since,
        b.last_error,
        b.next_try,
        b.probe
            .as_ref()
            .map(|p| format!(", probing with {p}"))
            .unwrap_or_default()
    );
}

/// Messages as people read them: a line each, a body's further lines
/// indented under it, so none can pass for another message's (`--json`
/// keeps the body as it is).
pub fn messages(msgs: &[Message]) {
    for m in msgs {
        out!(
            "#{} {} {} -> {}: {}",
            m.id,
            m.sent_at,
            m.from,
            m.to,
            hanging(&m.body)
        );
    }
}

/// `text` with each line after its first indented two spaces: what an agent
/// wrote, printed after a line's own start, can then begin no line of its own.
fn hanging(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\n') {
        std::borrow::Cow::Owned(text.replace('\n', "\n  "))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The approvals table.
pub fn approvals(items: &[Approval]) {
    if items.is_empty() {
        out!("no approvals");
        return;
    }
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.status.to_string(),
                a.kind.to_string(),
                a.agent.clone(),
                a.commit_ref.chars().take(12).collect(),
                a.requested_at.clone(),
                a.description.clone().unwrap_or_default(),
                a.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    // The requester's words and the decision's note are apart: a deny reason
    // read as the manager's description misleads.
    table(
        &[
            "ID",
            "STATUS",
            "KIND",
            "AGENT",
            "COMMIT",
            "REQUESTED",
            "DESCRIPTION",
            "NOTE",
        ],
        &body,
    );
}

/// The questions table.
/// What waits on the operator (the dashboard's "needs you" strip).
pub fn needs(items: &[hive_sh4re::host::NeedItem]) {
    if items.is_empty() {
        out!("nothing waits on you");
        return;
    }
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                i.kind.clone(),
                i.agent.clone(),
                i.id.map(|id| format!("#{id}")).unwrap_or_default(),
                i.deadline.clone().unwrap_or_default(),
                i.text.clone(),
            ]
        })
        .collect();
    table(&["KIND", "AGENT", "ID", "DEADLINE", "WHAT"], &body);
}

pub fn questions(items: &[Question]) {
    if items.is_empty() {
        out!("no questions");
        return;
    }
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|q| {
            vec![
                q.id.to_string(),
                q.status.to_string(),
                q.agent.clone(),
                q.deadline.clone(),
                q.question.clone(),
                if q.options.is_empty() {
                    String::new()
                } else {
                    q.options.join(" | ")
                },
                q.answer.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATUS", "FROM", "DEADLINE", "QUESTION", "OPTIONS", "ANSWER",
        ],
        &body,
    );
}

/// The telemetry table, then per-agent details.
pub fn stats(s: &StatsSummary) {
    out!(
        "window: {:.0}s since {} · approvals pending: {}",
        s.window_seconds,
        s.since,
        s.approvals_pending
    );
    if !s.budgets.is_empty() {
        budgets(&s.budgets);
        out!("");
    }
    let body: Vec<Vec<String>> = s
        .agents
        .iter()
        .map(|a| {
            vec![
                a.agent.clone(),
                a.turns.to_string(),
                format!("{:.2}", a.turns_per_minute),
                format!("{:.1}", a.tool_calls_per_turn),
                format!("{:.0}", a.duration_p50_ms),
                format!("{:.0}", a.duration_p95_ms),
                format!("{}/{}", a.inbox_depth_current, a.inbox_depth_max),
                a.seconds_since_last_turn
                    .map(|s| format!("{s:.0}s"))
                    .unwrap_or_else(|| "-".into()),
                if a.stuck {
                    "STUCK".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "TURNS",
            "TURNS/MIN",
            "TOOLS/TURN",
            "P50 MS",
            "P95 MS",
            "INBOX NOW/MAX",
            "SINCE TURN",
            "",
        ],
        &body,
    );
    for a in s.agents.iter().filter(|a| a.turns > 0) {
        let join = |m: &std::collections::BTreeMap<String, u64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let joinf = |m: &std::collections::BTreeMap<String, f64>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out!("\n{}:", a.agent);
        out!("  exits:         {}", join(&a.exit_classes));
        out!("  tools:         {}", join(&a.tool_usage));
        out!("  sent/turn:     {}", joinf(&a.sent_per_turn));
        out!("  received/turn: {}", joinf(&a.received_per_turn));
        if let Some(n) = a.notes_bytes {
            out!(
                "  notes:         {n} bytes ({:+} in the window)",
                a.notes_growth_bytes
            );
        }
        if a.tokens_in + a.tokens_out > 0 {
            out!(
                "  tokens:        {} in, {} out, ${:.4}",
                a.tokens_in,
                a.tokens_out,
                a.cost_usd
            );
        }
    }
}

/// The schedules table.
pub fn schedules(items: &[Schedule]) {
    if items.is_empty() {
        out!("no schedules");
        return;
    }
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.agent.clone(),
                s.when.clone(),
                s.next_due.clone(),
                s.created_by.clone(),
                s.text.clone(),
            ]
        })
        .collect();
    table(&["ID", "AGENT", "WHEN", "NEXT", "BY", "TEXT"], &body);
}

/// The secrets table: names and scopes, never values.
pub fn secrets(items: &[SecretRow]) {
    if items.is_empty() {
        out!("no secrets: add one with printf %s \"$VALUE\" | hive-c0re secret set NAME");
        return;
    }
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.agent.clone().unwrap_or_else(|| "(hive-wide)".to_owned()),
                s.set_at.clone(),
            ]
        })
        .collect();
    table(&["NAME", "SCOPE", "SET"], &body);
}

/// The notifications table, newest first: the first line of each text.
pub fn notifications(items: &[Notification], unread: u64) {
    if items.is_empty() {
        out!("no notifications");
        return;
    }
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|n| {
            let first = n.text.lines().next().unwrap_or_default();
            let mut text: String = first.chars().take(100).collect();
            if text.len() < n.text.len() {
                text.push('…');
            }
            vec![
                n.id.to_string(),
                n.ts.clone(),
                n.kind.to_string(),
                n.agent.clone().unwrap_or_else(|| "-".to_owned()),
                if n.read { "" } else { "unread" }.to_owned(),
                text,
            ]
        })
        .collect();
    table(&["ID", "TIME", "KIND", "AGENT", "", "TEXT"], &body);
    out!("{unread} unread");
}

/// Webhooks whose last delivery failed, above the status table.
pub fn failing_webhooks(items: &[WebhookStatus]) {
    let failing: Vec<&WebhookStatus> = items.iter().filter(|w| w.last_error.is_some()).collect();
    for w in &failing {
        out!(
            "WEBHOOK {} FAILING: {} · {} pending, {} attempts (hive-c0re webhooks)",
            w.name,
            w.last_error.as_deref().unwrap_or_default(),
            w.pending,
            w.attempts
        );
    }
    if !failing.is_empty() {
        out!("");
    }
}

/// The webhooks table: where each posts, what waits, the last error.
pub fn webhooks(items: &[WebhookStatus]) {
    if items.is_empty() {
        out!("no webhooks: add [[webhooks]] tables to hive.toml (see README)");
        return;
    }
    let body: Vec<Vec<String>> = items
        .iter()
        .map(|w| {
            vec![
                w.name.clone(),
                format!("{:?}", w.format).to_lowercase(),
                w.target.clone(),
                w.pending.to_string(),
                w.attempts.to_string(),
                w.last_ok.clone().unwrap_or_else(|| "-".to_owned()),
                w.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "FORMAT",
            "TARGET",
            "PENDING",
            "ATTEMPTS",
            "LAST OK",
            "LAST ERROR",
        ],
        &body,
    );
}
