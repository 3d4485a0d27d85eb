//! The `nodes` table: the hive-c0re daemons of a hive and their heartbeats.
//! On sqlite a hive has one host and so one node; the table is the same on
//! both backends so that `Db` reads it alike.

use rusqlite::params;

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
