//! The `approvals` table on PostgreSQL. A decision is a conditional UPDATE:
//! of two operators approving at once on two nodes, one wins.

use hive_sh4re::host::{ApprovalKind, ApprovalStatus};
use tokio_postgres::Row;

use super::wakes::{CHANNEL, approvals_payload};
use super::{ADVISORY_CLASS, Key, PgStore, count, delete_chunked, vacuum_unlock};
use crate::clock::now_ms;
use crate::store::approvals::APPROVALS_KEEP;
use crate::store::{ApprovalRow, NewApproval, Result, Tail};

const COLUMNS: &str = "id, agent, kind, payload_json, commit_ref, description, status, note, created_at, decided_at, decided_on, repo_head, repo_ahead, settled_at";

fn row(r: &Row) -> ApprovalRow {
    ApprovalRow {
        id: r.get(0),
        agent: r.get(1),
        kind: ApprovalKind::parse(r.get(2)),
        payload_json: r.get(3),
        commit_ref: r.get(4),
        description: r.get(5),
        status: ApprovalStatus::parse(r.get(6)),
        note: r.get(7),
        created_at: r.get(8),
        decided_at: r.get(9),
        decided_on: r.get(10),
        repo_head: r.get(11),
        repo_ahead: r.get(12),
        settled_at: r.get(13),
    }
}

impl PgStore {
    /// Queues a pending approval and returns its id; None when
    /// `while_fewer_than` approvals wait already.
    pub async fn add_approval(&self, a: &NewApproval<'_>) -> Result<Option<i64>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if a.while_fewer_than.is_some() {
            // Requests queued at once on any node take turns here, each
            // counting what the last one committed: none passes the bound.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&ADVISORY_CLASS, &(Key::ApprovalQueue as i32)],
            )
            .await?;
        }
        let bound = a.while_fewer_than.map_or(i64::MAX, |n| n as i64);
        // Every node's operator surfaces list it (`Wake::Approvals`).
        let wake = approvals_payload(&self.origin);
        let id = tx
            .query_opt(
                &format!(
                    "WITH i AS (INSERT INTO approvals (agent, kind, payload_json, commit_ref, description, created_at) \
                     SELECT $1, $2, $3, $4, $5, $6 \
                     WHERE (SELECT COUNT(*) FROM approvals WHERE status = $8) < $9 RETURNING id) \
                     SELECT id, pg_notify('{CHANNEL}', $7)::text FROM i"
                ),
                &[
                    &a.agent,
                    &a.kind.as_str(),
                    &a.payload_json,
                    &a.commit_ref,
                    &a.description,
                    &now_ms(),
                    &wake,
                    &ApprovalStatus::Pending.as_str(),
                    &bound,
                ],
            )
            .await?
            .map(|r| r.get(0));
        tx.commit().await?;
        Ok(id)
    }

    /// One approval.
    pub async fn approval(&self, id: i64) -> Result<Option<ApprovalRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM approvals WHERE id = $1"))
            .await?;
        Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(row))
    }

    /// Every approval, oldest first.
    pub async fn approvals(&self) -> Result<Vec<ApprovalRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {COLUMNS} FROM approvals ORDER BY id"))
            .await?;
        Ok(c.query(&st, &[]).await?.iter().map(row).collect())
    }

    /// Moves a pending approval to `status`; false if it was not pending (decided once only).
    pub async fn decide_approval(
        &self,
        id: i64,
        status: ApprovalStatus,
        note: Option<&str>,
        node: &str,
    ) -> Result<bool> {
        let c = self.client().await?;
        // Of two concurrent deciders the second waits for the first's row lock,
        // then finds the row no longer pending and changes nothing.
        let wake = approvals_payload(&self.origin);
        Ok(!c
            .query(
                &format!(
                    "WITH u AS (UPDATE approvals SET status = $1, note = $2, decided_at = $3, decided_on = $6 \
                     WHERE id = $4 AND status = $5 RETURNING id) \
                     SELECT pg_notify('{CHANNEL}', $7)::text FROM u"
                ),
                &[&status.as_str(), &note, &now_ms(), &id, &ApprovalStatus::Pending.as_str(), &node, &wake],
            )
            .await?
            .is_empty())
    }

    /// Records, while it is pending, where the agent's config repo head is
    /// past the approval's commit (None, None: it is not); true when that
    /// changed, which wakes the other nodes' surfaces.
    pub async fn set_approval_head(
        &self,
        id: i64,
        head: Option<&str>,
        ahead: Option<i64>,
    ) -> Result<bool> {
        let c = self.client().await?;
        let wake = approvals_payload(&self.origin);
        let st = c
            .prepare_cached(&format!(
                "WITH u AS (UPDATE approvals SET repo_head = $1, repo_ahead = $2 \
                 WHERE id = $3 AND status = $4 \
                 AND (repo_head IS DISTINCT FROM $1 OR repo_ahead IS DISTINCT FROM $2) RETURNING id) \
                 SELECT pg_notify('{CHANNEL}', $5)::text FROM u"
            ))
            .await?;
        Ok(!c
            .query(
                &st,
                &[&head, &ahead, &id, &ApprovalStatus::Pending.as_str(), &wake],
            )
            .await?
            .is_empty())
    }

    /// Settles an approval already decided: its action ended, with `status`
    /// (approved → failed when its action failed) and `note`.
    pub async fn settle_approval(
        &self,
        id: i64,
        status: ApprovalStatus,
        note: Option<&str>,
    ) -> Result<bool> {
        let c = self.client().await?;
        let wake = approvals_payload(&self.origin);
        Ok(!c
            .query(
                &format!(
                    "WITH u AS (UPDATE approvals SET status = $1, note = $2, settled_at = $5 WHERE id = $3 RETURNING id) \
                     SELECT pg_notify('{CHANNEL}', $4)::text FROM u"
                ),
                &[&status.as_str(), &note, &id, &wake, &now_ms()],
            )
            .await?
            .is_empty())
    }

    /// Marks approved approval `id` failed with `note` unless its end was
    /// stored meanwhile (by another node too); false when it was.
    pub async fn settle_cut_off(&self, id: i64, note: &str) -> Result<bool> {
        let c = self.client().await?;
        let wake = approvals_payload(&self.origin);
        Ok(!c
            .query(
                &format!(
                    "WITH u AS (UPDATE approvals SET status = $1, note = $2, settled_at = $3 \
                     WHERE id = $4 AND status = $5 AND settled_at IS NULL RETURNING id) \
                     SELECT pg_notify('{CHANNEL}', $6)::text FROM u"
                ),
                &[
                    &ApprovalStatus::Failed.as_str(),
                    &note,
                    &now_ms(),
                    &id,
                    &ApprovalStatus::Approved.as_str(),
                    &wake,
                ],
            )
            .await?
            .is_empty())
    }

    /// The approvals `node` decided to approve whose action never ended:
    /// hive-c0re stopped while carrying them out.
    pub async fn unsettled_approvals(&self, node: &str) -> Result<Vec<ApprovalRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM approvals WHERE status = $1 AND settled_at IS NULL AND decided_on = $2 ORDER BY id"
            ))
            .await?;
        Ok(c.query(&st, &[&ApprovalStatus::Approved.as_str(), &node])
            .await?
            .iter()
            .map(row)
            .collect())
    }

    /// Where a live tail of approvals starts now (`tail.rs`).
    pub async fn approval_tail(&self) -> Result<i64> {
        self.tail_start().await
    }

    /// Approvals that committed after tail position `after`, in commit order.
    pub async fn approvals_after(&self, after: i64) -> Result<Tail<ApprovalRow>> {
        let (got, next, pending) = self.tail("approvals", COLUMNS, "", after, None).await?;
        Ok(Tail {
            rows: got.iter().map(row).collect(),
            next,
            pending,
        })
    }

    /// Pending approvals, hive-wide.
    pub async fn pending_approvals(&self) -> Result<u64> {
        let c = self.client().await?;
        Ok(count(
            c.query_one(
                "SELECT count(*) FROM approvals WHERE status = $1",
                &[&ApprovalStatus::Pending.as_str()],
            )
            .await?
            .get(0),
        ))
    }

    /// Drops decided approvals past the age limit or beyond the newest
    /// `APPROVALS_KEEP` (as the sqlite store does); a pending one stays.
    /// One node at a time.
    pub async fn vacuum_approvals(&self) -> Result<usize> {
        let pending = ApprovalStatus::Pending.as_str();
        let cutoff = now_ms() - self.limits.max_age_ms;
        let Some(client) = self.vacuum_lock().await? else {
            return Ok(0);
        };
        let c = &client;
        let result: Result<usize> = async {
            let mut n = delete_chunked(
                c,
                "approvals",
                "status <> $1 AND (status <> 'approved' OR settled_at IS NOT NULL) AND COALESCE(decided_at, created_at) < $2",
                &[&pending, &cutoff],
            )
            .await?;
            let last_kept: Option<i64> = c
                .query_opt(
                    "SELECT id FROM approvals WHERE status <> $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
                    &[&pending, &(APPROVALS_KEEP - 1)],
                )
                .await?
                .map(|r| r.get(0));
            if let Some(id) = last_kept {
                n += delete_chunked(c, "approvals", "status <> $1 AND (status <> 'approved' OR settled_at IS NOT NULL) AND id < $2", &[&pending, &id])
                    .await?;
            }
            Ok(n)
        }
        .await;
        vacuum_unlock(client, &result).await;
        result
    }
}
