//! The config repos' heads poll: `cargo bench -p hive-c0re --bench config_heads`.
//!
//! The manager's node reads the head of every agent's config repo every
//! 10 s (`Hive::read_config_heads`). This makes `CONFIG_HEADS_REPOS` repos
//! (default 300) the way hive-c0re makes them and prints how long one pass
//! over all of them takes, one repo after another as the poll reads them,
//! and the CPU it costs (this process and its git children):
//! - git reading every head (`Repo::head`);
//! - the poll's way (`Heads`): its first pass, a pass with nothing moved,
//!   and a pass after a tenth of the repos took a commit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use hive_c0re::config_repo::{self, Heads, Repo};
use hive_c0re::paths::Paths;
use hive_sh4re::AgentName;

/// CPU seconds used so far by this process and its waited-for children.
fn cpu_secs() -> f64 {
    let usage = |who| {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(u.ru_utime) + t(u.ru_stime)
    };
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

/// Times one pass of `read` over every repo: wall ms, CPU ms.
fn pass(repos: &[PathBuf], mut read: impl FnMut(&Repo) -> String) -> (f64, f64) {
    let (start, cpu) = (Instant::now(), cpu_secs());
    for path in repos {
        let repo = Repo::open(path).unwrap().expect("the repo was made");
        assert_eq!(read(&repo).len(), 40, "a full sha");
    }
    (
        start.elapsed().as_secs_f64() * 1e3,
        (cpu_secs() - cpu) * 1e3,
    )
}

fn main() {
    let n: usize = std::env::var("CONFIG_HEADS_REPOS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths {
        state: dir.path().join("state"),
        run: dir.path().join("run"),
    };
    eprintln!("making {n} config repos...");
    let repos: Vec<PathBuf> = (0..n)
        .map(|i| {
            let name = AgentName::parse(&format!("agent-{i}")).unwrap();
            config_repo::create(&paths, &name, "model = \"haiku\"\n", |_| Ok(())).unwrap();
            paths.config_repo(&name)
        })
        .collect();
    let show = |what: &str, (wall, cpu): (f64, f64)| {
        println!(
            "heads poll, {n} repos, {what:<32} {wall:>8.1} ms wall, {cpu:>8.1} ms CPU ({:.3} ms a repo)",
            wall / n as f64
        )
    };
    show("git reads each:", pass(&repos, |r| r.head().unwrap()));
    let heads = Heads::default();
    let cached = |r: &Repo| heads.head(r).unwrap();
    show("first pass (git reads each):", pass(&repos, cached));
    show("nothing moved:", pass(&repos, cached));
    for repo in repos.iter().step_by(10) {
        commit(repo);
    }
    let before = heads.git_reads();
    show("a tenth moved:", pass(&repos, cached));
    println!(
        "heads poll: git read {} of {n} heads in the last pass",
        heads.git_reads() - before
    );
}

/// A commit in `repo`, as the manager makes one.
fn commit(repo: &Path) {
    std::fs::write(repo.join("agent.toml"), "model = \"sonnet\"\n").unwrap();
    let ok = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=m",
            "-c",
            "user.email=m@h",
            "commit",
            "-qam",
            "sonnet",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "git commit in {}", repo.display());
}
