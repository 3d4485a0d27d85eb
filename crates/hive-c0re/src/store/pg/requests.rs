//! The `node_requests` table on PostgreSQL. Enqueuing wakes the target node
//! and finishing wakes the asking one, each with a `pg_notify` in the same
//! transaction; taking and cancelling are conditional UPDATEs: two takers
//! racing, the second's UPDATE waits for the first's row lock, then finds
//! the row taken and skips it.

use tokio_postgres::Row;

use super::wakes::{CHANNEL, outcome_payload, request_payload};
use super::{DB_NOW, PgStore};
use crate::clock::now_ms;
use crate::store::requests::{COLUMNS, KEEP_MS};
use crate::store::{NewRequest, RequestRow, Result};

fn row(r: &Row) -> RequestRow {
    RequestRow {
        id: r.get(0),
        node: r.get(1),
        agent: r.get(2),
        verb: r.get(3),
        args_json: r.get(4),
        asked_by: r.get(5),
        created_at: r.get(6),
        taken_at: r.get(7),
        cancelled: r.get(8),
        done_at: r.get(9),
        ok: r.get(10),
        reply: r.get(11),
    }
}

impl PgStore {
    /// Stores a request for its node and returns its id; the node is woken once it commits.
    pub async fn enqueue_request(&self, new: &NewRequest<'_>) -> Result<i64> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "WITH i AS (INSERT INTO node_requests (node, agent, verb, args_json, asked_by, created_at) \
                   VALUES ($1, $2, $3, $4, $5, {DB_NOW}) RETURNING id) \
                 SELECT id, pg_notify('{CHANNEL}', $6)::text FROM i"
            ))
            .await?;
        let payload = request_payload(&self.origin, new.node);
        Ok(c.query_one(
            &st,
            &[
                &new.node,
                &new.agent,
                &new.verb,
                &new.args_json,
                &new.asked_by,
                &payload,
            ],
        )
        .await?
        .get(0))
    }

    /// Takes every pending request for `node` made within `within_ms` (each
    /// once, whoever else takes), oldest first; an older one is cancelled
    /// instead, since its asker has given up on it. Ages are on the
    /// database's clock, which made `created_at`, whatever the nodes' own
    /// clocks say. Rows older than a day go on the way.
    pub async fn take_requests(&self, node: &str, within_ms: i64) -> Result<Vec<RequestRow>> {
        let c = self.client().await?;
        let now = now_ms();
        let old = c
            .prepare_cached("DELETE FROM node_requests WHERE created_at < $1")
            .await?;
        c.execute(&old, &[&(now - KEEP_MS)]).await?;
        let given_up = c
            .prepare_cached(&format!(
                "UPDATE node_requests SET cancelled = true \
                 WHERE node = $1 AND taken_at IS NULL AND NOT cancelled AND created_at < {DB_NOW} - $2"
            ))
            .await?;
        c.execute(&given_up, &[&node, &within_ms]).await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE node_requests SET taken_at = $1 \
                 WHERE node = $2 AND taken_at IS NULL AND NOT cancelled \
                   AND created_at >= {DB_NOW} - $3 RETURNING {COLUMNS}"
            ))
            .await?;
        let mut taken: Vec<RequestRow> = c
            .query(&st, &[&now, &node, &within_ms])
            .await?
            .iter()
            .map(row)
            .collect();
        taken.sort_by_key(|r| r.id);
        Ok(taken)
    }

    /// Stores the outcome of a taken request and wakes the asking node;
    /// false when it was not taken or is done already.
    pub async fn finish_request(&self, id: i64, ok: bool, reply: &str) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "WITH u AS (UPDATE node_requests SET done_at = $1, ok = $2, reply = $3 \
                   WHERE id = $4 AND taken_at IS NOT NULL AND done_at IS NULL RETURNING 1) \
                 SELECT pg_notify('{CHANNEL}', $5)::text FROM u"
            ))
            .await?;
        let payload = outcome_payload(&self.origin, id);
        Ok(!c
            .query(&st, &[&now_ms(), &ok, &reply, &id, &payload])
            .await?
            .is_empty())
    }

    /// Cancels a request no node took yet; false when one took it (or it is cancelled).
    pub async fn cancel_request(&self, id: i64) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE node_requests SET cancelled = TRUE \
                 WHERE id = $1 AND taken_at IS NULL AND NOT cancelled",
            )
            .await?;
        Ok(c.execute(&st, &[&id]).await? > 0)
    }

    /// Marks a shell request's ticket used, once: false when it was used
    /// before (or is no finished, successful request for `node`).
    pub async fn use_request(&self, id: i64, node: &str) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE node_requests SET used_at = $1 \
                 WHERE id = $2 AND node = $3 AND done_at IS NOT NULL AND ok AND used_at IS NULL",
            )
            .await?;
        Ok(c.execute(&st, &[&now_ms(), &id, &node]).await? > 0)
    }

    /// One request, if it exists.
    pub async fn request(&self, id: i64) -> Result<Option<RequestRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM node_requests WHERE id = $1"
            ))
            .await?;
        Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(row))
    }
}
