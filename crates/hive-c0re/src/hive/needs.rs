//! What waits on the operator: the one list the hive page's "needs you" strip
//! shows (and a CLI could print), computed here once from the store and the
//! status rows.
//!
//! Most urgent first: open questions (they have deadlines), approvals, nodes
//! that stopped heartbeating (one item per node, not one per agent living
//! there), failed and restarting agents, agents parked on a login, paused
//! agents with mail.

use hive_sh4re::AgentState;
use hive_sh4re::host::{ApprovalStatus, NeedItem, NeedsYou, QuestionStatus};

use super::Hive;
use crate::clock::{now_ms, rfc3339};
use crate::error::Result;
use crate::supervisor::MAX_RESTARTS;

impl Hive {
    /// Everything that waits on the operator now.
    pub async fn needs_you(&self) -> Result<NeedsYou> {
        let now = now_ms();
        let mut items = vec![];
        let mut questions = self.store.questions(200).await?;
        questions.retain(|q| q.status(now) == QuestionStatus::Pending);
        questions.sort_by_key(|q| q.deadline);
        items.extend(questions.into_iter().map(|q| NeedItem {
            kind: "question".into(),
            agent: q.agent.clone(),
            id: Some(q.id),
            text: q.question.lines().next().unwrap_or_default().to_owned(),
            since: rfc3339(q.asked_at),
            deadline: Some(rfc3339(q.deadline)),
            node: None,
        }));
        for a in self.store.approvals().await? {
            if a.status != ApprovalStatus::Pending {
                continue;
            }
            let what = a.description.as_deref().unwrap_or(&a.commit_ref);
            items.push(NeedItem {
                kind: "approval".into(),
                agent: a.agent.clone(),
                id: Some(a.id),
                text: format!("{} {}: {what}", a.kind.as_str(), a.agent),
                since: rfc3339(a.created_at),
                deadline: None,
                node: None,
            });
        }
        let mut down: Vec<(String, i64)> = self.down_nodes().await?.into_iter().collect();
        down.sort();
        let rows = self.status_rows().await?;
        for (node, last) in down {
            let n = rows
                .iter()
                .filter(|r| r.node.as_deref() == Some(node.as_str()))
                .count();
            items.push(NeedItem {
                kind: "node_down".into(),
                agent: String::new(),
                id: None,
                text: match n {
                    1 => format!("node {node} stopped heartbeating: its 1 agent waits"),
                    n => format!("node {node} stopped heartbeating: its {n} agents wait"),
                },
                since: rfc3339(last),
                deadline: None,
                node: Some(node),
            });
        }
        let mut agents = vec![];
        for r in &rows {
            let (kind, text) = match r.health.as_deref() {
                Some("failed") => (
                    "failed",
                    format!(
                        "failed after {} crashes: {}",
                        r.restarts.max(1),
                        r.crash_exit.as_deref().unwrap_or("its harness keeps dying")
                    ),
                ),
                Some("restarting") => (
                    "restarting",
                    format!(
                        "restarting after crash {} of {MAX_RESTARTS}: {}",
                        r.restarts,
                        r.crash_exit.as_deref().unwrap_or("its harness died")
                    ),
                ),
                _ if r.needs_login => (
                    "needs_login",
                    r.login_reason
                        .clone()
                        .unwrap_or_else(|| "needs a login: no usable claude credentials".into()),
                ),
                _ if r.state == AgentState::OverBudget.as_str() => (
                    "over_budget",
                    match &r.state_detail {
                        Some(d) => format!("over budget: {d}"),
                        None => {
                            "over budget: held until the budget is raised or the day ends".into()
                        }
                    },
                ),
                _ if r.paused && r.inbox_depth > 0 => (
                    "paused_mail",
                    match r.inbox_depth {
                        1 => "paused with a message waiting".to_owned(),
                        n => format!("paused with {n} messages waiting"),
                    },
                ),
                _ => continue,
            };
            agents.push(NeedItem {
                kind: kind.into(),
                agent: r.name.clone(),
                id: None,
                text,
                since: r.state_since.clone(),
                deadline: None,
                node: None,
            });
        }
        let rank = |k: &str| {
            [
                "failed",
                "restarting",
                "needs_login",
                "over_budget",
                "paused_mail",
            ]
            .iter()
            .position(|x| *x == k)
            .unwrap_or(usize::MAX)
        };
        agents.sort_by_key(|i| rank(&i.kind));
        items.extend(agents);
        Ok(NeedsYou { items })
    }
}
