//! What the hive shows of its agents: the status rows host.sock, agent.sock's
//! `status` tool and the dashboard all read, each agent's model, and what an
//! agent says of itself (its one-line status, that it needs a login).

use hive_sh4re::host::{AgentStatusRow, ModelInfo};
use hive_sh4re::{AgentName, AgentState};

use super::{Hive, UNREADABLE_CONFIG};
use crate::broker::Change;
use crate::clock::{now_ms, rfc3339};
use crate::config_repo;
use crate::error::{Error, Result};
use crate::store::AgentRow;

/// Longest status line an agent may set, in characters.
pub const STATUS_MAX_CHARS: usize = 200;

impl Hive {
    /// Names of all agents.
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self.store.agents()?.into_iter().map(|a| a.name).collect())
    }

    /// A status row for each agent.
    pub fn status_rows(&self) -> Result<Vec<AgentStatusRow>> {
        Ok(self
            .store
            .agents()?
            .iter()
            .map(|a| self.status_row_of(a))
            .collect())
    }

    /// The status row of one agent.
    pub fn status_row(&self, name: &AgentName) -> Result<AgentStatusRow> {
        Ok(self.status_row_of(&self.agent_row(name)?))
    }

    fn status_row_of(&self, a: &AgentRow) -> AgentStatusRow {
        let running = self.supervisor.is_running(&a.name);
        let active_model = match (a.state, &a.active_model) {
            (AgentState::Thinking, Some(m)) => m.clone(),
            _ => Self::effective_model(a).unwrap_or_else(|_| UNREADABLE_CONFIG.to_owned()),
        };
        let napping = a.nap_until.is_some_and(|t| t > now_ms());
        let state = if napping && a.state == AgentState::Idle {
            AgentState::Napping
        } else {
            a.state
        };
        AgentStatusRow {
            name: a.name.clone(),
            running,
            failed: a.failed,
            needs_update: false,
            needs_login: a.needs_login,
            deployed_sha: a.deployed_sha.as_deref().map(config_repo::short),
            pending_reminders: self.store.schedule_count(&a.name).unwrap_or(0),
            paused: a.paused,
            parent: a.parent.clone(),
            active_model,
            status_text: a.status_text.clone().filter(|_| running),
            status_set_at: a
                .status_set_at
                .filter(|_| running && a.status_text.is_some())
                .map(rfc3339),
            url: self
                .settings
                .dashboard_home
                .as_ref()
                .map(|h| format!("{h}agents/{}", a.name)),
            state: if running {
                state.as_str().to_owned()
            } else {
                "stopped".to_owned()
            },
            state_since: rfc3339(a.state_since),
            inbox_depth: self.store.inbox_depth(&a.name),
            last_turn_at: a.last_turn_at.map(rfc3339),
            runtime: self.runtime.kind().as_str().to_owned(),
            isolated: self.runtime.isolated(),
            nap_until: a.nap_until.filter(|_| napping).map(rfc3339),
        }
    }

    /// The agent's configured, overridden and active model.
    pub fn model_info(&self, name: &AgentName) -> Result<ModelInfo> {
        let row = self.agent_row(name)?;
        Ok(ModelInfo {
            configured: Self::config_of(&row)
                .map(|c| c.model)
                .unwrap_or_else(|_| UNREADABLE_CONFIG.to_owned()),
            override_model: row.model_override.clone(),
            active: self.status_row_of(&row).active_model,
            switched_at: row.model_switched_at.map(rfc3339),
        })
    }

    /// Records whether the agent's claude has usable credentials (its harness says).
    pub fn set_needs_login(&self, agent: &AgentName, needed: bool) -> Result<()> {
        self.store.set_needs_login(agent.as_str(), needed)?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }

    /// Sets the agent's own one-line status (its `set_status` tool): the first
    /// line of `text`, trimmed, at most [`STATUS_MAX_CHARS`] characters.
    pub fn set_status_text(&self, agent: &AgentName, text: &str) -> Result<()> {
        let text = text.trim();
        if text.chars().count() > STATUS_MAX_CHARS {
            return Err(Error::refused(format!(
                "a status is one line of at most {STATUS_MAX_CHARS} characters: shorten it"
            )));
        }
        self.store
            .set_status_text(agent.as_str(), text.lines().next().unwrap_or(""))?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }
}
