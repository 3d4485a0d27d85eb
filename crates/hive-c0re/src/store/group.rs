//! Group commit for sends: concurrent `send`s share one transaction.
//!
//! Each commit writes a few pages to the write-ahead log; under load that,
//! not the insert, is the cost of a send. One writer thread takes whatever
//! sends are queued (right after a commit, it waits a moment for the callers
//! it answered: see `Rejoin`), inserts them all in one transaction, commits
//! once, and only then answers each: every `send` still returns after its
//! own message is committed, and one sender alone waits for nobody.
//!
//! This module builds on `messages.rs` (its `send_many` is the transaction),
//! never the other way round.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::messages::{Outgoing, SendError, Sent};
use super::{Store, StoreError};

/// Most sends one commit takes.
const MAX_BATCH: usize = 256;

/// A queued send and where its answer goes.
pub(super) struct Job {
    pub out: Outgoing,
    pub reply: oneshot::Sender<Result<Sent, SendError>>,
    /// When it was queued: whether its caller was among those a commit answered.
    pub queued: Instant,
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
        if let Err(mpsc::SendError(job)) = writer.send(Job {
            out,
            reply,
            queued: Instant::now(),
        }) {
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
    let mut rejoin = Rejoin::default();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        take_queued(&rx, &mut batch);
        if let Some((expected, until)) = rejoin.wait_for(&batch, Instant::now()) {
            while batch.len() < expected.min(MAX_BATCH) {
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                match rx.recv_timeout(left) {
                    Ok(job) => {
                        batch.push(job);
                        take_queued(&rx, &mut batch);
                    }
                    Err(_) => break,
                }
            }
        }
        let (items, replies): (Vec<Outgoing>, Vec<_>) =
            batch.into_iter().map(|j| (j.out, j.reply)).unzip();
        let results = store.send_many(&items);
        rejoin.answered(items.len(), Instant::now());
        for (reply, result) in replies.into_iter().zip(results) {
            // The caller may have gone away; its message is committed all the same.
            let _ = reply.send(result);
        }
    }
}

/// Moves what is queued into `batch`, up to `MAX_BATCH`.
fn take_queued(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Longest a commit waits for callers the last one answered.
const REJOIN_WAIT: Duration = Duration::from_micros(400);

/// Keeps callers that send again at once in one commit. Without it, callers
/// that each await their answer split into two halves that take turns: one
/// half's commit (most of it the log's sync) runs while the other half
/// queues behind it, so each commit carries half of them. A batch that
/// starts right after a commit waits a moment (`REJOIN_WAIT` at most) for
/// the callers that commit answered to send again, beside those that queued
/// during it.
#[derive(Default)]
struct Rejoin {
    /// How many sends the last commit answered, and when.
    last: Option<(usize, Instant)>,
}

impl Rejoin {
    /// Whether `batch`, taken at `now`, should wait for more sends: the
    /// batch size to wait for, and until when.
    fn wait_for(&self, batch: &[Job], now: Instant) -> Option<(usize, Instant)> {
        let (answered, at) = self.last?;
        // Callers that were not back within the wait are not sending in step.
        if now.saturating_duration_since(at) > REJOIN_WAIT {
            return None;
        }
        let others = batch.iter().filter(|j| j.queued < at).count();
        let expected = answered + others;
        (batch.len() < expected).then_some((expected, now + REJOIN_WAIT))
    }

    /// A commit answered `n` sends at `at`.
    fn answered(&mut self, n: usize, at: Instant) {
        self.last = Some((n, at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(queued: Instant) -> Job {
        Job {
            out: Outgoing {
                sender: "operator".into(),
                recipient: "alice".into(),
                body: "hi".into(),
                note: None,
            },
            reply: oneshot::channel().0,
            queued,
        }
    }

    #[test]
    fn a_batch_waits_for_the_callers_the_last_commit_answered_and_only_then() {
        let t = Instant::now();
        let us = |n| t + Duration::from_micros(n);
        let mut rejoin = Rejoin::default();
        // Nothing answered yet: no wait.
        assert_eq!(rejoin.wait_for(&[job(t)], t), None);

        // A commit answered 4 at 100 µs while 4 others queued behind it: wait for all 8.
        rejoin.answered(4, us(100));
        let queued_behind: Vec<Job> = (0..4).map(|i| job(us(10 + i))).collect();
        assert_eq!(
            rejoin.wait_for(&queued_behind, us(110)),
            Some((8, us(110) + REJOIN_WAIT))
        );

        // A commit answered 8 and one of them is back: wait for the other 7.
        rejoin.answered(8, us(300));
        assert_eq!(
            rejoin.wait_for(&[job(us(350))], us(360)),
            Some((8, us(360) + REJOIN_WAIT))
        );
        // All 8 back: no wait.
        let back: Vec<Job> = (0..8).map(|i| job(us(310 + i))).collect();
        assert_eq!(rejoin.wait_for(&back, us(360)), None);

        // One caller alone never waits.
        rejoin.answered(1, us(500));
        assert_eq!(rejoin.wait_for(&[job(us(520))], us(520)), None);

        // Callers that come back later than the wait are not in step.
        rejoin.answered(8, us(700));
        let late = us(700) + REJOIN_WAIT + Duration::from_micros(1);
        assert_eq!(rejoin.wait_for(&[job(late)], late), None);
    }
}
