//! What only the PostgreSQL backend has: connections that drop, TLS,
//! passwords, roles, and schedule slots raced by two nodes.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

use super::{Backend, Fixture};
use crate::store::pg::test_cluster::OWNER;
use crate::store::pg::{PgSettings, PgStore, TestCluster};
use crate::store::{Db, Limits, SendError, StoreError};

/// A fresh database, or None (with a note) when PostgreSQL is not installed.
pub(super) async fn fixture() -> Option<Fixture> {
    if TestCluster::missing() {
        return None;
    }
    Some(Fixture::new(Backend::Postgres).await)
}

pub(super) fn database(f: &Fixture) -> &str {
    f.database.as_deref().unwrap()
}

/// Ends every session on the test's database but the caller's, waiting until they are gone.
async fn drop_connections(f: &Fixture) -> u64 {
    let admin = TestCluster::shared().admin().await;
    admin
        .query(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1",
            &[&database(f)],
        )
        .await
        .unwrap()
        .len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recv_and_a_claim_update_the_rows_they_took_by_id_not_every_waiting_message() {
    let Some(f) = fixture().await else {
        return;
    };
    let s = f.open().await;
    // A burst read away (its inbox entries not yet vacuumed), a backlog
    // for another agent, and one message for `r`.
    let bodies: Vec<String> = (0..1500).map(|i| i.to_string()).collect();
    let burst = futures::future::join_all(bodies.iter().map(|b| s.send("a", "x", b))).await;
    assert!(burst.iter().all(Result::is_ok));
    while !s.recv("x", 1000).await.unwrap().is_empty() {}
    let backlog =
        futures::future::join_all(bodies[..300].iter().map(|b| s.send("a", "y", b))).await;
    assert!(backlog.iter().all(Result::is_ok));
    s.send("a", "r", "mine").await.unwrap();
    let c = TestCluster::shared().connect_as(OWNER, database(&f)).await;
    for (what, sql, types, args) in [
        (
            "recv",
            crate::store::pg::recv_sql(),
            "bigint, text, bigint, bigint",
            "1, 'r', 10, 1048576",
        ),
        (
            "claim",
            crate::store::pg::claim_sql(),
            "bigint, text, bigint, text",
            "1, 'r', 10, NULL",
        ),
    ] {
        c.batch_execute(&format!("PREPARE {what}({types}) AS {sql}"))
            .await
            .unwrap();
        let plan: Vec<String> = c
            .query(&format!("EXPLAIN EXECUTE {what}({args})"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        // The inbox index serves the choice of `r`'s messages, once; the
        // update finds them by primary key.
        assert_eq!(plan.matches("messages_inbox").count(), 1, "{what}:\n{plan}");
        assert!(plan.contains("messages_pkey"), "{what}:\n{plan}");
    }
    assert_eq!(s.recv("r", 10).await.unwrap()[0].body, "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_never_lost_across_a_dropped_connection() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    let b = f.second(&a).await;
    let before = a.send("operator", "alice", "before").await.unwrap();
    a.claim("alice", 10).await.unwrap();
    assert!(drop_connections(&f).await > 0);
    // The writer finds its connection gone before COMMIT and sends again on a fresh one.
    let after = a.send("operator", "alice", "after").await.unwrap();

    // Sends racing with connections being cut: every "sent" is stored; a
    // send may fail, but never claims success for a message it lost.
    let sender = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut ok = vec![];
            let mut failed = 0;
            for i in 0..300 {
                match a.send("operator", "alice", &format!("m{i}")).await {
                    Ok(id) => ok.push(id),
                    Err(SendError::Store(_)) => failed += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            (ok, failed)
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        drop_connections(&f).await;
    }
    let (ok, failed) = sender.await.unwrap();
    assert!(
        failed < 10,
        "{failed} of 300 sends failed: the retry does not work"
    );
    // Pooled connections learn of the cut when their socket says so: give them that moment.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;

    // The claim taken before the cut is the dead session's no more than the node's:
    // released (as a lease running out would), the message comes back.
    b.release_claims("alice").await.unwrap();
    let stored: HashSet<i64> = b
        .recv("alice", 1000)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert!(stored.contains(&before), "the claimed message was lost");
    assert!(stored.contains(&after));
    for id in &ok {
        assert!(
            stored.contains(id),
            "message {id} was reported sent and is not stored"
        );
    }
    assert_eq!(a.inbox_depth("alice").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_or_event_batch_is_stored_once() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    a.add_events("alice", &[("stream", "warm")]).await.unwrap();
    let work = {
        let a = a.clone();
        tokio::spawn(async move {
            let (mut sent, mut logged, mut noted) = (vec![], vec![], vec![]);
            for i in 0..200 {
                let item = [("stream".to_owned(), format!("e{i}"))];
                let body = format!("m{i}");
                let note = crate::store::SendNote {
                    kind: "operator".into(),
                    payload: Box::new(|id| id.to_string()),
                };
                let (s, e, n) = tokio::join!(
                    a.send("operator", "alice", &body),
                    a.add_events("alice", &item),
                    a.send_keyed("operator", "bob", &body, None, Some(note))
                );
                if let Ok(id) = s {
                    sent.push(id);
                }
                if let Ok(ids) = e {
                    logged.extend(ids);
                }
                if let Ok(n) = n {
                    noted.push(n);
                }
            }
            (sent, logged, noted)
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        drop_connections(&f).await;
    }
    let (sent, logged, noted) = work.await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let bodies: Vec<String> = a
        .recv("alice", 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    let distinct: HashSet<&String> = bodies.iter().collect();
    assert_eq!(distinct.len(), bodies.len(), "a send stored twice");
    assert!(bodies.len() >= sent.len());
    let events = a.events_before("alice", None, u32::MAX).await.unwrap();
    let ids: HashSet<i64> = events.iter().map(|e| e.id).collect();
    assert!(
        logged.iter().all(|id| ids.contains(id)),
        "an event reported stored is not"
    );
    let payloads: HashSet<&String> = events.iter().map(|e| &e.payload_json).collect();
    assert_eq!(payloads.len(), events.len(), "an event stored twice");
    // A noted send's event is stored with it, once, retried or not.
    let to_bob: Vec<String> = a
        .recv("bob", 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    let mut notes: Vec<String> = a
        .events_before("bob", None, u32::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload_json)
        .collect();
    notes.sort();
    let mut expected = to_bob.clone();
    expected.sort();
    assert_eq!(notes, expected, "each message to bob and its note, once");
    assert!(noted.len() <= to_bob.len() && noted.iter().all(|n| n.event.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_panics_writes_again_and_is_told_once() {
    use crate::store::pg::PANICS_A_WRITER;
    let Some(f) = fixture().await else {
        return;
    };
    let s = f.open().await;
    // The batch the writer held when it panicked is refused, as by a dropped connection.
    for _ in 0..2 {
        let refused = s.send("a", "b", PANICS_A_WRITER).await.unwrap_err();
        assert!(
            matches!(refused, SendError::Store(StoreError::Batch(_))),
            "{refused:?}"
        );
        let refused = s
            .add_events(PANICS_A_WRITER, &[("state", "{}")])
            .await
            .unwrap_err();
        assert!(matches!(refused, StoreError::Batch(_)), "{refused:?}");
    }
    // The writers run again: sends and events are stored as before.
    let id = s.send("a", "b", "after").await.unwrap();
    assert_eq!(s.recv("b", 10).await.unwrap()[0].id, id);
    let events = s.add_events("b", &[("state", "{}")]).await.unwrap();
    assert_eq!(events.len(), 1);
    // Told once for each writer, however often it panicked.
    let mut tasks = vec![];
    while tasks.len() < 2 {
        let told = tokio::time::timeout(std::time::Duration::from_secs(5), s.faults().next())
            .await
            .expect("a notice is due for each writer");
        tasks.extend(told.iter().map(|t| (t.task, t.count)));
    }
    tasks.sort_unstable();
    assert_eq!(tasks, [("store event writer", 1), ("store send writer", 1)]);
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), s.faults().next());
    assert!(more.await.is_err(), "the second panics were not told again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_slot_fires_once_when_two_nodes_race() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    let b = f.second(&a).await;
    for slot in 0..10 {
        let id = a
            .add_schedule("alice", "every 1m", "tick", true, 1000 + slot, "operator")
            .await
            .unwrap();
        let due = a.due_schedules(i64::MAX, Some("alpha")).await.unwrap();
        let s = due.iter().find(|s| s.id == id).unwrap().clone();
        let (x, y) = tokio::join!(
            a.fire_schedule(&s, Some(60_000), 60_000, 1000 + slot),
            b.fire_schedule(&s, Some(60_000), 60_000, 1000 + slot)
        );
        let fired = [x.unwrap(), y.unwrap()];
        assert_eq!(
            fired.iter().flatten().count(),
            1,
            "slot {slot} fired {fired:?}"
        );
        a.remove_schedule(id).await.unwrap();
    }
    assert_eq!(a.recv("alice", 100).await.unwrap().len(), 10);
    assert_eq!(b.inbox_depth("alice").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_migrating_at_once_migrate_once() {
    let Some(f) = fixture().await else {
        return;
    };
    let (a, b) = tokio::join!(f.open(), f.open());
    let (Db::Postgres(a), Db::Postgres(_)) = (&a, &b) else {
        unreachable!()
    };
    assert_eq!(a.schema_version().await.unwrap(), crate::store::pg::VERSION);
}

/// Settings for the test's database over TCP with `query` appended, host `host`.
fn tls_settings(f: &Fixture, host: &str, query: &str) -> PgSettings {
    let c = TestCluster::shared();
    let mut s = PgSettings::new(format!(
        "postgres://{OWNER}@{host}:{}/{}?{query}",
        c.port(),
        database(f)
    ));
    s.password = c.settings(database(f)).password;
    s
}

/// Connects with `settings`; Ok(whether the session is encrypted).
async fn encrypted(settings: PgSettings) -> Result<bool, StoreError> {
    encrypted_with(settings, None).await
}

/// [`encrypted`] with `PGSSLMODE` set to `pgsslmode` for the settings to read.
async fn encrypted_with(settings: PgSettings, pgsslmode: Option<&str>) -> Result<bool, StoreError> {
    let env = |k: &str| {
        (k == "PGSSLMODE")
            .then_some(pgsslmode)
            .flatten()
            .map(Into::into)
    };
    let s = PgStore::open(settings.resolve(&env)?, Limits::default()).await?;
    let c = s.client().await.unwrap();
    Ok(c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_honoured() {
    let Some(f) = fixture().await else {
        return;
    };
    drop(f.open().await);
    let ca = TestCluster::shared().ca_cert();
    let ca = format!("sslrootcert={}", ca.display());
    // The server's certificate names localhost and is signed by the cluster's own CA.
    assert!(
        encrypted(tls_settings(
            &f,
            "localhost",
            &format!("sslmode=verify-full&{ca}")
        ))
        .await
        .unwrap()
    );
    assert!(
        encrypted(tls_settings(
            &f,
            "127.0.0.1",
            &format!("sslmode=verify-ca&{ca}")
        ))
        .await
        .unwrap()
    );
    assert!(
        encrypted(tls_settings(&f, "127.0.0.1", "sslmode=require"))
            .await
            .unwrap()
    );
    assert!(
        encrypted(tls_settings(&f, "127.0.0.1", "sslmode=prefer"))
            .await
            .unwrap()
    );
    assert!(
        !encrypted(tls_settings(&f, "127.0.0.1", "sslmode=disable"))
            .await
            .unwrap()
    );
    // verify-full refuses a certificate for another name, and one no trusted CA signed.
    let wrong_name = encrypted(tls_settings(
        &f,
        "127.0.0.1",
        &format!("sslmode=verify-full&{ca}"),
    ))
    .await;
    assert!(
        matches!(wrong_name, Err(StoreError::Connect { .. })),
        "{wrong_name:?}"
    );
    // The same, written as key=value pairs (tokio-postgres alone refuses verify-full there).
    let c = TestCluster::shared();
    let key_values = |host: &str| {
        let mut s = PgSettings::new(format!(
            "host={host} port={} user={OWNER} dbname={} sslmode=verify-full sslrootcert='{}'",
            c.port(),
            database(&f),
            c.ca_cert().display()
        ));
        s.password = c.settings(database(&f)).password;
        s
    };
    assert!(encrypted(key_values("localhost")).await.unwrap());
    let wrong_name = encrypted(key_values("127.0.0.1")).await;
    assert!(
        matches!(wrong_name, Err(StoreError::Connect { .. })),
        "{wrong_name:?}"
    );
    // (Without sslrootcert the system's roots are used; where there are none, that is refused too.)
    for mode in ["verify-full", "verify-ca"] {
        let untrusted = encrypted(tls_settings(&f, "localhost", &format!("sslmode={mode}"))).await;
        assert!(
            matches!(
                untrusted,
                Err(StoreError::Connect { .. } | StoreError::Settings(_))
            ),
            "{mode}: {untrusted:?}"
        );
    }
}

/// A man in the middle on a loopback port of its own: it answers the
/// client's SSLRequest with `N` (as a server without TLS would), then relays
/// the session in the clear to the cluster on `to`.
async fn tls_stripper(to: u16) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut first = [0u8; 8];
                if client.read_exact(&mut first).await.is_err() {
                    return;
                }
                let mut server = tokio::net::TcpStream::connect(("127.0.0.1", to))
                    .await
                    .unwrap();
                let said = if first == SSL_REQUEST {
                    client.write_all(b"N").await
                } else {
                    server.write_all(&first).await
                };
                if said.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_cannot_strip_tls_that_the_settings_require() {
    let Some(f) = fixture().await else {
        return;
    };
    drop(f.open().await);
    let c = TestCluster::shared();
    let mitm = tls_stripper(c.port()).await;
    let password = c.settings(database(&f)).password;
    let connect = |url: String, pgsslmode: Option<&'static str>| {
        let mut s = PgSettings::new(url);
        s.password = password.clone();
        encrypted_with(s, pgsslmode)
    };
    let db = database(&f);
    let url = |mode: &str| format!("postgres://{OWNER}@127.0.0.1:{mitm}/{db}?sslmode={mode}");
    let key_values =
        |mode: &str| format!("host=127.0.0.1 port={mitm} user={OWNER} dbname={db} sslmode={mode}");
    // Through the stripper `prefer` goes on in the clear (that is what it
    // means), which shows the stripper works.
    assert!(!connect(url("prefer"), None).await.unwrap());
    assert!(!connect(key_values("prefer"), None).await.unwrap());
    // `require` refuses the connection, written as a URL or as key=value,
    // and PGSSLMODE in the environment does not weaken what the string says.
    for (settings, env) in [
        (url("require"), None),
        (url("require"), Some("disable")),
        (key_values("require"), None),
        (key_values("require"), Some("disable")),
        (key_values("require"), Some("prefer")),
        (key_values("verify-full"), Some("disable")),
    ] {
        let got = connect(settings.clone(), env).await;
        assert!(
            matches!(got, Err(StoreError::Connect { .. })),
            "{settings} with PGSSLMODE={env:?}: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_comes_from_a_passfile_and_a_wrong_one_reads_as_a_sentence() {
    let Some(f) = fixture().await else {
        return;
    };
    let c = TestCluster::shared();
    let password = c.settings(database(&f)).password.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let passfile = dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!(
            "127.0.0.1:{}:{}:{OWNER}:{password}\n",
            c.port(),
            database(&f)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!(
        "postgres://{OWNER}@127.0.0.1:{}/{}?sslmode=disable",
        c.port(),
        database(&f)
    );
    let settings = PgSettings::new(url);
    let env = |k: &str| (k == "PGPASSFILE").then(|| passfile.display().to_string());
    let s = PgStore::open(settings.resolve(&env).unwrap(), Limits::default())
        .await
        .unwrap();
    s.send("operator", "alice", "hi", None, None).await.unwrap();

    let wrong = |k: &str| (k == "PGPASSWORD").then(|| "not-the-password".to_owned());
    let e = PgStore::open(settings.resolve(&wrong).unwrap(), Limits::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("could not connect to PostgreSQL at hive_owner@127.0.0.1"),
        "{e}"
    );
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("not-the-password"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_role_with_the_documented_grants_runs_the_hive_but_cannot_change_its_schema() {
    let Some(f) = fixture().await else {
        return;
    };
    drop(f.open().await);
    let c = TestCluster::shared();
    let owner = c.connect_as(OWNER, database(&f)).await;
    let group = format!("hive_nodes_{}", database(&f));
    let node = format!("hive_node_{}", database(&f));
    let password = c.settings(database(&f)).password.unwrap();
    let admin = c.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {group} NOLOGIN; CREATE ROLE {node} LOGIN PASSWORD '{password}' IN ROLE {group}"
        ))
        .await
        .unwrap();
    // The grants of docs/postgres.md, as the owner gives them.
    owner
        .batch_execute(&format!(
            "GRANT CONNECT ON DATABASE {db} TO {group};
             GRANT USAGE ON SCHEMA public TO {group};
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {group};
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {group};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {group};
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {group};",
            db = database(&f)
        ))
        .await
        .unwrap();
    let mut settings = PgSettings::new(format!(
        "postgres://{node}@127.0.0.1:{}/{}?sslmode=disable",
        c.port(),
        database(&f)
    ));
    settings.password = Some(password);
    let s = Db::Postgres(
        PgStore::open(settings.resolve(&|_| None).unwrap(), Limits::default())
            .await
            .unwrap(),
    );
    s.create_agent(&super::agent("alice")).await.unwrap();
    let id = s.send("operator", "alice", "hi").await.unwrap();
    assert_eq!(s.claim("alice", 10).await.unwrap()[0].id, id);
    assert_eq!(s.ack("alice", &[id]).await.unwrap(), 1);
    s.add_events("alice", &[("stream", "{}")]).await.unwrap();
    s.vacuum_messages().await.unwrap();
    let Db::Postgres(p) = &s else { unreachable!() };
    let e = p
        .client()
        .await
        .unwrap()
        .batch_execute("DROP TABLE messages")
        .await
        .unwrap_err();
    assert!(
        crate::store::pg::describe(&e).contains("must be owner"),
        "{e}"
    );

    // A schema behind this build needs the owner: the node role says so in a sentence.
    owner
        .batch_execute("UPDATE hive_schema SET version = 0")
        .await
        .unwrap();
    let e = PgStore::open(settings.resolve(&|_| None).unwrap(), Limits::default())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("may not change the schema"), "{e}");
}

/// The heartbeat and a lease's renewal have connections of their own: an
/// agent's requests keeping the whole pool busy (a hostile one has 32
/// connections to its node) made them wait for a free one, up to 30 s, and
/// a renewal that late lets the lease run out and stops every harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_and_a_renewal_do_not_wait_behind_a_busy_pool() {
    let Some(f) = fixture().await else {
        return;
    };
    let Db::Postgres(pg) = f.open().await else {
        unreachable!()
    };
    pg.register_node("alpha", "", "alpha#test", 15_000)
        .await
        .unwrap();
    let ttl = std::time::Duration::from_secs(60);
    let lease = pg.acquire_lease("a", "alpha", ttl).await.unwrap().unwrap();
    // Every pooled connection taken, as by requests that take their time.
    let mut held = vec![];
    for _ in 0..16 {
        held.push(pg.client().await.unwrap());
    }
    let soon = std::time::Duration::from_secs(5);
    let renewed = tokio::time::timeout(soon, pg.renew_lease("a", "alpha", lease.epoch, ttl)).await;
    assert!(matches!(renewed, Ok(Ok(true))), "{renewed:?}");
    let beat = tokio::time::timeout(soon, pg.heartbeat("alpha", "alpha#test")).await;
    assert!(matches!(beat, Ok(Ok(true))), "{beat:?}");
    drop(held);
}
