//! End-to-end tests of both runtimes with a shell script as the harness.
//!
//! The nspawn tests need root and systemd-nspawn; without them they print why and pass.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hive_c0re::agent_sock::AgentSockets;
use hive_c0re::paths::Paths;
use hive_c0re::runtime::{
    ContainerBounds, LaunchSpec, NspawnRuntime, ProcessRuntime, Runtime, RuntimeError, UidRanges,
};
use hive_sh4re::AgentName;

/// The test harness. `@HOST_SOCK@` and `@BOB_SECRET@` are host paths it must not see
/// (in a container); `HIVE_TEST_MODE` picks what it does after writing its report.
const HARNESS: &str = r#"#!/bin/sh
S="$HIVE_AGENT_STATE"
echo "$1" > "$S/arg"
id -u > "$S/uid"
pwd > "$S/pwd"
env | sort > "$S/env"
touch "$S/made-inside"
grep -E ' /(var/)?tmp ' /proc/mounts > "$S/tmpfs" 2>&1
ulimit -Hp > "$S/nproc"
( ulimit -Hp unlimited ) 2> /dev/null && echo raised > "$S/nproc-raised" || echo kept > "$S/nproc-raised"
setpriv --reuid=1000 --regid=1000 --clear-groups true 2> /dev/null && echo changed > "$S/uid-change" || echo refused > "$S/uid-change"
if test -e "$HIVE_AGENT_SOCK"; then echo yes; else echo no; fi > "$S/sock-visible"
if command -v python3 > /dev/null; then
  python3 -c 'import os, socket; socket.socket(socket.AF_UNIX).connect(os.environ["HIVE_AGENT_SOCK"]); print("ok")' > "$S/sock-connect" 2>&1
else
  echo no-python3 > "$S/sock-connect"
fi
if test -e "@HOST_SOCK@"; then echo visible; else echo invisible; fi > "$S/host-sock"
if test -e "@BOB_SECRET@"; then echo visible; else echo invisible; fi > "$S/bob-secret"
if [ "$S" = /state ]; then
  find / \( -path /proc -o -path /sys -o -path /usr -o -path /dev \) -prune -o \( -name host.sock -o -name secret \) -print > "$S/found" 2>/dev/null
fi
if [ -n "$HIVE_CLAUDE_BIN" ]; then "$HIVE_CLAUDE_BIN" > "$S/claude-out" 2>&1; fi
if [ -n "$HIVE_CONFIG_REPOS" ]; then
  ls "$HIVE_CONFIG_REPOS" > "$S/repos"
  if test -e "$HIVE_CONFIG_REPOS/bob/state"; then echo visible; else echo invisible; fi > "$S/bob-state"
  echo edited > "$HIVE_CONFIG_REPOS/alice/edited" 2> "$S/edit-error"
fi
case "$HIVE_TEST_MODE" in
  linger) trap 'echo term > "$S/term"; exit 0' TERM HUP; sleep 1000 & echo $! > "$S/grandchild"; echo ready > "$S/ready"; wait ;;
  stubborn) trap '' TERM HUP; sleep 1000 & echo ready > "$S/ready"; wait ;;
  hog) awk 'BEGIN { s = "x"; while (length(s) < 300000000) s = s s; print "survived" }' > "$S/hog" 2>&1; echo "rc=$?" >> "$S/hog"; echo ready > "$S/ready" ;;
  *) echo ready > "$S/ready" ;;
esac
"#;

/// A throw-away hive: paths, a host.sock, and another agent (bob) with a secret in its state.
struct Hive {
    dir: PathBuf,
    paths: Paths,
    harness: PathBuf,
    claude: PathBuf,
    _host_sock: UnixListener,
}

impl Hive {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hive-rt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let paths = paths_at(&dir);
        fs::create_dir_all(&paths.run).expect("run dir");
        let host_sock = UnixListener::bind(paths.host_sock()).expect("host.sock");
        let bob = AgentName::parse("bob").expect("name");
        fs::create_dir_all(paths.agent_state(&bob)).expect("bob state");
        fs::write(paths.agent_state(&bob).join("secret"), "bob's").expect("secret");
        for agent in ["alice", "bob", "manager"] {
            let repo = paths.config_repo(&AgentName::parse(agent).expect("name"));
            fs::create_dir_all(&repo).expect("repo");
            fs::write(repo.join("agent.toml"), "model = 'x'\n").expect("agent.toml");
        }
        let script = HARNESS
            .replace("@HOST_SOCK@", &paths.host_sock().to_string_lossy())
            .replace(
                "@BOB_SECRET@",
                &paths.agent_state(&bob).join("secret").to_string_lossy(),
            );
        let harness = dir.join("bin/hive-ag3nt");
        write_exe(&harness, &script);
        // npm's layout: .bin/claude -> ../@anthropic-ai/claude-code/bin/claude.exe
        let pkg = dir.join("npm/node_modules/@anthropic-ai/claude-code");
        write_exe(&pkg.join("bin/claude.exe"), "#!/bin/sh\necho claude-ok\n");
        fs::write(pkg.join("package.json"), "{}").expect("package.json");
        let claude = dir.join("npm/node_modules/.bin/claude");
        fs::create_dir_all(claude.parent().expect("parent")).expect(".bin");
        symlink("../@anthropic-ai/claude-code/bin/claude.exe", &claude).expect("symlink");
        Self {
            dir,
            paths,
            harness,
            claude,
            _host_sock: host_sock,
        }
    }

    /// A launch spec for `name`, with its agent.sock bound as the daemon binds
    /// it (the sockets must stay alive), for the agent's uid under a root daemon.
    fn spec(&self, name: &str, uid_base: u32, mode: &str) -> (LaunchSpec, AgentSockets) {
        let name = AgentName::parse(name).expect("name");
        let sockets = listen(&self.paths, &name, uid_base);
        (spec_at(&self.dir, name, uid_base, mode), sockets)
    }

    /// This hive's uid ranges.
    fn uids(&self) -> UidRanges {
        uids_at(&self.dir)
    }

    /// Where the runtime records what it launched for `spec`.
    fn pid_file(&self, spec: &LaunchSpec) -> PathBuf {
        self.paths.agent_pid_file(&spec.name)
    }

    fn read(&self, spec: &LaunchSpec, file: &str) -> String {
        fs::read_to_string(spec.state_dir.join(file))
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }
}

/// The paths of the test hive in `dir`.
fn paths_at(dir: &Path) -> Paths {
    Paths {
        state: dir.join("state"),
        run: dir.join("run"),
    }
}

/// The launch spec of `name` in the test hive in `dir` (its socket not bound).
fn spec_at(dir: &Path, name: AgentName, uid_base: u32, mode: &str) -> LaunchSpec {
    let paths = paths_at(dir);
    LaunchSpec {
        harness_bin: dir.join("bin/hive-ag3nt"),
        claude_bin: Some(dir.join("npm/node_modules/.bin/claude")),
        state_dir: paths.agent_state(&name),
        sock_dir: paths.agent_sock_dir(&name),
        sock: paths.agent_sock(&name),
        config_repos: name.is_manager().then(|| paths.configs_root()),
        rootfs: paths.rootfs(&name),
        env: vec![
            ("ANTHROPIC_API_KEY".into(), "sk-test-secret-value".into()),
            ("HIVE_TEST_MODE".into(), mode.into()),
        ],
        uid_base,
        log: paths.harness_log(&name),
        stop: Default::default(),
        name,
    }
}

/// Binds `name`'s agent.sock as the daemon binds it (keep the sockets alive),
/// for the agent's uid under a root daemon; accepted connections are dropped.
fn listen(paths: &Paths, name: &AgentName, uid_base: u32) -> AgentSockets {
    let (sockets, incoming) = AgentSockets::new(paths.clone());
    let owner = nix::unistd::geteuid().is_root().then_some(uid_base);
    sockets
        .listen(name, owner, &Default::default())
        .expect("agent.sock");
    tokio::spawn(async move {
        let mut incoming = incoming;
        while incoming.recv().await.is_some() {}
    });
    sockets
}

/// The uid ranges of the test hive in `dir`, from a base of the tests' own
/// (real hives start far below).
fn uids_at(dir: &Path) -> UidRanges {
    UidRanges::for_host(&paths_at(dir).state, TEST_UID_BASE).expect("uid base")
}

impl Drop for Hive {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_exe(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    common::write_exe(path, text);
}

async fn wait_for(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// Live processes whose real uid lies in the range starting at `base`.
fn in_range(base: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let zombie = status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'));
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok());
            !zombie && uid.is_some_and(|u| u >= base && u - base < 65536)
        })
        .collect()
}

async fn wait_range_empty(base: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if in_range(base).is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z")
    })
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// The nspawn runtime, or `None` (with the reason printed) where it cannot run.
fn nspawn(hive: &Hive) -> Option<Nspawn> {
    nspawn_bounded(hive, None)
}

/// A test's nspawn runtime, whose egress table goes when it does (no
/// daemon's shutdown removes it here).
struct Nspawn(NspawnRuntime);

impl std::ops::Deref for Nspawn {
    type Target = NspawnRuntime;
    fn deref(&self) -> &NspawnRuntime {
        &self.0
    }
}

impl Drop for Nspawn {
    fn drop(&mut self) {
        self.0.shut_down();
    }
}

/// The nspawn runtime of `hive`, each container bounded to `memory` bytes.
fn nspawn_bounded(hive: &Hive, memory: Option<u64>) -> Option<Nspawn> {
    let bounds = ContainerBounds {
        agent_memory: memory,
        ..ContainerBounds::default()
    };
    match NspawnRuntime::new(hive.paths.clone(), hive.uids(), bounds) {
        Ok(rt) => Some(Nspawn(rt)),
        Err(RuntimeError::Unavailable(why)) => {
            eprintln!("skipped: {why}");
            None
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Where the tests' uid ranges start.
const TEST_UID_BASE: u32 = 65536 * 0x5000;

/// A free uid range for an agent of `rt`, held by it: tests running at
/// once (here and in other checkouts) never share one.
fn base(rt: &dyn Runtime) -> u32 {
    rt.uid_ranges().allocate(&[]).expect("a free uid range")
}

/// The harness connected to its agent.sock (checked only where python3 exists).
fn assert_connected(hive: &Hive, spec: &LaunchSpec) {
    match hive.read(spec, "sock-connect").as_str() {
        "ok" => {}
        "no-python3" => eprintln!("note: no python3 on this host; agent.sock connect not checked"),
        other => panic!("could not connect to agent.sock: {other}"),
    }
}

fn env_has(env: &str, line: &str) -> bool {
    env.lines().any(|l| l == line)
}

#[tokio::test]
async fn process_runtime_runs_the_harness_with_the_hive_env() {
    let hive = Hive::new("proc-env");
    let rt = ProcessRuntime::new(hive.paths.clone(), hive.uids());
    let (spec, _sock) = hive.spec("alice", base(&rt), "");
    let mut launched = rt.launch(&spec).await.expect("launch");
    assert!(
        wait_for(&spec.state_dir.join("ready"), Duration::from_secs(10)).await,
        "harness never got ready"
    );
    assert!(launched.child.wait().await.expect("wait").success());
    assert_eq!(hive.read(&spec, "arg"), "serve");
    assert_eq!(hive.read(&spec, "pwd"), spec.state_dir.to_string_lossy());
    let env = hive.read(&spec, "env");
    let sock = spec.sock_dir.join("agent.sock");
    for line in [
        format!("HIVE_AGENT_SOCK={}", sock.display()),
        format!("HIVE_AGENT_STATE={}", spec.state_dir.display()),
        "HIVE_AGENT_NAME=alice".to_owned(),
        format!("HOME={}", spec.state_dir.display()),
        format!("HIVE_CLAUDE_BIN={}", hive.claude.display()),
        "ANTHROPIC_API_KEY=sk-test-secret-value".to_owned(),
    ] {
        assert!(env_has(&env, &line), "missing {line} in\n{env}");
    }
    assert!(
        !env.contains("HIVE_CONFIG_REPOS"),
        "only the manager gets the config repos"
    );
    assert_eq!(hive.read(&spec, "sock-visible"), "yes");
    assert_connected(&hive, &spec);
    assert_eq!(hive.read(&spec, "claude-out"), "claude-ok");
    rt.forget(&spec).await.expect("forget");
    assert!(!hive.pid_file(&spec).exists());
}

#[tokio::test]
async fn process_runtime_gives_the_manager_the_config_repos() {
    let hive = Hive::new("proc-mgr");
    let rt = ProcessRuntime::new(hive.paths.clone(), hive.uids());
    let (spec, _sock) = hive.spec("manager", base(&rt), "");
    let mut launched = rt.launch(&spec).await.expect("launch");
    assert!(launched.child.wait().await.expect("wait").success());
    let env = hive.read(&spec, "env");
    assert!(env_has(
        &env,
        &format!("HIVE_CONFIG_REPOS={}", hive.paths.configs_root().display())
    ));
    assert_eq!(hive.read(&spec, "repos"), "alice\nbob\nmanager");
}

#[tokio::test]
async fn process_reap_kills_the_whole_group_a_lost_daemon_left() {
    let hive = Hive::new("proc-reap");
    let rt = ProcessRuntime::new(hive.paths.clone(), hive.uids());
    let (spec, _sock) = hive.spec("alice", base(&rt), "linger");
    let launched = rt.launch(&spec).await.expect("launch");
    assert!(wait_for(&spec.state_dir.join("ready"), Duration::from_secs(10)).await);
    let harness = launched.child.id().expect("pid");
    let grandchild: u32 = hive
        .read(&spec, "grandchild")
        .parse()
        .expect("grandchild pid");
    assert!(hive.pid_file(&spec).exists());
    // As if the daemon died: its runtime and what it launched are lost.
    drop((launched, rt));
    // A new daemon's runtime finds the pid file.
    ProcessRuntime::new(hive.paths.clone(), hive.uids())
        .reap_orphans(&spec.name)
        .await
        .expect("reap");
    assert!(!alive(harness), "harness survived");
    assert!(!alive(grandchild), "its child survived");
    assert!(!hive.pid_file(&spec).exists());
}

#[tokio::test]
async fn nspawn_isolates_the_agent() {
    let hive = Hive::new("ns-iso");
    let Some(rt) = nspawn(&hive) else {
        return;
    };
    let base = base(&*rt);
    let (spec, _sock) = hive.spec("alice", base, "");
    let mut launched = rt.launch(&spec).await.expect("launch");
    let cmdline = fs::read(format!(
        "/proc/{}/cmdline",
        launched.child.id().expect("pid")
    ))
    .unwrap_or_default();
    let status = launched.child.wait().await.expect("wait");
    let log = fs::read_to_string(&spec.log).unwrap_or_default();
    assert!(status.success(), "container failed: {status}\n{log}");
    assert_eq!(hive.read(&spec, "ready"), "ready", "log:\n{log}");
    assert_eq!(hive.read(&spec, "arg"), "serve");
    assert_eq!(hive.read(&spec, "uid"), "0", "uid 0 inside");
    assert_eq!(hive.read(&spec, "pwd"), "/state");
    let made = fs::metadata(spec.state_dir.join("made-inside")).expect("made-inside");
    assert_eq!(
        (made.uid(), made.gid()),
        (base, base),
        "a file made inside belongs to the range on the host"
    );
    assert!(made.uid() >= 65536);
    assert_eq!(hive.read(&spec, "sock-visible"), "yes");
    // A fork loop takes its own container's processes, not the host's.
    assert_eq!(hive.read(&spec, "nproc"), "4096");
    assert_eq!(hive.read(&spec, "nproc-raised"), "kept");
    // Nor can it take a count of another uid of its range.
    assert_eq!(hive.read(&spec, "uid-change"), "refused");
    // Both are memory: without a size, /var/tmp took up to half the host's
    // RAM per agent, and tmpfs pages are no process's to kill.
    let tmpfs = hive.read(&spec, "tmpfs");
    for dir in [" /tmp ", " /var/tmp "] {
        let line = tmpfs.lines().find(|l| l.contains(dir)).unwrap_or_default();
        assert!(
            line.starts_with("tmpfs") && line.contains(",size=") && line.contains(",nr_inodes="),
            "{dir}: {tmpfs}"
        );
    }
    assert_connected(&hive, &spec);
    assert_eq!(hive.read(&spec, "host-sock"), "invisible");
    assert_eq!(hive.read(&spec, "bob-secret"), "invisible");
    assert_eq!(
        hive.read(&spec, "found"),
        "",
        "host.sock or a secret is reachable inside"
    );
    assert_eq!(hive.read(&spec, "claude-out"), "claude-ok");
    let env = hive.read(&spec, "env");
    for line in [
        "HIVE_AGENT_SOCK=/run/hive/agent.sock",
        "HIVE_AGENT_STATE=/state",
        "HIVE_AGENT_NAME=alice",
        "HOME=/state",
        "HIVE_CLAUDE_BIN=/opt/claude/bin/claude.exe",
        "ANTHROPIC_API_KEY=sk-test-secret-value",
    ] {
        assert!(env_has(&env, line), "missing {line} in\n{env}");
    }
    assert!(!env.contains("HIVE_CONFIG_REPOS"));
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(
        cmdline.contains("systemd-nspawn") && !cmdline.contains("sk-test-secret-value"),
        "{cmdline}"
    );
    assert_eq!(
        fs::metadata("/usr/bin").expect("usr").uid(),
        0,
        "the host's /usr stays root's"
    );
    rt.forget(&spec).await.expect("forget");
    assert!(!spec.rootfs.exists(), "forget removes the root tree");
    assert!(
        spec.state_dir.join("made-inside").exists(),
        "forget keeps the state"
    );
    assert!(
        hive.harness.exists() && hive.claude.exists(),
        "bound files survive forget"
    );
}

/// An agent that takes more memory than its bound loses the process that
/// took it, inside its own container: the host (the test, the daemon) keeps
/// its memory, and the kill is counted for the operator. Without the bound
/// the 300 MB string is made and the process lives.
#[tokio::test]
async fn nspawn_bounds_an_agents_memory_to_its_own_container() {
    const BOUND: u64 = 128 << 20;
    let hive = Hive::new("ns-mem");
    let Some(rt) = nspawn_bounded(&hive, Some(BOUND)) else {
        return;
    };
    if let Err(why) = rt.memory_bound() {
        eprintln!("skipped: {why}");
        return;
    }
    assert_eq!(rt.memory_bound(), Ok(BOUND));
    let base = base(&*rt);
    let (spec, _sock) = hive.spec("alice", base, "hog");
    let mut launched = rt.launch(&spec).await.expect("launch");
    let pid = launched.child.id().expect("pid");
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let own = format!("/hyperhive/h-alice-{base}");
    assert!(
        cgroups.lines().any(|l| l.ends_with(&own)),
        "nspawn runs in the agent's cgroup {own}: {cgroups}"
    );
    let status = launched.child.wait().await.expect("wait");
    let log = fs::read_to_string(&spec.log).unwrap_or_default();
    assert!(status.success(), "container failed: {status}\n{log}");
    let hog = hive.read(&spec, "hog");
    assert!(
        hog.ends_with("rc=137") && !hog.contains("survived"),
        "the hog was not killed at its bound: {hog:?}\n{log}"
    );
    assert!(
        rt.oom_kills(&spec).is_some_and(|n| n >= 1),
        "the kill is counted: {:?}",
        rt.oom_kills(&spec)
    );
    rt.forget(&spec).await.expect("forget");
    assert_eq!(rt.oom_kills(&spec), None, "forget removes the cgroup");
}

#[tokio::test]
async fn nspawn_manager_edits_config_repos_but_sees_no_state() {
    let hive = Hive::new("ns-mgr");
    let Some(rt) = nspawn(&hive) else {
        return;
    };
    let base = base(&*rt);
    let (spec, _sock) = hive.spec("manager", base, "");
    let mut launched = rt.launch(&spec).await.expect("launch");
    let status = launched.child.wait().await.expect("wait");
    let log = fs::read_to_string(&spec.log).unwrap_or_default();
    assert!(status.success(), "container failed: {status}\n{log}");
    assert!(env_has(
        &hive.read(&spec, "env"),
        "HIVE_CONFIG_REPOS=/hive/agents"
    ));
    assert_eq!(hive.read(&spec, "repos"), "alice\nbob\nmanager");
    assert_eq!(hive.read(&spec, "bob-state"), "invisible");
    assert_eq!(hive.read(&spec, "bob-secret"), "invisible");
    assert_eq!(hive.read(&spec, "found"), "");
    assert_eq!(hive.read(&spec, "edit-error"), "");
    let alice = AgentName::parse("alice").expect("name");
    let edited =
        fs::metadata(hive.paths.config_repo(&alice).join("edited")).expect("edit reached the host");
    assert_eq!(edited.uid(), base);
    rt.forget(&spec).await.expect("forget");
}

#[tokio::test]
async fn nspawn_sigterm_stops_the_harness_gracefully() {
    let hive = Hive::new("ns-term");
    let Some(rt) = nspawn(&hive) else {
        return;
    };
    let base = base(&*rt);
    let (spec, _sock) = hive.spec("alice", base, "linger");
    let mut launched = rt.launch(&spec).await.expect("launch");
    assert!(wait_for(&spec.state_dir.join("ready"), Duration::from_secs(10)).await);
    let t0 = Instant::now();
    signal(
        launched.child.id().expect("pid"),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = tokio::time::timeout(Duration::from_secs(10), launched.child.wait())
        .await
        .expect("stops")
        .expect("wait");
    let took = t0.elapsed();
    eprintln!("SIGTERM to systemd-nspawn: exited {status} after {took:?}");
    assert_eq!(hive.read(&spec, "term"), "term", "the harness saw SIGTERM");
    assert!(
        wait_range_empty(base, Duration::from_secs(2)).await,
        "container processes remain"
    );
    assert!(took < Duration::from_secs(2));
    rt.forget(&spec).await.expect("forget");
}

#[tokio::test]
async fn nspawn_sigkill_takes_the_whole_container() {
    let hive = Hive::new("ns-kill");
    let Some(rt) = nspawn(&hive) else {
        return;
    };
    let base = base(&*rt);
    let (spec, _sock) = hive.spec("alice", base, "stubborn");
    let mut launched = rt.launch(&spec).await.expect("launch");
    assert!(wait_for(&spec.state_dir.join("ready"), Duration::from_secs(10)).await);
    signal(
        launched.child.id().expect("pid"),
        nix::sys::signal::Signal::SIGTERM,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !in_range(base).is_empty(),
        "a harness ignoring SIGTERM keeps running"
    );
    let t0 = Instant::now();
    launched.child.start_kill().expect("kill");
    launched.child.wait().await.expect("wait");
    assert!(
        wait_range_empty(base, Duration::from_secs(2)).await,
        "SIGKILL to nspawn left processes"
    );
    eprintln!(
        "SIGKILL to systemd-nspawn: container gone after {:?}",
        t0.elapsed()
    );
    rt.forget(&spec).await.expect("forget");
}

#[tokio::test]
async fn nspawn_reap_clears_what_a_lost_daemon_left() {
    let hive = Hive::new("ns-reap");
    let Some(rt) = nspawn(&hive) else {
        return;
    };
    let base = base(&*rt);
    let (spec, _sock) = hive.spec("alice", base, "linger");
    let launched = rt.launch(&spec).await.expect("launch");
    assert!(wait_for(&spec.state_dir.join("ready"), Duration::from_secs(10)).await);
    // As if the daemon died: its runtime (and its hold on the range) and what it launched are lost.
    drop((launched, rt));
    let pid_file = hive.paths.agent_sock_dir(&spec.name).with_extension("pid");
    assert!(pid_file.exists());
    assert!(!in_range(base).is_empty());
    let rt = nspawn(&hive).expect("runtime");
    rt.reap_orphans(&spec.name).await.expect("reap");
    assert!(in_range(base).is_empty(), "reap left container processes");
    assert!(!pid_file.exists());
    rt.forget(&spec).await.expect("forget");
}

#[tokio::test]
async fn nspawn_relaunch_replaces_a_running_container() {
    let hive = Hive::new("ns-again");
    let Some(rt) = nspawn(&hive) else {
        return;
    };
    let base = base(&*rt);
    let (spec, _sock) = hive.spec("alice", base, "linger");
    let mut first = rt.launch(&spec).await.expect("launch");
    assert!(wait_for(&spec.state_dir.join("ready"), Duration::from_secs(10)).await);
    fs::remove_file(spec.state_dir.join("ready")).expect("rm ready");
    let mut second = rt.launch(&spec).await.expect("relaunch");
    assert!(
        first.child.wait().await.is_ok(),
        "the first container ended"
    );
    assert!(
        wait_for(&spec.state_dir.join("ready"), Duration::from_secs(10)).await,
        "the second one runs"
    );
    second.child.start_kill().expect("kill");
    second.child.wait().await.expect("wait");
    rt.forget(&spec).await.expect("forget");
    assert!(wait_range_empty(base, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn nspawn_refuses_a_missing_agent_socket() {
    let hive = Hive::new("ns-nosock");
    let Some(rt) = nspawn(&hive) else {
        return;
    };
    let (spec, sock) = hive.spec("alice", base(&*rt), "");
    drop(sock);
    fs::remove_file(spec.sock_dir.join("agent.sock")).expect("rm sock");
    let err = rt.launch(&spec).await.expect_err("no socket");
    assert!(
        err.to_string()
            .contains("bind the agent socket before launching"),
        "{err}"
    );
}

/// Dies with the daemon: a child copy of this test binary plays the daemon and is SIGKILLed.
#[tokio::test]
async fn harnesses_die_with_the_daemon() {
    let hive = Hive::new("die");
    // Held to the end: the stand-in's runtime loads the same egress table,
    // which its kill leaves, and this one's drop removes.
    let ns = nspawn(&hive);
    let nspawn_ok = ns.is_some();
    for runtime in ["process", "nspawn"] {
        if runtime == "nspawn" && !nspawn_ok {
            continue;
        }
        let agent = if runtime == "process" {
            "alice"
        } else {
            "carol"
        };
        let mut daemon = tokio::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "daemon_stand_in",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "HIVE_RT_DAEMON",
                format!("{runtime}:{}:{agent}", hive.dir.display()),
            )
            .kill_on_drop(true)
            .spawn()
            .expect("stand-in daemon");
        // The stand-in, as a daemon does, picks and holds the agent's range and binds its socket.
        let base_file = hive.dir.join(format!("{agent}.base"));
        assert!(
            wait_for(&base_file, Duration::from_secs(20)).await,
            "{runtime}: the stand-in picked no uid range"
        );
        let base: u32 = fs::read_to_string(&base_file)
            .expect("base")
            .parse()
            .expect("a uid");
        let spec = spec_at(
            &hive.dir,
            AgentName::parse(agent).expect("name"),
            base,
            "linger",
        );
        assert!(
            wait_for(&spec.state_dir.join("ready"), Duration::from_secs(20)).await,
            "{runtime}: never ready"
        );
        let harness_pid: Option<u32> = (runtime == "process")
            .then(|| fs::read_to_string(hive.pid_file(&spec)).ok())
            .flatten()
            .and_then(|t| {
                t.split_whitespace()
                    .next()?
                    .strip_prefix("pid=")?
                    .parse()
                    .ok()
            });
        let t0 = Instant::now();
        daemon.start_kill().expect("kill -9 the daemon");
        daemon.wait().await.expect("reaped");
        if runtime == "nspawn" {
            assert!(
                wait_range_empty(base, Duration::from_secs(5)).await,
                "container outlived the daemon"
            );
            // Each thread of the dying daemon re-sends the parent-death SIGTERM as nspawn
            // is handed from thread to thread; a second one makes nspawn SIGKILL the
            // container. So the stop is graceful or abrupt, but always prompt.
            let graceful = hive.read(&spec, "term") == "term";
            eprintln!(
                "nspawn: stop after daemon death was {}",
                if graceful { "graceful" } else { "abrupt" }
            );
        } else {
            let pid = harness_pid.expect("pid file");
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            assert!(!alive(pid), "harness outlived the daemon");
            // Its own children are the next daemon's reap.
            ProcessRuntime::new(hive.paths.clone(), hive.uids())
                .reap_orphans(&spec.name)
                .await
                .expect("reap");
        }
        eprintln!(
            "{runtime}: harness gone {:?} after kill -9 of the daemon",
            t0.elapsed()
        );
    }
}

/// Plays the daemon for `harnesses_die_with_the_daemon`; does nothing when run on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of harnesses_die_with_the_daemon"]
async fn daemon_stand_in() {
    let Ok(job) = std::env::var("HIVE_RT_DAEMON") else {
        return;
    };
    let mut parts = job.splitn(3, ':');
    let (Some(runtime), Some(dir), Some(agent)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let paths = paths_at(&dir);
    let uids = uids_at(&dir);
    let base = uids.allocate(&[]).expect("a free uid range");
    let rt: Box<dyn Runtime> = if runtime == "nspawn" {
        Box::new(
            NspawnRuntime::new(paths.clone(), uids, ContainerBounds::default()).expect("nspawn"),
        )
    } else {
        Box::new(ProcessRuntime::new(paths.clone(), uids))
    };
    let name = AgentName::parse(agent).expect("name");
    let _sock = listen(&paths, &name, base);
    let spec = LaunchSpec {
        claude_bin: None,
        ..spec_at(&dir, name, base, "linger")
    };
    let base_file = dir.join(format!("{agent}.base"));
    fs::write(base_file.with_extension("tmp"), base.to_string()).expect("write base");
    fs::rename(base_file.with_extension("tmp"), &base_file).expect("rename base");
    let _launched = rt.launch(&spec).await.expect("launch");
    // Launch from a blocking-pool thread would be the classic pdeathsig trap; the
    // spawner thread makes it irrelevant. Now wait to be killed.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// Start-up time: launch to a marker written by the payload, over 20 launches.
#[tokio::test]
#[ignore = "benchmark: cargo test --test runtime startup -- --ignored --nocapture"]
async fn startup_time() {
    let hive = Hive::new("bench");
    let Some(rt) = nspawn(&hive) else {
        return;
    };
    let (mut spec, _sock) = hive.spec("alice", base(&*rt), "");
    spec.claude_bin = None;
    let mut times = Vec::new();
    for _ in 0..20 {
        let _ = fs::remove_file(spec.state_dir.join("made-inside"));
        let t0 = Instant::now();
        let mut launched = rt.launch(&spec).await.expect("launch");
        assert!(wait_for(&spec.state_dir.join("made-inside"), Duration::from_secs(10)).await);
        times.push(t0.elapsed());
        launched.child.wait().await.expect("wait");
    }
    times.sort();
    eprintln!(
        "nspawn launch -> payload marker: p50 {:?}, max {:?}, min {:?}",
        times[times.len() / 2],
        times[times.len() - 1],
        times[0]
    );
    rt.forget(&spec).await.expect("forget");
}
