//! The soak: a hive of agents on the scripted model, worked for minutes while
//! processes are killed at random, then checked for lost or doubled messages,
//! stray processes and unbounded growth. Ignored by `cargo test`; run it with
//! `scripts/soak.sh [MINUTES]`, which sets the knobs below.
//!
//! Every message the operator starts carries a nonce `nK`, and every one comes
//! back to the operator: `nK` to an agent is answered `ack: nK`; `ask PEER nK`
//! (sent by the operator, or fired by a schedule) makes the agent ask PEER,
//! PEER answer, and the agent report the answer. A nonce that never comes
//! back is a lost message; one that comes back twice is a redelivery, which
//! only a crash mid-turn may cause.
//!
//! Knobs (environment): SOAK_MINUTES (default 5), SOAK_AGENTS (20),
//! SOAK_RUNTIME (`nspawn` as root where systemd-nspawn exists, else
//! `process`), SOAK_TICK_MS (3000, the pause between two random actions),
//! SOAK_SEED (a random seed; printed, so a run can be replayed), SOAK_DRAIN_MINUTES (15).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{ModelSim, TestHive};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The built-in script, except that `ask` is followed from any sender: a
/// schedule's prompt comes from `system`, which takes no answer.
fn script() -> String {
    let builtin = include_str!("../../hive-model-sim/src/default_script.toml");
    let from_operator = "sender = \"operator\"\n";
    assert!(
        builtin.contains(from_operator),
        "the built-in script's ask rule no longer names its sender: update the soak"
    );
    builtin.replacen(from_operator, "", 1)
}

fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// xorshift64*: enough randomness for picking actions, and replayable by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The nonces in a message body: `n` and digits, not inside a word.
fn nonces(body: &str) -> Vec<u64> {
    let b = body.as_bytes();
    let mut out = vec![];
    for i in 0..b.len() {
        if b[i] != b'n' || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let digits: String = body[i + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let after = body[i + 1 + digits.len()..].chars().next();
        if !digits.is_empty() && !after.is_some_and(|c| c.is_ascii_alphanumeric()) {
            out.push(digits.parse().unwrap());
        }
    }
    out
}

/// What the run did and saw, for the report and the checks.
#[derive(Default)]
struct Tally {
    sent: BTreeSet<u64>,
    received: BTreeMap<u64, u32>,
    kills: BTreeMap<&'static str, u32>,
    pauses: u32,
    schedules: u32,
    max_daemon_rss_kib: u64,
    max_claudes: usize,
}

impl Tally {
    fn drain(&mut self, hive: &TestHive) {
        let out = hive.cli(&["recv", "--json", "--max", "100"]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(m) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            // One nonce per message: the first (an answer quotes its question once).
            if let Some(&n) = nonces(m["body"].as_str().unwrap_or("")).first() {
                *self.received.entry(n).or_default() += 1;
            }
        }
    }

    fn missing(&self) -> Vec<u64> {
        self.sent
            .iter()
            .filter(|n| !self.received.contains_key(n))
            .copied()
            .collect()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn claude_pids(hive: &TestHive, agent: &str) -> Vec<i32> {
    common::agent_pids(hive, agent)
        .into_iter()
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains("claude")
        })
        .collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
#[ignore = "minutes long: run it with scripts/soak.sh"]
fn soak() {
    assert!(
        common::e2e_ready(),
        "the soak needs the claude CLI and the built binaries (scripts/soak.sh sees to both)"
    );
    let minutes = knob("SOAK_MINUTES", 5);
    let n_agents = knob("SOAK_AGENTS", 20) as usize;
    let tick = Duration::from_millis(knob("SOAK_TICK_MS", 3000));
    let drain_for = Duration::from_secs(60 * knob("SOAK_DRAIN_MINUTES", 15));
    let nspawn_ok = nix::unistd::geteuid().is_root() && common::which("systemd-nspawn").is_some();
    let runtime: &'static str = match std::env::var("SOAK_RUNTIME").as_deref() {
        Ok("process") => "process",
        Ok("nspawn") => "nspawn",
        Ok(other) => panic!("SOAK_RUNTIME={other:?}: write nspawn or process"),
        Err(_) if nspawn_ok => "nspawn",
        Err(_) => "process",
    };
    let seed = knob(
        "SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    println!(
        "soak: {minutes} min, {n_agents} agents, {runtime} runtime, a random action every {tick:?}, SOAK_SEED={seed}"
    );
    let mut rng = Rng(seed);

    let sim = ModelSim::start(Some(&script()));
    let mut hive = TestHive::with_model(&sim, runtime);
    let names: Vec<String> = (0..n_agents).map(|i| format!("a{i:02}")).collect();
    for n in &names {
        hive.ok(&["spawn", n]);
    }
    hive.wait_for("every agent running", 600, |h| {
        names
            .iter()
            .all(|n| h.row(n).is_some_and(|r| r["running"] == true))
    });
    println!("soak: {n_agents} agents running");

    let mut t = Tally::default();
    let mut paused: Vec<(String, Instant)> = vec![];
    let mut next_nonce = 0u64;
    let mut last_daemon_kill = Instant::now();
    let started = Instant::now();
    let end = started + Duration::from_secs(60 * minutes);
    let mut last_report = Instant::now();
    while Instant::now() < end {
        let me = names[rng.below(n_agents as u64) as usize].clone();
        let peer = names[rng.below(n_agents as u64) as usize].clone();
        next_nonce += 1;
        let nonce = next_nonce;
        match rng.below(100) {
            0..=29 => {
                hive.ok(&["send", &me, &format!("n{nonce}")]);
                t.sent.insert(nonce);
            }
            30..=49 if peer != me => {
                hive.ok(&["send", &me, &format!("ask {peer} n{nonce}")]);
                t.sent.insert(nonce);
            }
            50..=57 if peer != me => {
                let secs = 5 + rng.below(55);
                hive.ok(&[
                    "schedule",
                    "add",
                    &me,
                    &format!("{secs}s"),
                    &format!("ask {peer} n{nonce}"),
                ]);
                t.sent.insert(nonce);
                t.schedules += 1;
            }
            58..=65 if !paused.iter().any(|(p, _)| *p == me) => {
                hive.ok(&["pause", &me]);
                let back = Instant::now() + Duration::from_secs(5 + rng.below(25));
                paused.push((me, back));
                t.pauses += 1;
            }
            66..=69 => {
                let pids = common::harness_pids(&hive, &me);
                if let Some(&pid) = pids.first() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    *t.kills.entry("harness").or_default() += 1;
                }
            }
            70..=75 => {
                let pids = claude_pids(&hive, &me);
                if let Some(&pid) = pids.first() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    *t.kills.entry("claude").or_default() += 1;
                }
            }
            76 if last_daemon_kill.elapsed() > Duration::from_secs(120) => {
                hive.kill9();
                *t.kills.entry("hive-c0re").or_default() += 1;
                hive.serve();
                last_daemon_kill = Instant::now();
            }
            _ => {}
        }
        let now = Instant::now();
        paused.retain(|(n, back)| {
            if *back <= now {
                hive.ok(&["resume", n]);
                false
            } else {
                true
            }
        });
        t.drain(&hive);
        if let Some(c) = hive.child.as_ref() {
            t.max_daemon_rss_kib = t.max_daemon_rss_kib.max(rss_kib(c.id()));
        }
        let claudes: usize = names.iter().map(|n| claude_pids(&hive, n).len()).sum();
        t.max_claudes = t.max_claudes.max(claudes);
        if last_report.elapsed() > Duration::from_secs(60) {
            println!(
                "soak: {:>4}s sent {} back {} kills {:?} claude now {claudes}",
                started.elapsed().as_secs(),
                t.sent.len(),
                t.received.len(),
                t.kills
            );
            last_report = Instant::now();
        }
        std::thread::sleep(tick);
    }

    println!("soak: actions over; resuming every agent and draining");
    for (n, _) in paused.drain(..) {
        hive.ok(&["resume", &n]);
    }
    let drain_end = Instant::now() + drain_for;
    while !t.missing().is_empty() && Instant::now() < drain_end {
        t.drain(&hive);
        std::thread::sleep(Duration::from_secs(2));
    }
    // Late duplicates of a crashed turn still count.
    std::thread::sleep(Duration::from_secs(10));
    t.drain(&hive);

    let rows: Vec<serde_json::Value> = names.iter().filter_map(|n| hive.row(n)).collect();
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r["failed"] == true)
        .filter_map(|r| r["name"].as_str())
        .collect();
    let twice: Vec<(u64, u32)> = t
        .received
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, c)| (*n, *c))
        .collect();
    let crashes: u32 = t.kills.values().sum();
    let state = hive.state_dir();
    let db_bytes = dir_bytes(&state);
    let max_log = names
        .iter()
        .map(|n| {
            std::fs::metadata(state.join("agents").join(n).join("harness.log"))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    println!(
        "soak: sent {} (schedules {}), came back {}, missing {:?}, twice or more {} {:?}\n\
         soak: kills {:?}, pauses {}, failed agents {failed:?}\n\
         soak: hive-c0re peak RSS {} MiB, claude processes at once (peak) {}, \
         database files {} MiB, largest harness.log {} KiB",
        t.sent.len(),
        t.schedules,
        t.received.len(),
        t.missing(),
        twice.len(),
        twice,
        t.kills,
        t.pauses,
        t.max_daemon_rss_kib / 1024,
        t.max_claudes,
        db_bytes >> 20,
        max_log >> 10,
    );

    // Stopping each agent leaves none of its processes behind.
    for n in &names {
        hive.ok(&["kill", n]);
    }
    hive.wait_for("every agent's processes to end", 120, |h| {
        names.iter().all(|n| common::agent_pids(h, n).is_empty())
    });

    if !t.missing().is_empty() {
        // Where each lost nonce was last seen, to tell a lost message from a stuck one.
        for r in &rows {
            println!(
                "soak: {} state {} inbox {} paused {}",
                r["name"], r["state"], r["inbox_depth"], r["paused"]
            );
        }
        for n in t.missing() {
            let needle = format!("n{n}");
            for a in &names {
                for e in hive.events(a) {
                    let text = e.to_string();
                    if text.contains(&needle) && nonces(&text).contains(&n) {
                        println!("soak: n{n} in {a}'s {}: {:.300}", e["kind"], text);
                    }
                }
            }
        }
    }
    assert!(t.missing().is_empty(), "messages lost: {:?}", t.missing());
    assert!(
        twice.iter().all(|(_, c)| *c <= 2),
        "a message came back more than twice: {twice:?}"
    );
    assert!(
        twice.len() as u32 <= crashes,
        "{} redeliveries but only {crashes} kills: {twice:?}",
        twice.len()
    );
    assert!(failed.is_empty(), "agents failed: {failed:?}");
    assert!(
        t.max_daemon_rss_kib < 512 * 1024,
        "hive-c0re grew to {} MiB",
        t.max_daemon_rss_kib / 1024
    );
    assert!(
        db_bytes < 512 << 20,
        "the database grew to {} MiB",
        db_bytes >> 20
    );
    assert!(
        max_log < 64 << 20,
        "a harness.log grew to {} MiB",
        max_log >> 20
    );
}

#[test]
fn nonces_are_read_from_every_answer_form() {
    assert_eq!(nonces("ack: n12"), vec![12]);
    assert_eq!(
        nonces("a03 answered: you asked \"n7\"; I am a scripted agent, so my answer is 42."),
        vec![7]
    );
    assert_eq!(nonces("an12 n x9 n"), Vec::<u64>::new());
}
