//! The turn loop: wait for messages (a long poll on agent.sock, so no
//! polling), run one claude turn, end it with one `turn_end` request.
//!
//! Messages are acknowledged only when their turn ended well; a failed turn
//! hands them back to be retried after a backoff the agent's state shows
//! (`waiting`), a cancelled one hands them back held until a new message
//! starts the next turn. A turn that runs over its time limit is stopped and
//! fails. A credential the model API refuses parks the loop (`needs_login`)
//! until the credentials change. A second connection carries the operator's
//! commands while a turn runs ([`crate::control`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_sh4re::agent::{AgentRequest, EffectiveConfig, ExitClass, TurnOutcome, TurnStats};
use hive_sh4re::event::{Payload, SessionLost, TurnError, TurnStart};
use hive_sh4re::host::Message;
use hive_sh4re::{AgentState, Mailbox};

use crate::client::{Client, ClientError};
use crate::harness::Harness;
use crate::runner::{Job, Run, Runner, Stream, send_event};
use crate::{claude, compact, control, notes, prompt};

/// Runs turns until hive-c0re goes away (then exits: hive-c0re starts a fresh harness).
pub async fn serve(h: Harness) -> anyhow::Result<()> {
    // One line per start whatever RUST_LOG says: a crash report quotes the
    // log's tail, and a harness killed by a signal writes nothing before it goes.
    say!("harness serving (pid {})", std::process::id());
    match crate::notes::recover(&h.state) {
        Ok(true) => tracing::warn!(
            "a notes compaction did not finish (the harness died in it): put the old notes back"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!("could not put back the notes of a compaction that did not finish: {e}")
        }
    }
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
    if claude::has_credentials(&h.state, None) {
        // A fresh harness tries its credentials again (a restart after a new key).
        c.call(&AgentRequest::NeedsLogin {
            needed: false,
            reason: None,
        })
        .await?;
    }
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
        job.in_turn(true);
        let end = run_turn(h, c, &job, &msgs, cfg).await?;
        let outcome = end.outcome;
        let cfg = c.call(&end.request()).await?.config;
        // The turn's slot went back with turn_end: notes compaction waits for one of its own.
        job.in_turn(false);
        if let Some(reason) = &end.login {
            drop(job);
            park_for_login(h, c, reason).await?;
            failures = 0;
            continue;
        }
        if let Some(cfg) = cfg.filter(|cfg| notes::over_threshold(&h.state, cfg))
            && let Err(e) = notes::compact(c, &job, &h.state, &cfg).await
        {
            tracing::warn!("notes compaction failed: {e:#}");
        }
        drop(job);
        failures = match (outcome, end.held_by_hive) {
            (TurnOutcome::Release, false) => failures + 1,
            // The hive holds the next turn itself, behind its probe.
            (TurnOutcome::Release, true) => failures,
            _ => 0,
        };
        if failures > 0 && !end.held_by_hive {
            let backoff = Duration::from_secs(2u64.pow(failures.min(6)));
            let reason = end
                .stats
                .error
                .clone()
                .unwrap_or_else(|| "the turn failed".into());
            tracing::warn!(
                "turn failed ({reason}); retrying its messages in {}s",
                backoff.as_secs()
            );
            c.call(&AgentRequest::Backoff {
                retry_in_ms: backoff.as_millis() as u64,
                reason,
            })
            .await?;
            tokio::time::sleep(backoff).await;
            c.call(&idle).await?;
        }
    }
}

/// How a turn ended: what its `turn_end` request says.
struct TurnEnd {
    stats: TurnStats,
    outcome: TurnOutcome,
    session: Option<String>,
    /// The model API refused the credentials (its words): park until a new login.
    login: Option<String>,
    /// The hive told the turn to give up while it backs off from the API.
    held_by_hive: bool,
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
    let turn_start = TurnStart {
        messages: msgs.iter().map(|m| m.id).collect(),
        model: cfg.model.clone(),
        args: inv.args(),
        prompt: prompt.clone(),
    };
    let start = AgentRequest::Events {
        items: vec![Payload::TurnStart(turn_start).into()],
    };
    if let Some(secs) = cfg.turn_timeout_secs {
        job.limit(Duration::from_secs(secs));
    }
    let mut run = job
        .run(c, &inv, Stream::Turn, &[thinking.clone(), start])
        .await?;
    let mut retried = false;
    if let Some(error) = run.tally.resume_failed.take()
        && !job.ended()
    {
        // A session claude cannot load would fail every turn: start afresh, and say why.
        tracing::warn!("claude cannot resume the session ({error}): starting a fresh one");
        let lost = SessionLost {
            session: cfg.session_id.clone(),
            error,
        };
        send_event(c, Payload::SessionLost(lost)).await?;
        run.tally.session_id = None;
        cfg.session_id = None;
        let inv = h.turn_invocation(&cfg, prompt.clone())?;
        run.retried(job.run(c, &inv, Stream::Turn, &[]).await?);
        retried = true;
    }
    if run.tally.context_full
        && !job.ended()
        && let Some(session) = run.tally.session_id.clone().or(cfg.session_id.clone())
    {
        tracing::info!("context full: compacting the session and retrying the turn");
        // The compaction is the turn's: its spend goes with the turn's end.
        let compacted = compact::session(h, c, job, &cfg, &session).await?;
        run.tally.add_spend(&compacted.tally);
        cfg.session_id = Some(session);
        let inv = h.turn_invocation(&cfg, prompt)?;
        run.retried(job.run(c, &inv, Stream::Turn, &[thinking]).await?);
        retried = true;
    }
    let cancelled = job.cancelled();
    let gave_up = job.gave_up();
    // What ended the turn, when claude did not finish it: the API's word first.
    let api = gave_up.clone().or(run.tally.api_error.clone());
    let login = api
        .as_ref()
        .filter(|(status, _)| matches!(status, Some(401 | 403)))
        .map(|(status, said)| format!("API {} {said}", status.unwrap_or(0)));
    let timeout = job.timed_out().then(|| {
        format!(
            "the turn ran over its time limit of {}s (turn_timeout) and was stopped",
            cfg.turn_timeout_secs.unwrap_or(0)
        )
    });
    let error = if cancelled {
        None
    } else {
        timeout
            .or(login.clone())
            .or(api.as_ref().map(|(status, said)| match status {
                Some(s) if !said.contains(&s.to_string()) => format!("API {s} {said}"),
                _ => said.clone(),
            }))
            .or(run.spawn_error.clone())
    };
    if let Some(e) = &error {
        let status = api.as_ref().and_then(|(s, _)| *s);
        let error = TurnError {
            error: e.clone(),
            api_status: status,
        };
        send_event(c, Payload::TurnError(error)).await?;
    }
    let (class, outcome) = match (cancelled, run.ok(), retried) {
        (true, _, _) => (ExitClass::Cancelled, TurnOutcome::Hold),
        _ if job.timed_out() => (ExitClass::Timeout, TurnOutcome::Release),
        _ if api.is_some() => (ExitClass::ApiError, TurnOutcome::Release),
        (false, true, true) => (ExitClass::Retried, TurnOutcome::Ack),
        (false, true, false) => (ExitClass::Ok, TurnOutcome::Ack),
        (false, false, _) => (ExitClass::Failure, TurnOutcome::Release),
    };
    let mut stats = stats(h, msgs, &run, class, started.elapsed());
    stats.error = error;
    stats.api_status = api.as_ref().and_then(|(s, _)| *s);
    Ok(TurnEnd {
        stats,
        outcome,
        session: run.tally.session_id,
        held_by_hive: gave_up.is_some() && login.is_none() && !cancelled,
        login: login.filter(|_| !cancelled),
    })
}

/// The figures of a turn.
fn stats(h: &Harness, msgs: &[Message], run: &Run, class: ExitClass, took: Duration) -> TurnStats {
    let mut received_by_class = BTreeMap::new();
    for m in msgs {
        let class = Mailbox::parse(&m.from).map(|m| m.class()).unwrap_or("peer");
        *received_by_class.entry(class.to_owned()).or_default() += 1;
    }
    TurnStats {
        duration_ms: took.as_millis() as u64,
        exit_code: run.exit,
        exit_class: class,
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
        error: None,
        api_status: None,
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
    c.call(&AgentRequest::NeedsLogin {
        needed: true,
        reason: None,
    })
    .await?;
    while !has(c).await? {
        // Cheap to check, and a login is rare.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    c.call(&AgentRequest::NeedsLogin {
        needed: false,
        reason: None,
    })
    .await?;
    Ok(())
}

/// What identifies the agent's credentials now: the login in HOME (the
/// file's size and time) and the credential secrets its turns get.
async fn login_stamp(
    h: &Harness,
    c: &mut Client,
) -> Result<(Option<(u64, std::time::SystemTime)>, Vec<String>), ClientError> {
    // A config hive-c0re refuses (one that does not parse) holds no secret either.
    let cfg = match c.call(&AgentRequest::Config).await {
        Ok(r) => r.config,
        Err(ClientError::Refused(_)) => None,
        Err(e) => return Err(e),
    };
    let secrets = cfg
        .map(|cfg| {
            hive_sh4re::secret::CREDENTIALS
                .iter()
                .filter_map(|k| cfg.secrets.0.get(*k).cloned())
                .collect()
        })
        .unwrap_or_default();
    Ok((claude::credentials_stamp(&h.state), secrets))
}

/// How often a parked harness looks for new credentials.
const LOGIN_POLL: Duration = Duration::from_secs(1);

/// The model API refused the agent's credentials: parks with `needs_login`
/// (and the API's reason) until they change, instead of failing turn after
/// turn. The turn's messages are back in the inbox, kept for then.
async fn park_for_login(h: &Harness, c: &mut Client, reason: &str) -> Result<(), ClientError> {
    tracing::warn!("the model API refused the credentials ({reason}): parked until they change");
    let stamp = login_stamp(h, c).await?;
    c.call(&AgentRequest::NeedsLogin {
        needed: true,
        reason: Some(reason.to_owned()),
    })
    .await?;
    while login_stamp(h, c).await? == stamp {
        tokio::time::sleep(LOGIN_POLL).await;
    }
    tracing::info!("the credentials changed: trying again");
    c.call(&AgentRequest::NeedsLogin {
        needed: false,
        reason: None,
    })
    .await?;
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
