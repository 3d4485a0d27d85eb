//! The one place that spawns claude, and everything that concerns the claude
//! CLI (`docs/claude-cli.md`): its arguments, the MCP config it reads, and
//! what its stream-json output says.
//!
//! A turn is one `claude --print --output-format stream-json` process, in its
//! own process group so a cancel reaches claude and the MCP servers it
//! started. The prompt goes on stdin: `--allowedTools` takes several values
//! and would swallow a prompt that followed it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hive_sh4re::Mailbox;
use hive_sh4re::agent::EffectiveConfig;
use hive_sh4re::tools::{self, Tool};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long claude gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Longest a hive tool call may take: a week-long `ask_operator`, with margin.
pub const MCP_CALL_TIMEOUT_MS: u64 = 605_000_000;

/// What claude prints on stderr when `--resume` names a session it cannot
/// load: a missing transcript, or one it cannot read.
const RESUME_FAILURES: [&str; 2] = [
    "No conversation found with session ID",
    "Failed to resume session",
];

/// The niceness a claude run gets at least: a turn is batch work, and the
/// hive's own processes (hive-c0re answering the operator, the harnesses)
/// must stay ahead of a burst of turns on the CPU. Measured with 200 agents
/// and 15 turns at once on 2 cores: hive-c0re's threads, preempted while
/// holding the store, kept `status` waiting 230 ms at the median.
///
/// Where the kernel groups processes by session for scheduling
/// (`sched_autogroup`, on in Debian's kernels), a process's niceness counts
/// only against its own session: each container is a session, so claude's
/// niceness alone left a busy container level with hive-c0re. So claude runs
/// in a session of its own and that session's group gets the same niceness
/// ([`lower_session_priority`]).
pub const TURN_NICE: i32 = 10;

/// How long the harness keeps trying to set a run's group niceness: the
/// kernel lets an unprivileged process change a group's once per 100 ms,
/// hive-wide, so a burst of turn starts takes turns at it.
const GROUP_NICE_TRIES_FOR: Duration = Duration::from_secs(10);

/// What one claude run needs.
#[derive(Clone)]
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
    /// Extra environment: the agent's config `env`, and the operator's secrets over it.
    pub env: BTreeMap<String, String>,
}

impl std::fmt::Debug for Invocation {
    /// The environment by name only: it holds the operator's secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invocation")
            .field("bin", &self.bin)
            .field("args", &self.args())
            .field("cwd", &self.cwd)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
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
    /// A run with the agent's model and env (its secrets included), in its
    /// home: no session, no MCP servers, no tools until the caller sets them.
    pub fn new(cfg: &EffectiveConfig, home: &Path, prompt: String) -> Self {
        let mut env = cfg.config.env.clone();
        env.extend(cfg.secrets.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        Self {
            bin: claude_bin(),
            model: cfg.model.clone(),
            resume: None,
            mcp_config: None,
            allowed_tools: String::new(),
            system_prompt: None,
            prompt,
            home: home.to_owned(),
            cwd: home.to_owned(),
            env,
        }
    }

    /// The run of a turn: the agent's session, its tools (and the manager's),
    /// its MCP servers (`mcp_config`, see [`write_mcp_config`]) and standing prompt.
    pub fn turn(
        cfg: &EffectiveConfig,
        home: &Path,
        mcp_config: PathBuf,
        manager: bool,
        prompt: String,
    ) -> Self {
        Self {
            resume: cfg.session_id.clone(),
            mcp_config: Some(mcp_config),
            allowed_tools: cfg.config.allowed_tools_arg(manager),
            system_prompt: Some(cfg.config.prompt.clone()),
            ..Self::new(cfg, home, prompt)
        }
    }

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

    /// What the hive itself sets for claude (no secret may take these names:
    /// `hive_sh4re::secret::RESERVED`).
    fn hive_env(&self) -> [(&'static str, std::ffi::OsString); 5] {
        [
            ("HOME", self.home.clone().into_os_string()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("DISABLE_TELEMETRY", "1".into()),
            ("DISABLE_AUTOUPDATER", "1".into()),
            // ask_operator blocks until the operator answers: let it.
            ("MCP_TOOL_TIMEOUT", MCP_CALL_TIMEOUT_MS.to_string().into()),
        ]
    }

    /// claude's environment on top of the harness's: the agent's (its
    /// config's `env` and its secrets), then the hive's own, which an
    /// agent's config does not replace (claude's home, the hive's switches).
    fn env(&self) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> =
            self.env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        env.extend(self.hive_env().map(|(k, v)| (k.into(), v)));
        env
    }

    /// Starts claude; its output lines arrive on `out` until it exits.
    pub async fn spawn(&self, out: mpsc::Sender<Output>) -> std::io::Result<Running> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(self.args())
            .current_dir(&self.cwd)
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // SAFETY: setsid, prctl and setpriority are async-signal-safe and touch
        // only this child: a session (and so process group) of its own, which
        // `stop` signals as one and the kernel schedules as one group; its
        // parent-death signal, so claude (and its MCP servers) dies with a
        // harness killed by SIGKILL; and its niceness (TURN_NICE; a harness
        // already nicer keeps its own, as raising priority is refused).
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::setpriority(libc::PRIO_PROCESS, 0, TURN_NICE);
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
        if let Some(pid) = child.id() {
            tokio::spawn(lower_session_priority(pid));
        }
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

/// Sets the scheduling group of claude's session (`pid` leads it) to
/// [`TURN_NICE`], retrying while the kernel's once-per-100-ms limit refuses;
/// a kernel without session groups, or a run already over, ends it quietly.
async fn lower_session_priority(pid: u32) {
    let path = format!("/proc/{pid}/autogroup");
    let until = tokio::time::Instant::now() + GROUP_NICE_TRIES_FOR;
    // Spread the retries of runs that start together.
    let mut pause = Duration::from_millis(20 + u64::from(pid % 50));
    loop {
        match std::fs::write(&path, TURN_NICE.to_string()) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
            Err(e) => {
                tracing::debug!("claude's session keeps its scheduling group's niceness: {e}");
                return;
            }
        }
        if tokio::time::Instant::now() + pause > until {
            tracing::debug!(
                "claude's session keeps its scheduling group's niceness: the kernel was busy"
            );
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(400));
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

/// True when claude can reach a model: an API key, an OAuth token, credentials
/// in HOME, a base URL, or a credential among the operator's secrets.
pub fn has_credentials(home: &Path, cfg: Option<&EffectiveConfig>) -> bool {
    cfg.is_some_and(|c| c.secrets.has_credential())
        || [
            "ANTHROPIC_API_KEY",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_AUTH_TOKEN",
        ]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
        || home.join(".claude/.credentials.json").is_file()
}

/// What identifies the credentials in HOME now (the file's size and time), so
/// a harness parked on a refused credential sees a new login.
pub fn credentials_stamp(home: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(home.join(".claude/.credentials.json")).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Writes the `--mcp-config` file under `state`: the hive's own server (this
/// binary's `mcp`, on `socket`) plus the servers the agent's config names.
pub fn write_mcp_config(
    state: &Path,
    socket: &Path,
    cfg: &EffectiveConfig,
) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut servers = serde_json::Map::new();
    servers.insert(
        tools::SERVER.into(),
        serde_json::json!({
            "command": exe,
            "args": ["mcp", "--socket", socket],
            "env": { "HIVE_AGENT_SOCK": socket, "RUST_LOG": "warn" },
            // Listed directly rather than behind claude's tool search, and
            // allowed to block for as long as an operator question may last.
            "alwaysLoad": true,
            "timeout": MCP_CALL_TIMEOUT_MS,
        }),
    );
    for (name, s) in &cfg.config.mcp_servers {
        servers.insert(
            name.clone(),
            serde_json::json!({ "command": s.command, "args": s.args, "env": s.env }),
        );
    }
    let dir = state.join(".hive");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("mcp.json");
    let text = serde_json::to_vec_pretty(&serde_json::json!({ "mcpServers": servers }))?;
    std::fs::write(&path, text)?;
    Ok(path)
}

/// What a run's output says, gathered line by line.
#[derive(Debug, Default)]
pub struct Tally {
    /// Tool calls by tool (`send` for `mcp__hyperhive__send`, see [`tools::short_name`]).
    pub tools: BTreeMap<String, u64>,
    /// `send` calls by recipient class.
    pub sent: BTreeMap<String, u64>,
    /// The run failed because the conversation no longer fits the context.
    pub context_full: bool,
    /// claude could not load the session `--resume` named (why, in its words).
    pub resume_failed: Option<String>,
    pub session_id: Option<String>,
    pub is_error: bool,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    /// The model API error claude gave up on: its HTTP status (None when the
    /// API could not be reached) and claude's words.
    pub api_error: Option<(Option<u16>, String)>,
    /// What the `result` line says the session spent in all (see [`Tally::charge`]).
    pub session_totals: Option<(String, SessionTotals)>,
}

/// A session's spending so far, as claude's `result` line gives it: on a
/// resumed session `total_cost_usd` and `modelUsage` count every earlier run
/// of the session too (and `/compact` reports its tokens only there).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionTotals {
    pub usd: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
}

/// The file in claude's HOME (the agent's `/state`) where the harness keeps
/// each recent session's totals, so a run's own spending is the difference,
/// across restarts of the harness too.
pub const SESSION_TOTALS_FILE: &str = ".hive-session-totals.json";

/// Sessions whose totals are kept (the newest).
const SESSION_TOTALS_KEPT: usize = 16;

/// One `api_retry` line: claude retries a model call the API failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRetry {
    /// HTTP status; None when the API could not be reached.
    pub status: Option<u16>,
    /// claude's word for the error (`overloaded`, `server_error`, ...).
    pub error: String,
    pub attempt: u32,
    pub max_retries: u32,
}

impl ApiRetry {
    /// The retry an output line reports, if it is an `api_retry` line.
    pub fn of(o: &Output) -> Option<Self> {
        let Output::Stream(v) = o else { return None };
        if v.get("type")?.as_str()? != "system" || v.get("subtype")?.as_str()? != "api_retry" {
            return None;
        }
        let num = |k: &str| v.get(k).and_then(|n| n.as_u64());
        Some(Self {
            status: num("error_status").and_then(|s| u16::try_from(s).ok()),
            error: v
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("error")
                .to_owned(),
            attempt: num("attempt").unwrap_or(0) as u32,
            max_retries: num("max_retries").unwrap_or(0) as u32,
        })
    }
}

/// Writes the sessions' totals to `path` whole, or says it could not.
fn keep_totals(path: &Path, kept: &[(String, SessionTotals)]) {
    let written = serde_json::to_vec(kept)
        .map_err(std::io::Error::other)
        .and_then(|b| crate::files::write_whole(path, &b));
    if let Err(e) = written {
        tracing::warn!("could not keep the session's spending totals: {e}");
    }
}

impl Tally {
    /// Turns the session's totals the `result` line gave into this run's own
    /// spending: the totals less those the last run of the same session left
    /// (kept in `home`'s [`SESSION_TOTALS_FILE`]), which it then records. A
    /// session not seen before (new, or from before this file) counts whole.
    /// With that file unreadable (corrupt, cut short) what the last run left
    /// is unknown: this run's spending is left unknown too, not charged as
    /// the session's whole total, which could hold the agent over budget.
    pub fn charge(&mut self, home: &Path) {
        let Some((session, now)) = self.session_totals.clone() else {
            return;
        };
        let path = home.join(SESSION_TOTALS_FILE);
        let read: Option<Vec<(String, SessionTotals)>> = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Vec::new()),
            Err(_) => None,
        };
        let Some(mut kept) = read else {
            tracing::warn!(
                "{} is unreadable: this run's spending is unknown (the session's totals are kept afresh)",
                path.display()
            );
            self.cost_usd = None;
            self.input_tokens = None;
            self.output_tokens = None;
            keep_totals(&path, &[(session, now)]);
            return;
        };
        let before = kept
            .iter()
            .find(|(s, _)| *s == session)
            .map(|(_, t)| *t)
            // Totals that shrank are another session's under the same id: count them whole.
            .filter(|t| {
                t.usd <= now.usd && t.tokens_in <= now.tokens_in && t.tokens_out <= now.tokens_out
            })
            .unwrap_or_default();
        self.cost_usd = Some(now.usd - before.usd);
        if now.tokens_in + now.tokens_out > 0 {
            self.input_tokens = Some(now.tokens_in - before.tokens_in);
            self.output_tokens = Some(now.tokens_out - before.tokens_out);
        }
        kept.retain(|(s, _)| *s != session);
        kept.push((session, now));
        let drop = kept.len().saturating_sub(SESSION_TOTALS_KEPT);
        kept.drain(..drop);
        keep_totals(&path, &kept);
    }

    /// Adds a retry's figures to the first attempt's; the outcome is the retry's.
    pub fn merge(&mut self, other: Tally) {
        self.add_spend(&other);
        for (k, v) in other.tools {
            *self.tools.entry(k).or_default() += v;
        }
        for (k, v) in other.sent {
            *self.sent.entry(k).or_default() += v;
        }
        self.session_id = other.session_id.or(self.session_id.take());
        self.is_error = other.is_error;
        self.context_full = other.context_full;
        self.resume_failed = other.resume_failed;
        self.api_error = other.api_error;
    }

    /// Adds another run's tokens and cost to this one's.
    pub fn add_spend(&mut self, other: &Tally) {
        let add = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.input_tokens = add(self.input_tokens, other.input_tokens);
        self.output_tokens = add(self.output_tokens, other.output_tokens);
        self.cost_usd = match (self.cost_usd, other.cost_usd) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
        };
    }

    /// Notes what one output line says.
    pub fn observe(&mut self, o: &Output) {
        let v = match o {
            Output::Stderr(line) => {
                if RESUME_FAILURES.iter().any(|f| line.starts_with(f)) {
                    self.resume_failed = Some(line.clone());
                }
                return;
            }
            Output::Stream(v) => v,
        };
        match v.get("type").and_then(|t| t.as_str()) {
            Some("assistant") => {
                let content = v.pointer("/message/content").and_then(|c| c.as_array());
                for block in content.into_iter().flatten() {
                    if block.get("type").and_then(|t| t.as_str()) != Some("tool_use") {
                        continue;
                    }
                    let name = block
                        .get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("unknown");
                    *self
                        .tools
                        .entry(tools::short_name(name).to_owned())
                        .or_default() += 1;
                    if Tool::from_qualified(name) == Some(Tool::Send) {
                        let to = block
                            .pointer("/input/to")
                            .and_then(|t| t.as_str())
                            .unwrap_or("");
                        let class = Mailbox::parse(to).map(|m| m.class()).unwrap_or("invalid");
                        *self.sent.entry(class.to_owned()).or_default() += 1;
                    }
                }
            }
            Some("result") => {
                self.session_id = v
                    .get("session_id")
                    .and_then(|s| s.as_str())
                    .map(str::to_owned);
                self.is_error = v.get("is_error").and_then(|e| e.as_bool()).unwrap_or(false);
                let text = v
                    .get("result")
                    .and_then(|r| r.as_str())
                    .unwrap_or("")
                    .to_ascii_lowercase();
                self.context_full = self.is_error
                    && (text.contains("prompt is too long") || text.contains("context"));
                if self.is_error
                    && v.get("terminal_reason").and_then(|r| r.as_str()) == Some("api_error")
                {
                    let status = v
                        .get("api_error_status")
                        .and_then(|s| s.as_u64())
                        .and_then(|s| u16::try_from(s).ok());
                    let said = v
                        .get("result")
                        .and_then(|r| r.as_str())
                        .unwrap_or("API error");
                    self.api_error = Some((status, said.chars().take(300).collect()));
                }
                self.input_tokens = v.pointer("/usage/input_tokens").and_then(|n| n.as_u64());
                self.output_tokens = v.pointer("/usage/output_tokens").and_then(|n| n.as_u64());
                self.cost_usd = v.get("total_cost_usd").and_then(|n| n.as_f64());
                let session = v.get("session_id").and_then(|s| s.as_str());
                if let (Some(session), Some(usd)) = (session, self.cost_usd) {
                    let mut totals = SessionTotals {
                        usd,
                        ..SessionTotals::default()
                    };
                    let models = v.get("modelUsage").and_then(|m| m.as_object());
                    for m in models.into_iter().flat_map(|m| m.values()) {
                        let n = |k: &str| m.get(k).and_then(|n| n.as_u64()).unwrap_or(0);
                        totals.tokens_in += n("inputTokens");
                        totals.tokens_out += n("outputTokens");
                    }
                    self.session_totals = Some((session.to_owned(), totals));
                }
            }
            Some("system") => {
                if let Some(s) = v.get("session_id").and_then(|s| s.as_str()) {
                    self.session_id.get_or_insert_with(|| s.to_owned());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_tools_and_keeps_the_session() {
        let mut t = Tally::default();
        t.observe(&Output::Stream(serde_json::json!({"type":"assistant","message":{"content":[
            {"type":"tool_use","name":"mcp__hyperhive__send","input":{"to":"operator"}},{"type":"tool_use","name":"Read","input":{}}]}})));
        t.observe(&Output::Stream(serde_json::json!({"type":"result","session_id":"s1","usage":{"input_tokens":5,"output_tokens":7},"total_cost_usd":0.01})));
        assert_eq!(t.tools.get("send"), Some(&1));
        assert_eq!(t.tools.get("Read"), Some(&1));
        assert_eq!(t.sent.get("operator"), Some(&1));
        assert_eq!(t.session_id.as_deref(), Some("s1"));
        assert_eq!((t.input_tokens, t.output_tokens), (Some(5), Some(7)));
        assert_eq!(t.resume_failed, None);
    }

    #[test]
    fn a_runs_spending_is_what_the_session_added() {
        let dir = tempfile::tempdir().unwrap();
        let result = |usd: f64, tin: u64, usage_in: u64| {
            let mut t = Tally::default();
            t.observe(&Output::Stream(
                serde_json::json!({"type":"result","session_id":"s1",
                "usage":{"input_tokens":usage_in,"output_tokens":0},"total_cost_usd":usd,
                "modelUsage":{"claude-haiku":{"inputTokens":tin,"outputTokens":tin / 100}}}),
            ));
            t.charge(dir.path());
            (t.cost_usd, t.input_tokens, t.output_tokens)
        };
        assert_eq!(
            result(0.25, 1000, 1000),
            (Some(0.25), Some(1000), Some(10)),
            "a new session counts whole"
        );
        assert_eq!(
            result(0.75, 3000, 2000),
            (Some(0.5), Some(2000), Some(20)),
            "a resumed one what it added"
        );
        // `/compact` reports no usage, only the session's totals.
        assert_eq!(result(1.0, 4000, 0), (Some(0.25), Some(1000), Some(10)));
        // The file cut short (a crash, a full disk): this run's spending is
        // unknown, not the session's whole $1.25; the next run's is known again.
        std::fs::write(dir.path().join(SESSION_TOTALS_FILE), b"[[\"s1\",{\"us").unwrap();
        assert_eq!(result(1.25, 5000, 1000), (None, None, None));
        assert_eq!(result(1.5, 6000, 1000), (Some(0.25), Some(1000), Some(10)));
    }

    #[test]
    fn tally_notices_a_session_claude_cannot_resume() {
        for line in [
            "No conversation found with session ID: 488399e4-0000-4000-8000-000000000000",
            "Failed to resume session: EISDIR: illegal operation on a directory, read",
        ] {
            let mut t = Tally::default();
            t.observe(&Output::Stderr(line.into()));
            assert_eq!(t.resume_failed.as_deref(), Some(line));
        }
        let mut t = Tally::default();
        t.observe(&Output::Stderr("some other complaint".into()));
        assert_eq!(t.resume_failed, None);
    }

    #[test]
    fn tally_reads_api_retries_and_the_error_claude_gave_up_on() {
        // As claude 2.1.332 prints them against a server answering 529.
        let retry = Output::Stream(serde_json::json!({"type":"system","subtype":"api_retry",
            "attempt":3,"max_retries":10,"retry_delay_ms":2085,"error_status":529,"error":"overloaded"}));
        assert_eq!(
            ApiRetry::of(&retry),
            Some(ApiRetry {
                status: Some(529),
                error: "overloaded".into(),
                attempt: 3,
                max_retries: 10
            })
        );
        let refused = serde_json::json!({"type":"system","subtype":"api_retry","attempt":1,
            "max_retries":1,"error_status":null,"error":"connection_error"});
        assert_eq!(ApiRetry::of(&Output::Stream(refused)).unwrap().status, None);
        assert_eq!(ApiRetry::of(&Output::Stderr("api_retry".into())), None);
        let mut t = Tally::default();
        t.observe(&Output::Stream(
            serde_json::json!({"type":"result","subtype":"success",
            "is_error":true,"terminal_reason":"api_error","api_error_status":401,
            "result":"Failed to authenticate. API Error: 401 invalid x-api-key"}),
        ));
        assert_eq!(
            t.api_error,
            Some((
                Some(401),
                "Failed to authenticate. API Error: 401 invalid x-api-key".into()
            ))
        );
        assert!(!t.context_full);
    }

    #[test]
    fn no_secret_can_replace_what_the_hive_sets_for_claude() {
        let inv = Invocation::new(&config(), Path::new("/state"), String::new());
        for (k, _) in inv.hive_env() {
            assert!(
                hive_sh4re::secret::SecretName::parse(k).is_err(),
                "{k} is set for claude but a secret may take its name"
            );
        }
    }

    #[test]
    fn secrets_reach_claudes_env_over_the_configs() {
        let mut cfg = config();
        cfg.config
            .env
            .insert("SHARED".into(), "from agent.toml".into());
        cfg.config.env.insert("PLAIN".into(), "kept".into());
        cfg.secrets
            .0
            .insert("SHARED".into(), "from the secret".into());
        let inv = Invocation::new(&cfg, Path::new("/state"), String::new());
        assert_eq!(inv.env["SHARED"], "from the secret");
        assert_eq!(inv.env["PLAIN"], "kept");
        assert!(!format!("{inv:?}").contains("from the secret"));
        assert!(
            has_credentials(Path::new("/nonexistent"), None)
                == has_credentials(Path::new("/nonexistent"), Some(&cfg))
        );
        cfg.secrets
            .0
            .insert("CLAUDE_CODE_OAUTH_TOKEN".into(), "sk-ant-oat01-x".into());
        assert!(has_credentials(Path::new("/nonexistent"), Some(&cfg)));
    }

    fn config() -> EffectiveConfig {
        EffectiveConfig {
            name: "alice".into(),
            is_manager: false,
            model: "haiku".into(),
            config: Default::default(),
            session_id: None,
            turn_timeout_secs: None,
            secrets: Default::default(),
        }
    }

    /// Runs `script` as claude (home and cwd `dir`, `env` the agent's),
    /// and returns the lines it printed, each as JSON or as a string.
    async fn run_stand_in(
        dir: &Path,
        script: &str,
        env: BTreeMap<String, String>,
    ) -> Vec<serde_json::Value> {
        let fake = dir.join("claude");
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let inv = Invocation {
            bin: fake,
            model: "haiku".into(),
            resume: None,
            mcp_config: None,
            allowed_tools: String::new(),
            system_prompt: None,
            prompt: String::new(),
            home: dir.into(),
            cwd: dir.into(),
            env,
        };
        let (tx, mut rx) = mpsc::channel(8);
        let mut run = inv.spawn(tx).await.unwrap();
        assert_eq!(run.wait().await.unwrap(), Some(0));
        let mut lines = vec![];
        while let Some(o) = rx.recv().await {
            if let Output::Stream(v) = o {
                lines.push(v);
            }
        }
        lines
    }

    #[tokio::test]
    async fn claude_runs_nicer_than_the_hive() {
        let dir = tempfile::tempdir().unwrap();
        // Fields 6 and 19 of /proc/self/stat are the session and the niceness;
        // the shell's own are claude's. The session's group is set just after
        // the start, so the script waits for it a while.
        let lines = run_stand_in(
            dir.path(),
            "#!/bin/sh\nset -- $(sed 's/.*) //' /proc/$$/stat)\necho \"${17}\"\n\
             [ \"$4\" = \"$$\" ] && echo leads || echo joined\n\
             i=0; while [ $i -lt 100 ] && ! grep -q ' nice 10$' /proc/$$/autogroup; do sleep 0.05; i=$((i+1)); done\n\
             cat /proc/$$/autogroup 2>/dev/null || echo none\n",
            BTreeMap::new(),
        )
        .await;
        let own = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(
            lines.first(),
            Some(&serde_json::json!(own.max(TURN_NICE))),
            "the harness runs at {own}: {lines:?}"
        );
        assert_eq!(lines.get(1), Some(&serde_json::json!("leads")), "{lines:?}");
        // Where the kernel groups sessions, the group is as nice as the run.
        if std::path::Path::new("/proc/self/autogroup").exists() {
            let group = lines.get(2).and_then(|v| v.as_str()).unwrap_or_default();
            assert!(
                group.ends_with(&format!(" nice {TURN_NICE}")),
                "claude's session group: {group:?}"
            );
        }
    }

    /// An agent's config `env` (the manager writes it) sets what it likes,
    /// but not claude's home or the hive's switches.
    #[tokio::test]
    async fn a_configs_env_does_not_replace_the_hives_own() {
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("HOME", "/tmp/elsewhere"),
            ("MCP_TOOL_TIMEOUT", "1"),
            ("DISABLE_AUTOUPDATER", "0"),
            ("EXTRA", "kept"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let lines = run_stand_in(
            dir.path(),
            "#!/bin/sh\necho \"$HOME|$MCP_TOOL_TIMEOUT|$DISABLE_AUTOUPDATER|$EXTRA\"\n",
            env,
        )
        .await;
        assert_eq!(
            lines,
            [serde_json::json!(format!(
                "{}|{MCP_CALL_TIMEOUT_MS}|1|kept",
                dir.path().display()
            ))]
        );
    }

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
