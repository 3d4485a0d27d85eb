//! The one place that runs claude for the agent: a turn, `/compact` and notes
//! compaction all go through [`Job::run`], which starts claude, makes it the
//! running process (so the operator's cancel reaches it), forwards its output
//! to hive-c0re as events and tallies it.
//!
//! A [`Job`] is one piece of work that may run claude several times (a turn
//! that compacts and retries); jobs never overlap, and a cancel ends the
//! whole job, not just the process running at that moment.

use std::sync::Mutex;

use hive_sh4re::agent::{AgentRequest, EventIn};
use hive_sh4re::event::Payload;
use nix::unistd::Pid;
use tokio::sync::mpsc;

use crate::claude::{self, Invocation, Output, Tally};
use crate::client::{Client, ClientError};

/// Most events sent in one request.
const EVENT_BATCH: usize = 256;

/// Runs claude one job at a time and lets a cancel reach the running job.
#[derive(Default)]
pub struct Runner {
    /// Held for the length of a job, so jobs never overlap.
    exclusive: tokio::sync::Mutex<()>,
    current: Mutex<Current>,
}

/// The job under way, as the control task sees it.
#[derive(Default)]
struct Current {
    active: bool,
    cancelled: bool,
    /// Process group of the claude running now.
    pid: Option<Pid>,
}

/// One job: held while it runs; ends when dropped.
pub struct Job<'a> {
    runner: &'a Runner,
    _exclusive: tokio::sync::MutexGuard<'a, ()>,
}

/// Whose output a run forwards, which names its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// A turn: `stream` and `stderr`.
    Turn,
    /// `/compact`: `compact_stream` and `compact_stderr`.
    Compact,
    /// Notes compaction: `notes_compaction_stream`.
    Notes,
}

/// How one claude process ended.
#[derive(Debug, Default)]
pub struct Run {
    /// Its exit code; None when killed by a signal or never started.
    pub exit: Option<i32>,
    pub tally: Tally,
    /// Why claude could not be started, if it could not.
    pub spawn_error: Option<String>,
}

impl Run {
    /// True when claude ran to the end without an error.
    pub fn ok(&self) -> bool {
        self.exit == Some(0) && !self.tally.is_error && self.spawn_error.is_none()
    }

    /// Takes a retry's outcome, adding its figures to this run's.
    pub fn retried(&mut self, again: Run) {
        self.tally.merge(again.tally);
        self.exit = again.exit;
        self.spawn_error = again.spawn_error;
    }
}

impl Runner {
    /// Waits for the job under way to end, then begins one.
    pub async fn begin(&self) -> Job<'_> {
        let guard = self.exclusive.lock().await;
        *self.lock() = Current {
            active: true,
            ..Current::default()
        };
        Job {
            runner: self,
            _exclusive: guard,
        }
    }

    /// Cancels the job under way, killing the claude it runs; false when there is none.
    pub fn cancel(&self) -> bool {
        let pid = {
            let mut cur = self.lock();
            if !cur.active {
                return false;
            }
            cur.cancelled = true;
            cur.pid
        };
        if let Some(pid) = pid {
            tokio::spawn(claude::terminate(pid));
        }
        true
    }

    /// Ends the running claude (the harness is stopping).
    pub async fn stop(&self) {
        let pid = self.lock().pid;
        if let Some(pid) = pid {
            claude::terminate(pid).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Job<'_> {
    /// True once the operator cancelled this job.
    pub fn cancelled(&self) -> bool {
        self.runner.lock().cancelled
    }

    /// Runs claude once: sends `announce` as soon as claude is starting (so
    /// the round trips overlap its start-up), then forwards every output line
    /// as an event until claude exited and its pipes are drained.
    pub async fn run(
        &self,
        c: &mut Client,
        inv: &Invocation,
        stream: Stream,
        announce: &[AgentRequest],
    ) -> Result<Run, ClientError> {
        let mut out = Run::default();
        let (tx, mut rx) = mpsc::channel::<Output>(1024);
        // Not started at all once cancelled: a cancel between two runs of a job ends it.
        let spawned = if self.cancelled() {
            Err(std::io::Error::other("cancelled by the operator"))
        } else {
            inv.spawn(tx).await
        };
        if let Ok(r) = &spawned {
            let cancelled = {
                let mut cur = self.runner.lock();
                cur.pid = r.pid();
                cur.cancelled
            };
            // A cancel that came while claude was starting found no process to end.
            if let (true, Some(pid)) = (cancelled, r.pid()) {
                tokio::spawn(claude::terminate(pid));
            }
        }
        for req in announce {
            c.call(req).await?;
        }
        let mut running = match spawned {
            Ok(r) => r,
            Err(e) => {
                out.spawn_error = Some(e.to_string());
                return Ok(out);
            }
        };
        let mut exited = false;
        loop {
            tokio::select! {
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    let mut batch = vec![first];
                    while batch.len() < EVENT_BATCH {
                        match rx.try_recv() { Ok(o) => batch.push(o), Err(_) => break }
                    }
                    let items = batch.into_iter().map(|o| {
                        out.tally.observe(&o);
                        stream.event(o)
                    }).collect();
                    send_events(c, items).await?;
                }
                code = running.wait(), if !exited => { out.exit = code.ok().flatten(); exited = true; }
            }
        }
        if !exited {
            out.exit = running.wait().await.ok().flatten();
        }
        self.runner.lock().pid = None;
        Ok(out)
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        *self.runner.lock() = Current::default();
    }
}

impl Stream {
    /// A claude output line as the event hive-c0re records.
    fn event(self, o: Output) -> EventIn {
        match (self, o) {
            (Self::Turn, Output::Stream(v)) => Payload::Stream(v),
            (Self::Turn, Output::Stderr(l)) => Payload::Stderr(l),
            (Self::Compact, Output::Stream(v)) => Payload::CompactStream(v),
            (Self::Compact, Output::Stderr(l)) => Payload::CompactStderr(l),
            (Self::Notes, Output::Stream(v)) => Payload::NotesCompactionStream(v),
            (Self::Notes, Output::Stderr(l)) => Payload::NotesCompactionStream(l.into()),
        }
        .into()
    }
}

/// Records events (nothing to do for none).
pub async fn send_events(c: &mut Client, items: Vec<EventIn>) -> Result<(), ClientError> {
    if items.is_empty() {
        return Ok(());
    }
    c.call(&AgentRequest::Events { items }).await.map(|_| ())
}

/// Records one event.
pub async fn send_event(c: &mut Client, event: Payload) -> Result<(), ClientError> {
    send_events(c, vec![event.into()]).await
}
