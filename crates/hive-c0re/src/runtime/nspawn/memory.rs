//! Memory bounds of the containers: a memory cgroup per agent.
//!
//! Without them every container shares the host's memory: one agent that
//! allocates, or fills its tmpfs mounts (pages no process owns, which the
//! OOM killer cannot take back), made the kernel kill other agents' turns,
//! or hive-c0re itself. Each container's nspawn is moved, before it runs, into
//! `<memory hierarchy>/hyperhive/<machine>-<uid base>` (the uid base keeps two
//! hives' agents of one name apart), whose limit is the agent's bound; all
//! of them sit under `hyperhive`, whose limit keeps a reserve of the host's
//! memory for hive-c0re and the rest of the host. The OOM kills the kernel
//! makes inside a container are counted there, for the operator.
//!
//! Both cgroup versions: a v1 `memory` hierarchy (`memory.limit_in_bytes`),
//! else the unified v2 one (`memory.max`, with the controller enabled for the
//! children of `hyperhive`). The cgroups hang off the hierarchy's root, not
//! off hive-c0re's own cgroup, whose processes would forbid v2 children with
//! controllers.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::confine::hierarchy_dir;

/// The cgroup under which every container's memory cgroup is made.
const PARENT: &str = "hyperhive";

/// Which cgroup version holds the memory controller, and so its file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    fn limit_file(self) -> &'static str {
        match self {
            Self::V1 => "memory.limit_in_bytes",
            Self::V2 => "memory.max",
        }
    }

    /// The file holding the count of OOM kills, and the key of its line.
    fn oom_file(self) -> &'static str {
        match self {
            Self::V1 => "memory.oom_control",
            Self::V2 => "memory.events",
        }
    }
}

/// The memory cgroups of this host's containers.
#[derive(Debug, Clone)]
pub(super) struct MemoryCgroups {
    version: Version,
    /// `<hierarchy root>/hyperhive`.
    parent: PathBuf,
    /// Each container's limit, in bytes.
    agent_max: u64,
}

/// One container's memory cgroup, opened before its nspawn is forked.
#[derive(Debug)]
pub(super) struct AgentCgroup {
    /// Its `cgroup.procs`, open for writing: the forked child writes itself in.
    procs: OwnedFd,
}

impl AgentCgroup {
    /// Moves the calling process into the cgroup, in a freshly forked child
    /// before exec (everything it starts then stays in it). Raw syscalls only.
    pub fn join(&self) -> io::Result<()> {
        // "0" is the writing process itself, in both versions.
        // SAFETY: write(2) of a static buffer to a descriptor we own.
        let n = unsafe { libc::write(self.procs.as_raw_fd(), c"0".as_ptr().cast(), 1) };
        if n == 1 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// What a host's memory allows: the bound of all containers together (the
/// host's memory less a reserve of a tenth, at least 512 MiB, at most half)
/// and the default bound of one (a quarter of that total, at least 1 GiB,
/// never above it).
pub(crate) fn default_bounds(host: u64) -> (u64, u64) {
    const MIB: u64 = 1024 * 1024;
    let reserve = (host / 10).max(512 * MIB).min(host / 2);
    let total = host - reserve;
    (total, (total / 4).max(1024 * MIB).min(total))
}

impl MemoryCgroups {
    /// Finds the memory controller and makes `hyperhive` with its limit;
    /// `agent_max` is each container's bound (default: [`default_bounds`]).
    /// The error says why containers will run without bounds.
    pub fn set_up(agent_max: Option<u64>) -> Result<Self, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let (version, root) = if let Some(root) = hierarchy_dir(&mountinfo, "memory", "/") {
            (Version::V1, root)
        } else if let Some(root) = hierarchy_dir(&mountinfo, "", "/")
            && fs::read_to_string(root.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        {
            (Version::V2, root)
        } else {
            return Err("this host mounts no cgroup memory controller".into());
        };
        let host = host_memory().ok_or("cannot read MemTotal from /proc/meminfo")?;
        let (total, default_max) = default_bounds(host);
        let parent = root.join(PARENT);
        make_dir(&parent)?;
        if version == Version::V2 {
            // Children get the controller only where their parent enables it.
            write(&root.join("cgroup.subtree_control"), "+memory")?;
            write(&parent.join("cgroup.subtree_control"), "+memory")?;
        }
        write(&parent.join(version.limit_file()), &total.to_string())?;
        Ok(Self {
            version,
            parent,
            agent_max: agent_max.unwrap_or(default_max).min(total),
        })
    }

    /// Each container's bound, in bytes.
    pub fn agent_max(&self) -> u64 {
        self.agent_max
    }

    fn dir(&self, machine: &str, uid_base: u32) -> PathBuf {
        self.parent.join(format!("{machine}-{uid_base}"))
    }

    /// Makes (or finds) the cgroup of container `machine`, sets its bound and
    /// opens it for the container's nspawn to join.
    pub fn for_agent(&self, machine: &str, uid_base: u32) -> Result<AgentCgroup, String> {
        let dir = self.dir(machine, uid_base);
        make_dir(&dir)?;
        write(
            &dir.join(self.version.limit_file()),
            &self.agent_max.to_string(),
        )?;
        let procs = dir.join("cgroup.procs");
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| format!("cannot open {}: {e}", procs.display()))?;
        Ok(AgentCgroup {
            procs: procs.into(),
        })
    }

    /// How many processes the kernel killed in container `machine` for want
    /// of memory since its cgroup was made.
    pub fn oom_kills(&self, machine: &str, uid_base: u32) -> Option<u64> {
        let text =
            fs::read_to_string(self.dir(machine, uid_base).join(self.version.oom_file())).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Removes container `machine`'s cgroup once nothing runs in it (its
    /// count of OOM kills goes with it).
    pub fn remove(&self, machine: &str, uid_base: u32) {
        let dir = self.dir(machine, uid_base);
        if let Err(e) = fs::remove_dir(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!("could not remove {}: {e}", dir.display());
        }
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn host_memory() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot make the cgroup {}: {e}", dir.display())),
    }
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    fs::write(file, value).map_err(|e| format!("cannot write {value} to {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_keep_a_reserve_and_give_each_agent_a_quarter() {
        const GIB: u64 = 1 << 30;
        // 24 GiB: 2.4 GiB kept, a quarter of the rest per agent.
        let (total, agent) = default_bounds(24 * GIB);
        assert_eq!(total, 24 * GIB - 24 * GIB / 10);
        assert_eq!(agent, total / 4);
        // 2 GiB: 512 MiB kept, and an agent may take 1 GiB of the 1.5.
        assert_eq!(default_bounds(2 * GIB), (3 * GIB / 2, GIB));
        // 512 MiB: half kept, and one agent may take all the rest.
        assert_eq!(default_bounds(GIB / 2), (GIB / 4, GIB / 4));
    }
}
