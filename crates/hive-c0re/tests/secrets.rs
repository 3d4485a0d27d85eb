//! Secrets end to end: `hive-c0re secret set/list/rm` (values on stdin, never
//! shown), a secret reaching the real claude's environment and the model
//! server as its credential, an agent's own secret over the hive-wide one,
//! another agent never getting it, redaction of values claude (or a hostile
//! harness) reports, and a credential secret ending `needs_login`.

mod common;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{ModelSim, TestHive};

/// claude prints a variable with Bash, then relays what it printed to the operator.
const SCRIPT: &str = r#"
[[rule]]
name = "env"
user_text = "print the token"
[[rule.reply]]
tool = "Bash"
input = { command = "printenv SECRET_TOKEN" }

[[rule]]
name = "relay"
tool_result = ""
[[rule.reply]]
tool = "mcp__hyperhive__send"
input = { to = "operator", body = "got: {{tool_result}}" }
"#;

const HIVE_WIDE: &str = "hive-wide-token-0001";
const ALICES: &str = "alices-own-token-0002";
const ALICES_KEY: &str = "sk-alice-key-0003";

/// `hive-c0re secret set NAME [--agent AGENT]` with `stdin` piped in.
fn secret_set(hive: &TestHive, name: &str, agent: Option<&str>, stdin: &str) -> Output {
    let mut cmd = hive.command();
    cmd.args(["secret", "set", name]);
    if let Some(a) = agent {
        cmd.args(["--agent", a]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused for its name exits before it reads stdin: the pipe
    // may be closed by then, and its answer is what the test reads.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn set_ok(hive: &TestHive, name: &str, agent: Option<&str>, value: &str) {
    let out = secret_set(hive, name, agent, &format!("{value}\n"));
    assert!(
        out.status.success(),
        "secret set {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Sends `text` to `agent`, waits for its one answer and the end of its turn.
fn ask(hive: &TestHive, agent: &str, text: &str) -> String {
    let ends = |h: &TestHive| {
        h.events(agent)
            .iter()
            .filter(|e| e["kind"] == "turn_end")
            .count()
    };
    let ended = ends(hive);
    hive.ok(&["send", agent, text]);
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "{text}: {got:?}\n{}", hive.log());
    hive.wait_for("the turn to end", 30, |h| ends(h) > ended);
    got[0]["body"].as_str().unwrap().to_owned()
}

/// The model server's requests after the first `skip`, as JSON text each.
fn requests_after(sim: &ModelSim, skip: usize) -> Vec<serde_json::Value> {
    sim.requests().into_iter().skip(skip).collect()
}

#[test]
fn secret_cli_reads_values_from_stdin_and_never_shows_them() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);

    // From stdin; one trailing newline is not part of the value.
    let out = secret_set(&hive, "GITHUB_TOKEN", None, "ghp-cli-secret-value\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("for every agent"), "{}", text(&out));
    set_ok(&hive, "GITHUB_TOKEN", Some("alice"), "ghp-alices-cli-value");

    let list = hive.ok(&["secret", "list"]);
    assert!(
        list.contains("GITHUB_TOKEN") && list.contains("(hive-wide)") && list.contains("alice"),
        "{list}"
    );
    let json = hive.ok(&["secret", "list", "--json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{json}");
    assert_eq!(rows[0]["name"], "GITHUB_TOKEN");
    assert!(
        rows[0].get("agent").is_none() && rows[1]["agent"] == "alice",
        "{json}"
    );
    assert!(rows.iter().all(|r| r["set_at"].is_string()), "{json}");
    let raw = hive.raw(r#"{"cmd":"secret_list"}"#);
    for shown in [&list, &json, &raw] {
        assert!(
            !shown.contains("cli-secret-value") && !shown.contains("cli-value"),
            "{shown}"
        );
    }

    // Refused with a sentence, nothing stored: an empty stdin, a name the hive
    // sets for claude, a name that is no variable, an agent that does not exist.
    let empty = secret_set(&hive, "OTHER_TOKEN", None, "");
    assert_eq!(empty.status.code(), Some(64), "{}", text(&empty));
    assert!(
        text(&empty).contains("no value for OTHER_TOKEN on stdin"),
        "{}",
        text(&empty)
    );
    for (name, why) in [
        ("ANTHROPIC_BASE_URL", "set by hyperhive itself"),
        ("HOME", "set by hyperhive itself"),
        ("HIVE_AGENT_NAME", "set by hyperhive itself"),
        ("MY-TOKEN", "not an environment variable name"),
    ] {
        let out = secret_set(&hive, name, None, "some-value-here");
        assert_eq!(out.status.code(), Some(64), "{name}: {}", text(&out));
        assert!(text(&out).contains(why), "{name}: {}", text(&out));
    }
    let ghost = secret_set(&hive, "OTHER_TOKEN", Some("ghost"), "some-value-here");
    assert_eq!(ghost.status.code(), Some(1), "{}", text(&ghost));
    // The daemon checks the name too, whatever client asks.
    let r = hive.request(serde_json::json!({"cmd": "secret_set", "name": "PATH", "value": "x"}));
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("set by hyperhive itself"),
        "{r}"
    );
    assert_eq!(hive.ok(&["secret", "list", "--json"]).lines().count(), 2);

    // doctor counts a hive-wide credential secret as credentials (asking the daemon, names only).
    let doctor = |h: &TestHive| {
        let out = h
            .command()
            .args(["doctor", "--runtime", "process"])
            // Checked against a closed loopback port, never the real API.
            .env("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
            .output()
            .unwrap();
        text(&out)
    };
    assert!(
        doctor(&hive).contains("problem: no model credentials"),
        "{}",
        doctor(&hive)
    );
    set_ok(&hive, "ANTHROPIC_API_KEY", None, "sk-doctor-checked");
    let d = doctor(&hive);
    assert!(
        d.contains("ok: credentials: ANTHROPIC_API_KEY is a hive-wide secret"),
        "{d}"
    );
    assert!(!d.contains("sk-doctor-checked"), "{d}");
    hive.ok(&["secret", "rm", "ANTHROPIC_API_KEY"]);

    hive.ok(&["secret", "rm", "GITHUB_TOKEN", "--agent", "alice"]);
    let again = hive.cli(&["secret", "rm", "GITHUB_TOKEN", "--agent", "alice"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).contains("there is no secret GITHUB_TOKEN for alice"),
        "{}",
        text(&again)
    );
    hive.ok(&["secret", "rm", "GITHUB_TOKEN"]);
    assert!(hive.ok(&["secret", "list"]).contains("no secrets"));
}

/// What an agent says that agents read back (its status, its messages) was
/// redacted with every stored value, each replaced by `[secret NAME]`: an
/// agent could test guesses of secrets it never gets (another agent's, the
/// operator's webhook keys) thousands at a time and read which one hit.
/// Now only the values it is given are redacted there; the operator's view of
/// its events still hides every one.
#[test]
fn an_agent_cannot_test_guesses_of_secrets_it_is_not_given() {
    const BOBS: &str = "bobs-token-0004";
    const HOOK: &str = "hunter2hunter2";
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["spawn", "bob"]);
    set_ok(&hive, "SECRET_TOKEN", Some("alice"), ALICES);
    set_ok(&hive, "BOB_TOKEN", Some("bob"), BOBS);
    set_ok(&hive, "WEBHOOK_SLACK_KEY", None, HOOK);
    let guesses = format!("{BOBS} {HOOK} wrong-guess-0005 {ALICES}");
    let said = common::agent_call(
        &hive,
        "alice",
        serde_json::json!({"op": "set_status", "text": guesses}),
    );
    assert_eq!(said["ok"], true, "{said}");
    let status = common::agent_call(&hive, "alice", serde_json::json!({"op": "status"}));
    let shown = status.to_string();
    assert!(
        shown.contains(&format!(
            "{BOBS} {HOOK} wrong-guess-0005 [secret SECRET_TOKEN]"
        )),
        "a hit reads as a miss; her own value is still hidden: {shown}"
    );
    assert!(
        !shown.contains("[secret BOB_TOKEN]") && !shown.contains("[secret WEBHOOK"),
        "{shown}"
    );
    // What only the operator reads hides every value still.
    let r = common::agent_call(
        &hive,
        "alice",
        serde_json::json!({"op": "events", "items": [{"kind": "stderr", "payload": guesses}]}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let events = hive.ok(&["events", "alice", "--json"]);
    assert!(
        events.contains("[secret BOB_TOKEN] [secret WEBHOOK_SLACK_KEY] wrong-guess-0005"),
        "{events}"
    );
}

/// A notification leaves the host (a webhook to ntfy, Slack, Matrix): an
/// agent that writes its own secret to the operator with a character that
/// shows nothing inside it (a zero-width space, a tag character) matched no
/// secret there, and the value went out whole to the eye.
#[test]
fn a_secret_split_by_an_invisible_character_is_redacted_in_notifications() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    set_ok(&hive, "SECRET_TOKEN", Some("alice"), ALICES);
    let (head, tail) = ALICES.split_at(6);
    for split in ["\u{200B}", "\u{E0020}", "\u{2060}"] {
        let r = common::agent_call(
            &hive,
            "alice",
            serde_json::json!({"op": "send", "to": "operator", "body": format!("{head}{split}{tail}")}),
        );
        assert_eq!(r["ok"], true, "{r}");
    }
    let told = hive.notifications_of("message");
    assert_eq!(told.len(), 3, "{told:?}");
    for n in &told {
        assert_eq!(n["text"], "[secret SECRET_TOKEN]", "{n}");
    }
}

/// The same through the manager's question, whose text is shown with
/// what shows nothing written out (`⟨U+200B⟩`): that form, in the
/// notification, split the secret where redaction no longer matched it.
#[test]
fn a_secret_split_by_an_invisible_character_in_a_managers_question_is_redacted() {
    let mut opts = common::Opts::default();
    opts.args.retain(|a| a != "--no-manager");
    let hive = TestHive::start_with(opts);
    set_ok(&hive, "SECRET_TOKEN", None, HIVE_WIDE);
    let (head, tail) = HIVE_WIDE.split_at(6);
    let r = common::agent_call(
        &hive,
        "manager",
        serde_json::json!({"op": "ask_operator", "question": format!("{head}\u{200B}{tail}?"), "ttl_seconds": 1}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let told = hive.notifications_of("question");
    assert_eq!(told.len(), 1, "{told:?}");
    let text = told[0]["text"].as_str().unwrap();
    assert!(
        text.ends_with("[secret SECRET_TOKEN]?") && !text.contains(tail),
        "{text}"
    );
}

#[test]
fn secrets_reach_each_agents_claude_and_appear_nowhere_else() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(Some(SCRIPT));
    let hive = TestHive::with_model(&sim, "process");
    for a in ["alice", "bob"] {
        hive.ok(&["spawn", a]);
        hive.deploy_config(a, "allowed_tools = [\"Bash(printenv *)\"]\n");
    }
    hive.wait_for("alice and bob running", 30, |h| {
        ["alice", "bob"]
            .iter()
            .all(|a| h.row(a).unwrap()["running"] == true)
    });
    let harness = common::harness_pid(&hive, "alice");

    set_ok(&hive, "SECRET_TOKEN", None, HIVE_WIDE);
    set_ok(&hive, "SECRET_TOKEN", Some("alice"), ALICES);
    set_ok(&hive, "ANTHROPIC_API_KEY", Some("alice"), ALICES_KEY);

    // alice's claude has her own value (over the hive-wide one) and her key,
    // from the next turn, without a restart; what it printed comes back redacted.
    let seen = sim.requests().len();
    assert_eq!(
        ask(&hive, "alice", "print the token"),
        "got: [secret SECRET_TOKEN]"
    );
    let reqs = requests_after(&sim, seen);
    assert!(
        reqs.iter()
            .any(|r| r["messages"].to_string().contains(ALICES)),
        "alice's claude did not print her value to the model: {reqs:?}"
    );
    assert!(
        reqs.iter().all(|r| r["credential"] == ALICES_KEY),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r["messages"].to_string().contains(HIVE_WIDE))
    );
    assert_eq!(
        common::harness_pid(&hive, "alice"),
        harness,
        "the harness was restarted"
    );

    // bob gets the hive-wide value and the daemon's key; nothing of alice's.
    let seen = sim.requests().len();
    assert_eq!(
        ask(&hive, "bob", "print the token"),
        "got: [secret SECRET_TOKEN]"
    );
    let reqs = requests_after(&sim, seen);
    assert!(
        reqs.iter()
            .any(|r| r["messages"].to_string().contains(HIVE_WIDE)),
        "{reqs:?}"
    );
    assert!(
        reqs.iter().all(|r| r["credential"] == "sk-test"),
        "{reqs:?}"
    );
    let all = serde_json::to_string(&reqs).unwrap();
    assert!(
        !all.contains(ALICES) && !all.contains(ALICES_KEY),
        "bob had alice's secrets"
    );
    // Not even by asking: bob's own socket hands out bob's secrets only.
    let bobs = common::agent_call(&hive, "bob", serde_json::json!({"op": "config"}));
    assert_eq!(
        bobs["config"]["secrets"],
        serde_json::json!({"SECRET_TOKEN": HIVE_WIDE}),
        "{bobs}"
    );

    // A hostile harness that reports alice's values raw gets them stored redacted.
    for req in [
        serde_json::json!({"op": "events", "items": [{"kind": "stream", "payload": {"type": "assistant", "text": format!("leak {ALICES} and {ALICES_KEY}")}}]}),
        serde_json::json!({"op": "set_status", "text": format!("key {ALICES_KEY}")}),
        serde_json::json!({"op": "send", "to": "operator", "body": format!("psst {ALICES}")}),
    ] {
        let r = common::agent_call(&hive, "alice", req);
        assert_eq!(r["ok"], true, "{r}");
    }
    let psst = hive.recv_operator(10);
    assert_eq!(psst[0]["body"], "psst [secret SECRET_TOKEN]", "{psst:?}");
    assert_eq!(
        hive.row("alice").unwrap()["status_text"],
        "key [secret ANTHROPIC_API_KEY]"
    );
    let leaked = hive.events("alice");
    let leak = leaked.iter().rev().find(|e| e["kind"] == "stream").unwrap();
    assert_eq!(
        leak["payload"]["text"],
        "leak [secret SECRET_TOKEN] and [secret ANTHROPIC_API_KEY]"
    );

    // Nowhere else: events, status, the secret list, the logs, the database outside its secrets.
    let mut shown = vec![
        hive.ok(&["events", "alice", "--json"]),
        hive.ok(&["events", "bob", "--json"]),
        hive.ok(&["events", "alice"]),
        hive.ok(&["status", "--json"]),
        hive.ok(&["secret", "list", "--json"]),
        hive.ok(&["approvals", "--json"]),
        hive.log(),
    ];
    for a in ["alice", "bob"] {
        let log = hive.state_dir().join(format!("agents/{a}/harness.log"));
        shown.push(std::fs::read_to_string(log).unwrap_or_default());
    }
    assert!(
        shown.iter().any(|s| s.contains("[secret SECRET_TOKEN]")),
        "claude's output was not recorded"
    );
    for s in &shown {
        for v in [HIVE_WIDE, ALICES, ALICES_KEY] {
            assert!(!s.contains(v), "{v} shows in:\n{s}");
        }
    }
    let db = rusqlite::Connection::open_with_flags(
        hive.state_dir().join("hive.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    for (table, column) in [
        ("events", "payload_json"),
        ("messages", "body"),
        ("agents", "status_text"),
        ("agents", "config_toml"),
        ("approvals", "payload_json"),
    ] {
        for v in [HIVE_WIDE, ALICES, ALICES_KEY] {
            let n: i64 = db
                .query_row(
                    &format!("SELECT COUNT(*) FROM {table} WHERE instr({column}, ?1) > 0"),
                    [v],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 0, "{v} is in {table}.{column}");
        }
    }

    // Without her own, alice falls back to the hive-wide value at her next turn.
    hive.ok(&["secret", "rm", "SECRET_TOKEN", "--agent", "alice"]);
    let seen = sim.requests().len();
    assert_eq!(
        ask(&hive, "alice", "print the token"),
        "got: [secret SECRET_TOKEN]"
    );
    let reqs = requests_after(&sim, seen);
    assert!(
        reqs.iter()
            .any(|r| r["messages"].to_string().contains(HIVE_WIDE)),
        "{reqs:?}"
    );
    assert_eq!(common::harness_pid(&hive, "alice"), harness);
}

#[test]
fn a_credential_secret_ends_needs_login() {
    if !common::e2e_ready() {
        return;
    }
    let sim = ModelSim::start(None);
    // The daemon gives agents no credential: only the model endpoint, in alice's own config.
    let hive = TestHive::start_with(common::Opts {
        env: sim
            .env()
            .into_iter()
            .filter(|(k, _)| k == "HIVE_CLAUDE_BIN")
            .collect(),
        ..common::Opts::default()
    });
    hive.ok(&["spawn", "alice"]);
    hive.deploy_config(
        "alice",
        &format!("[env]\nANTHROPIC_BASE_URL = {:?}\n", sim.url()),
    );
    hive.wait_for("needs_login", 30, |h| {
        h.row("alice").unwrap()["needs_login"] == true
    });
    hive.ok(&["send", "alice", "ping"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hive.row("alice").unwrap()["inbox_depth"],
        1,
        "the message waits"
    );

    // What `claude setup-token` prints for a subscription, set hive-wide.
    set_ok(
        &hive,
        "CLAUDE_CODE_OAUTH_TOKEN",
        None,
        "sk-ant-oat01-test-token",
    );
    hive.wait_for("needs_login cleared", 30, |h| {
        h.row("alice").unwrap()["needs_login"] == false
    });
    let got = hive.recv_operator(90);
    assert_eq!(got.len(), 1, "{got:?}\n{}", hive.log());
    assert_eq!(got[0]["body"], "pong");
    let reqs = sim.requests();
    assert!(
        reqs.iter()
            .all(|r| r["credential"] == "sk-ant-oat01-test-token"),
        "{reqs:?}"
    );
}

/// The attack: the operator destroyed an agent without `--purge` (the
/// default), which keeps its own secrets, its `/state` and its inbox for a
/// re-creation. Later the manager asks to spawn that name again with an
/// innocent config: the card showed a new agent and a diff against
/// nothing, while the new agent would get the old one's secret. The
/// approval now says what the new agent takes over.
#[test]
fn a_spawn_of_a_kept_name_says_what_it_inherits() {
    let mut opts = common::Opts::default();
    opts.args.retain(|a| a != "--no-manager");
    let hive = TestHive::start_with(opts);
    hive.wait_for("the manager", 30, |h| h.row("manager").is_some());
    hive.ok(&["spawn", "deployer"]);
    set_ok(
        &hive,
        "DEPLOY_KEY",
        Some("deployer"),
        "deploy-key-0123456789",
    );
    hive.ok(&["stop", "deployer"]);
    hive.ok(&["send", "deployer", "the old plan"]);
    hive.ok(&["destroy", "deployer"]);
    let v = common::agent_call(
        &hive,
        "manager",
        serde_json::json!({"op": "request_spawn", "name": "deployer", "description": "bring back a helper"}),
    );
    assert_eq!(v["ok"], true, "{v}");
    let show = hive.ok(&["approvals", "show", &pending_for(&hive, "deployer")]);
    let warning = show
        .lines()
        .find(|l| l.starts_with("warning: deployer was destroyed before without --purge"))
        .unwrap_or_else(|| panic!("{show}"));
    assert!(
        warning.contains("its own secrets DEPLOY_KEY")
            && warning.contains("its /state")
            && warning.contains("1 message waiting for it"),
        "{warning}"
    );
    assert!(!warning.contains("deploy-key-0123456789"), "{warning}");
    let json = hive.ok(&["approvals", "--json"]);
    assert!(json.contains("\"kind\":\"inherits\""), "{json}");
    // A name never used before inherits nothing.
    let v = common::agent_call(
        &hive,
        "manager",
        serde_json::json!({"op": "request_spawn", "name": "fresh"}),
    );
    assert_eq!(v["ok"], true, "{v}");
    let show = hive.ok(&["approvals", "show", &pending_for(&hive, "fresh")]);
    assert!(!show.contains("warning:"), "{show}");
}

/// The id of the pending approval for `agent`.
fn pending_for(hive: &TestHive, agent: &str) -> String {
    hive.ok(&["approvals", "--json"])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|a| a["agent"] == agent && a["status"] == "pending")
        .and_then(|a| a["id"].as_i64())
        .unwrap_or_else(|| panic!("no pending approval for {agent}"))
        .to_string()
}
