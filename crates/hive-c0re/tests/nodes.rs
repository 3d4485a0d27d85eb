//! A hive-c0re daemon as a node, on one host: it names itself, registers,
//! heartbeats, is home to the agents it creates, and is listed down once it
//! stops heartbeating.

mod common;

use std::time::{Duration, Instant};

use common::{Opts, TestHive};

/// The `nodes --json` objects, by name.
fn nodes(hive: &TestHive) -> Vec<serde_json::Value> {
    hive.ok(&["nodes", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One node's object.
fn node(hive: &TestHive, name: &str) -> serde_json::Value {
    nodes(hive)
        .into_iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name} in {:?}", nodes(hive)))
}

/// Names the node the next `serve` starts.
fn set_node(hive: &mut TestHive, name: &str) {
    let args = &mut hive.opts.args;
    if let Some(i) = args.iter().position(|a| a == "--node") {
        args.drain(i..i + 2);
    }
    args.extend(["--node".into(), name.into()]);
}

#[test]
fn a_node_heartbeats_is_home_to_its_agents_and_is_down_once_killed() {
    let mut opts = Opts::default();
    opts.env.push(("HIVE_HEARTBEAT_SECS".into(), "1".into()));
    opts.args.extend(["--node".into(), "alpha".into()]);
    let mut hive = TestHive::start_with(opts);
    assert!(
        hive.log().contains("hive-c0re is serving: node alpha ·"),
        "{}",
        hive.log()
    );

    let alpha = node(&hive, "alpha");
    assert_eq!(alpha["alive"], true, "{alpha}");
    assert_eq!(alpha["agents"], 0);
    let first = alpha["last_heartbeat"].as_str().unwrap().to_owned();
    chrono::DateTime::parse_from_rfc3339(&first).expect("an RFC 3339 time");
    hive.wait_for("alpha's heartbeat to advance", 10, |h| {
        node(h, "alpha")["last_heartbeat"].as_str().unwrap() > first.as_str()
    });

    // The agents it creates live on it; another node is refused with the reason.
    hive.ok(&["spawn", "x"]);
    hive.ok(&["spawn", "y", "--node", "alpha"]);
    let out = hive.cli(&["spawn", "z", "--node", "beta"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("beta is not this node (alpha)") && said.contains("PostgreSQL"),
        "{said}"
    );
    let out = hive.cli(&["spawn", "z", "--node", "beta/1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only a-z, 0-9, '-' and '.'"),
        "{out:?}"
    );
    let rows: Vec<serde_json::Value> = hive
        .ok(&["status", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let homes: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["node"].as_str().unwrap()))
        .collect();
    assert_eq!(homes, [("x", "alpha"), ("y", "alpha")]);
    assert!(
        !hive.ok(&["status"]).contains("NODE"),
        "one node, no column"
    );
    assert_eq!(node(&hive, "alpha")["agents"], 2);

    // Killed, it stops heartbeating; the next daemon on this state, under
    // another name, lists it down and itself alive.
    hive.kill9();
    let killed = Instant::now();
    set_node(&mut hive, "gamma");
    hive.serve();
    // Three intervals of 1 s, and a margin for the second's rounding.
    std::thread::sleep(Duration::from_millis(3_500).saturating_sub(killed.elapsed()));
    let all = nodes(&hive);
    let state: Vec<(&str, bool, u64)> = all
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap(),
                n["alive"].as_bool().unwrap(),
                n["agents"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(state, [("alpha", false, 2), ("gamma", true, 0)]);
    // Rows of two nodes: the status table says which is whose.
    hive.ok(&["spawn", "w"]);
    let status = hive.ok(&["status"]);
    let header = status.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains(" NODE "),
        "{status}"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("w ") && l.contains(" gamma ")),
        "{status}"
    );
    let table = hive.ok(&["nodes"]);
    assert!(table.starts_with("NODE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("alpha") && l.contains("down")),
        "{table}"
    );
}

#[test]
fn a_bad_node_name_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
        .args(["serve", "--node", "Alpha_1"])
        .env("HIVE_STATE_DIR", dir.path().join("state"))
        .env("HIVE_RUN_DIR", dir.path().join("run"))
        .env("HIVE_CONFIG", "/dev/null")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("node name \"Alpha_1\" must start with a lowercase letter a-z or a digit"),
        "{said}"
    );
    assert!(!dir.path().join("state").exists(), "nothing was started");
}
