//! Handing host trees to an agent's uid range: the agent's state, its
//! config repos (the manager), the container root. Both runtimes use it.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{Gid, Uid, fchown, fchownat};

use super::RuntimeError;
use super::sys::UID_RANGE;

/// Refuses a uid base that is not a whole range of its own (0 would be host root).
pub(crate) fn check_uid_base(base: u32) -> Result<(), RuntimeError> {
    if base >= UID_RANGE && base.is_multiple_of(UID_RANGE) && base.checked_add(UID_RANGE).is_some()
    {
        return Ok(());
    }
    Err(RuntimeError::Io {
        what: format!(
            "uid base {base} is not a non-zero multiple of {UID_RANGE} below 2^32 - {UID_RANGE}"
        ),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// Creates `dir` if needed, moves its tree into the agent's uid range, and closes it to other host users.
pub(crate) fn own_dir(dir: &Path, base: u32) -> Result<(), RuntimeError> {
    let err = |what: String| move |source| RuntimeError::Io { what, source };
    fs::create_dir_all(dir).map_err(err(format!("could not create {}", dir.display())))?;
    shift_tree(dir, base).map_err(err(format!(
        "could not hand {} to uid {base}",
        dir.display()
    )))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(err(format!("could not restrict {}", dir.display())))
}

/// Moves every entry whose owner or group lies outside `[base, base + 65536)` into that range.
///
/// Host id `n` becomes `base + n % 65536`: host root turns into the container's
/// root, and ids of another (older) range keep their offset. Walks with
/// directory fds and `AT_SYMLINK_NOFOLLOW`, so a symlink planted by the agent
/// never redirects a chown to a host file, and it never leaves the tree's file system.
pub(crate) fn shift_tree(root: &Path, base: u32) -> io::Result<()> {
    let top = open_dir_at(None, root)?;
    let st = fstat(top.as_fd())?;
    if let Some((uid, gid)) = shifted(&st, base) {
        fchown(top.as_fd(), Some(uid), Some(gid))?;
    }
    walk(top, st.st_dev, base)
}

fn walk(mut dir: Dir, dev: u64, base: u32) -> io::Result<()> {
    let names = dir
        .iter()
        .map(|entry| entry.map(|e| e.file_name().to_owned()))
        .collect::<Result<Vec<CString>, _>>()?;
    for name in names
        .into_iter()
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
    {
        let st = match fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Some((uid, gid)) = shifted(&st, base) {
            fchownat(
                dir.as_fd(),
                name.as_c_str(),
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        if is_dir && st.st_dev == dev {
            walk(
                open_dir_at(Some(&dir), Path::new(OsStr::from_bytes(name.as_bytes())))?,
                dev,
                base,
            )?;
        }
    }
    Ok(())
}

fn open_dir_at(parent: Option<&Dir>, path: &Path) -> io::Result<Dir> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(match parent {
        Some(parent) => Dir::openat(parent.as_fd(), path, flags, Mode::empty())?,
        None => Dir::open(path, flags, Mode::empty())?,
    })
}

/// The owner and group an entry should get, or `None` when both are already in range.
fn shifted(st: &FileStat, base: u32) -> Option<(Uid, Gid)> {
    let inside = |id: u32| id >= base && id - base < UID_RANGE;
    if inside(st.st_uid) && inside(st.st_gid) {
        return None;
    }
    let map = |id: u32| {
        if inside(id) {
            id
        } else {
            base + id % UID_RANGE
        }
    };
    Some((Uid::from_raw(map(st.st_uid)), Gid::from_raw(map(st.st_gid))))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::path::PathBuf;

    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hive-owner-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn uid_base_must_be_a_whole_range() {
        assert!(check_uid_base(65536 * 3).is_ok());
        assert!(check_uid_base(0).is_err());
        assert!(check_uid_base(65536 + 1).is_err());
        assert!(check_uid_base(u32::MAX - 65535).is_err());
    }

    #[test]
    fn shift_tree_moves_ids_into_range_without_following_symlinks() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = scratch("shift");
        let outside = dir.join("outside");
        fs::write(&outside, "host file").expect("write");
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("a/b")).expect("mkdir");
        fs::write(tree.join("a/b/f"), "x").expect("write");
        symlink(&outside, tree.join("a/link")).expect("symlink");
        nix::unistd::chown(
            &tree.join("a/b/f"),
            Some(Uid::from_raw(1000)),
            Some(Gid::from_raw(5 * 65536 + 7)),
        )
        .expect("chown");
        let base = 3 * 65536;
        shift_tree(&tree, base).expect("shift");
        let owner = |p: &Path| {
            fs::symlink_metadata(p)
                .map(|m| (m.uid(), m.gid()))
                .expect("stat")
        };
        assert_eq!(owner(&tree), (base, base));
        assert_eq!(owner(&tree.join("a/b")), (base, base));
        assert_eq!(owner(&tree.join("a/b/f")), (base + 1000, base + 7));
        assert_eq!(
            owner(&tree.join("a/link")),
            (base, base),
            "the link itself moves"
        );
        assert_eq!(owner(&outside), (0, 0), "its target does not");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
