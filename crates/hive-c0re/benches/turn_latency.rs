//! Send → turn-start latency: from a message committed (its `send` answered)
//! to the claude process of the turn started, push (the harness's long poll)
//! against the original harness's 5 s polling.
//!
//! `cargo build --release --workspace --bins && cargo bench -p hive-c0re --bench turn_latency`
//!
//! claude is replaced by a stub that notes the time it started and answers at
//! once, so the figure is the hive's own latency, not claude's start-up.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use common::{Daemon, call, pct_ms};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn idle(sock: &Path) -> bool {
    let v = call(sock, r#"{"cmd":"agent_status"}"#);
    let row = &v["agent_statuses"][0];
    row["running"] == true && row["state"] == "idle" && row["inbox_depth"] == 0
}

/// Sends `n` messages one at a time; returns the latencies.
fn measure(label: &str, poll_ms: Option<u64>, n: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts.log");
    let stub = dir.path().join("claude");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\ndate +%s%N >> {}\ncat > /dev/null\necho '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"session_id\":\"bench\",\"result\":\"ok\"}}'\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stub_s = stub.display().to_string();
    let poll_s = poll_ms.map(|p| p.to_string()).unwrap_or_default();
    let mut env = vec![
        ("HIVE_CLAUDE_BIN", stub_s.as_str()),
        ("ANTHROPIC_API_KEY", "sk-bench"),
    ];
    if poll_ms.is_some() {
        env.push(("HIVE_HARNESS_POLL_MS", poll_s.as_str()));
    }
    let d = Daemon::start(dir.path(), "process", &env);
    assert_eq!(
        call(&d.sock, r#"{"cmd":"spawn","name":"alice"}"#)["ok"],
        true
    );
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !idle(&d.sock) {
            assert!(Instant::now() < deadline, "alice never became idle");
            std::thread::sleep(Duration::from_millis(2));
        }
        let r = call(
            &d.sock,
            &format!(r#"{{"cmd":"send","to":"alice","body":"m{i}"}}"#),
        );
        let sent = now_ns();
        assert_eq!(r["ok"], true);
        let started = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(l) = text.lines().nth(i) {
                break l.trim().parse::<u128>().unwrap();
            }
            assert!(Instant::now() < deadline, "turn {i} never started");
            std::thread::sleep(Duration::from_micros(200));
        };
        lat.push(Duration::from_nanos(started.saturating_sub(sent) as u64));
        eprint!("\r{label}: {}/{n}", i + 1);
    }
    eprintln!();
    lat.sort();
    lat
}

fn main() {
    let push = measure("push", None, 200);
    let poll = measure("poll every 5 s", Some(5000), 20);
    println!("send -> turn start latency (ms)        p50        p99   samples");
    println!(
        "push (long poll on agent.sock)   {:>10.2} {:>10.2}   {:>7}",
        pct_ms(&push, 0.5),
        pct_ms(&push, 0.99),
        push.len()
    );
    println!(
        "baseline: poll every 5 s         {:>10.2} {:>10.2}   {:>7}",
        pct_ms(&poll, 0.5),
        pct_ms(&poll, 0.99),
        poll.len()
    );
    println!(
        "ratio baseline/push              {:>10.0}x {:>9.0}x   (goal: push p99 < 20 ms)",
        pct_ms(&poll, 0.5) / pct_ms(&push, 0.5),
        pct_ms(&poll, 0.99) / pct_ms(&push, 0.99)
    );
}
