//! The free-space alarm (see `crate::space`) as the hive acts on it: what
//! happens when it goes on or clears; and what each agent's state dir
//! takes, measured each minute, so the alarm names the largest (by bytes,
//! or by files when inodes ran out).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_sh4re::notification::NotificationKind;

use hive_sh4re::AgentName;

use super::Hive;
use crate::broker::Change;
use crate::error::{Error, Result};
use crate::runtime::{Usage, disk_usage};
use crate::space::{Space, Transition, grouped, human};
use crate::store::AgentRow;

/// How often each agent's state dir is measured (`HIVE_STATE_MEASURE_SECS` in tests).
const MEASURE_EVERY: Duration = Duration::from_secs(60);
/// The longest one agent's measure walks: an agent can make millions of entries.
const MEASURE_LIMIT: Duration = Duration::from_secs(5);
/// The longest the alarm waits for the agents' sizes before it is told.
const ALARM_MEASURE: Duration = Duration::from_secs(3);
/// How many of the largest agents the alarm names.
const NAMED: usize = 3;

impl Hive {
    /// The free-space alarm of the state's file system.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Tells the operator that the free-space alarm went on or cleared: the
    /// log, a notice from `system` in the operator's inbox, the dashboard,
    /// and the webhooks that want `disk_full` (sent around the store, which
    /// has no room to queue them).
    pub async fn space_changed(self: &Arc<Self>, t: &Transition) {
        let notice = match t {
            Transition::Low(a) => {
                // Measured now: the agent that filled the disk may have done it within the minute.
                self.measure_states(ALARM_MEASURE).await;
                let mut text = a.message.clone();
                if a.free_bytes < a.floor_bytes {
                    text.push_str(&self.largest_states(false));
                }
                if crate::space::short_of_inodes(a) {
                    text.push_str(&self.largest_states(true));
                }
                tracing::warn!("{text}");
                text
            }
            Transition::Cleared => {
                if self.space.take_deferred_release() {
                    // At-least-once: a harness that claimed one of them meanwhile may see it again.
                    match self.store.release_claims_at_start().await {
                        Ok(n) => {
                            tracing::info!(
                                n,
                                "returned messages of interrupted turns to their inboxes"
                            );
                            for name in self.list().await.unwrap_or_default() {
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
        match self.store.send("system", "operator", &notice).await {
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
        let low = matches!(t, Transition::Low(_));
        let hive = self.clone();
        let text = format!("Node {}: {notice}", self.node());
        self.spawn_task(async move {
            hive.alert_webhooks(NotificationKind::DiskFull, &text, || {
                hive.space.is_low() == low
            })
            .await;
        });
    }

    /// The free-space check until shutdown: every second, so the alarm follows
    /// the disk within a second either way.
    pub async fn watch_space(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let hive = self.clone();
            let t = tokio::task::spawn_blocking(move || hive.space.check()).await;
            if let Ok(Some(t)) = t {
                self.space_changed(&t).await;
            }
        }
    }

    /// What agent `name`'s state dir took when last measured here.
    pub(super) fn state_size(&self, name: &str) -> Option<Usage> {
        self.state_sizes
            .lock()
            .expect("sizes lock")
            .get(name)
            .copied()
    }

    /// Measures the state dir of each agent this node runs, off the
    /// runtime's threads, each walk bounded by [`MEASURE_LIMIT`] and all of
    /// them by `within`: one not measured in time keeps its last size. One
    /// found over the hive's `state_quota` is stopped ([`Hive::over_quota`]).
    pub(crate) async fn measure_states(self: &Arc<Self>, within: Duration) {
        let Ok(agents) = self.store.agents().await else {
            return;
        };
        let end = Instant::now() + within;
        let mine: Vec<&AgentRow> = agents
            .iter()
            .filter(|a| super::nodes::runs_here(&self.store, a, self.node()))
            .collect();
        self.state_sizes
            .lock()
            .expect("sizes lock")
            .retain(|n, _| mine.iter().any(|a| &a.name == n));
        for row in mine {
            let Ok(name) = AgentName::parse(&row.name) else {
                continue;
            };
            let now = Instant::now();
            if now >= end {
                break;
            }
            let Some(u) = self
                .measure_state(&name, end.min(now + MEASURE_LIMIT))
                .await
            else {
                continue;
            };
            if row.want_running
                && let Some(over) = self.over_quota(&name, u)
            {
                self.stop_over_quota(&name, &over).await;
            }
        }
    }

    /// Measures agent `name`'s files here until `deadline` and keeps the
    /// figure; None when the walk failed or did not end in time.
    async fn measure_state(&self, name: &AgentName, deadline: Instant) -> Option<Usage> {
        let mut dirs = vec![self.paths.agent_state(name)];
        // The manager's own files include every config repo it writes.
        if name.is_manager() {
            dirs.push(self.paths.configs_root());
        }
        // Its harness log too, outside its state dir: the agent writes
        // it through the descriptor it was given, and can grow it (or
        // allocate it) as it can its files.
        let logs = crate::harness_log::files(&self.paths.harness_log(name));
        let walk = tokio::task::spawn_blocking(move || {
            let logged: Vec<u64> = logs
                .iter()
                .filter_map(|l| std::fs::symlink_metadata(l).ok())
                .filter(|m| m.is_file())
                .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
                .collect();
            dirs.iter().try_fold(
                Usage {
                    bytes: logged.iter().sum(),
                    files: logged.len() as u64,
                    complete: true,
                },
                |sum, dir| {
                    let u = disk_usage(dir, deadline)?;
                    Ok::<_, std::io::Error>(Usage {
                        bytes: sum.bytes + u.bytes,
                        files: sum.files + u.files,
                        complete: sum.complete && u.complete,
                    })
                },
            )
        });
        // The walk stops at its deadline; a system call that hangs (a
        // stuck file system) is left behind, not waited for.
        let Ok(measured) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1),
            walk,
        )
        .await
        else {
            tracing::warn!(agent = %name, "measuring its state dir did not end in time");
            return None;
        };
        match measured {
            Ok(Ok(u)) => {
                self.state_sizes
                    .lock()
                    .expect("sizes lock")
                    .insert(name.to_string(), u);
                Some(u)
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            Ok(Err(e)) => {
                tracing::debug!(agent = %name, "could not measure its state dir: {e}");
                None
            }
            Err(e) => {
                tracing::warn!(agent = %name, "measuring its state dir failed: {e}");
                None
            }
        }
    }

    /// What agent `name`'s files taking `u` say against the hive's
    /// `state_quota`: None within it (or with none set), else a sentence
    /// saying what it takes, of what, and what the operator can do.
    fn over_quota(&self, name: &AgentName, u: Usage) -> Option<String> {
        let quota = self.settings.state_quota?;
        if u.bytes <= quota {
            return None;
        }
        let at_least = if u.complete { "" } else { "at least " };
        Some(format!(
            "its files on node {} take {at_least}{}, over the hive's state_quota of {}: remove \
             some of them under {} (or raise state_quota), then `hive-c0re start {name}`",
            self.node(),
            human(u.bytes),
            human(quota),
            self.paths.agent_state(name).display()
        ))
    }

    /// Stops agent `name`, whose files passed the hive's `state_quota`, and
    /// tells the operator: one agent filling the disk would otherwise stop
    /// every agent's messages at the free-space alarm.
    async fn stop_over_quota(self: &Arc<Self>, name: &AgentName, over: &str) {
        if let Err(e) = self.stop(name, false).await {
            tracing::warn!(agent = %name, "could not stop an agent over its state_quota: {e}");
            return;
        }
        let text = format!("{name} was stopped: {over}.");
        tracing::warn!("{text}");
        self.tell_operator(NotificationKind::DiskFull, Some(name), &text)
            .await;
    }

    /// Refuses to start agent `name` while its files are over the hive's
    /// `state_quota`, measured again now (the operator may just have removed some).
    pub(super) async fn refuse_over_quota(&self, name: &AgentName) -> Result<()> {
        if self.settings.state_quota.is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + MEASURE_LIMIT;
        match self.measure_state(name, deadline).await {
            Some(u) => match self.over_quota(name, u) {
                Some(over) => Err(Error::refused(format!("cannot start {name}: {over}"))),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// `. The largest agents' state dirs here: alice 1.2 GiB, ...` (with
    /// `by_files`, `. The agents' state dirs with the most files here: alice
    /// 3,812 files, ...`), or nothing when none was measured.
    fn largest_states(&self, by_files: bool) -> String {
        let mut sizes: Vec<(String, Usage)> = self
            .state_sizes
            .lock()
            .expect("sizes lock")
            .iter()
            .map(|(n, u)| (n.clone(), *u))
            .collect();
        let key = |u: &Usage| if by_files { u.files } else { u.bytes };
        sizes.sort_by(|a, b| key(&b.1).cmp(&key(&a.1)).then_with(|| a.0.cmp(&b.0)));
        let named: Vec<String> = sizes
            .iter()
            .take(NAMED)
            .map(|(n, u)| {
                let at_least = if u.complete { "" } else { "at least " };
                if by_files {
                    format!("{n} {at_least}{} files", grouped(u.files))
                } else {
                    format!("{n} {at_least}{}", human(u.bytes))
                }
            })
            .collect();
        if named.is_empty() {
            return String::new();
        }
        if by_files {
            format!(
                ". The agents' state dirs with the most files here: {} (`hive-c0re shell NAME` \
                 to delete them)",
                named.join(", ")
            )
        } else {
            format!(
                ". The largest agents' state dirs here: {} (see `hive-c0re status --json`, state_bytes)",
                named.join(", ")
            )
        }
    }

    /// Measures the agents' state dirs each [`MEASURE_EVERY`] until shutdown.
    pub async fn watch_state_sizes(self: Arc<Self>) {
        let every = crate::clock::secs_from_env("HIVE_STATE_MEASURE_SECS", MEASURE_EVERY);
        loop {
            self.measure_states(every).await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}
