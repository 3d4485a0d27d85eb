//! The `events` table: each agent's history (stream-json lines, states, crashes).

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, Tail};
use crate::clock::now_ms;

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub agent: String,
    pub id: i64,
    pub ts: i64,
    pub kind: String,
    pub payload_json: String,
}

pub(super) const COLUMNS: &str = "agent, id, ts, kind, payload_json";

/// Stores one event: agent, time, kind, payload (a send's note uses it too).
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (agent, ts, kind, payload_json) VALUES (?1, ?2, ?3, ?4)";

/// The agent's (`?1`) newest turn event, after `SELECT columns`.
const LAST_TURN: &str = "FROM events WHERE agent = ?1 AND kind IN ('turn_start', 'turn_end') \
     ORDER BY id DESC LIMIT 1";

/// What the vacuum knows of each agent's history: through which event id it
/// looked, and an upper bound of the payload bytes up to there. A history
/// under its budget then costs a look at its new events only; the newest
/// events' running sum is taken only when the bound passes the budget.
#[derive(Default)]
pub(super) struct HistorySizes(Mutex<HashMap<String, (i64, u64)>>);

impl HistorySizes {
    /// The id looked through and the bound (0, 0 for an agent not seen yet).
    pub(super) fn get(&self, agent: &str) -> (i64, u64) {
        // Every critical section leaves the map whole, so a poisoned lock is still usable.
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.get(agent).copied().unwrap_or((0, 0))
    }

    /// Records that `agent`'s events through `id` hold at most `bytes`.
    pub(super) fn set(&self, agent: &str, id: i64, bytes: u64) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(agent.to_owned(), (id, bytes));
    }
}

/// What a history is trimmed to once over its budget.
pub(super) fn trim_target(budget: u64) -> u64 {
    budget / 10 * 9
}

pub(super) fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        agent: r.get(0)?,
        id: r.get(1)?,
        ts: r.get(2)?,
        kind: r.get(3)?,
        payload_json: r.get(4)?,
    })
}

impl Store {
    /// Appends events of one agent in one transaction; returns their ids.
    pub fn add_events<'a>(
        &self,
        agent: &str,
        items: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Vec<i64>> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let mut ids = vec![];
        {
            let mut st = tx.prepare_cached(INSERT_EVENT)?;
            let now = now_ms();
            for (kind, payload) in items {
                st.execute(params![agent, now, kind, payload])?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Events of `agent` with id > `since`, oldest first, at most `limit`.
    pub fn events_since(&self, agent: &str, since: i64, limit: u32) -> Result<Vec<EventRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE agent = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))?;
        let rows = st.query_map(params![agent, since, limit], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The `limit` events of `agent` just before id `before` (all if None), oldest first.
    pub fn events_before(
        &self,
        agent: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM events WHERE agent = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3) ORDER BY id"
        ))?;
        let rows = st.query_map(params![agent, before.unwrap_or(i64::MAX), limit], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores `turn_end` with `payload`, and the turn's `figures` in the same
    /// transaction, only while the agent's newest turn event is still the
    /// `turn_start` with id `start`; its id, or None when the turn had ended
    /// (by another writer) or another began meanwhile.
    pub fn end_open_turn(
        &self,
        agent: &str,
        start: i64,
        payload: &str,
        figures: &[(&str, f64)],
    ) -> Result<Option<i64>> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let last: Option<i64> = tx
            .prepare_cached(&format!("SELECT id {LAST_TURN}"))?
            .query_row(params![agent], |r| r.get(0))
            .optional()?;
        if last != Some(start) {
            return Ok(None);
        }
        let now = now_ms();
        tx.prepare_cached(
            "INSERT INTO events (agent, ts, kind, payload_json) VALUES (?1, ?2, 'turn_end', ?3)",
        )?
        .execute(params![agent, now, payload])?;
        let id = tx.last_insert_rowid();
        super::stats::add_stats_on(&tx, agent, now, figures.iter().copied())?;
        tx.commit()?;
        Ok(Some(id))
    }

    /// The agent's newest `turn_start` or `turn_end`: a start means its turn is open.
    pub fn last_turn_event(&self, agent: &str) -> Result<Option<EventRow>> {
        let g = self.lock();
        let mut st = g
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} {LAST_TURN}"))?;
        Ok(st.query_row(params![agent], row).optional()?)
    }

    /// The newest feed events (turn starts and ends, crashes) of every agent
    /// with id < `before`, newest first. Served by the partial index
    /// `events_feed` (its WHERE is repeated here word for word), so a long
    /// history costs no scan.
    pub fn feed_events_before(&self, before: Option<i64>, limit: u32) -> Result<Vec<EventRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE kind IN ('turn_start', 'turn_end', 'container_crash') \
             AND id < ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = st.query_map(params![before.unwrap_or(i64::MAX), limit], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Feed events after tail position `after`, oldest first (the live feed's next rows).
    pub fn feed_events_after(&self, after: i64, limit: u32) -> Result<Tail<EventRow>> {
        let g = self.lock();
        let newest: i64 = g
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?;
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE kind IN ('turn_start', 'turn_end', 'container_crash') \
             AND id > ?1 AND id <= ?3 ORDER BY id LIMIT ?2"
        ))?;
        let rows: Vec<EventRow> = st
            .query_map(params![after, limit, newest], row)?
            .collect::<rusqlite::Result<_>>()?;
        // Events of other kinds move the position too, so they are not rescanned.
        let pending = rows.len() == limit as usize;
        let next = match rows.last() {
            Some(last) if pending => last.id,
            _ => newest.max(after),
        };
        Ok(Tail {
            rows,
            next,
            pending,
        })
    }

    /// Where a live tail of the feed's events starts now (the newest id; 0 without events).
    pub fn event_tail(&self) -> Result<i64> {
        let g = self.lock();
        Ok(g.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Drops events past the age limit or beyond the per-agent caps (a count
    /// and a size, [`Limits`](super::Limits)); returns how many.
    pub fn vacuum_events(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let mut n = self.delete_chunked("events", "ts < ?1", params![cutoff])?;
        let agents: Vec<String> = {
            let g = self.lock();
            let mut st = g.conn.prepare("SELECT DISTINCT agent FROM events")?;
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for agent in agents {
            let last_dropped: Option<i64> = self
                .lock()
                .conn
                .query_row(
                    "SELECT id FROM events WHERE agent = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
                    params![
                        agent,
                        i64::try_from(self.limits.events_keep).unwrap_or(i64::MAX)
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = last_dropped {
                n +=
                    self.delete_chunked("events", "agent = ?1 AND id <= ?2", params![agent, id])?;
            }
            n += self.trim_history(&agent)?;
        }
        Ok(n)
    }

    /// Drops the oldest events of `agent` while its payloads pass the byte
    /// budget. Its events are read a chunk at a time (`octet_length` reads a
    /// value's size, not the value), each under the lock on its own, so
    /// sends wait for one chunk at most, not a whole history.
    fn trim_history(&self, agent: &str) -> Result<usize> {
        const CHUNK: i64 = 2000;
        let budget = self.limits.events_keep_bytes;
        let (mut newest, mut bound) = self.history_sizes.get(agent);
        loop {
            let sizes = self.event_sizes(agent, "id > ?2 ORDER BY id", newest, CHUNK)?;
            for (id, bytes) in &sizes {
                newest = *id;
                bound = bound.saturating_add(*bytes);
            }
            if (sizes.len() as i64) < CHUNK {
                break;
            }
            Self::make_way();
        }
        if bound <= budget {
            self.history_sizes.set(agent, newest, bound);
            return Ok(0);
        }
        // Newest first, until the sum passes the target: that event and all before it go.
        let target = trim_target(budget);
        let (mut total, mut before, mut cut) = (0u64, newest.saturating_add(1), None);
        while cut.is_none() {
            let sizes = self.event_sizes(agent, "id < ?2 ORDER BY id DESC", before, CHUNK)?;
            for (id, bytes) in &sizes {
                total = total.saturating_add(*bytes);
                if total > target {
                    cut = Some(*id);
                    break;
                }
                before = *id;
            }
            if (sizes.len() as i64) < CHUNK {
                break;
            }
            Self::make_way();
        }
        let n = match cut {
            Some(id) => {
                self.delete_chunked("events", "agent = ?1 AND id <= ?2", params![agent, id])?
            }
            None => 0,
        };
        // What is left through `newest` sums to the target at most.
        self.history_sizes.set(agent, newest, target);
        Ok(n)
    }

    /// Up to `limit` (id, payload bytes) of `agent`'s events, by `order`
    /// (a condition on `id` against `from`, and an ORDER BY).
    fn event_sizes(
        &self,
        agent: &str,
        order: &str,
        from: i64,
        limit: i64,
    ) -> Result<Vec<(i64, u64)>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT id, octet_length(payload_json) FROM events WHERE agent = ?1 AND {order} LIMIT ?3"
        ))?;
        let rows = st.query_map(params![agent, from, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets every event of a purged agent.
    pub fn purge_events(&self, agent: &str) -> Result<usize> {
        Ok(self
            .lock()
            .conn
            .execute("DELETE FROM events WHERE agent = ?1", params![agent])?)
    }
}
