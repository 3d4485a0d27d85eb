//! The `stats` table on PostgreSQL.

use super::{PgStore, delete_chunked, vacuum_unlock};
use crate::clock::now_ms;
use crate::store::{Result, StatRow};

impl PgStore {
    /// Records figures of one agent at one instant, in one multi-row insert.
    pub async fn add_stats(&self, agent: &str, items: &[(&str, f64)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let (keys, values): (Vec<&str>, Vec<f64>) = items.iter().copied().unzip();
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "INSERT INTO stats (agent, ts, key, value) \
                 SELECT $1, $2, u.k, u.v FROM unnest($3::text[], $4::float8[]) AS u(k, v)",
            )
            .await?;
        c.execute(&st, &[&agent, &now_ms(), &keys, &values]).await?;
        Ok(())
    }

    /// Figures since `since` (ms), of one agent or all, oldest first.
    pub async fn stats_since(&self, agent: Option<&str>, since: i64) -> Result<Vec<StatRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT agent, ts, key, value FROM stats \
                 WHERE ($1::text IS NULL OR agent = $1) AND ts >= $2 ORDER BY ts",
            )
            .await?;
        Ok(c.query(&st, &[&agent, &since])
            .await?
            .iter()
            .map(|r| StatRow {
                agent: r.get(0),
                ts: r.get(1),
                key: r.get(2),
                value: r.get(3),
            })
            .collect())
    }

    /// Drops figures past the age limit. One node at a time.
    pub async fn vacuum_stats(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let Some(client) = self.vacuum_lock().await? else {
            return Ok(0);
        };
        let result = delete_chunked(&client, "stats", "ts < $1", &[&cutoff]).await;
        vacuum_unlock(client, &result).await;
        result
    }
}
