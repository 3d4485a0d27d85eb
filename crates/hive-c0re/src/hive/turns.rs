//! A harness's turn as hive-c0re sees it: `next_turn` waits until the agent
//! may work and claims its inbox for the turn; `end_turn` settles it in one
//! step, in a fixed order: the messages first (acknowledged, released or
//! held), so the figures recorded next are the true ones, then the session,
//! the `turn_end` event and the idle state.

use std::time::Duration;

use hive_sh4re::agent::{EffectiveConfig, ExitClass, TurnOutcome, TurnStats};
use hive_sh4re::event::{Payload, TurnEnd};
use hive_sh4re::{AgentName, AgentState};

use crate::api_health::Gate;
use crate::broker::Change;
use crate::clock::now_ms;
use crate::error::Result;
use crate::hive::{Hive, budget, event_row};
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
            turn_timeout_secs: Some(self.turn_timeout_of(name)?),
            secrets: self.secrets_for(name)?,
        })
    }

    /// The agent's turn time limit in seconds: its config's `turn_timeout`, else the hive's.
    pub fn turn_timeout_of(&self, name: &AgentName) -> Result<u64> {
        let cfg = Self::config_of(&self.agent_row(name)?)?;
        Ok(match cfg.turn_timeout.map(|t| t.seconds()) {
            Some(Ok(s)) => s,
            _ => self.settings.turn_timeout.as_secs(),
        })
    }

    /// Waits up to `wait` until the agent may take a turn (not over a budget,
    /// not paused, not napping, not held by the hive-wide API backoff) and a
    /// message that is neither claimed nor held waits; then claims its inbox,
    /// held messages included.
    pub async fn next_turn(&self, name: &AgentName, wait: Duration) -> Result<Option<Turn>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut rx = self.broker.watch_inbox(name.as_str());
            let mut api = self.api.watch();
            let mut held_until = None;
            let row = self.agent_row(name)?;
            let nap_left = self.nap_left(name.as_str(), row.nap_until, now_ms());
            if row.nap_until.is_some() && nap_left.is_none() {
                self.store.set_nap_until(name.as_str(), None)?;
                self.broker.publish(Change::Agent(name.to_string()));
            }
            // Over a budget: held (the manager, over the hive's, takes only the operator's messages).
            let budget = self.budget_gate(name, &row)?;
            let from = budget.only_from();
            if budget == budget::Gate::Held {
                held_until = Some(tokio::time::Instant::now() + budget::until_tomorrow());
            } else if !row.paused && nap_left.is_none() && self.has_unclaimed(name, from)? {
                match self.api.gate(name.as_str()) {
                    Gate::Go => {
                        // No turn without a readable config: its messages wait for one, unclaimed.
                        let claimed = self
                            .effective_config(name)
                            .and_then(|config| Ok((self.claim(name, from, TURN_BATCH)?, config)));
                        match claimed {
                            Ok((messages, config)) if !messages.is_empty() => {
                                return Ok(Some(Turn { messages, config }));
                            }
                            other => {
                                self.api.unclaimed(name.as_str());
                                other?;
                            }
                        }
                    }
                    Gate::Until(t) => {
                        let left = Duration::from_millis((t - now_ms()).max(0) as u64);
                        held_until = Some(tokio::time::Instant::now() + left);
                    }
                }
            }
            let nap_end = nap_left.map(|l| tokio::time::Instant::now() + l);
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok(None) },
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = async { match nap_end { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
                _ = async { match held_until { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {}
                _ = api.changed() => {}
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
        if outcome == TurnOutcome::Release && stats.exit_class == ExitClass::ApiError {
            // Also when claude did not retry (CLAUDE_CODE_MAX_RETRIES=0): the hive learns of it.
            self.api.failed(agent, stats.api_status, "");
        }
        self.api
            .turn_ended(agent, outcome == TurnOutcome::Ack, stats.api_status);
        self.record_turn(name, stats)?;
        self.spent(
            name,
            budget::spend_of(&[
                ("tokens.in".into(), stats.input_tokens.unwrap_or(0) as f64),
                ("tokens.out".into(), stats.output_tokens.unwrap_or(0) as f64),
                ("cost.usd".into(), stats.cost_usd.unwrap_or(0.0)),
            ]),
        );
        if let Some(s) = session {
            self.store
                .replace_session(agent, claim.resumed.as_deref(), Some(s))?;
        }
        let end = TurnEnd {
            exit_code: stats.exit_code,
            exit_class: stats.exit_class,
            duration_ms: stats.duration_ms,
            held,
            error: stats.error.clone(),
            api_status: stats.api_status,
        };
        // The row is settled (idle, last_turn_at) before `turn_end` shows: whoever
        // sees that event reads the whole turn. The state event follows it, as always.
        self.store.set_state(agent, AgentState::Idle, None)?;
        self.add_events(
            name,
            &[
                event_row(&Payload::TurnEnd(end)),
                crate::hive::state_event(AgentState::Idle, None),
            ],
        )?;
        self.broker.publish(Change::Agent(name.to_string()));
        self.effective_config(name)
    }
}
