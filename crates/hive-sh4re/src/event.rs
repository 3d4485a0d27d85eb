//! What an agent's event history records, defined once: every kind of event
//! ([`EventKind`]), who records it ([`Source`]) and what it carries
//! ([`Payload`], one type per kind).
//!
//! The harness reports its kinds over agent.sock (`HARNESS_EVENT_KINDS` is
//! derived from here); hive-c0re records its own; the CLI's transcript and
//! the dashboard (`web/src/events.js`, checked against [`EventKind::ALL`] by a
//! test) read them. On the wire an event is `{"kind": NAME, "payload": ...}`.
//!
//! A stored payload of a harness kind is the agent's word: readers take its
//! fields leniently and never trust them further than showing them.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AgentState;

/// Who records an event kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// hive-c0re itself; agent.sock refuses it from a harness.
    Hive,
    /// The harness, over agent.sock.
    Harness,
}

/// A type an event carries; `fits` says whether a JSON payload reads as it.
pub trait PayloadType: Serialize + DeserializeOwned {
    /// True when `v` reads as this type.
    fn fits(v: &Value) -> Result<(), String> {
        Self::deserialize(v).map(drop).map_err(|e| e.to_string())
    }
}

/// A line of claude's stream-json output as claude wrote it (any JSON).
impl PayloadType for Value {
    fn fits(_: &Value) -> Result<(), String> {
        Ok(())
    }
}

/// A line claude wrote on stderr.
impl PayloadType for String {}

/// Declares [`EventKind`] and [`Payload`] from one table:
/// `Variant(PayloadType) = "wire name", Source;`.
macro_rules! events {
    ($($(#[doc = $doc:literal])* $kind:ident($ty:ty) = $name:literal, $source:ident;)*) => {
        /// Every kind of event an agent's history holds.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum EventKind {
            $($(#[doc = $doc])* #[serde(rename = $name)] $kind,)*
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(Self::$kind),*];

            /// The kind's name on the wire and in the store (`turn_start`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$kind => $name,)*
                }
            }

            /// Who records events of this kind.
            pub const fn source(self) -> Source {
                match self {
                    $(Self::$kind => Source::$source,)*
                }
            }

            /// Whether `payload` reads as this kind's payload type (why not, if not).
            pub fn check(self, payload: &Value) -> Result<(), String> {
                match self {
                    $(Self::$kind => <$ty as PayloadType>::fits(payload),)*
                }
            }
        }

        /// An event's payload, typed by its kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Payload {
            $($(#[doc = $doc])* $kind($ty),)*
        }

        impl Payload {
            /// The kind of event this payload is.
            pub fn kind(&self) -> EventKind {
                match self {
                    $(Self::$kind(_) => EventKind::$kind,)*
                }
            }

            /// The payload as JSON.
            pub fn to_value(&self) -> Value {
                let v = match self {
                    $(Self::$kind(p) => serde_json::to_value(p),)*
                };
                v.expect("event payloads always serialize")
            }

            /// Reads a payload of `kind`.
            pub fn from_parts(kind: EventKind, payload: Value) -> Result<Self, serde_json::Error> {
                Ok(match kind {
                    $(EventKind::$kind => Self::$kind(serde_json::from_value(payload)?),)*
                })
            }
        }
    };
}

events! {
    /// The agent's state changed (idle, thinking, compacting, napping).
    State(StateChange) = "state", Hive;
    /// A turn began: its messages, model, claude's arguments and prompt.
    TurnStart(TurnStart) = "turn_start", Harness;
    /// A turn ended, as hive-c0re settled it.
    TurnEnd(TurnEnd) = "turn_end", Hive;
    /// claude could not run for the turn.
    TurnError(TurnError) = "turn_error", Harness;
    /// One line of the turn's claude output (stream-json).
    Stream(Value) = "stream", Harness;
    /// One stderr line of the turn's claude.
    Stderr(String) = "stderr", Harness;
    /// claude could not resume the session; the turn ran in a fresh one.
    SessionLost(SessionLost) = "session_lost", Harness;
    /// The operator started a fresh session for the next turn.
    SessionReset(SessionReset) = "session_reset", Hive;
    /// One line of `/compact`'s claude output.
    CompactStream(Value) = "compact_stream", Harness;
    /// One stderr line of `/compact`'s claude.
    CompactStderr(String) = "compact_stderr", Harness;
    /// `/compact` ended.
    CompactEnd(CompactEnd) = "compact_end", Harness;
    /// One line (stdout or stderr) of the notes rewrite's claude.
    NotesCompactionStream(Value) = "notes_compaction_stream", Harness;
    /// The notes rewrite ended.
    NotesCompaction(NotesCompaction) = "notes_compaction", Harness;
    /// The operator steered the agent (a command or a message).
    Operator(Operator) = "operator", Hive;
    /// The agent's harness (its container) died.
    ContainerCrash(ContainerCrash) = "container_crash", Hive;
    /// A daily budget reached 80 %.
    BudgetWarning(BudgetNotice) = "budget_warning", Hive;
    /// A daily budget was spent: the agent (or every agent) is held.
    OverBudget(BudgetNotice) = "over_budget", Hive;
    /// The agent's harness reported more history than the hive stores a minute: the rest of the minute's was dropped.
    HistoryDropped(HistoryDropped) = "history_dropped", Hive;
}

/// `EventKind::HARNESS`'s length.
const fn harness_count() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < EventKind::ALL.len() {
        if matches!(EventKind::ALL[i].source(), Source::Harness) {
            n += 1;
        }
        i += 1;
    }
    n
}

const HARNESS_KINDS: [EventKind; harness_count()] = {
    let mut out = [EventKind::Stream; harness_count()];
    let (mut i, mut n) = (0, 0);
    while i < EventKind::ALL.len() {
        if matches!(EventKind::ALL[i].source(), Source::Harness) {
            out[n] = EventKind::ALL[i];
            n += 1;
        }
        i += 1;
    }
    out
};

impl EventKind {
    /// The kinds a harness reports, in declaration order.
    pub const HARNESS: &'static [EventKind] = &HARNESS_KINDS;

    /// The kind named `name`, if the hive knows it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a turn ended, as its figures and its `turn_end` event say.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ExitClass {
    /// claude ran to the end.
    #[default]
    Ok,
    /// claude ran to the end after a retry (a fresh session, or after compacting).
    Retried,
    /// claude failed, or could not start; the messages come back to be retried.
    Failure,
    /// The operator cancelled the turn.
    Cancelled,
    /// The turn ran over its time limit (`turn_timeout`) and was stopped.
    Timeout,
    /// The model API failed the turn (claude gave up, or the hive told it to).
    ApiError,
    /// The harness went away before the turn ended (stopped, crashed, or its
    /// node died): hive-c0re ends the turn for it, and its messages come back.
    Interrupted,
}

impl ExitClass {
    /// Every class.
    pub const ALL: [ExitClass; 7] = [
        Self::Ok,
        Self::Retried,
        Self::Failure,
        Self::Cancelled,
        Self::Timeout,
        Self::ApiError,
        Self::Interrupted,
    ];

    /// The class as stored and shown (`ok`, `retried`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Retried => "retried",
            Self::Failure => "failure",
            Self::Cancelled => "cancelled",
            Self::Timeout => "timeout",
            Self::ApiError => "api_error",
            Self::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for ExitClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `state`: the state entered, and the model of the turn that starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    pub state: AgentState,
    pub model: Option<String>,
    /// What the state is about (`API 529 · 3/10` while retrying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When a waiting agent tries again (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
}
impl PayloadType for StateChange {}

/// `turn_start`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnStart {
    /// Ids of the messages the turn handles.
    #[serde(default)]
    pub messages: Vec<i64>,
    #[serde(default)]
    pub model: String,
    /// claude's arguments, as production runs it.
    #[serde(default)]
    pub args: Vec<String>,
    /// What the turn was asked.
    #[serde(default)]
    pub prompt: String,
}
impl PayloadType for TurnStart {}

/// `turn_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnEnd {
    pub exit_code: Option<i32>,
    pub exit_class: ExitClass,
    pub duration_ms: u64,
    /// Messages a cancelled turn handed back, held for the next turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<i64>,
    /// What ended the turn when claude did not finish it (the API's word first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The HTTP status of the API error that ended the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_status: Option<u16>,
}
impl PayloadType for TurnEnd {}

/// `turn_error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnError {
    /// Why claude could not run, or what ended its turn.
    pub error: String,
    /// The HTTP status of the API error, when the API ended the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_status: Option<u16>,
}
impl PayloadType for TurnError {}

/// `session_lost`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionLost {
    /// The session claude could not resume.
    pub session: Option<String>,
    /// claude's words for why.
    pub error: String,
}
impl PayloadType for SessionLost {}

/// `session_reset`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionReset {
    /// The session the next turn no longer resumes.
    pub previous: Option<String>,
    /// Who reset it (`operator`).
    pub by: String,
}
impl PayloadType for SessionReset {}

/// `compact_end`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactEnd {
    pub exit_code: Option<i32>,
    pub cancelled: bool,
    /// Why claude could not be started, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
impl PayloadType for CompactEnd {}

/// `notes_compaction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotesCompaction {
    pub before_bytes: u64,
    /// The size kept: the rewrite's, or the old one when the rewrite was dropped.
    pub after_bytes: u64,
    pub rewritten: bool,
    pub exit_code: Option<i32>,
}
impl PayloadType for NotesCompaction {}

/// `operator`: a command (`/cancel`, `/model sonnet`) or a message the operator sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Operator {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The message's first characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
}
impl PayloadType for Operator {}

impl Operator {
    /// The operator ran `command`.
    pub fn command(command: impl Into<String>) -> Self {
        Self {
            command: Some(command.into()),
            ..Self::default()
        }
    }
}

/// `container_crash`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerCrash {
    /// How the harness ended (`exited with status 1`).
    pub exit: String,
    /// Restarts so far.
    pub attempt: u32,
    /// True when hive-c0re stopped restarting it.
    pub gave_up: bool,
    /// The last lines of its output.
    pub log_tail: String,
}
impl PayloadType for ContainerCrash {}

/// Which daily budget a [`BudgetNotice`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    /// The agent's own (`agent.toml`, or the operator's for today).
    Agent,
    /// The hive's (`hive.toml`), recorded on the agent whose spending crossed the mark.
    Hive,
}

/// Which measure of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetMeasure {
    /// Dollars, as claude reports `total_cost_usd`.
    Usd,
    /// Input plus output tokens, as claude reports them.
    Tokens,
}

/// `budget_warning` and `over_budget`: a measure of a budget crossed 80 % or 100 % today.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetNotice {
    pub scope: BudgetScope,
    pub measure: BudgetMeasure,
    /// Spent today (UTC), in the measure's unit.
    pub spent: f64,
    /// Today's limit.
    pub limit: f64,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
}
impl PayloadType for BudgetNotice {}

/// `history_dropped`: the agent's harness went past the history the hive
/// stores in a minute, and what it reports until the minute ends is dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryDropped {
    /// The most bytes of event payloads the hive stores of one agent a minute.
    pub bytes_per_minute: u64,
}
impl PayloadType for HistoryDropped {}

#[cfg(test)]
mod tests {
    use super::*;

    /// One payload of every kind.
    fn samples() -> Vec<Payload> {
        vec![
            Payload::State(StateChange {
                state: AgentState::Thinking,
                model: Some("haiku".into()),
                detail: None,
                retry_at: None,
            }),
            Payload::TurnStart(TurnStart {
                messages: vec![1, 2],
                model: "haiku".into(),
                args: vec!["--print".into()],
                prompt: "hi".into(),
            }),
            Payload::TurnEnd(TurnEnd {
                exit_code: Some(0),
                exit_class: ExitClass::Cancelled,
                duration_ms: 12,
                held: vec![3],
                error: Some("API 529 overloaded".into()),
                api_status: Some(529),
            }),
            Payload::TurnError(TurnError {
                error: "no claude".into(),
                api_status: None,
            }),
            Payload::Stream(serde_json::json!({"type": "result"})),
            Payload::Stderr("boom".into()),
            Payload::SessionLost(SessionLost {
                session: Some("s1".into()),
                error: "No conversation found".into(),
            }),
            Payload::SessionReset(SessionReset {
                previous: None,
                by: "operator".into(),
            }),
            Payload::CompactStream(serde_json::json!("raw text")),
            Payload::CompactStderr("warn".into()),
            Payload::CompactEnd(CompactEnd {
                exit_code: None,
                cancelled: true,
                error: Some("no claude".into()),
            }),
            Payload::NotesCompactionStream(serde_json::json!({"type": "assistant"})),
            Payload::NotesCompaction(NotesCompaction {
                before_bytes: 20,
                after_bytes: 10,
                rewritten: true,
                exit_code: Some(0),
            }),
            Payload::Operator(Operator::command("/cancel")),
            Payload::ContainerCrash(ContainerCrash {
                exit: "exited with status 1".into(),
                attempt: 2,
                gave_up: false,
                log_tail: "oops".into(),
            }),
            Payload::BudgetWarning(BudgetNotice {
                scope: BudgetScope::Agent,
                measure: BudgetMeasure::Tokens,
                spent: 800.0,
                limit: 1000.0,
                day: "2026-12-02".into(),
            }),
            Payload::OverBudget(BudgetNotice {
                scope: BudgetScope::Hive,
                measure: BudgetMeasure::Usd,
                spent: 5.1,
                limit: 5.0,
                day: "2026-12-02".into(),
            }),
            Payload::HistoryDropped(HistoryDropped {
                bytes_per_minute: 16 << 20,
            }),
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        let samples = samples();
        let kinds: Vec<EventKind> = samples.iter().map(Payload::kind).collect();
        assert_eq!(kinds, EventKind::ALL, "one sample per kind, in order");
        for p in samples {
            let k = p.kind();
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(
                serde_json::from_value::<EventKind>(k.as_str().into()).unwrap(),
                k
            );
            let v = p.to_value();
            assert_eq!(k.check(&v), Ok(()), "{k}");
            assert_eq!(Payload::from_parts(k, v).unwrap(), p);
        }
        assert_eq!(EventKind::parse("nonsense"), None);
    }

    #[test]
    fn payloads_keep_their_wire_shape() {
        let v = |p: Payload| p.to_value();
        assert_eq!(
            v(Payload::State(StateChange {
                state: AgentState::Idle,
                model: None,
                detail: None,
                retry_at: None,
            })),
            serde_json::json!({"state": "idle", "model": null})
        );
        assert_eq!(
            v(Payload::Operator(Operator::command("/compact"))),
            serde_json::json!({"command": "/compact"})
        );
        assert_eq!(
            v(Payload::TurnEnd(TurnEnd {
                exit_code: Some(1),
                exit_class: ExitClass::Failure,
                duration_ms: 9,
                held: vec![],
                error: None,
                api_status: None,
            })),
            serde_json::json!({"exit_code": 1, "exit_class": "failure", "duration_ms": 9})
        );
        assert_eq!(
            v(Payload::CompactEnd(CompactEnd {
                exit_code: Some(0),
                cancelled: false,
                error: None
            })),
            serde_json::json!({"exit_code": 0, "cancelled": false})
        );
    }

    #[test]
    fn harness_kinds_are_the_harness_sourced_ones() {
        let want: Vec<EventKind> = EventKind::ALL
            .iter()
            .copied()
            .filter(|k| k.source() == Source::Harness)
            .collect();
        assert_eq!(EventKind::HARNESS, want);
        for k in [
            "state",
            "turn_end",
            "operator",
            "container_crash",
            "session_reset",
        ] {
            let k = EventKind::parse(k).unwrap();
            assert_eq!(k.source(), Source::Hive, "{k}");
        }
        for k in ["stream", "turn_start", "session_lost", "notes_compaction"] {
            assert!(EventKind::HARNESS.contains(&EventKind::parse(k).unwrap()));
        }
    }

    #[test]
    fn payloads_that_do_not_fit_their_kind_are_told_apart() {
        assert!(
            EventKind::Stderr
                .check(&serde_json::json!({"x": 1}))
                .is_err()
        );
        assert!(EventKind::TurnError.check(&serde_json::json!(5)).is_err());
        assert!(EventKind::Stream.check(&serde_json::json!(5)).is_ok());
        // A harness may leave out what it does not know.
        assert!(
            EventKind::TurnStart
                .check(&serde_json::json!({"prompt": "hi"}))
                .is_ok()
        );
    }

    #[test]
    fn the_web_front_end_lists_the_same_kinds() {
        let js = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../web/src/events.js"
        ))
        .unwrap();
        let list = js
            .split_once("export const EVENT_KINDS = [")
            .and_then(|(_, rest)| rest.split_once("];"))
            .expect("web/src/events.js declares `export const EVENT_KINDS = [...];`")
            .0;
        let js_kinds: Vec<&str> = list
            .split(',')
            .map(|s| s.trim().trim_matches('\''))
            .filter(|s| !s.is_empty())
            .collect();
        let rust_kinds: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            js_kinds, rust_kinds,
            "web/src/events.js's EVENT_KINDS must list hive_sh4re::event::EventKind::ALL, in order"
        );
    }
}
