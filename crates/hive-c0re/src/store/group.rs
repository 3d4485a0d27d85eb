//! Group commit for sends: concurrent `send`s share one transaction.
//!
//! Each commit writes a few pages to the write-ahead log; under load that,
//! not the insert, is the cost of a send. One writer thread takes whatever
//! sends are queued, inserts them all in one transaction, commits once, and
//! only then answers each: every `send` still returns after its own message
//! is committed, and one sender alone waits for nobody.
//!
//! This module builds on `messages.rs` (its `send_many` is the transaction),
//! never the other way round.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::messages::{Outgoing, SendError, Sent};
use super::{Store, StoreError};

/// Most sends one commit takes.
const MAX_BATCH: usize = 256;

/// A queued send and where its answer goes.
pub(super) struct Job {
    pub out: Outgoing,
    pub reply: oneshot::Sender<Result<Sent, SendError>>,
}

impl Store {
    /// Commits a message, with its note's event if any, through the
    /// group-commit writer: answers once it is committed, sharing the commit
    /// with whatever other sends are under way.
    pub(super) async fn send_grouped(&self, out: Outgoing) -> Result<Sent, SendError> {
        let Some(writer) = &self.writer else {
            return self.send_one(out);
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if let Err(mpsc::SendError(job)) = writer.send(Job { out, reply }) {
            // The writer is gone (it never started, or it panicked): commit on this thread instead.
            return self.send_one(job.out);
        }
        answer.await.unwrap_or_else(|_| {
            // It panicked with this send in its batch, which rolled back.
            Err(SendError::Store(StoreError::Batch(
                "the store's writer stopped during the send: send it again".into(),
            )))
        })
    }
}

/// Starts the writer thread for `store`; it ends when the queue's senders
/// are gone. One that panics is told (see `panics.rs`) and not started
/// again: the sends go on without it, each on its caller's thread.
pub(super) fn start(store: Store, rx: mpsc::Receiver<Job>) {
    let spawned = std::thread::Builder::new()
        .name("hive-store-writer".into())
        .spawn(move || {
            let faults = store.faults.clone();
            let served =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(store, rx)));
            if let Err(payload) = served {
                let panic = crate::panics::Panic::from_payload(payload);
                faults.report(
                    "store writer",
                    None,
                    &panic,
                    "sends are committed one at a time from now on, until hive-c0re is restarted",
                );
            }
        });
    if let Err(e) = spawned {
        tracing::error!("could not start the store's writer thread: {e}");
    }
}

/// Commits the queued sends in batches until the queue's senders are gone.
fn serve(store: Store, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (items, replies): (Vec<Outgoing>, Vec<_>) =
            batch.into_iter().map(|j| (j.out, j.reply)).unzip();
        let results = store.send_many(&items);
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone away; its message is committed all the same.
            let _ = reply.send(result);
        }
    }
}
