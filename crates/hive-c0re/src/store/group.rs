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

use super::Store;
use super::messages::SendError;

/// Most sends one commit takes.
const MAX_BATCH: usize = 256;

/// A queued send and where its answer goes.
pub(super) struct Job {
    pub sender: String,
    pub recipient: String,
    pub body: String,
    pub reply: oneshot::Sender<Result<i64, SendError>>,
}

impl Store {
    /// Commits a message through the group-commit writer: answers once it is
    /// committed, sharing the commit with whatever other sends are under way.
    pub async fn send_grouped(
        &self,
        sender: &str,
        recipient: &str,
        body: &str,
    ) -> Result<i64, SendError> {
        let Some(writer) = &self.writer else {
            return self.send(sender, recipient, body);
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            sender: sender.to_owned(),
            recipient: recipient.to_owned(),
            body: body.to_owned(),
            reply,
        };
        if writer.send(job).is_err() {
            // The writer is gone (it never started): commit on this thread instead.
            return self.send(sender, recipient, body);
        }
        match answer.await {
            Ok(r) => r,
            Err(_) => self.send(sender, recipient, body),
        }
    }
}

/// Starts the writer thread for `store`; it ends when the queue's senders are gone.
pub(super) fn start(store: Store, rx: mpsc::Receiver<Job>) {
    let spawned = std::thread::Builder::new()
        .name("hive-store-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let items: Vec<(&str, &str, &str)> = batch
                    .iter()
                    .map(|j| (j.sender.as_str(), j.recipient.as_str(), j.body.as_str()))
                    .collect();
                let results = store.send_many(&items);
                for (job, result) in batch.into_iter().zip(results) {
                    // The caller may have gone away; its message is committed all the same.
                    let _ = job.reply.send(result);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("could not start the store's writer thread: {e}");
    }
}
