//! Messages on PostgreSQL: the same queue as `store/messages.rs`. Every
//! statement that delivers or drops undelivered messages moves
//! `mailboxes.depth` in the same statement, so the cap stays exact.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deadpool_postgres::GenericClient;
use tokio::sync::oneshot;
use tokio_postgres::Row;

use super::wakes::CHANNEL;
use super::{PgStore, count, delete_chunked, group, vacuum_unlock};
use crate::clock::now_ms;
use crate::store::{MessageRow, Result, SendError, SendNote, Sent, StoreError, Tail};
use hive_sh4re::limits::RECV_MAX_BYTES;

const COLUMNS: &str = "id, sender, recipient, body, created_at, delivered_at";

fn row(r: &Row) -> MessageRow {
    MessageRow {
        id: r.get(0),
        sender: r.get(1),
        recipient: r.get(2),
        body: r.get(3),
        created_at: r.get(4),
        delivered_at: r.get(5),
    }
}

fn rows(v: Vec<Row>) -> Vec<MessageRow> {
    let mut out: Vec<MessageRow> = v.iter().map(row).collect();
    out.sort_by_key(|m| m.id);
    out
}

/// The oldest unclaimed undelivered ids of $2, locked; a row another
/// transaction holds is skipped, one another claimer took meanwhile is
/// rechecked out. Used as `id = ANY(ARRAY(...))`, an InitPlan run once: as
/// `id IN (...)` a nested loop may rerun it per row, and its LIMIT with it.
/// The update around it tests nothing more of those rows: they were checked
/// on their newest version as they were locked, and stay locked. A test of
/// `delivered_at IS NULL` there matches the inbox index's predicate, and the
/// planner then read that whole index (every undelivered message of the
/// hive, and those not yet vacuumed away) beside the primary key: 1.4 ms a
/// `recv` after a burst, where the primary key alone takes a few pages.
/// With each id, its body's size in bytes (`n`).
const NEXT_UNCLAIMED: &str = "SELECT id, octet_length(body) AS n FROM messages \
     WHERE recipient = $2 AND delivered_at IS NULL AND claimed_at IS NULL \
     ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED";

/// Of the rows [`NEXT_UNCLAIMED`] locks (`c`), those `recv` takes: within
/// `$4` bytes of bodies, the first whatever its size.
const RECV_KEPT: &str = "k AS (SELECT id FROM (SELECT id, n, sum(n) OVER (ORDER BY id) AS upto FROM c) w WHERE upto - n < $4)";

/// `recv`'s statement: `$1` now, `$2` the recipient, `$3` the most to take,
/// `$4` the most body bytes to take (the first message whatever its size).
/// A window cannot share a query with FOR UPDATE: the rows are locked
/// first (`c`), then counted (`k`); those past the bytes are left, unlocked
/// at the statement's commit.
pub(crate) fn recv_sql() -> String {
    format!(
        "WITH c AS ({NEXT_UNCLAIMED}), {RECV_KEPT}, \
         d AS (UPDATE messages SET delivered_at = $1 WHERE id = ANY(ARRAY(SELECT id FROM k)) \
           RETURNING {COLUMNS}), \
         m AS (UPDATE mailboxes SET depth = GREATEST(depth - (SELECT count(*) FROM d), 0) \
           WHERE recipient = $2 AND EXISTS (SELECT 1 FROM d)) \
         SELECT {COLUMNS} FROM d"
    )
}

/// What `recv` would take, claimed for the turn in progress instead of
/// delivered (the mailbox's depth stays: it counts claimed messages).
fn claim_read_sql() -> String {
    format!(
        "WITH c AS ({NEXT_UNCLAIMED}), {RECV_KEPT} \
         UPDATE messages SET claimed_at = $1, held_at = NULL WHERE id = ANY(ARRAY(SELECT id FROM k)) \
         RETURNING {COLUMNS}"
    )
}

/// A turn's claim: `$1` now, `$2` the recipient, `$3` the most to take,
/// `$4` the one sender to take from (NULL: any). Its rows are locked and
/// checked as [`NEXT_UNCLAIMED`] does, and tested no further (why: there).
pub(crate) fn claim_sql() -> String {
    format!(
        "UPDATE messages SET claimed_at = $1, held_at = NULL WHERE id = ANY(ARRAY(\
           SELECT id FROM messages WHERE recipient = $2 AND delivered_at IS NULL AND claimed_at IS NULL \
           AND ($4::text IS NULL OR sender = $4) ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)) \
         RETURNING {COLUMNS}"
    )
}

/// Most sends kept in doubt at once; past it, an older entry goes first.
const IN_DOUBT_MAX: usize = 4096;
/// How long a send in doubt is remembered: well past the five minutes a
/// harness repeats a request for while the database is out of reach.
const IN_DOUBT_FOR: Duration = Duration::from_secs(15 * 60);

/// Sends whose every try failed for the database out of reach after they
/// were given an id, so their commit is in doubt: by sender and the key the
/// sender gave, the id and when. A repeat under the same key goes under the
/// same id, which the writer reports sent when an earlier try stored it.
#[derive(Default)]
pub(super) struct InDoubt(std::sync::Mutex<HashMap<(String, String), (i64, Instant)>>);

impl InDoubt {
    fn id(&self, sender: &str, key: &str) -> Option<i64> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(sender.to_owned(), key.to_owned()))
            .filter(|(_, at)| at.elapsed() < IN_DOUBT_FOR)
            .map(|(id, _)| *id)
    }

    /// Remembers the send's id when its commit is in doubt (`tried`), forgets it once it is settled.
    fn settle(&self, sender: &str, key: &str, tried: Option<i64>) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let k = (sender.to_owned(), key.to_owned());
        let Some(id) = tried else {
            map.remove(&k);
            return;
        };
        if map.len() >= IN_DOUBT_MAX {
            map.retain(|_, (_, at)| at.elapsed() < IN_DOUBT_FOR);
        }
        if map.len() >= IN_DOUBT_MAX
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(k, (id, Instant::now()));
    }
}

impl PgStore {
    /// Commits a message, with its note's event if any, through the
    /// group-commit writer; refuses when the recipient's queue is at its cap.
    /// Under the sender's `key`, a repeat of a send in doubt goes under its id
    /// (see [`InDoubt`]).
    pub async fn send(
        &self,
        sender: &str,
        recipient: &str,
        body: &str,
        key: Option<&str>,
        note: Option<SendNote>,
    ) -> Result<Sent, SendError> {
        let (reply, answer) = oneshot::channel();
        let job = group::SendJob {
            sender: sender.to_owned(),
            recipient: recipient.to_owned(),
            body: body.to_owned(),
            id: key.and_then(|k| self.in_doubt.id(sender, k)),
            note,
            reply,
        };
        self.sends
            .send(job)
            .map_err(|_| StoreError::Batch("the store's writer has stopped".into()))?;
        let answer = answer
            .await
            .map_err(|_| StoreError::Batch("the store's writer has stopped".into()))?;
        if let Some(k) = key {
            self.in_doubt.settle(sender, k, answer.tried);
        }
        answer.result
    }

    /// Reads and acknowledges up to `max` unclaimed messages of `recipient`,
    /// oldest first, and no more than [`RECV_MAX_BYTES`] of bodies.
    pub async fn recv(&self, recipient: &str, max: u32) -> Result<Vec<MessageRow>> {
        let c = self.client().await?;
        let st = c.prepare_cached(&recv_sql()).await?;
        let bytes = RECV_MAX_BYTES as i64;
        let got = c
            .query(&st, &[&now_ms(), &recipient, &i64::from(max), &bytes])
            .await?;
        Ok(rows(got))
    }

    /// Claims every undelivered, unclaimed message of `recipient` for a turn (at most `max`), held ones too.
    pub async fn claim(&self, recipient: &str, max: u32) -> Result<Vec<MessageRow>> {
        self.claim_from(recipient, None, max).await
    }

    /// [`PgStore::claim`], of one sender's messages only when `sender` is given.
    pub async fn claim_from(
        &self,
        recipient: &str,
        sender: Option<&str>,
        max: u32,
    ) -> Result<Vec<MessageRow>> {
        self.claim_from_on(&self.client().await?, recipient, sender, max)
            .await
    }

    /// What [`PgStore::recv`] would take, claimed instead, on `c` (a
    /// transaction that checked the lease).
    pub(super) async fn claim_read_on(
        &self,
        c: &impl GenericClient,
        recipient: &str,
        max: u32,
    ) -> Result<Vec<MessageRow>> {
        let st = c.prepare_cached(&claim_read_sql()).await?;
        let bytes = RECV_MAX_BYTES as i64;
        let got = c
            .query(&st, &[&now_ms(), &recipient, &i64::from(max), &bytes])
            .await?;
        Ok(rows(got))
    }

    /// [`PgStore::claim_from`] on `c` (a connection, or a transaction of one).
    pub(super) async fn claim_from_on(
        &self,
        c: &impl GenericClient,
        recipient: &str,
        sender: Option<&str>,
        max: u32,
    ) -> Result<Vec<MessageRow>> {
        let st = c.prepare_cached(&claim_sql()).await?;
        let got = c
            .query(&st, &[&now_ms(), &recipient, &i64::from(max), &sender])
            .await?;
        Ok(rows(got))
    }

    /// Acknowledges messages of `recipient`; ids of others or already acknowledged ones are ignored.
    pub async fn ack(&self, recipient: &str, ids: &[i64]) -> Result<usize> {
        self.ack_on(&self.client().await?, recipient, ids).await
    }

    /// [`PgStore::ack`] on `c` (a connection, or a transaction of one).
    pub(super) async fn ack_on(
        &self,
        c: &impl GenericClient,
        recipient: &str,
        ids: &[i64],
    ) -> Result<usize> {
        let st = c
            .prepare_cached(
                "WITH d AS (UPDATE messages SET delivered_at = $1 \
                   WHERE id = ANY($2) AND recipient = $3 AND delivered_at IS NULL RETURNING 1), \
                 m AS (UPDATE mailboxes SET depth = GREATEST(depth - (SELECT count(*) FROM d), 0) \
                   WHERE recipient = $3 AND EXISTS (SELECT 1 FROM d)) \
                 SELECT count(*) FROM d",
            )
            .await?;
        let n: i64 = c
            .query_one(&st, &[&now_ms(), &ids, &recipient])
            .await?
            .get(0);
        Ok(n as usize)
    }

    /// Returns claimed but unacknowledged messages of `recipient` to its
    /// queue; other nodes are woken for it when any came back.
    pub async fn release_claims(&self, recipient: &str) -> Result<usize> {
        self.release_claims_in(&self.client().await?, recipient)
            .await
    }

    /// [`PgStore::release_claims`] on `c` (a connection, or a transaction of one).
    pub(super) async fn release_claims_in(
        &self,
        c: &impl GenericClient,
        recipient: &str,
    ) -> Result<usize> {
        let st = c
            .prepare_cached(&format!(
                "WITH r AS (UPDATE messages SET claimed_at = NULL \
                   WHERE recipient = $1 AND delivered_at IS NULL AND claimed_at IS NOT NULL RETURNING 1) \
                 SELECT n, CASE WHEN n > 0 THEN pg_notify('{CHANNEL}', $2::text || $1) END::text \
                 FROM (SELECT count(*) AS n FROM r) AS c"
            ))
            .await?;
        let n: i64 = c
            .query_one(&st, &[&recipient, &self.wake_prefix()])
            .await?
            .get(0);
        Ok(n as usize)
    }

    /// Returns claimed messages of `recipient` to its queue as held: they wait for the next new message.
    pub async fn hold_claims(&self, recipient: &str) -> Result<Vec<i64>> {
        self.hold_claims_in(&self.client().await?, recipient).await
    }

    /// [`PgStore::hold_claims`] on `c` (a connection, or a transaction of one).
    pub(super) async fn hold_claims_in(
        &self,
        c: &impl GenericClient,
        recipient: &str,
    ) -> Result<Vec<i64>> {
        let st = c
            .prepare_cached(
                "UPDATE messages SET claimed_at = NULL, held_at = $1 \
                 WHERE recipient = $2 AND delivered_at IS NULL AND claimed_at IS NOT NULL RETURNING id",
            )
            .await?;
        let mut ids: Vec<i64> = c
            .query(&st, &[&now_ms(), &recipient])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Undelivered messages of `recipient` held after a cancelled turn.
    pub async fn held_count(&self, recipient: &str) -> Result<u64> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT count(*) FROM messages \
                 WHERE recipient = $1 AND delivered_at IS NULL AND held_at IS NOT NULL",
            )
            .await?;
        Ok(count(c.query_one(&st, &[&recipient]).await?.get(0)))
    }

    /// Releases every claim; run at start, when no harness is connected.
    /// Other nodes are woken for each mailbox that got messages back.
    pub async fn release_all_claims(&self) -> Result<usize> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "WITH r AS (UPDATE messages SET claimed_at = NULL \
                       WHERE delivered_at IS NULL AND claimed_at IS NOT NULL RETURNING recipient) \
                     SELECT count(*), pg_notify('{CHANNEL}', $1::text || recipient)::text FROM r GROUP BY recipient"
                ),
                &[&self.wake_prefix()],
            )
            .await?;
        Ok(rows.iter().map(|r| count(r.get(0)) as usize).sum())
    }

    /// Releases the claims of `node`'s agents and of mailboxes no agent owns;
    /// run when the node starts, before any of its harnesses connects.
    pub async fn release_node_claims(&self, node: &str) -> Result<usize> {
        let c = self.client().await?;
        Ok(c.execute(
            "UPDATE messages SET claimed_at = NULL WHERE delivered_at IS NULL AND claimed_at IS NOT NULL \
             AND (recipient IN (SELECT name FROM agents WHERE node = $1) \
                  OR recipient NOT IN (SELECT name FROM agents))",
            &[&node],
        )
        .await? as usize)
    }

    /// Undelivered messages waiting for `recipient`.
    pub async fn inbox_depth(&self, recipient: &str) -> Result<u64> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("SELECT depth FROM mailboxes WHERE recipient = $1")
            .await?;
        Ok(c.query_opt(&st, &[&recipient])
            .await?
            .map_or(0, |r| count(r.get(0))))
    }

    /// True when `recipient` has a message that may start a turn: nobody claimed it and it is not held.
    pub async fn has_unclaimed(&self, recipient: &str) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE recipient = $1 \
                 AND delivered_at IS NULL AND claimed_at IS NULL AND held_at IS NULL)",
            )
            .await?;
        Ok(c.query_one(&st, &[&recipient]).await?.get(0))
    }

    /// When `recipient` has a message that may start a turn (nobody claimed
    /// it, it is not held): the arrival (unix ms) and id of its oldest
    /// unclaimed message, held ones included, as the turn would take them;
    /// of `sender`'s messages only when it is given.
    pub async fn oldest_unclaimed(
        &self,
        recipient: &str,
        sender: Option<&str>,
    ) -> Result<Option<(i64, i64)>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT MIN(created_at), MIN(id), bool_or(held_at IS NULL) FROM messages \
                 WHERE recipient = $1 AND delivered_at IS NULL AND claimed_at IS NULL \
                 AND ($2::text IS NULL OR sender = $2)",
            )
            .await?;
        let r = c.query_one(&st, &[&recipient, &sender]).await?;
        let (at, id, wakes): (Option<i64>, Option<i64>, Option<bool>) =
            (r.get(0), r.get(1), r.get(2));
        Ok(match (at, id, wakes) {
            (Some(at), Some(id), Some(true)) => Some((at, id)),
            _ => None,
        })
    }

    /// Holds every unclaimed message of `recipient` (the operator cancelled a
    /// queued turn): they wait, undelivered, for a new message to start the next.
    pub async fn hold_unclaimed(&self, recipient: &str) -> Result<usize> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "UPDATE messages SET held_at = $1 WHERE recipient = $2 AND delivered_at IS NULL \
                 AND claimed_at IS NULL AND held_at IS NULL",
            )
            .await?;
        Ok(c.execute(&st, &[&now_ms(), &recipient]).await? as usize)
    }

    /// Every mailbox's messages with id < `before`, newest first (the feed).
    pub async fn messages_before(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<MessageRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM messages WHERE id < $1 ORDER BY id DESC LIMIT $2"
            ))
            .await?;
        Ok(
            c.query(&st, &[&before.unwrap_or(i64::MAX), &i64::from(limit)])
                .await?
                .iter()
                .map(row)
                .collect(),
        )
    }

    /// Where a live tail of every mailbox starts now (`tail.rs`).
    pub async fn message_tail(&self) -> Result<i64> {
        self.tail_start().await
    }

    /// Every mailbox's messages that committed after tail position `after`,
    /// in commit order (the live feed).
    pub async fn messages_after(&self, after: i64, limit: u32) -> Result<Tail<MessageRow>> {
        let (got, next, pending) = self
            .tail("messages", COLUMNS, "", after, Some(limit))
            .await?;
        Ok(Tail {
            rows: got.iter().map(row).collect(),
            next,
            pending,
        })
    }

    /// The newest `limit` messages to or from `mailbox`, oldest first.
    pub async fn recent_messages(&self, mailbox: &str, limit: u32) -> Result<Vec<MessageRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM messages WHERE recipient = $1 OR sender = $1 ORDER BY id DESC LIMIT $2"
            ))
            .await?;
        Ok(rows(c.query(&st, &[&mailbox, &i64::from(limit)]).await?))
    }

    /// Drops delivered messages past the age limit or beyond the per-recipient cap; returns how many.
    /// Undelivered messages are never dropped. One node at a time.
    pub async fn vacuum_messages(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let keep = i64::try_from(self.limits.delivered_keep).unwrap_or(i64::MAX);
        let Some(client) = self.vacuum_lock().await? else {
            return Ok(0);
        };
        let c = &client;
        let result: Result<usize> = async {
            let mut n = delete_chunked(
                c,
                "messages",
                "delivered_at IS NOT NULL AND delivered_at < $1",
                &[&cutoff],
            )
            .await?;
            let recipients: Vec<String> = c
                .query(
                    "SELECT DISTINCT recipient FROM messages WHERE delivered_at IS NOT NULL",
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for r in recipients {
                let last_dropped: Option<i64> = c
                    .query_opt(
                        "SELECT id FROM messages WHERE recipient = $1 AND delivered_at IS NOT NULL \
                         ORDER BY id DESC LIMIT 1 OFFSET $2",
                        &[&r, &keep],
                    )
                    .await?
                    .map(|row| row.get(0));
                if let Some(id) = last_dropped {
                    n += delete_chunked(
                        c,
                        "messages",
                        "recipient = $1 AND delivered_at IS NOT NULL AND id <= $2",
                        &[&r, &id],
                    )
                    .await?;
                }
            }
            Ok(n)
        }
        .await;
        vacuum_unlock(client, &result).await;
        result
    }

    /// Forgets a purged agent's inbox and the messages it sent that were
    /// delivered; what it sent that another mailbox has yet to receive stays.
    pub async fn purge_messages(&self, mailbox: &str) -> Result<usize> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH d AS (DELETE FROM messages \
                   WHERE recipient = $1 OR (sender = $1 AND delivered_at IS NOT NULL) \
                   RETURNING recipient, delivered_at), \
                 u AS (UPDATE mailboxes m SET depth = GREATEST(m.depth - g.n, 0) \
                   FROM (SELECT recipient, count(*) AS n FROM d WHERE delivered_at IS NULL AND recipient <> $1 \
                         GROUP BY recipient) AS g WHERE m.recipient = g.recipient), \
                 x AS (DELETE FROM mailboxes WHERE recipient = $1) \
                 SELECT count(*) FROM d",
            )
            .await?;
        let n: i64 = c.query_one(&st, &[&mailbox]).await?.get(0);
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_in_doubt_is_kept_by_sender_and_key_until_settled_and_the_map_is_bounded() {
        let d = InDoubt::default();
        d.settle("alice", "k1", Some(7));
        assert_eq!(d.id("alice", "k1"), Some(7));
        assert_eq!(d.id("bob", "k1"), None, "another sender's key is its own");
        d.settle("alice", "k1", None);
        assert_eq!(d.id("alice", "k1"), None, "settled: forgotten");
        for i in 0..IN_DOUBT_MAX + 10 {
            d.settle("alice", &format!("k{i}"), Some(i as i64));
        }
        let kept = d.0.lock().unwrap().len();
        assert_eq!(kept, IN_DOUBT_MAX);
        assert_eq!(d.id("alice", "k0"), None, "the oldest went first");
        assert_eq!(
            d.id("alice", &format!("k{}", IN_DOUBT_MAX + 9)),
            Some((IN_DOUBT_MAX + 9) as i64)
        );
    }
}
