//! The store, the only place that writes SQL: [`Db`] (`boundary.rs`) is the
//! one async API over its two backends, sqlite (this module, one host) and
//! PostgreSQL ([`pg`], several nodes sharing one database). Both return the
//! row types defined here, next to their sqlite queries.
//!
//! sqlite: one file in WAL mode, one connection behind a mutex. Every statement is short, and WAL with
//! `synchronous=FULL` syncs the log at each commit, so a committed row
//! survives a power cut, not only a kill -9 of the daemon (NORMAL would sync
//! only at checkpoints). Concurrent sends share one commit (`group.rs`) and
//! a harness's events come in batches, one sync each: the host.sock send
//! bench went from 41k to 24k messages/s with 8 clients (the goal is 20k).
//! One file per table family holds its queries.

mod agents;
mod approvals;
mod boundary;
mod budget;
mod events;
mod group;
mod jobs;
mod leases;
mod messages;
mod nodes;
mod notifications;
mod outage;
mod overview;
pub mod pg;
mod questions;
mod requests;
mod schedules;
mod schema;
mod secrets;
mod stats;
#[cfg(test)]
mod tests;
mod turns;
mod wake;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

pub use agents::{AgentRow, NewAgent};
pub use approvals::{ApprovalRow, NewApproval};
pub use boundary::Db;
pub use budget::{BudgetOverride, Spend};
pub use events::EventRow;
pub use leases::{Fence, Lease};
pub use messages::{MessageRow, SendError, SendNote, Sent};
pub use nodes::{NodeDown, NodeRow, Registration};
pub use notifications::{DeliveryRow, NotificationRow, WebhookStats};
pub use outage::{Outage, OutageLog};
pub use overview::AgentFacts;
pub use questions::QuestionRow;
pub use requests::{NewRequest, RequestRow};
pub use schedules::ScheduleRow;
pub use secrets::SecretEntry;
pub use stats::{HIVE_WIDE, STATS_READ_MAX, StatRow};
pub use turns::{INBOX_DEPTH, INBOX_DEPTH_PEAK, Settle, TurnEndWrite, TurnEnded};
pub use wake::{Wake, Wakes};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database error: {}", pg::describe(.0))]
    Pg(#[source] tokio_postgres::Error),
    /// This node cannot reach its PostgreSQL database: connecting failed or
    /// the connection dropped (a [`tokio_postgres::Error`] of that kind
    /// becomes this, not [`StoreError::Pg`]).
    #[error(
        "this node cannot reach the hive's database ({0}): it keeps trying, and nothing stored before is lost; check that the PostgreSQL server is up and reachable from this host, then try again"
    )]
    Unreachable(String),
    /// The PostgreSQL server has no room on its disk (SQLSTATE 53100; a
    /// [`tokio_postgres::Error`] of that kind becomes this).
    #[error(
        "the hive's database has no room left on its disk ({0}): nothing was stored; free space on the database server, and writes go through again"
    )]
    DiskFull(String),
    #[error("could not open the database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the database {path} has schema version {found}, newer than this hive-c0re knows ({known}): upgrade hive-c0re"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    /// A group commit failed; every send in it gets this.
    #[error("database error: {0}")]
    Batch(String),
    #[error(
        "could not connect to PostgreSQL at {name}: {message}: check the database URL, the password's source and that the server is up"
    )]
    Connect { name: String, message: String },
    #[error("database connection pool: {0}")]
    Pool(String),
    /// Connection settings that cannot work, said as a sentence.
    #[error("{0}")]
    Settings(String),
    /// A runner acted for an agent under a lease it no longer holds.
    #[error(
        "node {node} no longer holds {agent}'s lease (epoch {epoch}): it ran out or another node took it over, so this node must stop running {agent}"
    )]
    Fenced {
        agent: String,
        node: String,
        epoch: i64,
    },
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if pg::connection_lost(&e) {
            Self::Unreachable(pg::describe(&e))
        } else if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            Self::Unreachable(format!(
                "a lock it needs was held for over {} s ({})",
                pg::settings::lock_timeout().as_secs(),
                pg::describe(&e)
            ))
        } else if e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL) {
            Self::DiskFull(pg::describe(&e))
        } else {
            Self::Pg(e)
        }
    }
}

impl StoreError {
    /// True when the database could not be reached: connecting failed or the connection dropped.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }

    /// True when the database answers and cannot store: sqlite's file is
    /// on a file system turned read-only, on a disk that fails, or damaged;
    /// PostgreSQL is a read-only standby (SQLSTATE 25006, as after a
    /// failover). Like a database out of reach it lasts until the operator
    /// acts, unlike a refusal of one request; a full disk has alarms of its own.
    pub fn is_unusable(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            Self::Sql(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                C::ReadOnly | C::SystemIoFailure | C::DatabaseCorrupt | C::NotADatabase
            ),
            Self::Pg(e) => {
                e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
            }
            _ => false,
        }
    }

    /// True when the database could not write because its disk is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Sql(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            Self::Pg(e) => e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL),
            Self::DiskFull(_) => true,
            _ => false,
        }
    }
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Bounds that keep the database from growing without end.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Undelivered messages one mailbox may hold before sends to it are
    /// refused; the last tenth is the operator's ([`Limits::inbox_limit`]).
    pub inbox_cap: u64,
    /// Delivered messages kept per recipient.
    pub delivered_keep: u64,
    /// Events kept per agent.
    pub events_keep: u64,
    /// Bytes of event payloads kept per agent: the newest, down to nine tenths
    /// of it once over (so the next trim is a tenth of it away).
    pub events_keep_bytes: u64,
    /// Age after which delivered messages, events and stats are dropped, in ms.
    pub max_age_ms: i64,
    /// Figures (`stats` rows) kept per agent, the newest: the harness reports
    /// them, at up to 120 turns a minute, so the age limit alone let one
    /// agent keep hundreds of millions.
    pub stats_keep: u64,
    /// Notifications kept however young: past it the read ones and those an
    /// agent caused at will go first, the hive's own unread ones only past
    /// [`NOTIFICATIONS_HARD_CAP`] times it.
    pub notifications_keep: u64,
}

/// How many times [`Limits::notifications_keep`] the bell may hold with its
/// unread hive-made notifications before those go too.
pub const NOTIFICATIONS_HARD_CAP: u64 = 4;

impl Limits {
    /// How many undelivered messages a mailbox may hold for `sender`'s to go
    /// in: the operator's and the hive's own notices (`system`) go up to the
    /// cap, an agent's stop a tenth short of it, so an agent that fills an
    /// inbox (the manager's) leaves room for the operator to steer and for
    /// the hive to tell of approvals decided, crashes and nodes down. A
    /// scheduled prompt counts as its creator's.
    pub fn inbox_limit(&self, sender: &str) -> u64 {
        if hive_sh4re::name::RESERVED.contains(&sender) {
            self.inbox_cap
        } else {
            self.inbox_cap - self.inbox_cap / 10
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            inbox_cap: 10_000,
            delivered_keep: 5_000,
            events_keep: 50_000,
            events_keep_bytes: 256 * 1024 * 1024,
            max_age_ms: 30 * 24 * 3600 * 1000,
            stats_keep: 1_000_000,
            notifications_keep: 10_000,
        }
    }
}

/// Handle on the hive's database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    limits: Arc<Limits>,
    /// What the vacuum knows of each agent's history size.
    history_sizes: Arc<events::HistorySizes>,
    /// Queue of the group-commit writer (see `group.rs`); None inside the writer itself.
    writer: Option<std::sync::mpsc::Sender<group::Job>>,
    /// Where the writer reports a panic, for the hive to tell (see `panics.rs`).
    faults: crate::panics::Faults,
}

struct Inner {
    conn: Connection,
    /// Undelivered count per recipient, so the backpressure check costs no query.
    depth: HashMap<String, u64>,
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub fn open(path: &Path, limits: Limits) -> Result<Self> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(conn, path, limits)
    }

    /// An in-memory store, for tests.
    pub fn in_memory() -> Result<Self> {
        Self::init(
            Connection::open_in_memory()?,
            Path::new(":memory:"),
            Limits::default(),
        )
    }

    fn init(conn: Connection, path: &Path, limits: Limits) -> Result<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Lets vacuum hand freed pages back to the file system. It takes effect
        // on a new database only, and setting it writes: on an existing one a
        // full disk would refuse the open.
        let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
        if pages == 0 {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Checkpoints fsync; fewer, larger ones keep them off the send path.
        conn.pragma_update(None, "wal_autocheckpoint", 16384)?;
        let mut conn = conn;
        schema::migrate(&mut conn, path)?;
        let depth = messages::load_depths(&conn)?;
        let mut store = Self {
            inner: Arc::new(Mutex::new(Inner { conn, depth })),
            limits: Arc::new(limits),
            history_sizes: Arc::default(),
            writer: None,
            faults: crate::panics::Faults::default(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        group::start(store.clone(), rx);
        store.writer = Some(tx);
        Ok(store)
    }

    /// Between two chunks of a long job (the vacuum's), lets a send that
    /// waits for the lock in: std's mutex goes back to the thread that just
    /// let it go, so back-to-back chunks held every send for the whole job.
    /// Called off the runtime's threads, as the vacuum is.
    fn make_way() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves sqlite consistent (statements are
        // atomic), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes the rows of `table` matching `filter` a chunk at a time, taking the lock
    /// per chunk, so a large vacuum never holds up a send for long; returns how many.
    fn delete_chunked(
        &self,
        table: &str,
        filter: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<usize> {
        const CHUNK: usize = 2000;
        let sql = format!(
            "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {filter} LIMIT {CHUNK})"
        );
        let mut total = 0;
        loop {
            let n = self.lock().conn.prepare_cached(&sql)?.execute(params)?;
            total += n;
            if n < CHUNK {
                return Ok(total);
            }
            Self::make_way();
        }
    }

    /// Hands the pages vacuum freed back to the file system, then folds the
    /// write-ahead log back into the database and truncates it, so the files
    /// stay bounded. The pages go a piece at a time, the lock given back
    /// between pieces: after a purge the free list can hold hundreds of MiB,
    /// which freed in one statement held every caller (and the watchdog's
    /// ping) for seconds.
    pub fn checkpoint(&self) -> Result<()> {
        const PAGES: u32 = 1024;
        let free = |g: &MutexGuard<'_, Inner>| -> Result<i64> {
            Ok(g.conn
                .query_row("PRAGMA freelist_count", [], |r| r.get(0))?)
        };
        let mut last = i64::MAX;
        loop {
            let g = self.lock();
            let now = free(&g)?;
            // Nothing left, or a database made before incremental vacuum that frees nothing.
            if now == 0 || now >= last {
                break;
            }
            last = now;
            g.conn
                .execute_batch(&format!("PRAGMA incremental_vacuum({PAGES});"))?;
            drop(g);
            Self::make_way();
        }
        self.lock()
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// The bounds this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Where the writer reports a panic.
    pub fn faults(&self) -> &crate::panics::Faults {
        &self.faults
    }

    /// Runs `sql` on the store's own connection: tests of what uses the
    /// store (an in-memory one) break the database under it.
    #[cfg(test)]
    pub(crate) fn execute_for_tests(&self, sql: &str) {
        self.lock().conn.execute_batch(sql).unwrap();
    }
}

/// A live tail's next rows, oldest first, and the position past them: an
/// id on sqlite, a transaction on PostgreSQL (`pg/tail.rs`), so only what
/// the same store handed out.
#[derive(Debug)]
pub struct Tail<T> {
    /// The rows, in the order they committed.
    pub rows: Vec<T>,
    /// Where the next read starts.
    pub next: i64,
    /// More may be ready at once or in a moment: a committed row waits for
    /// an older transaction to end (PostgreSQL), or the limit cut the read.
    pub pending: bool,
}
