//! Notes compaction: when `/state/notes.md` outgrows its threshold (or the
//! operator asks), a short secondary claude session rewrites it in place.
//!
//! The session gets no hive tools and may only read and write that one file.
//! The old notes are kept as `notes.md.prev`; a failed or empty rewrite puts
//! them back, so compaction can never lose the agent's notes.

use std::path::{Path, PathBuf};

use hive_sh4re::agent::{AgentRequest, EffectiveConfig, EventIn};
use tokio::sync::mpsc;

use crate::claude::{Invocation, Output};
use crate::client::Client;

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

/// Rewrites the notes with a secondary claude session (same model, Read and Write only).
pub async fn compact(
    c: &mut Client,
    state: &Path,
    cfg: &EffectiveConfig,
    bin: PathBuf,
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
    std::fs::copy(&notes, &prev)?;
    let max = cfg.config.notes_max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    let inv = Invocation {
        bin,
        model: cfg.model.clone(),
        resume: None,
        mcp_config: None,
        allowed_tools: "Read,Write,Edit".into(),
        system_prompt: None,
        prompt: prompt(&notes, max),
        home: state.to_owned(),
        cwd: state.to_owned(),
        env: cfg.config.env.clone(),
    };
    let (tx, mut rx) = mpsc::channel::<Output>(256);
    let code = match inv.spawn(tx).await {
        Ok(mut run) => {
            while let Some(o) = rx.recv().await {
                let payload = match o {
                    Output::Stream(v) => v,
                    Output::Stderr(l) => serde_json::Value::String(l),
                };
                let items = vec![EventIn {
                    kind: "notes_compaction_stream".into(),
                    payload,
                }];
                c.call(&AgentRequest::Events { items }).await?;
            }
            run.wait().await.ok().flatten()
        }
        Err(e) => {
            tracing::warn!("notes compaction could not start claude: {e}");
            None
        }
    };
    let after = std::fs::metadata(&notes).map(|m| m.len()).unwrap_or(0);
    let rewritten = code == Some(0) && after > 0;
    if !rewritten {
        // A failed or empty rewrite leaves the notes as they were.
        std::fs::copy(&prev, &notes)?;
    }
    let out = Outcome {
        before,
        after: if rewritten { after } else { before },
        rewritten,
    };
    let payload = serde_json::json!({ "before_bytes": out.before, "after_bytes": out.after, "rewritten": rewritten, "exit_code": code });
    c.call(&AgentRequest::Events {
        items: vec![EventIn {
            kind: "notes_compaction".into(),
            payload,
        }],
    })
    .await?;
    c.call(&AgentRequest::Stats {
        items: vec![
            ("notes.before_bytes".into(), out.before as f64),
            ("notes.after_bytes".into(), out.after as f64),
        ],
    })
    .await?;
    Ok(out)
}
