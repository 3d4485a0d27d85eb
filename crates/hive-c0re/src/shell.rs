//! The operator's shell in an agent's container: a PTY whose other end is an
//! interactive shell the runtime starts inside the container (uid 0 of the
//! agent's user namespace, in `/state`, as confined as the agent's own
//! processes and as PID 1 of a PID namespace of its own; see
//! `Runtime::command_inside`).
//!
//! The agent writes its home (`/state`): the shell reads no startup file
//! there (`--noprofile --norc`, no readline init file) and writes no history.
//!
//! Two surfaces use it: the dashboard over a WebSocket (`dashboard/shell.rs`)
//! and host.sock's `shell` verb (`host_sock/shell.rs`, which `hive-c0re shell`
//! speaks). A [`Session`] owns the PTY's master end and the shell's process;
//! [`Session::run`] moves bytes between the PTY and two channels until the
//! shell exits, the client goes away or the daemon stops. However it ends,
//! every process of the shell's session (and every descendant of the shell)
//! gets SIGHUP, then SIGKILL: nothing started from the shell outlives it.
//!
//! The shell is the session leader of a new session with the PTY as its
//! controlling terminal (setsid + TIOCSCTTY between fork and exec), so job
//! control, Ctrl-C and SIGWINCH on resize work as in any terminal.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hive_sh4re::shell::{DEFAULT_COLS, DEFAULT_ROWS, DEFAULT_TERM, valid_term};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::procfs;
use crate::runtime::InsideCommand;

/// Bytes typed but not yet taken by the PTY before input stops being read.
const MAX_PENDING: usize = 64 * 1024;
/// How long the shell's last output may keep coming after it exited.
const DRAIN: Duration = Duration::from_millis(200);
/// Between SIGHUP and SIGKILL for what is left of a session.
const HANGUP_GRACE: Duration = Duration::from_millis(300);
/// The sentence a client gets when the daemon stops under its shell.
pub const STOPPING: &str = "hive-c0re is stopping: the shell was closed";
/// The prompt: `root@h-alice:/state# ` in a container.
const PS1: &str = r"\u@\h:\w\$ ";

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

impl WinSize {
    /// A size from a client's numbers: missing or zero means the default, at most 1000 each way.
    pub fn new(rows: Option<u16>, cols: Option<u16>) -> Self {
        let fit = |n: Option<u16>, default: u16| match n {
            Some(0) | None => default,
            Some(n) => n.min(1000),
        };
        Self {
            rows: fit(rows, DEFAULT_ROWS),
            cols: fit(cols, DEFAULT_COLS),
        }
    }

    fn raw(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

impl Default for WinSize {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// What a client sends to the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Bytes typed.
    Data(Vec<u8>),
    /// The client's terminal changed size.
    Resize(WinSize),
}

/// What the shell sends to its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes the PTY printed.
    Data(Vec<u8>),
    /// The shell exited with this code (128+N when signal N killed it); the last output.
    Exit(i32),
    /// The daemon ended the shell for this reason; the last output.
    Closed(String),
}

/// What the operator's shell runs: an interactive shell that reads none of the
/// agent's startup files and keeps no history, with `term` (checked) as TERM.
pub fn operator_command(term: Option<&str>) -> InsideCommand {
    let term = term.filter(|t| valid_term(t)).unwrap_or(DEFAULT_TERM);
    InsideCommand {
        argv: operator_shell(),
        env: vec![
            ("TERM".to_owned(), term.to_owned()),
            ("PS1".to_owned(), PS1.to_owned()),
            // Readline would read the agent's ~/.inputrc, whose macros type commands.
            ("INPUTRC".to_owned(), "/dev/null".to_owned()),
            // Empty: bash keeps no history file in the agent's home.
            ("HISTFILE".to_owned(), String::new()),
        ],
    }
}

/// An interactive bash that reads no startup file where the host has bash
/// (containers share the host's /usr), else `sh -i` (which reads only `$ENV`, unset).
fn operator_shell() -> Vec<String> {
    let argv: &[&str] = if Path::new("/bin/bash").exists() {
        &["/bin/bash", "--noprofile", "--norc", "-i"]
    } else {
        &["/bin/sh", "-i"]
    };
    argv.iter().map(|a| (*a).to_owned()).collect()
}

/// A shell on a PTY: the master end, the shell's process, and the guard that
/// kills whatever is left of its session.
#[derive(Debug)]
pub struct Session {
    master: AsyncFd<OwnedFd>,
    child: tokio::process::Child,
    guard: SessionGuard,
}

impl Session {
    /// Starts `cmd` as the leader of a new session on a new PTY of `size`.
    pub fn spawn(cmd: std::process::Command, size: WinSize) -> io::Result<Self> {
        let (master, slave) = open_pty(size)?;
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                // stdin is the PTY's slave end by now: make it the controlling terminal.
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // Our copies of the slave end go with the command, so the PTY reports
        // end of file once the shell and its children have closed theirs.
        drop(cmd);
        let leader = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| io::Error::other("the shell exited before it started"))?;
        // SAFETY: `master` owns a valid fd, which nothing replaces or closes while the AsyncFd holds it.
        let master = unsafe { AsyncFd::register(master)? };
        Ok(Self {
            master,
            child,
            guard: SessionGuard {
                leader,
                armed: true,
            },
        })
    }

    /// The host pid of the session's leader (also its session id).
    pub fn leader(&self) -> i32 {
        self.guard.leader
    }

    /// Moves bytes between the PTY and the client until the shell exits (→
    /// [`Output::Exit`]), `input` closes (the client went away), `output` is
    /// dropped, or `stop` fires (→ [`Output::Closed`]). Then ends the session's
    /// processes. Returns the shell's exit code when it exited on its own.
    pub async fn run(
        self,
        mut input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Output>,
        stop: CancellationToken,
    ) -> Option<i32> {
        let Self {
            master,
            mut child,
            mut guard,
        } = self;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        let mut pty_open = true;
        let end = loop {
            tokio::select! {
                _ = stop.cancelled() => break End::Closed(STOPPING.to_owned()),
                status = child.wait() => break End::Exited(status),
                ready = master.readable(), if pty_open => {
                    let Ok(mut ready) = ready else {
                        pty_open = false;
                        continue;
                    };
                    match ready.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), &mut buf)?)) {
                        Ok(Ok(0)) => pty_open = false,
                        Ok(Ok(n)) => {
                            if output.send(Output::Data(buf[..n].to_vec())).await.is_err() {
                                break End::ClientGone;
                            }
                        }
                        // EIO: every slave end is closed (the shell is gone).
                        Ok(Err(_)) => pty_open = false,
                        Err(_would_block) => {}
                    }
                }
                ready = master.writable(), if pty_open && !pending.is_empty() => {
                    let Ok(mut ready) = ready else {
                        pending.clear();
                        continue;
                    };
                    match ready.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), &pending)?)) {
                        Ok(Ok(n)) => {
                            pending.drain(..n);
                        }
                        Ok(Err(_)) => pending.clear(),
                        Err(_would_block) => {}
                    }
                }
                msg = input.recv(), if pending.len() < MAX_PENDING => match msg {
                    None => break End::ClientGone,
                    Some(Input::Data(bytes)) => pending.extend_from_slice(&bytes),
                    Some(Input::Resize(size)) => set_size(master.get_ref(), size),
                },
            }
        };
        let code = match end {
            End::Exited(status) => {
                if pty_open {
                    drain(&master, &output, &mut buf).await;
                }
                guard.end().await;
                let code = match status {
                    Ok(s) => exit_code(s),
                    Err(e) => {
                        tracing::warn!("could not wait for the shell: {e}");
                        -1
                    }
                };
                let _ = output.send(Output::Exit(code)).await;
                Some(code)
            }
            End::ClientGone => {
                guard.end().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                None
            }
            End::Closed(why) => {
                guard.end().await;
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let _ = output.send(Output::Closed(why)).await;
                None
            }
        };
        tracing::info!(pid = guard.leader, ?code, "shell closed");
        code
    }
}

/// Why `run`'s loop ended.
enum End {
    Exited(io::Result<std::process::ExitStatus>),
    ClientGone,
    Closed(String),
}

/// The shell's last output: what the PTY still holds, for a short while.
async fn drain(master: &AsyncFd<OwnedFd>, output: &mpsc::Sender<Output>, buf: &mut [u8]) {
    let deadline = tokio::time::Instant::now() + DRAIN;
    loop {
        let Ok(Ok(mut ready)) = tokio::time::timeout_at(deadline, master.readable()).await else {
            return;
        };
        match ready.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), buf)?)) {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                if output.send(Output::Data(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(_would_block) => {}
        }
    }
}

/// An exit status as a shell reports it: the code, or 128 + the signal.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// A new PTY pair: the master non-blocking, both close-on-exec, the size set.
fn open_pty(size: WinSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    // The slave end straight from the master (no path lookup), else by its name.
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER on a PTY master returns a new fd or -1.
    let peer = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    let slave = if peer >= 0 {
        // SAFETY: `peer` is a fresh fd the kernel just gave us.
        unsafe { OwnedFd::from_raw_fd(peer) }
    } else {
        let name = nix::pty::ptsname_r(&master)?;
        nix::fcntl::open(
            name.as_str(),
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?
    };
    let master = OwnedFd::from(master);
    set_size(&master, size);
    let fl = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL)?;
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_retain(fl) | OFlag::O_NONBLOCK),
    )?;
    Ok((master, slave))
}

/// Sets the PTY's size; the kernel sends SIGWINCH to the shell's foreground job.
fn set_size(master: &OwnedFd, size: WinSize) {
    let ws = size.raw();
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        tracing::debug!(
            "could not resize a shell's PTY: {}",
            io::Error::last_os_error()
        );
    }
}

/// Kills what is left of a shell's session when the session ends, or when
/// it is dropped without ending (a cancelled request, a panic).
#[derive(Debug)]
struct SessionGuard {
    leader: i32,
    armed: bool,
}

impl SessionGuard {
    /// SIGHUP (and SIGCONT, for stopped jobs) to every process of the session,
    /// then SIGKILL to whatever is still there after a grace.
    async fn end(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        let leader = self.leader;
        let pids = session_pids(leader);
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            signal(*pid, Signal::SIGHUP);
            signal(*pid, Signal::SIGCONT);
        }
        let deadline = tokio::time::Instant::now() + HANGUP_GRACE;
        while tokio::time::Instant::now() < deadline && !session_pids(leader).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..200 {
            let left = session_pids(leader);
            if left.is_empty() {
                return;
            }
            for pid in left {
                signal(pid, Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(
            session = leader,
            "processes of a shell session survive SIGKILL"
        );
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.armed {
            for pid in session_pids(self.leader) {
                signal(pid, Signal::SIGKILL);
            }
        }
    }
}

fn signal(pid: i32, sig: Signal) {
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, "could not send {sig} to a shell process: {e}"),
    }
}

/// Live processes of session `sid` (whose leader had pid `sid`), plus every
/// live descendant of the leader that moved to a session of its own.
///
/// A pid stays allocated while a process uses it as its session id, so the
/// number cannot name another session while any of these live.
pub fn session_pids(sid: i32) -> Vec<i32> {
    // Never our own session, init's, or nonsense.
    let own = nix::unistd::getsid(None).map(Pid::as_raw).unwrap_or(0);
    if sid <= 1 || sid == own {
        return Vec::new();
    }
    let mut members = Vec::new();
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in procfs::pids() {
        let Some(st) = procfs::stat(pid) else {
            continue;
        };
        if st.zombie {
            continue;
        }
        if st.session == sid {
            members.push(pid);
        }
        children.entry(st.ppid).or_default().push(pid);
    }
    let mut stack = vec![sid];
    while let Some(p) = stack.pop() {
        for c in children.remove(&p).unwrap_or_default() {
            if !members.contains(&c) {
                members.push(c);
            }
            stack.push(c);
        }
    }
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> std::process::Command {
        let mut c = std::process::Command::new("/bin/sh");
        c.args(["-c", script]);
        c
    }

    /// Collects output until `done` holds or the session ends.
    async fn collect(rx: &mut mpsc::Receiver<Output>, done: impl Fn(&str) -> bool) -> String {
        let mut text = String::new();
        while let Ok(Some(o)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            match o {
                Output::Data(d) => text.push_str(&String::from_utf8_lossy(&d)),
                Output::Exit(c) => text.push_str(&format!("<exit {c}>")),
                Output::Closed(w) => text.push_str(&format!("<closed {w}>")),
            }
            if done(&text) {
                break;
            }
        }
        text
    }

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!(WinSize::new(None, Some(0)), WinSize { rows: 24, cols: 80 });
        assert_eq!(
            WinSize::new(Some(5000), Some(132)),
            WinSize {
                rows: 1000,
                cols: 132
            }
        );
    }

    #[tokio::test]
    async fn a_shell_has_a_terminal_its_size_and_an_exit_code() {
        let s = Session::spawn(
            sh("stty size; tty -s && echo tty-ok; read line; echo got:$line; exit 3"),
            WinSize { rows: 33, cols: 99 },
        )
        .unwrap();
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let run = tokio::spawn(s.run(in_rx, out_tx, CancellationToken::new()));
        let text = collect(&mut out_rx, |t| t.contains("tty-ok")).await;
        assert!(text.contains("33 99"), "{text:?}");
        in_tx.send(Input::Data(b"hello\n".to_vec())).await.unwrap();
        let text = collect(&mut out_rx, |t| t.contains("<exit")).await;
        assert!(text.contains("got:hello"), "{text:?}");
        assert!(text.ends_with("<exit 3>"), "{text:?}");
        assert_eq!(run.await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn resize_reaches_the_shell() {
        let s = Session::spawn(
            sh("trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done"),
            WinSize::default(),
        )
        .unwrap();
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let run = tokio::spawn(s.run(in_rx, out_tx, CancellationToken::new()));
        collect(&mut out_rx, |t| t.contains("ready")).await;
        in_tx
            .send(Input::Resize(WinSize {
                rows: 40,
                cols: 120,
            }))
            .await
            .unwrap();
        let text = collect(&mut out_rx, |t| t.contains("40 120")).await;
        assert!(text.contains("40 120"), "{text:?}");
        drop(in_tx);
        assert_eq!(run.await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_gone_client_takes_the_whole_session_along() {
        // A background job, a job that ignores SIGHUP, and one in a session of its own.
        let s = Session::spawn(
            sh("sleep 1001 & trap '' HUP; (trap '' HUP; sleep 1002) & setsid sleep 1003 & echo started; wait"),
            WinSize::default(),
        )
        .unwrap();
        let leader = s.leader();
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let run = tokio::spawn(s.run(in_rx, out_tx, CancellationToken::new()));
        collect(&mut out_rx, |t| t.contains("started")).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while session_pids(leader).len() < 4 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = session_pids(leader);
        assert!(
            before.len() >= 4,
            "sh, 3 sleeps (and a subshell): {before:?}"
        );
        drop(in_tx);
        assert_eq!(run.await.unwrap(), None);
        let left: Vec<i32> = before
            .into_iter()
            .filter(|p| procfs::stat(*p).is_some_and(|s| !s.zombie))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[tokio::test]
    async fn stopping_the_daemon_closes_the_shell_with_a_sentence() {
        let s = Session::spawn(sh("echo up; sleep 1000"), WinSize::default()).unwrap();
        let (_in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let run = tokio::spawn(s.run(in_rx, out_tx, stop.clone()));
        collect(&mut out_rx, |t| t.contains("up")).await;
        stop.cancel();
        let text = collect(&mut out_rx, |t| t.contains("<closed")).await;
        assert!(text.ends_with(&format!("<closed {STOPPING}>")), "{text:?}");
        assert_eq!(run.await.unwrap(), None);
    }
}
