//! `/compact`: claude summarises the agent's session in place (its id stays
//! the same). The operator asks for it, or a turn does when its conversation
//! no longer fits the context.

use hive_sh4re::AgentState;
use hive_sh4re::agent::{AgentRequest, EffectiveConfig};
use hive_sh4re::event::{CompactEnd, Payload};

use crate::claude::Invocation;
use crate::client::{Client, ClientError};
use crate::harness::Harness;
use crate::runner::{Job, Run, Stream, send_event};

/// Compacts `session` with the agent's model and records `compact_end`.
/// What it spent counts against the budget like a turn's: inside a turn the
/// caller adds it to the turn's figures, outside one the runner reports it.
/// The agent is `compacting` meanwhile; the caller says what it is afterwards.
pub async fn session(
    h: &Harness,
    c: &mut Client,
    job: &Job<'_>,
    cfg: &EffectiveConfig,
    session: &str,
) -> Result<Run, ClientError> {
    let mut inv = Invocation::new(cfg, &h.state, "/compact".into());
    inv.resume = Some(session.to_owned());
    let compacting = AgentRequest::State {
        state: AgentState::Compacting,
        model: None,
    };
    let run = job.run(c, &inv, Stream::Compact, &[compacting]).await?;
    let end = CompactEnd {
        exit_code: run.exit,
        cancelled: job.cancelled(),
        error: run.spawn_error.clone(),
    };
    send_event(c, Payload::CompactEnd(end)).await?;
    Ok(run)
}

/// The operator's `/compact`, on a connection of its own.
pub async fn on_request(h: &Harness, job: &Job<'_>) -> anyhow::Result<()> {
    let mut c = h.connect().await?;
    let cfg = c
        .call(&AgentRequest::Config)
        .await?
        .config
        .ok_or_else(|| anyhow::anyhow!("hive-c0re sent no config"))?;
    let Some(id) = cfg.session_id.clone() else {
        return Ok(());
    };
    session(h, &mut c, job, &cfg, &id).await?;
    c.call(&AgentRequest::State {
        state: AgentState::Idle,
        model: None,
    })
    .await?;
    Ok(())
}
