//! A turn's end is one transaction: written in full (messages settled,
//! figures, spend, session, idle state, `turn_end` then `state`), or, when
//! anything in it fails or the lease is lost, not at all, its claims still
//! held by the turn until they come back as a dropped harness's do.

use std::time::Duration;

use hive_sh4re::AgentState;

use super::{Fixture, agent, both};
use crate::clock::{day_of, now_ms};
use crate::store::{
    Db, Fence, INBOX_DEPTH, INBOX_DEPTH_PEAK, Settle, Spend, StoreError, TurnEndWrite,
};

const LONG: Duration = Duration::from_secs(60);
/// Short enough to wait out in a test; long enough that a loaded machine
/// does not let it run out between two statements that rely on it.
const SHORT: Duration = Duration::from_millis(700);

/// A turn's figures: 100 tokens in, 20 out, half a dollar.
const FIGURES: &[(&str, f64)] = &[
    ("turn.duration_ms", 1200.0),
    ("turn.exit.success", 1.0),
    ("tokens.in", 100.0),
    ("tokens.out", 20.0),
    ("cost.usd", 0.5),
];

/// What [`FIGURES`] spend.
const SPENT: Spend = Spend {
    usd: 0.5,
    tokens: 120.0,
};

/// The `turn_end` payload the tests store: the held ids, as the hive's has them.
fn turn_end(held: &[i64]) -> String {
    format!(r#"{{"exit_class":"success","held":{held:?}}}"#)
}

const IDLE: &str = r#"{"state":"idle"}"#;

/// alice's turn end under `fence`, with [`FIGURES`], an inbox peak of 5 and
/// session `s1` over `s0`.
fn end<'a>(fence: Fence<'a>, settle: Settle<'a>) -> TurnEndWrite<'a> {
    TurnEndWrite {
        agent: "alice",
        fence,
        settle,
        figures: FIGURES,
        inbox_peak: 5,
        session: Some("s1"),
        resumed: Some("s0"),
        turn_end: &turn_end,
        idle: IDLE,
    }
}

fn fenced<T: std::fmt::Debug>(r: crate::store::Result<T>) -> bool {
    match r {
        Err(StoreError::Fenced { .. }) => true,
        other => panic!("expected a refusal for a stale lease, got {other:?}"),
    }
}

/// alice (session `s0`, in a turn) with messages `m1`, `m2` claimed under
/// node n1's lease (for `ttl`); the fence and the ids.
async fn in_a_turn(s: &Db, ttl: Duration) -> (i64, Vec<i64>) {
    s.create_agent(&agent("alice")).await.unwrap();
    s.set_session("alice", Some("s0")).await.unwrap();
    s.set_state("alice", AgentState::Thinking, Some("haiku"))
        .await
        .unwrap();
    let m1 = s.send("operator", "alice", "one").await.unwrap();
    let m2 = s.send("bob", "alice", "two").await.unwrap();
    let epoch = s
        .acquire_lease("alice", "n1", ttl)
        .await
        .unwrap()
        .unwrap()
        .epoch;
    let n1 = Fence { node: "n1", epoch };
    let got = s.claim_fenced("alice", None, 10, n1).await.unwrap();
    assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [m1, m2]);
    (epoch, vec![m1, m2])
}

/// Nothing of alice's turn end is stored: her two messages are undelivered
/// and still claimed (none to take, none held), no figure, no spend, no
/// event; her row is as the turn left it (in a turn, session `s0`).
async fn nothing_written(s: &Db, what: &str) {
    assert_eq!(s.inbox_depth("alice").await.unwrap(), 2, "{what}: depth");
    assert_eq!(
        s.oldest_unclaimed("alice", None).await.unwrap(),
        None,
        "{what}: the claims went"
    );
    assert_eq!(s.held_count("alice").await.unwrap(), 0, "{what}: held");
    let msgs = s.recent_messages("alice", 10).await.unwrap();
    assert!(
        msgs.iter().all(|m| m.delivered_at.is_none()),
        "{what}: acknowledged {msgs:?}"
    );
    assert_eq!(
        s.stats_since(Some("alice"), 0).await.unwrap(),
        [],
        "{what}: figures"
    );
    let today = day_of(now_ms());
    assert_eq!(
        s.spend_on(Some("alice"), today).await.unwrap(),
        Spend::default(),
        "{what}: spend"
    );
    assert_eq!(
        s.events_since("alice", 0, 100).await.unwrap(),
        [],
        "{what}: events"
    );
    let row = s.agent("alice").await.unwrap().unwrap();
    assert_eq!(
        (row.state, row.session_id.as_deref(), row.last_turn_at),
        (AgentState::Thinking, Some("s0"), None),
        "{what}: the agent's row"
    );
}

/// A write of a turn's end made to fail, by a trigger on its table.
struct Breakage {
    name: &'static str,
    /// The table whose trigger breaks it.
    table: &'static str,
    sqlite: &'static str,
    pg: &'static str,
}

/// A failure at each write of a turn's end, from the first after the
/// messages' settlement to the very last.
const BREAKAGES: &[Breakage] = &[
    Breakage {
        name: "the figures",
        table: "stats",
        sqlite: "CREATE TRIGGER broken BEFORE INSERT ON stats BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        pg: "CREATE TRIGGER broken BEFORE INSERT ON stats FOR EACH ROW EXECUTE FUNCTION broken();",
    },
    Breakage {
        name: "the day's spend",
        table: "spend_days",
        sqlite: "CREATE TRIGGER broken BEFORE UPDATE ON spend_days BEGIN SELECT RAISE(ABORT, 'injected'); END; \
                 CREATE TRIGGER broken_insert BEFORE INSERT ON spend_days BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        pg: "CREATE TRIGGER broken BEFORE INSERT OR UPDATE ON spend_days FOR EACH ROW EXECUTE FUNCTION broken();",
    },
    Breakage {
        name: "the agent's row",
        table: "agents",
        sqlite: "CREATE TRIGGER broken BEFORE UPDATE ON agents BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        pg: "CREATE TRIGGER broken BEFORE UPDATE ON agents FOR EACH ROW EXECUTE FUNCTION broken();",
    },
    Breakage {
        name: "the turn_end event",
        table: "events",
        sqlite: "CREATE TRIGGER broken BEFORE INSERT ON events WHEN NEW.kind = 'turn_end' \
                 BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        pg: "CREATE TRIGGER broken BEFORE INSERT ON events FOR EACH ROW WHEN (NEW.kind = 'turn_end') \
             EXECUTE FUNCTION broken();",
    },
    Breakage {
        name: "the state event, the last write",
        table: "events",
        sqlite: "CREATE TRIGGER broken BEFORE INSERT ON events WHEN NEW.kind = 'state' \
                 BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        pg: "CREATE TRIGGER broken BEFORE INSERT ON events FOR EACH ROW WHEN (NEW.kind = 'state') \
             EXECUTE FUNCTION broken();",
    },
];

impl Breakage {
    /// Breaks the write, from outside the store.
    async fn apply(&self, f: &Fixture, s: &Db) {
        match s {
            Db::Sqlite(_) => f.execute(self.sqlite).await,
            Db::Postgres(_) => {
                f.execute(
                    "CREATE OR REPLACE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'injected'; END $$;",
                )
                .await;
                f.execute(self.pg).await;
            }
        }
    }

    /// Mends what [`Self::apply`] broke.
    async fn undo(&self, f: &Fixture, s: &Db) {
        match s {
            Db::Sqlite(_) => {
                f.execute("DROP TRIGGER IF EXISTS broken; DROP TRIGGER IF EXISTS broken_insert;")
                    .await
            }
            Db::Postgres(_) => {
                f.execute(&format!("DROP TRIGGER broken ON {};", self.table))
                    .await
            }
        }
    }
}

both! {
    async fn a_turns_end_is_written_in_full_and_read_back_in_order(f) {
        let s = f.open().await;
        let (epoch, ids) = in_a_turn(&s, LONG).await;
        // One more arrives during the turn: the depth left counts it.
        let m3 = s.send("operator", "alice", "three").await.unwrap();
        let n1 = Fence { node: "n1", epoch };
        let ended = s.end_turn(&end(n1, Settle::Ack(&ids))).await.unwrap();
        assert_eq!(ended.held, Vec::<i64>::new());
        assert_eq!(ended.inbox_depth, 1);
        assert_eq!(ended.spend, SPENT);
        // The messages: acknowledged, and the one that came meanwhile waits.
        let msgs = s.recent_messages("alice", 10).await.unwrap();
        let delivered: Vec<bool> = msgs.iter().map(|m| m.delivered_at.is_some()).collect();
        assert_eq!(delivered, [true, true, false]);
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 1);
        assert_eq!(s.oldest_unclaimed("alice", None).await.unwrap().map(|(_, id)| id), Some(m3));
        // The figures, at one instant, with the inbox's.
        let stats = s.stats_since(Some("alice"), 0).await.unwrap();
        let mut got: Vec<(&str, f64)> = stats.iter().map(|r| (r.key.as_str(), r.value)).collect();
        got.sort_by(|a, b| a.0.cmp(b.0));
        let mut want = FIGURES.to_vec();
        want.extend([(INBOX_DEPTH, 1.0), (INBOX_DEPTH_PEAK, 5.0)]);
        want.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(got, want);
        assert!(stats.iter().all(|r| r.ts == stats[0].ts), "{stats:?}");
        assert_eq!(s.spend_on(Some("alice"), day_of(now_ms())).await.unwrap(), SPENT);
        // The row: idle, the turn's end noted, the session the turn reported.
        let row = s.agent("alice").await.unwrap().unwrap();
        assert_eq!(row.state, AgentState::Idle);
        assert!(row.last_turn_at.is_some_and(|t| t >= stats[0].ts), "{row:?}");
        assert_eq!(row.session_id.as_deref(), Some("s1"));
        // The events: turn_end, then the state, the agent's newest.
        let events = s.events_since("alice", 0, 100).await.unwrap();
        let kinds: Vec<(&str, &str)> =
            events.iter().map(|e| (e.kind.as_str(), e.payload_json.as_str())).collect();
        assert_eq!(kinds, [("turn_end", turn_end(&[]).as_str()), ("state", IDLE)]);
        assert_eq!([events[0].id, events[1].id], [ended.turn_end, ended.state]);
        assert!(ended.turn_end < ended.state);
        assert_eq!(s.last_turn_event("alice").await.unwrap().unwrap().id, ended.turn_end);
    }

    async fn a_cancelled_turn_holds_its_messages_and_a_failed_one_releases_them(f) {
        let s = f.open().await;
        let (epoch, ids) = in_a_turn(&s, LONG).await;
        let n1 = Fence { node: "n1", epoch };
        // The operator started a fresh session meanwhile: the turn's is not kept.
        s.set_session("alice", None).await.unwrap();
        let ended = s.end_turn(&end(n1, Settle::Hold)).await.unwrap();
        assert_eq!(ended.held, ids, "the held ids");
        assert_eq!(ended.inbox_depth, 2);
        let events = s.events_since("alice", 0, 100).await.unwrap();
        assert_eq!(events[0].payload_json, turn_end(&ids), "turn_end names what was held");
        assert_eq!(s.held_count("alice").await.unwrap(), 2);
        assert_eq!(s.oldest_unclaimed("alice", None).await.unwrap(), None, "held ones start no turn");
        assert_eq!(s.agent("alice").await.unwrap().unwrap().session_id, None);
        // The next turn takes them along; it fails, and they come back to run again.
        s.send("operator", "alice", "go on").await.unwrap();
        s.set_state("alice", AgentState::Thinking, None).await.unwrap();
        assert_eq!(s.claim_fenced("alice", None, 10, n1).await.unwrap().len(), 3);
        let ended = s.end_turn(&end(n1, Settle::Release)).await.unwrap();
        assert_eq!((ended.held.len(), ended.inbox_depth), (0, 3));
        assert_eq!(s.oldest_unclaimed("alice", None).await.unwrap().map(|(_, id)| id), Some(ids[0]));
        assert_eq!(s.held_count("alice").await.unwrap(), 0);
        // Each turn's spend counts once.
        let spent = s.spend_on(Some("alice"), day_of(now_ms())).await.unwrap();
        assert_eq!(spent, Spend { usd: 2.0 * SPENT.usd, tokens: 2.0 * SPENT.tokens });
        let kinds: Vec<String> =
            s.events_since("alice", 0, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["turn_end", "state", "turn_end", "state"]);
    }

    async fn a_failure_anywhere_in_a_turns_end_writes_none_of_it(f) {
        let s = f.open().await;
        let (epoch, ids) = in_a_turn(&s, LONG).await;
        let n1 = Fence { node: "n1", epoch };
        for b in BREAKAGES {
            b.apply(&f, &s).await;
            for settle in [Settle::Ack(&ids), Settle::Hold, Settle::Release] {
                let r = s.end_turn(&end(n1, settle)).await;
                assert!(r.is_err(), "{} broken, {settle:?}: {r:?}", b.name);
                nothing_written(&s, &format!("{} broken, {settle:?}", b.name)).await;
            }
            b.undo(&f, &s).await;
        }
        // The harness, refused, goes away: its claims come back, and the
        // messages to the next turn, which ends them.
        assert_eq!(s.release_claims_fenced("alice", n1).await.unwrap(), 2);
        let again = s.claim_fenced("alice", None, 10, n1).await.unwrap();
        assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
        s.end_turn(&end(n1, Settle::Ack(&ids))).await.unwrap();
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 0);
        assert_eq!(s.spend_on(Some("alice"), day_of(now_ms())).await.unwrap(), SPENT);
        assert_eq!(s.events_since("alice", 0, 100).await.unwrap().len(), 2);
    }

    async fn a_turns_end_under_a_lost_lease_writes_nothing(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let (epoch, ids) = in_a_turn(&a, SHORT).await;
        let n1 = Fence { node: "n1", epoch };
        for wrong in [Fence { node: "n2", epoch }, Fence { node: "n1", epoch: epoch + 1 }] {
            assert!(fenced(a.end_turn(&end(wrong, Settle::Ack(&ids))).await), "{wrong:?}");
            nothing_written(&a, &format!("{wrong:?}")).await;
        }
        // Run out, nobody took it yet: n1 writes nothing, and its claims wait
        // for whoever takes the lease.
        tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
        for settle in [Settle::Ack(&ids), Settle::Hold, Settle::Release] {
            assert!(fenced(a.end_turn(&end(n1, settle)).await), "{settle:?}");
            nothing_written(&a, &format!("run out, {settle:?}")).await;
        }
        // Taken over: the claims come back to the new holder, whose turn
        // takes the messages again; the old holder still writes nothing.
        let new = b.acquire_lease("alice", "n2", LONG).await.unwrap().unwrap();
        assert_eq!(new.released_claims, 2);
        let n2 = Fence { node: "n2", epoch: new.epoch };
        let again = b.claim_fenced("alice", None, 10, n2).await.unwrap();
        assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
        assert!(fenced(a.end_turn(&end(n1, Settle::Ack(&ids))).await));
        nothing_written(&b, "after the takeover").await;
        let ended = b.end_turn(&end(n2, Settle::Ack(&ids))).await.unwrap();
        assert_eq!((ended.inbox_depth, ended.spend), (0, SPENT));
    }
}
