//! An agent end to end, as production runs it: hive-c0re starts the harness,
//! the harness runs the real claude CLI against the scripted model server,
//! claude calls the hive's MCP tools, and the answer reaches the operator.

mod common;

use common::{ModelSim, TestHive};

fn ping_pong(runtime: &'static str) {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let hive = TestHive::with_model(&sim, runtime);
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["send", "alice", "ping"]);
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "no answer from alice\n{}", hive.log());
    assert_eq!(got[0]["from"], "alice");
    assert_eq!(got[0]["body"], "pong");
    // The turn is recorded: states and claude's stream-json lines, in order.
    hive.wait_for("the turn to end", 30, |h| {
        h.events("alice").iter().any(|e| e["kind"] == "turn_end")
    });
    let kinds: Vec<String> = hive
        .events("alice")
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    for k in ["turn_start", "stream", "turn_end"] {
        assert!(kinds.contains(&k.to_owned()), "no {k} event in {kinds:?}");
    }
    let row = hive.row("alice").unwrap();
    assert_eq!(row["running"], true);
    assert_eq!(row["active_model"], "haiku");
    assert!(row["last_turn_at"].is_string());
}

#[test]
fn ping_pong_process_runtime() {
    ping_pong("process");
}

#[test]
fn ping_pong_nspawn_runtime() {
    if !nix::unistd::geteuid().is_root() || common::which("systemd-nspawn").is_none() {
        eprintln!("skipped: the nspawn runtime needs root and systemd-nspawn");
        return;
    }
    ping_pong("nspawn");
}

const RELAY: &str = r#"
[[rule]]
name = "relay"
user_text = "relay"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "bob", body = "hello bob" }
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "carol", body = "hello carol" }

[[rule]]
name = "bob answers"
user_text = "hello bob"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "bob got: {{body}} from {{sender}}" }
"#;

#[test]
fn allowed_recipients_are_enforced_and_the_refusal_reaches_the_model() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(RELAY));
    let hive = TestHive::with_model(&sim, "process");
    for a in ["alice", "bob", "carol"] {
        hive.ok(&["spawn", a]);
    }
    hive.deploy_config("alice", "allowed_recipients = [\"bob\", \"operator\"]\n");
    hive.ok(&["send", "alice", "relay"]);
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "{}", hive.log());
    assert_eq!(got[0]["from"], "bob");
    assert_eq!(got[0]["body"], "bob got: hello bob from alice");
    // carol never got a message, and the model saw why as a tool error.
    assert_eq!(hive.row("carol").unwrap()["inbox_depth"], 0);
    let refused = sim.requests().iter().any(|r| {
        r["step"] == "tool_result"
            && r["messages"]
                .to_string()
                .contains("alice may not send to carol")
    });
    assert!(refused, "the refusal did not reach the model");
    let is_error = hive.events("alice").iter().any(|e| {
        e["payload"]["type"] == "user" && e["payload"].to_string().contains("\"is_error\":true")
    });
    assert!(is_error, "the refusal was not an MCP tool error");
}

const SLOW: &str = r#"
[[rule]]
name = "slow"
user_text = "slow"
delay_ms = 4000
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "done: {{body}}" }
"#;

#[test]
fn killing_the_harness_mid_turn_loses_no_message() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(SLOW));
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["send", "alice", "slow"]);
    hive.wait_for("alice thinking", 60, |h| {
        h.row("alice").unwrap()["state"] == "thinking"
    });
    let before = common::harness_pid(&hive, "alice");
    nix::sys::signal::kill(before, nix::sys::signal::Signal::SIGKILL).unwrap();
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "the message was lost\n{}", hive.log());
    assert_eq!(got[0]["body"], "done: slow");
    assert_ne!(
        common::harness_pid(&hive, "alice"),
        before,
        "the harness was not restarted"
    );
    let crash = hive
        .events("alice")
        .iter()
        .any(|e| e["kind"] == "container_crash");
    assert!(crash, "no container_crash event");
}
