//! A hive-c0re daemon as a node, on one host: it names itself, registers,
//! heartbeats, is home to the agents it creates, and is listed down once it
//! stops heartbeating. Nodes sharing a PostgreSQL database also watch each
//! other: a dead node's agents read `node_down`, the manager and the operator
//! are told once however many nodes notice, and its return is announced.

mod common;

use std::time::{Duration, Instant};

use common::{ModelSim, Opts, TestDatabase, TestHive, pids_running};
use hive_c0re::store::{Db, NewRequest};

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

/// Reads (and acknowledges) the manager's inbox: the bodies `system` sent it.
fn to_manager(hive: &TestHive) -> Vec<String> {
    hive.ok(&["recv", "--as", "manager", "--json", "--max", "100"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|m| m["from"] == "system")
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

/// The outcome of node request `id` once its node has carried it out (at most 10 s).
async fn outcome(store: &Db, id: i64) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(o) = store.request(id).await.unwrap().unwrap().outcome() {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "the node left request {id} undone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    // host.sock answers before start-up ends with this line (the manager is made first).
    hive.wait_for("the serving line naming the node", 20, |h| {
        h.log().contains("hive-c0re is serving: node alpha ·")
    });

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
    assert!(hive.notifications_of("node_down").is_empty());
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
    // A config change for x waits for approval while alpha dies.
    let repo = alpha.state_dir().join("configs").join("x");
    std::fs::write(repo.join("agent.toml"), "turn_timeout = \"7s\"\n").unwrap();
    common::git(&repo, &["commit", "-qam", "a shorter turn"]);
    let sha = common::git(&repo, &["rev-parse", "HEAD"]);
    let change = approval_id(&alpha.ok(&["request-apply-commit", "x", sha.trim()]));
    let deployed = alpha.row("x").unwrap()["deployed_sha"].clone();
    alpha.kill9();

    gamma.wait_for("alpha's node_down notification", 15, |h| {
        !h.notifications_of("node_down").is_empty()
    });
    // Two more beats of each watcher: still one.
    std::thread::sleep(Duration::from_millis(2_200));
    let told = delta.notifications_of("node_down");
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
    // Steering a dead node's agent is refused at once, and nothing is queued
    // to run whenever alpha returns.
    let out = delta.cli(&["restart", "x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("alpha is down (no heartbeat for ")
            && err.contains(
                "): `restart x` was not queued; try again when it is back, or see `hive-c0re nodes`"
            ),
        "{err}"
    );
    // Its approval fails rather than deploy a config alpha cannot restart x with.
    let out = gamma.cli(&["approve", &change]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`restart x` was not queued"),
        "{err}"
    );
    assert_eq!(gamma.row("x").unwrap()["deployed_sha"], deployed);
    let told = to_manager(&gamma);
    assert!(
        told.len() == 1
            && told[0].starts_with(&format!(
                "Approval #{change} (apply_commit x) was approved but failed: alpha is down"
            )),
        "{told:?}"
    );

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
        gamma.notifications_of("node_down").len(),
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

/// `hop` from the operator makes ping pass it to pong, and pong's answer goes
/// to the operator; each `nN` is answered with text (the turn acknowledges it).
const CHAIN: &str = r#"
[[rule]]
name = "hop"
sender = "operator"
user_text = "hop"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "pong", body = "hop from ping" }

[[rule]]
name = "back"
sender = "ping"
user_text = "hop from ping"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "chain done" }

[[rule]]
name = "count"
each_message = true
user_regex = '^n\d+$'
[[rule.reply]]
text = "got {{body}}"
"#;

/// The message ids of every turn of `agent` that started, and of each that
/// ran to its end (and so acknowledged them), from its events.
fn turns_of(hive: &TestHive, agent: &str) -> (Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let mut events: Vec<serde_json::Value> = hive
        .events(agent)
        .into_iter()
        .filter(|e| e["kind"] == "turn_start" || e["kind"] == "turn_end")
        .collect();
    events.sort_by_key(|e| e["id"].as_i64());
    let mut open: Option<Vec<i64>> = None;
    let (mut started, mut done) = (vec![], vec![]);
    for e in events {
        if e["kind"] == "turn_start" {
            let ids: Vec<i64> = e["payload"]["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_i64().unwrap())
                .collect();
            started.push(ids.clone());
            open = Some(ids);
        } else if let Some(ids) = open.take()
            && matches!(e["payload"]["exit_class"].as_str(), Some("ok" | "retried"))
        {
            done.push(ids);
        }
    }
    (started, done)
}

/// The id in `sent message #ID to NAME`.
fn sent_id(out: &str) -> i64 {
    out.trim()
        .strip_prefix("sent message #")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a send's answer: {out}"))
}

/// Three nodes, each in a network namespace of its own, share one PostgreSQL
/// database that they reach over their own veth link, with real claude
/// agents (the scripted model, one per namespace): ping on alpha, pong on beta.
/// - The operator on gamma sends to ping, ping to pong, pong to the operator.
/// - beta's hive-c0re is killed -9 during a stream of sends to pong from
///   gamma, which go on while it is dead, and restarted.
/// - beta's link is cut for 15 s (longer than its 4 s lease: its harness is
///   stopped, the others list it down), while alpha sends to pong; the link
///   comes back, beta is listed alive again and takes pong's lease back.
///
/// Every message to pong is acknowledged by exactly one turn of its that ran
/// to its end, and the model saw each.
/// `nodes` network namespaces joined to one for the database, and a
/// throwaway PostgreSQL cluster listening there with a fresh database (its name).
fn lan_with_cluster(nodes: usize) -> (common::Lan, hive_c0re::store::pg::TestCluster, String) {
    use hive_c0re::store::pg::TestCluster;
    use hive_c0re::store::pg::test_cluster::Network;
    let lan = common::Lan::new(nodes);
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
    (lan, cluster, database)
}

#[test]
fn three_nodes_pass_messages_along_and_lose_none_to_a_kill_9_or_a_15_s_link_cut() {
    use hive_c0re::store::pg::TestCluster;
    if TestCluster::missing() || !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (network namespaces) and PostgreSQL");
        return;
    }
    if !common::e2e_ready() {
        return;
    }
    let (lan, cluster, database) = lan_with_cluster(3);

    let names = ["alpha", "beta", "gamma"];
    let sims: Vec<ModelSim> = (0..3)
        .map(|i| ModelSim::start_in(Some(CHAIN), Some(&lan.nodes[i])))
        .collect();
    let mut hives: Vec<TestHive> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut opts = Opts {
                netns: Some(lan.nodes[i].clone()),
                ..Opts::default()
            };
            quick_leases(&mut opts, 4);
            opts.env.extend(sims[i].env());
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

    // (A node not registered yet is not alive.)
    let alive = |h: &TestHive, name: &str| {
        nodes(h)
            .iter()
            .any(|n| n["name"] == name && n["alive"] == true)
    };
    for h in &hives {
        h.wait_for("all three nodes alive", 30, |h| {
            names.iter().all(|n| alive(h, n))
        });
    }

    // The chain: gamma's operator -> ping on alpha -> pong on beta -> operator.
    hives[0].ok(&["spawn", "ping"]);
    hives[1].ok(&["spawn", "pong"]);
    for (h, agent) in [(&hives[0], "ping"), (&hives[1], "pong")] {
        h.wait_for("the agent running at home", 30, |h| {
            h.row(agent).unwrap()["running"] == true
        });
    }
    hives[2].ok(&["send", "ping", "hop"]);
    let got = hives[2].recv_operator(120);
    assert_eq!(got.len(), 1, "{got:?}\n{}", hives[1].log());
    assert_eq!(
        (got[0]["from"].as_str(), got[0]["body"].as_str()),
        (Some("pong"), Some("chain done"))
    );
    // Each model server listens in its node's namespace.
    let seen = |i: usize| -> String {
        lan.nodes[i].enter(|| {
            sims[i]
                .requests()
                .iter()
                .map(|r| r["messages"].to_string())
                .collect()
        })
    };
    let saw = |i: usize, text: &str| seen(i).contains(text);
    assert!(saw(0, ">hop</message>") && saw(1, ">hop from ping</message>"));

    // A stream of sends to pong from gamma; beta is killed -9 a third of the
    // way in and started again two thirds in.
    let mut sent = vec![];
    for i in 0..24 {
        if i == 8 {
            hives[1].kill9();
        }
        if i == 16 {
            hives[1].serve();
        }
        sent.push(sent_id(&hives[2].ok(&["send", "pong", &format!("n{i}")])));
        std::thread::sleep(Duration::from_millis(100));
    }
    let settled = |h: &TestHive| {
        let r = h.row("pong").unwrap();
        r["inbox_depth"] == 0 && r["state"] == "idle"
    };
    hives[1].wait_for("pong to take every message of the stream", 120, settled);

    // beta's link is cut for 15 s while alpha sends to pong.
    lan.cut(1);
    let cut_at = Instant::now();
    for i in 24..32 {
        sent.push(sent_id(&hives[0].ok(&["send", "pong", &format!("n{i}")])));
        std::thread::sleep(Duration::from_millis(200));
    }
    for h in [&hives[0], &hives[2]] {
        h.wait_for("beta listed down", 30, |h| !alive(h, "beta"));
    }
    eprintln!(
        "beta listed down {:?} after its link was cut",
        cut_at.elapsed()
    );
    assert!(alive(&hives[0], "gamma") && alive(&hives[2], "alpha"));
    std::thread::sleep(Duration::from_secs(15).saturating_sub(cut_at.elapsed()));
    lan.restore(1);
    let back_at = Instant::now();
    for h in [&hives[0], &hives[2]] {
        h.wait_for("beta listed alive again", 60, |h| alive(h, "beta"));
    }
    eprintln!(
        "beta listed alive {:?} after its link came back",
        back_at.elapsed()
    );
    hives[1].wait_for("beta to see all three alive", 60, |h| {
        names.iter().all(|n| alive(h, n))
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !settled(&hives[1]) {
        if Instant::now() > deadline {
            for (n, h) in names.iter().zip(&hives) {
                eprintln!("--- {n} ---\n{}", h.log());
            }
            panic!("pong did not take what came during the cut");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = hives[1].log();
    assert!(
        log.contains("harness killed: its lease could not be renewed"),
        "beta ran pong on with its lease run out\n{log}"
    );
    assert_eq!(hives[1].row("pong").unwrap()["running"], true);

    // Exactly once: pong's inbox is empty (settled above), no message was
    // acknowledged by two turns that ran to their end, and each by one. A
    // turn's acknowledgements are stored with its `turn_end` or not at all:
    // a turn the kill -9 or the cut stopped, ended `interrupted` by
    // hive-c0re, acknowledged nothing, and its messages came again.
    let (started, turns) = turns_of(&hives[0], "pong");
    // Every turn has its end, those the kill -9 or the cut stopped too.
    let ends = hives[0]
        .events("pong")
        .iter()
        .filter(|e| e["kind"] == "turn_end")
        .count();
    assert_eq!(ends, started.len(), "a turn without its end: {started:?}");
    let mut acked: Vec<i64> = turns.iter().flatten().copied().collect();
    acked.sort_unstable();
    let before = acked.len();
    acked.dedup();
    assert_eq!(
        before,
        acked.len(),
        "a message acknowledged twice: {turns:?}"
    );
    for id in &sent {
        assert!(
            acked.contains(id),
            "message #{id} is in no turn that ended: started {started:?}, completed {turns:?}"
        );
    }
    assert!(
        acked.iter().filter(|id| !sent.contains(id)).count() <= 1,
        "only the chain's hop besides the stream: {turns:?}"
    );
    let pongs_model = seen(1);
    for i in 0..32 {
        assert!(
            pongs_model.contains(&format!(">n{i}</message>")),
            "the model never saw n{i}"
        );
    }
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

/// Waits until `hive` lists node `name` (a daemon answers on host.sock a
/// moment before it has registered).
fn registered(hive: &TestHive, name: &str) {
    hive.wait_for(&format!("node {name} registered"), 10, |h| {
        nodes(h).iter().any(|n| n["name"] == name)
    });
}

/// How many times `hive`'s daemon started a harness for `agent`.
fn harness_starts(hive: &TestHive, agent: &str) -> usize {
    std::fs::read_to_string(hive.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("harness started") && l.contains(&format!("agent={agent} ")))
        .count()
}

/// `opts` with the hive's manager, made by the first node started: that
/// node keeps the hive's config repos.
fn with_manager(mut opts: Opts) -> Opts {
    opts.args.retain(|a| a != "--no-manager");
    opts
}

/// Whether `agent`'s harness runs, as its home node `hive` says.
fn running(hive: &TestHive, agent: &str) -> bool {
    hive.row(agent).unwrap()["running"] == true
}

/// A node on `db` that serves a dashboard (its address is where other nodes reach its shells).
fn with_dashboard(db: &TestDatabase, name: &str) -> Opts {
    let mut opts = Opts::postgres(db, name);
    opts.args.retain(|a| a != "--no-dashboard");
    opts.args
        .extend(["--dashboard".into(), "127.0.0.1:0".into()]);
    opts
}

/// A refused CLI verb's sentence.
fn refused(hive: &TestHive, args: &[&str]) -> String {
    let out = hive.cli(args);
    assert!(!out.status.success(), "{args:?} went through");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// An agent runs only on its home node, and every steering verb the
/// operator gives another node is carried out there through the store: the
/// home node's harness stops and starts, its refusals come back word for
/// word, and the asking node never starts a harness of its own (on another
/// host a `start` there used to start a second harness of the same agent).
/// `spawn --node` makes an agent at home on the node it names.
#[test]
fn lifecycle_verbs_for_another_nodes_agent_run_on_its_home_node_and_start_no_second_harness() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let alpha = TestHive::start_with(Opts::postgres(&db, "alpha"));
    let beta = TestHive::start_with(with_dashboard(&db, "beta"));
    registered(&alpha, "beta");
    alpha.ok(&["spawn", "x", "--node", "beta"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    assert_eq!(alpha.row("x").unwrap()["node"], "beta");
    assert_eq!(harness_starts(&beta, "x"), 1);

    // Each verb has taken effect on beta when alpha answers: a stop has
    // stopped the harness, a start launches one (as a start on beta would).
    let up = |what: &str| beta.wait_for(what, 10, |h| running(h, "x"));
    alpha.ok(&["stop", "x"]);
    assert!(
        !running(&beta, "x"),
        "stop from alpha left x running on beta"
    );
    alpha.ok(&["start", "x"]);
    up("x started from alpha");
    alpha.ok(&["restart", "x"]);
    up("x restarted from alpha");
    alpha.ok(&["kill", "x"]);
    assert!(
        !running(&beta, "x"),
        "kill from alpha left x running on beta"
    );
    // A refusal at home comes back as the operator would read it there.
    let err = refused(&alpha, &["compact", "x"]);
    assert!(
        err.contains("x is not running: start it with hive-c0re start x"),
        "{err}"
    );
    alpha.ok(&["start", "x"]);
    up("x started again from alpha");
    let err = refused(&alpha, &["cancel", "x"]);
    assert!(
        err.contains("x has no turn running and is not napping or queued"),
        "{err}"
    );
    let err = refused(&alpha, &["compact", "x"]);
    assert!(
        err.contains("x has no claude session yet: there is nothing to compact"),
        "{err}"
    );
    assert!(running(&beta, "x"));
    // Spawn, start, restart, start: four harnesses, all on beta.
    beta.wait_for("x's fourth harness", 10, |h| harness_starts(h, "x") >= 4);
    assert_eq!(harness_starts(&beta, "x"), 4);

    // The shell runs on beta too (see the node-shell tests), relayed by alpha.
    let address = node(&alpha, "beta")["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("http://127.0.0.1:"), "{address}");
    // An unknown node is no home.
    let err = refused(&alpha, &["spawn", "y", "--node", "gamma"]);
    assert!(
        err.contains("there is no node gamma in this hive: see hive-c0re nodes"),
        "{err}"
    );
    assert!(alpha.row("y").is_none());

    alpha.ok(&["destroy", "x"]);
    assert!(beta.row("x").is_none(), "x outlived its destroy on beta");
    assert_eq!(
        harness_starts(&alpha, "x"),
        0,
        "alpha started a harness of x"
    );
}

/// The approval id in `approval #N queued`.
fn approval_id(queued: &str) -> String {
    queued
        .trim()
        .trim_start_matches("approval #")
        .trim_end_matches(" queued")
        .to_owned()
}

/// A spawn request may name the new agent's home node: the approval shows
/// it, and approving it on another node creates the agent there. Two
/// operators approving a config change at the same moment on two nodes:
/// one wins, the other is told it was decided, and the agent's home node
/// restarts it once with the new config.
#[test]
fn a_double_approve_on_two_nodes_deploys_once_on_the_agents_home_node() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut alpha = with_manager(Opts::postgres(&db, "alpha"));
    alpha
        .env
        .push(("HIVE_CONFIG_POLL_SECS".into(), "0.2".into()));
    let alpha = TestHive::start_with(alpha);
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    registered(&alpha, "beta");
    let id = approval_id(&alpha.ok(&["request-spawn", "x", "--node", "beta"]));
    let shown = beta.ok(&["approvals", "show", &id]);
    assert!(shown.contains("\nspawn x on node beta\n"), "{shown}");
    alpha.ok(&["approve", &id]);
    beta.wait_for("x, approved on alpha, running on beta", 10, |h| {
        running(h, "x")
    });
    assert_eq!(beta.row("x").unwrap()["node"], "beta");

    // x's config repo is on alpha, the manager's node, which keeps the repos.
    let repo = alpha.state_dir().join("configs").join("x");
    alpha.wait_for("x's config repo made on alpha", 20, |_| {
        repo.join(".git").is_dir()
    });
    assert!(
        !beta.state_dir().join("configs").join("x").exists(),
        "beta made x's repo"
    );
    std::fs::write(repo.join("agent.toml"), "turn_timeout = \"7s\"\n").unwrap();
    common::git(&repo, &["commit", "-qam", "a shorter turn"]);
    let sha = common::git(&repo, &["rev-parse", "HEAD"]);
    let id = approval_id(&beta.ok(&["request-apply-commit", "x", sha.trim()]));
    let before = harness_starts(&beta, "x");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| alpha.cli(&["approve", &id]));
        let b = s.spawn(|| beta.cli(&["approve", &id]));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        a.status.success() ^ b.status.success(),
        "alpha: {a:?}\nbeta: {b:?}"
    );
    let lost = if a.status.success() { &b } else { &a };
    let err = String::from_utf8_lossy(&lost.stderr);
    assert!(
        err.contains(&format!(
            "approval #{id} was decided already (approved on node {}): an approval can be decided once",
            if a.status.success() { "alpha" } else { "beta" }
        )),
        "{err}"
    );
    // One restart, on beta, and no more.
    beta.wait_for("x's restart with the new config", 10, |h| {
        harness_starts(h, "x") > before
    });
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(harness_starts(&beta, "x"), before + 1, "deployed twice");
    assert_eq!(
        harness_starts(&alpha, "x"),
        0,
        "alpha started a harness of x"
    );
    let deployed = beta.ok(&["approvals", "--json"]);
    assert!(
        deployed
            .lines()
            .any(|l| l.contains(&format!("\"id\":{id},")) && l.contains("\"status\":\"approved\"")),
        "{deployed}"
    );
}

/// The approval's status says what happened. A deploy whose restart fails
/// (x's home node, beta, takes no request) leaves the new config deployed:
/// the approval reads `approved` with a note saying the restart failed and
/// how to start it, where it read `failed` as if nothing had changed. An
/// approval whose node is killed while carrying it out is marked failed
/// when that node comes back, with a note to check and ask again, where it
/// stayed `approved` with its action never finished.
#[test]
fn an_approvals_status_says_what_was_carried_out_when_a_restart_fails_or_a_crash_cuts_it_off() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut alpha = with_manager(Opts::postgres(&db, "alpha"));
    alpha.env.push(("HIVE_STEER_WAIT_SECS".into(), "2".into()));
    alpha
        .env
        .push(("HIVE_APPROVAL_CUT_OFF_SECS".into(), "1".into()));
    let mut alpha = TestHive::start_with(alpha);
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    registered(&alpha, "beta");
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    let repo = alpha.state_dir().join("configs").join("x");
    alpha.wait_for("x's config repo made on alpha", 20, |_| {
        repo.join(".git").is_dir()
    });
    std::fs::write(repo.join("agent.toml"), "turn_timeout = \"7s\"\n").unwrap();
    common::git(&repo, &["commit", "-qam", "a shorter turn"]);
    let sha = common::git(&repo, &["rev-parse", "HEAD"]);
    let first = approval_id(&alpha.ok(&["request-apply-commit", "x", sha.trim()]));
    let second = approval_id(&alpha.ok(&["request-apply-commit", "x", sha.trim()]));
    let approval = |hive: &TestHive, id: &str| {
        let all = hive.ok(&["approvals", "--json"]);
        all.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|a| a["id"].as_i64().map(|n| n.to_string()).as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no approval #{id} in {all}"))
    };

    let pid = nix::unistd::Pid::from_raw(beta.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let out = alpha.cli(&["approve", &first]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is deployed, but the restart failed"),
        "{err}"
    );
    let a = approval(&alpha, &first);
    assert_eq!(a["status"], "approved", "{a}");
    let note = a["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("the restart failed") && note.contains("hive-c0re restart x"),
        "{a}"
    );
    assert_eq!(alpha.row("x").unwrap()["deployed_sha"], sha.trim()[..12]);

    // Killed while waiting on beta to restart x for the second.
    let mut approving = alpha.command().args(["approve", &second]).spawn().unwrap();
    alpha.wait_for("the second approval decided", 10, |h| {
        approval(h, &second)["status"] == "approved"
    });
    alpha.kill9();
    let _ = approving.wait();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    alpha.serve();
    alpha.wait_for("the cut-off approval settled", 10, |h| {
        approval(h, &second)["status"] != "approved"
    });
    let a = approval(&alpha, &second);
    assert_eq!(a["status"], "failed", "{a}");
    assert!(
        a["note"]
            .as_str()
            .unwrap_or_default()
            .contains("hive-c0re stopped while carrying it out"),
        "{a}"
    );
    // The first, settled before the crash, is left as it was.
    assert_eq!(approval(&alpha, &first)["status"], "approved");
    let mut told = vec![];
    alpha.wait_for("the manager told of the cut-off approval", 10, |h| {
        told.extend(to_manager(h));
        told.iter().any(|m| {
            m.contains(&format!("Approval #{second}"))
                && m.contains("stopped while carrying it out")
        })
    });
}

/// The hive's config repos are on the manager's node's disk, the one its
/// container binds, so the manager can edit every agent's: an agent spawned
/// on another node gets its repo there, holding its deployed config (whose
/// commit it then names as deployed). The operator on any node makes,
/// shows, edits and requests a repo there, approves anywhere, and sees what
/// that node reads of it (needs an update, moved on past a request); a
/// purge removes the repo there too.
#[test]
fn another_nodes_agent_has_its_config_repo_on_the_managers_node_for_every_node_to_edit() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut alpha = with_manager(Opts::postgres(&db, "alpha"));
    alpha
        .env
        .push(("HIVE_CONFIG_POLL_SECS".into(), "0.2".into()));
    let alpha = TestHive::start_with(alpha);
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    registered(&alpha, "beta");
    assert_eq!(alpha.row("manager").unwrap()["node"], "alpha");
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    let repo = alpha.state_dir().join("configs").join("x");
    let deployed = |h: &TestHive| h.row("x").unwrap()["deployed_sha"].clone();
    beta.wait_for("x's repo made on alpha and its commit deployed", 20, |h| {
        deployed(h).is_string()
    });
    let made = common::git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    assert_eq!(deployed(&beta), made[..12]);
    assert_eq!(alpha.row("x").unwrap()["needs_update"], false);
    assert!(
        !beta.state_dir().join("configs").join("x").exists(),
        "beta made a repo of x's"
    );

    let shown = beta.ok(&["config", "show", "x"]);
    assert_eq!(shown, alpha.ok(&["config", "show", "x"]));
    assert!(shown.contains("model = "), "{shown}");
    let edited = format!("turn_timeout = \"9s\"\n{shown}");
    let out = beta
        .spawn_with_input(&["config", "commit", "x", "-m", "from beta"], &edited)
        .wait_with_output()
        .unwrap();
    let sha = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && sha.len() == 40,
        "{sha}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Committed in alpha's repo, where the manager edits it too.
    assert_eq!(common::git(&repo, &["rev-parse", "HEAD"]).trim(), sha);
    beta.wait_for("x needing an update, as alpha read its repo", 20, |h| {
        h.row("x").unwrap()["needs_update"] == true
    });

    let id = approval_id(&beta.ok(&["request-apply-commit", "x", &sha]));
    let pending = beta.ok(&["approvals", "show", &id]);
    assert!(pending.contains("turn_timeout"), "{pending}");
    // The manager moves the repo on past the request: beta warns of it.
    std::fs::write(repo.join("agent.toml"), format!("# later\n{edited}")).unwrap();
    common::git(&repo, &["commit", "-qam", "later, by the manager"]);
    let later = common::git(&repo, &["rev-parse", "HEAD"]).trim().to_owned();
    beta.wait_for("the repo-moved warning on beta", 20, |h| {
        h.ok(&["approvals", "show", &id]).contains(&format!(
            "its head {} is 1 commit ahead of the requested {}",
            &later[..12],
            &sha[..12]
        ))
    });
    beta.ok(&["approve", &id]);
    beta.wait_for("x deployed at the commit made from beta", 20, |h| {
        deployed(h) == sha[..12]
    });
    // A commit alpha's repo does not hold is refused by alpha, in its words.
    let err = refused(&beta, &["request-apply-commit", "x", "0123456789abcdef"]);
    assert!(err.contains("0123456789abcdef"), "{err}");

    // A future agent's repo is made on alpha too, and shown from beta.
    let made = beta.ok(&["init-config", "z"]);
    let at = alpha.state_dir().join("configs/z");
    assert!(
        made.starts_with(&format!(
            "created the config repo of z at {} on node alpha: ",
            at.display()
        )),
        "{made}"
    );
    assert!(at.join(".git").is_dir());
    assert!(!beta.state_dir().join("configs/z").exists());
    assert!(beta.ok(&["config", "show", "z"]).contains("model = "));
    let err = refused(&beta, &["config", "show", "nobody"]);
    assert!(
        err.contains("nobody has no config repo on node alpha, which keeps it"),
        "{err}"
    );

    // Destroying x with its files removes its repo on alpha as well.
    beta.ok(&["destroy", "x", "--purge"]);
    assert!(!repo.exists(), "x's repo outlived its purge");
    assert!(beta.row("x").is_none());
}

/// A node found down is announced once the manager's message is stored:
/// while the manager's inbox is at its cap the announcement is tried again
/// every heartbeat, never dropped, and then made once; so is its return.
/// The manager may send to itself, so it can keep its own inbox at the cap
/// and nap: a node's death must reach the operator all the same, and its
/// return must clear the down mark, or its next death would be told to no one.
#[test]
fn a_down_node_is_told_to_the_operator_even_while_the_managers_inbox_is_full() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let start = |name: &str| {
        let mut o = Opts::postgres(&db, name);
        o.env.push(("HIVE_HEARTBEAT_SECS".into(), "1".into()));
        o.args.extend(["--inbox-cap".into(), "1".into()]);
        TestHive::start_with(o)
    };
    let mut alpha = start("alpha");
    let gamma = start("gamma");
    registered(&gamma, "alpha");
    let (rt, store) = db.store();
    rt.block_on(store.send("manager", "manager", "fills my own inbox"))
        .unwrap();
    alpha.kill9();
    gamma.wait_for("alpha's node_down notification", 15, |h| {
        !h.notifications_of("node_down").is_empty()
    });
    // A few more heartbeats: told once.
    std::thread::sleep(Duration::from_millis(2_200));
    let told = gamma.notifications_of("node_down");
    assert_eq!(told.len(), 1, "{told:?}");
    let text = told[0]["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Node alpha is down: no heartbeat for ")
            && text.contains("The manager was not told: its inbox refused the message"),
        "{told:?}"
    );
    assert!(
        gamma
            .log()
            .contains("the manager was not told this node is down"),
        "{}",
        gamma.log()
    );

    // alpha comes back while the inbox is still full: its mark goes anyway.
    alpha.serve();
    gamma.wait_for("alpha alive again", 15, |h| {
        node(h, "alpha")["alive"] == true
    });
    alpha.wait_for("alpha's return noted", 15, |h| {
        h.log()
            .contains("the manager was not told this node is back")
    });
    // The line is logged before the mark goes: a kill in between keeps it.
    alpha.wait_for("alpha's down mark cleared", 15, |_| {
        rt.block_on(store.node_down_for("alpha")).unwrap().is_none()
    });
    // So its next death is told again.
    alpha.kill9();
    gamma.wait_for("alpha's second node_down notification", 15, |h| {
        h.notifications_of("node_down").len() == 2
    });
    // The manager's inbox holds only what it put there itself.
    assert_eq!(to_manager(&gamma), Vec::<String>::new());
}

/// A node checks every request it takes as if hostile: the verb must be one
/// it knows with exactly its arguments, the name must parse, and the agent
/// must live on this node. A request stored for beta to stop alpha's agent
/// (were beta to run it, beta's `stop` would carry it on to alpha) is
/// refused with a sentence, and the agent runs on.
#[test]
fn a_node_refuses_forged_requests_and_steers_no_agent_of_another_node() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let alpha = TestHive::start_with(Opts::postgres(&db, "alpha"));
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    alpha.ok(&["spawn", "y"]);
    alpha.wait_for("y running on alpha", 30, |h| running(h, "y"));
    let forged = [
        ("stop", r#"{"graceful":false}"#, "y"),
        ("destroy", r#"{"purge":true}"#, "y"),
        ("sh -c 'kill 1'", "{}", "y"),
        ("stop", r#"{"graceful":false,"also":"rm"}"#, "y"),
        ("start", "{}", "../y"),
        ("purge_config", "{}", "y"),
        (
            "config_commit",
            r#"{"text":"model = \"x\"\n","message":null}"#,
            "y",
        ),
    ];
    let (rt, store) = db.store();
    let outcomes = rt.block_on(async {
        let mut ids = vec![];
        for (verb, args_json, agent) in forged {
            let request = NewRequest {
                node: "beta",
                agent,
                verb,
                args_json,
                asked_by: "alpha",
            };
            ids.push(store.enqueue_request(&request).await.unwrap());
        }
        let mut outcomes = vec![];
        for id in ids {
            outcomes.push(outcome(&store, id).await);
        }
        outcomes
    });
    let not_ours = "y does not live on node beta: alpha asked the wrong node, nothing was done";
    let unknown = "the request names no verb this node knows";
    let not_the_repos = "y's config repo is on node alpha, not on node beta: alpha asked the wrong node, nothing was done";
    for (o, want) in outcomes.iter().zip([
        not_ours,
        not_ours,
        unknown,
        unknown,
        "agent name \"../y\" must start with a lowercase letter a-z",
        not_the_repos,
        not_the_repos,
    ]) {
        assert!(!o.0 && o.1.contains(want), "{o:?}, want {want:?}");
    }
    assert!(running(&alpha, "y"), "a forged request stopped y");
    assert_eq!(harness_starts(&beta, "y"), 0);
    assert!(alpha.state_dir().join("configs/y/.git").is_dir());
}

/// A home node that is alive by its last heartbeat but takes no request
/// (here: stopped with SIGSTOP) makes the asking node give up after its
/// wait, withdraw the request and say so; the node, back, does not run it.
#[test]
fn a_request_the_home_node_does_not_take_in_time_is_withdrawn() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut alpha = Opts::postgres(&db, "alpha");
    alpha.env.push(("HIVE_STEER_WAIT_SECS".into(), "1".into()));
    let alpha = TestHive::start_with(alpha);
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    let pid = nix::unistd::Pid::from_raw(beta.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let out = alpha.cli(&["stop", "x"]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "beta did not take `stop x` within 1.0s, so it was withdrawn and not carried out: \
                 see `hive-c0re nodes` and try again"
            ),
        "{err}"
    );
    // beta, running again, finds nothing to do: the stop was withdrawn.
    alpha.ok(&["restart", "x"]);
    beta.wait_for("x running on beta", 10, |h| running(h, "x"));
    assert_eq!(harness_starts(&beta, "x"), 2, "spawn and the restart");
}

/// A node frozen while connected (here: SIGSTOP) reads no notification,
/// and PostgreSQL keeps every one since for its listening session: the
/// queue fills (8 GB) and every notifying commit of the hive then fails.
/// The server now ends that session once it has been idle a while (the
/// live one pings every few seconds); the node, running again, listens
/// anew and re-checks everything.
#[test]
fn a_frozen_nodes_listening_session_is_ended_by_the_server_and_comes_back_with_it() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let listeners = || {
        db.count(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name LIKE 'hive-c0re wakes %'",
        )
    };
    let alpha = TestHive::start_with(Opts::postgres(&db, "alpha"));
    let mut beta = Opts::postgres(&db, "beta");
    beta.env
        .push(("HIVE_PG_LISTENER_IDLE_SECS".into(), "2".into()));
    let beta = TestHive::start_with(beta);
    registered(&alpha, "beta");
    // A ping held up past the idle limit on a loaded machine ends a live
    // session too, which then listens again: wait for both.
    alpha.wait_for("both nodes listening", 20, |_| listeners() == 2);
    let pid = nix::unistd::Pid::from_raw(beta.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    alpha.wait_for(
        "the server to end frozen beta's listening session",
        20,
        |_| listeners() == 1,
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    beta.wait_for("beta listening again", 20, |h| {
        h.log()
            .contains("listening for wakes from other nodes again")
    });
    alpha.wait_for("both nodes listening again", 20, |_| listeners() == 2);
}

/// A request the home node took but has not finished when the wait runs
/// out is not withdrawn (it is running there): the asker waits 10 s more,
/// answers with the outcome if it comes, and otherwise says where it runs.
/// Beta is played by the test through the store, to hold a request taken.
#[test]
fn a_request_taken_late_is_waited_for_and_then_said_to_run_on_its_home_node() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut alpha = Opts::postgres(&db, "alpha");
    alpha.env.push(("HIVE_STEER_WAIT_SECS".into(), "1".into()));
    let alpha = TestHive::start_with(alpha);
    let (rt, store) = db.store();
    rt.block_on(async {
        store
            .register_node("beta", "", "beta#test", 15_000)
            .await
            .unwrap();
        store
            .create_agent(&hive_c0re::store::NewAgent {
                name: "x",
                harness: "ag3nt",
                config_toml: "",
                deployed_sha: None,
                parent: None,
                want_running: false,
                uid_base: 0x7_0000,
                node: "beta",
            })
            .await
            .unwrap();
    });
    // Takes the next request for beta, as beta would.
    let take = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = rt
                .block_on(store.take_requests("beta", 60_000))
                .unwrap()
                .pop()
            {
                return r;
            }
            assert!(Instant::now() < deadline, "alpha asked beta nothing");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // Taken at once, finished after alpha's wait ran out but within the grace: done.
    let started = Instant::now();
    let out = std::thread::scope(|s| {
        let asked = s.spawn(|| alpha.cli(&["restart", "x"]));
        let r = take();
        std::thread::sleep(Duration::from_millis(1_500));
        assert!(rt.block_on(store.finish_request(r.id, true, "")).unwrap());
        asked.join().unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() >= Duration::from_millis(1_500));

    // Taken and never finished: alpha says it runs on beta.
    rt.block_on(store.heartbeat("beta", "beta#test")).unwrap();
    let out = std::thread::scope(|s| {
        let asked = s.spawn(|| alpha.cli(&["restart", "x"]));
        let r = take();
        let out = asked.join().unwrap();
        (r, out)
    });
    let (r, out) = out;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "`restart x` is running on beta, which took it but has not finished it within 11"
            )
            && err.contains("see `hive-c0re status` for how it ends"),
        "{err}"
    );
    // It was not withdrawn: beta may still finish it.
    assert!(
        rt.block_on(store.finish_request(r.id, false, "late"))
            .unwrap()
    );
}

/// Lease timing for tests: a heartbeat a second, a lease of a few.
fn quick_leases(opts: &mut Opts, ttl_secs: u64) {
    opts.env.push(("HIVE_HEARTBEAT_SECS".into(), "1".into()));
    opts.env
        .push(("HIVE_LEASE_TTL_SECS".into(), ttl_secs.to_string()));
}

/// Starts `hive` once no live daemon serves its node name any more (its
/// start is refused until then); how many starts were refused.
fn serve_once_the_name_is_free(hive: &mut TestHive, node: &str, secs: u64) -> usize {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut refused = 0;
    while hive.try_serve().is_err() {
        assert!(
            hive.log()
                .contains(&format!("node {node} is served by another daemon")),
            "{}",
            hive.log()
        );
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "{node} never came free:\n{}",
            hive.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    refused
}

/// Exactly one daemon serves a node name: a second hive-c0re started under
/// a live node's name (another state dir, as on another host or a cloned VM
/// with the same host name; the same database) is refused with a sentence,
/// where it used to serve beside the first and take the steering requests
/// meant for it. Once the first is killed -9 and silent, the second starts,
/// and takes x over only when the lease the first renewed last ran out.
/// Exactly one daemon runs an agent, the holder of its lease: a holder
/// frozen past its lease finds it taken when it thaws and stops its harness.
#[test]
fn a_second_daemon_under_a_live_nodes_name_is_refused_and_one_daemon_runs_an_agent() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let alpha = || {
        let mut o = Opts::postgres(&db, "alpha");
        quick_leases(&mut o, 3);
        o.own_uid_registry = true;
        o
    };
    let mut first = TestHive::start_with(alpha());
    first.ok(&["spawn", "x"]);
    first.wait_for("x running on the first daemon", 30, |h| {
        h.row("x").unwrap()["running"] == true
    });
    let mut second = TestHive::new_with(alpha());
    let refused = second
        .try_serve()
        .expect_err("a second daemon under a live node's name serves");
    // A status of its own, which the systemd unit does not restart.
    assert_eq!(refused.code(), Some(3), "{}", second.log());
    let said = second.log();
    assert!(
        said.contains("node alpha is served by another daemon (alpha#")
            && said.contains("Give this one a name of its own with `--node NAME`"),
        "{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(common::harness_pids(&first, "x").len(), 1);
    assert_eq!(first.row("x").unwrap()["running"], true);

    first.kill9();
    let killed = Instant::now();
    serve_once_the_name_is_free(&mut second, "alpha", 30);
    second.wait_for("the second daemon to run x", 30, |h| {
        h.row("x").unwrap()["running"] == true
    });
    // Not before the lease the first renewed last (at most a second before) ran out.
    let took = killed.elapsed();
    eprintln!("the second daemon ran x {took:?} after the first was killed");
    assert!(took >= Duration::from_millis(1_500), "{took:?}");
    assert_eq!(common::harness_pids(&second, "x").len(), 1);
    assert_eq!(
        second.row("x").unwrap()["state_detail"],
        serde_json::Value::Null
    );

    // A stale holder: the second freezes (SIGSTOP) past its heartbeats and
    // lease, the first comes back on its state and takes x over; thawed,
    // the second finds its lease gone and kills its harness at once rather
    // than run on.
    let signal = |h: &TestHive, s| {
        let pid = nix::unistd::Pid::from_raw(h.child.as_ref().unwrap().id() as i32);
        nix::sys::signal::kill(pid, s).unwrap();
    };
    signal(&second, nix::sys::signal::Signal::SIGSTOP);
    serve_once_the_name_is_free(&mut first, "alpha", 30);
    first.wait_for("the first daemon to run x again", 30, |h| {
        h.row("x").unwrap()["running"] == true
    });
    signal(&second, nix::sys::signal::Signal::SIGCONT);
    second.wait_for("the thawed daemon to stop its harness of x", 10, |h| {
        common::harness_pids(h, "x").is_empty()
    });
    // Its heartbeat finds the name served by the first, and it steps down
    // instead of taking the steering requests meant for the first.
    let deadline = Instant::now() + Duration::from_secs(15);
    let ended = loop {
        if let Some(st) = second.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the thawed daemon serves on:\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    second.child = None;
    assert_eq!(ended.code(), Some(3), "{}", second.log());
    assert!(
        second
            .log()
            .contains("this daemon stepped down: node alpha is served by another daemon"),
        "{}",
        second.log()
    );
    assert!(common::harness_pids(&second, "x").is_empty());
    assert_eq!(common::harness_pids(&first, "x").len(), 1);
    assert_eq!(first.row("x").unwrap()["running"], true);
    // And the operator hears of it, on any node.
    let told: Vec<serde_json::Value> = first
        .notifications_of("node_down")
        .into_iter()
        .filter(|n| n["text"].as_str().unwrap().contains("stepped down"))
        .collect();
    assert_eq!(told.len(), 1, "{:?}", first.notifications_of("node_down"));
    assert!(
        told[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("The hive-c0re serving node alpha as alpha#"),
        "{}",
        told[0]["text"]
    );
}

/// A launch may take longer than the agent's lease lasts (a previous
/// daemon's leftovers reaped, the agent's files handed to its uids one by
/// one, its container built): the lease is kept renewed from the moment it
/// is taken, so the harness starts once and runs on. Its end was measured
/// from the taking and renewals began only once the launch was done: the
/// harness was killed as soon as it started, for a lease "lost", and
/// launched again, told to nobody, as long as launches stayed slow.
#[test]
fn a_launch_slower_than_the_lease_keeps_it_and_starts_the_harness_once() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only a root daemon hands an agent's files to its uids");
        return;
    }
    let (bin, env) = common::idle_harness();
    // A shell that stays (no exec), so the harness is a process to find.
    common::write_exe(&bin.path().join("hive-ag3nt"), "#!/bin/sh\nsleep 600\n");
    let mut opts = Opts {
        state_tmpfs: Some(64 << 20),
        ..Opts::default()
    };
    // Not a quarter of the small file system, which the tree's files pass.
    opts.args.extend(["--state-quota".into(), "none".into()]);
    opts.env.extend(env);
    quick_leases(&mut opts, 3);
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "x"]);
    hive.wait_for("x running", 30, |h| running(h, "x"));
    hive.ok(&["stop", "x"]);

    // A tree of many directories (a node_modules, a cache) the host's root
    // made in x's state dir: each is opened, read and handed to x's uids at
    // its next launch, which takes longer than making them did. How many
    // depends on the machine: as many as three seconds make, 150,000 at
    // least (a fast machine made those in 0.45 s and launched x in 0.79).
    let tree = hive.state_dir().join("agents/x/state/tree");
    let made = Instant::now();
    let mut count = 0;
    hive.mountns.as_ref().unwrap().enter(|| {
        for d in 0..1_000 {
            if d >= 100 && made.elapsed() >= Duration::from_secs(3) {
                break;
            }
            for e in 0..1_500 {
                std::fs::create_dir_all(tree.join(format!("{d}/{e}"))).unwrap();
                count += 1;
            }
        }
    });
    eprintln!("made {count} directories in {:?}", made.elapsed());

    let asked = Instant::now();
    hive.ok(&["start", "x"]);
    hive.wait_for("x running again", 60, |h| running(h, "x"));
    let launch = asked.elapsed();
    eprintln!("x ran {launch:?} after its start");
    let pid = common::harness_pid(&hive, "x");
    // Three renewals more.
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(hive.log_path()).unwrap();
    assert!(
        !log.lines().any(|l| l.contains("lease")),
        "the lease was lost:\n{log}"
    );
    assert_eq!(harness_starts(&hive, "x"), 2, "{log}");
    assert_eq!(
        common::harness_pids(&hive, "x"),
        vec![pid.as_raw()],
        "{log}"
    );
    assert!(running(&hive, "x"));
    // Slower than the lease less a heartbeat, when the harness is killed
    // unless a renewal came first: else this proves nothing.
    assert!(
        launch > Duration::from_secs(2),
        "the launch took {launch:?}: more directories are needed to make it outlast the lease"
    );
}

/// A lease lost once is waited out quietly (it passed on; the agent runs
/// again when this node takes it back), but one lost again soon after the
/// harness got it back counts as a crash: the operator is told, the retries
/// back off, and after `MAX_RESTARTS` the agent is left failed. It used to
/// be taken back and the harness relaunched at once, for ever, unseen.
#[test]
fn a_lease_lost_again_and_again_counts_as_a_crash_and_is_given_up_on() {
    let (_bin, env) = common::idle_harness();
    let mut opts = Opts::default();
    opts.env.extend(env);
    // Each crash told, not one in ten minutes: the count is what is checked.
    opts.env
        .push(("HIVE_CRASH_NOTICES_SECS".into(), "0.01".into()));
    quick_leases(&mut opts, 3);
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "x"]);
    hive.wait_for("x running", 30, |h| running(h, "x"));

    // Something keeps taking the lease: its epoch moves on under the daemon,
    // whose next renewal finds it gone, and which takes it back at once.
    let db = rusqlite::Connection::open(hive.state_dir().join("hive.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while hive.row("x").unwrap()["failed"] != true {
        assert!(
            Instant::now() < deadline,
            "x was never given up on:\n{}",
            hive.log()
        );
        db.execute(
            "UPDATE agent_leases SET epoch = epoch + 1 WHERE agent = 'x'",
            [],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = hive.log();
    // Its start, the one after the quiet loss, and one per restart.
    assert_eq!(harness_starts(&hive, "x"), 2 + 5, "{log}");
    assert_eq!(
        log.matches("it runs again once this node takes its lease back")
            .count(),
        1,
        "{log}"
    );
    let crashed = hive.notifications_of("crashed");
    assert_eq!(crashed.len(), 5, "{crashed:?}");
    let failed = hive.notifications_of("failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    for n in crashed.iter().chain(&failed) {
        let text = n["text"].as_str().unwrap();
        assert!(
            text.starts_with("x's harness was killed: it lost its lease again")
                && text.contains("(another hive-c0re took its lease over, or it ran out)"),
            "{text}"
        );
    }
    assert!(
        failed[0]["text"]
            .as_str()
            .unwrap()
            .contains("gave up after 5 restarts"),
        "{failed:?}"
    );
    // Given up on: nothing launches it again.
    let starts = harness_starts(&hive, "x");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(harness_starts(&hive, "x"), starts);
    assert!(!running(&hive, "x"));
}

/// Nodes started together on an empty database both find no manager and
/// both make one: one gets in, and the other carries on serving instead of
/// failing its start.
#[test]
fn nodes_starting_together_on_an_empty_database_make_one_manager_and_both_serve() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let with_manager = |node: &str| {
        let mut o = Opts::postgres(&db, node);
        o.args.retain(|a| a != "--no-manager");
        o
    };
    let (a, b) = (with_manager("alpha"), with_manager("beta"));
    let (alpha, beta) = std::thread::scope(|s| {
        let a = s.spawn(|| TestHive::start_with(a));
        let b = s.spawn(|| TestHive::start_with(b));
        (a.join().unwrap(), b.join().unwrap())
    });
    // serve makes the manager after host.sock answers: wait for it on both.
    let managers = |h: &TestHive| -> Vec<serde_json::Value> {
        rows(h)
            .into_iter()
            .filter(|r| r["name"] == "manager")
            .collect()
    };
    for hive in [&alpha, &beta] {
        hive.wait_for("the manager", 30, |h| !managers(h).is_empty());
    }
    // Both made it or one won the race: either way both still serve.
    std::thread::sleep(Duration::from_secs(1));
    for hive in [&alpha, &beta] {
        let m = managers(hive);
        assert_eq!(m.len(), 1, "{m:?}\n{}", hive.log());
        let home = m[0]["node"].as_str().unwrap();
        assert!(home == "alpha" || home == "beta", "{home}");
    }
}

/// A secret set on one node is redacted on every other at once: each node
/// caches what it redacts, and a stale cache stored the new value in plain
/// text in an agent's history (here the operator's message noted in it).
#[test]
fn a_secret_set_on_one_node_is_redacted_on_the_others_at_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let alpha = TestHive::start_with(Opts::postgres(&db, "alpha"));
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    alpha.ok(&["spawn", "x"]);
    // alpha redacts once with what it has (nothing), and keeps that.
    alpha.ok(&["send", "x", "warm up"]);
    const VALUE: &str = "tok-set-on-beta-7731";
    let mut set = beta.command();
    set.args(["secret", "set", "API_TOKEN"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{VALUE}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // The wake crosses in milliseconds; give it a moment, as an operator would.
    std::thread::sleep(Duration::from_millis(300));
    alpha.ok(&["send", "x", &format!("the token is {VALUE}")]);
    let history = alpha.ok(&["events", "x", "--json"]);
    assert!(
        history.contains("the token is "),
        "the noted message is missing:\n{history}"
    );
    assert!(
        !history.contains(VALUE),
        "alpha stored beta's new secret in plain text:\n{history}"
    );
}

/// A `sleep` argument no other test uses, here or in another checkout's run.
fn nap(tag: u32) -> String {
    format!("{}.{tag}", 986_000 + std::process::id())
}

/// How many shells `hive`'s daemon opened.
fn shells_opened(hive: &TestHive) -> usize {
    hive.log()
        .lines()
        .filter(|l| l.contains("shell opened"))
        .count()
}

/// `hive-c0re shell NAME` asked of alpha for an agent at home on beta: beta
/// runs the shell (its state dir is the agent's on beta), alpha relays the
/// frames and the CLI sees no difference; the input's end ends the shell,
/// and a client that goes away ends the shell's whole session on beta. A
/// node that serves no dashboard cannot be reached: its agents' shells are
/// refused with a sentence that says so.
#[test]
fn the_shell_of_another_nodes_agent_runs_on_its_home_node_relayed_by_the_asking_one() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let quick = |name: &str| {
        let mut o = with_dashboard(&db, name);
        o.env.push(("HIVE_HEARTBEAT_SECS".into(), "1".into()));
        o
    };
    let mut alpha = quick("alpha");
    alpha.env.push((
        "HIVE_DASHBOARD_TOKEN".into(),
        "alpha-node-test-token".into(),
    ));
    let alpha = TestHive::start_with(alpha);
    let beta = TestHive::start_with(quick("beta"));
    registered(&alpha, "beta");
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    alpha.ok(&["spawn", "y"]);
    alpha.wait_for("y running on alpha", 30, |h| running(h, "y"));

    let shell = |input: &str| alpha.spawn_with_input(&["shell", "x"], input);
    let out = shell("echo \"at:$HIVE_AGENT_STATE:$((6*7))\"\n")
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let home = beta.state_dir().display().to_string();
    assert!(
        text.contains(&format!("at:{home}")) && text.contains(":42"),
        "{text}"
    );
    assert_eq!(shells_opened(&beta), 1, "{}", beta.log());
    assert_eq!(shells_opened(&alpha), 0, "alpha opened a shell of its own");

    // The client going away (kill -9) ends the shell's session on beta.
    let bg = nap(1);
    let (mut cli, pids) = sleeping_shell(&alpha, &bg);
    cli.kill().unwrap();
    cli.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids
        .iter()
        .any(|p| pids_running(&["sleep", &bg]).contains(p))
    {
        assert!(
            Instant::now() < deadline,
            "the shell's session on beta outlived its client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // alpha's dashboard terminal for x: the same shell on beta, over the page's WebSocket.
    let alpha_address = node(&alpha, "alpha")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let (seen, exit) = dashboard_shell(
        &alpha_address,
        "alpha-node-test-token",
        "x",
        b"echo ws-$((6*7)); exit 5\n",
    );
    assert!(seen.contains("ws-42"), "{seen}");
    assert_eq!(exit, r#"{"type":"exit","code":5}"#, "{seen}");
    assert_eq!(shells_opened(&beta), 3, "{}", beta.log());
    assert_eq!(shells_opened(&alpha), 0, "alpha opened a shell of its own");

    let (rt, store) = db.store();
    // A node with no dashboard registers no address (as alpha would with
    // --no-dashboard): beta cannot reach y's shell, and says why.
    rt.block_on(store.register_node("alpha", "", &alpha.holder("alpha"), 15_000))
        .unwrap();
    let err = refused(&beta, &["shell", "y"]);
    assert!(
        err.contains("y lives on node alpha, which serves no dashboard: the shell of its agents can be reached only on that host"),
        "{err}"
    );
    assert_eq!(shells_opened(&alpha), 0);

    // beta's address leads nowhere (as when a firewall or a wrong --dashboard
    // stands between): the refusal names it.
    let beta_address = node(&beta, "beta")["address"].as_str().unwrap().to_owned();
    rt.block_on(store.register_node("beta", "http://127.0.0.1:1/", &beta.holder("beta"), 15_000))
        .unwrap();
    let err = refused(&alpha, &["shell", "x"]);
    assert!(
        err.contains(
            "could not open x's shell on node beta at http://127.0.0.1:1/: could not connect"
        ),
        "{err}"
    );
    assert_eq!(
        shells_opened(&beta),
        3,
        "beta opened a shell nobody reached"
    );

    // beta hangs (stopped; its kernel still answers the connection) while
    // the operator's shell is open through alpha: the shell ends once beta's
    // heartbeats stop, with a sentence, instead of freezing the terminal.
    rt.block_on(store.register_node("beta", &beta_address, &beta.holder("beta"), 15_000))
        .unwrap();
    let mut cli = alpha
        .command()
        .args(["shell", "x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    beta.wait_for("the shell open on beta", 20, |h| shells_opened(h) == 4);
    let pid = nix::unistd::Pid::from_raw(beta.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cli.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            cli.kill().unwrap();
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
            panic!("the operator's shell still hangs 30 s after its home node stopped");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = cli.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node beta, which ran the shell, is down (no heartbeat for")
            && err.contains("the shell was cut off"),
        "{err}"
    );
    assert_ne!(out.status.code(), Some(0), "{err}");

    // beta down (stopped, no heartbeat): refused at once, nothing queued.
    alpha.wait_for("beta down", 20, |h| node(h, "beta")["alive"] == false);
    let err = refused(&alpha, &["shell", "x"]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        err.contains("beta is down (no heartbeat for") && err.contains("`shell x` was not queued"),
        "{err}"
    );

    // Now the asker hangs: alpha stopped while its shell runs on beta. Its
    // kernel still answers, so the connection never ends; its heartbeats
    // ending end the shell on beta, which no longer runs for ever.
    alpha.wait_for("beta back", 30, |h| node(h, "beta")["alive"] == true);
    let bg = nap(2);
    let (mut cli, pids) = sleeping_shell(&alpha, &bg);
    let alpha_pid = nix::unistd::Pid::from_raw(alpha.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(alpha_pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ended = loop {
        if !pids
            .iter()
            .any(|p| pids_running(&["sleep", &bg]).contains(p))
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    nix::sys::signal::kill(alpha_pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    cli.kill().unwrap();
    cli.wait().unwrap();
    assert!(
        ended,
        "the shell on beta outlived its stopped asker by 30 s"
    );
    assert!(
        beta.log()
            .contains("node alpha, which asked for the shell, is down"),
        "{}",
        beta.log()
    );
}

/// `hive-c0re shell x` asked of `hive`, running `sleep TAG` in the shell;
/// the client (its stdin held open) and the pids of that sleep once it runs.
// The caller waits for the client it gets; clippy cannot see past the return.
#[allow(clippy::zombie_processes)]
fn sleeping_shell(hive: &TestHive, tag: &str) -> (std::process::Child, Vec<i32>) {
    use std::io::Write;
    let mut cli = hive
        .command()
        .args(["shell", "x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdin = cli.stdin.as_mut().unwrap();
    stdin
        .write_all(format!("sleep {tag}\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = pids_running(&["sleep", tag]);
        if !p.is_empty() {
            return (cli, p);
        }
        if Instant::now() > deadline {
            let _ = cli.kill();
            let _ = cli.wait();
            panic!("the shell on beta never ran sleep");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The dashboard's terminal for `agent` at `address` (`http://HOST:PORT/`),
/// as the page's WebSocket: sends `input`, returns what the terminal showed
/// and the first text message (the exit notice).
fn dashboard_shell(address: &str, token: &str, agent: &str, input: &[u8]) -> (String, String) {
    use std::io::{Read, Write};
    let authority = address.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /api/agents/{agent}/shell?rows=24&cols=80 HTTP/1.1\r\nHost: {authority}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Hive-Token: {token}\r\n\r\n"
    )
    .unwrap();
    let head = response_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // One masked binary frame, as a browser sends it.
    assert!(input.len() < 126);
    let mask = [7u8, 1, 8, 9];
    let mut frame = vec![0x82, 0x80 | input.len() as u8];
    frame.extend(mask);
    frame.extend(input.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
    let mut seen = String::new();
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        match h[0] & 0x0f {
            0x2 => seen.push_str(&String::from_utf8_lossy(&payload)),
            0x1 => return (seen, String::from_utf8(payload).unwrap()),
            0x8 => panic!("closed without a notice after {seen}"),
            _ => {}
        }
    }
}

/// A relay on a loopback port to `upstream` that keeps every byte it
/// passes, both ways: what a machine on the path between two nodes reads.
fn recording_relay(upstream: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}/", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = std::net::TcpStream::connect(&upstream).unwrap();
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        kept.lock().unwrap().extend_from_slice(&buf[..n]);
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    (address, seen)
}

/// Whether `bytes` hold a run of 64 hex digits: the spelling of a ticket.
/// Whether `bytes` hold a ticket: 64 hex digits whose hash is the knock's
/// (the ticket's SHA-256, which a knock carries in the clear and the store
/// holds), or any 64 hex digits when no knock came.
fn holds_a_ticket(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes).to_ascii_lowercase();
    let knock = text
        .split("x-hive-node-knock: ")
        .nth(1)
        .map(|rest| rest[..64.min(rest.len())].to_owned());
    bytes
        .split(|b| !b.is_ascii_hexdigit())
        .filter(|run| run.len() >= 64)
        .flat_map(|run| run.windows(64))
        .any(|w| {
            let w = std::str::from_utf8(w).unwrap().to_ascii_lowercase();
            match &knock {
                Some(k) => hive_c0re::node_shell::ticket_hash(&w) == *k,
                None => true,
            }
        })
}

/// A machine on the path between two nodes (ARP or DNS spoofing, a link it
/// taps), or one that takes the home node's address (an agent of that node
/// squatting the port while its hive-c0re restarts). beta's address in the
/// store is pointed first at a relay that records every byte both ways:
/// the shell works through it, and the recording holds neither the ticket
/// nor a byte of the shell's input or output. Then at an impostor that
/// answers the upgrade and speaks TLS with a certificate of its own: it
/// gets no ticket, and alpha says why it sent none.
#[test]
fn a_machine_between_two_nodes_reads_no_shell_and_takes_no_ticket() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let alpha = TestHive::start_with(with_dashboard(&db, "alpha"));
    let beta = TestHive::start_with(with_dashboard(&db, "beta"));
    registered(&alpha, "beta");
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    let beta_address = node(&beta, "beta")["address"].as_str().unwrap().to_owned();
    let upstream = beta_address
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (rt, store) = db.store();
    let point_beta_at = |address: &str| {
        rt.block_on(store.register_node("beta", address, &beta.holder("beta"), 15_000))
            .unwrap()
    };

    // On the path: it relays, and reads nothing.
    let (relay, seen) = recording_relay(upstream);
    point_beta_at(&relay);
    let out = alpha
        .spawn_with_input(&["shell", "x"], "echo \"mark:$((6*7))\"\n")
        .wait_with_output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("mark:42"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 1000, "the relay saw {} bytes", seen.len());
    let plain = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(
        !plain.contains("mark:") && !plain.contains("$((6*7))"),
        "the shell's bytes crossed the path readable: {plain}"
    );
    assert!(
        !plain.contains("x-hive-node-ticket") && !holds_a_ticket(&seen),
        "the ticket crossed the path readable: {plain}"
    );

    // Posing as beta: an upgrade, then TLS with another certificate.
    let impostor = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    point_beta_at(&format!("http://{}/", impostor.local_addr().unwrap()));
    impostor.set_nonblocking(true).unwrap();
    // Its own thread and runtime: the store's runs only inside block_on.
    let got = std::thread::spawn(move || {
        tokio::runtime::Runtime::new().unwrap().block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::from_std(impostor).unwrap();
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if tcp.read(&mut b).await.unwrap() == 0 {
                return got;
            }
            got.push(b[0]);
        }
        tcp.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: hive-shell\r\n\r\n")
            .await
            .unwrap();
        let mine = hive_c0re::node_shell::Identity::generate().unwrap();
        if let Ok(mut tls) = mine.accept(tcp).await {
            let _ = tls.read_to_end(&mut got).await;
        }
        got
    })
    });
    let out = alpha
        .spawn_with_input(&["shell", "x"], "echo pwned\n")
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a shell opened at the impostor's: {err}"
    );
    assert!(
        err.contains("is not the one the node gave through the store")
            && err.contains("the ticket was not sent"),
        "{err}"
    );
    let got = got.join().unwrap();
    assert!(
        !holds_a_ticket(&got)
            && !String::from_utf8_lossy(&got)
                .to_ascii_lowercase()
                .contains("ticket"),
        "the impostor got the ticket: {}",
        String::from_utf8_lossy(&got)
    );

    // Back on beta's own address, the shell opens again.
    point_beta_at(&beta_address);
    let out = alpha
        .spawn_with_input(&["shell", "x"], "echo back-$((6*7))\n")
        .wait_with_output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("back-42"));
}

/// One HTTP request to beta's node-shell endpoint (with `extra` header
/// lines); the status and, once upgraded, the stream.
fn knock(address: &str, id: i64, extra: &str) -> (u16, std::net::TcpStream) {
    use std::io::Write;
    let authority = address.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!(
        "GET /node/shell/{id} HTTP/1.1\r\nHost: {authority}\r\nConnection: upgrade\r\nUpgrade: hive-shell\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let head = response_head(&mut s);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, s)
}

/// A channel after its upgrade, as alpha speaks it: TLS to the certificate
/// `fingerprint`, then `ticket` on a line. The home node's answer line and
/// the stream; Err when TLS failed.
type Channel = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;
fn present(
    tcp: std::net::TcpStream,
    fingerprint: &str,
    ticket: &str,
) -> Result<(String, Channel), String> {
    use std::io::{Read, Write};
    let config = hive_c0re::node_shell::client_config(fingerprint).unwrap();
    let name = rustls::pki_types::ServerName::try_from("hive-node").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(format!("{ticket}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(1) => line.push(b[0]),
            Ok(_) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((String::from_utf8_lossy(&line).trim_end().to_owned(), s))
}

/// beta's node-shell endpoint opens a shell only for the ticket of a shell
/// request beta granted, once, and takes it only over TLS to the
/// certificate beta named in its grant: a request it granted nothing for
/// (403) and a ticket sent in the clear (400) get no upgrade; a missing,
/// wrong or replayed ticket, or one for another request, opens nothing,
/// and beta starts no shell for them. The right ticket, presented as alpha
/// would, does; to a client pinning another certificate beta is nobody.
#[test]
fn the_node_shell_endpoint_opens_nothing_without_the_granted_ticket_and_nothing_twice() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    const TOKEN: &str = "beta-node-test-token";
    let mut beta = with_dashboard(&db, "beta");
    beta.env.push(("HIVE_DASHBOARD_TOKEN".into(), TOKEN.into()));
    let beta = TestHive::start_with(beta);
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    let address = node(&beta, "beta")["address"].as_str().unwrap().to_owned();
    let port = address
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();

    // What alpha would store: a shell request holding the ticket's hash.
    let ticket = hive_c0re::node_shell::new_ticket().unwrap();
    let (rt, store) = db.store();
    let (granted, other, fingerprint) = rt.block_on(async {
        let args = serde_json::json!({
            "rows": 24, "cols": 80, "term": null,
            "ticket_sha256": hive_c0re::node_shell::ticket_hash(&ticket),
        })
        .to_string();
        let mut ids = vec![];
        for agent in ["x", "x"] {
            let request = NewRequest {
                node: "beta",
                agent,
                verb: "shell",
                args_json: &args,
                asked_by: "alpha",
            };
            ids.push(store.enqueue_request(&request).await.unwrap());
        }
        let mut fingerprints = vec![];
        for id in &ids {
            let (ok, said) = outcome(&store, *id).await;
            assert!(ok, "beta refused the grant: {said}");
            fingerprints.push(said);
        }
        assert_eq!(fingerprints[0], fingerprints[1], "one certificate per node");
        assert_eq!(fingerprints[0].len(), 64, "{fingerprints:?}");
        (ids[0], ids[1], fingerprints[0].clone())
    });

    // Refused before any upgrade: the knock must carry the ticket's hash.
    let wrong = hive_c0re::node_shell::new_ticket().unwrap();
    let hash = hive_c0re::node_shell::ticket_hash(&ticket);
    let proof = format!("X-Hive-Node-Knock: {hash}\r\n");
    let login = format!("X-Hive-Token: {TOKEN}\r\nCookie: hive_token_{port}={TOKEN}\r\n");
    let wrong_proof = format!(
        "X-Hive-Node-Knock: {}\r\n",
        hive_c0re::node_shell::ticket_hash(&wrong)
    );
    for (id, extra, why) in [
        (granted + 1000, proof.clone(), "a request never granted"),
        (granted, String::new(), "no knock"),
        (granted, wrong_proof, "another ticket's knock"),
        (
            granted,
            format!("X-Hive-Node-Knock: {ticket}\r\n"),
            "the ticket as a knock",
        ),
        (granted, login.clone(), "the operator's login"),
    ] {
        assert_eq!(knock(&address, id, &extra).0, 403, "{why}");
    }
    let clear = format!("X-Hive-Node-Ticket: {ticket}\r\n{proof}");
    assert_eq!(
        knock(&address, granted, &clear).0,
        400,
        "a ticket in the clear"
    );

    // Upgraded, then refused inside TLS.
    let with_login = format!("{proof}{login}");
    for (t, extra) in [
        (wrong.as_str(), proof.as_str()),
        (hash.as_str(), proof.as_str()),
        ("", proof.as_str()),
        // The operator's login opens nothing here, as a ticket or beside one.
        (TOKEN, with_login.as_str()),
        (wrong.as_str(), with_login.as_str()),
    ] {
        let (status, tcp) = knock(&address, granted, extra);
        assert_eq!(status, 101, "{t:?}");
        let (said, _) = present(tcp, &fingerprint, t).unwrap();
        assert!(
            said.starts_with("no: no shell: request"),
            "ticket {t:?}: {said}"
        );
    }
    // A client pinning another certificate sends nothing: TLS fails first.
    let other_cert = hive_c0re::node_shell::Identity::generate().unwrap();
    let (_, tcp) = knock(&address, granted, &proof);
    let err = present(tcp, other_cert.fingerprint(), &ticket).unwrap_err();
    assert!(err.contains("is not the one the node gave"), "{err}");
    assert_eq!(
        shells_opened(&beta),
        0,
        "beta opened a shell for a bad ticket"
    );

    // Upgraded channels that never speak TLS hold a socket each, for a
    // while: a few at most wait at once, the rest are turned away.
    let silent: Vec<_> = (0..16).map(|_| knock(&address, granted, &proof)).collect();
    assert!(silent.iter().all(|(status, _)| *status == 101));
    assert_eq!(
        knock(&address, granted, &proof).0,
        503,
        "a 17th waiting channel"
    );
    drop(silent);
    beta.wait_for("the silent channels to go", 15, |_| {
        knock(&address, granted, &proof).0 == 101
    });

    // The right ticket opens x's shell on beta, once.
    let (status, tcp) = knock(&address, granted, &proof);
    assert_eq!(status, 101);
    let (said, mut s) = present(tcp, &fingerprint, &ticket).unwrap();
    assert_eq!(said, "ok");
    {
        use std::io::Write;
        s.write_all(&hive_sh4re::shell::Frame::data(
            b"echo node-$((6*7)); exit 3\n",
        ))
        .unwrap();
    }
    let mut seen = String::new();
    let code = loop {
        match hive_sh4re::shell::Frame::read_from(&mut s).unwrap() {
            Some(hive_sh4re::shell::Frame::Data(d)) => seen.push_str(&String::from_utf8_lossy(&d)),
            Some(hive_sh4re::shell::Frame::Exit(c)) => break c,
            other => panic!("{other:?} after {seen}"),
        }
    };
    assert_eq!(code, 3, "{seen}");
    assert!(seen.contains("node-42"), "{seen}");
    assert_eq!(shells_opened(&beta), 1);
    // Replayed: no upgrade, and no second shell. Nor does `other`'s id take this ticket twice.
    assert_eq!(knock(&address, granted, &proof).0, 403, "a replayed ticket");
    let (status, tcp) = knock(&address, other, &proof);
    assert_eq!(status, 101);
    assert_eq!(
        present(tcp, &fingerprint, &ticket).unwrap().0,
        "ok",
        "the second grant's first use"
    );
    assert_eq!(knock(&address, other, &proof).0, 403, "its replay");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(shells_opened(&beta), 2, "{}", beta.log());
}

/// An HTTP response's head, read byte by byte up to its blank line: what
/// follows a 101 is the shell's.
fn response_head(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// What one node's agent does shows live on another node's dashboard: its
/// row, its events on its page and the hive's feed.
#[test]
fn another_nodes_agent_shows_live_on_this_nodes_dashboard() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut alpha = with_dashboard(&db, "alpha");
    alpha.env.extend([
        (
            "HIVE_DASHBOARD_TOKEN".into(),
            "alpha-live-test-token".into(),
        ),
        ("HIVE_HEARTBEAT_SECS".into(), "1".into()),
    ]);
    let alpha = TestHive::start_with(alpha);
    let mut beta = Opts::postgres(&db, "beta");
    beta.env.push(("HIVE_HEARTBEAT_SECS".into(), "1".into()));
    let beta = TestHive::start_with(beta);
    registered(&alpha, "beta");
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    let address = node(&alpha, "alpha")["address"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = SseReader::open(&address, "alpha-live-test-token", "/api/stream?agent=x");
    let hive_page = SseReader::open(&address, "alpha-live-test-token", "/api/stream");

    // Each on beta, none on alpha; alpha's pages follow without a reload.
    beta.ok(&["pause", "x"]);
    hive_page.wait_for("x's row, paused", |f| {
        f.contains("event: agent\n")
            && f.contains(r#""name":"x""#)
            && f.contains(r#""paused":true"#)
    });
    beta.ok(&["model", "x", "opus"]);
    page.wait_for("x's event of the model switch", |f| {
        f.contains("event: events\n") && f.contains("/model opus")
    });
    beta.ok(&["send", "x", "from beta's operator"]);
    hive_page.wait_for("the message in the feed", |f| {
        f.contains("event: feed\n") && f.contains("from beta's operator")
    });
    hive_page.wait_for("x's row with one message waiting", |f| {
        f.contains(r#""inbox_depth":1"#)
    });
}

/// A dashboard's live stream read in the background.
struct SseReader(std::sync::Arc<std::sync::Mutex<String>>);

impl SseReader {
    /// Opens `path` at `address` (`http://HOST:PORT/`) with the dashboard's token.
    fn open(address: &str, token: &str, path: &str) -> Self {
        use std::io::{Read, Write};
        let authority = address.trim_start_matches("http://").trim_end_matches('/');
        let mut s = std::net::TcpStream::connect(authority).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nX-Hive-Token: {token}\r\n\r\n"
        )
        .unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = s.read(&mut buf) {
                into.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let reader = Self(seen);
        reader.wait_for("the stream's hello", |f| f.contains("event: hello\n"));
        reader
    }

    /// Waits up to 20 s for what the stream carried to satisfy `ok`.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self.0.lock().unwrap().clone();
            if ok(&seen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the stream within 20 s; it carried:\n{seen}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Node `name` in namespace `i` of `lan`, on `database` of `cluster`
/// (reached over the veth), serving a dashboard at `dashboard` if given.
fn lan_node(
    lan: &common::Lan,
    cluster: &hive_c0re::store::pg::TestCluster,
    database: &str,
    i: usize,
    name: &str,
    dashboard: Option<&str>,
) -> TestHive {
    let mut opts = Opts {
        netns: Some(lan.nodes[i].clone()),
        ..Opts::default()
    };
    if let Some(d) = dashboard {
        opts.args.retain(|a| a != "--no-dashboard");
        opts.args.extend(["--dashboard".into(), d.into()]);
    }
    opts.env
        .push(("PGPASSWORD".into(), cluster.password().to_owned()));
    opts.args.extend([
        "--node".into(),
        name.into(),
        "--database".into(),
        cluster.url_at(&common::Lan::db_addr(i), database),
    ]);
    TestHive::start_with(opts)
}

/// A node whose dashboard listens on every address (`--dashboard
/// 0.0.0.0:PORT`) registers that address, which names no host: another node
/// connecting to it reaches its *own* host, where anyone listening on that
/// port (a process-runtime agent, a local user) would get the shell's
/// ticket and could replay it to the real node within its 30 s. The asking
/// node must refuse such an address and send the ticket nowhere.
#[test]
fn a_node_sends_no_ticket_to_its_own_host_for_a_node_that_listens_on_every_address() {
    use hive_c0re::store::pg::TestCluster;
    use std::io::Read;
    if TestCluster::missing() || !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (network namespaces) and PostgreSQL");
        return;
    }
    let (lan, cluster, database) = lan_with_cluster(2);
    const PORT: u16 = 17_878;
    let node = |i: usize, name: &str, dashboard: Option<&str>| {
        lan_node(&lan, &cluster, &database, i, name, dashboard)
    };
    let alpha = node(0, "alpha", None);
    let beta = node(1, "beta", Some(&format!("0.0.0.0:{PORT}")));
    registered(&alpha, "beta");
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));

    // The thief: a listener on alpha's host, on the port beta's address names.
    let thief = lan.nodes[0].enter(|| std::net::TcpListener::bind(("127.0.0.1", PORT)).unwrap());
    thief.set_nonblocking(true).unwrap();
    let out = alpha
        .spawn_with_input(&["shell", "x"], "echo pwned\n")
        .wait_with_output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let mut stolen = String::new();
    if let Ok((mut s, _)) = thief.accept() {
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            stolen = String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    assert!(
        !stolen.to_ascii_lowercase().contains("x-hive-node-ticket"),
        "alpha sent the ticket to its own host: {stolen}"
    );
    assert!(!out.status.success(), "the shell opened: {err}");
    assert!(
        err.contains("x's shell on node beta at http://0.0.0.0:17878/")
            && err.contains("listens on every address")
            && err.contains("--dashboard"),
        "{err}"
    );
    assert!(
        !beta.log().contains("opening a shell for another node"),
        "{}",
        beta.log()
    );
}

/// A node whose dashboard listens on its own loopback (the default,
/// `127.0.0.1:7878`) registers that address: for another host, it leads to
/// that host's own loopback, where any user (or a process-runtime agent)
/// may listen on the port. Alpha handed such a listener the shell's ticket,
/// then the operator's keystrokes. It now connects to a loopback address
/// only where hive-c0re's own user listens.
#[test]
fn a_node_sends_no_ticket_to_another_users_listener_on_its_own_loopback() {
    use hive_c0re::store::pg::TestCluster;
    if TestCluster::missing() || !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: needs root (network namespaces) and PostgreSQL");
        return;
    }
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: the listener of another user is a python3 script");
        return;
    }
    let (lan, cluster, database) = lan_with_cluster(2);
    const PORT: u16 = 17_879;
    let node = |i: usize, name: &str, dashboard: Option<&str>| {
        lan_node(&lan, &cluster, &database, i, name, dashboard)
    };
    let alpha = node(0, "alpha", None);
    let beta = node(1, "beta", Some(&format!("127.0.0.1:{PORT}")));
    registered(&alpha, "beta");
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));

    // The thief: another user's listener on alpha's loopback, on beta's port;
    // it keeps what it is sent in a file.
    let loot = tempfile::Builder::new()
        .prefix("hive-loot-")
        .tempdir()
        .unwrap();
    common::searchable(loot.path());
    std::fs::set_permissions(
        loot.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let got = loot.path().join("got");
    let script = format!(
        "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {PORT}))\ns.listen(1)\nopen('{ready}', 'w').close()\ns.settimeout(60)\n\
         c, _ = s.accept()\nc.settimeout(5)\nopen('{got}', 'wb').write(c.recv(4096))\n",
        ready = loot.path().join("ready").display(),
        got = got.display(),
    );
    let mut thief = lan.nodes[0].enter(|| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["/usr/bin/python3", "-c", &script])
            .spawn()
            .unwrap()
    });
    alpha.wait_for("the thief to listen", 10, |_| {
        loot.path().join("ready").exists()
    });
    let out = alpha
        .spawn_with_input(&["shell", "x"], "echo pwned\n")
        .wait_with_output()
        .unwrap();
    let _ = thief.kill();
    let _ = thief.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    let stolen = std::fs::read_to_string(&got).unwrap_or_default();
    assert!(
        !stolen.to_ascii_lowercase().contains("x-hive-node-ticket"),
        "alpha sent the ticket to another user's listener: {stolen}"
    );
    assert!(!out.status.success(), "the shell opened: {err}");
    assert!(
        err.contains("on this host's loopback, where a program of uid 65534 listens")
            && err.contains("--dashboard"),
        "{err}"
    );
}

/// The node shell route is outside the login: a stranger's knock on an id
/// this node granted no shell for is refused before any upgrade and without
/// a read of the store (it learns nothing of the database, and a flood
/// costs the store nothing), and a flood of knocks leaves a line a minute.
#[test]
fn a_stranger_knocking_at_the_node_shell_learns_nothing_of_the_database() {
    use std::io::Read;
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let beta = TestHive::start_with(with_dashboard(&db, "beta"));
    let address = node(&beta, "beta")["address"].as_str().unwrap().to_owned();
    for id in 1..=50 {
        assert_eq!(knock(&address, id, "").0, 403);
    }
    let refusals = beta.log().matches("refused a node shell").count();
    assert!(refusals <= 2, "{refusals} log lines for 50 forged tickets");

    // A knock on an id this node granted no shell for reads nothing of the
    // store (anyone on the network can knock, as often as it likes): with
    // the database out of reach the answer is the same plain refusal.
    db.set_reachable(false);
    let (status, mut s) = knock(&address, 7, "");
    let mut body = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut body);
    db.set_reachable(true);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("this node granted no shell request 7 lately"),
        "{body}"
    );
    for secret in [db.name.as_str(), "postgres", "database", "5432"] {
        assert!(
            !body.contains(secret),
            "the answer names {secret:?}: {body}"
        );
    }
    assert!(
        !beta.log().contains("could not read a node shell's request"),
        "{}",
        beta.log()
    );
}

/// A spawn at home on beta of a name destroyed there without `--purge`:
/// what it left (its /state) is on beta's disk, and alpha, showing the
/// approval, looked at its own and warned of nothing. Alpha now says the
/// /state may be there; beta, which can look, says it is; a name never used
/// warns on neither.
#[test]
fn a_spawn_on_another_node_of_a_kept_name_warns_of_its_state_there() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let alpha = TestHive::start_with(Opts::postgres(&db, "alpha"));
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    registered(&alpha, "beta");
    beta.ok(&["spawn", "x"]);
    beta.wait_for("x running on beta", 30, |h| running(h, "x"));
    // Its history is what says it lived; its first event (the harness's
    // state) may be written after it shows running.
    beta.wait_for("x's first event", 30, |h| {
        !h.ok(&["events", "x", "--json"]).trim().is_empty()
    });
    beta.ok(&["destroy", "x"]);
    let queued = |name: &str| {
        alpha
            .ok(&["request-spawn", name, "--node", "beta"])
            .trim()
            .trim_start_matches("approval #")
            .trim_end_matches(" queued")
            .to_owned()
    };
    let id = queued("x");
    let on_alpha = alpha.ok(&["approvals", "show", &id]);
    assert!(
        on_alpha.contains("warning: x was destroyed before without --purge")
            && on_alpha.contains("its /state on node beta if it is still there"),
        "{on_alpha}"
    );
    let on_beta = beta.ok(&["approvals", "show", &id]);
    assert!(on_beta.contains("its /state, kept at"), "{on_beta}");
    let fresh = queued("fresh");
    let shown = alpha.ok(&["approvals", "show", &fresh]);
    assert!(!shown.contains("warning:"), "{shown}");
}

/// An agent's schedules fire as its sends, counted in its home node's
/// memory: fired by every node, each node counted its own minute, and the
/// manager's 200 schedules of 60 kB every second put up to twice its 16 MiB
/// a minute into others' inboxes with two nodes. Only the maker's home node
/// fires them now; beta fires the operator's.
#[test]
fn an_agents_schedules_fire_on_its_home_node_alone_within_its_minutes_sends() {
    use hive_sh4re::limits::{SCHEDULES_PER_AGENT, SEND_BYTES_PER_MINUTE};
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let mut alpha = TestHive::start_with(with_manager(Opts::postgres(&db, "alpha")));
    alpha.wait_for("the manager", 30, |h| h.row("manager").is_some());
    let agents = ["a1", "a2", "a3", "a4"];
    for a in agents {
        alpha.ok(&["spawn", a]);
        alpha.ok(&["pause", a]);
    }
    // The operator's own, for later: a1-a4 hold the manager's 50 each.
    alpha.ok(&["spawn", "a5"]);
    alpha.ok(&["pause", "a5"]);
    let beta = TestHive::start_with(Opts::postgres(&db, "beta"));
    registered(&alpha, "beta");
    let depth = |h: &TestHive| -> u64 {
        agents
            .iter()
            .map(|a| h.row(a).unwrap()["inbox_depth"].as_u64().unwrap_or(0))
            .sum()
    };
    let text = "s".repeat(60_000);
    let mut c = common::Conn::open(&alpha.run_dir().join("agents/manager/agent.sock"));
    for a in agents {
        for _ in 0..SCHEDULES_PER_AGENT {
            c.send(
                &serde_json::json!({"op": "schedule", "agent": a, "when": "every:1s", "text": text})
                    .to_string(),
            );
            let r = c.recv_json();
            assert_eq!(r["ok"], true, "{r}");
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let fired = depth(&beta);
    let most = SEND_BYTES_PER_MINUTE / 60_000;
    assert!(
        fired <= most,
        "{fired} firings of 60 kB in 5 s across two nodes (the manager may send {most} a minute)"
    );
    assert!(fired >= most / 2, "{fired}");
    // With alpha gone the manager's schedules wait for it (beta fired them
    // from a minute of its own), and beta fires the operator's.
    alpha.kill9();
    let held = depth(&beta);
    beta.ok(&["schedule", "add", "a5", "every:1s", "tick"]);
    beta.wait_for("beta to fire the operator's schedule", 10, |h| {
        h.row("a5").unwrap()["inbox_depth"].as_u64().unwrap_or(0) >= 3
    });
    assert_eq!(depth(&beta), held, "beta fired the manager's schedules");
}

/// A hive of one node (sqlite) fires its agents' schedules whatever node
/// name they were made under: its host renamed (the node's name by
/// default), the manager's schedules stayed listed and never fired.
#[test]
fn a_renamed_single_node_hive_still_fires_its_agents_schedules() {
    let mut hive = TestHive::start_with(with_manager(Opts::default()));
    hive.wait_for("the manager", 30, |h| h.row("manager").is_some());
    hive.ok(&["spawn", "x"]);
    hive.ok(&["pause", "x"]);
    let r = common::agent_call(
        &hive,
        "manager",
        serde_json::json!({"op": "schedule", "agent": "x", "when": "every:1s", "text": "tick"}),
    );
    assert_eq!(r["ok"], true, "{r}");
    hive.stop();
    set_node(&mut hive, "renamed");
    hive.serve();
    let depth = |h: &TestHive| h.row("x").unwrap()["inbox_depth"].as_u64().unwrap_or(0);
    let before = depth(&hive);
    hive.wait_for(
        "the manager's schedule to fire on the renamed node",
        10,
        |h| depth(h) >= before + 2,
    );
}
