//! Spawn → harness connected: from the `spawn` request to the agent's harness
//! talking on its socket (its first `state` event), over 20 spawns, for each
//! runtime this host can run.
//!
//! `cargo build --release --workspace --bins && cargo bench -p hive-c0re --bench spawn`

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

mod common;

use common::{Daemon, call, pct_ms};

const SPAWNS: usize = 20;

fn measure(runtime: &str) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        runtime,
        &[("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")],
    );
    let sock = d.sock.clone();
    let mut out = vec![];
    for i in 0..SPAWNS {
        let name = format!("agent-{i}");
        let t0 = Instant::now();
        let r = call(&sock, &format!(r#"{{"cmd":"spawn","name":"{name}"}}"#));
        assert_eq!(r["ok"], true, "{r}");
        // Follow the agent's events: pushed as they are stored, no polling.
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(
            format!("{{\"cmd\":\"events\",\"agent\":\"{name}\",\"follow\":true}}\n").as_bytes(),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut lines = BufReader::new(s).lines();
        loop {
            let line = lines
                .next()
                .expect("the stream ended")
                .expect("no harness within 30 s");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "state"))
            {
                break;
            }
        }
        out.push(t0.elapsed());
        eprint!("\r{runtime}: {}/{SPAWNS}", i + 1);
    }
    eprintln!();
    out.sort();
    out
}

fn main() {
    let runtimes = common::runtimes();
    println!("spawn -> harness connected over {SPAWNS} spawns     p50 ms     max ms");
    for rt in runtimes {
        let v = measure(rt);
        let goal = if rt == "nspawn" {
            "   (goal < 500 ms)"
        } else {
            ""
        };
        println!(
            "{rt:<8}                              {:>8.1} {:>10.1}{goal}",
            pct_ms(&v, 0.5),
            pct_ms(&v, 1.0)
        );
    }
}
