//! The `approvals` table: requests that take effect only when the operator says yes.

use hive_sh4re::host::{ApprovalKind, ApprovalStatus};
use rusqlite::{OptionalExtension, params};

use super::{Result, Store, Tail};
use crate::clock::now_ms;

/// A stored approval.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRow {
    pub id: i64,
    pub agent: String,
    pub kind: ApprovalKind,
    pub payload_json: String,
    pub commit_ref: String,
    pub description: Option<String>,
    pub status: ApprovalStatus,
    pub note: Option<String>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    /// The node whose operator decided it.
    pub decided_on: Option<String>,
    /// While pending: the head of the agent's config repo when it had moved
    /// past `commit_ref`, and by how many commits, as the agent's home node
    /// last read it.
    pub repo_head: Option<String>,
    pub repo_ahead: Option<i64>,
    /// When its action ended, once approved (carried out, or failed).
    pub settled_at: Option<i64>,
}

/// What queuing an approval needs.
#[derive(Debug, Clone)]
pub struct NewApproval<'a> {
    pub agent: &'a str,
    pub kind: ApprovalKind,
    pub payload_json: &'a str,
    pub commit_ref: &'a str,
    pub description: Option<&'a str>,
    /// Queue it only while fewer than this many approvals wait (a bound
    /// checked in the insert itself, so parallel requests cannot pass it).
    pub while_fewer_than: Option<u64>,
}

/// Decided approvals kept (the newest), beside the age limit: each is read
/// with its pinned text by every listing, and a manager can make thousands.
pub(super) const APPROVALS_KEEP: i64 = 200;

const COLUMNS: &str = "id, agent, kind, payload_json, commit_ref, description, status, note, created_at, decided_at, decided_on, repo_head, repo_ahead, settled_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRow> {
    Ok(ApprovalRow {
        id: r.get(0)?,
        agent: r.get(1)?,
        kind: ApprovalKind::parse(&r.get::<_, String>(2)?),
        payload_json: r.get(3)?,
        commit_ref: r.get(4)?,
        description: r.get(5)?,
        status: ApprovalStatus::parse(&r.get::<_, String>(6)?),
        note: r.get(7)?,
        created_at: r.get(8)?,
        decided_at: r.get(9)?,
        decided_on: r.get(10)?,
        repo_head: r.get(11)?,
        repo_ahead: r.get(12)?,
        settled_at: r.get(13)?,
    })
}

impl Store {
    /// Queues a pending approval and returns its id; None when
    /// `while_fewer_than` approvals wait already.
    pub fn add_approval(&self, a: &NewApproval<'_>) -> Result<Option<i64>> {
        let g = self.lock();
        // One connection under the lock: the count and the insert see the same table.
        let bound = a.while_fewer_than.map_or(i64::MAX, |n| n as i64);
        let added = g.conn.execute(
            "INSERT INTO approvals (agent, kind, payload_json, commit_ref, description, created_at) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6 \
             WHERE (SELECT COUNT(*) FROM approvals WHERE status = ?7) < ?8",
            params![a.agent, a.kind.as_str(), a.payload_json, a.commit_ref, a.description, now_ms(),
                ApprovalStatus::Pending.as_str(), bound],
        )?;
        Ok((added == 1).then(|| g.conn.last_insert_rowid()))
    }

    /// One approval.
    pub fn approval(&self, id: i64) -> Result<Option<ApprovalRow>> {
        let g = self.lock();
        Ok(g.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?)
    }

    /// Every approval, oldest first.
    pub fn approvals(&self) -> Result<Vec<ApprovalRow>> {
        let g = self.lock();
        let mut st = g
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM approvals ORDER BY id"))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Moves a pending approval to `status`, decided on node `node`; false
    /// if it was not pending (decided once only).
    pub fn decide_approval(
        &self,
        id: i64,
        status: ApprovalStatus,
        note: Option<&str>,
        node: &str,
    ) -> Result<bool> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE approvals SET status = ?1, note = ?2, decided_at = ?3, decided_on = ?6 WHERE id = ?4 AND status = ?5",
            params![status.as_str(), note, now_ms(), id, ApprovalStatus::Pending.as_str(), node],
        )? > 0)
    }

    /// Records, while it is pending, where the agent's config repo head is
    /// past the approval's commit (None, None: it is not); true when that changed.
    pub fn set_approval_head(
        &self,
        id: i64,
        head: Option<&str>,
        ahead: Option<i64>,
    ) -> Result<bool> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE approvals SET repo_head = ?1, repo_ahead = ?2 \
             WHERE id = ?3 AND status = ?4 AND (repo_head IS NOT ?1 OR repo_ahead IS NOT ?2)",
            params![head, ahead, id, ApprovalStatus::Pending.as_str()],
        )? > 0)
    }

    /// Settles an approval already decided: its action ended, with `status`
    /// (approved → failed when its action failed) and `note`.
    pub fn settle_approval(
        &self,
        id: i64,
        status: ApprovalStatus,
        note: Option<&str>,
    ) -> Result<bool> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE approvals SET status = ?1, note = ?2, settled_at = ?4 WHERE id = ?3",
            params![status.as_str(), note, id, now_ms()],
        )? > 0)
    }

    /// Marks approved approval `id` failed with `note` unless its end was
    /// stored meanwhile; false when it was.
    pub fn settle_cut_off(&self, id: i64, note: &str) -> Result<bool> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE approvals SET status = ?1, note = ?2, settled_at = ?3 \
             WHERE id = ?4 AND status = ?5 AND settled_at IS NULL",
            params![
                ApprovalStatus::Failed.as_str(),
                note,
                now_ms(),
                id,
                ApprovalStatus::Approved.as_str()
            ],
        )? > 0)
    }

    /// The approvals `node` decided to approve whose action never ended:
    /// hive-c0re stopped while carrying them out.
    pub fn unsettled_approvals(&self, node: &str) -> Result<Vec<ApprovalRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE status = ?1 AND settled_at IS NULL AND decided_on = ?2 ORDER BY id"
        ))?;
        let rows = st.query_map(params![ApprovalStatus::Approved.as_str(), node], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Where a live tail of approvals starts now (the newest id; 0 without approvals).
    pub fn approval_tail(&self) -> Result<i64> {
        let g = self.lock();
        Ok(g.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM approvals", [], |r| {
                r.get(0)
            })?)
    }

    /// Approvals after tail position `after`, oldest first.
    pub fn approvals_after(&self, after: i64) -> Result<Tail<ApprovalRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM approvals WHERE id > ?1 ORDER BY id"
        ))?;
        let rows: Vec<ApprovalRow> = st
            .query_map(params![after], row)?
            .collect::<rusqlite::Result<_>>()?;
        let next = rows.last().map_or(after, |a| a.id);
        Ok(Tail {
            rows,
            next,
            pending: false,
        })
    }

    /// Pending approvals, hive-wide.
    pub fn pending_approvals(&self) -> Result<u64> {
        let g = self.lock();
        Ok(g.conn.query_row(
            "SELECT COUNT(*) FROM approvals WHERE status = ?1",
            [ApprovalStatus::Pending.as_str()],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }

    /// Drops decided approvals past the age limit or beyond the newest
    /// [`APPROVALS_KEEP`]; a pending one stays. Returns how many.
    pub fn vacuum_approvals(&self) -> Result<usize> {
        let pending = ApprovalStatus::Pending.as_str();
        let mut n = self.delete_chunked(
            "approvals",
            "status <> ?1 AND (status <> 'approved' OR settled_at IS NOT NULL) AND COALESCE(decided_at, created_at) < ?2",
            params![pending, now_ms() - self.limits.max_age_ms],
        )?;
        let last_kept: Option<i64> = self
            .lock()
            .conn
            .query_row(
                "SELECT id FROM approvals WHERE status <> ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
                params![pending, APPROVALS_KEEP - 1],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = last_kept {
            n += self.delete_chunked(
                "approvals",
                "status <> ?1 AND (status <> 'approved' OR settled_at IS NOT NULL) AND id < ?2",
                params![pending, id],
            )?;
        }
        Ok(n)
    }
}
