//! Group commit on PostgreSQL: writer tasks for sends and for events, each
//! taking whatever is queued into one transaction with one multi-row insert,
//! and answering each caller only after the commit. Sends have one writer
//! (they meet on mailbox locks anyway); a few event writers run at once, so
//! one batch is formed while another waits for its commit.
//!
//! **Sends** take one round trip: BEGIN, the mailbox rows locked, the insert
//! (cap checked against the locked depths) and COMMIT go out pipelined. Their
//! ids come from a reserve the node takes from the sequence ahead of time,
//! so a batch is known by its ids: when the connection drops, the batch runs
//! again with the same ids on a fresh connection. The retry takes the same
//! mailbox locks, so it runs only after the first try has committed or
//! rolled back, and it reports ids already stored as sent instead of
//! inserting them again. A caller told "sent" always has its message
//! stored, exactly once. The batch's transaction also notifies one wake per
//! recipient it stored for (`wakes.rs`), so other nodes hear of it on commit
//! and never of a batch that rolled back. A send's note (an event of its
//! recipient, `SendNote`) goes into the same statement as the message, for
//! only the messages that statement inserted, under the recipient's events
//! lock: stored with its message, once, whatever a retry finds.
//!
//! **Events** take two round trips: BEGIN, the per-agent advisory locks and
//! the ids (`nextval` under the locks, so an agent's ids grow in commit
//! order hive-wide); then the insert and COMMIT. A batch that failed before
//! its COMMIT was sent runs again on a fresh connection; one whose COMMIT got
//! no answer is reported failed (it may have committed).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use deadpool_postgres::{Object, Pool};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::super::messages::{SendError, SendNote, Sent};
use super::{EVENTS_CLASS, pool_error};
use crate::clock::now_ms;
use crate::panics::{Faults, keep_running};
use crate::store::{Limits, Result, StoreError};

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Send writers: one. Sends to one mailbox serialize on its row lock (the
/// cap's count), so more writers only split the waiting sends into smaller
/// commits queued behind each other's locks: with three, 8 host.sock clients
/// to the operator made 1.45 sends a commit and 1,188-1,595/s; with one,
/// about 6 and 2,900-3,870/s (alternating runs on one machine).
const SEND_WRITERS: usize = 1;
/// Event writers working at once (events take no shared lock).
const EVENT_WRITERS: usize = 3;
/// Tries of a batch whose connection dropped: after a cut, the pool may hand
/// out more than one connection that has yet to notice.
const ATTEMPTS: usize = 3;
/// Most sends one commit takes.
const MAX_SENDS: usize = 512;
/// Message ids taken from the sequence at a time.
const ID_RESERVE: i64 = 1024;
/// Most event rows one commit takes (a job is never split).
const MAX_EVENT_ROWS: usize = 8192;

/// A body (a send's) or an agent (an event's) that makes its writer panic:
/// how the tests make one panic. Only in test builds.
#[cfg(test)]
pub(in crate::store) const PANICS_A_WRITER: &str = "this makes the writer panic";

/// The payload prefixes of this store's wakes: a mailbox's, an agent's events'.
struct Prefixes {
    mailbox: String,
    events: String,
}

/// A queued send and where its answer goes.
pub(super) struct SendJob {
    pub sender: String,
    pub recipient: String,
    pub body: String,
    /// The id an earlier try of this send went under, when that try's commit
    /// is in doubt; a fresh one from the reserve when None.
    pub id: Option<i64>,
    /// The event the recipient's history takes with the message, in its transaction.
    pub note: Option<SendNote>,
    pub reply: oneshot::Sender<SendReply>,
}

/// A send's answer, with the id it went under when it failed for the
/// database out of reach after ids were given: that try may have committed.
pub(super) struct SendReply {
    pub result: Result<Sent, SendError>,
    pub tried: Option<i64>,
}

/// Queued events of one agent and where their ids go.
pub(super) struct EventJob {
    pub agent: String,
    pub items: Vec<(String, String)>,
    pub reply: oneshot::Sender<Result<Vec<i64>>>,
}

/// Starts the writers; they end when their queue's senders are gone. One
/// that panics is told to `faults` and started again after a pause (see
/// `panics.rs`): its queue stays, and the callers of the batch it held are
/// answered that the writer stopped, as for a dropped connection.
pub(super) fn start(
    pool: Pool,
    limits: Arc<Limits>,
    origin: Arc<str>,
    sends: mpsc::UnboundedReceiver<SendJob>,
    events: mpsc::UnboundedReceiver<EventJob>,
    faults: &Faults,
) {
    let prefixes = Arc::new(Prefixes {
        mailbox: super::wakes::mailbox_prefix(&origin),
        events: super::wakes::events_prefix(&origin),
    });
    let sends = Arc::new(Mutex::new(sends));
    let events = Arc::new(Mutex::new(EventQueue {
        rx: events,
        next: None,
    }));
    let ids = Arc::new(Mutex::new(VecDeque::new()));
    for _ in 0..SEND_WRITERS {
        let (pool, limits, prefixes, sends, ids) = (
            pool.clone(),
            limits.clone(),
            prefixes.clone(),
            sends.clone(),
            ids.clone(),
        );
        let faults = faults.clone();
        tokio::spawn(async move {
            keep_running(&faults, "store send writer", None, None, || {
                send_writer(
                    pool.clone(),
                    limits.clone(),
                    prefixes.clone(),
                    sends.clone(),
                    ids.clone(),
                )
            })
            .await
        });
    }
    for _ in 0..EVENT_WRITERS {
        let (pool, prefixes, events) = (pool.clone(), prefixes.clone(), events.clone());
        let faults = faults.clone();
        tokio::spawn(async move {
            keep_running(&faults, "store event writer", None, None, || {
                event_writer(pool.clone(), prefixes.clone(), events.clone())
            })
            .await
        });
    }
}

// ---- sends --------------------------------------------------------------

async fn send_writer(
    pool: Pool,
    limits: Arc<Limits>,
    prefixes: Arc<Prefixes>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<SendJob>>>,
    reserve: Arc<Mutex<VecDeque<i64>>>,
) {
    let mut batch = Vec::with_capacity(MAX_SENDS);
    loop {
        if queue.lock().await.recv_many(&mut batch, MAX_SENDS).await == 0 {
            return;
        }
        #[cfg(test)]
        assert!(!batch.iter().any(|j| j.body == PANICS_A_WRITER));
        let ids = match batch_ids(&pool, &reserve, &batch).await {
            Ok(ids) => ids,
            Err(e) => {
                fail_batch(&mut batch, &e, None);
                continue;
            }
        };
        match send_with_retries(&pool, &limits, &prefixes, &batch, &ids).await {
            Ok(results) => {
                for (job, result) in batch.drain(..).zip(results) {
                    // The caller may have gone away; its message is committed all the same.
                    let _ = job.reply.send(SendReply {
                        result,
                        tried: None,
                    });
                }
            }
            Err(e) => fail_batch(&mut batch, &e, Some(&ids)),
        }
    }
}

/// Answers every job of a batch that failed with `e`; with the `ids` it went
/// under, a failure for the database out of reach leaves each in doubt.
fn fail_batch(batch: &mut Vec<SendJob>, e: &StoreError, ids: Option<&[i64]>) {
    let in_doubt = ids.filter(|_| e.is_unreachable());
    for (i, job) in batch.drain(..).enumerate() {
        let _ = job.reply.send(SendReply {
            result: Err(SendError::Store(for_each_caller(e))),
            tried: in_doubt.map(|ids| ids[i]),
        });
    }
}

/// The batch's ids in queue order: each job's own, else fresh from the reserve.
async fn batch_ids(
    pool: &Pool,
    reserve: &Mutex<VecDeque<i64>>,
    jobs: &[SendJob],
) -> Result<Vec<i64>> {
    let wanted = jobs.iter().filter(|j| j.id.is_none()).count();
    let mut attempt = 1;
    let fresh = loop {
        match take_ids(pool, reserve, wanted).await {
            Err(e) if attempt < ATTEMPTS && e.is_unreachable() => attempt += 1,
            other => break other?,
        }
    };
    let mut fresh = fresh.into_iter();
    Ok(jobs
        .iter()
        .map(|j| {
            j.id.or_else(|| fresh.next())
                .expect("one fresh id per job without one")
        })
        .collect())
}

/// `n` fresh message ids, ascending, from the node's reserve (refilled from the sequence).
async fn take_ids(pool: &Pool, reserve: &Mutex<VecDeque<i64>>, n: usize) -> Result<Vec<i64>> {
    let mut r = reserve.lock().await;
    if r.len() < n {
        let c = pool.get().await.map_err(pool_error)?;
        let st = c
            .prepare_cached(
                "SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, $1::bigint)",
            )
            .await?;
        let want = ID_RESERVE.max(n as i64);
        let mut fresh: Vec<i64> = c
            .query(&st, &[&want])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        fresh.sort_unstable();
        r.extend(fresh);
    }
    Ok(r.drain(..n).collect())
}

async fn send_with_retries(
    pool: &Pool,
    limits: &Limits,
    prefixes: &Prefixes,
    jobs: &[SendJob],
    ids: &[i64],
) -> Result<Vec<Result<Sent, SendError>>> {
    let mut attempt = 1;
    loop {
        match send_batch(pool, limits, prefixes, jobs, ids).await {
            // The same ids make a second try safe whatever became of the first.
            Err(e) if attempt < ATTEMPTS && e.is_unreachable() => {
                tracing::warn!("the database connection dropped during a send; trying again: {e}");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Commits the sends that fit their recipients' caps; each result in queue order.
async fn send_batch(
    pool: &Pool,
    limits: &Limits,
    prefixes: &Prefixes,
    jobs: &[SendJob],
    ids: &[i64],
) -> Result<Vec<Result<Sent, SendError>>> {
    let mut conn = Conn::get(pool).await?;
    let result = send_batch_on(conn.client(), limits, prefixes, jobs, ids).await;
    if result.is_err() {
        conn.discard();
    }
    result
}

async fn send_batch_on(
    c: &Object,
    limits: &Limits,
    prefixes: &Prefixes,
    jobs: &[SendJob],
    ids: &[i64],
) -> Result<Vec<Result<Sent, SendError>>> {
    let mut recipients: Vec<&str> = jobs.iter().map(|j| j.recipient.as_str()).collect();
    recipients.sort_unstable();
    recipients.dedup();
    // Made where missing and locked, in one statement: `DO UPDATE` locks
    // the rows it finds, a new row is the batch's own until it commits.
    // Sorted, so two nodes locking the same mailboxes cannot deadlock. This
    // waits for any other transaction on them, an earlier try of this batch too.
    let lock = c
        .prepare_cached(
            "INSERT INTO mailboxes AS m (recipient) SELECT r FROM unnest($1::text[]) AS r ORDER BY r \
             ON CONFLICT (recipient) DO UPDATE SET depth = m.depth",
        )
        .await?;
    let any_noted = jobs.iter().any(|j| j.note.is_some());
    let insert = c.prepare_cached(&insert_sql(any_noted)).await?;
    // A note's event goes in under its agent's events lock, as the events
    // writer's do: taken after the mailboxes' (nothing takes them the other
    // way round), and only when the batch has a note.
    let mut noted: Vec<&str> = jobs
        .iter()
        .filter(|j| j.note.is_some())
        .map(|j| j.recipient.as_str())
        .collect();
    noted.sort_unstable();
    noted.dedup();
    let lock_agents = c.prepare_cached(LOCK_AGENTS).await?;
    let (note_ids, note_kinds, note_payloads) = notes_of(jobs, ids);
    let senders: Vec<&str> = jobs.iter().map(|j| j.sender.as_str()).collect();
    let rcpts: Vec<&str> = jobs.iter().map(|j| j.recipient.as_str()).collect();
    let bodies: Vec<&str> = jobs.iter().map(|j| j.body.as_str()).collect();
    let now = now_ms();
    let cap = i64::try_from(limits.inbox_cap).unwrap_or(i64::MAX);
    let by_recipient: [Param<'_>; 1] = [&recipients];
    let rows: [Param<'_>; 11] = [
        &ids,
        &senders,
        &rcpts,
        &bodies,
        &now,
        &cap,
        &&*prefixes.mailbox,
        &note_ids,
        &note_kinds,
        &note_payloads,
        &&*prefixes.events,
    ];
    let locks: [Param<'_>; 2] = [&EVENTS_CLASS, &noted];
    let lock_noted = async {
        if any_noted {
            c.execute(&lock_agents, &locks).await
        } else {
            Ok(0)
        }
    };
    // A send alone (no note) runs the insert's generic plan: the planner
    // prices a one-row batch's own plan below it and would plan the
    // statement anew, about 0.45 ms, for 0.13 ms of work. Batches of more,
    // and noted ones, keep the planner's choice: forcing the generic plan
    // on them was measured slower once and no faster since.
    let begin = if jobs.len() == 1 && !any_noted {
        "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan"
    } else {
        "BEGIN"
    };
    // One round trip: the requests go out before any answer is read.
    let (_, _, _, stored, _) = futures::try_join!(
        c.batch_execute(begin),
        c.execute(&lock, &by_recipient),
        lock_noted,
        c.query(&insert, if any_noted { &rows[..] } else { &rows[..7] }),
        c.batch_execute("COMMIT"),
    )?;
    let stored: HashMap<i64, (Option<i64>, Option<i64>)> = stored
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    Ok(jobs
        .iter()
        .zip(ids)
        .map(|(j, id)| {
            if let Some(&(event, depth)) = stored.get(id) {
                Ok(Sent {
                    id: *id,
                    event,
                    depth: depth.map(|d| d as u64),
                })
            } else {
                Err(SendError::InboxFull {
                    recipient: j.recipient.clone(),
                    cap: limits.inbox_limit(&j.sender),
                })
            }
        })
        .collect())
}

/// The send batch's insert. A statement of its own after the locks, so its
/// snapshot sees what the holders committed: ids already stored (by an
/// earlier try) are sent, the rest go in up to each mailbox's cap, in queue
/// order. Rows: each id with its note's event id and the recipient's depth
/// (both NULL for one stored before). With `notes`, each message this
/// statement inserted that has a note (`$8`-`$10`) gets its event; a batch
/// without one keeps the shorter statement, as plain sends are most.
///
/// The batch's wakes (`wakes.rs`) are sent by the statement too, so they
/// cost no statement of their own: one per mailbox that holds a message of
/// the batch (stored by this try or an earlier one; none for a refused
/// send, prefix `$7`), and with `notes` one per agent whose history took a
/// note, naming its newest event (prefix `$11`; the newest because ids are
/// taken under the agent's events lock). `wakes` is materialized (it calls
/// a volatile function) and counted by the result, so it runs, once.
fn insert_sql(notes: bool) -> String {
    let channel = super::wakes::CHANNEL;
    // The limit each sender meets, as `Limits::inbox_limit` says.
    let [operator, system] = hive_sh4re::name::RESERVED;
    let (noted, event, event_wakes) = if notes {
        (
            ", noted AS (SELECT i.id AS mid, i.recipient AS a, n.k, n.p, \
                 nextval(pg_get_serial_sequence('events', 'id')) AS id \
                 FROM unnest($8::bigint[], $9::text[], $10::text[]) AS n(mid, k, p) \
                 JOIN ins i ON i.id = n.mid ORDER BY i.id), \
             evs AS (INSERT INTO events (id, agent, ts, kind, payload_json) \
                 SELECT id, a, $5, k, p FROM noted)",
            "(SELECT n.id FROM noted n WHERE n.mid = i.id)",
            format!(
                " UNION ALL SELECT pg_notify('{channel}', $11::text || a || ' ' || max(id)) \
                 FROM noted GROUP BY a"
            ),
        )
    } else {
        ("", "NULL::bigint", String::new())
    };
    format!(
        "WITH input AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) \
             WITH ORDINALITY AS u(id, s, r, b, o)), \
         stored AS (SELECT id, recipient FROM messages WHERE id = ANY($1::bigint[])), \
         ranked AS (SELECT i.id, i.s, i.r, i.b, \
             COALESCE(m.depth, 0) + row_number() OVER (PARTITION BY i.r ORDER BY i.o) AS place \
             FROM input i LEFT JOIN mailboxes m ON m.recipient = i.r \
             WHERE i.id NOT IN (SELECT id FROM stored)), \
         ins AS (INSERT INTO messages (id, sender, recipient, body, created_at) \
             SELECT id, s, r, b, $5 FROM ranked \
             WHERE place <= CASE WHEN s IN ('{operator}', '{system}') THEN $6::bigint \
                 ELSE $6::bigint - $6::bigint / 10 END ORDER BY id \
             ON CONFLICT (id) DO NOTHING RETURNING id, recipient), \
         bump AS (UPDATE mailboxes m SET depth = m.depth + c.n \
             FROM (SELECT recipient, count(*) AS n FROM ins GROUP BY recipient) AS c \
             WHERE m.recipient = c.recipient RETURNING m.recipient, m.depth){noted}, \
         wakes AS MATERIALIZED (SELECT pg_notify('{channel}', $7::text || r) FROM \
             (SELECT recipient AS r FROM stored UNION SELECT recipient FROM ins) AS d{event_wakes}), \
         answer AS (SELECT id, NULL::bigint AS event, NULL::bigint AS depth FROM stored \
             UNION ALL SELECT i.id, {event}, b.depth FROM ins i JOIN bump b ON b.recipient = i.recipient) \
         SELECT a.* FROM answer a, (SELECT count(*) FROM wakes) AS w"
    )
}

/// The notes of a batch: each noted job's message id, event kind and payload.
fn notes_of<'a>(jobs: &'a [SendJob], ids: &[i64]) -> (Vec<i64>, Vec<&'a str>, Vec<String>) {
    let mut out = (vec![], vec![], vec![]);
    for (j, &id) in jobs.iter().zip(ids) {
        if let Some(n) = &j.note {
            out.0.push(id);
            out.1.push(n.kind.as_str());
            out.2.push((n.payload)(id));
        }
    }
    out
}

// ---- events -------------------------------------------------------------

/// Takes the events lock of each agent in `$2` (class `$1`), in hash order,
/// the order every writer uses, so two cannot deadlock.
const LOCK_AGENTS: &str = "SELECT pg_advisory_xact_lock($1, h) FROM \
     (SELECT DISTINCT hashtext(a) AS h FROM unnest($2::text[]) AS a ORDER BY h) AS l";

/// The events queue, with a job taken that did not fit the last batch.
struct EventQueue {
    rx: mpsc::UnboundedReceiver<EventJob>,
    next: Option<EventJob>,
}

impl EventQueue {
    /// Waits for a job, then takes whatever else is queued, up to `MAX_EVENT_ROWS` rows.
    async fn batch(&mut self) -> Option<Vec<EventJob>> {
        let first = match self.next.take() {
            Some(j) => j,
            None => self.rx.recv().await?,
        };
        let mut rows = first.items.len();
        let mut batch = vec![first];
        while rows < MAX_EVENT_ROWS {
            match self.rx.try_recv() {
                Ok(j) if rows + j.items.len() > MAX_EVENT_ROWS => {
                    self.next = Some(j);
                    break;
                }
                Ok(j) => {
                    rows += j.items.len();
                    batch.push(j);
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }
}

async fn event_writer(pool: Pool, prefixes: Arc<Prefixes>, queue: Arc<Mutex<EventQueue>>) {
    loop {
        let Some(batch) = queue.lock().await.batch().await else {
            return;
        };
        #[cfg(test)]
        assert!(!batch.iter().any(|j| j.agent == PANICS_A_WRITER));
        let mut attempt = 1;
        let ids = loop {
            match event_batch(&pool, &prefixes.events, &batch).await {
                Err(Failure::BeforeCommit(e)) if attempt < ATTEMPTS && e.is_unreachable() => {
                    tracing::warn!(
                        "the database connection dropped before a commit; trying again: {e}"
                    );
                    attempt += 1;
                }
                other => break other.map_err(Failure::error),
            }
        };
        match ids {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                for job in batch {
                    let mine: Vec<i64> = ids.by_ref().take(job.items.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(for_each_caller(&e)));
                }
            }
        }
    }
}

/// How an event batch failed: before its COMMIT was sent (nothing stored) or not.
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

/// Commits the events of every job, agents locked in a fixed order; ids in queue order.
async fn event_batch(
    pool: &Pool,
    wake_prefix: &str,
    jobs: &[EventJob],
) -> Result<Vec<i64>, Failure> {
    let mut conn = Conn::get(pool).await.map_err(Failure::BeforeCommit)?;
    let result = event_batch_on(conn.client(), wake_prefix, jobs).await;
    if result.is_err() {
        conn.discard();
    }
    result
}

async fn event_batch_on(
    c: &Object,
    wake_prefix: &str,
    jobs: &[EventJob],
) -> Result<Vec<i64>, Failure> {
    let before = |e: tokio_postgres::Error| Failure::BeforeCommit(e.into());
    let mut agents: Vec<&str> = jobs.iter().map(|j| j.agent.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    let lock = c.prepare_cached(LOCK_AGENTS).await.map_err(before)?;
    let ids = c
        .prepare_cached(
            "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, $1::bigint)",
        )
        .await
        .map_err(before)?;
    let insert = c
        .prepare_cached(
            "INSERT INTO events (id, agent, ts, kind, payload_json) \
             SELECT u.id, u.a, $4, u.k, u.p FROM unnest($1::bigint[], $2::text[], $3::text[], $5::text[]) AS u(id, a, k, p)",
        )
        .await
        .map_err(before)?;
    // One wake per agent of the batch, with its newest id: other nodes'
    // dashboards stream what their operators watch (`Wake::Events`).
    let wake = c
        .prepare_cached(&format!(
            "SELECT pg_notify('{}', $1::text || a || ' ' || max(id)) \
             FROM unnest($2::text[], $3::bigint[]) AS u(a, id) GROUP BY a",
            super::wakes::CHANNEL
        ))
        .await
        .map_err(before)?;
    let n: i64 = jobs.iter().map(|j| j.items.len() as i64).sum();
    let locks: [Param<'_>; 2] = [&EVENTS_CLASS, &agents];
    let count: [Param<'_>; 1] = [&n];
    let (_, _, id_rows) = futures::try_join!(
        c.batch_execute("BEGIN"),
        c.query(&lock, &locks),
        c.query(&ids, &count),
    )
    .map_err(before)?;
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
    let wakes: [Param<'_>; 3] = [&wake_prefix, &owners, &fresh];
    futures::try_join!(
        c.execute(&insert, &rows),
        c.execute(&wake, &wakes),
        c.batch_execute("COMMIT")
    )
    .map_err(|e| Failure::Unknown(e.into()))?;
    Ok(fresh)
}

// ---- both ---------------------------------------------------------------

/// The error each caller of a failed batch gets: still "out of reach" or
/// "disk full" when the database was (the caller may try again), else the
/// batch's sentence.
fn for_each_caller(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unreachable(why) => StoreError::Unreachable(why.clone()),
        StoreError::DiskFull(why) => StoreError::DiskFull(why.clone()),
        other => StoreError::Batch(other.to_string()),
    }
}

/// A pooled connection for a writer; a connection that failed mid-batch never goes back.
struct Conn(Option<Object>);

impl Conn {
    async fn get(pool: &Pool) -> Result<Self> {
        pool.get().await.map(|o| Self(Some(o))).map_err(pool_error)
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
