//! Approvals: what the manager (or operator) proposes, and what approving does.
//!
//! Nothing proposed takes effect before the operator approves it. An
//! approval is decided once; approving runs its action at once, and an
//! action that fails marks the approval `failed` with the reason, leaving
//! the hive as it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::config::AgentConfig;
use hive_sh4re::host::{
    Approval, ApprovalKind, ApprovalStatus, ApprovalWarning, ApprovalWarningKind,
};
use hive_sh4re::limits::PENDING_APPROVALS_MAX;
use hive_sh4re::{AgentName, NodeName};
use serde::{Deserialize, Serialize};

use crate::broker::Change;
use crate::clock::rfc3339;
use crate::config_repo::{self, Repo};
use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::hive::nodes::runs_here;
use crate::hive::steer::{Asked, Steer};
use crate::paths::Paths;
use crate::store::{AgentRow, ApprovalRow, NewApproval};

/// A config repo's head and `agent.toml` at it, as the node that keeps the
/// repo answers [`Steer::ConfigShow`] (`null`: no repo).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RepoHead {
    pub sha: String,
    pub text: String,
}

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
    /// A spawn's home node, when the request named one (else the approving node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
}

impl Payload {
    fn of(a: &ApprovalRow) -> Self {
        serde_json::from_str(&a.payload_json).unwrap_or_default()
    }

    fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a payload always serializes")
    }
}

/// The home node a spawn approval names, if it names a valid one.
pub(super) fn home_of(a: &ApprovalRow) -> Option<NodeName> {
    NodeName::parse(Payload::of(a).node.as_deref()?).ok()
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

/// How an approved approval's action ended, short of failing.
enum Carried {
    /// Done whole.
    Out,
    /// Done in part: the sentence says what is left and what to do.
    Partly(String),
    /// Still under way on the agent's home node, which settles it: the
    /// sentence says where its end shows.
    Elsewhere(String),
}

/// An approval this process is carrying out, listed in `Hive::approving`
/// while it lives (a panic in its task drops it too).
struct UnderWay {
    hive: Arc<Hive>,
    id: i64,
}

impl UnderWay {
    fn new(hive: Arc<Hive>, id: i64) -> Self {
        hive.approving.lock().expect("approving lock").insert(id);
        Self { hive, id }
    }
}

impl Drop for UnderWay {
    fn drop(&mut self) {
        self.hive
            .approving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// How long an approved approval may go unsettled before the sweep takes it
/// for cut off (`HIVE_APPROVAL_CUT_OFF_SECS` in tests): past the longest a
/// restart waits on its home node.
fn cut_off_after() -> Duration {
    crate::clock::secs_from_env("HIVE_APPROVAL_CUT_OFF_SECS", Duration::from_secs(120))
}

/// The pending approvals of one listing, each with its diff against what is
/// deployed (`None`: no change, or it could not be made).
struct Pending<'a> {
    rows: Vec<&'a ApprovalRow>,
    diffs: HashMap<i64, Option<String>>,
}

impl Hive {
    /// Creates `name` as approved spawn approval `id` says, when it names
    /// this node as the agent's home: what the approval holds is read here,
    /// from the store, not from the request.
    pub(super) async fn spawn_approved(self: &Arc<Self>, name: &AgentName, id: i64) -> Result<()> {
        let a = self
            .store
            .approval(id)
            .await?
            .filter(|a| {
                a.kind == ApprovalKind::Spawn
                    && a.status == ApprovalStatus::Approved
                    && a.agent == name.as_str()
            })
            .ok_or_else(|| {
                Error::refused(format!(
                    "approval #{id} is no approved spawn of {name}: nothing was created"
                ))
            })?;
        if home_of(&a).as_ref() != Some(self.node()) {
            return Err(Error::refused(format!(
                "approval #{id} does not make node {} {name}'s home: nothing was created",
                self.node()
            )));
        }
        // Settled here too: the approving node may have stopped waiting.
        let outcome = self.create_approved(&a).await;
        let (status, note) = match &outcome {
            Ok(()) => (ApprovalStatus::Approved, None),
            Err(e) => (ApprovalStatus::Failed, Some(e.to_string())),
        };
        self.store
            .settle_approval(id, status, note.as_deref())
            .await?;
        self.broker.publish(Change::Approvals);
        outcome
    }

    /// Counts one of the manager's requests for an agent or a config change
    /// against its minute's; refused past them (each runs git as root, and a
    /// failing one runs it before any cap on approvals is met).
    pub(crate) fn take_manager_request(&self) -> Result<()> {
        if self.manager_requests.allow(AgentName::MANAGER) {
            return Ok(());
        }
        Err(Error::refused(format!(
            "the manager made {} requests for agents and config changes this minute, the most hive-c0re takes: \
             wait for the operator's decisions on those queued",
            hive_sh4re::limits::MANAGER_REQUESTS_PER_MINUTE
        )))
    }

    /// Creates the config repo of a future agent from the template, on the
    /// node that keeps the repos; returns where: its path, followed by
    /// `on node NODE` when that node is another one.
    pub async fn init_config(self: &Arc<Self>, name: &AgentName) -> Result<String> {
        if self.store.agent(name.as_str()).await?.is_some() {
            return Err(Error::refused(format!(
                "agent {name} exists already: edit its config repo and request_apply_commit"
            )));
        }
        if let Some(node) = self.repo_node(name).await? {
            let (_, path) = self.ask_for_reply(&node, name, &Steer::InitConfig).await?;
            return Ok(format!("{path} on node {node}"));
        }
        // A repo is files and git's writes: not on a disk past its floor.
        self.space.refuse_if_low()?;
        let text = crate::hive::default_config(name).to_toml();
        let (hive, n) = (self.clone(), name.clone());
        let manager = self.manager_uid_base().await?;
        crate::blocking::run(&format!("creating {name}'s config repo"), move || {
            hive.ensure_repo(&n, &text, manager, true)
        })
        .await?;
        Ok(self.paths.config_repo(name).display().to_string())
    }

    /// `agent.toml` at the head of `name`'s config repo, and that head.
    pub async fn config_show(self: &Arc<Self>, name: &AgentName) -> Result<(String, String)> {
        match self.repo_head(name).await? {
            Some(head) => Ok((head.sha, head.text)),
            None => Err(match self.repo_node(name).await? {
                Some(node) => Error::refused(format!(
                    "{name} has no config repo on node {node}, which keeps it: make one with hive-c0re init-config {name}"
                )),
                None => no_repo(name, &self.paths.config_repo(name)),
            }),
        }
    }

    /// The head of `name`'s config repo and `agent.toml` at it, read where
    /// the repos are; None when it has no repo.
    pub(super) async fn repo_head(self: &Arc<Self>, name: &AgentName) -> Result<Option<RepoHead>> {
        if let Some(reply) = self.repo_elsewhere(name, Steer::ConfigShow).await? {
            return serde_json::from_str(&reply)
                .map_err(|_| unreadable_reply(name, "config show", &reply));
        }
        let repo = self.paths.config_repo(name);
        crate::blocking::run(&format!("reading {name}'s config repo"), move || {
            let Some(r) = Repo::open(&repo)? else {
                return Ok(None);
            };
            let sha = r.head()?;
            let text = r.config_at(&sha)?;
            Ok(Some(RepoHead { sha, text }))
        })
        .await
    }

    /// The operator's edit: commits `text` as `name`'s `agent.toml` on top of
    /// its repo's head and returns the commit. It deploys nothing: request
    /// and approve it as any config change. See [`Repo::commit_config`].
    pub async fn config_commit(
        self: &Arc<Self>,
        name: &AgentName,
        text: &str,
        message: Option<&str>,
    ) -> Result<String> {
        AgentConfig::from_toml(text).map_err(|e| {
            Error::refused(format!(
                "the edited agent.toml is not a valid config, nothing was committed: {e}"
            ))
        })?;
        if text.len() > config_repo::MAX_CONFIG_BYTES {
            return Err(Error::refused(format!(
                "the edited agent.toml is over {} bytes: make it smaller",
                config_repo::MAX_CONFIG_BYTES
            )));
        }
        let message = message
            .filter(|m| !m.trim().is_empty())
            .unwrap_or("operator: edit agent.toml")
            .to_owned();
        let commit = Steer::ConfigCommit {
            text: text.to_owned(),
            message: Some(message.clone()),
        };
        if let Some(sha) = self.repo_elsewhere(name, commit).await? {
            return Ok(sha);
        }
        let repo = self.paths.config_repo(name);
        let (n, text) = (name.clone(), text.to_owned());
        let sha = crate::blocking::run(&format!("committing to {name}'s config repo"), move || {
            let r = Repo::open(&repo)?.ok_or_else(|| no_repo(&n, &repo))?;
            r.commit_config(&text, &message)
        })
        .await?;
        // needs_update and the approvals' warnings read the new head at the next poll.
        Ok(sha)
    }

    /// The node that keeps `name`'s config repo, when it is not this one:
    /// the manager's home node, whose container binds the repos; in a hive
    /// without a manager, the agent's own home node. None on sqlite, and
    /// when that node is this one (a future agent's repo is made here then).
    pub(crate) async fn repo_node(&self, name: &AgentName) -> Result<Option<String>> {
        if !self.store.shared() {
            return Ok(None);
        }
        let manager = self.store.agent(AgentName::MANAGER).await?;
        let agent = match manager {
            Some(_) => None,
            None => self.store.agent(name.as_str()).await?,
        };
        let Some(keeper) = repo_keeper(manager.as_ref(), agent.as_ref()) else {
            return Ok(None);
        };
        Ok((!runs_here(&self.store, keeper, self.node()))
            .then(|| keeper.node.clone().unwrap_or_default()))
    }

    /// The reply of `verb` for `name`'s config repo, carried out by the node
    /// that keeps it when that is another node; None when it is this one.
    async fn repo_elsewhere(&self, name: &AgentName, verb: Steer) -> Result<Option<String>> {
        let Some(node) = self.repo_node(name).await? else {
            return Ok(None);
        };
        let (_, reply) = self.ask_for_reply(&node, name, &verb).await?;
        Ok(Some(reply))
    }

    /// Those of `agents` whose config repos this node keeps ([`Hive::repo_node`]).
    pub(super) fn repos_kept_here<'a>(&self, agents: &'a [AgentRow]) -> Vec<&'a AgentRow> {
        let manager = agents.iter().find(|a| a.name == AgentName::MANAGER);
        agents
            .iter()
            .filter(|a| {
                repo_keeper(manager, Some(a))
                    .is_some_and(|k| runs_here(&self.store, k, self.node()))
            })
            .collect()
    }

    /// Where the manager finds an agent's config repo: its container binds
    /// `<state>/configs` at `/hive/agents`; a process-runtime manager sees the host path.
    pub fn repo_as_the_manager_sees_it(&self, name: &AgentName) -> String {
        if self.runtime.isolated() {
            Paths::container_config_repo(name).display().to_string()
        } else {
            self.paths.config_repo(name).display().to_string()
        }
    }

    /// Makes `name`'s config repo holding `text` unless it has one, links it
    /// from its agent dir when `link` (an agent whose state is on this node's
    /// disk, or a future one), and hands it to the manager; returns the new
    /// repo's commit (None when a repo was there). `manager` is the manager's
    /// uid base, if it exists ([`Hive::manager_uid_base`]). Blocks: run it
    /// through [`crate::blocking::run`].
    pub(crate) fn ensure_repo(
        &self,
        name: &AgentName,
        text: &str,
        manager: Option<u32>,
        link: bool,
    ) -> Result<Option<String>> {
        let repo = self.paths.config_repo(name);
        let made = match Repo::open(&repo)? {
            Some(_) => None,
            None => Some(config_repo::create(&self.paths, name, text, |dir| {
                Ok(self.runtime.give_to_manager(dir, manager)?)
            })?),
        };
        if link {
            config_repo::link(&self.paths, name)?;
        }
        Ok(made)
    }

    /// The manager's uid base, if the hive has a manager: who new config repos are handed to.
    pub(crate) async fn manager_uid_base(&self) -> Result<Option<u32>> {
        Ok(self
            .store
            .agent(AgentName::MANAGER)
            .await?
            .map(|m| m.uid_base))
    }

    /// Queues an approval to create and start `name` with its config repo's
    /// head (the default config when it has no repo), pinning that text; on
    /// `node` when given (a node of this hive), else on the approving node.
    pub async fn request_spawn(
        self: &Arc<Self>,
        name: &AgentName,
        requester: Option<&AgentName>,
        description: Option<&str>,
        node: Option<&NodeName>,
    ) -> Result<i64> {
        if self.store.agent(name.as_str()).await?.is_some() {
            return Err(Error::refused(format!(
                "agent {name} exists already: there is nothing to spawn"
            )));
        }
        self.manager_may_queue(requester).await?;
        if let Some(n) = node {
            self.known_node(n).await?;
        }
        let RepoHead { sha, text } = self.repo_head(name).await?.unwrap_or_else(|| RepoHead {
            sha: String::new(),
            text: crate::hive::default_config(name).to_toml(),
        });
        AgentConfig::from_toml(&text).map_err(|e| {
            Error::refused(format!(
                "{name}'s config at {}: {e}",
                config_repo::short(&sha)
            ))
        })?;
        let payload = Payload {
            requested_by: requester.map(|r| r.to_string()),
            config_toml: Some(text),
            node: node.map(|n| n.to_string()),
            ..Payload::default()
        };
        let new = NewApproval {
            agent: name.as_str(),
            kind: ApprovalKind::Spawn,
            payload_json: &payload.to_json(),
            commit_ref: &sha,
            description,
            while_fewer_than: None,
        };
        self.queue_approval(new, requester).await
    }

    /// Queues an approval to deploy commit `sha` of `agent`'s config repo,
    /// pinning its `agent.toml`; `requester` is the agent that asked (the
    /// manager), None for the operator.
    pub async fn request_apply_commit(
        self: &Arc<Self>,
        agent: &AgentName,
        sha: &str,
        description: Option<&str>,
        requester: Option<&AgentName>,
    ) -> Result<i64> {
        self.agent_row(agent).await?;
        self.manager_may_queue(requester).await?;
        // The repo is on the disk of the node that keeps the repos: it reads it.
        let ask = Steer::RequestApplyCommit {
            sha: sha.to_owned(),
            description: description.map(str::to_owned),
            by_manager: requester.is_some(),
        };
        if let Some(reply) = self.repo_elsewhere(agent, ask).await? {
            return reply
                .parse()
                .map_err(|_| unreadable_reply(agent, "request-apply-commit", &reply));
        }
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
        // Refused now, not at the approval: the operator is asked only what can deploy.
        AgentConfig::from_toml(&text).map_err(|e| {
            Error::refused(format!(
                "{agent}'s config at {}: {e}",
                config_repo::short(&full)
            ))
        })?;
        let payload = Payload {
            requested_by: requester.map(|r| r.to_string()),
            fetched_sha: Some(full.clone()),
            config_toml: Some(text),
            ..Payload::default()
        };
        let new = NewApproval {
            agent: agent.as_str(),
            kind: ApprovalKind::ApplyCommit,
            payload_json: &payload.to_json(),
            commit_ref: &full,
            description,
            while_fewer_than: None,
        };
        self.queue_approval(new, requester).await
    }

    /// Refuses the manager before any work (a read of its repo) while its
    /// queue is full; [`Hive::queue_approval`] holds the bound itself.
    async fn manager_may_queue(&self, requester: Option<&AgentName>) -> Result<()> {
        if requester.is_some() && self.store.pending_approvals().await? >= PENDING_APPROVALS_MAX {
            return Err(queue_full());
        }
        Ok(())
    }

    /// Stores approval `a` and tells the operator. One the manager asked for
    /// is refused while [`PENDING_APPROVALS_MAX`] wait: a manager turned
    /// hostile could otherwise queue them without end (the operator's own
    /// requests are not held to it).
    async fn queue_approval(
        &self,
        a: NewApproval<'_>,
        requester: Option<&AgentName>,
    ) -> Result<i64> {
        if let Some(d) = a.description {
            hive_sh4re::limits::check_description(d).map_err(Error::refused)?;
        }
        let a = NewApproval {
            while_fewer_than: requester.map(|_| PENDING_APPROVALS_MAX),
            ..a
        };
        let id = self.store.add_approval(&a).await?.ok_or_else(queue_full)?;
        self.record_approvals_pending().await;
        self.broker.publish(Change::Approvals);
        let about = AgentName::parse(a.agent).ok();
        let what = a.description.map(|d| format!(": {d}")).unwrap_or_default();
        self.tell_operator(
            hive_sh4re::notification::NotificationKind::Approval,
            about.as_ref(),
            &format!("Approval #{id} waits: {} {}{what}", a.kind, a.agent),
        )
        .await;
        Ok(id)
    }

    /// What approving `id` would change: the pinned `agent.toml` against the
    /// config hive-c0re holds as deployed (nothing, for a new agent). The
    /// dashboard and `hive-c0re approvals show` both show this.
    pub async fn approval_diff(&self, id: i64) -> Result<String> {
        let a = self
            .store
            .approval(id)
            .await?
            .ok_or_else(|| no_such_approval(id))?;
        self.diff_of(&a).await
    }

    async fn diff_of(&self, a: &ApprovalRow) -> Result<String> {
        let requested = pinned(a)?;
        let deployed = self
            .store
            .agent(&a.agent)
            .await?
            .map(|r| r.config_toml)
            .unwrap_or_default();
        Ok(config_diff(&deployed, &requested))
    }

    /// Reads, for each pending approval of a commit of an agent at home
    /// here, whether its config repo moved on since (off the runtime, with a
    /// time limit: the repos are the manager's) and stores what it found, so
    /// the approvals' warnings say so on every node. Runs with the heads' poll.
    pub(super) async fn read_approval_heads(self: &Arc<Self>) {
        let (Ok(all), Ok(agents)) = (self.store.approvals().await, self.store.agents().await)
        else {
            return;
        };
        let kept = self.repos_kept_here(&agents);
        let mine: std::collections::HashSet<&str> = kept.iter().map(|a| a.name.as_str()).collect();
        let mut changed = false;
        for a in all.iter().filter(|a| {
            a.status == ApprovalStatus::Pending
                && !a.commit_ref.is_empty()
                && mine.contains(a.agent.as_str())
        }) {
            let Ok(name) = AgentName::parse(&a.agent) else {
                continue;
            };
            let (hive, repo, from) = (
                self.clone(),
                self.paths.config_repo(&name),
                a.commit_ref.clone(),
            );
            let counted = a.repo_head.clone().zip(a.repo_ahead);
            let got =
                crate::blocking::run(&format!("reading {name}'s config repo head"), move || {
                    let Some(r) = Repo::open(&repo)? else {
                        return Ok(None);
                    };
                    let head = hive.heads.head(&r)?;
                    if head == from {
                        return Ok(None);
                    }
                    // From the same commit to the same head: the count stands.
                    let ahead = match counted {
                        Some((was, n)) if was == head => u64::try_from(n).unwrap_or(0),
                        _ => r.commits_between(&from, &head)?,
                    };
                    Ok(Some((ahead, head)))
                })
                .await;
            let (head, ahead) = match got {
                Ok(Some((n, head))) => (Some(head), Some(i64::try_from(n).unwrap_or(i64::MAX))),
                Ok(None) => (None, None),
                Err(e) => {
                    tracing::debug!(approval = a.id, "{e}");
                    continue;
                }
            };
            if (a.repo_head.as_ref(), a.repo_ahead) == (head.as_ref(), ahead) {
                continue;
            }
            match self
                .store
                .set_approval_head(a.id, head.as_deref(), ahead)
                .await
            {
                Ok(c) => changed |= c,
                Err(e) => tracing::warn!(
                    approval = a.id,
                    "could not store where its config repo moved: {e}"
                ),
            }
        }
        if changed {
            self.broker.publish(Change::Approvals);
        }
    }

    /// The pending approvals among `all`, each with its diff, made once for
    /// every card's warnings: each card compares its diff with every other's,
    /// and making them per comparison cost a listing the square of the
    /// pending count in reads and diffs.
    async fn pending<'a>(&self, all: &'a [ApprovalRow]) -> Pending<'a> {
        let rows: Vec<&ApprovalRow> = all
            .iter()
            .filter(|a| a.status == ApprovalStatus::Pending)
            .collect();
        let mut deployed: HashMap<&str, Option<String>> = HashMap::new();
        let mut diffs = HashMap::new();
        for a in &rows {
            if !deployed.contains_key(a.agent.as_str()) {
                let text = match self.store.agent(&a.agent).await {
                    Ok(row) => Some(row.map(|r| r.config_toml).unwrap_or_default()),
                    Err(_) => None,
                };
                deployed.insert(a.agent.as_str(), text);
            }
            let diff = deployed[a.agent.as_str()]
                .as_deref()
                .zip(pinned(a).ok())
                .map(|(from, to)| config_diff(from, &to))
                .filter(|d| !d.starts_with("no change"));
            diffs.insert(a.id, diff);
        }
        Pending { rows, diffs }
    }

    /// What the operator should know before deciding `a` (pending), given every pending approval.
    async fn warnings(&self, a: &ApprovalRow, pending: &Pending<'_>) -> Vec<ApprovalWarning> {
        let mut out = Vec::new();
        let mut warn = |kind, message: String| out.push(ApprovalWarning { kind, message });
        if let (Some(head), Some(n)) = (&a.repo_head, a.repo_ahead) {
            let (head, asked) = (config_repo::short(head), config_repo::short(&a.commit_ref));
            warn(
                ApprovalWarningKind::RepoMoved,
                if n > 0 {
                    format!(
                        "{}'s config repo moved on since this request: its head {head} is {n} commit{} ahead of the requested {asked}; approving deploys {asked}, not the head",
                        a.agent,
                        if n == 1 { "" } else { "s" }
                    )
                } else {
                    format!(
                        "{}'s config repo moved since this request: its head is {head}, which does not hold the requested {asked}; approving deploys {asked}",
                        a.agent
                    )
                },
            );
        }
        // Read once for the warnings below: the agent as it is now (Ok(None):
        // no agent of that name), and the requested and deployed configs.
        let agent = self.store.agent(&a.agent).await;
        let now = agent.as_ref().ok().and_then(Option::as_ref);
        let requested = pinned(a).ok().and_then(|t| AgentConfig::from_toml(&t).ok());
        let deployed = now.and_then(|r| AgentConfig::from_toml(&r.config_toml).ok());
        if let Some((from, to, over)) = masked_model(now, requested.as_ref(), deployed.as_ref()) {
            warn(
                ApprovalWarningKind::ModelOverride,
                format!(
                    "this changes {}'s model from {from} to {to}, but the operator's model override {over} masks it: {} keeps running {over} until the override is cleared (hive-c0re model {} default)",
                    a.agent, a.agent, a.agent
                ),
            );
        }
        if matches!(agent, Ok(None))
            && let Some(left) = self.left_behind(a).await
        {
            warn(
                ApprovalWarningKind::Inherits,
                format!(
                    "{} was destroyed before without --purge, and this new {} gets what it left: {left}. Approve only if that is meant; else deny, and remove them first",
                    a.agent, a.agent
                ),
            );
        }
        for (key, value) in redirects(requested.as_ref(), deployed.as_ref()) {
            warn(
                ApprovalWarningKind::Endpoint,
                format!(
                    "this sets {key} = {:?} for {}'s claude: its model requests, and the credential they carry, go where that says; approve only if you run what it names",
                    hive_sh4re::text::visible(&value),
                    a.agent
                ),
            );
        }
        if let Some(requested) = &requested {
            for grant in grants(requested, deployed.as_ref()) {
                warn(
                    ApprovalWarningKind::Grants,
                    format!("this lets {} {grant}", a.agent),
                );
            }
        }
        let diff = pending.diffs.get(&a.id).and_then(Option::as_ref);
        for b in pending.rows.iter().filter(|b| b.id != a.id) {
            if b.agent == a.agent && b.kind == a.kind {
                warn(
                    ApprovalWarningKind::Duplicate,
                    format!(
                        "approval #{} asks the same: {} {} (decide one, deny the other)",
                        b.id, b.kind, b.agent
                    ),
                );
            } else if diff.is_some() && pending.diffs.get(&b.id).and_then(Option::as_ref) == diff {
                warn(
                    ApprovalWarningKind::Duplicate,
                    format!(
                        "approval #{} ({} {}) asks for the identical change",
                        b.id, b.kind, b.agent
                    ),
                );
            }
        }
        out
    }

    /// What a spawn `a` of a name that is no agent now would take over from
    /// an agent of that name destroyed without `--purge` (its own secrets,
    /// its `/state`, messages waiting for it), as a phrase; None for nothing.
    async fn left_behind(&self, a: &ApprovalRow) -> Option<String> {
        if a.kind != ApprovalKind::Spawn {
            return None;
        }
        let name = AgentName::parse(&a.agent).ok()?;
        let mut left = Vec::new();
        let secrets: Vec<String> = self
            .store
            .secret_entries()
            .await
            .ok()?
            .into_iter()
            .filter(|e| e.agent.as_deref() == Some(a.agent.as_str()))
            .map(|e| e.name)
            .collect();
        if !secrets.is_empty() {
            left.push(format!(
                "its own secrets {} (hive-c0re secret rm NAME --agent {name})",
                secrets.join(", ")
            ));
        }
        let state = self.paths.agent_state(&name);
        match home_of(a).filter(|home| home != self.node()) {
            // Another node's disk, which this one cannot look at: an agent
            // of this name that lived and was not purged kept its history
            // here, and its /state there, unless someone removed it since.
            Some(home) => {
                let lived = self
                    .store
                    .events_before(&a.agent, None, 1)
                    .await
                    .is_ok_and(|e| !e.is_empty());
                if lived {
                    left.push(format!(
                        "its /state on node {home} if it is still there (this node cannot look at that host's disk: see {} there)",
                        state.display()
                    ));
                }
            }
            None => {
                if std::fs::symlink_metadata(&state).is_ok() {
                    left.push(format!("its /state, kept at {}", state.display()));
                }
            }
        }
        let waiting = self.store.inbox_depth(&a.agent).await.unwrap_or(0);
        if waiting > 0 {
            left.push(format!(
                "{waiting} message{} waiting for it",
                if waiting == 1 { "" } else { "s" }
            ));
        }
        (!left.is_empty()).then(|| left.join("; "))
    }

    /// A stored approval as the wire shows it, with its warnings when it is pending.
    async fn wire(&self, a: &ApprovalRow, pending: &Pending<'_>) -> Approval {
        let mut w = approval_wire(a);
        if a.status == ApprovalStatus::Pending {
            w.warnings = self.warnings(a, pending).await;
        }
        w
    }

    /// Records the operator's decision on a pending approval and returns it as
    /// it was requested; an unknown id or a second decision is refused.
    async fn decide(
        &self,
        id: i64,
        status: ApprovalStatus,
        note: Option<&str>,
    ) -> Result<ApprovalRow> {
        let a = self
            .store
            .approval(id)
            .await?
            .ok_or_else(|| no_such_approval(id))?;
        if !self
            .store
            .decide_approval(id, status, note, self.node().as_str())
            .await?
        {
            let now = self.store.approval(id).await?.unwrap_or(a);
            return Err(self.already_decided(&now));
        }
        self.record_approvals_pending().await;
        Ok(a)
    }

    /// [`Hive::approve`], when given, only if the approval's diff is still
    /// `seen` (its [`diff_id`]): the operator read one diff, and another
    /// approval of the agent deployed since (on another node, in another
    /// window) makes approving this one undo it unseen. Checked here, and
    /// again as the config is deployed (one being deployed now may land
    /// between): then the approval fails, and says why.
    pub async fn approve_seen(self: &Arc<Self>, id: i64, seen: Option<&str>) -> Result<()> {
        let mut was = None;
        if let Some(seen) = seen {
            let a = self
                .store
                .approval(id)
                .await?
                .ok_or_else(|| no_such_approval(id))?;
            let deployed = self
                .store
                .agent(&a.agent)
                .await?
                .map(|r| r.config_toml)
                .unwrap_or_default();
            if diff_id(&config_diff(&deployed, &pinned(&a)?)) != seen {
                return Err(Error::refused(format!(
                    "approval #{id}'s diff is no longer the one you read: what runs changed since (another approval was deployed); read it again, then approve"
                )));
            }
            was = Some(deployed);
        }
        self.approve_from(id, was).await
    }

    /// Approves and runs an approval; a second decision is refused. Its
    /// status then says what happened: `approved` (with a note when part of
    /// it is left: the restart after a deploy failed), or `failed` with
    /// nothing changed; a spawn its home node had not finished within the
    /// wait is that node's to settle. The work runs in a task of its own: a
    /// caller that goes away (a closed page) does not cut it off.
    pub async fn approve(self: &Arc<Self>, id: i64) -> Result<()> {
        self.approve_from(id, None).await
    }

    /// [`Hive::approve`]; a config is deployed only over `was`, when given.
    async fn approve_from(self: &Arc<Self>, id: i64, was: Option<String>) -> Result<()> {
        let a = self.decide(id, ApprovalStatus::Approved, None).await?;
        let under_way = UnderWay::new(self.clone(), id);
        let hive = self.clone();
        let carried = self
            .spawn_task("approval", async move {
                let (outcome, settled) = hive.carry_out_approval(&a, was.as_deref()).await;
                // One whose end could not be stored stays under way here:
                // this process's sweep must not call it cut off.
                if !settled {
                    std::mem::forget(under_way);
                }
                outcome
            })
            .await;
        carried.map_err(|e| Error::io("approving")(std::io::Error::other(e)))?
    }

    /// Runs approved approval `a` and settles it with what happened; false
    /// when that could not be stored (tried three times).
    async fn carry_out_approval(
        self: &Arc<Self>,
        a: &ApprovalRow,
        was: Option<&str>,
    ) -> (Result<()>, bool) {
        let id = a.id;
        let outcome = self.run_approval(a, was).await;
        let what = format!("Approval #{id} ({} {})", a.kind, a.agent);
        let settled = match &outcome {
            Ok(Carried::Out) => Some((ApprovalStatus::Approved, None)),
            Ok(Carried::Partly(note)) => Some((ApprovalStatus::Approved, Some(note.clone()))),
            // Its home node settles it when it is done.
            Ok(Carried::Elsewhere(_)) => None,
            Err(e) => Some((ApprovalStatus::Failed, Some(e.to_string()))),
        };
        let told = match &outcome {
            Ok(Carried::Out) => format!("{what} was approved and carried out."),
            Ok(Carried::Partly(note) | Carried::Elsewhere(note)) => {
                format!("{what} was approved: {note}")
            }
            Err(e) => format!("{what} was approved but failed: {e}"),
        };
        let mut stored = true;
        if let Some((status, note)) = settled {
            stored = false;
            for attempt in 1..=3 {
                match self
                    .store
                    .settle_approval(id, status.clone(), note.as_deref())
                    .await
                {
                    Ok(_) => {
                        stored = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(
                            approval = id,
                            attempt,
                            "could not store how approval #{id} ended: {e}"
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        self.tell_requester(&told).await;
        self.broker.publish(Change::Approvals);
        let result = outcome.and_then(|c| match c {
            Carried::Out => Ok(()),
            Carried::Partly(note) | Carried::Elsewhere(note) => Err(Error::Refused(format!(
                "approval #{id} was approved and {note}"
            ))),
        });
        (result, stored)
    }

    /// Settles what a stop cut off: each approval this node approved whose
    /// action never ended (not under way here, and older than
    /// [`cut_off_after`]: another daemon of the same name may be carrying
    /// it out) is marked failed, and the operator and the requester are
    /// told to check it and ask again. Not run again: the operator decides,
    /// with the hive as it is now. A spawn handed to its home node is that
    /// node's to settle, unless it has said nothing for ten times as long.
    pub(crate) async fn settle_cut_off_approvals(self: &Arc<Self>) -> Result<()> {
        let age = cut_off_after();
        let now = crate::clock::now_ms();
        let older = |a: &ApprovalRow, than: Duration| {
            a.decided_at
                .is_some_and(|at| now - at >= i64::try_from(than.as_millis()).unwrap_or(i64::MAX))
        };
        let mut settled = false;
        for a in self.store.unsettled_approvals(self.node().as_str()).await? {
            let remote = home_of(&a).is_some_and(|home| &home != self.node());
            let due = if remote {
                older(&a, age * 10)
            } else {
                older(&a, age)
            };
            if !due
                || self
                    .approving
                    .lock()
                    .expect("approving lock")
                    .contains(&a.id)
            {
                continue;
            }
            let note = if remote {
                format!(
                    "the agent's home node never said it created {}: check `hive-c0re status` and `hive-c0re nodes`, then request it again if it is still wanted",
                    a.agent
                )
            } else {
                format!(
                    "hive-c0re stopped while carrying it out (a crash or a restart), so part of it may have run: check `hive-c0re status` and `hive-c0re config show {}`, then request it again if it is still wanted",
                    a.agent
                )
            };
            // Unless its end was stored meanwhile (its home node, late).
            if !self.store.settle_cut_off(a.id, &note).await? {
                continue;
            }
            settled = true;
            let what = format!("Approval #{} ({} {})", a.id, a.kind, a.agent);
            tracing::warn!(approval = a.id, "{what} was cut off: {note}");
            let about = AgentName::parse(&a.agent).ok();
            self.tell_operator(
                hive_sh4re::notification::NotificationKind::Approval,
                about.as_ref(),
                &format!("{what} failed: {note}"),
            )
            .await;
            self.tell_requester(&format!("{what} was approved but failed: {note}"))
                .await;
        }
        if settled {
            self.broker.publish(Change::Approvals);
        }
        Ok(())
    }

    /// [`Hive::settle_cut_off_approvals`] now and at each [`cut_off_after`] until shutdown.
    pub async fn sweep_cut_off_approvals(self: Arc<Self>) {
        loop {
            if let Err(e) = self.settle_cut_off_approvals().await {
                tracing::warn!("could not settle the approvals a stop cut off: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(cut_off_after()) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Denies an approval with an optional reason; a second decision is refused.
    pub async fn deny(&self, id: i64, note: Option<&str>) -> Result<()> {
        let a = self.decide(id, ApprovalStatus::Denied, note).await?;
        let why = note.map(|n| format!(" Reason: {n}")).unwrap_or_default();
        self.tell_requester(&format!(
            "Approval #{id} ({} {}) was denied by the operator.{why}",
            a.kind, a.agent
        ))
        .await;
        self.broker.publish(Change::Approvals);
        Ok(())
    }

    async fn run_approval(self: &Arc<Self>, a: &ApprovalRow, was: Option<&str>) -> Result<Carried> {
        let name = AgentName::parse(&a.agent)?;
        match &a.kind {
            ApprovalKind::Spawn => match home_of(a) {
                // The agent's config repo and state go on its home node's disk:
                // that node creates it, reading the approval from the store,
                // and settles the approval when it outlasts the wait here.
                Some(home) if &home != self.node() => {
                    let verb = Steer::SpawnApproved { approval: a.id };
                    Ok(match self.asked(home.as_str(), &name, &verb).await? {
                        Asked::Done { .. } => Carried::Out,
                        Asked::Unfinished(why) => Carried::Elsewhere(why),
                    })
                }
                _ => self.create_approved(a).await.map(|()| Carried::Out),
            },
            ApprovalKind::ApplyCommit => self.deploy(&name, &pinned(a)?, &a.commit_ref, was).await,
            other => Err(Error::refused(format!(
                "approvals of kind {:?} have no action in this hive",
                other.as_str()
            ))),
        }
    }

    /// Creates and starts the agent spawn approval `a` names, here, with the config it pinned.
    pub(super) async fn create_approved(self: &Arc<Self>, a: &ApprovalRow) -> Result<()> {
        let name = AgentName::parse(&a.agent)?;
        let text = pinned(a)?;
        let sha = (!a.commit_ref.is_empty()).then_some(a.commit_ref.as_str());
        let parent = Payload::of(a).requested_by;
        self.create(&name, &text, sha, parent.as_deref()).await?;
        Ok(())
    }

    /// Deploys `text` (the pinned `agent.toml` of commit `sha`) as the agent's
    /// config after validating it, and restarts the agent. Refused with
    /// nothing changed, or [`Carried::Partly`] when the config is deployed
    /// and the restart failed.
    /// Deploys `text` (commit `sha`) to `name` and restarts it; only over
    /// the deployed text `was`, when given.
    async fn deploy(
        self: &Arc<Self>,
        name: &AgentName,
        text: &str,
        sha: &str,
        was: Option<&str>,
    ) -> Result<Carried> {
        AgentConfig::from_toml(text).map_err(|e| {
            Error::refused(format!(
                "commit {} of {name}'s config is refused, the agent keeps its old config: {e}",
                config_repo::short(sha)
            ))
        })?;
        // Its home node restarts it: one that is down could not, and the
        // agent would keep its old config there unseen; refuse before deploying.
        let row = self.agent_row(name).await?;
        if let Some(home) = row.node.as_deref().filter(|_| row.want_running) {
            self.check_up(home, &format!("restart {name}")).await?;
        }
        let set = match was {
            None => {
                self.store
                    .set_config(name.as_str(), text, Some(sha))
                    .await?
            }
            Some(was) => {
                self.store
                    .set_config_over(name.as_str(), text, Some(sha), was)
                    .await?
            }
        };
        if !set && was.is_some() {
            return Err(Error::refused(format!(
                "{name}'s config changed between the diff you read and this deploy (another approval was deployed): nothing was deployed; ask for the change again"
            )));
        }
        self.broker.publish(Change::Agent(name.to_string()));
        if !row.want_running {
            return Ok(Carried::Out);
        }
        Ok(match self.restart(name).await {
            Ok(()) => Carried::Out,
            Err(e) => Carried::Partly(format!(
                "commit {} is deployed, but the restart failed, so {name} has not started with it yet: {e}. `hive-c0re restart {name}` starts it with the new config",
                config_repo::short(sha)
            )),
        })
    }

    /// One approval, if it exists (a decided one may have been vacuumed).
    pub async fn approval(&self, id: i64) -> Result<Option<Approval>> {
        let Some(a) = self.store.approval(id).await? else {
            return Ok(None);
        };
        let all = self.store.approvals().await?;
        let pending = self.pending(&all).await;
        Ok(Some(self.wire(&a, &pending).await))
    }

    /// Every approval, oldest first.
    pub async fn approvals(&self) -> Result<Vec<Approval>> {
        let all = self.store.approvals().await?;
        let pending = self.pending(&all).await;
        let mut wired = Vec::with_capacity(all.len());
        for a in &all {
            wired.push(self.wire(a, &pending).await);
        }
        Ok(wired)
    }

    /// The refusal of a second decision: on which node the first was made,
    /// when that was another node of a shared store.
    fn already_decided(&self, a: &ApprovalRow) -> Error {
        let on = a
            .decided_on
            .as_deref()
            .filter(|n| self.store.shared() && *n != self.node().as_str())
            .map(|n| format!(" on node {n}"))
            .unwrap_or_default();
        Error::refused(format!(
            "approval #{} was decided already ({}{on}): an approval can be decided once",
            a.id, a.status
        ))
    }

    async fn tell_requester(&self, body: &str) {
        if let Err(e) = self.notify(&AgentName::manager(), body).await {
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
        // An error may quote what the manager wrote (a config's line).
        note: a
            .note
            .as_deref()
            .map(|n| hive_sh4re::text::visible(n).into_owned()),
        // The manager's words: nothing in them may hide from the operator.
        description: a
            .description
            .as_deref()
            .map(|d| hive_sh4re::text::visible(d).into_owned()),
        node: Payload::of(a).node,
        warnings: Vec::new(),
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
    // The manager writes agent.toml: a character that shows nothing in a
    // string or a comment would make the diff read otherwise than what deploys.
    hive_sh4re::text::visible(
        &diff
            .unified_diff()
            .context_radius(3)
            .header("deployed/agent.toml", "requested/agent.toml")
            .to_string(),
    )
    .into_owned()
}

/// The `env` entries of the `requested` config, new or changed against the
/// `deployed` one, that send claude's model requests elsewhere.
fn redirects(
    requested: Option<&AgentConfig>,
    deployed: Option<&AgentConfig>,
) -> Vec<(String, String)> {
    let Some(requested) = requested else {
        return Vec::new();
    };
    requested
        .env
        .iter()
        .filter(|(k, _)| redirects_model_traffic(k))
        .filter(|(k, v)| deployed.and_then(|d| d.env.get(*k)) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A short name of a diff's text (SHA-256, hex): what the operator read,
/// sent back with an approve.
pub fn diff_id(diff: &str) -> String {
    use sha2::Digest;
    crate::hex::encode(&sha2::Sha256::digest(diff.as_bytes()))
}

/// What the `requested` config lets its agent do that the `deployed` one
/// (none: a new agent, measured against the defaults) did not, each as a
/// phrase: tools, recipients, MCP servers, environment variables (`PATH`,
/// `BASH_ENV`, `LD_PRELOAD` change what claude and its allowed tools run,
/// however narrow those are). Read from the parsed configs, so
/// a grant written in TOML escapes (`"\u0042ash(*)"`) or inside what reads as
/// the prompt is named as claude will see it.
fn grants(requested: &AgentConfig, deployed: Option<&AgentConfig>) -> Vec<String> {
    let none = AgentConfig::default();
    let deployed = deployed.unwrap_or(&none);
    let shown = |items: &[String]| {
        items
            .iter()
            .map(|i| hive_sh4re::text::visible(i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The entries of `now` that `before` lacks, shown; None when there are none.
    let added = |now: &[String], before: &[String]| {
        let more: Vec<String> = now
            .iter()
            .filter(|i| !before.contains(i))
            .cloned()
            .collect();
        (!more.is_empty()).then(|| shown(&more))
    };
    let mut out = Vec::new();
    if let Some(tools) = added(&requested.allowed_tools, &deployed.allowed_tools) {
        out.push(format!("use tools it could not before: {tools}"));
    }
    if requested.allowed_recipients.is_empty() && !deployed.allowed_recipients.is_empty() {
        out.push(format!(
            "send to anyone in the hive (allowed_recipients is now empty; it was {})",
            shown(&deployed.allowed_recipients)
        ));
    } else if !deployed.allowed_recipients.is_empty()
        && let Some(more) = added(&requested.allowed_recipients, &deployed.allowed_recipients)
    {
        out.push(format!("send to {more} as well"));
    }
    let servers: Vec<String> = requested
        .mcp_servers
        .iter()
        .filter(|(name, server)| deployed.mcp_servers.get(*name) != Some(*server))
        .map(|(name, server)| {
            let mut run = vec![server.command.as_str()];
            run.extend(server.args.iter().map(String::as_str));
            // Its environment too: a server that runs the same command may not run the same code.
            let env = changed_env(&server.env, deployed.mcp_servers.get(name).map(|s| &s.env));
            let env = if env.is_empty() {
                String::new()
            } else {
                format!(" with {env}")
            };
            format!(
                "{} (runs {}{env})",
                hive_sh4re::text::visible(name),
                hive_sh4re::text::visible(&run.join(" "))
            )
        })
        .collect();
    if !servers.is_empty() {
        out.push(format!(
            "run MCP servers new or changed: {}",
            servers.join(", ")
        ));
    }
    // Those that only redirect the model's traffic have a warning of their
    // own (`redirects`); NODE_OPTIONS also runs code in claude (`--require`).
    let mut env = requested.env.clone();
    env.retain(|k, _| !redirects_model_traffic(k) || k == "NODE_OPTIONS");
    let env = changed_env(&env, Some(&deployed.env));
    if !env.is_empty() {
        out.push(format!("run its claude and tools with {env}"));
    }
    out
}

/// The entries of `now` new or changed against `before`, shown as
/// `K="v", ...`; empty when there are none.
fn changed_env(
    now: &std::collections::BTreeMap<String, String>,
    before: Option<&std::collections::BTreeMap<String, String>>,
) -> String {
    now.iter()
        .filter(|(k, v)| before.and_then(|b| b.get(*k)) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{}={:?}",
                hive_sh4re::text::visible(k),
                hive_sh4re::text::visible(v)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// (deployed model, requested model, override) when the `requested` config
/// changes the model of `agent`, whose model the operator overrides.
fn masked_model(
    agent: Option<&AgentRow>,
    requested: Option<&AgentConfig>,
    deployed: Option<&AgentConfig>,
) -> Option<(String, String, String)> {
    let over = agent?.model_override.clone()?;
    let (requested, deployed) = (&requested?.model, &deployed?.model);
    (requested != deployed).then(|| (deployed.clone(), requested.clone(), over))
}

/// True for a variable that sends claude's requests (the model's, with
/// their credential) elsewhere or lets them through without checks.
fn redirects_model_traffic(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    k.starts_with("ANTHROPIC_")
        || k.ends_with("_PROXY")
        || matches!(
            k.as_str(),
            "NODE_TLS_REJECT_UNAUTHORIZED"
                | "NODE_EXTRA_CA_CERTS"
                | "NODE_OPTIONS"
                | "SSL_CERT_FILE"
        )
}

fn no_repo(name: &AgentName, repo: &std::path::Path) -> Error {
    Error::refused(format!(
        "{name} has no config repo at {}: make one with hive-c0re init-config {name}",
        repo.display()
    ))
}

/// The agent whose home node keeps an agent's config repo: the manager,
/// whose container binds the repos, else (a hive without one) the agent
/// itself; None for a future agent of a hive without a manager.
fn repo_keeper<'a>(
    manager: Option<&'a AgentRow>,
    agent: Option<&'a AgentRow>,
) -> Option<&'a AgentRow> {
    manager.or(agent)
}

/// Another node carried out `command` for `name` but replied what this node cannot read.
fn unreadable_reply(name: &AgentName, command: &str, reply: &str) -> Error {
    Error::refused(format!(
        "the node that carried out `{command}` for {name} replied {reply:?}, which this node does not read: are the two nodes on the same version of hive-c0re?"
    ))
}

/// The refusal of the manager's request while its queue is full.
fn queue_full() -> Error {
    Error::refused(format!(
        "{PENDING_APPROVALS_MAX} approvals wait for the operator, the most hive-c0re takes from the manager: wait until the operator decides some (their decisions reach your inbox from system), then ask again"
    ))
}

fn no_such_approval(id: i64) -> Error {
    Error::refused(format!(
        "there is no approval #{id}: see hive-c0re approvals"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race `approve_seen`'s first check cannot close: another approval
    /// deployed after the check and before this deploy. The deploy is made
    /// only over the text the diff was read against; else nothing changes
    /// and the approval fails, saying why.
    #[tokio::test]
    async fn a_deploy_over_a_config_that_changed_since_the_diff_was_read_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        hive.add_stopped(&alice, "model = \"haiku\"\n")
            .await
            .unwrap();
        let queue = |text: &str| {
            let payload = Payload {
                config_toml: Some(text.to_owned()),
                ..Payload::default()
            }
            .to_json();
            let hive = hive.clone();
            async move {
                hive.store
                    .add_approval(&NewApproval {
                        agent: "alice",
                        kind: ApprovalKind::ApplyCommit,
                        payload_json: &payload,
                        commit_ref: "0123456789abcdef0123456789abcdef01234567",
                        description: None,
                        while_fewer_than: None,
                    })
                    .await
                    .unwrap()
                    .unwrap()
            }
        };
        let id = queue("model = \"opus\"\n").await;
        let err = hive
            .approve_from(id, Some("model = \"sonnet\"\n".into()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("changed between the diff you read and this deploy"),
            "{err}"
        );
        let row = hive.store.agent("alice").await.unwrap().unwrap();
        assert_eq!(row.config_toml, "model = \"haiku\"\n");
        let a = hive.store.approval(id).await.unwrap().unwrap();
        assert_eq!(a.status, ApprovalStatus::Failed);
        // Over the text it was read against, it deploys.
        let id = queue("model = \"opus\"\n").await;
        hive.approve_from(id, Some("model = \"haiku\"\n".into()))
            .await
            .unwrap();
        let row = hive.store.agent("alice").await.unwrap().unwrap();
        assert_eq!(row.config_toml, "model = \"opus\"\n");
    }

    #[test]
    fn grants_name_what_widens_and_nothing_that_narrows() {
        let cfg = |t: &str| AgentConfig::from_toml(t).unwrap();
        let deployed = cfg(
            "allowed_tools = [\"Read\"]\nallowed_recipients = [\"bob\"]\n\
             [mcp_servers.fs]\ncommand = \"fs\"\n",
        );
        assert!(grants(&deployed, Some(&deployed)).is_empty());
        let narrower = cfg("allowed_recipients = [\"bob\"]\n");
        assert!(grants(&narrower, Some(&deployed)).is_empty());
        let wider = cfg(
            "allowed_tools = [\"Read\", \"Bash(*)\"]\nallowed_recipients = [\"bob\", \"carol\"]\n\
             [mcp_servers.fs]\ncommand = \"fs\"\nargs = [\"--root\", \"/\"]\n\
             [mcp_servers.web]\ncommand = \"web\\u202e\"\n",
        );
        assert_eq!(
            grants(&wider, Some(&deployed)),
            [
                "use tools it could not before: Bash(*)",
                "send to carol as well",
                "run MCP servers new or changed: fs (runs fs --root /), web (runs web⟨U+202E⟩)",
            ]
        );
        // A variable is a grant: BASH_ENV runs a file at every `Bash(git *)`;
        // so is a server's, though it runs the same command.
        let env = cfg(
            "allowed_tools = [\"Read\"]\nallowed_recipients = [\"bob\"]\n\
             [env]\nBASH_ENV = \"/state/x.sh\"\nANTHROPIC_BASE_URL = \"http://elsewhere\"\n\
             NODE_OPTIONS = \"--require /state/y.js\"\n\
             [mcp_servers.fs]\ncommand = \"fs\"\nenv = { NODE_OPTIONS = \"--require /state/x.js\" }\n",
        );
        assert_eq!(
            grants(&env, Some(&deployed)),
            [
                "run MCP servers new or changed: fs (runs fs with NODE_OPTIONS=\"--require /state/x.js\")",
                "run its claude and tools with BASH_ENV=\"/state/x.sh\", NODE_OPTIONS=\"--require /state/y.js\"",
            ]
        );
        // A new agent is measured against the defaults: anyone is the default.
        assert_eq!(
            grants(&cfg("allowed_tools = [\"Read\"]\n"), None),
            ["use tools it could not before: Read"]
        );
    }

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
        // A bidi override cannot make a line read otherwise than it deploys.
        let d = config_diff(
            "model = \"haiku\"\n",
            "model = \"haiku\" # \u{202E}\"]hsaB\"[ = sloot_dewolla\u{202C}\nx = \"\u{200B}\"\n",
        );
        assert!(
            d.contains("# ⟨U+202E⟩\"]hsaB\"[ = sloot_dewolla⟨U+202C⟩"),
            "{d}"
        );
        assert!(d.contains("x = \"⟨U+200B⟩\""), "{d}");
    }
}
