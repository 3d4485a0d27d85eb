//! Notifications: the moments the operator is needed (a message, a question,
//! an approval, a crash...), stored by hive-c0re, listed by host.sock and the
//! dashboard, and pushed to the operator's webhooks.
//!
//! The kinds are defined here once; `web/src/notifications.js` names the same
//! ones for the browser's per-kind choice.

use serde::{Deserialize, Serialize};

/// Longest text a notification keeps, in characters; agent-provided text is cut there.
pub const TEXT_MAX_CHARS: usize = 500;

/// Why the operator is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// An agent sent a message to `operator`.
    Message,
    /// The manager asked the operator a question (the text holds its deadline).
    Question,
    /// An approval waits for the operator.
    Approval,
    /// An agent's harness crashed (it restarts by itself).
    Crashed,
    /// An agent's harness crashed too often and stays stopped.
    Failed,
    /// An agent spent 80 % of a budget.
    BudgetWarning,
    /// An agent spent its whole budget and is held.
    OverBudget,
    /// An agent's model API credentials were refused.
    NeedsLogin,
    /// A node of the hive stopped answering, or could not use the database for a while.
    NodeDown,
    /// A node's disk (its state's file system) is nearly full, and the hive
    /// refuses new messages until there is room; or there is room again; or
    /// an agent's files passed the hive's `state_quota` and it was stopped.
    DiskFull,
    /// An agent's turns keep failing (claude cannot start, the model API
    /// refuses it, its turns run out of time): its messages go back to be
    /// tried again, and again.
    TurnsFailing,
    /// A webhook has failed to deliver for several minutes: what it should
    /// carry waits for it (told through the other webhooks and the bell).
    WebhookFailing,
    /// Schedules the manager made were removed instead of firing: the
    /// manager may no longer send to their agents, or is gone.
    ScheduleRemoved,
    /// An agent's container passed its memory bound and the kernel killed
    /// processes in it (its turn, most likely).
    OutOfMemory,
    /// A task of hive-c0re itself panicked (a bug): an essential loop was
    /// started again, or one connection was closed. Told at most once in
    /// ten minutes per task, with how many since.
    InternalError,
}

impl NotificationKind {
    /// Every kind, in the order the dashboard lists them.
    pub const ALL: [Self; 15] = [
        Self::Message,
        Self::Question,
        Self::Approval,
        Self::Crashed,
        Self::Failed,
        Self::BudgetWarning,
        Self::OverBudget,
        Self::NeedsLogin,
        Self::NodeDown,
        Self::DiskFull,
        Self::TurnsFailing,
        Self::WebhookFailing,
        Self::ScheduleRemoved,
        Self::OutOfMemory,
        Self::InternalError,
    ];

    /// The name on the wire, in the store and in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Question => "question",
            Self::Approval => "approval",
            Self::Crashed => "crashed",
            Self::Failed => "failed",
            Self::BudgetWarning => "budget_warning",
            Self::OverBudget => "over_budget",
            Self::NeedsLogin => "needs_login",
            Self::NodeDown => "node_down",
            Self::DiskFull => "disk_full",
            Self::TurnsFailing => "turns_failing",
            Self::WebhookFailing => "webhook_failing",
            Self::ScheduleRemoved => "schedule_removed",
            Self::OutOfMemory => "out_of_memory",
            Self::InternalError => "internal_error",
        }
    }

    /// Reads a name; None if this version does not know it.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A short title for a push (ntfy's `Title`, the first words of a chat line).
    pub fn title(self) -> &'static str {
        match self {
            Self::Message => "Message to the operator",
            Self::Question => "Question for the operator",
            Self::Approval => "Approval waiting",
            Self::Crashed => "Agent crashed",
            Self::Failed => "Agent failed",
            Self::BudgetWarning => "Budget at 80 %",
            Self::OverBudget => "Over budget",
            Self::NeedsLogin => "Agent needs a login",
            Self::NodeDown => "Node down",
            Self::DiskFull => "Disk nearly full",
            Self::TurnsFailing => "Turns keep failing",
            Self::WebhookFailing => "Webhook failing",
            Self::ScheduleRemoved => "Schedule removed",
            Self::OutOfMemory => "Agent out of memory",
            Self::InternalError => "hive-c0re fault",
        }
    }

    /// True for what an agent causes at will (a message to the operator, a
    /// question): the hive holds back a burst of these per agent, and drops
    /// them (unread or not) before the hive's own when the bell is over its cap.
    pub fn at_will(self) -> bool {
        matches!(self, Self::Message | Self::Question)
    }

    /// True for the moments that stop work until the operator acts (ntfy's high priority).
    pub fn urgent(self) -> bool {
        matches!(
            self,
            Self::Failed
                | Self::OverBudget
                | Self::NeedsLogin
                | Self::NodeDown
                | Self::DiskFull
                | Self::TurnsFailing
                | Self::InternalError
        )
    }
}

impl std::fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored notification, as host.sock and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: i64,
    /// RFC 3339 UTC.
    pub ts: String,
    pub kind: NotificationKind,
    /// The agent it is about, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Plain text (agent-provided words included): render it as text, never as HTML.
    pub text: String,
    /// The dashboard path of the item (`/agents/NAME`, `/#approvals`).
    pub link: String,
    pub read: bool,
}

/// How a webhook's requests look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// POST of the notification as JSON, signed (`X-Hyperhive-Signature`).
    Json,
    /// ntfy: a plain-text body and `Title`/`Priority`/`Tags`/`Click` headers.
    Ntfy,
    /// A Slack-compatible `{"text": ...}`.
    Slack,
    /// A Matrix `m.room.message` through the client-server API.
    Matrix,
}

/// One webhook's delivery, as `webhooks` and the dashboard show it (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookStatus {
    /// Its name in the config (`webhook N` when it has none).
    pub name: String,
    pub format: WebhookFormat,
    /// Scheme, host and path of its URL (no query, no user info).
    pub target: String,
    /// Notifications waiting to be delivered to it.
    pub pending: u64,
    /// Most attempts any waiting delivery has made.
    pub attempts: u32,
    /// The last failure, if the newest attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339 UTC time of the last delivery that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ok: Option<String>,
}

/// What host.sock's `notifications` and `GET /api/notifications` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationList {
    /// Newest first.
    pub notifications: Vec<Notification>,
    /// Unread ones in the store (not only in this page).
    pub unread: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_back_as_written() {
        for k in NotificationKind::ALL {
            assert_eq!(NotificationKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(NotificationKind::parse("nope"), None);
    }

    #[test]
    fn the_web_front_end_lists_the_same_kinds() {
        let js = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../web/src/notifications.js"
        ))
        .unwrap();
        let table = js
            .split_once("export const KINDS = {")
            .and_then(|(_, rest)| rest.split_once("};"))
            .expect("web/src/notifications.js declares `export const KINDS = {...};`")
            .0;
        let js_kinds: Vec<&str> = table
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, _)| k.trim())
            .collect();
        let rust_kinds: Vec<&str> = NotificationKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            js_kinds, rust_kinds,
            "web/src/notifications.js's KINDS must name hive_sh4re::notification::NotificationKind::ALL, in order"
        );
    }
}
