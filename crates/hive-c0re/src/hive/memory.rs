//! Agents out of memory: the OOM kills the kernel makes in a container at
//! its memory bound (`serve --agent-memory`), told to the operator.
//!
//! Such a kill takes a turn's claude, most likely: the turn fails like any
//! other and its messages go back to the inbox, so without this notice the
//! operator would see failed turns and never learn why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::AgentName;
use hive_sh4re::notification::NotificationKind;

use super::Hive;

/// How often the running containers' counts of OOM kills are read.
const CHECK_EVERY: Duration = Duration::from_secs(15);

impl Hive {
    /// Reads each running container's count of OOM kills every
    /// [`CHECK_EVERY`] and tells the operator of new ones, until shutdown.
    pub async fn watch_memory(self: Arc<Self>) {
        let Ok(bound) = self.runtime.memory_bound() else {
            return;
        };
        let every = crate::clock::secs_from_env("HIVE_OOM_CHECK_SECS", CHECK_EVERY);
        // Kills already told, by agent: a relaunched container counts from 0 again.
        let mut told: HashMap<String, u64> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.shutdown.cancelled() => return,
            }
            let Ok(agents) = self.store.agents().await else {
                continue;
            };
            for row in agents {
                let Ok(name) = AgentName::parse(&row.name) else {
                    continue;
                };
                if !self.supervisor.is_running(name.as_str()) {
                    continue;
                }
                let Some(kills) = self.runtime.oom_kills(&self.launch_spec(&row)) else {
                    continue;
                };
                let before = match told.insert(row.name.clone(), kills) {
                    // Fewer than told: a relaunched container, counting from 0.
                    Some(n) if n <= kills => n,
                    _ => 0,
                };
                if kills == before {
                    continue;
                }
                let text = format!(
                    "{name} ran out of memory: the kernel killed {n} process{es} in its container \
                     at its bound of {bound} (hive-c0re serve --agent-memory). If it was a turn's, \
                     that turn failed and its messages wait in the inbox. Give agents more memory, \
                     or ask {name} to work in smaller steps.",
                    n = kills - before,
                    es = if kills - before == 1 { "" } else { "es" },
                    bound = crate::space::human(bound),
                );
                tracing::warn!("{text}");
                self.tell_operator(NotificationKind::OutOfMemory, Some(&name), &text)
                    .await;
            }
        }
    }
}
