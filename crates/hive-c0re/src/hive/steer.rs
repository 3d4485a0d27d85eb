//! Steering an agent whose home is another node (several nodes on one
//! PostgreSQL store). Its harness runs there, so start, stop, restart,
//! kill, destroy, cancel and compaction must run there too: the asking node
//! stores a request for the home node (`store::RequestRow`), which wakes
//! it; the home node takes it (once), runs it through the same `Hive`
//! method its own operator's command would, and stores the outcome, which
//! wakes the asking node; the operator gets the home node's reply as if the
//! command ran where they asked. Nothing goes node to node but through the
//! store, and a request carries a verb of a closed set, never a command.
//!
//! The shell is a stream: its request (`Steer::Shell`) only grants it, and
//! the stream goes node to node on a channel the request's one-time ticket
//! opens (`crate::node_shell`).

use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::{AgentName, NodeName};
use serde::{Deserialize, Serialize};

use super::Hive;
use super::nodes::runs_here;
use crate::clock::{duration, now_ms};
use crate::error::{Error, Result};
use crate::store::{AgentRow, NewRequest, RequestRow};

/// How long the asking node waits for the home node to take and run a
/// request unless `HIVE_STEER_WAIT_SECS` says otherwise.
pub const WAIT: Duration = Duration::from_secs(30);
/// How much longer it waits for one the home node took just before [`WAIT`] ran out.
const TAKEN_GRACE: Duration = Duration::from_secs(10);
/// How often a waiter re-checks its request though no wake came (a lost wake costs this much).
const RECHECK: Duration = Duration::from_secs(2);
/// How much longer than the asker's wait a request may still be taken: the
/// asker withdraws it at its wait, on its own clock.
const TAKE_GRACE: Duration = Duration::from_secs(5);

/// A steering verb another node carries out for its agent: a closed set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case", deny_unknown_fields)]
pub enum Steer {
    Start,
    Stop {
        graceful: bool,
    },
    Restart,
    Destroy {
        purge: bool,
    },
    Cancel,
    Compact,
    CompactNotes,
    /// Creates the agent at its home node with the default config (`spawn NAME --node NODE`).
    Spawn {
        model: Option<String>,
    },
    /// Creates the agent an approved spawn approval names, at its home node.
    SpawnApproved {
        approval: i64,
    },
    /// Grants the asking node one shell in the agent's container, opened on
    /// the node-to-node channel with the ticket whose SHA-256 this holds.
    Shell {
        rows: u16,
        cols: u16,
        term: Option<String>,
        ticket_sha256: String,
    },
    // The verbs below are for the node that keeps the agent's config repo
    // ([`Hive::repo_node`]: the manager's home node), not the agent's.
    /// Queues an approval to deploy commit `sha` of the agent's config repo;
    /// the reply is the approval's id.
    RequestApplyCommit {
        sha: String,
        description: Option<String>,
        /// The manager asked (its requests are bounded), not the operator.
        /// Written only when true: a node of the version before reads the rest.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_manager: bool,
    },
    /// Reads `agent.toml` at the head of the agent's config repo; the reply
    /// is `{"sha": ..., "text": ...}`, or `null` when it has no repo.
    ConfigShow,
    /// The operator's edit of the agent's `agent.toml`; the reply is the commit.
    ConfigCommit {
        text: String,
        message: Option<String>,
    },
    /// Makes the config repo of a future agent; the reply is its path there.
    InitConfig,
    /// Removes the agent's files there (its config repo), before its home
    /// node destroys it with `--purge`.
    PurgeConfig,
}

/// How a request another node took ended, for its asker.
pub(super) enum Asked {
    /// Carried out: the request's id and the node's reply.
    Done { id: i64, reply: String },
    /// Taken, and not finished when the asker stopped waiting: it may still
    /// be carried out; the sentence says where its end shows.
    Unfinished(String),
}

impl Steer {
    /// The verb's stored name and its arguments' JSON.
    fn stored(&self) -> (String, String) {
        let mut v = serde_json::to_value(self).expect("a verb always serializes");
        let verb = v
            .as_object_mut()
            .and_then(|o| o.remove("verb"))
            .and_then(|n| n.as_str().map(str::to_owned))
            .expect("a verb is tagged");
        (verb, v.to_string())
    }

    /// The verb a stored request names; refused for anything but a known verb with its arguments.
    pub(super) fn parse(verb: &str, args_json: &str) -> Result<Self> {
        let bad = |e: String| {
            Error::refused(format!(
                "the request names no verb this node knows ({verb:?} with {args_json:?}): {e}"
            ))
        };
        let mut args: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(args_json).map_err(|e| bad(e.to_string()))?;
        args.insert("verb".into(), verb.into());
        serde_json::from_value(args.into()).map_err(|e| bad(e.to_string()))
    }

    /// The command as the operator would type it, for sentences.
    fn command(&self, agent: &str) -> String {
        match self {
            Steer::Start => format!("start {agent}"),
            Steer::Stop { graceful: true } => format!("stop {agent}"),
            Steer::Stop { graceful: false } => format!("kill {agent}"),
            Steer::Restart => format!("restart {agent}"),
            Steer::Destroy { .. } => format!("destroy {agent}"),
            Steer::Cancel => format!("cancel {agent}"),
            Steer::Compact => format!("compact {agent}"),
            Steer::CompactNotes => format!("compact-notes {agent}"),
            Steer::Spawn { .. } => format!("spawn {agent}"),
            Steer::SpawnApproved { approval } => format!("approve {approval} (spawn {agent})"),
            Steer::Shell { .. } => format!("shell {agent}"),
            Steer::RequestApplyCommit { sha, .. } => {
                format!(
                    "request-apply-commit {agent} {}",
                    crate::config_repo::short(sha)
                )
            }
            Steer::ConfigShow => format!("config show {agent}"),
            Steer::ConfigCommit { .. } => format!("config commit {agent}"),
            Steer::InitConfig => format!("init-config {agent}"),
            Steer::PurgeConfig => format!("destroy --purge {agent} (its config repo)"),
        }
    }
}

/// The wait in force: `HIVE_STEER_WAIT_SECS` (for tests), else [`WAIT`].
fn wait() -> Duration {
    crate::clock::secs_from_env("HIVE_STEER_WAIT_SECS", WAIT)
}

/// The broker key the waiter on request `id` watches.
fn outcome_key(id: i64) -> String {
    format!("#request/{id}")
}

impl Hive {
    /// The agent's row when this node runs it and should carry out `verb`
    /// itself; None when the agent's home is another node, which carried it
    /// out through a request (its refusal comes back as this call's error).
    /// The one place that decides where a steering verb runs.
    pub(crate) async fn steer_here(
        &self,
        name: &AgentName,
        verb: Steer,
    ) -> Result<Option<AgentRow>> {
        let row = self.agent_row(name).await?;
        if runs_here(&self.store, &row, self.node()) {
            return Ok(Some(row));
        }
        self.ask(row.node.as_deref().unwrap_or_default(), name, &verb)
            .await?;
        Ok(None)
    }

    /// Spawns `name` with the default config (and `model`) on `node`: here,
    /// or through a request to that node, which creates the agent's state on
    /// its own disk and runs it (its config repo is the manager's node's).
    pub async fn spawn_on(
        self: &Arc<Self>,
        name: &AgentName,
        model: Option<&str>,
        node: Option<&NodeName>,
    ) -> Result<()> {
        match node {
            Some(n) if n != self.node() => {
                if self.store.agent(name.as_str()).await?.is_some() {
                    return Err(Error::refused(format!(
                        "agent {name} exists already: there is nothing to spawn"
                    )));
                }
                let spawn = Steer::Spawn {
                    model: model.map(str::to_owned),
                };
                self.ask(n.as_str(), name, &spawn).await
            }
            _ => self.spawn(name, model, None).await.map(drop),
        }
    }

    /// Refuses a home node the hive does not know, or one that is down.
    pub async fn check_node(&self, node: &NodeName) -> Result<()> {
        self.known_node(node).await?;
        if node == self.node() {
            return Ok(());
        }
        self.check_up(node.as_str(), "").await
    }

    /// Refuses a node name that is no node of this hive: on a store no other
    /// node shares (sqlite), any but this one.
    pub(super) async fn known_node(&self, node: &NodeName) -> Result<()> {
        let me = self.node();
        if node == me {
            return Ok(());
        }
        if !self.store.shared() {
            return Err(Error::refused(format!(
                "{node} is not this node ({me}): a hive on a sqlite file has one node; leave out the node or give {me}, or run several nodes on one PostgreSQL database (docs/postgres.md)"
            )));
        }
        if !self
            .store
            .nodes()
            .await?
            .iter()
            .any(|n| n.name == node.as_str())
        {
            return Err(Error::refused(format!(
                "there is no node {node} in this hive: see hive-c0re nodes, or leave out the node to use this one ({me})"
            )));
        }
        Ok(())
    }

    /// Refuses at once when `node` is down, saying that `command` was not queued.
    pub(super) async fn check_up(&self, node: &str, command: &str) -> Result<()> {
        let Some(last) = self.down_nodes().await?.get(node).copied() else {
            return Ok(());
        };
        let what = if command.is_empty() {
            String::new()
        } else {
            format!("`{command}` was not queued; ")
        };
        Err(Error::refused(format!(
            "{node} is down (no heartbeat for {}): {what}try again when it is back, or see `hive-c0re nodes`",
            duration((now_ms() - last).max(0) as f64)
        )))
    }

    /// Has `node` carry out `verb` for `agent` and waits for its outcome:
    /// Ok when it succeeded there, its sentence as a refusal when it failed.
    pub(super) async fn ask(&self, node: &str, agent: &AgentName, verb: &Steer) -> Result<()> {
        self.ask_for_reply(node, agent, verb).await.map(drop)
    }

    /// [`Hive::ask`], returning the request's id and the home node's reply once it succeeded.
    pub(super) async fn ask_for_reply(
        &self,
        node: &str,
        agent: &AgentName,
        verb: &Steer,
    ) -> Result<(i64, String)> {
        match self.asked(node, agent, verb).await? {
            Asked::Done { id, reply } => Ok((id, reply)),
            Asked::Unfinished(why) => Err(Error::Refused(why)),
        }
    }

    /// Asks `node` to carry out `verb` and waits for its outcome: a refusal
    /// when it refused, or was withdrawn before it took it (not carried
    /// out); [`Asked::Unfinished`] when it took it and is still at it.
    pub(super) async fn asked(&self, node: &str, agent: &AgentName, verb: &Steer) -> Result<Asked> {
        let command = verb.command(agent.as_str());
        self.check_up(node, &command).await?;
        let (name, args) = verb.stored();
        let id = self
            .store
            .enqueue_request(&NewRequest {
                node,
                agent: agent.as_str(),
                verb: &name,
                args_json: &args,
                asked_by: self.node().as_str(),
            })
            .await?;
        tracing::info!(request = id, node, command, "asked the agent's home node");
        let key = outcome_key(id);
        let wait = wait();
        let mut deadline = tokio::time::Instant::now() + wait;
        let mut taken_late = false;
        loop {
            let mut woken = self.broker.watch_inbox(&key);
            let row = self.store.request(id).await?.ok_or_else(|| {
                Error::refused(format!(
                    "the request for `{command}` on {node} vanished: see `hive-c0re status`"
                ))
            })?;
            if let Some((ok, reply)) = row.outcome() {
                return if ok {
                    Ok(Asked::Done { id, reply })
                } else {
                    Err(Error::Refused(reply))
                };
            }
            if tokio::time::Instant::now() >= deadline {
                if taken_late {
                    return Ok(Asked::Unfinished(format!(
                        "`{command}` is running on {node}, which took it but has not finished it within {}: see `hive-c0re status` for how it ends",
                        duration((wait + TAKEN_GRACE).as_millis() as f64)
                    )));
                }
                if self.store.cancel_request(id).await? {
                    return Err(Error::refused(format!(
                        "{node} did not take `{command}` within {}, so it was withdrawn and not carried out: see `hive-c0re nodes` and try again",
                        duration(wait.as_millis() as f64)
                    )));
                }
                taken_late = true;
                deadline += TAKEN_GRACE;
                continue;
            }
            tokio::select! {
                _ = woken.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => {
                    let withdrawn = tokio::time::timeout(
                        Duration::from_secs(2),
                        self.store.cancel_request(id),
                    )
                    .await;
                    if matches!(withdrawn, Ok(Ok(true))) {
                        return Err(Error::refused(format!(
                            "hive-c0re is shutting down: `{command}` was withdrawn before {node} took it, and not carried out"
                        )));
                    }
                    return Ok(Asked::Unfinished(format!(
                        "hive-c0re is shutting down: whether {node} carries out `{command}` shows in `hive-c0re status`"
                    )));
                }
            }
        }
    }

    /// Wakes the waiter on request `id`: its outcome is stored.
    pub(super) fn request_done(&self, id: i64) {
        self.broker.poke(&outcome_key(id));
    }

    /// Takes the requests waiting for this node and runs each in a task of
    /// its own (a graceful stop may wait for a turn to end).
    pub(super) async fn take_requests(self: &Arc<Self>) {
        // A request older than its asker's wait was withdrawn, or its asker
        // gave up without a word (it stopped or crashed meanwhile): it must
        // not run hours later, when this node comes back.
        let within = (wait() + TAKE_GRACE).as_millis() as i64;
        let taken = match self.store.take_requests(self.node().as_str(), within).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("could not take the steering requests for this node: {e}");
                return;
            }
        };
        for r in taken {
            let hive = self.clone();
            self.spawn_task("steering request", async move {
                let outcome = hive.carry_out(&r).await;
                tracing::info!(request = r.id, asked_by = %r.asked_by, verb = %r.verb, agent = %r.agent, ok = outcome.is_ok(), "carried out a request from another node");
                let (ok, reply) = match outcome {
                    Ok(reply) => (true, reply),
                    Err(e) => (false, e.to_string()),
                };
                // Before the asker can hear of it and knock.
                if ok
                    && let Ok(Steer::Shell { ticket_sha256, .. }) = Steer::parse(&r.verb, &r.args_json)
                {
                    hive.grant_shell(r.id, ticket_sha256);
                }
                if let Err(e) = hive.store.finish_request(r.id, ok, &reply).await {
                    tracing::warn!(request = r.id, "could not store a request's outcome: {e}");
                }
            });
        }
    }

    /// Runs one request from another node, checked again here: the verb is
    /// one of [`Steer`], the name parses, and the agent lives on this node
    /// (or, to spawn, does not exist yet); a verb for a config repo, that
    /// this node keeps the repos.
    async fn carry_out(self: &Arc<Self>, r: &RequestRow) -> Result<String> {
        let verb = Steer::parse(&r.verb, &r.args_json)?;
        let name = AgentName::parse(&r.agent)?;
        let done = |r: Result<()>| r.map(|()| String::new());
        match verb {
            Steer::Spawn { model } => {
                return done(self.spawn(&name, model.as_deref(), None).await.map(drop));
            }
            Steer::SpawnApproved { approval } => {
                return done(self.spawn_approved(&name, approval).await);
            }
            Steer::RequestApplyCommit { .. }
            | Steer::ConfigShow
            | Steer::ConfigCommit { .. }
            | Steer::InitConfig
            | Steer::PurgeConfig => return self.carry_out_on_repo(r, &name, verb).await,
            _ => {}
        }
        let row = self.agent_row(&name).await?;
        if !runs_here(&self.store, &row, self.node()) {
            return Err(Error::refused(format!(
                "{name} does not live on node {}: {} asked the wrong node, nothing was done",
                self.node(),
                r.asked_by
            )));
        }
        match verb {
            Steer::Start => done(self.start(&name).await),
            Steer::Stop { graceful } => done(self.stop(&name, graceful).await),
            Steer::Restart => done(self.restart(&name).await),
            Steer::Destroy { purge } => done(self.destroy(&name, purge).await),
            Steer::Cancel => done(self.cancel(&name).await),
            Steer::Compact => done(self.compact(&name).await),
            Steer::CompactNotes => done(self.compact_notes(&name).await),
            // Granted when the agent runs here, answered with the TLS
            // certificate the asking node is to pin; the channel opens the shell.
            Steer::Shell { .. } => {
                self.check_shell(&name)?;
                let identity = crate::node_shell::identity().map_err(Error::Refused)?;
                Ok(identity.fingerprint().to_owned())
            }
            _ => unreachable!("handled above"),
        }
    }

    /// Runs a request for `name`'s config repo, which must be on this node's disk.
    async fn carry_out_on_repo(
        self: &Arc<Self>,
        r: &RequestRow,
        name: &AgentName,
        verb: Steer,
    ) -> Result<String> {
        if let Some(node) = self.repo_node(name).await? {
            return Err(Error::refused(format!(
                "{name}'s config repo is on node {node}, not on node {}: {} asked the wrong node, nothing was done",
                self.node(),
                r.asked_by
            )));
        }
        match verb {
            Steer::RequestApplyCommit {
                sha,
                description,
                by_manager,
            } => self
                .request_apply_commit(
                    name,
                    &sha,
                    description.as_deref(),
                    by_manager.then(AgentName::manager).as_ref(),
                )
                .await
                .map(|id| id.to_string()),
            Steer::ConfigShow => {
                let head = self.repo_head(name).await?;
                Ok(serde_json::to_string(&head).expect("a head always serializes"))
            }
            Steer::ConfigCommit { text, message } => {
                self.config_commit(name, &text, message.as_deref()).await
            }
            Steer::InitConfig => self.init_config(name).await,
            Steer::PurgeConfig => {
                let row = self.agent_row(name).await?;
                if runs_here(&self.store, &row, self.node()) {
                    return Err(Error::refused(format!(
                        "{name} lives on node {}: its own destroy removes its files here",
                        self.node()
                    )));
                }
                self.purge_files(name).await.map(|()| String::new())
            }
            _ => unreachable!("only a config repo's verbs come here"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verb_round_trips_through_its_stored_form_and_nothing_else_parses() {
        for v in [
            Steer::Start,
            Steer::Stop { graceful: true },
            Steer::Destroy { purge: false },
            Steer::CompactNotes,
            Steer::Spawn {
                model: Some("haiku".into()),
            },
            Steer::SpawnApproved { approval: 7 },
            Steer::RequestApplyCommit {
                sha: "abc".into(),
                description: None,
                by_manager: true,
            },
            Steer::ConfigShow,
            Steer::ConfigCommit {
                text: "model = \"opus\"\n".into(),
                message: Some("m".into()),
            },
            Steer::InitConfig,
            Steer::PurgeConfig,
            Steer::Shell {
                rows: 24,
                cols: 80,
                term: None,
                ticket_sha256: "ab".into(),
            },
        ] {
            let (verb, args) = v.stored();
            assert_eq!(Steer::parse(&verb, &args).unwrap(), v, "{verb} {args}");
        }
        assert_eq!(
            Steer::Stop { graceful: false }.stored(),
            ("stop".into(), r#"{"graceful":false}"#.into())
        );
        for (verb, args) in [
            ("rm -rf /", "{}"),
            ("stop", "{}"),
            ("stop", r#"{"graceful":true,"extra":1}"#),
            ("start", "[]"),
            ("start", "not json"),
            ("verb", r#"{"verb":"start"}"#),
        ] {
            let e = Steer::parse(verb, args).unwrap_err().to_string();
            assert!(
                e.starts_with("the request names no verb this node knows"),
                "{verb} {args}: {e}"
            );
        }
    }
}
