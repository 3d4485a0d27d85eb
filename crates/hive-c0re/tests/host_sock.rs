//! host.sock as its clients meet it: exact answer bytes, and bad input that
//! must never kill the daemon or another client's connection.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{Conn, TestHive};

/// Replaces what changes from run to run (times, shas, message ids) so answers can be pinned.
fn normalize(line: &str) -> String {
    let ts = regex::Regex::new(r#""\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ""#).unwrap();
    let sha = regex::Regex::new(r#""deployed_sha":"[0-9a-f]{12}""#).unwrap();
    let msg_id = regex::Regex::new(r#""message_id":\d+"#).unwrap();
    let row_id = regex::Regex::new(r#""id":\d+,"from""#).unwrap();
    let line = ts.replace_all(line, "\"<ts>\"");
    let line = sha.replace_all(&line, "\"deployed_sha\":\"<sha>\"");
    let line = msg_id.replace_all(&line, "\"message_id\":<n>");
    row_id
        .replace_all(&line, "\"id\":<n>,\"from\"")
        .into_owned()
}

/// Compares answers with `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites the file.
fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "answers differ from {} (UPDATE_GOLDEN=1 rewrites it after a deliberate change)",
        path.display()
    );
}

#[test]
fn answers_of_every_hyperhive_verb_are_pinned() {
    // A model URL counts as credentials, so the harness does not park with needs_login.
    let mut opts = common::Opts::default();
    opts.env
        .push(("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:9".into()));
    // Rows carry their home node: a fixed name, not this host's, keeps the answers pinned.
    opts.args.extend(["--node".into(), "golden".into()]);
    let hive = TestHive::start_with(opts);
    let mut transcript = String::new();
    let mut ask = |line: &str| {
        let answer = hive.raw(line);
        transcript.push_str(&format!("> {line}\n< {}", normalize(&answer)));
    };
    ask(r#"{"cmd":"list"}"#);
    ask(r#"{"cmd":"agent_status"}"#);
    ask(r#"{"cmd":"pending"}"#);
    ask(r#"{"cmd":"urls"}"#);
    ask(r#"{"cmd":"spawn","name":"alice","model":"sonnet"}"#);
    ask(r#"{"cmd":"set_paused","name":"alice","paused":true}"#);
    ask(r#"{"cmd":"stop","scope":{"agent_names":["alice"]},"graceful":false}"#);
    ask(r#"{"cmd":"list"}"#);
    ask(r#"{"cmd":"agent_status"}"#);
    ask(r#"{"cmd":"request_spawn","name":"bob","description":"a reviewer"}"#);
    ask(r#"{"cmd":"pending"}"#);
    ask(r#"{"cmd":"deny","id":1,"note":"not now"}"#);
    ask(r#"{"cmd":"approve","id":1}"#);
    ask(r#"{"cmd":"pending"}"#);
    ask(r#"{"cmd":"start","scope":{}}"#);
    ask(r#"{"cmd":"restart","name":"ghost"}"#);
    ask(r#"{"cmd":"set_paused","name":"alice","paused":false}"#);
    ask(r#"{"cmd":"send","to":"alice","body":"hello"}"#);
    ask(r#"{"cmd":"recv","as":"alice","max":5}"#);
    ask(r#"{"cmd":"recv"}"#);
    golden("hyperhive_verbs.txt", &transcript);
}

#[test]
fn subscribe_agent_status_acks_then_streams_changed_rows() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["kill", "alice"]);
    let mut sub = Conn::open(&hive.sock());
    sub.send(r#"{"cmd":"subscribe_agent_status"}"#);
    assert_eq!(sub.recv(), "{\"version\":1,\"ok\":true}\n");
    // A client that is done sending (half-closed) still reads its stream.
    sub.stream.shutdown(std::net::Shutdown::Write).unwrap();
    hive.ok(&["pause", "alice"]);
    // The kill's last change (its harness reaped) may still come first: each
    // frame is alice's row alone, and one of the next few is paused.
    let mut seen = vec![];
    loop {
        let row = sub.recv_json();
        assert_eq!(row["ok"], true, "{row}");
        let rows = row["agent_statuses"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{row}");
        assert_eq!(rows[0]["name"], "alice", "{row}");
        if rows[0]["paused"] == true {
            break;
        }
        seen.push(row);
        assert!(seen.len() < 5, "no row said alice is paused: {seen:?}");
    }
}

fn still_answers(hive: &TestHive) {
    let v = hive.request(serde_json::json!({"cmd": "agent_status"}));
    assert_eq!(v["ok"], true, "daemon stopped answering:\n{}", hive.log());
    assert!(hive.cli(&["status"]).status.success());
}

#[test]
fn malformed_lines_are_refused_and_the_connection_lives_on() {
    let hive = TestHive::start();
    let mut c = Conn::open(&hive.sock());
    for (bad, says) in [
        ("{nope", "not valid JSON"),
        ("[1,2]", "must be a JSON object"),
        (r#"{"cmd":"fly"}"#, "unknown cmd \"fly\""),
        (r#"{"cmd":7}"#, "must be a string"),
        (r#"{"name":"x"}"#, "no \"cmd\" field"),
        (
            r#"{"cmd":"set_paused","name":"alice"}"#,
            "missing field `paused`",
        ),
        (
            r#"{"cmd":"approve","id":"seven"}"#,
            "bad \"approve\" request",
        ),
        (
            r#"{"cmd":"restart","name":"../etc"}"#,
            "must start with a lowercase letter",
        ),
        (r#"{"cmd":"restart","name":"a/b"}"#, "only a-z, 0-9 and '-'"),
    ] {
        c.send(bad);
        let v = c.recv_json();
        assert_eq!(v["ok"], false, "{bad}");
        assert_eq!(v["version"], 1);
        let err = v["error"].as_str().unwrap();
        assert!(err.contains(says), "{bad} → {err}");
    }
    c.send_bytes(b"\xff\xfe\xfd\n");
    assert!(c.recv_json()["error"].as_str().unwrap().contains("UTF-8"));
    c.send(r#"{"cmd":"list"}"#);
    assert_eq!(c.recv(), "{\"version\":1,\"ok\":true,\"agents\":[]}\n");
    still_answers(&hive);
}

#[test]
fn a_line_over_one_mib_is_refused_without_dropping_the_connection() {
    let hive = TestHive::start();
    let mut c = Conn::open(&hive.sock());
    let big = format!(
        "{{\"cmd\":\"send\",\"to\":\"operator\",\"body\":\"{}\"}}\n",
        "x".repeat(3 * 1024 * 1024)
    );
    c.send_bytes(big.as_bytes());
    let v = c.recv_json();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("over 1 MiB"), "{v}");
    c.send(r#"{"cmd":"list"}"#);
    assert_eq!(c.recv_json()["ok"], true);
    still_answers(&hive);
}

#[test]
fn silent_and_half_line_clients_hold_nothing_up() {
    let hive = TestHive::start();
    let _silent: Vec<Conn> = (0..20).map(|_| Conn::open(&hive.sock())).collect();
    {
        let mut half = Conn::open(&hive.sock());
        half.send_bytes(br#"{"cmd":"li"#);
    } // closed mid-line
    let mut stalled = Conn::open(&hive.sock());
    stalled.send_bytes(br#"{"cmd":"agent_st"#);
    still_answers(&hive);
    // The stalled line completes later and is still answered in order.
    stalled.send_bytes(b"atus\"}\n");
    assert_eq!(stalled.recv_json()["ok"], true);
}

#[test]
fn an_idle_or_stalled_connection_is_closed() {
    let mut opts = common::Opts::default();
    opts.env.push(("HIVE_IDLE_TIMEOUT_SECS".into(), "1".into()));
    let hive = TestHive::start_with(opts);
    let mut silent = Conn::open(&hive.sock());
    let mut stalled = Conn::open(&hive.sock());
    stalled.send_bytes(br#"{"cmd":"li"#);
    let mut busy = Conn::open(&hive.sock());
    for _ in 0..3 {
        // A connection in use is not dropped between requests.
        busy.send(r#"{"cmd":"list"}"#);
        assert_eq!(busy.recv_json()["ok"], true);
        std::thread::sleep(Duration::from_millis(600));
    }
    assert_eq!(silent.recv(), "", "a silent client kept its connection");
    assert_eq!(
        stalled.recv(),
        "",
        "a client stalled mid-line kept its connection"
    );
    still_answers(&hive);
}

#[test]
fn two_hundred_clients_at_once() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    let sock = hive.sock();
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = Conn::open(&sock);
                c.send(r#"{"cmd":"agent_status"}"#);
                let a = c.recv_json();
                c.send(&format!(
                    r#"{{"cmd":"send","to":"operator","body":"m{i}"}}"#
                ));
                let b = c.recv_json();
                a["ok"] == true && b["ok"] == true
            })
        })
        .collect();
    let ok = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|&b| b)
        .count();
    assert_eq!(ok, 200);
    let v = hive.request(serde_json::json!({"cmd":"recv","max":1000}));
    assert_eq!(v["messages"].as_array().unwrap().len(), 200);
    still_answers(&hive);
}

/// Reads one answer line, or says the daemon kept the client waiting.
fn answer_within(c: &mut Conn, secs: u64, what: &str) -> serde_json::Value {
    c.stream
        .set_read_timeout(Some(Duration::from_secs(secs)))
        .unwrap();
    let mut line = String::new();
    let mut r = std::io::BufReader::new(&c.stream);
    match std::io::BufRead::read_line(&mut r, &mut line) {
        Ok(n) if n > 0 => serde_json::from_str(&line).unwrap(),
        Ok(_) => panic!("{what}: the daemon closed the connection without answering"),
        Err(e) => panic!("{what}: no answer within {secs} s ({e})"),
    }
}

/// The soft open-file limit of a running process, from /proc.
fn soft_nofile(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn a_thousand_idle_connections_keep_no_request_waiting() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const IDLE: usize = 1100;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= 2 * IDLE as u64,
        "this test holds {IDLE} connections open; the hard open-file limit is {hard}"
    );
    if soft < 2 * IDLE as u64 {
        setrlimit(Resource::RLIMIT_NOFILE, 2 * IDLE as u64, hard).unwrap();
    }
    // Started with the common default of 1024 open files: the daemon raises it itself.
    let opts = common::Opts {
        nofile: Some(1024),
        ..common::Opts::default()
    };
    let hive = TestHive::start_with(opts);
    let pid = hive.child.as_ref().unwrap().id();
    assert!(
        soft_nofile(pid) >= 4096,
        "the daemon kept a low open-file limit"
    );
    let mut idle: Vec<Conn> = (0..IDLE).map(|_| Conn::open(&hive.sock())).collect();
    // The idle timeout is 60 s: an answer well before it was not waiting for an idle client to go.
    let mut c = Conn::open(&hive.sock());
    c.send(r#"{"cmd":"list"}"#);
    let v = answer_within(&mut c, 20, "a request behind 1100 idle connections");
    assert_eq!(v["ok"], true);
    assert!(hive.cli(&["status"]).status.success());
    // Every idle connection was accepted and is still served.
    for i in [0, IDLE / 2, IDLE - 1] {
        idle[i].send(r#"{"cmd":"list"}"#);
        let v = answer_within(&mut idle[i], 20, "an idle connection's first request");
        assert_eq!(v["ok"], true);
    }
}

#[test]
fn at_the_bound_the_longest_idle_connection_gives_way_and_busy_ones_stay() {
    let mut opts = common::Opts::default();
    opts.env.push(("HIVE_MAX_CONNECTIONS".into(), "8".into()));
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["kill", "alice"]);
    let subscribe = |c: &mut Conn| {
        c.send(r#"{"cmd":"subscribe_agent_status"}"#);
        assert_eq!(c.recv(), "{\"version\":1,\"ok\":true}\n");
    };
    let mut sub = Conn::open(&hive.sock());
    subscribe(&mut sub);
    // Seven idle connections, each idle since its answer, oldest first.
    let mut idle: Vec<Conn> = (0..7)
        .map(|_| {
            let mut c = Conn::open(&hive.sock());
            c.send(r#"{"cmd":"list"}"#);
            assert_eq!(c.recv_json()["ok"], true);
            c
        })
        .collect();
    // Full: a newcomer is answered at once, and the longest idle one is closed for it.
    let mut newcomer = Conn::open(&hive.sock());
    newcomer.send(r#"{"cmd":"list"}"#);
    assert_eq!(
        answer_within(&mut newcomer, 20, "a newcomer at the bound")["ok"],
        true
    );
    assert_eq!(idle[0].recv(), "", "the longest idle connection was kept");
    idle[1].send(r#"{"cmd":"list"}"#);
    assert_eq!(idle[1].recv_json()["ok"], true);
    // The stream was busy, so it stayed: it still reports changes.
    hive.ok(&["pause", "alice"]);
    // (A row of the kill's end may come first: alice's harness is reaped
    // after `kill` answers.)
    let rows: Vec<serde_json::Value> = (0..5)
        .map(|_| sub.recv_json())
        .take_while(|row| row["agent_statuses"][0]["paused"] != true)
        .collect();
    assert!(rows.len() < 5, "no row told of the pause: {rows:?}");
    // When every place is busy, a newcomer is refused with a sentence.
    let mut subs: Vec<Conn> = (0..7)
        .map(|_| {
            let mut c = Conn::open(&hive.sock());
            subscribe(&mut c);
            c
        })
        .collect();
    let mut late = Conn::open(&hive.sock());
    let v = answer_within(&mut late, 20, "a newcomer when all are busy");
    assert_eq!(v["ok"], false);
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("all 8 connections busy"), "{err}");
    // A place freed is a place for the next client.
    drop(subs.pop());
    drop(sub);
    hive.wait_for("a freed place", 10, |h| h.cli(&["status"]).status.success());
}

#[test]
fn many_requests_on_one_connection_are_answered_in_order() {
    let hive = TestHive::start();
    let mut c = Conn::open(&hive.sock());
    let mut batch = String::new();
    for i in 0..50 {
        batch.push_str(&format!(
            "{{\"cmd\":\"send\",\"to\":\"operator\",\"body\":\"{i}\"}}\n"
        ));
    }
    c.send_bytes(batch.as_bytes());
    let ids: Vec<i64> = (0..50)
        .map(|_| c.recv_json()["message_id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

/// The loss a waiting `recv` caused: its client gave up (Ctrl-C, a dropped
/// ssh), and the next message was taken, marked delivered and written to a
/// closed socket, never to be read by anyone.
#[test]
fn a_waiting_recv_whose_client_left_takes_nothing() {
    let hive = TestHive::start();
    let mut s = Conn::open(&hive.sock());
    let mut send = |body: &str| {
        s.send(&format!(
            "{{\"cmd\":\"send\",\"to\":\"operator\",\"body\":\"{body}\"}}"
        ));
        assert_eq!(s.recv_json()["ok"], true);
    };
    let inbox = || {
        let mut r = Conn::open(&hive.sock());
        r.send(r#"{"cmd":"recv"}"#);
        let v = r.recv_json();
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["body"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    // Leaving as it waits; and leaving with a next request sent ahead.
    for (body, ahead) in [
        ("after the first left", ""),
        ("after the second left", "{\"cmd\":\"list\"}\n"),
    ] {
        let mut c = Conn::open(&hive.sock());
        c.send_bytes(format!("{{\"cmd\":\"recv\",\"wait_ms\":30000}}\n{ahead}").as_bytes());
        // Let the daemon read the request and start waiting, then leave.
        std::thread::sleep(Duration::from_millis(300));
        drop(c);
        std::thread::sleep(Duration::from_millis(1500));
        send(body);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            inbox(),
            [body],
            "the message the reader that left would have taken"
        );
    }

    // A client that only shut down its sending side still reads its answer.
    let mut half = Conn::open(&hive.sock());
    half.send(r#"{"cmd":"recv","wait_ms":30000}"#);
    half.shutdown_write();
    std::thread::sleep(Duration::from_millis(1500));
    send("for the half-closed");
    let v = half.recv_json();
    assert_eq!(v["messages"][0]["body"], "for the half-closed", "{v}");
}

#[test]
fn socket_and_directory_modes() {
    use std::os::unix::fs::PermissionsExt;
    let hive = TestHive::start();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&hive.sock()), 0o660);
    assert_eq!(mode(&hive.run_dir()), 0o751);
}

#[test]
fn a_second_daemon_on_the_same_run_dir_refuses() {
    let hive = TestHive::start();
    let out = hive
        .command()
        .args([
            "serve",
            "--runtime",
            "process",
            "--no-manager",
            "--no-dashboard",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another hive-c0re is already serving"),
        "{err}"
    );
    still_answers(&hive);
}

#[test]
fn a_stale_socket_left_by_a_crash_is_replaced() {
    let mut hive = TestHive::start();
    hive.kill9();
    assert!(
        hive.sock().exists(),
        "kill -9 leaves the socket file behind"
    );
    hive.serve();
    still_answers(&hive);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut hive = TestHive::start();
    let st = hive.stop();
    assert!(st.success(), "{st}");
    assert!(!hive.sock().exists());
    let mut log = String::new();
    std::fs::File::open(hive.log_path())
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn the_std_client_of_hive_sh4re_drives_the_real_daemon() {
    use hive_sh4re::host::client::{Client, Error, request};
    use hive_sh4re::host::verb;
    use hive_sh4re::{AgentName, Mailbox};
    let hive = TestHive::start();
    let alice = AgentName::parse("alice").unwrap();
    request(
        hive.sock(),
        verb::Spawn {
            name: alice.clone(),
            model: None,
            node: None,
        },
    )
    .unwrap();
    let mut c = Client::connect(hive.sock()).unwrap();
    let agents = c.call(verb::List {}).unwrap().agents.unwrap();
    assert_eq!(agents, ["alice"]);
    let sent = c
        .call(verb::Send {
            to: Mailbox::Operator,
            body: "to myself".into(),
            key: None,
        })
        .unwrap();
    let got = c
        .call(verb::Recv {
            wait_ms: Some(5000),
            ..verb::Recv::default()
        })
        .unwrap()
        .messages
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].id, got[0].body.as_str()),
        (sent.message_id.unwrap(), "to myself")
    );
    let ghost = AgentName::parse("ghost").unwrap();
    assert_eq!(
        c.call(verb::Restart { name: ghost }).unwrap_err(),
        Error::Refused("agent \"ghost\" is not managed by this hive: see hive-c0re status".into())
    );
    // A stream on the same connection: the ack, then a row per change.
    c.call(verb::SubscribeAgentStatus {}).unwrap();
    request(
        hive.sock(),
        verb::SetPaused {
            name: alice,
            paused: true,
        },
    )
    .unwrap();
    // Rows of alice's harness starting may come first.
    c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    loop {
        let row = c.read().unwrap().agent_statuses.unwrap().remove(0);
        assert_eq!(row.name, "alice");
        if row.paused {
            break;
        }
    }
}
