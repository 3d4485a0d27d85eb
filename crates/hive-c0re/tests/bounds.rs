//! Bounded history: past the caps, vacuum keeps events and delivered messages
//! within bounds, never touches undelivered messages, and the database files
//! stop growing.

use hive_c0re::store::{Limits, Store};

fn db_bytes(dir: &std::path::Path) -> u64 {
    ["hive.db", "hive.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[test]
fn history_stays_within_its_caps_and_the_file_stops_growing() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        events_keep: 2_000,
        delivered_keep: 500,
        ..Limits::default()
    };
    let store = Store::open(&dir.path().join("hive.db"), limits).unwrap();
    let payload = format!(
        "{{\"type\":\"assistant\",\"text\":\"{}\"}}",
        "x".repeat(300)
    );
    let waiting: Vec<i64> = (0..10)
        .map(|i| store.send("operator", "bob", &format!("keep {i}")).unwrap())
        .collect();
    let mut sizes = vec![];
    for _round in 0..16 {
        for _ in 0..20 {
            store
                .add_events("alice", (0..250).map(|_| ("stream", payload.as_str())))
                .unwrap();
        }
        for i in 0..1_000 {
            store.send("operator", "alice", &format!("m{i}")).unwrap();
        }
        assert_eq!(store.recv("alice", 1_000).unwrap().len(), 1_000);
        store.vacuum_events().unwrap();
        store.vacuum_messages().unwrap();
        store.checkpoint().unwrap();
        assert_eq!(
            store.events_before("alice", None, 100_000).unwrap().len(),
            2_000
        );
        let delivered = store.recent_messages("alice", 100_000).unwrap();
        assert_eq!(delivered.len(), 500);
        sizes.push(db_bytes(dir.path()));
    }
    // Undelivered messages are never vacuumed.
    assert_eq!(store.inbox_depth("bob"), 10);
    let got: Vec<i64> = store
        .recv("bob", 100)
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(got, waiting);
    // Once freed pages are reused, the files no longer grow: the last rounds stay
    // within a few pages (b-tree balance) of where they settled.
    let settled = sizes[3];
    let slack = settled / 100;
    assert!(
        sizes[4..].iter().all(|&s| s <= settled + slack),
        "the database kept growing: {sizes:?}"
    );
    assert!(
        sizes[15] <= sizes[7] + slack,
        "the database kept growing: {sizes:?}"
    );
}
