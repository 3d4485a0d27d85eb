//! The `nodes` table on PostgreSQL: the hive-c0re daemons sharing the
//! database and their heartbeats. Times are the database's clock, one clock
//! for every node, so a node's liveness never depends on another host's.

use super::{DB_NOW, PgStore};
use crate::store::{NodeRow, Result};

fn row(r: &tokio_postgres::Row) -> NodeRow {
    NodeRow {
        name: r.get(0),
        address: r.get(1),
        started_at: r.get(2),
        last_heartbeat: r.get(3),
    }
}

impl PgStore {
    /// Records that node `name` started at `address` (a restart replaces the
    /// last start); its first heartbeat is now. Agents without a home node
    /// (stored before nodes existed) become this node's. Returns the row.
    pub async fn register_node(&self, name: &str, address: &str) -> Result<NodeRow> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "WITH claimed AS (UPDATE agents SET node = $1 WHERE node IS NULL) \
                 INSERT INTO nodes (name, address, started_at, last_heartbeat) \
                 SELECT $1, $2, t, t FROM (SELECT {DB_NOW} AS t) AS now \
                 ON CONFLICT (name) DO UPDATE SET address = excluded.address, \
                 started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat \
                 RETURNING name, address, started_at, last_heartbeat"
            ))
            .await?;
        Ok(row(&c.query_one(&st, &[&name, &address]).await?))
    }

    /// Records a heartbeat of node `name` now; false when it never registered.
    pub async fn heartbeat(&self, name: &str) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE nodes SET last_heartbeat = GREATEST(last_heartbeat, {DB_NOW}) WHERE name = $1"
            ))
            .await?;
        Ok(c.execute(&st, &[&name]).await? > 0)
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
