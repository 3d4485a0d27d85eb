//! What the hive shows of its agents: the status rows host.sock, agent.sock's
//! `status` tool and the dashboard all read, each agent's model, and what an
//! agent says of itself (its one-line status, that it needs a login).
//!
//! `needs_update` says that an agent's config repo has moved past the config
//! deployed from it (the manager committed, nobody approved yet). Reading a
//! repo's head runs git on a tree the manager writes, so it is never done
//! while answering: [`watch_config_heads`] reads the heads of the agents at
//! home on this node (their repos are on its disk) in the background and
//! stores them (`agents.config_head`, and where a pending approval's repo
//! moved on); status rows on every node compare with what was stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::event::ContainerCrash;
use hive_sh4re::host::{AgentStatusRow, ModelInfo};
use hive_sh4re::limits::STATUS_MAX_CHARS;
use hive_sh4re::{AgentName, AgentState};

use super::{Hive, UNREADABLE_CONFIG};
use crate::broker::Change;
use crate::clock::{day_of, now_ms, rfc3339};
use crate::config_repo::{self, Repo};
use crate::error::{Error, Result};
use crate::store::{AgentFacts, AgentRow, EventRow};
use crate::supervisor::healthy_after;

/// A crash older than this no longer shows in its agent's row, unless it left the agent failed.
const RECENT_CRASH_MS: i64 = 10 * 60 * 1000;

/// What a status row says of the agent's last crash.
#[derive(Default)]
struct CrashView {
    health: Option<String>,
    restarts: u32,
    exit: Option<String>,
    tail: Option<String>,
}

/// How often the config repos' heads are read unless `HIVE_CONFIG_POLL_SECS` says otherwise.
pub const CONFIG_POLL: Duration = Duration::from_secs(10);

/// The poll interval in force: `HIVE_CONFIG_POLL_SECS` (for tests), else [`CONFIG_POLL`].
fn config_poll() -> Duration {
    crate::clock::secs_from_env("HIVE_CONFIG_POLL_SECS", CONFIG_POLL)
}

/// Reads every agent's config repo head, at start and then every [`CONFIG_POLL`], until shutdown.
pub async fn watch_config_heads(hive: Arc<Hive>) {
    loop {
        hive.read_config_heads().await;
        hive.read_approval_heads().await;
        tokio::select! {
            _ = tokio::time::sleep(config_poll()) => {}
            _ = hive.shutdown.cancelled() => return,
        }
    }
}

impl Hive {
    /// Names of all agents.
    pub async fn list(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .agents()
            .await?
            .into_iter()
            .map(|a| a.name)
            .collect())
    }

    /// A status row for each agent, as the operator reads them.
    pub async fn status_rows(&self) -> Result<Vec<AgentStatusRow>> {
        self.rows(true).await
    }

    /// A status row for each agent, as agents read them (their `status`):
    /// without their crashes, which are not read at all. A crash's log tail
    /// is redacted with every secret's value for the operator: read back by
    /// the agent that wrote the log, it told which of its guesses is one (see
    /// `hive/supervision.rs`); and an agent may ask at will, so it is spared
    /// reading a tail of up to 64 KiB per agent each time.
    pub async fn status_rows_for_agents(&self) -> Result<Vec<AgentStatusRow>> {
        self.rows(false).await
    }

    async fn rows(&self, crashes: bool) -> Result<Vec<AgentStatusRow>> {
        let now = now_ms();
        let facts = self
            .store
            .agent_facts(None, now, day_of(now), crashes)
            .await?;
        let none = AgentFacts::default();
        let agents = self.store.agents().await?;
        let down = self.down_nodes().await?;
        let mut rows = Vec::with_capacity(agents.len());
        for a in &agents {
            rows.push(
                self.status_row_of(a, facts.get(&a.name).unwrap_or(&none), &down)
                    .await,
            );
        }
        Ok(rows)
    }

    /// The status row of one agent.
    pub async fn status_row(&self, name: &AgentName) -> Result<AgentStatusRow> {
        let row = self.agent_row(name).await?;
        let now = now_ms();
        let mut facts = self
            .store
            .agent_facts(Some(name.as_str()), now, day_of(now), true)
            .await?;
        let facts = facts.remove(name.as_str()).unwrap_or_default();
        let down = self.down_nodes().await?;
        Ok(self.status_row_of(&row, &facts, &down).await)
    }

    /// Reads the head of each config repo this node keeps ([`Hive::repo_node`]),
    /// off the runtime with a time limit, and stores it when it moved, so
    /// every node's status rows show it; an agent whose head moved is announced.
    /// An agent made on another node, whose repo is missing here, gets one
    /// holding its deployed config, whose commit becomes its deployed one
    /// when it was deployed from none. A missing repo (of an agent made
    /// here) has no head; one that cannot be read keeps the last.
    async fn read_config_heads(self: &Arc<Self>) {
        let Ok(agents) = self.store.agents().await else {
            return;
        };
        let kept = self.repos_kept_here(&agents);
        self.heads.keep_only(
            &kept
                .iter()
                .filter_map(|a| AgentName::parse(&a.name).ok())
                .map(|n| self.paths.config_repo(&n))
                .collect(),
        );
        let manager = agents
            .iter()
            .find(|a| a.name == AgentName::MANAGER)
            .map(|m| m.uid_base);
        for a in kept {
            let Ok(name) = AgentName::parse(&a.name) else {
                continue;
            };
            let elsewhere = !super::nodes::runs_here(&self.store, a, self.node());
            let (hive, n, text) = (self.clone(), name.clone(), a.config_toml.clone());
            let head =
                crate::blocking::run(&format!("reading {name}'s config repo head"), move || {
                    let repo = hive.paths.config_repo(&n);
                    match Repo::open(&repo)? {
                        Some(r) => Ok((hive.heads.head(&r).map(Some)?, None)),
                        None if elsewhere => {
                            let made = hive.ensure_repo(&n, &text, manager, false)?;
                            Ok((made.clone(), made))
                        }
                        None => Ok((None, None)),
                    }
                })
                .await;
            let (head, made) = match head {
                Ok(h) => h,
                Err(e) => {
                    tracing::debug!(agent = %name, "{e}");
                    continue;
                }
            };
            if let Some(sha) = &made {
                tracing::info!(agent = %name, home = ?a.node, "made the config repo of another node's agent");
                if let Err(e) = self.store.adopt_deployed_sha(&a.name, sha).await {
                    tracing::warn!(agent = %name, "could not store its config repo's commit: {e}");
                }
            }
            if a.config_head == head && made.is_none() {
                continue;
            }
            match self.store.set_config_head(&a.name, head.as_deref()).await {
                Ok(moved) if moved || made.is_some() => {
                    self.broker.publish(Change::Agent(a.name.clone()))
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(agent = %name, "could not store its config repo head: {e}")
                }
            }
        }
    }

    /// True when the agent's config repo head (as its home node last read it) is not the deployed commit.
    fn needs_update(a: &AgentRow) -> bool {
        a.config_head
            .as_deref()
            .is_some_and(|head| a.deployed_sha.as_deref() != Some(head))
    }

    /// The agent's health from its last `container_crash` event: failed, or
    /// restarting — supervised and either down after a crash, or up again
    /// but idle within [`healthy_after`] of it (supervision still counts the
    /// crashes: a harness that dies at once would read idle between deaths);
    /// with the restart count and the log tail the crash report quoted.
    fn crash_view(&self, a: &AgentRow, running: bool, last: Option<&EventRow>) -> CrashView {
        let age = last.as_ref().map(|e| now_ms() - e.ts);
        let crash = last.as_ref().and_then(|e| {
            let recent = now_ms() - e.ts < RECENT_CRASH_MS;
            let p: ContainerCrash = serde_json::from_str(&e.payload_json).ok()?;
            (recent || a.failed).then_some(p)
        });
        let looping = crash.as_ref().is_some_and(|c| !c.gave_up)
            && age.is_some_and(|ms| ms < healthy_after().as_millis() as i64);
        let health = if a.failed {
            Some("failed")
        } else if self.supervisor.is_supervised(&a.name)
            && crash.as_ref().is_some_and(|c| !c.gave_up)
            && (!running || (looping && a.state == AgentState::Idle))
        {
            Some("restarting")
        } else {
            None
        };
        let Some(c) = crash else {
            return CrashView {
                health: health.map(str::to_owned),
                ..CrashView::default()
            };
        };
        CrashView {
            health: health.map(str::to_owned),
            restarts: c.attempt,
            exit: Some(c.exit),
            tail: Some(c.log_tail).filter(|t| !t.is_empty()),
        }
    }

    /// The model a status row shows: the one a turn under way runs, else the next turn's.
    fn active_model(&self, a: &AgentRow) -> String {
        match (a.state, &a.active_model) {
            (AgentState::Thinking | AgentState::Retrying, Some(m)) => m.clone(),
            _ => self
                .effective_model(a)
                .unwrap_or_else(|_| UNREADABLE_CONFIG.to_owned()),
        }
    }

    /// `down` holds the other nodes that are not alive (see [`Hive::down_nodes`]):
    /// an agent living on one shows `node_down` since its node's last heartbeat.
    async fn status_row_of(
        &self,
        a: &AgentRow,
        facts: &AgentFacts,
        down: &HashMap<String, i64>,
    ) -> AgentStatusRow {
        let running = self.supervisor.is_running(&a.name);
        let node_down = a
            .node
            .as_ref()
            .and_then(|n| down.get(n).map(|last| (n, *last)));
        let crash = self.crash_view(a, running, facts.last_crash.as_ref());
        let active_model = self.active_model(a);
        let napping = self.nap_left(&a.name, a.nap_until, now_ms()).is_some();
        let inbox_depth = facts.inbox_depth;
        let mut trouble = self
            .api
            .trouble(&a.name)
            .filter(|_| matches!(a.state, AgentState::Retrying | AgentState::Waiting));
        let mut state = if napping && a.state == AgentState::Idle {
            AgentState::Napping
        } else {
            a.state
        };
        // Messages held back by the hive-wide API backoff: say so rather than idle.
        if let (AgentState::Idle, Some(next), true) = (state, self.api.next_try(), inbox_depth > 0)
        {
            state = AgentState::Waiting;
            trouble = Some(crate::api_health::Trouble {
                detail: "the hive backs off from the model API".into(),
                retry_at: Some(next),
            });
        }
        // In line for a turn slot: its age is its oldest waiting message's, the line's order.
        let queued = self
            .admission
            .queued(&a.name)
            .filter(|_| state == AgentState::Idle);
        let mut state_since = a.state_since;
        if let Some((since, _)) = queued {
            state = AgentState::Queued;
            state_since = since;
        }
        let state_detail = trouble.as_ref().map(|t| match t.retry_at {
            Some(at) => {
                let left = ((at - now_ms()).max(0) + 999) / 1000;
                format!("retry in {left}s · {}", t.detail)
            }
            None => t.detail.clone(),
        });
        // Held by a budget: the spend that holds it, as paused shows why.
        let state_detail = match state {
            AgentState::OverBudget => self.over_budget_detail(a).await,
            _ => state_detail,
        };
        // Its home node (another one: `down` never holds this node) is silent: say that, not `stopped`.
        let (shown, state_since, state_detail) = match node_down {
            Some((node, last)) => (
                AgentState::NodeDown.as_str().to_owned(),
                last,
                Some(format!("no heartbeat from {node}")),
            ),
            None if running => (state.as_str().to_owned(), state_since, state_detail),
            // Supervised but not running for want of its lease: say why.
            None => (
                "stopped".to_owned(),
                state_since,
                self.supervisor.waiting_for_lease(&a.name),
            ),
        };
        AgentStatusRow {
            name: a.name.clone(),
            running,
            failed: a.failed,
            needs_update: Self::needs_update(a),
            needs_login: a.needs_login,
            deployed_sha: a.deployed_sha.as_deref().map(config_repo::short),
            pending_reminders: facts.schedules,
            paused: a.paused,
            parent: a.parent.clone(),
            active_model,
            status_text: a.status_text.clone().filter(|_| running),
            status_set_at: a
                .status_set_at
                .filter(|_| running && a.status_text.is_some())
                .map(rfc3339),
            url: self
                .settings
                .dashboard_home
                .as_ref()
                .map(|h| format!("{h}agents/{}", a.name)),
            state: shown,
            state_since: rfc3339(state_since),
            state_detail,
            retry_at: trouble
                .and_then(|t| t.retry_at)
                .filter(|_| running)
                .map(rfc3339),
            login_reason: self.api.login_reason(&a.name).filter(|_| a.needs_login),
            inbox_depth,
            last_turn_at: a.last_turn_at.map(rfc3339),
            runtime: self.runtime.kind().as_str().to_owned(),
            isolated: self.runtime.isolated(),
            nap_until: a.nap_until.filter(|_| napping).map(rfc3339),
            health: crash.health,
            restarts: crash.restarts,
            crash_exit: crash.exit,
            crash_tail: crash.tail,
            question: facts.open_question,
            queue_position: queued
                .filter(|_| running)
                .map(|(_, at)| at.try_into().unwrap_or(u32::MAX)),
            budget: self.own_budget(a, facts),
            node: a.node.clone(),
            state_bytes: self.state_size(&a.name).map(|u| u.bytes),
        }
    }

    /// The agent's configured, overridden and active model, and the one
    /// queued for its next turn.
    pub async fn model_info(&self, name: &AgentName) -> Result<ModelInfo> {
        let row = self.agent_row(name).await?;
        let active = self.active_model(&row);
        // A turn keeps the model it started with: what changed meanwhile waits.
        let queued = match self.effective_model(&row) {
            Ok(next) if row.state == AgentState::Thinking && next != active => Some(next),
            _ => None,
        };
        Ok(ModelInfo {
            configured: self
                .config_of(&row)
                .map(|c| c.model)
                .unwrap_or_else(|_| UNREADABLE_CONFIG.to_owned()),
            override_model: row.model_override.clone(),
            active,
            queued,
            switched_at: row.model_switched_at.map(rfc3339),
        })
    }

    /// Records whether the agent's claude has usable credentials (its harness says).
    pub async fn set_needs_login(&self, agent: &AgentName, needed: bool) -> Result<()> {
        self.store.set_needs_login(agent.as_str(), needed).await?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }

    /// Sets the agent's own one-line status (its `set_status` tool): the first
    /// line of `text`, trimmed, at most [`STATUS_MAX_CHARS`] characters.
    pub async fn set_status_text(&self, agent: &AgentName, text: &str) -> Result<()> {
        let text = text.trim();
        if text.chars().count() > STATUS_MAX_CHARS {
            return Err(Error::refused(format!(
                "a status is one line of at most {STATUS_MAX_CHARS} characters: shorten it"
            )));
        }
        if !self.status_rate.allow(agent.as_str()) {
            return Err(Error::refused(format!(
                "{agent} set its status {} times this minute, the most hive-c0re takes: set it when what you do changes",
                hive_sh4re::limits::STATUS_PER_MINUTE
            )));
        }
        // Every agent's status tool shows it to its model, and the dashboard
        // to the operator: what shows nothing (tag characters spell words a
        // model reads and no screen draws) is written out, for both to read alike.
        let line = hive_sh4re::text::visible(text.lines().next().unwrap_or(""));
        // Written out, it may have grown past the bound the agent met.
        let line = hive_sh4re::text::clip(&line, STATUS_MAX_CHARS);
        self.store.set_status_text(agent.as_str(), &line).await?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hive_sh4re::config::AgentConfig;

    use super::*;

    #[tokio::test]
    async fn a_model_change_during_a_turn_is_queued_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        let config = AgentConfig {
            model: "haiku".to_owned(),
            ..AgentConfig::default()
        };
        hive.add_stopped(&alice, &config.to_toml()).await.unwrap();
        let idle = hive.set_model(&alice, Some("opus")).await.unwrap();
        assert_eq!((idle.active.as_str(), idle.queued), ("opus", None));

        hive.set_state(&alice, AgentState::Thinking, Some("opus"))
            .await
            .unwrap();
        let m = hive.set_model(&alice, Some("sonnet")).await.unwrap();
        assert_eq!(m.active, "opus", "the running turn keeps its model");
        assert_eq!(m.queued.as_deref(), Some("sonnet"));
        // Clearing the override mid-turn queues the configured model.
        let m = hive.set_model(&alice, None).await.unwrap();
        assert_eq!(m.queued.as_deref(), Some("haiku"));
        let m = hive.set_model(&alice, Some("opus")).await.unwrap();
        assert_eq!(m.queued, None, "the turn's own model is nothing to queue");

        hive.set_model(&alice, Some("sonnet")).await.unwrap();
        hive.set_state(&alice, AgentState::Idle, None)
            .await
            .unwrap();
        let m = hive.model_info(&alice).await.unwrap();
        assert_eq!((m.active.as_str(), m.queued), ("sonnet", None));
    }

    #[tokio::test]
    async fn a_config_is_parsed_again_when_its_stored_text_changes() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        let haiku = AgentConfig {
            model: "haiku".to_owned(),
            ..AgentConfig::default()
        };
        hive.add_stopped(&alice, &haiku.to_toml()).await.unwrap();
        assert_eq!(hive.status_row(&alice).await.unwrap().active_model, "haiku");
        let opus = AgentConfig {
            model: "opus".to_owned(),
            ..haiku
        };
        hive.store
            .set_config("alice", &opus.to_toml(), Some("abc"))
            .await
            .unwrap();
        assert_eq!(hive.status_row(&alice).await.unwrap().active_model, "opus");
        // A stored text that stopped parsing is refused, whatever was parsed before.
        hive.store
            .set_config("alice", "model = [", Some("def"))
            .await
            .unwrap();
        assert_eq!(
            hive.status_row(&alice).await.unwrap().active_model,
            UNREADABLE_CONFIG
        );
        let row = hive.agent_row(&alice).await.unwrap();
        let e = hive.config_of(&row).unwrap_err().to_string();
        assert!(e.contains("deployed config cannot be read"), "{e}");
    }
}
