//! Wakes from other nodes: a message another node committed for a mailbox
//! here, or an answer to a question asked here, reaches its waiter at once
//! (the store's LISTEN/NOTIFY, [`crate::store::Wakes`]). A wake lost with a
//! dropped connection costs latency, never a message: after the listener
//! reconnects, and every [`RECHECK`] anyway, everyone waiting here looks at
//! the store again. A steering request for this node (`steer.rs`) is taken
//! on its wake, at start, and on those re-checks. What another node changed
//! of what the operator sees (an agent's row or events, approvals,
//! notifications) becomes the broker's `Change`, as this node's own writes
//! do, so the dashboard and status subscribers show the whole hive live.

use std::sync::Arc;
use std::time::Duration;

use super::Hive;
use crate::broker::Change;
use crate::store::Wake;
use hive_sh4re::AgentName;

/// How often every waiter re-checks the store though no wake came.
pub const RECHECK: Duration = Duration::from_secs(30);

/// Hands other nodes' wakes to this node's waiters until shutdown; nothing
/// to do on a store no other node shares.
pub async fn follow(hive: Arc<Hive>) {
    if !hive.store.shared() {
        return;
    }
    let mut wakes = hive.store.wakes();
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Requests stored while this node was away wait for it.
    hive.take_requests().await;
    loop {
        tokio::select! {
            batch = wakes.next_batch() => {
                for w in batch {
                    hive.woken(w).await;
                }
            }
            _ = recheck.tick() => {
                hive.broker.poke_all();
                hive.take_requests().await;
            }
            _ = hive.shutdown.cancelled() => return,
        }
    }
}

impl Hive {
    /// Wakes what another node's commit concerns.
    async fn woken(self: &Arc<Self>, w: Wake) {
        match w {
            Wake::Mailbox(m) => {
                self.broker.poke(&m);
                // Its depth is in its status row.
                if m != "operator" {
                    self.broker.publish(Change::Agent(m.clone()));
                }
                // Its inbox (and depth in a status row) changed for this node's
                // surfaces too; a wake does not say who sent, so the mailbox stands
                // for both ends (the dashboard does each inbox's work once a burst).
                self.broker.publish(Change::Message {
                    to: m.clone(),
                    from: m,
                });
            }
            Wake::Question(id) => {
                self.broker.poke(&super::questions::question_key(id));
                self.broker.publish(Change::Questions);
            }
            Wake::Request(node) => {
                if node == self.node().as_str() {
                    self.take_requests().await;
                }
            }
            Wake::Outcome(id) => self.request_done(id),
            Wake::Secrets => self.forget_redactor(),
            // What this node's operator surfaces show of the rest of the hive.
            Wake::Events { agent, last_id } => {
                self.broker.publish(Change::Events { agent, last_id });
            }
            Wake::Agent(name) => self.agent_changed_elsewhere(name).await,
            Wake::Approvals => self.broker.publish(Change::Approvals),
            Wake::Notifications => self.broker.publish(Change::Notifications),
            Wake::Resync => {
                self.forget_redactor();
                self.surfaces_again().await;
                tracing::info!(
                    "re-checking every inbox and steering request: wakes from other nodes may have been lost"
                );
                self.broker.poke_all();
                self.take_requests().await;
            }
        }
    }

    /// Another node changed agent `name`'s row, made it or removed it.
    async fn agent_changed_elsewhere(&self, name: String) {
        let exists = match AgentName::parse(&name) {
            Ok(n) => self.store.agent(n.as_str()).await.map(|a| a.is_some()),
            Err(_) => return,
        };
        match exists {
            Ok(true) => self.broker.publish(Change::Agent(name)),
            Ok(false) => self.broker.publish(Change::AgentRemoved(name)),
            Err(e) => {
                tracing::warn!(agent = %name, "could not read an agent another node changed: {e}")
            }
        }
    }

    /// Wakes from other nodes may have been lost: this node's operator
    /// surfaces read everything they show of the hive again.
    async fn surfaces_again(&self) {
        match self.store.agents().await {
            Ok(agents) => {
                for a in agents {
                    self.broker.publish(Change::Agent(a.name));
                }
            }
            Err(e) => tracing::warn!("could not list the agents to show them again: {e}"),
        }
        for c in [Change::Approvals, Change::Questions, Change::Notifications] {
            self.broker.publish(c);
        }
    }
}
