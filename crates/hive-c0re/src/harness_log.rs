//! The harness log's size: `harness.log` (written by the harness through an
//! append-only descriptor hive-c0re opened) is rotated by copy and truncate
//! once it passes [`MAX_BYTES`], so a chatty or hostile harness fills one
//! bounded file and one previous one (`harness.log.1`), never the disk.
//!
//! Copy-then-truncate (logrotate's `copytruncate`) because the harness keeps
//! its descriptor for its whole life, across daemon restarts: a renamed file
//! would keep growing under its new name. The harness appends (`O_APPEND`),
//! so after the truncation its next line lands at the start of the emptied
//! file. What it writes between the copy and the truncation (a moment) is lost.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Size past which `harness.log` is rotated.
pub const MAX_BYTES: u64 = 10 << 20;
/// How often a running agent's log size is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// The previous log, kept beside the current one.
pub fn previous(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_owned();
    name.push(".1");
    log.with_file_name(name)
}

/// The files of `log`: itself and the previous one.
pub fn files(log: &Path) -> [PathBuf; 2] {
    [log.to_owned(), previous(log)]
}

/// Rotates `log` when it is a regular file larger than `max`: its last `max`
/// bytes (and what is appended meanwhile, up to `max` more) go to
/// `harness.log.1` (replacing the one before), and it is emptied in place.
/// Returns whether it rotated. Links and other non-regular files are left
/// alone (the agent's directory is hive-c0re's, but the rule holds everywhere).
pub fn rotate_if_larger(log: &Path, max: u64) -> io::Result<bool> {
    let mut f = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(log)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() <= max {
        return Ok(false);
    }
    let prev = previous(log);
    let tmp = log.with_file_name(format!(
        "{}.rotating",
        log.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_file(&tmp);
    let kept = (|| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(meta.mode() & 0o777)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid()))?;
        // Only the last `max` bytes: the harness may have grown its log by
        // anything since the last look, holes included (an agent can make its
        // harness truncate the log to 64 GiB, which takes no room until a copy
        // writes it out), and the copy is written as root.
        f.seek(SeekFrom::Start(meta.len() - max))?;
        io::copy(&mut (&mut f).take(max), &mut out)?;
        // Lines appended during the copy go along too, up to `max` more; only
        // those written after this read and before the truncation are lost.
        io::copy(&mut (&mut f).take(max), &mut out)?;
        out.flush()?;
        fs::rename(&tmp, &prev)
    })();
    // Emptied whether or not its lines could be kept: a disk with no room
    // for the copy is the disk this log would go on filling.
    f.set_len(0)?;
    if let Err(e) = kept {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::new(
            e.kind(),
            format!(
                "could not keep its last lines in {} ({e}): it was emptied all the same, and they are lost",
                prev.display()
            ),
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness's own descriptor on `log`: append-only, opened before any rotation.
    fn harness_writer(log: &Path) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap()
    }

    #[test]
    fn a_large_log_moves_to_the_previous_one_and_the_writer_goes_on_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("harness.log");
        let mut writer = harness_writer(&log);
        writer.write_all(&vec![b'a'; 2000]).unwrap();
        assert!(!rotate_if_larger(&log, 4096).unwrap(), "small logs stay");
        writer.write_all(&vec![b'b'; 3000]).unwrap();
        assert!(rotate_if_larger(&log, 4096).unwrap());
        // Its last 4096 bytes.
        let prev = fs::read(previous(&log)).unwrap();
        assert_eq!(prev.len(), 4096);
        assert!(prev.starts_with(&[b'a'; 1096]) && prev.ends_with(&[b'b'; 3000]));
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        writer.write_all(b"after\n").unwrap();
        assert_eq!(fs::read(&log).unwrap(), b"after\n");
        // A second rotation replaces the previous log.
        writer.write_all(&vec![b'c'; 5000]).unwrap();
        assert!(rotate_if_larger(&log, 4096).unwrap());
        let prev = fs::read(previous(&log)).unwrap();
        assert!(prev.ends_with(&[b'c'; 4096]) && prev.len() == 4096);
        assert!(!dir.path().join("harness.log.rotating").exists());
    }

    /// On a full disk there is no room for the copy of the old lines; the
    /// log was left as it was, and went on filling the disk. It is emptied
    /// all the same, and the error says the lines are lost. (Here the copy
    /// cannot land because a directory holds the previous log's name.)
    #[test]
    fn a_log_whose_lines_cannot_be_kept_is_emptied_all_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("harness.log");
        let mut writer = harness_writer(&log);
        writer.write_all(&vec![b'a'; 5000]).unwrap();
        fs::create_dir_all(previous(&log).join("in-the-way")).unwrap();
        let e = rotate_if_larger(&log, 4096).unwrap_err();
        assert!(e.to_string().contains("emptied all the same"), "{e}");
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert!(!dir.path().join("harness.log.rotating").exists());
        writer.write_all(b"after\n").unwrap();
        assert_eq!(fs::read(&log).unwrap(), b"after\n");
    }

    #[test]
    fn a_log_grown_to_64_gib_of_holes_costs_the_copy_its_bound_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("harness.log");
        let mut writer = harness_writer(&log);
        writer.write_all(b"before\n").unwrap();
        // What an agent can make its harness do to its own stdout.
        writer.set_len(64 << 30).unwrap();
        writer.write_all(b"the last line\n").unwrap();
        assert!(rotate_if_larger(&log, 4096).unwrap());
        let prev = fs::metadata(previous(&log)).unwrap();
        assert_eq!(prev.len(), 4096);
        assert!(
            prev.blocks() * 512 <= 2 * 4096 + 4096,
            "{} blocks",
            prev.blocks()
        );
        assert!(
            fs::read(previous(&log))
                .unwrap()
                .ends_with(b"the last line\n")
        );
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
    }

    #[test]
    fn a_link_or_a_fifo_is_never_followed_or_opened() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, vec![b'x'; 10_000]).unwrap();
        let log = dir.path().join("harness.log");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        assert!(rotate_if_larger(&log, 10).is_err());
        assert_eq!(fs::metadata(&target).unwrap().len(), 10_000);
        let fifo = dir.path().join("fifo.log");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(!rotate_if_larger(&fifo, 10).unwrap());
        assert!(!previous(&fifo).exists());
        assert!(!rotate_if_larger(&dir.path().join("missing.log"), 10).unwrap());
    }
}
