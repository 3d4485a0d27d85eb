//! The MCP server end to end over in-memory pipes, speaking raw JSON-RPC,
//! against a fake agent.sock that answers with canned responses.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hive_sh4re::agent::{AgentRequest, AgentResponse};
use hive_sh4re::host::{AgentStatusRow, Message};
use serde_json::{Value, json};
use tokio::io::{
    AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines, ReadHalf, WriteHalf,
};
use tokio::net::{UnixListener, UnixStream};

/// Longest any single exchange may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(10);

/// What the fake hive-c0re saw.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<AgentRequest>>,
    connections: AtomicUsize,
    /// Connections closed by the client while a question was pending.
    hung_up: AtomicUsize,
}

/// A fake agent.sock in a fresh directory; `one_shot` closes each connection after one answer.
struct FakeHive {
    dir: PathBuf,
    seen: Arc<Seen>,
}

impl FakeHive {
    fn start(tag: &str, one_shot: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("hive-mcp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let listener = UnixListener::bind(dir.join("agent.sock")).expect("bind fake agent.sock");
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_conn(stream, s.clone(), one_shot));
            }
        });
        Self { dir, seen }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    fn requests(&self) -> Vec<AgentRequest> {
        self.seen
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

impl Drop for FakeHive {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn serve_conn(stream: UnixStream, seen: Arc<Seen>, one_shot: bool) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let resp = match AgentRequest::from_line(line.as_bytes()) {
            Ok(req) => {
                if let Ok(mut v) = seen.requests.lock() {
                    v.push(req.clone());
                }
                if matches!(&req, AgentRequest::AskOperator { question, .. } if question == "hang")
                {
                    // Never answered: wait for the client to give up and hang up.
                    if let Ok(Ok(None)) = tokio::time::timeout(STEP, lines.next_line()).await {
                        seen.hung_up.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
                let sends_to_dave = seen.requests.lock().map_or(0, |v| {
                    v.iter()
                        .filter(|r| matches!(r, AgentRequest::Send { to, .. } if to == "dave"))
                        .count()
                });
                if matches!(&req, AgentRequest::Send { to, .. } if to == "dave")
                    && sends_to_dave == 1
                {
                    // The first send to dave meets a database out of reach.
                    AgentResponse {
                        unavailable: true,
                        ..AgentResponse::refusal("this node cannot reach the hive's database")
                    }
                } else {
                    answer(req).await
                }
            }
            Err(e) => AgentResponse::refusal(e),
        };
        let mut out = serde_json::to_vec(&resp).expect("response serializes");
        out.push(b'\n');
        if w.write_all(&out).await.is_err() || one_shot {
            return;
        }
    }
}

/// The canned answers of the fake hive-c0re.
async fn answer(req: AgentRequest) -> AgentResponse {
    match req {
        AgentRequest::Send { to, .. } if to == "carol" => AgentResponse::refusal(
            "alice may not send to carol: its allowed_recipients are [\"bob\", \"operator\"]; ask the manager or the operator to change the config",
        ),
        AgentRequest::Send { .. } => AgentResponse {
            message_id: Some(4242),
            ..AgentResponse::ok()
        },
        AgentRequest::Status => AgentResponse {
            agents: Some(vec![row("alice"), row("bob")]),
            ..AgentResponse::ok()
        },
        AgentRequest::Recv { .. } => AgentResponse {
            messages: Some(vec![Message {
                id: 7,
                from: "bob".into(),
                to: "alice".into(),
                body: "lunch?".into(),
                sent_at: "2026-01-01T12:00:00Z".into(),
                pending: None,
            }]),
            ..AgentResponse::ok()
        },
        AgentRequest::AskOperator { .. } => {
            // Long enough that the call visibly waits, short enough for a test.
            tokio::time::sleep(Duration::from_millis(300)).await;
            AgentResponse {
                text: Some("go ahead".into()),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::RequestSpawn { name, .. } => AgentResponse {
            text: Some(format!("approval #3 queued for {name}")),
            ..AgentResponse::ok()
        },
        _ => AgentResponse::ok(),
    }
}

fn row(name: &str) -> AgentStatusRow {
    AgentStatusRow {
        name: name.into(),
        running: true,
        failed: false,
        needs_update: false,
        needs_login: false,
        deployed_sha: None,
        pending_reminders: 0,
        paused: false,
        parent: None,
        active_model: "claude-sonnet-4-5".into(),
        status_text: Some(format!("{name} at work")),
        status_set_at: None,
        url: None,
        state: "idle".into(),
        state_since: "2026-01-01T10:00:00Z".into(),
        state_detail: None,
        retry_at: None,
        login_reason: None,
        inbox_depth: 2,
        last_turn_at: None,
        runtime: "process".into(),
        isolated: false,
        nap_until: None,
        health: None,
        restarts: 0,
        crash_exit: None,
        crash_tail: None,
        question: None,
        queue_position: None,
        budget: None,
        node: None,
        state_bytes: None,
    }
}

/// The MCP client side of the pipes, speaking JSON-RPC lines.
struct Mcp {
    tx: WriteHalf<DuplexStream>,
    rx: Lines<BufReader<ReadHalf<DuplexStream>>>,
    next_id: u64,
}

impl Mcp {
    /// Starts the server on pipes and completes the initialize handshake.
    async fn start(socket: &Path, manager: bool) -> (Self, Value) {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (sr, sw) = tokio::io::split(server);
        let socket = socket.to_owned();
        tokio::spawn(async move {
            if let Err(e) = hive_ag3nt::mcp::serve_on(socket, manager, sr, sw).await {
                eprintln!("serve_on ended: {e:#}");
            }
        });
        let (cr, cw) = tokio::io::split(client);
        let mut mcp = Self {
            tx: cw,
            rx: BufReader::new(cr).lines(),
            next_id: 1,
        };
        let init = mcp
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": { "name": "mcp-stdio-test", "version": "0" }
                }),
            )
            .await;
        mcp.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await;
        (mcp, init)
    }

    async fn send(&mut self, msg: Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.tx
            .write_all(line.as_bytes())
            .await
            .expect("write to the server");
    }

    /// Sends a request and returns its `result`, skipping notifications on the way.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
            .await;
        loop {
            let line = tokio::time::timeout(STEP, self.rx.next_line())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within {STEP:?}"))
                .expect("read from the server")
                .unwrap_or_else(|| panic!("the server closed the pipe during {method}"));
            let msg: Value = serde_json::from_str(&line).expect("the server writes JSON lines");
            if msg["id"] == json!(id) {
                assert!(
                    msg.get("error").is_none(),
                    "{method} failed at the protocol level: {msg}"
                );
                return msg["result"].clone();
            }
        }
    }

    async fn call(&mut self, tool: &str, args: Value) -> Value {
        self.request("tools/call", json!({ "name": tool, "arguments": args }))
            .await
    }

    async fn tools(&mut self) -> Vec<Value> {
        self.request("tools/list", json!({})).await["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The text of a tool result and whether it is an error.
fn text(result: &Value) -> (String, bool) {
    let t = result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    (t, result["isError"] == json!(true))
}

fn names(tools: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = tools
        .iter()
        .filter_map(|t| t["name"].as_str().map(String::from))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn the_handshake_names_the_hive() {
    let hive = FakeHive::start("init", false);
    let (_mcp, init) = Mcp::start(&hive.socket(), false).await;
    assert_eq!(init["serverInfo"]["name"], "hyperhive");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    assert!(
        init["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("operator")),
        "{init}"
    );
}

#[tokio::test]
async fn agent_tools_have_schemas_and_manager_tools_are_hidden() {
    let hive = FakeHive::start("list", false);
    let (mut mcp, _) = Mcp::start(&hive.socket(), false).await;
    let tools = mcp.tools().await;
    assert_eq!(
        names(&tools),
        ["nap", "recv", "send", "set_status", "status"]
    );
    let send = tools
        .iter()
        .find(|t| t["name"] == "send")
        .expect("send listed");
    let schema = &send["inputSchema"];
    assert_eq!(schema["type"], "object");
    assert!(
        schema["properties"]["to"].is_object() && schema["properties"]["body"].is_object(),
        "{schema}"
    );
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    required.sort();
    assert_eq!(required, ["body", "to"]);
    let nap = tools
        .iter()
        .find(|t| t["name"] == "nap")
        .expect("nap listed");
    assert_eq!(
        nap["inputSchema"]["properties"]["seconds"]["maximum"], 21600,
        "{nap}"
    );
    assert!(
        send["description"]
            .as_str()
            .is_some_and(|d| d.contains("64 KiB"))
    );
}

#[tokio::test]
async fn the_manager_sees_its_tools() {
    let hive = FakeHive::start("mgr", false);
    let (mut mcp, init) = Mcp::start(&hive.socket(), true).await;
    let names = names(&mcp.tools().await);
    for t in [
        "request_init_config",
        "request_spawn",
        "request_apply_commit",
        "ask_operator",
        "schedule",
        "send",
        "status",
    ] {
        assert!(names.iter().any(|n| n == t), "{t} missing from {names:?}");
    }
    assert!(
        init["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("ask_operator"))
    );
}

#[tokio::test]
async fn send_returns_the_message_id_and_refusals_are_tool_errors() {
    let hive = FakeHive::start("send", false);
    let (mut mcp, _) = Mcp::start(&hive.socket(), false).await;

    let (t, err) = text(
        &mcp.call("send", json!({ "to": "bob", "body": "hello" }))
            .await,
    );
    assert!(!err && t.contains("#4242"), "{t}");

    let (t, err) = text(
        &mcp.call("send", json!({ "to": "carol", "body": "hello" }))
            .await,
    );
    assert!(err, "a refusal must be isError: {t}");
    assert!(t.starts_with("alice may not send to carol:"), "{t}");

    // Checked here, never sent to hive-c0re.
    let (t, err) = text(
        &mcp.call("send", json!({ "to": "bob", "body": "   " }))
            .await,
    );
    assert!(err && t.contains("empty"), "{t}");
    let (t, err) = text(
        &mcp.call(
            "send",
            json!({ "to": "bob", "body": "x".repeat(64 * 1024 + 1) }),
        )
        .await,
    );
    assert!(err && t.contains("65536"), "{t}");

    // The server is still there after the errors.
    let (t, err) = text(
        &mcp.call("send", json!({ "to": "operator", "body": "done" }))
            .await,
    );
    assert!(!err, "{t}");
    let sends = hive
        .requests()
        .into_iter()
        .filter(|r| matches!(r, AgentRequest::Send { .. }))
        .count();
    assert_eq!(sends, 3);
}

#[tokio::test]
async fn status_recv_nap_and_set_status_render_as_text() {
    let hive = FakeHive::start("misc", false);
    let (mut mcp, _) = Mcp::start(&hive.socket(), false).await;

    let (t, err) = text(&mcp.call("status", json!({})).await);
    assert!(!err, "{t}");
    assert!(t.contains("alice: idle since 2026-01-01T10:00:00Z, running, model claude-sonnet-4-5, inbox 2, status \"alice at work\""), "{t}");
    assert!(t.lines().any(|l| l.starts_with("bob: ")), "{t}");

    let (t, err) = text(&mcp.call("recv", json!({})).await);
    assert!(
        !err && t.contains("<message id=\"7\" from=\"bob\"") && t.contains("lunch?"),
        "{t}"
    );

    let (t, err) = text(&mcp.call("nap", json!({ "seconds": 0 })).await);
    assert!(err && t.contains("1 to 21600"), "{t}");
    let (t, err) = text(&mcp.call("nap", json!({ "seconds": "soon" })).await);
    assert!(err, "malformed arguments are a tool error too: {t}");
    let (t, err) = text(&mcp.call("nap", json!({ "seconds": 600 })).await);
    assert!(!err && t.contains("600"), "{t}");

    let (t, err) = text(
        &mcp.call("set_status", json!({ "text": "reading the spec" }))
            .await,
    );
    assert!(!err, "{t}");
    assert!(hive.requests().contains(&AgentRequest::SetStatus {
        text: "reading the spec".into()
    }));
    assert!(
        hive.requests()
            .contains(&AgentRequest::Nap { seconds: 600 })
    );
}

#[tokio::test]
async fn manager_tools_forward_and_ask_operator_waits_for_the_answer() {
    let hive = FakeHive::start("ask", false);
    let (mut mcp, _) = Mcp::start(&hive.socket(), true).await;
    let (t, err) = text(
        &mcp.call(
            "ask_operator",
            json!({ "question": "Ship it?", "options": ["yes", "no"] }),
        )
        .await,
    );
    assert!(!err && t == "go ahead", "{t}");
    let (t, err) = text(
        &mcp.call(
            "request_spawn",
            json!({ "name": "dave", "description": "tests" }),
        )
        .await,
    );
    assert!(!err && t.contains("approval #3"), "{t}");
    let (t, err) = text(
        &mcp.call("request_init_config", json!({ "name": "Dave" }))
            .await,
    );
    assert!(err && t.starts_with("bad agent name"), "{t}");
    assert!(hive.requests().contains(&AgentRequest::AskOperator {
        question: "Ship it?".into(),
        options: vec!["yes".into(), "no".into()],
        ttl_seconds: None
    }));
}

#[tokio::test]
async fn a_lost_socket_is_a_tool_error_and_the_server_lives_on() {
    let hive = FakeHive::start("gone", false);
    let (mut mcp, _) = Mcp::start(&hive.dir.join("no-such.sock"), false).await;
    let (t, err) = text(&mcp.call("status", json!({})).await);
    assert!(err && t.contains("not answering"), "{t}");
    assert_eq!(names(&mcp.tools().await).len(), 5);
}

#[tokio::test]
async fn a_dropped_connection_is_replaced() {
    let hive = FakeHive::start("redial", true);
    let (mut mcp, _) = Mcp::start(&hive.socket(), false).await;
    for _ in 0..3 {
        let (t, err) = text(&mcp.call("status", json!({})).await);
        assert!(!err, "{t}");
    }
    assert_eq!(hive.seen.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_cancelled_call_hangs_up_and_the_server_goes_on() {
    let hive = FakeHive::start("cancel", false);
    let (mut mcp, _) = Mcp::start(&hive.socket(), true).await;
    let id = 900;
    mcp.send(json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": { "name": "ask_operator", "arguments": { "question": "hang" } } }))
        .await;
    while !hive
        .requests()
        .iter()
        .any(|r| matches!(r, AgentRequest::AskOperator { .. }))
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    mcp.send(
        json!({ "jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": { "requestId": id, "reason": "user interrupt" } }),
    )
    .await;
    let (t, err) = text(&mcp.call("status", json!({})).await);
    assert!(!err, "{t}");
    for _ in 0..500 {
        if hive.seen.hung_up.load(Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the cancelled ask_operator kept its agent.sock connection open");
}

#[tokio::test]
async fn a_send_repeated_while_the_store_is_out_of_reach_keeps_its_key() {
    let hive = FakeHive::start("send-key", false);
    let (mut mcp, _) = Mcp::start(&hive.socket(), false).await;
    let (t, err) = text(
        &mcp.call("send", json!({ "to": "dave", "body": "hi" }))
            .await,
    );
    assert!(!err && t.contains("#4242"), "{t}");
    let (t, err) = text(&mcp.call("send", json!({ "to": "bob", "body": "hi" })).await);
    assert!(!err, "{t}");
    let keys: Vec<(String, Option<String>)> = hive
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            AgentRequest::Send { to, key, .. } => Some((to, key)),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(keys[0].0, "dave");
    assert_eq!(keys[1].0, "dave");
    assert!(keys[0].1.is_some(), "a send carries a key: {keys:?}");
    assert_eq!(keys[0].1, keys[1].1, "the repeat keeps the key: {keys:?}");
    assert_ne!(keys[1].1, keys[2].1, "another send, another key: {keys:?}");
}
