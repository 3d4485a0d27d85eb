//! What keeps an agent useful over days, end to end with the real claude:
//! naps, scheduled prompts, and notes compaction.

mod common;

use std::time::{Duration, Instant};

use common::{ModelSim, TestHive};

const NAPPER: &str = r#"
[[rule]]
name = "short nap"
user_text = "nap 8"
[[rule.reply]]
tool = "mcp__hyperhive__nap"
input = { seconds = 8 }

[[rule]]
name = "long nap"
user_text = "nap long"
[[rule.reply]]
tool = "mcp__hyperhive__nap"
input = { seconds = 3600 }

[[rule]]
name = "pong"
user_text = "ping"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "pong" }

[[rule]]
name = "manager schedules"
user_text = "remind alice"
[[rule.reply]]
tool = "mcp__hyperhive__schedule"
input = { agent = "alice", when = "1s", text = "tick from the manager" }

[[rule]]
name = "tick"
sender = "system"
each_message = true
user_text = "tick"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "got {{body}}" }
"#;

fn napping_hive() -> Option<(ModelSim, TestHive)> {
    if !common::e2e_ready() {
        return None;
    }
    let sim = ModelSim::start(Some(NAPPER));
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    Some((sim, hive))
}

#[test]
fn a_message_sent_during_a_nap_waits_for_its_end() {
    let Some((_sim, hive)) = napping_hive() else {
        return;
    };
    // The nap starts at the tool call, and a loaded machine may take a few
    // seconds to end the turn: 8 s leave it napping a while after.
    hive.ok(&["send", "alice", "nap 8"]);
    hive.wait_for("alice napping", 60, |h| {
        h.row("alice").unwrap()["state"] == "napping"
    });
    let row = hive.row("alice").unwrap();
    let until = row["nap_until"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .unwrap_or_else(|| panic!("no nap_until: {row}"));
    hive.ok(&["send", "alice", "ping"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        hive.row("alice").unwrap()["inbox_depth"],
        1,
        "the message did not wait"
    );
    let got = hive.recv_operator(60);
    assert_eq!(got[0]["body"], "pong");
    // Taken at the nap's end, not before (`nap_until` is shown in whole
    // seconds, rounded down: at most a second short of the real end).
    let early = until.signed_duration_since(chrono::Utc::now());
    assert!(
        early <= chrono::Duration::zero(),
        "answered {early} before the nap's end"
    );
}

#[test]
fn cancel_ends_a_long_nap_at_once() {
    let Some((_sim, hive)) = napping_hive() else {
        return;
    };
    hive.ok(&["send", "alice", "nap long"]);
    hive.wait_for("alice napping", 60, |h| {
        h.row("alice").unwrap()["state"] == "napping"
    });
    hive.ok(&["send", "alice", "ping"]);
    std::thread::sleep(Duration::from_millis(300));
    hive.ok(&["cancel", "alice"]);
    let got = hive.recv_operator(30);
    assert_eq!(got.len(), 1, "the nap did not end\n{}", hive.log());
    assert_eq!(got[0]["body"], "pong");
}

#[test]
fn a_nap_survives_a_restart_of_hive_c0re() {
    let Some((_sim, mut hive)) = napping_hive() else {
        return;
    };
    hive.ok(&["send", "alice", "nap long"]);
    hive.wait_for("alice napping", 60, |h| {
        h.row("alice").unwrap()["state"] == "napping"
    });
    hive.kill9();
    hive.serve();
    hive.ok(&["send", "alice", "ping"]);
    std::thread::sleep(Duration::from_secs(2));
    let row = hive.row("alice").unwrap();
    assert_eq!(row["state"], "napping", "{row}");
    assert_eq!(row["inbox_depth"], 1);
}

#[test]
fn scheduled_prompts_arrive_on_time() {
    let Some((_sim, hive)) = napping_hive() else {
        return;
    };
    let t = Instant::now();
    hive.ok(&["schedule", "add", "alice", "2s", "tick once"]);
    let got = hive.recv_operator(30);
    assert_eq!(got[0]["body"], "got tick once");
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert!(
        hive.ok(&["schedule", "list"]).contains("no schedules"),
        "a one-shot stayed"
    );

    hive.ok(&["schedule", "add", "alice", "every:1s", "tick repeat"]);
    assert_eq!(hive.row("alice").unwrap()["pending_reminders"], 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut repeats = 0;
    while repeats < 2 && Instant::now() < deadline {
        repeats += hive
            .recv_operator(5)
            .iter()
            .filter(|m| m["body"] == "got tick repeat")
            .count();
    }
    assert!(repeats >= 2, "the repeat fired {repeats} times");
    let list = hive.ok(&["schedule", "list", "--json"]);
    let id = serde_json::from_str::<serde_json::Value>(list.lines().next().unwrap()).unwrap()["id"]
        .to_string();
    hive.ok(&["schedule", "rm", &id]);
    assert_eq!(hive.row("alice").unwrap()["pending_reminders"], 0);
}

#[test]
fn a_slot_missed_while_down_is_delivered_once() {
    let hive_opts = common::Opts::default();
    let mut hive = TestHive::start_with(hive_opts);
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["kill", "alice"]); // no harness: the inbox keeps what arrives
    hive.ok(&["schedule", "add", "alice", "every:1s", "missed"]);
    hive.kill9();
    std::thread::sleep(Duration::from_millis(4500));
    hive.serve();
    std::thread::sleep(Duration::from_millis(300));
    let out = hive.ok(&["recv", "--as", "alice", "--json"]);
    assert_eq!(out.lines().count(), 1, "missed slots were replayed:\n{out}");
    assert!(out.contains("\"from\":\"system\""));
}

#[test]
fn schedule_refuses_a_bad_time_with_the_forms() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    let out = hive.cli(&["schedule", "add", "alice", "soonish", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every:15m"));
}

fn notes_script(notes: &std::path::Path, new_text: &str) -> String {
    format!(
        r#"
[[rule]]
name = "read notes"
user_text = "Compact the notes file"
[[rule.reply]]
tool = "Read"
input = {{ file_path = "{path}" }}

[[rule]]
name = "write notes"
tool_result = "OLD NOTES"
[[rule.reply]]
tool = "Write"
input = {{ file_path = "{path}", content = "{new_text}" }}

[[rule]]
name = "pong"
user_text = "ping"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = {{ to = "operator", body = "pong" }}
"#,
        path = notes.display()
    )
}

fn notes_hive(new_text: &str) -> Option<(ModelSim, TestHive, std::path::PathBuf)> {
    if !common::e2e_ready() {
        return None;
    }
    let sim = ModelSim::start(None);
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    hive.deploy_config("alice", "notes_max_bytes = 200\n");
    hive.wait_for("alice running", 30, |h| {
        h.row("alice").unwrap()["running"] == true
    });
    let notes = hive.state_dir().join("agents/alice/state/notes.md");
    sim.set_script(&notes_script(&notes, new_text));
    std::fs::write(
        &notes,
        format!("# OLD NOTES\n{}", "a fact worth keeping\n".repeat(40)),
    )
    .unwrap();
    Some((sim, hive, notes))
}

#[test]
fn notes_over_the_threshold_are_rewritten_and_the_old_kept() {
    let Some((_sim, hive, notes)) = notes_hive("# notes\\nthe facts, compacted") else {
        return;
    };
    let old = std::fs::read_to_string(&notes).unwrap();
    hive.ok(&["send", "alice", "ping"]);
    assert_eq!(hive.recv_operator(60)[0]["body"], "pong");
    hive.wait_for("notes compaction", 60, |h| {
        h.events("alice")
            .iter()
            .any(|e| e["kind"] == "notes_compaction")
    });
    assert_eq!(
        std::fs::read_to_string(&notes).unwrap(),
        "# notes\nthe facts, compacted"
    );
    assert_eq!(
        std::fs::read_to_string(notes.with_extension("md.prev")).unwrap(),
        old
    );
    let ev = hive
        .events("alice")
        .into_iter()
        .find(|e| e["kind"] == "notes_compaction")
        .unwrap();
    assert_eq!(ev["payload"]["rewritten"], true);
    assert_eq!(ev["payload"]["before_bytes"], old.len());
    assert_eq!(
        ev["payload"]["after_bytes"],
        "# notes\nthe facts, compacted".len()
    );
}

#[test]
fn a_failed_notes_rewrite_keeps_the_original() {
    let Some((_sim, hive, notes)) = notes_hive("") else {
        return;
    };
    let old = std::fs::read_to_string(&notes).unwrap();
    hive.ok(&["compact-notes", "alice"]);
    hive.wait_for("notes compaction", 60, |h| {
        h.events("alice")
            .iter()
            .any(|e| e["kind"] == "notes_compaction")
    });
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), old);
    let ev = hive
        .events("alice")
        .into_iter()
        .find(|e| e["kind"] == "notes_compaction")
        .unwrap();
    assert_eq!(ev["payload"]["rewritten"], false);
}

#[test]
fn the_manager_schedules_a_prompt_through_its_tool() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(NAPPER));
    let mut opts = common::Opts {
        env: sim.env(),
        ..common::Opts::default()
    };
    opts.args.retain(|a| a != "--no-manager");
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("the manager", 30, |h| {
        h.row("manager").is_some_and(|r| r["running"] == true)
    });
    hive.ok(&["send", "manager", "remind alice"]);
    let got = hive.recv_operator(60);
    assert_eq!(got.len(), 1, "{}", hive.log());
    assert_eq!(got[0]["from"], "alice");
    assert_eq!(
        got[0]["body"], "got [scheduled by manager] tick from the manager",
        "what fires says whose words it carries"
    );
}
