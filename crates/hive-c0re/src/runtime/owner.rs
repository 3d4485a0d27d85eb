//! Host trees an agent writes: handing them to its uid range (the agent's
//! state, its config repos for the manager, the container root), and
//! removing them. Both runtimes and the purge use it.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::fcntl::{RenameFlags, renameat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat};

use tokio_util::sync::CancellationToken;

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

/// Creates `dir` if needed, moves its tree into the agent's uid range, and
/// closes it to other host users; gives up (`Interrupted`) once `stop` is
/// cancelled: the walk takes as long as the agent has files.
pub(crate) fn own_dir(dir: &Path, base: u32, stop: &CancellationToken) -> Result<(), RuntimeError> {
    let err = |what: String| move |source| RuntimeError::Io { what, source };
    fs::create_dir_all(dir).map_err(err(format!("could not create {}", dir.display())))?;
    shift_tree_until(dir, base, || stop.is_cancelled()).map_err(err(format!(
        "could not hand {} to uid {base}",
        dir.display()
    )))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(err(format!("could not restrict {}", dir.display())))
}

/// Deepest a tree hive-c0re walks may be, in directories below its top.
///
/// An agent writes these trees: one a few thousand directories deep
/// overflowed the stack of a recursive walk, which aborts the whole daemon
/// (and, relaunching the agent at its restart, again and again). The walks
/// here keep their levels on the heap, one directory fd each, and stop here.
pub(crate) const MAX_DEPTH: usize = 1024;

/// Moves every entry whose owner or group lies outside `[base, base + 65536)` into that range.
///
/// Host id `n` becomes `base + n % 65536`: host root turns into the container's
/// root, and ids of another (older) range keep their offset. Walks with
/// directory fds and `AT_SYMLINK_NOFOLLOW`, so a symlink planted by the agent
/// never redirects a chown to a host file, and it never leaves the tree's file
/// system. A file with more than one name is left as it is: its other name may
/// be outside the tree (a host file linked in where hard links are not
/// protected). A tree deeper than [`MAX_DEPTH`] is refused.
pub(crate) fn shift_tree(root: &Path, base: u32) -> io::Result<()> {
    shift_tree_until(root, base, || false)
}

/// [`shift_tree`], giving up with `Interrupted` once `stopped` says so
/// (asked at each entry).
pub(crate) fn shift_tree_until(
    root: &Path,
    base: u32,
    stopped: impl Fn() -> bool,
) -> io::Result<()> {
    let top = open_dir_at(None, root)?;
    let st = fstat(top.as_fd())?;
    if let Some((uid, gid)) = shifted(&st, base) {
        fchown(top.as_fd(), Some(uid), Some(gid))?;
    }
    let mut interrupted = false;
    let walked = walk(top, |dir, name, st| {
        if stopped() {
            interrupted = true;
            return Ok(false);
        }
        if let Some((uid, gid)) = shifted(st, base)
            && (is_dir(st) || st.st_nlink <= 1)
        {
            fchownat(
                dir.as_fd(),
                name,
                Some(uid),
                Some(gid),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        Ok(true)
    });
    let walked = walked?;
    if interrupted {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "stopped before the walk was done",
        ));
    }
    if walked.too_deep {
        return Err(too_deep(root));
    }
    Ok(())
}

/// The space a tree takes on its disk, as `du` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes allocated to the tree's entries (a file with several names once).
    pub bytes: u64,
    /// Inodes the tree's entries take (a file with several names once).
    pub files: u64,
    /// False when the walk stopped early (past `deadline`, or a tree deeper
    /// than [`MAX_DEPTH`]): the tree takes at least `bytes`.
    pub complete: bool,
    /// Directories deeper than [`MAX_DEPTH`] were left out: what they hold is
    /// not counted, however much.
    pub too_deep: bool,
}

impl Usage {
    /// Two trees' usage together.
    pub(crate) fn and(self, other: Usage) -> Usage {
        Usage {
            bytes: self.bytes + other.bytes,
            files: self.files + other.files,
            complete: self.complete && other.complete,
            too_deep: self.too_deep || other.too_deep,
        }
    }
}

/// What the tree under `root` takes on its file system, walked as
/// [`shift_tree`] walks (no link followed, no other file system entered),
/// stopping at `deadline`: an agent can make a tree of millions of entries.
pub(crate) fn disk_usage(root: &Path, deadline: std::time::Instant) -> io::Result<Usage> {
    let top = open_dir_at(None, root)?;
    let mut bytes = allocated(&fstat(top.as_fd())?);
    let mut files = 1;
    let mut linked = std::collections::HashSet::new();
    let walked = walk(top, |_, _, st| {
        if st.st_nlink <= 1 || is_dir(st) || linked.insert(st.st_ino) {
            bytes += allocated(st);
            files += 1;
        }
        // Each entry: on a cold disk a thousand of them take long.
        Ok(std::time::Instant::now() < deadline)
    });
    let walked = walked?;
    Ok(Usage {
        bytes,
        files,
        complete: !walked.stopped && !walked.too_deep,
        too_deep: walked.too_deep,
    })
}

fn allocated(st: &FileStat) -> u64 {
    u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512)
}

/// How a [`walk`] ended without an error.
struct Walked {
    /// `visit` stopped it.
    stopped: bool,
    /// Subtrees deeper than [`MAX_DEPTH`] were left out.
    too_deep: bool,
}

/// Walks the tree below the open directory `top`, depth first, calling
/// `visit` with each entry's directory, name and what it is itself (a link
/// is a link, never followed) as the directory is read, so it stops within
/// one entry of being told to; it enters no other file system, and leaves
/// out what lies deeper than [`MAX_DEPTH`] and what vanished meanwhile.
/// Each level keeps one directory fd on the heap: an agent writes these
/// trees, and a recursive walk of one thousands of levels deep overflows
/// the stack.
fn walk(
    top: Dir,
    mut visit: impl FnMut(&Dir, &std::ffi::CStr, &FileStat) -> io::Result<bool>,
) -> io::Result<Walked> {
    let dev = fstat(top.as_fd())?.st_dev;
    let mut walked = Walked {
        stopped: false,
        too_deep: false,
    };
    // Each level: its directory and the subdirectories left to walk.
    let mut levels: Vec<(Dir, Vec<CString>)> = Vec::new();
    let mut next = Some(top);
    while let Some(dir) = next.take() {
        let mut subdirs = Vec::new();
        // A second handle reads the names, the first is where they are looked at.
        let mut names = Dir::openat(
            dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        for entry in names.iter() {
            let name = entry?.file_name().to_owned();
            if name.as_bytes() == b"." || name.as_bytes() == b".." {
                continue;
            }
            let st = match fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if !visit(&dir, name.as_c_str(), &st)? {
                walked.stopped = true;
                return Ok(walked);
            }
            if is_dir(&st) && st.st_dev == dev {
                subdirs.push(name);
            }
        }
        levels.push((dir, subdirs));
        // The next directory to walk: the deepest level's next subdirectory.
        loop {
            let depth = levels.len();
            let Some((dir, subdirs)) = levels.last_mut() else {
                break;
            };
            let Some(name) = subdirs.pop() else {
                levels.pop();
                continue;
            };
            if depth > MAX_DEPTH {
                walked.too_deep = true;
                continue;
            }
            match open_dir_at(Some(dir), Path::new(OsStr::from_bytes(name.as_bytes()))) {
                Ok(d) => next = Some(d),
                // Gone (or no longer a directory) since it was read.
                // A link swapped in for it since is no directory either.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
            break;
        }
    }
    Ok(walked)
}

/// Removes `root` and everything below it, following no link (a link goes,
/// not what it points at) and without recursion: a level deeper than
/// [`MAX_DEPTH`] is first moved up to the top of the tree, so a tree of any
/// depth goes with at most that many directories open.
pub(crate) fn remove_tree(root: &Path) -> io::Result<()> {
    let top = open_dir_at(None, root)?;
    // Each level: its directory, its name in the level above, and the subdirectories left.
    let mut levels: Vec<(Dir, CString, Vec<CString>)> = Vec::new();
    let mut next = Some((top, CString::default()));
    let mut hoisted = 0u64;
    while let Some((mut dir, name)) = next.take() {
        let mut subdirs = Vec::new();
        for (entry, st) in entries(&mut dir)? {
            if is_dir(&st) {
                subdirs.push(entry);
            } else {
                unlinkat(&dir, entry.as_c_str(), UnlinkatFlags::NoRemoveDir)?;
            }
        }
        levels.push((dir, name, subdirs));
        loop {
            let depth = levels.len();
            let Some((dir, _, subdirs)) = levels.last_mut() else {
                break;
            };
            if let Some(sub) = subdirs.pop() {
                if depth > MAX_DEPTH {
                    // Moved up under the top, to be removed from there, under
                    // a name nothing there has (the agent chose the names).
                    let up = loop {
                        hoisted += 1;
                        let up = CString::new(format!(".hive-removing-{hoisted}"))
                            .expect("no NUL in a made name");
                        match renameat2(
                            levels[depth - 1].0.as_fd(),
                            sub.as_c_str(),
                            levels[0].0.as_fd(),
                            up.as_c_str(),
                            RenameFlags::RENAME_NOREPLACE,
                        ) {
                            Ok(()) => break up,
                            Err(nix::errno::Errno::EEXIST) => continue,
                            Err(e) => return Err(e.into()),
                        }
                    };
                    levels[0].2.push(up);
                    continue;
                }
                let opened = open_dir_at(Some(dir), Path::new(OsStr::from_bytes(sub.as_bytes())))?;
                next = Some((opened, sub));
                break;
            }
            let (done, name, _) = levels.pop().expect("a level");
            drop(done);
            if let Some((parent, _, _)) = levels.last() {
                unlinkat(parent, name.as_c_str(), UnlinkatFlags::RemoveDir)?;
            }
        }
    }
    fs::remove_dir(root)
}

fn unlinkat(dir: &Dir, name: &std::ffi::CStr, flag: UnlinkatFlags) -> io::Result<()> {
    match nix::unistd::unlinkat(dir.as_fd(), name, flag) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The entries of `dir` but `.` and `..`, each with what it is itself (a
/// link is a link); one gone meanwhile is left out.
fn entries(dir: &mut Dir) -> io::Result<Vec<(CString, FileStat)>> {
    let names = dir
        .iter()
        .map(|entry| entry.map(|e| e.file_name().to_owned()))
        .collect::<Result<Vec<CString>, _>>()?;
    let mut out = Vec::with_capacity(names.len());
    for name in names
        .into_iter()
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
    {
        match fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => out.push((name, st)),
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn too_deep(root: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} holds directories more than {MAX_DEPTH} deep, which hive-c0re does not walk: remove the deep tree (its owner wrote it)",
            root.display()
        ),
    )
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

    /// Makes `depth` directories `d/d/d...` below `top` (by fd: the path is longer than PATH_MAX).
    fn nest(top: &Path, depth: usize) {
        fs::create_dir_all(top).expect("mkdir");
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = nix::fcntl::open(top, flags, Mode::empty()).expect("open");
        for _ in 0..depth {
            nix::sys::stat::mkdirat(&dir, "d", Mode::from_bits_truncate(0o755)).expect("mkdirat");
            dir = nix::fcntl::openat(&dir, "d", flags, Mode::empty()).expect("openat");
        }
        nix::unistd::write(
            nix::fcntl::openat(
                &dir,
                "f",
                OFlag::O_WRONLY | OFlag::O_CREAT,
                Mode::from_bits_truncate(0o644),
            )
            .expect("create"),
            b"deep",
        )
        .expect("write");
    }

    /// An agent's tree counts what it holds, once per file, and never what
    /// a link of its points at; a tree too deep or too large for the time
    /// given is counted as far as walked and says so.
    #[test]
    fn disk_usage_counts_a_file_once_follows_no_link_and_stops_in_time() {
        use std::time::{Duration, Instant};
        let dir = scratch("usage");
        let outside = dir.join("outside");
        fs::write(&outside, vec![7u8; 4 << 20]).expect("write");
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("a")).expect("mkdir");
        fs::write(tree.join("a/big"), vec![1u8; 1 << 20]).expect("write");
        fs::hard_link(tree.join("a/big"), tree.join("again")).expect("link");
        symlink(&outside, tree.join("a/link")).expect("symlink");
        let later = Instant::now() + Duration::from_secs(30);
        let u = disk_usage(&tree, later).expect("measure");
        assert!(u.complete);
        assert!(
            (1 << 20..2 << 20).contains(&u.bytes),
            "the file once, the link's target never: {u:?}"
        );
        assert_eq!(u.files, 4, "the tree, a, big once, the link: {u:?}");
        // Past its time, it stops.
        for i in 0..3000 {
            fs::write(tree.join(format!("f{i}")), "x").expect("write");
        }
        let whole = disk_usage(&tree, later).expect("measure");
        assert_eq!(whole.files, 3004, "empty files count: {whole:?}");
        let u = disk_usage(&tree, Instant::now()).expect("measure");
        assert!(!u.complete && u.bytes < whole.bytes, "{u:?} of {whole:?}");
        // Deeper than it walks: what lies below is left out, nothing else
        // (a deep chain hid every directory the walk had not reached yet).
        for side in ["b", "y", "z"] {
            fs::create_dir_all(tree.join(side)).expect("mkdir");
            fs::write(tree.join(side).join("f"), vec![2u8; 1 << 20]).expect("write");
        }
        nest(&tree.join("deep"), MAX_DEPTH + 5);
        nest(&tree.join("c"), MAX_DEPTH + 5);
        let u = disk_usage(&tree, later).expect("measure");
        assert!(!u.complete && u.bytes >= 4 << 20, "{u:?}");
        remove_tree(&dir).expect("cleanup");
    }

    /// A launch asked to stop gives up its walk of the agent's files at
    /// once (a kill waited for the whole walk: millions of files, minutes).
    #[test]
    fn a_shift_stopped_midway_gives_up_at_once() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = scratch("stopped");
        for i in 0..100 {
            fs::write(dir.join(format!("f{i}")), "x").expect("write");
        }
        let asked = std::cell::Cell::new(0);
        let err = shift_tree_until(&dir, 3 * 65536, || {
            asked.set(asked.get() + 1);
            asked.get() > 10
        })
        .expect_err("stopped");
        assert_eq!(err.kind(), io::ErrorKind::Interrupted, "{err}");
        assert_eq!(asked.get(), 11, "it walked on after the stop");
        remove_tree(&dir).expect("cleanup");
    }

    #[test]
    fn remove_tree_takes_any_depth_and_follows_no_link() {
        let dir = scratch("remove");
        let outside = dir.join("outside");
        fs::create_dir_all(outside.join("keep")).expect("mkdir");
        fs::write(outside.join("keep/file"), "host file").expect("write");
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("a/b")).expect("mkdir");
        fs::write(tree.join("a/b/f"), "x").expect("write");
        symlink(&outside, tree.join("a/link")).expect("symlink");
        symlink(outside.join("keep/file"), tree.join("a/b/file-link")).expect("symlink");
        // Names the removal moves deep levels up to, taken already.
        fs::create_dir_all(tree.join(".hive-removing-1/full")).expect("mkdir");
        fs::write(tree.join(".hive-removing-2"), "a file").expect("write");
        nest(&tree, 3 * MAX_DEPTH + 7);
        remove_tree(&tree).expect("removed");
        assert!(!tree.exists(), "the tree is gone");
        assert_eq!(
            fs::read_to_string(outside.join("keep/file")).expect("read"),
            "host file",
            "what its links point at stays"
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn shift_tree_refuses_a_tree_deeper_than_it_walks_and_skips_hard_links() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown needs root");
            return;
        }
        let dir = scratch("deep");
        let base = 4 * 65536;
        let shallow = dir.join("shallow");
        nest(&shallow, MAX_DEPTH);
        shift_tree(&shallow, base).expect("a tree as deep as the bound is walked");
        let deep = dir.join("deep");
        nest(&deep, MAX_DEPTH + 2);
        let err = shift_tree(&deep, base).expect_err("refused");
        assert!(err.to_string().contains("more than 1024 deep"), "{err}");
        // A second name of a file outside the tree moves nothing.
        let linked = dir.join("linked");
        fs::create_dir_all(&linked).expect("mkdir");
        let host = dir.join("host-file");
        fs::write(&host, "host").expect("write");
        fs::hard_link(&host, linked.join("alias")).expect("link");
        shift_tree(&linked, base).expect("shift");
        let m = fs::metadata(&host).expect("stat");
        assert_eq!((m.uid(), m.gid()), (0, 0), "the host file keeps its owner");
        remove_tree(&dir).expect("cleanup");
    }
}
