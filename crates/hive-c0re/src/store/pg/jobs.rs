//! Hive-wide jobs on PostgreSQL (see `store/jobs.rs` for the rules). Times
//! are the database's clock, so nodes' clocks need not agree.

use std::time::Duration;

use super::{DB_NOW, PgStore};
use crate::store::Result;
use crate::store::jobs::STEPPED_BACK_MS;
use crate::store::leases::ttl_ms;

impl PgStore {
    /// Takes hive-wide job `name` for `node` when it is due and nobody holds
    /// it; false when another node holds it or it ran less than `every` ago.
    pub async fn take_job(
        &self,
        name: &str,
        node: &str,
        every: Duration,
        hold: Duration,
    ) -> Result<bool> {
        let c = self.client().await?;
        // Two nodes racing on the row: the second waits for the first's
        // commit, then finds the job held (or not due) and updates nothing.
        let st = c
            .prepare_cached(&format!(
                "INSERT INTO hive_jobs (name, node, held_until, next_at) \
                 VALUES ($1, $2, {DB_NOW} + $3, {DB_NOW} + $4) \
                 ON CONFLICT (name) DO UPDATE SET node = excluded.node, \
                 held_until = excluded.held_until, next_at = excluded.next_at \
                 WHERE (hive_jobs.next_at <= {DB_NOW} OR hive_jobs.next_at > {DB_NOW} + $4 + {STEPPED_BACK_MS}) \
                 AND (hive_jobs.held_until IS NULL OR hive_jobs.held_until <= {DB_NOW} \
                      OR hive_jobs.held_until > {DB_NOW} + $3 + {STEPPED_BACK_MS}) \
                 RETURNING name"
            ))
            .await?;
        Ok(
            c.query_opt(&st, &[&name, &node, &ttl_ms(hold), &ttl_ms(every)])
                .await?
                .is_some(),
        )
    }

    /// `node` finished job `name`: another node may take it once it is due.
    pub async fn finish_job(&self, name: &str, node: &str) -> Result<()> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("UPDATE hive_jobs SET held_until = NULL WHERE name = $1 AND node = $2")
            .await?;
        c.execute(&st, &[&name, &node]).await?;
        Ok(())
    }
}
