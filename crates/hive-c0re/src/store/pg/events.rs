//! The `events` table on PostgreSQL. Inserts go through the events writer
//! (`group.rs`): one multi-row insert per commit, under per-agent locks so
//! that a reader tailing an agent's events by id never skips one.

use tokio::sync::oneshot;
use tokio_postgres::Row;

use super::{EVENTS_CLASS, PgStore, delete_chunked, group, vacuum_unlock, wakes};
use crate::clock::now_ms;
use crate::store::events::trim_target;
use crate::store::{EventRow, Result, StoreError, Tail};

pub(super) const COLUMNS: &str = "agent, id, ts, kind, payload_json";

/// The sum of an agent's event payload sizes, newest first, in a window
/// (`octet_length` of a stored value reads no more than its header).
const RUNNING_BYTES: &str = "SUM(octet_length(payload_json)) OVER (ORDER BY id DESC) AS total";

/// The agent's (`$1`) newest turn event, after `SELECT columns`.
const LAST_TURN: &str = "FROM events WHERE agent = $1 AND kind IN ('turn_start', 'turn_end') \
     ORDER BY id DESC LIMIT 1";

pub(super) fn row(r: &Row) -> EventRow {
    EventRow {
        agent: r.get(0),
        id: r.get(1),
        ts: r.get(2),
        kind: r.get(3),
        payload_json: r.get(4),
    }
}

impl PgStore {
    /// Appends events of one agent in one transaction; returns their ids.
    pub async fn add_events<K: AsRef<str>, P: AsRef<str>>(
        &self,
        agent: &str,
        items: &[(K, P)],
    ) -> Result<Vec<i64>> {
        if items.is_empty() {
            return Ok(vec![]);
        }
        let (reply, answer) = oneshot::channel();
        let job = group::EventJob {
            agent: agent.to_owned(),
            items: items
                .iter()
                .map(|(k, p)| (k.as_ref().to_owned(), p.as_ref().to_owned()))
                .collect(),
            reply,
        };
        self.events
            .send(job)
            .map_err(|_| StoreError::Batch("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Batch("the store's writer has stopped".into()))?
    }

    /// Events of `agent` with id > `since`, oldest first, at most `limit`.
    pub async fn events_since(&self, agent: &str, since: i64, limit: u32) -> Result<Vec<EventRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE agent = $1 AND id > $2 ORDER BY id LIMIT $3"
            ))
            .await?;
        Ok(c.query(&st, &[&agent, &since, &i64::from(limit)])
            .await?
            .iter()
            .map(row)
            .collect())
    }

    /// The `limit` events of `agent` just before id `before` (all if None), oldest first.
    pub async fn events_before(
        &self,
        agent: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE agent = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
            ))
            .await?;
        let mut v: Vec<EventRow> = c
            .query(
                &st,
                &[&agent, &before.unwrap_or(i64::MAX), &i64::from(limit)],
            )
            .await?
            .iter()
            .map(row)
            .collect();
        v.reverse();
        Ok(v)
    }

    /// Stores `turn_end` with `payload`, and the turn's `figures` in the same
    /// transaction, only while the agent's newest turn event is still the
    /// `turn_start` with id `start`; its id, or None when the turn had ended
    /// (on another node too) or another began meanwhile. Under the agent's
    /// events lock, as the events writer takes it, so of two nodes ending one
    /// turn at once the second finds it ended.
    pub async fn end_open_turn(
        &self,
        agent: &str,
        start: i64,
        payload: &str,
        figures: &[(&str, f64)],
    ) -> Result<Option<i64>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&EVENTS_CLASS, &agent],
        )
        .await?;
        // A statement of its own after the lock, so its snapshot sees what
        // the lock's last holder committed.
        let now = now_ms();
        let id: Option<i64> = tx
            .query_opt(
                &format!(
                    "INSERT INTO events (id, agent, ts, kind, payload_json) \
                     SELECT nextval(pg_get_serial_sequence('events', 'id')), $1, $2, 'turn_end', $3 \
                     WHERE (SELECT id {LAST_TURN}) = $4 RETURNING id"
                ),
                &[&agent, &now, &payload, &start],
            )
            .await?
            .map(|r| r.get(0));
        if let Some(id) = id {
            super::stats::add_stats_on(&tx, agent, now, figures).await?;
            // Other nodes' dashboards stream the agent's events (`Wake::Events`).
            tx.execute(
                &format!(
                    "SELECT pg_notify('{}', $1::text || $2 || ' ' || $3)",
                    wakes::CHANNEL
                ),
                &[&wakes::events_prefix(&self.origin), &agent, &id.to_string()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// The agent's newest `turn_start` or `turn_end`: a start means its turn is open.
    pub async fn last_turn_event(&self, agent: &str) -> Result<Option<EventRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!("SELECT {COLUMNS} {LAST_TURN}"))
            .await?;
        Ok(c.query_opt(&st, &[&agent]).await?.as_ref().map(row))
    }

    /// The newest feed events (turn starts and ends, crashes) of every agent
    /// with id < `before`, newest first. Served by the partial index
    /// `events_feed` (its WHERE is repeated here word for word).
    pub async fn feed_events_before(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<EventRow>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE kind IN ('turn_start', 'turn_end', 'container_crash') \
                 AND id < $1 ORDER BY id DESC LIMIT $2"
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

    /// Feed events that committed after tail position `after`, in commit
    /// order (the live feed's next rows).
    pub async fn feed_events_after(&self, after: i64, limit: u32) -> Result<Tail<EventRow>> {
        let feed = "kind IN ('turn_start', 'turn_end', 'container_crash') AND";
        let (got, next, pending) = self
            .tail("events", COLUMNS, feed, after, Some(limit))
            .await?;
        Ok(Tail {
            rows: got.iter().map(row).collect(),
            next,
            pending,
        })
    }

    /// Where a live tail of the feed's events starts now (`tail.rs`).
    pub async fn event_tail(&self) -> Result<i64> {
        self.tail_start().await
    }

    /// Drops the oldest events of `agent` while its payloads pass the byte budget
    /// (as the sqlite store does, `store/events.rs`).
    async fn trim_history(&self, c: &deadpool_postgres::Object, agent: &str) -> Result<usize> {
        let budget = self.limits.events_keep_bytes;
        let (through, bound) = self.history_sizes.get(agent);
        let r = c
            .query_one(
                "SELECT COALESCE(SUM(octet_length(payload_json)), 0)::BIGINT, MAX(id) FROM events \
                 WHERE agent = $1 AND id > $2",
                &[&agent, &through],
            )
            .await?;
        let (added, newest): (i64, Option<i64>) = (r.get(0), r.get(1));
        let newest = newest.unwrap_or(through);
        let bound = bound.saturating_add(added.max(0) as u64);
        if bound <= budget {
            self.history_sizes.set(agent, newest, bound);
            return Ok(0);
        }
        let target = i64::try_from(trim_target(budget)).unwrap_or(i64::MAX);
        let cut: Option<i64> = c
            .query_opt(
                &format!(
                    "SELECT id FROM (SELECT id, {RUNNING_BYTES} FROM events \
                     WHERE agent = $1 AND id <= $2) s WHERE total > $3 ORDER BY id DESC LIMIT 1"
                ),
                &[&agent, &newest, &target],
            )
            .await?
            .map(|r| r.get(0));
        let n = match cut {
            Some(id) => {
                delete_chunked(c, "events", "agent = $1 AND id <= $2", &[&agent, &id]).await?
            }
            None => 0,
        };
        // What is left through `newest` sums to the target at most.
        self.history_sizes.set(agent, newest, target as u64);
        Ok(n)
    }

    /// Drops events past the age limit or beyond the per-agent caps (a count
    /// and a size); returns how many. One node at a time.
    pub async fn vacuum_events(&self) -> Result<usize> {
        let cutoff = now_ms() - self.limits.max_age_ms;
        let keep = i64::try_from(self.limits.events_keep).unwrap_or(i64::MAX);
        let Some(client) = self.vacuum_lock().await? else {
            return Ok(0);
        };
        let c = &client;
        let result: Result<usize> = async {
            let mut n = delete_chunked(c, "events", "ts < $1", &[&cutoff]).await?;
            let agents: Vec<String> = c
                .query("SELECT DISTINCT agent FROM events", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for agent in agents {
                let last_dropped: Option<i64> = c
                    .query_opt(
                        "SELECT id FROM events WHERE agent = $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
                        &[&agent, &keep],
                    )
                    .await?
                    .map(|r| r.get(0));
                if let Some(id) = last_dropped {
                    n += delete_chunked(c, "events", "agent = $1 AND id <= $2", &[&agent, &id])
                        .await?;
                }
                n += self.trim_history(c, &agent).await?;
            }
            Ok(n)
        }
        .await;
        vacuum_unlock(client, &result).await;
        result
    }

    /// Forgets every event of a purged agent.
    pub async fn purge_events(&self, agent: &str) -> Result<usize> {
        let c = self.client().await?;
        Ok(c.execute("DELETE FROM events WHERE agent = $1", &[&agent])
            .await? as usize)
    }
}
