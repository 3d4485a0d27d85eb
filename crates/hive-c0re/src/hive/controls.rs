//! Steering an agent: the operator's model override, cancelling a turn or a
//! nap, compacting its session or notes, a fresh session; and the commands
//! that reach a running harness on its `control` connection.
//!
//! Each operator action is noted in the agent's history as an `operator`
//! event (`session_reset` for a fresh session), so its terminal shows who did
//! what between turns: whichever surface asked, host.sock or the dashboard,
//! since both call these methods.

use std::time::Duration;

use hive_sh4re::agent::Control;
use hive_sh4re::config::AgentConfig;
use hive_sh4re::event::{Operator, Payload, SessionReset};
use hive_sh4re::host::ModelInfo;
use hive_sh4re::{AgentName, AgentState, Mailbox};

use super::Hive;
use super::steer::Steer;
use crate::broker::Change;
use crate::clock::now_ms;
use crate::error::{Error, Result};
use hive_sh4re::limits::{NAP_MAX_SECONDS, NAP_MIN_SECONDS};

impl Hive {
    /// Sets the operator's model override, or clears it (None, "" or "default"); returns the model info.
    ///
    /// The dashboard's `{"model": null}` comes here as None and clears; host.sock's
    /// `set_model` without a model only reads and never calls this.
    pub async fn set_model(&self, name: &AgentName, model: Option<&str>) -> Result<ModelInfo> {
        self.agent_row(name).await?;
        let model = model
            .map(str::trim)
            .filter(|m| !m.is_empty() && *m != "default");
        if let Some(m) = model {
            let probe = AgentConfig {
                model: m.to_owned(),
                ..AgentConfig::default()
            };
            probe.validate().map_err(|e| {
                Error::refused(
                    e.to_string()
                        .replace("agent.toml is invalid: field `model`: ", ""),
                )
            })?;
        }
        self.store.set_model_override(name.as_str(), model).await?;
        self.broker.publish(Change::Agent(name.to_string()));
        // A pending approval's warnings say whether the override masks its model change.
        self.broker.publish(Change::Approvals);
        let shown = model.unwrap_or("default");
        self.note_operator(name, Operator::command(format!("/model {shown}")))
            .await;
        self.model_info(name).await
    }

    /// Cancels the agent's running turn, its nap, or its place in line for a
    /// turn slot; refused when it has none of them. A queued agent leaves the
    /// line without a turn: its messages stay, held, undelivered, for a new
    /// message to start the next turn (as a cancelled turn's do).
    pub async fn cancel(&self, name: &AgentName) -> Result<()> {
        let Some(row) = self.steer_here(name, Steer::Cancel).await? else {
            return Ok(());
        };
        let napping = row.nap_until.is_some();
        let in_turn = row.state == AgentState::Thinking || row.state == AgentState::Compacting;
        let queued = self.admission.queued(name.as_str()).is_some();
        if !napping && !in_turn && !queued {
            return Err(Error::refused(format!(
                "{name} has no turn running and is not napping or queued ({}): there is nothing to cancel",
                row.state.as_str()
            )));
        }
        if queued {
            self.store.hold_unclaimed(name.as_str()).await?;
            // Wakes its wait in line, which finds nothing to do; a compaction waiting
            // for a slot has a job the harness cancels.
            self.broker.poke(name.as_str());
            self.broker.push_control(name.as_str(), Control::Cancel);
            self.broker.publish(Change::Agent(name.to_string()));
        }
        if napping {
            self.store.set_nap_until(name.as_str(), None).await?;
            self.broker.poke(name.as_str());
            self.broker.publish(Change::Agent(name.to_string()));
        }
        if in_turn {
            self.require_running(name)?;
            self.broker.push_control(name.as_str(), Control::Cancel);
        }
        self.note_operator(name, Operator::command("/cancel")).await;
        Ok(())
    }

    /// Keeps the agent from starting a turn for `seconds`; messages wait meanwhile.
    pub async fn nap(&self, name: &AgentName, seconds: u64) -> Result<()> {
        if !(NAP_MIN_SECONDS..=NAP_MAX_SECONDS).contains(&seconds) {
            return Err(Error::refused(format!(
                "a nap lasts {NAP_MIN_SECONDS} to {NAP_MAX_SECONDS} seconds; {seconds} is out of range"
            )));
        }
        if !self.nap_rate.allow(name.as_str()) {
            return Err(Error::refused(format!(
                "{name} took {} naps this minute, the most hive-c0re takes: nap once for as long as you mean to wait",
                hive_sh4re::limits::NAPS_PER_MINUTE
            )));
        }
        let until = now_ms() + seconds as i64 * 1000;
        let end = std::time::Instant::now() + Duration::from_secs(seconds);
        self.store.set_nap_until(name.as_str(), Some(until)).await?;
        self.naps_lock().insert(name.to_string(), (until, end));
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(())
    }

    fn naps_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (i64, std::time::Instant)>>
    {
        self.naps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the agent's nap (stored as `nap_until`) still lasts at wall time
    /// `wall_now`, None when it is over. A nap this daemon started runs on the
    /// monotonic clock, so a step of the wall clock neither stretches nor cuts
    /// it; one stored by an earlier daemon counts from the wall clock, at most
    /// [`NAP_MAX_SECONDS`].
    pub(crate) fn nap_left(
        &self,
        name: &str,
        nap_until: Option<i64>,
        wall_now: i64,
    ) -> Option<Duration> {
        let until = nap_until?;
        let mut naps = self.naps_lock();
        let left = match naps.get(name) {
            Some(&(stored, end)) if stored == until => {
                end.saturating_duration_since(std::time::Instant::now())
            }
            _ => Duration::from_millis(
                (until - wall_now).clamp(0, NAP_MAX_SECONDS as i64 * 1000) as u64
            ),
        };
        if left.is_zero() {
            naps.remove(name);
            return None;
        }
        Some(left)
    }

    /// Asks the harness to compact the agent's claude session.
    pub async fn compact(&self, name: &AgentName) -> Result<()> {
        let Some(row) = self.steer_here(name, Steer::Compact).await? else {
            return Ok(());
        };
        self.require_running(name)?;
        if row.session_id.is_none() {
            return Err(Error::refused(format!(
                "{name} has no claude session yet: there is nothing to compact"
            )));
        }
        self.broker.push_control(name.as_str(), Control::Compact);
        self.note_operator(name, Operator::command("/compact"))
            .await;
        Ok(())
    }

    /// Makes the agent's next turn start a fresh claude session instead of
    /// resuming its current one (the old transcript stays on disk).
    pub async fn new_session(&self, name: &AgentName) -> Result<()> {
        let row = self.agent_row(name).await?;
        self.store.set_session(name.as_str(), None).await?;
        let reset = SessionReset {
            previous: row.session_id,
            by: Mailbox::Operator.to_string(),
        };
        self.record(name, &Payload::SessionReset(reset)).await?;
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(())
    }

    /// Asks the harness to rewrite the agent's notes file shorter.
    pub async fn compact_notes(&self, name: &AgentName) -> Result<()> {
        if self.steer_here(name, Steer::CompactNotes).await?.is_none() {
            return Ok(());
        }
        self.require_running(name)?;
        self.broker
            .push_control(name.as_str(), Control::CompactNotes);
        self.note_operator(name, Operator::command("/compact-notes"))
            .await;
        Ok(())
    }

    /// Records an operator action in the agent's history; a failure to note is only logged.
    pub(super) async fn note_operator(&self, name: &AgentName, action: Operator) {
        if let Err(e) = self.record(name, &Payload::Operator(action)).await {
            tracing::warn!(agent = %name, "could not note an operator action: {e}");
        }
    }

    fn require_running(&self, name: &AgentName) -> Result<()> {
        if self.supervisor.is_running(name.as_str()) {
            Ok(())
        } else {
            Err(Error::refused(format!(
                "{name} is not running: start it with hive-c0re start {name}"
            )))
        }
    }

    /// Waits up to `wait` for a command the operator queued for the agent's
    /// harness (cancel, compact); None when none came, or the hive is stopping.
    pub async fn next_control(&self, agent: &AgentName, wait: Duration) -> Option<Control> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut rx = self.broker.watch_control(agent.as_str());
            if let Some(c) = self.broker.pop_control(agent.as_str()) {
                return Some(c);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return None },
                _ = tokio::time::sleep_until(deadline) => return None,
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }
}
