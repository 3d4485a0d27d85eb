//! The operator's notifications and the webhook queue on PostgreSQL, as in
//! `store/notifications.rs`. A notification and its deliveries are written
//! in one statement, so a stored notification is always queued for every
//! webhook that wants it.

use tokio_postgres::Row;

use super::wakes::{CHANNEL, notifications_payload};
use super::{PgStore, count, delete_chunked, vacuum_unlock};
use crate::clock::now_ms;
use crate::store::notifications::over_cap;
use crate::store::{DeliveryRow, NotificationRow, Result, WebhookStats};

const COLUMNS: &str = "id, ts, kind, agent, text, link, read_at IS NOT NULL";

fn row(r: &Row) -> NotificationRow {
    NotificationRow {
        id: r.get(0),
        ts: r.get(1),
        kind: r.get(2),
        agent: r.get(3),
        text: r.get(4),
        link: r.get(5),
        read: r.get(6),
    }
}

/// An attempt count as the sqlite store returns it.
fn attempts(n: i32) -> u32 {
    n.max(0) as u32
}

impl PgStore {
    /// Stores a notification and queues it for each of `webhooks`; returns it.
    pub async fn add_notification(
        &self,
        kind: &str,
        agent: Option<&str>,
        text: &str,
        link: &str,
        webhooks: &[&str],
    ) -> Result<NotificationRow> {
        let c = self.client().await?;
        let ts = now_ms();
        // Every node's operator surfaces show it (`Wake::Notifications`).
        let wake = notifications_payload(&self.origin);
        let st = c
            .prepare_cached(&format!(
                "WITH n AS (INSERT INTO notifications (ts, kind, agent, text, link) \
                   VALUES ($1, $2, $3, $4, $5) RETURNING id), \
                 d AS (INSERT INTO webhook_deliveries (webhook, notification, next_at) \
                   SELECT w, n.id, $1 FROM n, unnest($6::text[]) AS w) \
                 SELECT id, pg_notify('{CHANNEL}', $7)::text FROM n"
            ))
            .await?;
        let id: i64 = c
            .query_one(&st, &[&ts, &kind, &agent, &text, &link, &webhooks, &wake])
            .await?
            .get(0);
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
    pub async fn notifications(&self, unread: bool, limit: u32) -> Result<Vec<NotificationRow>> {
        let c = self.client().await?;
        let filter = if unread { "WHERE read_at IS NULL" } else { "" };
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM notifications {filter} ORDER BY id DESC LIMIT $1"
            ))
            .await?;
        Ok(c.query(&st, &[&i64::from(limit)])
            .await?
            .iter()
            .map(row)
            .collect())
    }

    /// One notification.
    pub async fn notification(&self, id: i64) -> Result<Option<NotificationRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM notifications WHERE id = $1"
            ))
            .await?;
        Ok(c.query_opt(&st, &[&id]).await?.as_ref().map(row))
    }

    /// How many notifications are unread.
    pub async fn unread_notifications(&self) -> Result<u64> {
        let c = self.client().await?;
        Ok(count(
            c.query_one(
                "SELECT count(*) FROM notifications WHERE read_at IS NULL",
                &[],
            )
            .await?
            .get(0),
        ))
    }

    /// Marks one notification read (None: every one); returns how many changed.
    pub async fn mark_notifications_read(&self, id: Option<i64>) -> Result<usize> {
        let c = self.client().await?;
        let now = now_ms();
        let wake = notifications_payload(&self.origin);
        // `id IS NULL` reads every unread one; a change wakes the other nodes.
        let st = c
            .prepare_cached(&format!(
                "WITH u AS (UPDATE notifications SET read_at = $1 \
                   WHERE read_at IS NULL AND ($2::bigint IS NULL OR id = $2) RETURNING 1) \
                 SELECT n, CASE WHEN n > 0 THEN pg_notify('{CHANNEL}', $3) END::text \
                 FROM (SELECT count(*) AS n FROM u) AS c"
            ))
            .await?;
        let n: i64 = c.query_one(&st, &[&now, &id, &wake]).await?.get(0);
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Takes a webhook's deliveries due at `now`, oldest first, at most
    /// `limit`: each is then not due again before `until` (see the sqlite
    /// store). Rows another node is taking at the same moment are skipped,
    /// and one it took meanwhile is no longer due when rechecked.
    pub async fn take_deliveries(
        &self,
        webhook: &str,
        now: i64,
        until: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "WITH due AS (SELECT notification, next_at FROM webhook_deliveries \
                 WHERE webhook = $1 AND next_at <= $2 ORDER BY next_at, notification LIMIT $3 \
                 FOR UPDATE SKIP LOCKED) \
                 UPDATE webhook_deliveries w SET next_at = $4 FROM due \
                 WHERE w.webhook = $1 AND w.notification = due.notification \
                 RETURNING w.webhook, w.notification, w.attempts, due.next_at",
            )
            .await?;
        let mut due: Vec<(i64, DeliveryRow)> = c
            .query(&st, &[&webhook, &now, &i64::from(limit), &until])
            .await?
            .iter()
            .map(|r| {
                (
                    r.get(3),
                    DeliveryRow {
                        webhook: r.get(0),
                        notification: r.get(1),
                        attempts: attempts(r.get(2)),
                    },
                )
            })
            .collect();
        // RETURNING keeps no order: oldest first again, as the sqlite store answers.
        due.sort_by_key(|(next_at, d)| (*next_at, d.notification));
        Ok(due.into_iter().map(|(_, d)| d).collect())
    }

    /// When a webhook's next delivery is due, if any waits.
    pub async fn next_delivery_at(&self, webhook: &str) -> Result<Option<i64>> {
        let c = self.client().await?;
        Ok(c.query_one(
            "SELECT MIN(next_at) FROM webhook_deliveries WHERE webhook = $1",
            &[&webhook],
        )
        .await?
        .get(0))
    }

    /// A delivery succeeded: it leaves the queue.
    pub async fn delivery_done(&self, webhook: &str, notification: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "WITH d AS (DELETE FROM webhook_deliveries WHERE webhook = $1 AND notification = $2) \
             INSERT INTO webhook_status (webhook, last_ok) VALUES ($1, $3) \
             ON CONFLICT (webhook) DO UPDATE SET last_ok = $3, last_error = NULL",
            &[&webhook, &notification, &now_ms()],
        )
        .await?;
        Ok(())
    }

    /// A delivery given up: it leaves the queue, and `error` says why.
    pub async fn delivery_dropped(
        &self,
        webhook: &str,
        notification: i64,
        error: &str,
    ) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "WITH d AS (DELETE FROM webhook_deliveries WHERE webhook = $1 AND notification = $2) \
             INSERT INTO webhook_status (webhook, last_error) VALUES ($1, $3) \
             ON CONFLICT (webhook) DO UPDATE SET last_error = $3",
            &[&webhook, &notification, &error],
        )
        .await?;
        Ok(())
    }

    /// A delivery failed: it is tried again at `next_at`.
    pub async fn delivery_failed(
        &self,
        webhook: &str,
        notification: i64,
        next_at: i64,
        error: &str,
    ) -> Result<Option<i64>> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "WITH d AS (UPDATE webhook_deliveries SET attempts = attempts + 1, next_at = $3, last_error = $4 \
                   WHERE webhook = $1 AND notification = $2) \
                 INSERT INTO webhook_status (webhook, last_error) VALUES ($1, $4) \
                 ON CONFLICT (webhook) DO UPDATE SET last_error = $4 RETURNING last_ok",
                &[&webhook, &notification, &next_at, &error],
            )
            .await?;
        Ok(r.get(0))
    }

    /// One webhook's queue and last results.
    pub async fn webhook_stats(&self, webhook: &str) -> Result<WebhookStats> {
        let c = self.client().await?;
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM webhook_deliveries WHERE webhook = $1), \
                        (SELECT MAX(attempts) FROM webhook_deliveries WHERE webhook = $1), \
                        s.last_ok, s.last_error \
                 FROM (SELECT 1) AS one LEFT JOIN webhook_status s ON s.webhook = $1",
                &[&webhook],
            )
            .await?;
        Ok(WebhookStats {
            pending: count(r.get(0)),
            attempts: r.get::<_, Option<i32>>(1).map_or(0, attempts),
            last_ok: r.get(2),
            last_error: r.get(3),
        })
    }

    /// Drops the queues of webhooks no longer configured; returns how many deliveries went.
    pub async fn forget_webhooks_except(&self, keep: &[&str]) -> Result<usize> {
        let c = self.client().await?;
        let n: i64 = c
            .query_one(
                "WITH d AS (DELETE FROM webhook_deliveries WHERE NOT (webhook = ANY($1)) RETURNING 1), \
                 s AS (DELETE FROM webhook_status WHERE NOT (webhook = ANY($1))) \
                 SELECT count(*) FROM d",
                &[&keep],
            )
            .await?
            .get(0);
        Ok(n as usize)
    }

    /// Drops notifications past the age limit or over the cap (the read
    /// ones and those an agent caused first, as in the sqlite store), except
    /// those a webhook has yet to take; returns how many. A webhook that has failed for longer than the age limit
    /// loses what it missed then. One node at a time.
    pub async fn vacuum_notifications(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let Some(client) = self.vacuum_lock().await? else {
            return Ok(0);
        };
        let c = &client;
        let result: Result<usize> = async {
            let mut n = delete_chunked(
                c,
                "webhook_deliveries",
                "notification IN (SELECT id FROM notifications WHERE ts < $1)",
                &[&cutoff],
            )
            .await?;
            let undelivered = "id NOT IN (SELECT notification FROM webhook_deliveries)";
            n += delete_chunked(
                c,
                "notifications",
                &format!("ts < $1 AND {undelivered}"),
                &[&cutoff],
            )
            .await?;
            for (keep, which) in over_cap(&self.limits) {
                let last_dropped: Option<i64> = c
                    .query_opt(
                        "SELECT id FROM notifications ORDER BY id DESC LIMIT 1 OFFSET $1",
                        &[&keep],
                    )
                    .await?
                    .map(|r| r.get(0));
                if let Some(id) = last_dropped {
                    n += delete_chunked(
                        c,
                        "notifications",
                        &format!("id <= $1 AND {undelivered} AND {which}"),
                        &[&id],
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
}
