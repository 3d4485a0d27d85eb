//! The `stats` table on PostgreSQL.

use deadpool_postgres::GenericClient;

use super::{PgStore, delete_chunked, vacuum_unlock};
use crate::clock::{day_of, now_ms};
use crate::store::{HIVE_WIDE, Result, STATS_READ_MAX, Spend, StatRow};

impl PgStore {
    /// Records figures of one agent at one instant, in one multi-row insert;
    /// returns the spending among them, which the same statement adds to the
    /// agent's total for today (`spend_days`).
    pub async fn add_stats(&self, agent: &str, items: &[(&str, f64)]) -> Result<Spend> {
        if items.is_empty() {
            return Ok(Spend::default());
        }
        add_stats_on(&self.client().await?, agent, now_ms(), items).await
    }

    /// Figures since `since` (ms), of one agent or all, oldest first: the
    /// newest [`STATS_READ_MAX`] of them at most.
    pub async fn stats_since(&self, agent: Option<&str>, since: i64) -> Result<Vec<StatRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT agent, ts, key, value FROM (SELECT agent, ts, key, value FROM stats \
                 WHERE ($1::text IS NULL OR agent = $1) AND ts >= $2 ORDER BY ts DESC LIMIT $3) s \
                 ORDER BY ts",
            )
            .await?;
        Ok(c.query(&st, &[&agent, &since, &(STATS_READ_MAX as i64)])
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

    /// Drops figures past the age limit or beyond the per-agent cap, and the
    /// days' totals with the last of their figures. One node at a time.
    pub async fn vacuum_stats(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let Some(client) = self.vacuum_lock().await? else {
            return Ok(0);
        };
        let c = &client;
        // The offset of the oldest row kept; rows of its instant stay with it.
        let keep = i64::try_from(self.limits.stats_keep.saturating_sub(1)).unwrap_or(i64::MAX);
        let result: Result<usize> = async {
            let mut n = delete_chunked(c, "stats", "ts < $1", &[&cutoff]).await?;
            let agents: Vec<String> = c
                .query(
                    "SELECT DISTINCT agent FROM stats WHERE agent != $1",
                    &[&HIVE_WIDE],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for agent in agents {
                let oldest_kept = c
                    .query_opt(
                        "SELECT ts FROM stats WHERE agent = $1 ORDER BY ts DESC LIMIT 1 OFFSET $2",
                        &[&agent, &keep],
                    )
                    .await?
                    .map(|r| r.get::<_, i64>(0));
                if let Some(ts) = oldest_kept {
                    n += delete_chunked(c, "stats", "agent = $1 AND ts < $2", &[&agent, &ts])
                        .await?;
                }
            }
            c.execute("DELETE FROM spend_days WHERE day < $1", &[&day_of(cutoff)])
                .await?;
            Ok(n)
        }
        .await;
        vacuum_unlock(client, &result).await;
        result
    }
}

/// Stores figures of `agent` at `now` on `c` (a connection, or the caller's
/// transaction on one), with the spending among them added to its total for
/// that day in the same statement; returns the spending.
pub(super) async fn add_stats_on(
    c: &impl GenericClient,
    agent: &str,
    now: i64,
    items: &[(&str, f64)],
) -> Result<Spend> {
    let spend = Spend::of(items.iter().copied());
    let (keys, values): (Vec<&str>, Vec<f64>) = items.iter().copied().unzip();
    if spend.is_zero() {
        let st = c
            .prepare_cached(
                "INSERT INTO stats (agent, ts, key, value) \
                 SELECT $1, $2, u.k, u.v FROM unnest($3::text[], $4::float8[]) AS u(k, v)",
            )
            .await?;
        c.execute(&st, &[&agent, &now, &keys, &values]).await?;
    } else {
        // One statement, so the figures and the day's total commit together.
        let st = c
            .prepare_cached(
                "WITH s AS (INSERT INTO stats (agent, ts, key, value) \
                   SELECT $1, $2, u.k, u.v FROM unnest($3::text[], $4::float8[]) AS u(k, v)) \
                 INSERT INTO spend_days (agent, day, usd, tokens) VALUES ($1, $5, $6, $7) \
                 ON CONFLICT (day, agent) DO UPDATE SET \
                 usd = spend_days.usd + excluded.usd, tokens = spend_days.tokens + excluded.tokens",
            )
            .await?;
        c.execute(
            &st,
            &[
                &agent,
                &now,
                &keys,
                &values,
                &day_of(now),
                &spend.usd,
                &spend.tokens,
            ],
        )
        .await?;
    }
    Ok(spend)
}
