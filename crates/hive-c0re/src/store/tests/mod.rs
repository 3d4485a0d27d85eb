//! The store's tests, each run against both backends through [`Db`]: a
//! `both!` block defines a test once and generates `sqlite::NAME` and
//! `pg::NAME`. PostgreSQL tests share one throwaway cluster per test binary
//! (started on first use) and get a fresh database each.

mod leases;
mod nodes;
mod pg_only;
mod suite;
mod turns;
mod wakes;

use std::path::PathBuf;

use super::pg::{PgStore, TestCluster};
use super::{Db, Limits, Store};

/// Which backend a test runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database, on one backend; `open` may be called again (a restart, a second node).
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The PostgreSQL database's name.
    database: Option<String>,
}

/// A new agent `name` at home on node alpha, with a uid range of its own (by its first letter).
pub(super) fn agent(name: &str) -> crate::store::NewAgent<'_> {
    crate::store::NewAgent {
        name,
        harness: "ag3nt",
        config_toml: "",
        deployed_sha: None,
        parent: None,
        want_running: true,
        uid_base: 0x8_0000 + 0x1_0000 * u32::from(name.as_bytes()[0]),
        node: "alpha",
    }
}

/// What PostgreSQL's migration 14 added: the transactions the live feeds tail by.
const PG_TAILS: &str = "ALTER TABLE messages DROP COLUMN tx; ALTER TABLE events DROP COLUMN tx; \
     ALTER TABLE approvals DROP COLUMN tx;";

/// What sqlite's migrations 16-19 and PostgreSQL's 15-18 added: the config
/// repos' heads as their home nodes read them, when an approval settled,
/// which daemon serves a node, the notices told once a day.
const HEADS: &str = "ALTER TABLE agents DROP COLUMN config_head; \
     ALTER TABLE approvals DROP COLUMN repo_head; ALTER TABLE approvals DROP COLUMN repo_ahead; \
     ALTER TABLE approvals DROP COLUMN settled_at; ALTER TABLE nodes DROP COLUMN holder; \
     DROP TABLE notices_told;";

impl Fixture {
    pub async fn new(backend: Backend) -> Self {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestCluster::shared().database().await),
        };
        Self {
            dir: tempfile::tempdir().unwrap(),
            database,
        }
    }

    fn sqlite_path(&self) -> PathBuf {
        self.dir.path().join("hive.db")
    }

    /// Opens the store (applying migrations), with default limits.
    pub async fn open(&self) -> Db {
        self.open_with(Limits::default()).await
    }

    /// Opens the store with `limits`; an error is returned, not a panic.
    pub async fn try_open(&self, limits: Limits) -> super::Result<Db> {
        match &self.database {
            None => Store::open(&self.sqlite_path(), limits).map(Db::Sqlite),
            Some(db) => {
                let resolved = TestCluster::shared().settings(db).resolve(&|_| None)?;
                PgStore::open(resolved, limits).await.map(Db::Postgres)
            }
        }
    }

    /// Opens the store with `limits`.
    pub async fn open_with(&self, limits: Limits) -> Db {
        self.try_open(limits).await.unwrap()
    }

    /// A second handle on the same hive, as another node would hold: on
    /// PostgreSQL its own pool; on sqlite (one host, one writer) a clone.
    pub async fn second(&self, first: &Db) -> Db {
        match first {
            Db::Sqlite(_) => first.clone(),
            Db::Postgres(_) => self.open_with(first.limits().clone()).await,
        }
    }

    /// Takes the database back to the schema before the secrets (sqlite 3,
    /// PostgreSQL 1), as a hive-c0re of that time left it: what every later
    /// migration made is dropped.
    pub async fn set_schema_before_secrets(&self) {
        const LATER: &str = "DROP TABLE secrets; DROP TABLE notifications; \
             DROP TABLE webhook_deliveries; DROP TABLE webhook_status; \
             DROP INDEX events_feed; DROP INDEX events_crash; DROP TABLE budget_overrides; \
             DROP TABLE spend_days; DROP TABLE nodes; ALTER TABLE agents DROP COLUMN node; \
             DROP TABLE agent_leases; DROP TABLE hive_jobs; DROP TABLE node_requests; ALTER TABLE approvals DROP COLUMN decided_on;";
        match &self.database {
            None => {
                let c = rusqlite::Connection::open(self.sqlite_path()).unwrap();
                c.execute_batch(&format!(
                    "{HEADS} {LATER} DROP INDEX stats_ts; PRAGMA user_version = 3;"
                ))
                .unwrap();
            }
            Some(db) => {
                let c = TestCluster::shared()
                    .connect_as(super::pg::test_cluster::OWNER, db)
                    .await;
                c.batch_execute(&format!(
                    "{HEADS} {LATER} {PG_TAILS} UPDATE hive_schema SET version = 1;"
                ))
                .await
                .unwrap();
            }
        }
    }

    /// Takes the database back to the schema before `spend_days` (sqlite 7,
    /// PostgreSQL 5), as a hive-c0re of that time left it.
    pub async fn set_schema_before_spend_days(&self) {
        match &self.database {
            None => {
                let c = rusqlite::Connection::open(self.sqlite_path()).unwrap();
                c.execute_batch(&format!(
                    "{HEADS} DROP TABLE spend_days; DROP TABLE nodes; ALTER TABLE agents DROP COLUMN node; \
                     DROP TABLE agent_leases; DROP TABLE hive_jobs; DROP TABLE node_requests; ALTER TABLE approvals DROP COLUMN decided_on; PRAGMA user_version = 7;",
                ))
                .unwrap();
            }
            Some(db) => {
                let c = TestCluster::shared()
                    .connect_as(super::pg::test_cluster::OWNER, db)
                    .await;
                c.batch_execute(&format!(
                    "{HEADS} DROP TABLE spend_days; DROP TABLE nodes; ALTER TABLE agents DROP COLUMN node; \
                     DROP TABLE agent_leases; DROP TABLE hive_jobs; DROP TABLE node_requests; ALTER TABLE approvals DROP COLUMN decided_on; \
                     {PG_TAILS} UPDATE hive_schema SET version = 5;",
                ))
                .await
                .unwrap();
            }
        }
    }

    /// Takes the database back to the schema before agents had a home node
    /// (sqlite 9, PostgreSQL 7), as a hive-c0re of that time left it.
    pub async fn set_schema_before_agent_nodes(&self) {
        const SQL: &str = "ALTER TABLE agents DROP COLUMN node; \
            ALTER TABLE nodes DROP COLUMN down_since; DROP TABLE agent_leases; DROP TABLE hive_jobs; DROP TABLE node_requests; ALTER TABLE approvals DROP COLUMN decided_on;";
        match &self.database {
            None => {
                let c = rusqlite::Connection::open(self.sqlite_path()).unwrap();
                c.execute_batch(&format!("{HEADS} {SQL} PRAGMA user_version = 9;"))
                    .unwrap();
            }
            Some(db) => {
                let c = TestCluster::shared()
                    .connect_as(super::pg::test_cluster::OWNER, db)
                    .await;
                c.batch_execute(&format!(
                    "{HEADS} {SQL} {PG_TAILS} UPDATE hive_schema SET version = 7;"
                ))
                .await
                .unwrap();
            }
        }
    }

    /// Stores figures with the times given, as an older hive-c0re did (no day totals).
    pub async fn insert_stats(&self, rows: &[(&str, i64, &str, f64)]) {
        match &self.database {
            None => {
                let c = rusqlite::Connection::open(self.sqlite_path()).unwrap();
                for (agent, ts, key, value) in rows {
                    c.execute(
                        "INSERT INTO stats (agent, ts, key, value) VALUES (?1, ?2, ?3, ?4)",
                        rusqlite::params![agent, ts, key, value],
                    )
                    .unwrap();
                }
            }
            Some(db) => {
                let c = TestCluster::shared()
                    .connect_as(super::pg::test_cluster::OWNER, db)
                    .await;
                for (agent, ts, key, value) in rows {
                    c.execute(
                        "INSERT INTO stats (agent, ts, key, value) VALUES ($1, $2, $3, $4)",
                        &[agent, ts, key, value],
                    )
                    .await
                    .unwrap();
                }
            }
        }
    }

    /// How the backend would run `sql`: sqlite's query plan, or PostgreSQL's
    /// with sequential and bitmap scans off (a test's tables are too small for
    /// an index scan to win on cost; what matters is that the index can serve
    /// the query in its order).
    pub async fn plan(&self, db: &Db, sql: &str) -> String {
        match db {
            Db::Sqlite(s) => {
                let g = s.lock();
                let mut st = g
                    .conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .unwrap();
                let rows = st.query_map([], |r| r.get::<_, String>(3)).unwrap();
                rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
            }
            Db::Postgres(p) => {
                let mut c = p.client().await.unwrap();
                let tx = c.transaction().await.unwrap();
                tx.batch_execute(
                    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off",
                )
                .await
                .unwrap();
                let rows = tx.query(&format!("EXPLAIN {sql}"), &[]).await.unwrap();
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        }
    }

    /// Runs `sql` (no parameters, the same text on both backends) as the owner, outside the store.
    pub async fn execute(&self, sql: &str) {
        match &self.database {
            None => {
                let c = rusqlite::Connection::open(self.sqlite_path()).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Some(db) => {
                let c = TestCluster::shared()
                    .connect_as(super::pg::test_cluster::OWNER, db)
                    .await;
                c.batch_execute(sql).await.unwrap();
            }
        }
    }

    /// Records a schema version newer than this build knows.
    pub async fn set_newer_schema(&self) {
        match &self.database {
            None => {
                let c = rusqlite::Connection::open(self.sqlite_path()).unwrap();
                c.pragma_update(None, "user_version", super::schema::VERSION + 1)
                    .unwrap();
            }
            Some(db) => {
                let c = TestCluster::shared()
                    .connect_as(super::pg::test_cluster::OWNER, db)
                    .await;
                c.execute(
                    "UPDATE hive_schema SET version = $1",
                    &[&(super::pg::VERSION + 1)],
                )
                .await
                .unwrap();
            }
        }
    }
}

/// Defines async tests once, over a `Fixture`, and runs each on both backends.
macro_rules! both {
    ($(async fn $name:ident($f:ident) $body:block)*) => {
        $(async fn $name($f: $crate::store::tests::Fixture) $body)*

        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let f = $crate::store::tests::Fixture::new($crate::store::tests::Backend::Sqlite).await;
                    super::$name(f).await
                }
            )*
        }

        mod pg {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if $crate::store::pg::TestCluster::missing() {
                        return;
                    }
                    let f = $crate::store::tests::Fixture::new($crate::store::tests::Backend::Postgres).await;
                    super::$name(f).await
                }
            )*
        }
    };
}
pub(crate) use both;

/// Reads a live tail from `at` until nothing is pending (on PostgreSQL a
/// commit waits for older transactions, of any database on the cluster,
/// to end), at most 10 s; every row read, and the position past them.
pub async fn settled<T>(at: i64, read: impl AsyncFn(i64) -> super::Tail<T>) -> (Vec<T>, i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut rows, mut at) = (vec![], at);
    loop {
        let t = read(at).await;
        rows.extend(t.rows);
        at = t.next;
        if !t.pending || std::time::Instant::now() > deadline {
            return (rows, at);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A send answered ok survives a power cut, not only a kill -9 of the
/// daemon: every commit reaches the disk (`synchronous=FULL`; in WAL,
/// NORMAL syncs only at checkpoints, up to a minute of acknowledged sends).
#[test]
fn every_commit_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::Store::open(&dir.path().join("hive.db"), super::Limits::default()).unwrap();
    let (journal, synchronous): (String, i64) = {
        let inner = store.lock();
        (
            inner
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap(),
            inner
                .conn
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap(),
        )
    };
    assert_eq!((journal.as_str(), synchronous), ("wal", 2), "2 is FULL");
}

/// After a purge, `checkpoint` frees the whole free list (a piece at a
/// time) and the file shrinks; a database made before incremental vacuum,
/// whose free list vacuum cannot shrink, does not keep it looping.
#[test]
fn checkpoint_frees_every_page_a_piece_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hive.db");
    let store = super::Store::open(&path, super::Limits::default()).unwrap();
    let payload = format!("{{\"text\":\"{}\"}}", "x".repeat(4000));
    for _ in 0..20 {
        let items: Vec<(&str, &str)> = (0..100).map(|_| ("stream", payload.as_str())).collect();
        store.add_events("alice", items).unwrap();
    }
    store.checkpoint().unwrap();
    let full = std::fs::metadata(&path).unwrap().len();
    store.purge_events("alice").unwrap();
    store.checkpoint().unwrap();
    let free: i64 = store
        .lock()
        .conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    assert_eq!(free, 0);
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after * 4 < full, "{full} bytes before, {after} after");

    // No incremental vacuum: the free list stays, and checkpoint returns.
    let old = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute_batch("PRAGMA auto_vacuum = NONE; CREATE TABLE t (x); INSERT INTO t VALUES (zeroblob(400000)); DELETE FROM t;")
        .unwrap();
    drop(conn);
    let store = super::Store::open(&old, super::Limits::default()).unwrap();
    store.checkpoint().unwrap();
}

/// A database that answers and cannot store (a write refused as read-only)
/// is unusable, the database alarm's case; a refusal of one write (a
/// constraint) is not, nor is a full disk, which has alarms of its own.
#[test]
fn a_write_refused_as_read_only_is_the_store_unusable() {
    use rusqlite::{Connection, OpenFlags, ffi};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let rw = Connection::open(&path).unwrap();
    rw.execute_batch("CREATE TABLE t (x UNIQUE); INSERT INTO t VALUES (1);")
        .unwrap();
    let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let refused = super::StoreError::from(ro.execute("INSERT INTO t VALUES (2)", []).unwrap_err());
    assert!(refused.is_unusable(), "{refused}");
    let twice = super::StoreError::from(rw.execute("INSERT INTO t VALUES (1)", []).unwrap_err());
    assert!(!twice.is_unusable(), "{twice}");
    let full = super::StoreError::from(rusqlite::Error::SqliteFailure(
        ffi::Error::new(ffi::SQLITE_FULL),
        None,
    ));
    assert!(full.is_disk_full() && !full.is_unusable());
}
