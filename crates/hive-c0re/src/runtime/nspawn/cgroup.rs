//! The cgroups hyperhive puts each container in, one per controller it
//! bounds containers with (`memory`, `cpu`): what they share.
//!
//! Each container's nspawn is moved, before it runs, into
//! `<hierarchy>/hyperhive/<machine>-<uid base>` (the uid base keeps two hives'
//! agents of one name apart). The cgroups hang off the hierarchy's root, not
//! off hive-c0re's own cgroup, whose processes would forbid v2 children with
//! controllers. With cgroup v2 the controllers share one hierarchy, so a
//! container's memory and cpu cgroup are one directory, joined twice.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The cgroup under which every container's cgroups are made.
const PARENT: &str = "hyperhive";

/// Which cgroup version holds a controller, and so its file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

/// Where one controller's container cgroups live on this host.
#[derive(Debug, Clone)]
pub(super) struct Hierarchy {
    /// The cgroup version the controller is mounted with.
    pub version: Version,
    /// `<hierarchy root>/hyperhive`.
    pub parent: PathBuf,
}

impl Hierarchy {
    /// Finds `controller`'s hierarchy (a v1 one of its own, else the unified
    /// v2 one where it is available) and makes `hyperhive` in it, with the
    /// controller enabled for its children on v2. The error says why not.
    pub fn set_up(controller: &str) -> Result<Self, String> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let (version, root) = find_controller(&mountinfo, controller)
            .ok_or_else(|| format!("this host mounts no cgroup {controller} controller"))?;
        let parent = root.join(PARENT);
        make_dir(&parent)?;
        if version == Version::V2 {
            // Children get a controller only where their parent enables it.
            write(
                &root.join("cgroup.subtree_control"),
                &format!("+{controller}"),
            )?;
            write(
                &parent.join("cgroup.subtree_control"),
                &format!("+{controller}"),
            )?;
        }
        Ok(Self { version, parent })
    }

    /// The cgroup directory of container `machine`.
    pub fn dir(&self, machine: &str, uid_base: u32) -> PathBuf {
        self.parent.join(format!("{machine}-{uid_base}"))
    }

    /// Makes (or finds) container `machine`'s cgroup, sets each of `limits`
    /// (file, value) in it and opens it for the container's nspawn to join.
    pub fn for_agent(
        &self,
        machine: &str,
        uid_base: u32,
        limits: &[(&str, String)],
    ) -> Result<AgentCgroup, String> {
        let dir = self.dir(machine, uid_base);
        make_dir(&dir)?;
        for (file, value) in limits {
            write(&dir.join(file), value)?;
        }
        let procs = dir.join("cgroup.procs");
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(|e| format!("cannot open {}: {e}", procs.display()))?;
        Ok(AgentCgroup {
            procs: procs.into(),
        })
    }

    /// Removes container `machine`'s cgroup once nothing runs in it.
    pub fn remove(&self, machine: &str, uid_base: u32) {
        let dir = self.dir(machine, uid_base);
        if let Err(e) = fs::remove_dir(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::debug!("could not remove {}: {e}", dir.display());
        }
    }
}

/// One container's cgroup, opened before its nspawn is forked.
#[derive(Debug)]
pub(super) struct AgentCgroup {
    /// Its `cgroup.procs`, open for writing: the forked child writes itself in.
    procs: OwnedFd,
}

impl AgentCgroup {
    /// The same cgroup, for a second process to join.
    pub fn try_clone(&self) -> Result<Self, String> {
        let procs = self
            .procs
            .try_clone()
            .map_err(|e| format!("cannot duplicate a cgroup's descriptor: {e}"))?;
        Ok(Self { procs })
    }

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

pub(super) fn write(file: &Path, value: &str) -> Result<(), String> {
    fs::write(file, value).map_err(|e| format!("cannot write {value} to {}: {e}", file.display()))
}

fn make_dir(dir: &Path) -> Result<(), String> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("cannot make the cgroup {}: {e}", dir.display())),
    }
}

/// Where `controller` is: the root of a v1 hierarchy of its own, else of the
/// unified v2 one where that offers it (`cgroup.controllers`); from mountinfo.
pub(super) fn find_controller(mountinfo: &str, controller: &str) -> Option<(Version, PathBuf)> {
    if let Some(root) = hierarchy_dir(mountinfo, controller, "/") {
        return Some((Version::V1, root));
    }
    let root = hierarchy_dir(mountinfo, "", "/")?;
    fs::read_to_string(root.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == controller))
        .then_some((Version::V2, root))
}

/// The host directory of cgroup `path` in the hierarchy named by `controllers`
/// (empty: the unified cgroup2 one), from mountinfo.
pub(super) fn hierarchy_dir(mountinfo: &str, controllers: &str, path: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (fields, tail) = line.split_once(" - ")?;
        let mut fields = fields.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        let mut tail = tail.split(' ');
        let fstype = tail.next()?;
        let options = tail.nth(1)?;
        let matches = if controllers.is_empty() {
            fstype == "cgroup2"
        } else {
            fstype == "cgroup"
                && controllers
                    .split(',')
                    .all(|c| options.split(',').any(|o| o == c))
        };
        let rel = path.strip_prefix(root)?.trim_start_matches('/');
        matches.then(|| Path::new(mount_point).join(rel))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hierarchies_are_found_by_type_and_controllers() {
        let dir = |c, p| hierarchy_dir(MOUNTINFO, c, p);
        assert_eq!(
            dir("", "/payload"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/payload"))
        );
        assert_eq!(
            dir("name=systemd", "/payload"),
            Some(PathBuf::from("/sys/fs/cgroup/systemd/payload"))
        );
        assert_eq!(
            dir("cpu,cpuacct", "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a/b"))
        );
        assert_eq!(dir("pids", "/x"), None);
    }
}
