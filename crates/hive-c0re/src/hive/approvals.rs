//! Approvals: what the manager (or operator) proposes, and what approving does.
//!
//! Nothing proposed takes effect before the operator approves it. An
//! approval is decided once; approving runs its action at once, and an
//! action that fails marks the approval `failed` with the reason, leaving
//! the hive as it was.

use std::sync::Arc;

use hive_sh4re::AgentName;
use hive_sh4re::config::AgentConfig;
use hive_sh4re::host::Approval;
use serde::{Deserialize, Serialize};

use crate::broker::Change;
use crate::clock::rfc3339;
use crate::config_repo::{self, Repo};
use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::store::{ApprovalRow, NewApproval};

/// What an approval carries in its `payload_json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Payload {
    /// The agent that asked (a spawn's parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requested_by: Option<String>,
    /// The commit an `apply_commit` names, resolved when it was requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fetched_sha: Option<String>,
    /// The exact `agent.toml` text pinned when the approval was requested: the
    /// diff shows it and approving deploys it, whatever the repo says later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config_toml: Option<String>,
}

impl Payload {
    fn of(a: &ApprovalRow) -> Self {
        serde_json::from_str(&a.payload_json).unwrap_or_default()
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a payload always serializes")
    }
}

/// The `agent.toml` text an approval pinned, or a refusal for one that pinned none.
fn pinned(a: &ApprovalRow) -> Result<String> {
    Payload::of(a).config_toml.ok_or_else(|| {
        Error::refused(format!(
            "approval #{} holds no reviewed config (an older hive-c0re queued it): deny it and request it again",
            a.id
        ))
    })
}

impl Hive {
    /// Creates the config repo of a future agent from the template; returns its host path.
    pub async fn init_config(self: &Arc<Self>, name: &AgentName) -> Result<std::path::PathBuf> {
        if self.store.agent(name.as_str())?.is_some() {
            return Err(Error::refused(format!(
                "agent {name} exists already: edit its config repo and request_apply_commit"
            )));
        }
        let text = crate::hive::default_config(name).to_toml();
        let (hive, n) = (self.clone(), name.clone());
        crate::blocking::run(&format!("creating {name}'s config repo"), move || {
            hive.ensure_repo(&n, &text)
        })
        .await?;
        Ok(self.paths.config_repo(name))
    }

    /// Where the manager finds an agent's config repo: its container binds
    /// `<state>/configs` at `/hive/agents`; a process-runtime manager sees the host path.
    pub fn repo_as_the_manager_sees_it(&self, name: &AgentName) -> String {
        if self.runtime.isolated() {
            format!("/hive/agents/{name}")
        } else {
            self.paths.config_repo(name).display().to_string()
        }
    }

    /// Makes `name`'s config repo holding `text` unless it has one, links it
    /// from its agent dir, and hands it to the manager; returns the new repo's
    /// commit (None when a repo was there). Blocks: run it through [`crate::blocking::run`].
    pub(crate) fn ensure_repo(&self, name: &AgentName, text: &str) -> Result<Option<String>> {
        let repo = self.paths.config_repo(name);
        let made = match Repo::open(&repo)? {
            Some(_) => None,
            None => {
                let manager = self.store.agent(AgentName::MANAGER)?.map(|m| m.uid_base);
                Some(config_repo::create(&self.paths, name, text, |dir| {
                    Ok(self.runtime.give_to_manager(dir, manager)?)
                })?)
            }
        };
        config_repo::link(&self.paths, name)?;
        Ok(made)
    }

    /// Queues an approval to create and start `name` with its config repo's
    /// head (the default config when it has no repo), pinning that text.
    pub async fn request_spawn(
        self: &Arc<Self>,
        name: &AgentName,
        requester: Option<&AgentName>,
        description: Option<&str>,
    ) -> Result<i64> {
        if self.store.agent(name.as_str())?.is_some() {
            return Err(Error::refused(format!(
                "agent {name} exists already: there is nothing to spawn"
            )));
        }
        let repo = self.paths.config_repo(name);
        let n = name.clone();
        let (sha, text) = crate::blocking::run(
            &format!("reading {name}'s config repo"),
            move || match Repo::open(&repo)? {
                Some(r) => {
                    let sha = r.head()?;
                    let text = r.config_at(&sha)?;
                    Ok((sha, text))
                }
                None => Ok((String::new(), crate::hive::default_config(&n).to_toml())),
            },
        )
        .await?;
        AgentConfig::from_toml(&text).map_err(|e| {
            Error::refused(format!(
                "{name}'s config at {}: {e}",
                config_repo::short(&sha)
            ))
        })?;
        let payload = Payload {
            requested_by: requester.map(|r| r.to_string()),
            config_toml: Some(text),
            ..Payload::default()
        };
        self.queue_approval(&NewApproval {
            agent: name.as_str(),
            kind: "spawn",
            payload_json: &payload.to_json(),
            commit_ref: &sha,
            description,
        })
    }

    /// Queues an approval to deploy commit `sha` of `agent`'s config repo, pinning its `agent.toml`.
    pub async fn request_apply_commit(
        self: &Arc<Self>,
        agent: &AgentName,
        sha: &str,
        description: Option<&str>,
    ) -> Result<i64> {
        self.agent_row(agent)?;
        let repo = self.paths.config_repo(agent);
        let (rev, name) = (sha.trim().to_owned(), agent.clone());
        let (full, text) =
            crate::blocking::run(&format!("reading {agent}'s config repo"), move || {
                let r = Repo::open(&repo)?.ok_or_else(|| {
                    Error::refused(format!(
                        "{name} has no config repo at {}: there is no commit to apply",
                        repo.display()
                    ))
                })?;
                let full = r.resolve(&rev)?;
                let text = r.config_at(&full)?;
                Ok((full, text))
            })
            .await?;
        let payload = Payload {
            fetched_sha: Some(full.clone()),
            config_toml: Some(text),
            ..Payload::default()
        };
        self.queue_approval(&NewApproval {
            agent: agent.as_str(),
            kind: "apply_commit",
            payload_json: &payload.to_json(),
            commit_ref: &full,
            description,
        })
    }

    fn queue_approval(&self, a: &NewApproval<'_>) -> Result<i64> {
        let id = self.store.add_approval(a)?;
        self.record_approvals_pending();
        self.broker.publish(Change::Approvals);
        Ok(id)
    }

    /// What approving `id` would change: the pinned `agent.toml` against the
    /// config hive-c0re holds as deployed (nothing, for a new agent). The
    /// dashboard and `hive-c0re approvals show` both show this.
    pub fn approval_diff(&self, id: i64) -> Result<String> {
        let a = self
            .store
            .approval(id)?
            .ok_or_else(|| no_such_approval(id))?;
        let requested = pinned(&a)?;
        let deployed = self
            .store
            .agent(&a.agent)?
            .map(|r| r.config_toml)
            .unwrap_or_default();
        Ok(config_diff(&deployed, &requested))
    }

    /// Approves and runs an approval; a second decision is refused.
    pub async fn approve(self: &Arc<Self>, id: i64) -> Result<()> {
        let a = self
            .store
            .approval(id)?
            .ok_or_else(|| no_such_approval(id))?;
        if !self.store.decide_approval(id, "approved", None)? {
            return Err(already_decided(id, &a.status));
        }
        self.record_approvals_pending();
        let outcome = self.run_approval(&a).await;
        match &outcome {
            Ok(()) => self.tell_requester(&format!(
                "Approval #{id} ({} {}) was approved and carried out.",
                a.kind, a.agent
            )),
            Err(e) => {
                self.store
                    .amend_approval(id, "failed", Some(&e.to_string()))?;
                self.tell_requester(&format!(
                    "Approval #{id} ({} {}) was approved but failed: {e}",
                    a.kind, a.agent
                ));
            }
        }
        self.broker.publish(Change::Approvals);
        outcome
    }

    /// Denies an approval with an optional reason; a second decision is refused.
    pub fn deny(&self, id: i64, note: Option<&str>) -> Result<()> {
        let a = self
            .store
            .approval(id)?
            .ok_or_else(|| no_such_approval(id))?;
        if !self.store.decide_approval(id, "denied", note)? {
            return Err(already_decided(id, &a.status));
        }
        self.record_approvals_pending();
        let why = note.map(|n| format!(" Reason: {n}")).unwrap_or_default();
        self.tell_requester(&format!(
            "Approval #{id} ({} {}) was denied by the operator.{why}",
            a.kind, a.agent
        ));
        self.broker.publish(Change::Approvals);
        Ok(())
    }

    async fn run_approval(self: &Arc<Self>, a: &ApprovalRow) -> Result<()> {
        let name = AgentName::parse(&a.agent)?;
        match a.kind.as_str() {
            "spawn" => {
                let text = pinned(a)?;
                let sha = (!a.commit_ref.is_empty()).then_some(a.commit_ref.as_str());
                let parent = Payload::of(a).requested_by;
                self.create(&name, &text, sha, parent.as_deref()).await?;
                Ok(())
            }
            "apply_commit" => self.deploy(&name, &pinned(a)?, &a.commit_ref).await,
            other => Err(Error::refused(format!(
                "approvals of kind {other:?} have no action in this hive"
            ))),
        }
    }

    /// Deploys `text` (the pinned `agent.toml` of commit `sha`) as the agent's
    /// config after validating it, and restarts the agent.
    pub async fn deploy(self: &Arc<Self>, name: &AgentName, text: &str, sha: &str) -> Result<()> {
        AgentConfig::from_toml(text).map_err(|e| {
            Error::refused(format!(
                "commit {} of {name}'s config is refused, the agent keeps its old config: {e}",
                config_repo::short(sha)
            ))
        })?;
        self.store.set_config(name.as_str(), text, Some(sha))?;
        self.broker.publish(Change::Agent(name.to_string()));
        if self.agent_row(name)?.want_running {
            self.restart(name).await?;
        }
        Ok(())
    }

    /// One approval, if it exists (a decided one may have been vacuumed).
    pub fn approval(&self, id: i64) -> Result<Option<Approval>> {
        Ok(self.store.approval(id)?.as_ref().map(approval_wire))
    }

    /// Every approval, oldest first.
    pub fn approvals(&self) -> Result<Vec<Approval>> {
        Ok(self.store.approvals()?.iter().map(approval_wire).collect())
    }

    fn tell_requester(&self, body: &str) {
        if let Err(e) = self.notify(&AgentName::manager(), body) {
            tracing::warn!("could not tell the manager: {e}");
        }
    }
}

/// A stored approval as the wire shows it.
pub fn approval_wire(a: &ApprovalRow) -> Approval {
    let fetched = serde_json::from_str::<serde_json::Value>(&a.payload_json)
        .ok()
        .and_then(|v| {
            v.get("fetched_sha")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
        });
    Approval {
        id: a.id,
        agent: a.agent.clone(),
        kind: a.kind.clone(),
        commit_ref: a.commit_ref.clone(),
        fetched_sha: fetched,
        requested_at: rfc3339(a.created_at),
        status: a.status.clone(),
        resolved_at: a.decided_at.map(rfc3339),
        note: a.note.clone(),
        description: a.description.clone(),
    }
}

/// A unified diff of two `agent.toml` texts, or a sentence when they are the same.
pub fn config_diff(deployed: &str, requested: &str) -> String {
    if deployed == requested {
        return "no change: the requested agent.toml is the deployed one\n".to_owned();
    }
    let diff = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_secs(1))
        .diff_lines(deployed, requested);
    diff.unified_diff()
        .context_radius(3)
        .header("deployed/agent.toml", "requested/agent.toml")
        .to_string()
}

fn no_such_approval(id: i64) -> Error {
    Error::refused(format!(
        "there is no approval #{id}: see hive-c0re approvals"
    ))
}

fn already_decided(id: i64, status: &str) -> Error {
    Error::refused(format!(
        "approval #{id} was decided already ({status}): an approval can be decided once"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_shows_each_changed_line_or_says_nothing_changes() {
        let d = config_diff(
            "model = \"haiku\"\nprompt = \"x\"\n",
            "model = \"opus\"\nprompt = \"x\"\n",
        );
        assert!(
            d.starts_with("--- deployed/agent.toml\n+++ requested/agent.toml\n@@"),
            "{d}"
        );
        assert!(d.contains("-model = \"haiku\"\n+model = \"opus\"\n"), "{d}");
        assert!(config_diff("a = 1\n", "a = 1\n").starts_with("no change"));
    }
}
