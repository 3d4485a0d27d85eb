//! The one reader of `/proc`: a process's stat line, its status fields and
//! the list of pids. The runtimes, the shell's session sweep and the
//! confinement check all read processes through it.
//!
//! `/proc` of a process an agent runs is the agent's word only in its name
//! (field 2 of `stat`, which may hold spaces and parentheses): every parser
//! here skips it by reading after the last `)`.

use std::fs;
use std::io;

/// Fields of `/proc/<pid>/stat` the hive uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// A zombie or a dead process (state `Z` or `X`).
    pub zombie: bool,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Start time in clock ticks after boot: with the pid, it names one process for good.
    pub start: u64,
}

impl Stat {
    /// Reads a stat line (`pid (comm) state ppid pgrp session ... starttime ...`).
    pub fn parse(line: &str) -> Option<Self> {
        let mut f = line.get(line.rfind(')')? + 1..)?.split_whitespace();
        // Fields 3 to 6: state, ppid, pgrp, session; field 22: start time.
        let zombie = matches!(f.next()?, "Z" | "X");
        let ppid = f.next()?.parse().ok()?;
        let pgrp = f.next()?.parse().ok()?;
        let session = f.next()?.parse().ok()?;
        let start = f.nth(15)?.parse().ok()?;
        Some(Self {
            zombie,
            ppid,
            pgrp,
            session,
            start,
        })
    }
}

/// `/proc/<pid>/stat`, or None when the process is gone or the line garbled.
pub fn stat(pid: i32) -> Option<Stat> {
    Stat::parse(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `/proc/<pid>/status` as `key: value` lines.
#[derive(Debug, Clone)]
pub struct Status(String);

impl Status {
    /// The value of `key` (without its colon), trimmed.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.0.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == key).then_some(v.trim())
        })
    }

    /// True for a zombie or a dead process.
    pub fn zombie(&self) -> bool {
        self.field("State")
            .is_some_and(|s| s.starts_with(['Z', 'X']))
    }

    /// The real uid (the first of the `Uid` line).
    pub fn real_uid(&self) -> Option<u32> {
        self.field("Uid")?.split_whitespace().next()?.parse().ok()
    }
}

/// `/proc/<pid>/status`.
pub fn status(pid: i32) -> io::Result<Status> {
    fs::read_to_string(format!("/proc/{pid}/status")).map(Status)
}

/// Every pid `/proc` lists now (empty if it cannot be read).
pub fn pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_reads_past_a_hostile_command_name() {
        // A name with spaces and parentheses, as a process may choose.
        let line = "4242 (evil) Z 1 2 3) S 7 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = Stat::parse(line).unwrap();
        assert_eq!(
            s,
            Stat {
                zombie: false,
                ppid: 7,
                pgrp: 4242,
                session: 4242,
                start: 987654
            }
        );
        assert!(Stat::parse("4242 (cut").is_none());
    }

    #[test]
    fn our_own_process_reads_as_alive() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("our own stat");
        assert!(!s.zombie);
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(s.pgrp, nix::unistd::getpgrp().as_raw());
        let st = status(me).unwrap();
        assert!(!st.zombie());
        assert_eq!(st.real_uid(), Some(nix::unistd::getuid().as_raw()));
        assert!(pids().any(|p| p == me));
    }
}
