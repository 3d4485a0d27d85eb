//! The one path builder: every file and directory of the hive, from a validated name.

use std::path::{Path, PathBuf};

use hive_sh4re::AgentName;

/// Where the hive keeps its state and its sockets.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/var/lib/hyperhive` or the XDG equivalent: the database and per-agent state.
    pub state: PathBuf,
    /// `/run/hyperhive` or the XDG equivalent: sockets and pid files.
    pub run: PathBuf,
}

impl Paths {
    /// Resolves the state and run directories: flags, then `HIVE_STATE_DIR`/`HIVE_RUN_DIR`
    /// (clap reads those), then the defaults for root or for a user.
    pub fn resolve(state: Option<PathBuf>, run: Option<PathBuf>) -> Self {
        let is_root = nix::unistd::geteuid().is_root();
        let state = state.unwrap_or_else(|| {
            if is_root {
                PathBuf::from("/var/lib/hyperhive")
            } else if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
                PathBuf::from(x).join("hyperhive")
            } else {
                home().join(".local/state/hyperhive")
            }
        });
        let run = run.unwrap_or_else(|| {
            if is_root {
                PathBuf::from("/run/hyperhive")
            } else if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
                PathBuf::from(x).join("hyperhive")
            } else {
                state.join("run")
            }
        });
        Self { state, run }
    }

    /// The admin socket.
    pub fn host_sock(&self) -> PathBuf {
        self.run.join("host.sock")
    }

    /// The lock that keeps a second daemon off this run dir.
    pub fn daemon_lock(&self) -> PathBuf {
        self.run.join("hive-c0re.lock")
    }

    /// The sqlite database.
    pub fn db(&self) -> PathBuf {
        self.state.join("hive.db")
    }

    /// The free-space reserve (see `space.rs`): deleted when the disk runs low.
    pub fn space_reserve(&self) -> PathBuf {
        self.state.join("space.reserve")
    }

    /// The dashboard's token (0600), kept so logins survive a restart.
    pub fn dashboard_token(&self) -> PathBuf {
        self.state.join("dashboard.token")
    }

    /// The key that signs the dashboard's logins (0600); replaced by `hive-c0re logout`.
    pub fn dashboard_login_key(&self) -> PathBuf {
        self.state.join("dashboard.login-key")
    }

    /// `<state>/agents`, the parent of every agent's directory.
    pub fn agents_root(&self) -> PathBuf {
        self.state.join("agents")
    }

    /// `<state>/agents/<name>`.
    pub fn agent_dir(&self, name: &AgentName) -> PathBuf {
        self.agents_root().join(name.as_str())
    }

    /// The agent's persistent `/state`.
    pub fn agent_state(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("state")
    }

    /// `<state>/configs`, the parent of every config repo: the manager gets it
    /// whole, so a repo made while it runs is there at once, and nothing else is.
    pub fn configs_root(&self) -> PathBuf {
        self.state.join("configs")
    }

    /// The agent's config git repository, `<state>/configs/<name>`.
    pub fn config_repo(&self, name: &AgentName) -> PathBuf {
        self.configs_root().join(name.as_str())
    }

    /// `<state>/tmp`: hive-c0re's private scratch space (0700), on the same file
    /// system as the config repos so a repo built there can be renamed into place.
    pub fn scratch(&self) -> PathBuf {
        self.state.join("tmp")
    }

    /// `<state>/agents/<name>/config`: where the repo used to be, now a symlink to it.
    pub fn config_repo_link(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("config")
    }

    /// The agent's container root file system (nspawn runtime).
    pub fn rootfs(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("root")
    }

    /// The harness output log, kept for crash reports.
    pub fn harness_log(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("harness.log")
    }

    /// `<run>/agents`, the parent of every agent's socket directory and pid files.
    pub fn agents_run_root(&self) -> PathBuf {
        self.run.join("agents")
    }

    /// `<run>/agents/<name>`: the only host directory bound into the agent's container.
    pub fn agent_sock_dir(&self, name: &AgentName) -> PathBuf {
        self.agents_run_root().join(name.as_str())
    }

    /// `<run>/agents/<name>.pid`: what the runtime launched for the agent (beside
    /// the socket directory, never in it: the agent can write there).
    pub fn agent_pid_file(&self, name: &AgentName) -> PathBuf {
        self.agents_run_root().join(format!("{name}.pid"))
    }

    /// `<run>/agents/<name>.pasta.pid`: the pid of the agent's network helper (nspawn).
    pub fn agent_pasta_pid_file(&self, name: &AgentName) -> PathBuf {
        self.agents_run_root().join(format!("{name}.pasta.pid"))
    }

    /// The agent's socket: its identity.
    pub fn agent_sock(&self, name: &AgentName) -> PathBuf {
        self.agent_sock_dir(name).join(AGENT_SOCK)
    }

    /// What `<state>/agents/<name>/config` points at: relative, so the state
    /// dir can move, and only ever at the agent's own repo.
    pub fn config_repo_link_target(name: &AgentName) -> PathBuf {
        Path::new("../../configs").join(name.as_str())
    }

    // ---- inside a container (nspawn) ----------------------------------------

    /// Where a container sees its socket directory ([`Paths::agent_sock_dir`]).
    pub const CONTAINER_SOCK_DIR: &str = "/run/hive";

    /// Where a container sees its agent socket.
    pub fn container_agent_sock() -> PathBuf {
        Path::new(Self::CONTAINER_SOCK_DIR).join(AGENT_SOCK)
    }

    /// Where the manager's container sees [`Paths::configs_root`].
    pub const CONTAINER_CONFIG_REPOS: &str = "/hive/agents";

    /// Where the manager's container sees `name`'s config repo.
    pub fn container_config_repo(name: &AgentName) -> PathBuf {
        Path::new(Self::CONTAINER_CONFIG_REPOS).join(name.as_str())
    }
}

/// The agent socket's file name, on the host and in a container.
const AGENT_SOCK: &str = "agent.sock";

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new("/tmp").to_path_buf())
}

/// Writes `text` and a newline to `path` (0600) through a private temp file,
/// synced and renamed into place, and syncs the directory: a crash or a
/// power cut leaves the old file or the new one, never an empty one.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let written = f
        .write_all(format!("{text}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_paths_stay_below_their_roots() {
        let p = Paths {
            state: "/s".into(),
            run: "/r".into(),
        };
        let n = AgentName::parse("alice").unwrap();
        assert_eq!(p.agent_state(&n), Path::new("/s/agents/alice/state"));
        assert_eq!(p.config_repo(&n), Path::new("/s/configs/alice"));
        assert_eq!(p.config_repo_link(&n), Path::new("/s/agents/alice/config"));
        assert_eq!(p.agent_sock(&n), Path::new("/r/agents/alice/agent.sock"));
        assert_eq!(p.agent_pid_file(&n), Path::new("/r/agents/alice.pid"));
        assert_eq!(p.host_sock(), Path::new("/r/host.sock"));
        // The link resolves, from the agent's dir, to the agent's repo.
        let link = p.config_repo_link(&n);
        let target = link
            .parent()
            .unwrap()
            .join(Paths::config_repo_link_target(&n));
        let normal: PathBuf = target.components().fold(PathBuf::new(), |mut acc, c| {
            match c {
                std::path::Component::ParentDir => {
                    acc.pop();
                }
                other => acc.push(other),
            }
            acc
        });
        assert_eq!(normal, p.config_repo(&n));
        assert_eq!(
            Paths::container_agent_sock(),
            Path::new("/run/hive/agent.sock")
        );
        assert_eq!(
            Paths::container_config_repo(&n),
            Path::new("/hive/agents/alice")
        );
    }
}
