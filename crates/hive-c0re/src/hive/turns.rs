//! A harness's turn as hive-c0re sees it: `next_turn` waits until the agent
//! may work and claims its inbox for the turn; `end_turn` settles it in one
//! step, in a fixed order: the messages first (acknowledged, released or
//! held), so the figures recorded next are the true ones, then the session,
//! the `turn_end` event and the idle state.

use std::time::Duration;

use hive_sh4re::agent::{EffectiveConfig, TurnOutcome, TurnStats};
use hive_sh4re::{AgentName, AgentState};

use crate::broker::Change;
use crate::clock::now_ms;
use crate::error::Result;
use crate::hive::Hive;
use crate::store::MessageRow;

/// Most messages one turn takes from the inbox.
const TURN_BATCH: u32 = 100;

/// A turn that has begun: its messages and the config it runs with.
#[derive(Debug)]
pub struct Turn {
    pub messages: Vec<MessageRow>,
    pub config: EffectiveConfig,
}

/// What a running turn holds, for `end_turn` to settle.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The messages claimed for the turn.
    pub ids: Vec<i64>,
    /// The session the turn was told to resume.
    pub resumed: Option<String>,
}

impl Turn {
    /// What ending this turn settles.
    pub fn claim(&self) -> Claim {
        Claim {
            ids: self.messages.iter().map(|m| m.id).collect(),
            resumed: self.config.session_id.clone(),
        }
    }
}

impl Hive {
    /// The config the agent's next turn runs with.
    pub fn effective_config(&self, name: &AgentName) -> Result<EffectiveConfig> {
        let row = self.agent_row(name)?;
        Ok(EffectiveConfig {
            name: name.to_string(),
            is_manager: name.is_manager(),
            model: Self::effective_model(&row)?,
            config: Self::config_of(&row)?,
            session_id: row.session_id.clone(),
            secrets: self.secrets_for(name)?,
        })
    }

    /// Waits up to `wait` until the agent may take a turn (not paused, not
    /// napping) and a message that is neither claimed nor held waits; then
    /// claims its inbox, held messages included.
    pub async fn next_turn(&self, name: &AgentName, wait: Duration) -> Result<Option<Turn>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut rx = self.broker.watch_inbox(name.as_str());
            let row = self.agent_row(name)?;
            let nap_left = self.nap_left(name.as_str(), row.nap_until, now_ms());
            if row.nap_until.is_some() && nap_left.is_none() {
                self.store.set_nap_until(name.as_str(), None)?;
                self.broker.publish(Change::Agent(name.to_string()));
            }
            if !row.paused && nap_left.is_none() && self.has_unclaimed(name)? {
                // No turn without a readable config: its messages wait for one, unclaimed.
                let config = self.effective_config(name)?;
                let messages = self.claim(name, TURN_BATCH)?;
                if !messages.is_empty() {
                    return Ok(Some(Turn { messages, config }));
                }
            }
            let nap_end = nap_left.map(|l| tokio::time::Instant::now() + l);
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok(None) },
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = async { match nap_end { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
                _ = self.shutdown.cancelled() => return Ok(None),
            }
        }
    }

    /// Ends a turn: settles its messages, records its figures (with the inbox
    /// depth that is left), keeps its session unless the operator started a
    /// fresh one meanwhile, marks the agent idle, and only then records the
    /// `turn_end` event. Returns the config for what the harness does next.
    pub fn end_turn(
        &self,
        name: &AgentName,
        claim: &Claim,
        stats: &TurnStats,
        outcome: TurnOutcome,
        session: Option<&str>,
    ) -> Result<EffectiveConfig> {
        let agent = name.as_str();
        let held = self.settle(name, &claim.ids, outcome)?;
        self.record_turn(name, stats)?;
        if let Some(s) = session {
            self.store
                .replace_session(agent, claim.resumed.as_deref(), Some(s))?;
        }
        let mut end = serde_json::json!({
            "exit_code": stats.exit_code,
            "exit_class": stats.exit_class,
            "duration_ms": stats.duration_ms,
        });
        if !held.is_empty() {
            end["held"] = held.into();
        }
        // The row is settled (idle, last_turn_at) before `turn_end` shows: whoever
        // sees that event reads the whole turn. The state event follows it, as always.
        self.store.set_state(agent, AgentState::Idle, None)?;
        self.add_events(
            name,
            &[
                ("turn_end".to_owned(), end.to_string()),
                crate::hive::state_event(AgentState::Idle, None),
            ],
        )?;
        self.broker.publish(Change::Agent(name.to_string()));
        self.effective_config(name)
    }
}
