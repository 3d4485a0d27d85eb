//! The turn loop: wait for messages (a long poll on agent.sock, so no
//! polling), run one claude turn, end it with one `turn_end` request.
//!
//! Messages are acknowledged only when their turn ended well; a failed turn
//! hands them back to be retried, a cancelled one hands them back held until
//! a new message starts the next turn. A second connection carries the
//! operator's commands while a turn runs ([`crate::control`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_sh4re::agent::{AgentRequest, EffectiveConfig, EventIn, TurnOutcome, TurnStats};
use hive_sh4re::host::Message;
use hive_sh4re::{AgentState, Mailbox};

use crate::client::{Client, ClientError};
use crate::harness::Harness;
use crate::runner::{Job, Run, Runner, Stream, send_event};
use crate::{claude, compact, control, notes, prompt};

/// Runs turns until hive-c0re goes away (then exits: hive-c0re starts a fresh harness).
pub async fn serve(h: Harness) -> anyhow::Result<()> {
    let mut c = h.connect().await?;
    let runner = Arc::new(Runner::default());
    let control = tokio::spawn(control::follow(h.clone(), runner.clone()));
    let result = tokio::select! {
        r = turn_loop(&h, &mut c, &runner) => r,
        s = stop_signal() => {
            // The container's init sends SIGHUP right after SIGTERM: both mean stop.
            tracing::info!("{s}: stopping");
            runner.stop().await;
            Ok(())
        }
    };
    control.abort();
    result
}

async fn turn_loop(h: &Harness, c: &mut Client, runner: &Runner) -> anyhow::Result<()> {
    let idle = AgentRequest::State {
        state: AgentState::Idle,
        model: None,
    };
    c.call(&idle).await?;
    let poll = poll_interval();
    let mut failures = 0u32;
    loop {
        wait_for_credentials(h, c).await?;
        // Push: the request waits in hive-c0re until there is work. The polling
        // baseline (the original harness's way) asks and sleeps instead.
        let next = c
            .call(&AgentRequest::NextTurn {
                wait_ms: poll.map(|_| 0),
            })
            .await?;
        let (Some(msgs), Some(cfg)) = (next.messages.filter(|m| !m.is_empty()), next.config) else {
            if let Some(p) = poll {
                tokio::time::sleep(p).await;
            }
            continue;
        };
        let job = runner.begin().await;
        let end = run_turn(h, c, &job, &msgs, cfg).await?;
        let outcome = end.outcome;
        let cfg = c.call(&end.request()).await?.config;
        if let Some(cfg) = cfg.filter(|cfg| notes::over_threshold(&h.state, cfg))
            && let Err(e) = notes::compact(c, &job, &h.state, &cfg).await
        {
            tracing::warn!("notes compaction failed: {e:#}");
        }
        drop(job);
        failures = if outcome == TurnOutcome::Release {
            failures + 1
        } else {
            0
        };
        if failures > 0 {
            let backoff = Duration::from_secs(2u64.pow(failures.min(6)));
            tracing::warn!(
                "turn failed; retrying its messages in {}s",
                backoff.as_secs()
            );
            tokio::time::sleep(backoff).await;
        }
    }
}

/// How a turn ended: what its `turn_end` request says.
struct TurnEnd {
    stats: TurnStats,
    outcome: TurnOutcome,
    session: Option<String>,
}

impl TurnEnd {
    fn request(&self) -> AgentRequest {
        AgentRequest::TurnEnd {
            stats: self.stats.clone(),
            outcome: self.outcome,
            session: self.session.clone(),
        }
    }
}

/// Runs claude on the turn's messages: once, and once more in a fresh
/// session when claude cannot resume the stored one, or after compacting
/// when the conversation outgrew the context.
async fn run_turn(
    h: &Harness,
    c: &mut Client,
    job: &Job<'_>,
    msgs: &[Message],
    mut cfg: EffectiveConfig,
) -> anyhow::Result<TurnEnd> {
    let started = Instant::now();
    let prompt = prompt::render(msgs);
    let inv = h.turn_invocation(&cfg, prompt.clone())?;
    let thinking = AgentRequest::State {
        state: AgentState::Thinking,
        model: Some(cfg.model.clone()),
    };
    let turn_start = serde_json::json!({
        "messages": msgs.iter().map(|m| m.id).collect::<Vec<_>>(),
        "model": cfg.model,
        "args": inv.args(),
        "prompt": prompt,
    });
    let start = AgentRequest::Events {
        items: vec![EventIn {
            kind: "turn_start".into(),
            payload: turn_start,
        }],
    };
    let mut run = job
        .run(c, &inv, Stream::Turn, &[thinking.clone(), start])
        .await?;
    let mut retried = false;
    if let Some(error) = run.tally.resume_failed.take()
        && !job.cancelled()
    {
        // A session claude cannot load would fail every turn: start afresh, and say why.
        tracing::warn!("claude cannot resume the session ({error}): starting a fresh one");
        let lost = serde_json::json!({ "session": cfg.session_id, "error": error });
        send_event(c, "session_lost", lost).await?;
        run.tally.session_id = None;
        cfg.session_id = None;
        let inv = h.turn_invocation(&cfg, prompt.clone())?;
        run.retried(job.run(c, &inv, Stream::Turn, &[]).await?);
        retried = true;
    }
    if run.tally.context_full
        && !job.cancelled()
        && let Some(session) = run.tally.session_id.clone().or(cfg.session_id.clone())
    {
        tracing::info!("context full: compacting the session and retrying the turn");
        compact::session(h, c, job, &cfg, &session).await?;
        cfg.session_id = Some(session);
        let inv = h.turn_invocation(&cfg, prompt)?;
        run.retried(job.run(c, &inv, Stream::Turn, &[thinking]).await?);
        retried = true;
    }
    let cancelled = job.cancelled();
    if let Some(e) = run.spawn_error.as_ref().filter(|_| !cancelled) {
        send_event(c, "turn_error", serde_json::json!({ "error": e })).await?;
    }
    let (class, outcome) = match (cancelled, run.ok(), retried) {
        (true, _, _) => ("cancelled", TurnOutcome::Hold),
        (false, true, true) => ("retried", TurnOutcome::Ack),
        (false, true, false) => ("ok", TurnOutcome::Ack),
        (false, false, _) => ("failure", TurnOutcome::Release),
    };
    Ok(TurnEnd {
        stats: stats(h, msgs, &run, class, started.elapsed()),
        outcome,
        session: run.tally.session_id,
    })
}

/// The figures of a turn.
fn stats(h: &Harness, msgs: &[Message], run: &Run, class: &str, took: Duration) -> TurnStats {
    let mut received_by_class = BTreeMap::new();
    for m in msgs {
        let class = Mailbox::parse(&m.from).map(|m| m.class()).unwrap_or("peer");
        *received_by_class.entry(class.to_owned()).or_default() += 1;
    }
    TurnStats {
        duration_ms: took.as_millis() as u64,
        exit_code: run.exit,
        exit_class: class.into(),
        tool_calls: run.tally.tools.clone(),
        messages_received: msgs.len() as u64,
        sent_by_class: run.tally.sent.clone(),
        received_by_class,
        input_tokens: run.tally.input_tokens,
        output_tokens: run.tally.output_tokens,
        cost_usd: run.tally.cost_usd,
        notes_bytes: std::fs::metadata(notes::paths(&h.state).0)
            .ok()
            .map(|m| m.len()),
    }
}

/// Parks with `needs_login` until claude can reach a model, instead of failing
/// turn after turn. Credentials come as a file under `/state` (a login) or as
/// the operator's secret (`ANTHROPIC_API_KEY`, `CLAUDE_CODE_OAUTH_TOKEN`).
async fn wait_for_credentials(h: &Harness, c: &mut Client) -> Result<(), ClientError> {
    let has = async |c: &mut Client| -> Result<bool, ClientError> {
        if claude::has_credentials(&h.state, None) {
            return Ok(true);
        }
        // A config hive-c0re refuses (one that does not parse) holds no secret either.
        let cfg = match c.call(&AgentRequest::Config).await {
            Ok(r) => r.config,
            Err(ClientError::Refused(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(claude::has_credentials(&h.state, cfg.as_ref()))
    };
    if has(c).await? {
        return Ok(());
    }
    tracing::warn!(
        "no claude credentials: parked until the operator logs in or sets a credential secret (needs_login)"
    );
    c.call(&AgentRequest::NeedsLogin { needed: true }).await?;
    while !has(c).await? {
        // Cheap to check, and a login is rare.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    c.call(&AgentRequest::NeedsLogin { needed: false }).await?;
    Ok(())
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
