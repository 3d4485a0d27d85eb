//! `hive-c0re serve`: bring the hive up, serve until SIGTERM/SIGINT, bring it down.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hive_sh4re::AgentName;
use nix::fcntl::{Flock, FlockArg};
use tokio_util::sync::CancellationToken;

use crate::agent_sock::AgentSockets;
use crate::hive::nodes::NodeNameTaken;
use crate::hive::{DEFAULT_TURN_TIMEOUT, Hive, Settings};
use crate::paths::Paths;
use crate::runtime::{NspawnRuntime, ProcessRuntime, Runtime, RuntimeKind, UidRanges};
use crate::sd_notify::Notifier;
use crate::store::{Db, Limits, Store};

/// Options of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub paths: Paths,
    /// None: nspawn when this host can run it, else process.
    pub runtime: Option<RuntimeKind>,
    /// Address of the dashboard, None to serve none.
    pub dashboard: Option<String>,
    /// Do not create the manager agent.
    pub no_manager: bool,
    /// This daemon's node name; None: the host's name.
    pub node: Option<hive_sh4re::NodeName>,
    /// The PostgreSQL database the hive's nodes share; None: the sqlite file in the state dir.
    pub database: Option<crate::store::pg::PgSettings>,
    /// Store bounds.
    pub limits: Limits,
    /// How often old history is vacuumed.
    pub vacuum_every: Duration,
    /// First host uid of the agents' ranges (see `runtime::uid_ranges`).
    pub uid_base: u32,
    /// Longest a turn may run unless the agent's config says otherwise.
    pub turn_timeout: Duration,
    /// The hive-wide daily budget.
    pub budget: Option<hive_sh4re::config::Budget>,
    /// Tells systemd when the hive serves, and pings its watchdog.
    pub notify: Notifier,
    /// Free space the state's file system keeps (see `space.rs`); None: 5 %, at most 256 MiB.
    pub min_free_space: Option<u64>,
    /// Most an agent's files may take on its node (see `hive::quota`); None: a quarter of the state's file system.
    pub state_quota: Option<crate::hive::quota::StateQuota>,
    /// What bounds each agent's container (nspawn): its memory, the networks it may reach.
    pub bounds: crate::runtime::ContainerBounds,
    /// The operator's webhooks and the dashboard's public URL.
    pub webhooks: crate::webhooks::Webhooks,
    /// Most claude processes at once, and which setting said so; None: from available memory.
    pub max_concurrent_turns: Option<(usize, String)>,
}

/// Environment variables passed from the daemon to every harness.
const PASSED_ENV: [&str; 6] = [
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "CLAUDE_CODE_OAUTH_TOKEN",
    // How often claude retries a failed model call before it gives up.
    "CLAUDE_CODE_MAX_RETRIES",
    "RUST_LOG",
    // The polling baseline of the turn-latency benchmark.
    "HIVE_HARNESS_POLL_MS",
];

/// What the daemon's files get at most: private. What a container or the
/// operator's group must reach gets its mode explicitly.
const UMASK: u32 = 0o077;

/// Runs the daemon until a signal stops it.
pub async fn serve(opts: ServeOptions) -> Result<()> {
    // Before any task runs: none of their panics may pass unseen.
    crate::panics::install_hook();
    // Before the first file: the database's journal files hold message bodies.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(UMASK));
    let paths = opts.paths.clone();
    raise_fd_limit();
    // Before host.sock answers: a stop right after start must still shut down cleanly.
    let stopping = CancellationToken::new();
    tokio::spawn({
        let (signal, stopping) = (stop_signal(), stopping.clone());
        async move {
            signal.await;
            stopping.cancel();
        }
    });
    std::fs::create_dir_all(&paths.run)
        .with_context(|| format!("could not create the run dir {}", paths.run.display()))?;
    std::fs::create_dir_all(paths.agents_root())
        .with_context(|| format!("could not create the state dir {}", paths.state.display()))?;
    let _ = std::fs::set_permissions(&paths.state, std::fs::Permissions::from_mode(0o711));
    let _lock = lock_run_dir(&paths)?;
    std::fs::create_dir_all(paths.configs_root()).with_context(|| {
        format!(
            "could not create the config repos' directory {}",
            paths.configs_root().display()
        )
    })?;
    let _ = std::fs::set_permissions(paths.configs_root(), std::fs::Permissions::from_mode(0o700));
    let moved = crate::config_repo::migrate(&paths)?;
    if moved > 0 {
        tracing::info!(
            moved,
            "moved config repos to {}",
            paths.configs_root().display()
        );
    }

    // Before the database opens: on a full disk this frees the reserve that
    // sqlite's write-ahead log then grows into, so the hive starts degraded.
    let space_check =
        crate::space::Space::new(&paths.state, paths.space_reserve(), opts.min_free_space).check();
    let store = open_store(&opts).await?;
    let node = match &opts.node {
        Some(n) => n.clone(),
        None => crate::hive::nodes::this_host()?,
    };
    // None of this daemon's harnesses is connected yet: on sqlite whatever
    // the previous daemon handed out comes back. On PostgreSQL each agent's
    // claims come back when this node takes its lease (`hive/leases.rs`):
    // another daemon of the same name may still hold it, mid-turn.
    // On a disk with no room at all that waits for space (see `Hive::space_changed`).
    let released = until_reachable(
        "returning messages of interrupted turns",
        &stopping,
        || async {
            match store.release_claims_at_start().await {
                Err(e) if e.is_disk_full() => Ok(None),
                other => Ok(Some(other?)),
            }
        },
    );
    let Some(released) = released.await? else {
        return stop_early(None, &paths).await;
    };
    let release_deferred = released.is_none();
    match released {
        None => tracing::warn!(
            "the disk is full: messages of interrupted turns go back to their inboxes once space is freed"
        ),
        Some(0) => {}
        Some(released) => tracing::info!(
            released,
            "returned messages of interrupted turns to their inboxes"
        ),
    }

    let runtime = pick_runtime(opts.runtime, &paths, opts.uid_base, &opts.bounds)?;
    // Every range of an agent this node runs is this hive's before anything of
    // it is touched; one another hive has meanwhile taken stays with it (its
    // agent will not start). Other nodes' agents hold their ranges on their hosts.
    let Some(agents) = until_reachable("reading the agents", &stopping, || async {
        Ok(store.agents().await?)
    })
    .await?
    else {
        return stop_early(None, &paths).await;
    };
    for row in agents {
        if crate::hive::nodes::runs_here(&store, &row, &node)
            && runtime.agent_uid(row.uid_base).is_some()
            && let Err(e) = runtime.uid_ranges().hold(row.uid_base)
        {
            tracing::error!(agent = %row.name, "{e}");
        }
    }
    let mut settings = settings(opts.min_free_space, node)?;
    settings.lease_holder = crate::hive::leases::holder(&paths, &settings.node, store.shared())?;
    settings.turn_timeout = opts.turn_timeout;
    settings.webhooks = opts.webhooks.clone();
    settings.max_concurrent_turns = turn_limit(opts.max_concurrent_turns.clone());
    settings.budget = opts.budget;
    settings.state_quota = crate::hive::quota::state_quota(opts.state_quota, &paths.state);
    // Bound before the hive exists, so the URLs it reports carry the real port.
    let dashboard = match &opts.dashboard {
        Some(addr) => {
            Some(crate::dashboard::bind(addr, &paths, opts.webhooks.public_url.as_deref()).await?)
        }
        None => None,
    };
    settings.dashboard_home = dashboard.as_ref().map(|d| d.home());
    settings.dashboard_login = dashboard.as_ref().map(|d| d.logins());
    let (sockets, incoming) = AgentSockets::new(paths.clone());
    let hive = Hive::new(store, paths.clone(), runtime, sockets, settings);
    if release_deferred {
        hive.space().defer_release();
    }
    if let Some(t) = hive.space().check().or(space_check) {
        hive.space_changed(&t).await;
    }
    // Every long-lived loop is essential: one that panics runs again (see `panics.rs`).
    hive.spawn_essential("fault notices", crate::hive::panics::tell);
    hive.spawn_essential("free-space watch", Hive::watch_space);
    hive.spawn_essential("state size watch", Hive::watch_state_sizes);
    hive.spawn_essential("memory watch", Hive::watch_memory);
    hive.spawn_task(
        "agent.sock dispatch",
        crate::agent_conn::serve(hive.clone(), incoming),
    );

    // Before any agent is created or started (it claims agents stored before
    // nodes existed), and before host.sock answers: a node that serves is listed.
    // On a full disk the hive still starts; the heartbeat task registers once there is room.
    let registered = until_reachable("registering this node", &stopping, || async {
        match hive.register_node().await {
            Err(e) if e.is_disk_full() => {
                tracing::warn!("the disk is full: this node registers once space is freed");
                Ok(None)
            }
            other => other,
        }
    });
    match registered.await? {
        None => return stop_early(Some(&hive), &paths).await,
        Some(Some(taken)) => {
            hive.shut_down().await;
            return Err(NodeNameTaken(taken).into());
        }
        Some(None) => {}
    }
    hive.spawn_essential("cut-off approvals sweep", Hive::sweep_cut_off_approvals);

    let listener = crate::host_sock::bind(&paths.host_sock())?;
    let host = hive.spawn_task(
        "host.sock accept loop",
        crate::host_sock::serve(hive.clone(), listener),
    );
    if let Some(d) = dashboard {
        crate::dashboard::serve(&hive, d);
    }

    hive.spawn_essential("heartbeat", crate::hive::nodes::heartbeat);
    hive.spawn_essential("database alarm", crate::hive::nodes::raise_database_alarm);
    hive.spawn_essential(
        "database-full watch",
        crate::hive::nodes::watch_database_full,
    );
    hive.spawn_essential("wake follower", crate::hive::wakes::follow);
    let agents_started = until_reachable("starting this node's agents", &stopping, || {
        hive.run_wanted()
    });
    if agents_started.await?.is_none() {
        return stop_early(Some(&hive), &paths).await;
    }
    if !opts.no_manager {
        let made = until_reachable("making the manager", &stopping, || make_manager(&hive));
        if made
            .await
            .context("could not create the manager agent")?
            .is_none()
        {
            return stop_early(Some(&hive), &paths).await;
        }
    }
    let every = opts.vacuum_every;
    hive.spawn_essential("vacuum", move |hive| vacuum(hive, every));
    hive.spawn_essential("scheduler", crate::hive::schedules::run);
    hive.spawn_task(
        "webhook deliveries",
        crate::hive::notifications::deliver_webhooks(hive.clone()),
    );
    hive.spawn_essential(
        "held-back notices",
        crate::hive::notifications::tell_held_back,
    );
    hive.spawn_essential("config heads poll", crate::hive::status::watch_config_heads);

    println!(
        "hive-c0re is serving: node {} · socket {} · state {} · runtime {}{}",
        hive.settings().node,
        paths.host_sock().display(),
        paths.state.display(),
        hive.runtime_kind().as_str(),
        hive.settings()
            .dashboard_home
            .as_deref()
            .map(|h| format!(" · dashboard {h} (log in with the link `hive-c0re urls` prints)"))
            .unwrap_or_default()
    );
    opts.notify.notify("READY=1\nSTATUS=serving");
    let notify = opts.notify.clone();
    hive.spawn_essential("systemd watchdog", move |hive| {
        notify.ping_watchdog(hive.shutdown_token().clone())
    });
    // A heartbeat that finds another daemon serving this node ends it too.
    tokio::select! {
        _ = stopping.cancelled() => {}
        _ = hive.shutdown_token().cancelled() => {}
    }
    tracing::info!("shutting down");
    opts.notify.notify("STOPPING=1\nSTATUS=stopping the agents");
    hive.shut_down().await;
    let _ = host.await;
    if !hive.wait_for_tasks(TASKS_WAIT).await {
        tracing::warn!(
            "some tasks were still running {} s after the shutdown began; exiting anyway",
            TASKS_WAIT.as_secs()
        );
    }
    let _ = std::fs::remove_file(paths.host_sock());
    match hive.displaced() {
        Some(why) => Err(NodeNameTaken(format!("this daemon stepped down: {why}")).into()),
        None => Ok(()),
    }
}

/// Makes the hive's manager unless it has one.
async fn make_manager(hive: &Arc<Hive>) -> crate::error::Result<()> {
    let manager = AgentName::manager();
    if hive.has_agent(&manager).await? {
        return Ok(());
    }
    // Nodes starting together on an empty database race to make the
    // hive's one manager: the store lets one in, and the others go on.
    if let Err(e) = hive.spawn(&manager, None, None).await {
        if e.is_unreachable() || !hive.has_agent(&manager).await? {
            return Err(e);
        }
        tracing::info!("another node created the manager meanwhile");
    }
    Ok(())
}

/// First and longest waits of [`until_reachable`].
const START_RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

/// Runs a step of serve's start (`what`) again, with a warning each time,
/// while it fails for the database out of reach, as the supervisor does once
/// serve runs: a database that goes away for a moment during a start delays
/// it and ends nothing. None when a stop signal came meanwhile.
async fn until_reachable<T, F, Fut>(
    what: &str,
    stopping: &CancellationToken,
    mut step: F,
) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<T>>,
{
    let mut wait = START_RETRY.0;
    loop {
        match step().await {
            Err(e) if e.is_unreachable() => {
                tracing::warn!(
                    "the database is out of reach while {what}; trying again in {} ms (stop serve to give up): {e}",
                    wait.as_millis()
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopping.cancelled() => return Ok(None),
                }
                wait = (wait * 2).min(START_RETRY.1);
            }
            other => return Ok(Some(other?)),
        }
    }
}

/// Ends a serve that was told to stop during its start (`hive` once it exists).
async fn stop_early(hive: Option<&Arc<Hive>>, paths: &Paths) -> Result<()> {
    tracing::info!("shutting down before the start was done");
    if let Some(hive) = hive {
        hive.shut_down().await;
        let _ = std::fs::remove_file(paths.host_sock());
    }
    Ok(())
}

/// Opens the hive's store: the PostgreSQL database `--database` names, else
/// the sqlite file in the state dir. A failure is a sentence naming the
/// database (never its password) and what to check.
async fn open_store(opts: &ServeOptions) -> Result<Db> {
    if let Some(pg) = &opts.database {
        let shown = crate::store::pg::settings::redact(&pg.url);
        tracing::info!(database = %shown, "connecting to PostgreSQL");
        return Ok(Db::connect_postgres(pg, opts.limits.clone()).await?);
    }
    let paths = &opts.paths;
    let store = Store::open(&paths.db(), opts.limits.clone()).map_err(|e| {
        if e.is_disk_full() {
            anyhow::anyhow!(
                "the database {} needs an upgrade and {} has no room for it: free some space there and start again",
                paths.db().display(),
                crate::space::filesystem_of(&paths.state)
            )
        } else {
            e.into()
        }
    })?;
    let _ = std::fs::set_permissions(paths.db(), std::fs::Permissions::from_mode(0o600));
    Ok(Db::Sqlite(store))
}

/// How long shutdown waits for the daemon's tasks (connections, the dashboard,
/// schedules) to notice it, after the agents have stopped.
const TASKS_WAIT: Duration = Duration::from_secs(10);

/// Open files this daemon asks for: host.sock's connections, agent sockets,
/// children's pipes. Not the hard limit itself, which can be a million:
/// children inherit the soft limit, and some walk every possible descriptor.
const WANTED_FILES: u64 = 65_536;

/// Raises the soft open-file limit toward [`WANTED_FILES`] (as far as the hard
/// limit allows): the common default of 1024 is less than an operator's
/// clients may hold open on host.sock.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let want = hard.min(WANTED_FILES);
    if want <= soft {
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
        Ok(()) => tracing::debug!("raised the open-file limit from {soft} to {want}"),
        Err(e) => tracing::warn!("could not raise the open-file limit from {soft} to {want}: {e}"),
    }
}

/// Holds the run dir's lock for the daemon's lifetime, so a second `serve` refuses.
fn lock_run_dir(paths: &Paths) -> Result<Flock<std::fs::File>> {
    let path = paths.daemon_lock();
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("could not open {}", path.display()))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!(
            "another hive-c0re is already serving {} (it holds {}): stop it first, or use another --run-dir",
            paths.run.display(),
            path.display()
        )
    })
}

/// The runtime asked for; without a choice, nspawn where this host can run it, else process.
fn pick_runtime(
    kind: Option<RuntimeKind>,
    paths: &Paths,
    uid_base: u32,
    bounds: &crate::runtime::ContainerBounds,
) -> Result<Arc<dyn Runtime>> {
    let uids = || UidRanges::for_host(&paths.state, uid_base);
    let nspawn = || -> Result<NspawnRuntime> {
        Ok(NspawnRuntime::new(paths.clone(), uids()?, bounds.clone())?)
    };
    let runtime: Arc<dyn Runtime> = match kind {
        Some(RuntimeKind::Nspawn) => Arc::new(nspawn()?),
        Some(RuntimeKind::Process) => Arc::new(ProcessRuntime::new(paths.clone(), uids()?)),
        None => match nspawn() {
            Ok(n) => Arc::new(n),
            Err(e) => {
                tracing::info!("using the process runtime (agents are not isolated): {e}");
                Arc::new(ProcessRuntime::new(paths.clone(), uids()?))
            }
        },
    };
    match runtime.memory_bound() {
        Ok(bytes) => tracing::info!(
            "each agent's container may take {} of memory",
            crate::space::human(bytes)
        ),
        Err(why) if runtime.isolated() => {
            tracing::warn!("agents' containers run without a memory bound: {why}")
        }
        Err(_) => {}
    }
    match runtime.cpu_shared() {
        Ok(None) => tracing::info!("each agent's container has an equal share of the CPU"),
        Ok(Some(cores)) => tracing::info!(
            "each agent's container has an equal share of the CPU, at most {cores} core{}",
            if cores == 1.0 { "" } else { "s" }
        ),
        Err(why) if runtime.isolated() => {
            tracing::warn!("agents' processes compete for the CPU as plain processes: {why}")
        }
        Err(_) => {}
    }
    Ok(runtime)
}

fn settings(min_free_space: Option<u64>, node: hive_sh4re::NodeName) -> Result<Settings> {
    let bin_dir = match std::env::var_os("HIVE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::current_exe()
            .context("cannot find hive-c0re's own binary")?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    let claude_bin = find_claude(
        std::env::var_os("HIVE_CLAUDE_BIN"),
        std::env::var_os("PATH").as_deref(),
    );
    let mut agent_env: Vec<(String, String)> = PASSED_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    agent_env.push((
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
        "1".into(),
    ));
    agent_env.push(("DISABLE_TELEMETRY".into(), "1".into()));
    let heartbeat_every = crate::hive::nodes::heartbeat_every()?;
    Ok(Settings {
        bin_dir,
        claude_bin,
        agent_env,
        dashboard_home: None,
        dashboard_login: None,
        kill_grace: Duration::from_secs(5),
        min_free_space,
        state_quota: None,
        turn_timeout: DEFAULT_TURN_TIMEOUT,
        webhooks: Default::default(),
        max_concurrent_turns: crate::admission::MIN_LIMIT,
        budget: None,
        node,
        heartbeat_every,
        lease_ttl: crate::hive::leases::lease_ttl(heartbeat_every)?,
        // Set once the store is open: it depends on whether others share it.
        lease_holder: String::new(),
    })
}

/// The turn limit in force: the one a setting gave, else one derived from
/// the memory available now; says which, in the log, at start.
fn turn_limit(set: Option<(usize, String)>) -> usize {
    let (limit, from) = match set {
        Some((n, from)) => (n, from),
        None => {
            let avail = mem_available();
            let limit = crate::admission::default_limit(avail.unwrap_or(0));
            let from = match avail {
                Some(b) => format!(
                    "default: {} MiB of memory available / {} MiB per turn, at least {}",
                    b >> 20,
                    crate::admission::MEM_PER_TURN >> 20,
                    crate::admission::MIN_LIMIT
                ),
                None => "default: /proc/meminfo unreadable, the least".to_owned(),
            };
            (limit, from)
        }
    };
    tracing::info!("at most {limit} claude processes at once, one kept for the manager ({from})");
    limit
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The first `name` in the directories of `path` (a PATH value).
fn which_in(path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The claude CLI serve gives its agents: `HIVE_CLAUDE_BIN`, else `claude` on `path`.
pub fn find_claude(hive_claude_bin: Option<OsString>, path: Option<&OsStr>) -> Option<PathBuf> {
    hive_claude_bin
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .or_else(|| which_in(path?, "claude"))
}

/// Vacuums about once per `every` for the whole hive: each node looks at
/// least once a minute, and whichever finds it due first runs it.
async fn vacuum(hive: Arc<Hive>, every: Duration) {
    let look = every.min(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(look) => {}
            _ = hive.shutdown_token().cancelled() => return,
        }
        match hive.vacuum_if_due(every).await {
            Ok(Some(n)) if n > 0 => tracing::info!(rows = n, "vacuumed old history"),
            Ok(_) => {}
            Err(e) => tracing::warn!("vacuum failed: {e}"),
        }
    }
}

/// Installs the SIGTERM/SIGINT handlers now; the future ends at the first of them.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
