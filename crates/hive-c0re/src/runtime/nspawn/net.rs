//! A container's network: a network namespace of its own, so the host's
//! loopback services and abstract sockets are out of reach.
//!
//! What it can reach from there:
//! - the internet, through pasta (Debian package passt): a user-mode network
//!   stack that turns the container's connections into ordinary sockets of
//!   an unprivileged host process. No host interface, route, firewall rule or
//!   sysctl changes; it maps no host port either way (`-t/-u/-T/-U none`)
//!   and does not map the gateway to the host (`--no-map-gw`). DNS queries to
//!   [`DNS_FORWARD`] go to the host's resolver. Only started where the host
//!   has a default route (offline, there is no internet to give).
//! - the model endpoint, when `ANTHROPIC_BASE_URL` names host loopback (tests,
//!   the offline demo): hive-c0re listens on that address and port inside the
//!   namespace and relays each connection to the same address on the host.
//!   That one endpoint and nothing else.
//!
//! pasta runs as the top uid of the agent's range, in a user namespace that
//! uid owns and that owns the network namespace; it has no capability on the
//! host, and the container's root (in its own user namespace) has none over
//! the network namespace either, so it cannot change addresses or routes.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::cgroup::AgentCgroup;
use crate::runtime::RuntimeError;
use crate::runtime::sys::{self, PidRecord, UID_RANGE};

/// The resolver address the container is given; pasta answers it from the host's resolver.
pub(super) const DNS_FORWARD: &str = "169.254.1.53";
/// Connections to the model endpoint one container may hold open at once.
const MAX_RELAYED: usize = 64;
/// How long pasta may take to set the namespace up.
const PASTA_READY: Duration = Duration::from_secs(10);

const NO_PASTA: &str = "pasta is not installed: install the Debian package passt (it gives each agent container its own network)";

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

/// True when pasta is installed.
pub(super) fn pasta_installed() -> bool {
    sys::find_tool("pasta").is_some()
}

/// The uid pasta runs as: the top of the agent's range, used by nothing else.
pub(super) fn pasta_uid(uid_base: u32) -> u32 {
    uid_base + (UID_RANGE - 1)
}

/// True when the host has a default route (IPv4 or IPv6): there is an internet to reach.
pub(super) fn host_online() -> bool {
    let v4 = fs::read_to_string("/proc/net/route").unwrap_or_default();
    let v6 = fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    v4.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")
    }) || v6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first().is_some_and(|d| d.chars().all(|c| c == '0'))
            && f.get(1) == Some(&"00")
            && f.get(9).is_some_and(|dev| *dev != "lo")
    })
}

/// The container's resolv.conf: pasta's forwarder with the host's search domains, or nothing offline.
pub(super) fn resolv_conf(online: bool) -> String {
    if !online {
        return String::new();
    }
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = format!("nameserver {DNS_FORWARD}\n");
    for line in host.lines() {
        if line.starts_with("search ") || line.starts_with("options ") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The host loopback addresses `ANTHROPIC_BASE_URL` in `env` points at, if it does.
pub(super) fn loopback_endpoints(env: &[(String, String)]) -> Vec<SocketAddr> {
    model_endpoints(env)
        .into_iter()
        .filter(|a| a.ip().is_loopback())
        .collect()
}

/// The addresses `ANTHROPIC_BASE_URL` in `env` names literally (or as
/// `localhost`), with its port; none for a host name.
pub(super) fn model_endpoints(env: &[(String, String)]) -> Vec<SocketAddr> {
    let Some(url) = env
        .iter()
        .rev()
        .find(|(k, _)| k == "ANTHROPIC_BASE_URL")
        .map(|(_, v)| v.trim())
    else {
        return Vec::new();
    };
    let (rest, default_port) = if let Some(r) = url.strip_prefix("http://") {
        (r, 80)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else {
        return Vec::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some((h, tail)) = v6.split_once(']') else {
            return Vec::new();
        };
        (h, tail.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return Vec::new(),
        },
    };
    let ips: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
    } else {
        host.parse::<IpAddr>().into_iter().collect()
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// A container's network namespace and what serves it; everything ends when this is dropped.
#[derive(Debug)]
pub(super) struct Network {
    netns: OwnedFd,
    relays: Vec<JoinHandle<()>>,
    pasta: Option<tokio::process::Child>,
}

impl Network {
    /// Makes the namespace, brings up its loopback, relays the model
    /// endpoint into it and, when `online`, connects it to the internet
    /// through a pasta that runs in `cgroup`, if given.
    pub async fn up(
        uid_base: u32,
        env: &[(String, String)],
        online: bool,
        pasta_pid: PathBuf,
        log: &fs::File,
        cgroup: Option<AgentCgroup>,
    ) -> Result<Self, RuntimeError> {
        let endpoints = loopback_endpoints(env);
        let owner = pasta_uid(uid_base);
        let (userns, netns, listeners) = tokio::task::spawn_blocking(move || {
            let (userns, netns) = namespaces(owner)
                .map_err(io_err("could not make the container's network namespace"))?;
            let listeners = inside(&netns, || {
                loopback_up()?;
                endpoints
                    .iter()
                    .map(|addr| {
                        let l = std::net::TcpListener::bind(addr)?;
                        l.set_nonblocking(true)?;
                        Ok((l, *addr))
                    })
                    .collect::<io::Result<Vec<_>>>()
            })
            .map_err(io_err(
                "could not set up the container's loopback and model endpoint",
            ))?;
            Ok::<_, RuntimeError>((userns, netns, listeners))
        })
        .await
        .map_err(|e| RuntimeError::Io {
            what: "the network set-up failed".into(),
            source: io::Error::other(e),
        })??;
        let mut net = Self {
            netns,
            relays: Vec::new(),
            pasta: None,
        };
        for (listener, target) in listeners {
            let listener = TcpListener::from_std(listener).map_err(io_err(
                "could not serve the model endpoint in the container",
            ))?;
            net.relays.push(tokio::spawn(relay(listener, target)));
        }
        if online {
            net.pasta =
                Some(start_pasta(&userns, &net.netns, owner, &pasta_pid, log, cgroup).await?);
        }
        Ok(net)
    }

    /// The namespace, for the container's process to join (`setns`) before exec.
    pub fn netns_fd(&self) -> RawFd {
        self.netns.as_raw_fd()
    }

    /// Keeps everything running until process `pid` (the container's nspawn)
    /// exits. Should pasta end first, the container is ended too, and the
    /// cell returned says why before it is: offline for good, each of its
    /// turns would fail as if the model API were down, while its relaunch
    /// brings a fresh network.
    pub fn hold_until_exit(mut self, pid: u32) -> Arc<OnceLock<String>> {
        let ended_by = Arc::new(OnceLock::new());
        let cause = ended_by.clone();
        tokio::spawn(async move {
            // SAFETY: the pidfd is ours and stays open (owned by the AsyncFd) while registered.
            let Some(container) = pidfd(pid).and_then(|fd| unsafe { AsyncFd::register(fd) }.ok())
            else {
                return;
            };
            tokio::select! {
                biased;
                _ = container.readable() => {}
                status = pasta_exit(self.pasta.as_mut()) => {
                    // pasta going with its container is no cause: it was ending anyway.
                    if !has_exited(container.get_ref()) {
                        let how = status.map_or_else(|e| format!("not waited on: {e}"), |s| s.to_string());
                        let _ = cause.set(format!("its network (pasta) ended ({how})"));
                        kill_by_pidfd(container.get_ref());
                    }
                }
            }
            drop(self);
        });
        ended_by
    }
}

/// How pasta ended; never, without one.
async fn pasta_exit(pasta: Option<&mut tokio::process::Child>) -> io::Result<ExitStatus> {
    match pasta {
        Some(p) => p.wait().await,
        None => std::future::pending().await,
    }
}

/// True once the process of `pidfd` has exited.
fn has_exited(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, on an fd we hold, without waiting.
    unsafe { libc::poll(&mut poll, 1, 0) > 0 }
}

/// SIGKILL to the process of `pidfd`: never another that took its pid.
/// nspawn takes its container along; what might linger is swept by the
/// next launch's `reap_orphans`.
fn kill_by_pidfd(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on an fd we hold, without siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc != 0 {
        tracing::warn!(
            "could not end a container whose network ended: {}",
            io::Error::last_os_error()
        );
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for r in &self.relays {
            r.abort();
        }
        if let Some(p) = self.pasta.as_mut() {
            let _ = p.start_kill();
        }
    }
}

/// Kills the pasta a previous daemon (or launch) left, as its pid file names
/// it; only the recorded process (same start time), running as the range's
/// pasta uid, is taken for it.
pub(super) async fn reap_pasta(pid_file: &Path, uid_base: u32) -> Result<(), RuntimeError> {
    let rec = sys::read_pid_file(pid_file)?.filter(PidRecord::is_running);
    if let Some(pid) = rec.map(|r| r.pid)
        && sys::real_uid(pid) == Some(pasta_uid(uid_base))
    {
        sys::signal_pid(pid, nix::sys::signal::Signal::SIGKILL)?;
        sys::wait_until(Duration::from_secs(2), || sys::real_uid(pid).is_none()).await;
    }
    sys::remove_file(pid_file)
}

/// A pidfd of `pid`, readable once it has exited.
fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open on a pid; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by the kernel.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A user namespace owned by `owner` and a network namespace it owns: made
/// by a short-lived process that becomes `owner` and unshares both.
fn namespaces(owner: u32) -> io::Result<(OwnedFd, OwnedFd)> {
    let sleep =
        sys::find_tool("sleep").ok_or_else(|| io::Error::other("sleep is not installed"))?;
    let mut cmd = std::process::Command::new(sleep);
    cmd.arg("60")
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let daemon = sys::self_pidfd();
    // SAFETY: raw syscalls only between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            sys::become_user(owner)?;
            sys::die_with_parent(libc::SIGKILL, daemon)?;
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let open = |kind: &str| {
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/{}/ns/{kind}", child.id()))
            .map(OwnedFd::from)
    };
    let fds = open("user").and_then(|u| Ok((u, open("net")?)));
    let _ = child.kill();
    let _ = child.wait();
    fds
}

/// Runs `f` on a thread of its own that has joined `netns`; sockets it makes stay in that namespace.
fn inside<T: Send>(netns: &OwnedFd, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let fd = netns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace fd we hold; only this short-lived thread moves.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the network set-up thread panicked")))
    })
}

/// Brings up `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket for interface ioctls, closed by OwnedFd.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `sock` is a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: an ifreq zeroed, then named "lo"; SIOCGIFFLAGS/SIOCSIFFLAGS read and write its flags.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Relays each connection to `listener` (inside the container) to `target` on the host.
async fn relay(listener: TcpListener, target: SocketAddr) {
    let slots = Arc::new(Semaphore::new(MAX_RELAYED));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut inside = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!("model endpoint relay: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _permit = permit;
            if let Ok(mut outside) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
            }
        });
    }
}

/// Starts pasta on the namespaces and waits until it has set them up.
async fn start_pasta(
    userns: &OwnedFd,
    netns: &OwnedFd,
    owner: u32,
    pid_file: &Path,
    log: &fs::File,
    cgroup: Option<AgentCgroup>,
) -> Result<tokio::process::Child, RuntimeError> {
    let pasta =
        sys::find_tool("pasta").ok_or_else(|| RuntimeError::Unavailable(NO_PASTA.into()))?;
    // pasta reopens it through /proc/self/fd: no directory on the way needs to let its uid pass.
    let pid = own_pid_file(pid_file, owner)?;
    let (user_fd, net_fd, pid_fd) = (userns.as_raw_fd(), netns.as_raw_fd(), pid.as_raw_fd());
    let mut cmd = std::process::Command::new(pasta);
    cmd.args([
        "-f",
        "-q",
        "--config-net",
        "--no-map-gw",
        "--dns-forward",
        DNS_FORWARD,
    ])
    .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
    .arg("--userns")
    .arg(format!("/proc/self/fd/{user_fd}"))
    .arg("--netns")
    .arg(format!("/proc/self/fd/{net_fd}"))
    .arg("-P")
    .arg(pid_file)
    .env_clear()
    .current_dir("/")
    .stdin(Stdio::null())
    .stdout(
        log.try_clone()
            .map_err(io_err("could not hand pasta the log"))?,
    )
    .stderr(
        log.try_clone()
            .map_err(io_err("could not hand pasta the log"))?,
    );
    let daemon = sys::self_pidfd();
    // SAFETY: raw syscalls only, on data made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(cgroup) = &cgroup {
                cgroup.join()?;
            }
            private_tun()?;
            for fd in [user_fd, net_fd, pid_fd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // pasta touches about 25 MiB of buffers at start, mostly left zero
            // while it idles: merged, an idle agent's pasta costs a few MiB.
            // Only other pastas opt in, and they hold packets of agents that
            // a merge cannot let read each other's: a merged page is copied
            // on the first write, and no agent runs code in a pasta.
            sys::merge_identical_pages();
            sys::become_user(owner)?;
            sys::die_with_parent(libc::SIGKILL, daemon)
        });
    }
    let mut child = sys::spawn(cmd, false)
        .await
        .map_err(io_err("could not start pasta"))?;
    let deadline = tokio::time::Instant::now() + PASTA_READY;
    loop {
        if pid.metadata().is_ok_and(|m| m.len() > 0) {
            // pasta wrote its bare pid; the record hive-c0re reads back is the
            // one every pid file of the hive holds (pid and start time).
            let rec = child
                .id()
                .and_then(PidRecord::of)
                .ok_or_else(|| RuntimeError::Io {
                    what: "pasta ended as it started".into(),
                    source: io::Error::from(io::ErrorKind::ConnectionRefused),
                })?;
            sys::write_pid_file(pid_file, rec)?;
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(RuntimeError::Io {
                what: format!(
                    "pasta could not connect the container to the network ({status}; its words are in the harness log)"
                ),
                source: io::Error::from(io::ErrorKind::ConnectionRefused),
            });
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.start_kill();
            return Err(RuntimeError::Io {
                what: "pasta did not set the container's network up in time".into(),
                source: io::Error::from(io::ErrorKind::TimedOut),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A fresh, empty pid file that `owner` (pasta) may write, in the daemon's own directory.
fn own_pid_file(path: &Path, owner: u32) -> Result<fs::File, RuntimeError> {
    let what = || format!("could not prepare {}", path.display());
    sys::remove_file(path)?;
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err(what()))?;
    nix::unistd::fchown(
        &file,
        Some(nix::unistd::Uid::from_raw(owner)),
        Some(nix::unistd::Gid::from_raw(owner)),
    )
    .map_err(|e| io_err(what())(e.into()))?;
    Ok(file)
}

/// In pasta's forked child: a private mount namespace with a tun device node
/// of its own that its unprivileged uid may open (the host's may be root-only).
/// Raw syscalls only.
fn private_tun() -> io::Result<()> {
    use sys::check_rc as check;
    sys::private_mount_namespace()?;
    // SAFETY: mkdir, mount and mknod with static NUL-terminated strings.
    unsafe {
        // Where the tun module was never loaded, /dev/net may not exist yet.
        if libc::mkdir(c"/dev/net".as_ptr(), 0o755) != 0
            && *libc::__errno_location() != libc::EEXIST
        {
            return Err(io::Error::last_os_error());
        }
        check(libc::mount(
            c"tmpfs".as_ptr(),
            c"/dev/net".as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            c"mode=0755,size=16k".as_ptr().cast(),
        ))?;
        // The tun device: character device 10:200, for anyone in this mount namespace.
        check(libc::mknod(
            c"/dev/net/tun".as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(10, 200),
        ))?;
        check(libc::chmod(c"/dev/net/tun".as_ptr(), 0o666))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(url: &str) -> Vec<(String, String)> {
        vec![("ANTHROPIC_BASE_URL".to_owned(), url.to_owned())]
    }

    #[test]
    fn only_a_loopback_model_endpoint_is_relayed() {
        let one = |url: &str| loopback_endpoints(&env(url));
        assert_eq!(
            one("http://127.0.0.1:8080"),
            ["127.0.0.1:8080".parse().unwrap()]
        );
        assert_eq!(
            one("http://[::1]:9/v1"),
            ["[::1]:9".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            one("https://localhost"),
            [
                "127.0.0.1:443".parse::<SocketAddr>().unwrap(),
                "[::1]:443".parse().unwrap()
            ]
        );
        assert_eq!(one("http://127.0.0.2/"), ["127.0.0.2:80".parse().unwrap()]);
        assert!(one("https://api.anthropic.com").is_empty());
        assert!(one("http://10.0.0.1:80").is_empty());
        // A model named by a private address is let through the egress filter instead.
        assert_eq!(
            model_endpoints(&env("http://10.0.0.1:81/v1")),
            ["10.0.0.1:81".parse().unwrap()]
        );
        assert!(model_endpoints(&env("https://api.anthropic.com")).is_empty());
        assert!(one("http://127.0.0.1:notaport").is_empty());
        assert!(loopback_endpoints(&[]).is_empty());
    }

    #[test]
    fn resolv_conf_points_at_the_forwarder_online_only() {
        assert_eq!(resolv_conf(false), "");
        assert!(resolv_conf(true).starts_with(&format!("nameserver {DNS_FORWARD}\n")));
    }
}
