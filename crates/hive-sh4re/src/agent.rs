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
use crate::secret::Secrets;

/// One request line on agent.sock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AgentRequest {
    /// The effective config (operator's model override applied), for work outside a turn.
    Config,
    /// Wait until messages are waiting and the agent may take a turn, then claim
    /// them for it (not acknowledged yet); the answer carries them and the config.
    NextTurn {
        #[serde(default)]
        wait_ms: Option<u64>,
    },
    /// Report whether the agent lacks usable claude credentials.
    NeedsLogin { needed: bool },
    /// Record a state change (and the model of the turn that starts).
    State {
        state: AgentState,
        #[serde(default)]
        model: Option<String>,
    },
    /// Record events (stream-json lines and the harness's own).
    Events { items: Vec<EventIn> },
    /// End the turn `next_turn` started, in one request: settle its messages,
    /// record its figures and `turn_end` event, remember its session, go idle.
    /// The answer carries the config for what follows.
    TurnEnd {
        stats: TurnStats,
        outcome: TurnOutcome,
        /// The claude session the turn ended in, to resume next turn.
        #[serde(default)]
        session: Option<String>,
    },
    /// Record figures outside a turn (e.g. notes size before and after compaction).
    Stats { items: Vec<(String, f64)> },
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

/// The event kinds a harness reports over agent.sock; hive-c0re refuses any
/// other, so the kinds it writes itself (`state`, `turn_end`, `operator`,
/// `container_crash`, ...) cannot be forged by an agent. A harness that
/// reports a new kind adds it here.
pub const HARNESS_EVENT_KINDS: &[&str] = &[
    "stream",
    "stderr",
    "turn_start",
    "turn_error",
    "session_lost",
    "compact_stream",
    "compact_stderr",
    "compact_end",
    "notes_compaction_stream",
    "notes_compaction",
];

/// An event as the harness reports it; hive-c0re adds id, agent and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventIn {
    pub kind: String,
    pub payload: serde_json::Value,
}

/// What becomes of a turn's messages when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnOutcome {
    /// The turn handled them: acknowledge them.
    Ack,
    /// The turn failed: hand them back, to be retried.
    Release,
    /// The operator cancelled the turn: hand them back, held until a new message
    /// starts the next turn (which takes them along).
    Hold,
}

/// Figures of one finished turn, stored as `stats` rows (with the inbox depth
/// hive-c0re reads after settling the turn's messages).
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
    /// The operator's secrets for this agent (hive-wide, its own over them):
    /// claude's environment. Only this agent's socket hands them out.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
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
