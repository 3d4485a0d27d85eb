//! The hive: the one object every surface (host.sock, agent.sock, dashboard)
//! calls to read or change state. Policy lives here — who may send to whom,
//! what a name may be, what an approval does — so the surfaces stay thin.

use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::config::AgentConfig;
use hive_sh4re::event::{EventKind, Payload, SessionReset, StateChange};
use hive_sh4re::host::{AgentStatusRow, Approval, Event, Message, ModelInfo, Question};
use hive_sh4re::limits::{MAX_BODY_BYTES, NAP_MAX_SECONDS, NAP_MIN_SECONDS, RECV_MAX};
use hive_sh4re::{AgentName, AgentState, Mailbox};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent_sock::AgentSockets;
use crate::broker::{Broker, Change};
use crate::clock::{now_ms, rfc3339};
use crate::config_repo;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::runtime::Runtime;
use crate::space::{Space, Transition};
use crate::store::{AgentRow, ApprovalRow, EventRow, MessageRow, NewAgent, QuestionRow, Store};
use crate::supervisor::Supervisor;

/// Which harness binary an agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    /// `hive-ag3nt`: every agent but the manager.
    Ag3nt,
    /// `hive-m1nd`: the manager.
    M1nd,
}

impl Harness {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ag3nt => "ag3nt",
            Self::M1nd => "m1nd",
        }
    }

    /// The binary's file name.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Ag3nt => "hive-ag3nt",
            Self::M1nd => "hive-m1nd",
        }
    }
}

/// Settings of a running hive that are not state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Directory holding `hive-ag3nt` and `hive-m1nd`.
    pub bin_dir: std::path::PathBuf,
    /// The claude CLI to give agents (`HIVE_CLAUDE_BIN`).
    pub claude_bin: Option<std::path::PathBuf>,
    /// Environment passed to every harness (model API variables).
    pub agent_env: Vec<(String, String)>,
    /// Dashboard root URL, when one is served.
    pub dashboard_home: Option<String>,
    /// The dashboard's login link (it holds the token): host.sock's `urls` only.
    pub dashboard_login: Option<String>,
    /// How long a stopped harness gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Free space the state's file system keeps (`min_free_space`); None: the default.
    pub min_free_space: Option<u64>,
}

/// The hive daemon's state and operations.
pub struct Hive {
    pub store: Store,
    pub paths: Paths,
    pub broker: Broker,
    pub runtime: Arc<dyn Runtime>,
    pub supervisor: Supervisor,
    pub settings: Settings,
    /// Cancelled when the daemon shuts down.
    pub shutdown: CancellationToken,
    /// Every task the daemon spawns ([`Hive::spawn_task`]), so shutdown can wait for them.
    tasks: TaskTracker,
    /// The agents' sockets.
    pub(crate) sockets: AgentSockets,
    /// The free-space alarm of the state's file system.
    pub space: Space,
    /// Naps this daemon started: agent -> (stored `nap_until`, its end on the monotonic clock).
    naps: std::sync::Mutex<std::collections::HashMap<String, (i64, std::time::Instant)>>,
}

/// What status rows show as the model of an agent whose stored config cannot be read.
pub const UNREADABLE_CONFIG: &str = "(unreadable config)";

impl Hive {
    /// A hive over an open store.
    pub fn new(
        store: Store,
        paths: Paths,
        runtime: Arc<dyn Runtime>,
        sockets: AgentSockets,
        settings: Settings,
    ) -> Arc<Self> {
        let space = Space::new(&paths.state, paths.space_reserve(), settings.min_free_space);
        Arc::new(Self {
            space,
            naps: Default::default(),
            store,
            paths,
            broker: Broker::new(),
            runtime,
            supervisor: Supervisor::default(),
            settings,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            sockets,
        })
    }

    /// Spawns a task of the daemon; [`Hive::wait_for_tasks`] waits for it.
    pub fn spawn_task<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// After [`Hive::shutdown`] is cancelled: waits until every task spawned
    /// through [`Hive::spawn_task`] has ended, or `limit` passed; false if some still run.
    pub async fn wait_for_tasks(&self, limit: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
    }

    /// A hive over an in-memory store and the process runtime, for unit tests.
    #[cfg(test)]
    pub fn for_tests(dir: &std::path::Path, dashboard_home: Option<String>) -> Arc<Self> {
        let paths = Paths {
            state: dir.join("state"),
            run: dir.join("run"),
        };
        let settings = Settings {
            bin_dir: dir.to_path_buf(),
            claude_bin: None,
            agent_env: vec![],
            dashboard_home,
            dashboard_login: None,
            kill_grace: Duration::from_millis(100),
            min_free_space: None,
        };
        let uids = crate::runtime::UidRanges::new(
            None,
            &paths.state,
            crate::runtime::uid_ranges::DEFAULT_UID_BASE,
        )
        .expect("the default uid base is valid");
        let runtime = Arc::new(crate::runtime::ProcessRuntime::new(paths.clone(), uids));
        let (sockets, _incoming) = AgentSockets::new(paths.clone());
        Self::new(
            Store::in_memory().expect("an in-memory store opens"),
            paths,
            runtime,
            sockets,
            settings,
        )
    }

    /// The agent's row, or a refusal naming it.
    pub fn agent_row(&self, name: &AgentName) -> Result<AgentRow> {
        self.store.agent(name.as_str())?.ok_or_else(|| {
            Error::refused(format!(
                "agent {:?} is not managed by this hive: see hive-c0re status",
                name.as_str()
            ))
        })
    }

    /// The agent's deployed config. A stored text that no longer parses is
    /// refused, never replaced by a default: the default's empty
    /// `allowed_recipients` would let the agent write to anyone.
    pub fn config_of(row: &AgentRow) -> Result<AgentConfig> {
        AgentConfig::from_toml(&row.config_toml).map_err(|e| {
            Error::refused(format!(
                "{0}'s deployed config cannot be read ({e}), so {0} may do nothing that needs it: \
                 the operator deploys a valid agent.toml (hive-c0re request-apply-commit {0} SHA, then approve)",
                row.name
            ))
        })
    }

    /// The model the agent's next turn uses: the operator's override, else its config's.
    pub fn effective_model(row: &AgentRow) -> Result<String> {
        match &row.model_override {
            Some(m) => Ok(m.clone()),
            None => Ok(Self::config_of(row)?.model),
        }
    }

    // ---- messages -------------------------------------------------------

    /// Sends `body` from `from` to `to`, enforcing the sender's allow-list; returns the message id.
    pub async fn send(&self, from: &Mailbox, to: &Mailbox, body: &str) -> Result<i64> {
        if body.trim().is_empty() {
            return Err(Error::refused(
                "the message body is empty: write something to send",
            ));
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(Error::refused(format!(
                "the message body is {} bytes, over the limit of {MAX_BODY_BYTES}: shorten it or put it in a file",
                body.len()
            )));
        }
        match to {
            Mailbox::System => {
                return Err(Error::refused(
                    "\"system\" is the hive's own notice board and takes no messages",
                ));
            }
            Mailbox::Agent(n) if self.store.agent(n.as_str())?.is_none() => {
                return Err(Error::refused(format!(
                    "there is no agent {:?} in this hive: see the status tool (or hive-c0re status) for who is here",
                    n.as_str()
                )));
            }
            _ => {}
        }
        if let Mailbox::Agent(sender) = from {
            let config = Self::config_of(&self.agent_row(sender)?)?;
            if !config.may_send_to(to) {
                return Err(Error::refused(format!(
                    "{sender} may not send to {to}: its allowed_recipients are {:?}; ask the manager or the operator to change the config",
                    config.allowed_recipients
                )));
            }
        }
        self.space.refuse_if_low()?;
        let id = self
            .store
            .send_grouped(from.as_str(), to.as_str(), body)
            .await
            .map_err(|e| crate::space::full_or(&self.space, e.into()))?;
        self.broker.poke(to.as_str());
        self.broker.publish(Change::Message {
            to: to.as_str().to_owned(),
            from: from.as_str().to_owned(),
        });
        if let Mailbox::Agent(n) = to {
            self.broker.publish(Change::Agent(n.to_string()));
        }
        Ok(id)
    }

    /// A notice from hive-c0re itself; it waits in the inbox even if the agent does not exist yet.
    pub fn notify(&self, to: &AgentName, body: &str) -> Result<i64> {
        let id = self.store.send("system", to.as_str(), body)?;
        self.broker.poke(to.as_str());
        self.broker.publish(Change::Agent(to.to_string()));
        Ok(id)
    }

    /// Reads and acknowledges up to `max` messages of `mailbox`, waiting up to `wait` for the first.
    pub async fn recv(&self, mailbox: &Mailbox, max: u32, wait: Duration) -> Result<Vec<Message>> {
        let max = max.clamp(1, RECV_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut rx = self.broker.watch_inbox(mailbox.as_str());
            let got = self
                .store
                .recv(mailbox.as_str(), max)
                .map_err(|e| crate::space::full_or(&self.space, e.into()))?;
            if !got.is_empty() {
                if let Mailbox::Agent(n) = mailbox {
                    self.broker.publish(Change::Agent(n.to_string()));
                }
                return Ok(got.iter().map(message_wire).collect());
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok(vec![]) },
                _ = tokio::time::sleep_until(deadline) => return Ok(vec![]),
                _ = self.shutdown.cancelled() => return Ok(vec![]),
            }
        }
    }

    /// Tells the operator that the free-space alarm went on or cleared: the
    /// log, a notice from `system` in the operator's inbox, and the dashboard.
    pub fn space_changed(&self, t: &Transition) {
        let notice = match t {
            Transition::Low(a) => {
                tracing::warn!("{}", a.message);
                a.message.clone()
            }
            Transition::Cleared => {
                if self.space.take_deferred_release() {
                    // At-least-once: a harness that claimed one of them meanwhile may see it again.
                    match self.store.release_all_claims() {
                        Ok(n) => {
                            tracing::info!(
                                n,
                                "returned messages of interrupted turns to their inboxes"
                            );
                            for name in self.list().unwrap_or_default() {
                                self.broker.poke(&name);
                            }
                        }
                        Err(e) => {
                            tracing::warn!("could not return messages of interrupted turns: {e}");
                            self.space.defer_release();
                        }
                    }
                }
                let text = format!(
                    "disk space is back on {}: hive-c0re takes new messages, schedules and agents' events again",
                    crate::space::filesystem_of(&self.paths.state)
                );
                tracing::info!("{text}");
                text
            }
        };
        // The reserve the alarm freed has room for this one row.
        match self.store.send("system", "operator", &notice) {
            Ok(_) => {
                self.broker.poke("operator");
                self.broker.publish(Change::Message {
                    to: "operator".into(),
                    from: "system".into(),
                });
            }
            Err(e) => tracing::warn!("could not tell the operator about disk space: {e}"),
        }
        self.broker.publish(Change::Space);
    }

    // ---- status ---------------------------------------------------------

    /// Names of all agents.
    pub fn list(&self) -> Result<Vec<String>> {
        Ok(self.store.agents()?.into_iter().map(|a| a.name).collect())
    }

    /// A status row for each agent.
    pub fn status_rows(&self) -> Result<Vec<AgentStatusRow>> {
        Ok(self
            .store
            .agents()?
            .iter()
            .map(|a| self.status_row_of(a))
            .collect())
    }

    /// The status row of one agent.
    pub fn status_row(&self, name: &AgentName) -> Result<AgentStatusRow> {
        Ok(self.status_row_of(&self.agent_row(name)?))
    }

    fn status_row_of(&self, a: &AgentRow) -> AgentStatusRow {
        let running = self.supervisor.is_running(&a.name);
        let active_model = match (a.state, &a.active_model) {
            (AgentState::Thinking, Some(m)) => m.clone(),
            _ => Self::effective_model(a).unwrap_or_else(|_| UNREADABLE_CONFIG.to_owned()),
        };
        let napping = self.nap_left(&a.name, a.nap_until, now_ms()).is_some();
        let state = if napping && a.state == AgentState::Idle {
            AgentState::Napping
        } else {
            a.state
        };
        AgentStatusRow {
            name: a.name.clone(),
            running,
            failed: a.failed,
            needs_update: false,
            needs_login: a.needs_login,
            deployed_sha: a.deployed_sha.as_deref().map(config_repo::short),
            pending_reminders: self.store.schedule_count(&a.name).unwrap_or(0),
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
            state: if running {
                state.as_str().to_owned()
            } else {
                "stopped".to_owned()
            },
            state_since: rfc3339(a.state_since),
            inbox_depth: self.store.inbox_depth(&a.name),
            last_turn_at: a.last_turn_at.map(rfc3339),
            runtime: self.runtime.kind().as_str().to_owned(),
            isolated: self.runtime.isolated(),
            nap_until: a.nap_until.filter(|_| napping).map(rfc3339),
        }
    }

    // ---- lifecycle ------------------------------------------------------

    /// Creates an agent with a default config (its config repo too, if it has none) and starts it.
    ///
    /// A config repo that is there already is left alone and not deployed:
    /// nobody reviewed it (request-spawn deploys a repo's config after review).
    pub async fn spawn(
        self: &Arc<Self>,
        name: &AgentName,
        model: Option<&str>,
        parent: Option<&str>,
    ) -> Result<AgentRow> {
        let mut config = default_config(name);
        if let Some(m) = model {
            config.model = m.to_owned();
        }
        config
            .validate()
            .map_err(|e| Error::refused(e.to_string()))?;
        self.create(name, &config.to_toml(), None, parent).await
    }

    /// Creates an agent that runs exactly `text` (an `agent.toml`, validated
    /// here) and starts it; `sha` names the reviewed commit `text` came from.
    pub async fn create(
        self: &Arc<Self>,
        name: &AgentName,
        text: &str,
        sha: Option<&str>,
        parent: Option<&str>,
    ) -> Result<AgentRow> {
        if self.store.agent(name.as_str())?.is_some() {
            return Err(Error::refused(format!(
                "agent {name} exists already: start it with hive-c0re start {name}, or destroy it first"
            )));
        }
        AgentConfig::from_toml(text).map_err(|e| Error::refused(format!("{name}: {e}")))?;
        let (hive, n, t) = (self.clone(), name.clone(), text.to_owned());
        let made = crate::blocking::run(&format!("creating {name}'s directories"), move || {
            let state = hive.paths.agent_state(&n);
            std::fs::create_dir_all(&state)
                .map_err(Error::io(format!("could not create {}", state.display())))?;
            hive.ensure_repo(&n, &t)
        })
        .await?;
        let harness = if name.is_manager() {
            Harness::M1nd
        } else {
            Harness::Ag3nt
        };
        let uids = self.runtime.uid_ranges();
        let used: Vec<u32> = self.store.agents()?.iter().map(|a| a.uid_base).collect();
        let uid_base = uids.allocate(&used)?;
        let row = self
            .store
            .create_agent(&NewAgent {
                name: name.as_str(),
                harness: harness.as_str(),
                config_toml: text,
                deployed_sha: sha.or(made.as_deref()),
                parent,
                want_running: true,
                uid_base,
            })
            .inspect_err(|_| uids.release(uid_base))?;
        self.broker.publish(Change::Agent(name.to_string()));
        self.run(name)?;
        Ok(row)
    }

    /// Starts a stopped or failed agent (a no-op for a running one).
    pub fn start(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        self.agent_row(name)?;
        self.store.set_want_running(name.as_str(), true)?;
        self.store.set_failed(name.as_str(), false)?;
        self.run(name)?;
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(())
    }

    /// Opens the agent's socket (its harness connects there as soon as it
    /// starts) and supervises its harness.
    pub fn run(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        self.open_socket(name)?;
        self.supervisor.start(self, name);
        Ok(())
    }

    /// Opens the agent's socket unless it is open, reachable by the agent's uid alone.
    pub fn open_socket(&self, name: &AgentName) -> Result<()> {
        let row = self.agent_row(name)?;
        let owner = self.runtime.agent_uid(row.uid_base);
        if owner.is_some() {
            // The socket directory goes to the agent's uid: only a range this hive holds.
            self.runtime
                .uid_ranges()
                .hold(row.uid_base)
                .map_err(|e| Error::refused(format!("{name} cannot run: {e}")))?;
        }
        self.sockets.listen(name, owner)
    }

    /// Stops an agent and keeps it stopped across restarts of hive-c0re.
    pub async fn stop(self: &Arc<Self>, name: &AgentName, graceful: bool) -> Result<()> {
        self.agent_row(name)?;
        self.store.set_want_running(name.as_str(), false)?;
        if graceful {
            self.wait_turn_end(name).await;
        }
        self.supervisor.stop(name).await;
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(())
    }

    async fn wait_turn_end(&self, name: &AgentName) {
        let mut changes = self.broker.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while self
            .store
            .agent(name.as_str())
            .ok()
            .flatten()
            .is_some_and(|a| a.state != AgentState::Idle)
        {
            tokio::select! {
                _ = changes.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Stops and starts an agent.
    pub async fn restart(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        self.agent_row(name)?;
        self.supervisor.stop(name).await;
        self.start(name)
    }

    /// Removes an agent from the hive; its state and config stay on disk unless `purge`.
    pub async fn destroy(self: &Arc<Self>, name: &AgentName, purge: bool) -> Result<()> {
        let row = self.agent_row(name)?;
        self.supervisor.stop(name).await;
        self.sockets.close(name);
        let spec = self.launch_spec(&row);
        self.runtime.forget(&spec).await?;
        self.store.delete_agent(name.as_str())?;
        self.store.remove_schedules_of(name.as_str())?;
        if purge {
            self.store.purge_messages(name.as_str())?;
            self.store.purge_events(name.as_str())?;
            let dirs = [self.paths.agent_dir(name), self.paths.config_repo(name)];
            crate::blocking::run(&format!("removing {name}'s files"), move || {
                for dir in dirs {
                    let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                        continue;
                    };
                    // A link (the manager can plant one among the repos) goes, not what it
                    // points at; remove_dir_all does not follow links inside the tree.
                    let removed = if meta.is_dir() {
                        std::fs::remove_dir_all(&dir)
                    } else {
                        std::fs::remove_file(&dir)
                    };
                    removed.map_err(Error::io(format!("could not remove {}", dir.display())))?;
                }
                Ok(())
            })
            .await?;
        }
        self.broker.publish(Change::AgentRemoved(name.to_string()));
        Ok(())
    }

    /// Parks or resumes an agent's turn loop (persists; messages keep queueing).
    pub fn set_paused(&self, name: &AgentName, paused: bool) -> Result<()> {
        self.agent_row(name)?;
        self.store.set_paused(name.as_str(), paused)?;
        self.broker.poke(name.as_str());
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(())
    }

    /// Everything a runtime needs to launch this agent.
    pub fn launch_spec(&self, row: &AgentRow) -> crate::runtime::LaunchSpec {
        // Rows are only created from validated names.
        let name = AgentName::parse(&row.name).expect("stored agent names are valid");
        let harness = if row.harness == Harness::M1nd.as_str() {
            Harness::M1nd
        } else {
            Harness::Ag3nt
        };
        crate::runtime::LaunchSpec {
            harness_bin: self.settings.bin_dir.join(harness.binary()),
            claude_bin: self.settings.claude_bin.clone(),
            state_dir: self.paths.agent_state(&name),
            sock_dir: self.paths.agent_sock_dir(&name),
            sock: self.paths.agent_sock(&name),
            config_repos: (harness == Harness::M1nd).then(|| self.paths.configs_root()),
            rootfs: self.paths.rootfs(&name),
            env: self.settings.agent_env.clone(),
            uid_base: row.uid_base,
            log: self.paths.harness_log(&name),
            name,
        }
    }

    // ---- events ---------------------------------------------------------

    /// Stores events of an agent (each a kind and its payload's JSON text) and announces them.
    pub fn add_events(&self, agent: &AgentName, items: &[(EventKind, String)]) -> Result<Vec<i64>> {
        let ids = self.store.add_events(
            agent.as_str(),
            items.iter().map(|(k, p)| (k.as_str(), p.as_str())),
        )?;
        if let Some(&last_id) = ids.last() {
            self.broker.publish(Change::Events {
                agent: agent.to_string(),
                last_id,
            });
        }
        Ok(ids)
    }

    /// Records one event of the agent, as hive-c0re saw it.
    pub fn record(&self, agent: &AgentName, event: &Payload) -> Result<()> {
        self.add_events(agent, &[event_row(event)])?;
        Ok(())
    }

    /// Records a state change as state and as an event.
    pub fn set_state(
        &self,
        agent: &AgentName,
        state: AgentState,
        model: Option<&str>,
    ) -> Result<()> {
        self.store.set_state(agent.as_str(), state, model)?;
        self.add_events(agent, &[state_event(state, model)])?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }

    /// An agent's events after `since` (or the newest `limit` before `before`).
    pub fn events(
        &self,
        agent: &AgentName,
        since: Option<i64>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let limit = limit.clamp(1, 5000);
        let rows = match since {
            Some(s) => self.store.events_since(agent.as_str(), s, limit)?,
            None => self.store.events_before(agent.as_str(), before, limit)?,
        };
        Ok(rows.iter().map(event_wire).collect())
    }

    // ---- model and controls ---------------------------------------------

    /// Sets the operator's model override, or clears it (None, "" or "default"); returns the model info.
    pub fn set_model(&self, name: &AgentName, model: Option<&str>) -> Result<ModelInfo> {
        self.agent_row(name)?;
        let model = model
            .map(str::trim)
            .filter(|m| !m.is_empty() && *m != "default");
        if let Some(m) = model {
            let probe = AgentConfig {
                model: m.to_owned(),
                ..AgentConfig::default()
            };
            probe.validate().map_err(|e| {
                Error::refused(
                    e.to_string()
                        .replace("agent.toml is invalid: field `model`: ", ""),
                )
            })?;
        }
        self.store.set_model_override(name.as_str(), model)?;
        self.broker.publish(Change::Agent(name.to_string()));
        self.model_info(name)
    }

    /// The agent's configured, overridden and active model.
    pub fn model_info(&self, name: &AgentName) -> Result<ModelInfo> {
        let row = self.agent_row(name)?;
        Ok(ModelInfo {
            configured: Self::config_of(&row)
                .map(|c| c.model)
                .unwrap_or_else(|_| UNREADABLE_CONFIG.to_owned()),
            override_model: row.model_override.clone(),
            active: self.status_row_of(&row).active_model,
            switched_at: row.model_switched_at.map(rfc3339),
        })
    }

    /// Cancels the agent's running turn, or its nap; refused when it has neither.
    pub fn cancel(&self, name: &AgentName) -> Result<()> {
        let row = self.agent_row(name)?;
        let napping = row.nap_until.is_some();
        let in_turn = row.state == AgentState::Thinking || row.state == AgentState::Compacting;
        if !napping && !in_turn {
            return Err(Error::refused(format!(
                "{name} has no turn running and is not napping ({}): there is nothing to cancel",
                row.state.as_str()
            )));
        }
        if napping {
            self.store.set_nap_until(name.as_str(), None)?;
            self.broker.poke(name.as_str());
            self.broker.publish(Change::Agent(name.to_string()));
        }
        if in_turn {
            self.require_running(name)?;
            self.broker
                .push_control(name.as_str(), hive_sh4re::agent::Control::Cancel);
        }
        Ok(())
    }

    /// Keeps the agent from starting a turn for `seconds`; messages wait meanwhile.
    pub fn nap(&self, name: &AgentName, seconds: u64) -> Result<()> {
        if !(NAP_MIN_SECONDS..=NAP_MAX_SECONDS).contains(&seconds) {
            return Err(Error::refused(format!(
                "a nap lasts {NAP_MIN_SECONDS} to {NAP_MAX_SECONDS} seconds; {seconds} is out of range"
            )));
        }
        let until = now_ms() + seconds as i64 * 1000;
        let end = std::time::Instant::now() + Duration::from_secs(seconds);
        self.store.set_nap_until(name.as_str(), Some(until))?;
        self.naps_lock().insert(name.to_string(), (until, end));
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(())
    }

    fn naps_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (i64, std::time::Instant)>>
    {
        self.naps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the agent's nap (stored as `nap_until`) still lasts at wall time
    /// `wall_now`, None when it is over. A nap this daemon started runs on the
    /// monotonic clock, so a step of the wall clock neither stretches nor cuts
    /// it; one stored by an earlier daemon counts from the wall clock, at most
    /// [`NAP_MAX_SECONDS`].
    pub(crate) fn nap_left(
        &self,
        name: &str,
        nap_until: Option<i64>,
        wall_now: i64,
    ) -> Option<Duration> {
        let until = nap_until?;
        let mut naps = self.naps_lock();
        let left = match naps.get(name) {
            Some(&(stored, end)) if stored == until => {
                end.saturating_duration_since(std::time::Instant::now())
            }
            _ => Duration::from_millis(
                (until - wall_now).clamp(0, NAP_MAX_SECONDS as i64 * 1000) as u64
            ),
        };
        if left.is_zero() {
            naps.remove(name);
            return None;
        }
        Some(left)
    }

    /// Asks the harness to compact the agent's claude session.
    pub fn compact(&self, name: &AgentName) -> Result<()> {
        let row = self.agent_row(name)?;
        self.require_running(name)?;
        if row.session_id.is_none() {
            return Err(Error::refused(format!(
                "{name} has no claude session yet: there is nothing to compact"
            )));
        }
        self.broker
            .push_control(name.as_str(), hive_sh4re::agent::Control::Compact);
        Ok(())
    }

    /// Makes the agent's next turn start a fresh claude session instead of
    /// resuming its current one (the old transcript stays on disk).
    pub fn new_session(&self, name: &AgentName) -> Result<()> {
        let row = self.agent_row(name)?;
        self.store.set_session(name.as_str(), None)?;
        let reset = SessionReset {
            previous: row.session_id,
            by: Mailbox::Operator.to_string(),
        };
        self.record(name, &Payload::SessionReset(reset))?;
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(())
    }

    /// Asks the harness to rewrite the agent's notes file shorter.
    pub fn compact_notes(&self, name: &AgentName) -> Result<()> {
        self.agent_row(name)?;
        self.require_running(name)?;
        self.broker
            .push_control(name.as_str(), hive_sh4re::agent::Control::CompactNotes);
        Ok(())
    }

    fn require_running(&self, name: &AgentName) -> Result<()> {
        if self.supervisor.is_running(name.as_str()) {
            Ok(())
        } else {
            Err(Error::refused(format!(
                "{name} is not running: start it with hive-c0re start {name}"
            )))
        }
    }

    // ---- approvals and questions (views) --------------------------------

    /// Every approval, oldest first.
    pub fn approvals(&self) -> Result<Vec<Approval>> {
        Ok(self.store.approvals()?.iter().map(approval_wire).collect())
    }

    /// The newest operator questions.
    pub fn questions(&self) -> Result<Vec<Question>> {
        let now = now_ms();
        Ok(self
            .store
            .questions(200)?
            .iter()
            .map(|q| question_wire(q, now))
            .collect())
    }
}

/// The config of a new agent: the default model and prompt; the manager may also
/// edit files and commit in config repos.
pub fn default_config(name: &AgentName) -> AgentConfig {
    let allowed_tools = if name.is_manager() {
        ["Read", "Write", "Edit", "Bash(git *)"]
            .map(String::from)
            .to_vec()
    } else {
        vec![]
    };
    AgentConfig {
        prompt: default_prompt(name),
        allowed_tools,
        ..AgentConfig::default()
    }
}

/// The standing prompt of a new agent.
pub fn default_prompt(name: &AgentName) -> String {
    if name.is_manager() {
        include_str!("prompts/manager.md").to_owned()
    } else {
        include_str!("prompts/agent.md").replace("{name}", name.as_str())
    }
}

/// A stored message as the wire shows it.
pub fn message_wire(m: &MessageRow) -> Message {
    Message {
        id: m.id,
        from: m.sender.clone(),
        to: m.recipient.clone(),
        body: m.body.clone(),
        sent_at: rfc3339(m.created_at),
    }
}

/// A stored event as the wire shows it.
pub fn event_wire(e: &EventRow) -> Event {
    Event {
        id: e.id,
        agent: e.agent.clone(),
        ts: rfc3339(e.ts),
        kind: e.kind.clone(),
        payload: serde_json::from_str(&e.payload_json)
            .unwrap_or(serde_json::Value::String(e.payload_json.clone())),
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

/// A stored question as the wire shows it.
pub fn question_wire(q: &QuestionRow, now: i64) -> Question {
    Question {
        id: q.id,
        agent: q.agent.clone(),
        question: q.question.clone(),
        options: q.options.clone(),
        asked_at: rfc3339(q.asked_at),
        deadline: rfc3339(q.deadline),
        status: q.status(now),
        answer: q.answer.clone(),
        answered_at: q.answered_at.map(rfc3339),
    }
}

/// An event as [`Hive::add_events`] stores it: its kind and its payload's JSON text.
pub(crate) fn event_row(event: &Payload) -> (EventKind, String) {
    (event.kind(), event.to_value().to_string())
}

/// The `state` event that records a change of an agent's state.
pub(crate) fn state_event(state: AgentState, model: Option<&str>) -> (EventKind, String) {
    event_row(&Payload::State(StateChange {
        state,
        model: model.map(str::to_owned),
    }))
}
