//! The uid ranges of this hive's agents, reserved host-wide, so that two hives
//! on one host never hand out the same range, nor touch each other's.
//!
//! Two agents of two hives on one uid would be one user to the kernel: either
//! could read the other's state and signal its processes. So every range an
//! agent of a root daemon uses is reserved in the host's registry
//! ([`REGISTRY`]): one file per range, named after its first uid, holding the
//! state dir of the hive that has it. A running hive keeps an exclusive
//! `flock` on the file of each range of its agents (the kernel lets go when
//! the daemon dies). A range whose file is not locked but names another
//! hive's state dir that still exists stays that hive's (it is stopped, not
//! gone); an empty file, or one naming a state dir that is gone, is free.
//!
//! A new agent gets the lowest range from the hive's `uid_base` up that this
//! hive does not use, that the registry gives it, and in which no process
//! runs (so neither an older hive nor another user of those uids is met). A
//! range the hive cannot hold is never launched, chowned to, or swept: the
//! runtimes hold a range before they touch anything of it.
//!
//! The registry lives in /run: after a reboot it fills again as hives start,
//! so a hive that starts late can find one of its agents' ranges taken by a
//! new agent of another; that agent then does not start, with a sentence
//! saying why. Giving each hive its own `uid_base` (far enough apart for its
//! agents) rules that out.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

use super::RuntimeError;
use super::sys::{self, UID_RANGE};

/// The host's registry of agents' uid ranges, shared by every hive on the host.
pub const REGISTRY: &str = "/run/hyperhive-uids";

/// Where a hive's agents' ranges start unless `uid_base` says otherwise: the
/// first uid of the range systemd leaves for containers (its UIDS-GIDS.md).
pub const DEFAULT_UID_BASE: u32 = 0x0008_0000;

/// Checks a uid base the operator gave: a whole, non-zero number of ranges, with room for one range.
pub fn check(base: u32) -> Result<(), String> {
    super::owner::check_uid_base(base).map_err(|_| {
        format!(
            "{base} is not a multiple of {UID_RANGE} from {UID_RANGE} to {}",
            u32::MAX - 2 * UID_RANGE + 1
        )
    })
}

/// This hive's agents' uid ranges and the hold it has on them.
#[derive(Debug)]
pub struct UidRanges {
    /// The host registry; `None` for a daemon that runs agents as its own user.
    registry: Option<PathBuf>,
    /// This hive's state dir, as the registry names it.
    owner: String,
    /// The first uid a new agent's range may start at.
    first: u32,
    /// Ranges this hive holds: the locked registry file of each.
    held: Mutex<HashMap<u32, Flock<File>>>,
}

/// Why a range cannot be had.
enum Taken {
    /// Another hive holds or keeps it; the sentence says which.
    By(String),
    /// The registry could not be read or written.
    Io(RuntimeError),
}

impl UidRanges {
    /// The ranges of the hive at `state_dir`, starting at `first`: reserved in
    /// `registry`, or nowhere (`None`) when the daemon gives agents no uids of their own.
    pub fn new(
        registry: Option<PathBuf>,
        state_dir: &Path,
        first: u32,
    ) -> Result<Self, RuntimeError> {
        super::owner::check_uid_base(first)?;
        let owner = fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        Ok(Self {
            registry,
            owner: owner.to_string_lossy().into_owned(),
            first,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The ranges of a hive at `state_dir`: in the host's registry when this process is root.
    pub fn for_host(state_dir: &Path, first: u32) -> Result<Self, RuntimeError> {
        let registry = nix::unistd::geteuid()
            .is_root()
            .then(|| PathBuf::from(REGISTRY));
        Self::new(registry, state_dir, first)
    }

    /// The first uid a new agent's range may start at.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// True when this hive may touch the range at `base` (always, without a registry).
    pub fn holds(&self, base: u32) -> bool {
        self.registry.is_none() || self.lock().contains_key(&base)
    }

    /// Takes the range at `base` for this hive's agent, unless it holds it already;
    /// refused with a sentence when another hive has it.
    pub fn hold(&self, base: u32) -> Result<(), RuntimeError> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        let mut held = self.lock();
        if held.contains_key(&base) {
            return Ok(());
        }
        match self.claim(registry, base) {
            Ok(file) => {
                held.insert(base, file);
                Ok(())
            }
            Err(Taken::By(who)) => Err(RuntimeError::UidsTaken(format!(
                "the uids {base}-{} are {who}: give one of the two hives another uid_base \
                 (hive-c0re serve --uid-base), or destroy and re-create this agent",
                base + (UID_RANGE - 1)
            ))),
            Err(Taken::Io(e)) => Err(e),
        }
    }

    /// Picks and holds a free range for a new agent: the lowest from the
    /// hive's `uid_base` that is not in `used` (this hive's agents), nor another hive's,
    /// nor any live process's.
    pub fn allocate(&self, used: &[u32]) -> Result<u32, RuntimeError> {
        let mut held = self.lock();
        let busy = match self.registry {
            Some(_) => live_uids(),
            None => Vec::new(),
        };
        let mut base = self.first;
        while super::owner::check_uid_base(base).is_ok() {
            let free = !used.contains(&base)
                && !held.contains_key(&base)
                && !busy.iter().any(|u| *u >= base && u - base < UID_RANGE);
            if free {
                let Some(registry) = &self.registry else {
                    return Ok(base);
                };
                match self.claim(registry, base) {
                    Ok(file) => {
                        held.insert(base, file);
                        return Ok(base);
                    }
                    Err(Taken::By(_)) => {}
                    Err(Taken::Io(e)) => return Err(e),
                }
            }
            base += UID_RANGE;
        }
        Err(RuntimeError::UidsTaken(format!(
            "no uid range from {} up is free for a new agent: give this hive a lower uid_base \
             (hive-c0re serve --uid-base), or destroy agents it no longer needs",
            self.first
        )))
    }

    /// Gives up the range at `base` (its agent is gone): the registry's file is emptied.
    pub fn release(&self, base: u32) {
        if let Some(mut file) = self.lock().remove(&base) {
            // Emptied under our lock, never removed: a file removed while another
            // hive waits to open it would let two hives lock two files of one range.
            let _ = file.set_len(0);
            let _ = file.rewind().and_then(|()| file.flush());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Flock<File>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the registry file of `base` and writes this hive into it, unless another hive has it.
    fn claim(&self, registry: &Path, base: u32) -> Result<Flock<File>, Taken> {
        let io = |what: String| move |source| Taken::Io(RuntimeError::Io { what, source });
        fs::create_dir_all(registry).map_err(io(format!(
            "could not create the uid range registry {}",
            registry.display()
        )))?;
        let path = registry.join(base.to_string());
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io(format!("could not open {}", path.display())))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(f) => f,
            Err((mut file, _)) => {
                let mut recorded = String::new();
                file.read_to_string(&mut recorded)
                    .map_err(io(format!("could not read {}", path.display())))?;
                let recorded = recorded.trim();
                return Err(Taken::By(if recorded.is_empty() {
                    // Its holder has not written itself in yet.
                    format!("being taken by another hive ({})", path.display())
                } else {
                    format!("in use by the running hive whose state is {recorded}")
                }));
            }
        };
        let mut recorded = String::new();
        file.read_to_string(&mut recorded)
            .map_err(io(format!("could not read {}", path.display())))?;
        let recorded = recorded.trim();
        if !recorded.is_empty() && recorded != self.owner && Path::new(recorded).is_dir() {
            return Err(Taken::By(format!(
                "kept for the stopped hive whose state is {recorded}"
            )));
        }
        if recorded != self.owner {
            let written = file
                .set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(format!("{}\n", self.owner).as_bytes()));
            written.map_err(io(format!("could not write {}", path.display())))?;
        }
        Ok(file)
    }
}

/// The real uids of every live process on the host.
fn live_uids() -> Vec<u32> {
    crate::procfs::pids().filter_map(sys::real_uid).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u32 = 0x4000 * UID_RANGE;

    fn hive(registry: &Path, state: &Path) -> UidRanges {
        fs::create_dir_all(state).unwrap();
        UidRanges::new(Some(registry.to_path_buf()), state, BASE).unwrap()
    }

    #[test]
    fn a_base_must_be_a_whole_range() {
        let dir = tempfile::tempdir().unwrap();
        assert!(UidRanges::new(None, dir.path(), 65536 + 1).is_err());
        assert!(UidRanges::new(None, dir.path(), 0).is_err());
    }

    #[test]
    fn without_a_registry_the_lowest_unused_range_is_picked() {
        let dir = tempfile::tempdir().unwrap();
        let r = UidRanges::new(None, dir.path(), BASE).unwrap();
        assert_eq!(r.allocate(&[]).unwrap(), BASE);
        assert_eq!(
            r.allocate(&[]).unwrap(),
            BASE,
            "nothing is held without a registry"
        );
        assert_eq!(
            r.allocate(&[BASE, BASE + 2 * UID_RANGE]).unwrap(),
            BASE + UID_RANGE
        );
        assert!(r.holds(BASE + 7 * UID_RANGE));
    }

    #[test]
    fn two_hives_never_get_one_range_and_a_stopped_hive_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let registry = dir.path().join("registry");
        let a = hive(&registry, &dir.path().join("a"));
        let b = hive(&registry, &dir.path().join("b"));
        let first = a.allocate(&[]).unwrap();
        assert_eq!(first, BASE);
        assert!(a.holds(first));
        let other = b.allocate(&[]).unwrap();
        assert_eq!(other, BASE + UID_RANGE, "b skips the range a holds");
        let e = b.hold(first).unwrap_err().to_string();
        assert!(
            e.contains("in use by the running hive whose state is"),
            "{e}"
        );
        assert!(e.contains("--uid-base"), "{e}");
        assert!(!b.holds(first));

        // a stops (its daemon goes): its ranges stay its own while its state dir exists.
        drop(a);
        let e = b.hold(first).unwrap_err().to_string();
        assert!(e.contains("kept for the stopped hive"), "{e}");
        assert_eq!(b.allocate(&[other]).unwrap(), BASE + 2 * UID_RANGE);
        // a starts again and takes its range back.
        let a = hive(&registry, &dir.path().join("a"));
        a.hold(first).unwrap();
        // a's agent is destroyed: the range is free for anyone.
        a.release(first);
        assert!(!a.holds(first));
        b.hold(first).unwrap();

        // A hive whose state dir is gone leaves its ranges to others.
        let c = hive(&registry, &dir.path().join("c"));
        let gone = c.allocate(&[]).unwrap();
        drop(c);
        fs::remove_dir_all(dir.path().join("c")).unwrap();
        b.hold(gone).unwrap();
    }
}
