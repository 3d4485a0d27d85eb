//! agent.sock: what the in-container harness and MCP server say to hive-c0re.
//!
//! The agent's identity is the socket it connects to, so no request carries
//! a sender. `next_turn` and `control` are long polls: they are how hive-c0re
//! pushes work to the harness without the harness polling.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::AgentState;
use crate::config::AgentConfig;
pub use crate::event::ExitClass;
use crate::event::{EventKind, Payload};
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
    /// About to run claude outside a turn (`/compact`, notes compaction): wait
    /// up to `wait_ms` for a turn slot; the answer's `admitted` says one was
    /// given. The connection holds it until `release`, or until it closes.
    Admit {
        #[serde(default)]
        wait_ms: Option<u64>,
    },
    /// Gives back the slot `admit` gave this connection.
    Release,
    /// Report whether the agent lacks usable claude credentials, and why
    /// (the model API's refusal, when it rejected the ones it has).
    NeedsLogin {
        needed: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// claude retries a model call the API failed (its `api_retry` line). The
    /// answer's `give_up` asks the harness to end the turn now (hive-wide backoff).
    ApiRetry {
        /// The HTTP status, None when the API could not be reached.
        #[serde(default)]
        status: Option<u16>,
        /// claude's word for the error (`overloaded`, `server_error`, ...).
        error: String,
        attempt: u32,
        max_retries: u32,
    },
    /// A turn failed: the harness waits this long before trying its messages again.
    Backoff { retry_in_ms: u64, reason: String },
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
    Send {
        to: String,
        body: String,
        /// A key the sender picks for this send (at most
        /// [`crate::limits::MAX_SEND_KEY_BYTES`]): hive-c0re stores a send
        /// repeated under the same key once, even when the first try's
        /// answer was lost with its commit in doubt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
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
        /// The new agent's home node; absent: the node that approves it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
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

/// The event kinds a harness reports over agent.sock ([`EventKind::HARNESS`]);
/// hive-c0re refuses any other, so the kinds it records itself (`state`,
/// `turn_end`, `operator`, `container_crash`, ...) cannot be forged by an agent.
pub const HARNESS_EVENT_KINDS: &[EventKind] = EventKind::HARNESS;

/// An event as the harness reports it; hive-c0re adds id, agent and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventIn {
    /// An [`EventKind`]'s name; kept as text so a wrong one is refused with a sentence.
    pub kind: String,
    pub payload: serde_json::Value,
}

impl From<Payload> for EventIn {
    fn from(p: Payload) -> Self {
        Self {
            kind: p.kind().as_str().to_owned(),
            payload: p.to_value(),
        }
    }
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
    pub exit_class: ExitClass,
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
    /// Why a failed turn failed: the model API's reason, or the harness's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status of the model API error that ended the turn, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_status: Option<u16>,
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
    /// Longest a turn may run (the agent's `turn_timeout`, else the hive's), in seconds.
    #[serde(default)]
    pub turn_timeout_secs: Option<u64>,
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
    /// `api_retry`: end the turn now, the hive holds turns while the API fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub give_up: bool,
    /// `admit`: a turn slot is this connection's until `release`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admitted: bool,
    /// A refusal because hive-c0re could not reach its store (the database
    /// is out of reach): a request that [`AgentRequest::may_repeat`] may be
    /// sent again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unavailable: bool,
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
    /// True when the request may be sent again after an `unavailable`
    /// answer: it changed nothing then, or doing it twice is harmless (a
    /// send may arrive twice: delivery is at least once). Not a request that
    /// claims, acknowledges or ends a turn.
    pub fn may_repeat(&self) -> bool {
        matches!(
            self,
            Self::Config
                | Self::State { .. }
                | Self::Events { .. }
                | Self::Stats { .. }
                | Self::Send { .. }
                | Self::Status
                | Self::SetStatus { .. }
        )
    }

    /// Parses one request line into a request or a readable sentence.
    pub fn from_line(line: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(line).map_err(|e| format!("bad agent.sock request: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_claim_or_settle_nothing_may_be_repeated() {
        let line = |l: &str| AgentRequest::from_line(l.as_bytes()).unwrap();
        for l in [
            r#"{"op":"events","items":[]}"#,
            r#"{"op":"send","to":"bob","body":"hi"}"#,
            r#"{"op":"config"}"#,
        ] {
            assert!(line(l).may_repeat(), "{l}");
        }
        for l in [
            r#"{"op":"next_turn"}"#,
            r#"{"op":"recv"}"#,
            r#"{"op":"release"}"#,
        ] {
            assert!(!line(l).may_repeat(), "{l}");
        }
        let refusal: AgentResponse =
            serde_json::from_str(r#"{"ok":false,"error":"x","unavailable":true}"#).unwrap();
        assert!(refusal.unavailable);
        assert!(
            !serde_json::to_string(&AgentResponse::ok())
                .unwrap()
                .contains("unavailable")
        );
    }

    #[test]
    fn exit_classes_keep_their_names() {
        for c in ExitClass::ALL {
            let v = serde_json::to_value(c).unwrap();
            assert_eq!(v, c.as_str());
            assert_eq!(serde_json::from_value::<ExitClass>(v).unwrap(), c);
        }
        assert_eq!(
            ExitClass::ALL.map(ExitClass::as_str),
            [
                "ok",
                "retried",
                "failure",
                "cancelled",
                "timeout",
                "api_error",
                "interrupted"
            ]
        );
    }

    #[test]
    fn harness_events_go_out_as_kind_and_payload() {
        let e = EventIn::from(Payload::TurnError(crate::event::TurnError {
            error: "no claude".into(),
            api_status: None,
        }));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"kind":"turn_error","payload":{"error":"no claude"}}"#
        );
        assert!(HARNESS_EVENT_KINDS.contains(&EventKind::TurnError));
        assert!(!HARNESS_EVENT_KINDS.contains(&EventKind::TurnEnd));
    }
}
