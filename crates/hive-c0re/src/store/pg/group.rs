//! Group commit on PostgreSQL: one writer task for sends and one for events,
//! each taking whatever is queued into one transaction with one multi-row
//! insert, and answering each caller only after the commit.
//!
//! A transaction takes two round trips, each pipelined: first BEGIN, the
//! locks (mailbox rows for sends, per-agent advisory locks for events) and
//! the ids (`nextval`, handed out in queue order); then the insert, the depth
//! update and COMMIT. A batch that failed before its COMMIT was sent (a
//! dropped connection) is run again on a fresh connection (up to three tries); one whose
//! COMMIT got no answer is reported failed, since it may have committed: a
//! caller is never told "sent" about a message that is not stored.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{mpsc, oneshot};

use super::super::messages::SendError;
use super::{EVENTS_CLASS, pool_error};
use crate::clock::now_ms;
use crate::store::{Limits, Result, StoreError};

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Tries of a batch whose connection dropped before COMMIT: after a cut,
/// the pool may hand out more than one connection that has yet to notice.
const ATTEMPTS: usize = 3;
/// Most sends one commit takes.
const MAX_SENDS: usize = 512;
/// Most event rows one commit takes (a job is never split).
const MAX_EVENT_ROWS: usize = 8192;

/// A queued send and where its answer goes.
pub(super) struct SendJob {
    pub sender: String,
    pub recipient: String,
    pub body: String,
    pub reply: oneshot::Sender<Result<i64, SendError>>,
}

/// Queued events of one agent and where their ids go.
pub(super) struct EventJob {
    pub agent: String,
    pub items: Vec<(String, String)>,
    pub reply: oneshot::Sender<Result<Vec<i64>>>,
}

/// Starts both writers; each ends when its queue's senders are gone.
pub(super) fn start(
    pool: Pool,
    limits: Arc<Limits>,
    sends: mpsc::UnboundedReceiver<SendJob>,
    events: mpsc::UnboundedReceiver<EventJob>,
) {
    tokio::spawn(send_writer(pool.clone(), limits, sends));
    tokio::spawn(event_writer(pool, events));
}

async fn send_writer(pool: Pool, limits: Arc<Limits>, mut rx: mpsc::UnboundedReceiver<SendJob>) {
    let mut batch = Vec::with_capacity(MAX_SENDS);
    while rx.recv_many(&mut batch, MAX_SENDS).await > 0 {
        let mut results = send_batch(&pool, limits.inbox_cap, &batch).await;
        for _ in 1..ATTEMPTS {
            if !worth_retrying(&results) {
                break;
            }
            results = send_batch(&pool, limits.inbox_cap, &batch).await;
        }
        match results.map_err(Failure::error) {
            Ok(results) => {
                for (job, r) in batch.drain(..).zip(results) {
                    // The caller may have gone away; its message is committed all the same.
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in batch.drain(..) {
                    let _ = job
                        .reply
                        .send(Err(SendError::Store(StoreError::Batch(msg.clone()))));
                }
            }
        }
    }
}

async fn event_writer(pool: Pool, mut rx: mpsc::UnboundedReceiver<EventJob>) {
    let mut next: Option<EventJob> = None;
    loop {
        let first = match next.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        let mut rows = first.items.len();
        let mut batch = vec![first];
        while rows < MAX_EVENT_ROWS {
            match rx.try_recv() {
                Ok(j) if rows + j.items.len() > MAX_EVENT_ROWS => {
                    next = Some(j);
                    break;
                }
                Ok(j) => {
                    rows += j.items.len();
                    batch.push(j);
                }
                Err(_) => break,
            }
        }
        let mut ids = event_batch(&pool, &batch).await;
        for _ in 1..ATTEMPTS {
            if !worth_retrying(&ids) {
                break;
            }
            ids = event_batch(&pool, &batch).await;
        }
        match ids.map_err(Failure::error) {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                for job in batch {
                    let mine: Vec<i64> = ids.by_ref().take(job.items.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in batch {
                    let _ = job.reply.send(Err(StoreError::Batch(msg.clone())));
                }
            }
        }
    }
}

/// How a batch failed: before its COMMIT was sent (nothing stored) or not.
enum Failure {
    BeforeCommit(StoreError),
    Unknown(StoreError),
}

impl Failure {
    fn error(self) -> StoreError {
        match self {
            Self::BeforeCommit(e) | Self::Unknown(e) => e,
        }
    }
}

/// True when a batch failed on a dropped connection before its COMMIT was
/// sent: nothing of it is stored, so it may run again on a fresh one.
fn worth_retrying<T>(r: &Result<T, Failure>) -> bool {
    match r {
        Err(Failure::BeforeCommit(e)) if closed(e) => {
            tracing::warn!("the database connection dropped before a commit; trying again: {e}");
            true
        }
        _ => false,
    }
}

/// True when the connection went away (closed, or the server ended the session).
fn closed(e: &StoreError) -> bool {
    use tokio_postgres::error::SqlState;
    match e {
        StoreError::Pg(e) => {
            e.is_closed()
                || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
                || e.code().is_some_and(|c| {
                    c.code().starts_with("08")
                        || [
                            SqlState::ADMIN_SHUTDOWN,
                            SqlState::CRASH_SHUTDOWN,
                            SqlState::CANNOT_CONNECT_NOW,
                        ]
                        .contains(c)
                })
        }
        _ => false,
    }
}

/// A pooled connection for a writer; a connection that failed mid-batch never goes back.
struct Conn(Option<Object>);

impl Conn {
    async fn get(pool: &Pool) -> Result<Self, Failure> {
        pool.get()
            .await
            .map(|o| Self(Some(o)))
            .map_err(|e| Failure::BeforeCommit(pool_error(e)))
    }

    fn client(&self) -> &Object {
        self.0
            .as_ref()
            .expect("a writer's connection is taken only on failure")
    }

    /// Drops the connection instead of pooling it: its transaction state is unknown.
    fn discard(&mut self) {
        if let Some(o) = self.0.take() {
            drop(Object::take(o));
        }
    }
}

/// Commits the sends that fit their recipients' caps; each result in queue order.
async fn send_batch(
    pool: &Pool,
    cap: u64,
    jobs: &[SendJob],
) -> Result<Vec<Result<i64, SendError>>, Failure> {
    let mut conn = Conn::get(pool).await?;
    let result = send_batch_on(conn.client(), cap, jobs).await;
    if result.is_err() {
        conn.discard();
    }
    result
}

async fn send_batch_on(
    c: &Object,
    cap: u64,
    jobs: &[SendJob],
) -> Result<Vec<Result<i64, SendError>>, Failure> {
    let before = Failure::BeforeCommit;
    let mut recipients: Vec<&str> = jobs.iter().map(|j| j.recipient.as_str()).collect();
    recipients.sort_unstable();
    recipients.dedup();
    let ensure = c
        .prepare_cached(
            "INSERT INTO mailboxes (recipient) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        )
        .await
        .map_err(|e| before(e.into()))?;
    // Sorted, so two nodes locking the same mailboxes cannot deadlock.
    let lock = c
        .prepare_cached(
            "SELECT recipient, depth FROM mailboxes WHERE recipient = ANY($1::text[]) ORDER BY recipient FOR UPDATE",
        )
        .await
        .map_err(|e| before(e.into()))?;
    let ids = c
        .prepare_cached("SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, $1::bigint)")
        .await
        .map_err(|e| before(e.into()))?;
    let insert = c
        .prepare_cached(
            "INSERT INTO messages (id, sender, recipient, body, created_at) \
             SELECT u.id, u.s, u.r, u.b, $5 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(id, s, r, b)",
        )
        .await
        .map_err(|e| before(e.into()))?;
    let bump = c
        .prepare_cached(
            "UPDATE mailboxes m SET depth = m.depth + u.n FROM unnest($1::text[], $2::bigint[]) AS u(r, n) WHERE m.recipient = u.r",
        )
        .await
        .map_err(|e| before(e.into()))?;

    let n = jobs.len() as i64;
    let by_recipient: [Param<'_>; 1] = [&recipients];
    let count: [Param<'_>; 1] = [&n];
    let (_, _, depth_rows, id_rows) = futures::try_join!(
        c.batch_execute("BEGIN"),
        c.execute(&ensure, &by_recipient),
        c.query(&lock, &by_recipient),
        c.query(&ids, &count),
    )
    .map_err(|e| before(e.into()))?;
    let depth: HashMap<String, u64> = depth_rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
        .collect();
    let mut fresh: Vec<i64> = id_rows.iter().map(|r| r.get(0)).collect();
    fresh.sort_unstable();
    let mut fresh = fresh.into_iter();

    let mut out = Vec::with_capacity(jobs.len());
    let mut added: BTreeMap<&str, i64> = BTreeMap::new();
    let (mut ids, mut senders, mut rcpts, mut bodies) = (vec![], vec![], vec![], vec![]);
    for j in jobs {
        let r = j.recipient.as_str();
        let now_depth =
            depth.get(r).copied().unwrap_or(0) + added.get(r).copied().unwrap_or(0) as u64;
        if now_depth >= cap {
            out.push(Err(SendError::InboxFull {
                recipient: r.to_owned(),
                cap,
            }));
            continue;
        }
        let id = fresh.next().expect("one id per queued send");
        ids.push(id);
        senders.push(j.sender.as_str());
        rcpts.push(r);
        bodies.push(j.body.as_str());
        *added.entry(r).or_default() += 1;
        out.push(Ok(id));
    }
    let (bump_r, bump_n): (Vec<&str>, Vec<i64>) = added.into_iter().unzip();
    if ids.is_empty() {
        c.batch_execute("COMMIT")
            .await
            .map_err(|e| before(e.into()))?;
        return Ok(out);
    }
    let now = now_ms();
    let rows: [Param<'_>; 5] = [&ids, &senders, &rcpts, &bodies, &now];
    let depths: [Param<'_>; 2] = [&bump_r, &bump_n];
    futures::try_join!(
        c.execute(&insert, &rows),
        c.execute(&bump, &depths),
        c.batch_execute("COMMIT"),
    )
    .map_err(|e| Failure::Unknown(e.into()))?;
    Ok(out)
}

/// Commits the events of every job, agents locked in a fixed order; ids in queue order.
async fn event_batch(pool: &Pool, jobs: &[EventJob]) -> Result<Vec<i64>, Failure> {
    let mut conn = Conn::get(pool).await?;
    let result = event_batch_on(conn.client(), jobs).await;
    if result.is_err() {
        conn.discard();
    }
    result
}

async fn event_batch_on(c: &Object, jobs: &[EventJob]) -> Result<Vec<i64>, Failure> {
    let before = Failure::BeforeCommit;
    let mut agents: Vec<&str> = jobs.iter().map(|j| j.agent.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    // Locked in hash order, the order every node uses, so two nodes cannot deadlock.
    let lock = c
        .prepare_cached(
            "SELECT pg_advisory_xact_lock($1, h) FROM \
             (SELECT DISTINCT hashtext(a) AS h FROM unnest($2::text[]) AS a ORDER BY h) AS l",
        )
        .await
        .map_err(|e| before(e.into()))?;
    let ids = c
        .prepare_cached("SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, $1::bigint)")
        .await
        .map_err(|e| before(e.into()))?;
    let insert = c
        .prepare_cached(
            "INSERT INTO events (id, agent, ts, kind, payload_json) \
             SELECT u.id, u.a, $4, u.k, u.p FROM unnest($1::bigint[], $2::text[], $3::text[], $5::text[]) AS u(id, a, k, p)",
        )
        .await
        .map_err(|e| before(e.into()))?;
    let n: i64 = jobs.iter().map(|j| j.items.len() as i64).sum();
    let locks: [Param<'_>; 2] = [&EVENTS_CLASS, &agents];
    let count: [Param<'_>; 1] = [&n];
    let (_, _, id_rows) = futures::try_join!(
        c.batch_execute("BEGIN"),
        c.query(&lock, &locks),
        c.query(&ids, &count),
    )
    .map_err(|e| before(e.into()))?;
    let mut fresh: Vec<i64> = id_rows.iter().map(|r| r.get(0)).collect();
    fresh.sort_unstable();
    let mut owners = Vec::with_capacity(fresh.len());
    let mut kinds = Vec::with_capacity(fresh.len());
    let mut payloads = Vec::with_capacity(fresh.len());
    for j in jobs {
        for (k, p) in &j.items {
            owners.push(j.agent.as_str());
            kinds.push(k.as_str());
            payloads.push(p.as_str());
        }
    }
    let now = now_ms();
    let rows: [Param<'_>; 5] = [&fresh, &owners, &kinds, &now, &payloads];
    futures::try_join!(c.execute(&insert, &rows), c.batch_execute("COMMIT"))
        .map_err(|e| Failure::Unknown(e.into()))?;
    Ok(fresh)
}
