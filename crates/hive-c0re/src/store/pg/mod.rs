//! The PostgreSQL backend: the same operations as the sqlite store, for a
//! hive whose nodes share one database.
//!
//! tokio-postgres with a deadpool pool: no query macros, so nothing needs a
//! live database at build time; statements are prepared once per connection
//! (`prepare_cached`) and independent ones are pipelined on one connection.
//! Sends and events go through group-commit writers (`group.rs`): one
//! transaction for whatever is queued, each kind in one multi-row insert.
//!
//! What makes it safe with several nodes writing at once:
//! - the inbox cap reads `mailboxes.depth` under a row lock, so two nodes
//!   cannot both take the last place;
//! - claims lock the rows they take (`FOR UPDATE SKIP LOCKED`), so two
//!   claimers never share a message;
//! - approvals, questions and schedule slots change with a conditional
//!   UPDATE, so only one of two racing deciders wins;
//! - events of one agent are inserted under that agent's advisory lock, so
//!   their ids grow in commit order and a reader tailing by id misses none;
//! - a write that should wake an agent commits a notification with it, which
//!   every other node's listener hands to its subscribers (`wakes.rs`);
//! - an agent runs on the node holding its lease, and claims, acks and turn
//!   ends of a node whose lease was taken over are refused (`leases.rs`,
//!   `turns.rs`).

mod agents;
mod approvals;
mod budget;
mod events;
mod group;
#[cfg(test)]
pub(in crate::store) use group::PANICS_A_WRITER;
mod jobs;
mod leases;
mod messages;
#[cfg(test)]
pub(super) use messages::{claim_sql, recv_sql};
mod nodes;
mod notifications;
mod overview;
mod questions;
mod requests;
mod schedules;
mod schema;
mod secrets;
pub mod settings;
mod stats;
mod tail;
pub mod test_cluster;
mod tls;
mod turns;
mod wakes;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::sync::{broadcast, mpsc};

pub use schema::VERSION;
pub use settings::{PgSettings, Resolved, SslMode};
pub use test_cluster::TestCluster;

use super::outage::OutageLog;
use super::wake::{WAKE_BUFFER, Wake, Wakes};
use super::{Limits, Result, StoreError};

/// First key of every advisory lock hyperhive takes ("hive"), so they stand apart from other users'.
pub(super) const ADVISORY_CLASS: i32 = 0x6869_7665;
/// First key of the per-agent event locks (the second is `hashtext(agent)`).
const EVENTS_CLASS: i32 = 0x6869_7666;
/// The heartbeat's and lease renewals' connections, apart from the pool.
const LIVENESS_CONNECTIONS: usize = 2;
/// How long a call waits for a free connection before it fails as the
/// database out of reach (the alarm then says so).
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The database's time in unix ms: one clock for every node.
const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Second keys of hyperhive's advisory locks.
#[derive(Clone, Copy)]
pub(super) enum Key {
    Migrate = 1,
    // 2 was the agents' uid ranges, which the runtime's registry now picks.
    Vacuum = 3,
    /// Held while an approval is queued under a bound on those waiting.
    ApprovalQueue = 4,
}

/// A node's handle on the hive's PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Connections of their own for the heartbeat and the lease renewals:
    /// behind a pool an agent's requests keep busy, a renewal late by a
    /// lease's length stops every harness on the node.
    liveness: Pool,
    limits: Arc<Limits>,
    sends: mpsc::UnboundedSender<group::SendJob>,
    events: mpsc::UnboundedSender<group::EventJob>,
    /// `user@host:port/db`, for messages.
    name: Arc<str>,
    /// This store's id in the wakes it sends, so its own listener skips them.
    origin: Arc<str>,
    /// Wakes from other nodes, as the listener receives them.
    wakes: broadcast::Sender<Wake>,
    _listener: Arc<wakes::Listener>,
    /// Requests failed for the database out of reach, for the heartbeat to tell.
    outages: Arc<OutageLog>,
    /// Sends whose commit is in doubt, for a repeat to go under the same id.
    in_doubt: Arc<messages::InDoubt>,
    /// What this node's vacuum knows of each agent's history size.
    history_sizes: Arc<crate::store::events::HistorySizes>,
    /// Where the writers and the wake listener report their panics (see `panics.rs`).
    faults: crate::panics::Faults,
}

impl PgStore {
    /// Connects with `settings` (password and TLS files from the environment as
    /// libpq reads them) and applies pending migrations.
    pub async fn connect(settings: &PgSettings, limits: Limits) -> Result<Self> {
        let resolved = settings.resolve(&|k| std::env::var(k).ok())?;
        Self::open(resolved, limits).await
    }

    /// Connects with settings already resolved and applies pending migrations.
    pub async fn open(resolved: Resolved, limits: Limits) -> Result<Self> {
        let tls = tls::connector(resolved.sslmode, resolved.root_cert.as_deref())?;
        let listen_config = resolved.config.clone();
        // connect_timeout covers the TCP connect only: a server (or a proxy)
        // that takes the connection and answers nothing held a new
        // connection, and so every caller waiting for one, for ever.
        let create = resolved
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10))
            * 2;
        let pool_of = |size: usize| {
            let manager = Manager::from_config(
                resolved.config.clone(),
                tls.clone(),
                ManagerConfig {
                    // A connection the server dropped is found closed and replaced;
                    // no extra round trip per checkout.
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .create_timeout(Some(create))
                .wait_timeout(Some(POOL_WAIT))
                .recycle_timeout(Some(Duration::from_secs(5)))
                .build()
                .map_err(|e| StoreError::Settings(format!("could not set up the pool: {e}")))
        };
        let pool = pool_of(resolved.pool_size)?;
        let liveness = pool_of(LIVENESS_CONNECTIONS)?;
        let name: Arc<str> = resolved.name.into();
        let mut client = pool.get().await.map_err(|e| StoreError::Connect {
            name: name.to_string(),
            message: match pool_error(e) {
                StoreError::Unreachable(m) => m,
                other => other.to_string(),
            },
        })?;
        schema::migrate(&mut client, &name).await?;
        drop(client);
        let origin = wakes::new_origin();
        let faults = crate::panics::Faults::default();
        let wake_tx = broadcast::channel(WAKE_BUFFER).0;
        let listener = wakes::start(
            listen_config,
            tls,
            origin.clone(),
            wake_tx.clone(),
            faults.clone(),
        )
        .await
        .map_err(|e| StoreError::Connect {
            name: name.to_string(),
            message: format!("could not listen for wakes: {e}"),
        })?;
        let (sends, send_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let limits = Arc::new(limits);
        group::start(
            pool.clone(),
            limits.clone(),
            origin.clone(),
            send_rx,
            event_rx,
            &faults,
        );
        Ok(Self {
            pool,
            liveness,
            limits,
            sends,
            events,
            name,
            origin,
            wakes: wake_tx,
            _listener: Arc::new(listener),
            outages: Arc::default(),
            in_doubt: Arc::default(),
            history_sizes: Arc::default(),
            faults,
        })
    }

    /// The requests failed for the database out of reach since the heartbeat last took them.
    pub fn outages(&self) -> &OutageLog {
        &self.outages
    }

    /// Passes `r` through, noting it in [`Self::outages`] when the database was out of reach.
    pub fn noted<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.outages.note(e);
        }
        r
    }

    /// [`Self::noted`] for a write that takes new room (sends, events): one
    /// that went through says the database's disk has room again.
    pub fn written<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_ok() {
            self.outages.wrote();
        }
        self.noted(r)
    }

    /// Wakes from other nodes' commits; this store's own are not among them
    /// (the caller wakes its own waiters). Once `open` returned, every commit
    /// of another node that wakes comes through, or a [`Wake::Resync`] says
    /// some may have been lost.
    pub fn wakes(&self) -> Wakes {
        Wakes::new(self.wakes.subscribe())
    }

    /// The payload prefix of this store's mailbox wakes (SQL appends the mailbox).
    fn wake_prefix(&self) -> String {
        wakes::mailbox_prefix(&self.origin)
    }

    /// The payload prefix of this store's agent-row wakes (SQL appends the agent).
    fn agent_wake_prefix(&self) -> String {
        wakes::agent_prefix(&self.origin)
    }

    /// The `application_name` of this store's listening session (tests end it to cut the listener).
    #[cfg(test)]
    pub(in crate::store) fn listener_session(&self) -> String {
        wakes::session_name(&self.origin)
    }

    /// A pooled connection.
    pub(in crate::store) async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(pool_error)
    }

    /// A connection of the heartbeat's and the leases' own pool.
    pub(in crate::store) async fn liveness_client(&self) -> Result<Object> {
        self.liveness.get().await.map_err(pool_error)
    }

    /// The bounds this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Where the writers and the wake listener report their panics.
    pub fn faults(&self) -> &crate::panics::Faults {
        &self.faults
    }

    /// `user@host:port/db` of this store, without the password.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<i64> {
        schema::version(&self.client().await?).await
    }

    /// A connection holding the hive-wide vacuum lock, so one node vacuums at
    /// a time; None without waiting when another node holds it.
    async fn vacuum_lock(&self) -> Result<Option<Object>> {
        let client = self.client().await?;
        let got: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2)",
                &[&ADVISORY_CLASS, &(Key::Vacuum as i32)],
            )
            .await?
            .get(0);
        Ok(got.then_some(client))
    }
}

/// Gives the vacuum lock back; a connection that may still hold it leaves the pool
/// (the lock is the session's, and goes with it).
async fn vacuum_unlock<T>(client: Object, result: &Result<T>) {
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock($1, $2)",
            &[&ADVISORY_CLASS, &(Key::Vacuum as i32)],
        )
        .await;
    if result.is_err() || unlocked.is_err() {
        drop(Object::take(client));
    }
}

/// Deletes the rows of `table` matching `filter` a chunk at a time (one short
/// transaction each, so a large vacuum holds no lock for long); returns how many.
async fn delete_chunked(
    client: &Object,
    table: &str,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<usize> {
    const CHUNK: u64 = 2000;
    let sql = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {filter} LIMIT {CHUNK}))"
    );
    let st = client.prepare_cached(&sql).await?;
    let mut total = 0;
    loop {
        let n = client.execute(&st, params).await?;
        total += n as usize;
        if n < CHUNK {
            return Ok(total);
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            StoreError::Unreachable(format!(
                "no connection to the database came free within {} s: every one waits on an answer from it",
                POOL_WAIT.as_secs()
            ))
        }
        deadpool_postgres::PoolError::Timeout(_) => StoreError::Unreachable(
            "the database took the connection but did not answer in time".to_owned(),
        ),
        // The pool's backend errors are failed connects (a closed connection
        // is replaced, not reported), whatever their kind.
        deadpool_postgres::PoolError::Backend(e) => StoreError::Unreachable(describe(&e)),
        other => StoreError::Pool(other.to_string()),
    }
}

/// True when the connection went away or could not be made (closed, cut,
/// refused, or the server ended the session or takes none now).
pub(in crate::store) fn connection_lost(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
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

/// What a tokio-postgres error says, with the server's message when it has one.
pub(in crate::store) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// A row count from SQL's COUNT or a bigint column, as the sqlite store returns it.
fn count(n: i64) -> u64 {
    n.max(0) as u64
}

#[cfg(test)]
mod open_tests {
    use super::*;

    /// A server that takes the connection and answers nothing (frozen, or a
    /// proxy with no database behind it) held serve's start, and every call
    /// waiting for a connection, for ever: connect_timeout covers only the
    /// TCP connect. Now the start fails with a sentence.
    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_start_with_a_sentence() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                held.push(conn);
            }
        });
        let settings = PgSettings::new(format!(
            "postgres://hive@127.0.0.1:{port}/hive?connect_timeout=1"
        ));
        let started = std::time::Instant::now();
        let opened = tokio::time::timeout(
            Duration::from_secs(30),
            PgStore::connect(&settings, Limits::default()),
        )
        .await
        .expect("the start still waits on a server that never answers");
        let Err(e) = opened else {
            panic!("a silent server gave a store");
        };
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(e.to_string().contains("did not answer in time"), "{e}");
    }
}
