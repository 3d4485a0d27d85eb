//! The harness's own files in `/state` (the notes' backup, the sessions'
//! spending), written whole.

use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` whole, through a synced temp file beside it
/// renamed into place: `path` holds the old bytes or the new ones, never
/// part of them (a crash, a full disk). The harness's own files in `/state`
/// (the notes' backup, the sessions' spending) are written this way.
pub fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
