//! The `schedules` table on PostgreSQL. Firing is conditional on the slot
//! the caller read (`next_due`), so of two nodes firing one schedule at
//! once, one delivers and the other finds the slot taken.

use tokio_postgres::Row;

use super::PgStore;
use super::wakes::CHANNEL;
use crate::clock::now_ms;
use crate::store::{Result, ScheduleRow};

const COLUMNS: &str =
    "id, agent, spec, text, repeating, next_due, created_by, created_at, last_fired_at";

/// A schedule node `$1` fires: any but one an agent at home elsewhere made
/// (any at all when `$1` is NULL).
const FIRES_HERE: &str = "($1::text IS NULL OR NOT EXISTS (SELECT 1 FROM agents a \
     WHERE a.name = schedules.created_by AND a.node <> $1))";

fn row(r: &Row) -> ScheduleRow {
    ScheduleRow {
        id: r.get(0),
        agent: r.get(1),
        spec: r.get(2),
        text: r.get(3),
        repeating: r.get(4),
        next_due: r.get(5),
        created_by: r.get(6),
        created_at: r.get(7),
        last_fired_at: r.get(8),
    }
}

impl PgStore {
    /// Adds a schedule; returns its id.
    pub async fn add_schedule(
        &self,
        agent: &str,
        spec: &str,
        text: &str,
        repeating: bool,
        next_due: i64,
        by: &str,
    ) -> Result<i64> {
        let c = self.client().await?;
        Ok(c.query_one(
            "INSERT INTO schedules (agent, spec, text, repeating, next_due, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            &[&agent, &spec, &text, &repeating, &next_due, &by, &now_ms()],
        )
        .await?
        .get(0))
    }

    /// Every schedule, soonest first.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM schedules ORDER BY next_due, id"
            ))
            .await?;
        Ok(c.query(&st, &[]).await?.iter().map(row).collect())
    }

    /// The soonest due time of a schedule node `node` fires, if any.
    pub async fn next_schedule_due(&self, node: Option<&str>) -> Result<Option<i64>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT MIN(next_due) FROM schedules WHERE {FIRES_HERE}"
            ))
            .await?;
        Ok(c.query_one(&st, &[&node]).await?.get(0))
    }

    /// Schedules due at `now` that node `node` fires.
    pub async fn due_schedules(&self, now: i64, node: Option<&str>) -> Result<Vec<ScheduleRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM schedules WHERE next_due <= $2 AND {FIRES_HERE} \
                 ORDER BY next_due, id"
            ))
            .await?;
        Ok(c.query(&st, &[&node, &now])
            .await?
            .iter()
            .map(row)
            .collect())
    }

    /// Delivers a due schedule in one transaction: the message from
    /// `system`, then the next due time (or the schedule's removal). None
    /// when nothing was delivered: another node took the slot `s.next_due`
    /// already, or the inbox is at its cap (the schedule then moves to
    /// `when_full`, as on sqlite). `now` is the firing's time.
    pub async fn fire_schedule(
        &self,
        s: &ScheduleRow,
        next_due: Option<i64>,
        when_full: i64,
        now: i64,
    ) -> Result<Option<i64>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // The mailbox row locked first, as a send locks it: the cap read here holds until the commit.
        let depth: i64 = tx
            .query_one(
                "INSERT INTO mailboxes (recipient) VALUES ($1) \
                 ON CONFLICT (recipient) DO UPDATE SET depth = mailboxes.depth RETURNING depth",
                &[&s.agent],
            )
            .await?
            .get(0);
        if u64::try_from(depth).unwrap_or(0) >= self.limits().inbox_limit(&s.created_by) {
            tx.execute(
                "UPDATE schedules SET next_due = $1 WHERE id = $2 AND next_due = $3",
                &[&when_full, &s.id, &s.next_due],
            )
            .await?;
            tx.commit().await?;
            return Ok(None);
        }
        let taken = match next_due {
            Some(t) => {
                tx.execute(
                    "UPDATE schedules SET next_due = $1, last_fired_at = $2 WHERE id = $3 AND next_due = $4",
                    &[&t, &now, &s.id, &s.next_due],
                )
                .await?
            }
            None => {
                tx.execute(
                    "DELETE FROM schedules WHERE id = $1 AND next_due = $2",
                    &[&s.id, &s.next_due],
                )
                .await?
            }
        };
        if taken == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let id: i64 = tx
            .query_one(
                &format!(
                    "WITH m AS (INSERT INTO messages (sender, recipient, body, created_at) \
                       VALUES ('system', $1, $2, $3) RETURNING id), \
                     d AS (UPDATE mailboxes SET depth = depth + 1 WHERE recipient = $1) \
                     SELECT id, pg_notify('{CHANNEL}', $4::text || $1)::text FROM m"
                ),
                &[&s.agent, &s.text, &now, &self.wake_prefix()],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Moves a schedule's next due time (the wall clock stepped back past it).
    pub async fn set_schedule_due(&self, id: i64, next_due: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE schedules SET next_due = $1 WHERE id = $2",
            &[&next_due, &id],
        )
        .await?;
        Ok(())
    }

    /// Removes a schedule; false if there was none.
    pub async fn remove_schedule(&self, id: i64) -> Result<bool> {
        let c = self.client().await?;
        Ok(c.execute("DELETE FROM schedules WHERE id = $1", &[&id])
            .await?
            > 0)
    }

    /// Schedules pending for one agent.
    pub async fn schedule_count(&self, agent: &str) -> Result<u32> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one("SELECT count(*) FROM schedules WHERE agent = $1", &[&agent])
            .await?
            .get(0);
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Schedules made by `creator` (`operator` or an agent's name).
    pub async fn schedule_count_by(&self, creator: &str) -> Result<u32> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM schedules WHERE created_by = $1",
                &[&creator],
            )
            .await?
            .get(0);
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// Removes every schedule of a destroyed agent.
    pub async fn remove_schedules_of(&self, agent: &str) -> Result<usize> {
        let c = self.client().await?;
        Ok(
            c.execute("DELETE FROM schedules WHERE agent = $1", &[&agent])
                .await? as usize,
        )
    }
}
