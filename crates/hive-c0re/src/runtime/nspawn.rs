//! The `nspawn` runtime: one user-namespaced systemd-nspawn container per agent.
//!
//! The container `h-<name>` runs on a tiny root tree (see `rootfs`) with the
//! host's `/usr` bound read-only, the agent's state at `/state`, its socket
//! directory at `/run/hive`, the harness at `/opt/hive/bin/<harness>` and the
//! claude package at `/opt/claude`. uid 0 inside is `uid_base` on the host;
//! the state dir is moved into that range before each start, and the socket
//! directory is already the range's (`AgentSockets` made it so).
//! Each container has a network namespace of its own (see `net`): the
//! internet through pasta, a host-loopback model endpoint relayed in, and
//! nothing else of the host's.
//!
//! Process shape: hive-c0re forks systemd-nspawn as PID 1 of a fresh PID
//! namespace with its own /proc. Whatever kills that nspawn (SIGKILL included)
//! thus kills the whole container; a SIGTERM makes nspawn ask the container to
//! stop (`--kill-signal=SIGRTMIN+3`: the harness gets SIGTERM then SIGHUP).
//! nspawn's parent-death signal is SIGTERM, so a dead daemon stops its containers.
//! No machined registration: it would need nspawn in the host's PID namespace,
//! losing the guarantee above, and containers must work where systemd is not PID 1.

mod cgroup;
mod confine;
mod cpu;
mod egress;
mod memory;
mod net;
mod rootfs;

use confine::Confinement;
use cpu::CpuCgroups;
use egress::Egress;
pub use egress::{EgressPolicy, Network as AllowedNetwork};
use memory::MemoryCgroups;
use net::Network;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::AgentName;

use super::owner::{self, check_uid_base, own_dir};
use super::sys::{self, PidRecord, UID_RANGE};
use super::{InsideCommand, LaunchSpec, Launched, Runtime, RuntimeError, RuntimeKind, UidRanges};
use crate::paths::Paths;

const NOT_INSTALLED: &str = "systemd-nspawn is not installed: install the Debian package systemd-container, or run hive-c0re serve --runtime process";
const NOT_ROOT: &str = "the nspawn runtime needs root (it creates user namespaces and bind mounts): run hive-c0re serve as root, or run hive-c0re serve --runtime process";
const NO_NSENTER: &str = "nsenter is not installed: install the Debian package util-linux";
const NO_PASTA: &str = "pasta is not installed: install the Debian package passt (it connects each agent's own network to the internet), or run hive-c0re serve --runtime process";
const NO_USERNS: &str = "this kernel does not allow user namespaces (user.max_user_namespaces is 0): enable them, or run hive-c0re serve --runtime process";

/// The agent's state inside.
const STATE: &str = "/state";
/// Where the harness binary appears inside.
const HIVE_BIN: &str = "/opt/hive/bin";
/// Where the claude package appears inside.
const CLAUDE_DIR: &str = "/opt/claude";
/// PATH inside: the harness first, so `hive-ag3nt mcp` resolves.
const PATH_INSIDE: &str =
    "/opt/hive/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// PATH for systemd-nspawn itself (its environment is otherwise empty).
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Daemon variables a harness inherits; PATH and TMPDIR are the container's own.
const INHERITED_ENV: &[&str] = &[
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "RUST_LOG",
    "RUST_BACKTRACE",
];
/// Host top-level directories that merged-usr makes symlinks into /usr.
const MERGED_USR: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// What nspawn sends the container's stub init on SIGTERM: it then sends the harness SIGTERM and SIGHUP.
const STOP_SIGNAL: &str = "SIGRTMIN+3";
/// The payload: load the environment from a root-only file (so no secret shows on a
/// command line or reaches nspawn's own environment), then become the harness.
const PAYLOAD_SCRIPT: &str = r#". /etc/hive/env && exec "$0" "$@""#;

/// Whether `mountinfo` (as /proc/self/mountinfo reads) mounts the cgroup
/// `controller` where the containers' cgroups can use it (`hive-c0re doctor`).
pub fn has_cgroup_controller(mountinfo: &str, controller: &str) -> bool {
    cgroup::find_controller(mountinfo, controller).is_some()
}

/// Runs each agent's harness in its own user-namespaced systemd-nspawn container.
#[derive(Debug, Clone)]
pub struct NspawnRuntime {
    paths: Paths,
    nspawn: PathBuf,
    uids: Arc<UidRanges>,
    /// The containers' memory cgroups, or why this host has none for them.
    memory: Result<Arc<MemoryCgroups>, String>,
    /// The containers' cpu cgroups, or why this host has none for them.
    cpu: Result<Arc<CpuCgroups>, String>,
    /// The filter keeping pasta's connections off the host's own networks;
    /// `None` where the operator let containers reach everything.
    egress: Option<Arc<Egress>>,
}

/// What bounds each container, as the operator set it.
#[derive(Debug, Clone, Default)]
pub struct ContainerBounds {
    /// Most memory a container may take; `None`: a quarter of the containers' share.
    pub agent_memory: Option<u64>,
    /// Most CPU a container may take, in cores; `None`: no cap.
    pub agent_cpus: Option<f64>,
    /// The networks of the host's a container may reach besides the internet.
    pub egress: EgressPolicy,
}

impl NspawnRuntime {
    /// Checks that this host can run agent containers (systemd-nspawn, root, user
    /// namespaces, nftables unless the operator allows every network); the
    /// containers run in `uids`' ranges, bounded by `bounds`.
    pub fn new(
        paths: Paths,
        uids: UidRanges,
        bounds: ContainerBounds,
    ) -> Result<Self, RuntimeError> {
        let nspawn =
            find_nspawn().ok_or_else(|| RuntimeError::Unavailable(NOT_INSTALLED.into()))?;
        if !nix::unistd::geteuid().is_root() {
            return Err(RuntimeError::Unavailable(NOT_ROOT.into()));
        }
        let userns = fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .map(|n| n.trim() != "0")
            .unwrap_or(true);
        if !userns || !Path::new("/proc/self/ns/user").exists() {
            return Err(RuntimeError::Unavailable(NO_USERNS.into()));
        }
        if !net::pasta_installed() {
            return Err(RuntimeError::Unavailable(NO_PASTA.into()));
        }
        if !sys::ksm_running() {
            tracing::info!(
                "the kernel's same-page merging is off: each idle agent's pasta keeps about 25 MiB \
                 of buffers to itself; `echo 1 > /sys/kernel/mm/ksm/run` (scripts/demo.sh does) \
                 lets the kernel merge them"
            );
        }
        let egress = match &bounds.egress.allowed {
            None => None,
            Some(allowed) => Some(Arc::new(
                Egress::set_up(&egress_table(&paths.state), allowed).map_err(|e| {
                    RuntimeError::Unavailable(format!(
                        "cannot keep agents' containers off the host's own networks: {e}. \
                         Install nftables, or serve --allow-networks all to let them reach everything the host reaches"
                    ))
                })?,
            )),
        };
        let memory = MemoryCgroups::set_up(bounds.agent_memory).map(Arc::new);
        let cpu = CpuCgroups::set_up(bounds.agent_cpus).map(Arc::new);
        Ok(Self {
            paths,
            nspawn,
            uids: Arc::new(uids),
            memory,
            cpu,
            egress,
        })
    }

    /// Filters the connections of `spec`'s pasta (before it starts).
    async fn admit_egress(&self, spec: &LaunchSpec) -> Result<(), RuntimeError> {
        let Some(egress) = self.egress.clone() else {
            return Ok(());
        };
        let uid = net::pasta_uid(spec.uid_base);
        let endpoints = net::model_endpoints(&spec.env);
        tokio::task::spawn_blocking(move || egress.admit(uid, &endpoints))
            .await
            .map_err(|e| RuntimeError::Io {
                what: "the egress filter failed".into(),
                source: io::Error::other(e),
            })?
            .map_err(|e| {
                RuntimeError::Unavailable(format!(
                    "cannot keep {}'s container off the host's own networks: {e}",
                    spec.name
                ))
            })
    }

    /// `<run>/agents/<name>.pid`: beside the socket dir, not in it, so the container never sees it.
    fn pid_file(&self, name: &AgentName) -> PathBuf {
        self.paths.agent_pid_file(name)
    }
}

/// The name of the egress table (nftables, family `inet`) of the hive whose
/// state dir is `state`: told from other hives' on the host by the dir's hash.
pub fn egress_table(state: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(state.as_os_str().as_bytes());
    format!("hyperhive-{}", crate::hex::encode(&digest[..4]))
}

fn find_nspawn() -> Option<PathBuf> {
    sys::find_tool("systemd-nspawn")
}

/// The container's init (nspawn's stub init, PID 1 inside): the child of
/// systemd-nspawn that runs in the agent's uid range, once it has forked the
/// payload. Until then nspawn is still setting it up (its capabilities,
/// no_new_privs and seccomp filter come last), so it is not yet the container
/// whose confinement the operator's shell copies.
fn container_init(nspawn_pid: i32, uid_base: u32) -> Option<i32> {
    let pids = sys::container_pids(uid_base, None);
    let init = pids
        .iter()
        .copied()
        .find(|pid| sys::parent_pid(*pid) == Some(nspawn_pid))?;
    pids.iter()
        .any(|pid| sys::parent_pid(*pid) == Some(init))
        .then_some(init)
}

/// How long a launch waits for the container to be up before it reports the agent running anyway.
const CONTAINER_UP: Duration = Duration::from_secs(10);

/// The shell that `command_inside` runs first: into the state dir, then the program.
const ENTER_SCRIPT: &str = r#"cd /state && exec "$@""#;

/// `nsenter` into every namespace of the container's init, as uid 0 inside.
///
/// nsenter joins the user namespace first, so it becomes uid 0 of the
/// container (its uid base on the host) before the other namespaces; the
/// root directory is the init's (the container tree), and it forks into the
/// container's PID namespace, so the program is a process of the container
/// and dies with it.
fn nsenter_args(init: i32, argv: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--target".into(),
        init.to_string().into(),
        "--all".into(),
        "--root".into(),
        "--wd".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        ENTER_SCRIPT.into(),
        "sh".into(),
    ];
    args.extend(argv.iter().map(OsString::from));
    args
}

/// One bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bind {
    src: PathBuf,
    dst: PathBuf,
    writable: bool,
    file: bool,
}

impl Bind {
    fn dir(src: impl Into<PathBuf>, dst: impl Into<PathBuf>, writable: bool) -> Self {
        Self {
            src: src.into(),
            dst: dst.into(),
            writable,
            file: false,
        }
    }

    /// `--bind[-ro]=SRC:DST`, with `\` and `:` escaped as nspawn expects.
    fn arg(&self) -> OsString {
        let mut arg = OsString::from(if self.writable {
            "--bind="
        } else {
            "--bind-ro="
        });
        arg.push(escape(&self.src));
        arg.push(":");
        arg.push(escape(&self.dst));
        arg
    }
}

fn escape(path: &Path) -> OsString {
    let mut out = Vec::new();
    for b in path.as_os_str().as_bytes() {
        if matches!(b, b'\\' | b':') {
            out.push(b'\\');
        }
        out.push(*b);
    }
    OsString::from_vec(out)
}

/// What `prepare` hands to the spawn.
struct Prepared {
    args: Vec<OsString>,
    root_id: (u64, u64),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

fn canonical(path: &Path) -> Result<PathBuf, RuntimeError> {
    fs::canonicalize(path).map_err(io_err(format!("could not resolve {}", path.display())))
}

/// Sets ownership and binds up, builds the root tree and the nspawn command line.
fn prepare(spec: &LaunchSpec, online: bool) -> Result<Prepared, RuntimeError> {
    let base = spec.uid_base;
    check_uid_base(base)?;
    let mut links = Vec::new();
    let mut binds = host_system_binds(&mut links);

    own_dir(&spec.state_dir, base, &spec.stop)?;
    binds.push(Bind::dir(canonical(&spec.state_dir)?, STATE, true));
    check_socket(&spec.sock)?;
    binds.push(Bind::dir(
        canonical(&spec.sock_dir)?,
        Paths::CONTAINER_SOCK_DIR,
        true,
    ));

    let harness_name = spec
        .harness_bin
        .file_name()
        .ok_or_else(|| RuntimeError::Io {
            what: format!(
                "the harness path {} names no file",
                spec.harness_bin.display()
            ),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
    let harness = Path::new(HIVE_BIN).join(harness_name);
    binds.push(Bind {
        src: canonical(&spec.harness_bin)?,
        dst: harness.clone(),
        writable: false,
        file: true,
    });

    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut hive = vec![
        (
            "HIVE_AGENT_SOCK".to_owned(),
            path(&Paths::container_agent_sock()),
        ),
        ("HIVE_AGENT_STATE".to_owned(), STATE.to_owned()),
        ("HIVE_AGENT_NAME".to_owned(), spec.name.as_str().to_owned()),
        ("HOME".to_owned(), STATE.to_owned()),
    ];
    if let Some(claude) = &spec.claude_bin {
        let (dir, inside) = claude_layout(claude)?;
        binds.push(Bind::dir(dir, CLAUDE_DIR, false));
        hive.push(("HIVE_CLAUDE_BIN".to_owned(), path(&inside)));
    }
    if let Some(repos) = &spec.config_repos {
        // The whole directory, so a repo made while the manager runs shows up at once.
        own_dir(repos, base, &spec.stop)?;
        binds.push(Bind::dir(
            canonical(repos)?,
            Paths::CONTAINER_CONFIG_REPOS,
            true,
        ));
        hive.push((
            "HIVE_CONFIG_REPOS".to_owned(),
            Paths::CONTAINER_CONFIG_REPOS.to_owned(),
        ));
    }

    sys::check_env(&spec.env)?;
    let basics = [
        ("PATH", PATH_INSIDE),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let env = sys::merge_env(&[
        &basics,
        &sys::inherited_env(INHERITED_ENV),
        &spec.env,
        &hive,
    ]);
    let tree = rootfs::Tree {
        hostname: spec.name.container(),
        links,
        mountpoints: binds.iter().map(|b| (b.dst.clone(), b.file)).collect(),
        env: env_file(&env),
        resolv_conf: net::resolv_conf(online),
    };
    rootfs::build(&spec.rootfs, base, &tree).map_err(io_err(format!(
        "could not build the container root {}",
        spec.rootfs.display()
    )))?;
    let root = canonical(&spec.rootfs)?;
    let meta = fs::metadata(&root).map_err(io_err(format!("could not stat {}", root.display())))?;
    Ok(Prepared {
        args: nspawn_args(&spec.name.container(), &root, base, &binds, &harness),
        root_id: (meta.dev(), meta.ino()),
    })
}

/// The host's /usr read-only, plus the merged-usr links (or binds, on a split-usr host) and CA certificates.
fn host_system_binds(links: &mut Vec<(PathBuf, PathBuf)>) -> Vec<Bind> {
    let mut binds = vec![Bind::dir("/usr", "/usr", false)];
    for name in MERGED_USR {
        let host = Path::new("/").join(name);
        match fs::symlink_metadata(&host) {
            Ok(m) if m.is_symlink() => {
                if let Ok(target) = fs::read_link(&host) {
                    links.push((host, target));
                }
            }
            Ok(m) if m.is_dir() => binds.push(Bind::dir(&host, &host, false)),
            _ => {}
        }
    }
    // Certificates only, not /etc/ssl as a whole: that holds private keys. And
    // Debian's alternatives, which /usr/bin/awk, editor and others link through.
    for dir in ["/etc/ssl/certs", "/etc/alternatives"] {
        if Path::new(dir).is_dir() {
            binds.push(Bind::dir(dir, dir, false));
        }
    }
    binds
}

/// Checks that the agent's socket is there: `AgentSockets` made its directory
/// the container root's (0700) and bound the socket before the launch.
fn check_socket(sock: &Path) -> Result<(), RuntimeError> {
    let missing = || RuntimeError::Io {
        what: format!(
            "{} is missing or not a socket: bind the agent socket before launching the agent",
            sock.display()
        ),
        source: io::Error::from(io::ErrorKind::NotFound),
    };
    let meta = fs::symlink_metadata(sock).map_err(|_| missing())?;
    if meta.file_type().is_socket() {
        Ok(())
    } else {
        Err(missing())
    }
}

/// The claude CLI's package directory on the host and the binary's path inside.
///
/// npm's `node_modules/.bin/claude` is a symlink into
/// `node_modules/@anthropic-ai/claude-code/bin/`: resolve it, then bind the
/// whole package (the binary may need its siblings), or just the binary's
/// directory when it is not inside a node_modules package.
fn claude_layout(claude: &Path) -> Result<(PathBuf, PathBuf), RuntimeError> {
    let real = canonical(claude)?;
    let bin_dir = real.parent().unwrap_or(Path::new("/"));
    let dir = npm_package_dir(&real).unwrap_or(bin_dir).to_path_buf();
    let inside = Path::new(CLAUDE_DIR).join(real.strip_prefix(&dir).unwrap_or(&real));
    Ok((dir, inside))
}

/// The directory right below `node_modules` (or `node_modules/@scope`) that holds `file`.
fn npm_package_dir(file: &Path) -> Option<&Path> {
    let is_named = |p: Option<&Path>, pred: &dyn Fn(&[u8]) -> bool| {
        p.and_then(Path::file_name)
            .is_some_and(|n| pred(n.as_bytes()))
    };
    let node_modules = |n: &[u8]| n == b"node_modules";
    file.ancestors().skip(1).find(|dir| {
        let parent = dir.parent();
        is_named(parent, &node_modules)
            || (is_named(parent, &|n| n.starts_with(b"@"))
                && is_named(parent.and_then(Path::parent), &node_modules))
    })
}

/// The harness environment as `export NAME='value'` lines for the payload's shell.
fn env_file(vars: &[(String, String)]) -> String {
    vars.iter()
        .map(|(k, v)| format!("export {k}='{}'\n", v.replace('\'', r"'\''")))
        .collect()
}

/// Most processes (and threads) one agent's container may run at once:
/// claude, its MCP servers and the tools it runs need a few hundred.
pub const AGENT_TASKS_MAX: u32 = 4096;

/// The systemd-nspawn arguments (no secrets: those stay in the root-only env file).
fn nspawn_args(
    machine: &str,
    root: &Path,
    base: u32,
    binds: &[Bind],
    harness: &Path,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--quiet",
        // No machined, no transient unit: works where systemd is not PID 1.
        "--register=no",
        "--keep-unit",
        // A stub init as PID 1 reaps claude's children and forwards the stop signal.
        "--as-pid2",
        // Our stdout/stderr (the log file) straight to the payload.
        "--console=pipe",
        "--read-only",
        // The tree is built owned by the range already; nspawn must never chown
        // anything (the host's /usr is bound inside it).
        "--private-users-ownership=off",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--no-new-privileges=yes",
        // No mounts inside: with CAP_SYS_ADMIN the agent bound programs of
        // its own over /usr/bin/bash and the like in the mount namespace the
        // operator's shell enters, and the shell ran them on the operator's
        // terminal. Nor ptrace of a process with more capabilities than its
        // own: the operator's shell begins in a process that holds
        // CAP_SYS_ADMIN (to make its PID namespace), which the agent could
        // otherwise make mount for it. Nor a change of uid: the process bound
        // below is counted per uid, and each uid of the range had a count of
        // its own. The harness and claude need none of them.
        "--drop-capability=CAP_SYS_ADMIN,CAP_SYS_PTRACE,CAP_SETUID,CAP_SETGID",
        // The bounds nspawn gives /tmp: a tmpfs without them takes up to half
        // the host's memory, which the OOM killer cannot take back from the
        // small process that wrote it (it kills the hive's others instead).
        "--tmpfs=/var/tmp:mode=1777,size=10%,nr_inodes=400k",
    ]
    .map(OsString::from)
    .into();
    // The containers share hive-c0re's unit and its TasksMax: without a
    // bound of its own, one agent's fork loop took every task, and hive-c0re
    // could start no git, container or shell. The agent's processes all run
    // as its root (it may not change uid), one count, and it cannot raise a
    // hard limit.
    args.push(format!("--rlimit=RLIMIT_NPROC={AGENT_TASKS_MAX}").into());
    args.push(format!("--kill-signal={STOP_SIGNAL}").into());
    args.push(format!("--machine={machine}").into());
    args.push(format!("--private-users={base}:{UID_RANGE}").into());
    let mut dir = OsString::from("--directory=");
    dir.push(root);
    args.push(dir);
    args.extend(binds.iter().map(Bind::arg));
    args.push(format!("--chdir={STATE}").into());
    args.push("--".into());
    args.extend(["/bin/sh", "-c", PAYLOAD_SCRIPT].map(OsString::from));
    args.push(harness.into());
    args.push("serve".into());
    args
}

/// nspawn's own scratch directory (locks, propagation dirs), made private per container.
const NSPAWN_RUN: &str = "/run/systemd/nspawn";

/// In the forked nspawn, PID 1 of a fresh PID namespace: a private mount namespace
/// whose /proc shows that namespace, since nspawn reaches its children (uid_map
/// and the like) through /proc; and a private tmpfs over /run/systemd/nspawn,
/// since a killed nspawn leaves lock files and directories there that nobody
/// would remove. Runs between fork and exec: raw syscalls only.
fn private_proc() -> io::Result<()> {
    use sys::check_rc as check;
    sys::private_mount_namespace()?;
    // SAFETY: mount with static NUL-terminated strings and null optional arguments.
    unsafe {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        check(libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            flags,
            std::ptr::null(),
        ))?;
        let opts = c"mode=0755,size=1m";
        check(libc::mount(
            c"tmpfs".as_ptr(),
            c"/run/systemd/nspawn".as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            opts.as_ptr().cast(),
        ))
    }
}

#[async_trait::async_trait]
impl Runtime for NspawnRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Nspawn
    }

    fn isolated(&self) -> bool {
        true
    }

    fn agent_uid(&self, uid_base: u32) -> Option<u32> {
        Some(uid_base)
    }

    fn uid_ranges(&self) -> &UidRanges {
        &self.uids
    }

    fn shut_down(&self) {
        if let Some(egress) = &self.egress {
            egress.remove();
        }
    }

    fn memory_bound(&self) -> Result<u64, String> {
        self.memory
            .as_ref()
            .map(|m| m.agent_max())
            .map_err(Clone::clone)
    }

    fn cpu_shared(&self) -> Result<Option<f64>, String> {
        self.cpu.as_ref().map(|c| c.cap()).map_err(Clone::clone)
    }

    fn oom_kills(&self, spec: &LaunchSpec) -> Option<u64> {
        let memory = self.memory.as_ref().ok()?;
        memory.oom_kills(&spec.name.container(), spec.uid_base)
    }

    fn give_to_manager(
        &self,
        path: &Path,
        manager_uid_base: Option<u32>,
    ) -> Result<(), RuntimeError> {
        let Some(base) = manager_uid_base else {
            // No manager yet: its first launch hands it every repo.
            return Ok(());
        };
        check_uid_base(base)?;
        self.uids.hold(base)?;
        owner::shift_tree(path, base).map_err(io_err(format!(
            "could not hand {} to the manager (uid {base})",
            path.display()
        )))
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, RuntimeError> {
        self.uids.hold(spec.uid_base)?;
        // One container per agent, and its tree is about to be rebuilt.
        self.reap_orphans(&spec.name).await?;
        let online = net::host_online();
        let owned = spec.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(&owned, online))
            .await
            .map_err(|e| RuntimeError::Io {
                what: "the launch preparation failed".into(),
                source: io::Error::other(e),
            })??;
        let machine = spec.name.container();
        let memory = match &self.memory {
            Ok(memory) => {
                // A fresh cgroup: its count of OOM kills is this launch's.
                memory.remove(&machine, spec.uid_base);
                Some(memory.for_agent(&machine, spec.uid_base).map_err(|e| {
                    RuntimeError::Unavailable(format!("cannot bound {}'s memory: {e}", spec.name))
                })?)
            }
            Err(_) => None,
        };
        let cpu_err =
            |e| RuntimeError::Unavailable(format!("cannot give {} its CPU share: {e}", spec.name));
        let cpu = match &self.cpu {
            Ok(cpu) => Some(cpu.for_agent(&machine, spec.uid_base).map_err(cpu_err)?),
            Err(_) => None,
        };
        // pasta carries the container's traffic: the CPU it spends on it is
        // the agent's, so the agent's cap and share hold it too.
        let pasta_cpu = cpu
            .as_ref()
            .map(|c| c.try_clone().map_err(cpu_err))
            .transpose()?;
        let cgroups = [memory, cpu];
        // The mount point for the private tmpfs `private_proc` puts there.
        fs::create_dir_all(NSPAWN_RUN).map_err(io_err(format!("could not create {NSPAWN_RUN}")))?;
        let log = sys::open_log(&spec.log)?;
        let log_err = log
            .try_clone()
            .map_err(io_err(format!("could not open {}", spec.log.display())))?;
        self.admit_egress(spec).await?;
        let network = Network::up(
            spec.uid_base,
            &spec.env,
            online,
            self.paths.agent_pasta_pid_file(&spec.name),
            &log,
            pasta_cpu,
        )
        .await?;
        let netns = network.netns_fd();
        let mut cmd = std::process::Command::new(&self.nspawn);
        cmd.args(&prepared.args)
            .env_clear()
            .env("PATH", HOST_PATH)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let daemon = sys::self_pidfd();
        // SAFETY: the hook only makes async-signal-safe syscalls.
        unsafe {
            cmd.pre_exec(move || {
                for cgroup in cgroups.iter().flatten() {
                    cgroup.join()?;
                }
                if libc::setns(netns, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                sys::die_with_parent(libc::SIGTERM, daemon)?;
                private_proc()
            });
        }
        let child = sys::spawn(cmd, true)
            .await
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => RuntimeError::Unavailable(NOT_INSTALLED.into()),
                _ => RuntimeError::Spawn {
                    name: spec.name.clone(),
                    source,
                },
            })?;
        let ended_by = match child.id() {
            Some(pid) => network.hold_until_exit(pid),
            None => Default::default(),
        };
        if let Some(rec) = child.id().and_then(PidRecord::of) {
            let rec = PidRecord {
                uid_base: Some(spec.uid_base),
                root: Some(prepared.root_id),
                ..rec
            };
            sys::write_pid_file(&self.pid_file(&spec.name), rec)?;
            // The agent counts as running once its container is: a shell opened
            // right after the start must find the container to enter.
            let up = sys::wait_until(CONTAINER_UP, || {
                container_init(rec.pid, spec.uid_base).is_some() || !rec.is_running()
            })
            .await;
            if !up {
                tracing::warn!(agent = %spec.name, "the container is not up {CONTAINER_UP:?} after its start");
            }
        }
        Ok(Launched { child, ended_by })
    }

    /// Kills a container a previous daemon left: its nspawn (which takes the
    /// whole PID namespace along), then any process still running as the
    /// container's uids on its root tree (a range this hive holds), and its pasta.
    /// Nothing is asked of machined: containers are never registered there, so
    /// a machine of the same name is not this hive's.
    async fn reap_orphans(&self, name: &AgentName) -> Result<(), RuntimeError> {
        let pid_file = self.pid_file(name);
        if let Some(rec) = sys::read_pid_file(&pid_file)? {
            if rec.is_running() {
                sys::signal_pid(rec.pid, nix::sys::signal::Signal::SIGKILL)?;
                if !sys::wait_until(Duration::from_secs(5), || !rec.is_running()).await {
                    tracing::warn!(agent = %name, pid = rec.pid, "systemd-nspawn still running after SIGKILL");
                }
            }
            // Only in a range this hive holds: processes of another hive's range are never ours.
            match rec.uid_base.map(|base| (base, self.uids.hold(base))) {
                Some((base, Ok(()))) => {
                    sys::kill_container_processes(base, rec.root).await?;
                    net::reap_pasta(&self.paths.agent_pasta_pid_file(name), base).await?;
                }
                Some((base, Err(e))) => {
                    tracing::warn!(agent = %name, base, "left the processes of its old uid range alone: {e}");
                }
                None => {}
            }
        }
        sys::remove_file(&pid_file)
    }

    async fn forget(&self, spec: &LaunchSpec) -> Result<(), RuntimeError> {
        self.reap_orphans(&spec.name).await?;
        if let Ok(memory) = &self.memory {
            memory.remove(&spec.name.container(), spec.uid_base);
        }
        if let Ok(cpu) = &self.cpu {
            cpu.remove(&spec.name.container(), spec.uid_base);
        }
        self.uids.release(spec.uid_base);
        let root = spec.rootfs.clone();
        tokio::task::spawn_blocking(move || rootfs::remove(&root))
            .await
            .map_err(|e| RuntimeError::Io {
                what: "the container root removal failed".into(),
                source: io::Error::other(e),
            })?
            .map_err(io_err(format!(
                "could not remove the container root {}",
                spec.rootfs.display()
            )))
    }

    fn command_inside(
        &self,
        spec: &LaunchSpec,
        what: &InsideCommand,
    ) -> Result<std::process::Command, RuntimeError> {
        let not_running = || RuntimeError::NotRunning(spec.name.clone());
        if what.argv.is_empty() {
            return Err(RuntimeError::Io {
                what: "nothing to run inside the container".into(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        let rec = sys::read_pid_file(&self.pid_file(&spec.name))?
            .filter(PidRecord::is_running)
            .ok_or_else(not_running)?;
        let init = container_init(rec.pid, spec.uid_base).ok_or_else(not_running)?;
        let nsenter = sys::find_tool("nsenter")
            .ok_or_else(|| RuntimeError::Unavailable(NO_NSENTER.into()))?;
        sys::check_env(&what.env)?;
        let confinement = Confinement::of(init).map_err(io_err(format!(
            "could not read the confinement of {}'s container",
            spec.name
        )))?;
        // Inside: a PID namespace of its own, whose end takes along all it
        // started (made while entering the user namespace still gives the
        // CAP_SYS_ADMIN it takes), then the bounding set, which that entry
        // reset, narrowed to the container's (which has none).
        let mut argv: Vec<String> = vec![
            "unshare".into(),
            "--pid".into(),
            "--fork".into(),
            "--kill-child".into(),
            "--".into(),
            "setpriv".into(),
            confinement.bounding_set_arg(),
            "--".into(),
        ];
        argv.extend(what.argv.iter().cloned());
        let container_sock = Paths::container_agent_sock().display().to_string();
        let agent = [
            ("PATH", PATH_INSIDE),
            ("LANG", "C.UTF-8"),
            ("HOME", STATE),
            ("HIVE_AGENT_STATE", STATE),
            ("HIVE_AGENT_SOCK", &*container_sock),
            ("HIVE_AGENT_NAME", spec.name.as_str()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let mut cmd = std::process::Command::new(nsenter);
        cmd.args(nsenter_args(init, &argv))
            .env_clear()
            .envs(sys::merge_env(&[&agent, &what.env]))
            .current_dir("/");
        // SAFETY: `apply` makes raw syscalls only, on data made before the fork.
        unsafe {
            cmd.pre_exec(move || confinement.apply());
        }
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_args_escape_colons_and_backslashes() {
        let bind = Bind::dir("/a:b\\c", "/state", true);
        assert_eq!(bind.arg(), OsString::from("--bind=/a\\:b\\\\c:/state"));
        assert_eq!(
            Bind::dir("/usr", "/usr", false).arg(),
            OsString::from("--bind-ro=/usr:/usr")
        );
    }

    #[test]
    fn args_end_with_the_payload_and_carry_no_environment() {
        let binds = [Bind::dir("/s", STATE, true)];
        let args = nspawn_args(
            "h-a",
            Path::new("/r"),
            65536,
            &binds,
            Path::new("/opt/hive/bin/hive-ag3nt"),
        );
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(text.contains(&"--private-users=65536:65536".to_owned()));
        assert!(text.contains(&"--directory=/r".to_owned()));
        assert!(!text.iter().any(|a| a.starts_with("--setenv")));
        let tail = &text[text.len() - 6..];
        assert_eq!(
            tail,
            [
                "--",
                "/bin/sh",
                "-c",
                PAYLOAD_SCRIPT,
                "/opt/hive/bin/hive-ag3nt",
                "serve"
            ]
        );
    }

    #[test]
    fn env_file_round_trips_through_sh() {
        let vars = vec![("A".to_owned(), "it's \"x\" $HOME `id` \\ \n y".to_owned())];
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("{}printf %s \"$A\"", env_file(&vars))])
            .output()
            .expect("sh runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), vars[0].1);
    }

    #[test]
    fn npm_layout_binds_the_package() {
        let p = Path::new("/x/node_modules/@anthropic-ai/claude-code/bin/claude.exe");
        assert_eq!(
            npm_package_dir(p),
            Some(Path::new("/x/node_modules/@anthropic-ai/claude-code"))
        );
        let q = Path::new("/x/node_modules/claude/cli.js");
        assert_eq!(
            npm_package_dir(q),
            Some(Path::new("/x/node_modules/claude"))
        );
        assert_eq!(npm_package_dir(Path::new("/root/.local/bin/claude")), None);
    }

    #[test]
    fn nsenter_enters_everything_then_the_state_dir() {
        let argv = ["/bin/bash".to_owned(), "-l".to_owned()];
        let text: Vec<String> = nsenter_args(42, &argv)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            text,
            [
                "--target",
                "42",
                "--all",
                "--root",
                "--wd",
                "--",
                "/bin/sh",
                "-c",
                ENTER_SCRIPT,
                "sh",
                "/bin/bash",
                "-l"
            ]
        );
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", ENTER_SCRIPT, "sh", "/bin/sh", "-c", "pwd"])
            .output()
            .expect("sh runs");
        // No /state on a build host: the script must fail rather than run elsewhere.
        if !Path::new(STATE).is_dir() {
            assert!(!out.status.success());
        }
    }
}
