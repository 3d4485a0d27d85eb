//! The dashboard's wire types: what its JSON API reads (request bodies and
//! queries), the frames of its live stream (`GET /api/stream`, server-sent
//! events), and the text frames of the agent page's shell (a WebSocket).
//!
//! Its answers are host.sock's row types ([`crate::host`]), so both surfaces
//! show the same thing.

use serde::{Deserialize, Serialize};

use crate::host::{
    AgentStatusRow, Approval, Event, FeedItem, Message, ModelInfo, NeedsYou, Question, SpaceAlarm,
};
use crate::notification::{NotificationList, WebhookStatus};

// ---- request bodies (POST, JSON) -------------------------------------------

/// `POST /api/agents/{name}/messages`: a message from the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendBody {
    pub body: String,
    /// The client's key for this send: repeated under it after a 503, it is
    /// stored once (as host.sock `send`'s `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `POST /api/agents/{name}/model`: a model override from the next turn on;
/// `null`, `""` or `"default"` drops the override (the config's model again).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelBody {
    pub model: Option<String>,
}

/// `POST /api/agents/{name}/budget`: the agent's budget for the rest of today
/// (UTC), as host.sock's `budget_set`: new limits, or `reset` to lift it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetBody {
    #[serde(default)]
    pub usd: Option<f64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub reset: bool,
}

/// `POST /api/approvals/{id}/approve`: the `diff_id` of the diff the page
/// showed, refused when the diff changed since (the body may also be empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApproveBody {
    pub seen: Option<String>,
}

/// `POST /api/approvals/{id}/deny`: why (the body may also be empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DenyBody {
    pub note: Option<String>,
}

/// `POST /api/questions/{id}/answer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerBody {
    pub answer: String,
}

/// `POST /api/notifications/read`: one notification (`id`) or every one (`all`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadBody {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub all: bool,
}

/// `POST /api/agents/{name}/schedules`: a prompt from the operator (`when` as host.sock's `schedule_add`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleBody {
    pub when: String,
    pub text: String,
}

// ---- queries (GET) ---------------------------------------------------------

/// `GET /api/agents/{name}/events`: `since` pages forward, `before` back; not both.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventsQuery {
    /// Only events after this id, oldest first.
    pub since: Option<i64>,
    /// The newest `limit` events before this id (the newest of all without it).
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

/// `GET /api/agents/{name}/messages`, `GET /api/operator/messages`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitQuery {
    pub limit: Option<u32>,
}

/// `GET /api/feed`: `limit` items before the cursor `before` (a page's own `before`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedQuery {
    pub before: Option<String>,
    pub limit: Option<u32>,
}

/// `GET /api/stats`: one agent's figures or every agent's, since unix
/// seconds or a duration back from now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsQuery {
    pub agent: Option<String>,
    pub since: Option<String>,
}

/// `GET /api/notifications?unread=true&limit=N`: the newest notifications.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotificationsQuery {
    #[serde(default)]
    pub unread: Option<bool>,
    pub limit: Option<u32>,
}

/// `GET /api/stream`: the hive page's frames, or (with `agent`) that agent page's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamQuery {
    pub agent: Option<String>,
}

/// `GET /api/agents/{name}/shell`: the terminal's first size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShellQuery {
    pub rows: Option<u16>,
    pub cols: Option<u16>,
}

// ---- live stream (server-sent events) -------------------------------------

/// Declares [`Frame`] from one table: `Variant(DataType) = "event name"`.
macro_rules! frames {
    ($($(#[doc = $doc:literal])* $v:ident($ty:ty) = $name:literal,)*) => {
        /// One frame of `/api/stream`: an `event:` name and its JSON `data:`.
        // A frame is made, written and dropped one at a time, never kept in
        // bulk, so the size of its largest variant (a status row) costs nothing.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq)]
        pub enum Frame {
            $($(#[doc = $doc])* $v($ty),)*
        }

        impl Frame {
            /// Every frame's `event:` name.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The frame's `event:` name.
            pub fn event(&self) -> &'static str {
                match self {
                    $(Self::$v(_) => $name,)*
                }
            }

            /// The frame's `data:`, one line of JSON (serde_json escapes newlines).
            pub fn data(&self) -> serde_json::Result<String> {
                match self {
                    $(Self::$v(d) => serde_json::to_string(d),)*
                }
            }

            /// Reads a frame a client received.
            pub fn parse(event: &str, data: &str) -> Result<Self, String> {
                let bad = |e: serde_json::Error| format!("bad {event:?} frame: {e}");
                match event {
                    $($name => serde_json::from_str(data).map(Self::$v).map_err(bad),)*
                    other => Err(format!("unknown frame {other:?}")),
                }
            }
        }
    };
}

frames! {
    /// The stream is open; sent first, then history can be fetched without a gap.
    Hello(Hello) = "hello",
    /// An agent's fresh status row.
    Agent(AgentStatusRow) = "agent",
    /// An agent's model changed (agent page).
    Model(ModelChanged) = "model",
    /// An agent is gone.
    AgentRemoved(AgentRemoved) = "agent_removed",
    /// New rows of an agent's history (agent page).
    Events(EventsFrame) = "events",
    /// An agent's newest messages (agent page).
    Inbox(Inbox) = "inbox",
    /// The operator's newest messages (hive page).
    OperatorInbox(OperatorInbox) = "operator_inbox",
    /// Every approval (hive page).
    Approvals(Approvals) = "approvals",
    /// The operator's questions (hive page).
    Questions(Questions) = "questions",
    /// The free-space alarm changed (every page).
    Space(Space) = "space",
    /// The database alarm changed (every page).
    Database(Database) = "database",
    /// Notifications were stored or read: the newest and the unread count (every page).
    Notifications(NotificationList) = "notifications",
    /// The webhooks' queues changed (hive page).
    Webhooks(Webhooks) = "webhooks",
    /// Changes were missed: refetch.
    Resync(Resync) = "resync",
    /// What waits on the operator changed (hive page).
    NeedsYou(NeedsYou) = "needs_you",
    /// New items of the hive-wide feed, oldest first (hive page).
    Feed(FeedFrame) = "feed",
}

/// `feed`: new feed items, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedFrame {
    pub items: Vec<FeedItem>,
}

/// `webhooks`: each webhook's queue and last results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhooks {
    pub webhooks: Vec<WebhookStatus>,
}

/// `hello`: whose page the stream is for (None: the hive page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub agent: Option<String>,
}

/// `model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelChanged {
    pub agent: String,
    pub model: ModelInfo,
}

/// `agent_removed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRemoved {
    pub name: String,
}

/// `events`: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsFrame {
    pub agent: String,
    pub events: Vec<Event>,
}

/// `inbox`: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbox {
    pub agent: String,
    pub messages: Vec<Message>,
}

/// `operator_inbox`: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorInbox {
    pub messages: Vec<Message>,
}

/// `approvals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approvals {
    pub approvals: Vec<Approval>,
}

/// `questions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Questions {
    pub questions: Vec<Question>,
}

/// `database`: the alarm while this node cannot use the hive's database, else null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Database {
    pub alarm: Option<DatabaseAlarm>,
}

/// This node cannot use the hive's database: out of reach (several hosts
/// on PostgreSQL), refusing writes (a read-only file system or standby) or
/// failing; on from the first heartbeat that failed for it, off at the
/// first one stored again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseAlarm {
    /// RFC 3339 time the alarm went on.
    pub since: String,
    /// The sentence refusals carry meanwhile, the server's reason in it.
    pub message: String,
}

/// `space`: the alarm while it is on, else null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    pub alarm: Option<SpaceAlarm>,
}

/// `resync`: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resync {}

// ---- the agent page's shell (WebSocket text frames) -----------------------

/// A text frame the page sends (its binary frames are the bytes typed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShellControl {
    /// The terminal's new size.
    Resize { rows: u16, cols: u16 },
}

/// A text frame hive-c0re sends (its binary frames are the PTY's output); a close follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ShellNotice {
    /// The shell exited with this status.
    Exit { code: i32 },
    /// The shell could not open, or hive-c0re is stopping.
    Error { message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_by_name() {
        let frames = [
            Frame::Hello(Hello {
                agent: Some("alice".into()),
            }),
            Frame::Model(ModelChanged {
                agent: "alice".into(),
                model: ModelInfo {
                    configured: "haiku".into(),
                    active: "haiku".into(),
                    ..ModelInfo::default()
                },
            }),
            Frame::AgentRemoved(AgentRemoved { name: "bob".into() }),
            Frame::Events(EventsFrame {
                agent: "alice".into(),
                events: vec![],
            }),
            Frame::OperatorInbox(OperatorInbox { messages: vec![] }),
            Frame::Resync(Resync {}),
        ];
        for f in frames {
            let data = f.data().unwrap();
            assert_eq!(Frame::parse(f.event(), &data).unwrap(), f);
        }
        assert!(Frame::parse("nope", "{}").is_err());
        assert!(Frame::parse("hello", "[]").is_err());
    }

    #[test]
    fn frames_keep_their_wire_bytes() {
        let hello = Frame::Hello(Hello { agent: None });
        assert_eq!(
            (hello.event(), hello.data().unwrap().as_str()),
            ("hello", r#"{"agent":null}"#)
        );
        assert_eq!(Frame::Resync(Resync {}).data().unwrap(), "{}");
        assert_eq!(
            Frame::AgentRemoved(AgentRemoved { name: "bob".into() })
                .data()
                .unwrap(),
            r#"{"name":"bob"}"#
        );
        assert_eq!(Frame::NAMES.len(), 16);
    }

    #[test]
    fn shell_frames_keep_their_names() {
        let c: ShellControl = serde_json::from_str(r#"{"type":"resize","rows":30,"cols":100}"#)
            .expect("the page's resize");
        assert_eq!(
            c,
            ShellControl::Resize {
                rows: 30,
                cols: 100
            }
        );
        let v = |n: ShellNotice| serde_json::to_value(n).unwrap();
        assert_eq!(
            v(ShellNotice::Exit { code: 3 }),
            serde_json::json!({"type": "exit", "code": 3})
        );
        assert_eq!(
            v(ShellNotice::Error {
                message: "not running".into()
            }),
            serde_json::json!({"type": "error", "message": "not running"})
        );
    }

    #[test]
    fn bodies_read_as_the_pages_send_them() {
        let m: ModelBody = serde_json::from_str("{}").unwrap();
        assert_eq!(m.model, None);
        let m: ModelBody = serde_json::from_str(r#"{"model":"sonnet"}"#).unwrap();
        assert_eq!(m.model.as_deref(), Some("sonnet"));
        let d: DenyBody = serde_json::from_str("{}").unwrap();
        assert_eq!(d.note, None);
        assert!(serde_json::from_str::<SendBody>("{}").is_err());
    }
}
