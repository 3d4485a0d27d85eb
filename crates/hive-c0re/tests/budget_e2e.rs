//! Daily budgets end to end: real claude turns against the scripted model,
//! which reports a fixed usage for every model call, so a turn's tokens are
//! the same each time and the budget's marks fall on known turns.

mod common;

use common::{ModelSim, Opts, TestHive, agent_call, git};

/// The built-in script with a fixed usage per model call.
fn script() -> String {
    let builtin = include_str!("../../hive-model-sim/src/default_script.toml");
    format!("input_tokens = 1000\noutput_tokens = 10\n{builtin}")
}

fn kinds(hive: &TestHive, agent: &str, kind: &str) -> Vec<serde_json::Value> {
    hive.events(agent)
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn ping(hive: &TestHive) {
    hive.ok(&["send", "alice", "ping"]);
    let got = hive.recv_operator(60);
    assert_eq!(got.len(), 1, "{}", hive.log());
    assert_eq!(got[0]["body"], "pong");
}

fn alice_spent(hive: &TestHive) -> serde_json::Value {
    let v = hive.request(serde_json::json!({"cmd": "budget_list"}));
    let rows = v["budgets"].as_array().unwrap().clone();
    rows.into_iter().find(|r| r["agent"] == "alice").unwrap()
}

fn alice_tokens(hive: &TestHive) -> u64 {
    alice_spent(hive)["spent_tokens"].as_u64().unwrap()
}

#[test]
fn a_budget_warns_at_80_holds_at_100_and_the_operator_releases_it() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(&script()));
    let mut hive = TestHive::start_with(Opts {
        args: vec!["--no-dashboard".into()],
        env: sim.env(),
        ..Opts::default()
    });
    // The manager's inbox is read here, not by its turns.
    hive.wait_for("the manager", 30, |h| {
        h.row("manager").is_some_and(|r| r["running"] == true)
    });
    hive.ok(&["pause", "manager"]);
    hive.ok(&["spawn", "alice"]);

    // Turn 1 measures what one turn spends (the same every turn: fixed usage, same calls).
    ping(&hive);
    hive.wait_for("turn 1's spend", 30, |h| alice_tokens(h) > 0);
    let per_turn = alice_tokens(&hive);
    let usd_per_turn = alice_spent(&hive)["spent_usd"].as_f64().unwrap();
    assert!(usd_per_turn > 0.0);
    assert_eq!(per_turn % 1010, 0, "whole model calls of 1000 + 10 tokens");

    // The manager proposes a budget of 2.5 turns: nothing changes until the operator approves.
    let limit = 2 * per_turn + per_turn / 2;
    let repo = hive.state_dir().join("configs").join("alice");
    let toml = std::fs::read_to_string(repo.join("agent.toml")).unwrap();
    std::fs::write(
        repo.join("agent.toml"),
        format!("{toml}\n[budget]\ntokens_per_day = {limit}\n"),
    )
    .unwrap();
    git(&repo, &["commit", "-qam", "a budget"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    let asked = agent_call(
        &hive,
        "manager",
        serde_json::json!({"op": "request_apply_commit", "agent": "alice", "sha": sha.trim()}),
    );
    assert_eq!(asked["ok"], true, "{asked}");
    assert!(
        hive.row("alice").unwrap().get("budget").is_none(),
        "a proposed budget is no budget"
    );
    let id = hive.request(serde_json::json!({"cmd": "pending"}))["approvals"][0]["id"]
        .as_i64()
        .unwrap();
    hive.ok(&["approve", &id.to_string()]);
    let row = hive.row("alice").unwrap();
    assert_eq!(row["budget"]["tokens_per_day"], limit, "{row}");
    assert_eq!(row["budget"]["source"], "config");

    // Turn 2 reaches 80 %: a warning, no hold.
    assert!(kinds(&hive, "alice", "budget_warning").is_empty());
    ping(&hive);
    hive.wait_for("the 80 % warning", 30, |h| {
        !kinds(h, "alice", "budget_warning").is_empty()
    });
    let warn = &kinds(&hive, "alice", "budget_warning")[0]["payload"];
    assert_eq!(warn["scope"], "agent");
    assert_eq!(warn["measure"], "tokens");
    assert_eq!(warn["spent"], (2 * per_turn) as f64);
    assert!(kinds(&hive, "alice", "over_budget").is_empty());

    // Turn 3 runs to its end and passes 100 %: then alice is held.
    ping(&hive);
    hive.wait_for("alice over budget", 30, |h| {
        h.row("alice").unwrap()["state"] == "over_budget"
    });
    // claude reports a resumed session's cost in all; each turn counts only its own.
    let usd = alice_spent(&hive)["spent_usd"].as_f64().unwrap();
    assert!(
        (usd - 3.0 * usd_per_turn).abs() < 1e-9,
        "{usd} for 3 turns of {usd_per_turn}"
    );
    let over = kinds(&hive, "alice", "over_budget");
    assert_eq!(over.len(), 1);
    assert_eq!(over[0]["payload"]["spent"], (3 * per_turn) as f64);
    assert_eq!(
        kinds(&hive, "alice", "budget_warning").len(),
        1,
        "warned once"
    );
    let told = hive.ok(&["recv", "--as", "manager", "--json"]);
    // (The approval's outcome came to the manager too.)
    let told: Vec<serde_json::Value> = told
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["body"].as_str().unwrap().contains("budget"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0]["from"], "system");
    let body = told[0]["body"].as_str().unwrap();
    assert!(
        body.starts_with("alice is over its daily budget")
            && body.contains(&format!("{} tokens of {limit} tokens", 3 * per_turn)),
        "{body}"
    );

    // The operator was notified at both marks, once each.
    let told = hive.request(serde_json::json!({"cmd": "notifications"}));
    let kinds_told: Vec<&str> = told["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["agent"] == "alice")
        .filter_map(|n| n["kind"].as_str())
        .filter(|k| k.contains("budget"))
        .collect();
    assert_eq!(
        kinds_told,
        ["over_budget", "budget_warning"],
        "newest first: {told}"
    );

    // Held: what is sent waits, unclaimed, and nothing answers.
    hive.ok(&["send", "alice", "ping"]);
    assert!(
        hive.recv_operator(3).is_empty(),
        "a held agent takes no turn"
    );
    let row = hive.row("alice").unwrap();
    assert_eq!(row["inbox_depth"], 1);
    assert!(
        row["state_detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{} of {limit} tokens", 3 * per_turn)),
        "{row}"
    );
    let status = hive.ok(&["status"]);
    assert!(status.contains("over budget"), "{status}");

    // A restart of hive-c0re keeps it held.
    hive.stop();
    hive.serve();
    hive.wait_for("alice running again", 30, |h| {
        let r = h.row("alice").unwrap();
        r["running"] == true && r["state"] == "over_budget"
    });
    assert!(
        hive.recv_operator(3).is_empty(),
        "still held after a restart"
    );

    // The operator raises today's budget: alice answers what waited.
    let raised = hive.ok(&["budget", "alice", "--tokens", &(10 * per_turn).to_string()]);
    assert!(raised.contains("operator (today)"), "{raised}");
    let got = hive.recv_operator(60);
    assert_eq!(got.len(), 1, "{}", hive.log());
    assert_eq!(got[0]["body"], "pong");
    hive.wait_for("alice idle", 30, |h| {
        h.row("alice").unwrap()["state"] == "idle"
    });
    // A /compact's usage reaches the hive and counts like a turn's.
    let before = alice_tokens(&hive);
    hive.ok(&["compact", "alice"]);
    hive.wait_for("the compaction's spend", 60, |h| alice_tokens(h) > before);
    assert_eq!(alice_tokens(&hive) - before, 1010, "one model call");
    let listed = hive.ok(&["budget"]);
    assert!(
        listed.lines().any(|l| l.starts_with("(hive)")) && listed.contains("alice"),
        "{listed}"
    );
    let stats = hive.ok(&["stats"]);
    assert!(stats.contains("spend today"), "{stats}");
}
