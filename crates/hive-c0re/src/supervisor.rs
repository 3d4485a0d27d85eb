//! Supervision: one task per running agent that launches its harness through
//! the runtime, waits on it, reports and restarts it when it dies, and stops
//! it on request.
//!
//! A harness that exits without being asked is a crash: the hive hears of it
//! ([`Supervised::harness_crashed`]: hive-c0re stores a `container_crash`
//! event and tells the manager), and the harness is restarted with
//! exponential backoff until [`MAX_RESTARTS`] quick failures in a row leave
//! the agent failed.
//!
//! A harness runs only while this daemon holds its agent's lease (see
//! `hive/leases.rs`): taken before each launch, renewed every
//! [`Supervised::lease_timing`] interval from then on, through the launch
//! (which may take longer than the lease lasts). When a renewal says another
//! holder took it, or none succeeded for the lease's time to live less one
//! interval (so the harness is dead before the lease can pass on), the
//! harness is killed at once, without the grace a stop gives: whatever it
//! still did for the agent would be refused by the fence anyway. That is no
//! crash: the agent waits, with a sentence for status, until it gets its
//! lease again. Lost again, by a harness that ran less than
//! [`HEALTHY_AFTER`], it counts as one: told, backed off, and given up on
//! after [`MAX_RESTARTS`].
//!
//! Supervision is essential (see `panics.rs`): a run of it that panics is
//! told and started again after a pause, and first kills the harness the
//! last run left, hands back what it held and lets its lease go.
//!
//! Supervision knows the hive only as [`Supervised`]: what to launch and whom
//! to tell. `Hive` implements it (`hive/supervision.rs`) and owns the
//! [`Supervisor`]; this module imports nothing of the hive's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hive_sh4re::AgentName;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness_log;
use crate::runtime::{LaunchSpec, Runtime, RuntimeKind};

/// Quick failures in a row after which the agent is left failed.
pub const MAX_RESTARTS: u32 = 5;
/// A harness that ran this long before dying resets the failure count.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// [`HEALTHY_AFTER`] unless `HIVE_HEALTHY_AFTER_SECS` says otherwise (for
/// tests: a crash loop of healthy runs in seconds rather than minutes).
pub fn healthy_after() -> Duration {
    crate::clock::secs_from_env("HIVE_HEALTHY_AFTER_SECS", HEALTHY_AFTER)
}
/// First restart delay; doubles with each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What supervision asks of the hive it supervises for: what to launch, and
/// what to make of each harness's life and death.
pub trait Supervised: Send + Sync + 'static {
    /// Cancelled when the daemon shuts down: every supervision ends with it.
    fn shutdown_token(&self) -> &CancellationToken;
    /// Where a panic of supervision is reported (see `panics.rs`).
    fn faults(&self) -> &crate::panics::Faults;
    /// What to launch for the agent; None once it is gone from the hive, an
    /// error (a sentence) when the store could not say.
    fn launch_spec_of(
        &self,
        name: &AgentName,
    ) -> impl Future<Output = Result<Option<LaunchSpec>, String>> + Send;
    /// The runtime that launches harnesses.
    fn runtime(&self) -> &dyn Runtime;
    /// How long a stopped harness gets between SIGTERM and SIGKILL.
    fn kill_grace(&self) -> Duration;
    /// The agent's harness is up.
    fn harness_started(&self, name: &AgentName);
    /// The runtime ended the agent's harness itself because its container lost
    /// something it cannot work without (`why`: its network): the failures
    /// its turns met meanwhile say nothing of the model API. Told before
    /// [`Self::harness_exited`]; a crash follows.
    fn harness_cut_off(&self, name: &AgentName, why: &str);
    /// The agent's harness is gone, asked to or not (`how`: "the harness was
    /// stopped", ...): what it held is handed back, its open turn ended.
    fn harness_exited(&self, name: &AgentName, how: &str) -> impl Future<Output = ()> + Send;
    /// The harness ended unasked (`exit` says how); it restarts in `retry_in`,
    /// or, when None, supervision gave up after `attempt` tries and the agent
    /// stays failed until it is started again.
    fn harness_crashed(
        &self,
        name: &AgentName,
        exit: &str,
        retry_in: Option<Duration>,
        attempt: u32,
    ) -> impl Future<Output = ()> + Send;
    /// How often a lease is renewed (and taking one retried), and how long one lasts.
    fn lease_timing(&self) -> (Duration, Duration);
    /// Takes the agent's lease: its epoch, or a sentence saying why not.
    fn take_lease(&self, name: &AgentName) -> impl Future<Output = Result<i64, String>> + Send;
    /// Renews the lease held at `epoch`: false when it was lost.
    fn renew_lease(
        &self,
        name: &AgentName,
        epoch: i64,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Lets the lease go: the agent was stopped on purpose.
    fn release_lease(&self, name: &AgentName, epoch: i64) -> impl Future<Output = ()> + Send;
    /// The agent waits for its lease (`why`), or no longer does (None).
    fn lease_waiting(&self, name: &AgentName, why: Option<&str>);
}

/// What supervision holds of an agent's lease, for the hive to read.
#[derive(Default)]
struct LeaseView {
    /// The epoch held; 0 while none is.
    epoch: AtomicI64,
    /// Why the agent waits for its lease, while it does.
    waiting: Mutex<Option<String>>,
}

struct Live {
    stop: CancellationToken,
    running: Arc<AtomicBool>,
    lease: Arc<LeaseView>,
    task: Option<JoinHandle<()>>,
}

/// The running agents' supervision tasks.
#[derive(Default)]
pub struct Supervisor {
    live: Mutex<HashMap<String, Live>>,
}

impl Supervisor {
    /// True while the agent's harness process is alive.
    pub fn is_running(&self, name: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .is_some_and(|l| l.running.load(Ordering::SeqCst))
    }

    /// The epoch of the agent's lease while this daemon holds it.
    pub fn lease_epoch(&self, name: &str) -> Option<i64> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|l| l.lease.epoch.load(Ordering::SeqCst))
            .filter(|&e| e > 0)
    }

    /// Records a lease held at `epoch` for an agent nobody supervises: unit
    /// tests take turns without a harness.
    #[cfg(test)]
    pub fn hold_lease_for_tests(&self, name: &str, epoch: i64) {
        let lease = Arc::new(LeaseView::default());
        lease.epoch.store(epoch, Ordering::SeqCst);
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            name.to_owned(),
            Live {
                stop: CancellationToken::new(),
                running: Arc::new(AtomicBool::new(false)),
                lease,
                task: None,
            },
        );
    }

    /// Why the supervised agent waits for its lease instead of running, while it does.
    pub fn waiting_for_lease(&self, name: &str) -> Option<String> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .and_then(|l| {
                l.lease
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            })
    }

    /// True while the agent is supervised: running, launching or waiting to restart.
    pub fn is_supervised(&self, name: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    /// Starts supervising the agent for `hive` unless it already is.
    pub fn start<H: Supervised>(&self, hive: &Arc<H>, name: &AgentName) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live
            .get(name.as_str())
            .is_some_and(|l| l.task.as_ref().is_some_and(|t| !t.is_finished()))
        {
            return;
        }
        let stop = hive.shutdown_token().child_token();
        let running = Arc::new(AtomicBool::new(false));
        let lease = Arc::new(LeaseView::default());
        let task = tokio::spawn({
            let (hive, name, stop) = (hive.clone(), name.clone(), stop.clone());
            let (running, lease) = (running.clone(), lease.clone());
            async move {
                let faults = hive.faults().clone();
                crate::panics::keep_running(
                    &faults,
                    "supervision",
                    Some(&name),
                    Some(&stop),
                    || {
                        supervise(
                            hive.clone(),
                            name.clone(),
                            stop.clone(),
                            running.clone(),
                            lease.clone(),
                        )
                    },
                )
                .await;
                // Stopped while it paused after a panic: nothing of that run stays.
                after_panic(&*hive, &name, &running, &lease).await;
            }
        });
        live.insert(
            name.to_string(),
            Live {
                stop,
                running,
                lease,
                task: Some(task),
            },
        );
    }

    /// Stops the agent's harness (SIGTERM, SIGKILL after the grace) and waits for it.
    pub async fn stop(&self, name: &AgentName) {
        let entry = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name.as_str());
        if let Some(mut l) = entry {
            l.stop.cancel();
            if let Some(t) = l.task.take() {
                let _ = t.await;
            }
        }
    }

    /// Stops every agent, for shutdown.
    pub async fn stop_all(&self) {
        let names: Vec<String> = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let stops = names
            .iter()
            .filter_map(|n| AgentName::parse(n).ok())
            .map(|n| async move { self.stop(&n).await });
        futures::future::join_all(stops).await;
    }
}

/// A lease renewal in flight: when it began, and its answer.
type Renewal = std::pin::Pin<Box<dyn Future<Output = (Instant, Result<bool, String>)> + Send>>;

/// How a harness's run ended.
enum Ended {
    /// Stopped on request.
    Stopped,
    /// It exited by itself (how), or could not be launched.
    Crashed(String),
    /// The runtime ended it because its container lost what it needs (why).
    CutOff(String),
    /// Killed because this daemon lost the agent's lease (why).
    LeaseLost(String),
}

/// The lease a harness is launched and runs under, kept renewed every
/// interval from the moment it is taken.
struct Held<H> {
    hive: Arc<H>,
    name: AgentName,
    epoch: i64,
    every: Duration,
    ttl: Duration,
    renew_at: tokio::time::Interval,
    renewal: Option<Renewal>,
    /// When the harness must be dead if no renewal succeeds before: one
    /// interval before the lease would run out, so it is dead before the
    /// lease can pass on.
    ends: tokio::time::Instant,
}

impl<H: Supervised> Held<H> {
    /// The lease held at `epoch`, whose taking began at `taken_at` (it runs from no earlier).
    fn new(
        hive: &Arc<H>,
        name: &AgentName,
        epoch: i64,
        taken_at: Instant,
        (every, ttl): (Duration, Duration),
    ) -> Self {
        Self {
            hive: hive.clone(),
            name: name.clone(),
            epoch,
            every,
            ttl,
            renew_at: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
            renewal: None,
            ends: tokio::time::Instant::from_std(taken_at + ttl.saturating_sub(every)),
        }
    }

    /// Renews the lease every interval; resolves only once it is lost,
    /// saying why. A renewal in flight when this is dropped (another branch
    /// of a `select!` won) is awaited by the next call.
    async fn lost(&mut self) -> String {
        let Self {
            hive,
            name,
            epoch,
            every,
            ttl,
            renew_at,
            renewal,
            ends,
        } = self;
        loop {
            tokio::select! {
                _ = renew_at.tick(), if renewal.is_none() => {
                    let (hive, name, epoch) = (hive.clone(), name.clone(), *epoch);
                    *renewal = Some(Box::pin(async move {
                        let at = Instant::now();
                        (at, hive.renew_lease(&name, epoch).await)
                    }));
                }
                (at, renewed) = async { renewal.as_mut().expect("guarded").await }, if renewal.is_some() => {
                    *renewal = None;
                    match renewed {
                        Ok(true) => *ends = tokio::time::Instant::from_std(at + ttl.saturating_sub(*every)),
                        Ok(false) => return "another hive-c0re took its lease over, or it ran out".to_owned(),
                        Err(e) => tracing::warn!(agent = %name, "could not renew the lease: {e}"),
                    }
                }
                _ = tokio::time::sleep_until(*ends) => {
                    return format!("its lease could not be renewed for {:.0} s", ttl.saturating_sub(*every).as_secs_f64());
                }
            }
        }
    }

    /// Runs `work` to its end with the lease kept renewed meanwhile; and
    /// why the lease was lost meanwhile, if it was.
    async fn during<T>(&mut self, work: impl Future<Output = T>) -> (T, Option<String>) {
        let mut work = std::pin::pin!(work);
        let mut lost = None;
        loop {
            tokio::select! {
                out = &mut work => return (out, lost),
                why = self.lost(), if lost.is_none() => lost = Some(why),
            }
        }
    }
}

async fn supervise<H: Supervised>(
    hive: Arc<H>,
    name: AgentName,
    stop: CancellationToken,
    running: Arc<AtomicBool>,
    lease: Arc<LeaseView>,
) {
    after_panic(&*hive, &name, &running, &lease).await;
    #[cfg(test)]
    tests::trip(&name);
    let (every, ttl) = hive.lease_timing();
    let healthy_after = healthy_after();
    let (mut failures, mut lost_lately) = (0u32, false);
    loop {
        if spec_of(&*hive, &name, &stop, every).await.is_none() {
            return let_go(&*hive, &name, &lease).await;
        }
        let Some((epoch, taken_at)) = take_lease(&*hive, &name, &stop, &lease, (every, ttl)).await
        else {
            return let_go(&*hive, &name, &lease).await;
        };
        // Renewed from the moment it is taken: a launch (orphans reaped, the
        // agent's files handed to its uids, a container built) can take
        // longer than the lease lasts.
        let mut held = Held::new(&hive, &name, epoch, taken_at, (every, ttl));
        let started = Instant::now();
        let launching = async {
            let mut spec = spec_of(&*hive, &name, &stop, every).await?;
            spec.stop = stop.clone();
            if let Err(e) = hive.runtime().reap_orphans(&name).await {
                tracing::warn!(agent = %name, "could not clean up after a previous daemon: {e}");
            }
            Some((hive.runtime().launch(&spec).await, spec))
        };
        let (launched, lost) = held.during(launching).await;
        let Some((launched, spec)) = launched else {
            return let_go(&*hive, &name, &lease).await;
        };
        let outcome = match (launched, lost) {
            // Lost while it launched: it never ran for the agent.
            (Ok(mut launched), Some(why)) => {
                kill_now(&mut launched.child).await;
                Ended::LeaseLost(why)
            }
            (Ok(mut launched), None) => {
                running.store(true, Ordering::SeqCst);
                hive.harness_started(&name);
                tracing::info!(agent = %name, runtime = hive.runtime().kind().as_str(), epoch, "harness started");
                let mut check_log = tokio::time::interval(harness_log::CHECK_EVERY);
                loop {
                    tokio::select! {
                        status = launched.child.wait() => break match launched.ended_by.get() {
                            Some(why) => Ended::CutOff(why.clone()),
                            None => Ended::Crashed(status.map(|s| describe_exit(s, hive.runtime().kind())).unwrap_or_else(|e| format!("could not be waited on ({e})"))),
                        },
                        _ = stop.cancelled() => {
                            terminate(&mut launched.child, hive.kill_grace()).await;
                            break Ended::Stopped;
                        }
                        _ = check_log.tick() => rotate_log(&name, &spec.log).await,
                        why = held.lost() => {
                            kill_now(&mut launched.child).await;
                            break Ended::LeaseLost(why);
                        }
                    }
                }
            }
            // Stopped while it was launched: the launch gave up, nothing crashed.
            (Err(_), _) if stop.is_cancelled() => Ended::Stopped,
            (Err(e), _) => Ended::Crashed(format!("could not be launched: {e}")),
        };
        running.store(false, Ordering::SeqCst);
        // Still under the lease's epoch: what it claimed goes back, fenced.
        let how = match &outcome {
            Ended::Stopped => "the harness was stopped".to_owned(),
            Ended::LeaseLost(why) => format!("the harness was stopped ({why})"),
            Ended::Crashed(exit) => format!("the harness {exit}"),
            Ended::CutOff(why) => format!("the harness was ended because {why}"),
        };
        if let Ended::CutOff(why) = &outcome {
            hive.harness_cut_off(&name, why);
        }
        hive.harness_exited(&name, &how).await;
        if started.elapsed() > healthy_after {
            (failures, lost_lately) = (0, false);
        }
        let exit = match outcome {
            Ended::Stopped => return let_go(&*hive, &name, &lease).await,
            // Lost once, the lease passed on (another daemon took over, the
            // database was out of reach) and the agent waits quietly to take
            // it back. Lost again soon after, something keeps taking it from
            // harnesses that just started: that is told and backed off as a
            // crash is, and given up on, rather than looped on unseen.
            Ended::LeaseLost(why) if lost_lately => {
                lease.epoch.store(0, Ordering::SeqCst);
                format!(
                    "was killed: it lost its lease again, {:.1}s after its launch began ({why})",
                    started.elapsed().as_secs_f64()
                )
            }
            Ended::LeaseLost(why) => {
                lease.epoch.store(0, Ordering::SeqCst);
                lost_lately = true;
                tracing::warn!(agent = %name, "harness killed: {why}; it runs again once this node takes its lease back");
                let said =
                    format!("{why}: the harness was stopped until this node takes its lease back");
                hive.lease_waiting(&name, Some(&said));
                *lease.waiting.lock().unwrap_or_else(|p| p.into_inner()) = Some(said);
                continue;
            }
            Ended::Crashed(exit) => exit,
            Ended::CutOff(why) => format!("was ended because {why}"),
        };
        if stop.is_cancelled() {
            return let_go(&*hive, &name, &lease).await;
        }
        failures += 1;
        let gave_up = failures > MAX_RESTARTS;
        let backoff = FIRST_BACKOFF * 2u32.pow(failures.saturating_sub(1).min(10));
        hive.harness_crashed(&name, &exit, (!gave_up).then_some(backoff), failures)
            .await;
        if gave_up {
            return let_go(&*hive, &name, &lease).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return let_go(&*hive, &name, &lease).await,
        }
    }
}

/// What to launch for the agent, read again every `every` while the store
/// cannot say (a database out of reach is no reason to stop supervising); None
/// once the agent is gone or supervision is stopped first.
async fn spec_of<H: Supervised>(
    hive: &H,
    name: &AgentName,
    stop: &CancellationToken,
    every: Duration,
) -> Option<LaunchSpec> {
    let mut failed = false;
    loop {
        match hive.launch_spec_of(name).await {
            Ok(spec) => {
                if failed {
                    tracing::info!(agent = %name, "read the agent again: supervision goes on");
                }
                return spec;
            }
            Err(e) if !failed => {
                tracing::warn!(agent = %name, "could not read the agent to start its harness; trying again every {:.1}s: {e}", every.as_secs_f64());
                failed = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// Takes the agent's lease, trying every `every` while another daemon holds
/// it (status says so meanwhile): its epoch and when the taking began (the
/// lease runs from no earlier). None when supervision is stopped first.
async fn take_lease<H: Supervised>(
    hive: &H,
    name: &AgentName,
    stop: &CancellationToken,
    lease: &LeaseView,
    (every, ttl): (Duration, Duration),
) -> Option<(i64, Instant)> {
    loop {
        let at = Instant::now();
        // A call stuck on a link that went dead is given up and tried anew.
        let taken = tokio::select! {
            t = tokio::time::timeout(ttl, hive.take_lease(name)) => t.unwrap_or_else(|_| Err("could not take its lease: the database did not answer; trying again".to_owned())),
            _ = stop.cancelled() => return None,
        };
        match taken {
            Ok(epoch) => {
                lease.epoch.store(epoch, Ordering::SeqCst);
                if lease
                    .waiting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .is_some()
                {
                    tracing::info!(agent = %name, epoch, "took its lease");
                    hive.lease_waiting(name, None);
                }
                return Some((epoch, at));
            }
            Err(why) => {
                let mut waiting = lease.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if waiting.as_deref() != Some(why.as_str()) {
                    hive.lease_waiting(name, Some(&why));
                    *waiting = Some(why);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// What a run of supervision that panicked left behind, put right: a
/// harness it launched is killed, and one that ran hands back what it held
/// as after a crash; a lease it held goes. Nothing to do after a run that
/// ended by itself, which leaves no harness running and no lease held.
async fn after_panic<H: Supervised>(
    hive: &H,
    name: &AgentName,
    running: &AtomicBool,
    lease: &LeaseView,
) {
    let ran = running.swap(false, Ordering::SeqCst);
    if !ran && lease.epoch.load(Ordering::SeqCst) == 0 {
        return;
    }
    if let Err(e) = hive.runtime().reap_orphans(name).await {
        tracing::warn!(agent = %name, "could not stop the harness its supervision left: {e}");
    }
    if ran {
        hive.harness_exited(name, "the harness was stopped (its supervision panicked)")
            .await;
    }
    let_go(hive, name, lease).await;
}

/// Supervision ends: the lease, if held, goes at once.
async fn let_go<H: Supervised>(hive: &H, name: &AgentName, lease: &LeaseView) {
    let epoch = lease.epoch.swap(0, Ordering::SeqCst);
    if epoch > 0 {
        hive.release_lease(name, epoch).await;
    }
}

fn describe_exit(s: std::process::ExitStatus, runtime: RuntimeKind) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        // nspawn's stub init (`--as-pid2`) exits 255 when its payload dies of a signal.
        (Some(255), _) if runtime == RuntimeKind::Nspawn => {
            "exited with status 255 (in its container: killed by a signal, or the container failed)"
                .to_owned()
        }
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig)
                .map(|s| s.as_str())
                .unwrap_or("unknown");
            format!("was killed by signal {sig} ({name})")
        }
        _ => "exited".to_owned(),
    }
}

/// Keeps the agent's harness log within its bound (see [`harness_log`]).
async fn rotate_log(name: &AgentName, log: &std::path::Path) {
    let what = format!("rotating {name}'s harness log");
    let path = log.to_owned();
    match crate::blocking::run(&what, move || {
        harness_log::rotate_if_larger(&path, harness_log::MAX_BYTES).map_err(
            crate::error::Error::io(format!("rotating {}", path.display())),
        )
    })
    .await
    {
        Ok(true) => tracing::info!(agent = %name, "harness.log passed its size and was rotated"),
        Ok(false) => {}
        Err(e) => tracing::warn!(agent = %name, "could not rotate the harness log: {e}"),
    }
}

/// The last `n` lines the harness wrote: from `harness.log`, and from the
/// previous log (`harness.log.1`) when a rotation left the current one short.
pub fn harness_tail(log: &std::path::Path, n: usize) -> String {
    let tail = log_tail(log, n);
    let have = tail.lines().count();
    if have >= n {
        return tail;
    }
    let before = log_tail(&harness_log::previous(log), n - have);
    match (before.is_empty(), tail.is_empty()) {
        (true, _) => tail,
        (false, true) => before,
        (false, false) => format!("{before}\n{tail}"),
    }
}

/// The last `n` lines of a log file (empty if unreadable): at most its last
/// 64 KiB are read, and only from a regular file (the harness writes it, and a
/// link or a FIFO there must not make hive-c0re read elsewhere or wait).
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return String::new();
    };
    let Ok(meta) = f.metadata() else {
        return String::new();
    };
    if !meta.is_file() {
        return String::new();
    }
    let _ = f.seek(SeekFrom::Start(meta.len().saturating_sub(64 * 1024)));
    let mut text = Vec::new();
    let _ = f.take(64 * 1024).read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGKILL to the harness (its process group when it leads one), at once.
async fn kill_now(child: &mut tokio::process::Child) {
    let Some(pid) = child.id() else { return };
    let pid = Pid::from_raw(pid as i32);
    if nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g == pid) {
        let _ = killpg(pid, Signal::SIGKILL);
    } else {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = child.wait().await;
}

/// SIGTERM to the harness (its process group when it leads one), SIGKILL after `grace`.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    let Some(pid) = child.id() else { return };
    let pid = Pid::from_raw(pid as i32);
    let leads_group = nix::unistd::getpgid(Some(pid)).is_ok_and(|g| g == pid);
    let signal = |s: Signal| {
        let _ = if leads_group {
            killpg(pid, s)
        } else {
            kill(pid, s)
        };
    };
    signal(Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal(Signal::SIGKILL);
        let _ = child.wait().await;
    } else if leads_group {
        // The leader is gone; make sure no straggler of its group survives it.
        let _ = killpg(pid, Signal::SIGKILL);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Agents whose next run of supervision panics as it begins: how the
    /// tests make supervision panic (nothing an agent does can ask for it).
    static TRIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Makes the next run of `name`'s supervision panic.
    pub(crate) fn panic_next_run_of(name: &AgentName) {
        TRIPPED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_string());
    }

    pub(super) fn trip(name: &AgentName) {
        let mut tripped = TRIPPED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = tripped.iter().position(|n| n == name.as_str()) {
            tripped.remove(i);
            drop(tripped);
            panic!("a test made {name}'s supervision panic");
        }
    }

    #[test]
    fn nspawns_255_says_what_it_means() {
        use std::os::unix::process::ExitStatusExt;
        let st = std::process::ExitStatus::from_raw(255 << 8);
        assert_eq!(
            describe_exit(st, RuntimeKind::Process),
            "exited with status 255"
        );
        assert!(describe_exit(st, RuntimeKind::Nspawn).contains("killed by a signal"));
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(
            describe_exit(killed, RuntimeKind::Nspawn),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn a_short_log_is_topped_up_from_the_rotated_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("harness.log");
        std::fs::write(harness_log::previous(&log), "one\ntwo\nthree\n").unwrap();
        std::fs::write(&log, "four\n").unwrap();
        assert_eq!(harness_tail(&log, 3), "two\nthree\nfour");
        assert_eq!(harness_tail(&log, 1), "four");
        // Just rotated: the current log is empty, the tail is the previous one's.
        std::fs::write(&log, "").unwrap();
        assert_eq!(harness_tail(&log, 2), "two\nthree");
        // A link where the previous log should be is not followed.
        std::fs::remove_file(harness_log::previous(&log)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", harness_log::previous(&log)).unwrap();
        assert_eq!(harness_tail(&log, 2), "");
    }
}
