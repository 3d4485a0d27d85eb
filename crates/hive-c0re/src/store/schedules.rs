//! The `schedules` table: prompts due to agents at a time or on a repeat.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::clock::now_ms;

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub id: i64,
    pub agent: String,
    pub spec: String,
    pub text: String,
    pub repeating: bool,
    pub next_due: i64,
    pub created_by: String,
    pub created_at: i64,
    pub last_fired_at: Option<i64>,
}

const COLUMNS: &str =
    "id, agent, spec, text, repeating, next_due, created_by, created_at, last_fired_at";

/// A schedule node `?1` fires: any but one an agent at home elsewhere made
/// (any at all when `?1` is NULL).
const FIRES_HERE: &str = "(?1 IS NULL OR NOT EXISTS (SELECT 1 FROM agents a \
     WHERE a.name = schedules.created_by AND a.node <> ?1))";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        id: r.get(0)?,
        agent: r.get(1)?,
        spec: r.get(2)?,
        text: r.get(3)?,
        repeating: r.get(4)?,
        next_due: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        last_fired_at: r.get(8)?,
    })
}

impl Store {
    /// Adds a schedule; returns its id.
    pub fn add_schedule(
        &self,
        agent: &str,
        spec: &str,
        text: &str,
        repeating: bool,
        next_due: i64,
        by: &str,
    ) -> Result<i64> {
        let g = self.lock();
        g.conn.execute(
            "INSERT INTO schedules (agent, spec, text, repeating, next_due, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![agent, spec, text, repeating, next_due, by, now_ms()],
        )?;
        Ok(g.conn.last_insert_rowid())
    }

    /// Every schedule, soonest first.
    pub fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules ORDER BY next_due, id"
        ))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The soonest due time of a schedule node `node` fires, if any.
    pub fn next_schedule_due(&self, node: Option<&str>) -> Result<Option<i64>> {
        let g = self.lock();
        Ok(g.conn
            .query_row(
                &format!("SELECT MIN(next_due) FROM schedules WHERE {FIRES_HERE}"),
                params![node],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// Schedules due at `now` that node `node` fires.
    pub fn due_schedules(&self, now: i64, node: Option<&str>) -> Result<Vec<ScheduleRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE next_due <= ?2 AND {FIRES_HERE} \
             ORDER BY next_due, id"
        ))?;
        let rows = st.query_map(params![node, now], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Delivers a due schedule in one transaction: the message from `system`, then the
    /// next due time (or the schedule's removal), so a crash cannot deliver it twice.
    ///
    /// An inbox at its cap takes nothing, as for a send: the schedule then
    /// moves to `when_full` and None is returned. `now` is the firing's time.
    pub fn fire_schedule(
        &self,
        s: &ScheduleRow,
        next_due: Option<i64>,
        when_full: i64,
        now: i64,
    ) -> Result<Option<i64>> {
        let mut g = self.lock();
        if g.depth.get(&s.agent).copied().unwrap_or(0) >= self.limits.inbox_limit(&s.created_by) {
            g.conn.execute(
                "UPDATE schedules SET next_due = ?1 WHERE id = ?2",
                params![when_full, s.id],
            )?;
            return Ok(None);
        }
        let tx = g.conn.transaction()?;
        tx.execute(
            "INSERT INTO messages (sender, recipient, body, created_at) VALUES ('system', ?1, ?2, ?3)",
            params![s.agent, s.text, now],
        )?;
        let id = tx.last_insert_rowid();
        match next_due {
            Some(t) => tx.execute(
                "UPDATE schedules SET next_due = ?1, last_fired_at = ?2 WHERE id = ?3",
                params![t, now, s.id],
            )?,
            None => tx.execute("DELETE FROM schedules WHERE id = ?1", params![s.id])?,
        };
        tx.commit()?;
        *g.depth.entry(s.agent.clone()).or_default() += 1;
        Ok(Some(id))
    }

    /// Moves a schedule's next due time (the wall clock stepped back past it).
    pub fn set_schedule_due(&self, id: i64, next_due: i64) -> Result<()> {
        self.lock().conn.execute(
            "UPDATE schedules SET next_due = ?1 WHERE id = ?2",
            params![next_due, id],
        )?;
        Ok(())
    }

    /// Removes a schedule; false if there was none.
    pub fn remove_schedule(&self, id: i64) -> Result<bool> {
        Ok(self
            .lock()
            .conn
            .execute("DELETE FROM schedules WHERE id = ?1", params![id])?
            > 0)
    }

    /// Schedules pending for one agent.
    pub fn schedule_count(&self, agent: &str) -> Result<u32> {
        let g = self.lock();
        Ok(g.conn
            .prepare_cached("SELECT COUNT(*) FROM schedules WHERE agent = ?1")?
            .query_row(params![agent], |r| r.get(0))?)
    }

    /// Schedules made by `creator` (`operator` or an agent's name).
    pub fn schedule_count_by(&self, creator: &str) -> Result<u32> {
        let g = self.lock();
        Ok(g.conn
            .prepare_cached("SELECT COUNT(*) FROM schedules WHERE created_by = ?1")?
            .query_row(params![creator], |r| r.get(0))?)
    }

    /// Removes every schedule of a destroyed agent.
    pub fn remove_schedules_of(&self, agent: &str) -> Result<usize> {
        Ok(self
            .lock()
            .conn
            .execute("DELETE FROM schedules WHERE agent = ?1", params![agent])?)
    }
}
