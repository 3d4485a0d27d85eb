//! The `nodes` table on PostgreSQL: the hive-c0re daemons sharing the
//! database and their heartbeats. Times are the database's clock, one clock
//! for every node, so a node's liveness never depends on another host's.

use super::{DB_NOW, PgStore};
use crate::store::{NodeDown, NodeRow, Registration, Result};

fn row(r: &tokio_postgres::Row) -> NodeRow {
    NodeRow {
        name: r.get(0),
        address: r.get(1),
        started_at: r.get(2),
        last_heartbeat: r.get(3),
    }
}

impl PgStore {
    /// Records that node `name` started at `address`, served by `holder` (a
    /// restart replaces the last start); its first heartbeat is now. Agents
    /// without a home node (stored before nodes existed) become this node's.
    /// Refused while another holder beat for `name` within `alive_ms`: two
    /// daemons starting under one name at once, the second waits for the
    /// first's row lock and then finds it served.
    pub async fn register_node(
        &self,
        name: &str,
        address: &str,
        holder: &str,
        alive_ms: i64,
    ) -> Result<Registration> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let st = tx
            .prepare_cached(&format!(
                "INSERT INTO nodes (name, address, started_at, last_heartbeat, holder) \
                 SELECT $1, $2, t, t, $3 FROM (SELECT {DB_NOW} AS t) AS now \
                 ON CONFLICT (name) DO UPDATE SET address = excluded.address, \
                 started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat, \
                 holder = excluded.holder \
                 WHERE nodes.holder IS NULL OR nodes.holder = excluded.holder \
                    OR nodes.last_heartbeat < excluded.last_heartbeat - $4 \
                 RETURNING name, address, started_at, last_heartbeat"
            ))
            .await?;
        let Some(done) = tx
            .query_opt(&st, &[&name, &address, &holder, &alive_ms])
            .await?
        else {
            let theirs = tx
                .query_one(
                    &format!("SELECT holder, {DB_NOW} - last_heartbeat FROM nodes WHERE name = $1"),
                    &[&name],
                )
                .await?;
            return Ok(Registration::Served {
                holder: theirs.get(0),
                silent_ms: theirs.get::<_, i64>(1).max(0),
            });
        };
        tx.execute("UPDATE agents SET node = $1 WHERE node IS NULL", &[&name])
            .await?;
        tx.commit().await?;
        Ok(Registration::Done(row(&done)))
    }

    /// Records a heartbeat of node `name` by `holder` now (a row stored
    /// before rows kept their holder becomes its); false when the node
    /// never registered or another daemon registered it since.
    pub async fn heartbeat(&self, name: &str, holder: &str) -> Result<bool> {
        let c = self.liveness_client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE nodes SET last_heartbeat = GREATEST(last_heartbeat, {DB_NOW}), \
                 holder = COALESCE(holder, $2) \
                 WHERE name = $1 AND (holder IS NULL OR holder = $2)"
            ))
            .await?;
        Ok(c.execute(&st, &[&name, &holder]).await? > 0)
    }

    /// Marks down every node but `me` silent for more than `silent_ms` (by
    /// the database's clock) and not marked yet; returns those this call
    /// marked. Two nodes racing: the second's UPDATE waits for the first's
    /// row lock, then sees `down_since` set and skips the row, so each node
    /// is announced once.
    pub async fn mark_down_nodes(&self, me: &str, silent_ms: i64) -> Result<Vec<NodeDown>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE nodes SET down_since = last_heartbeat \
                 WHERE name <> $1 AND down_since IS NULL AND last_heartbeat < {DB_NOW} - $2 \
                 RETURNING name, {DB_NOW} - last_heartbeat"
            ))
            .await?;
        let mut down: Vec<NodeDown> = c
            .query(&st, &[&me, &silent_ms])
            .await?
            .iter()
            .map(|r| NodeDown {
                name: r.get(0),
                silent_ms: r.get(1),
            })
            .collect();
        down.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(down)
    }

    /// How long node `name` has been marked down (from its last heartbeat
    /// before, to now); None when it is not marked. Leaves the mark.
    pub async fn node_down_for(&self, name: &str) -> Result<Option<i64>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {DB_NOW} - down_since FROM nodes WHERE name = $1 AND down_since IS NOT NULL"
            ))
            .await?;
        Ok(c.query_opt(&st, &[&name]).await?.map(|r| r.get(0)))
    }

    /// Clears node `name`'s down mark; returns how long it was down (from
    /// its last heartbeat before, to now) when it was marked, None when not.
    pub async fn node_back(&self, name: &str) -> Result<Option<i64>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "WITH was AS (SELECT down_since FROM nodes \
                 WHERE name = $1 AND down_since IS NOT NULL FOR UPDATE) \
                 UPDATE nodes SET down_since = NULL FROM was WHERE nodes.name = $1 \
                 RETURNING {DB_NOW} - was.down_since"
            ))
            .await?;
        Ok(c.query_opt(&st, &[&name]).await?.map(|r| r.get(0)))
    }

    /// Every node, by name (byte order, as sqlite sorts).
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT name, address, started_at, last_heartbeat FROM nodes ORDER BY name COLLATE \"C\"",
            )
            .await?;
        Ok(c.query(&st, &[]).await?.iter().map(row).collect())
    }
}
