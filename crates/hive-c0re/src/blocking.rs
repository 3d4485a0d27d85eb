//! Blocking work (file systems, git) off the async runtime, with a time limit.
//!
//! host.sock, agent.sock and the dashboard share one runtime. Work on a tree
//! an agent can write may block for as long as the agent likes (a FIFO, a huge
//! tree, a git that never ends), so it runs on tokio's blocking pool and the
//! request that asked for it gets a sentence when the limit passes; every
//! other request keeps being answered meanwhile.

use std::time::Duration;

use crate::error::{Error, Result};

/// How long one piece of blocking work may take unless `HIVE_BLOCKING_TIMEOUT_SECS` says otherwise.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(30);

/// The limit in force: `HIVE_BLOCKING_TIMEOUT_SECS` (for tests), else [`DEFAULT_LIMIT`].
///
/// A git command is killed when it passes this; [`run`] gives up a little later,
/// so git's own, more precise sentence normally wins.
pub fn limit() -> Duration {
    crate::clock::secs_from_env("HIVE_BLOCKING_TIMEOUT_SECS", DEFAULT_LIMIT)
}

/// Runs `f` on the blocking pool; `what` ("creating dave's config repo") names it in errors.
pub async fn run<T, F>(what: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let give_up = limit() + Duration::from_secs(5);
    match tokio::time::timeout(give_up, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(Error::io(format!("{what} failed"))(std::io::Error::other(
            e,
        ))),
        Err(_) => Err(Error::refused(format!(
            "{what} took longer than {}s and was abandoned: something in the way blocks (a FIFO, a huge tree); remove it and try again",
            give_up.as_secs()
        ))),
    }
}
