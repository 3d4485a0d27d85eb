//! host.sock: the operator's admin protocol (`docs/host-sock.md`).
//!
//! JSON lines; a request is internally tagged by `cmd` (one struct per verb
//! in [`verb`]), a response is one flat object that always starts with
//! `version` and `ok`. The dashboard serves the same row types, so both
//! surfaces stay in step.

pub mod client;
pub mod verb;

use serde::{Deserialize, Serialize};

use crate::{AgentName, PROTOCOL_VERSION};

/// Which agents a `start`/`stop` applies to.
///
/// An empty scope means "the whole hive" to hyperhive; we refuse it unless
/// `all` is also set, so a client bug cannot stop everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scope {
    /// The agents named explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_names: Option<Vec<AgentName>>,
    /// Set to act on every agent of the hive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// Declares [`Request`]: one variant per verb, named and shaped as its
/// struct in [`verb`], with its `cmd` string; and `From` each struct.
macro_rules! requests {
    ($($cmd:literal => $verb:ident,)*) => {
        /// One request line on host.sock: `{"cmd":NAME, ...the verb's fields}`.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "cmd")]
        pub enum Request {
            $(#[doc = concat!("`", $cmd, "`")] #[serde(rename = $cmd)] $verb(verb::$verb),)*
        }

        impl Request {
            /// The `cmd` names this daemon understands, for error messages.
            pub const COMMANDS: &'static [&'static str] = &[$($cmd),*];

            /// This request's `cmd`.
            pub fn cmd(&self) -> &'static str {
                match self {
                    $(Self::$verb(_) => $cmd,)*
                }
            }
        }

        $(impl From<verb::$verb> for Request {
            fn from(v: verb::$verb) -> Self {
                Self::$verb(v)
            }
        })*
    };
}

requests! {
    "list" => List,
    "agent_status" => AgentStatus,
    "subscribe_agent_status" => SubscribeAgentStatus,
    "set_paused" => SetPaused,
    "start" => Start,
    "stop" => Stop,
    "restart" => Restart,
    "urls" => Urls,
    "logout" => Logout,
    "pending" => Pending,
    "approval_diff" => ApprovalDiff,
    "approve" => Approve,
    "deny" => Deny,
    "send" => Send,
    "recv" => Recv,
    "spawn" => Spawn,
    "kill" => Kill,
    "destroy" => Destroy,
    "init_config" => InitConfig,
    "request_spawn" => RequestSpawn,
    "request_apply_commit" => RequestApplyCommit,
    "config_show" => ConfigShow,
    "config_commit" => ConfigCommit,
    "events" => Events,
    "cancel" => Cancel,
    "compact" => Compact,
    "compact_notes" => CompactNotes,
    "new_session" => NewSession,
    "set_model" => SetModel,
    "questions" => Questions,
    "needs_you" => NeedsYou,
    "answer" => Answer,
    "cancel_question" => CancelQuestion,
    "stats" => Stats,
    "schedule_add" => ScheduleAdd,
    "schedule_list" => ScheduleList,
    "schedule_rm" => ScheduleRm,
    "shell" => Shell,
    "secret_set" => SecretSet,
    "secret_list" => SecretList,
    "secret_rm" => SecretRm,
    "notifications" => Notifications,
    "notifications_read" => NotificationsRead,
    "webhooks" => Webhooks,
    "budget_set" => BudgetSet,
    "budget_list" => BudgetList,
    "nodes" => Nodes,
}

impl Request {
    /// Parses one request line, turning serde's errors into sentences an operator can act on.
    pub fn from_line(line: &[u8]) -> Result<Self, String> {
        // The common case parses once; only a bad line pays for the diagnosis.
        if let Ok(req) = serde_json::from_slice::<Self>(line) {
            return Ok(req);
        }
        let value: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            if std::str::from_utf8(line).is_err() {
                "the request is not valid UTF-8: send one JSON object per line".to_owned()
            } else {
                format!("the request is not valid JSON ({e}): send one JSON object per line")
            }
        })?;
        let Some(obj) = value.as_object() else {
            return Err("the request must be a JSON object with a \"cmd\" field".to_owned());
        };
        let cmd = match obj.get("cmd") {
            Some(serde_json::Value::String(c)) => c.clone(),
            Some(_) => return Err("the \"cmd\" field must be a string such as \"list\"".to_owned()),
            None => {
                return Err(
                    "the request has no \"cmd\" field: say which verb, e.g. {\"cmd\":\"list\"}"
                        .to_owned(),
                );
            }
        };
        if !Self::COMMANDS.contains(&cmd.as_str()) {
            return Err(format!(
                "unknown cmd {cmd:?}: this daemon understands {}",
                Self::COMMANDS.join(", ")
            ));
        }
        serde_json::from_value(value).map_err(|e| format!("bad {cmd:?} request: {e}"))
    }
}

/// URLs of the hive's services; `home` is the dashboard root.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Urls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matrix: Option<String>,
    /// Ours: the link that logs a browser in to the dashboard (it holds the dashboard's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
}

/// One agent's status, fields in the order hyperhive writes them, ours after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatusRow {
    pub name: String,
    pub running: bool,
    pub failed: bool,
    pub needs_update: bool,
    pub needs_login: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_sha: Option<String>,
    pub pending_reminders: u32,
    pub paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub active_model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_set_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// idle, thinking, compacting, napping, retrying, waiting, queued,
    /// over_budget (or stopped, or node_down: its home node stopped heartbeating).
    pub state: String,
    /// RFC 3339 UTC time the state was entered.
    pub state_since: String,
    /// What the state is about: `API 529 · 3/10` (retrying), `retry in 40s` (waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_detail: Option<String>,
    /// RFC 3339 UTC time a waiting agent tries its messages again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Why the agent needs a login (the model API's refusal), when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_reason: Option<String>,
    /// Undelivered messages waiting for the agent.
    pub inbox_depth: u64,
    /// RFC 3339 UTC end of the last turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_turn_at: Option<String>,
    /// `nspawn` or `process`.
    pub runtime: String,
    /// False when the agent runs as a plain host process.
    pub isolated: bool,
    /// RFC 3339 UTC end of a nap in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nap_until: Option<String>,
    /// `failed` (supervision gave up) or `restarting` (a crashed harness
    /// waits for its restart); absent while the harness is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Crashes in a row before the last restart, while the last crash is recent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// How the last recent crash ended (`exited with status 255`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_exit: Option<String>,
    /// The last lines the harness wrote before that crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_tail: Option<String>,
    /// The open operator question the agent waits on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<i64>,
    /// A `queued` agent's place in line for a turn slot (1: next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// Today's spend against the agent's budget, when it has one in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetRow>,
    /// The agent's home node (the hive-c0re daemon that runs it); absent for
    /// an agent stored before nodes existed and not yet claimed by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What the agent's state dir takes on its home node's disk, in bytes,
    /// as that node last measured it (each minute); absent until then and on
    /// other nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bytes: Option<u64>,
}

/// One node of the hive (`nodes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub name: String,
    /// Where the operator reaches it: its dashboard's address, empty without one.
    pub address: String,
    /// Agents whose home node it is.
    pub agents: u64,
    /// RFC 3339 UTC time of its last heartbeat.
    pub last_heartbeat: String,
    /// RFC 3339 UTC time it last started.
    pub started_at: String,
    /// Its last heartbeat is at most three heartbeat intervals old.
    pub alive: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One thing that waits on the operator (the hive page's "needs you" strip).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedItem {
    /// `approval`, `question`, `node_down`, `failed`, `restarting`, `needs_login`,
    /// `over_budget`, `paused_mail`.
    pub kind: String,
    /// The agent it is about; empty for a `node_down` (it names its `node`).
    pub agent: String,
    /// The approval's or question's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    /// One line: what it is about.
    pub text: String,
    /// RFC 3339 UTC time it began waiting.
    pub since: String,
    /// RFC 3339 UTC deadline (a question's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// The node a `node_down` is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Everything that waits on the operator, most urgent first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NeedsYou {
    pub items: Vec<NeedItem>,
}

/// One entry of the hive-wide activity feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedItem {
    /// `e<id>` (an event), `m<id>` (a message) or `a<id>` (an approval): unique.
    pub key: String,
    /// `turn_start`, `turn_end`, `crash`, `message` or `approval`.
    pub kind: String,
    /// RFC 3339 UTC.
    pub ts: String,
    /// The agent it is about (a message's sender).
    pub agent: String,
    /// A message's recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The event's, message's or approval's id.
    pub id: i64,
    /// One line.
    pub text: String,
}

/// A page of the feed, newest first, and the cursor of the page before it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Feed {
    pub items: Vec<FeedItem>,
    /// Pass as `before` for older items; None at the start of history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// The hive-wide backoff while the model API fails for several agents: new
/// turns wait behind one probe turn at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiBackoff {
    /// RFC 3339 UTC time the hive began backing off.
    pub since: String,
    /// The last error the API gave (`API 529 overloaded`).
    pub last_error: String,
    /// RFC 3339 UTC time the next probe turn may start.
    pub next_try: String,
    /// The agent whose turn probes the API now, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// Agents that met the failure since the backoff began.
    pub agents: Vec<String>,
}

/// An operator decision the manager (or the operator) asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: i64,
    pub agent: String,
    pub kind: ApprovalKind,
    /// A sha or "".
    pub commit_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_sha: Option<String>,
    pub requested_at: String,
    pub status: ApprovalStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A spawn's home node, when the request named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// What the operator should know before deciding a pending approval
    /// (worked out when it is shown; none for a decided one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<ApprovalWarning>,
}

/// Something that concerns a pending approval, as a kind and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalWarning {
    pub kind: ApprovalWarningKind,
    pub message: String,
}

/// Declares a wire enum of names that also keeps a name it does not know
/// verbatim (`Other`), so a row written by another version still reads.
macro_rules! named {
    ($(#[doc = $doc:literal])* $ty:ident { $($(#[doc = $vdoc:literal])* $v:ident = $name:literal,)* }) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $ty {
            $($(#[doc = $vdoc])* #[serde(rename = $name)] $v,)*
            /// A name this version does not know, kept verbatim.
            #[serde(untagged)]
            Other(String),
        }

        impl $ty {
            /// Every name this version knows.
            pub const KNOWN: &'static [$ty] = &[$(Self::$v),*];

            /// The name on the wire and in the store.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$v => $name,)*
                    Self::Other(s) => s,
                }
            }

            /// Reads a stored name (one this version does not know is kept verbatim).
            pub fn parse(s: &str) -> Self {
                match s {
                    $($name => Self::$v,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// What an approval would do.
    ApprovalKind {
        /// Start a new agent from its config repo.
        Spawn = "spawn",
        /// Create a config repo (hyperhive's; this hive creates them at once).
        InitConfig = "init_config",
        /// Deploy a commit of an agent's config repo.
        ApplyCommit = "apply_commit",
        /// Schedule a prompt (hyperhive's).
        SchedulePrompt = "schedule_prompt",
    }
}

named! {
    /// What an approval warning is about.
    ApprovalWarningKind {
        /// The config repo has commits past the requested one.
        RepoMoved = "repo_moved",
        /// The request changes `model`, and the operator's model override masks it.
        ModelOverride = "model_override",
        /// Another pending approval asks the same thing.
        Duplicate = "duplicate",
        /// The request points claude's model requests (and the credential
        /// they carry) somewhere new: an endpoint, a proxy, TLS checks off.
        Endpoint = "endpoint",
        /// A spawn of a name destroyed without `--purge`: the new agent gets
        /// the old one's own secrets, `/state` and waiting messages.
        Inherits = "inherits",
        /// The request lets the agent do more than it may now: tools it
        /// could not use, recipients it could not reach, MCP servers new
        /// or changed (a new agent's, measured against the defaults).
        Grants = "grants",
    }
}

named! {
    /// Where an approval stands.
    ApprovalStatus {
        /// Waiting for the operator.
        Pending = "pending",
        /// Approved and carried out.
        Approved = "approved",
        /// Denied by the operator.
        Denied = "denied",
        /// Approved, but carrying it out failed (the note says why).
        Failed = "failed",
        /// Withdrawn.
        Cancelled = "cancelled",
    }
}

named! {
    /// Where an operator question stands.
    QuestionStatus {
        /// Waiting for the operator's answer.
        Pending = "pending",
        /// The operator answered.
        Answered = "answered",
        /// Its deadline passed unanswered.
        TimedOut = "timed_out",
        /// Withdrawn (by the operator or the asker).
        Cancelled = "cancelled",
    }
}

/// A message as `recv` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub id: i64,
    pub from: String,
    pub to: String,
    pub body: String,
    /// RFC 3339 UTC.
    pub sent_at: String,
    /// The dashboard's lists only: true while the recipient has not acknowledged
    /// it (waiting, or claimed by a turn that has not ended), false once read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<bool>,
}

/// One row of an agent's event history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    pub agent: String,
    /// RFC 3339 UTC.
    pub ts: String,
    /// e.g. `state`, `stream`, `turn_start`, `turn_end`, `container_crash`.
    pub kind: String,
    pub payload: serde_json::Value,
}

/// A question the manager put to the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    pub id: i64,
    pub agent: String,
    pub question: String,
    pub options: Vec<String>,
    pub asked_at: String,
    pub deadline: String,
    pub status: QuestionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<String>,
}

/// One response line: `version` and `ok` always, then the fields of the verb.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_statuses: Option<Vec<AgentStatusRow>>,
    /// `agent_status` *ours*: the hive-wide API backoff, while one holds turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_backoff: Option<ApiBackoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Urls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Vec<Approval>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub questions: Option<Vec<Question>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_you: Option<Vec<NeedItem>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StatsSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<Schedule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<i64>,
    /// `approval_diff`: what approving would change, as a unified diff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// `approval_diff` *ours*: the diff's short name, for `approve`'s `seen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<String>,
    /// `agent_status`: the free-space alarm, only while it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_alarm: Option<SpaceAlarm>,
    /// `secret_list`: names and scopes, never values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<SecretRow>>,
    /// `config_show`: `agent.toml` at the head of the agent's config repo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// `config_show`: that head; `config_commit`: the new commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// `init_config`: where the new config repo is, a path on this node's
    /// disk or `PATH on node NODE` (the node that keeps the config repos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// `budget_list`, `budget_set`: today's spend against each budget, the hive's first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Vec<BudgetRow>>,
    /// `notifications`: newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Vec<crate::notification::Notification>>,
    /// `notifications`, `notifications_read`: unread notifications left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unread: Option<u64>,
    /// `webhooks`: each configured webhook's delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<crate::notification::WebhookStatus>>,
    /// `nodes`: every node of the hive, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeRow>>,
}

/// Where a budget in force today comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetSource {
    /// No budget: nothing is held.
    None,
    /// `agent.toml` (an agent's) or `hive.toml` (the hive's).
    Config,
    /// The operator set it for today (`budget_set`).
    Operator,
    /// The operator lifted it for the rest of today (`budget_set` with `reset`).
    Lifted,
}

/// One budget today (UTC): what was spent against what is allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetRow {
    /// The agent; none for the hive-wide budget (every agent's spend together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub spent_usd: f64,
    /// Input plus output tokens.
    pub spent_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usd_per_day: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    pub source: BudgetSource,
    /// The larger share of a limit spent (1.0 is all of it); 0 without a limit.
    pub fraction: f64,
    /// Spent: the agent's turns (every agent's, for the hive's) are held.
    pub over: bool,
}

/// A stored secret as `secret_list` shows it: never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRow {
    pub name: String,
    /// The agent it is for; none for a hive-wide secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// RFC 3339 UTC time it was last set.
    pub set_at: String,
}

/// The hive's free-space alarm (etcd's NOSPACE): on while the state's file
/// system has less free space, or fewer free inodes, than its floor; new
/// sends, schedules and agents' events are refused until it clears by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceAlarm {
    /// The file system, as `the file system at /var/lib (ext4)`.
    pub filesystem: String,
    /// Free bytes at the last check.
    pub free_bytes: u64,
    /// The floor, in bytes.
    pub floor_bytes: u64,
    /// Free inodes (files) at the last check; absent where the file system
    /// counts none (btrfs): many small files use them up however little they hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_inodes: Option<u64>,
    /// The floor of free inodes, derived from the file system's count; absent with `free_inodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor_inodes: Option<u64>,
    /// RFC 3339 time the alarm went on.
    pub since: String,
    /// The sentence refusals carry.
    pub message: String,
}

/// A prompt scheduled for an agent, delivered as a message from `system`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: i64,
    pub agent: String,
    /// As given: `30s`, an RFC 3339 time, `every:15m` or `cron:EXPR`.
    pub when: String,
    pub text: String,
    /// RFC 3339 next delivery.
    pub next_due: String,
    pub repeating: bool,
    /// operator or manager.
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<String>,
}

/// Derived telemetry over a window, per agent and hive-wide.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSummary {
    /// RFC 3339 start of the window.
    pub since: String,
    pub window_seconds: f64,
    /// Approvals waiting for the operator, hive-wide.
    pub approvals_pending: u64,
    /// The approval queue's length over the window: a point at each change,
    /// and the last at the window's end (now).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals_series: Vec<SeriesPoint>,
    /// Agents whose inbox waits while no turn ran for longer than this are flagged stuck.
    pub stuck_after_seconds: f64,
    pub agents: Vec<AgentStats>,
    /// Today's spend (UTC) against the budgets: the hive's first, then each agent's.
    #[serde(default)]
    pub budgets: Vec<BudgetRow>,
}

/// One value of a series at one time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Unix seconds.
    pub ts: f64,
    pub value: f64,
}

/// One agent's figures over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStats {
    pub agent: String,
    pub turns: u64,
    pub turns_per_minute: f64,
    pub tool_calls_per_turn: f64,
    pub duration_p50_ms: f64,
    pub duration_p95_ms: f64,
    /// ok / retried / failure / cancelled → count.
    pub exit_classes: std::collections::BTreeMap<String, u64>,
    pub inbox_depth_current: u64,
    /// The deepest the inbox was in the window, sampled at every send and
    /// claim (recorded with the next turn's figures), and now.
    pub inbox_depth_max: u64,
    /// Messages sent per turn by recipient class (peer, operator, manager, system).
    pub sent_per_turn: std::collections::BTreeMap<String, f64>,
    /// Messages received per turn by sender class.
    pub received_per_turn: std::collections::BTreeMap<String, f64>,
    /// Tool name → calls in the window.
    pub tool_usage: std::collections::BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_since_last_turn: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes_bytes: Option<u64>,
    /// Notes size change over the window, in bytes.
    pub notes_growth_bytes: i64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// Inbox waiting and no turn for longer than the threshold.
    pub stuck: bool,
    /// One point per turn, for charts.
    pub turns_series: Vec<TurnPoint>,
}

/// One turn, for charts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnPoint {
    /// Unix seconds of the turn's end.
    pub ts: f64,
    pub duration_ms: f64,
    pub tool_calls: f64,
    pub inbox_depth: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes_bytes: Option<f64>,
}

/// An agent's configured model, the operator's override and the model in use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub configured: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_model: Option<String>,
    pub active: String,
    /// The model the next turn takes up, while the running turn still uses `active`
    /// (an override set or cleared mid-turn); absent when nothing waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_at: Option<String>,
}

impl Response {
    /// `{"version":1,"ok":true}`.
    pub fn ok() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            ok: true,
            ..Self::default()
        }
    }

    /// A refusal carrying a sentence the operator can act on.
    pub fn refusal(error: impl Into<String>) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            ok: false,
            error: Some(error.into()),
            ..Self::default()
        }
    }

    /// The response as one JSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("Response always serializes");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mailbox;

    #[test]
    fn bare_success_bytes() {
        assert_eq!(Response::ok().to_line(), b"{\"version\":1,\"ok\":true}\n");
    }

    #[test]
    fn refusal_bytes() {
        let r = Response::refusal("agent \"ghost\" is not managed by this hive");
        assert_eq!(
            String::from_utf8(r.to_line()).unwrap(),
            "{\"version\":1,\"ok\":false,\"error\":\"agent \\\"ghost\\\" is not managed by this hive\"}\n"
        );
    }

    #[test]
    fn empty_roster_bytes() {
        let r = Response {
            agent_statuses: Some(vec![]),
            ..Response::ok()
        };
        assert_eq!(
            r.to_line(),
            b"{\"version\":1,\"ok\":true,\"agent_statuses\":[]}\n"
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let r = Request::from_line(br#"{"cmd":"restart","name":"alice","extra":1}"#).unwrap();
        assert_eq!(
            r,
            Request::Restart(verb::Restart {
                name: AgentName::parse("alice").unwrap()
            })
        );
    }

    #[test]
    fn missing_and_mistyped_fields_are_sentences() {
        let e = Request::from_line(br#"{"cmd":"set_paused","name":"alice"}"#).unwrap_err();
        assert!(e.contains("missing field `paused`"), "{e}");
        let e = Request::from_line(br#"{"cmd":"approve","id":"x"}"#).unwrap_err();
        assert!(e.starts_with("bad \"approve\" request"), "{e}");
        let e = Request::from_line(br#"{"cmd":"fly"}"#).unwrap_err();
        assert!(e.starts_with("unknown cmd \"fly\""), "{e}");
        let e = Request::from_line(b"{nope").unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = Request::from_line(b"\xff\xfe").unwrap_err();
        assert!(e.contains("UTF-8"), "{e}");
        let e = Request::from_line(br#"{"cmd":"restart","name":"../etc"}"#).unwrap_err();
        assert!(e.contains("must start with a lowercase letter"), "{e}");
    }

    #[test]
    fn requests_keep_their_wire_bytes() {
        let alice = AgentName::parse("alice").unwrap();
        let line = |r: Request| serde_json::to_string(&r).unwrap();
        assert_eq!(line(verb::List {}.into()), r#"{"cmd":"list"}"#);
        assert_eq!(
            line(
                verb::Send {
                    to: Mailbox::Agent(alice.clone()),
                    body: "hi".into(),
                    key: None,
                }
                .into()
            ),
            r#"{"cmd":"send","to":"alice","body":"hi"}"#
        );
        assert_eq!(
            line(
                verb::Send {
                    to: Mailbox::Agent(alice.clone()),
                    body: "hi".into(),
                    key: Some("k1".into()),
                }
                .into()
            ),
            r#"{"cmd":"send","to":"alice","body":"hi","key":"k1"}"#
        );
        assert_eq!(
            line(
                verb::Stop {
                    scope: Scope {
                        agent_names: Some(vec![alice.clone()]),
                        all: false
                    },
                    graceful: true
                }
                .into()
            ),
            r#"{"cmd":"stop","scope":{"agent_names":["alice"]},"graceful":true}"#
        );
        assert_eq!(
            line(verb::Recv::default().into()),
            r#"{"cmd":"recv","as":null,"max":null,"wait_ms":null}"#
        );
        let r = Request::from_line(br#"{"cmd":"list","extra":1}"#).unwrap();
        assert_eq!(r, Request::List(verb::List {}));
    }

    #[test]
    fn every_command_names_a_verb() {
        for cmd in Request::COMMANDS {
            let line = format!(r#"{{"cmd":"{cmd}"}}"#);
            match Request::from_line(line.as_bytes()) {
                Ok(r) => assert_eq!(r.cmd(), *cmd),
                // A verb with required fields is refused for them, not as unknown.
                Err(e) => assert!(e.starts_with(&format!("bad {cmd:?} request")), "{e}"),
            }
        }
    }

    #[test]
    fn every_verb_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/host-sock.md"
        ))
        .unwrap();
        for cmd in Request::COMMANDS {
            assert!(
                doc.contains(&format!("**`{cmd}`**")),
                "docs/host-sock.md does not describe `{cmd}`: add it under Verbs"
            );
        }
    }

    #[test]
    fn approval_kinds_and_statuses_keep_their_names() {
        for k in ApprovalKind::KNOWN {
            let v = serde_json::to_value(k).unwrap();
            assert_eq!(v, k.as_str());
            assert_eq!(&serde_json::from_value::<ApprovalKind>(v).unwrap(), k);
            assert_eq!(&ApprovalKind::parse(k.as_str()), k);
        }
        for s in ApprovalStatus::KNOWN {
            let v = serde_json::to_value(s).unwrap();
            assert_eq!(v, s.as_str());
            assert_eq!(&serde_json::from_value::<ApprovalStatus>(v).unwrap(), s);
            assert_eq!(&ApprovalStatus::parse(s.as_str()), s);
        }
        for s in QuestionStatus::KNOWN {
            let v = serde_json::to_value(s).unwrap();
            assert_eq!(v, s.as_str());
            assert_eq!(&serde_json::from_value::<QuestionStatus>(v).unwrap(), s);
        }
        assert_eq!(QuestionStatus::TimedOut.as_str(), "timed_out");
        assert_eq!(ApprovalKind::Spawn.as_str(), "spawn");
        assert_eq!(ApprovalStatus::Denied.as_str(), "denied");
        let odd: ApprovalKind = serde_json::from_str("\"rename_agent\"").unwrap();
        assert_eq!(odd, ApprovalKind::Other("rename_agent".into()));
        assert_eq!(serde_json::to_string(&odd).unwrap(), "\"rename_agent\"");
    }

    #[test]
    fn scope_defaults_to_nothing() {
        let r = Request::from_line(br#"{"cmd":"start","scope":{}}"#).unwrap();
        assert_eq!(
            r,
            Request::Start(verb::Start {
                scope: Scope::default()
            })
        );
    }
}
