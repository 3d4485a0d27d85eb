//! The one place that spawns claude.
//!
//! A turn is one `claude --print --output-format stream-json` process, in its
//! own process group so a cancel reaches claude and the MCP servers it
//! started. The prompt goes on stdin: `--allowedTools` takes several values
//! and would swallow a prompt that followed it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long claude gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// What one claude run needs.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The claude binary.
    pub bin: PathBuf,
    pub model: String,
    /// `--resume` this session.
    pub resume: Option<String>,
    /// The `--mcp-config` file; None runs without MCP servers.
    pub mcp_config: Option<PathBuf>,
    /// The `--allowedTools` list (comma separated).
    pub allowed_tools: String,
    /// Appended to claude's system prompt.
    pub system_prompt: Option<String>,
    /// What the turn is asked.
    pub prompt: String,
    /// claude's HOME: its credentials and sessions live here (the agent's /state).
    pub home: PathBuf,
    /// Working directory.
    pub cwd: PathBuf,
    /// Extra environment (the agent's config `env`).
    pub env: BTreeMap<String, String>,
}

/// A line claude wrote.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A stdout line: one stream-json object (or raw text if it did not parse).
    Stream(serde_json::Value),
    /// A stderr line.
    Stderr(String),
}

/// A running claude process.
pub struct Running {
    child: Child,
    pgid: Option<Pid>,
}

impl Invocation {
    /// The argument list, exactly as production runs it.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "--print",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(self.model.clone());
        if let Some(s) = &self.resume {
            a.push("--resume".into());
            a.push(s.clone());
        }
        if let Some(f) = &self.mcp_config {
            a.push("--mcp-config".into());
            a.push(f.display().to_string());
            a.push("--strict-mcp-config".into());
        }
        if !self.allowed_tools.is_empty() {
            a.push(format!("--allowedTools={}", self.allowed_tools));
        }
        if let Some(p) = self.system_prompt.as_ref().filter(|p| !p.trim().is_empty()) {
            a.push("--append-system-prompt".into());
            a.push(p.clone());
        }
        a
    }

    /// Starts claude; its output lines arrive on `out` until it exits.
    pub async fn spawn(&self, out: mpsc::Sender<Output>) -> std::io::Result<Running> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(self.args())
            .current_dir(&self.cwd)
            .env("HOME", &self.home)
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            // ask_operator blocks until the operator answers: let it.
            .env(
                "MCP_TOOL_TIMEOUT",
                crate::turn::MCP_CALL_TIMEOUT_MS.to_string(),
            )
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal,
        // so claude (and its MCP servers' group) dies with a harness killed by SIGKILL.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("could not start claude at {}: {e}", self.bin.display()),
            )
        })?;
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        if let Some(mut stdin) = child.stdin.take() {
            let prompt = self.prompt.clone();
            tokio::spawn(async move {
                let _ = stdin.write_all(prompt.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        if let Some(stdout) = child.stdout.take() {
            let out = out.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let v = serde_json::from_str(&l).unwrap_or(serde_json::Value::String(l));
                    if out.send(Output::Stream(v)).await.is_err() {
                        break;
                    }
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if out.send(Output::Stderr(l)).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Running { child, pgid })
    }
}

impl Running {
    /// The process id (and process group) of claude.
    pub fn pid(&self) -> Option<Pid> {
        self.pgid
    }

    /// Waits for claude to exit; returns its exit code (None if killed by a signal).
    pub async fn wait(&mut self) -> std::io::Result<Option<i32>> {
        let st = self.child.wait().await?;
        // Whatever claude left in its group (MCP servers) goes with it.
        if let Some(g) = self.pgid {
            let _ = killpg(g, Signal::SIGKILL);
        }
        Ok(st.code())
    }
}

/// SIGTERM to claude's process group, SIGKILL after the grace unless it is gone.
pub async fn terminate(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + KILL_GRACE;
    while tokio::time::Instant::now() < deadline {
        if killpg(pgid, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
}

/// The claude binary: `HIVE_CLAUDE_BIN`, else `claude` on PATH.
pub fn claude_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("HIVE_CLAUDE_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(b);
    }
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("claude"))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("claude"))
}

/// True when claude can reach a model: an API key, an OAuth token, credentials in HOME, or a base URL.
pub fn has_credentials(home: &Path) -> bool {
    [
        "ANTHROPIC_API_KEY",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
        || home.join(".claude/.credentials.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_tools_is_one_argument_and_the_prompt_is_not_an_argument() {
        let inv = Invocation {
            bin: "claude".into(),
            model: "haiku".into(),
            resume: Some("s-1".into()),
            mcp_config: Some("/state/.hive/mcp.json".into()),
            allowed_tools: "mcp__hyperhive__send,Bash(git *)".into(),
            system_prompt: None,
            prompt: "hello".into(),
            home: "/state".into(),
            cwd: "/state".into(),
            env: BTreeMap::new(),
        };
        let a = inv.args();
        assert_eq!(
            &a[..6],
            [
                "--print",
                "--output-format",
                "stream-json",
                "--verbose",
                "--model",
                "haiku"
            ]
        );
        assert!(a.contains(&"--allowedTools=mcp__hyperhive__send,Bash(git *)".to_owned()));
        assert!(a.windows(2).any(|w| w == ["--resume", "s-1"]));
        assert!(!a.contains(&"hello".to_owned()));
    }
}
