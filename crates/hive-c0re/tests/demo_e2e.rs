//! The offline demo's hive at work, as `scripts/demo.sh` runs it: the operator
//! asks alice to ask bob; alice writes to bob, bob answers alice, alice reports
//! back, each hop a real claude turn against the scripted model's built-in
//! script. Then alice's turns read as a transcript in the terminal.

mod common;

use common::{ModelSim, TestHive};

const ANSWER: &str =
    "bob answered: you asked \"what is 6 x 7?\"; I am a scripted agent, so my answer is 42.";

#[test]
fn ask_bob_through_alice_then_read_her_transcript() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["spawn", "bob"]);
    hive.ok(&["send", "alice", "ask bob what is 6 x 7?"]);
    let got = hive.recv_operator(120);
    assert_eq!(got.len(), 1, "no report from alice\n{}", hive.log());
    assert_eq!(got[0]["from"], "alice");
    assert_eq!(got[0]["body"], ANSWER);

    // Three model turns, in order: alice asks, bob answers, alice reports.
    let turns: Vec<(String, Vec<String>)> = sim
        .requests()
        .iter()
        .filter(|r| r["step"] == "user_text")
        .map(|r| {
            let rules = r["rules"].as_array().unwrap();
            (
                r["sender"].as_str().unwrap_or_default().to_owned(),
                rules
                    .iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let hops: Vec<(&str, &str)> = turns
        .iter()
        .filter(|(_, rules)| !rules.is_empty())
        .map(|(sender, rules)| (sender.as_str(), rules[0].as_str()))
        .collect();
    assert_eq!(
        hops,
        [("operator", "ask"), ("alice", "answer"), ("bob", "report")],
        "{turns:?}"
    );

    // alice's two turns as the dashboard's terminal shows them.
    hive.wait_for("alice's second turn to end", 30, |h| {
        h.events("alice")
            .iter()
            .filter(|e| e["kind"] == "turn_end")
            .count()
            == 2
    });
    let text = hive.ok(&["events", "alice"]);
    let lines: Vec<&str> = text.lines().collect();
    let has = |want: &dyn Fn(&str) -> bool, what: &str| {
        assert!(lines.iter().any(|l| want(l)), "no {what} in:\n{text}");
    };
    has(
        &|l| l.starts_with("── turn · ") && l.ends_with(" ──"),
        "turn start",
    );
    has(
        &|l| l.contains("from=\"operator\">ask bob what is 6 x 7?"),
        "prompt",
    );
    has(
        &|l| l.starts_with("● session ") && l.contains(" tools"),
        "session line",
    );
    has(
        &|l| l == "● hyperhive:send(bob: question: what is 6 x 7?)",
        "send to bob",
    );
    has(
        &|l| l.starts_with("● hyperhive:send(operator: bob answered: "),
        "report",
    );
    has(&|l| l.starts_with("↳ "), "tool result");
    has(&|l| l == "  Done: answered the inbox.", "answer text");
    has(
        &|l| l.starts_with("✓ done · ") && l.contains(" steps"),
        "outcome",
    );
    let ends: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("── turn end · exit 0 · "))
        .collect();
    assert_eq!(ends.len(), 2, "{text}");
    // Duration, then the cost claude reported for the turn.
    let end_line =
        regex::Regex::new(r"^── turn end · exit 0 · \d+(\.\d)?(ms|s) · \$\d+\.\d{4} ──$").unwrap();
    for end in ends {
        assert!(end_line.is_match(end), "{end}");
    }
    assert!(
        !text.contains("\"kind\""),
        "raw JSON in the transcript:\n{text}"
    );

    // --json keeps the raw events.
    let raw = hive.ok(&["events", "alice", "--json"]);
    for l in raw.lines() {
        let e: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(e["kind"].is_string() && e.get("payload").is_some(), "{l}");
    }
}
