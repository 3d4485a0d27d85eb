//! The `stats` table: figures the harness reports at each turn end.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, Spend, Store};
use crate::clock::{day_of, now_ms};

/// The `stats` rows' agent for hive-wide figures, and the hive's scope of a
/// budget ('#' never starts an agent name).
pub const HIVE_WIDE: &str = "#hive";

/// Most figures one read of them (`stats_since`) returns, the newest: a
/// summary over a long window of many busy agents stays this size.
pub const STATS_READ_MAX: usize = 500_000;

/// A stored figure.
#[derive(Debug, Clone, PartialEq)]
pub struct StatRow {
    pub agent: String,
    pub ts: i64,
    pub key: String,
    pub value: f64,
}

impl Store {
    /// Records figures of one agent at one instant; returns the spending
    /// among them, which is added to the agent's total for today in the same
    /// transaction (`spend_days`: budgets read one row, not a day of figures).
    pub fn add_stats<'a>(
        &self,
        agent: &str,
        items: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<Spend> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let spend = add_stats_on(&tx, agent, now_ms(), items)?;
        tx.commit()?;
        Ok(spend)
    }

    /// Figures since `since` (ms), of one agent or all, oldest first: the
    /// newest [`STATS_READ_MAX`] of them at most.
    pub fn stats_since(&self, agent: Option<&str>, since: i64) -> Result<Vec<StatRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(
            "SELECT agent, ts, key, value FROM (SELECT rowid AS r, agent, ts, key, value FROM stats \
             WHERE (?1 IS NULL OR agent = ?1) AND ts >= ?2 ORDER BY ts DESC, r DESC LIMIT ?3) \
             ORDER BY ts, r",
        )?;
        let rows = st.query_map(params![agent, since, STATS_READ_MAX as i64], |r| {
            Ok(StatRow {
                agent: r.get(0)?,
                ts: r.get(1)?,
                key: r.get(2)?,
                value: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Drops figures past the age limit or beyond the per-agent cap
    /// ([`Limits::stats_keep`](super::Limits)).
    pub fn vacuum_stats(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let mut n = self.delete_chunked("stats", "ts < ?1", params![cutoff])?;
        // The offset of the oldest row kept; rows of its instant stay with it.
        let keep = i64::try_from(self.limits.stats_keep.saturating_sub(1)).unwrap_or(i64::MAX);
        let agents: Vec<String> = {
            let g = self.lock();
            let mut st = g
                .conn
                .prepare("SELECT DISTINCT agent FROM stats WHERE agent != ?1")?;
            st.query_map(params![HIVE_WIDE], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for agent in agents {
            let oldest_kept: Option<i64> = self
                .lock()
                .conn
                .query_row(
                    "SELECT ts FROM stats WHERE agent = ?1 ORDER BY ts DESC LIMIT 1 OFFSET ?2",
                    params![agent, keep],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(ts) = oldest_kept {
                n += self.delete_chunked("stats", "agent = ?1 AND ts < ?2", params![agent, ts])?;
            }
        }
        // A day's total goes with the last of its figures.
        self.lock().conn.execute(
            "DELETE FROM spend_days WHERE day < ?1",
            params![day_of(cutoff)],
        )?;
        Ok(n)
    }
}

/// Stores figures of `agent` at `now` on `conn`, inside the caller's
/// transaction, with the spending among them added to its total for that
/// day; returns the spending.
pub(super) fn add_stats_on<'a>(
    conn: &Connection,
    agent: &str,
    now: i64,
    items: impl IntoIterator<Item = (&'a str, f64)>,
) -> Result<Spend> {
    let mut spend = Spend::default();
    {
        let mut st = conn
            .prepare_cached("INSERT INTO stats (agent, ts, key, value) VALUES (?1, ?2, ?3, ?4)")?;
        for (k, v) in items {
            st.execute(params![agent, now, k, v])?;
            let s = Spend::of([(k, v)]);
            spend.usd += s.usd;
            spend.tokens += s.tokens;
        }
    }
    if !spend.is_zero() {
        conn.prepare_cached(
            "INSERT INTO spend_days (agent, day, usd, tokens) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (day, agent) DO UPDATE SET \
             usd = usd + excluded.usd, tokens = tokens + excluded.tokens",
        )?
        .execute(params![agent, day_of(now), spend.usd, spend.tokens])?;
    }
    Ok(spend)
}
