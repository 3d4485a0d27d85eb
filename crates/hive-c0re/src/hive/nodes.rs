//! This daemon as a node of the hive: its name, its heartbeat, and the rule
//! that says whether a node is alive (`nodes`).
//!
//! A node registers at start (name and address, see `Store::register_node`)
//! and heartbeats every [`HEARTBEAT`] (`HIVE_HEARTBEAT_SECS` for tests). A node
//! is alive while its last heartbeat is at most [`DEAD_AFTER`] intervals old:
//! one missed beat is load, three are a node that is gone. One daemon serves
//! a node name: the row keeps its lease holder, a second daemon under a live
//! node's name is refused at start, and one displaced while it was silent
//! (frozen, cut off) steps down at its next heartbeat.
//!
//! When nodes share a store (PostgreSQL), each also watches the others on its
//! heartbeat: the first to find a node silent past that window marks it down
//! in the store (a conditional UPDATE, so one node wins however many notice)
//! and tells the manager and the operator (the operator also when the
//! manager's inbox refuses); the node clears the mark on its
//! return and tells the manager it is back. Agents of a node that is not
//! alive show `node_down`. A sqlite store is one daemon's, which runs every
//! agent whatever its home node (see [`runs_here`]): a node name it no longer
//! uses is history, never a node down.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::dashboard::DatabaseAlarm;
use hive_sh4re::host::NodeRow;
use hive_sh4re::notification::NotificationKind;
use hive_sh4re::{AgentName, NodeName};

use super::Hive;
use crate::broker::Change;
use crate::clock::{duration, now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::store::{AgentRow, Db, Outage, OutageLog, Registration, StoreError};

/// Agents named in a node's down or back message; the rest are counted.
const NAMED_AGENTS: usize = 10;

/// How often a node heartbeats unless `HIVE_HEARTBEAT_SECS` says otherwise.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Heartbeat intervals after which a silent node counts as down.
pub const DEAD_AFTER: u32 = 3;

/// Where Linux keeps the host's name.
const HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// The default node name: this host's name, in lower case.
pub fn this_host() -> Result<NodeName> {
    let host = std::fs::read_to_string(HOSTNAME).map_err(|e| {
        Error::refused(format!(
            "could not read this host's name from {HOSTNAME} ({e}): name the node with --node NAME"
        ))
    })?;
    NodeName::from_hostname(&host).map_err(|e| {
        Error::refused(format!(
            "this host's name cannot name a node ({e}): name the node with --node NAME"
        ))
    })
}

/// Why serve ended: another daemon serves its node name (it was refused at
/// start, or stepped down). `serve` exits with [`NodeNameTaken::EXIT`], which
/// the systemd unit does not restart: a second daemon retried every few
/// seconds would take the name the first time the first one is silent.
#[derive(Debug)]
pub struct NodeNameTaken(pub String);

impl NodeNameTaken {
    /// The exit status of a serve that ended so.
    pub const EXIT: i32 = 3;
}

impl std::fmt::Display for NodeNameTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NodeNameTaken {}

/// The heartbeat interval: `HIVE_HEARTBEAT_SECS` (whole seconds, at least 1) or [`HEARTBEAT`].
pub fn heartbeat_every() -> Result<Duration> {
    match std::env::var("HIVE_HEARTBEAT_SECS") {
        Err(_) => Ok(HEARTBEAT),
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Duration::from_secs(n)),
            _ => Err(Error::refused(format!(
                "HIVE_HEARTBEAT_SECS={text:?} is not a heartbeat interval: give a whole number of seconds, at least 1"
            ))),
        },
    }
}

/// Whether a node whose last heartbeat was at `last_ms` is alive at `now_ms`.
pub fn is_alive(last_ms: i64, now_ms: i64, every: Duration) -> bool {
    let window = (every * DEAD_AFTER).as_millis() as i64;
    now_ms - last_ms <= window
}

/// True when node `node` runs the agent of `row`: its home node, or any
/// node for an agent without one. On a store no other node uses (sqlite)
/// every agent is this daemon's, whatever node name it was given: a host
/// renamed keeps running its agents.
pub fn runs_here(store: &Db, row: &AgentRow, node: &NodeName) -> bool {
    !store.shared() || row.node.as_deref().is_none_or(|n| n == node.as_str())
}

impl Hive {
    /// This daemon's node name.
    pub fn node(&self) -> &NodeName {
        &self.settings.node
    }

    /// Registers this node (its dashboard's URL as its address, empty without
    /// one); agents stored before nodes existed become its own. Some sentence
    /// instead, and nothing written, while another daemon serves a live node
    /// of this name: each would take the steering requests meant for the
    /// other's agents.
    pub async fn register_node(&self) -> Result<Option<String>> {
        let address = self.settings.dashboard_home.as_deref().unwrap_or_default();
        // On a store one daemon owns (sqlite) there is no other daemon: a
        // restart whose node id could not be read is not one.
        let alive = match self.store.shared() {
            true => (self.settings.heartbeat_every * DEAD_AFTER).as_millis() as i64,
            false => -1,
        };
        let node = self.node();
        match self
            .store
            .register_node(node.as_str(), address, &self.settings.lease_holder, alive)
            .await?
        {
            Registration::Done(_) => {
                tracing::info!(node = %node, "registered this node");
                Ok(None)
            }
            Registration::Served { holder, silent_ms } => Ok(Some(format!(
                "node {node} is served by another daemon ({holder}, another state dir; its last heartbeat {} ago): \
                 two daemons under one node name would each take the other's requests. \
                 Give this one a name of its own with `--node NAME`, or stop the other and start this one \
                 once `hive-c0re nodes` lists {node} as down",
                duration(silent_ms as f64)
            ))),
        }
    }

    /// Ends this daemon because another serves its node now (it registered
    /// while this one was silent: frozen, or cut off); `serve` exits with
    /// `why`. The operator hears of it: the node's agents now run wherever
    /// the other daemon runs, with that host's state dirs.
    async fn step_down(&self, why: String) {
        tracing::error!("this daemon steps down: {why}");
        let text = format!(
            "The hive-c0re serving node {} as {} stepped down: {why}. Check that the daemon serving it now is the one you meant to.",
            self.node(),
            self.settings.lease_holder
        );
        self.tell_operator(NotificationKind::NodeDown, None, &text)
            .await;
        *self.displaced.lock().unwrap() = Some(why);
        self.shutdown.cancel();
    }

    /// Why this daemon stepped down, if it did (see [`Hive::step_down`]).
    pub fn displaced(&self) -> Option<String> {
        self.displaced.lock().unwrap().clone()
    }

    /// The nodes other than this one that are not alive, each with its last
    /// heartbeat (unix ms); none on a store no other node uses (sqlite).
    pub async fn down_nodes(&self) -> Result<HashMap<String, i64>> {
        if !self.store.shared() {
            return Ok(HashMap::new());
        }
        let now = now_ms();
        Ok(self
            .store
            .nodes()
            .await?
            .into_iter()
            .filter(|n| {
                n.name != self.node().as_str()
                    && !is_alive(n.last_heartbeat, now, self.settings.heartbeat_every)
            })
            .map(|n| (n.name, n.last_heartbeat))
            .collect())
    }

    /// Resolves once node `node` has missed its heartbeats, with a sentence
    /// that says so and that the shell it `role` (a phrase: "ran the shell")
    /// was cut off. Checks each heartbeat interval; a store out of reach is
    /// no proof that node is gone, so it keeps waiting.
    pub(super) fn node_gone(
        &self,
        node: String,
        role: &'static str,
    ) -> impl std::future::Future<Output = String> + Send + 'static {
        let store = self.store.clone();
        let every = self.settings.heartbeat_every;
        async move {
            loop {
                tokio::time::sleep(every).await;
                let Ok(nodes) = store.nodes().await else {
                    continue;
                };
                let now = now_ms();
                if let Some(n) = nodes
                    .iter()
                    .find(|n| n.name == node && !is_alive(n.last_heartbeat, now, every))
                {
                    return format!(
                        "node {node}, which {role}, is down (no heartbeat for {}): the shell was cut off here; see `hive-c0re nodes`",
                        duration((now - n.last_heartbeat).max(0) as f64)
                    );
                }
            }
        }
    }

    /// One heartbeat's look at the hive: this node's return, if the others
    /// had marked it down, and every node that went silent and that this
    /// node is the first to notice, each announced once for the whole hive.
    async fn watch_liveness(&self) -> Result<()> {
        if !self.store.shared() {
            return Ok(());
        }
        let me = self.node().as_str();
        // The mark stays until the manager was told, so a return that cannot
        // be told yet (a full disk) is told at a later heartbeat instead of
        // never. A manager whose inbox is at the cap misses it: the mark goes
        // all the same, or the next time this node dies nobody would be told.
        if let Some(down_ms) = self.store.node_down_for(me).await? {
            let agents = self.agents_on(me).await?;
            let body = format!(
                "Node {me} is back after {} down (since its last heartbeat before). {}",
                duration(down_ms as f64),
                who(
                    &agents,
                    "what waited in its inbox reaches it again as it takes turns",
                    "what waited in their inboxes reaches them again as they take turns"
                )
            );
            tracing::info!(node = me, "back after being marked down");
            match self.notify(&AgentName::manager(), &body).await {
                Ok(_) => {
                    self.store.node_back(me).await?;
                }
                Err(Error::Refused(why)) => {
                    tracing::warn!(
                        node = me,
                        "the manager was not told this node is back: {why}"
                    );
                    self.store.node_back(me).await?;
                }
                Err(e) => tracing::warn!(
                    node = me,
                    "could not tell the manager this node is back; the next heartbeat tries again: {e}"
                ),
            }
        }
        let window = (self.settings.heartbeat_every * DEAD_AFTER).as_millis() as i64;
        for d in self.store.mark_down_nodes(me, window).await? {
            let agents = self.agents_on(&d.name).await?;
            let text = format!(
                "Node {} is down: no heartbeat for {}. {}",
                d.name,
                duration(d.silent_ms as f64),
                who(
                    &agents,
                    "it takes no turns until the node is back; messages to it wait in its inbox",
                    "they take no turns until the node is back; messages to them wait in their inboxes"
                )
            );
            tracing::warn!(node = %d.name, "node down");
            // The mark says the hive was told: one that cannot store the
            // manager's message (a full disk) undoes it, so the next heartbeat
            // here or on another node marks it and tells again. A manager
            // that refuses it (its inbox at the cap, which the manager can
            // fill itself) keeps nothing from the operator.
            let text = match self.notify(&AgentName::manager(), &text).await {
                Ok(_) => text,
                Err(Error::Refused(why)) => {
                    tracing::warn!(node = %d.name, "the manager was not told this node is down: {why}");
                    format!(
                        "{text} The manager was not told: its inbox refused the message ({why})."
                    )
                }
                Err(e) => {
                    tracing::warn!(node = %d.name, "could not tell the manager this node is down; the next heartbeat tries again: {e}");
                    if let Err(e) = self.store.node_back(&d.name).await {
                        tracing::error!(node = %d.name, "could not undo its down mark either, so nobody may be told it is down: {e}");
                    }
                    continue;
                }
            };
            self.tell_operator(NotificationKind::NodeDown, None, &text)
                .await;
        }
        Ok(())
    }

    /// Tells the operator that this node's store works again after `outage`:
    /// a database out of reach (or a failing disk) leaves a trace once it is
    /// over, not only log lines, also when it was shorter than a heartbeat
    /// interval. The requests it failed said so to their callers; nothing
    /// stored before is lost.
    pub(crate) async fn store_back(&self, outage: &Outage) {
        let span = outage.until - outage.since;
        let how_long = if span < 1000 {
            "less than a second".to_owned()
        } else {
            format!("about {}", duration(span as f64))
        };
        let failed = match outage.failures {
            1 => "1 request".to_owned(),
            n => format!("{n} requests"),
        };
        let text = format!(
            "Node {} could not use the hive's database for {how_long}, from {}: {} \
             It works again: what was stored before is kept, and what was asked of this node \
             meanwhile ({failed}) failed with an error and may be asked again.",
            self.node(),
            rfc3339(outage.since),
            outage.first,
        );
        tracing::info!("the store answers again after {failed} failed");
        self.tell_operator(NotificationKind::NodeDown, None, &text)
            .await;
    }

    /// The database alarm while it is on: this node found the database out
    /// of reach or unusable (or its disk full), and no heartbeat has been
    /// stored since.
    pub fn database_alarm(&self) -> Option<DatabaseAlarm> {
        self.database_alarm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// True while the database's disk is full (see [`watch_database_full`]).
    pub(crate) fn database_full(&self) -> bool {
        self.store
            .database_full()
            .is_some_and(|f| f.borrow().is_some())
    }

    /// Turns the database alarm on (with the refusal's sentence, kept from
    /// the first failure) or off; every dashboard hears of a change.
    /// True when it went on.
    pub(crate) fn set_database_alarm(&self, down: Option<&str>) -> bool {
        let mut alarm = self
            .database_alarm
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (changed, on) = match (alarm.is_some(), down) {
            (false, Some(e)) => {
                *alarm = Some(DatabaseAlarm {
                    since: rfc3339(now_ms()),
                    message: e.to_owned(),
                });
                (true, true)
            }
            (true, None) => {
                *alarm = None;
                (true, false)
            }
            _ => (false, false),
        };
        drop(alarm);
        if changed {
            self.broker.publish(Change::Database);
        }
        on
    }

    /// What the database that answers and cannot store (see
    /// [`StoreError::is_unusable`]) means, and what to do, as a sentence.
    fn unusable(&self, e: &StoreError) -> String {
        let state = &self.paths().state;
        match &self.store {
            Db::Postgres(_) => format!(
                "the hive's database refuses writes: the PostgreSQL server this node reaches is \
                 read-only, as a standby is ({e}); point this node's database URL at the primary"
            ),
            Db::Sqlite(_) if crate::space::is_read_only(state) => format!(
                "the hive's database refuses writes: {} is read-only ({e}); the kernel's log \
                 says why: repair it and make it writable again (after errors: stop serve, \
                 check it, mount it again)",
                crate::space::filesystem_of(state)
            ),
            Db::Sqlite(_) => {
                let db = self.paths().db();
                format!(
                    "the hive's database {} cannot be used ({e}); check the disk under it (the \
                     kernel's log) and the file (sqlite3 {} 'PRAGMA integrity_check')",
                    db.display(),
                    db.display()
                )
            }
        }
    }

    /// The names of the agents whose home node is `node`.
    async fn agents_on(&self, node: &str) -> Result<Vec<String>> {
        Ok(self
            .store
            .agents()
            .await?
            .into_iter()
            .filter(|a| a.node.as_deref() == Some(node))
            .map(|a| a.name)
            .collect())
    }

    /// Every node of the hive, by name, with its agents and whether it is alive.
    pub async fn node_rows(&self) -> Result<Vec<NodeRow>> {
        let agents = self.store.agents().await?;
        let now = now_ms();
        Ok(self
            .store
            .nodes()
            .await?
            .into_iter()
            .map(|n| NodeRow {
                agents: agents
                    .iter()
                    .filter(|a| a.node.as_deref() == Some(n.name.as_str()))
                    .count() as u64,
                last_heartbeat: rfc3339(n.last_heartbeat),
                started_at: rfc3339(n.started_at),
                alive: is_alive(n.last_heartbeat, now, self.settings.heartbeat_every),
                name: n.name,
                address: n.address,
            })
            .collect())
    }
}

/// Heartbeats every interval until shutdown. A node not registered yet (the
/// disk was full at start) registers instead. A failed beat is logged once
/// per run of failures, and the next one tries again; the first beat stored
/// after failures (its own, or any request's that found the database out of
/// reach) tells the operator how long the store failed ([`Hive::store_back`]).
pub async fn heartbeat(hive: Arc<Hive>) {
    let every = hive.settings.heartbeat_every;
    // The beats failed for other reasons than the database out of reach
    // (which the store notes itself), such as a full disk.
    let failing = OutageLog::default();
    // Whether the current run of failed beats has been logged, and told to the webhooks.
    let (mut logged, mut alerted) = (false, false);
    let mut watching: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = hive.shutdown_token().cancelled() => return,
        }
        // A database that takes the call and never answers is out of reach
        // too: by the time the others count this node down, say so.
        let limit = every * DEAD_AFTER;
        let beat = match tokio::time::timeout(
            limit,
            hive.store
                .heartbeat(hive.node().as_str(), &hive.settings.lease_holder),
        )
        .await
        {
            Ok(Ok(true)) => Ok(()),
            // Registered again, unless another daemon took the name meanwhile.
            Ok(Ok(false)) => match hive.register_node().await {
                Ok(None) => Ok(()),
                Ok(Some(why)) => return hive.step_down(why).await,
                Err(e) => Err(e),
            },
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::Store(StoreError::Unreachable(format!(
                "the database did not answer this node's heartbeat within {} s",
                limit.as_secs()
            )))),
        };
        // Off the beat's own time: these read through the pool agents keep
        // busy, and a beat waiting on them came late enough for the other
        // nodes to count this one down. One at a time.
        if beat.is_ok() && watching.as_ref().is_none_or(|w| w.is_finished()) {
            let hive = hive.clone();
            watching = Some(hive.clone().spawn_task("liveness watch", async move {
                if let Err(e) = hive.watch_liveness().await {
                    tracing::warn!("could not check the other nodes' heartbeats: {e}");
                }
                if let Err(e) = hive.reclaim_expired_leases().await {
                    tracing::warn!("could not return the claims of leases that ran out: {e}");
                }
            }));
        }
        match beat {
            Ok(()) => {
                if let Some(theirs) = hive.store.take_outage() {
                    failing.add(theirs);
                }
                // A beat updates a row in place: it says the database
                // answers, not that its disk has room for new rows.
                if !hive.database_full() {
                    hive.set_database_alarm(None);
                }
                if let Some(outage) = failing.take() {
                    // Through the pool agents may keep busy: not on the beat's time.
                    let hive = hive.clone();
                    hive.clone().spawn_task("database back notice", async move {
                        hive.store_back(&outage).await
                    });
                }
                (logged, alerted) = (false, false);
            }
            Err(e) => {
                if !logged {
                    tracing::warn!("could not store this node's heartbeat: {e}");
                    logged = true;
                }
                let down = match &e {
                    Error::Store(s) if s.is_unreachable() => Some(s.to_string()),
                    Error::Store(s) if s.is_unusable() => Some(hive.unusable(s)),
                    _ => None,
                };
                // The store notes a database out of reach itself.
                if !e.is_unreachable() {
                    let why = down.clone().unwrap_or_else(|| e.to_string());
                    failing.add(Outage::new(now_ms(), format!("{why}.")));
                }
                if let Some(down) = down {
                    hive.set_database_alarm(Some(&down));
                    // A failed beat, not the first failed request: a
                    // blip between beats is shown and told after, and
                    // wakes no one.
                    if !alerted {
                        alerted = true;
                        hive.spawn_task(
                            "database down alert",
                            alert_database_down(hive.clone(), down),
                        );
                    }
                }
            }
        }
    }
}

/// Turns the database alarm on at the first request that finds the database
/// out of reach (any request, not only a heartbeat), so the dashboard shows
/// it at once; the next heartbeat stored turns it off.
pub async fn raise_database_alarm(hive: Arc<Hive>) {
    let Some(mut began) = hive.store.outage_beginnings() else {
        return;
    };
    loop {
        tokio::select! {
            r = began.changed() => if r.is_err() { return },
            _ = hive.shutdown_token().cancelled() => return,
        }
        let first = began.borrow_and_update().clone();
        // Not when a heartbeat has taken the run meanwhile: it is over. One
        // that took it between the check and the alarm turned off an alarm
        // not yet on, so the check is made again after.
        if let Some(first) = first
            && hive.store.outage_open()
            && hive.set_database_alarm(Some(&first))
            && !hive.store.outage_open()
        {
            hive.set_database_alarm(None);
        }
    }
}

/// How long the database's disk must stay full (or not) before the
/// webhooks hear of the change.
const FULL_SETTLES: Duration = Duration::from_secs(2);

/// Keeps the database alarm on while the database's disk is full (from the
/// first write it refuses for that until one goes through), and tells the
/// webhooks that want `disk_full` when that begins and ends, straight: the
/// notifications' queue is in that database.
pub async fn watch_database_full(hive: Arc<Hive>) {
    let Some(mut full) = hive.store.database_full() else {
        return;
    };
    // What the webhooks last heard: full (true) or not.
    let mut told = false;
    loop {
        tokio::select! {
            r = full.changed() => if r.is_err() { return },
            _ = hive.shutdown_token().cancelled() => return,
        }
        // A disk on the edge refuses one write and takes the next: let it
        // settle, and tell what it settled on, once.
        tokio::select! {
            _ = tokio::time::sleep(FULL_SETTLES) => {}
            _ = hive.shutdown_token().cancelled() => return,
        }
        let why = full.borrow_and_update().clone();
        let text = match &why {
            Some(why) => {
                tracing::warn!("{why}");
                hive.set_database_alarm(Some(why));
                format!("Node {}: {why}", hive.node())
            }
            None => {
                tracing::info!("the hive's database takes writes again");
                if !hive.store.outage_open() {
                    hive.set_database_alarm(None);
                }
                format!(
                    "Node {}: the hive's database has room on its disk again: writes go through",
                    hive.node()
                )
            }
        };
        let on = why.is_some();
        if on == told {
            continue;
        }
        told = on;
        let h = hive.clone();
        hive.spawn_task("database full alert", async move {
            h.alert_webhooks(NotificationKind::DiskFull, &text, || {
                h.database_full() == on
            })
            .await;
        });
    }
}

/// Tells the webhooks that want `node_down` that this node lost its database,
/// straight, since the notifications' queue is in the database; the
/// `node_down` notification stored once it is back follows as usual.
async fn alert_database_down(hive: Arc<Hive>, why: String) {
    let text = format!(
        "Node {} since {}: {why}. Its agents' processes keep running, and what is asked of this \
         node fails with an error until the database works again.",
        hive.node(),
        hive.database_alarm().map(|a| a.since).unwrap_or_default(),
    );
    hive.alert_webhooks(NotificationKind::NodeDown, &text, || {
        hive.database_alarm().is_some()
    })
    .await;
}

/// The sentence on a node's agents: `No agents live there.`, `1 agent lives
/// there (x): {one}.`, `2 agents live there (x, y): {many}.`, the first
/// [`NAMED_AGENTS`] named.
fn who(agents: &[String], one: &str, many: &str) -> String {
    let mut names = agents[..agents.len().min(NAMED_AGENTS)].join(", ");
    if agents.len() > NAMED_AGENTS {
        names.push_str(&format!(" and {} more", agents.len() - NAMED_AGENTS));
    }
    match agents.len() {
        0 => "No agents live there.".to_owned(),
        1 => format!("1 agent lives there ({names}): {one}."),
        n => format!("{n} agents live there ({names}): {many}."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_alive_for_three_intervals_after_its_last_beat() {
        let every = Duration::from_secs(5);
        assert!(is_alive(1_000, 1_000, every));
        assert!(is_alive(1_000, 16_000, every));
        assert!(!is_alive(1_000, 16_001, every));
    }

    #[test]
    fn a_nodes_agents_are_counted_and_named_in_a_sentence() {
        let names = |n: usize| (0..n).map(|i| format!("a{i}")).collect::<Vec<_>>();
        assert_eq!(who(&[], "it waits", "they wait"), "No agents live there.");
        assert_eq!(
            who(&names(1), "it waits", "they wait"),
            "1 agent lives there (a0): it waits."
        );
        assert_eq!(
            who(&names(2), "it waits", "they wait"),
            "2 agents live there (a0, a1): they wait."
        );
        let many = who(&names(12), "it waits", "they wait");
        assert!(
            many.starts_with("12 agents live there (a0, a1,") && many.contains("a9 and 2 more)"),
            "{many}"
        );
    }

    #[test]
    fn the_host_name_names_the_node_by_default() {
        let host = std::fs::read_to_string(HOSTNAME).unwrap();
        match NodeName::from_hostname(&host) {
            Ok(n) => assert_eq!(this_host().unwrap(), n),
            Err(_) => assert!(this_host().unwrap_err().to_string().contains("--node NAME")),
        }
    }
}
