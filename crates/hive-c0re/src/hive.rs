//! The hive: the one object every surface (host.sock, agent.sock, dashboard)
//! calls to read or change state. Policy lives here — who may send to whom,
//! what a name may be, what an approval does — so the surfaces stay thin.
//!
//! Its fields are private: the store, the broker, the runtime and the
//! supervisor are reached only through `Hive`'s methods, here and in the
//! submodules that hold more of them by concern.

mod api;
pub mod approvals;
pub mod budget;
mod controls;
pub mod feed;
mod flood;
pub mod leases;
mod memory;
mod messages;
mod needs;
pub mod nodes;
pub mod notifications;
pub mod panics;
pub mod questions;
pub mod quota;
pub mod schedules;
pub mod secrets;
mod shell;
mod space;
pub mod status;
pub mod steer;
mod supervision;
pub mod telemetry;
pub mod turns;
pub mod wakes;

pub use approvals::approval_wire;
pub use messages::{SHOWN_BODY_CHARS, message_wire};
pub use questions::question_wire;

use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::config::AgentConfig;
use hive_sh4re::event::{EventKind, Payload, StateChange};
use hive_sh4re::host::Event;
use hive_sh4re::{AgentName, AgentState};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent_sock::AgentSockets;
use crate::broker::{Broker, Change};
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::runtime::{Runtime, RuntimeKind};
use crate::space::Space;
use crate::store::{AgentRow, Db, EventRow, NewAgent};
use crate::supervisor::Supervisor;
use steer::Steer;

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
    /// Mints the dashboard's one-time login links: host.sock's `urls` only.
    pub dashboard_login: Option<std::sync::Arc<crate::login::Logins>>,
    /// How long a stopped harness gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Free space the state's file system keeps (`min_free_space`); None: the default.
    pub min_free_space: Option<u64>,
    /// Longest a turn may run unless the agent's `turn_timeout` says otherwise.
    pub turn_timeout: Duration,
    /// The operator's webhooks (`[[webhooks]]` in `hive.toml`) and the dashboard's public URL.
    pub webhooks: crate::webhooks::Webhooks,
    /// Most claude processes the hive runs at once (see `admission`).
    pub max_concurrent_turns: usize,
    /// The hive-wide daily budget (`budget` in hive.toml), if any.
    pub budget: Option<hive_sh4re::config::Budget>,
    /// Most bytes an agent's files may take on its node before it is stopped (`--state-quota`).
    pub state_quota: Option<u64>,
    /// This daemon's node: new agents' home (`serve --node`).
    pub node: hive_sh4re::NodeName,
    /// How often this node heartbeats (see `hive::nodes`); leases are renewed as often.
    pub heartbeat_every: Duration,
    /// How long an agent's lease lasts unless renewed (see `hive::leases`).
    pub lease_ttl: Duration,
    /// Who holds this daemon's leases: `NODE#ID` (see `hive::leases::holder`).
    pub lease_holder: String,
}

/// The hive's turn time limit unless `serve --turn-timeout` sets another.
pub const DEFAULT_TURN_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What a stored event costs whatever its payload (its row, its indexes),
/// in bytes, as an agent's history budget counts it: counted by payload
/// alone, a line of tiny events (`"payload":0`) was tens of thousands of
/// rows for a few bytes each.
pub const EVENT_ROW_BYTES: usize = 256;

/// The hive daemon's state and operations: the one gate to the store.
pub struct Hive {
    store: Db,
    paths: Paths,
    broker: Broker,
    runtime: Arc<dyn Runtime>,
    supervisor: Supervisor,
    settings: Settings,
    /// Cancelled when the daemon shuts down.
    shutdown: CancellationToken,
    /// Every task the daemon spawns ([`Hive::spawn_task`]), so shutdown can wait for them.
    tasks: TaskTracker,
    /// The panics of the daemon's tasks, the store's among them, to be told (`hive/panics.rs`).
    faults: crate::panics::Faults,
    /// The agents' sockets.
    sockets: AgentSockets,
    /// Each agent's deepest inbox since its last turn's figures (see `telemetry`).
    inbox_peaks: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// The free-space alarm of the state's file system.
    space: Space,
    /// The approvals this process is carrying out (`hive/approvals.rs`).
    approving: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// What each of this node's agents' state dirs takes, as last measured (`hive/space.rs`).
    state_sizes: std::sync::Mutex<std::collections::HashMap<String, quota::Measured>>,
    /// On while this node's heartbeats fail for the database out of reach or unusable (`hive/nodes.rs`).
    database_alarm: std::sync::Mutex<Option<hive_sh4re::dashboard::DatabaseAlarm>>,
    /// The values of the hive-wide secrets the webhooks name, as last read or
    /// set: a webhook is still signed while the database is out of reach.
    webhook_secrets: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Naps this daemon started: agent -> (stored `nap_until`, its end on the monotonic clock).
    naps: std::sync::Mutex<std::collections::HashMap<String, (i64, std::time::Instant)>>,
    /// The model API's health: agents' API trouble and the hive-wide backoff.
    api: crate::api_health::ApiHealth,
    /// The secrets' redactors (the hive's, each agent's), read from the
    /// store on first use after a change.
    redactor: std::sync::Mutex<secrets::Redactors>,
    /// Bumped when a notification is queued: wakes every webhook's delivery task.
    webhook_wake: tokio::sync::watch::Sender<u64>,
    /// The turn slots and the line of agents waiting for one.
    admission: Arc<crate::admission::Admission>,
    /// How many notifications each agent has caused lately.
    flood: flood::Flood,
    /// How many `stats` reports each agent made this minute.
    stats_rate: crate::throttle::PerMinute,
    /// How many questions each agent asked the operator this minute.
    questions_rate: crate::throttle::PerMinute,
    /// How many status lines each agent set this minute.
    status_rate: crate::throttle::PerMinute,
    /// Naps taken per agent this minute (see `hive/controls.rs`).
    nap_rate: crate::throttle::PerMinute,
    /// The manager's requests for agents and config changes this minute (see `manager.rs`).
    manager_requests: crate::throttle::PerMinute,
    /// Each agent's reports of its state (`state`, `api_retry`, `backoff`) this minute.
    state_rate: crate::throttle::PerMinute,
    /// Each agent's requests on its socket, of every kind (`agent_conn.rs`).
    request_rate: crate::throttle::Paced,
    /// Requests made to wait for their agent's pace, logged once a minute.
    paced_requests: crate::throttle::Throttle,
    /// Bytes of messages each agent sent this minute.
    send_rate: crate::throttle::PerMinute,
    /// The shell requests this node granted lately, and when: a knock at
    /// the node shell route for any other id is refused without a read of
    /// the store (anyone on the network can knock).
    shell_grants: std::sync::Mutex<std::collections::HashMap<i64, (std::time::Instant, String)>>,
    /// Notices that an agent held a turn slot past its limit: one a minute per agent.
    overheld_notices: crate::throttle::PerMinute,
    /// How long each agent's questions have waited on the operator, which a turn's limit does not count.
    asking: crate::hive::questions::AskingClock,
    /// How many bytes of history each agent's harness reported this minute.
    history_rate: crate::throttle::PerMinute,
    /// How many turns each agent began this minute (see `hive/turns.rs`).
    turns_rate: crate::throttle::PerMinute,
    /// Each agent's deployed config as last parsed, with the text it was parsed from.
    parsed_configs: std::sync::Mutex<std::collections::HashMap<String, (String, Arc<AgentConfig>)>>,
    /// The config repos' heads as last read, so the polls run git only for a repo that moved.
    heads: crate::config_repo::Heads,
    /// Each agent's turns that failed in a row, since its last that handled its messages (`hive/turns.rs`).
    failing_turns: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The agents whose turn is in progress, each with the messages its
    /// `recv` tool claimed during it: acknowledged with the turn's own when
    /// it ends well, released with them when it fails (`hive/turns.rs`).
    turn_reads: std::sync::Mutex<std::collections::HashMap<String, Vec<i64>>>,
    /// `turns_failing` notices, at most one an agent an hour: an agent can
    /// fail its turns at will.
    failing_notices: crate::throttle::Spaced,
    /// Crash notices to the manager, at most one an agent in ten minutes:
    /// an agent can crash its harness at will (`hive/supervision.rs`).
    crash_notices: crate::throttle::Spaced,
    /// Notices that the operator's inbox refused a message: one in ten minutes (`hive/messages.rs`).
    operator_inbox_full: crate::throttle::Throttle,
    /// Why this daemon stepped down: another daemon serves its node now (`hive/nodes.rs`).
    displaced: std::sync::Mutex<Option<String>>,
}

/// What status rows show as the model of an agent whose stored config cannot be read.
pub const UNREADABLE_CONFIG: &str = "(unreadable config)";

impl Hive {
    /// A hive over an open store.
    pub fn new(
        store: Db,
        paths: Paths,
        runtime: Arc<dyn Runtime>,
        sockets: AgentSockets,
        settings: Settings,
    ) -> Arc<Self> {
        let space = Space::new(&paths.state, paths.space_reserve(), settings.min_free_space);
        let faults = store.faults().clone();
        Arc::new(Self {
            admission: crate::admission::Admission::new(settings.max_concurrent_turns),
            space,
            database_alarm: Default::default(),
            heads: Default::default(),
            displaced: Default::default(),
            failing_turns: Default::default(),
            turn_reads: Default::default(),
            failing_notices: crate::throttle::Spaced::new(turns::FAILING_NOTICES_EVERY),
            crash_notices: crate::throttle::Spaced::new(supervision::crash_notices_every()),
            operator_inbox_full: crate::throttle::Throttle::new(Duration::from_secs(600)),
            webhook_secrets: Default::default(),
            naps: Default::default(),
            store,
            paths,
            broker: Broker::new(),
            runtime,
            supervisor: Supervisor::default(),
            settings,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            faults,
            sockets,
            inbox_peaks: Default::default(),
            state_sizes: Default::default(),
            approving: Default::default(),
            api: Default::default(),
            redactor: Default::default(),
            webhook_wake: tokio::sync::watch::channel(0).0,
            flood: Default::default(),
            stats_rate: crate::throttle::PerMinute::new(hive_sh4re::limits::STATS_PER_MINUTE),
            status_rate: crate::throttle::PerMinute::new(hive_sh4re::limits::STATUS_PER_MINUTE),
            nap_rate: crate::throttle::PerMinute::new(hive_sh4re::limits::NAPS_PER_MINUTE),
            manager_requests: crate::throttle::PerMinute::new(
                hive_sh4re::limits::MANAGER_REQUESTS_PER_MINUTE,
            ),
            state_rate: crate::throttle::PerMinute::new(
                hive_sh4re::limits::STATE_REPORTS_PER_MINUTE,
            ),
            send_rate: crate::throttle::PerMinute::new(hive_sh4re::limits::SEND_BYTES_PER_MINUTE),
            request_rate: crate::throttle::Paced::new(
                hive_sh4re::limits::REQUESTS_PER_MINUTE,
                Duration::from_secs(60),
            ),
            paced_requests: crate::throttle::Throttle::new(Duration::from_secs(60)),
            shell_grants: Default::default(),
            questions_rate: crate::throttle::PerMinute::new(
                hive_sh4re::limits::QUESTIONS_PER_MINUTE,
            ),
            overheld_notices: crate::throttle::PerMinute::new(1u64),
            asking: Default::default(),
            history_rate: crate::throttle::PerMinute::new(
                hive_sh4re::limits::HISTORY_BYTES_PER_MINUTE,
            ),
            turns_rate: crate::throttle::PerMinute::new(hive_sh4re::limits::TURNS_PER_MINUTE),
            parsed_configs: Default::default(),
        })
    }

    /// Spawns a task of the daemon that ends by itself (a connection, a
    /// request's work, an alert); [`Hive::wait_for_tasks`] waits for it. A
    /// panic ends it alone: logged and told as task `task`'s (see
    /// `panics.rs`), and its handle sees it as any panicked task's.
    pub fn spawn_task<F>(&self, task: &'static str, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let faults = self.faults.clone();
        self.tasks.spawn(async move {
            match crate::panics::caught(task, None, fut).await {
                Ok(out) => out,
                Err(panic) => {
                    faults.report(task, None, &panic, "it ends there, and the daemon goes on");
                    panic.resume()
                }
            }
        })
    }

    /// Spawns an essential loop of the daemon, which must run as long as it
    /// does: [`Hive::keep_running`] in a task of its own.
    pub fn spawn_essential<F, Fut>(
        self: &Arc<Self>,
        task: &'static str,
        make: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.spawn_task(task, self.clone().keep_running(task, make))
    }

    /// Runs the loop `make` makes (given the hive) until it returns; one
    /// that panics is told (task `task`) and made again after a pause (see
    /// `panics.rs`), unless the daemon shuts down meanwhile. Awaited in
    /// place by a loop whose runs share what outlives them (a listener).
    pub async fn keep_running<F, Fut>(self: Arc<Self>, task: &'static str, mut make: F)
    where
        F: FnMut(Arc<Self>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        crate::panics::keep_running(&self.faults, task, None, Some(&self.shutdown), || {
            make(self.clone())
        })
        .await
    }

    /// Where the daemon's tasks report their panics, to be told to the operator.
    pub fn faults(&self) -> &crate::panics::Faults {
        &self.faults
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
            state_quota: None,
            turn_timeout: DEFAULT_TURN_TIMEOUT,
            webhooks: Default::default(),
            max_concurrent_turns: 16,
            budget: None,
            node: hive_sh4re::NodeName::parse("test").expect("a valid node name"),
            heartbeat_every: nodes::HEARTBEAT,
            lease_ttl: leases::LEASE_TTL,
            lease_holder: "#test".to_owned(),
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
            Db::Sqlite(crate::store::Store::in_memory().expect("an in-memory store opens")),
            paths,
            runtime,
            sockets,
            settings,
        )
    }

    /// Cancelled when the daemon shuts down: every task, stream and long poll ends with it.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Where the hive keeps its state and sockets.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The hive's settings (binaries, environment, the dashboard's URLs).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// How this hive runs its agents.
    pub fn runtime_kind(&self) -> RuntimeKind {
        self.runtime.kind()
    }

    /// Follows hive-wide changes: what host.sock's subscriptions and the dashboard's stream watch.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.broker.subscribe()
    }

    /// True when the hive has an agent of this name.
    pub async fn has_agent(&self, name: &AgentName) -> Result<bool> {
        Ok(self.store.agent(name.as_str()).await?.is_some())
    }

    /// The agent's row, or a refusal naming it.
    pub async fn agent_row(&self, name: &AgentName) -> Result<AgentRow> {
        self.store.agent(name.as_str()).await?.ok_or_else(|| {
            Error::refused(format!(
                "agent {:?} is not managed by this hive: see hive-c0re status",
                name.as_str()
            ))
        })
    }

    /// The agent's deployed config. A stored text that no longer parses is
    /// refused, never replaced by a default: the default's empty
    /// `allowed_recipients` would let the agent write to anyone.
    ///
    /// Parsed once per stored text: a status of hundreds of agents reads
    /// each config several times, and parsing a config with its prompt
    /// was most of what a status cost during a burst of turns.
    pub fn config_of(&self, row: &AgentRow) -> Result<AgentConfig> {
        let mut parsed = self
            .parsed_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((text, config)) = parsed.get(&row.name)
            && *text == row.config_toml
        {
            return Ok(AgentConfig::clone(config));
        }
        let config = AgentConfig::from_toml(&row.config_toml).map_err(|e| {
            Error::refused(format!(
                "{0}'s deployed config cannot be read ({e}), so {0} may do nothing that needs it: \
                 the operator deploys a valid agent.toml (hive-c0re request-apply-commit {0} SHA, then approve)",
                row.name
            ))
        })?;
        parsed.insert(
            row.name.clone(),
            (row.config_toml.clone(), Arc::new(config.clone())),
        );
        Ok(config)
    }

    /// The model the agent's next turn uses: the operator's override, else its config's.
    pub fn effective_model(&self, row: &AgentRow) -> Result<String> {
        match &row.model_override {
            Some(m) => Ok(m.clone()),
            None => Ok(self.config_of(row)?.model),
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
        if self.store.agent(name.as_str()).await?.is_some() {
            return Err(Error::refused(format!(
                "agent {name} exists already: start it with hive-c0re start {name}, or destroy it first"
            )));
        }
        AgentConfig::from_toml(text).map_err(|e| Error::refused(format!("{name}: {e}")))?;
        // A state dir kept from an earlier agent of the name comes with it.
        self.refuse_over_quota(name).await?;
        let (hive, n, t) = (self.clone(), name.clone(), text.to_owned());
        let manager = self.manager_uid_base().await?;
        // The manager's node keeps the config repos: another node's poll
        // makes this agent's there ([`Hive::read_config_heads`]).
        let repo_here = self.repo_node(name).await?.is_none();
        let made = crate::blocking::run(&format!("creating {name}'s directories"), move || {
            let state = hive.paths.agent_state(&n);
            std::fs::create_dir_all(&state)
                .map_err(Error::io(format!("could not create {}", state.display())))?;
            if repo_here {
                hive.ensure_repo(&n, &t, manager, true)
            } else {
                Ok(None)
            }
        })
        .await?;
        let harness = if name.is_manager() {
            Harness::M1nd
        } else {
            Harness::Ag3nt
        };
        let row = self
            .insert_agent(|uid_base| NewAgent {
                name: name.as_str(),
                harness: harness.as_str(),
                config_toml: text,
                deployed_sha: sha.or(made.as_deref()),
                parent,
                want_running: true,
                uid_base,
                node: self.settings.node.as_str(),
            })
            .await?;
        self.run(name).await?;
        Ok(row)
    }

    /// Adds an agent to the hive without starting it, its config stored as
    /// given: `start` runs it later. No verb does this (spawn starts what it
    /// creates); benchmarks and tests build hives with it.
    pub async fn add_stopped(&self, name: &AgentName, config_toml: &str) -> Result<AgentRow> {
        self.insert_agent(|uid_base| NewAgent {
            name: name.as_str(),
            harness: Harness::Ag3nt.as_str(),
            config_toml,
            deployed_sha: None,
            parent: None,
            want_running: false,
            uid_base,
            node: self.settings.node.as_str(),
        })
        .await
    }

    /// Stores a new agent's row with a uid range of its own (`new` is given
    /// the range's base), and frees the range again if the row is refused.
    async fn insert_agent<'a>(&self, new: impl FnOnce(u32) -> NewAgent<'a>) -> Result<AgentRow> {
        let uids = self.runtime.uid_ranges();
        let used: Vec<u32> = self
            .store
            .agents()
            .await?
            .iter()
            .map(|a| a.uid_base)
            .collect();
        let uid_base = uids.allocate(&used)?;
        let new = new(uid_base);
        let row = self
            .store
            .create_agent(&new)
            .await
            .inspect_err(|_| uids.release(uid_base))?;
        self.broker.publish(Change::Agent(new.name.to_owned()));
        Ok(row)
    }

    /// Starts every agent of this node that should be running and has not
    /// failed: what a restart of hive-c0re brings back. Another node's agents
    /// are that node's to run. One that cannot start is logged and left.
    /// The database out of reach ends it with that error, to be called again
    /// once it is back: the agents it started meanwhile are skipped then.
    pub async fn run_wanted(self: &Arc<Self>) -> Result<()> {
        for row in self.store.agents().await? {
            if row.want_running
                && !row.failed
                && nodes::runs_here(&self.store, &row, &self.settings.node)
                && !self.supervisor.is_supervised(&row.name)
                && let Ok(name) = AgentName::parse(&row.name)
            {
                match self.run(&name).await {
                    Err(e) if e.is_unreachable() => return Err(e),
                    Err(e) => tracing::error!(agent = %name, "could not start the agent: {e}"),
                    Ok(()) => {}
                }
            }
        }
        Ok(())
    }

    /// Ends the hive: every task, stream and long poll is told to stop, and
    /// every harness is stopped and waited for.
    pub async fn shut_down(&self) {
        self.shutdown.cancel();
        self.supervisor.stop_all().await;
        self.runtime.shut_down();
    }

    /// Starts a stopped or failed agent (a no-op for a running one).
    pub async fn start(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        if self.steer_here(name, Steer::Start).await?.is_none() {
            return Ok(());
        }
        self.refuse_over_quota(name).await?;
        self.start_measured(name).await
    }

    /// Starts agent `name` on this node, its files already measured against the quota.
    async fn start_measured(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        self.store.set_want_running(name.as_str(), true).await?;
        self.store.set_failed(name.as_str(), false).await?;
        self.run(name).await?;
        self.broker.publish(Change::Agent(name.to_string()));
        Ok(())
    }

    /// Opens the agent's socket (its harness connects there as soon as it
    /// starts) and supervises its harness.
    pub async fn run(self: &Arc<Self>, name: &AgentName) -> Result<()> {
        self.open_socket(name).await?;
        self.supervisor.start(self, name);
        Ok(())
    }

    /// Opens the agent's socket unless it is open, reachable by the agent's uid alone.
    pub async fn open_socket(&self, name: &AgentName) -> Result<()> {
        let row = self.agent_row(name).await?;
        let owner = self.runtime.agent_uid(row.uid_base);
        if owner.is_some() {
            // The socket directory goes to the agent's uid: only a range this hive holds.
            self.runtime
                .uid_ranges()
                .hold(row.uid_base)
                .map_err(|e| Error::refused(format!("{name} cannot run: {e}")))?;
        }
        self.sockets.listen(name, owner, &self.faults)
    }

    /// Stops an agent and keeps it stopped across restarts of hive-c0re.
    pub async fn stop(self: &Arc<Self>, name: &AgentName, graceful: bool) -> Result<()> {
        if self
            .steer_here(name, Steer::Stop { graceful })
            .await?
            .is_none()
        {
            return Ok(());
        }
        self.store.set_want_running(name.as_str(), false).await?;
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
            .await
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
        if self.steer_here(name, Steer::Restart).await?.is_none() {
            return Ok(());
        }
        // Before the stop: a refused start after it left the agent stopped and wanted.
        self.refuse_over_quota(name).await?;
        self.supervisor.stop(name).await;
        self.start_measured(name).await
    }

    /// Removes an agent from the hive; its state and config stay on disk unless `purge`.
    pub async fn destroy(self: &Arc<Self>, name: &AgentName, purge: bool) -> Result<()> {
        let Some(row) = self.steer_here(name, Steer::Destroy { purge }).await? else {
            return Ok(());
        };
        if purge && let Some(node) = self.repo_node(name).await? {
            // First, so that a node which is down refuses the purge before anything went.
            self.ask(&node, name, &Steer::PurgeConfig).await?;
        }
        self.supervisor.stop(name).await;
        self.sockets.close(name);
        let spec = self.launch_spec(&row);
        self.runtime.forget(&spec).await?;
        self.store.delete_agent(name.as_str()).await?;
        self.parsed_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name.as_str());
        self.store.remove_schedules_of(name.as_str()).await?;
        // The operator's budget for today was this agent's, not its name's.
        self.store.remove_budget_override(name.as_str()).await?;
        if purge {
            self.store.purge_messages(name.as_str()).await?;
            self.store.purge_events(name.as_str()).await?;
            self.store.remove_secrets_of(name.as_str()).await?;
            self.forget_redactor();
            self.purge_files(name).await?;
        }
        self.broker.publish(Change::AgentRemoved(name.to_string()));
        Ok(())
    }

    /// Removes `name`'s files from this node's disk: its agent dir and its config repo.
    pub(crate) async fn purge_files(&self, name: &AgentName) -> Result<()> {
        let dirs = [self.paths.agent_dir(name), self.paths.config_repo(name)];
        crate::blocking::run(&format!("removing {name}'s files"), move || {
            for dir in dirs {
                let Ok(meta) = std::fs::symlink_metadata(&dir) else {
                    continue;
                };
                // A link (the manager can plant one among the repos) goes, not what it
                // points at; remove_tree follows no link inside the tree either,
                // and takes a tree of any depth (std's recursion overflows).
                let removed = if meta.is_dir() {
                    crate::runtime::remove_tree(&dir)
                } else {
                    std::fs::remove_file(&dir)
                };
                removed.map_err(Error::io(format!("could not remove {}", dir.display())))?;
            }
            Ok(())
        })
        .await
    }

    /// Parks or resumes an agent's turn loop (persists; messages keep queueing).
    pub async fn set_paused(&self, name: &AgentName, paused: bool) -> Result<()> {
        self.agent_row(name).await?;
        self.store.set_paused(name.as_str(), paused).await?;
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
            stop: Default::default(),
            name,
        }
    }

    // ---- events ---------------------------------------------------------

    /// Stores events of an agent (each a kind and its payload's JSON text) and
    /// announces them. A secret's value in a payload is stored as `[secret NAME]`.
    pub async fn add_events(
        &self,
        agent: &AgentName,
        items: &[(EventKind, String)],
    ) -> Result<Vec<i64>> {
        let redactor = self.redactor().await?;
        let redacted: Vec<String>;
        let payloads: Vec<&str> = if redactor.is_empty() {
            items.iter().map(|(_, p)| p.as_str()).collect()
        } else {
            redacted = items.iter().map(|(_, p)| redactor.redact_json(p)).collect();
            redacted.iter().map(String::as_str).collect()
        };
        let rows: Vec<(&str, &str)> = items
            .iter()
            .zip(payloads)
            .map(|((k, _), p)| (k.as_str(), p))
            .collect();
        let ids = self.store.add_events(agent.as_str(), &rows).await?;
        if let Some(&last_id) = ids.last() {
            self.broker.publish(Change::Events {
                agent: agent.to_string(),
                last_id,
            });
        }
        Ok(ids)
    }

    /// Stores what an agent's harness reports, up to
    /// [`HISTORY_BYTES_PER_MINUTE`](hive_sh4re::limits::HISTORY_BYTES_PER_MINUTE),
    /// each event counted as at least [`EVENT_ROW_BYTES`]: past it the rest
    /// of the minute's reports are dropped and the first drop is noted in
    /// the agent's history.
    pub async fn add_harness_events(
        &self,
        agent: &AgentName,
        items: &[(EventKind, String)],
    ) -> Result<()> {
        let bytes = items
            .iter()
            .map(|(k, p)| (k.as_str().len() + p.len()).max(EVENT_ROW_BYTES) as u64)
            .sum();
        match self.history_rate.take(agent.as_str(), bytes) {
            crate::throttle::Take::Taken => {
                self.add_events(agent, items).await?;
            }
            crate::throttle::Take::Refused { first } => {
                if first {
                    tracing::warn!(agent = %agent, "the harness reported more history than the hive stores a minute: the rest of the minute's is dropped");
                    self.record(
                        agent,
                        &Payload::HistoryDropped(hive_sh4re::event::HistoryDropped {
                            bytes_per_minute: hive_sh4re::limits::HISTORY_BYTES_PER_MINUTE,
                        }),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Records one event of the agent, as hive-c0re saw it.
    pub async fn record(&self, agent: &AgentName, event: &Payload) -> Result<()> {
        self.add_events(agent, &[event_row(event)]).await?;
        Ok(())
    }

    /// Whether a report of `agent`'s harness about its state (`state`,
    /// `api_retry`, `backoff`) is taken: each is a write of the agent's row
    /// and an event, and every viewer reads the agent again. Past
    /// [`STATE_REPORTS_PER_MINUTE`](hive_sh4re::limits::STATE_REPORTS_PER_MINUTE)
    /// the rest of the minute's are answered but not recorded (the harness
    /// stops its turn on a refusal), and the first is told in the log.
    pub fn take_state_report(&self, agent: &AgentName) -> bool {
        match self.state_rate.take(agent.as_str(), 1) {
            crate::throttle::Take::Taken => true,
            crate::throttle::Take::Refused { first } => {
                if first {
                    tracing::warn!(
                        agent = %agent,
                        "the harness reported its state more than {} times this minute: the rest of the minute's are not recorded",
                        hive_sh4re::limits::STATE_REPORTS_PER_MINUTE
                    );
                }
                false
            }
        }
    }

    /// Waits until a request on `agent`'s socket may be served: at most
    /// [`REQUESTS_PER_MINUTE`](hive_sh4re::limits::REQUESTS_PER_MINUTE) of
    /// its connections' together, past which each waits its turn. Waiting,
    /// not a refusal: the harness ends on a refused `next_turn` or
    /// `turn_end`, and would be restarted, and refused again, without end.
    pub async fn pace_request(&self, agent: &AgentName) {
        if self.request_rate.take(agent.as_str()).await
            && let Some(n) = self.paced_requests.due()
        {
            tracing::warn!(
                agent = %agent,
                "the agent made more than {} requests on its socket in a minute: they wait their turn ({n} waited since the last such line)",
                hive_sh4re::limits::REQUESTS_PER_MINUTE
            );
        }
    }

    /// Records a state change as state and as an event.
    pub async fn set_state(
        &self,
        agent: &AgentName,
        state: AgentState,
        model: Option<&str>,
    ) -> Result<()> {
        if !matches!(state, AgentState::Retrying | AgentState::Waiting) {
            self.api.set_trouble(agent.as_str(), None);
        }
        self.store.set_state(agent.as_str(), state, model).await?;
        self.add_events(agent, &[state_event(state, model)]).await?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }

    /// Vacuums when the hive's vacuum is due and no other node runs it (the
    /// store's `vacuum` job: once per `every` for the whole hive, one node at
    /// a time); None when it was not this node's turn.
    pub async fn vacuum_if_due(&self, every: Duration) -> Result<Option<usize>> {
        const JOB: &str = "vacuum";
        // A node that dies vacuuming holds the job this long at most.
        let hold = every.max(Duration::from_secs(600));
        let node = self.node().as_str();
        if !self.store.take_job(JOB, node, every, hold).await? {
            return Ok(None);
        }
        let vacuumed = self.vacuum().await;
        if let Err(e) = self.store.finish_job(JOB, node).await {
            tracing::warn!("could not mark the vacuum finished (it frees itself in {hold:?}): {e}");
        }
        vacuumed.map(Some)
    }

    /// Drops history past the store's bounds (delivered messages, events,
    /// figures, notifications, ended questions, decided approvals) and gives the space back;
    /// returns how many rows went.
    pub async fn vacuum(&self) -> Result<usize> {
        let store = self.store.clone();
        let vacuumed = match store {
            // Long statements on sqlite: off the runtime's threads.
            Db::Sqlite(store) => {
                tokio::task::spawn_blocking(move || -> crate::store::Result<usize> {
                    let n = store.vacuum_messages()?
                        + store.vacuum_events()?
                        + store.vacuum_stats()?
                        + store.vacuum_notifications()?
                        + store.vacuum_questions()?
                        + store.vacuum_approvals()?;
                    store.checkpoint()?;
                    Ok(n)
                })
                .await
                .map_err(|e| Error::io("vacuum failed")(std::io::Error::other(e)))?
            }
            db @ Db::Postgres(_) => {
                async {
                    Ok(db.vacuum_messages().await?
                        + db.vacuum_events().await?
                        + db.vacuum_stats().await?
                        + db.vacuum_notifications().await?
                        + db.vacuum_questions().await?
                        + db.vacuum_approvals().await?)
                }
                .await
            }
        };
        Ok(vacuumed?)
    }

    /// An agent's events after `since` (or the newest `limit` before `before`).
    pub async fn events(
        &self,
        agent: &AgentName,
        since: Option<i64>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let limit = limit.clamp(1, 5000);
        let rows = match since {
            Some(s) => self.store.events_since(agent.as_str(), s, limit).await?,
            None => {
                self.store
                    .events_before(agent.as_str(), before, limit)
                    .await?
            }
        };
        Ok(rows.iter().map(event_wire).collect())
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

/// An event as [`Hive::add_events`] stores it: its kind and its payload's JSON text.
pub(crate) fn event_row(event: &Payload) -> (EventKind, String) {
    (event.kind(), event.to_value().to_string())
}

/// The `state` event that records a change of an agent's state.
pub(crate) fn state_event(state: AgentState, model: Option<&str>) -> (EventKind, String) {
    event_row(&Payload::State(StateChange {
        state,
        model: model.map(str::to_owned),
        detail: None,
        retry_at: None,
    }))
}
