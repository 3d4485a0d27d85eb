//! What an idle agent costs: every process hive-c0re keeps for it (the
//! harness, and for nspawn the container's processes and its network helper),
//! their count and memory (PSS: shared pages split among their users, so the
//! sum is what the agents really take), with hive-c0re's own beside it, for
//! each runtime this host can run.
//!
//! With the kernel's same-page merging on (`/sys/kernel/mm/ksm/run` = 1),
//! hive-c0re's pastas opt in to it; the nspawn figures are then taken once
//! ksmd has seen every page twice and a whole scan merged no more, and say
//! so. Run it once with ksmd off and once with it on to see both.
//!
//! Then the CPU they all take while idle, over `IDLE_CPU_SECS` (default 30):
//! hive-c0re's own (with the git runs it waited for) and each kind of
//! process kept for the agents, in percent of one core.
//!
//! `cargo build --release --workspace --bins && cargo bench -p hive-c0re --bench idle`
//! (`IDLE_AGENTS=N` for another count than 10; `IDLE_RUNTIME=process` or
//! `nspawn` for one runtime only).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod common;

use common::{Daemon, call};

/// Pids of the processes below `pid` (children, their children, ...).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // The parent is field 4 (ppid).
        if let Some(pp) = common::proc_stat(p).and_then(|f| f.get(1)?.parse().ok()) {
            parent_of.push((p, pp));
        }
    }
    let mut out = vec![];
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// A process's proportional set size, in KiB.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU clock ticks `pid` used (user and system), with those of the children it waited for.
fn cpu_ticks_with_children(pid: u32) -> Option<u64> {
    // utime, stime, cutime, cstime: fields 14-17.
    common::proc_stat(pid)?
        .get(11..15)?
        .iter()
        .map(|v| v.parse::<u64>().ok())
        .sum()
}

/// Percent of one core each kind of process took over `window`: hive-c0re
/// (`pid`) and every process below it, by command name.
fn idle_cpu(pid: u32, window: Duration) -> BTreeMap<String, f64> {
    let sample = || -> BTreeMap<u32, (String, u64)> {
        std::iter::once(pid)
            .chain(descendants(pid))
            .filter_map(|p| Some((p, (common::comm(p), cpu_ticks_with_children(p)?))))
            .collect()
    };
    let before = sample();
    std::thread::sleep(window);
    let after = sample();
    let hz = common::clock_ticks_per_sec();
    let mut by_comm = BTreeMap::new();
    for (p, (c, t)) in &after {
        let was = before.get(p).map_or(0, |(_, t)| *t);
        *by_comm.entry(c.clone()).or_default() +=
            (t - was) as f64 / hz / window.as_secs_f64() * 100.0;
    }
    by_comm
}

fn measure(runtime: &str, agents: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        runtime,
        &[("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")],
    );
    for i in 0..agents {
        let r = call(&d.sock, &format!(r#"{{"cmd":"spawn","name":"idle-{i}"}}"#));
        assert_eq!(r["ok"], true, "{r}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = call(&d.sock, r#"{"cmd":"agent_status"}"#);
        let up = s["agent_statuses"]
            .as_array()
            .map(|a| a.iter().filter(|r| r["running"] == true).count())
            .unwrap_or(0);
        if up == agents {
            break;
        }
        assert!(Instant::now() < deadline, "{up} of {agents} agents came up");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let start-up work settle: an idle agent is one that waits for mail.
    std::thread::sleep(Duration::from_secs(5));
    let ksm = std::fs::read_to_string("/sys/kernel/mm/ksm/run").is_ok_and(|s| s.trim() == "1");
    if runtime == "nspawn" && ksm {
        // ksmd merges a page on its second sighting, so nothing falls before two full scans
        // (about 40 s each for 30 agents at its default pace): count scans, not a quiet
        // stretch of seconds, and stop once a whole scan merged no more.
        let total = || descendants(d.pid()).into_iter().map(pss_kib).sum::<u64>();
        let scans = || {
            std::fs::read_to_string("/sys/kernel/mm/ksm/full_scans")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let until = Instant::now() + Duration::from_secs(600);
        let (start, mut last) = (scans(), total());
        let mut seen = start;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_secs(1));
            let scan = scans();
            if scan == seen {
                continue;
            }
            seen = scan;
            let now = total();
            println!(
                "    ksmd merging: {:.1} MiB in all after {} full scans",
                now as f64 / 1024.0,
                scan - start
            );
            if scan - start >= 3 && now + now / 100 >= last {
                break;
            }
            last = now;
        }
    }
    let mut by_comm: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for p in descendants(d.pid()) {
        let e = by_comm.entry(common::comm(p)).or_default();
        e.0 += 1;
        e.1 += pss_kib(p);
    }
    let (n, kib) = by_comm
        .values()
        .fold((0, 0), |(n, k), (cn, ck)| (n + cn, k + ck));
    let per = |v: u64| v as f64 / agents as f64 / 1024.0;
    println!(
        "{runtime}: {agents} idle agents: {:.1} processes and {:.1} MiB (PSS) each; hive-c0re {:.1} MiB; same-page merging {}",
        n as f64 / agents as f64,
        per(kib),
        pss_kib(d.pid()) as f64 / 1024.0,
        if ksm { "on" } else { "off" }
    );
    for (c, (cn, ck)) in &by_comm {
        println!(
            "    {c:<16} {:>5.1} per agent  {:>7.2} MiB per agent",
            *cn as f64 / agents as f64,
            per(*ck)
        );
    }
    let window = Duration::from_secs_f64(
        std::env::var("IDLE_CPU_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30.0),
    );
    let cpu = idle_cpu(d.pid(), window);
    println!(
        "{runtime}: {agents} idle agents, CPU over {:.0} s: {:.2} % of a core in all",
        window.as_secs_f64(),
        cpu.values().sum::<f64>()
    );
    for (c, pct) in &cpu {
        println!("    {c:<16} {pct:>6.2} % of a core");
    }
}

fn main() {
    let agents: usize = std::env::var("IDLE_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let only = std::env::var("IDLE_RUNTIME").ok();
    let runtimes = common::runtimes();
    for rt in runtimes
        .into_iter()
        .filter(|rt| only.as_deref().is_none_or(|o| o == *rt))
    {
        measure(rt, agents);
    }
}
