//! The free-space alarm (see `crate::space`) as the hive acts on it: what
//! happens when it goes on or clears.

use std::sync::Arc;

use hive_sh4re::notification::NotificationKind;

use super::Hive;
use crate::broker::Change;
use crate::space::{Space, Transition};

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
                tracing::warn!("{}", a.message);
                a.message.clone()
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
}
