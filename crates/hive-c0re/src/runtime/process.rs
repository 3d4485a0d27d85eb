//! The `process` runtime: each harness is a plain child process of hive-c0re.
//!
//! Not isolated: the harness sees the host as root does. It gets its own
//! process group (so one signal reaches claude and its MCP server too) and a
//! parent-death SIGKILL (so it never outlives a crashed daemon). Its pid and
//! start time go to `<run>/agents/<name>/harness.pid` for `reap_orphans`.

pub(super) mod sys;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use hive_sh4re::AgentName;

use super::{InsideCommand, LaunchSpec, Launched, Runtime, RuntimeError, RuntimeKind};
use crate::paths::Paths;
use sys::PidRecord;

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
}

impl ProcessRuntime {
    /// A runtime keeping its pid files under `paths.run`.
    pub fn new(paths: Paths) -> Self {
        Self { paths }
    }

    /// `<run>/agents/<name>/harness.pid`: the harness's pid and start time.
    fn pid_file(&self, name: &AgentName) -> PathBuf {
        self.paths.agent_sock_dir(name).join("harness.pid")
    }
}

/// The harness's environment: inherited basics < `spec.env` < the hive's own variables.
fn harness_env(spec: &LaunchSpec) -> Result<Vec<(String, String)>, RuntimeError> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut hive = vec![
        (
            "HIVE_AGENT_SOCK".to_owned(),
            path(&spec.sock_dir.join("agent.sock")),
        ),
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

/// `<harness_bin> serve` with its environment, working directory, log and death signal.
fn command(spec: &LaunchSpec) -> Result<std::process::Command, RuntimeError> {
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
        .stderr(log_err)
        .process_group(0);
    let daemon = sys::self_pidfd();
    // SAFETY: the hook only makes async-signal-safe syscalls (see `die_with_parent`).
    unsafe {
        cmd.pre_exec(move || sys::die_with_parent(libc::SIGKILL, daemon));
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

    fn give_to_manager(
        &self,
        _path: &std::path::Path,
        _manager_uid_base: Option<u32>,
    ) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, RuntimeError> {
        // One harness per agent: whatever the pid file still names goes first.
        self.reap_orphans(&spec.name).await?;
        for dir in [&spec.state_dir, &spec.sock_dir] {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
                what: format!("could not create {}", dir.display()),
                source,
            })?;
        }
        let cmd = command(spec)?;
        let child = sys::spawn(cmd, false)
            .await
            .map_err(|source| RuntimeError::Spawn {
                name: spec.name.clone(),
                source,
            })?;
        // A harness that already died leaves nothing to record.
        if let Some(rec) = child.id().and_then(PidRecord::of) {
            sys::write_pid_file(&self.pid_file(&spec.name), rec)?;
        }
        Ok(Launched { child })
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
        self.reap_orphans(&spec.name).await
    }

    /// The program on the host, as the daemon's user, in the agent's state dir:
    /// there is no container to enter.
    fn command_inside(
        &self,
        spec: &LaunchSpec,
        what: &InsideCommand,
    ) -> Result<std::process::Command, RuntimeError> {
        let Some((program, args)) = what.argv.split_first() else {
            return Err(RuntimeError::Io {
                what: "nothing to run in the agent's state dir".into(),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
        };
        sys::check_env(&what.env)?;
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        let agent = vec![
            ("HOME".to_owned(), path(&spec.state_dir)),
            ("HIVE_AGENT_STATE".to_owned(), path(&spec.state_dir)),
            (
                "HIVE_AGENT_SOCK".to_owned(),
                path(&spec.sock_dir.join("agent.sock")),
            ),
            ("HIVE_AGENT_NAME".to_owned(), spec.name.as_str().to_owned()),
        ];
        let basics = [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("LANG", "C.UTF-8"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(sys::merge_env(&[
                &basics,
                &sys::inherited_env(&["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ"]),
                &agent,
                &what.env,
            ]))
            .current_dir(&spec.state_dir);
        Ok(cmd)
    }
}
