//! Live tails on PostgreSQL (the dashboard's feed): rows in the order their
//! transactions ended, not by id. Ids are not handed out in commit order
//! here: each node takes message ids from a reserve of its own, and
//! concurrent writers commit out of order, so a reader that tails by id
//! passes rows that commit later with a lower id (a node's messages after
//! another node's, for good).
//!
//! So the tailed tables carry `tx`, the inserting transaction's id
//! (`pg_current_xact_id()`), and a tail reads only transactions below the
//! horizon, the oldest transaction still running: every transaction below
//! it has ended, so no row can appear there later. A position is a `tx`;
//! a long transaction anywhere holds the horizon back, which delays the
//! tail (every session ends an idle transaction within 10 s), never skips.

use tokio_postgres::Row;

use super::PgStore;
use crate::store::Result;

/// The horizon: every transaction with a lower id has ended.
const HORIZON: &str = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

impl PgStore {
    /// The tail position now: what a tail from here reads is what ends after.
    pub(super) async fn tail_start(&self) -> Result<i64> {
        let c = self.client().await?;
        let h: i64 = c.query_one(HORIZON, &[]).await?.get(0);
        Ok(h - 1)
    }

    /// The rows of `table` matching `filter` (a condition and `AND`, or
    /// empty) whose transactions ended after position `after`: `columns`
    /// and then `tx`, by transaction and id, the position past them, and
    /// whether more is pending (see [`crate::store::Tail`]). At most `limit`
    /// rows unless one transaction alone holds more (a transaction is never
    /// split, so the next read starts past it).
    pub(super) async fn tail(
        &self,
        table: &str,
        columns: &str,
        filter: &str,
        after: i64,
        limit: Option<u32>,
    ) -> Result<(Vec<Row>, i64, bool)> {
        let c = self.client().await?;
        // The horizon first: a transaction ending during the read is left for the next.
        let horizon: i64 = c.query_one(HORIZON, &[]).await?.get(0);
        let most = limit.map_or(i64::MAX, i64::from);
        let st = c
            .prepare_cached(&format!(
                "SELECT {columns}, tx FROM {table} WHERE {filter} tx > $1 AND tx < $2 \
                 ORDER BY tx, id LIMIT $3"
            ))
            .await?;
        let mut rows = c.query(&st, &[&after, &horizon, &most]).await?;
        let tx = |r: &Row| -> i64 { r.get(r.len() - 1) };
        if (rows.len() as i64) < most {
            let held = c
                .prepare_cached(&format!(
                    "SELECT EXISTS (SELECT 1 FROM {table} WHERE {filter} tx >= $1)"
                ))
                .await?;
            let pending: bool = c.query_one(&held, &[&horizon]).await?.get(0);
            return Ok((rows, after.max(horizon - 1), pending));
        }
        let (Some(first), Some(last)) = (rows.first().map(tx), rows.last().map(tx)) else {
            return Ok((rows, after, false));
        };
        if first == last {
            let st = c
                .prepare_cached(&format!(
                    "SELECT {columns}, tx FROM {table} WHERE {filter} tx = $1 ORDER BY id"
                ))
                .await?;
            rows = c.query(&st, &[&last]).await?;
            return Ok((rows, last, true));
        }
        // The last transaction may go on past the limit: it is read next time, whole.
        rows.retain(|r| tx(r) != last);
        let next = rows.last().map_or(after, tx);
        Ok((rows, next, true))
    }
}
