//! `hive-c0re shell NAME`: the operator's terminal attached to a shell in the
//! agent's container, over host.sock's `shell` verb (frames in `hive_sh4re::shell`).
//!
//! With a terminal on stdin it goes raw (every key, Ctrl-C included, goes to
//! the remote shell), follows SIGWINCH with resize frames, and puts the
//! terminal back however it ends. Without one, input is passed through and
//! its end is sent as Ctrl-D, repeated until the shell ends. The exit code is
//! the shell's.
//!
//! What the shell prints is the agent's to choose: it reaches the terminal
//! through [`TerminalFilter`] (colours and cursor movement, no strings: no
//! clipboard, link or title; no query, whose answer the terminal would type
//! in), and a terminal on stdout gets the modes a program may have left on
//! put back however the shell ends.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hive_sh4re::AgentName;
use hive_sh4re::host::verb;
use hive_sh4re::shell::{Frame, valid_term};
use hive_sh4re::text::terminal::{self, TerminalFilter};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

use hive_sh4re::host::client::{Client, Error as ClientError};

use super::CliError;
use crate::paths::Paths;

/// How often the end of piped input is sent again while the shell runs.
const EOF_REPEAT: std::time::Duration = std::time::Duration::from_millis(500);

/// Opens the shell and relays until it ends; returns its exit code.
pub(super) fn run(paths: &Paths, name: &AgentName) -> Result<i32, CliError> {
    let stdin = std::io::stdin();
    let tty = nix::unistd::isatty(&stdin).unwrap_or(false);
    let (rows, cols) = window_size().unzip();
    let term = std::env::var("TERM").ok().filter(|t| valid_term(t));
    let mut c = Client::connect(paths.host_sock())?;
    c.call(verb::Shell {
        name: name.clone(),
        rows,
        cols,
        term,
    })?;
    let (mut reader, writer) = c.into_parts();
    let writer = Arc::new(Mutex::new(writer));
    let lost = |e: std::io::Error| {
        ClientError::Broken(format!("lost the connection to hive-c0re's shell: {e}"))
    };

    // Signals go to one thread that waits for them (blocked here, inherited by the threads below).
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGWINCH,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
    ] {
        signals.add(s);
    }
    signals
        .thread_block()
        .map_err(|e| ClientError::Broken(format!("could not block signals: {e}")))?;
    let raw = if tty {
        Some(RawMode::enter().map_err(|e| {
            ClientError::Broken(format!("could not put the terminal in raw mode: {e}"))
        })?)
    } else {
        None
    };
    let saved = raw.as_ref().map(|r| r.saved.clone());
    let out_tty = nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
    let alt_screen = Arc::new(AtomicBool::new(false));
    let alt = alt_screen.clone();
    let w = writer.clone();
    std::thread::spawn(move || {
        while let Ok(sig) = signals.wait() {
            if sig == Signal::SIGWINCH {
                if let Some((rows, cols)) = window_size() {
                    let _ = send(&w, &Frame::Resize { rows, cols }.encode());
                }
                continue;
            }
            // Asked to go: the terminal first, then out with the shell's convention.
            // (Not through `stdout()`: the relay below holds its lock.)
            if out_tty {
                let _ = nix::unistd::write(
                    std::io::stdout(),
                    &terminal::reset(alt.load(Ordering::Relaxed)),
                );
            }
            if let Some(t) = &saved {
                let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, t);
            }
            std::process::exit(128 + sig as i32);
        }
    });
    let w = writer.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match nix::unistd::read(std::io::stdin().as_fd(), &mut buf) {
                Ok(0) => {
                    // End of piped input: Ctrl-D, as a terminal would send it,
                    // and again until the shell ends. A Ctrl-D that reaches the
                    // terminal before the shell has switched it out of line mode
                    // becomes a plain NUL byte there (the kernel drops the
                    // end-of-file mark on that switch): sent once, the shell
                    // would wait for input forever.
                    while send(&w, &Frame::Data(vec![4]).encode()).is_ok() {
                        std::thread::sleep(EOF_REPEAT);
                    }
                    return;
                }
                Ok(n) => {
                    if send(&w, &Frame::data(&buf[..n])).is_err() {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    });

    let mut stdout = std::io::stdout().lock();
    let mut filter = TerminalFilter::new();
    let mut shown = Vec::new();
    let result = loop {
        match Frame::read_from(&mut reader) {
            Ok(Some(Frame::Data(d))) => {
                shown.clear();
                filter.push(&d, &mut shown);
                alt_screen.store(filter.alt_screen(), Ordering::Relaxed);
                if stdout
                    .write_all(&shown)
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break Ok(1);
                }
            }
            Ok(Some(Frame::Exit(code))) => break Ok(code),
            Ok(Some(Frame::Closed(why))) => break Err(ClientError::Broken(why)),
            Ok(Some(Frame::Resize { .. })) => {}
            Ok(None) => {
                break Err(ClientError::Broken(
                    "hive-c0re closed the shell without an exit code".into(),
                ));
            }
            Err(e) => break Err(lost(e)),
        }
    };
    if out_tty {
        let _ = stdout
            .write_all(&terminal::reset(filter.alt_screen()))
            .and_then(|()| stdout.flush());
    }
    drop(raw);
    result.map_err(CliError::from)
}

/// Writes one encoded frame (or several back to back) without interleaving with another thread's.
fn send(w: &Mutex<UnixStream>, bytes: &[u8]) -> std::io::Result<()> {
    let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
    w.write_all(bytes)
}

/// The size of the terminal on stdin or stdout, if either is one.
fn window_size() -> Option<(u16, u16)> {
    [libc::STDIN_FILENO, libc::STDOUT_FILENO]
        .into_iter()
        .find_map(|fd| {
            let mut ws = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one winsize through a valid pointer.
            let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0;
            (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
        })
}

/// The local terminal in raw mode until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> nix::Result<Self> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}
