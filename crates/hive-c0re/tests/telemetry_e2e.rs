//! Telemetry end to end: a known sequence of turns gives exactly the expected figures.

mod common;

use common::{ModelSim, TestHive};

#[test]
fn stats_count_exactly_the_turns_that_ran() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let hive = TestHive::with_model(&sim, "process");
    hive.ok(&["spawn", "alice"]);
    for i in 0..3 {
        hive.ok(&["send", "alice", &format!("ping {i}")]);
        let got = hive.recv_operator(60);
        assert_eq!(got.len(), 1, "{}", hive.log());
        hive.wait_for("the turn to end", 30, |h| {
            h.row("alice").unwrap()["state"] == "idle"
        });
    }
    hive.wait_for("3 turns recorded", 30, |h| {
        let v = h.request(serde_json::json!({"cmd": "stats", "agent": "alice"}));
        v["stats"]["agents"][0]["turns"] == 3
    });
    let out = hive.ok(&["stats", "alice", "--since", "1h", "--json"]);
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let a = &s["agents"][0];
    assert_eq!(a["agent"], "alice");
    assert_eq!(a["turns"], 3);
    assert_eq!(a["tool_usage"]["send"], 3, "{a}");
    assert_eq!(a["tool_calls_per_turn"], 1.0);
    assert_eq!(a["exit_classes"]["ok"], 3);
    assert_eq!(a["sent_per_turn"]["operator"], 1.0);
    assert_eq!(a["received_per_turn"]["operator"], 1.0);
    assert_eq!(a["inbox_depth_current"], 0);
    assert_eq!(a["turns_series"].as_array().unwrap().len(), 3);
    assert!(a["duration_p95_ms"].as_f64().unwrap() >= a["duration_p50_ms"].as_f64().unwrap());
    assert!(a["seconds_since_last_turn"].as_f64().unwrap() < 60.0);
    assert_eq!(a["stuck"], false);
    assert_eq!(s["approvals_pending"], 0);
    let table = hive.ok(&["stats"]);
    assert!(
        table.contains("TURNS/MIN")
            && table
                .lines()
                .any(|l| l.starts_with("alice") && l.contains(" 3 ")),
        "{table}"
    );
}
