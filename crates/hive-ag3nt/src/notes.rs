//! Notes compaction: when `/state/notes.md` outgrows its threshold (or the
//! operator asks), a short secondary claude session rewrites it in place.
//!
//! The session gets no hive tools and may only read and write that one file.
//! The old notes are kept as `notes.md.prev`; a failed or empty rewrite puts
//! them back, so compaction can never lose the agent's notes. Both copies
//! are written whole (a temp file renamed into place), and a marker says a
//! compaction is under way: a harness that died in one (killed, or its
//! daemon with it) puts the old notes back when it starts again
//! ([`recover`]), whatever half a rewrite left.

use std::path::{Path, PathBuf};

use hive_sh4re::AgentState;
use hive_sh4re::agent::{AgentRequest, EffectiveConfig};
use hive_sh4re::event::{NotesCompaction, Payload};

use crate::claude::Invocation;
use crate::client::Client;
use crate::harness::Harness;
use crate::runner::{Job, Stream, send_event};

/// Threshold used when the agent's config sets none.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024;

/// What one compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub before: u64,
    pub after: u64,
    /// False when the rewrite failed and the old notes were kept.
    pub rewritten: bool,
}

/// The notes file and its backup.
pub fn paths(state: &Path) -> (PathBuf, PathBuf) {
    (state.join("notes.md"), state.join("notes.md.prev"))
}

/// The marker of a compaction under way.
fn marker(state: &Path) -> PathBuf {
    state.join("notes.md.compacting")
}

/// Copies `from` over `to` through a temp file beside it, synced: `to` is
/// the old file or the new one, never part of one (a crash, a full disk).
fn copy_whole(from: &Path, to: &Path) -> std::io::Result<()> {
    crate::files::write_whole(to, &std::fs::read(from)?)
}

/// Puts the notes back from `notes.md.prev` when a compaction did not
/// finish (the harness died in it); true when it did. Run at start.
pub fn recover(state: &Path) -> std::io::Result<bool> {
    let marker = marker(state);
    if !marker.exists() {
        return Ok(false);
    }
    let (notes, prev) = paths(state);
    if prev.exists() {
        copy_whole(&prev, &notes)?;
    }
    std::fs::remove_file(&marker)?;
    Ok(true)
}

/// True when the notes are over the agent's threshold.
pub fn over_threshold(state: &Path, cfg: &EffectiveConfig) -> bool {
    let max = cfg.config.notes_max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    std::fs::metadata(paths(state).0).is_ok_and(|m| m.len() > max)
}

fn prompt(notes: &Path, max: u64) -> String {
    format!(
        "Compact the notes file {path}. It holds an agent's durable knowledge and has grown past {max} bytes. \
         Read it, then write it back in place (same path) shorter: keep every fact, decision and open task that \
         may matter later, merge duplicates, drop what is obsolete, keep it well under {max} bytes. \
         Write only that file, and nothing but the new notes into it.",
        path = notes.display()
    )
}

/// Rewrites the notes with a secondary claude session (same model, Read and
/// Write only); the agent is `compacting` meanwhile and `idle` after.
pub async fn compact(
    c: &mut Client,
    job: &Job<'_>,
    state: &Path,
    cfg: &EffectiveConfig,
) -> anyhow::Result<Outcome> {
    let (notes, prev) = paths(state);
    let before = std::fs::metadata(&notes).map(|m| m.len()).unwrap_or(0);
    if before == 0 {
        return Ok(Outcome {
            before,
            after: 0,
            rewritten: false,
        });
    }
    copy_whole(&notes, &prev)?;
    std::fs::write(marker(state), b"")?;
    let max = cfg.config.notes_max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    let mut inv = Invocation::new(cfg, state, prompt(&notes, max));
    inv.allowed_tools = "Read,Write,Edit".into();
    let compacting = AgentRequest::State {
        state: AgentState::Compacting,
        model: None,
    };
    let run = job.run(c, &inv, Stream::Notes, &[compacting]).await?;
    if let Some(e) = &run.spawn_error {
        tracing::warn!("notes compaction could not start claude: {e}");
    }
    let after = std::fs::metadata(&notes).map(|m| m.len()).unwrap_or(0);
    let rewritten = run.exit == Some(0) && after > 0 && !job.cancelled();
    if !rewritten {
        // A failed, cancelled or empty rewrite leaves the notes as they were.
        copy_whole(&prev, &notes)?;
    }
    std::fs::remove_file(marker(state))?;
    let out = Outcome {
        before,
        after: if rewritten { after } else { before },
        rewritten,
    };
    let payload = NotesCompaction {
        before_bytes: out.before,
        after_bytes: out.after,
        rewritten,
        exit_code: run.exit,
    };
    send_event(c, Payload::NotesCompaction(payload)).await?;
    // What the rewrite spent the runner reported, while it held its slot.
    let items = vec![
        ("notes.before_bytes".into(), out.before as f64),
        ("notes.after_bytes".into(), out.after as f64),
    ];
    c.call(&AgentRequest::Stats { items }).await?;
    c.call(&AgentRequest::State {
        state: AgentState::Idle,
        model: None,
    })
    .await?;
    Ok(out)
}

/// The operator's notes compaction, on a connection of its own.
pub async fn on_request(h: &Harness, job: &Job<'_>) -> anyhow::Result<()> {
    let mut c = h.connect().await?;
    let cfg = c
        .call(&AgentRequest::Config)
        .await?
        .config
        .ok_or_else(|| anyhow::anyhow!("hive-c0re sent no config"))?;
    let out = compact(&mut c, job, &h.state, &cfg).await?;
    tracing::info!(
        before = out.before,
        after = out.after,
        rewritten = out.rewritten,
        "compacted the notes"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness died in a compaction: claude had cut the notes short.
    /// At the next start the old notes are back, and the marker gone.
    #[test]
    fn notes_cut_short_by_a_compaction_that_died_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let (notes, prev) = paths(dir.path());
        std::fs::write(&notes, "fact one\nfact two\n").unwrap();
        assert!(!recover(dir.path()).unwrap(), "nothing under way");
        copy_whole(&notes, &prev).unwrap();
        std::fs::write(marker(dir.path()), b"").unwrap();
        std::fs::write(&notes, "fact o").unwrap();
        assert!(recover(dir.path()).unwrap());
        assert_eq!(
            std::fs::read_to_string(&notes).unwrap(),
            "fact one\nfact two\n"
        );
        assert!(!marker(dir.path()).exists());
        assert!(!recover(dir.path()).unwrap(), "once");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    }
}
