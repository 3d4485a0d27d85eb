//! The dashboard's secrets kept in the state dir: its token
//! (`HIVE_DASHBOARD_TOKEN`, or a random one in `<state>/dashboard.token`),
//! and the login key that signs browsers' logins
//! (`<state>/dashboard.login-key`), each kept so logins survive a restart
//! of hive-c0re. A file is hive-c0re's alone (a regular file it owns, mode
//! 0600); anything else there (a link, a FIFO, a file others may read) is
//! replaced by a new secret, which logs every browser out.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::Context;

use crate::paths::Paths;

/// Bytes of randomness in a generated secret (hex in the file).
const SECRET_BYTES: usize = 32;
/// Shortest `HIVE_DASHBOARD_TOKEN` accepted.
const MIN_FIXED_LEN: usize = 16;

/// The token this start uses: `fixed` (`HIVE_DASHBOARD_TOKEN`), the kept one, or a new one (then kept).
pub(crate) fn settle(paths: &Paths, fixed: Option<&str>) -> anyhow::Result<String> {
    if let Some(t) = fixed.map(str::trim).filter(|t| !t.is_empty()) {
        check_fixed(t)?;
        return Ok(t.to_owned());
    }
    settle_kept(&paths.dashboard_token(), "dashboard token")
}

/// The login key this start uses: the kept one, or a new one (then kept).
pub(crate) fn settle_login_key(paths: &Paths) -> anyhow::Result<String> {
    settle_kept(&paths.dashboard_login_key(), "dashboard login key")
}

/// A new login key, kept in place of the last: every browser's login ends.
pub(crate) fn renew_login_key(paths: &Paths) -> anyhow::Result<String> {
    fresh(&paths.dashboard_login_key(), "dashboard login key")
}

/// The secret kept at `path`, or a new one when there is none to trust.
fn settle_kept(path: &Path, what: &str) -> anyhow::Result<String> {
    match read_kept(path) {
        Ok(Some(t)) => return Ok(t),
        Ok(None) => {}
        Err(why) => tracing::warn!(
            "{} {why}: making a new {what} (browsers have to log in again)",
            path.display()
        ),
    }
    fresh(path, what)
}

/// A new random secret, kept at `path`.
fn fresh(path: &Path, what: &str) -> anyhow::Result<String> {
    let secret =
        crate::hex::random(SECRET_BYTES).with_context(|| format!("could not generate a {what}"))?;
    crate::paths::write_private(path, &secret).with_context(|| {
        format!(
            "could not keep the {what} in {}: check that the state dir is writable",
            path.display()
        )
    })?;
    Ok(secret)
}

/// Refuses a `HIVE_DASHBOARD_TOKEN` serve would refuse (`doctor` asks too).
pub(crate) fn check_fixed(t: &str) -> anyhow::Result<()> {
    // It goes into a URL and a cookie as it is.
    let safe = t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    anyhow::ensure!(
        safe && t.len() >= MIN_FIXED_LEN,
        "HIVE_DASHBOARD_TOKEN must be at least {MIN_FIXED_LEN} letters, digits, '-', '_', '.' or '~' \
         (e.g. the output of `openssl rand -hex 32`), or unset so hive-c0re keeps its own"
    );
    Ok(())
}

/// The kept secret; `Ok(None)` when there is none, `Err(why)` when the file cannot be trusted.
fn read_kept(path: &Path) -> Result<Option<String>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // No link is followed and no FIFO blocks the start.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("is a symbolic link".into());
        }
        Err(e) => return Err(format!("cannot be opened ({e})")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot be read ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!("belongs to uid {}, not to hive-c0re", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "could be read by others (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    let mut text = String::new();
    (&mut file)
        .take(1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot be read ({e})"))?;
    let secret = text.trim();
    if secret.len() != SECRET_BYTES * 2 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("does not hold a secret of ours".into());
    }
    Ok(Some(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn paths(dir: &Path) -> Paths {
        Paths {
            state: dir.to_path_buf(),
            run: dir.join("run"),
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_fixed_token_wins_and_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        assert_eq!(
            settle(&p, Some(" open-sesame-1234\n")).unwrap(),
            "open-sesame-1234"
        );
        assert!(!p.dashboard_token().exists());
        for bad in ["sesame", "open sesame 1234", "open-sesame-1234;x=y"] {
            let e = settle(&p, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("HIVE_DASHBOARD_TOKEN must be"), "{bad}: {e}");
        }
        assert_eq!(
            settle(&p, Some("  ")).unwrap().len(),
            64,
            "blank is no token"
        );
    }

    #[test]
    fn kept_privately_and_replaced_when_not_trustworthy() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        let file = p.dashboard_token();
        let first = settle(&p, None).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(
            settle(&p, None).unwrap(),
            first,
            "the same token after a restart"
        );

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let second = settle(&p, None).unwrap();
        assert_ne!(second, first, "a token others could read is replaced");
        assert_eq!(mode(&file), 0o600);

        // A link to a file of the attacker's choosing is neither read nor written through.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "a".repeat(64)).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&target, &file).unwrap();
        let third = settle(&p, None).unwrap();
        assert_ne!(third, "a".repeat(64));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a".repeat(64));
        assert!(!std::fs::symlink_metadata(&file).unwrap().is_symlink());

        // A FIFO does not block the start.
        std::fs::remove_file(&file).unwrap();
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fourth = settle(&p, None).unwrap();
        assert!(std::fs::metadata(&file).unwrap().is_file());
        assert_eq!(settle(&p, None).unwrap(), fourth);
    }
}
