//! A real hive for end-to-end tests: `hive-c0re serve` in a temp dir, driven
//! through its CLI and raw host.sock lines, the way an operator does.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hive-c0re")).parent().unwrap().to_path_buf()
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The claude CLI installed by the test set-up, if any (`HIVE_CLAUDE_BIN` or the project-local install).
pub fn claude_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("HIVE_CLAUDE_BIN") {
        return Some(PathBuf::from(b));
    }
    let local = repo_root().join("tools/claude/node_modules/.bin/claude");
    local.exists().then_some(local)
}

/// Options of a test hive.
#[derive(Clone)]
pub struct Opts {
    pub runtime: &'static str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Self { runtime: "process", args: vec!["--no-manager".into(), "--no-dashboard".into()], env: vec![] }
    }
}

/// A running `hive-c0re serve` over its own state and run dirs.
pub struct TestHive {
    pub dir: tempfile::TempDir,
    pub opts: Opts,
    pub child: Option<Child>,
}

impl TestHive {
    /// Starts a hive with the process runtime, no manager, no dashboard.
    pub fn start() -> Self {
        Self::start_with(Opts::default())
    }

    /// Starts a hive with these options.
    pub fn start_with(opts: Opts) -> Self {
        let dir = tempfile::Builder::new().prefix("hive-test-").tempdir().unwrap();
        let mut h = Self { dir, opts, child: None };
        h.serve();
        h
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn sock(&self) -> PathBuf {
        self.run_dir().join("host.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    /// A `hive-c0re` command with this hive's environment.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hive-c0re"));
        c.env("HIVE_STATE_DIR", self.state_dir())
            .env("HIVE_RUN_DIR", self.run_dir())
            .env("HIVE_BIN_DIR", bin_dir())
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
            .env_remove("ANTHROPIC_BASE_URL");
        for (k, v) in &self.opts.env {
            c.env(k, v);
        }
        c
    }

    /// (Re)starts the daemon and waits until it answers.
    pub fn serve(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = self
            .command()
            .args(["serve", "--runtime", self.opts.runtime])
            .args(&self.opts.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("hive-c0re serve starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut s) = UnixStream::connect(self.sock()) {
                if s.write_all(b"{\"cmd\":\"list\"}\n").is_ok() {
                    let mut line = String::new();
                    if BufReader::new(&s).read_line(&mut line).is_ok() && line.contains("\"ok\":true") {
                        return;
                    }
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("hive-c0re serve exited with {st}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "hive-c0re did not come up:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// kill -9 the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon and wait for it.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
        c.wait().unwrap()
    }

    /// Runs a CLI verb and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a CLI verb that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "hive-c0re {args:?} failed ({}): {}{}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Sends one raw line on a fresh connection and returns the answer line.
    pub fn raw(&self, line: &str) -> String {
        let mut c = Conn::open(&self.sock());
        c.send(line);
        c.recv()
    }

    /// One JSON request, parsed answer.
    pub fn request(&self, v: serde_json::Value) -> serde_json::Value {
        serde_json::from_str(&self.raw(&v.to_string())).unwrap()
    }

    /// Waits until `f` holds, polling the status; panics with the log after `secs`.
    pub fn wait_for(&self, what: &str, secs: u64, mut f: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n--- daemon log ---\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The status row of an agent.
    pub fn row(&self, name: &str) -> Option<serde_json::Value> {
        let v = self.request(serde_json::json!({"cmd": "agent_status"}));
        v["agent_statuses"].as_array()?.iter().find(|r| r["name"] == name).cloned()
    }
}

impl Drop for TestHive {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_ref() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.child.as_mut().unwrap().try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.as_mut().unwrap().kill();
        }
    }
}

/// A raw host.sock connection.
pub struct Conn {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    pub fn open(path: &Path) -> Self {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Self { stream, reader }
    }

    pub fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn recv(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    pub fn recv_json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.recv()).unwrap()
    }
}
