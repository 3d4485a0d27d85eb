//! The `hive_jobs` table: hive-wide chores (vacuum) that one node at a time
//! runs, about once per interval for the whole hive however many nodes share
//! the store. A node takes a job with one conditional statement (due, and
//! nobody holding it), so of nodes trying at the same moment one wins; a
//! node that dies holding a job loses it when its hold runs out.
//!
//! On sqlite one daemon owns the file and always wins; the table is the same
//! so that `Db` behaves alike.

use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use super::leases::ttl_ms;
use super::{Result, Store};
use crate::clock::now_ms;

/// How far past its interval (or hold) a job's due time (or hold) must lie
/// to have been set by a clock since stepped back. Generous: nodes with
/// other intervals (`--vacuum-every`) share the job, and one node's longer
/// interval is not another's stepped clock.
pub(super) const STEPPED_BACK_MS: i64 = 24 * 3600 * 1000;

impl Store {
    /// Takes hive-wide job `name` for `node` when it is due and nobody holds
    /// it: it is then `node`'s for at most `hold` (until [`Store::finish_job`])
    /// and due again `every` from now. False when another node holds it or
    /// it ran less than `every` ago. A due time or hold a day further off
    /// than `every` or `hold` from now was set by a clock since stepped
    /// back: the job would not run until that time came again, so it is due.
    pub fn take_job(
        &self,
        name: &str,
        node: &str,
        every: Duration,
        hold: Duration,
    ) -> Result<bool> {
        let now = now_ms();
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "INSERT INTO hive_jobs (name, node, held_until, next_at) VALUES (?1, ?2, ?3 + ?4, ?3 + ?5) \
             ON CONFLICT (name) DO UPDATE SET node = excluded.node, \
             held_until = excluded.held_until, next_at = excluded.next_at \
             WHERE (hive_jobs.next_at <= ?3 OR hive_jobs.next_at > ?3 + ?5 + {STEPPED_BACK_MS}) \
             AND (hive_jobs.held_until IS NULL OR hive_jobs.held_until <= ?3 \
                  OR hive_jobs.held_until > ?3 + ?4 + {STEPPED_BACK_MS}) \
             RETURNING name"
        ))?;
        Ok(st
            .query_row(
                params![name, node, now, ttl_ms(hold), ttl_ms(every)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// `node` finished job `name`: another node may take it once it is due.
    pub fn finish_job(&self, name: &str, node: &str) -> Result<()> {
        self.lock().conn.execute(
            "UPDATE hive_jobs SET held_until = NULL WHERE name = ?1 AND node = ?2",
            params![name, node],
        )?;
        Ok(())
    }
}
