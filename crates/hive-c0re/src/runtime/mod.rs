//! Runtimes: how an agent's harness is started on this host.
//!
//! Two implementations behind one trait: `nspawn` (a user-namespaced
//! systemd-nspawn container per agent) and `process` (a plain child process,
//! for development and hosts without nspawn). The supervisor owns the
//! lifecycle; a runtime only knows how to launch and how to clean up.

mod nspawn;
mod owner;
mod process;
mod sys;
pub mod uid_ranges;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use hive_sh4re::AgentName;

pub use nspawn::{
    AllowedNetwork, ContainerBounds, EgressPolicy, NspawnRuntime, egress_table,
    has_cgroup_controller,
};
pub(crate) use owner::{Usage, disk_usage, remove_tree};
pub use process::ProcessRuntime;
pub use sys::{UID_RANGE, find_tool_in, tool_dirs};
pub use uid_ranges::UidRanges;

/// Which runtime a daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// systemd-nspawn containers with user namespaces.
    Nspawn,
    /// Plain host processes (not isolated).
    Process,
}

impl RuntimeKind {
    /// The name shown in `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nspawn => "nspawn",
            Self::Process => "process",
        }
    }
}

/// Everything a runtime needs to start one agent's harness. Paths are host paths.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub name: AgentName,
    /// The harness binary on the host (`hive-ag3nt` or `hive-m1nd`).
    pub harness_bin: PathBuf,
    /// The claude CLI on the host, if configured (`HIVE_CLAUDE_BIN`); its directory is bound read-only.
    pub claude_bin: Option<PathBuf>,
    /// `<state>/agents/<name>/state`, seen as `/state` inside a container.
    pub state_dir: PathBuf,
    /// `<run>/agents/<name>`, holding `agent.sock`.
    pub sock_dir: PathBuf,
    /// The agent socket in it ([`crate::paths::Paths::agent_sock`]).
    pub sock: PathBuf,
    /// `<state>/configs` for the manager, which edits every config repo; `None` for others.
    pub config_repos: Option<PathBuf>,
    /// The container root to build (nspawn only).
    pub rootfs: PathBuf,
    /// Environment passed to the harness (model API variables and the like).
    pub env: Vec<(String, String)>,
    /// First host uid of the agent's user namespace range (nspawn only).
    pub uid_base: u32,
    /// File that receives the harness's stdout and stderr.
    pub log: PathBuf,
    /// Cancelled when the agent is to stop: a launch under way gives up.
    pub stop: tokio_util::sync::CancellationToken,
}

/// A started harness: the process hive-c0re waits on.
#[derive(Debug)]
pub struct Launched {
    pub child: tokio::process::Child,
    /// Why the runtime ended the harness itself, set before it did so: the
    /// container lost something it cannot work without (its network). A
    /// harness left running without it would fail every turn for good.
    pub ended_by: Arc<OnceLock<String>>,
}

/// Why a runtime could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Unavailable(String),
    #[error("could not start {name}'s harness: {source}")]
    Spawn {
        name: AgentName,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The agent's uid range is another hive's, or no range is left; the text says what to do.
    #[error("{0}")]
    UidsTaken(String),
    /// The agent has no running harness (or container) to enter.
    #[error("{0} is not running: start it with hive-c0re start {0}")]
    NotRunning(AgentName),
}

/// What to run inside an agent's container, and with which extra environment.
#[derive(Debug, Clone)]
pub struct InsideCommand {
    /// The program and its arguments, as the agent sees its file system.
    pub argv: Vec<String>,
    /// Variables set on top of the agent's `HOME`, `PATH` and `LANG` (e.g. `TERM`).
    pub env: Vec<(String, String)>,
}

/// How agents' harnesses are launched and cleaned up.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Which runtime this is.
    fn kind(&self) -> RuntimeKind;

    /// True when an agent cannot reach the host (user-namespaced container with its own network).
    fn isolated(&self) -> bool;

    /// The host uid (and gid, the same number) the agent's processes run as,
    /// for an agent whose range starts at `uid_base`; `None` when that is the
    /// daemon's own user. Its socket directory and state belong to that uid.
    fn agent_uid(&self, uid_base: u32) -> Option<u32>;

    /// This hive's agents' uid ranges: a runtime holds an agent's range
    /// before it launches, chowns or sweeps anything of it.
    fn uid_ranges(&self) -> &UidRanges;

    /// Undoes what the runtime changed on the host for this hive, once every
    /// agent has stopped (the daemon's last step).
    fn shut_down(&self) {}

    /// Each agent's memory bound in bytes, or why agents run without one.
    fn memory_bound(&self) -> Result<u64, String> {
        Err(format!(
            "the {} runtime does not bound an agent's memory",
            self.kind().as_str()
        ))
    }

    /// Whether each agent's processes share the cores as one (a cgroup of
    /// its own) and the cap in cores on each, or why they compete as plain
    /// processes.
    fn cpu_shared(&self) -> Result<Option<f64>, String> {
        Err(format!(
            "the {} runtime does not give an agent a CPU share of its own",
            self.kind().as_str()
        ))
    }

    /// How many of the agent's processes the kernel killed for want of
    /// memory since its container was launched (`None`: not counted).
    fn oom_kills(&self, _spec: &LaunchSpec) -> Option<u64> {
        None
    }

    /// Prepares what the agent needs (root tree, ownership) and starts its harness.
    ///
    /// The returned child dies with hive-c0re (parent-death signal), so a
    /// crashed daemon leaves no harness behind.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, RuntimeError>;

    /// Removes anything a previous daemon left running for this agent.
    async fn reap_orphans(&self, name: &AgentName) -> Result<(), RuntimeError>;

    /// Hands a directory the manager must be able to write (a config repo made
    /// while it runs) to the manager's root: into its uid range under nspawn
    /// (when the manager exists, `manager_uid_base`); nothing to do for a
    /// runtime whose harnesses run as the daemon's user.
    fn give_to_manager(
        &self,
        path: &Path,
        manager_uid_base: Option<u32>,
    ) -> Result<(), RuntimeError>;

    /// Removes runtime-owned files of an agent that is being destroyed.
    async fn forget(&self, spec: &LaunchSpec) -> Result<(), RuntimeError>;

    /// The command that runs `what` inside the agent's running container, as
    /// the agent's root (uid 0 of its user namespace, an unprivileged uid on
    /// the host) in its state dir (`/state`), with only the environment listed
    /// in [`InsideCommand`] plus `HOME`, `PATH` and `LANG`; as confined as the
    /// agent's own processes (no_new_privs, bounding set, seccomp, cgroup),
    /// and as PID 1 of a PID namespace of its own, so that everything it
    /// starts ends when it ends. The caller adds stdio and spawns it.
    /// [`RuntimeError::NotRunning`] when there is no container to enter.
    fn command_inside(
        &self,
        spec: &LaunchSpec,
        what: &InsideCommand,
    ) -> Result<std::process::Command, RuntimeError>;
}
