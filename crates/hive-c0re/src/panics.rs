//! A panic in one of hive-c0re's tasks: never unseen.
//!
//! tokio catches a task's panic and ends the task without a word, and a
//! daemon that runs for weeks unattended would half-work from then on: sends
//! waiting on a store writer that is gone, an agent nobody supervises, a
//! socket nobody accepts on. So:
//!
//! - [`install_hook`] (serve, at start) writes each panic to the log at error
//!   level, with the task it ended and where it happened, and hands it on to
//!   the default hook.
//! - [`caught`] runs a future as a named task: its panic comes back as a
//!   [`Panic`] instead of ending the task.
//! - [`keep_running`] is how an essential loop runs: when it panics it is
//!   told and started again after a pause, which doubles while it keeps
//!   panicking (up to a minute), so a panic loop does not spin.
//! - [`Faults`] holds what the operator is to be told: at most one notice
//!   per task in [`NOTICES_EVERY`], with how many there were since the last
//!   one. `hive/panics.rs` tells them.
//!
//! **Why an essential loop is started again rather than the daemon stopped.**
//! A stopped daemon ends every harness with it (they die with it) and cuts
//! off every agent's turn under way, for one loop's bug. A panic an agent can
//! set off (in its own supervision, the accept loop of its socket, the
//! firing of a schedule it made) would then let one agent take the whole
//! hive down as often as it likes; and a notice spaced in memory would be
//! told again at each restart. Each loop starts from the truth anyway: the
//! store (the scheduler reads what is due, the wake listener re-checks
//! everything after it reconnects, the writers take the next job queued),
//! the runtime (the supervisor kills what its last run left running and
//! takes its lease again), or a listener that stays open. What a panic cut
//! short fails as a dropped connection does: a send's caller is told to send
//! again, a connection's claims go back to the inbox.
//!
//! A per-connection or per-request task (an agent's or the operator's
//! connection, a dashboard request) that panics ends alone: its connection
//! closes, which gives back what it held as a close does, and the daemon
//! serves on. Its notices are spaced like the rest, so an agent that found a
//! way to make its connections panic cannot flood the operator, and the log
//! says it at most once a minute per place in the code.
//!
//! This module knows nothing of the hive or the store: both report here.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use hive_sh4re::AgentName;
use tokio_util::sync::CancellationToken;

use crate::throttle::Spaced;

/// Least time between two notices of one task's panics.
pub const NOTICES_EVERY: Duration = Duration::from_secs(600);

/// First pause before an essential loop that panicked runs again; it doubles
/// with each panic in a row, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = if cfg!(test) {
    Duration::from_millis(20)
} else {
    Duration::from_secs(1)
};
/// The longest pause; a run that lasted longer than it starts the doubling again.
const LONGEST_PAUSE: Duration = if cfg!(test) {
    Duration::from_millis(200)
} else {
    Duration::from_secs(60)
};

/// Least time between two log lines of panics at one place in the code.
const LINES_EVERY: Duration = Duration::from_secs(60);

/// A panic that ended a task's future, caught.
#[derive(Debug)]
pub struct Panic {
    /// What it said; a placeholder when its payload is no text.
    pub message: String,
    /// Where in the code, as the hook saw it.
    pub location: Option<String>,
    payload: Box<dyn Any + Send>,
}

impl Panic {
    /// A panic caught outside [`caught`] (a thread's), its place unknown.
    pub fn from_payload(payload: Box<dyn Any + Send>) -> Self {
        Self {
            message: message_of(&*payload),
            location: None,
            payload,
        }
    }

    /// Lets the panic go on (its task ends as any panicked task does); the
    /// hook is not called again.
    pub fn resume(self) -> ! {
        std::panic::resume_unwind(self.payload)
    }
}

/// The task a future runs as, for the hook to name.
struct Running {
    task: &'static str,
    agent: Option<String>,
    /// Where the panic happened, left by the hook for [`caught`].
    location: Mutex<Option<String>>,
}

tokio::task_local! {
    static RUNNING: Running;
}

/// Runs `fut` as task `task` (of `agent`, when it is one agent's): its
/// output, or its panic, caught, which the log has already told.
pub async fn caught<F: Future>(
    task: &'static str,
    agent: Option<&AgentName>,
    fut: F,
) -> Result<F::Output, Panic> {
    let running = Running {
        task,
        agent: agent.map(|a| a.to_string()),
        location: Mutex::new(None),
    };
    RUNNING
        .scope(running, async {
            // Unwind-safe as the caller uses it: what it shared with the
            // future (a connection's claims) it reads as cut short, not done.
            AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .map_err(|payload| {
                    let location = RUNNING
                        .with(|r| r.location.lock().unwrap_or_else(|p| p.into_inner()).take());
                    Panic {
                        message: message_of(&*payload),
                        location,
                        payload,
                    }
                })
        })
        .await
}

/// Runs the loop `run` makes as task `task` until it returns, making it
/// again whenever it panics: each panic is reported to `faults`, and the
/// next run begins after a pause that doubles while it keeps panicking. A
/// `stop` cancelled during the pause ends it there.
pub async fn keep_running<F, Fut>(
    faults: &Faults,
    task: &'static str,
    agent: Option<&AgentName>,
    stop: Option<&CancellationToken>,
    mut run: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut pause = FIRST_PAUSE;
    loop {
        let began = Instant::now();
        let Err(panic) = caught(task, agent, run()).await else {
            return;
        };
        if began.elapsed() > LONGEST_PAUSE {
            pause = FIRST_PAUSE;
        }
        let then = format!("it is started again after a pause of {}", shown(pause));
        let whose = agent.map(|a| format!(" ({a}'s)")).unwrap_or_default();
        tracing::error!("{task}{whose} panicked: {then}");
        faults.report(task, agent, &panic, &then);
        let paused = tokio::time::sleep(pause);
        match stop {
            Some(stop) => tokio::select! {
                _ = paused => {}
                _ = stop.cancelled() => return,
            },
            None => paused.await,
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// A pause as the log and the notices say it.
fn shown(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// A panic the operator is to be told of.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The task it ended.
    pub task: &'static str,
    /// The agent whose task it was, if one's.
    pub agent: Option<AgentName>,
    /// What it said.
    pub message: String,
    /// Where in the code, when known.
    pub location: Option<String>,
    /// What the daemon does about it ("it is started again after a pause of 1 s").
    pub then: String,
    /// The task's panics since the last notice of it, this one included.
    pub count: u64,
}

/// The panics the operator is to be told of, as the tasks report them:
/// one per store, which its own tasks report to from the start, and which
/// the hive that owns the store adopts for its tasks. Cheap to clone.
#[derive(Clone)]
pub struct Faults(Arc<Queue>);

struct Queue {
    /// At most one notice per task in [`NOTICES_EVERY`]: a task name is
    /// a constant of the code, so these are few.
    notices: Spaced,
    /// The notices due, oldest first: at most one per task.
    due: Mutex<Vec<Fault>>,
    /// Wakes whoever waits in [`Faults::next`].
    wake: tokio::sync::Notify,
}

impl Default for Faults {
    fn default() -> Self {
        Self(Arc::new(Queue {
            notices: Spaced::new(NOTICES_EVERY),
            due: Mutex::default(),
            wake: tokio::sync::Notify::new(),
        }))
    }
}

impl Faults {
    /// Counts a panic of `task`; queues a notice when the task had none
    /// in the last [`NOTICES_EVERY`]. `then` says what the daemon does about it.
    pub fn report(&self, task: &'static str, agent: Option<&AgentName>, panic: &Panic, then: &str) {
        let Some(count) = self.0.notices.due(task) else {
            return;
        };
        self.0
            .due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Fault {
                task,
                agent: agent.cloned(),
                message: panic.message.clone(),
                location: panic.location.clone(),
                then: then.to_owned(),
                count,
            });
        self.0.wake.notify_one();
    }

    /// Waits for notices due, and takes them.
    pub async fn next(&self) -> Vec<Fault> {
        loop {
            let due = std::mem::take(&mut *self.0.due.lock().unwrap_or_else(|p| p.into_inner()));
            if !due.is_empty() {
                return due;
            }
            self.0.wake.notified().await;
        }
    }
}

/// Writes every panic to the log (at error level: the task, the agent, the
/// thread, where, what it said), then hands it to the default hook (its
/// line, a backtrace when `RUST_BACKTRACE` asks); installed once per
/// process, however often called. Panics at one place in the code are
/// written at most once in [`LINES_EVERY`], the next with how many there
/// were: an agent that found one to set off cannot flood the journal.
pub fn install_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if log_panic(info) {
                default(info);
            }
        }));
    });
}

/// Logs a panic; false when one at the same place was logged too lately.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) -> bool {
    static LINES: LazyLock<Spaced> = LazyLock::new(|| Spaced::new(LINES_EVERY));
    let location = info
        .location()
        .map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
    let (task, agent) = RUNNING
        .try_with(|r| {
            *r.location.lock().unwrap_or_else(|p| p.into_inner()) = Some(location.clone());
            (Some(r.task), r.agent.clone())
        })
        .unwrap_or((None, None));
    let Some(count) = LINES.due(&location) else {
        return false;
    };
    let thread = std::thread::current();
    let mut who = vec![format!("thread {}", thread.name().unwrap_or("(unnamed)"))];
    if let Some(id) = tokio::task::try_id() {
        who.push(format!("tokio task {id}"));
    }
    let what = match (task, agent) {
        (Some(t), Some(a)) => format!("{t} ({a}'s)"),
        (Some(t), None) => t.to_owned(),
        (None, _) => "code outside a named task".to_owned(),
    };
    let since = if count > 1 {
        format!(" ({} more here since the last such line)", count - 1)
    } else {
        String::new()
    };
    tracing::error!(
        "{what} panicked at {location} ({}): {}{since}",
        who.join(", "),
        message_of(info.payload())
    );
    true
}

/// A panic's message: its payload when that is text.
fn message_of(payload: &(dyn Any + Send)) -> String {
    match payload.downcast_ref::<&'static str>() {
        Some(s) => (*s).to_owned(),
        None => match payload.downcast_ref::<String>() {
            Some(s) => s.clone(),
            None => "(a panic that says nothing)".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_caught_panic_says_what_and_where_and_can_go_on() {
        install_hook();
        let name = AgentName::parse("alice").unwrap();
        let p = caught("a test task", Some(&name), async { panic!("boom {}", 7) })
            .await
            .unwrap_err();
        assert_eq!(p.message, "boom 7");
        let at = p.location.as_deref().expect("the hook left where");
        assert!(at.contains("panics.rs"), "{at}");
        assert_eq!(caught("a test task", None, async { 5 }).await.unwrap(), 5);
        let resumed = tokio::spawn(async move { p.resume() }).await.unwrap_err();
        assert!(resumed.is_panic());
    }

    #[tokio::test]
    async fn an_essential_loop_runs_again_after_each_panic_with_one_notice() {
        let faults = Faults::default();
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let began = Instant::now();
        keep_running(&faults, "a test loop", None, None, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move { assert!(n >= 3, "panic number {n}") }
        })
        .await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "three panics, then the run that returned"
        );
        assert!(
            began.elapsed() >= FIRST_PAUSE * 7,
            "paused 1 + 2 + 4 times the first pause: {:?}",
            began.elapsed()
        );
        let told = faults.next().await;
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(told[0].task, "a test loop");
        assert!(told[0].message.contains("panic number 0"), "{told:?}");
        assert_eq!(told[0].count, 1);
        assert!(told[0].then.contains("started again"), "{told:?}");
    }

    #[tokio::test]
    async fn a_stop_during_the_pause_ends_the_loop() {
        let faults = Faults::default();
        let stop = CancellationToken::new();
        stop.cancel();
        let runs = AtomicU32::new(0);
        keep_running(&faults, "a test loop", None, Some(&stop), || {
            runs.fetch_add(1, Ordering::SeqCst);
            async { panic!("always") }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn each_task_is_told_once_an_interval_with_the_count_since() {
        let faults = Faults::default();
        let p = Panic::from_payload(Box::new("x"));
        for _ in 0..3 {
            faults.report("one", None, &p, "closed");
        }
        faults.report("two", None, &p, "closed");
        let due = std::mem::take(&mut *faults.0.due.lock().unwrap());
        let tasks: Vec<_> = due.iter().map(|f| (f.task, f.count)).collect();
        assert_eq!(tasks, [("one", 1), ("two", 1)]);
    }
}
