//! The `nodes` table: the hive-c0re daemons of a hive and their heartbeats.
//! On sqlite a hive has one host and so one node; the table is the same on
//! both backends so that `Db` reads it alike.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::clock::now_ms;

/// A node of the hive.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub name: String,
    /// Where other nodes and the operator reach it (host:port or a URL).
    pub address: String,
    /// When it last registered (started), unix ms.
    pub started_at: i64,
    /// Its last heartbeat, unix ms.
    pub last_heartbeat: i64,
}

/// A node that [`Store::mark_down_nodes`] found down.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDown {
    pub name: String,
    /// How long it had been silent when marked, in ms.
    pub silent_ms: i64,
}

impl Store {
    /// Records that node `name` started at `address` (a restart replaces the
    /// last start); its first heartbeat is now. Agents without a home node
    /// (stored before nodes existed) become this node's. Returns the row.
    pub fn register_node(&self, name: &str, address: &str) -> Result<NodeRow> {
        let now = now_ms();
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        tx.execute(
            "INSERT INTO nodes (name, address, started_at, last_heartbeat) VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, \
             started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat",
            params![name, address, now],
        )?;
        tx.execute(
            "UPDATE agents SET node = ?1 WHERE node IS NULL",
            params![name],
        )?;
        tx.commit()?;
        Ok(NodeRow {
            name: name.to_owned(),
            address: address.to_owned(),
            started_at: now,
            last_heartbeat: now,
        })
    }

    /// Records a heartbeat of node `name` now; false when it never registered.
    pub fn heartbeat(&self, name: &str) -> Result<bool> {
        Ok(self.lock().conn.execute(
            "UPDATE nodes SET last_heartbeat = MAX(last_heartbeat, ?1) WHERE name = ?2",
            params![now_ms(), name],
        )? > 0)
    }

    /// Marks down every node but `me` silent for more than `silent_ms` and not
    /// marked yet; returns those this call marked, so that whichever node
    /// notices first announces it, once. A node marked keeps its mark (its
    /// last heartbeat) until it clears it itself ([`Store::node_back`]).
    pub fn mark_down_nodes(&self, me: &str, silent_ms: i64) -> Result<Vec<NodeDown>> {
        let now = now_ms();
        let g = self.lock();
        let mut st = g.conn.prepare_cached(
            "UPDATE nodes SET down_since = last_heartbeat \
             WHERE name <> ?1 AND down_since IS NULL AND last_heartbeat < ?2 - ?3 \
             RETURNING name, last_heartbeat",
        )?;
        let rows = st.query_map(params![me, now, silent_ms], |r| {
            let last: i64 = r.get(1)?;
            Ok(NodeDown {
                name: r.get(0)?,
                silent_ms: now - last,
            })
        })?;
        let mut down = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        down.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(down)
    }

    /// How long node `name` has been marked down (from its last heartbeat
    /// before, to now); None when it is not marked. Leaves the mark.
    pub fn node_down_for(&self, name: &str) -> Result<Option<i64>> {
        let since = down_since(&self.lock().conn, name)?;
        Ok(since.map(|s| now_ms() - s))
    }

    /// Clears node `name`'s down mark; returns how long it was down (from
    /// its last heartbeat before, to now) when it was marked, None when not.
    pub fn node_back(&self, name: &str) -> Result<Option<i64>> {
        let now = now_ms();
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let since = down_since(&tx, name)?;
        if since.is_some() {
            tx.execute(
                "UPDATE nodes SET down_since = NULL WHERE name = ?1",
                params![name],
            )?;
        }
        tx.commit()?;
        Ok(since.map(|s| now - s))
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(
            "SELECT name, address, started_at, last_heartbeat FROM nodes ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok(NodeRow {
                name: r.get(0)?,
                address: r.get(1)?,
                started_at: r.get(2)?,
                last_heartbeat: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Node `name`'s down mark (its last heartbeat when marked), if it has one.
fn down_since(conn: &rusqlite::Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT down_since FROM nodes WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}
