//! The operator's CLI: exit codes, sentences, and the verbs as a user types them.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestHive;

#[test]
fn not_running_says_how_to_start_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
        .env("HIVE_RUN_DIR", dir.path())
        .env("HIVE_STATE_DIR", dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "hive-c0re is not running (no socket at {}/host.sock): start it with hive-c0re serve",
        dir.path().display()
    );
    assert!(err.contains(&want), "{err}");
}

/// A daemon that accepts and never answers (stuck on its database, say):
/// the CLI says so within its limit instead of hanging.
#[test]
fn a_daemon_that_never_answers_gets_a_sentence_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("host.sock")).unwrap();
    let held = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(4));
        drop(conn);
    });
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
        .env("HIVE_RUN_DIR", dir.path())
        .env("HIVE_STATE_DIR", dir.path())
        .env("HIVE_CLI_TIMEOUT_SECS", "1")
        .arg("status")
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "the CLI hung");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hive-c0re did not answer in time"), "{err}");
    held.join().unwrap();
}

#[test]
fn a_refusal_prints_the_daemons_sentence_and_exits_1() {
    let hive = TestHive::start();
    let out = hive.cli(&["restart", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "hive-c0re: agent \"ghost\" is not managed by this hive: see hive-c0re status"
    );
}

#[test]
fn bad_names_are_refused_before_anything_is_built() {
    let hive = TestHive::start();
    for (name, why) in [
        ("..", "must start with a lowercase letter"),
        ("a/b", "contains '/'"),
        ("A", "must start with a lowercase letter"),
        ("", "cannot be empty"),
        (&"a".repeat(32), "too long"),
        ("a\u{1}b", "contains"),
        ("operator", "reserved"),
    ] {
        let out = hive.cli(&["spawn", name]);
        assert!(!out.status.success(), "{name:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{name:?}: {err}");
    }
    assert!(!hive.state_dir().join("agents/A").exists());
    assert_eq!(
        hive.ok(&["status"]).trim(),
        "no agents yet: create one with hive-c0re spawn NAME"
    );
}

#[test]
fn send_reads_dash_from_stdin_and_recv_json_prints_each_message() {
    let hive = TestHive::start();
    let child = hive.spawn_with_input(&["send", "operator", "-"], "multi\nline body");
    assert!(child.wait_with_output().unwrap().status.success());
    hive.ok(&["send", "operator", "second"]);
    let out = hive.ok(&["recv", "--json"]);
    let msgs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["body"], "multi\nline body");
    assert_eq!(msgs[0]["from"], "operator");
    assert_eq!(msgs[0]["to"], "operator");
    for k in ["id", "from", "to", "body", "sent_at"] {
        assert!(msgs[1].get(k).is_some(), "missing {k}: {}", msgs[1]);
    }
    assert_eq!(
        hive.ok(&["recv", "--json"]),
        "",
        "acknowledged messages came back"
    );
}

#[test]
fn recv_wait_returns_as_soon_as_a_message_arrives() {
    let hive = TestHive::start();
    let waiter = hive
        .command()
        .args(["recv", "--wait", "20", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    hive.ok(&["send", "operator", "wake up"]);
    let out = waiter.wait_with_output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "recv did not wake on the send"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("wake up"));
}

#[test]
fn recv_wait_gives_up_after_the_wait() {
    let hive = TestHive::start();
    let t = Instant::now();
    assert_eq!(hive.ok(&["recv", "--wait", "0.3"]), "");
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[test]
fn status_shows_the_agent_table_and_json() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice", "--model", "sonnet"]);
    hive.ok(&["kill", "alice"]);
    hive.ok(&["send", "alice", "hi"]);
    let table = hive.ok(&["status"]);
    let header = table.lines().next().unwrap();
    for col in [
        "NAME",
        "RUNNING",
        "STATE",
        "MODEL",
        "INBOX",
        "CONFIG",
        "LAST TURN",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = table.lines().nth(1).unwrap();
    assert!(
        row.starts_with("alice") && row.contains("stopped") && row.contains("sonnet"),
        "{row}"
    );
    let v: serde_json::Value =
        serde_json::from_str(hive.ok(&["status", "--json"]).lines().next().unwrap()).unwrap();
    assert_eq!(v["name"], "alice");
    assert_eq!(v["inbox_depth"], 1);
    assert_eq!(v["deployed_sha"].as_str().unwrap().len(), 12);
    assert_eq!(v["isolated"], false);
}

#[test]
fn pause_survives_a_daemon_restart() {
    let mut hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["pause", "alice"]);
    hive.kill9();
    hive.serve();
    assert_eq!(hive.row("alice").unwrap()["paused"], true);
    hive.ok(&["resume", "alice"]);
    assert_eq!(hive.row("alice").unwrap()["paused"], false);
}

#[test]
fn approvals_are_decided_once_from_the_cli() {
    let hive = TestHive::start();
    assert!(
        hive.ok(&["request-spawn", "bob"])
            .contains("approval #1 queued")
    );
    assert!(hive.ok(&["approvals"]).contains("pending"));
    hive.ok(&["deny", "1", "--reason", "not now"]);
    // As the lists print it: `#1`.
    let out = hive.cli(&["approve", "#1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decided already"));
    let v: serde_json::Value =
        serde_json::from_str(hive.ok(&["approvals", "--json"]).trim()).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["note"].as_str()),
        (Some("denied"), Some("not now"))
    );
}

#[test]
fn destroy_keeps_state_unless_purged() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["spawn", "bob"]);
    let alice_state = hive.state_dir().join("agents/alice/state");
    hive.ok(&["destroy", "alice"]);
    assert!(alice_state.exists());
    hive.ok(&["destroy", "bob", "--purge"]);
    assert!(!hive.state_dir().join("agents/bob").exists());
    assert_eq!(hive.ok(&["status", "--json"]), "");
}

#[test]
fn help_teaches_the_verbs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for verb in [
        "serve", "status", "send", "recv", "pause", "resume", "spawn", "start", "kill", "restart",
        "destroy", "approve", "deny",
    ] {
        assert!(help.contains(verb), "--help does not mention {verb}");
    }
}

#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    // `hive-c0re status | head -2` after head is gone: the reading end is closed.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = hive
        .command()
        .arg("status")
        .stdout(Stdio::from(write))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn killing_or_destroying_the_manager_asks_for_yes() {
    let hive = TestHive::start();
    for verb in ["kill", "destroy"] {
        let out = hive.cli(&[verb, "manager"]);
        assert_eq!(out.status.code(), Some(64), "{verb} manager");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("manager is the hive's manager") && err.contains("--yes"),
            "{err}"
        );
        // With --yes the daemon is asked (this hive has no manager, so it says so).
        let out = hive.cli(&[verb, "manager", "--yes"]);
        assert_eq!(out.status.code(), Some(1), "{verb} manager --yes");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not managed by this hive"), "{err}");
    }
    // Other agents need no --yes.
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["kill", "alice"]);
    hive.ok(&["destroy", "alice"]);
}

#[test]
fn cancel_without_a_turn_says_so_and_exits_1() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    let out = hive.cli(&["cancel", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alice has no turn running and is not napping"),
        "{err}"
    );
    assert_eq!(out.stdout, b"");
}

#[test]
fn recv_says_when_nothing_came() {
    let hive = TestHive::start();
    let out = hive.cli(&["recv", "--wait", "0.2"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"", "stdout stays clean for scripts");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no message came to your inbox within 0.2 s"),
        "{err}"
    );
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["kill", "alice"]);
    let out = hive.cli(&["recv", "--as", "alice", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no messages in alice's inbox"), "{err}");
}

#[test]
fn usage_errors_exit_64_apart_from_refusals_and_no_daemon() {
    // No daemon at all: a usage error is still a usage error, told before connecting.
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hive-c0re"))
            .env("HIVE_RUN_DIR", dir.path())
            .env("HIVE_STATE_DIR", dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["frobnicate"][..],
        &["spawn"],
        &["spawn", "Alice"],
        &["recv", "--wait", "5000"],
        &["recv", "--wait", "soon"],
        &["approve", "seven"],
        &["kill", "manager"],
    ] {
        let out = cli(args);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} said nothing");
    }
    assert_eq!(cli(&["status"]).status.code(), Some(2));
    let help = cli(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Exit codes") && help.contains("64 usage error"),
        "{help}"
    );
    assert_eq!(cli(&["--version"]).status.code(), Some(0));
}

#[test]
fn unknown_model_names_are_warned_about() {
    let hive = TestHive::start();
    let out = hive.cli(&["spawn", "carol", "--model", "sonet"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: \"sonet\" is not a claude model alias"),
        "{err}"
    );
    hive.ok(&["kill", "carol"]);
    for (model, warns) in [
        ("opus", false),
        ("claude-sonnet-4-5", false),
        ("default", false),
        ("gpt-4", true),
    ] {
        let out = hive.cli(&["model", "carol", model]);
        assert!(out.status.success(), "{model}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.contains("warning"), warns, "{model}: {err}");
    }
    // A name that is not a model name at all is refused by the daemon.
    let out = hive.cli(&["model", "carol", "a b"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_approvals_table_keeps_the_deny_note_apart_from_the_description() {
    let hive = TestHive::start();
    hive.ok(&["request-spawn", "bob", "--description", "a reviewer"]);
    hive.ok(&["request-spawn", "dave"]);
    hive.ok(&["deny", "1", "--reason", "not now"]);
    hive.ok(&["deny", "2", "--reason", "no"]);
    let table = hive.ok(&["approvals"]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let col = |name: &str| header.find(name).unwrap_or_else(|| panic!("{header}"));
    let (desc, note) = (col("DESCRIPTION"), col("NOTE"));
    assert!(desc < note, "{header}");
    let cell = |row: &str, at: usize, to: Option<usize>| {
        row.get(at..to.unwrap_or(row.len()).min(row.len()))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let bob = lines.clone().find(|l| l.contains("bob")).unwrap();
    assert_eq!(cell(bob, desc, Some(note)), "a reviewer", "{table}");
    assert_eq!(cell(bob, note, None), "not now", "{table}");
    let dave = lines.find(|l| l.contains("dave")).unwrap();
    assert_eq!(cell(dave, desc, Some(note)), "", "{table}");
    assert_eq!(cell(dave, note, None), "no", "{table}");
}

#[test]
fn operator_steering_from_the_cli_is_noted_in_the_agents_history_as_from_the_dashboard() {
    let hive = TestHive::start();
    hive.ok(&["spawn", "carol"]);
    hive.ok(&["kill", "carol"]);
    hive.ok(&["send", "carol", "please look at the logs"]);
    hive.ok(&["model", "carol", "sonnet"]);
    hive.ok(&["model", "carol"]);
    hive.ok(&["model", "carol", "default"]);
    let noted: Vec<serde_json::Value> = hive
        .events("carol")
        .into_iter()
        .filter(|e| e["kind"] == "operator")
        .map(|e| e["payload"].clone())
        .collect();
    assert_eq!(noted.len(), 3, "{noted:?}");
    assert_eq!(noted[0]["message"], "please look at the logs");
    assert!(noted[0]["message_id"].as_i64().is_some(), "{noted:?}");
    // Asking for the model changes nothing, so nothing is noted for it.
    assert_eq!(noted[1]["command"], "/model sonnet");
    assert_eq!(noted[2]["command"], "/model default");
}

#[test]
fn needs_lists_what_waits_on_the_operator_as_the_dashboard_does() {
    // (Fake) model credentials: alice idles instead of parking on a login.
    let mut opts = common::Opts::default();
    opts.env
        .push(("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:9".into()));
    let hive = TestHive::start_with(opts);
    assert_eq!(hive.ok(&["needs"]).trim(), "nothing waits on you");
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["pause", "alice"]);
    hive.ok(&["send", "alice", "are you there?"]);
    hive.ok(&["request-spawn", "bob", "--description", "a reviewer"]);
    let table = hive.ok(&["needs"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("KIND"), "{table}");
    assert!(
        lines[1].starts_with("approval") && lines[1].contains("#1"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("paused_mail") && lines[2].contains("paused with a message waiting"),
        "{table}"
    );
    let json: Vec<serde_json::Value> = hive
        .ok(&["needs", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        json.iter()
            .map(|i| (i["kind"].as_str().unwrap(), i["agent"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [("approval", "bob"), ("paused_mail", "alice")]
    );
}
