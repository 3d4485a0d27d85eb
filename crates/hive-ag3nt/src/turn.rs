//! The turn loop: wait for messages (a long poll on agent.sock, so no
//! polling), run one claude turn, forward its output, acknowledge.
//!
//! Messages are acknowledged only when their turn ended; a failed or
//! cancelled turn hands them back. A second connection carries operator
//! commands (cancel, compact) while a turn runs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_sh4re::AgentState;
use hive_sh4re::agent::{AgentRequest, Control, EffectiveConfig, EventIn, TurnStats};
use hive_sh4re::host::Message;
use nix::unistd::Pid;
use tokio::sync::{Mutex, mpsc};

use crate::claude::{self, Invocation, Output};
use crate::client::{Client, ClientError};

/// Tools only the manager gets.
pub const MANAGER_TOOLS: [&str; 5] = [
    "mcp__hyperhive__request_init_config",
    "mcp__hyperhive__request_spawn",
    "mcp__hyperhive__request_apply_commit",
    "mcp__hyperhive__ask_operator",
    "mcp__hyperhive__schedule",
];

/// Longest a hive tool call may take: a week-long `ask_operator`, with margin.
pub const MCP_CALL_TIMEOUT_MS: u64 = 605_000_000;

/// Most events sent in one request.
const EVENT_BATCH: usize = 256;

/// Where the harness lives and who it is.
#[derive(Debug, Clone)]
pub struct Harness {
    pub socket: PathBuf,
    /// The agent's `/state` (claude's HOME).
    pub state: PathBuf,
    pub manager: bool,
}

/// What the control task can reach of the running turn.
#[derive(Default)]
struct Shared {
    /// Process group of the running claude, if any.
    running: std::sync::Mutex<Option<Pid>>,
    /// Set when the operator cancelled the running turn.
    cancelled: std::sync::atomic::AtomicBool,
    /// Held by whoever runs claude (a turn or a compaction), so they never overlap.
    claude: Mutex<()>,
}

impl Harness {
    /// From flags and the environment hive-c0re sets.
    pub fn from_env(socket: PathBuf, manager: bool) -> Self {
        let state = std::env::var_os("HIVE_AGENT_STATE")
            .or_else(|| std::env::var_os("HOME"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/state"));
        Self {
            socket,
            state,
            manager,
        }
    }

    /// Runs turns until hive-c0re goes away (then exits: hive-c0re starts a fresh harness).
    pub async fn serve(self) -> anyhow::Result<()> {
        let mut main = Client::connect(&self.socket).await?;
        let shared = Arc::new(Shared::default());
        let control = tokio::spawn(control_loop(self.clone(), shared.clone()));
        let result = tokio::select! {
            r = self.turn_loop(&mut main, &shared) => r,
            s = stop_signal() => {
                // The container's init sends SIGHUP right after SIGTERM: both mean stop.
                tracing::info!("{s}: stopping");
                let pid = *shared.running.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(pid) = pid {
                    claude::terminate(pid).await;
                }
                Ok(())
            }
        };
        control.abort();
        result
    }

    async fn turn_loop(&self, c: &mut Client, shared: &Arc<Shared>) -> anyhow::Result<()> {
        let mut wake_after: Option<i64> = None;
        let mut failures = 0u32;
        c.call(&AgentRequest::State {
            state: AgentState::Idle,
            model: None,
        })
        .await?;
        let poll = poll_interval();
        loop {
            self.wait_for_credentials(c).await?;
            // Push: the request waits in hive-c0re until there is work. The polling
            // baseline (the original harness's way) asks and sleeps instead.
            let wait_ms = poll.map(|_| 0);
            let resp = c
                .call(&AgentRequest::NextTurn {
                    wait_ms,
                    wake_after,
                })
                .await?;
            let msgs = resp.messages.unwrap_or_default();
            let cfg = resp.config;
            if msgs.is_empty() {
                if let Some(p) = poll {
                    tokio::time::sleep(p).await;
                }
                continue;
            }
            let _guard = shared.claude.lock().await;
            let outcome = self.run_turn(c, shared, &msgs, cfg).await?;
            let ids: Vec<i64> = msgs.iter().map(|m| m.id).collect();
            match outcome {
                TurnOutcome::Done => {
                    c.call(&AgentRequest::Ack { ids }).await?;
                    wake_after = None;
                    failures = 0;
                }
                TurnOutcome::Cancelled => {
                    // Back to the inbox; they come with the next turn, which a new message starts.
                    c.call(&AgentRequest::Release).await?;
                    wake_after = ids.iter().max().copied();
                }
                TurnOutcome::Failed => {
                    c.call(&AgentRequest::Release).await?;
                    failures += 1;
                    let backoff = Duration::from_secs(2u64.pow(failures.min(6)));
                    tracing::warn!(
                        "turn failed; retrying its messages in {}s",
                        backoff.as_secs()
                    );
                    tokio::time::sleep(backoff).await;
                }
            }
            if let Some(cfg) = c.call(&AgentRequest::Config).await?.config
                && crate::notes::over_threshold(&self.state, &cfg)
                && let Err(e) =
                    crate::notes::compact(c, &self.state, &cfg, claude::claude_bin()).await
            {
                tracing::warn!("notes compaction failed: {e}");
            }
            c.call(&AgentRequest::State {
                state: AgentState::Idle,
                model: None,
            })
            .await?;
        }
    }

    /// Parks with `needs_login` until claude can reach a model, instead of failing turn after turn.
    async fn wait_for_credentials(&self, c: &mut Client) -> Result<(), ClientError> {
        if claude::has_credentials(&self.state) {
            return Ok(());
        }
        tracing::warn!("no claude credentials: parked until the operator logs in (needs_login)");
        c.call(&AgentRequest::NeedsLogin { needed: true }).await?;
        while !claude::has_credentials(&self.state) {
            // A file appearing under /state: cheap to check, and a login is rare.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        c.call(&AgentRequest::NeedsLogin { needed: false }).await?;
        Ok(())
    }

    async fn run_turn(
        &self,
        c: &mut Client,
        shared: &Arc<Shared>,
        msgs: &[Message],
        cfg: Option<EffectiveConfig>,
    ) -> anyhow::Result<TurnOutcome> {
        let cfg = match cfg {
            Some(c) => c,
            None => c
                .call(&AgentRequest::Config)
                .await?
                .config
                .ok_or_else(|| anyhow::anyhow!("hive-c0re sent no config"))?,
        };
        let prompt = render_prompt(msgs);
        let inv = self.invocation(&cfg, prompt.clone(), cfg.session_id.clone())?;
        let turn_start = serde_json::json!({
            "messages": msgs.iter().map(|m| m.id).collect::<Vec<_>>(),
            "model": cfg.model,
            "args": inv.args(),
            "prompt": prompt,
        });
        let started = Instant::now();
        shared
            .cancelled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let announce = Announce {
            model: cfg.model.clone(),
            turn_start,
        };
        let (mut exit, mut tally) = self.run_claude(c, shared, &inv, Some(announce)).await?;
        let mut retried = false;
        if tally.context_full && !shared.cancelled.load(std::sync::atomic::Ordering::SeqCst) {
            // The conversation outgrew the context: compact it and try the turn once more.
            tracing::info!("context full: compacting the session and retrying the turn");
            let session = tally.session_id.clone().or(cfg.session_id.clone());
            if let Some(session) = session {
                c.call(&AgentRequest::SetSession {
                    session_id: session,
                })
                .await?;
                self.compact(c).await?;
                c.call(&AgentRequest::State {
                    state: AgentState::Thinking,
                    model: Some(cfg.model.clone()),
                })
                .await?;
                let cfg = c
                    .call(&AgentRequest::Config)
                    .await?
                    .config
                    .unwrap_or(cfg.clone());
                let inv = self.invocation(&cfg, prompt.clone(), cfg.session_id.clone())?;
                let (e, t) = self.run_claude(c, shared, &inv, None).await?;
                tally.merge(t);
                exit = e;
                retried = true;
            }
        }
        let cancelled = shared
            .cancelled
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        if let Some(s) = &tally.session_id {
            c.call(&AgentRequest::SetSession {
                session_id: s.clone(),
            })
            .await?;
        }
        let ok = exit == Some(0) && !tally.is_error;
        let class = match (cancelled, ok, retried) {
            (true, _, _) => "cancelled",
            (false, true, true) => "retried",
            (false, true, false) => "ok",
            (false, false, _) => "failure",
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        let end = serde_json::json!({ "exit_code": exit, "exit_class": class, "duration_ms": duration_ms });
        send_events(
            c,
            vec![EventIn {
                kind: "turn_end".into(),
                payload: end,
            }],
        )
        .await?;
        let mut received_by_class = BTreeMap::new();
        for m in msgs {
            let class = hive_sh4re::Mailbox::parse(&m.from)
                .map(|m| m.class())
                .unwrap_or("peer");
            *received_by_class.entry(class.to_owned()).or_default() += 1;
        }
        let stats = TurnStats {
            duration_ms,
            exit_code: exit,
            exit_class: class.into(),
            tool_calls: tally.tools.clone(),
            messages_received: msgs.len() as u64,
            sent_by_class: tally.sent.clone(),
            received_by_class,
            inbox_depth: 0,
            input_tokens: tally.input_tokens,
            output_tokens: tally.output_tokens,
            cost_usd: tally.cost_usd,
            notes_bytes: std::fs::metadata(crate::notes::paths(&self.state).0)
                .ok()
                .map(|m| m.len()),
        };
        c.call(&AgentRequest::TurnEnd { stats }).await?;
        Ok(if cancelled {
            TurnOutcome::Cancelled
        } else if ok {
            TurnOutcome::Done
        } else {
            TurnOutcome::Failed
        })
    }

    /// Runs one claude process, forwarding its output as events; returns its exit code and tally.
    async fn run_claude(
        &self,
        c: &mut Client,
        shared: &Arc<Shared>,
        inv: &Invocation,
        announce: Option<Announce>,
    ) -> anyhow::Result<(Option<i32>, Tally)> {
        let mut tally = Tally::default();
        let (tx, mut rx) = mpsc::channel::<Output>(1024);
        let spawned = inv.spawn(tx).await;
        if let Ok(r) = &spawned {
            *shared.running.lock().unwrap_or_else(|p| p.into_inner()) = r.pid();
        }
        if let Some(a) = announce {
            // Told once claude is starting, so its start-up overlaps these round trips.
            c.call(&AgentRequest::State {
                state: AgentState::Thinking,
                model: Some(a.model),
            })
            .await?;
            let items = vec![EventIn {
                kind: "turn_start".into(),
                payload: a.turn_start,
            }];
            send_events(c, items).await?;
        }
        let mut run = match spawned {
            Ok(r) => r,
            Err(e) => {
                let payload = serde_json::json!({ "error": e.to_string() });
                send_events(
                    c,
                    vec![EventIn {
                        kind: "turn_error".into(),
                        payload,
                    }],
                )
                .await?;
                tally.is_error = true;
                return Ok((None, tally));
            }
        };
        let mut exit = None;
        let mut exited = false;
        // Forward output until claude exited and its pipes are drained.
        loop {
            tokio::select! {
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    let mut batch = vec![first];
                    while batch.len() < EVENT_BATCH {
                        match rx.try_recv() { Ok(o) => batch.push(o), Err(_) => break }
                    }
                    let events = batch.into_iter().map(|o| tally.observe(o)).collect();
                    send_events(c, events).await?;
                }
                code = run.wait(), if !exited => { exit = code.ok().flatten(); exited = true; }
            }
        }
        if !exited {
            exit = run.wait().await.ok().flatten();
        }
        *shared.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok((exit, tally))
    }

    /// The claude run for this agent's config.
    fn invocation(
        &self,
        cfg: &EffectiveConfig,
        prompt: String,
        resume: Option<String>,
    ) -> anyhow::Result<Invocation> {
        let mcp_config = self.write_mcp_config(cfg)?;
        let manager_tools: &[&str] = if self.manager { &MANAGER_TOOLS } else { &[] };
        Ok(Invocation {
            bin: claude::claude_bin(),
            model: cfg.model.clone(),
            resume,
            mcp_config: Some(mcp_config),
            allowed_tools: cfg.config.allowed_tools_arg(manager_tools),
            system_prompt: Some(cfg.config.prompt.clone()),
            prompt,
            home: self.state.clone(),
            cwd: self.state.clone(),
            env: cfg.config.env.clone(),
        })
    }

    /// Writes the `--mcp-config` file: the hive's own server plus the config's.
    fn write_mcp_config(&self, cfg: &EffectiveConfig) -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe()?;
        let mut servers = serde_json::Map::new();
        servers.insert(
            "hyperhive".into(),
            serde_json::json!({
                "command": exe,
                "args": ["mcp", "--socket", self.socket],
                "env": { "HIVE_AGENT_SOCK": self.socket, "RUST_LOG": "warn" },
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
        let dir = self.state.join(".hive");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("mcp.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&serde_json::json!({ "mcpServers": servers }))?,
        )?;
        Ok(path)
    }

    /// Rewrites the notes file on a fresh connection (the caller holds the claude lock).
    async fn compact_notes(&self) -> anyhow::Result<()> {
        let mut c = Client::connect(&self.socket).await?;
        let cfg = c
            .call(&AgentRequest::Config)
            .await?
            .config
            .ok_or_else(|| anyhow::anyhow!("hive-c0re sent no config"))?;
        let out = crate::notes::compact(&mut c, &self.state, &cfg, claude::claude_bin()).await?;
        tracing::info!(
            before = out.before,
            after = out.after,
            rewritten = out.rewritten,
            "compacted the notes"
        );
        Ok(())
    }

    /// Runs `/compact` on the agent's session.
    async fn compact(&self, c: &mut Client) -> anyhow::Result<()> {
        let cfg = c
            .call(&AgentRequest::Config)
            .await?
            .config
            .ok_or_else(|| anyhow::anyhow!("hive-c0re sent no config"))?;
        let Some(session) = cfg.session_id.clone() else {
            return Ok(());
        };
        c.call(&AgentRequest::State {
            state: AgentState::Compacting,
            model: None,
        })
        .await?;
        let mut inv = self.invocation(&cfg, "/compact".into(), Some(session))?;
        inv.mcp_config = None;
        inv.allowed_tools = String::new();
        let (tx, mut rx) = mpsc::channel::<Output>(1024);
        let mut tally = Tally::default();
        let result = async {
            let mut run = inv.spawn(tx).await?;
            while let Some(o) = rx.recv().await {
                let ev = tally.observe(o);
                send_events(
                    c,
                    vec![EventIn {
                        kind: format!("compact_{}", ev.kind),
                        payload: ev.payload,
                    }],
                )
                .await?;
            }
            let code = run.wait().await?;
            anyhow::Ok(code)
        }
        .await;
        if let Some(s) = &tally.session_id {
            c.call(&AgentRequest::SetSession {
                session_id: s.clone(),
            })
            .await?;
        }
        let payload = match &result {
            Ok(code) => serde_json::json!({ "exit_code": code }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        send_events(
            c,
            vec![EventIn {
                kind: "compact_end".into(),
                payload,
            }],
        )
        .await?;
        c.call(&AgentRequest::State {
            state: AgentState::Idle,
            model: None,
        })
        .await?;
        Ok(())
    }
}

/// What a turn tells hive-c0re as it starts: the model, and the `turn_start` event.
struct Announce {
    model: String,
    turn_start: serde_json::Value,
}

enum TurnOutcome {
    Done,
    Cancelled,
    Failed,
}

/// Figures gathered from a turn's stream-json.
#[derive(Default)]
struct Tally {
    tools: BTreeMap<String, u64>,
    /// `send` calls by recipient class.
    sent: BTreeMap<String, u64>,
    /// The turn failed because the conversation no longer fits the context.
    context_full: bool,
    session_id: Option<String>,
    is_error: bool,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cost_usd: Option<f64>,
}

impl Tally {
    /// Adds a retry's figures to the first attempt's.
    fn merge(&mut self, other: Tally) {
        for (k, v) in other.tools {
            *self.tools.entry(k).or_default() += v;
        }
        for (k, v) in other.sent {
            *self.sent.entry(k).or_default() += v;
        }
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
        self.session_id = other.session_id.or(self.session_id.take());
        self.is_error = other.is_error;
        self.context_full = other.context_full;
    }

    /// Turns a claude output line into an event, noting what the stats need.
    fn observe(&mut self, o: Output) -> EventIn {
        match o {
            Output::Stderr(line) => EventIn {
                kind: "stderr".into(),
                payload: serde_json::Value::String(line),
            },
            Output::Stream(v) => {
                match v.get("type").and_then(|t| t.as_str()) {
                    Some("assistant") => {
                        let content = v.pointer("/message/content").and_then(|c| c.as_array());
                        for block in content.into_iter().flatten() {
                            if block.get("type").and_then(|t| t.as_str()) == Some("tool_use") {
                                let name = block
                                    .get("name")
                                    .and_then(|n| n.as_str())
                                    .unwrap_or("unknown");
                                *self.tools.entry(short_tool(name).to_owned()).or_default() += 1;
                                if name == "mcp__hyperhive__send" {
                                    let to = block
                                        .pointer("/input/to")
                                        .and_then(|t| t.as_str())
                                        .unwrap_or("");
                                    let class = hive_sh4re::Mailbox::parse(to)
                                        .map(|m| m.class())
                                        .unwrap_or("invalid");
                                    *self.sent.entry(class.to_owned()).or_default() += 1;
                                }
                            }
                        }
                    }
                    Some("result") => {
                        self.session_id = v
                            .get("session_id")
                            .and_then(|s| s.as_str())
                            .map(str::to_owned);
                        self.is_error =
                            v.get("is_error").and_then(|e| e.as_bool()).unwrap_or(false);
                        let text = v
                            .get("result")
                            .and_then(|r| r.as_str())
                            .unwrap_or("")
                            .to_ascii_lowercase();
                        self.context_full = self.is_error
                            && (text.contains("prompt is too long") || text.contains("context"));
                        self.input_tokens =
                            v.pointer("/usage/input_tokens").and_then(|n| n.as_u64());
                        self.output_tokens =
                            v.pointer("/usage/output_tokens").and_then(|n| n.as_u64());
                        self.cost_usd = v.get("total_cost_usd").and_then(|n| n.as_f64());
                    }
                    Some("system") => {
                        if let Some(s) = v.get("session_id").and_then(|s| s.as_str()) {
                            self.session_id.get_or_insert_with(|| s.to_owned());
                        }
                    }
                    _ => {}
                }
                EventIn {
                    kind: "stream".into(),
                    payload: v,
                }
            }
        }
    }
}

/// `mcp__hyperhive__send` → `send`; other tools keep their name.
fn short_tool(name: &str) -> &str {
    name.strip_prefix("mcp__hyperhive__").unwrap_or(name)
}

/// The turn's prompt: each message with its sender, as the model (and the scripted model) reads it.
pub fn render_prompt(msgs: &[Message]) -> String {
    let mut p = String::from("New messages in your inbox:\n\n");
    for m in msgs {
        p.push_str(&format!(
            "<message id=\"{}\" from=\"{}\">{}</message>\n",
            m.id,
            m.from,
            escape(&m.body)
        ));
    }
    p.push_str("\nHandle them. Reply with mcp__hyperhive__send where a reply is expected (to the sender's name).");
    p
}

/// Escapes a body so it cannot close or forge a `<message>` tag.
fn escape(body: &str) -> String {
    body.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn send_events(c: &mut Client, items: Vec<EventIn>) -> Result<(), ClientError> {
    if items.is_empty() {
        return Ok(());
    }
    c.call(&AgentRequest::Events { items }).await.map(|_| ())
}

/// Follows operator commands on a second connection for as long as the harness runs.
async fn control_loop(h: Harness, shared: Arc<Shared>) {
    // Losing this connection means hive-c0re is gone; the turn loop notices too and exits.
    let Ok(mut c) = Client::connect(&h.socket).await else {
        return;
    };
    loop {
        let control = match c.call(&AgentRequest::Control { wait_ms: None }).await {
            Ok(r) => r.control,
            Err(ClientError::Gone { .. }) => return,
            Err(e) => {
                tracing::warn!("control request failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match control {
            Some(Control::Cancel) => {
                let pid = *shared.running.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(pid) = pid {
                    shared
                        .cancelled
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::info!("operator cancelled the turn");
                    tokio::spawn(claude::terminate(pid));
                }
            }
            Some(Control::Compact) => {
                let h = h.clone();
                let shared = shared.clone();
                // Waits for a running turn to end; never overlaps one.
                tokio::spawn(async move {
                    let _guard = shared.claude.lock().await;
                    match Client::connect(&h.socket).await {
                        Ok(mut c) => {
                            if let Err(e) = h.compact(&mut c).await {
                                tracing::warn!("compaction failed: {e}");
                            }
                        }
                        Err(e) => tracing::warn!("compaction could not reach hive-c0re: {e}"),
                    }
                });
            }
            Some(Control::CompactNotes) => {
                let h = h.clone();
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _guard = shared.claude.lock().await;
                    if let Err(e) = h.compact_notes().await {
                        tracing::warn!("notes compaction failed: {e}");
                    }
                });
            }
            None => {}
        }
    }
}

/// `HIVE_HARNESS_POLL_MS`: poll the inbox at this interval instead of waiting for a
/// push. Only for measuring against the original harness; production never sets it.
fn poll_interval() -> Option<Duration> {
    let ms: u64 = std::env::var("HIVE_HARNESS_POLL_MS").ok()?.parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Resolves on SIGTERM, SIGINT or SIGHUP, naming it.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_carries_each_sender() {
        let m = |id, from: &str, body: &str| Message {
            id,
            from: from.into(),
            to: "alice".into(),
            body: body.into(),
            sent_at: "2026-01-01T00:00:00Z".into(),
        };
        let p = render_prompt(&[m(1, "operator", "ping"), m(2, "bob", "hi")]);
        assert!(p.contains("<message id=\"1\" from=\"operator\">ping</message>"));
        assert!(p.contains("<message id=\"2\" from=\"bob\">hi</message>"));
    }

    #[test]
    fn tally_counts_tools_and_keeps_the_session() {
        let mut t = Tally::default();
        t.observe(Output::Stream(serde_json::json!({"type":"assistant","message":{"content":[
            {"type":"tool_use","name":"mcp__hyperhive__send","input":{}},{"type":"tool_use","name":"Read","input":{}}]}})));
        t.observe(Output::Stream(serde_json::json!({"type":"result","session_id":"s1","usage":{"input_tokens":5,"output_tokens":7},"total_cost_usd":0.01})));
        assert_eq!(t.tools.get("send"), Some(&1));
        assert_eq!(t.tools.get("Read"), Some(&1));
        assert_eq!(t.session_id.as_deref(), Some("s1"));
        assert_eq!((t.input_tokens, t.output_tokens), (Some(5), Some(7)));
    }
}
