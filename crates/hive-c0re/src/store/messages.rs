//! Messages: the broker's queue. A row is never lost once `send` returned:
//! it stays until acknowledged (`delivered_at` set), and only delivered rows
//! are vacuumed.
//!
//! A harness *claims* its inbox for a turn and acknowledges it when the turn
//! ends; claims are released when the harness goes away, so a crashed turn's
//! messages come again (at-least-once, deduplicated by id). A cancelled
//! turn's messages are *held*: still undelivered and counted, but they wake
//! no turn by themselves; the next turn, which a new message starts, takes
//! them along.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Inner, Result, Store, StoreError, Tail};
use crate::clock::now_ms;
use hive_sh4re::limits::RECV_MAX_BYTES;

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: i64,
    pub sender: String,
    pub recipient: String,
    pub body: String,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// Why a send was refused by the store.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(
        "{recipient}'s inbox holds {cap} undelivered messages, its limit: wait until it reads some, then send again"
    )]
    InboxFull {
        recipient: String,
        /// The limit this sender met ([`Limits::inbox_limit`](super::Limits::inbox_limit)).
        cap: u64,
    },
    #[error("a message cannot carry a NUL byte: remove it and send again")]
    Nul,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An event stored with a send, in the send's own transaction, into the
/// recipient's history: both are stored or neither, and the event can name
/// the message's id, which the store picks.
pub struct SendNote {
    /// The event's kind.
    pub kind: String,
    /// The event's payload JSON, given the message's id.
    pub payload: Box<dyn Fn(i64) -> String + Send + Sync>,
}

/// A stored send: the message's id, its note's event id if it had one, and
/// the recipient's undelivered count once its batch committed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sent {
    /// The message's id.
    pub id: i64,
    /// The id of the event stored with it.
    pub event: Option<i64>,
    /// The recipient's undelivered messages once it was stored; None when
    /// this try found it stored by an earlier one.
    pub depth: Option<u64>,
}

/// A send as the sqlite writer takes it.
pub(super) struct Outgoing {
    pub sender: String,
    pub recipient: String,
    pub body: String,
    pub note: Option<SendNote>,
}

impl From<rusqlite::Error> for SendError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(e.into())
    }
}

const COLUMNS: &str = "id, sender, recipient, body, created_at, delivered_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        sender: r.get(1)?,
        recipient: r.get(2)?,
        body: r.get(3)?,
        created_at: r.get(4)?,
        delivered_at: r.get(5)?,
    })
}

pub(super) fn load_depths(conn: &Connection) -> Result<HashMap<String, u64>> {
    let mut st = conn.prepare(
        "SELECT recipient, COUNT(*) FROM messages WHERE delivered_at IS NULL GROUP BY recipient",
    )?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl Inner {
    /// Counts `n` of `recipient`'s messages off its depth once their acknowledgement committed.
    pub(super) fn delivered(&mut self, recipient: &str, n: usize) {
        if let Some(d) = self.depth.get_mut(recipient) {
            *d = d.saturating_sub(n as u64);
        }
    }

    /// [`Store::claim_from`] under the lock the caller holds.
    pub(super) fn claim_from(
        &self,
        recipient: &str,
        sender: Option<&str>,
        max: u32,
    ) -> Result<Vec<MessageRow>> {
        let mut st = self.conn.prepare_cached(&format!(
            "UPDATE messages SET claimed_at = ?1, held_at = NULL WHERE id IN (SELECT id FROM messages \
             WHERE recipient = ?2 AND delivered_at IS NULL AND claimed_at IS NULL \
             AND (?4 IS NULL OR sender = ?4) ORDER BY id LIMIT ?3) \
             RETURNING {COLUMNS}"
        ))?;
        let rows = st.query_map(params![now_ms(), recipient, max, sender], row)?;
        let mut v = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        v.sort_by_key(|m| m.id);
        Ok(v)
    }

    /// What [`Store::recv`] takes (up to `max` unclaimed messages, oldest
    /// first, within [`RECV_MAX_BYTES`] of bodies but the first whatever its
    /// size), marked with `set` (`?1` is now).
    fn take_window(&self, recipient: &str, max: u32, set: &str) -> Result<Vec<MessageRow>> {
        let mut st = self.conn.prepare_cached(&format!(
            "UPDATE messages SET {set} WHERE id IN (\
             SELECT id FROM (SELECT id, n, sum(n) OVER (ORDER BY id) AS upto FROM (\
             SELECT id, length(CAST(body AS BLOB)) AS n FROM messages \
             WHERE recipient = ?2 AND delivered_at IS NULL AND claimed_at IS NULL ORDER BY id LIMIT ?3)) \
             WHERE upto - n < ?4) \
             RETURNING {COLUMNS}"
        ))?;
        let rows = st.query_map(
            params![now_ms(), recipient, max, RECV_MAX_BYTES as i64],
            row,
        )?;
        let mut v = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        v.sort_by_key(|m| m.id);
        Ok(v)
    }

    /// What [`Store::recv`] would take, claimed instead of acknowledged (for
    /// the turn in progress), under the lock the caller holds.
    pub(super) fn claim_read(&self, recipient: &str, max: u32) -> Result<Vec<MessageRow>> {
        self.take_window(recipient, max, "claimed_at = ?1, held_at = NULL")
    }

    /// [`Store::ack`] under the lock the caller holds.
    pub(super) fn ack(&mut self, recipient: &str, ids: &[i64]) -> Result<usize> {
        let tx = self.conn.transaction()?;
        let n = ack_on(&tx, recipient, ids)?;
        tx.commit()?;
        self.delivered(recipient, n);
        Ok(n)
    }
}

/// Acknowledges messages of `recipient` on `conn` (inside the caller's
/// transaction); how many. The caller counts them off the depths once it commits.
pub(super) fn ack_on(conn: &Connection, recipient: &str, ids: &[i64]) -> Result<usize> {
    let mut st = conn.prepare_cached(
        "UPDATE messages SET delivered_at = ?1 WHERE id = ?2 AND recipient = ?3 AND delivered_at IS NULL",
    )?;
    let now = now_ms();
    let mut n = 0;
    for id in ids {
        n += st.execute(params![now, id, recipient])?;
    }
    Ok(n)
}

/// Returns `recipient`'s claimed, unacknowledged messages to its queue, on `conn`; how many.
pub(super) fn release_on(conn: &Connection, recipient: &str) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "UPDATE messages SET claimed_at = NULL WHERE recipient = ?1 AND delivered_at IS NULL AND claimed_at IS NOT NULL",
        )?
        .execute(params![recipient])?)
}

/// Returns `recipient`'s claimed messages to its queue as held, on `conn`; their ids, ascending.
pub(super) fn hold_on(conn: &Connection, recipient: &str) -> Result<Vec<i64>> {
    let mut st = conn.prepare_cached(
        "UPDATE messages SET claimed_at = NULL, held_at = ?1 WHERE recipient = ?2 AND delivered_at IS NULL AND claimed_at IS NOT NULL RETURNING id",
    )?;
    let rows = st.query_map(params![now_ms(), recipient], |r| r.get(0))?;
    let mut ids = rows.collect::<rusqlite::Result<Vec<i64>>>()?;
    ids.sort_unstable();
    Ok(ids)
}

impl Store {
    /// Commits a message and returns its id; refuses when the recipient's queue is at its cap.
    pub fn send(&self, sender: &str, recipient: &str, body: &str) -> Result<i64, SendError> {
        let out = Outgoing {
            sender: sender.to_owned(),
            recipient: recipient.to_owned(),
            body: body.to_owned(),
            note: None,
        };
        Ok(self.send_one(out)?.id)
    }

    /// Commits one message (and its note) in a transaction of its own.
    pub(super) fn send_one(&self, out: Outgoing) -> Result<Sent, SendError> {
        self.send_many(std::slice::from_ref(&out))
            .pop()
            .expect("one result per send")
    }

    /// Commits several messages in one transaction; each may be refused on its own (inbox full).
    /// A send's note goes into its recipient's history in the same transaction.
    pub(super) fn send_many(&self, items: &[Outgoing]) -> Vec<Result<Sent, SendError>> {
        let mut g = self.lock();
        let attempt = |g: &mut Inner| -> Result<Vec<Result<Sent, SendError>>, StoreError> {
            let tx = g.conn.transaction()?;
            let mut out = Vec::with_capacity(items.len());
            let mut added: HashMap<&str, u64> = HashMap::new();
            {
                let mut st =
                    tx.prepare_cached("INSERT INTO messages (sender, recipient, body, created_at) VALUES (?1, ?2, ?3, ?4)")?;
                let now = now_ms();
                for item in items {
                    let recipient = item.recipient.as_str();
                    let depth = g.depth.get(recipient).copied().unwrap_or(0)
                        + added.get(recipient).copied().unwrap_or(0);
                    let cap = self.limits.inbox_limit(&item.sender);
                    if depth >= cap {
                        out.push(Err(SendError::InboxFull {
                            recipient: recipient.to_owned(),
                            cap,
                        }));
                        continue;
                    }
                    st.execute(params![item.sender, recipient, item.body, now])?;
                    let id = tx.last_insert_rowid();
                    let event = match &item.note {
                        Some(note) => {
                            tx.prepare_cached(super::events::INSERT_EVENT)?
                                .execute(params![recipient, now, note.kind, (note.payload)(id)])?;
                            Some(tx.last_insert_rowid())
                        }
                        None => None,
                    };
                    *added.entry(recipient).or_default() += 1;
                    let depth = g.depth.get(recipient).copied().unwrap_or(0) + added[recipient];
                    out.push(Ok(Sent {
                        id,
                        event,
                        depth: Some(depth),
                    }));
                }
            }
            tx.commit()?;
            for (r, n) in added {
                *g.depth.entry(r.to_owned()).or_default() += n;
            }
            Ok(out)
        };
        match attempt(&mut g) {
            Ok(out) => out,
            Err(e) => {
                let full = e.is_disk_full();
                let msg = e.to_string();
                items
                    .iter()
                    .map(|_| {
                        Err(SendError::Store(if full {
                            // Kept recognisable, so the caller can say which disk and what to do.
                            StoreError::Sql(rusqlite::Error::SqliteFailure(
                                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                                None,
                            ))
                        } else {
                            StoreError::Batch(msg.clone())
                        }))
                    })
                    .collect()
            }
        }
    }

    /// Reads and acknowledges up to `max` unclaimed messages of `recipient`,
    /// oldest first, and no more than [`RECV_MAX_BYTES`] of bodies (the
    /// first message whatever its size).
    pub fn recv(&self, recipient: &str, max: u32) -> Result<Vec<MessageRow>> {
        let mut g = self.lock();
        let out = g.take_window(recipient, max, "delivered_at = ?1")?;
        g.delivered(recipient, out.len());
        Ok(out)
    }

    /// Claims every undelivered, unclaimed message of `recipient` for a turn (at most `max`), held ones too.
    pub fn claim(&self, recipient: &str, max: u32) -> Result<Vec<MessageRow>> {
        self.claim_from(recipient, None, max)
    }

    /// [`Store::claim`], of one sender's messages only when `sender` is given.
    pub fn claim_from(
        &self,
        recipient: &str,
        sender: Option<&str>,
        max: u32,
    ) -> Result<Vec<MessageRow>> {
        self.lock().claim_from(recipient, sender, max)
    }

    /// Acknowledges messages of `recipient`; ids of others or already acknowledged ones are ignored.
    pub fn ack(&self, recipient: &str, ids: &[i64]) -> Result<usize> {
        self.lock().ack(recipient, ids)
    }

    /// Returns claimed but unacknowledged messages of `recipient` to its queue.
    pub fn release_claims(&self, recipient: &str) -> Result<usize> {
        release_on(&self.lock().conn, recipient)
    }

    /// Returns claimed messages of `recipient` to its queue as held: they wait for the next new message.
    pub fn hold_claims(&self, recipient: &str) -> Result<Vec<i64>> {
        hold_on(&self.lock().conn, recipient)
    }

    /// Undelivered messages of `recipient` held after a cancelled turn.
    pub fn held_count(&self, recipient: &str) -> Result<u64> {
        let g = self.lock();
        Ok(g.conn
            .prepare_cached("SELECT COUNT(*) FROM messages WHERE recipient = ?1 AND delivered_at IS NULL AND held_at IS NOT NULL")?
            .query_row(params![recipient], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Releases every claim; run at start, when no harness is connected.
    pub fn release_all_claims(&self) -> Result<usize> {
        let g = self.lock();
        Ok(g.conn.execute("UPDATE messages SET claimed_at = NULL WHERE delivered_at IS NULL AND claimed_at IS NOT NULL", [])?)
    }

    /// Releases the claims of `node`'s agents and of mailboxes no agent owns;
    /// run when the node starts, before any of its harnesses connects.
    pub fn release_node_claims(&self, node: &str) -> Result<usize> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE messages SET claimed_at = NULL WHERE delivered_at IS NULL AND claimed_at IS NOT NULL \
             AND (recipient IN (SELECT name FROM agents WHERE node = ?1) \
                  OR recipient NOT IN (SELECT name FROM agents))",
            params![node],
        )?)
    }

    /// Undelivered messages waiting for `recipient`.
    pub fn inbox_depth(&self, recipient: &str) -> u64 {
        self.lock().depth.get(recipient).copied().unwrap_or(0)
    }

    /// True when `recipient` has a message that may start a turn: nobody claimed it and it is not held.
    pub fn has_unclaimed(&self, recipient: &str) -> Result<bool> {
        Ok(self.oldest_unclaimed(recipient, None)?.is_some())
    }

    /// When `recipient` has a message that may start a turn (nobody claimed
    /// it, it is not held): the arrival (unix ms) and id of its oldest
    /// unclaimed message, held ones included, as the turn would take them;
    /// of `sender`'s messages only when it is given.
    pub fn oldest_unclaimed(
        &self,
        recipient: &str,
        sender: Option<&str>,
    ) -> Result<Option<(i64, i64)>> {
        let g = self.lock();
        if g.depth.get(recipient).copied().unwrap_or(0) == 0 {
            return Ok(None);
        }
        let (at, id, wakes): (Option<i64>, Option<i64>, Option<bool>) = g
            .conn
            .prepare_cached(
                "SELECT MIN(created_at), MIN(id), MAX(held_at IS NULL) FROM messages \
                 WHERE recipient = ?1 AND delivered_at IS NULL AND claimed_at IS NULL \
                 AND (?2 IS NULL OR sender = ?2)",
            )?
            .query_row(params![recipient, sender], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        Ok(match (at, id, wakes) {
            (Some(at), Some(id), Some(true)) => Some((at, id)),
            _ => None,
        })
    }

    /// Holds every unclaimed message of `recipient` (the operator cancelled a
    /// queued turn): they wait, undelivered, for a new message to start the next.
    pub fn hold_unclaimed(&self, recipient: &str) -> Result<usize> {
        let g = self.lock();
        Ok(g.conn.execute(
            "UPDATE messages SET held_at = ?1 WHERE recipient = ?2 AND delivered_at IS NULL \
             AND claimed_at IS NULL AND held_at IS NULL",
            params![now_ms(), recipient],
        )?)
    }

    /// Every mailbox's messages with id < `before`, newest first (the feed).
    pub fn messages_before(&self, before: Option<i64>, limit: u32) -> Result<Vec<MessageRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = st.query_map(params![before.unwrap_or(i64::MAX), limit], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Where a live tail of every mailbox starts now (the newest id; 0 without messages).
    pub fn message_tail(&self) -> Result<i64> {
        let g = self.lock();
        Ok(g.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |r| {
                r.get(0)
            })?)
    }

    /// Every mailbox's messages after tail position `after`, oldest first (the live feed).
    pub fn messages_after(&self, after: i64, limit: u32) -> Result<Tail<MessageRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows: Vec<MessageRow> = st
            .query_map(params![after, limit], row)?
            .collect::<rusqlite::Result<_>>()?;
        let next = rows.last().map_or(after, |m| m.id);
        let pending = rows.len() == limit as usize;
        Ok(Tail {
            rows,
            next,
            pending,
        })
    }

    /// The newest `limit` messages to or from `mailbox`, oldest first.
    pub fn recent_messages(&self, mailbox: &str, limit: u32) -> Result<Vec<MessageRow>> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM (SELECT {COLUMNS} FROM messages WHERE recipient = ?1 OR sender = ?1 \
             ORDER BY id DESC LIMIT ?2) ORDER BY id"
        ))?;
        let rows = st.query_map(params![mailbox, limit], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Drops delivered messages past the age limit or beyond the per-recipient cap; returns how many.
    /// Undelivered messages are never dropped.
    pub fn vacuum_messages(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let mut n = self.delete_chunked(
            "messages",
            "delivered_at IS NOT NULL AND delivered_at < ?1",
            params![cutoff],
        )?;
        let recipients: Vec<String> = {
            let g = self.lock();
            let mut st = g.conn.prepare(
                "SELECT DISTINCT recipient FROM messages WHERE delivered_at IS NOT NULL",
            )?;
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for r in recipients {
            let last_dropped: Option<i64> = self
                .lock()
                .conn
                .query_row(
                    "SELECT id FROM messages WHERE recipient = ?1 AND delivered_at IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ?2",
                    params![r, i64::try_from(self.limits.delivered_keep).unwrap_or(i64::MAX)],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(id) = last_dropped {
                n += self.delete_chunked(
                    "messages",
                    "recipient = ?1 AND delivered_at IS NOT NULL AND id <= ?2",
                    params![r, id],
                )?;
            }
        }
        Ok(n)
    }

    /// Forgets a purged agent's inbox and the messages it sent that were
    /// delivered; what it sent that another mailbox has yet to receive stays.
    pub fn purge_messages(&self, mailbox: &str) -> Result<usize> {
        let mut g = self.lock();
        let n = g.conn.execute(
            "DELETE FROM messages WHERE recipient = ?1 OR (sender = ?1 AND delivered_at IS NOT NULL)",
            params![mailbox],
        )?;
        g.depth.remove(mailbox);
        Ok(n)
    }
}
