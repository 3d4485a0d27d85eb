//! A message whose `send` answered ok survives kill -9 of the daemon, and
//! `recv` hands out each message exactly once, before and after crashes.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestHive;

/// Sends until the connection breaks; records the id of every send answered ok.
fn sender(sock: std::path::PathBuf, tag: usize, acked: Arc<Mutex<Vec<i64>>>) {
    let Ok(mut s) = UnixStream::connect(&sock) else {
        return;
    };
    let mut r = BufReader::new(s.try_clone().unwrap());
    for i in 0.. {
        let line = format!("{{\"cmd\":\"send\",\"to\":\"operator\",\"body\":\"t{tag}-{i}\"}}\n");
        if s.write_all(line.as_bytes()).is_err() {
            return;
        }
        let mut answer = String::new();
        match r.read_line(&mut answer) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["ok"], true, "{answer}");
        acked
            .lock()
            .unwrap()
            .push(v["message_id"].as_i64().unwrap());
    }
}

fn recv_all(hive: &TestHive, max: u32) -> Vec<i64> {
    let v = hive.request(serde_json::json!({"cmd": "recv", "max": max}));
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

#[test]
fn send_survives_kill_9_and_recv_returns_each_once() {
    let mut opts = common::Opts::default();
    opts.args
        .extend(["--inbox-cap".to_owned(), "10000000".to_owned()]);
    let mut hive = TestHive::start_with(opts);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut received: Vec<i64> = Vec::new();
    for round in 0..5u64 {
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (sock, acked) = (hive.sock(), acked.clone());
                std::thread::spawn(move || sender(sock, t, acked))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        // Some messages are read (and so acknowledged) while the sends go on.
        received.extend(recv_all(&hive, 50));
        std::thread::sleep(Duration::from_millis(30 * round));
        hive.kill9();
        for t in threads {
            t.join().unwrap();
        }
        hive.serve();
    }
    // Drain the rest.
    loop {
        let got = recv_all(&hive, 1000);
        if got.is_empty() {
            break;
        }
        received.extend(got);
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "too few sends to mean anything: {}",
        acked.len()
    );
    let unique: HashSet<i64> = received.iter().copied().collect();
    assert_eq!(
        unique.len(),
        received.len(),
        "recv returned a message twice"
    );
    let missing: Vec<i64> = acked
        .iter()
        .filter(|id| !unique.contains(id))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged sends were lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn acknowledged_messages_do_not_come_back_after_a_crash() {
    let mut hive = TestHive::start();
    for i in 0..10 {
        hive.ok(&["send", "operator", &format!("m{i}")]);
    }
    let first = recv_all(&hive, 4);
    assert_eq!(first.len(), 4);
    hive.kill9();
    hive.serve();
    let rest = recv_all(&hive, 100);
    assert_eq!(rest.len(), 6);
    assert!(rest.iter().all(|id| !first.contains(id)));
}

/// The manager asks the operator; its node crashes before the answer. The
/// question stays listed for the operator, who answers it, and the answer
/// reached no one: only the waiting tool call carried it, and that died
/// with the daemon. It now goes to the asker's inbox.
#[test]
fn an_answer_to_a_question_asked_before_a_crash_reaches_the_asker() {
    let mut opts = common::Opts::default();
    opts.args.retain(|a| a != "--no-manager");
    let mut hive = TestHive::start_with(opts);
    hive.wait_for("the manager", 30, |h| h.row("manager").is_some());
    let (asking, id) = manager_asks(&hive, "ship it?");
    hive.kill9();
    drop(asking);
    hive.serve();
    hive.ok(&["answer", &id.to_string(), "yes, ship it"]);
    let inbox = hive.ok(&["recv", "--as", "manager", "--max", "100"]);
    assert!(
        inbox.contains(&format!(
            "Question #{id} (\"ship it?\") ended: yes, ship it"
        )),
        "{inbox}"
    );
}

/// The operator answers a question whose asker's inbox is full (here of
/// the operator's own messages): the answer was stored, its message to
/// the asker refused, and `answer` said it worked, so the asker never
/// learned it. Now the operator is told, with what to do.
#[test]
fn an_answer_the_asker_cannot_be_told_is_said_to_the_operator() {
    let mut opts = common::Opts::default();
    opts.args.retain(|a| a != "--no-manager");
    opts.args.extend(["--inbox-cap".into(), "20".into()]);
    let hive = TestHive::start_with(opts);
    hive.wait_for("the manager", 30, |h| h.row("manager").is_some());
    hive.ok(&["pause", "manager"]);
    let (_asking, id) = manager_asks(&hive, "ship it?");
    let id = id.to_string();
    let mut sent = 0;
    while hive.cli(&["send", "manager", "filler"]).status.success() {
        sent += 1;
        assert!(sent <= 20, "the inbox cap held nothing back");
    }
    let out = hive.cli(&["answer", &id, "yes, ship it"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "answer said it worked");
    assert!(
        said.contains(&format!(
            "question #{id} ended, but manager could not be told"
        )) && said.contains("hive-c0re recv --as manager"),
        "{said}"
    );
    // Ended all the same: a second answer is refused, as for any ended question.
    let again = hive.cli(&["answer", &id, "no"]);
    assert!(!again.status.success());
}

/// The manager asks the operator `question` (over its agent.sock, with
/// ten minutes to answer); the connection that waits and the question's id.
fn manager_asks(hive: &TestHive, question: &str) -> (std::os::unix::net::UnixStream, i64) {
    use std::io::Write;
    let sock = hive.run_dir().join("agents/manager/agent.sock");
    // The row is stored before the socket is bound.
    hive.wait_for("the manager's agent.sock", 10, |_| {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    });
    let asking = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let ask = serde_json::json!({"op": "ask_operator", "question": question, "ttl_seconds": 600});
    (&asking).write_all(format!("{ask}\n").as_bytes()).unwrap();
    hive.wait_for("the question", 10, |h| {
        h.ok(&["questions", "--json"]).contains(question)
    });
    let id = hive
        .ok(&["questions", "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|q| q["question"] == question)
        .and_then(|q| q["id"].as_i64())
        .unwrap();
    (asking, id)
}

/// Ids of a `next_turn` or `recv` answer on an agent's socket.
fn ids_of(answer: &serde_json::Value) -> Vec<i64> {
    answer["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {answer}"))
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect()
}

/// What an agent's `recv` tool reads during a turn belongs to that turn: a
/// harness that goes away mid-turn (a crash) gives it back with the turn's
/// own messages, and a turn that ends well acknowledges it with them. Outside
/// a turn, `recv` acknowledges at once. Before, a mid-turn `recv` was
/// acknowledged as it was read, and lost with a turn that then failed.
#[test]
fn what_recv_reads_mid_turn_comes_again_when_the_turn_does_not_end() {
    use serde_json::json;
    let (_bin, env) = common::idle_harness();
    let hive = TestHive::start_with(common::Opts {
        env,
        ..common::Opts::default()
    });
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice to run", 30, |h| {
        h.row("alice").is_some_and(|r| r["running"] == true)
    });
    let sock = hive.run_dir().join("agents/alice/agent.sock");
    let depth = |h: &TestHive| h.row("alice").unwrap()["inbox_depth"].as_u64().unwrap();
    let next_turn = |c: &mut common::Conn| {
        c.send(&json!({"op": "next_turn", "wait_ms": 5000}).to_string());
        ids_of(&c.recv_json())
    };
    let recv = |c: &mut common::Conn| {
        c.send(&json!({"op": "recv", "max": 20}).to_string());
        ids_of(&c.recv_json())
    };

    hive.ok(&["send", "alice", "first"]);
    let mut harness = common::Conn::open(&sock);
    let first = next_turn(&mut harness);
    assert_eq!(first.len(), 1);
    hive.ok(&["send", "alice", "second"]);
    // claude's MCP server speaks on a connection of its own.
    let mut mcp = common::Conn::open(&sock);
    let second = recv(&mut mcp);
    assert_eq!(second.len(), 1, "the mid-turn recv reads the new message");
    assert_eq!(
        depth(&hive),
        2,
        "both wait on the turn, neither is acknowledged"
    );

    // The harness dies mid-turn: both come again, in the next turn.
    drop(harness);
    let mut harness = common::Conn::open(&sock);
    let again = next_turn(&mut harness);
    assert_eq!(
        again,
        [first[0], second[0]],
        "the turn's message and the one read mid-turn"
    );

    // A turn that ends well acknowledges what it read mid-turn too.
    hive.ok(&["send", "alice", "third"]);
    let third = recv(&mut mcp);
    assert_eq!(third.len(), 1);
    harness.send(
        &json!({"op": "turn_end", "outcome": "ack",
                "stats": {"duration_ms": 10, "exit_code": 0, "exit_class": "ok", "tool_calls": {}, "messages_received": 2}})
        .to_string(),
    );
    let ended = harness.recv_json();
    assert_eq!(ended["ok"], true, "{ended}");
    assert_eq!(
        depth(&hive),
        0,
        "the turn's messages and the one read mid-turn are acknowledged"
    );
    assert!(recv(&mut mcp).is_empty());

    // Outside a turn (claude compacting), what recv reads is acknowledged at once.
    hive.ok(&["pause", "alice"]);
    hive.ok(&["send", "alice", "fourth"]);
    assert_eq!(recv(&mut mcp).len(), 1);
    assert_eq!(depth(&hive), 0);
}
