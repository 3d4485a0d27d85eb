//! The `process` runtime: each harness is a plain child process of hive-c0re.
//!
//! Not isolated: the harness sees the host's file system and network. Under
//! a root daemon it runs as its own unprivileged uid (its range's first uid,
//! as its container root would under nspawn), which owns its state dir and
//! socket and nothing else; under any other user it runs as that user. It
//! never gains privileges (no_new_privs), gets its own process group (so one
//! signal reaches claude and its MCP server too) and a parent-death SIGKILL
//! (so it never outlives a crashed daemon). Its pid and start time go to
//! `<run>/agents/<name>.pid` for `reap_orphans`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::AgentName;

use super::owner::{check_uid_base, own_dir};
use super::sys::{self, PidRecord};
use super::{InsideCommand, LaunchSpec, Launched, Runtime, RuntimeError, RuntimeKind, UidRanges};
use crate::paths::Paths;

const NO_UTIL_LINUX: &str =
    "unshare or setpriv is not installed: install the Debian package util-linux";

/// Variables a harness inherits from the daemon; the rest of the daemon's environment stays out.
const INHERITED_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TERM",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// Runs each agent's harness as a host process in its own process group.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    paths: Paths,
    uids: Arc<UidRanges>,
}

impl ProcessRuntime {
    /// A runtime keeping its pid files under `paths.run`, running agents in `uids`' ranges.
    pub fn new(paths: Paths, uids: UidRanges) -> Self {
        Self {
            paths,
            uids: Arc::new(uids),
        }
    }

    /// `<run>/agents/<name>.pid`: the harness's pid and start time (out of the
    /// socket directory, which belongs to the agent).
    fn pid_file(&self, name: &AgentName) -> PathBuf {
        self.paths.agent_pid_file(name)
    }
}

/// The harness's environment: inherited basics < `spec.env` < the hive's own variables.
fn harness_env(spec: &LaunchSpec) -> Result<Vec<(String, String)>, RuntimeError> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut hive = vec![
        ("HIVE_AGENT_SOCK".to_owned(), path(&spec.sock)),
        ("HIVE_AGENT_STATE".to_owned(), path(&spec.state_dir)),
        ("HIVE_AGENT_NAME".to_owned(), spec.name.as_str().to_owned()),
        ("HOME".to_owned(), path(&spec.state_dir)),
    ];
    if let Some(repos) = &spec.config_repos {
        hive.push(("HIVE_CONFIG_REPOS".to_owned(), path(repos)));
    }
    if let Some(claude) = &spec.claude_bin {
        hive.push(("HIVE_CLAUDE_BIN".to_owned(), path(claude)));
    }
    sys::check_env(&spec.env)?;
    Ok(sys::merge_env(&[
        &sys::inherited_env(INHERITED_ENV),
        &spec.env,
        &hive,
    ]))
}

/// Makes the state dir (and the manager's config repos) the agent's when it
/// runs as its own `uid`, and lets it reach them through the daemon's directories.
fn prepare(spec: &LaunchSpec, uid: Option<u32>) -> Result<(), RuntimeError> {
    let err = |what: String| move |source| RuntimeError::Io { what, source };
    std::fs::create_dir_all(&spec.state_dir).map_err(err(format!(
        "could not create {}",
        spec.state_dir.display()
    )))?;
    let Some(uid) = uid else { return Ok(()) };
    check_uid_base(uid)?;
    own_dir(&spec.state_dir, uid, &spec.stop)?;
    if let Some(repos) = &spec.config_repos {
        own_dir(repos, uid, &spec.stop)?;
    }
    // `<state>/agents/<name>` and `<state>/agents` stay root's, searchable but not listable.
    for dir in spec.state_dir.ancestors().skip(1).take(2) {
        searchable(dir).map_err(err(format!(
            "could not open {} to the agent",
            dir.display()
        )))?;
    }
    Ok(())
}

/// Takes every permission of group and others from a directory (root's,
/// `<state>/agents/<name>`); nothing to do when it is gone.
fn close_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(dir) {
        // A root-owned dir in a root-owned dir: nothing can swap it for a link meanwhile.
        Ok(m) if m.is_dir() => {
            let mode = m.permissions().mode() & 0o7777;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o077))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Adds search (x) for group and others to a directory's mode.
fn searchable(dir: &Path) -> std::io::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o011 != 0o011 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
    }
    Ok(())
}

/// `<harness_bin> serve` with its environment, working directory, log, user and death signal.
fn command(spec: &LaunchSpec, uid: Option<u32>) -> Result<std::process::Command, RuntimeError> {
    let log = sys::open_log(&spec.log)?;
    let log_err = log.try_clone().map_err(|source| RuntimeError::Io {
        what: format!("could not open {}", spec.log.display()),
        source,
    })?;
    let mut cmd = std::process::Command::new(&spec.harness_bin);
    cmd.arg("serve")
        .env_clear()
        .envs(harness_env(spec)?)
        .current_dir(&spec.state_dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let daemon = sys::self_pidfd();
    // SAFETY: the hook only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own (and so a process group, whose id is the
            // harness's pid), without the terminal a daemon started from a
            // shell holds: in that session an agent could open /dev/tty and
            // type into the operator's shell (TIOCSTI).
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(uid) = uid {
                sys::become_user(uid)?;
            }
            sys::no_new_privs()?;
            sys::die_with_parent(libc::SIGKILL, daemon)
        });
    }
    Ok(cmd)
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn isolated(&self) -> bool {
        false
    }

    fn agent_uid(&self, uid_base: u32) -> Option<u32> {
        nix::unistd::geteuid().is_root().then_some(uid_base)
    }

    fn uid_ranges(&self) -> &UidRanges {
        &self.uids
    }

    fn give_to_manager(
        &self,
        path: &Path,
        manager_uid_base: Option<u32>,
    ) -> Result<(), RuntimeError> {
        // Only a root daemon runs the manager as its own uid; no manager yet: its launch hands it every repo.
        let Some(uid) = manager_uid_base.and_then(|b| self.agent_uid(b)) else {
            return Ok(());
        };
        check_uid_base(uid)?;
        self.uids.hold(uid)?;
        super::owner::shift_tree(path, uid).map_err(|source| RuntimeError::Io {
            what: format!(
                "could not hand {} to the manager (uid {uid})",
                path.display()
            ),
            source,
        })
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, RuntimeError> {
        // One harness per agent: whatever the pid file still names goes first.
        self.reap_orphans(&spec.name).await?;
        let uid = self.agent_uid(spec.uid_base);
        if let Some(uid) = uid {
            self.uids.hold(uid)?;
        }
        let owned = spec.clone();
        tokio::task::spawn_blocking(move || prepare(&owned, uid))
            .await
            .map_err(|e| RuntimeError::Io {
                what: "the launch preparation failed".into(),
                source: std::io::Error::other(e),
            })??;
        let cmd = command(spec, uid)?;
        let child = sys::spawn(cmd, false)
            .await
            .map_err(|source| match (source.kind(), uid) {
                (std::io::ErrorKind::PermissionDenied, Some(uid)) => RuntimeError::Io {
                    what: format!(
                        "could not start {}'s harness {} as uid {uid}: every directory above it (and above the claude CLI) must be searchable by other users (chmod o+x)",
                        spec.name,
                        spec.harness_bin.display()
                    ),
                    source,
                },
                _ => RuntimeError::Spawn {
                    name: spec.name.clone(),
                    source,
                },
            })?;
        // A harness that already died leaves nothing to record.
        if let Some(rec) = child.id().and_then(PidRecord::of) {
            sys::write_pid_file(&self.pid_file(&spec.name), rec)?;
        }
        Ok(Launched {
            child,
            ended_by: Default::default(),
        })
    }

    /// Kills the recorded harness's whole process group (claude, MCP servers) and removes the pid file.
    ///
    /// Safe to call whenever the agent should not be running, e.g. after its
    /// harness exited, to sweep children it left behind.
    async fn reap_orphans(&self, name: &AgentName) -> Result<(), RuntimeError> {
        let pid_file = self.pid_file(name);
        if let Some(rec) = sys::read_pid_file(&pid_file)? {
            sys::kill_recorded_group(&rec)?;
            // SIGKILL returns before its targets have died: wait, so the caller
            // can rely on them being gone.
            let gone = sys::wait_until(Duration::from_secs(2), || !sys::group_alive(rec.pid)).await;
            if !gone {
                tracing::warn!(agent = %name, pgid = rec.pid, "harness process group still alive after SIGKILL");
            }
        }
        sys::remove_file(&pid_file)
    }

    async fn forget(&self, spec: &LaunchSpec) -> Result<(), RuntimeError> {
        self.reap_orphans(&spec.name).await?;
        // The state stays for a later spawn of this name, but the range goes
        // back to the pool and the next agent given it owns these files: the
        // way to them closes first (`prepare` opens it for this name's next
        // launch), and a range whose files stay open is not freed.
        if let Some(agent_dir) = spec.state_dir.parent() {
            close_dir(agent_dir).map_err(|source| RuntimeError::Io {
                what: format!("could not close {} to other agents", agent_dir.display()),
                source,
            })?;
        }
        self.uids.release(spec.uid_base);
        Ok(())
    }

    /// The program on the host in the agent's state dir, as the agent's user,
    /// never gaining privileges. Under a root daemon it is also PID 1 of a
    /// PID namespace of its own, so whatever it starts (a double-forked,
    /// setsid'd daemon included) ends when it ends.
    fn command_inside(
        &self,
        spec: &LaunchSpec,
        what: &InsideCommand,
    ) -> Result<std::process::Command, RuntimeError> {
        if what.argv.is_empty() {
            return Err(RuntimeError::Io {
                what: "nothing to run in the agent's state dir".into(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        }
        sys::check_env(&what.env)?;
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let agent = vec![
            ("HOME".to_owned(), path(&spec.state_dir)),
            ("HIVE_AGENT_STATE".to_owned(), path(&spec.state_dir)),
            ("HIVE_AGENT_SOCK".to_owned(), path(&spec.sock)),
            ("HIVE_AGENT_NAME".to_owned(), spec.name.as_str().to_owned()),
        ];
        let basics = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut argv: Vec<String> = Vec::new();
        if let Some(uid) = self.agent_uid(spec.uid_base) {
            check_uid_base(uid)?;
            let tool = |name: &str| {
                sys::find_tool(name).ok_or_else(|| RuntimeError::Unavailable(NO_UTIL_LINUX.into()))
            };
            argv.extend([
                path(&tool("unshare")?),
                "--pid".into(),
                "--fork".into(),
                "--kill-child".into(),
                "--".into(),
                path(&tool("setpriv")?),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "--".into(),
            ]);
        }
        argv.extend(what.argv.iter().cloned());
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(sys::merge_env(&[
                &basics,
                &sys::inherited_env(&["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"]),
                &agent,
                &what.env,
            ]))
            .current_dir(&spec.state_dir);
        // SAFETY: one prctl between fork and exec.
        unsafe {
            cmd.pre_exec(sys::no_new_privs);
        }
        Ok(cmd)
    }
}
