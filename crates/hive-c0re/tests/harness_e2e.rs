//! The harness end to end with the real claude CLI against the scripted
//! model: sessions claude cannot resume, cancels (of a turn and of a
//! compaction), pausing, turns their harness or daemon died in, and what an
//! agent's config and tools reach.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{ModelSim, TestHive};

/// The claude session transcripts in alice's `/state`, newest last.
fn transcripts(hive: &TestHive) -> Vec<PathBuf> {
    let projects = hive.state_dir().join("agents/alice/state/.claude/projects");
    let mut out: Vec<(std::time::SystemTime, PathBuf)> = vec![];
    for dir in std::fs::read_dir(projects).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = f.path();
            if p.extension().is_some_and(|e| e == "jsonl") {
                out.push((f.metadata().unwrap().modified().unwrap(), p));
            }
        }
    }
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// alice's events of one kind, oldest first.
fn events_of(hive: &TestHive, kind: &str) -> Vec<serde_json::Value> {
    hive.events("alice")
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

/// The claude arguments of alice's newest turn.
fn last_turn_args(hive: &TestHive) -> Vec<String> {
    let starts = events_of(hive, "turn_start");
    let args = &starts.last().expect("a turn started")["payload"]["args"];
    serde_json::from_value(args.clone()).unwrap()
}

/// Sends `text` to alice, waits for the one answer and the end of the turn; returns the answer.
fn ask(hive: &TestHive, text: &str) -> String {
    let ended = events_of(hive, "turn_end").len();
    hive.ok(&["send", "alice", text]);
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "{text}: {got:?}\n{}", hive.log());
    hive.wait_for("the turn to end", 30, |h| {
        events_of(h, "turn_end").len() > ended
    });
    got[0]["body"].as_str().unwrap().to_owned()
}

/// Sends `ping` and waits for alice's `pong`.
fn ping(hive: &TestHive) {
    assert_eq!(ask(hive, "ping"), "pong");
}

#[test]
fn a_session_claude_cannot_resume_gives_way_to_a_fresh_one() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    ping(&hive);
    let first = transcripts(&hive);
    assert_eq!(first.len(), 1, "{first:?}");
    let first_id = first[0].file_stem().unwrap().to_string_lossy().into_owned();

    // Removed: claude finds no conversation; the turn starts afresh and answers.
    std::fs::remove_file(&first[0]).unwrap();
    ping(&hive);
    assert!(
        last_turn_args(&hive).contains(&first_id),
        "the turn did not try to resume"
    );
    let lost = events_of(&hive, "session_lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0]["payload"]["session"], first_id.as_str());
    assert!(
        lost[0]["payload"]["error"]
            .as_str()
            .unwrap()
            .contains("No conversation found"),
        "{lost:?}"
    );
    let second = transcripts(&hive);
    assert_eq!(second.len(), 1, "no fresh session: {second:?}");

    // Corrupt: the same, and the fresh session is the one the next turn resumes.
    std::fs::write(&second[0], "not a transcript {{{\n").unwrap();
    ping(&hive);
    assert_eq!(events_of(&hive, "session_lost").len(), 2);
    let third = transcripts(&hive).pop().unwrap();
    assert_ne!(third, second[0]);
    let third_id = third.file_stem().unwrap().to_string_lossy().into_owned();
    ping(&hive);
    assert!(last_turn_args(&hive).contains(&third_id));
    assert_eq!(events_of(&hive, "session_lost").len(), 2, "resumed fine");

    // By hand: the operator starts a fresh session for the next turn.
    let out = hive.ok(&["new-session", "alice"]);
    assert!(out.contains("fresh claude session"), "{out}");
    let reset = events_of(&hive, "session_reset");
    assert_eq!(reset[0]["payload"]["previous"], third_id.as_str());
    ping(&hive);
    assert!(
        !last_turn_args(&hive).contains(&"--resume".to_owned()),
        "{:?}",
        last_turn_args(&hive)
    );
    let refused = hive.cli(&["new-session", "nobody"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not managed by this hive"));
}

const SLOW: &str = r#"
compact_delay_ms = 120000

[[rule]]
name = "slow"
each_message = true
user_text = "slow"
delay_ms = 120000
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "done: {{body}}" }

[[rule]]
name = "ack"
each_message = true
user_text = ""
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "ack: {{body}}" }
"#;

#[test]
fn a_cancelled_turn_holds_its_messages_for_the_next_one() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(SLOW));
    let mut opts = common::Opts {
        env: sim.env(),
        ..common::Opts::default()
    };
    opts.env.push(("HIVE_STUCK_AFTER_SECS".into(), "1".into()));
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["send", "alice", "slow"]);
    hive.wait_for("alice thinking", 60, |h| {
        h.row("alice").unwrap()["state"] == "thinking"
    });
    hive.ok(&["cancel", "alice"]);
    hive.wait_for("the cancelled turn to end", 30, |h| {
        !events_of(h, "turn_end").is_empty()
    });
    let end = &events_of(&hive, "turn_end")[0]["payload"];
    assert_eq!(end["exit_class"], "cancelled", "{end}");
    let started = &events_of(&hive, "turn_start")[0]["payload"]["messages"];
    assert_eq!(&end["held"], started, "the held messages are named");

    // Held: visible in the inbox, no turn of their own, not "stuck", even across a restart.
    hive.ok(&["restart", "alice"]);
    std::thread::sleep(Duration::from_millis(2500));
    let row = hive.row("alice").unwrap();
    assert_eq!(
        (&row["state"], &row["inbox_depth"]),
        (&"idle".into(), &1.into()),
        "{row}"
    );
    assert_eq!(
        events_of(&hive, "turn_start").len(),
        1,
        "the held message ran again"
    );
    let stats = hive.request(serde_json::json!({"cmd": "stats", "agent": "alice"}));
    assert_eq!(stats["stats"]["agents"][0]["stuck"], false, "{stats}");

    // The next message starts a turn that takes the held one along.
    sim.set_script(&SLOW.replace("user_text = \"slow\"", "user_text = \"never\""));
    hive.ok(&["send", "alice", "go on"]);
    let mut bodies: Vec<String> = vec![];
    while bodies.len() < 2 {
        let got = hive.recv_operator(60);
        assert!(!got.is_empty(), "{bodies:?}\n{}", hive.log());
        bodies.extend(got.iter().map(|m| m["body"].as_str().unwrap().to_owned()));
    }
    assert_eq!(bodies, ["ack: slow", "ack: go on"]);
    hive.wait_for("the inbox to empty", 30, |h| {
        h.row("alice").unwrap()["inbox_depth"] == 0
    });
}

/// Waits until alice has `n` turns started and is thinking in the last.
fn wait_thinking_in_turn(hive: &TestHive, n: usize) {
    hive.wait_for("alice thinking", 60, |h| {
        events_of(h, "turn_start").len() == n && h.row("alice").unwrap()["state"] == "thinking"
    });
}

#[test]
fn a_turn_whose_harness_or_daemon_died_ends_as_interrupted() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(SLOW));
    let mut hive = TestHive::start_with(common::Opts {
        env: sim.env(),
        ..common::Opts::default()
    });
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["send", "alice", "slow"]);
    wait_thinking_in_turn(&hive, 1);

    // The operator restarts alice mid-turn: the harness is stopped, and
    // hive-c0re ends the turn it left open.
    hive.ok(&["restart", "alice"]);
    hive.wait_for("the interrupted turn to end", 30, |h| {
        !events_of(h, "turn_end").is_empty()
    });
    let end = &events_of(&hive, "turn_end")[0]["payload"];
    assert_eq!(end["exit_class"], "interrupted", "{end}");
    let error = end["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the turn did not end: the harness was stopped"),
        "{end}"
    );

    // Its message comes again. A kill -9 of hive-c0re mid-turn leaves no one
    // to end that turn; the next daemon does, once it takes alice's lease.
    wait_thinking_in_turn(&hive, 2);
    hive.kill9();
    hive.serve();
    hive.wait_for("the turn cut by the kill to end", 60, |h| {
        events_of(h, "turn_end").len() == 2
    });
    let end = &events_of(&hive, "turn_end")[1]["payload"];
    assert_eq!(end["exit_class"], "interrupted", "{end}");
    assert!(
        end["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the hive-c0re running it stopped before the harness did"),
        "{end}"
    );
    // Once: each start has one end, and the message runs a third time.
    wait_thinking_in_turn(&hive, 3);
    assert_eq!(events_of(&hive, "turn_end").len(), 2, "{}", hive.log());
    let stats = hive.request(serde_json::json!({"cmd": "stats", "agent": "alice"}));
    assert_eq!(
        stats["stats"]["agents"][0]["exit_classes"]["interrupted"], 2,
        "{stats}"
    );
}

#[test]
fn cancel_ends_a_compaction() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(SLOW));
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["send", "alice", "hello"]);
    assert_eq!(hive.recv_operator(90)[0]["body"], "ack: hello");
    hive.wait_for("the turn to end", 30, |h| {
        h.row("alice").unwrap()["state"] == "idle"
    });
    hive.ok(&["compact", "alice"]);
    hive.wait_for("alice compacting", 30, |h| {
        h.row("alice").unwrap()["state"] == "compacting"
    });
    // The model answers the compaction after two minutes: only a cancel ends it sooner.
    hive.ok(&["cancel", "alice"]);
    hive.wait_for("the compaction to end", 30, |h| {
        !events_of(h, "compact_end").is_empty() && h.row("alice").unwrap()["state"] == "idle"
    });
    let end = &events_of(&hive, "compact_end")[0]["payload"];
    assert_eq!(end["cancelled"], true, "{end}");
    // The session survives a cancelled compaction.
    hive.ok(&["send", "alice", "again"]);
    assert_eq!(hive.recv_operator(90)[0]["body"], "ack: again");
    assert!(events_of(&hive, "session_lost").is_empty());
}

#[test]
fn a_paused_agent_queues_messages_and_takes_them_on_resume() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["pause", "alice"]);
    hive.ok(&["send", "alice", "one"]);
    hive.ok(&["send", "alice", "two"]);
    std::thread::sleep(Duration::from_millis(1500));
    let row = hive.row("alice").unwrap();
    assert_eq!(row["paused"], true);
    assert_eq!(row["inbox_depth"], 2, "{row}");
    assert!(
        events_of(&hive, "turn_start").is_empty(),
        "a paused agent took a turn"
    );
    assert!(sim.requests().is_empty(), "a paused agent called the model");
    hive.ok(&["resume", "alice"]);
    let mut bodies: Vec<String> = vec![];
    while bodies.len() < 2 {
        let got = hive.recv_operator(60);
        assert!(!got.is_empty(), "{bodies:?}\n{}", hive.log());
        bodies.extend(got.iter().map(|m| m["body"].as_str().unwrap().to_owned()));
    }
    assert_eq!(bodies, ["ack: one", "ack: two"]);
    assert_eq!(events_of(&hive, "turn_start").len(), 1, "both in one turn");
}

/// Tools the tests below ask for; each tool's result is relayed to the operator.
const TOOLS: &str = r#"
[[rule]]
name = "status"
user_text = "set your status"
[[rule.reply]]
tool = "mcp__hyperhive__set_status"
input = { text = "reading the logs" }

[[rule]]
name = "recv"
user_text = "read the rest"
delay_ms = 3000
[[rule.reply]]
tool = "mcp__hyperhive__recv"
input = {}

[[rule]]
name = "env"
user_text = "print the greeting"
[[rule.reply]]
tool = "Bash"
input = { command = "printenv HIVE_TEST_GREETING" }

[[rule]]
name = "off-list"
user_text = "plant a file"
[[rule.reply]]
tool = "Bash"
input = { command = "touch planted" }

[[rule]]
name = "extra server"
user_text = "use the extra server"
[[rule.reply]]
tool = "mcp__extra__set_status"
input = { text = "set through the extra server" }

[[rule]]
name = "relay"
tool_result = ""
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "got: {{tool_result}}" }
"#;

#[test]
fn hive_tools_and_the_agent_config_reach_the_real_claude() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(TOOLS));
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);

    // set_status: the agent's one line shows in its status row.
    let got = ask(&hive, "set your status");
    assert!(got.starts_with("got: "), "{got}");
    assert_eq!(
        hive.row("alice").unwrap()["status_text"],
        "reading the logs"
    );

    // recv: a message that arrives during the turn is read (and acknowledged) by the tool.
    let started = events_of(&hive, "turn_start").len();
    hive.ok(&["send", "alice", "read the rest"]);
    hive.wait_for("the turn to start", 60, |h| {
        events_of(h, "turn_start").len() > started
    });
    hive.ok(&["send", "alice", "the rest, sent mid-turn"]);
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "{got:?}\n{}", hive.log());
    let body = got[0]["body"].as_str().unwrap();
    assert!(
        body.contains("from=\"operator\"") && body.contains("the rest, sent mid-turn"),
        "{body}"
    );
    hive.wait_for("the turn to end", 30, |h| {
        h.row("alice").unwrap()["state"] == "idle"
    });
    assert_eq!(
        hive.row("alice").unwrap()["inbox_depth"],
        0,
        "recv did not acknowledge"
    );

    // env and mcp_servers from agent.toml reach claude; Bash is limited to its list.
    let sock = hive.run_dir().join("agents/alice/agent.sock");
    let extra = format!(
        "test \"$EXTRA_TOKEN\" = open-sesame && exec {} mcp --socket {}",
        common::bin_dir().join("hive-ag3nt").display(),
        sock.display()
    );
    hive.deploy_config(
        "alice",
        &format!(
            "allowed_tools = [\"Bash(printenv *)\", \"mcp__extra\"]\n\
             [env]\nHIVE_TEST_GREETING = \"hello from agent.toml\"\n\
             [mcp_servers.extra]\ncommand = \"/bin/sh\"\nargs = [\"-c\", {extra:?}]\n\
             env = {{ EXTRA_TOKEN = \"open-sesame\" }}\n"
        ),
    );
    hive.wait_for("alice running", 30, |h| {
        h.row("alice").unwrap()["running"] == true
    });
    let got = ask(&hive, "print the greeting");
    assert_eq!(got.trim_end(), "got: hello from agent.toml");

    let got = ask(&hive, "use the extra server");
    assert!(got.starts_with("got: "), "{got}");
    assert_eq!(
        hive.row("alice").unwrap()["status_text"],
        "set through the extra server"
    );
    let init = hive
        .events("alice")
        .into_iter()
        .rev()
        .find(|e| e["payload"]["subtype"] == "init")
        .unwrap();
    let servers = init["payload"]["mcp_servers"].as_array().unwrap();
    let extra = servers.iter().find(|s| s["name"] == "extra");
    assert_eq!(
        extra.map(|s| &s["status"]),
        Some(&"connected".into()),
        "{servers:?}"
    );

    let got = ask(&hive, "plant a file");
    let planted = hive.state_dir().join("agents/alice/state/planted");
    assert!(got.contains("needs approval"), "{got}");
    assert!(!planted.exists(), "an off-list Bash command ran");
    let denied = hive.events("alice").iter().any(|e| {
        e["payload"]["subtype"] == "permission_denied" && e["payload"]["tool_name"] == "Bash"
    });
    assert!(denied, "no permission_denied line");
}

/// Kills the stray process a test's stand-in claude left behind.
struct Stray(String);

impl Drop for Stray {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-f", &self.0])
            .status();
    }
}

/// A hive whose agents run `claude` (a stand-in script), with `env` more
/// of serve's environment, and alice running.
fn alice_with_claude(claude: &std::path::Path, env: &[(&str, &str)]) -> TestHive {
    let mut opts = common::Opts {
        env: vec![
            ("HIVE_CLAUDE_BIN".into(), claude.display().to_string()),
            ("ANTHROPIC_API_KEY".into(), "sk-test".into()),
        ],
        ..common::Opts::default()
    };
    opts.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice running", 30, |h| {
        h.row("alice").is_some_and(|r| r["running"] == true)
    });
    hive
}

/// A full disk under `harness.log`: every write to the harness's stderr
/// fails. `eprintln!` (the harness's own lines, and tracing's report of a
/// failed write) panics then, so each harness died at its first log line,
/// was restarted, died again, and every agent ended `failed`. The harness
/// now carries on without its log.
#[test]
fn a_harness_whose_log_cannot_be_written_still_takes_turns() {
    let bin = tempfile::Builder::new()
        .prefix("hive-full-log-")
        .tempdir()
        .unwrap();
    common::searchable(bin.path());
    let claude = bin.path().join("claude");
    common::write_exe(&claude, "#!/bin/sh\nexit 0\n");
    common::write_exe(
        &bin.path().join("hive-ag3nt"),
        &format!(
            "#!/bin/sh\nexec {} \"$@\" 2>/dev/full\n",
            common::bin_dir().join("hive-ag3nt").display()
        ),
    );
    let hive = alice_with_claude(&claude, &[("HIVE_BIN_DIR", bin.path().to_str().unwrap())]);
    let harness = common::harness_pid(&hive, "alice");
    hive.ok(&["send", "alice", "hello"]);
    hive.wait_for("a turn with no room for the log", 40, |h| {
        h.events("alice").iter().any(|e| e["kind"] == "turn_end")
    });
    let row = hive.row("alice").unwrap();
    assert_eq!(row["running"], true, "{row}");
    assert_eq!(
        common::harness_pid(&hive, "alice"),
        harness,
        "the harness was restarted"
    );
}

/// A turn whose claude started a process that took its output along
/// (`setsid cmd &` from the Bash tool) used to never end: the harness read
/// claude's output until that process closed it, so neither the time limit
/// nor a cancel ended the turn. It ends a few seconds after claude exits.
#[test]
fn a_process_that_keeps_claudes_output_open_does_not_hold_the_turn() {
    let bin = tempfile::Builder::new()
        .prefix("hive-fake-claude-")
        .tempdir()
        .unwrap();
    common::searchable(bin.path());
    let stray = Stray(format!("sleep 59{}.5", std::process::id() % 10_000));
    let claude = bin.path().join("claude");
    common::write_exe(
        &claude,
        &format!("#!/bin/sh\nsetsid {} &\nexit 0\n", stray.0),
    );
    let hive = alice_with_claude(&claude, &[]);
    hive.ok(&["send", "alice", "hello"]);
    hive.wait_for("the turn to end although its output stays open", 40, |h| {
        h.events("alice").iter().any(|e| e["kind"] == "turn_end")
    });
    drop(stray);
}

/// A turn's prompt (its messages, up to a hundred of up to 64 KiB each) went
/// whole into the `turn_start` event, one request over agent.sock's 1 MiB
/// line bound: hive-c0re refused it, the harness ended, came back, claimed
/// the same messages and ended again, until the agent was `failed` (an inbox
/// filled while paused, over budget or napping did it). The event keeps the
/// prompt's head, and the turn runs.
#[test]
fn a_turn_of_a_full_inbox_runs_and_records_its_prompts_head() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["pause", "alice"]);
    const MESSAGES: usize = 18;
    let body = "x".repeat(60 * 1024);
    for _ in 0..MESSAGES {
        hive.ok(&["send", "alice", &body]);
    }
    hive.ok(&["resume", "alice"]);
    let mut answers = 0;
    while answers < MESSAGES {
        let got = hive.recv_operator(90);
        assert!(!got.is_empty(), "{answers} answers\n{}", hive.log());
        answers += got.len();
    }
    hive.wait_for("the turn to end", 30, |h| {
        !events_of(h, "turn_end").is_empty()
    });
    let starts = events_of(&hive, "turn_start");
    assert_eq!(starts.len(), 1, "one turn took them all");
    let prompt = starts[0]["payload"]["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("more bytes not recorded]"),
        "{}",
        prompt.len()
    );
    assert!(prompt.len() < 128 * 1024, "{}", prompt.len());
    assert_eq!(
        starts[0]["payload"]["messages"].as_array().unwrap().len(),
        MESSAGES
    );
    assert!(
        events_of(&hive, "container_crash").is_empty(),
        "{}",
        hive.log()
    );
    assert_eq!(
        events_of(&hive, "turn_end")[0]["payload"]["exit_class"],
        "ok"
    );
}
