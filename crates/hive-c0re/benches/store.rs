//! The store boundary on both backends: `cargo bench -p hive-c0re --bench store`.
//!
//! Starts a throwaway PostgreSQL cluster (fsync and synchronous commit on,
//! as a real server has them) and a sqlite file, then through `Db`:
//! - send throughput with 8 concurrent senders, each awaiting its send
//!   before the next, as host.sock clients do (goal: >= 10,000 messages/s
//!   on PostgreSQL, sqlite stays >= 20,000);
//! - event ingest, 10 agents streaming batches of 100 at once, as harnesses
//!   do (goal on PostgreSQL: >= 50,000 events/s);
//! - cross-node wake: a send through one node's store until another node's
//!   store hands out its wake, one send at a time, p50/p99 (goal p99 < 20 ms;
//!   the wake of the recipient's harness adds the broker's poke to this).
//!
//! - one call at a time, each of the store calls a host.sock send to an
//!   agent makes, p50/p99.
//! - the vacuum's byte budget on a history over it: how long the trim
//!   takes, how long a send made meanwhile waited at most, and what the
//!   next vacuum costs when nothing new came.
//!
//! `-- NAME` runs only the parts whose name holds NAME (`send`, `one`,
//! `events`, `wake`, `trim`).

use std::time::{Duration, Instant};

use hive_c0re::store::pg::{PgStore, TestCluster};
use hive_c0re::store::{Db, Limits, Wake};

const SENDERS: usize = 8;
const SENDS_EACH: usize = 4000;
const AGENTS: usize = 10;
const EVENT_BATCHES: usize = 200;
const EVENT_BATCH: usize = 100;
const WAKES: usize = 200;

fn limits() -> Limits {
    Limits {
        inbox_cap: u64::MAX,
        events_keep: u64::MAX,
        ..Limits::default()
    }
}

async fn send_throughput(db: &Db) -> f64 {
    // Warm the pool and the statement caches.
    for i in 0..SENDERS {
        db.send("operator", &format!("agent-{i}"), "warm")
            .await
            .unwrap();
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..SENDERS)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let to = format!("agent-{i}");
                for k in 0..SENDS_EACH {
                    db.send(
                        "operator",
                        &to,
                        &format!("message {k} of a benchmark, of about the length of a short note"),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (SENDERS * SENDS_EACH) as f64 / start.elapsed().as_secs_f64();
    for i in 0..SENDERS {
        assert_eq!(
            db.inbox_depth(&format!("agent-{i}")).await.unwrap(),
            SENDS_EACH as u64 + 1
        );
    }
    rate
}

async fn event_ingest(db: &Db) -> f64 {
    // What agent-0's history held before (one_at_a_time notes events there too).
    let before = db
        .events_before("agent-0", None, u32::MAX)
        .await
        .unwrap()
        .len();
    // A realistic line: an assistant message with a tool call, ~300 bytes.
    let item = r#"{"type":"assistant","message":{"id":"msg_1","content":[{"type":"tool_use","id":"toolu_1","name":"mcp__hyperhive__send","input":{"to":"operator","body":"a reply of some length to make the line realistic"}}]},"session_id":"0b6c8f7e"}"#;
    let batch: Vec<(String, String)> = vec![("stream".to_owned(), item.to_owned()); EVENT_BATCH];
    let start = Instant::now();
    let tasks: Vec<_> = (0..AGENTS)
        .map(|i| {
            let db = db.clone();
            let batch = batch.clone();
            tokio::spawn(async move {
                let agent = format!("agent-{i}");
                for _ in 0..EVENT_BATCHES {
                    db.add_events(&agent, &batch).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let rate = (AGENTS * EVENT_BATCHES * EVENT_BATCH) as f64 / start.elapsed().as_secs_f64();
    let stored = db
        .events_before("agent-0", None, u32::MAX)
        .await
        .unwrap()
        .len();
    assert_eq!(stored - before, EVENT_BATCHES * EVENT_BATCH);
    rate
}

/// Events of about 2 KB, and the budget a history of them goes past.
const TRIM_EVENTS: usize = 40_000;
const TRIM_BUDGET: u64 = 64 * 1024 * 1024;

fn trim_limits() -> Limits {
    Limits {
        events_keep_bytes: TRIM_BUDGET,
        ..limits()
    }
}

/// Fills one history past the byte budget, then times the vacuum that trims
/// it while another task sends one message at a time. (events dropped, the
/// trim's time, the slowest send meanwhile, the next vacuum's time).
async fn history_trim(db: &Db) -> (usize, Duration, Duration, Duration) {
    let payload = format!("\"{}\"", "x".repeat(2000));
    let batch: Vec<(String, String)> = vec![("stream".to_owned(), payload); 500];
    for _ in 0..TRIM_EVENTS / batch.len() {
        db.add_events("big", &batch).await.unwrap();
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (db, stop) = (db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                db.send("operator", "bystander", "meanwhile").await.unwrap();
                slowest = slowest.max(t.elapsed());
            }
            slowest
        })
    };
    // Off the runtime's threads, as the daemon runs its vacuum.
    let vacuum = |db: Db| {
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let n = tokio::runtime::Handle::current()
                .block_on(db.vacuum_events())
                .unwrap();
            (n, t.elapsed())
        })
    };
    let (dropped, trim) = vacuum(db.clone()).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let slowest = sender.await.unwrap();
    let (_, again) = vacuum(db.clone()).await.unwrap();
    (dropped, trim, slowest, again)
}

/// One call at a time, as one host.sock client's send to an agent makes
/// them: the agent looked up, the send, the inbox depth sampled, the
/// operator's message noted as an event. p50 and p99 of each, in ms.
async fn one_at_a_time(db: &Db) -> Vec<(&'static str, f64, f64)> {
    const N: usize = 300;
    let mut times: [Vec<Duration>; 4] = Default::default();
    for i in 0..N {
        let t = Instant::now();
        db.agent("agent-0").await.unwrap();
        times[0].push(t.elapsed());
        let t = Instant::now();
        db.send("operator", "agent-0", &format!("one {i}"))
            .await
            .unwrap();
        times[1].push(t.elapsed());
        let t = Instant::now();
        db.inbox_depth("agent-0").await.unwrap();
        times[2].push(t.elapsed());
        let t = Instant::now();
        db.add_events("agent-0", &[("operator".to_owned(), "{}".to_owned())])
            .await
            .unwrap();
        times[3].push(t.elapsed());
    }
    let ms = |v: &[Duration], q: f64| {
        v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
    };
    ["agent", "send", "inbox_depth", "add_events"]
        .into_iter()
        .zip(times.iter_mut())
        .map(|(name, v)| {
            v.sort();
            (name, ms(v, 0.5), ms(v, 0.99))
        })
        .collect()
}

/// Send -> wake latencies between two nodes' stores, and of them the part
/// after the send returned (committed), each sorted.
async fn wake_latency(a: &Db, b: &Db) -> (Vec<Duration>, Vec<Duration>) {
    let mut wakes = b.wakes();
    let (mut total, mut after) = (Vec::with_capacity(WAKES), Vec::with_capacity(WAKES));
    for i in 0..WAKES {
        let to = format!("wake-{i}");
        let start = Instant::now();
        let send = a.send("operator", &to, "wake up");
        tokio::pin!(send);
        let mut committed = None;
        loop {
            tokio::select! {
                r = &mut send, if committed.is_none() => {
                    r.unwrap();
                    committed = Some(Instant::now());
                }
                w = tokio::time::timeout(Duration::from_secs(5), wakes.next()) => match w {
                    Ok(Wake::Mailbox(m)) if m == to => break,
                    Ok(_) => {}
                    Err(_) => panic!("send {i}: no wake within 5 s"),
                },
            }
        }
        let woken = Instant::now();
        if committed.is_none() {
            send.await.unwrap();
        }
        total.push(woken - start);
        after.push(woken.saturating_duration_since(committed.unwrap_or(woken)));
    }
    total.sort();
    after.sort();
    (total, after)
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let run = |part: &str| only.as_deref().is_none_or(|o| part.contains(o));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster =
        TestCluster::start(true).expect("a throwaway PostgreSQL cluster (run scripts/deps.sh)");
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let database = cluster.database().await;
        let resolved = cluster.settings(&database).resolve(&|_| None).unwrap();
        let pg = Db::Postgres(PgStore::open(resolved, limits()).await.unwrap());
        let sqlite = Db::open_sqlite(&dir.path().join("hive.db"), limits()).unwrap();
        if run("send") {
            let total = SENDERS * SENDS_EACH;
            let rate = send_throughput(&pg).await;
            println!("send, {SENDERS} senders, PostgreSQL: {total} messages, {rate:.0} messages/s   (goal >= 10000)");
            let rate = send_throughput(&sqlite).await;
            println!("send, {SENDERS} senders, sqlite:     {total} messages, {rate:.0} messages/s   (goal >= 20000)");
        }
        if run("one") {
            for (label, db) in [("PostgreSQL", &pg), ("sqlite", &sqlite)] {
                for (call, p50, p99) in one_at_a_time(db).await {
                    println!("one at a time, {label}: {call:<12} p50 {p50:.3} ms, p99 {p99:.3} ms");
                }
            }
        }
        if run("events") {
            let events = AGENTS * EVENT_BATCHES * EVENT_BATCH;
            let rate = event_ingest(&pg).await;
            println!("event ingest, {AGENTS} agents x {EVENT_BATCH} per batch, PostgreSQL: {events} events, {rate:.0} events/s   (goal >= 50000)");
            let rate = event_ingest(&sqlite).await;
            println!("event ingest, {AGENTS} agents x {EVENT_BATCH} per batch, sqlite:     {events} events, {rate:.0} events/s");
        }
        if run("trim") {
            let resolved = cluster
                .settings(&cluster.database().await)
                .resolve(&|_| None)
                .unwrap();
            let pg = Db::Postgres(PgStore::open(resolved, trim_limits()).await.unwrap());
            let sqlite = Db::open_sqlite(&dir.path().join("trim.db"), trim_limits()).unwrap();
            for (label, db) in [("PostgreSQL", &pg), ("sqlite", &sqlite)] {
                let (dropped, trim, slowest, again) = history_trim(db).await;
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                println!(
                    "history trim, {label}: {TRIM_EVENTS} events of 2 KB past a {} MiB budget: {dropped} dropped in {:.0} ms, a send meanwhile waited at most {:.1} ms; the next vacuum (nothing new) {:.1} ms",
                    TRIM_BUDGET >> 20,
                    ms(trim),
                    ms(slowest),
                    ms(again),
                );
            }
        }
        if run("wake") {
            // A second node: its own pool and listener on the same database.
            let resolved = cluster.settings(&database).resolve(&|_| None).unwrap();
            let other = Db::Postgres(PgStore::open(resolved, limits()).await.unwrap());
            let (lat, after) = wake_latency(&pg, &other).await;
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let pct = |v: &[Duration], p: usize| ms(v[(v.len() * p / 100).min(v.len() - 1)]);
            println!(
                "cross-node send -> wake, PostgreSQL: {WAKES} sends one at a time, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms   (goal p99 < 20 ms)",
                pct(&lat, 50),
                pct(&lat, 99),
                ms(lat[lat.len() - 1]),
            );
            println!(
                "  of which after the send returned (commit -> wake): p50 {:.2} ms, p99 {:.2} ms",
                pct(&after, 50),
                pct(&after, 99),
            );
        }
    });
    drop(rt);
    drop(cluster);
}
