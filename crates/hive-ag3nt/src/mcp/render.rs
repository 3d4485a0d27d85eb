//! Tool results as the model reads them: short plain text, one fact per line.

use std::fmt::Write as _;

use hive_sh4re::host::{AgentStatusRow, Message};

/// `send`'s answer.
pub(super) fn sent(id: Option<i64>, to: &str) -> String {
    let what = match id {
        Some(id) => format!("sent to {to} as message #{id}"),
        None => format!("sent to {to}"),
    };
    format!("{what}; any reply arrives as a new message in a later turn")
}

/// `recv`'s answer: a header, then each message as a `<message>` tag, as the
/// turn's prompt shows them (the body escaped, so it cannot pose as another message).
pub(super) fn messages(msgs: &[Message]) -> String {
    if msgs.is_empty() {
        return "no new messages: your inbox is empty".into();
    }
    let noun = if msgs.len() == 1 {
        "message"
    } else {
        "messages"
    };
    let mut out = format!(
        "{} {noun} (taken from your inbox: they come again only if this turn fails):",
        msgs.len()
    );
    for m in msgs {
        out.push('\n');
        out.push_str(&crate::prompt::tag(m, true));
    }
    out
}

/// `status`'s answer: one line per agent, then who else can be reached.
pub(super) fn agents(rows: &[AgentStatusRow]) -> String {
    let mut out = match rows.len() {
        0 => "no agents in this hive yet".to_owned(),
        1 => "1 agent:".to_owned(),
        n => format!("{n} agents:"),
    };
    for r in rows {
        out.push('\n');
        out.push_str(&agent_line(r));
    }
    out.push_str("\nThe human operator is reached as `operator`.");
    out
}

/// `alice: thinking since T, running, model M, inbox 3, status "…"`.
fn agent_line(r: &AgentStatusRow) -> String {
    let run = if r.failed {
        "failed"
    } else if r.running {
        "running"
    } else if r.state == "node_down" {
        // Not stopped by anyone: its home node went silent, and a send to it is still taken.
        "unreachable until its node is back (messages to it wait)"
    } else {
        "stopped"
    };
    // `over_budget` reads as two words: "over budget · budget: $5.02 of $5.00 today".
    let shown = r.state.replace('_', " ");
    let state = match &r.state_detail {
        Some(d) => format!("{shown} · {d}"),
        None => shown,
    };
    let mut line = format!("{}: {state} since {}, {run}", r.name, r.state_since);
    if r.paused {
        line.push_str(", paused");
    }
    if let Some(until) = &r.nap_until {
        let _ = write!(line, ", napping until {until}");
    }
    if let Some(at) = r.queue_position {
        let _ = write!(line, ", #{at} in line for a turn slot");
    }
    let _ = write!(line, ", model {}, inbox {}", r.active_model, r.inbox_depth);
    match r
        .status_text
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(text) => {
            let _ = write!(line, ", status {text:?}");
        }
        None => line.push_str(", no status"),
    }
    line
}

/// `set_status`'s answer.
pub(super) fn status_set(text: &str) -> String {
    if text.is_empty() {
        "status cleared".into()
    } else {
        format!("status set to {text:?}; the operator and the other agents see it in status")
    }
}

/// A manager tool's answer: hive-c0re's text, or what happened when it sent none.
pub(super) fn text_or(text: Option<String>, fallback: impl FnOnce() -> String) -> String {
    text.filter(|t| !t.trim().is_empty())
        .unwrap_or_else(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str) -> AgentStatusRow {
        AgentStatusRow {
            name: name.into(),
            running: true,
            failed: false,
            needs_update: false,
            needs_login: false,
            deployed_sha: None,
            pending_reminders: 0,
            paused: false,
            parent: None,
            active_model: "claude-sonnet-4-5".into(),
            status_text: None,
            status_set_at: None,
            url: None,
            state: "idle".into(),
            state_since: "2026-01-01T10:00:00Z".into(),
            state_detail: None,
            retry_at: None,
            login_reason: None,
            inbox_depth: 0,
            last_turn_at: None,
            runtime: "process".into(),
            isolated: false,
            nap_until: None,
            health: None,
            restarts: 0,
            crash_exit: None,
            crash_tail: None,
            question: None,
            queue_position: None,
            budget: None,
            node: None,
            state_bytes: None,
        }
    }

    #[test]
    fn status_lists_every_agent_on_one_line() {
        let mut bob = row("bob");
        bob.state = "thinking".into();
        bob.inbox_depth = 3;
        bob.status_text = Some("reviewing the parser".into());
        let mut dave = row("dave");
        dave.state = "over_budget".into();
        dave.state_detail = Some("budget: 1200 of 1000 tokens today".into());
        assert!(
            agent_line(&dave)
                .starts_with("dave: over budget · budget: 1200 of 1000 tokens today since"),
            "{}",
            agent_line(&dave)
        );
        let mut carol = row("carol");
        carol.running = false;
        carol.nap_until = Some("2026-01-01T11:00:00Z".into());
        let text = agents(&[row("alice"), bob, carol]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "3 agents:");
        assert_eq!(
            lines[1],
            "alice: idle since 2026-01-01T10:00:00Z, running, model claude-sonnet-4-5, inbox 0, no status"
        );
        assert_eq!(
            lines[2],
            "bob: thinking since 2026-01-01T10:00:00Z, running, model claude-sonnet-4-5, inbox 3, status \"reviewing the parser\""
        );
        assert!(lines[3].starts_with(
            "carol: idle since 2026-01-01T10:00:00Z, stopped, napping until 2026-01-01T11:00:00Z"
        ));
        assert!(lines[4].contains("`operator`"));
    }

    #[test]
    fn an_agent_of_a_silent_node_says_so_and_that_messages_wait() {
        let mut a = row("x");
        a.running = false;
        a.state = "node_down".into();
        a.state_detail = Some("no heartbeat from alpha".into());
        a.node = Some("alpha".into());
        assert!(
            agent_line(&a).starts_with(
                "x: node down · no heartbeat from alpha since 2026-01-01T10:00:00Z, \
                 unreachable until its node is back (messages to it wait), model"
            ),
            "{}",
            agent_line(&a)
        );
    }

    #[test]
    fn a_queued_agent_says_since_when_and_its_place_in_line() {
        let mut a = row("alice");
        a.state = "queued".into();
        a.queue_position = Some(2);
        assert!(
            agent_line(&a).starts_with(
                "alice: queued since 2026-01-01T10:00:00Z, running, #2 in line for a turn slot,"
            ),
            "{}",
            agent_line(&a)
        );
    }

    #[test]
    fn a_failed_agent_says_so() {
        let mut a = row("alice");
        a.failed = true;
        assert!(agent_line(&a).contains(", failed"));
    }

    #[test]
    fn messages_show_id_sender_and_body() {
        let m = Message {
            id: 7,
            from: "bob".into(),
            to: "alice".into(),
            body: "hi\n".into(),
            sent_at: "T".into(),
            pending: None,
        };
        assert_eq!(
            messages(&[m]),
            "1 message (taken from your inbox: they come again only if this turn fails):\n<message id=\"7\" from=\"bob\" sent_at=\"T\">hi\n</message>"
        );
        assert!(messages(&[]).contains("empty"));
    }

    #[test]
    fn sent_names_the_id() {
        assert!(sent(Some(42), "bob").starts_with("sent to bob as message #42;"));
        assert!(sent(None, "bob").starts_with("sent to bob;"));
    }

    #[test]
    fn blank_text_falls_back() {
        assert_eq!(text_or(Some(" ".into()), || "x".into()), "x");
        assert_eq!(text_or(Some("y".into()), || "x".into()), "y");
    }
}
