//! The operator's commands to the harness (cancel, compact, compact notes),
//! followed on a connection of their own so they reach a running turn.

use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::agent::{AgentRequest, Control};

use crate::client::ClientError;
use crate::harness::Harness;
use crate::runner::Runner;

/// Follows operator commands for as long as the harness runs.
pub async fn follow(h: Harness, runner: Arc<Runner>) {
    // Losing this connection means hive-c0re is gone; the turn loop notices too and exits.
    let Ok(mut c) = h.connect().await else {
        return;
    };
    loop {
        let control = match c.call(&AgentRequest::Control { wait_ms: None }).await {
            Ok(r) => r.control,
            Err(ClientError::Gone { .. }) => return,
            Err(e) => {
                tracing::warn!("control request failed: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match control {
            Some(Control::Cancel) if runner.cancel() => {
                tracing::info!("operator cancelled the running job");
            }
            // Each waits for a running turn to end; never overlaps one.
            Some(Control::Compact) => {
                let (h, runner) = (h.clone(), runner.clone());
                tokio::spawn(async move {
                    let job = runner.begin().await;
                    if let Err(e) = crate::compact::on_request(&h, &job).await {
                        tracing::warn!("compaction failed: {e:#}");
                    }
                });
            }
            Some(Control::CompactNotes) => {
                let (h, runner) = (h.clone(), runner.clone());
                tokio::spawn(async move {
                    let job = runner.begin().await;
                    if let Err(e) = crate::notes::on_request(&h, &job).await {
                        tracing::warn!("notes compaction failed: {e:#}");
                    }
                });
            }
            Some(Control::Cancel) | None => {}
        }
    }
}
