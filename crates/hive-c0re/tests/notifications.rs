//! Notifications end to end: a hive with one webhook of each format pointed at
//! a local HTTP receiver. Each moment the hive can be brought to for real (a
//! message from a real claude turn, a manager's question, an approval, a
//! crash, a refused credential) arrives in every format within a second; the
//! json signature verifies; a 500 is retried, across a kill -9 of hive-c0re;
//! agent text adds no header; no secret appears anywhere but where it belongs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::webhook::{Got, Receiver, start_receiver};
use common::{ModelSim, Opts, TestHive};
use serde_json::{Value, json};

const JSON_KEY: &str = "json-hmac-key-0123456789";
const NTFY_TOKEN: &str = "ntfy-bearer-token-0123456789";
const MATRIX_TOKEN: &str = "matrix-access-token-0123456789";

fn hive_toml(addr: &str) -> String {
    format!(
        r#"public_url = "https://hive.example.org/"

[[webhooks]]
name = "signed"
url = "http://{addr}/json"
format = "json"
secret = "WEBHOOK_KEY"

[[webhooks]]
name = "phone"
url = "http://{addr}/ntfy"
format = "ntfy"
secret = "WEBHOOK_NTFY"

[[webhooks]]
name = "chat"
url = "http://{addr}/slack"
format = "slack"

[[webhooks]]
name = "room"
url = "http://{addr}/"
format = "matrix"
room = "!room:example.org"
secret = "WEBHOOK_MATRIX"
"#
    )
}

const SCRIPT: &str = r#"
# The manager's words to the operator try to end a header and add one.
[[rule]]
name = "tell"
user_text = "tell the operator"
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "hello\r\nX-Injected: yes\r\n\r\n<b>bold</b> <!channel> @room" }

[[rule]]
name = "ask"
user_text = "ask color"
[[rule.reply]]
tool = "mcp__hyperhive__ask_operator"
input = { question = "which color?", options = ["blue", "red"], ttl_seconds = 600 }
"#;

fn received(r: &Receiver) -> Vec<Got> {
    r.got.lock().unwrap().clone()
}

/// A stored notification, and a time no later than when it was stored: the
/// start of the last look that did not find it yet (the stored `ts` has
/// whole seconds only, too coarse to time a delivery by).
struct Stored {
    n: Value,
    not_before: SystemTime,
}

/// Waits until a stored notification of `kind` exists; `since` is a time
/// before what causes it.
fn notification(hive: &TestHive, kind: &str, since: SystemTime) -> Stored {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut not_before = since;
    loop {
        let looked = SystemTime::now();
        if let Some(n) = hive.notifications_of(kind).into_iter().next() {
            return Stored { n, not_before };
        }
        not_before = looked;
        assert!(
            Instant::now() < deadline,
            "no {kind} notification\n{}",
            hive.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a notification has reached every format; checks each arrived within a second.
fn arrives_everywhere(hive: &TestHive, r: &Receiver, stored: &Stored) {
    let n = &stored.n;
    let id = n["id"].as_i64().unwrap();
    let kind = n["kind"].as_str().unwrap();
    let txn = format!("/send/m.room.message/hyperhive-{id}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = received(r);
        let json = got
            .iter()
            .find(|g| g.path == "/json" && g.id_and_kind().0 == id.to_string());
        let ntfy = got
            .iter()
            .find(|g| g.path == "/ntfy" && g.id_and_kind().1 == kind && g.body == n["text"]);
        let slack = got.iter().find(|g| {
            g.path == "/slack"
                && serde_json::from_str::<Value>(&g.body).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .contains(&*n["link"].as_str().unwrap().replace('&', "&amp;"))
                && g.body.contains(&kind_title(kind))
        });
        let matrix = got
            .iter()
            .find(|g| g.path == "/matrix" && g.header("x-full-path").unwrap().ends_with(&txn));
        if let (Some(j), Some(nt), Some(s), Some(m)) = (json, ntfy, slack, matrix) {
            for g in [j, nt, s, m] {
                let late = g.at.duration_since(stored.not_before).unwrap_or_default();
                eprintln!("{kind} reached {} within {late:?}", g.path);
                assert!(
                    late < Duration::from_secs(1),
                    "{kind} reached {} only {late:?} after it was stored",
                    g.path
                );
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{kind} #{id} did not reach every webhook: {got:#?}\n{}",
            hive.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kind_title(kind: &str) -> String {
    hive_sh4re::notification::NotificationKind::parse(kind)
        .unwrap()
        .title()
        .to_owned()
}

fn set_secret(hive: &TestHive, name: &str, value: &str) {
    let r = hive.request(json!({"cmd": "secret_set", "name": name, "value": value}));
    assert_eq!(r["ok"], true, "{r}");
}

#[test]
fn every_moment_reaches_every_webhook_format_and_a_failed_one_survives_a_restart() {
    if !common::e2e_ready() {
        return;
    }
    let recv = Arc::new(Receiver::default());
    let addr = start_receiver(recv.clone());
    let sim = ModelSim::start(Some(SCRIPT));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hive.toml");
    std::fs::write(&config, hive_toml(&addr)).unwrap();
    let mut opts = Opts {
        env: sim.env(),
        ..Opts::default()
    };
    opts.args.retain(|a| a != "--no-manager");
    opts.env
        .push(("HIVE_CONFIG".into(), config.display().to_string()));
    let mut hive = TestHive::start_with(opts);
    for (name, value) in [
        ("WEBHOOK_KEY", JSON_KEY),
        ("WEBHOOK_NTFY", NTFY_TOKEN),
        ("WEBHOOK_MATRIX", MATRIX_TOKEN),
    ] {
        set_secret(&hive, name, value);
    }
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("manager and alice idle", 60, |h| {
        ["manager", "alice"].iter().all(|a| {
            h.row(a)
                .is_some_and(|r| r["running"] == true && r["state"] == "idle")
        })
    });
    // The webhook secrets are hive-c0re's: not even alice's own socket hands them out.
    let alices = common::agent_call(&hive, "alice", json!({"op": "config"}));
    let shown = alices.to_string();
    assert!(
        alices["ok"] == true && !shown.contains(JSON_KEY) && !shown.contains(MATRIX_TOKEN),
        "{alices}"
    );

    // A message to the operator, from a real claude turn of the manager.
    let t = SystemTime::now();
    hive.ok(&["send", "manager", "tell the operator"]);
    let stored = notification(&hive, "message", t);
    arrives_everywhere(&hive, &recv, &stored);
    let msg = stored.n;
    assert_eq!(msg["agent"], "manager");
    assert_eq!(msg["link"], "/#inbox");
    assert!(
        msg["text"].as_str().unwrap().contains("X-Injected"),
        "{msg}"
    );
    // In a chat, the agent's lines are quoted: none passes for a line of the hive's.
    for g in received(&recv)
        .iter()
        .filter(|g| g.path != "/ntfy" && g.path != "/json" && g.body.contains("X-Injected"))
    {
        let v: Value = serde_json::from_str(&g.body).unwrap();
        let shown = v["text"].as_str().or(v["body"].as_str()).unwrap();
        for line in shown
            .lines()
            .filter(|l| l.contains("X-Injected") || l.contains("bold"))
        {
            assert!(line.starts_with("> "), "{}: {shown}", g.path);
        }
        // Matrix: an explicit empty mention list, so `@room` (or a member's
        // name) in the agent's words notifies nobody.
        if g.path == "/matrix" {
            assert!(shown.contains("@room"), "{shown}");
            assert_eq!(v["m.mentions"], json!({}), "{v}");
        }
    }

    // A question, with its deadline.
    let t = SystemTime::now();
    hive.ok(&["send", "manager", "ask color"]);
    let stored = notification(&hive, "question", t);
    arrives_everywhere(&hive, &recv, &stored);
    let q = stored.n;
    let text = q["text"].as_str().unwrap();
    assert!(
        text.contains("which color?") && text.contains("answer by 20"),
        "{q}"
    );

    // An approval waiting.
    hive.ok(&["init-config", "bob"]);
    let t = SystemTime::now();
    hive.ok(&["request-spawn", "bob"]);
    let stored = notification(&hive, "approval", t);
    assert_eq!(stored.n["link"], "/#approvals");
    arrives_everywhere(&hive, &recv, &stored);

    // A crash.
    let pid = common::harness_pid(&hive, "alice");
    let t = SystemTime::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let stored = notification(&hive, "crashed", t);
    assert_eq!(stored.n["link"], "/agents/alice");
    arrives_everywhere(&hive, &recv, &stored);

    // A refused credential.
    hive.wait_for("alice back", 30, |h| {
        h.row("alice")
            .is_some_and(|r| r["running"] == true && r["state"] == "idle")
    });
    sim.control("POST", "/_sim/fault", r#"{"status": 401}"#);
    let t = SystemTime::now();
    hive.ok(&["send", "alice", "anything"]);
    let stored = notification(&hive, "needs_login", t);
    arrives_everywhere(&hive, &recv, &stored);
    sim.control("POST", "/_sim/fault", "{}");

    // A failed delivery is retried, across a kill -9 of hive-c0re: the
    // receiver fails until the daemon is gone, then accepts.
    *recv.fail_json.lock().unwrap() = u32::MAX;
    hive.ok(&["init-config", "carol"]);
    hive.ok(&["request-spawn", "carol"]);
    hive.wait_for("the json webhook's failure recorded", 10, |h| {
        let w = h.request(json!({"cmd": "webhooks"}));
        w["webhooks"][0]["attempts"] == 1 && w["webhooks"][0]["pending"] == 1
    });
    let w = hive.request(json!({"cmd": "webhooks"}));
    assert_eq!(w["webhooks"][0]["last_error"], "HTTP 500", "{w}");
    let table = hive.ok(&["webhooks"]);
    assert!(table.contains("HTTP 500"), "{table}");
    let status = hive.ok(&["status"]);
    assert!(
        status.starts_with("WEBHOOK signed FAILING: HTTP 500 · 1 pending"),
        "{status}"
    );
    hive.kill9();
    *recv.fail_json.lock().unwrap() = 0;
    hive.serve();
    let carol =
        hive.request(json!({"cmd": "notifications", "limit": 1}))["notifications"][0].clone();
    assert!(carol["text"].as_str().unwrap().contains("carol"), "{carol}");
    let id = carol["id"].to_string();
    hive.wait_for("the retried delivery", 15, |_| {
        received(&recv)
            .iter()
            .any(|g| g.path == "/json" && g.id_and_kind().0 == id)
    });
    // The receiver has it before hive-c0re has its answer and marks it done.
    hive.wait_for("the delivery to be marked done", 15, |h| {
        h.request(json!({"cmd": "webhooks"}))["webhooks"][0]["pending"] == 0
    });
    let w = hive.request(json!({"cmd": "webhooks"}));
    assert!(w["webhooks"][0].get("last_error").is_none(), "{w}");

    // Every json body is signed with the key.
    let got = received(&recv);
    for g in got.iter().filter(|g| g.path == "/json") {
        assert!(g.signed_with(JSON_KEY), "{g:?}");
    }
    // Secrets only where they belong; agent text in no header.
    for g in &got {
        assert!(g.header("x-injected").is_none(), "{g:?}");
        assert!(
            !g.body.contains(JSON_KEY)
                && !g.body.contains(NTFY_TOKEN)
                && !g.body.contains(MATRIX_TOKEN),
            "{g:?}"
        );
        for (k, v) in &g.headers {
            let allowed = match g.path.as_str() {
                "/ntfy" => Some(NTFY_TOKEN),
                "/matrix" => Some(MATRIX_TOKEN),
                _ => None,
            };
            for s in [JSON_KEY, NTFY_TOKEN, MATRIX_TOKEN] {
                if v.contains(s) {
                    assert!(
                        allowed == Some(s) && k == "authorization" && *v == format!("Bearer {s}"),
                        "{s} in {k} of {g:?}"
                    );
                }
            }
        }
        if g.path == "/matrix" {
            assert_eq!(g.method, "PUT");
            assert_eq!(
                g.header("authorization"),
                Some(format!("Bearer {MATRIX_TOKEN}").as_str())
            );
            let v: Value = serde_json::from_str(&g.body).unwrap();
            assert_eq!(v["msgtype"], "m.text");
        }
        if g.path == "/ntfy" {
            assert!(
                g.header("Click")
                    .is_some_and(|c| c.starts_with("https://hive.example.org/")),
                "{g:?}"
            );
        }
    }
    // No secret in the daemon's log either.
    let log = hive.log();
    for s in [JSON_KEY, NTFY_TOKEN, MATRIX_TOKEN] {
        assert!(!log.contains(s), "{s} in the log");
    }
    // Marking read.
    let before = hive.request(json!({"cmd": "notifications", "unread": true}));
    assert!(before["unread"].as_u64().unwrap() >= 6, "{before}");
    let r = hive.request(json!({"cmd": "notifications_read", "id": msg["id"]}));
    assert_eq!(r["unread"], before["unread"].as_u64().unwrap() - 1, "{r}");
    hive.ok(&["notifications", "read", "--all"]);
    let out = hive.ok(&["notifications", "--unread"]);
    assert!(out.contains("no notifications"), "{out}");
}

/// One turn of `alice` on `c`: her messages claimed and the turn ended with
/// `class` and `outcome`, as her harness would.
fn one_turn(c: &mut common::Conn, class: &str, outcome: &str) {
    c.send(&json!({"op": "next_turn", "wait_ms": 5000}).to_string());
    let next = c.recv_json();
    assert!(
        next["messages"].as_array().is_some_and(|m| !m.is_empty()),
        "{next}"
    );
    let stats = json!({
        "duration_ms": 10, "exit_class": class, "tool_calls": {}, "messages_received": 1,
        "error": "API 404 model: claude-retired-1 not found",
    });
    c.send(&json!({"op": "turn_end", "stats": stats, "outcome": outcome}).to_string());
    let ended = c.recv_json();
    assert_eq!(ended["ok"], true, "{ended}");
}

/// A turn that fails hands its messages back to be tried again, and again:
/// a model retired, credit run out or a message that always fails a turn
/// kept an agent busy for weeks with nothing done, and nothing told the
/// operator. The fifth failure in a row is told (once, not each), and a turn
/// that handled its messages starts the count again. The harness reports
/// its turns' ends, so a hostile agent fails them at will: it could page
/// the operator (the notice is urgent) every fifth turn, or at each 50th,
/// and fill the notifications with the hive's own unread ones. One notice
/// an agent an hour.
#[test]
fn turns_failing_in_a_row_are_told_to_the_operator_once() {
    let (_bin, env) = common::idle_harness();
    let hive = TestHive::start_with(Opts {
        env,
        ..Opts::default()
    });
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice to run", 30, |h| {
        h.row("alice").is_some_and(|r| r["running"] == true)
    });
    hive.ok(&["send", "alice", "work"]);
    let mut c = common::Conn::open(&hive.run_dir().join("agents/alice/agent.sock"));
    let told = || hive.notifications_of("turns_failing");
    for _ in 0..4 {
        one_turn(&mut c, "failure", "release");
    }
    assert!(told().is_empty(), "{:?}", told());
    one_turn(&mut c, "api_error", "release");
    let t = told();
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["agent"], "alice");
    let text = t[0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("alice's last 5 turns failed in a row (api_error; the last: \"API 404 model: claude-retired-1 not found\")")
            && text.contains("`hive-c0re pause alice`"),
        "{text}"
    );
    for _ in 0..3 {
        one_turn(&mut c, "timeout", "release");
    }
    assert_eq!(told().len(), 1, "told once, not each");
    // A turn that handled its messages ends the count.
    one_turn(&mut c, "ok", "ack");
    hive.ok(&["send", "alice", "more work"]);
    for _ in 0..4 {
        one_turn(&mut c, "failure", "release");
    }
    assert_eq!(told().len(), 1, "four since the last good turn");
    // A fifth again, and the 50th in a row: within the hour, not told again.
    for _ in 0..46 {
        one_turn(&mut c, "failure", "release");
    }
    assert_eq!(told().len(), 1, "{:?}", told());
}
