//! WAL checkpoints off the store's connection.
//!
//! sqlite's automatic checkpoint runs inside the commit that crosses its
//! mark, on the committing connection: under the store's lock, copying and
//! syncing the whole log while every reader and writer waits (holds of 240 ms
//! were seen during a burst of turns, each one a `status` that waited). A
//! thread of its own, on a connection of its own, runs a passive checkpoint
//! every [`EVERY`] instead: it never holds the store's lock, and a passive
//! checkpoint waits for no reader or writer. The log stays bounded by what
//! the hive writes in that time.

use std::path::Path;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use rusqlite::Connection;

use super::Inner;

/// How often the log is folded back into the database.
pub const EVERY: Duration = Duration::from_secs(1);

/// A connection for checkpoints of the database at `path`; None when one
/// cannot be opened (the store then keeps sqlite's automatic checkpoints).
pub(super) fn connect(path: &Path) -> Option<Connection> {
    let conn = Connection::open(path).ok()?;
    conn.busy_timeout(Duration::from_secs(1)).ok()?;
    Some(conn)
}

/// Runs a passive checkpoint every [`EVERY`] until the store is dropped.
pub(super) fn start(conn: Connection, store: Weak<Mutex<Inner>>) {
    let spawned = std::thread::Builder::new()
        .name("hive-store-checkpoint".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(EVERY);
                if store.strong_count() == 0 {
                    return;
                }
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    Ok(()) => failing = false,
                    // Said once per run of failures (a full disk fails every second).
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!("could not checkpoint the database's write-ahead log: {e}");
                    }
                    Err(_) => {}
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("could not start the checkpoint thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Limits, Store};

    #[test]
    fn the_log_is_folded_back_off_the_stores_connection_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("hive.db");
        let store = Store::open(&db, Limits::default()).unwrap();
        let auto: i64 = store
            .lock()
            .conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "no checkpoint runs inside a commit");
        let body = "x".repeat(4000);
        let write = |n: usize| {
            for _ in 0..n {
                store
                    .add_events("alice", [("stream", body.as_str())])
                    .unwrap();
            }
        };
        let wal = db.with_extension("db-wal");
        write(300);
        let first = std::fs::metadata(&wal).unwrap().len();
        assert!(first > 1_000_000, "{first}");
        // Once the thread has checkpointed, the next writer starts the log over.
        std::thread::sleep(super::EVERY * 3);
        write(300);
        let second = std::fs::metadata(&wal).unwrap().len();
        assert!(
            second <= first + first / 10,
            "the log grew from {first} to {second} bytes: nothing checkpointed it"
        );
    }
}
