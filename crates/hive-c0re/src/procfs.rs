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

/// The uid owning the listening TCP socket a connection to `to` reaches in
/// this process's network namespace (one bound to `to`'s address, else to
/// the unspecified one, on its port); None when nothing listens there.
pub fn tcp_listener_uid(to: std::net::SocketAddr) -> io::Result<Option<u32>> {
    let file = if to.is_ipv4() {
        "/proc/net/tcp"
    } else {
        "/proc/net/tcp6"
    };
    Ok(listener_uid(&fs::read_to_string(file)?, to))
}

/// [`tcp_listener_uid`] over the text of `/proc/net/tcp` or `tcp6`.
fn listener_uid(table: &str, to: std::net::SocketAddr) -> Option<u32> {
    const LISTEN: &str = "0A";
    let mut wildcard = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(uid)) = (f.get(1), f.get(3), f.get(7)) else {
            continue;
        };
        if *state != LISTEN {
            continue;
        }
        let Some((ip, port)) = local.split_once(':') else {
            continue;
        };
        if u16::from_str_radix(port, 16).ok() != Some(to.port()) {
            continue;
        }
        let Some(ip) = kernel_ip(ip) else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        // The kernel hands a connection to the socket bound to the exact
        // address before one bound to every address.
        if ip == to.ip() {
            return Some(uid);
        }
        if ip.is_unspecified() {
            wildcard = Some(uid);
        }
    }
    wildcard
}

/// An address as `/proc/net/tcp*` prints it: the bytes in network order,
/// each 32-bit word written as a number of this host's byte order.
fn kernel_ip(hex: &str) -> Option<std::net::IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
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

    #[test]
    fn the_listener_a_connection_reaches_and_its_owner() {
        // 127.0.0.1:7878 by root; every address's 7879 by uid 1000, and
        // 127.0.0.1:7879 by uid 65534; one established, not listening.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1EC6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 00000000:1EC7 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2 1
   2: 0100007F:1EC7 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534        0 3 1
   3: 0100007F:1EC8 0100007F:B07F 01 00000000:00000000 00:00000000 00000000    42        0 4 1";
        let at = |a: &str| listener_uid(table, a.parse().unwrap());
        if cfg!(target_endian = "little") {
            assert_eq!(at("127.0.0.1:7878"), Some(0));
            assert_eq!(at("127.0.0.1:7879"), Some(65534), "the exact address first");
            assert_eq!(at("127.0.0.2:7879"), Some(1000), "else the wildcard");
            assert_eq!(at("127.0.0.1:7880"), None, "established, not listening");
        }
        // This process's own listener.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(tcp_listener_uid(l.local_addr().unwrap()).unwrap(), Some(me));
        let l6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(l6) = l6 {
            assert_eq!(
                tcp_listener_uid(l6.local_addr().unwrap()).unwrap(),
                Some(me)
            );
        }
    }
}
