//! Free space on the state's file system, and the alarm when it runs low.
//!
//! Modelled on etcd's space quota and NOSPACE alarm: below a floor of free
//! space hive-c0re refuses what it can do without (new sends, schedules, the
//! agents' stream events) so that what it must do (acknowledgements, `recv`,
//! state changes, starting) still finds room; reads never stop. The alarm is
//! on from the check that finds the floor crossed until one finds the space
//! back, and clears by itself.
//!
//! Free inodes have a floor too, derived from the file system's count of
//! them: an agent that makes millions of empty files takes no space to speak
//! of, yet leaves no inode for a rootfs, a sqlite journal or a config repo,
//! and every one of those fails as a full disk does.
//!
//! A disk another program filled to the last block leaves no room at all, so
//! hive-c0re keeps a reserve file (`Paths::space_reserve`) while space is
//! plentiful and deletes it when the alarm goes on: sqlite's write-ahead log
//! grows into what it freed. Free space is counted as if the reserve were
//! there, so deleting it does not clear the alarm.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hive_sh4re::host::SpaceAlarm;

use crate::clock::{now_ms, rfc3339};
use crate::error::{Error, Result};

/// The floor when none is configured: this share of the file system...
const DEFAULT_FLOOR_PERCENT: u64 = 5;
/// ...but never more than this.
const DEFAULT_FLOOR_MAX: u64 = 256 << 20;
/// Largest reserve file (it is the floor itself when the floor is smaller).
const RESERVE_MAX: u64 = 16 << 20;
/// The floor of free inodes: this share of the file system's inodes...
const INODE_FLOOR_PERCENT: u64 = 5;
/// ...but never more than this: enough for a few rootfs builds and config repos.
const INODE_FLOOR_MAX: u64 = 50_000;

/// Watches the state's file system against a floor of free space.
pub struct Space {
    dir: PathBuf,
    reserve: PathBuf,
    /// The configured floor in bytes; None: [`DEFAULT_FLOOR_PERCENT`] up to [`DEFAULT_FLOOR_MAX`].
    floor: Option<u64>,
    alarm: Mutex<Option<SpaceAlarm>>,
    /// The start could not return interrupted turns' messages (no room): done when space is back.
    release_deferred: std::sync::atomic::AtomicBool,
}

/// What a check found changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The alarm went on.
    Low(SpaceAlarm),
    /// The alarm cleared.
    Cleared,
}

/// One reading of the file system.
#[derive(Debug, Clone, Copy)]
struct Reading {
    avail: u64,
    total: u64,
    /// Free inodes, as `df -i` shows them.
    inodes_avail: u64,
    /// All its inodes; 0 where it does not count them (btrfs).
    inodes: u64,
}

impl Space {
    /// Watches the file system holding `dir`, keeping `reserve` as the reserve file.
    pub fn new(dir: &Path, reserve: PathBuf, floor: Option<u64>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            reserve,
            floor,
            alarm: Mutex::new(None),
            release_deferred: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SpaceAlarm>> {
        self.alarm.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The alarm, while it is on.
    pub fn alarm(&self) -> Option<SpaceAlarm> {
        self.lock().clone()
    }

    /// Refuses while the alarm is on, with a sentence naming the file system and the space left.
    pub fn refuse_if_low(&self) -> Result<()> {
        match self.alarm() {
            Some(a) => Err(Error::refused(a.message)),
            None => Ok(()),
        }
    }

    /// Remembers that the claims of interrupted turns are still to be released.
    pub fn defer_release(&self) {
        self.release_deferred
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// True once after [`Self::defer_release`].
    pub fn take_deferred_release(&self) -> bool {
        self.release_deferred
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// Turns the alarm on as if the disk were full, for unit tests.
    #[cfg(test)]
    pub fn raise_for_test(&self) {
        *self.lock() = Some(SpaceAlarm {
            filesystem: "the file system at /test (tmpfs)".into(),
            free_bytes: 0,
            floor_bytes: 1,
            free_inodes: None,
            floor_inodes: None,
            since: rfc3339(0),
            message: "the disk is nearly full: test".into(),
        });
    }

    /// True while the alarm is on.
    pub fn is_low(&self) -> bool {
        self.lock().is_some()
    }

    /// Reads the file system, turns the alarm on or off, and keeps the
    /// reserve file in step; returns what changed. A file system that cannot
    /// be read changes nothing.
    pub fn check(&self) -> Option<Transition> {
        let reading = match read(&self.dir) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "could not read the free space of {}: {e}",
                    self.dir.display()
                );
                return None;
            }
        };
        self.judge(reading)
    }

    /// [`Self::check`] on a reading taken.
    fn judge(&self, reading: Reading) -> Option<Transition> {
        let floor = self.floor_of(reading.total);
        let reserve = floor.min(RESERVE_MAX);
        let held = std::fs::symlink_metadata(&self.reserve)
            .map(|m| m.is_file() && m.len() >= reserve)
            .unwrap_or(false);
        let free = if held {
            reading.avail
        } else {
            reading.avail.saturating_sub(reserve)
        };
        let inode_floor = self.inode_floor_of(reading.inodes);
        // The reserve file takes an inode as it takes its bytes.
        let free_inodes = if held || reserve == 0 {
            reading.inodes_avail
        } else {
            reading.inodes_avail.saturating_sub(1)
        };
        let mut alarm = self.lock();
        let bytes_low = free < floor;
        let inodes_low = free_inodes < inode_floor;
        if bytes_low || inodes_low {
            if held {
                // Room for the writes that must go through.
                let _ = std::fs::remove_file(&self.reserve);
            }
            let fs = filesystem_of(&self.dir);
            let since = alarm.as_ref().map(|a| a.since.clone());
            let was_on = since.is_some();
            let counted = reading.inodes > 0;
            let a = SpaceAlarm {
                message: alarm_message(
                    &fs,
                    bytes_low.then_some((free, floor)),
                    inodes_low.then_some((free_inodes, inode_floor)),
                ),
                filesystem: fs,
                free_bytes: free,
                floor_bytes: floor,
                free_inodes: counted.then_some(free_inodes),
                floor_inodes: counted.then_some(inode_floor),
                since: since.unwrap_or_else(|| rfc3339(now_ms())),
            };
            *alarm = Some(a.clone());
            return (!was_on).then_some(Transition::Low(a));
        }
        if !held
            && reserve > 0
            && let Err(e) = make_reserve(&self.reserve, reserve)
        {
            tracing::warn!(
                "could not keep the free-space reserve {}: {e}",
                self.reserve.display()
            );
        }
        alarm.take().map(|_| Transition::Cleared)
    }

    fn floor_of(&self, total: u64) -> u64 {
        self.floor
            .unwrap_or_else(|| (total / 100 * DEFAULT_FLOOR_PERCENT).min(DEFAULT_FLOOR_MAX))
    }

    /// A floor of no bytes is the operator turning the alarm off: inodes too.
    fn inode_floor_of(&self, inodes: u64) -> u64 {
        if self.floor == Some(0) {
            0
        } else {
            inode_floor(inodes)
        }
    }
}

/// The floor of free inodes on a file system of `inodes`:
/// [`INODE_FLOOR_PERCENT`] of them, at most [`INODE_FLOOR_MAX`]; 0 (no
/// alarm) where the file system counts none.
pub fn inode_floor(inodes: u64) -> u64 {
    (inodes.saturating_mul(INODE_FLOOR_PERCENT) / 100).min(INODE_FLOOR_MAX)
}

/// True when `a` is on (also) for want of inodes.
pub fn short_of_inodes(a: &SpaceAlarm) -> bool {
    a.free_inodes
        .zip(a.floor_inodes)
        .is_some_and(|(free, floor)| free < floor)
}

/// The alarm's sentence: what ran out, bytes (free, floor) or inodes (free,
/// floor) or both, and what the operator does about it.
fn alarm_message(fs: &str, bytes: Option<(u64, u64)>, inodes: Option<(u64, u64)>) -> String {
    let mut short = vec![];
    if let Some((free, floor)) = bytes {
        short.push(format!(
            "{} free, below the hive's floor of {} (min_free_space)",
            human(free),
            human(floor)
        ));
    }
    if let Some((free, floor)) = inodes {
        short.push(format!(
            "{} free inodes (files) left, below the hive's floor of {} \
             ({INODE_FLOOR_PERCENT} % of its inodes, at most {})",
            grouped(free),
            grouped(floor),
            grouped(INODE_FLOOR_MAX)
        ));
    }
    let why = if inodes.is_some() {
        ": many small files use up a file system's inodes however little space they take"
    } else {
        ""
    };
    let until = match (bytes.is_some(), inodes.is_some()) {
        (true, true) => "space is freed and files are deleted there",
        (false, true) => "files are deleted there",
        _ => "space is freed there",
    };
    format!(
        "the disk is nearly full: {fs} has {}{why}; hive-c0re refuses new messages, schedules \
         and agents' events until {until} (recv, acknowledgements and status keep working)",
        short.join(", and ")
    )
}

/// The size of `dir`'s file system, in bytes.
pub fn size_of(dir: &Path) -> std::io::Result<u64> {
    Ok(read(dir)?.total)
}

/// Free bytes (as `df` shows them: without the blocks kept for root), size,
/// and free and all inodes of `dir`'s file system.
fn read(dir: &Path) -> std::io::Result<Reading> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frsize = s.fragment_size() as u64;
    Ok(Reading {
        avail: s.blocks_available() as u64 * frsize,
        total: s.blocks() as u64 * frsize,
        inodes_avail: s.files_available() as u64,
        inodes: s.files() as u64,
    })
}

/// Writes the reserve file: a new private file of `size` allocated bytes,
/// never through a link. A partial one is removed.
fn make_reserve(path: &Path, size: u64) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let r = nix::fcntl::posix_fallocate(&f, 0, size as libc::off_t).map_err(std::io::Error::from);
    if r.is_err() {
        let _ = std::fs::remove_file(path);
    }
    r
}

/// `dir`'s file system as the operator knows it: its mount point and type,
/// e.g. `/var/lib (ext4)`; the directory itself when mountinfo says nothing.
pub fn filesystem_of(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(PathBuf, String)> = None;
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(point), Some(fstype)) = (left.split(' ').nth(4), right.split(' ').next()) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        let longer = best
            .as_ref()
            .is_none_or(|(b, _)| point.as_os_str().len() >= b.as_os_str().len());
        if dir.starts_with(&point) && longer {
            best = Some((point, fstype.to_owned()));
        }
    }
    match best {
        Some((point, fstype)) => format!("the file system at {} ({fstype})", point.display()),
        None => format!("the file system of {}", dir.display()),
    }
}

/// mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(Ok(n)) = b
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .map(|d| u8::from_str_radix(d, 8))
        {
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Bytes as people read them: `1.5 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A count as people read it: `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Parses a size: bytes, or a number with K/M/G/T (powers of 1024, `MiB` and `MB` alike).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("{text:?} is not a size: write bytes or e.g. 512MiB, 2GiB");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// True when `dir`'s file system takes no new file for being read-only, as
/// one turned so after errors does (ext4's `errors=remount-ro`). A nameless
/// file (O_TMPFILE), gone with its descriptor, tells where the mount's flags
/// do not: ext4 then shows `emergency_ro`, not `ro`.
pub fn is_read_only(dir: &Path) -> bool {
    OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .is_err_and(|e| e.raw_os_error() == Some(libc::EROFS))
}

/// A store error that is the disk being full (a write with no room left, not
/// even the reserve's) as a sentence naming the file system; any other error as it is.
pub fn full_or(space: &Space, e: Error) -> Error {
    // The database server's disk (PostgreSQL's) says so itself.
    if !e.is_disk_full() || matches!(e, Error::Store(crate::store::StoreError::DiskFull(_))) {
        return e;
    }
    Error::refused(format!(
        "the disk is full: {} has no room left for this write: free space there and try again",
        filesystem_of(&space.dir)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("8 mb"), Ok(8 << 20));
        assert!(parse_size("lots").unwrap_err().contains("512MiB"));
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 bytes");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }

    #[test]
    fn names_the_mount_point() {
        let fs = filesystem_of(Path::new("/proc/self"));
        assert!(fs.contains("/proc (proc)"), "{fs}");
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }

    #[test]
    fn a_floor_above_the_free_space_raises_the_alarm_and_a_lower_one_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = dir.path().join("space.reserve");
        let huge = Space::new(dir.path(), reserve.clone(), Some(u64::MAX / 2));
        let Some(Transition::Low(a)) = huge.check() else {
            panic!("no alarm")
        };
        assert!(
            a.message.contains("the disk is nearly full"),
            "{}",
            a.message
        );
        assert!(huge.refuse_if_low().is_err());
        assert_eq!(huge.check(), None, "the alarm goes on once");
        assert!(!reserve.exists());
        let small = Space::new(dir.path(), reserve.clone(), Some(4096));
        assert_eq!(small.check(), None);
        assert_eq!(std::fs::metadata(&reserve).unwrap().len(), 4096);
        assert!(small.refuse_if_low().is_ok());
        // A floor of nothing keeps no reserve, and never raises the alarm.
        std::fs::remove_file(&reserve).unwrap();
        let none = Space::new(dir.path(), reserve.clone(), Some(0));
        assert_eq!(none.check(), None);
        assert!(!reserve.exists());
    }

    #[test]
    fn the_inode_floor_is_5_percent_at_most_50000_and_none_without_inodes() {
        assert_eq!(inode_floor(0), 0);
        assert_eq!(inode_floor(4000), 200);
        assert_eq!(inode_floor(1_000_000), 50_000);
        assert_eq!(inode_floor(u64::MAX), 50_000);
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1234), "1,234");
        assert_eq!(grouped(50_000), "50,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    /// Plenty of bytes on a file system of 4,000 inodes, `inodes_avail` of them free.
    fn reading(inodes_avail: u64, inodes: u64) -> Reading {
        Reading {
            avail: 1 << 30,
            total: 2 << 30,
            inodes_avail,
            inodes,
        }
    }

    #[test]
    fn few_free_inodes_raise_the_alarm_and_say_so_and_a_file_system_without_inodes_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = dir.path().join("space.reserve");
        let space = Space::new(dir.path(), reserve.clone(), Some(4096));
        assert_eq!(space.judge(reading(3000, 4000)), None);
        assert!(reserve.exists());
        let Some(Transition::Low(a)) = space.judge(reading(12, 4000)) else {
            panic!("no alarm")
        };
        assert!(short_of_inodes(&a), "{a:?}");
        assert_eq!((a.free_inodes, a.floor_inodes), (Some(12), Some(200)));
        assert!(
            a.message.contains(
                "has 12 free inodes (files) left, below the hive's floor of 200 \
                 (5 % of its inodes, at most 50,000): many small files"
            ) && a.message.contains("until files are deleted there")
                && !a.message.contains("min_free_space"),
            "{}",
            a.message
        );
        assert!(space.refuse_if_low().is_err());
        assert!(!reserve.exists(), "the reserve went to make room");
        // The reserve's inode is counted as taken, so deleting it does not clear the alarm.
        assert_eq!(space.judge(reading(200, 4000)), None);
        assert!(space.is_low());
        assert_eq!(space.judge(reading(201, 4000)), Some(Transition::Cleared));
        assert!(reserve.exists());

        // btrfs counts no inodes: never an alarm for them, and no inode fields.
        let btrfs = Space::new(dir.path(), reserve.clone(), Some(4096));
        assert_eq!(btrfs.judge(reading(0, 0)), None);
        let bytes = Reading {
            avail: 0,
            ..reading(0, 0)
        };
        let Some(Transition::Low(a)) = btrfs.judge(bytes) else {
            panic!("no alarm")
        };
        assert!(!short_of_inodes(&a));
        assert_eq!((a.free_inodes, a.floor_inodes), (None, None));
        assert!(!a.message.contains("inodes"), "{}", a.message);

        // Both short: the sentence names both (the reserve, gone, counted as one of the 3 inodes).
        let both = Space::new(dir.path(), reserve.clone(), Some(4096));
        let Some(Transition::Low(a)) = both.judge(Reading {
            avail: 0,
            ..reading(3, 4000)
        }) else {
            panic!("no alarm")
        };
        assert!(
            a.message
                .contains("(min_free_space), and 2 free inodes (files) left")
                && a.message
                    .contains("until space is freed and files are deleted there"),
            "{}",
            a.message
        );

        // A floor of nothing turns the alarm off, for inodes too.
        let off = Space::new(dir.path(), reserve, Some(0));
        assert_eq!(off.judge(reading(0, 4000)), None);
    }
}
