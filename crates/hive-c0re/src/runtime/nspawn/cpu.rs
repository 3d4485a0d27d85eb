//! CPU shares of the containers: a cpu cgroup per agent (see `cgroup`).
//!
//! Without them the scheduler shares the cores between processes, not agents:
//! an agent that runs twenty busy processes (a parallel build, or a hostile
//! one spinning on purpose) took twenty shares and left every other agent,
//! and hive-c0re with them, the crumbs. In a cgroup of its own each container
//! weighs the same whatever it runs, and `hyperhive` (all containers
//! together) weighs as one of the host's own processes does, so hive-c0re
//! keeps answering the operator while every agent is busy. Nothing is
//! capped: an agent alone on the host still takes every idle core.
//!
//! Both cgroup versions, each at its default weight: `cpu.shares` 1024 on
//! v1, `cpu.weight` 100 on v2.

use super::cgroup::{AgentCgroup, Hierarchy};

/// The cpu cgroups of this host's containers.
#[derive(Debug, Clone)]
pub(super) struct CpuCgroups {
    hierarchy: Hierarchy,
}

impl CpuCgroups {
    /// Finds the cpu controller and makes `hyperhive`; the error says why
    /// containers will share the cores as plain processes.
    pub fn set_up() -> Result<Self, String> {
        Hierarchy::set_up("cpu").map(|hierarchy| Self { hierarchy })
    }

    /// Makes (or finds) the cgroup of container `machine` and opens it for
    /// the container's nspawn to join.
    pub fn for_agent(&self, machine: &str, uid_base: u32) -> Result<AgentCgroup, String> {
        self.hierarchy.for_agent(machine, uid_base, &[])
    }

    /// Removes container `machine`'s cgroup once nothing runs in it.
    pub fn remove(&self, machine: &str, uid_base: u32) {
        self.hierarchy.remove(machine, uid_base);
    }
}
