//! Agent lifecycle through the daemon, for both runtimes: start, kill, restart,
//! crash reports to the manager, restarts with backoff, and exactly one
//! harness per agent after hive-c0re itself is killed.

mod common;

use std::time::{Duration, Instant};

use common::{Opts, TestHive};

/// True (and says so) when this host cannot run `runtime`'s agents.
fn hive_unavailable(runtime: &str) -> bool {
    let no = runtime == "nspawn"
        && (!nix::unistd::geteuid().is_root() || common::which("systemd-nspawn").is_none());
    if no {
        eprintln!("skipped: the nspawn runtime needs root and systemd-nspawn");
    }
    no
}

/// A hive whose agents have (fake) model credentials, so they idle instead of parking.
fn hive(runtime: &'static str) -> Option<TestHive> {
    if hive_unavailable(runtime) {
        return None;
    }
    let mut opts = Opts {
        runtime,
        ..Opts::default()
    };
    opts.env
        .push(("ANTHROPIC_BASE_URL".into(), "http://127.0.0.1:9".into()));
    Some(TestHive::start_with(opts))
}

fn running(hive: &TestHive, name: &str) -> bool {
    hive.row(name).is_some_and(|r| r["running"] == true)
}

fn lifecycle(runtime: &'static str) {
    let Some(hive) = hive(runtime) else { return };
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice running", 30, |h| running(h, "alice"));
    let row = hive.row("alice").unwrap();
    assert_eq!(row["runtime"], runtime);
    assert_eq!(row["isolated"], runtime == "nspawn");
    let first = common::harness_pid(&hive, "alice");

    hive.ok(&["kill", "alice"]);
    assert!(!running(&hive, "alice"));
    assert_eq!(hive.row("alice").unwrap()["state"], "stopped");
    assert!(
        common::harness_pids(&hive, "alice").is_empty(),
        "the harness outlived kill"
    );

    hive.ok(&["start", "alice"]);
    hive.wait_for("alice running again", 30, |h| running(h, "alice"));
    hive.ok(&["restart", "alice"]);
    hive.wait_for("alice running after restart", 30, |h| running(h, "alice"));
    let after = common::harness_pid(&hive, "alice");
    assert_ne!(first, after);
    assert_eq!(common::harness_pids(&hive, "alice").len(), 1);

    hive.ok(&["destroy", "alice"]);
    assert!(hive.row("alice").is_none());
    assert!(common::harness_pids(&hive, "alice").is_empty());
}

#[test]
fn lifecycle_process_runtime() {
    lifecycle("process");
}

#[test]
fn lifecycle_nspawn_runtime() {
    lifecycle("nspawn");
}

fn crash_reaches_the_manager(runtime: &'static str) {
    let Some(hive) = hive(runtime) else { return };
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice running", 30, |h| running(h, "alice"));
    let pid = common::harness_pid(&hive, "alice");
    let killed = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = hive.ok(&["recv", "--as", "manager", "--wait", "2", "--json"]);
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "the crash message took {:?}",
        killed.elapsed()
    );
    let msg: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("no crash message within 2 s")).unwrap();
    assert_eq!(msg["from"], "system");
    let body = msg["body"].as_str().unwrap();
    assert!(body.contains("Agent alice's harness"), "{body}");
    assert!(
        body.contains("signal 9") || body.contains("status"),
        "{body}"
    );
    assert!(
        body.contains("Last lines of its output (the agent's own words, quoted"),
        "{body}"
    );
    hive.wait_for("alice back", 30, |h| {
        running(h, "alice") && common::harness_pids(h, "alice").len() == 1
    });
    assert_ne!(common::harness_pid(&hive, "alice"), pid);
    assert!(
        hive.events("alice")
            .iter()
            .any(|e| e["kind"] == "container_crash")
    );
}

#[test]
fn crash_reaches_the_manager_process_runtime() {
    crash_reaches_the_manager("process");
}

#[test]
fn crash_reaches_the_manager_nspawn_runtime() {
    crash_reaches_the_manager("nspawn");
}

fn exactly_once_after_daemon_kill_9(runtime: &'static str) {
    let Some(mut hive) = hive(runtime) else {
        return;
    };
    hive.ok(&["spawn", "alice"]);
    hive.ok(&["spawn", "bob"]);
    hive.ok(&["kill", "bob"]);
    hive.wait_for("alice running", 30, |h| running(h, "alice"));
    for _ in 0..2 {
        hive.kill9();
        hive.serve();
        hive.wait_for("alice running", 30, |h| running(h, "alice"));
        // Give a stray second harness time to show up if there were one.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            common::harness_pids(&hive, "alice").len(),
            1,
            "alice runs other than once"
        );
        assert!(
            common::harness_pids(&hive, "bob").is_empty(),
            "bob was stopped and must stay stopped"
        );
        assert!(!running(&hive, "bob"));
    }
}

#[test]
fn exactly_once_after_daemon_kill_9_process_runtime() {
    exactly_once_after_daemon_kill_9("process");
}

#[test]
fn exactly_once_after_daemon_kill_9_nspawn_runtime() {
    exactly_once_after_daemon_kill_9("nspawn");
}

#[test]
fn a_harness_that_keeps_dying_is_left_failed() {
    let bins = tempfile::tempdir().unwrap();
    let script = bins.path().join("hive-ag3nt");
    common::write_exe(&script, "#!/bin/sh\necho 'boom: no config' >&2\nexit 3\n");
    let mut opts = Opts::default();
    opts.env
        .push(("HIVE_BIN_DIR".into(), bins.path().display().to_string()));
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice failed", 60, |h| {
        h.row("alice").unwrap()["failed"] == true
    });
    let table = hive.ok(&["status"]);
    assert!(table.lines().nth(1).unwrap().contains("failed"), "{table}");
    let notices = hive.ok(&["recv", "--as", "manager", "--json"]);
    let bodies: Vec<String> = notices
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        bodies
            .iter()
            .all(|b| b.contains("exited with status 3") && b.contains("boom: no config")),
        "{bodies:?}"
    );
    assert!(bodies.last().unwrap().contains("gave up"), "{bodies:?}");
    // The operator is notified of each crash, and of the failure that ends them.
    let kinds: Vec<String> =
        hive.request(serde_json::json!({"cmd": "notifications"}))["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["kind"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("failed"),
        "{kinds:?}"
    );
    assert!(
        kinds[1..].iter().all(|k| k == "crashed") && kinds.len() > 1,
        "{kinds:?}"
    );
    // start clears the failure and tries again.
    hive.ok(&["start", "alice"]);
    assert_eq!(hive.row("alice").unwrap()["failed"], false);
}

#[test]
fn without_credentials_an_agent_parks_with_needs_login_until_they_appear() {
    // No API key, no OAuth token, no model URL: nothing claude could use.
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("needs_login", 30, |h| {
        h.row("alice").unwrap()["needs_login"] == true
    });
    hive.ok(&["send", "alice", "are you there?"]);
    std::thread::sleep(Duration::from_secs(2));
    let row = hive.row("alice").unwrap();
    assert_eq!(row["running"], true, "a parked agent must not crash-loop");
    assert_eq!(row["state"], "idle");
    assert_eq!(row["inbox_depth"], 1, "the message waits");
    assert!(
        !hive
            .events("alice")
            .iter()
            .any(|e| e["kind"] == "turn_start" || e["kind"] == "container_crash")
    );
    // The operator logs in: claude's credentials appear in the agent's /state.
    let creds = hive.state_dir().join("agents/alice/state/.claude");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join(".credentials.json"), "{}").unwrap();
    hive.wait_for("needs_login cleared", 30, |h| {
        h.row("alice").unwrap()["needs_login"] == false
    });
}

#[test]
fn events_cli_prints_history_for_people_and_scripts() {
    let Some(hive) = hive("process") else { return };
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice running", 30, |h| running(h, "alice"));
    let json = hive.ok(&["events", "alice", "--json"]);
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "state" && e["payload"]["state"] == "idle"),
        "{json}"
    );
    for e in &events {
        for k in ["id", "agent", "ts", "kind", "payload"] {
            assert!(e.get(k).is_some(), "event without {k}: {e}");
        }
    }
    let last = events.last().unwrap()["id"].as_i64().unwrap();
    assert_eq!(
        hive.ok(&["events", "alice", "--since", &last.to_string(), "--json"]),
        ""
    );
    // People get the transcript: a state change reads as the dashboard's terminal shows it.
    let human = hive.ok(&["events", "alice"]);
    assert!(human.lines().any(|l| l == "◦ idle"), "{human}");
}

/// A harness that prints and dies: every crash report quotes what it printed
/// last, and the status row says failed with the restarts and the same tail.
fn a_crash_quotes_the_harness_last_output(runtime: &'static str) {
    if hive_unavailable(runtime) {
        return;
    }
    let bins = tempfile::tempdir().unwrap();
    common::searchable(bins.path());
    common::write_exe(
        &bins.path().join("hive-ag3nt"),
        "#!/bin/sh\necho 'starting up'\necho 'fatal: the last words of a harness' >&2\nexit 255\n",
    );
    let mut opts = Opts {
        runtime,
        ..Opts::default()
    };
    opts.env
        .push(("HIVE_BIN_DIR".into(), bins.path().display().to_string()));
    let hive = TestHive::start_with(opts);
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice failed", 90, |h| {
        h.row("alice").unwrap()["failed"] == true
    });
    let crashes: Vec<_> = hive
        .events("alice")
        .into_iter()
        .filter(|e| e["kind"] == "container_crash")
        .collect();
    assert!(!crashes.is_empty());
    for c in &crashes {
        let tail = c["payload"]["log_tail"].as_str().unwrap_or_default();
        assert!(
            tail.contains("fatal: the last words of a harness"),
            "a crash report without the harness's output: {c}"
        );
    }
    let row = hive.row("alice").unwrap();
    assert_eq!(row["health"], "failed", "{row}");
    assert!(row["restarts"].as_u64().unwrap() >= 5, "{row}");
    assert!(
        row["crash_tail"]
            .as_str()
            .unwrap()
            .contains("fatal: the last words of a harness"),
        "{row}"
    );
    let table = hive.ok(&["status"]);
    assert!(table.contains("failed (6 restarts)"), "{table}");
}

/// A harness killed by a signal writes nothing of its own: the crash report
/// still quotes its log (the harness's start line), never an empty tail.
fn a_killed_harness_leaves_a_tail(runtime: &'static str) {
    let Some(hive) = hive(runtime) else { return };
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice running", 30, |h| running(h, "alice"));
    // The harness's first line is written as it starts serving.
    let log = hive.state_dir().join("agents/alice/harness.log");
    hive.wait_for("the harness's start line", 30, |_| {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("harness serving"))
    });
    let pid = common::harness_pid(&hive, "alice");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    hive.wait_for("a crash report", 30, |h| {
        h.events("alice")
            .iter()
            .any(|e| e["kind"] == "container_crash")
    });
    let crash = hive
        .events("alice")
        .into_iter()
        .find(|e| e["kind"] == "container_crash")
        .unwrap();
    let tail = crash["payload"]["log_tail"].as_str().unwrap();
    assert!(tail.contains("harness serving"), "{crash}");
    let exit = crash["payload"]["exit"].as_str().unwrap();
    assert!(
        exit.contains("signal 9") || exit.contains("killed by a signal"),
        "{crash}"
    );
    let row = hive.row("alice").unwrap();
    assert_eq!(row["restarts"], 1, "{row}");
}

#[test]
fn a_killed_harness_leaves_a_tail_process_runtime() {
    a_killed_harness_leaves_a_tail("process");
}

#[test]
fn a_killed_harness_leaves_a_tail_nspawn_runtime() {
    a_killed_harness_leaves_a_tail("nspawn");
}

#[test]
fn a_crash_quotes_the_harness_last_output_process_runtime() {
    a_crash_quotes_the_harness_last_output("process");
}

#[test]
fn a_crash_quotes_the_harness_last_output_nspawn_runtime() {
    a_crash_quotes_the_harness_last_output("nspawn");
}

/// A kill while the agent is being launched ends the launch: the launch
/// walks the agent's whole state dir (handing it to the agent's uids), and
/// a kill waited for that walk, as long as the agent has files (millions:
/// minutes), and then for a harness started only to be killed.
#[test]
fn a_kill_during_a_launch_ends_the_launch_and_starts_no_harness() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the launch walks the state dir only for an agent with uids of its own");
        return;
    }
    let hive = TestHive::start();
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice running", 30, |h| {
        h.row("alice").is_some_and(|r| r["running"] == true)
    });
    hive.ok(&["stop", "alice"]);
    // Many files of root's, each to be handed over at the next launch.
    let many = hive.state_dir().join("agents/alice/state/many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..100_000 {
        std::fs::write(many.join(i.to_string()), "").unwrap();
    }
    let starts = || {
        hive.log()
            .lines()
            .filter(|l| l.contains("harness started") && l.contains("agent=alice "))
            .count()
    };
    let before = starts();
    hive.ok(&["start", "alice"]);
    hive.ok(&["kill", "alice"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(starts(), before, "a harness started after the kill");
    let row = hive.row("alice").unwrap();
    assert_eq!(row["running"], false, "{row}");
    assert!(row.get("health").is_none(), "{row}");
    let log = hive.log();
    assert!(!log.contains("could not be launched"), "{log}");
}
