//! What the benchmarks share: an in-process hive, and a real daemon started from the built binaries.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_c0re::agent_sock::AgentSockets;
use hive_c0re::hive::{Hive, Settings};
use hive_c0re::paths::Paths;
use hive_c0re::runtime::uid_ranges::DEFAULT_UID_BASE;
use hive_c0re::runtime::{ProcessRuntime, UidRanges};
use hive_c0re::store::{Db, Limits};

/// A hive served in this process (sqlite store on disk, host.sock bound), with no agents running.
pub fn in_process_hive(rt: &tokio::runtime::Runtime, dir: &Path, limits: Limits) -> Arc<Hive> {
    let db = dir.join("state").join("hive.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let store = Db::open_sqlite(&db, limits).unwrap();
    in_process_node(rt, dir, store, "bench")
}

/// A node of a hive served in this process on `store` (host.sock bound,
/// other nodes' wakes followed), with no agents running.
pub fn in_process_node(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    store: Db,
    node: &str,
) -> Arc<Hive> {
    let paths = Paths {
        state: dir.join("state"),
        run: dir.join("run"),
    };
    std::fs::create_dir_all(&paths.state).unwrap();
    rt.block_on(async {
        let settings = Settings {
            bin_dir: PathBuf::from("/nonexistent"),
            claude_bin: None,
            agent_env: vec![],
            dashboard_home: None,
            dashboard_login: None,
            kill_grace: Duration::from_secs(1),
            min_free_space: None,
            state_quota: None,
            turn_timeout: hive_c0re::hive::DEFAULT_TURN_TIMEOUT,
            webhooks: Default::default(),
            max_concurrent_turns: 16,
            budget: None,
            node: hive_sh4re::NodeName::parse(node).expect("a valid node name"),
            heartbeat_every: hive_c0re::hive::nodes::HEARTBEAT,
            lease_ttl: hive_c0re::hive::leases::LEASE_TTL,
            lease_holder: "#bench".to_owned(),
        };
        let (sockets, incoming) = AgentSockets::new(paths.clone());
        let hive = Hive::new(
            store,
            paths.clone(),
            Arc::new(ProcessRuntime::new(
                paths.clone(),
                UidRanges::for_host(&paths.state, DEFAULT_UID_BASE).unwrap(),
            )),
            sockets,
            settings,
        );
        tokio::spawn(hive_c0re::agent_conn::serve(hive.clone(), incoming));
        let listener = hive_c0re::host_sock::bind(&paths.host_sock()).unwrap();
        tokio::spawn(hive_c0re::host_sock::serve(hive.clone(), listener));
        tokio::spawn(hive_c0re::hive::wakes::follow(hive.clone()));
        hive
    })
}

/// Where the built binaries are: `HIVE_BIN_DIR`, else target/release, else target/debug.
pub fn bin_dir() -> PathBuf {
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

/// One request on a fresh host.sock connection.
pub fn call(sock: &Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut out = String::new();
    BufReader::new(s).read_line(&mut out).unwrap();
    serde_json::from_str(&out).unwrap()
}

/// `hive-c0re serve` from the built binaries over `dir`; stopped on drop.
pub struct Daemon {
    child: Child,
    pub sock: PathBuf,
}

impl Daemon {
    /// Starts a daemon with this runtime and extra environment, and waits for its socket.
    pub fn start(dir: &Path, runtime: &str, env: &[(&str, &str)]) -> Self {
        let bins = bin_dir();
        let mut cmd = Command::new(bins.join("hive-c0re"));
        cmd.args([
            "serve",
            "--runtime",
            runtime,
            "--no-manager",
            "--no-dashboard",
        ])
        .env("HIVE_STATE_DIR", dir.join("state"))
        .env("HIVE_RUN_DIR", dir.join("run"))
        .env("HIVE_BIN_DIR", &bins)
        .env("HIVE_CONFIG", "/dev/null")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // A session of its own, as systemd starts the service: where the kernel
        // schedules by session (autogroup), the daemon is not one group with the
        // bench's samplers and model server.
        // SAFETY: setsid is async-signal-safe and touches only the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let sock = dir.join("run/host.sock");
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "hive-c0re did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, sock }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The fields of `/proc/PID/stat` after the parenthesised command (state,
/// parent, ...: field 3 of proc(5) is index 0 here); None when the process is gone.
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: it ends at the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// A process's command name; empty when it is gone.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// CPU clock ticks `pid` used itself, user and system (utime, stime: fields 14-15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid)?
        .get(11..13)?
        .iter()
        .map(|v| v.parse::<u64>().ok())
        .sum()
}

/// The rate of /proc's CPU clock ticks.
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The `q` quantile of sorted durations, in ms.
pub fn pct_ms(sorted: &[Duration], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// The runtimes this host can run: `process` always, `nspawn` as root where
/// systemd-nspawn is installed (else a line says it is skipped).
pub fn runtimes() -> Vec<&'static str> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if root && Path::new("/usr/bin/systemd-nspawn").exists() {
        vec!["process", "nspawn"]
    } else {
        println!("nspawn: skipped (needs root and systemd-nspawn)");
        vec!["process"]
    }
}

/// Where the machine's CPU went over a stretch of a benchmark: this process
/// (the hive and its clients), PostgreSQL's server processes, and the
/// machine's idle and stolen share. Read from /proc, so Linux only.
pub struct CpuSplit {
    at: Instant,
    own: u64,
    /// Each server process's ticks, by pid.
    postgres: std::collections::HashMap<u32, u64>,
    machine: [u64; 3],
}

impl CpuSplit {
    /// The counters now.
    pub fn now() -> Self {
        let own = cpu_ticks(std::process::id()).unwrap_or(0);
        let postgres = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| comm(pid) == "postgres")
            .filter_map(|pid| Some((pid, cpu_ticks(pid)?)))
            .collect();
        // cpu  user nice system idle iowait irq softirq steal ...
        let cpu = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = cpu
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let all = f.iter().take(8).sum();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        let steal = f.get(7).copied().unwrap_or(0);
        Self {
            at: Instant::now(),
            own,
            postgres,
            machine: [all, idle, steal],
        }
    }

    /// What went where since `self`, for `n` operations: one line.
    pub fn since(&self, n: usize) -> String {
        let now = Self::now();
        let hz = clock_ticks_per_sec();
        let per = |t: u64| t as f64 / hz * 1e6 / n as f64;
        let all = now.machine[0].saturating_sub(self.machine[0]).max(1) as f64;
        // A server process that ended meanwhile is not counted: the pool keeps its sessions.
        let spent: Vec<u64> = now
            .postgres
            .iter()
            .map(|(pid, t)| t.saturating_sub(self.postgres.get(pid).copied().unwrap_or(0)))
            .collect();
        let busiest = spent.iter().max().copied().unwrap_or(0) as f64
            / hz
            / self.at.elapsed().as_secs_f64().max(1e-9)
            * 100.0;
        format!(
            "CPU per message: this process {:.0} µs, PostgreSQL {:.0} µs (its busiest process {busiest:.0} % of a core); machine idle {:.0} %, stolen {:.0} %",
            per(now.own.saturating_sub(self.own)),
            per(spent.iter().sum()),
            now.machine[1].saturating_sub(self.machine[1]) as f64 / all * 100.0,
            now.machine[2].saturating_sub(self.machine[2]) as f64 / all * 100.0,
        )
    }
}
