//! Send → turn-start latency: from a message committed (its `send` answered)
//! to the claude process of the turn started, push (the harness's long poll)
//! against the original harness's 5 s polling.
//!
//! `cargo build --release --workspace --bins && cargo bench -p hive-c0re --bench turn_latency`
//!
//! claude is replaced by a stub that notes the time it started and answers at
//! once, so the figure is the hive's own latency, not claude's start-up.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HIVE_BIN_DIR") {
        return d.into();
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p))
        .find(|d| d.join("hive-ag3nt").exists() && d.join("hive-c0re").exists())
        .expect("build the binaries first: cargo build --release --workspace --bins")
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn call(sock: &Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut out = String::new();
    BufReader::new(s).read_line(&mut out).unwrap();
    serde_json::from_str(&out).unwrap()
}

struct Daemon {
    child: Child,
    sock: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, stub: &Path, poll_ms: Option<u64>) -> Daemon {
    let bins = bin_dir();
    let mut cmd = Command::new(bins.join("hive-c0re"));
    cmd.args([
        "serve",
        "--runtime",
        "process",
        "--no-manager",
        "--no-dashboard",
    ])
    .env("HIVE_STATE_DIR", dir.join("state"))
    .env("HIVE_RUN_DIR", dir.join("run"))
    .env("HIVE_BIN_DIR", &bins)
    .env("HIVE_CLAUDE_BIN", stub)
    .env("ANTHROPIC_API_KEY", "sk-bench")
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(p) = poll_ms {
        cmd.env("HIVE_HARNESS_POLL_MS", p.to_string());
    }
    let child = cmd.spawn().unwrap();
    let sock = dir.join("run/host.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "hive-c0re did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Daemon { child, sock }
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
    let d = start(dir.path(), &stub, poll_ms);
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

fn pct(v: &[Duration], q: f64) -> f64 {
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let push = measure("push", None, 200);
    let poll = measure("poll every 5 s", Some(5000), 20);
    println!("send -> turn start latency (ms)        p50        p99   samples");
    println!(
        "push (long poll on agent.sock)   {:>10.2} {:>10.2}   {:>7}",
        pct(&push, 0.5),
        pct(&push, 0.99),
        push.len()
    );
    println!(
        "baseline: poll every 5 s         {:>10.2} {:>10.2}   {:>7}",
        pct(&poll, 0.5),
        pct(&poll, 0.99),
        poll.len()
    );
    println!(
        "ratio baseline/push              {:>10.0}x {:>9.0}x   (goal: push p99 < 20 ms)",
        pct(&poll, 0.5) / pct(&push, 0.5),
        pct(&poll, 0.99) / pct(&push, 0.99)
    );
}
