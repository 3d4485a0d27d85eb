//! What an agent is doing right now, as its badge shows it.

use serde::{Deserialize, Serialize};

/// The turn-loop state of a running agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Waiting for inbox messages.
    #[default]
    Idle,
    /// A claude turn is running.
    Thinking,
    /// `/compact` is running on the agent's session.
    Compacting,
    /// The agent asked not to be woken before a time.
    Napping,
    /// claude is retrying a model call the API refused (5xx, overloaded, rate limited).
    Retrying,
    /// A turn failed; the harness waits before trying its messages again.
    Waiting,
    /// Messages wait, and so does the agent: for a turn slot (`--max-concurrent-turns`).
    /// Shown only; never stored.
    Queued,
    /// The agent spent its daily budget (or the hive its own): no turn starts
    /// until the operator raises it or the UTC day ends; messages wait.
    OverBudget,
    /// The agent's home node (another hive-c0re daemon) stopped heartbeating:
    /// nothing runs the agent until it is back; messages wait. Shown only; never stored.
    NodeDown,
}

impl AgentState {
    /// The state as stored and shown (`idle`, `thinking`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Thinking => "thinking",
            Self::Compacting => "compacting",
            Self::Napping => "napping",
            Self::Retrying => "retrying",
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::OverBudget => "over_budget",
            Self::NodeDown => "node_down",
        }
    }

    /// Parses a stored state, defaulting unknown text to idle.
    pub fn parse(s: &str) -> Self {
        match s {
            "thinking" => Self::Thinking,
            "compacting" => Self::Compacting,
            "napping" => Self::Napping,
            "retrying" => Self::Retrying,
            "waiting" => Self::Waiting,
            "over_budget" => Self::OverBudget,
            _ => Self::Idle,
        }
    }
}

impl std::fmt::Display for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
