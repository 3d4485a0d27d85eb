//! The `node_requests` table: a steering verb (start, stop, compact...) for
//! an agent whose home is another node, carried through the store. The
//! asking node enqueues it for the agent's home node and waits for its
//! outcome; the home node takes it (a conditional UPDATE, so exactly once),
//! runs it and stores the outcome. A request not taken yet can be cancelled,
//! also conditionally, so a cancel and a take racing have one winner. A
//! `shell` request's ticket is used once: marking it used is conditional too.
//!
//! On sqlite one node runs every agent and nothing is ever enqueued; the
//! table and the rules are the same so that `Db` behaves alike.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::clock::now_ms;

/// How long a request's row is kept (taken, finished or abandoned) before
/// the next take of any node deletes it.
pub(super) const KEEP_MS: i64 = 24 * 3600 * 1000;

/// A stored request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub id: i64,
    /// The node asked to carry it out: the agent's home.
    pub node: String,
    pub agent: String,
    /// The verb's name (`crate::hive::steer::Steer`), never a command line.
    pub verb: String,
    /// The verb's arguments.
    pub args_json: String,
    /// The node that asked.
    pub asked_by: String,
    pub created_at: i64,
    pub taken_at: Option<i64>,
    pub cancelled: bool,
    pub done_at: Option<i64>,
    /// Whether it succeeded, once done.
    pub ok: Option<bool>,
    /// The reply's text on success, the error's sentence on failure.
    pub reply: Option<String>,
}

impl RequestRow {
    /// `(ok, reply)` once the home node finished it.
    pub fn outcome(&self) -> Option<(bool, String)> {
        self.done_at?;
        Some((self.ok?, self.reply.clone().unwrap_or_default()))
    }
}

/// What enqueuing a request needs.
#[derive(Debug, Clone)]
pub struct NewRequest<'a> {
    pub node: &'a str,
    pub agent: &'a str,
    pub verb: &'a str,
    pub args_json: &'a str,
    pub asked_by: &'a str,
}

pub(super) const COLUMNS: &str = "id, node, agent, verb, args_json, asked_by, created_at, taken_at, cancelled, done_at, ok, reply";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RequestRow> {
    Ok(RequestRow {
        id: r.get(0)?,
        node: r.get(1)?,
        agent: r.get(2)?,
        verb: r.get(3)?,
        args_json: r.get(4)?,
        asked_by: r.get(5)?,
        created_at: r.get(6)?,
        taken_at: r.get(7)?,
        cancelled: r.get(8)?,
        done_at: r.get(9)?,
        ok: r.get(10)?,
        reply: r.get(11)?,
    })
}

impl Store {
    /// Stores a request for its node and returns its id.
    pub fn enqueue_request(&self, new: &NewRequest<'_>) -> Result<i64> {
        let g = self.lock();
        g.conn.execute(
            "INSERT INTO node_requests (node, agent, verb, args_json, asked_by, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                new.node,
                new.agent,
                new.verb,
                new.args_json,
                new.asked_by,
                now_ms()
            ],
        )?;
        Ok(g.conn.last_insert_rowid())
    }

    /// Takes every pending request for `node` made within `within_ms`
    /// (each once, whoever else takes), oldest first; an older one is
    /// cancelled instead, since its asker has given up on it; rows older
    /// than [`KEEP_MS`] go on the way.
    pub fn take_requests(&self, node: &str, within_ms: i64) -> Result<Vec<RequestRow>> {
        let now = now_ms();
        let g = self.lock();
        g.conn.execute(
            "DELETE FROM node_requests WHERE created_at < ?1",
            params![now - KEEP_MS],
        )?;
        g.conn.execute(
            "UPDATE node_requests SET cancelled = 1 \
             WHERE node = ?1 AND taken_at IS NULL AND NOT cancelled AND created_at < ?2",
            params![node, now - within_ms],
        )?;
        let mut st = g.conn.prepare_cached(&format!(
            "UPDATE node_requests SET taken_at = ?1 \
             WHERE node = ?2 AND taken_at IS NULL AND NOT cancelled AND created_at >= ?3 RETURNING {COLUMNS}"
        ))?;
        let mut taken = st
            .query_map(params![now, node, now - within_ms], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        taken.sort_by_key(|r| r.id);
        Ok(taken)
    }

    /// Stores the outcome of a taken request; false when it was not taken or is done already.
    pub fn finish_request(&self, id: i64, ok: bool, reply: &str) -> Result<bool> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE node_requests SET done_at = ?1, ok = ?2, reply = ?3 \
             WHERE id = ?4 AND taken_at IS NOT NULL AND done_at IS NULL",
            params![now_ms(), ok, reply, id],
        )? > 0)
    }

    /// Cancels a request no node took yet; false when one took it (or it is cancelled).
    pub fn cancel_request(&self, id: i64) -> Result<bool> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE node_requests SET cancelled = 1 WHERE id = ?1 AND taken_at IS NULL AND NOT cancelled",
            params![id],
        )? > 0)
    }

    /// Marks a shell request's ticket used, once: false when it was used
    /// before (or is no finished, successful request for `node`).
    pub fn use_request(&self, id: i64, node: &str) -> Result<bool> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE node_requests SET used_at = ?1 \
             WHERE id = ?2 AND node = ?3 AND done_at IS NOT NULL AND ok = 1 AND used_at IS NULL",
            params![now_ms(), id, node],
        )? > 0)
    }

    /// One request, if it exists.
    pub fn request(&self, id: i64) -> Result<Option<RequestRow>> {
        let g = self.lock();
        Ok(g.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM node_requests WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?)
    }
}
