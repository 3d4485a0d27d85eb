//! A hive-c0re daemon as a node, on one host: it names itself, registers,
//! heartbeats, is home to the agents it creates, and is listed down once it
//! stops heartbeating. Nodes sharing a PostgreSQL database also watch each
//! other: a dead node's agents read `node_down`, the manager and the operator
//! are told once however many nodes notice, and its return is announced.

mod common;

use std::time::{Duration, Instant};

use common::{Opts, TestDatabase, TestHive};

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

/// The `status --json` rows.
fn rows(hive: &TestHive) -> Vec<serde_json::Value> {
    hive.ok(&["status", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `node_down` notifications.
fn node_downs(hive: &TestHive) -> Vec<serde_json::Value> {
    hive.ok(&["notifications", "--json", "--limit", "100"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|n| n["kind"] == "node_down")
        .collect()
}

/// Reads (and acknowledges) the manager's inbox: the bodies `system` sent it.
fn to_manager(hive: &TestHive) -> Vec<String> {
    hive.ok(&["recv", "--as", "manager", "--json", "--max", "100"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["from"] == "system")
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
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
    let homes: Vec<(String, String)> = rows(&hive)
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().into(),
                r["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        homes,
        [("x".into(), "alpha".into()), ("y".into(), "alpha".into())]
    );
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
    // A sqlite hive is one daemon's: gamma runs alpha's agents, so none of
    // them is `node_down`, and an old name of the host is announced to no one.
    std::thread::sleep(Duration::from_millis(1_200));
    assert!(
        rows(&hive).iter().all(|r| r["state"] != "node_down"),
        "{:?}",
        rows(&hive)
    );
    assert!(node_downs(&hive).is_empty());
    assert!(to_manager(&hive).is_empty());
}

#[test]
fn nodes_on_one_database_announce_a_dead_node_once_and_its_return() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let node = |name: &str| {
        let mut o = Opts::postgres(&db, name);
        o.env.push(("HIVE_HEARTBEAT_SECS".into(), "1".into()));
        TestHive::start_with(o)
    };
    let mut alpha = node("alpha");
    alpha.ok(&["spawn", "x"]);
    alpha.ok(&["spawn", "y"]);
    // Two watchers: whichever heartbeat finds alpha silent first tells the hive.
    let gamma = node("gamma");
    let delta = node("delta");
    gamma.ok(&["spawn", "w"]);
    alpha.kill9();

    gamma.wait_for("alpha's node_down notification", 15, |h| {
        !node_downs(h).is_empty()
    });
    // Two more beats of each watcher: still one.
    std::thread::sleep(Duration::from_millis(2_200));
    let told = node_downs(&delta);
    assert_eq!(told.len(), 1, "{told:?}");
    let text = told[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Node alpha is down: no heartbeat for ")
            && text.ends_with(
                "2 agents live there (x, y): they take no turns until the node is back; \
                 messages to them wait in their inboxes."
            ),
        "{text}"
    );
    assert_eq!(to_manager(&gamma), [text], "the manager reads it too, once");

    // alpha's agents read `node_down` since alpha's last heartbeat, on every
    // other node; gamma's own agent does not.
    for hive in [&gamma, &delta] {
        let now = rows(hive);
        let of = |name: &str| now.iter().find(|r| r["name"] == name).unwrap().clone();
        for name in ["x", "y"] {
            let r = of(name);
            assert_eq!(
                (
                    r["state"].as_str(),
                    r["state_detail"].as_str(),
                    r["running"].as_bool()
                ),
                (
                    Some("node_down"),
                    Some("no heartbeat from alpha"),
                    Some(false)
                ),
                "{r}"
            );
            assert_eq!(r["node"], "alpha");
        }
        assert_ne!(of("w")["state"], "node_down", "{}", of("w"));
    }
    let status = gamma.ok(&["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("x ") && l.contains("node down · no heartbeat from alpha")),
        "{status}"
    );
    // The needs-you list names the node once, not each of its agents.
    let needs: Vec<serde_json::Value> = gamma
        .ok(&["needs", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let downs: Vec<_> = needs.iter().filter(|i| i["kind"] == "node_down").collect();
    assert_eq!(downs.len(), 1, "{needs:?}");
    assert_eq!(
        (downs[0]["node"].as_str(), downs[0]["text"].as_str()),
        (
            Some("alpha"),
            Some("node alpha stopped heartbeating: its 2 agents wait")
        )
    );

    // A message to an agent of the dead node is taken and waits in its inbox.
    let sent = gamma.ok(&["send", "x", "are you there?"]);
    assert!(
        sent.starts_with("sent message #") && sent.trim_end().ends_with(" to x"),
        "{sent}"
    );
    let x = rows(&delta).into_iter().find(|r| r["name"] == "x").unwrap();
    assert_eq!(x["inbox_depth"], 1, "{x}");

    // alpha comes back: its first heartbeat clears the mark and tells the manager, once.
    alpha.serve();
    let mut back = vec![];
    gamma.wait_for("alpha's return told to the manager", 15, |h| {
        back.extend(to_manager(h));
        !back.is_empty()
    });
    std::thread::sleep(Duration::from_millis(1_200));
    back.extend(to_manager(&gamma));
    assert_eq!(back.len(), 1, "{back:?}");
    assert!(
        back[0].starts_with("Node alpha is back after ")
            && back[0].ends_with(
                " down (since its last heartbeat before). 2 agents live there (x, y): \
                 what waited in their inboxes reaches them again as they take turns."
            ),
        "{}",
        back[0]
    );
    assert!(
        rows(&gamma).iter().all(|r| r["state"] != "node_down"),
        "{:?}",
        rows(&gamma)
    );
    assert_eq!(
        node_downs(&gamma).len(),
        1,
        "a return is no new notification"
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

/// Three nodes, each in a network namespace of its own, share one PostgreSQL
/// database that they reach over their own veth link: each lists all three
/// alive; with one's link cut the other two list it down, and up again once
/// the link is back, and it sees all three alive itself.
#[test]
fn three_nodes_share_one_database_over_their_links_and_see_a_cut_one_down_then_up() {
    use hive_c0re::store::pg::TestCluster;
    use hive_c0re::store::pg::test_cluster::Network;
    if TestCluster::missing() || !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (network namespaces) and PostgreSQL");
        return;
    }
    let lan = common::Lan::new(3);
    let db_ns = lan.db.clone();
    let put_in_db_ns = move |c: &mut std::process::Command| db_ns.put(c);
    let cluster = TestCluster::start_on(
        false,
        &Network {
            listen: Some("*"),
            clients: Some(common::Lan::CLIENTS),
            prepare: Some(&put_in_db_ns),
        },
    )
    .expect("a throwaway PostgreSQL cluster in its own network namespace");
    let database = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cluster.database());

    let names = ["alpha", "beta", "gamma"];
    let hives: Vec<TestHive> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut opts = Opts {
                netns: Some(lan.nodes[i].clone()),
                ..Opts::default()
            };
            opts.env.push(("HIVE_HEARTBEAT_SECS".into(), "1".into()));
            // The password never on the command line: from the environment.
            opts.env
                .push(("PGPASSWORD".into(), cluster.password().to_owned()));
            opts.args.extend([
                "--node".into(),
                (*name).into(),
                "--database".into(),
                cluster.url_at(&common::Lan::db_addr(i), &database),
            ]);
            TestHive::start_with(opts)
        })
        .collect();

    let alive = |h: &TestHive, name: &str| node(h, name)["alive"] == true;
    for h in &hives {
        h.wait_for("all three nodes alive", 30, |h| {
            names.iter().all(|n| alive(h, n))
        });
    }

    lan.cut(2);
    let cut_at = Instant::now();
    for h in &hives[..2] {
        h.wait_for("gamma listed down", 30, |h| !alive(h, "gamma"));
    }
    eprintln!(
        "gamma listed down {:?} after its link was cut",
        cut_at.elapsed()
    );
    assert!(names[..2].iter().all(|n| alive(&hives[0], n)));

    lan.restore(2);
    let back_at = Instant::now();
    for h in &hives[..2] {
        h.wait_for("gamma listed alive again", 60, |h| alive(h, "gamma"));
    }
    eprintln!(
        "gamma listed alive {:?} after its link came back",
        back_at.elapsed()
    );
    hives[2].wait_for("gamma to see all three alive", 60, |h| {
        names.iter().all(|n| alive(h, n))
    });
}

/// A repeating schedule fires once per slot for the whole hive: two nodes on
/// one database both run the scheduler (beta alone goes on firing once alpha
/// is killed), and together they store one message a second, not two.
#[test]
fn a_repeating_schedule_fires_once_per_slot_across_nodes() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut alpha = TestHive::start_with(Opts::postgres(&db, "alpha"));
    alpha.ok(&["spawn", "x"]);
    alpha.ok(&["stop", "x"]);
    alpha.ok(&["schedule", "add", "x", "every:1s", "tick"]);
    // beta starts with the schedule stored: both schedulers know it.
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    let depth = |h: &TestHive| h.row("x").unwrap()["inbox_depth"].as_u64().unwrap_or(0);
    beta.wait_for("the first tick", 10, |h| depth(h) >= 1);
    let (d0, t0) = (depth(&beta), Instant::now());
    std::thread::sleep(Duration::from_secs(6));
    let (d1, slots) = (depth(&beta), t0.elapsed().as_secs_f64());
    let fired = (d1 - d0) as f64;
    assert!(
        fired >= slots - 2.0 && fired <= slots + 1.0,
        "{fired} ticks in {slots:.1} one-second slots with two nodes"
    );
    alpha.kill9();
    beta.wait_for("beta alone to go on firing", 10, |h| depth(h) >= d1 + 2);
}

/// An agent is started, stopped and reached into only by its home node: on
/// another node those verbs are refused with a sentence naming its home (on
/// another host a `start` there started a second harness of the same agent;
/// on this one the uid registry stopped it with a misleading reason), and
/// the agent goes on running at home untouched.
#[test]
fn lifecycle_verbs_for_another_nodes_agent_are_refused_and_start_no_second_harness() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let alpha = TestHive::start_with(Opts::postgres(&db, "alpha"));
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| {
        h.row("x").unwrap()["running"] == true
    });
    for verb in [
        &["start", "x"][..],
        &["restart", "x"],
        &["stop", "x"],
        &["kill", "x"],
        &["compact", "x"],
        &["destroy", "x"],
    ] {
        let out = alpha.cli(verb);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{verb:?} went through on alpha");
        assert!(
            err.contains("x lives on node beta, not on this node (alpha)"),
            "{verb:?}: {err}"
        );
    }
    assert_eq!(
        alpha.row("x").unwrap()["running"],
        false,
        "alpha runs x too"
    );
    let row = beta.row("x").unwrap();
    assert_eq!(row["running"], true, "{row}");
    assert_eq!(row["node"], "beta", "{row}");
}
