//! One request struct per host.sock verb: the fields after `"cmd"`.
//!
//! [`super::Request`] wraps each in a variant of the same name, so a handler
//! takes exactly its verb's fields. Grouped as the daemon's handler files are.

use serde::{Deserialize, Serialize};

use super::Scope;
use crate::secret::{SecretName, SecretValue};
use crate::{AgentName, Mailbox};

// Agents: list, status, lifecycle, pause.

/// `list`: names of all agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct List {}

/// `agent_status`: a status row per agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {}

/// `subscribe_agent_status`: an ack, then a one-row `agent_statuses` line per change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscribeAgentStatus {}

/// `set_paused`: park or resume an agent's turn loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetPaused {
    pub name: AgentName,
    pub paused: bool,
}

/// `start`: start agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub scope: Scope,
}

/// `stop`: stop agents; `graceful` lets the current turn finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    pub scope: Scope,
    #[serde(default)]
    pub graceful: bool,
}

/// `restart`: stop and start one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    pub name: AgentName,
}

/// `spawn` *ours*: create an agent (state, default config) and start it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spawn {
    pub name: AgentName,
    #[serde(default)]
    pub model: Option<String>,
    /// The agent's home node; absent: the node that handles the request.
    /// Another node is asked through the store, and must be up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::NodeName>,
}

/// `kill` *ours*: stop an agent: SIGTERM, then SIGKILL after a grace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    pub name: AgentName,
}

/// `destroy` *ours*: remove an agent; its state is kept unless `purge`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destroy {
    pub name: AgentName,
    #[serde(default)]
    pub purge: bool,
}

// Messages and history.

/// `send` *ours*: a message from the operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Send {
    pub to: Mailbox,
    pub body: String,
    /// A key the client picks for this send (at most
    /// [`crate::limits::MAX_SEND_KEY_BYTES`]): a send repeated under it after
    /// the database was out of reach is stored once, even when the first
    /// try's commit went through unanswered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `recv` *ours*: read and acknowledge an inbox (the operator's by default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recv {
    #[serde(default, rename = "as")]
    pub as_: Option<Mailbox>,
    #[serde(default)]
    pub max: Option<u32>,
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// `events` *ours*: an agent's events, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub agent: AgentName,
    #[serde(default)]
    pub since: Option<i64>,
    #[serde(default)]
    pub before: Option<i64>,
    #[serde(default)]
    pub limit: Option<u32>,
    /// Keep the connection open and stream new events as they come.
    #[serde(default)]
    pub follow: bool,
}

// Approvals and questions.

/// `pending`: every approval, whatever its status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pending {}

/// `approval_diff` *ours*: what approving would change, the approval's pinned
/// `agent.toml` against the deployed one, as a unified diff (`diff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalDiff {
    pub id: i64,
}

/// `approve`: approve an approval and carry it out now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approve {
    pub id: i64,
    /// *Ours*: the `diff_id` of the diff the operator read; when given and
    /// the diff is no longer that (another approval deployed meanwhile),
    /// approving is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
}

/// `deny`: deny an approval; `note` is told to the requester.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deny {
    pub id: i64,
    #[serde(default)]
    pub note: Option<String>,
}

/// `init_config` *ours*: create a future agent's config repo from the default
/// config (as the manager's `request_init_config` does); edit and commit it,
/// then `request_spawn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    pub name: AgentName,
}

/// `config_show` *ours*: `agent.toml` at the head of an agent's config repo (`config`, `sha`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigShow {
    pub name: AgentName,
}

/// `config_commit` *ours*: the operator's edit of a config repo. Commits
/// `text` as `agent.toml` on top of the repo's head (as the repo's owner,
/// running nothing the repo names) and answers the commit (`sha`); nothing is
/// deployed until an approval of it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigCommit {
    pub name: AgentName,
    pub text: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// `request_spawn` *ours*: queue an approval to create and start an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestSpawn {
    pub name: AgentName,
    #[serde(default)]
    pub description: Option<String>,
    /// The new agent's home node; absent: the node that approves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<crate::NodeName>,
}

/// `request_apply_commit` *ours*: queue an approval to deploy a config commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestApplyCommit {
    pub agent: AgentName,
    pub sha: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `questions` *ours*: the manager's questions to the operator (pending and recent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Questions {}

/// `needs_you` *ours*: everything that waits on the operator, most urgent first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NeedsYou {}

/// `answer` *ours*: answer an operator question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub id: i64,
    pub answer: String,
}

/// `cancel_question` *ours*: withdraw a pending question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelQuestion {
    pub id: i64,
}

// Steering, schedules, URLs and telemetry.

/// `urls`: the hive's URLs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Urls {}

/// `logout` *ours*: log every browser out of this node's dashboard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Logout {}

/// `cancel` *ours*: stop the agent's current turn (or nap).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancel {
    pub name: AgentName,
}

/// `compact` *ours*: compact the agent's claude session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compact {
    pub name: AgentName,
}

/// `compact_notes` *ours*: rewrite the agent's `/state/notes.md` shorter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactNotes {
    pub name: AgentName,
}

/// `new_session` *ours*: start the agent's next turn in a fresh claude session
/// instead of resuming its current one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSession {
    pub name: AgentName,
}

/// `set_model` *ours*: override the agent's model; without `model` it only
/// answers the current one (clearing an override is `model: "default"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetModel {
    pub name: AgentName,
    #[serde(default)]
    pub model: Option<String>,
}

/// `stats` *ours*: derived telemetry of one agent or the whole hive since `since_seconds` ago.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    #[serde(default)]
    pub agent: Option<AgentName>,
    #[serde(default)]
    pub since_seconds: Option<u64>,
}

/// `schedule_add` *ours*: schedule a prompt to an agent: once (`30s`, an RFC
/// 3339 time) or repeating (`every:15m`, `cron:EXPR`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleAdd {
    pub agent: AgentName,
    pub when: String,
    pub text: String,
}

/// `schedule_list` *ours*: every schedule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleList {}

/// `schedule_rm` *ours*: remove a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRm {
    pub id: i64,
}

// The operator's shell.

/// `shell` *ours*: a PTY shell in the agent's container: an ack, then a
/// framed byte stream (see [`crate::shell`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shell {
    pub name: AgentName,
    #[serde(default)]
    pub rows: Option<u16>,
    #[serde(default)]
    pub cols: Option<u16>,
    /// The client's `TERM` (default `xterm-256color`).
    #[serde(default)]
    pub term: Option<String>,
}

// Secrets.

/// `secret_set` *ours*: store a secret for every agent's claude (or, with
/// `agent`, for that agent's, over a hive-wide one of the same name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretSet {
    pub name: SecretName,
    #[serde(default)]
    pub agent: Option<AgentName>,
    pub value: SecretValue,
}

/// `secret_list` *ours*: every secret's name, scope and time set; never a value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecretList {}

/// `secret_rm` *ours*: remove a secret (hive-wide, or the agent's own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretRm {
    pub name: SecretName,
    #[serde(default)]
    pub agent: Option<AgentName>,
}

// Notifications.

/// `notifications` *ours*: the newest notifications (only unread ones with `unread`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notifications {
    #[serde(default)]
    pub unread: bool,
    #[serde(default)]
    pub limit: Option<u32>,
}

/// `notifications_read` *ours*: mark one notification read (`id`), or every one (`all`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotificationsRead {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub all: bool,
}

/// `webhooks` *ours*: each configured webhook's delivery (pending, attempts, last error).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Webhooks {}

/// `nodes` *ours*: every node of the hive (hive-c0re daemon) with its
/// heartbeat, whether it is alive, and how many agents it is home to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nodes {}

// Budgets.

/// `budget_set` *ours*: change a daily budget for the rest of today (UTC):
/// `usd` and/or `tokens` set today's limits (the other stays as configured),
/// `reset` lifts the budget until the day ends. Without `agent`, the hive's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetSet {
    #[serde(default)]
    pub agent: Option<AgentName>,
    #[serde(default)]
    pub usd: Option<f64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub reset: bool,
}

/// `budget_list` *ours*: today's spend against every budget, the hive's first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetList {}
