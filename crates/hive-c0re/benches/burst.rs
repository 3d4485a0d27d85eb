//! A burst: N agents each get one message at once, with a turn limit; every
//! agent must be answered with bounded memory, and `status` must stay quick.
//! Real claude against the scripted model (`hive-model-sim`), on nspawn when
//! this host can (root and systemd-nspawn), else the process runtime.
//!
//! `cargo build --release --workspace --bins && cargo bench -p hive-c0re --bench burst`
//!
//! Knobs: `BURST_AGENTS` (default 200), `BURST_LIMIT` (default 16),
//! `BURST_UNLIMITED_AGENTS` (default 100: the same burst with no limit, for
//! comparison; 0 skips it), `BURST_RUNTIME` (nspawn or process).
//!
//! Prints: agents answered, peak concurrent claude processes (sampled from
//! /proc every 100 ms), peak host memory used (MemTotal - MemAvailable,
//! above what was used before the burst too), turns per minute, p50/p99 wait
//! in line (message sent to its agent first seen `thinking` in status, sampled
//! every 100 ms), and `hive-c0re status` latency p50/p99 sampled during the burst.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{Daemon, bin_dir, call, pct_ms};

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `hive-model-sim` with its built-in script (`ping` gets `pong`); killed on drop.
struct Sim {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Sim {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("addr");
        let child = Command::new(bin_dir().join("hive-model-sim"))
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("hive-model-sim is built");
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&port_file)
                && !a.trim().is_empty()
            {
                break a.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "hive-model-sim did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn claude_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/claude/node_modules/.bin/claude")
        .canonicalize()
        .expect("the claude CLI is installed (scripts/deps.sh)")
}

/// Claude processes the hive under test runs now: below the daemon `root`
/// (its harnesses, in their containers), whose program is the claude CLI
/// (`claude`, or the package's native `claude.exe`), not counting a claude's
/// own children (other helpers' tests on this host run claude too).
fn claude_count(root: u32) -> usize {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut is_claude: HashMap<u32, bool> = HashMap::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // The parent is field 4 (ppid).
        let Some(pp) = common::proc_stat(pid).and_then(|f| f.get(1)?.parse().ok()) else {
            continue;
        };
        parent.insert(pid, pp);
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmd.split(|b| *b == 0).next().unwrap_or_default();
        let base = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
        is_claude.insert(pid, base == b"claude" || base == b"claude.exe");
    }
    let below_root = |mut p: u32| {
        while let Some(&pp) = parent.get(&p) {
            if pp == root {
                return true;
            }
            p = pp;
        }
        false
    };
    is_claude
        .iter()
        .filter(|&(pid, &c)| {
            c && parent
                .get(pid)
                .is_none_or(|pp| is_claude.get(pp) != Some(&true))
                && below_root(*pid)
        })
        .count()
}

/// MemTotal - MemAvailable, in MiB.
fn mem_used_mib() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let field = |k: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    (field("MemTotal:") - field("MemAvailable:")) / 1024
}

fn rows(sock: &Path) -> Vec<serde_json::Value> {
    call(sock, r#"{"cmd":"agent_status"}"#)["agent_statuses"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn burst(runtime: &str, agents: usize, limit: Option<usize>) {
    let label = match limit {
        Some(l) => format!("{agents} agents, limit {l}"),
        None => format!("{agents} agents, no limit"),
    };
    println!("== burst on {runtime}: {label}");
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let base_url = format!("http://{}", sim.addr);
    let claude = claude_bin().display().to_string();
    // "No limit": more slots than agents.
    let limit_s = limit.unwrap_or(agents + 2).to_string();
    let d = Daemon::start(
        dir.path(),
        runtime,
        &[
            ("ANTHROPIC_BASE_URL", &base_url),
            ("ANTHROPIC_API_KEY", "sk-bench"),
            ("HIVE_CLAUDE_BIN", &claude),
            ("HIVE_MAX_CONCURRENT_TURNS", &limit_s),
        ],
    );
    let names: Vec<String> = (0..agents).map(|i| format!("b-{i}")).collect();
    let t0 = Instant::now();
    for n in &names {
        let r = call(&d.sock, &format!(r#"{{"cmd":"spawn","name":"{n}"}}"#));
        assert_eq!(r["ok"], true, "{r}");
    }
    let deadline = Instant::now() + Duration::from_secs(60 + 3 * agents as u64);
    loop {
        let up = rows(&d.sock)
            .iter()
            .filter(|r| r["running"] == true && r["state"] == "idle")
            .count();
        if up == agents {
            break;
        }
        assert!(Instant::now() < deadline, "{up} of {agents} agents came up");
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("  {agents} agents up in {:.0?}", t0.elapsed());
    std::thread::sleep(Duration::from_secs(3));
    let mem_before = mem_used_mib();

    // Samplers: claude processes and memory every 100 ms, status latency every 250 ms.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        let root = d.pid();
        std::thread::spawn(move || {
            // Walking /proc ten times a second is the bench's own work: it must
            // not take the CPU from the hive it measures (niceness is per thread).
            // SAFETY: setpriority only lowers this thread's priority.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            let (mut peak_claude, mut peak_mem) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                peak_claude = peak_claude.max(claude_count(root));
                peak_mem = peak_mem.max(mem_used_mib());
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak_claude, peak_mem)
        })
    };
    // Also when each agent is first seen running a turn (its wait in line ends).
    let status_sampler = {
        let done = done.clone();
        let sock = d.sock.clone();
        std::thread::spawn(move || {
            let mut lat = vec![];
            let mut started: HashMap<String, i64> = HashMap::new();
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let v = call(&sock, r#"{"cmd":"agent_status"}"#);
                lat.push(t.elapsed());
                assert_eq!(v["ok"], true);
                let now = chrono::Utc::now().timestamp_millis();
                for r in v["agent_statuses"].as_array().into_iter().flatten() {
                    if r["state"] == "thinking"
                        && let Some(n) = r["name"].as_str()
                    {
                        started.entry(n.to_owned()).or_insert(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (lat, started)
        })
    };

    let sent_at = Instant::now();
    let mut sent_ms = vec![];
    for n in &names {
        sent_ms.push(chrono::Utc::now().timestamp_millis());
        let r = call(
            &d.sock,
            &format!(r#"{{"cmd":"send","to":"{n}","body":"ping"}}"#),
        );
        assert_eq!(r["ok"], true, "{r}");
    }
    let deadline = Instant::now() + Duration::from_secs(120 + 20 * agents as u64);
    let mut answered = 0;
    while answered < agents {
        let r = call(&d.sock, r#"{"cmd":"recv","max":1000,"wait_ms":5000}"#);
        answered += r["messages"].as_array().map(|m| m.len()).unwrap_or(0);
        if Instant::now() > deadline {
            println!("  gave up waiting: {answered} of {agents} answered");
            break;
        }
    }
    let took = sent_at.elapsed();
    done.store(true, Ordering::Relaxed);
    let (peak_claude, peak_mem) = sampler.join().unwrap();
    let (mut status_lat, started) = status_sampler.join().unwrap();
    status_lat.sort();

    // Wait in line: each agent's message sent to its turn first seen running
    // (status sampled every 100 ms: that is the resolution).
    let waits: Vec<Duration> = names
        .iter()
        .zip(&sent_ms)
        .filter_map(|(n, sent)| {
            started
                .get(n)
                .map(|s| Duration::from_millis((s - sent).max(0) as u64))
        })
        .collect();
    let mut waits = waits;
    waits.sort();
    println!("  answered: {answered} of {agents} in {:.1?}", took);
    println!("  peak concurrent claude processes: {peak_claude}");
    println!(
        "  peak host memory used: {peak_mem} MiB ({} MiB above the idle hive's {mem_before} MiB)",
        peak_mem.saturating_sub(mem_before)
    );
    println!(
        "  turns per minute: {:.1}",
        answered as f64 / took.as_secs_f64() * 60.0
    );
    if !waits.is_empty() {
        println!(
            "  wait in line (message to thinking): p50 {:.0} ms, p99 {:.0} ms ({} agents)",
            pct_ms(&waits, 0.5),
            pct_ms(&waits, 0.99),
            waits.len()
        );
    }
    if !status_lat.is_empty() {
        println!(
            "  status during the burst: p50 {:.1} ms, p99 {:.1} ms ({} samples)",
            pct_ms(&status_lat, 0.5),
            pct_ms(&status_lat, 0.99),
            status_lat.len()
        );
    }
}

fn main() {
    let agents = env_or("BURST_AGENTS", 200);
    let limit = env_or("BURST_LIMIT", 16);
    let unlimited = env_or("BURST_UNLIMITED_AGENTS", 100);
    let runtime = std::env::var("BURST_RUNTIME").ok().unwrap_or_else(|| {
        common::runtimes()
            .last()
            .copied()
            .unwrap_or("process")
            .to_owned()
    });
    burst(&runtime, agents, Some(limit));
    if unlimited > 0 {
        burst(&runtime, unlimited, None);
    }
}
