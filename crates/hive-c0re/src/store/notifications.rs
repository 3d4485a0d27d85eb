//! The `notifications` table (the operator's notifications) and the webhook
//! queue: `webhook_deliveries` (one row per notification a webhook has yet to
//! take) and `webhook_status` (each webhook's last success and failure).
//!
//! A notification and its deliveries are written in one transaction, so a
//! stored notification is always queued for every webhook that wants it.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::clock::now_ms;

/// The vacuum's two caps, the same on both backends: each is how many of
/// the newest notifications stay, and which (SQL) of the older ones go.
/// First the read ones and those an agent caused at will, so a flood of
/// messages to the operator cannot push out an unread `failed` or
/// `needs_login` the operator has yet to see; then, far past, any.
pub(super) fn over_cap(limits: &super::Limits) -> [(i64, String); 2] {
    let at_will: Vec<String> = hive_sh4re::notification::NotificationKind::ALL
        .into_iter()
        .filter(|k| k.at_will())
        .map(|k| format!("'{}'", k.as_str()))
        .collect();
    let keep = i64::try_from(limits.notifications_keep).unwrap_or(i64::MAX);
    let hard = keep.saturating_mul(super::NOTIFICATIONS_HARD_CAP as i64);
    [
        (
            keep,
            format!("(read_at IS NOT NULL OR kind IN ({}))", at_will.join(", ")),
        ),
        (hard, "TRUE".to_owned()),
    ]
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRow {
    pub id: i64,
    pub ts: i64,
    pub kind: String,
    pub agent: Option<String>,
    pub text: String,
    pub link: String,
    pub read: bool,
}

/// A notification waiting for a webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub webhook: String,
    pub notification: i64,
    pub attempts: u32,
}

/// One webhook's queue and last results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookStats {
    pub pending: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub last_ok: Option<i64>,
}

const COLUMNS: &str = "id, ts, kind, agent, text, link, read_at IS NOT NULL";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationRow> {
    Ok(NotificationRow {
        id: r.get(0)?,
        ts: r.get(1)?,
        kind: r.get(2)?,
        agent: r.get(3)?,
        text: r.get(4)?,
        link: r.get(5)?,
        read: r.get(6)?,
    })
}

impl Store {
    /// Stores a notification and queues it for each of `webhooks`; returns it.
    pub fn add_notification(
        &self,
        kind: &str,
        agent: Option<&str>,
        text: &str,
        link: &str,
        webhooks: &[&str],
    ) -> Result<NotificationRow> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let ts = now_ms();
        tx.execute(
            "INSERT INTO notifications (ts, kind, agent, text, link) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts, kind, agent, text, link],
        )?;
        let id = tx.last_insert_rowid();
        for w in webhooks {
            tx.execute(
                "INSERT INTO webhook_deliveries (webhook, notification, next_at) VALUES (?1, ?2, ?3)",
                params![w, id, ts],
            )?;
        }
        tx.commit()?;
        Ok(NotificationRow {
            id,
            ts,
            kind: kind.to_owned(),
            agent: agent.map(str::to_owned),
            text: text.to_owned(),
            link: link.to_owned(),
            read: false,
        })
    }

    /// The newest `limit` notifications (only unread ones if `unread`), newest first.
    pub fn notifications(&self, unread: bool, limit: u32) -> Result<Vec<NotificationRow>> {
        let g = self.lock();
        let filter = if unread { "WHERE read_at IS NULL" } else { "" };
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notifications {filter} ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = st.query_map(params![limit], row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One notification.
    pub fn notification(&self, id: i64) -> Result<Option<NotificationRow>> {
        let g = self.lock();
        Ok(g.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM notifications WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?)
    }

    /// How many notifications are unread.
    pub fn unread_notifications(&self) -> Result<u64> {
        let g = self.lock();
        let n: i64 = g.conn.query_row(
            "SELECT COUNT(*) FROM notifications WHERE read_at IS NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Marks one notification read (None: every one); returns how many changed.
    pub fn mark_notifications_read(&self, id: Option<i64>) -> Result<usize> {
        let g = self.lock();
        let now = now_ms();
        Ok(match id {
            Some(id) => g.conn.execute(
                "UPDATE notifications SET read_at = ?1 WHERE id = ?2 AND read_at IS NULL",
                params![now, id],
            )?,
            None => g.conn.execute(
                "UPDATE notifications SET read_at = ?1 WHERE read_at IS NULL",
                params![now],
            )?,
        })
    }

    /// Takes a webhook's deliveries due at `now`, oldest first, at most
    /// `limit`: each is then not due again before `until`, so a node that
    /// dies sending it leaves it for a retry, and another node serving the
    /// same webhook does not send it too.
    pub fn take_deliveries(
        &self,
        webhook: &str,
        now: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let due = {
            let mut st = tx.prepare_cached(
                "SELECT webhook, notification, attempts FROM webhook_deliveries \
                 WHERE webhook = ?1 AND next_at <= ?2 ORDER BY next_at, notification LIMIT ?3",
            )?;
            let rows = st.query_map(params![webhook, now, limit], |r| {
                Ok(DeliveryRow {
                    webhook: r.get(0)?,
                    notification: r.get(1)?,
                    attempts: r.get(2)?,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        {
            let mut st = tx.prepare_cached(
                "UPDATE webhook_deliveries SET next_at = ?3 WHERE webhook = ?1 AND notification = ?2",
            )?;
            for d in &due {
                st.execute(params![webhook, d.notification, until])?;
            }
        }
        tx.commit()?;
        Ok(due)
    }

    /// When a webhook's next delivery is due, if any waits.
    pub fn next_delivery_at(&self, webhook: &str) -> Result<Option<i64>> {
        let g = self.lock();
        Ok(g.conn.query_row(
            "SELECT MIN(next_at) FROM webhook_deliveries WHERE webhook = ?1",
            params![webhook],
            |r| r.get(0),
        )?)
    }

    /// A delivery succeeded: it leaves the queue.
    pub fn delivery_done(&self, webhook: &str, notification: i64) -> Result<()> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE webhook = ?1 AND notification = ?2",
            params![webhook, notification],
        )?;
        tx.execute(
            "INSERT INTO webhook_status (webhook, last_ok) VALUES (?1, ?2) \
             ON CONFLICT (webhook) DO UPDATE SET last_ok = ?2, last_error = NULL",
            params![webhook, now_ms()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A delivery given up: it leaves the queue, and `error` says why in the
    /// webhook's status (when it last delivered stays as it was).
    pub fn delivery_dropped(&self, webhook: &str, notification: i64, error: &str) -> Result<()> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE webhook = ?1 AND notification = ?2",
            params![webhook, notification],
        )?;
        tx.execute(
            "INSERT INTO webhook_status (webhook, last_error) VALUES (?1, ?2) \
             ON CONFLICT (webhook) DO UPDATE SET last_error = ?2",
            params![webhook, error],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A delivery failed: it is tried again at `next_at`. Returns when the
    /// webhook last delivered anything, if ever.
    pub fn delivery_failed(
        &self,
        webhook: &str,
        notification: i64,
        next_at: i64,
        error: &str,
    ) -> Result<Option<i64>> {
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        tx.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = ?3, last_error = ?4 \
             WHERE webhook = ?1 AND notification = ?2",
            params![webhook, notification, next_at, error],
        )?;
        let last_ok = tx.query_row(
            "INSERT INTO webhook_status (webhook, last_error) VALUES (?1, ?2) \
             ON CONFLICT (webhook) DO UPDATE SET last_error = ?2 RETURNING last_ok",
            params![webhook, error],
            |r| r.get(0),
        )?;
        tx.commit()?;
        Ok(last_ok)
    }

    /// One webhook's queue and last results.
    pub fn webhook_stats(&self, webhook: &str) -> Result<WebhookStats> {
        let g = self.lock();
        let (pending, attempts): (i64, Option<u32>) = g.conn.query_row(
            "SELECT COUNT(*), MAX(attempts) FROM webhook_deliveries WHERE webhook = ?1",
            params![webhook],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let (last_ok, last_error) = g
            .conn
            .query_row(
                "SELECT last_ok, last_error FROM webhook_status WHERE webhook = ?1",
                params![webhook],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((None, None));
        Ok(WebhookStats {
            pending: pending as u64,
            attempts: attempts.unwrap_or(0),
            last_error,
            last_ok,
        })
    }

    /// Drops the queues of webhooks no longer configured; returns how many deliveries went.
    pub fn forget_webhooks_except(&self, keep: &[&str]) -> Result<usize> {
        let g = self.lock();
        let names: Vec<String> = {
            let mut st = g
                .conn
                .prepare("SELECT DISTINCT webhook FROM webhook_deliveries UNION SELECT webhook FROM webhook_status")?;
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let mut n = 0;
        for name in names.iter().filter(|n| !keep.contains(&n.as_str())) {
            n += g.conn.execute(
                "DELETE FROM webhook_deliveries WHERE webhook = ?1",
                params![name],
            )?;
            g.conn.execute(
                "DELETE FROM webhook_status WHERE webhook = ?1",
                params![name],
            )?;
        }
        Ok(n)
    }

    /// Drops notifications past the age limit or over the cap (see
    /// [`super::Limits::notifications_keep`]), except those a webhook has
    /// yet to take; returns how many. A webhook that has failed for longer
    /// than the age limit loses what it missed then, so a dead one cannot
    /// grow its queue without end.
    pub fn vacuum_notifications(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let mut n = self.delete_chunked(
            "webhook_deliveries",
            "notification IN (SELECT id FROM notifications WHERE ts < ?1)",
            params![cutoff],
        )?;
        let undelivered = "id NOT IN (SELECT notification FROM webhook_deliveries)";
        n += self.delete_chunked(
            "notifications",
            &format!("ts < ?1 AND {undelivered}"),
            params![cutoff],
        )?;
        for (keep, which) in over_cap(&self.limits) {
            let last_dropped: Option<i64> = self
                .lock()
                .conn
                .query_row(
                    "SELECT id FROM notifications ORDER BY id DESC LIMIT 1 OFFSET ?1",
                    params![keep],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = last_dropped {
                n += self.delete_chunked(
                    "notifications",
                    &format!("id <= ?1 AND {undelivered} AND {which}"),
                    params![id],
                )?;
            }
        }
        Ok(n)
    }
}
