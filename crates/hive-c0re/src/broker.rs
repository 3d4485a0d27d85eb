//! Wake-ups: who is waiting for what. The store holds the data; this module
//! tells waiters that something changed, so nobody polls.
//!
//! Inboxes get one `watch` channel per mailbox (a send wakes only that
//! mailbox's waiters); hive-wide changes go through one `broadcast` that the
//! status subscription and the dashboard's SSE stream follow.
//!
//! One thing it holds itself: the operator's commands for a running harness
//! (cancel, compact, compact notes), queued in memory until the harness's
//! `control` connection takes them. They are not durable on purpose: each
//! concerns the harness process that runs now, which a restart of hive-c0re
//! ends (harnesses die with the daemon); the supervisor clears an agent's
//! queue when its harness goes away, so none reaches a later one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use hive_sh4re::agent::Control;
use tokio::sync::{broadcast, watch};

/// Something in the hive changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An agent's status row may differ.
    Agent(String),
    /// An agent was removed.
    AgentRemoved(String),
    /// New events were stored for an agent, up to this id.
    Events { agent: String, last_id: i64 },
    /// A message was stored for this mailbox.
    Message { to: String, from: String },
    /// Approvals changed.
    Approvals,
    /// Operator questions changed.
    Questions,
    /// The free-space alarm went on or cleared.
    Space,
    /// The database alarm went on or cleared.
    Database,
    /// Notifications were stored or marked read.
    Notifications,
    /// A webhook's queue or last result changed.
    Webhooks,
}

/// The number of wake channels past which (at each power of two) those
/// nobody waits on are dropped.
const PRUNE_AT: usize = 1024;

/// Fan-out of wake-ups.
pub struct Broker {
    inbox: Mutex<HashMap<String, watch::Sender<u64>>>,
    control: Mutex<HashMap<String, VecDeque<Control>>>,
    changes: broadcast::Sender<Change>,
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker {
    /// A broker with no waiters.
    pub fn new() -> Self {
        Self {
            inbox: Mutex::default(),
            control: Mutex::default(),
            changes: broadcast::channel(4096).0,
        }
    }

    /// A receiver that fires on the next poke of `mailbox`. Subscribe before
    /// checking the store, so a send between the check and the wait is not missed.
    pub fn watch_inbox(&self, mailbox: &str) -> watch::Receiver<u64> {
        let mut m = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        // Keys come and go (each question and steering request has one):
        // now and then those nobody waits on any more go, or the map would
        // grow for as long as the daemon runs.
        if !m.contains_key(mailbox) && m.len() >= PRUNE_AT && m.len().is_power_of_two() {
            m.retain(|_, tx| tx.receiver_count() > 0);
        }
        m.entry(mailbox.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes whoever waits on `mailbox` (a message came, or a pause or nap
    /// ended); nothing when nobody does (a waiter subscribes before it checks).
    pub fn poke(&self, mailbox: &str) {
        let m = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = m.get(mailbox) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// How many mailboxes the broker keeps a wake channel for (tests).
    #[cfg(test)]
    fn inboxes(&self) -> usize {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Wakes every mailbox and question someone waits on, so each re-checks
    /// the store (wakes from other nodes may have been lost). Harnesses'
    /// command queues are left alone: they live in this process only.
    pub fn poke_all(&self) {
        let senders: Vec<_> = self
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| !k.starts_with(CONTROL_PREFIX))
            .map(|(_, tx)| tx.clone())
            .collect();
        for tx in senders {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Queues a command for an agent's harness and wakes it.
    pub fn push_control(&self, agent: &str, c: Control) {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(agent.to_owned())
            .or_default()
            .push_back(c);
        self.poke(&control_key(agent));
    }

    /// Takes the oldest queued command for an agent's harness.
    pub fn pop_control(&self, agent: &str) -> Option<Control> {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(agent)?
            .pop_front()
    }

    /// Drops commands queued for a harness that went away.
    pub fn clear_control(&self, agent: &str) {
        self.control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(agent);
    }

    /// A receiver that fires when a command is queued for `agent`.
    pub fn watch_control(&self, agent: &str) -> watch::Receiver<u64> {
        self.watch_inbox(&control_key(agent))
    }

    /// Announces a change to every subscriber.
    pub fn publish(&self, c: Change) {
        // No subscriber is not an error.
        let _ = self.changes.send(c);
    }

    /// Where changes are announced, for a task that outlives a borrow of the broker.
    pub fn publisher(&self) -> broadcast::Sender<Change> {
        self.changes.clone()
    }

    /// Follows hive-wide changes.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

/// Agent names cannot contain '#', so control keys never collide with mailboxes.
const CONTROL_PREFIX: &str = "#control/";

fn control_key(agent: &str) -> String {
    format!("{CONTROL_PREFIX}{agent}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poking_all_wakes_every_mailbox_and_question_but_no_harness_queue() {
        let b = Broker::new();
        let alice = b.watch_inbox("alice");
        let operator = b.watch_inbox("operator");
        let control = b.watch_control("alice");
        b.poke_all();
        assert!(alice.has_changed().unwrap());
        assert!(operator.has_changed().unwrap());
        assert!(!control.has_changed().unwrap());
    }

    #[test]
    fn wake_channels_nobody_waits_on_do_not_pile_up() {
        let b = Broker::new();
        let kept = b.watch_inbox("alice");
        // Each question's waiter, come and gone, and pokes of keys nobody watches.
        for id in 0..10_000 {
            drop(b.watch_inbox(&format!("#question/{id}")));
            b.poke(&format!("#request/{id}"));
        }
        assert!(b.inboxes() <= 2 * PRUNE_AT, "{}", b.inboxes());
        b.poke("alice");
        assert!(
            kept.has_changed().unwrap(),
            "a live waiter keeps its channel"
        );
    }
}
