//! The web dashboard (placeholder until its issue lands).

use std::sync::Arc;

use crate::hive::Hive;

/// Starts serving the dashboard on `addr`.
pub async fn start(_hive: &Arc<Hive>, _addr: &str) -> anyhow::Result<()> {
    Ok(())
}
