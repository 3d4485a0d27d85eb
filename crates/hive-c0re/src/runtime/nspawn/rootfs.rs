//! The container's root tree: a handful of directories and small files that
//! hive-c0re rebuilds at every launch, everything else bound in from the host.
//!
//! ```text
//! <rootfs>/                 0755  (all entries owned by the agent's uid base: root inside)
//!   bin sbin lib lib64 ...  symlinks into usr/ (copied from the host's merged-usr links)
//!   usr/                    mount point: host /usr, read-only
//!   etc/                    passwd group hosts hostname nsswitch.conf resolv.conf (the network's)
//!                           machine-id (empty) services protocols ld.so.cache
//!                           ssl/openssl.cnf [localtime]
//!   etc/hive/env      0600  the harness's environment as shell assignments
//!   etc/ssl/certs/          mount point: host /etc/ssl/certs, read-only (if the host has it)
//!   etc/alternatives/       mount point: host /etc/alternatives, read-only (Debian's
//!                           /usr/bin/awk and friends point there)
//!   dev proc sys run tmp var/tmp   mount points nspawn fills (tmpfs, api file systems)
//!   root/             0700
//!   state/                  mount point: the agent's state dir, read-write
//!   opt/hive/bin/<harness>  mount point (file): the harness binary, read-only
//!   opt/claude/             mount point: the claude package directory, read-only
//!   hive/agents/            mount point (manager only): every config repo (`<state>/configs`)
//! ```
//!
//! The container runs with `--read-only`, so mount points must exist beforehand
//! and nothing the agent does can change this tree.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, umount2};

use crate::runtime::owner::shift_tree;

/// Directories every tree has (besides `root/`, which is 0700).
const DIRS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "tmp",
    "var/tmp",
    "etc/hive",
    "usr",
    "state",
    "opt/hive/bin",
    "hive",
];

/// Small host files copied as they are (fresh at every launch): tables libc and
/// OpenSSL look up, and the dynamic linker's cache of the shared /usr.
const COPIED_ETC: &[&str] = &["services", "protocols", "ld.so.cache", "ssl/openssl.cnf"];

/// What to put into a tree beyond the fixed skeleton.
#[derive(Debug, Default)]
pub(super) struct Tree {
    /// The container's hostname (`h-<name>`).
    pub hostname: String,
    /// Symlinks: (absolute path inside, target as the host has it).
    pub links: Vec<(PathBuf, PathBuf)>,
    /// Mount points: (absolute path inside, true for a file bind).
    pub mountpoints: Vec<(PathBuf, bool)>,
    /// Contents of `/etc/hive/env`.
    pub env: String,
    /// Contents of `/etc/resolv.conf`.
    pub resolv_conf: String,
}

/// Builds a fresh tree at `root`, owned by `base` (root inside); any previous tree is removed first.
pub(super) fn build(root: &Path, base: u32, tree: &Tree) -> io::Result<()> {
    remove(root)?;
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::create_dir(root)?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    for dir in DIRS {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::create_dir(root.join("root"))?;
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700))?;
    for (inside, target) in &tree.links {
        symlink(target, root.join(relative(inside)?))?;
    }
    for (inside, is_file) in &tree.mountpoints {
        let at = root.join(relative(inside)?);
        if *is_file {
            fs::create_dir_all(at.parent().unwrap_or(root))?;
            fs::File::create(&at)?;
        } else {
            fs::create_dir_all(&at)?;
        }
    }
    write_etc(&root.join("etc"), tree)?;
    open_modes(root)?;
    shift_tree(root, base)
}

/// Gives the fresh tree the modes a container reads it with, whatever the
/// daemon's umask: directories 0755 and files 0644, but `root/` (0700) and
/// the environment file (0600, it holds the API key) stay private.
fn open_modes(root: &Path) -> io::Result<()> {
    let private = [root.join("root"), root.join("etc/hive/env")];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let meta = fs::symlink_metadata(&path)?;
            if private.contains(&path) || meta.is_symlink() {
                continue;
            }
            if meta.is_dir() {
                stack.push(path);
            } else {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
            }
        }
    }
    Ok(())
}

/// `/x/y` inside the container as a path relative to its root; refuses anything but plain names.
fn relative(inside: &Path) -> io::Result<&Path> {
    let rel = inside.strip_prefix("/").unwrap_or(inside);
    if rel.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(rel)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad path inside the container: {}", inside.display()),
        ))
    }
}

fn write_etc(etc: &Path, tree: &Tree) -> io::Result<()> {
    let host = &tree.hostname;
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/state:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(
        etc.join("hosts"),
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{host}\n"
        ),
    )?;
    fs::write(etc.join("hostname"), format!("{host}\n"))?;
    fs::write(
        etc.join("nsswitch.conf"),
        "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nservices: files\nprotocols: files\n",
    )?;
    fs::write(etc.join("resolv.conf"), &tree.resolv_conf)?;
    // Empty: nspawn then gives the container a transient id.
    fs::write(etc.join("machine-id"), "")?;
    for name in COPIED_ETC {
        if let Ok(bytes) = fs::read(Path::new("/etc").join(name)) {
            let to = etc.join(name);
            fs::create_dir_all(to.parent().unwrap_or(etc))?;
            fs::write(to, bytes)?;
        }
    }
    if let Some(zone) = host_zoneinfo() {
        symlink(zone, etc.join("localtime"))?;
    }
    let env = etc.join("hive/env");
    fs::write(&env, &tree.env)?;
    fs::set_permissions(&env, fs::Permissions::from_mode(0o600))
}

/// The host's time zone file, when it lives in /usr (which the container shares).
fn host_zoneinfo() -> Option<PathBuf> {
    let zone = fs::canonicalize("/etc/localtime").ok()?;
    zone.starts_with("/usr/share/zoneinfo").then_some(zone)
}

/// Removes a tree, refusing while anything is mounted at or below it.
///
/// Binds normally exist only in the container's own mount namespace; a mount
/// on the host side would be a leftover, which is detached first so that the
/// removal can never reach into a bound host directory.
pub(super) fn remove(root: &Path) -> io::Result<()> {
    match fs::symlink_metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a directory; refusing to remove it as a container root",
                    root.display()
                ),
            ));
        }
        Ok(_) => {}
    }
    let root = fs::canonicalize(root)?;
    for mount in mounts_at_or_below(&root)?.iter().rev() {
        tracing::warn!(mount = %mount.display(), "detaching a host mount left inside a container root");
        umount2(mount, MntFlags::MNT_DETACH).map_err(io::Error::from)?;
    }
    let left = mounts_at_or_below(&root)?;
    if let Some(mount) = left.first() {
        return Err(io::Error::other(format!(
            "{} is still mounted; refusing to remove the container root {}",
            mount.display(),
            root.display()
        )));
    }
    crate::runtime::remove_tree(&root)
}

/// Mount points of this mount namespace at or below `root`, in mount order.
fn mounts_at_or_below(root: &Path) -> io::Result<Vec<PathBuf>> {
    let table = fs::read("/proc/self/mountinfo")?;
    Ok(table
        .split(|b| *b == b'\n')
        .filter_map(|line| line.split(|b| *b == b' ').nth(4))
        .map(|field| PathBuf::from(OsStr::from_bytes(&unescape(field))))
        .filter(|mount| mount.starts_with(root))
        .collect())
}

/// Undoes mountinfo's octal escapes (`\040` for a space and the like).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hive-rootfs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn unescape_decodes_mountinfo_octal() {
        assert_eq!(unescape(br"/a\040b\134c"), b"/a b\\c".to_vec());
        assert_eq!(unescape(br"/plain\0"), b"/plain\\0".to_vec());
    }

    #[test]
    fn relative_refuses_parent_components() {
        assert_eq!(
            relative(Path::new("/opt/claude")).ok(),
            Some(Path::new("opt/claude"))
        );
        assert!(relative(Path::new("/opt/../etc")).is_err());
    }

    #[test]
    fn remove_never_reaches_into_a_bound_directory() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: bind mounts need root");
            return;
        }
        let dir = scratch("remove");
        let precious = dir.join("precious");
        fs::create_dir_all(&precious).expect("mkdir");
        fs::write(precious.join("keep"), "host data").expect("write");
        let root = dir.join("root");
        fs::create_dir_all(root.join("usr")).expect("mkdir");
        let none: Option<&str> = None;
        nix::mount::mount(
            Some(&precious),
            &root.join("usr"),
            none,
            nix::mount::MsFlags::MS_BIND,
            none,
        )
        .expect("bind");
        remove(&root).expect("remove");
        assert!(!root.exists());
        assert_eq!(
            fs::read_to_string(precious.join("keep")).expect("kept"),
            "host data"
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn build_makes_an_owned_skeleton_and_rebuilds_cleanly() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = scratch("build");
        let root = dir.join("root");
        let tree = Tree {
            hostname: "h-x".into(),
            links: vec![("/bin".into(), "usr/bin".into())],
            mountpoints: vec![
                ("/opt/hive/bin/h".into(), true),
                ("/hive/agents/x/config".into(), false),
            ],
            env: "export A='b'\n".into(),
            resolv_conf: "nameserver 169.254.1.53\n".into(),
        };
        let base = 4 * 65536;
        build(&root, base, &tree).expect("build");
        fs::write(root.join("stale"), "from an older launch").expect("write");
        build(&root, base, &tree).expect("rebuild");
        assert!(!root.join("stale").exists());
        assert!(root.join("opt/hive/bin/h").is_file());
        assert!(root.join("hive/agents/x/config").is_dir());
        assert_eq!(
            fs::read_link(root.join("bin")).expect("link"),
            Path::new("usr/bin")
        );
        let env = fs::metadata(root.join("etc/hive/env")).expect("env");
        assert_eq!((env.uid(), env.mode() & 0o777), (base, 0o600));
        // Readable inside whatever the daemon's umask (077 in the daemon).
        let hosts = fs::metadata(root.join("etc/hosts")).expect("hosts");
        assert_eq!(hosts.mode() & 0o777, 0o644);
        assert_eq!(
            fs::metadata(root.join("etc")).expect("etc").mode() & 0o777,
            0o755
        );
        assert_eq!(fs::metadata(&root).expect("root").uid(), base);
        remove(&root).expect("remove");
        assert!(!root.exists());
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
