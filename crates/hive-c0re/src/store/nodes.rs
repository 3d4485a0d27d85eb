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

/// What [`Store::register_node`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    /// This daemon serves the node: its row as stored.
    Done(NodeRow),
    /// Another daemon (another holder, another state dir) serves the node
    /// and beat within the alive window: nothing was written.
    Served {
        /// The other daemon's holder (`NODE#ID`).
        holder: String,
        /// How long ago it last beat, in ms.
        silent_ms: i64,
    },
}

impl Store {
    /// Records that node `name` started at `address`, served by `holder` (a
    /// restart replaces the last start); its first heartbeat is now. Agents
    /// without a home node (stored before nodes existed) become this node's.
    /// Refused while another holder beat for `name` within `alive_ms`.
    pub fn register_node(
        &self,
        name: &str,
        address: &str,
        holder: &str,
        alive_ms: i64,
    ) -> Result<Registration> {
        let now = now_ms();
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let served: Option<(Option<String>, i64)> = tx
            .query_row(
                "SELECT holder, last_heartbeat FROM nodes WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((Some(theirs), last)) = served
            && theirs != holder
            && now - last <= alive_ms
        {
            return Ok(Registration::Served {
                holder: theirs,
                silent_ms: (now - last).max(0),
            });
        }
        tx.execute(
            "INSERT INTO nodes (name, address, started_at, last_heartbeat, holder) VALUES (?1, ?2, ?3, ?3, ?4) \
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, \
             started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat, \
             holder = excluded.holder",
            params![name, address, now, holder],
        )?;
        tx.execute(
            "UPDATE agents SET node = ?1 WHERE node IS NULL",
            params![name],
        )?;
        tx.commit()?;
        Ok(Registration::Done(NodeRow {
            name: name.to_owned(),
            address: address.to_owned(),
            started_at: now,
            last_heartbeat: now,
        }))
    }

    /// Records a heartbeat of node `name` by `holder` now (a row stored
    /// before rows kept their holder becomes its); false when the node
    /// never registered or another daemon registered it since.
    pub fn heartbeat(&self, name: &str, holder: &str) -> Result<bool> {
        Ok(self.lock().conn.execute(
            "UPDATE nodes SET last_heartbeat = MAX(last_heartbeat, ?1), holder = COALESCE(holder, ?3) \
             WHERE name = ?2 AND (holder IS NULL OR holder = ?3)",
            params![now_ms(), name, holder],
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
