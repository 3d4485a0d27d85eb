//! Memory bounds of the containers: a memory cgroup per agent (see `cgroup`).
//!
//! Without them every container shares the host's memory: one agent that
//! allocates, or fills its tmpfs mounts (pages no process owns, which the
//! OOM killer cannot take back), made the kernel kill other agents' turns,
//! or hive-c0re itself. Each container's cgroup is limited to the agent's
//! bound; all of them sit under `hyperhive`, whose limit keeps a reserve of
//! the host's memory for hive-c0re and the rest of the host. The OOM kills
//! the kernel makes inside a container are counted there, for the operator.
//!
//! Both cgroup versions: a v1 `memory` hierarchy (`memory.limit_in_bytes`),
//! else the unified v2 one (`memory.max`).

use std::fs;

use super::cgroup::{self, AgentCgroup, Hierarchy, Version};

fn limit_file(version: Version) -> &'static str {
    match version {
        Version::V1 => "memory.limit_in_bytes",
        Version::V2 => "memory.max",
    }
}

/// The file holding the count of OOM kills (its line is `oom_kill N`).
fn oom_file(version: Version) -> &'static str {
    match version {
        Version::V1 => "memory.oom_control",
        Version::V2 => "memory.events",
    }
}

/// The memory cgroups of this host's containers.
#[derive(Debug, Clone)]
pub(super) struct MemoryCgroups {
    hierarchy: Hierarchy,
    /// Each container's limit, in bytes.
    agent_max: u64,
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
        let hierarchy = Hierarchy::set_up("memory")?;
        let host = host_memory().ok_or("cannot read MemTotal from /proc/meminfo")?;
        let (total, default_max) = default_bounds(host);
        cgroup::write(
            &hierarchy.parent.join(limit_file(hierarchy.version)),
            &total.to_string(),
        )?;
        Ok(Self {
            hierarchy,
            agent_max: agent_max.unwrap_or(default_max).min(total),
        })
    }

    /// Each container's bound, in bytes.
    pub fn agent_max(&self) -> u64 {
        self.agent_max
    }

    /// Makes (or finds) the cgroup of container `machine`, sets its bound and
    /// opens it for the container's nspawn to join.
    pub fn for_agent(&self, machine: &str, uid_base: u32) -> Result<AgentCgroup, String> {
        let limit = (
            limit_file(self.hierarchy.version),
            self.agent_max.to_string(),
        );
        self.hierarchy.for_agent(machine, uid_base, &[limit])
    }

    /// How many processes the kernel killed in container `machine` for want
    /// of memory since its cgroup was made.
    pub fn oom_kills(&self, machine: &str, uid_base: u32) -> Option<u64> {
        let dir = self.hierarchy.dir(machine, uid_base);
        let text = fs::read_to_string(dir.join(oom_file(self.hierarchy.version))).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Removes container `machine`'s cgroup once nothing runs in it (its
    /// count of OOM kills goes with it).
    pub fn remove(&self, machine: &str, uid_base: u32) {
        self.hierarchy.remove(machine, uid_base);
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn host_memory() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
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
