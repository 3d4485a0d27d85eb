//! `hive-c0re doctor`: is this host ready to run a hive with these settings?
//!
//! Each check reads only what [`Host`] points it at (files, environment,
//! directories), so tests aim every check at temp files. A check says either
//! what is fine (`ok:`) or what is wrong and how to fix it (`problem:`), one line each.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::find_claude;
use crate::dashboard::TOKEN_ENV;
use crate::paths::Paths;
use crate::runtime::UID_RANGE;
use crate::runtime::{RuntimeKind, find_tool_in, tool_dirs};
use crate::serve_config::Resolved;

/// Free space below which the state dir's file system is a problem.
pub const MIN_FREE_BYTES: u64 = 1 << 30;
/// Where claude goes without `ANTHROPIC_BASE_URL`.
const DEFAULT_ENDPOINT: &str = "https://api.anthropic.com";

/// What the checks look at: the real host, or temp files in tests.
#[derive(Debug, Clone)]
pub struct Host {
    /// The environment serve would have.
    pub env: BTreeMap<String, String>,
    /// Directories searched for systemd-nspawn (PATH, then the usual system directories).
    pub tool_dirs: Vec<PathBuf>,
    /// `/etc/subuid`.
    pub subuid: PathBuf,
    /// `/etc/subgid`.
    pub subgid: PathBuf,
    /// `/proc/sys/user/max_user_namespaces`.
    pub max_user_namespaces: PathBuf,
    /// `/proc/self/mountinfo`, where the cgroup controllers are found.
    pub mountinfo: PathBuf,
    /// Also try to create a user namespace (a child process of this binary in one).
    pub probe_userns: bool,
    /// The effective uid serve would run as.
    pub euid: u32,
    /// Free bytes the state dir's file system should have.
    pub min_free_bytes: u64,
    /// How long to wait for the model endpoint and for `claude --version`.
    pub timeout: Duration,
}

impl Host {
    /// This host, as the user running doctor sees it.
    pub fn real() -> Self {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let path = env.get("PATH").cloned().unwrap_or_default();
        Self {
            tool_dirs: tool_dirs(path.as_ref()),
            env,
            subuid: "/etc/subuid".into(),
            subgid: "/etc/subgid".into(),
            max_user_namespaces: "/proc/sys/user/max_user_namespaces".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            probe_userns: true,
            euid: nix::unistd::geteuid().as_raw(),
            min_free_bytes: MIN_FREE_BYTES,
            timeout: Duration::from_secs(10),
        }
    }

    fn var(&self, k: &str) -> Option<&str> {
        self.env
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }
}

/// One finding: fine (what was found), or a problem (what is wrong and the fix).
pub type Finding = Result<String, String>;

/// Runs every check against the real host; prints one line each; 0 when all is well, else 1.
pub fn run(settings: &Resolved) -> i32 {
    let findings = check(&Host::real(), settings);
    let problems = findings.iter().filter(|f| f.is_err()).count();
    for f in &findings {
        match f {
            Ok(s) => println!("ok: {s}"),
            Err(s) => println!("problem: {s}"),
        }
    }
    if problems == 0 {
        println!("all is well");
        0
    } else {
        println!(
            "{problems} problem{} found",
            if problems == 1 { "" } else { "s" }
        );
        1
    }
}

/// Every check, in order.
pub fn check(host: &Host, settings: &Resolved) -> Vec<Finding> {
    let runtime = settings.args.runtime;
    let mut out = vec![nspawn(host, runtime)];
    if runtime != Some(RuntimeKind::Process) {
        out.push(user_namespaces(host));
        out.push(cgroups(host));
        out.extend(uid_ranges(host, settings.args.uid_base));
    }
    out.push(claude(host));
    out.push(credentials(host, &settings.paths));
    out.push(endpoint(host));
    out.extend(state_dir(host, &settings.paths));
    out.push(disk(host, &settings.paths));
    out.push(dashboard(host, settings.dashboard(), &settings.paths));
    out.extend(config_file(
        settings.file.as_deref(),
        !settings.webhooks.is_empty(),
    ));
    out.extend(settings.database.as_ref().map(|db| database_tls(host, db)));
    out
}

/// A config file with `[[webhooks]]` that others may read: a chat webhook's
/// URL, or an ntfy topic, is all it takes to post as the hive or to read
/// the operator's notifications.
pub fn config_file(file: Option<&Path>, webhooks: bool) -> Option<Finding> {
    use std::os::unix::fs::PermissionsExt;
    let file = file.filter(|_| webhooks)?;
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o777;
    Some(if mode & 0o077 != 0 {
        Err(format!(
            "the config file {} holds [[webhooks]] (a chat webhook's URL and an ntfy topic are their secrets) but others may read it (mode {mode:o}): chmod 600 it",
            file.display()
        ))
    } else {
        Ok(format!(
            "the config file {} holds its webhooks privately",
            file.display()
        ))
    })
}

/// A database password sent to a server whose identity is not checked:
/// whoever answers at the database's address (a machine in the middle, a
/// poisoned DNS name) can ask for it in clear under `sslmode=prefer`.
pub fn database_tls(host: &Host, db: &crate::store::pg::PgSettings) -> Finding {
    use crate::store::pg::settings::SslMode;
    use tokio_postgres::config::Host as PgHost;
    let resolved = db
        .resolve(&|k| host.var(k).map(str::to_owned))
        .map_err(|e| format!("serve would refuse the database settings: {e}"))?;
    let local = resolved.config.get_hosts().iter().all(|h| match h {
        PgHost::Unix(_) => true,
        PgHost::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    });
    let checked = matches!(resolved.sslmode, SslMode::VerifyCa | SslMode::VerifyFull);
    if local || checked || resolved.config.get_password().is_none() {
        return Ok(format!("database {}", resolved.name));
    }
    Err(format!(
        "the database password goes to {} without checking the server's certificate (sslmode {}): \
         whoever answers at that address can ask for it in clear; add sslmode=verify-full and \
         sslrootcert=FILE (the CA that signed the server's certificate) to the database URL",
        resolved.name,
        resolved.sslmode.as_str()
    ))
}

/// systemd-nspawn, pasta and nft installed, and serve able to use them (root).
pub fn nspawn(host: &Host, runtime: Option<RuntimeKind>) -> Finding {
    if runtime == Some(RuntimeKind::Process) {
        return Ok(
            "runtime = \"process\": agents run as plain host processes, not isolated".into(),
        );
    }
    let Some(bin) = find_tool_in(&host.tool_dirs, "systemd-nspawn") else {
        return Err(
            "systemd-nspawn is not installed, so agents would run unisolated: install the \
                    Debian package systemd-container, or set runtime = \"process\" to accept that"
                .into(),
        );
    };
    if host.euid != 0 {
        return Err(format!(
            "running as uid {}, but agents run in containers only when serve runs as root: \
             run serve (and doctor) as root, or set runtime = \"process\" to accept unisolated agents",
            host.euid
        ));
    }
    if find_tool_in(&host.tool_dirs, "pasta").is_none() {
        return Err(
            "pasta is not installed, so serve could not give containers their own network and \
             would run agents unisolated: install the Debian package passt"
                .into(),
        );
    }
    if find_tool_in(&host.tool_dirs, "nft").is_none() {
        return Err(
            "nft is not installed, so serve could not keep containers off the host's own \
             networks (its addresses, the LAN, the cloud's metadata service) and would run \
             agents unisolated: install the Debian package nftables, or set \
             allow_networks = \"all\" to let containers reach all of them"
                .into(),
        );
    }
    let version = first_line_of(&bin, &["--version"], host.timeout).unwrap_or_default();
    Ok(format!("systemd-nspawn at {}: {version}", bin.display()))
}

/// The kernel lets serve create user namespaces.
pub fn user_namespaces(host: &Host) -> Finding {
    let fix = "sysctl -w user.max_user_namespaces=65536 (and put it in /etc/sysctl.d/ to keep it)";
    let max = std::fs::read_to_string(&host.max_user_namespaces)
        .map_err(|e| {
            format!(
                "could not read {} ({e}): this kernel may lack user namespaces; they are needed for containers",
                host.max_user_namespaces.display()
            )
        })?;
    if max.trim() == "0" {
        return Err(format!(
            "user namespaces are off ({} is 0): {fix}",
            host.max_user_namespaces.display()
        ));
    }
    if host.probe_userns {
        probe_userns().map_err(|e| {
            format!("creating a user namespace failed ({e}): check {fix}, and any LSM or container that forbids them")
        })?;
    }
    Ok(format!("user namespaces usable (max {})", max.trim()))
}

/// The cgroup controllers that bound each agent's container: memory (its
/// bound) and cpu (its equal share, and the cap).
pub fn cgroups(host: &Host) -> Finding {
    let mountinfo = std::fs::read_to_string(&host.mountinfo)
        .map_err(|e| format!("could not read {} ({e})", host.mountinfo.display()))?;
    let missing: Vec<&str> = ["memory", "cpu"]
        .into_iter()
        .filter(|c| !crate::runtime::has_cgroup_controller(&mountinfo, c))
        .collect();
    match missing.as_slice() {
        [] => Ok("cgroup controllers memory and cpu: each agent's container has a memory bound and an equal share of the CPU".into()),
        missing => {
            let without = missing
                .iter()
                .map(|c| if *c == "memory" { "a memory bound" } else { "a CPU share of their own" })
                .collect::<Vec<_>>()
                .join(" or ");
            Err(format!(
                "this host mounts no cgroup {} controller, so agents' containers run without {without}: on cgroup v2, echo +{} > /sys/fs/cgroup/cgroup.subtree_control; on v1, mount the controller's hierarchy",
                missing.join(" or "),
                missing.join(" +"),
            ))
        }
    }
}

/// Runs this binary's `--version` in a new user namespace.
fn probe_userns() -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: unshare is async-signal-safe; the closure touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("it exited with {status}")))
    }
}

/// No /etc/subuid or /etc/subgid range reaches into the uids hive-c0re gives
/// agents (from `uid_base` up).
pub fn uid_ranges(host: &Host, uid_base: u32) -> Vec<Finding> {
    [(&host.subuid, "uid"), (&host.subgid, "gid")]
        .into_iter()
        .map(|(file, what)| subid_overlap(file, what, u64::from(uid_base)))
        .collect()
}

fn subid_overlap(file: &Path, what: &str, first: u64) -> Finding {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(format!(
                "{} does not exist: no {what}s are delegated",
                file.display()
            ));
        }
        Err(e) => {
            return Err(format!(
                "could not read {} ({e}): make it readable",
                file.display()
            ));
        }
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(owner), Some(Ok(start)), Some(Ok(count))) = (
            f.next(),
            f.next().map(str::parse::<u64>),
            f.next().map(str::parse::<u64>),
        ) else {
            continue;
        };
        let end = start + count;
        if count > 0 && end > first {
            let flag = if what == "uid" { "subuids" } else { "subgids" };
            return Err(format!(
                "{} line {} gives {owner} the {what}s {start}-{}, which overlap the {what}s hive-c0re \
                 gives its agents ({first} and up, {UID_RANGE} each): move that range below {first}, \
                 e.g. usermod --del-{flag} {start}-{} --add-{flag} 100000-{} {owner}",
                file.display(),
                n + 1,
                end - 1,
                end - 1,
                100_000 + count.min(first.saturating_sub(100_000)).max(1) - 1
            ));
        }
    }
    Ok(format!(
        "no range in {} overlaps the agents' {what}s ({first} and up)",
        file.display()
    ))
}

/// The claude CLI serve would give agents, and its version.
pub fn claude(host: &Host) -> Finding {
    let Some(bin) = find_claude(
        host.var("HIVE_CLAUDE_BIN").map(OsString::from),
        host.env.get("PATH").map(|p| p.as_ref()),
    ) else {
        return Err(
            "the claude CLI is not found (no HIVE_CLAUDE_BIN, no claude on PATH): install it \
                    (npm install -g @anthropic-ai/claude-code) and put it on serve's PATH, or set \
                    HIVE_CLAUDE_BIN to its path"
                .into(),
        );
    };
    match first_line_of(&bin, &["--version"], host.timeout) {
        Ok(v) if !v.is_empty() => Ok(format!("claude {v} at {}", bin.display())),
        Ok(_) => Err(format!(
            "{} --version printed nothing: is it the claude CLI? Point HIVE_CLAUDE_BIN at claude",
            bin.display()
        )),
        Err(e) => Err(format!(
            "{} --version failed ({e}): reinstall the claude CLI, or point HIVE_CLAUDE_BIN at a working one",
            bin.display()
        )),
    }
}

/// The variables that let claude reach the model.
pub const CREDENTIAL_VARS: [&str; 2] = ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"];

/// A credential claude can use: in serve's environment, or a hive-wide
/// secret of the running daemon (asked over host.sock: names only).
pub fn credentials(host: &Host, paths: &Paths) -> Finding {
    if let Some(k) = CREDENTIAL_VARS.iter().find(|k| host.var(k).is_some()) {
        return Ok(format!("credentials: {k} is set"));
    }
    let secrets =
        hive_sh4re::host::client::request(paths.host_sock(), hive_sh4re::host::verb::SecretList {})
            .ok()
            .and_then(|r| r.secrets)
            .unwrap_or_default();
    if let Some(s) = secrets
        .iter()
        .find(|s| s.agent.is_none() && CREDENTIAL_VARS.contains(&s.name.as_str()))
    {
        return Ok(format!("credentials: {} is a hive-wide secret", s.name));
    }
    Err(format!(
        "no model credentials: store one as a secret, e.g. printf %s \"$KEY\" | hive-c0re secret set {} \
         (an API key; or {}, what claude setup-token prints), or set it in serve's environment",
        CREDENTIAL_VARS[0], CREDENTIAL_VARS[1]
    ))
}

/// A TCP connection to the model endpoint (`ANTHROPIC_BASE_URL`, else Anthropic's API).
pub fn endpoint(host: &Host) -> Finding {
    let url = host.var("ANTHROPIC_BASE_URL").unwrap_or(DEFAULT_ENDPOINT);
    let fix = "check the network and firewall, or ANTHROPIC_BASE_URL";
    let Some((hostname, port)) = host_port(url) else {
        return Err(format!(
            "ANTHROPIC_BASE_URL {url:?} is not an http(s) URL: write e.g. https://api.anthropic.com"
        ));
    };
    let addrs: Vec<_> = match (hostname.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Err(format!(
                "the model endpoint {url} does not resolve ({e}): {fix}"
            ));
        }
    };
    let mut last = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, host.timeout) {
            Ok(_) => return Ok(format!("model endpoint {url} reachable ({a})")),
            Err(e) => last = Some(e),
        }
    }
    Err(format!(
        "the model endpoint {url} is not reachable ({}): {fix}",
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address".into())
    ))
}

/// `(host, port)` of an http(s) URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, rest) = v6.split_once(']')?;
        let port = rest
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok())?;
        return Some((h.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None if !authority.is_empty() => Some((authority.to_owned(), default)),
        None => None,
    }
}

/// The state dir, the database and the config repos closed to other users.
pub fn state_dir(host: &Host, paths: &Paths) -> Vec<Finding> {
    let dir = &paths.state;
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Ok(format!(
                "state dir {} does not exist yet: serve creates it",
                dir.display()
            ))];
        }
        Err(e) => return vec![Err(format!("could not read {} ({e})", dir.display()))],
    };
    let mut out = Vec::new();
    if !meta.is_dir() {
        return vec![Err(format!(
            "the state dir {} is not a directory: move it away, or set state_dir elsewhere",
            dir.display()
        ))];
    }
    if meta.uid() != host.euid {
        out.push(Err(format!(
            "the state dir {} belongs to uid {}, not to uid {} that serve runs as: chown {} {}",
            dir.display(),
            meta.uid(),
            host.euid,
            host.euid,
            dir.display()
        )));
    }
    let checks = [
        (dir.clone(), 0o022, "0711"),
        (paths.db(), 0o077, "0600"),
        (paths.configs_root(), 0o077, "0700"),
    ];
    for (path, forbidden, fix) in checks {
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let mode = m.permissions().mode() & 0o7777;
        if mode & forbidden != 0 {
            out.push(Err(format!(
                "{} has mode {mode:04o}, open to other users: chmod {fix} {}",
                path.display(),
                path.display()
            )));
        }
    }
    if out.is_empty() {
        out.push(Ok(format!(
            "state dir {} closed to other users",
            dir.display()
        )));
    }
    out
}

/// Free space where the state lives.
pub fn disk(host: &Host, paths: &Paths) -> Finding {
    let Some(existing) = paths.state.ancestors().find(|p| p.exists()) else {
        return Err(format!("no part of {} exists", paths.state.display()));
    };
    let st = nix::sys::statvfs::statvfs(existing).map_err(|e| {
        format!(
            "could not read the free space of {} ({e})",
            existing.display()
        )
    })?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if free < host.min_free_bytes {
        return Err(format!(
            "only {:.1} GiB free at {} (want {:.1} GiB): free some space, or set state_dir on a \
             larger file system; the database, agents' state and claude's sessions grow there",
            gib(free),
            existing.display(),
            gib(host.min_free_bytes)
        ));
    }
    Ok(format!(
        "{:.1} GiB free at {}",
        gib(free),
        existing.display()
    ))
}

/// A `HIVE_DASHBOARD_TOKEN` serve accepts, and one chosen by the operator for a dashboard beyond loopback.
pub fn dashboard(host: &Host, addr: Option<&str>, paths: &Paths) -> Finding {
    let Some(addr) = addr else {
        return Ok("no dashboard is served".into());
    };
    let fixed = host.var(TOKEN_ENV).map(str::trim);
    if let Some(t) = fixed {
        crate::login::kept::check_fixed(t).map_err(|e| format!("serve would refuse: {e}"))?;
    }
    let loopback = match addr.to_socket_addrs() {
        Ok(mut a) => a.all(|a| a.ip().is_loopback()),
        Err(e) => {
            return Err(format!(
                "the dashboard address {addr:?} does not resolve ({e}): write e.g. 127.0.0.1:7878"
            ));
        }
    };
    match (loopback, fixed) {
        (true, _) => Ok(format!("dashboard on {addr} (loopback)")),
        (false, Some(_)) => Ok(format!(
            "dashboard on {addr} with a fixed token ({TOKEN_ENV})"
        )),
        (false, None) => Err(format!(
            "the dashboard listens on {addr}, beyond this host, without a fixed token (its token is \
             the one hive-c0re made in {}): set {TOKEN_ENV} in serve's environment (e.g. openssl \
             rand -hex 32) to choose and rotate it yourself, or set dashboard = \"127.0.0.1:7878\"",
            paths.dashboard_token().display()
        )),
    }
}

/// Runs `bin args` and returns the first line it printed (stdout, else stderr), within `timeout`.
fn first_line_of(bin: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("no answer within {}s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if out.trim().is_empty()
        && let Some(mut s) = child.stderr.take()
    {
        let _ = s.read_to_string(&mut out);
    }
    let line = out.lines().next().unwrap_or_default().trim().to_owned();
    if status.success() {
        Ok(line)
    } else {
        Err(format!(
            "{status}{}",
            if line.is_empty() {
                String::new()
            } else {
                format!(": {line}")
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A host where everything is fine, built from temp files.
    struct Fixture {
        dir: tempfile::TempDir,
        host: Host,
        paths: Paths,
    }

    fn write_exe(path: &Path, script: &str) {
        std::fs::write(path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        write_exe(&bin.join("systemd-nspawn"), "echo 'systemd 999 (test)'");
        write_exe(&bin.join("pasta"), "exit 0");
        write_exe(&bin.join("nft"), "exit 0");
        write_exe(&bin.join("claude"), "echo '9.9.9 (Claude Code)'");
        std::fs::write(dir.path().join("subuid"), "alice:100000:65536\n").unwrap();
        std::fs::write(dir.path().join("subgid"), "alice:100000:65536\n").unwrap();
        std::fs::write(dir.path().join("max_user_namespaces"), "63000\n").unwrap();
        std::fs::write(
            dir.path().join("mountinfo"),
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
        )
        .unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // Kept open for the fixture's life by leaking: the endpoint check connects to it.
        std::mem::forget(listener);
        let env: BTreeMap<String, String> = [
            ("PATH", bin.display().to_string()),
            ("ANTHROPIC_API_KEY", "sk-test".into()),
            ("ANTHROPIC_BASE_URL", url),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let host = Host {
            env,
            tool_dirs: vec![bin],
            subuid: dir.path().join("subuid"),
            subgid: dir.path().join("subgid"),
            max_user_namespaces: dir.path().join("max_user_namespaces"),
            mountinfo: dir.path().join("mountinfo"),
            probe_userns: false,
            euid: nix::unistd::geteuid().as_raw(),
            min_free_bytes: 1,
            timeout: Duration::from_secs(10),
        };
        let paths = Paths {
            state,
            run: dir.path().join("run"),
        };
        Fixture { dir, host, paths }
    }

    fn problem(f: Finding) -> String {
        f.expect_err("a problem")
    }

    #[test]
    fn the_fixture_is_well() {
        let f = fixture();
        let mut host = f.host.clone();
        host.euid = 0;
        assert!(nspawn(&host, None).unwrap().contains("systemd 999"));
        assert!(user_namespaces(&f.host).is_ok());
        assert!(cgroups(&f.host).is_ok(), "{:?}", cgroups(&f.host));
        assert!(
            uid_ranges(&f.host, crate::runtime::uid_ranges::DEFAULT_UID_BASE)
                .iter()
                .all(Result::is_ok)
        );
        assert!(claude(&f.host).unwrap().contains("9.9.9"));
        assert!(credentials(&f.host, &f.paths).is_ok());
        assert!(endpoint(&f.host).is_ok(), "{:?}", endpoint(&f.host));
        assert!(state_dir(&f.host, &f.paths).iter().all(Result::is_ok));
        assert!(disk(&f.host, &f.paths).is_ok());
        assert!(dashboard(&f.host, Some("127.0.0.1:7878"), &f.paths).is_ok());
    }

    #[test]
    fn missing_nspawn_and_not_root_are_problems_unless_the_runtime_is_process() {
        let mut f = fixture();
        f.host.euid = 0;
        std::fs::remove_file(f.dir.path().join("bin/systemd-nspawn")).unwrap();
        assert!(
            problem(nspawn(&f.host, None)).contains("install the Debian package systemd-container")
        );
        assert!(nspawn(&f.host, Some(RuntimeKind::Process)).is_ok());
        let mut f = fixture();
        f.host.euid = 0;
        std::fs::remove_file(f.dir.path().join("bin/nft")).unwrap();
        assert!(problem(nspawn(&f.host, None)).contains("Debian package nftables"));
        std::fs::remove_file(f.dir.path().join("bin/pasta")).unwrap();
        assert!(problem(nspawn(&f.host, None)).contains("Debian package passt"));
        let mut f = fixture();
        f.host.euid = 1000;
        assert!(
            problem(nspawn(&f.host, Some(RuntimeKind::Nspawn)))
                .contains("run serve (and doctor) as root")
        );
    }

    #[test]
    fn a_missing_cgroup_controller_is_a_problem_on_either_version() {
        let f = fixture();
        // cgroup v2 only: what it offers is in its root's cgroup.controllers.
        let v2 = f.dir.path().join("unified");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(
            &f.host.mountinfo,
            format!("41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n", v2.display()),
        )
        .unwrap();
        std::fs::write(v2.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        assert!(cgroups(&f.host).is_ok(), "{:?}", cgroups(&f.host));
        std::fs::write(v2.join("cgroup.controllers"), "io memory pids\n").unwrap();
        let p = problem(cgroups(&f.host));
        assert!(
            p.contains("no cgroup cpu controller")
                && p.contains("without a CPU share")
                && p.contains("echo +cpu >"),
            "{p}"
        );
        // v1 with a memory hierarchy only.
        std::fs::write(
            &f.host.mountinfo,
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
        )
        .unwrap();
        assert!(problem(cgroups(&f.host)).contains("no cgroup cpu controller"));
        std::fs::write(&f.host.mountinfo, "").unwrap();
        let p = problem(cgroups(&f.host));
        assert!(
            p.contains("no cgroup memory or cpu controller") && p.contains("echo +memory +cpu >"),
            "{p}"
        );
    }

    #[test]
    fn user_namespaces_switched_off_is_a_problem() {
        let f = fixture();
        std::fs::write(&f.host.max_user_namespaces, "0\n").unwrap();
        assert!(problem(user_namespaces(&f.host)).contains("sysctl -w user.max_user_namespaces"));
        std::fs::remove_file(&f.host.max_user_namespaces).unwrap();
        assert!(problem(user_namespaces(&f.host)).contains("could not read"));
    }

    #[test]
    fn a_subuid_or_subgid_range_in_the_agents_uids_is_a_problem() {
        let f = fixture();
        std::fs::write(
            &f.host.subuid,
            "# comment\nalice:100000:65536\nbob:524288:65536\n",
        )
        .unwrap();
        std::fs::write(&f.host.subgid, "carol:500000:100000\n").unwrap();
        let found = uid_ranges(&f.host, crate::runtime::uid_ranges::DEFAULT_UID_BASE);
        let uid = problem(found[0].clone());
        assert!(
            uid.contains("line 3 gives bob the uids 524288-589823"),
            "{uid}"
        );
        assert!(
            uid.contains("usermod --del-subuids 524288-589823 --add-subuids 100000-165535 bob"),
            "{uid}"
        );
        let gid = problem(found[1].clone());
        assert!(gid.contains("carol the gids 500000-599999"), "{gid}");
        std::fs::remove_file(&f.host.subuid).unwrap();
        assert!(uid_ranges(&f.host, crate::runtime::uid_ranges::DEFAULT_UID_BASE)[0].is_ok());
    }

    #[test]
    fn a_missing_or_broken_claude_is_a_problem() {
        let mut f = fixture();
        f.host
            .env
            .insert("HIVE_CLAUDE_BIN".into(), "/nonexistent/claude".into());
        assert!(problem(claude(&f.host)).contains("/nonexistent/claude --version failed"));
        f.host.env.remove("HIVE_CLAUDE_BIN");
        std::fs::remove_file(f.dir.path().join("bin/claude")).unwrap();
        assert!(problem(claude(&f.host)).contains("the claude CLI is not found"));
        write_exe(
            &f.dir.path().join("bin/claude"),
            "echo 'no such thing' >&2; exit 3",
        );
        let e = problem(claude(&f.host));
        assert!(e.contains("exit status: 3: no such thing"), "{e}");
    }

    #[test]
    fn no_credentials_is_a_problem() {
        let mut f = fixture();
        f.host.env.remove("ANTHROPIC_API_KEY");
        f.host
            .env
            .insert("CLAUDE_CODE_OAUTH_TOKEN".into(), " ".into());
        assert!(problem(credentials(&f.host, &f.paths)).contains("no model credentials"));
        f.host
            .env
            .insert("CLAUDE_CODE_OAUTH_TOKEN".into(), "t".into());
        assert!(credentials(&f.host, &f.paths).is_ok());
    }

    #[test]
    fn an_unreachable_or_malformed_endpoint_is_a_problem() {
        let mut f = fixture();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", closed.local_addr().unwrap());
        drop(closed);
        f.host.env.insert("ANTHROPIC_BASE_URL".into(), url.clone());
        let e = problem(endpoint(&f.host));
        assert!(
            e.contains(&format!("the model endpoint {url} is not reachable")),
            "{e}"
        );
        f.host
            .env
            .insert("ANTHROPIC_BASE_URL".into(), "api.example".into());
        assert!(problem(endpoint(&f.host)).contains("is not an http(s) URL"));
    }

    #[test]
    fn url_hosts_and_ports() {
        assert_eq!(
            host_port("https://api.anthropic.com"),
            Some(("api.anthropic.com".into(), 443))
        );
        assert_eq!(
            host_port("http://127.0.0.1:9/x"),
            Some(("127.0.0.1".into(), 9))
        );
        assert_eq!(
            host_port("http://u:p@[::1]:8080/"),
            Some(("::1".into(), 8080))
        );
        assert_eq!(host_port("ftp://x"), None);
    }

    #[test]
    fn open_state_modes_and_a_foreign_owner_are_problems() {
        let f = fixture();
        std::fs::set_permissions(&f.paths.state, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(f.paths.db(), "").unwrap();
        std::fs::set_permissions(f.paths.db(), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::create_dir(f.paths.configs_root()).unwrap();
        std::fs::set_permissions(
            f.paths.configs_root(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let found: Vec<String> = state_dir(&f.host, &f.paths)
            .into_iter()
            .map(problem)
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].contains("mode 0777") && found[0].contains("chmod 0711"),
            "{found:?}"
        );
        assert!(found[1].contains("chmod 0600"), "{found:?}");
        assert!(found[2].contains("chmod 0700"), "{found:?}");
        let mut host = f.host.clone();
        host.euid += 1;
        std::fs::set_permissions(&f.paths.state, std::fs::Permissions::from_mode(0o711)).unwrap();
        let owner = state_dir(&host, &f.paths);
        assert!(problem(owner[0].clone()).contains("chown"), "{owner:?}");
    }

    #[test]
    fn too_little_free_disk_is_a_problem() {
        let mut f = fixture();
        f.host.min_free_bytes = u64::MAX;
        assert!(problem(disk(&f.host, &f.paths)).contains("free some space"));
    }

    #[test]
    fn a_public_dashboard_without_a_fixed_token_or_a_token_serve_refuses_is_a_problem() {
        let mut f = fixture();
        let e = problem(dashboard(&f.host, Some("0.0.0.0:7878"), &f.paths));
        assert!(e.contains("set HIVE_DASHBOARD_TOKEN"), "{e}");
        assert!(e.contains("dashboard.token"), "{e}");
        f.host.env.insert(TOKEN_ENV.into(), "short".into());
        let e = problem(dashboard(&f.host, Some("127.0.0.1:7878"), &f.paths));
        assert!(
            e.contains("serve would refuse: HIVE_DASHBOARD_TOKEN must be"),
            "{e}"
        );
        f.host
            .env
            .insert(TOKEN_ENV.into(), "a-long-enough-token".into());
        assert!(dashboard(&f.host, Some("0.0.0.0:7878"), &f.paths).is_ok());
        assert!(dashboard(&f.host, None, &f.paths).is_ok());
    }

    /// Webhook URLs and ntfy topics are secrets: a config file holding them
    /// that others may read is a problem; the same file at 0600 is fine.
    #[test]
    fn webhooks_in_a_config_file_others_read_are_a_problem() {
        let f = fixture();
        let file = f.dir.path().join("hive.toml");
        std::fs::write(
            &file,
            "[[webhooks]]\nurl = \"https://hooks.slack.com/services/T/B/x\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(problem(config_file(Some(&file), true).unwrap()).contains("chmod 600"));
        assert!(
            config_file(Some(&file), false).is_none(),
            "no webhooks, nothing to say"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(config_file(Some(&file), true).unwrap().is_ok());
    }

    /// A password sent to a database whose certificate is not checked is a
    /// problem, unless the database is on this host.
    #[test]
    fn a_password_to_an_unchecked_remote_database_is_a_problem() {
        use crate::store::pg::PgSettings;
        let f = fixture();
        let with = |url: &str| {
            let mut s = PgSettings::new(url);
            s.password = Some("pw".into());
            database_tls(&f.host, &s)
        };
        let e = problem(with("postgres://node@db.example.org/hive"));
        assert!(
            e.contains("sslmode prefer") && e.contains("verify-full"),
            "{e}"
        );
        assert!(with("postgres://node@db.example.org/hive?sslmode=require").is_err());
        assert!(
            with("postgres://node@127.0.0.1:5432/hive").is_ok(),
            "on this host"
        );
        let ca = f.dir.path().join("ca.pem");
        std::fs::write(&ca, "").unwrap();
        let checked = format!(
            "postgres://node@db.example.org/hive?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        assert!(with(&checked).is_ok(), "{:?}", with(&checked));
        let mut none = PgSettings::new("postgres://node@db.example.org/hive");
        none.password = None;
        assert!(
            database_tls(&f.host, &none).is_ok(),
            "no password to give away"
        );
    }
}
