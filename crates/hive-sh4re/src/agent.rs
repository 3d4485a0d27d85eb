//! agent.sock: what the in-container harness and MCP server say to hive-c0re.
//!
//! The agent's identity is the socket it connects to, so no request carries
//! a sender. `next_turn` and `control` are long polls: they are how hive-c0re
//! pushes work to the harness without the harness polling.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::AgentState;
use crate::config::AgentConfig;
use crate::host::{AgentStatusRow, Message};

/// One request line on agent.sock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AgentRequest {
    /// The effective config for the next turn (operator's model override applied).
    Config,
    /// Wait until messages are waiting and the agent may take a turn; they are not acknowledged yet.
    NextTurn {
        #[serde(default)]
        wait_ms: Option<u64>,
        /// Wake only for a message newer than this id (after a cancelled turn,
        /// its messages wait for the next new one instead of restarting at once).
        #[serde(default)]
        wake_after: Option<i64>,
    },
    /// Hand claimed messages back unacknowledged (the turn failed or was cancelled).
    Release,
    /// Report whether the agent lacks usable claude credentials.
    NeedsLogin { needed: bool },
    /// Acknowledge messages handled by a finished turn.
    Ack { ids: Vec<i64> },
    /// Record a state change (and the model of the turn that starts).
    State {
        state: AgentState,
        #[serde(default)]
        model: Option<String>,
    },
    /// Record events (stream-json lines and the harness's own).
    Events { items: Vec<EventIn> },
    /// Record the figures of a finished turn.
    TurnEnd { stats: TurnStats },
    /// Record figures outside a turn (e.g. notes size before and after compaction).
    Stats { items: Vec<(String, f64)> },
    /// Remember the claude session to resume next turn.
    SetSession { session_id: String },
    /// Wait for an operator command for the harness (cancel, compact).
    Control {
        #[serde(default)]
        wait_ms: Option<u64>,
    },
    /// MCP `send`.
    Send { to: String, body: String },
    /// MCP `recv`: read and acknowledge up to `max` messages.
    Recv {
        #[serde(default)]
        max: Option<u32>,
    },
    /// MCP `status`: the hive's agents.
    Status,
    /// MCP `set_status`: the agent's own one-line status.
    SetStatus { text: String },
    /// MCP `nap`: do not start a turn before `seconds` from now.
    Nap { seconds: u64 },
    /// Manager: create a config repo for a future agent.
    RequestInitConfig { name: String },
    /// Manager: queue an approval to spawn an agent from its repo's head.
    RequestSpawn {
        name: String,
        #[serde(default)]
        description: Option<String>,
    },
    /// Manager: queue an approval to deploy a config commit.
    RequestApplyCommit {
        agent: String,
        sha: String,
        #[serde(default)]
        description: Option<String>,
    },
    /// Manager: schedule a prompt to an agent (see host `schedule_add` for `when`).
    Schedule {
        agent: String,
        when: String,
        text: String,
    },
    /// Manager: ask the operator and wait for the answer or the deadline.
    AskOperator {
        question: String,
        #[serde(default)]
        options: Vec<String>,
        #[serde(default)]
        ttl_seconds: Option<u64>,
    },
}

/// An event as the harness reports it; hive-c0re adds id, agent and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventIn {
    pub kind: String,
    pub payload: serde_json::Value,
}

/// Figures of one finished turn, stored as `stats` rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnStats {
    pub duration_ms: u64,
    pub exit_code: Option<i32>,
    /// ok, retried (after compaction), failure, cancelled.
    pub exit_class: String,
    pub tool_calls: BTreeMap<String, u64>,
    pub messages_received: u64,
    /// Messages the turn sent, by recipient class (peer, operator, manager, system).
    #[serde(default)]
    pub sent_by_class: BTreeMap<String, u64>,
    /// Messages the turn handled, by sender class.
    #[serde(default)]
    pub received_by_class: BTreeMap<String, u64>,
    pub inbox_depth: u64,
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub notes_bytes: Option<u64>,
}

/// A command from the operator to the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Stop the running turn (or nap).
    Cancel,
    /// Run `/compact` on the session.
    Compact,
    /// Rewrite `/state/notes.md`.
    CompactNotes,
}

/// The config the harness runs the next turn with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveConfig {
    pub name: String,
    pub is_manager: bool,
    /// The model to use: the operator's override, else the config's.
    pub model: String,
    pub config: AgentConfig,
    /// Session to `--resume`, if any.
    #[serde(default)]
    pub session_id: Option<String>,
}

/// One response line on agent.sock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentResponse {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<EffectiveConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<AgentStatusRow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Control>,
    /// Free text answer of a tool (a path, an approval id, the operator's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl AgentResponse {
    /// A bare success.
    pub fn ok() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    /// A refusal with a sentence the model (or a human) can act on.
    pub fn refusal(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(error.into()),
            ..Self::default()
        }
    }
}

impl AgentRequest {
    /// Parses one request line into a request or a readable sentence.
    pub fn from_line(line: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(line).map_err(|e| format!("bad agent.sock request: {e}"))
    }
}
