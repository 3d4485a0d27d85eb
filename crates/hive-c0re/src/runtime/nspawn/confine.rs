//! The confinement of a container's processes, copied onto a process that
//! enters the container from the host (the operator's shell): the same
//! cgroups, no_new_privs, seccomp filters and capability bounding set.
//!
//! It is read from the container's init, which nspawn confined as it confines
//! the harness. Whatever the agent may have done to the init since can only
//! have narrowed it (filters stack, the bounding set only shrinks), so the
//! copy is never wider than what nspawn set.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;

use super::cgroup::hierarchy_dir;
use crate::procfs;

/// `PTRACE_SECCOMP_GET_FILTER` (linux/ptrace.h), which the libc crate lacks.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;

/// What a process entering the container must take on.
#[derive(Debug, Clone, Default)]
pub(super) struct Confinement {
    /// `cgroup.procs` of each of the init's cgroups that is not ours already.
    cgroup_procs: Vec<CString>,
    no_new_privs: bool,
    /// The init's seccomp filters, oldest first (the order they are installed in).
    filters: Vec<Vec<libc::sock_filter>>,
    /// The init's capability bounding set (bit N: capability N).
    bounding_set: u64,
}

impl Confinement {
    /// Reads the confinement of `pid` (stopping it for a moment to copy its seccomp filters).
    pub fn of(pid: i32) -> io::Result<Self> {
        let status = procfs::status(pid)?;
        let field = |key: &str| {
            status
                .field(key)
                .ok_or_else(|| io::Error::other(format!("no {key} line for process {pid}")))
        };
        let bounding_set = u64::from_str_radix(field("CapBnd")?, 16)
            .map_err(|e| io::Error::other(format!("bad CapBnd of process {pid}: {e}")))?;
        let no_new_privs = field("NoNewPrivs")? == "1";
        let filters = if field("Seccomp")? == "2" {
            seccomp_filters(pid)?
        } else {
            Vec::new()
        };
        Ok(Self {
            cgroup_procs: cgroups_to_join(pid)?,
            no_new_privs,
            filters,
            bounding_set,
        })
    }

    /// Takes the confinement on, in a freshly forked child before exec: joins
    /// the cgroups, then no_new_privs, then the filters. Raw syscalls only.
    pub fn apply(&self) -> io::Result<()> {
        let check = |rc: libc::c_long| {
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        for procs in &self.cgroup_procs {
            // SAFETY: open/write/close on a NUL-terminated path and a static buffer.
            unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(fd.into())?;
                // "0" is the writing process itself.
                let n = libc::write(fd, c"0".as_ptr().cast(), 1);
                libc::close(fd);
                check(n as libc::c_long)?;
            }
        }
        if self.no_new_privs {
            // SAFETY: prctl with constant arguments.
            check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into())?;
        }
        for filter in &self.filters {
            let prog = libc::sock_fprog {
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr().cast_mut(),
            };
            // SAFETY: `prog` points at `filter`, which lives as long as `self`.
            check(unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                )
            })?;
        }
        Ok(())
    }

    /// `--bounding-set=-all,+chown,...` for setpriv, run inside after
    /// nsenter: joining the user namespace gives back a full bounding set.
    pub fn bounding_set_arg(&self) -> String {
        let mut arg = String::from("--bounding-set=-all");
        for (bit, name) in CAP_NAMES.iter().enumerate() {
            if self.bounding_set & (1 << bit) != 0 {
                arg.push_str(",+");
                arg.push_str(name);
            }
        }
        arg
    }
}

/// Capability names as setpriv knows them, by number (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The init's seccomp filters, oldest first, read through ptrace.
///
/// The whole exchange runs on the calling thread: ptrace ties a tracee to the
/// thread that attached it.
fn seccomp_filters(pid: i32) -> io::Result<Vec<Vec<libc::sock_filter>>> {
    let check = |rc: libc::c_long| {
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    };
    let null = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_SEIZE/INTERRUPT with null arguments; the target is a live pid.
    check(unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, null, null) })?;
    let filters = (|| {
        // SAFETY: as above.
        check(unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, null, null) })?;
        let mut status = 0;
        // SAFETY: waits for the group-stop of our tracee; status is a valid out pointer.
        check(unsafe { libc::waitpid(pid, &mut status, libc::__WALL) }.into())?;
        let mut filters = Vec::new();
        for index in 0usize.. {
            // SAFETY: with a null buffer the kernel only returns the filter's length.
            let len = unsafe {
                libc::ptrace(
                    PTRACE_SECCOMP_GET_FILTER,
                    pid,
                    index as *mut libc::c_void,
                    null,
                )
            };
            if len < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOENT) {
                    break;
                }
                return Err(e);
            }
            let mut buf = vec![
                libc::sock_filter {
                    code: 0,
                    jt: 0,
                    jf: 0,
                    k: 0,
                };
                len as usize
            ];
            // SAFETY: `buf` holds exactly `len` instructions, as the kernel asked for.
            check(unsafe {
                libc::ptrace(
                    PTRACE_SECCOMP_GET_FILTER,
                    pid,
                    index as *mut libc::c_void,
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                )
            })?;
            filters.push(buf);
        }
        Ok(filters)
    })();
    // SAFETY: detaching our own tracee resumes it.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, null, null) };
    let mut filters = filters?;
    // Index 0 is the newest.
    filters.reverse();
    Ok(filters)
}

/// The `cgroup.procs` files of `pid`'s cgroups where this process is elsewhere.
fn cgroups_to_join(pid: i32) -> io::Result<Vec<CString>> {
    let theirs = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let ours = fs::read_to_string("/proc/self/cgroup")?;
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in theirs.lines() {
        if ours.lines().any(|l| l == line) {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some(dir) = hierarchy_dir(&mounts, controllers, path) else {
            return Err(io::Error::other(format!(
                "cannot find where the cgroup {line:?} of process {pid} is mounted"
            )));
        };
        out.push(
            CString::new(dir.join("cgroup.procs").as_os_str().as_bytes())
                .map_err(io::Error::other)?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounding_set_names_each_kept_capability() {
        let c = Confinement {
            bounding_set: (1 << 0) | (1 << 21) | (1 << 40),
            ..Confinement::default()
        };
        assert_eq!(
            c.bounding_set_arg(),
            "--bounding-set=-all,+chown,+sys_admin,+checkpoint_restore"
        );
    }
}
