//! Admission control for turns, through the real claude CLI against the
//! scripted model told to hang (`/_sim/fault`), which keeps the turns that
//! got a slot running until the test heals it: with `--max-concurrent-turns 3`
//! (two slots for agents, one kept for the manager) five agents messaged at
//! once run two at a time, the others show `queued` in the order of their
//! oldest message, a queued agent can be paused (and keeps its place) or
//! cancelled (and leaves the line without a turn), the manager gets a turn
//! while the agents fill every other slot, and everyone is answered.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{ModelSim, Opts, TestHive};
use serde_json::{Value, json};

/// Tells the model server how to fail (`{}` heals it); returns its counts.
fn fault(sim: &ModelSim, f: Value) -> Value {
    serde_json::from_str(&sim.control("POST", "/_sim/fault", &f.to_string())).unwrap()
}

/// `/v1/messages` requests left hanging so far.
fn hung(sim: &ModelSim) -> u64 {
    let v: Value = serde_json::from_str(&sim.control("GET", "/_sim/fault", "")).unwrap();
    v["hung"].as_u64().unwrap()
}

/// Each agent's state and place in line, as `status --json` shows them.
fn states(hive: &TestHive, names: &[&str]) -> BTreeMap<String, (String, Option<u64>)> {
    names
        .iter()
        .map(|n| {
            let r = hive.row(n).unwrap();
            let state = r["state"].as_str().unwrap().to_owned();
            (n.to_string(), (state, r["queue_position"].as_u64()))
        })
        .collect()
}

fn queued(pos: u64) -> (String, Option<u64>) {
    ("queued".to_owned(), Some(pos))
}

fn thinking() -> (String, Option<u64>) {
    ("thinking".to_owned(), None)
}

/// The agents' `turn_start` and `turn_end` events, in the order the hive recorded them.
fn turn_events(hive: &TestHive, names: &[&str]) -> Vec<(i64, String, String)> {
    let mut all: Vec<(i64, String, String)> = names
        .iter()
        .flat_map(|n| hive.events(n))
        .filter(|e| e["kind"] == "turn_start" || e["kind"] == "turn_end")
        .map(|e| {
            (
                e["id"].as_i64().unwrap(),
                e["agent"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    all.sort();
    all
}

/// The most turns of `names` that were ever running together, from their events.
fn most_at_once(events: &[(i64, String, String)]) -> usize {
    let mut running = BTreeSet::new();
    let mut most = 0;
    for (_, agent, kind) in events {
        if kind == "turn_start" {
            running.insert(agent.clone());
        } else {
            running.remove(agent);
        }
        most = most.max(running.len());
    }
    most
}

#[test]
fn turns_wait_in_line_by_their_oldest_message_and_the_manager_never_waits() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let mut opts = Opts {
        env: sim.env(),
        ..Opts::default()
    };
    opts.args.retain(|a| a != "--no-manager");
    opts.args
        .extend(["--max-concurrent-turns".to_owned(), "3".to_owned()]);
    let hive = TestHive::start_with(opts);
    let workers = ["w-a", "w-b", "w-c", "w-d", "w-e"];
    for n in workers {
        hive.ok(&["spawn", n]);
    }
    hive.wait_for("the manager and the agents running and idle", 90, |h| {
        workers.iter().chain(&["manager"]).all(|n| {
            h.row(n)
                .is_some_and(|r| r["running"] == true && r["state"] == "idle")
        })
    });
    assert!(
        hive.log().contains(
            "at most 3 claude processes at once, one kept for the manager (--max-concurrent-turns)"
        ),
        "the limit and where it came from, at start:\n{}",
        hive.log()
    );

    // Every model request hangs: a turn that got a slot holds it.
    fault(&sim, json!({"hang": true}));
    // Messages in an order that is neither the names' nor anything else's.
    let order = ["w-d", "w-a", "w-e", "w-b", "w-c"];
    for (i, n) in order.into_iter().enumerate() {
        hive.ok(&["send", n, "ping"]);
        // The first two take the agents' two slots, which go to whoever asks
        // first: each reaches the model before the next is sent, as a loaded
        // machine may wake a later agent's harness first.
        if i < 2 {
            hive.wait_for(&format!("{n}'s turn at the model"), 60, |_| {
                hung(&sim) == i as u64 + 1
            });
        }
    }
    hive.wait_for("two turns running, three in line", 60, |h| {
        states(h, &workers)
            == BTreeMap::from([
                ("w-d".into(), thinking()),
                ("w-a".into(), thinking()),
                ("w-e".into(), queued(1)),
                ("w-b".into(), queued(2)),
                ("w-c".into(), queued(3)),
            ])
    });
    hive.wait_for("both running turns at the model", 30, |_| hung(&sim) == 2);
    let table = hive.ok(&["status"]);
    let line = table.lines().find(|l| l.starts_with("w-e")).unwrap();
    assert!(
        line.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0] == "queued" && w[1].ends_with('s')),
        "the state column shows `queued <age>`: {line}"
    );

    // The manager has its own slot: it answers while the agents fill theirs.
    hive.ok(&["send", "manager", "ping"]);
    hive.wait_for("the manager's turn at the model", 60, |h| {
        h.row("manager").unwrap()["state"] == "thinking" && hung(&sim) == 3
    });

    // Paused in line: it leaves it, and comes back to its place (its message is older).
    hive.ok(&["pause", "w-b"]);
    hive.wait_for("w-b out of line", 30, |h| {
        let s = states(h, &workers);
        s["w-b"] == ("idle".to_owned(), None) && s["w-c"] == queued(2)
    });
    // Cancelled in line: it leaves it without a turn; its message waits, held.
    hive.ok(&["cancel", "w-c"]);
    hive.wait_for("w-c out of line", 30, |h| {
        states(h, &workers)["w-c"] == ("idle".to_owned(), None)
    });
    assert_eq!(hive.row("w-c").unwrap()["inbox_depth"], 1);
    hive.ok(&["resume", "w-b"]);
    hive.wait_for("w-b back at its place", 30, |h| {
        let s = states(h, &workers);
        s["w-e"] == queued(1) && s["w-b"] == queued(2)
    });
    assert_eq!(hung(&sim), 3, "nobody else reached the model");

    // The model answers: every turn in line is served, the cancelled one is not.
    fault(&sim, json!({}));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut from = BTreeSet::new();
    while from.len() < 5 {
        assert!(
            Instant::now() < deadline,
            "answered only by {from:?}\n{}",
            hive.log()
        );
        for m in hive.recv_operator(5) {
            assert_eq!(m["body"], "pong", "{m}");
            from.insert(m["from"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        from,
        BTreeSet::from(["manager", "w-a", "w-b", "w-d", "w-e"].map(String::from))
    );
    let events = turn_events(&hive, &workers);
    assert_eq!(most_at_once(&events), 2, "{events:?}");
    let starts: Vec<&str> = events
        .iter()
        .filter(|(_, _, k)| k == "turn_start")
        .map(|(_, a, _)| a.as_str())
        .collect();
    assert_eq!(starts.len(), 4, "w-c had no turn: {starts:?}");
    assert_eq!(
        starts[..2].iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"w-d", &"w-a"])
    );
    assert_eq!(
        starts[2..].iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"w-e", &"w-b"])
    );
    assert_eq!(hive.row("w-c").unwrap()["inbox_depth"], 1, "held, not lost");
}

#[test]
fn a_harness_killed_mid_turn_gives_its_slot_back_and_a_compaction_needs_one() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    let mut opts = Opts {
        env: sim.env(),
        ..Opts::default()
    };
    // One slot for agents (the other is the manager's, unused here).
    opts.args
        .extend(["--max-concurrent-turns".to_owned(), "2".to_owned()]);
    let hive = TestHive::start_with(opts);
    let workers = ["alice", "bob"];
    for n in workers {
        hive.ok(&["spawn", n]);
    }
    hive.wait_for("the agents running and idle", 60, |h| {
        workers.iter().all(|n| {
            h.row(n)
                .is_some_and(|r| r["running"] == true && r["state"] == "idle")
        })
    });
    fault(&sim, json!({"hang": true}));
    hive.ok(&["send", "alice", "ping"]);
    hive.wait_for("alice at the model", 60, |_| hung(&sim) == 1);
    // claude outside a turn (a compaction) needs a slot too: none is free.
    let admit =
        |wait_ms: u64| common::agent_call(&hive, "bob", json!({"op": "admit", "wait_ms": wait_ms}));
    let r = admit(300);
    assert_eq!((&r["ok"], r.get("admitted")), (&json!(true), None), "{r}");
    hive.ok(&["send", "bob", "ping"]);
    hive.wait_for("alice at the model, bob in line", 60, |h| {
        states(h, &workers)
            == BTreeMap::from([("alice".into(), thinking()), ("bob".into(), queued(1))])
            && hung(&sim) == 1
    });
    nix::sys::signal::kill(
        common::harness_pid(&hive, "alice"),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    hive.wait_for("bob's turn at the model", 60, |h| {
        h.row("bob").unwrap()["state"] == "thinking" && hung(&sim) == 2
    });
    // bob holds the agents' slot now; a second connection of his counts as him.
    assert_eq!(admit(300)["admitted"], true);
    fault(&sim, json!({}));
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut from = BTreeSet::new();
    while from.len() < 2 {
        assert!(Instant::now() < deadline, "answered only by {from:?}");
        for m in hive.recv_operator(5) {
            from.insert(m["from"].as_str().unwrap().to_owned());
        }
    }
}

/// A hive with one turn slot for agents and one for the manager, whose
/// slots are held at most 2 s and a grace of 1 s (a compaction's too).
fn short_slots(mut opts: Opts) -> TestHive {
    opts.args.extend([
        "--max-concurrent-turns".to_owned(),
        "2".to_owned(),
        "--turn-timeout".to_owned(),
        "2s".to_owned(),
    ]);
    opts.env.push(("HIVE_SLOT_GRACE_SECS".into(), "1".into()));
    opts.env
        .push(("HIVE_COMPACTION_SLOT_SECS".into(), "1".into()));
    TestHive::start_with(opts)
}

/// A connection of its own to `agent`'s socket, once the socket is there.
fn connect(hive: &TestHive, agent: &str) -> std::os::unix::net::UnixStream {
    let sock = hive.run_dir().join("agents").join(agent).join("agent.sock");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) {
            return s;
        }
        assert!(Instant::now() < deadline, "no socket for {agent}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent that takes the agents' turn slot (`admit`, as its harness asks
/// for a compaction) and never gives it back, on a connection it keeps open
/// and silent, used to hold every other agent's turns queued for good. The
/// slot is taken back once the agent's turn limit and a grace have passed;
/// the operator is told who held it.
#[test]
fn an_agent_holding_a_turn_slot_past_its_limit_gives_it_back() {
    use std::io::{BufRead, BufReader, Write};
    let hive = short_slots(Opts::default());
    for n in ["mallory", "carol"] {
        hive.ok(&["spawn", n]);
    }
    let held = connect(&hive, "mallory");
    // Before the ask: the daemon's clock on the slot starts after it, so
    // the limit counted from here is never shorter than the daemon's.
    let taken = Instant::now();
    (&held)
        .write_all(b"{\"op\":\"admit\",\"wait_ms\":3000}\n")
        .unwrap();
    let mut reader = BufReader::new(held.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("\"admitted\":true"), "{line}");
    // carol waits in line behind it, then gets it once mallory's hold ran out.
    let admit = || common::agent_call(&hive, "carol", json!({"op": "admit", "wait_ms": 1000}));
    assert_ne!(
        admit()["admitted"],
        true,
        "the one agents' slot is mallory's"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while admit()["admitted"] != true {
        assert!(Instant::now() < deadline, "mallory still holds the slot");
    }
    assert!(
        taken.elapsed() >= Duration::from_secs(3),
        "taken back before the limit"
    );
    // mallory's connection was ended, and the operator told.
    line.clear();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(reader.read_line(&mut line).unwrap_or(0), 0, "{line}");
    let notes = hive.request(json!({"cmd": "notifications", "limit": 10}));
    assert!(
        notes.to_string().contains("mallory held a turn slot for"),
        "{notes}"
    );
}

/// A slot's limit does not count the time the agent's question waits on
/// the operator (its harness stops the turn's clock too): the manager
/// holding a slot while it waits for an answer keeps it past the limit, and
/// gives it back once the limit and that wait have passed.
#[test]
fn time_a_question_waits_on_the_operator_does_not_count_against_a_slot() {
    use std::io::{BufRead, BufReader, Write};
    let mut opts = Opts::default();
    opts.args.retain(|a| a != "--no-manager");
    let hive = short_slots(opts);
    let held = connect(&hive, "manager");
    let mut reader = BufReader::new(held.try_clone().unwrap());
    let call = |req: &str, reader: &mut BufReader<std::os::unix::net::UnixStream>| {
        (&held).write_all(format!("{req}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap_or(0);
        line
    };
    let admitted = call(r#"{"op":"admit","wait_ms":3000}"#, &mut reader);
    assert!(admitted.contains("\"admitted\":true"), "{admitted}");
    let taken = Instant::now();
    let asking = std::thread::spawn({
        let s = connect(&hive, "manager");
        move || {
            (&s).write_all(br#"{"op":"ask_operator","question":"go on?","ttl_seconds":60}"#)
                .unwrap();
            (&s).write_all(b"\n").unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            line
        }
    });
    // Past the slot's 3 s, the question still waits: the slot stays.
    std::thread::sleep(Duration::from_secs(5));
    let status = call(r#"{"op":"status"}"#, &mut reader);
    assert!(
        status.contains("\"ok\":true"),
        "the slot was taken back while the manager waited on the operator: {status:?}"
    );
    let questions = hive.ok(&["questions", "--json"]);
    let id = questions
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|q| q["question"] == "go on?")
        .map(|q| q["id"].to_string())
        .unwrap_or_else(|| panic!("{questions}"));
    hive.ok(&["answer", &id, "yes"]);
    assert!(asking.join().unwrap().contains("yes"));
    // Then the limit runs on from where it stood: the slot is taken back.
    held.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut line = String::new();
    assert_eq!(reader.read_line(&mut line).unwrap_or(0), 0, "{line}");
    // The limit (3 s) and the question's wait (5 s, less the moments its
    // ask took to arrive, which a loaded machine stretches).
    assert!(
        taken.elapsed() >= Duration::from_secs(7),
        "{:?}",
        taken.elapsed()
    );
}
