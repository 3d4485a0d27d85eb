//! End-to-end tests of the `hive-model-sim` binary, with the real claude CLI
//! when `HIVE_CLAUDE_BIN` points at it.
//!
//! This test target has `harness = false`: the same executable doubles as a tiny
//! stdio MCP server (when `HIVE_SIM_TEST_MCP` is set), which claude starts from
//! `--mcp-config`. That keeps the MCP test free of extra binaries or languages.

use serde_json::{Value, json};
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set in claude's environment for the MCP server: the file that logs tool calls.
const MCP_ENV: &str = "HIVE_SIM_TEST_MCP";
/// Longest a single claude run may take before the test fails.
const CLAUDE_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    if let Some(log) = std::env::var_os(MCP_ENV) {
        mcp_server(Path::new(&log));
        return;
    }
    let mut passed = 0;
    let mut run = |name: &str, test: &dyn Fn()| {
        println!("test {name} ...");
        test();
        println!("test {name} ... ok");
        passed += 1;
    };
    run("bad_script_exits_2", &bad_script_exits_2);
    run("serves_and_stops_on_sigterm", &serves_and_stops_on_sigterm);
    match std::env::var("HIVE_CLAUDE_BIN") {
        Ok(claude) if !claude.is_empty() => {
            assert!(
                Path::new(&claude).exists(),
                "HIVE_CLAUDE_BIN={claude} does not exist"
            );
            run("claude_hello_world", &|| claude_hello_world(&claude));
            run("claude_calls_mcp_send", &|| claude_calls_mcp_send(&claude));
        }
        _ => println!(
            "note: HIVE_CLAUDE_BIN is not set; skipping the tests that run the real claude CLI"
        ),
    }
    println!("\ntest result: ok. {passed} passed");
}

// ---------------------------------------------------------------- tests

fn bad_script_exits_2() {
    let dir = TempDir::new("bad-script");
    let script = dir.write(
        "bad.toml",
        "[[rule]]\nname = \"hello\"\nuser_regex = \"(\"\n[[rule.reply]]\ntext = \"x\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hive-model-sim"))
        .arg("--script")
        .arg(&script)
        .output()
        .expect("run hive-model-sim");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("rule 1 (\"hello\"): field `user_regex`"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

fn serves_and_stops_on_sigterm() {
    let dir = TempDir::new("sigterm");
    let mut sim = Sim::start(&dir, None);
    let (status, body) = http(&sim.addr, "GET", "/v1/models", "");
    assert_eq!(status, 200, "{body}");
    let script = "[[rule]]\nuser_text = \"a\"\n[[rule.reply]]\ntext = \"b\"\n";
    // Not for the clients it serves: the controls want the token.
    let (status, _) = http(&sim.addr, "POST", "/_sim/script", script);
    assert_eq!(status, 403);
    let (status, _) = sim.control("POST", "/_sim/script", script);
    assert_eq!(status, 200);
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(sim.child.id().to_string())
        .status()
        .expect("kill");
    assert!(kill.success());
    let status =
        wait_timeout(&mut sim.child, Duration::from_secs(10)).expect("sim stops on SIGTERM");
    assert!(status.success(), "exit status {status}");
}

fn claude_hello_world(claude: &str) {
    let dir = TempDir::new("hello");
    let sim = Sim::start(
        &dir,
        Some(
            "[[rule]]\nname = \"hello\"\nuser_text = \"hello\"\n[[rule.reply]]\ntext = \"world\"\n",
        ),
    );
    let (status, lines, stderr) = run_claude(
        claude,
        &sim.addr,
        &dir,
        &["--model", "haiku", "hello"],
        None,
        &[],
    );
    assert!(
        status.success(),
        "claude failed ({status}); stderr: {stderr}"
    );
    assert_eq!(lines[0]["type"], "system", "first line is system/init");
    assert_eq!(lines[0]["subtype"], "init");
    let assistant_text: String = lines
        .iter()
        .filter(|l| l["type"] == "assistant")
        .flat_map(|l| {
            l["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|b| b["text"].as_str().map(str::to_string))
        .collect();
    assert!(
        assistant_text.contains("world"),
        "assistant said {assistant_text:?}"
    );
    let result = lines.last().expect("output");
    assert_eq!(result["type"], "result", "last line is the result");
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["result"], "world");
    assert!(result["session_id"].is_string());

    let log = sim_requests(&sim);
    let first = &log[0];
    assert!(
        first["model"].as_str().unwrap_or("").contains("haiku"),
        "model {}",
        first["model"]
    );
    assert_eq!(first["rules"], json!(["hello"]));
    assert!(first["system_len"].as_u64().unwrap_or(0) > 0);
}

fn claude_calls_mcp_send(claude: &str) {
    let dir = TempDir::new("mcp");
    let sim = Sim::start(&dir, None); // the built-in script
    let calls = dir.path.join("mcp-calls.jsonl");
    let exe = std::env::current_exe().expect("test executable path");
    let config = json!({"mcpServers": {"hyperhive": {
        "type": "stdio",
        "command": exe,
        "args": [],
        "env": {MCP_ENV: calls}
    }}});
    let config_path = dir.write("mcp.json", &config.to_string());
    let prompt = "You have new messages.\n<message id=\"1\" from=\"alice\">ping</message>\n";
    let args = [
        "--model",
        "sonnet",
        "--mcp-config",
        config_path.to_str().expect("utf-8 path"),
        "--allowedTools=mcp__hyperhive__send",
    ];
    // Without tool search claude lists MCP tools in the request itself.
    let (status, lines, stderr) = run_claude(
        claude,
        &sim.addr,
        &dir,
        &args,
        Some(prompt),
        &[("ENABLE_TOOL_SEARCH", "false")],
    );
    assert!(
        status.success(),
        "claude failed ({status}); stderr: {stderr}"
    );

    let servers = &lines[0]["mcp_servers"];
    assert_eq!(
        servers,
        &json!([{"name": "hyperhive", "status": "connected", "source": "dynamic"}]),
        "init: {}",
        lines[0]
    );
    let tool_use = lines
        .iter()
        .filter(|l| l["type"] == "assistant")
        .flat_map(|l| {
            l["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|b| b["type"] == "tool_use")
        .expect("an assistant tool_use line");
    assert_eq!(tool_use["name"], "mcp__hyperhive__send");
    assert_eq!(tool_use["input"], json!({"to": "alice", "body": "pong"}));
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "user" && l["message"]["content"][0]["type"] == "tool_result"),
        "a user tool_result line"
    );
    let result = lines.last().expect("output");
    assert_eq!(result["type"], "result");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "Done: answered the inbox.");

    let recorded = std::fs::read_to_string(&calls).expect("the MCP server logged the call");
    let call: Value =
        serde_json::from_str(recorded.lines().next().expect("one call")).expect("json");
    assert_eq!(
        call,
        json!({"name": "send", "arguments": {"to": "alice", "body": "pong"}})
    );

    let log = sim_requests(&sim);
    assert_eq!(
        log.len(),
        2,
        "one call for the prompt, one after the tool result"
    );
    assert!(log[0]["model"].as_str().unwrap_or("").contains("sonnet"));
    assert_eq!(log[0]["step"], "user_text");
    assert_eq!(log[0]["sender"], "alice");
    assert!(
        log[0]["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("mcp__hyperhive__send"))),
        "tools: {}",
        log[0]["tools"]
    );
    assert_eq!(log[1]["step"], "tool_result");
    assert_eq!(log[1]["stop_reason"], "end_turn");
}

// ---------------------------------------------------------------- helpers

/// A scratch directory removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("hive-model-sim-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, content).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A running simulator, killed on drop.
struct Sim {
    child: Child,
    addr: String,
    /// The control token (`/_sim/*` requests carry it).
    token: String,
}

impl Sim {
    fn start(dir: &TempDir, script: Option<&str>) -> Sim {
        let port_file = dir.path.join("sim.port");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hive-model-sim"));
        let token_file = dir.path.join("sim.token");
        cmd.arg("--port-file")
            .arg(&port_file)
            .arg("--control-token-file")
            .arg(&token_file)
            .arg("--log")
            .arg(dir.path.join("sim.log"));
        if let Some(script) = script {
            cmd.arg("--script").arg(dir.write("script.toml", script));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hive-model-sim");
        // Owned by `Sim` at once, so its Drop reaps the process even if we give up below.
        let mut sim = Sim {
            child,
            addr: String::new(),
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while sim.addr.is_empty() {
            if let Ok(addr) = std::fs::read_to_string(&port_file) {
                sim.addr = addr.trim().to_string();
            } else {
                assert!(
                    Instant::now() < deadline,
                    "hive-model-sim did not write its port file"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The token file is written before the port file.
        sim.token = std::fs::read_to_string(&token_file)
            .expect("token file")
            .trim()
            .to_string();
        sim
    }

    /// A `/_sim/*` control request, with the token.
    fn control(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http_with(&self.addr, method, path, body, Some(&self.token))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request; returns status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    http_with(addr, method, path, body, None)
}

/// [`http`] with the control token header when given.
fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to hive-model-sim");
    let token = token
        .map(|t| format!("x-sim-token: {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{token}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn sim_requests(sim: &Sim) -> Vec<Value> {
    let (status, body) = sim.control("GET", "/_sim/requests", "");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("request log is a JSON array")
}

/// Runs claude against the simulator with a fresh HOME; returns the stream-json lines.
fn run_claude(
    claude: &str,
    addr: &str,
    dir: &TempDir,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> (ExitStatus, Vec<Value>, String) {
    let home = dir.path.join("home");
    std::fs::create_dir_all(&home).expect("home dir");
    let mut cmd = Command::new(claude);
    cmd.args(["--print", "--output-format", "stream-json", "--verbose"])
        .args(args)
        .current_dir(&dir.path)
        .env("HOME", &home)
        .env("ANTHROPIC_BASE_URL", format!("http://{addr}"))
        .env("ANTHROPIC_API_KEY", "sk-test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env_remove("CLAUDE_CONFIG_DIR")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env_remove("ANTHROPIC_MODEL")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start claude");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(text.as_bytes()).expect("write prompt");
    }
    // Drain the pipes on threads so a chatty claude cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let status = match wait_timeout(&mut child, CLAUDE_TIMEOUT) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            panic!("claude did not finish within {CLAUDE_TIMEOUT:?}");
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let lines = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stream-json line is not JSON ({e}): {l}"))
        })
        .collect::<Vec<Value>>();
    assert!(
        !lines.is_empty(),
        "claude printed nothing; stderr: {stderr}"
    );
    (status, lines, stderr)
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

// ---------------------------------------------------------------- MCP server

/// A stdio MCP server with one tool, `send(to, body)`, that appends each call
/// (name and arguments) as a JSON line to `log`.
fn mcp_server(log: &Path) {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(request) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        // Notifications carry no id and get no answer.
        let Some(id) = request.get("id").cloned() else {
            continue;
        };
        let params = request.get("params").cloned().unwrap_or(Value::Null);
        let response = match request["method"].as_str().unwrap_or("") {
            "initialize" => json!({"jsonrpc": "2.0", "id": id, "result": {
                "protocolVersion": params["protocolVersion"].as_str().unwrap_or("2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "hyperhive-test", "version": "0.0.0"}
            }}),
            "tools/list" => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{
                "name": "send",
                "description": "Send a message to another agent.",
                "inputSchema": {"type": "object",
                    "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
                    "required": ["to", "body"]}
            }]}}),
            "tools/call" => {
                let call = json!({"name": params["name"], "arguments": params["arguments"]});
                if let Ok(mut file) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                {
                    let _ = writeln!(file, "{call}");
                }
                let to = params["arguments"]["to"].as_str().unwrap_or("?");
                json!({"jsonrpc": "2.0", "id": id, "result": {
                    "content": [{"type": "text", "text": format!("sent to {to}")}],
                    "isError": false
                }})
            }
            "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
            other => json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("method not found: {other}")}}),
        };
        if writeln!(stdout, "{response}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
}
