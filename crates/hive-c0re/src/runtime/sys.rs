//! Host-side process plumbing shared by both runtimes: the spawner thread,
//! parent-death signals, pid files, and killing what a previous daemon left.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::procfs;
use crate::runtime::RuntimeError;

/// Size of an agent's user namespace range (uid and gid).
pub const UID_RANGE: u32 = 65536;

/// One spawn request for the spawner thread.
struct Job {
    cmd: std::process::Command,
    new_pid_ns: bool,
    handle: tokio::runtime::Handle,
    reply: tokio::sync::oneshot::Sender<io::Result<tokio::process::Child>>,
}

static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// Spawns `cmd` from the spawner thread; with `new_pid_ns` the child is PID 1 of a new PID namespace.
///
/// Why a dedicated thread: PR_SET_PDEATHSIG fires when the *thread* that forked
/// the child ends, and tokio retires idle blocking-pool threads, which would kill a
/// healthy harness. The spawner thread lives as long as the daemon. It is also the
/// only thread whose "PID namespace for children" is ever changed, so no other
/// spawn of the daemon can land in a container's namespace.
pub(crate) async fn spawn(
    cmd: std::process::Command,
    new_pid_ns: bool,
) -> io::Result<tokio::process::Child> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let job = Job {
        cmd,
        new_pid_ns,
        handle: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()?
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped a request"))?
}

fn spawner() -> io::Result<mpsc::Sender<Job>> {
    let mut slot = SPAWNER
        .lock()
        .map_err(|_| io::Error::other("the spawner lock is poisoned"))?;
    if let Some(tx) = slot.as_ref() {
        return Ok(tx.clone());
    }
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("hive-spawner".into())
        .spawn(move || serve_jobs(rx))?;
    *slot = Some(tx.clone());
    Ok(tx)
}

fn serve_jobs(rx: mpsc::Receiver<Job>) {
    // Our own PID namespace, to go back to after a container spawn.
    let home = fs::File::open("/proc/thread-self/ns/pid").ok();
    let mut away = false;
    for job in rx {
        // This thread must outlive every child it forked (their parent-death
        // signal is its end): a spawn that panics fails alone, logged by the
        // hook, and the launch that asked sees an error (its agent's crash).
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_job(
                job.cmd,
                job.new_pid_ns,
                home.as_ref(),
                &mut away,
                &job.handle,
            )
        }));
        let result = ran.unwrap_or_else(|payload| {
            // It may have left the thread in a container's namespace: go home first next time.
            away = true;
            let panic = crate::panics::Panic::from_payload(payload);
            Err(io::Error::other(format!(
                "the spawn panicked (a bug of hive-c0re): {}",
                panic.message
            )))
        });
        if let Err(Ok(mut orphan)) = job.reply.send(result) {
            // The launch was cancelled: nobody would ever wait on this child.
            let _ = orphan.start_kill();
        }
    }
}

fn run_job(
    cmd: std::process::Command,
    new_pid_ns: bool,
    home: Option<&fs::File>,
    away: &mut bool,
    handle: &tokio::runtime::Handle,
) -> io::Result<tokio::process::Child> {
    // A new PID namespace can only be made from our own one (the kernel refuses
    // EINVAL otherwise), and plain spawns must land in our own one too.
    if *away {
        let home = home.ok_or_else(|| {
            io::Error::other("cannot return the spawner thread to its PID namespace")
        })?;
        // SAFETY: setns on a valid namespace fd of our own active PID namespace.
        if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
            return Err(io::Error::last_os_error());
        }
        *away = false;
    }
    if new_pid_ns {
        // SAFETY: unshare(CLONE_NEWPID) only changes the namespace this thread's future children get.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            return Err(io::Error::last_os_error());
        }
        *away = true;
    }
    let _entered = handle.enter();
    tokio::process::Command::from(cmd).spawn()
}

/// The daemon's own pidfd, so a freshly forked child can tell whether the daemon already died.
pub(crate) fn self_pidfd() -> Option<RawFd> {
    static FD: OnceLock<Option<OwnedFd>> = OnceLock::new();
    FD.get_or_init(|| {
        // SAFETY: pidfd_open on our own pid; a non-negative result is a new fd (close-on-exec) we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .as_ref()
    .map(AsRawFd::as_raw_fd)
}

/// In a freshly forked child: let the kernel's same-page merging (KSM) share
/// this process's identical pages, zero pages above all, with other processes
/// that opted in; the setting survives exec. Best effort: a kernel without
/// `PR_SET_MEMORY_MERGE` (before 6.4) refuses it, and the process merely keeps
/// its pages to itself. It only saves memory once ksmd runs ([`ksm_running`]).
///
/// Runs between fork and exec: one raw syscall.
pub(crate) fn merge_identical_pages() {
    // SAFETY: prctl with integer arguments only.
    let _ = unsafe { libc::prctl(libc::PR_SET_MEMORY_MERGE, 1, 0, 0, 0) };
}

/// Whether the kernel's same-page merging daemon (ksmd) is running.
pub(crate) fn ksm_running() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/ksm/run").is_ok_and(|s| s.trim() == "1")
}

/// In a freshly forked child: become `uid` (and the like-numbered group, no
/// supplementary groups), for good. Call it before [`die_with_parent`]: a
/// change of uid disarms the parent-death signal.
///
/// Runs between fork and exec: raw syscalls only.
pub(crate) fn become_user(uid: u32) -> io::Result<()> {
    // SAFETY: plain syscalls on integers; setgroups with a zero count reads no memory.
    unsafe {
        check_rc(libc::setgroups(0, std::ptr::null()))?;
        check_rc(libc::setresgid(uid, uid, uid))?;
        check_rc(libc::setresuid(uid, uid, uid))
    }
}

/// A raw syscall's return code as a result: 0 is success, else errno. Safe
/// between fork and exec.
pub(crate) fn check_rc(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// In a freshly forked child: a mount namespace of its own, recursively a
/// slave of the host's, so nothing mounted in it propagates back to the host.
/// Runs between fork and exec: raw syscalls only.
pub(crate) fn private_mount_namespace() -> io::Result<()> {
    let none = std::ptr::null();
    // SAFETY: unshare and mount with a static NUL-terminated path and null optional arguments.
    unsafe {
        check_rc(libc::unshare(libc::CLONE_NEWNS))?;
        check_rc(libc::mount(
            none,
            c"/".as_ptr(),
            none,
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ))
    }
}

/// In a freshly forked child: no program it executes gains privileges (setuid
/// bits, file capabilities). Runs between fork and exec.
pub(crate) fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_NO_NEW_PRIVS and constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In a freshly forked child: arm a parent-death signal, and fail if the daemon is already gone.
///
/// Runs between fork and exec, so it uses raw syscalls only (async-signal-safe, no allocation).
pub(crate) fn die_with_parent(signal: libc::c_int, daemon_pidfd: Option<RawFd>) -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG and a valid signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(fd) = daemon_pidfd {
        // A pidfd polls readable once its process has exited: then the signal above
        // will never come, so we must not start.
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        if unsafe { libc::poll(&mut pfd, 1, 0) } > 0 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// What a pid file records about a launched harness (or container).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PidRecord {
    /// Host pid of the launched child.
    pub pid: i32,
    /// Its start time in clock ticks after boot, so a reused pid is never mistaken for it.
    pub start: u64,
    /// First host uid of the container's user namespace (nspawn only).
    pub uid_base: Option<u32>,
    /// Device and inode of the container's root directory (nspawn only).
    pub root: Option<(u64, u64)>,
}

impl PidRecord {
    /// The record of a child just spawned, if it is still alive.
    pub fn of(pid: u32) -> Option<Self> {
        let pid = i32::try_from(pid).ok()?;
        Some(Self {
            pid,
            start: start_time(pid)?,
            ..Self::default()
        })
    }

    fn to_line(self) -> String {
        let mut line = format!("pid={} start={}", self.pid, self.start);
        if let Some(base) = self.uid_base {
            line.push_str(&format!(" uid_base={base}"));
        }
        if let Some((dev, ino)) = self.root {
            line.push_str(&format!(" root_dev={dev} root_ino={ino}"));
        }
        line.push('\n');
        line
    }

    fn parse(text: &str) -> Option<Self> {
        let mut rec = Self::default();
        let (mut dev, mut ino) = (None, None);
        for field in text.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            match key {
                "pid" => rec.pid = value.parse().ok()?,
                "start" => rec.start = value.parse().ok()?,
                "uid_base" => rec.uid_base = Some(value.parse().ok()?),
                "root_dev" => dev = Some(value.parse().ok()?),
                "root_ino" => ino = Some(value.parse().ok()?),
                _ => {}
            }
        }
        rec.root = dev.zip(ino);
        (rec.pid > 1).then_some(rec)
    }

    /// True while the recorded process runs (same pid, same start time, not a zombie).
    pub fn is_running(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Writes a pid file atomically (temporary file, then rename).
pub(crate) fn write_pid_file(path: &Path, rec: PidRecord) -> Result<(), RuntimeError> {
    let what = || format!("could not write the pid file {}", path.display());
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
            what: what(),
            source,
        })?;
    }
    let tmp = path.with_extension("pid.tmp");
    fs::write(&tmp, rec.to_line()).map_err(|source| RuntimeError::Io {
        what: what(),
        source,
    })?;
    fs::rename(&tmp, path).map_err(|source| RuntimeError::Io {
        what: what(),
        source,
    })
}

/// Reads a pid file; a missing or garbled file means there is nothing to reap.
pub(crate) fn read_pid_file(path: &Path) -> Result<Option<PidRecord>, RuntimeError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let rec = PidRecord::parse(&text);
            if rec.is_none() {
                tracing::warn!(path = %path.display(), "ignoring a garbled pid file");
            }
            Ok(rec)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RuntimeError::Io {
            what: format!("could not read the pid file {}", path.display()),
            source,
        }),
    }
}

/// Removes a pid file; a missing one is fine.
pub(crate) fn remove_file(path: &Path) -> Result<(), RuntimeError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RuntimeError::Io {
            what: format!("could not remove {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Start time (clock ticks after boot) of a live, non-zombie process.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    procfs::stat(pid).filter(|s| !s.zombie).map(|s| s.start)
}

/// Sends `signal` to a process, treating "already gone" as done.
pub(crate) fn signal_pid(pid: i32, signal: Signal) -> Result<(), RuntimeError> {
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(RuntimeError::Io {
            what: format!("could not signal process {pid}"),
            source: e.into(),
        }),
    }
}

/// Sends `signal` to a process group, treating "already gone" as done.
pub(crate) fn signal_group(pgid: i32, signal: Signal) -> Result<(), RuntimeError> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(RuntimeError::Io {
            what: format!("could not signal process group {pgid}"),
            source: e.into(),
        }),
    }
}

/// Kills the process group a process-runtime pid file names, if it can still be ours.
///
/// A pid number stays allocated while any process uses it as its group id, so a
/// group whose leader is gone can only be the recorded one; a process (even a
/// zombie) with a different start time means the old group died and the number
/// was reused.
pub(crate) fn kill_recorded_group(rec: &PidRecord) -> Result<(), RuntimeError> {
    match procfs::stat(rec.pid) {
        Some(s) if s.start != rec.start => Ok(()),
        // Our leader, alive or a zombie, or no leader at all: the group can only be ours.
        _ => signal_group(rec.pid, Signal::SIGKILL),
    }
}

/// True while any live (non-zombie) process is in process group `pgid`.
pub(crate) fn group_alive(pgid: i32) -> bool {
    procfs::pids().any(|pid| procfs::stat(pid).is_some_and(|s| !s.zombie && s.pgrp == pgid))
}

/// Polls until `done` holds or `limit` passes; returns whether it held.
pub(crate) async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Host pids of live processes whose real uid lies in `[uid_base, uid_base + 65536)` and,
/// when `root` is given, whose root directory is that inode (the container's tree).
pub(crate) fn container_pids(uid_base: u32, root: Option<(u64, u64)>) -> Vec<i32> {
    procfs::pids()
        .filter(|pid| {
            real_uid(*pid).is_some_and(|uid| uid >= uid_base && uid - uid_base < UID_RANGE)
        })
        .filter(|pid| {
            root.is_none_or(|want| {
                fs::metadata(format!("/proc/{pid}/root")).is_ok_and(|m| (m.dev(), m.ino()) == want)
            })
        })
        .collect()
}

/// The parent pid of a process.
pub(crate) fn parent_pid(pid: i32) -> Option<i32> {
    procfs::stat(pid).map(|s| s.ppid)
}

/// Real uid of a live, non-zombie process.
pub(crate) fn real_uid(pid: i32) -> Option<u32> {
    let status = procfs::status(pid).ok()?;
    if status.zombie() {
        return None;
    }
    status.real_uid()
}

/// SIGKILLs the processes `container_pids` finds until none is left (bounded, as they may fork meanwhile).
pub(crate) async fn kill_container_processes(
    uid_base: u32,
    root: Option<(u64, u64)>,
) -> Result<(), RuntimeError> {
    for _ in 0..100 {
        let pids = container_pids(uid_base, root);
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            signal_pid(pid, Signal::SIGKILL)?;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(RuntimeError::Io {
        what: format!("processes of uid range {uid_base}.. keep running after SIGKILL"),
        source: io::Error::from(io::ErrorKind::TimedOut),
    })
}

/// An executable `name` on PATH or in the usual system directories.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    find_tool_in(
        &tool_dirs(&std::env::var_os("PATH").unwrap_or_default()),
        name,
    )
}

/// Where the runtimes look for their tools: `path` (a PATH value), then the usual system directories.
pub fn tool_dirs(path: &std::ffi::OsStr) -> Vec<PathBuf> {
    std::env::split_paths(path)
        .chain(["/usr/bin", "/bin", "/usr/sbin"].map(PathBuf::from))
        .collect()
}

/// The first executable `name` in `dirs`.
pub fn find_tool_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Checks environment names (`[A-Za-z_][A-Za-z0-9_]*`) and values (no NUL) before they reach a child.
pub(crate) fn check_env(vars: &[(String, String)]) -> Result<(), RuntimeError> {
    for (key, value) in vars {
        let mut chars = key.chars();
        let name_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok || value.contains('\0') {
            return Err(RuntimeError::Io {
                what: format!(
                    "environment variable {key:?} cannot be passed to a harness: use a name of letters, digits and _ and a value without NUL"
                ),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
    }
    Ok(())
}

/// Flattens environment layers into one list; a later layer overrides an earlier one.
pub(crate) fn merge_env(layers: &[&[(String, String)]]) -> Vec<(String, String)> {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (key, value) in layers.iter().flat_map(|layer| layer.iter()) {
        merged.retain(|(k, _)| k != key);
        merged.push((key.clone(), value.clone()));
    }
    merged
}

/// The daemon's values of the named variables that are set.
pub(crate) fn inherited_env(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|n| Some(((*n).to_owned(), std::env::var(n).ok()?)))
        .collect()
}

/// Opens the harness log for appending (created 0640 when missing).
pub(crate) fn open_log(path: &Path) -> Result<fs::File, RuntimeError> {
    use std::os::unix::fs::OpenOptionsExt;
    let what = || format!("could not open the harness log {}", path.display());
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| RuntimeError::Io {
            what: what(),
            source,
        })?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| RuntimeError::Io {
            what: what(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_record_round_trips() {
        let rec = PidRecord {
            pid: 42,
            start: 7,
            uid_base: Some(65536),
            root: Some((3, 9)),
        };
        assert_eq!(PidRecord::parse(&rec.to_line()), Some(rec));
        let plain = PidRecord {
            pid: 42,
            start: 7,
            ..PidRecord::default()
        };
        assert_eq!(PidRecord::parse(&plain.to_line()), Some(plain));
        assert_eq!(PidRecord::parse("garbage"), None);
        assert_eq!(
            PidRecord::parse("pid=1 start=3"),
            None,
            "pid 1 is never ours to kill"
        );
    }

    #[test]
    fn start_time_identifies_this_process() {
        let me = i32::try_from(std::process::id()).expect("pid fits");
        let start = start_time(me).expect("we are alive");
        assert!(
            PidRecord {
                pid: me,
                start,
                ..PidRecord::default()
            }
            .is_running()
        );
        assert!(
            !PidRecord {
                pid: me,
                start: start + 1,
                ..PidRecord::default()
            }
            .is_running()
        );
    }

    #[test]
    fn env_names_are_checked_and_layers_override() {
        let ok = vec![("A_1".to_owned(), "x y".to_owned())];
        assert!(check_env(&ok).is_ok());
        assert!(check_env(&[("1A".to_owned(), String::new())]).is_err());
        assert!(check_env(&[("A=B".to_owned(), String::new())]).is_err());
        assert!(check_env(&[("A".to_owned(), "a\0b".to_owned())]).is_err());
        let top = vec![
            ("A_1".to_owned(), "z".to_owned()),
            ("B".to_owned(), "b".to_owned()),
        ];
        assert_eq!(
            merge_env(&[&ok, &top]),
            vec![
                ("A_1".to_owned(), "z".to_owned()),
                ("B".to_owned(), "b".to_owned())
            ]
        );
    }
}
