//! Agent config repositories: `<state>/configs/<name>`, a git repo holding `agent.toml`.
//!
//! git is driven through its CLI: the repos are the manager's working copies
//! and the operator's audit trail, and the CLI is what both of them use.
//! They all live below one directory, which the manager's container gets
//! whole; `<state>/agents/<name>/config` is a symlink to the agent's repo.
//!
//! The manager writes these repos, so everything in them is attacker input:
//! - hive-c0re writes into one only for the operator's `config commit`:
//!   objects through git as the repo's owner, and the branch's ref file by
//!   git's lock-file protocol, by fd (git's `update-ref` would run hooks the
//!   repo's config names). A new repo is built in a private scratch
//!   directory and renamed into place, refusing to replace anything there.
//! - An existing repo is opened by directory fd without following a link, and
//!   only in the shape hive-c0re gives a repo (a directory holding a `.git`
//!   directory); git then runs *in* that fd, so a name swapped afterwards
//!   redirects nothing.
//! - git runs no hook, fsmonitor, external diff or filter, fetches nothing
//!   (no transport, no lazy fetch from a promisor remote), ignores replace refs
//!   and grafts, is killed at [`blocking::limit`](crate::blocking::limit), and
//!   its output is read only up to a bound.
//! - git runs as the repo's owner, never as root in a repo the manager
//!   writes: git opens every path the repo's files name (a link planted as
//!   `.git/shallow`), and its errors quote what it read.
//! - `agent.toml` is read from the object store at a commit (`git cat-file`),
//!   never from the work tree, and each object on the way is hashed here
//!   against its name: git does not check, and the manager writes the files.
//!
//! Every function here blocks: callers run them through [`crate::blocking::run`].

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hive_sh4re::AgentName;
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};

use crate::error::{Error, Result};
use crate::paths::Paths;

/// The file every config repo holds.
pub const CONFIG_FILE: &str = "agent.toml";

/// Largest `agent.toml` hive-c0re reads, in bytes.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// git's stderr kept for an error message, in bytes.
const MAX_STDERR_BYTES: usize = 4096;

/// The `-c` settings every git run gets: the manager controls each repo's
/// `.git/config`, and none of it may run a program as the host's root.
const HARDENING: &[&str] = &[
    "--no-replace-objects",
    "-c",
    "safe.directory=*",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "diff.external=",
    "-c",
    "core.sshCommand=false",
    "-c",
    "protocol.allow=never",
    "-c",
    "user.name=hive-c0re",
    "-c",
    "user.email=hive-c0re@localhost",
    "-c",
    "commit.gpgsign=false",
    // GIT_GRAFT_FILE below would add a hint to every error.
    "-c",
    "advice.graftFileDeprecated=false",
];

/// Runs git in the directory `cwd` (an fd: git `fchdir`s into it) with `GIT_DIR=git_dir`.
fn git(cwd: BorrowedFd<'_>, git_dir: &str, shown: &Path, args: &[&str]) -> Result<String> {
    git_as(cwd, git_dir, shown, args, None, None)
}

/// The uid and gid a git run takes on: the owner of the repo it runs in.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

/// [`git`], with `input` on its stdin and, given an `owner`, as that owner:
/// no supplementary groups, and none of root's config files.
fn git_as(
    cwd: BorrowedFd<'_>,
    git_dir: &str,
    shown: &Path,
    args: &[&str],
    input: Option<&[u8]>,
    owner: Option<Owner>,
) -> Result<String> {
    let out = git_bytes_as(cwd, git_dir, shown, args, input, owner)?;
    String::from_utf8(out).map_err(|_| {
        Error::refused(format!(
            "git {} in {} printed text that is not UTF-8",
            args.join(" "),
            shown.display()
        ))
    })
}

/// [`git_as`], handing back what git printed as bytes (a tree object is binary).
fn git_bytes_as(
    cwd: BorrowedFd<'_>,
    git_dir: &str,
    shown: &Path,
    args: &[&str],
    input: Option<&[u8]>,
    owner: Option<Owner>,
) -> Result<Vec<u8>> {
    let raw = cwd.as_raw_fd();
    let mut cmd = Command::new("git");
    // Nothing of the daemon's environment: as the repo's owner, git is that
    // agent's process, whose environ the agent reads in /proc (the database
    // password, the dashboard's token); as root, no GIT_* of the daemon's
    // may redirect it.
    cmd.env_clear();
    let keep: &[&str] = if owner.is_some() {
        &["PATH", "LANG", "LC_ALL", "TZ"]
    } else {
        &["PATH", "LANG", "LC_ALL", "TZ", "HOME"]
    };
    for k in keep {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    // As the owner, git may not be able to pass through the directories above
    // the repo (the state dir is root's), and it turns GIT_DIR into an absolute
    // path: so it reaches the repo through its fd, `/proc/self/fd/3`.
    let git_dir = if let Some(o) = owner {
        // std drops the supplementary groups (setgroups) when a root parent sets a uid.
        cmd.uid(o.uid)
            .gid(o.gid)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", "/nonexistent");
        "/proc/self/fd/3"
    } else {
        git_dir
    };
    let at_fd3 = owner.is_some();
    cmd.args(HARDENING)
        .args(args)
        .env("GIT_DIR", git_dir)
        .env("GIT_NO_REPLACE_OBJECTS", "1")
        // An empty graft file: `info/grafts` in the repo rewrites no parent.
        .env("GIT_GRAFT_FILE", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        // A repo's own config can allow a transport (`protocol.<name>.allow`
        // beats `protocol.allow=never`) and name a promisor remote, from
        // which git fetches any object it misses on its own: an `ext::` URL
        // or an `uploadpack` is a program. The variables beat every config.
        .env("GIT_NO_LAZY_FETCH", "1")
        .env("GIT_ALLOW_PROTOCOL", "none")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: fchdir, dup2 and fcntl are async-signal-safe; `raw` stays open in
    // the parent until spawn returns, so the child's copy is valid until exec
    // closes it (CLOEXEC). Fd 3 of the child is free to take: std set up only
    // 0-2, every other fd is CLOEXEC.
    unsafe {
        cmd.pre_exec(move || {
            if at_fd3 {
                let ok = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(raw, 3) == 3
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::fchdir(raw) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let what = || format!("git {} in {}", args.join(" "), shown.display());
    let mut child = cmd
        .spawn()
        .map_err(Error::io("could not run git (install the git package)"))?;
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let input = input.to_vec();
        // On a thread: git may stop reading early, and the time limit below still holds.
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
    }
    let out = child.stdout.take().map(|s| bounded(s, MAX_CONFIG_BYTES));
    let err = child.stderr.take().map(|s| bounded(s, MAX_STDERR_BYTES));
    let limit = crate::blocking::limit();
    let deadline = Instant::now() + limit;
    // Short naps first: most git runs here end within a few milliseconds,
    // and a fixed 5 ms nap made each one take at least that.
    let mut nap = Duration::from_micros(250);
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (stdout, too_long) = out.and_then(|t| t.join().ok()).unwrap_or_default();
    let (stderr, _) = err.and_then(|t| t.join().ok()).unwrap_or_default();
    if too_long {
        return Err(Error::refused(format!(
            "{} printed more than {MAX_CONFIG_BYTES} bytes: an agent.toml (and the commit and tree holding it) must be smaller",
            what()
        )));
    }
    let Some(status) = status else {
        return Err(Error::refused(format!(
            "{} did not finish within {}s and was stopped: something in the repo blocks (a FIFO?) or it is too big; fix or remove the repo",
            what(),
            limit.as_secs()
        )));
    };
    if !status.success() {
        let said = String::from_utf8_lossy(&stderr);
        // What git says quotes what it read, and in a repo of someone
        // else's (the manager's) the error goes back to them: its words go
        // to the operator's log only.
        if owner.is_some() {
            tracing::warn!("{} failed: {}", what(), said.trim().escape_debug());
            return Err(Error::refused(format!(
                "{} failed (git's own words are in hive-c0re's log): fix the repo, then ask again",
                what()
            )));
        }
        return Err(Error::refused(format!(
            "{} failed: {}",
            what(),
            said.trim()
        )));
    }
    Ok(stdout)
}

/// Reads `r` on a thread to its end, keeping at most `cap` bytes; true when
/// there was more. What is past the cap is read and dropped: a git left
/// writing into a full pipe ran into the time limit, and the refusal blamed
/// a FIFO where the file was too big.
fn bounded(r: impl Read + Send + 'static, cap: usize) -> std::thread::JoinHandle<(Vec<u8>, bool)> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut kept = r.take(cap as u64 + 1);
        let _ = kept.read_to_end(&mut buf);
        let _ = std::io::copy(&mut kept.into_inner(), &mut std::io::sink());
        let more = buf.len() > cap;
        buf.truncate(cap);
        (buf, more)
    })
}

/// Opens a directory without following a link in its last component (a FIFO or file fails at once).
fn open_dir(at: Option<BorrowedFd<'_>>, path: &Path) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match at {
        Some(dir) => nix::fcntl::openat(dir, path, flags, Mode::empty()),
        None => nix::fcntl::open(path, flags, Mode::empty()),
    }
}

/// An existing config repo, held open by the fd of its `.git` directory.
pub struct Repo {
    git_dir: OwnedFd,
    path: PathBuf,
}

impl Repo {
    /// Opens the repo at `path`; None when there is nothing there. Anything
    /// but a real directory holding a real `.git` directory (the shape
    /// hive-c0re makes) is refused: a link, a file, a FIFO, a bare directory.
    pub fn open(path: &Path) -> Result<Option<Self>> {
        let not_ours = |why: &str| {
            Error::refused(format!(
                "{} is not a config repo hive-c0re made ({why}): remove it, then ask again",
                path.display()
            ))
        };
        let dir = match open_dir(None, path) {
            Ok(d) => d,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                // Only for the sentence: the open above already refused it.
                let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_symlink());
                return Err(not_ours(if link {
                    "it is a symlink"
                } else {
                    "it is not a directory"
                }));
            }
            Err(e) => {
                return Err(Error::io(format!("could not open {}", path.display()))(
                    e.into(),
                ));
            }
        };
        let git_dir = match open_dir(Some(dir.as_fd()), Path::new(".git")) {
            Ok(d) => d,
            Err(Errno::ENOENT) => return Err(not_ours("it holds no .git directory")),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(not_ours("its .git is not a directory"));
            }
            Err(e) => {
                return Err(Error::io(format!("could not open {}/.git", path.display()))(e.into()));
            }
        };
        Ok(Some(Self {
            git_dir,
            path: path.to_owned(),
        }))
    }

    /// Runs a read-only git command inside the repo's `.git`, as [`Repo::runs_as`].
    fn git(&self, args: &[&str]) -> Result<String> {
        git_as(
            self.git_dir.as_fd(),
            ".",
            &self.path,
            args,
            None,
            self.runs_as()?,
        )
    }

    /// Whom git runs as in this repo: the owner of its `.git` (the manager,
    /// who writes it), unless that is this process's own user. git opens
    /// whatever path the repo's files name (`.git/shallow` or `packed-refs`
    /// made a link to a root-only file) and prints the line it cannot parse
    /// in its error: as the owner, it opens only what the owner may.
    fn runs_as(&self) -> Result<Option<Owner>> {
        let st = nix::sys::stat::fstat(self.git_dir.as_fd()).map_err(|e| {
            Error::io(format!("could not stat {}/.git", self.path.display()))(e.into())
        })?;
        Ok(
            (st.st_uid != nix::unistd::geteuid().as_raw()).then_some(Owner {
                uid: st.st_uid,
                gid: st.st_gid,
            }),
        )
    }

    /// The full sha of HEAD.
    pub fn head(&self) -> Result<String> {
        Ok(self
            .git(&["rev-parse", "--verify", "HEAD^{commit}"])?
            .trim()
            .to_owned())
    }

    /// What [`Repo::head`] reads from, as the repo's files are now; None when
    /// its refs are in a shape this does not read (a link, a FIFO, a chain of
    /// symbolic refs, reftable, a linked work tree's `commondir`): git reads
    /// that one every time. Nothing is followed or waited for.
    pub fn head_stamp(&self) -> Option<HeadStamp> {
        let dir = self.git_dir.as_fd();
        if refs_elsewhere(dir).is_some() {
            return None;
        }
        let head = small_file(dir, "HEAD").ok()??;
        let branch = match head.strip_prefix(b"ref: ") {
            Some(target) => {
                let target = std::str::from_utf8(target).ok()?.trim_end_matches('\n');
                let text = loose_ref(dir, target.strip_prefix("refs/heads/")?)?;
                if text.as_ref().is_some_and(|t| !is_sha(t)) {
                    return None;
                }
                text
            }
            None if is_sha(&head) => None,
            None => return None,
        };
        let packed = match nix::sys::stat::fstatat(dir, "packed-refs", AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Err(Errno::ENOENT) => None,
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG => {
                Some([
                    st.st_ino as i64,
                    st.st_size,
                    st.st_ctime,
                    st.st_ctime_nsec,
                    st.st_mtime,
                    st.st_mtime_nsec,
                ])
            }
            _ => return None,
        };
        Some(HeadStamp {
            head,
            branch,
            packed,
        })
    }

    /// Resolves `rev` to a full commit sha, refusing what is not a commit of
    /// this repo. A `rev` spelled as a sha (hex) must name the commit it
    /// resolves to: git takes a ref of that name first, which the manager
    /// can make (a tag named as the operator's short sha, or as a full sha
    /// once the repo is SHA-256, where 40 digits are a short one).
    pub fn resolve(&self, rev: &str) -> Result<String> {
        if rev.is_empty()
            || rev.starts_with('-')
            || !rev
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./^~".contains(c))
        {
            return Err(Error::refused(format!(
                "{rev:?} is not a commit: give a sha from the agent's config repo"
            )));
        }
        self.git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ])
        .map(|s| s.trim().to_owned())
        .map_err(|_| {
            Error::refused(format!(
                "{rev:?} is not a commit of {}: commit there first",
                self.path.display()
            ))
        })
        .and_then(|full| {
            let hex = rev.len() >= 4 && rev.bytes().all(|b| b.is_ascii_hexdigit());
            if hex && !full.starts_with(&rev.to_ascii_lowercase()) {
                return Err(Error::refused(format!(
                    "{rev:?} names commit {} in {}, not a commit whose sha begins so: a ref there is named like a sha; \
                     give the full sha of the commit you mean",
                    short(&full),
                    self.path.display()
                )));
            }
            Ok(full)
        })
    }

    /// How many commits `to` has that `from` has not (`git rev-list --count from..to`);
    /// both are full shas this repo gave.
    pub fn commits_between(&self, from: &str, to: &str) -> Result<u64> {
        for sha in [from, to] {
            if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::refused(format!("{sha:?} is not a full commit sha")));
            }
        }
        let out = self.git(&["rev-list", "--count", &format!("{from}..{to}"), "--"])?;
        out.trim().parse().map_err(|_| {
            Error::refused(format!(
                "git rev-list in {} printed {out:?}, not a count",
                self.path.display()
            ))
        })
    }

    /// The exact text of `agent.toml` at commit `sha` (a full sha, as
    /// [`Repo::resolve`] gives), from the object store.
    ///
    /// The commit, its tree and the blob are each hashed here and must
    /// match their names: `git cat-file` does not check, and the manager
    /// writes the object files, so it could put other text behind a sha the
    /// operator was shown (their own `config commit`'s). Checked, a sha
    /// names one text.
    pub fn config_at(&self, sha: &str) -> Result<String> {
        let short = short(sha);
        let commit = self.object("commit", sha)?;
        let tree = commit
            .strip_prefix(b"tree ")
            .and_then(|rest| rest.get(..sha.len()))
            .filter(|id| is_sha(id))
            .and_then(|id| std::str::from_utf8(id).ok())
            .ok_or_else(|| {
                Error::refused(format!(
                    "commit {short} of {} names no tree: fix the repo, then ask again",
                    self.path.display()
                ))
            })?
            .to_owned();
        let listing = self.object("tree", &tree)?;
        let blob = match tree_entry(&listing, CONFIG_FILE, sha.len() / 2) {
            Some((b"100644" | b"100755", id)) => crate::hex::encode(id),
            Some(_) => {
                return Err(Error::refused(format!(
                    "{CONFIG_FILE} at commit {short} of {} is not a file: commit it as a plain file",
                    self.path.display()
                )));
            }
            None => {
                return Err(Error::refused(format!(
                    "commit {short} of {} holds no {CONFIG_FILE}: commit one there first",
                    self.path.display()
                )));
            }
        };
        String::from_utf8(self.object("blob", &blob)?).map_err(|_| {
            Error::refused(format!(
                "{CONFIG_FILE} at commit {short} of {} is not UTF-8 text",
                self.path.display()
            ))
        })
    }

    /// The body of object `id` of type `kind`, refused unless it hashes to `id`.
    fn object(&self, kind: &str, id: &str) -> Result<Vec<u8>> {
        let body = git_bytes_as(
            self.git_dir.as_fd(),
            ".",
            &self.path,
            &["cat-file", kind, id],
            None,
            self.runs_as()?,
        )?;
        if object_name(kind, &body, id.len()).as_deref() != Some(id) {
            tracing::warn!(
                "{kind} {id} in {} does not hash to its name: its object file was changed behind git's back",
                self.path.display()
            );
            return Err(Error::refused(format!(
                "{kind} {} in {} does not hash to its name: the repo's object files were changed \
                 behind git's back, so nothing was read from it; `git fsck` there shows the damage. \
                 Remove the repo and make it again, or commit afresh",
                short(id),
                self.path.display()
            )));
        }
        Ok(body)
    }

    /// Commits `text` as `agent.toml` on top of HEAD (the rest of the tree as
    /// it is) and moves HEAD's branch there, unless it moved meanwhile;
    /// returns the new commit. The operator's edit of an agent's repo.
    ///
    /// git runs as [`Repo::runs_as`] (so what it writes stays the owner's
    /// and root reads none of the repo's config includes), with
    /// [`HARDENING`], and only plumbing that runs no hook, filter or editor:
    /// `hash-object --no-filters`, `mktree`, `commit-tree`; the branch is
    /// moved by [`Repo::move_head`], not git. The work tree and the index
    /// are not touched.
    pub fn commit_config(&self, text: &str, message: &str) -> Result<String> {
        let owner = self.runs_as()?;
        let run = |args: &[&str], input: Option<&[u8]>| {
            git_as(self.git_dir.as_fd(), ".", &self.path, args, input, owner)
                .map(|s| s.trim_end_matches('\n').to_owned())
        };
        let parent = run(&["rev-parse", "--verify", "HEAD^{commit}"], None)?;
        let blob = run(
            &["hash-object", "-w", "--no-filters", "--stdin"],
            Some(text.as_bytes()),
        )?;
        // The parent's tree with agent.toml's entry replaced (or added).
        let listing = run(&["ls-tree", "-z", &parent], None)?;
        let mut entries: Vec<String> = listing
            .split('\0')
            .filter(|e| !e.is_empty() && !e.ends_with(&format!("\t{CONFIG_FILE}")))
            .map(str::to_owned)
            .collect();
        entries.push(format!("100644 blob {blob}\t{CONFIG_FILE}"));
        let mut tree_input = entries.join("\0");
        tree_input.push('\0');
        let tree = run(&["mktree", "-z"], Some(tree_input.as_bytes()))?;
        let commit = run(
            &["commit-tree", &tree, "-p", &parent, "-F", "-"],
            Some(message.as_bytes()),
        )?;
        self.move_head(&commit, &parent, owner)?;
        Ok(commit)
    }

    /// Points HEAD's branch (or a detached HEAD) at `new`, if it is still at
    /// `old`, by git's own lock-file protocol: `<ref>.lock` made exclusively,
    /// the value checked under it, then renamed over the ref.
    ///
    /// Not `git update-ref`: it runs the reference-transaction hook, and git
    /// 2.54 reads hooks from any config file (`hook.<name>.command`), the
    /// repo's own included, which `core.hooksPath` does not switch off: the
    /// manager's program would run on the host, outside its container. The
    /// files are reached by fd without following a link; the lock is made
    /// the owner's before anything is written to it. No reflog entry.
    fn move_head(&self, new: &str, old: &str, owner: Option<Owner>) -> Result<()> {
        let odd = |why: &str| {
            Error::refused(format!(
                "{}'s HEAD is {why}: hive-c0re moves only a plain branch of a repo in git's files format; \
                 commit there with git instead",
                self.path.display()
            ))
        };
        let dir = self.git_dir.as_fd();
        if let Some(other_refs) = refs_elsewhere(dir) {
            return Err(odd(&format!("kept elsewhere ({other_refs})")));
        }
        let head = small_file(dir, "HEAD")
            .ok()
            .flatten()
            .ok_or_else(|| odd("not a small regular file"))?;
        let (at, leaf) = match head.strip_prefix(b"ref: ") {
            Some(target) => {
                let target = std::str::from_utf8(target)
                    .ok()
                    .map(|t| t.trim_end_matches('\n'))
                    .and_then(|t| t.strip_prefix("refs/heads/"))
                    .ok_or_else(|| odd("not a branch"))?;
                let (leaf, at) = branch_dir(dir, target, Some(owner))
                    .ok()
                    .flatten()
                    .ok_or_else(|| odd("a branch of an odd name or path"))?;
                (Some(at), leaf)
            }
            None if is_sha(&head) => (None, "HEAD".to_owned()),
            None => return Err(odd("neither a branch nor a commit")),
        };
        let at = at.as_ref().map_or(dir, |fd| fd.as_fd());
        let lock = format!("{leaf}.lock");
        let fd = nix::fcntl::openat(
            at,
            lock.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| match e {
            Errno::EEXIST => Error::refused(format!(
                "{}'s branch is being written by another git ({lock} exists): try again, \
                 or remove the lock file if no git runs there",
                self.path.display()
            )),
            e => Error::io(format!("could not lock {}'s head", self.path.display()))(e.into()),
        })?;
        let written = (|| {
            if let Some(o) = owner {
                nix::unistd::fchown(&fd, Some(o.uid.into()), Some(o.gid.into())).map_err(|e| {
                    Error::io("could not hand the ref's lock to the repo's owner")(e.into())
                })?;
            }
            // Under the lock no git moves the branch: it is where it was, or nothing is written.
            let now = self.head()?;
            if now != old {
                return Err(Error::refused(format!(
                    "{}'s head moved while committing (the manager committed?): \
                     show it again and redo the edit",
                    self.path.display()
                )));
            }
            let mut file = std::fs::File::from(fd);
            std::io::Write::write_all(&mut file, format!("{new}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(Error::io(format!(
                    "could not write {}'s head",
                    self.path.display()
                )))?;
            nix::fcntl::renameat(at, lock.as_str(), at, leaf.as_str()).map_err(|e| {
                Error::io(format!("could not move {}'s head", self.path.display()))(e.into())
            })
        })();
        if written.is_err() {
            let _ =
                nix::unistd::unlinkat(at, lock.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
        written
    }
}

/// The directory of branch `refs/heads/{branch}` under `git_dir` and the
/// branch's file name there, walked one directory at a time without
/// following a link: Ok(None) when a directory on the way is missing, Err
/// when the name or a file on the way is odd. With `make`, a missing
/// directory is made (as git does for a packed branch's loose ref) and
/// handed to that owner, if any.
fn branch_dir(
    git_dir: BorrowedFd<'_>,
    branch: &str,
    make: Option<Option<Owner>>,
) -> std::result::Result<Option<(String, OwnedFd)>, ()> {
    let parts: Vec<&str> = branch.split('/').collect();
    if !parts.iter().all(plain_ref_part) {
        return Err(());
    }
    let (file, dirs) = parts.split_last().ok_or(())?;
    let mut at: Option<OwnedFd> = None;
    for d in ["refs", "heads"].into_iter().chain(dirs.iter().copied()) {
        let here = at.as_ref().map_or(git_dir, |fd| fd.as_fd());
        at = match open_dir(Some(here), Path::new(d)) {
            Ok(next) => Some(next),
            Err(Errno::ENOENT) => match make {
                None => return Ok(None),
                Some(owner) => Some(make_dir(here, d, owner).map_err(|_| ())?),
            },
            Err(_) => return Err(()),
        };
    }
    Ok(at.map(|at| ((*file).to_owned(), at)))
}

/// Makes directory `name` in `dir` and opens it (without following a link
/// one raced in), handed to `owner` when given.
fn make_dir(dir: BorrowedFd<'_>, name: &str, owner: Option<Owner>) -> nix::Result<OwnedFd> {
    match nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e),
    }
    let fd = open_dir(Some(dir), Path::new(name))?;
    if let Some(o) = owner {
        nix::unistd::fchown(&fd, Some(o.uid.into()), Some(o.gid.into()))?;
    }
    Ok(fd)
}

/// A part of a branch name as hive-c0re reads and writes them: no dot first
/// (`..`, hidden files), nothing but letters, digits and `-_.`, and not a
/// lock file.
fn plain_ref_part(p: &&str) -> bool {
    !p.is_empty()
        && !p.starts_with('.')
        && !p.ends_with(".lock")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Longest ref file read for a [`HeadStamp`]: a sha and a newline, with room.
const MAX_REF_BYTES: usize = 256;

/// The files a repo's head is read from, as they were: HEAD's text, the
/// text of the loose branch it names (None when packed, or not born), and
/// packed-refs' inode, size and change times. Equal stamps mean the same
/// head: git writes a ref by renaming a new file over it, a loose ref's
/// text is its sha, and a change time cannot be set back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadStamp {
    head: Vec<u8>,
    branch: Option<Vec<u8>>,
    packed: Option<[i64; 6]>,
}

/// The text of the regular file `name` in `dir`: Ok(None) when there is
/// none, Err when it is anything else (a link, a FIFO, longer than a ref).
fn small_file(dir: BorrowedFd<'_>, name: &str) -> std::result::Result<Option<Vec<u8>>, ()> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(_) => return Err(()),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|_| ())?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(());
    }
    let mut text = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_REF_BYTES as u64 + 1)
        .read_to_end(&mut text)
        .map_err(|_| ())?;
    if text.len() > MAX_REF_BYTES {
        return Err(());
    }
    Ok(Some(text))
}

/// The text of the loose branch `refs/heads/{branch}` under `git_dir`,
/// walked one directory at a time without following a link: Some(None)
/// when it is not loose, None when the name or a file on the way is odd.
fn loose_ref(git_dir: BorrowedFd<'_>, branch: &str) -> Option<Option<Vec<u8>>> {
    match branch_dir(git_dir, branch, None) {
        Err(()) => None,
        Ok(None) => Some(None),
        Ok(Some((file, at))) => small_file(at.as_fd(), &file).ok(),
    }
}

/// True for a full sha (SHA-1 or SHA-256) and at most a newline after it.
/// What a repo's `.git` holds that keeps its refs out of the plain files
/// hive-c0re reads (`reftable`, or a linked work tree's `commondir`), if
/// anything; anything in the way of looking counts as such.
fn refs_elsewhere(git_dir: BorrowedFd<'_>) -> Option<&'static str> {
    ["reftable", "commondir"].into_iter().find(|name| {
        !matches!(
            nix::sys::stat::fstatat(git_dir, *name, AtFlags::AT_SYMLINK_NOFOLLOW),
            Err(Errno::ENOENT)
        )
    })
}

/// The name git gives an object of type `kind` with this body, in the hash
/// a name of `len` hex digits is spelled in; None for another length.
fn object_name(kind: &str, body: &[u8], len: usize) -> Option<String> {
    let header = format!("{kind} {}\0", body.len());
    let digest = match len {
        40 => {
            use sha1::Digest;
            let mut h = sha1::Sha1::new();
            h.update(header.as_bytes());
            h.update(body);
            h.finalize().to_vec()
        }
        64 => {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(header.as_bytes());
            h.update(body);
            h.finalize().to_vec()
        }
        _ => return None,
    };
    Some(crate::hex::encode(&digest))
}

/// The mode and raw object name of the entry called `name` in a tree
/// object's body, whose names are `hash_len` bytes; None when it has none
/// or the body is not a tree's shape.
fn tree_entry<'a>(tree: &'a [u8], name: &str, hash_len: usize) -> Option<(&'a [u8], &'a [u8])> {
    let mut rest = tree;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let nul = space + rest[space..].iter().position(|&b| b == 0)?;
        let end = nul + 1 + hash_len;
        let id = rest.get(nul + 1..end)?;
        if &rest[space + 1..nul] == name.as_bytes() {
            return Some((&rest[..space], id));
        }
        rest = &rest[end..];
    }
    None
}

fn is_sha(text: &[u8]) -> bool {
    let sha = text.strip_suffix(b"\n").unwrap_or(text);
    matches!(sha.len(), 40 | 64) && sha.iter().all(u8::is_ascii_hexdigit)
}

/// The heads git last read, by repo, each with the [`HeadStamp`] it was
/// read under: a poll of many repos runs git only for those that moved.
#[derive(Default)]
pub struct Heads {
    known: Mutex<HashMap<PathBuf, (HeadStamp, String)>>,
    git_reads: AtomicU64,
}

impl Heads {
    /// The full sha of `repo`'s HEAD: the one last read while its stamp
    /// holds, else git's ([`Repo::head`]).
    pub fn head(&self, repo: &Repo) -> Result<String> {
        // Stamped before git reads: a ref moving in between leaves a stamp
        // that no longer holds, so the next read asks git again.
        let stamp = repo.head_stamp();
        if let Some(s) = &stamp
            && let Some((was, sha)) = self.known().get(&repo.path)
            && was == s
        {
            return Ok(sha.clone());
        }
        self.git_reads.fetch_add(1, Ordering::Relaxed);
        let head = repo.head();
        match (stamp, &head) {
            (Some(s), Ok(sha)) => {
                self.known().insert(repo.path.clone(), (s, sha.clone()));
            }
            _ => {
                self.known().remove(&repo.path);
            }
        }
        head
    }

    /// Forgets every repo but those at `paths` (the agents' that are left).
    pub fn keep_only(&self, paths: &HashSet<PathBuf>) {
        self.known().retain(|p, _| paths.contains(p));
    }

    /// How many heads git has read so far (the rest came from a stamp).
    pub fn git_reads(&self) -> u64 {
        self.git_reads.load(Ordering::Relaxed)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (HeadStamp, String)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes `<configs>/<name>` a new repo whose one commit holds `text`; returns that commit.
///
/// The repo is built in `<state>/tmp`, which only hive-c0re can enter, given
/// to `hand_over` (ownership for the manager) and renamed into place; the
/// rename refuses to replace anything that appeared there meanwhile.
pub fn create(
    paths: &Paths,
    name: &AgentName,
    text: &str,
    hand_over: impl FnOnce(&Path) -> Result<()>,
) -> Result<String> {
    use std::os::unix::fs::DirBuilderExt;
    let scratch = paths.scratch();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&scratch)
        .map_err(Error::io(format!("could not create {}", scratch.display())))?;
    let build =
        nix::unistd::mkdtemp(&scratch.join(format!("repo-{name}-XXXXXX"))).map_err(|e| {
            Error::io(format!(
                "could not create a directory in {}",
                scratch.display()
            ))(e.into())
        })?;
    let made = build_repo(&build, text).and_then(|sha| {
        hand_over(&build)?;
        move_into_place(paths, name, &build)?;
        Ok(sha)
    });
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&build);
    }
    made
}

/// `git init`, `agent.toml`, one commit, in a directory nobody else can enter.
fn build_repo(build: &Path, text: &str) -> Result<String> {
    use std::io::Write;
    let dir = open_dir(None, build)
        .map_err(|e| Error::io(format!("could not open {}", build.display()))(e.into()))?;
    let file = nix::fcntl::openat(
        dir.as_fd(),
        CONFIG_FILE,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| Error::io("could not create agent.toml")(e.into()))?;
    std::fs::File::from(file)
        .write_all(text.as_bytes())
        .map_err(Error::io("could not write agent.toml"))?;
    let git = |args: &[&str]| git(dir.as_fd(), ".git", build, args);
    git(&["init", "-q", "-b", "main"])?;
    git(&["add", CONFIG_FILE])?;
    git(&["commit", "-q", "-m", "initial config"])?;
    Ok(git(&["rev-parse", "HEAD"])?.trim().to_owned())
}

fn move_into_place(paths: &Paths, name: &AgentName, build: &Path) -> Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    let to = paths.config_repo(name);
    std::fs::create_dir_all(paths.configs_root())
        .map_err(Error::io("could not create the config repos' directory"))?;
    match renameat2(
        AT_FDCWD,
        build,
        AT_FDCWD,
        &to,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST | Errno::ENOTEMPTY) => Err(Error::refused(format!(
            "{} appeared while hive-c0re made the repo: remove it, then ask again",
            to.display()
        ))),
        Err(e) => Err(Error::io(format!(
            "could not move the new repo to {}",
            to.display()
        ))(e.into())),
    }
}

/// Points `<state>/agents/<name>/config` at the agent's repo (where DESIGN.md and
/// older hives put it), unless something is there already.
pub fn link(paths: &Paths, name: &AgentName) -> Result<()> {
    let at = paths.config_repo_link(name);
    if std::fs::symlink_metadata(&at).is_ok() {
        return Ok(());
    }
    let dir = paths.agent_dir(name);
    std::fs::create_dir_all(&dir)
        .map_err(Error::io(format!("could not create {}", dir.display())))?;
    let target = Paths::config_repo_link_target(name);
    std::os::unix::fs::symlink(&target, &at)
        .map_err(Error::io(format!("could not link {}", at.display())))
}

/// Moves each repo an older hive kept at `<state>/agents/<name>/config` to
/// `<state>/configs/<name>`, leaving the symlink behind; returns how many moved.
pub fn migrate(paths: &Paths) -> Result<usize> {
    let root = paths.agents_root();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(format!("could not list {}", root.display()))(e)),
    };
    let mut moved = 0;
    for entry in entries.flatten() {
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| AgentName::parse(n).ok())
        else {
            continue;
        };
        let old = paths.config_repo_link(&name);
        let new = paths.config_repo(&name);
        let is_dir = std::fs::symlink_metadata(&old).is_ok_and(|m| m.is_dir());
        if !is_dir || std::fs::symlink_metadata(&new).is_ok() {
            continue;
        }
        std::fs::create_dir_all(paths.configs_root())
            .map_err(Error::io("could not create the config repos' directory"))?;
        std::fs::rename(&old, &new).map_err(Error::io(format!(
            "could not move {} to {}",
            old.display(),
            new.display()
        )))?;
        link(paths, &name)?;
        moved += 1;
    }
    Ok(moved)
}

/// The first 12 hex characters of a sha, as `status` shows it.
pub fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            state: dir.join("state"),
            run: dir.join("run"),
        }
    }

    fn make(paths: &Paths, name: &str, text: &str) -> (PathBuf, String) {
        let name = AgentName::parse(name).unwrap();
        let sha = create(paths, &name, text, |_| Ok(())).unwrap();
        (paths.config_repo(&name), sha)
    }

    fn plain_git(repo: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=m", "-c", "user.email=m@h"])
            .args(args)
            .status()
            .unwrap();
        assert!(ok.success(), "git {args:?}");
    }

    #[test]
    fn a_repos_own_git_config_runs_nothing_when_the_hive_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, first) = make(&paths(dir.path()), "alice", "model = \"haiku\"\n");
        let marker = dir.path().join("ran");
        let evil = format!("touch {}", marker.display());
        for (key, value) in [
            ("diff.external", evil.as_str()),
            ("core.fsmonitor", evil.as_str()),
            ("core.hooksPath", dir.path().to_str().unwrap()),
        ] {
            plain_git(&repo, &["config", key, value]);
        }
        std::fs::write(
            dir.path().join("post-checkout"),
            format!("#!/bin/sh\n{evil}\n"),
        )
        .unwrap();
        let r = Repo::open(&repo).unwrap().unwrap();
        assert_eq!(r.head().unwrap(), first);
        assert_eq!(r.config_at(&first).unwrap(), "model = \"haiku\"\n");
        assert!(!marker.exists(), "the repo's git config ran a program");
    }

    #[test]
    fn an_agent_toml_over_the_cap_is_refused_at_once_as_too_big() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = make(&paths(dir.path()), "alice", "model = \"haiku\"\n");
        std::fs::write(
            repo.join(CONFIG_FILE),
            format!("# {}\n", "x".repeat(4 * MAX_CONFIG_BYTES)),
        )
        .unwrap();
        plain_git(&repo, &["commit", "-qam", "big"]);
        let r = Repo::open(&repo).unwrap().unwrap();
        let head = r.head().unwrap();
        let started = Instant::now();
        let err = r.config_at(&head).unwrap_err().to_string();
        assert!(err.contains("must be smaller"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn replace_refs_and_grafts_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, first) = make(&paths(dir.path()), "alice", "model = \"haiku\"\n");
        std::fs::write(repo.join(CONFIG_FILE), "model = \"opus\"\n").unwrap();
        plain_git(&repo, &["commit", "-qam", "evil"]);
        let evil = Repo::open(&repo).unwrap().unwrap().head().unwrap();
        plain_git(&repo, &["replace", &first, &evil]);
        let r = Repo::open(&repo).unwrap().unwrap();
        assert_eq!(r.config_at(&first).unwrap(), "model = \"haiku\"\n");
    }

    #[test]
    fn a_new_repo_never_replaces_or_writes_through_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let target = dir.path().join("target");
        std::fs::write(&target, "host file").unwrap();
        let dave = AgentName::parse("dave").unwrap();
        std::fs::create_dir_all(p.config_repo(&dave)).unwrap();
        std::os::unix::fs::symlink(&target, p.config_repo(&dave).join(CONFIG_FILE)).unwrap();
        let err = Repo::open(&p.config_repo(&dave)).err().unwrap().to_string();
        assert!(err.contains("holds no .git"), "{err}");
        let err = create(&p, &dave, "x = 1\n", |_| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("appeared"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "host file");
        assert!(
            std::fs::read_dir(p.scratch()).unwrap().next().is_none(),
            "the failed build was left behind"
        );
    }

    /// Commits `text` as agent.toml in `repo`'s work tree, as the manager does.
    /// What plain git prints in `repo`, trimmed.
    fn git_out(repo: &Path, args: &[&str], input: &[u8]) -> String {
        let mut child = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "safe.directory=*"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Puts an object of `kind` holding `body` in the loose object file of
    /// `id` (git makes the file in a scratch repo of the same format): what
    /// the manager can do to a repo it writes. git's own reads do not notice.
    fn swap_object(repo: &Path, id: &str, kind: &str, body: &[u8]) {
        let scratch = tempfile::tempdir().unwrap();
        let format = if id.len() == 64 { "sha256" } else { "sha1" };
        git_out(
            scratch.path(),
            &["init", "-q", "--object-format", format],
            b"",
        );
        let other = git_out(
            scratch.path(),
            &["hash-object", "--literally", "-t", kind, "-w", "--stdin"],
            body,
        );
        let file = |dir: &Path, id: &str| dir.join(".git/objects").join(&id[..2]).join(&id[2..]);
        let target = file(repo, id);
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::copy(file(scratch.path(), &other), &target).unwrap();
    }

    /// A repo of git's own making in `dir`, in object `format`, with
    /// `agent.toml` (haiku) added and not yet committed.
    fn haiku_repo(dir: &Path, format: &str) -> PathBuf {
        let repo = dir.join("alice");
        std::fs::create_dir(&repo).unwrap();
        git_out(&repo, &["init", "-q", "--object-format", format], b"");
        std::fs::write(repo.join(CONFIG_FILE), "model = \"haiku\"\n").unwrap();
        plain_git(&repo, &["add", CONFIG_FILE]);
        repo
    }

    /// An object name's raw bytes, as a tree entry holds them.
    fn raw(id: &str) -> Vec<u8> {
        (0..id.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&id[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn an_object_changed_behind_its_name_is_refused_at_every_step_to_agent_toml() {
        let evil_text = b"model = \"opus\"\n";
        for (format, swapped) in [
            ("sha1", "blob"),
            ("sha1", "tree"),
            ("sha1", "commit"),
            ("sha256", "blob"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let repo = haiku_repo(dir.path(), format);
            plain_git(&repo, &["commit", "-qm", "first"]);
            let head = git_out(&repo, &["rev-parse", "HEAD"], b"");
            let r = Repo::open(&repo).unwrap().unwrap();
            assert_eq!(
                r.config_at(&head).unwrap(),
                "model = \"haiku\"\n",
                "{format}"
            );

            // The text the manager wants deployed, as a legitimate object, and a tree holding it.
            let evil_blob = git_out(&repo, &["hash-object", "-w", "--stdin"], evil_text);
            let evil_tree = git_out(
                &repo,
                &["mktree"],
                format!("100644 blob {evil_blob}\t{CONFIG_FILE}\n").as_bytes(),
            );
            let (id, body) = match swapped {
                "blob" => (
                    git_out(&repo, &["rev-parse", &format!("HEAD:{CONFIG_FILE}")], b""),
                    evil_text.to_vec(),
                ),
                "tree" => (
                    git_out(&repo, &["rev-parse", "HEAD^{tree}"], b""),
                    [
                        format!("100644 {CONFIG_FILE}\0").as_bytes(),
                        &raw(&evil_blob),
                    ]
                    .concat(),
                ),
                _ => {
                    let real = git_out(&repo, &["cat-file", "commit", &head], b"");
                    let tree = git_out(&repo, &["rev-parse", "HEAD^{tree}"], b"");
                    (
                        head.clone(),
                        format!("{}\n", real.replace(&tree, &evil_tree)).into_bytes(),
                    )
                }
            };
            swap_object(&repo, &id, swapped, &body);
            // git reads the manager's text behind the operator's sha...
            assert_eq!(
                git_out(
                    &repo,
                    &["cat-file", "blob", &format!("{head}:{CONFIG_FILE}")],
                    b""
                ),
                "model = \"opus\"",
                "{format} {swapped}"
            );
            // ...hive-c0re does not.
            let err = r.config_at(&head).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{swapped} {} in", short(&id)))
                    && err.contains("does not hash to its name"),
                "{format} {swapped}: {err}"
            );
        }
    }

    #[test]
    fn a_ref_named_like_a_sha_does_not_stand_for_that_sha() {
        for format in ["sha1", "sha256"] {
            let dir = tempfile::tempdir().unwrap();
            let repo = haiku_repo(dir.path(), format);
            plain_git(&repo, &["commit", "-qm", "the operator's"]);
            let mine = git_out(&repo, &["rev-parse", "HEAD"], b"");
            std::fs::write(repo.join(CONFIG_FILE), "model = \"opus\"\n").unwrap();
            plain_git(&repo, &["commit", "-qam", "the manager's"]);
            let theirs = git_out(&repo, &["rev-parse", "HEAD"], b"");
            // A tag named as the operator's short sha, and one as 40 digits
            // (a whole SHA-1, a short SHA-256), both at the manager's commit.
            let forty = if format == "sha1" {
                mine.clone()
            } else {
                mine[..40].to_owned()
            };
            for name in [&mine[..12], &forty] {
                plain_git(&repo, &["tag", name, &theirs]);
            }
            let r = Repo::open(&repo).unwrap().unwrap();
            for rev in [&mine[..12], &forty] {
                match r.resolve(rev) {
                    Ok(full) => assert_eq!(full, mine, "{format} {rev}: the manager's commit"),
                    Err(e) => assert!(
                        e.to_string().contains("a ref there is named like a sha"),
                        "{format} {rev}: {e}"
                    ),
                }
            }
            assert_eq!(r.resolve(&mine).unwrap(), mine, "{format}: the full sha");
            assert_eq!(r.resolve("HEAD").unwrap(), theirs);
        }
    }

    #[test]
    fn an_agent_toml_that_is_a_link_or_missing_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = make(&paths(dir.path()), "alice", "model = \"haiku\"\n");
        std::fs::remove_file(repo.join(CONFIG_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", repo.join(CONFIG_FILE)).unwrap();
        plain_git(&repo, &["commit", "-qam", "a link"]);
        let r = Repo::open(&repo).unwrap().unwrap();
        let err = r.config_at(&r.head().unwrap()).unwrap_err().to_string();
        assert!(
            err.contains("agent.toml at commit") && err.contains("is not a file"),
            "{err}"
        );
        plain_git(&repo, &["rm", "-q", CONFIG_FILE]);
        plain_git(&repo, &["commit", "-qm", "gone"]);
        let err = r.config_at(&r.head().unwrap()).unwrap_err().to_string();
        assert!(err.contains("holds no agent.toml"), "{err}");
    }

    fn commit(repo: &Path, text: &str) {
        std::fs::write(repo.join(CONFIG_FILE), text).unwrap();
        plain_git(repo, &["commit", "-qam", text]);
    }

    #[test]
    fn a_head_is_read_by_git_again_only_when_its_refs_moved() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, first) = make(&paths(dir.path()), "alice", "model = \"haiku\"\n");
        let heads = Heads::default();
        let read = || heads.head(&Repo::open(&repo).unwrap().unwrap()).unwrap();
        let git_says = || Repo::open(&repo).unwrap().unwrap().head().unwrap();
        assert_eq!(read(), first);
        assert_eq!((read(), heads.git_reads()), (first.clone(), 1));
        // Each way the head moves: a commit, two commits in a row, packing
        // the refs, a commit on a packed branch, a detached HEAD, another branch.
        let mut reads = 1;
        let moves: [&dyn Fn(); 6] = [
            &|| commit(&repo, "a"),
            &|| {
                commit(&repo, "b");
                commit(&repo, "c");
            },
            &|| plain_git(&repo, &["pack-refs", "--all"]),
            &|| commit(&repo, "d"),
            &|| plain_git(&repo, &["checkout", "-q", "--detach", "HEAD~2"]),
            &|| plain_git(&repo, &["checkout", "-q", "-b", "side", "main"]),
        ];
        for (i, change) in moves.iter().enumerate() {
            change();
            reads += 1;
            assert_eq!(read(), git_says(), "after move {i}");
            assert_eq!(heads.git_reads(), reads, "after move {i}: one git read");
            assert_eq!(read(), git_says(), "after move {i}, again");
            assert_eq!(heads.git_reads(), reads, "after move {i}: no git read");
        }
        heads.keep_only(&HashSet::new());
        read();
        assert_eq!(
            heads.git_reads(),
            reads + 1,
            "a forgotten repo is read by git"
        );
    }

    /// `commit_config` moves the branch itself (git's `update-ref` would run
    /// the repo's configured hooks): on a loose branch, a packed one, a
    /// nested one and a detached HEAD it lands where git looks, and a held
    /// lock or a head that moved is refused with the ref untouched.
    #[test]
    fn the_operators_commit_moves_the_head_as_git_would_and_only_from_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, _) = make(&paths(dir.path()), "alice", "model = \"haiku\"\n");
        let open = || Repo::open(&repo).unwrap().unwrap();
        let git_out = |args: &[&str]| {
            let o = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "git {args:?}");
            String::from_utf8(o.stdout).unwrap().trim().to_owned()
        };
        let shapes: [(&str, &dyn Fn()); 5] = [
            ("a loose branch", &|| {}),
            ("a packed branch", &|| {
                plain_git(&repo, &["pack-refs", "--all"])
            }),
            ("a nested branch", &|| {
                plain_git(&repo, &["checkout", "-q", "-b", "team/x"])
            }),
            ("a packed nested branch", &|| {
                plain_git(&repo, &["pack-refs", "--all"]);
                // Its directory goes with its last loose ref (if git left it).
                let _ = std::fs::remove_dir(repo.join(".git/refs/heads/team"));
                assert!(!repo.join(".git/refs/heads/team").exists());
            }),
            ("a detached head", &|| {
                plain_git(&repo, &["checkout", "-q", "--detach"])
            }),
        ];
        for (i, (shape, make_it)) in shapes.iter().enumerate() {
            make_it();
            let before = open().head().unwrap();
            let text = format!("model = \"haiku\"\n# edit {i}\n");
            let sha = open().commit_config(&text, shape).unwrap();
            assert_eq!(git_out(&["rev-parse", "HEAD"]), sha, "{shape}");
            assert_eq!(git_out(&["rev-parse", "HEAD~1"]), before, "{shape}");
            assert_eq!(open().config_at(&sha).unwrap(), text, "{shape}");
            git_out(&["fsck", "--no-progress"]);
        }
        let branch = repo.join(".git/HEAD");
        let held = repo.join(".git/HEAD.lock");
        std::fs::write(&held, "").unwrap();
        let err = open()
            .commit_config("x = 1\n", "held")
            .unwrap_err()
            .to_string();
        assert!(err.contains("being written by another git"), "{err}");
        assert!(held.exists(), "another's lock is left alone");
        std::fs::remove_file(&held).unwrap();
        let r = open();
        let at = r.head().unwrap();
        commit(&repo, "moved");
        let moved = open().head().unwrap();
        let err = r.move_head(&at, &at, None).unwrap_err().to_string();
        assert!(err.contains("head moved"), "{err}");
        assert_eq!(open().head().unwrap(), moved);
        assert!(!held.exists(), "the refused move left no lock");
        assert!(
            std::fs::read_to_string(&branch)
                .unwrap()
                .starts_with(&moved)
        );
    }

    #[test]
    fn a_head_stamp_follows_no_link_opens_no_fifo_and_reads_no_odd_ref() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        // Elsewhere, a branch whose text the stamp would take if it followed a link.
        let decoy = dir.path().join("decoy");
        std::fs::create_dir(&decoy).unwrap();
        std::fs::write(decoy.join("main"), format!("{}\n", "a".repeat(40))).unwrap();
        type MakeOdd<'a> = &'a dyn Fn(&Path);
        let odd: [(&str, MakeOdd); 6] = [
            ("refs/heads a link", &|git| {
                std::fs::remove_dir_all(git.join("refs/heads")).unwrap();
                std::os::unix::fs::symlink(&decoy, git.join("refs/heads")).unwrap();
            }),
            ("the branch a link", &|git| {
                std::fs::remove_file(git.join("refs/heads/main")).unwrap();
                std::os::unix::fs::symlink(decoy.join("main"), git.join("refs/heads/main"))
                    .unwrap();
            }),
            ("HEAD a FIFO", &|git| {
                std::fs::remove_file(git.join("HEAD")).unwrap();
                nix::unistd::mkfifo(&git.join("HEAD"), Mode::from_bits_truncate(0o600)).unwrap();
            }),
            ("a chain of symbolic refs", &|git| {
                std::fs::write(git.join("refs/heads/main"), "ref: refs/heads/other\n").unwrap();
            }),
            ("HEAD names no branch", &|git| {
                std::fs::write(git.join("HEAD"), "ref: refs/tags/v1\n").unwrap();
            }),
            ("packed-refs a link", &|git| {
                std::os::unix::fs::symlink(decoy.join("main"), git.join("packed-refs")).unwrap();
            }),
        ];
        for (i, (what, make_odd)) in odd.into_iter().enumerate() {
            let (repo, _) = make(&p, &format!("agent-{i}"), "model = \"haiku\"\n");
            let stamp = || Repo::open(&repo).unwrap().unwrap().head_stamp();
            assert!(stamp().is_some(), "{what}: a plain repo first");
            make_odd(&repo.join(".git"));
            assert_eq!(stamp(), None, "{what}");
        }
    }

    #[test]
    fn a_repo_that_is_a_symlink_or_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("dave");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let err = Repo::open(&link).err().unwrap().to_string();
        assert!(err.contains("symlink"), "{err}");
        let fifo = dir.path().join("erin");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let err = Repo::open(&fifo).err().unwrap().to_string();
        assert!(err.contains("not a directory"), "{err}");
        assert!(Repo::open(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn an_old_repo_moves_to_configs_and_leaves_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths(dir.path());
        let alice = AgentName::parse("alice").unwrap();
        let old = paths.config_repo_link(&alice);
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(CONFIG_FILE), "model = 'x'\n").unwrap();
        assert_eq!(migrate(&paths).unwrap(), 1);
        assert!(paths.config_repo(&alice).join(CONFIG_FILE).is_file());
        assert!(std::fs::symlink_metadata(&old).unwrap().is_symlink());
        assert_eq!(
            std::fs::read_to_string(old.join(CONFIG_FILE)).unwrap(),
            "model = 'x'\n"
        );
        assert_eq!(migrate(&paths).unwrap(), 0, "a second start moves nothing");
    }
}
