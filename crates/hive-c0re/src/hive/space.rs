//! The free-space alarm (see `crate::space`) as the hive acts on it: what
//! happens when it goes on or clears; and what each agent's state dir
//! takes, measured each minute, so the alarm names the largest (by bytes,
//! or by files when inodes ran out).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hive_sh4re::notification::NotificationKind;

use hive_sh4re::AgentName;

use super::Hive;
use super::quota::Measured;
use crate::broker::Change;
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
        let mut over = vec![];
        let notice = match t {
            Transition::Low(a) => {
                // Measured now: the agent that filled the disk may have done it within the minute.
                over = self.measure_states(ALARM_MEASURE).await;
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
        // Stopped after the notice, which the freed reserve has room for,
        // and off this task, which watches the disk each second.
        if !over.is_empty() {
            let hive = self.clone();
            self.spawn_task("quota stop", async move {
                for (name, why) in over {
                    hive.stop_over_quota(&name, &why).await;
                }
            });
        }
        self.broker.publish(Change::Space);
        let low = matches!(t, Transition::Low(_));
        let hive = self.clone();
        let text = format!("Node {}: {notice}", self.node());
        self.spawn_task("disk full alert", async move {
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
            .map(|m| m.usage)
    }

    /// Measures the state dir of each agent this node runs, the longest
    /// unmeasured first, off the runtime's threads, each walk bounded by
    /// [`MEASURE_LIMIT`] and all of them by `within`: one not measured in
    /// time keeps its last size. Returns those found over the hive's
    /// `state_quota` that run, each with why ([`Hive::over_quota`]).
    pub(crate) async fn measure_states(&self, within: Duration) -> Vec<(AgentName, String)> {
        let Ok(agents) = self.store.agents().await else {
            return vec![];
        };
        let end = Instant::now() + within;
        let mut mine: Vec<&AgentRow> = agents
            .iter()
            .filter(|a| super::nodes::runs_here(&self.store, a, self.node()))
            .collect();
        let last: std::collections::HashMap<String, Instant> = {
            let mut sizes = self.state_sizes.lock().expect("sizes lock");
            sizes.retain(|n, _| mine.iter().any(|a| &a.name == n));
            sizes.iter().map(|(n, m)| (n.clone(), m.at)).collect()
        };
        // A slow walk early in the list cannot leave the same others unmeasured at every pass.
        mine.sort_by_key(|a| last.get(&a.name).copied());
        let mut over = vec![];
        for row in mine {
            let Ok(name) = AgentName::parse(&row.name) else {
                continue;
            };
            let now = Instant::now();
            if now >= end {
                break;
            }
            let m = match self
                .measure_state(&name, (now + MEASURE_LIMIT).min(end), true)
                .await
            {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                // A walk the agent makes fail counts as one that does not end.
                Err(_) => match self
                    .state_sizes
                    .lock()
                    .expect("sizes lock")
                    .get(row.name.as_str())
                {
                    Some(m) => *m,
                    None => continue,
                },
            };
            if row.want_running
                && let Some(why) = self.over_quota(&name, &m)
            {
                over.push((name, why));
            }
        }
        over
    }

    /// [`Hive::measure_state`] within one walk's time, out of the count of
    /// walks that did not end (a restart measures twice in a row).
    pub(super) async fn measure_state_now(
        &self,
        name: &AgentName,
    ) -> std::result::Result<Option<Measured>, String> {
        self.measure_state(name, Instant::now() + MEASURE_LIMIT, false)
            .await
    }

    /// Measures agent `name`'s files here until `deadline` and keeps the
    /// figure: None when it has no state dir, an error (a sentence) when
    /// the walk failed or did not end in time. With `count`, a walk that
    /// ran out of its own time or failed is one more in the agent's row of
    /// them ([`Measured::slow`]), and a whole one ends the row.
    async fn measure_state(
        &self,
        name: &AgentName,
        deadline: Instant,
        count: bool,
    ) -> std::result::Result<Option<Measured>, String> {
        let started = Instant::now();
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
            let logs = Usage {
                bytes: logged.iter().sum(),
                files: logged.len() as u64,
                complete: true,
                too_deep: false,
            };
            dirs.iter().try_fold(logs, |sum, dir| {
                Ok::<_, std::io::Error>(sum.and(disk_usage(dir, deadline)?))
            })
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
            self.strike(name, count);
            return Err("measuring its files did not end in time (a stuck file system?)".into());
        };
        let usage = match measured {
            Ok(Ok(u)) => u,
            Ok(Err(e))
                if e.kind() == std::io::ErrorKind::NotFound
                    && std::fs::symlink_metadata(self.paths.agent_state(name)).is_err() =>
            {
                return Ok(None);
            }
            Ok(Err(e)) => {
                tracing::debug!(agent = %name, "could not measure its state dir: {e}");
                self.strike(name, count);
                return Err(format!("its files could not be measured: {e}"));
            }
            Err(e) => {
                tracing::warn!(agent = %name, "measuring its state dir failed: {e}");
                self.strike(name, count);
                return Err(format!("measuring its files failed: {e}"));
            }
        };
        // Out of its own time, not the pass's: the agent's doing, counted.
        let own_limit = deadline >= started + MEASURE_LIMIT;
        let mut sizes = self.state_sizes.lock().expect("sizes lock");
        let before = sizes.get(name.as_str()).map_or(0, |m| m.slow);
        let slow = match (usage.complete, usage.too_deep) {
            (true, _) => 0,
            (false, false) if own_limit && count => before + 1,
            _ => before,
        };
        let m = Measured {
            usage,
            at: Instant::now(),
            slow,
        };
        sizes.insert(name.to_string(), m);
        Ok(Some(m))
    }

    /// One more walk of agent `name`'s files that did not end (with
    /// `count`), its last figure kept: none yet stands as nothing measured.
    fn strike(&self, name: &AgentName, count: bool) {
        if !count {
            return;
        }
        let mut sizes = self.state_sizes.lock().expect("sizes lock");
        let m = sizes.entry(name.to_string()).or_insert(Measured {
            usage: Usage {
                bytes: 0,
                files: 0,
                complete: false,
                too_deep: false,
            },
            at: Instant::now(),
            slow: 0,
        });
        m.slow += 1;
        m.at = Instant::now();
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
            .map(|(n, m)| (n.clone(), m.usage))
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
            for (name, why) in self.measure_states(every).await {
                self.stop_over_quota(&name, &why).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A walk the agent makes fail, or that outlasts its time, is a strike;
    /// the operator's own measures (start, restart) add none, and a whole
    /// walk ends the row.
    #[tokio::test]
    async fn failed_and_endless_walks_count_in_a_row_and_a_whole_one_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        let state = hive.paths.agent_state(&alice);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("a"), b"x").unwrap();
        let slow = |h: &Hive| h.state_sizes.lock().unwrap().get("alice").map(|m| m.slow);
        for _ in 0..3 {
            hive.strike(&alice, true);
        }
        hive.strike(&alice, false);
        assert_eq!(slow(&hive), Some(3));
        // A walk cut short by the pass's time, not its own, is no strike.
        let m = hive
            .measure_state(&alice, Instant::now(), true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((m.slow, m.usage.complete), (3, false));
        // A whole walk ends the row, whoever made it.
        let m = hive.measure_state_now(&alice).await.unwrap().unwrap();
        assert_eq!((m.slow, m.usage.complete), (0, true));
        assert!(m.usage.files >= 2, "{m:?}");
        // No state dir at all is nothing to measure, not a failure.
        let bob = AgentName::parse("bob").unwrap();
        assert!(hive.measure_state_now(&bob).await.unwrap().is_none());
        assert_eq!(slow(&hive).map(|_| ()), Some(()));
    }
}
