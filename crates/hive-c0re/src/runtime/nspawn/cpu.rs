//! CPU shares of the containers: a cpu cgroup per agent (see `cgroup`).
//!
//! Without them the scheduler shares the cores between processes, or between
//! sessions where the kernel's autogroups are on, not agents: an agent that
//! runs twenty busy processes (a parallel build, or a hostile one each in a
//! session of its own) took twenty shares and left every other agent, and
//! hive-c0re with them, the crumbs. In a cgroup of its own each container
//! weighs the same whatever it runs, and `hyperhive` (all containers
//! together) weighs as one of the host's own processes does, so hive-c0re
//! keeps answering the operator while every agent is busy. The container's
//! pasta runs in it too: the CPU it spends carrying the agent's traffic is the
//! agent's.
//!
//! Both cgroup versions, each at its default weight (`cpu.shares` 1024 on
//! v1, `cpu.weight` 100 on v2). The operator's cap (`agent_cpus`), if any, is
//! a quota per period (`cpu.cfs_quota_us` on v1, `cpu.max` on v2), written at
//! every launch, as the cgroups outlive the daemon and a cap may have been
//! lifted since.

use super::cgroup::{AgentCgroup, Hierarchy, Version};

/// The scheduler's period for the cap, in microseconds (the kernel's default).
const PERIOD_US: u64 = 100_000;

/// The cpu cgroups of this host's containers.
#[derive(Debug, Clone)]
pub(super) struct CpuCgroups {
    hierarchy: Hierarchy,
    /// Each container's cap, in cores.
    cap: Option<f64>,
}

impl CpuCgroups {
    /// Finds the cpu controller and makes `hyperhive`; `cap` is each
    /// container's most, in cores. The error says why containers will share
    /// the cores as plain processes.
    pub fn set_up(cap: Option<f64>) -> Result<Self, String> {
        Hierarchy::set_up("cpu").map(|hierarchy| Self { hierarchy, cap })
    }

    /// Each container's cap, in cores, if the operator set one.
    pub fn cap(&self) -> Option<f64> {
        self.cap
    }

    /// Makes (or finds) the cgroup of container `machine`, sets its cap and
    /// opens it for the container's nspawn to join.
    pub fn for_agent(&self, machine: &str, uid_base: u32) -> Result<AgentCgroup, String> {
        let quota = self
            .cap
            // The kernel takes no quota below 1 ms a period.
            .map(|cores| ((cores * PERIOD_US as f64) as u64).max(1_000));
        let limit = match (self.hierarchy.version, quota) {
            (Version::V1, Some(q)) => ("cpu.cfs_quota_us", q.to_string()),
            (Version::V1, None) => ("cpu.cfs_quota_us", "-1".to_owned()),
            (Version::V2, Some(q)) => ("cpu.max", format!("{q} {PERIOD_US}")),
            (Version::V2, None) => ("cpu.max", format!("max {PERIOD_US}")),
        };
        let mut limits = vec![limit];
        if self.hierarchy.version == Version::V1 {
            // The quota counts against this period; the default, but the
            // cgroup may be older than this daemon.
            limits.insert(0, ("cpu.cfs_period_us", PERIOD_US.to_string()));
        }
        self.hierarchy.for_agent(machine, uid_base, &limits)
    }

    /// Removes container `machine`'s cgroup once nothing runs in it.
    pub fn remove(&self, machine: &str, uid_base: u32) {
        self.hierarchy.remove(machine, uid_base);
    }
}
