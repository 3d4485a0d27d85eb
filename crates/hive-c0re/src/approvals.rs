//! Approvals: what the manager (or operator) proposes, and what approving does.
//!
//! Nothing proposed takes effect before the operator approves it. An
//! approval is decided once; approving runs its action at once, and an
//! action that fails marks the approval `failed` with the reason, leaving
//! the hive as it was.

use std::sync::Arc;

use hive_sh4re::AgentName;
use hive_sh4re::config::AgentConfig;

use crate::broker::Change;
use crate::config_repo;
use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::store::NewApproval;

impl Hive {
    /// Creates the config repo of a future agent from the template; returns its host path.
    pub fn init_config(&self, name: &AgentName) -> Result<std::path::PathBuf> {
        if self.store.agent(name.as_str())?.is_some() {
            return Err(Error::refused(format!(
                "agent {name} exists already: edit its config repo and request_apply_commit"
            )));
        }
        self.init_repo(name, &crate::hive::default_config(name))?;
        Ok(self.paths.config_repo(name))
    }

    /// Creates `name`'s config repo with `config` (if it has none), the link to it
    /// from its agent dir, and hands it to the manager; returns HEAD.
    pub(crate) fn init_repo(&self, name: &AgentName, config: &AgentConfig) -> Result<String> {
        let repo = self.paths.config_repo(name);
        let sha = config_repo::init(&repo, config)?;
        config_repo::link(&self.paths, name)?;
        let manager = self.store.agent(AgentName::MANAGER)?.map(|m| m.uid_base);
        self.runtime.give_to_manager(&repo, manager)?;
        Ok(sha)
    }

    /// Queues an approval to create and start `name` from its config repo's head.
    pub fn request_spawn(
        &self,
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
        let sha = if repo.join(".git").exists() {
            let sha = config_repo::head(&repo)?;
            let text = config_repo::config_at(&repo, &sha)?;
            AgentConfig::from_toml(&text).map_err(|e| {
                Error::refused(format!(
                    "{name}'s config at {}: {e}",
                    config_repo::short(&sha)
                ))
            })?;
            sha
        } else {
            String::new()
        };
        let payload =
            serde_json::json!({ "requested_by": requester.map(|r| r.as_str()) }).to_string();
        self.queue_approval(&NewApproval {
            agent: name.as_str(),
            kind: "spawn",
            payload_json: &payload,
            commit_ref: &sha,
            description,
        })
    }

    /// Queues an approval to deploy commit `sha` of `agent`'s config repo.
    pub fn request_apply_commit(
        &self,
        agent: &AgentName,
        sha: &str,
        description: Option<&str>,
    ) -> Result<i64> {
        self.agent_row(agent)?;
        let full = config_repo::resolve(&self.paths.config_repo(agent), sha.trim())?;
        let payload = serde_json::json!({ "fetched_sha": full }).to_string();
        self.queue_approval(&NewApproval {
            agent: agent.as_str(),
            kind: "apply_commit",
            payload_json: &payload,
            commit_ref: &full,
            description,
        })
    }

    fn queue_approval(&self, a: &NewApproval<'_>) -> Result<i64> {
        let id = self.store.add_approval(a)?;
        self.broker.publish(Change::Approvals);
        Ok(id)
    }

    /// What approving `id` would change: the config diff against the deployed one, or a spawn's whole config.
    pub fn approval_diff(&self, id: i64) -> Result<String> {
        let a = self
            .store
            .approval(id)?
            .ok_or_else(|| no_such_approval(id))?;
        let name = AgentName::parse(&a.agent)?;
        let repo = self.paths.config_repo(&name);
        if a.commit_ref.is_empty() {
            return Ok(crate::hive::default_config(&name).to_toml());
        }
        let deployed = self
            .store
            .agent(name.as_str())?
            .and_then(|r| r.deployed_sha);
        config_repo::diff(&repo, deployed.as_deref(), &a.commit_ref)
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
        let why = note.map(|n| format!(" Reason: {n}")).unwrap_or_default();
        self.tell_requester(&format!(
            "Approval #{id} ({} {}) was denied by the operator.{why}",
            a.kind, a.agent
        ));
        self.broker.publish(Change::Approvals);
        Ok(())
    }

    async fn run_approval(self: &Arc<Self>, a: &crate::store::ApprovalRow) -> Result<()> {
        let name = AgentName::parse(&a.agent)?;
        match a.kind.as_str() {
            "spawn" => {
                let repo = self.paths.config_repo(&name);
                let config = if a.commit_ref.is_empty() {
                    crate::hive::default_config(&name)
                } else {
                    AgentConfig::from_toml(&config_repo::config_at(&repo, &a.commit_ref)?)
                        .map_err(|e| Error::refused(e.to_string()))?
                };
                let requested_by = serde_json::from_str::<serde_json::Value>(&a.payload_json)
                    .ok()
                    .and_then(|v| {
                        v.get("requested_by")
                            .and_then(|r| r.as_str())
                            .map(str::to_owned)
                    });
                self.create(&name, &config, requested_by.as_deref())?;
                if !a.commit_ref.is_empty() {
                    let text = config_repo::config_at(&repo, &a.commit_ref)?;
                    self.store
                        .set_config(name.as_str(), &text, Some(&a.commit_ref))?;
                }
                Ok(())
            }
            "apply_commit" => self.deploy(&name, &a.commit_ref).await,
            other => Err(Error::refused(format!(
                "approvals of kind {other:?} have no action in this hive"
            ))),
        }
    }

    /// Checks out `sha` of the agent's config as deployed, after validating it, and restarts the agent.
    pub async fn deploy(self: &Arc<Self>, name: &AgentName, sha: &str) -> Result<()> {
        let repo = self.paths.config_repo(name);
        let text = config_repo::config_at(&repo, sha)?;
        AgentConfig::from_toml(&text).map_err(|e| {
            Error::refused(format!(
                "commit {} of {name}'s config is refused, the agent keeps its old config: {e}",
                config_repo::short(sha)
            ))
        })?;
        self.store.set_config(name.as_str(), &text, Some(sha))?;
        self.broker.publish(Change::Agent(name.to_string()));
        if self.agent_row(name)?.want_running {
            self.restart(name).await?;
        }
        Ok(())
    }

    fn tell_requester(&self, body: &str) {
        if let Err(e) = self.notify(&AgentName::manager(), body) {
            tracing::warn!("could not tell the manager: {e}");
        }
    }
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
