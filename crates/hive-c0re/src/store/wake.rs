//! Wakes from other nodes: what a node must re-check because another node
//! committed something. On one host the broker (`broker.rs`) wakes waiters
//! in process and nothing crosses a process; with PostgreSQL a write commits
//! a notification with it (`pg/wakes.rs`) and every other node's listener
//! hands it to the subscribers of [`Wakes`].

use tokio::sync::broadcast;

/// What another node's commit asks this node to look at again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Wake {
    /// A mailbox (an agent's, or `operator`) may have a message to take, or
    /// its agent may run again: a message arrived, claims were released, a
    /// nap or pause ended, a budget was lifted. What `Broker::poke` wakes.
    Mailbox(String),
    /// Operator question `id` was asked, answered or cancelled.
    Question(i64),
    /// A steering request waits for node `0` (`crate::store::RequestRow`).
    Request(String),
    /// Steering request `id` has its outcome.
    Outcome(i64),
    /// A secret was set or removed: what this node redacts must be read again.
    Secrets,
    /// New events of `agent` were stored, up to id `last_id`: what this
    /// node's dashboard streams to the agent's page and the feed.
    Events { agent: String, last_id: i64 },
    /// Agent `0`'s row changed (its state, status line, config...), or the
    /// agent was made or removed: this node's status surfaces show it again.
    Agent(String),
    /// An approval was asked for or decided.
    Approvals,
    /// An operator notification was stored or read.
    Notifications,
    /// Wakes may have been lost (the listener reconnected, or this
    /// subscriber fell behind): re-check every inbox and question.
    Resync,
}

/// Buffered wakes per subscriber; one that falls further behind gets [`Wake::Resync`].
pub(crate) const WAKE_BUFFER: usize = 4096;

/// A subscription to wakes from other nodes ([`crate::store::Db::wakes`]).
pub struct Wakes(Option<broadcast::Receiver<Wake>>);

impl Wakes {
    pub(crate) fn new(rx: broadcast::Receiver<Wake>) -> Self {
        Self(Some(rx))
    }

    /// A subscription that yields nothing: a sqlite hive has one node, and its
    /// broker wakes every waiter in process.
    pub(crate) fn none() -> Self {
        Self(None)
    }

    /// The next wake; waits as long as it takes (forever without other nodes).
    pub async fn next(&mut self) -> Wake {
        if let Some(rx) = &mut self.0 {
            match rx.recv().await {
                Ok(w) => return w,
                Err(broadcast::error::RecvError::Lagged(_)) => return Wake::Resync,
                // The store is gone; nothing will come.
                Err(broadcast::error::RecvError::Closed) => self.0 = None,
            }
        }
        std::future::pending().await
    }

    /// The next wake and those already waiting behind it (at most
    /// [`BATCH`]), each once: an agent whose row changes a thousand times
    /// while this node is busy costs one read of it, not a thousand in a
    /// row ahead of every other node's wakes. Of an agent's `Events` the
    /// newest stands for the others; otherwise the order is kept.
    pub async fn next_batch(&mut self) -> Vec<Wake> {
        let mut batch = vec![self.next().await];
        while batch.len() < BATCH {
            let Some(rx) = &mut self.0 else { break };
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(broadcast::error::TryRecvError::Lagged(_)) => batch.push(Wake::Resync),
                Err(_) => break,
            }
        }
        let mut newest_events = std::collections::HashMap::new();
        for w in &batch {
            if let Wake::Events { agent, last_id } = w {
                let id = newest_events.entry(agent.clone()).or_insert(*last_id);
                *id = (*id).max(*last_id);
            }
        }
        let mut seen = std::collections::HashSet::new();
        batch
            .into_iter()
            .map(|w| match w {
                Wake::Events { agent, .. } => {
                    let last_id = newest_events[&agent];
                    Wake::Events { agent, last_id }
                }
                w => w,
            })
            .filter(|w| seen.insert(w.clone()))
            .collect()
    }
}

/// The most wakes [`Wakes::next_batch`] takes at once.
const BATCH: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subscriber_that_fell_behind_is_told_to_resync() {
        let (tx, rx) = broadcast::channel(2);
        let mut w = Wakes::new(rx);
        for name in ["a", "b", "c"] {
            tx.send(Wake::Mailbox(name.into())).unwrap();
        }
        // "a" was dropped for want of room: the subscriber must re-check everything.
        assert_eq!(w.next().await, Wake::Resync);
        assert_eq!(w.next().await, Wake::Mailbox("b".into()));
        assert_eq!(w.next().await, Wake::Mailbox("c".into()));
        drop(tx);
        let none = tokio::time::timeout(std::time::Duration::from_millis(50), w.next()).await;
        assert!(none.is_err(), "a closed subscription yielded {none:?}");
    }

    #[tokio::test]
    async fn a_burst_of_wakes_is_handled_once_each_in_order() {
        let (tx, rx) = broadcast::channel(64);
        let mut w = Wakes::new(rx);
        let events = |last_id| Wake::Events {
            agent: "a".into(),
            last_id,
        };
        for wake in [
            Wake::Agent("a".into()),
            Wake::Mailbox("b".into()),
            events(3),
            Wake::Agent("a".into()),
            events(9),
            Wake::Agent("c".into()),
            Wake::Agent("a".into()),
        ] {
            tx.send(wake).unwrap();
        }
        assert_eq!(
            w.next_batch().await,
            [
                Wake::Agent("a".into()),
                Wake::Mailbox("b".into()),
                events(9),
                Wake::Agent("c".into()),
            ]
        );
        tx.send(Wake::Approvals).unwrap();
        assert_eq!(w.next_batch().await, [Wake::Approvals]);
    }
}
