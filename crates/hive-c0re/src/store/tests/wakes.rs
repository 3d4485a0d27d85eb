//! Wakes across nodes: a commit on one node wakes the others within
//! milliseconds, never for a write that did not commit, and a listener that
//! lost its connection says so (`Resync`) and listens again.

use std::time::{Duration, Instant};

use super::pg_only::fixture;
use super::{Backend, Fixture, agent};
use crate::store::pg::TestCluster;
use crate::store::{
    BudgetOverride, Db, HIVE_WIDE, Limits, NewApproval, NewRequest, SendError, Wake, Wakes,
};
use hive_sh4re::AgentState;
use hive_sh4re::host::{ApprovalKind, ApprovalStatus};

/// Generous: a correctness bound, not a speed figure (see the `store` bench).
const SOON: Duration = Duration::from_secs(2);
/// How long a test watches for a wake that must not come.
const QUIET: Duration = Duration::from_millis(300);

/// True for a wake only the operator's surfaces follow (what they show
/// changed); the tests of waiters skip those.
fn shown(w: &Wake) -> bool {
    matches!(
        w,
        Wake::Events { .. } | Wake::Agent(_) | Wake::Approvals | Wake::Notifications
    )
}

/// The next wake, whatever it is.
async fn next_any(w: &mut Wakes) -> Wake {
    tokio::time::timeout(SOON, w.next())
        .await
        .expect("no wake within 2 s")
}

/// The next wake for a waiter.
async fn next(w: &mut Wakes) -> Wake {
    loop {
        let wake = next_any(w).await;
        if !shown(&wake) {
            return wake;
        }
    }
}

/// No wake for a waiter comes for a while.
async fn nothing(w: &mut Wakes) {
    let quiet = tokio::time::Instant::now() + QUIET;
    while let Ok(wake) = tokio::time::timeout_at(quiet, w.next()).await {
        assert!(shown(&wake), "an unexpected wake: {wake:?}");
    }
}

/// No wake at all comes for a while.
async fn silence(w: &mut Wakes) {
    if let Ok(wake) = tokio::time::timeout(QUIET, w.next()).await {
        panic!("an unexpected wake: {wake:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_has_one_node_and_its_subscription_yields_nothing() {
    let f = Fixture::new(Backend::Sqlite).await;
    let a = f.open().await;
    let mut w = a.wakes();
    a.send("operator", "alice", "hi").await.unwrap();
    a.claim("alice", 10).await.unwrap();
    a.release_claims("alice").await.unwrap();
    nothing(&mut w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_on_one_node_wakes_the_other_and_not_itself() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    let b = f.second(&a).await;
    let (mut wa, mut wb) = (a.wakes(), b.wakes());
    let started = Instant::now();
    a.send("operator", "alice", "hi").await.unwrap();
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    println!("send -> wake on the other node: {:?}", started.elapsed());
    // b's own send wakes a, not b: b's broker wakes its own waiters.
    b.send("alice", "operator", "hello").await.unwrap();
    a.send("operator", "bob", "hi").await.unwrap();
    assert_eq!(next(&mut wb).await, Wake::Mailbox("bob".into()));
    assert_eq!(next(&mut wa).await, Wake::Mailbox("operator".into()));
    nothing(&mut wa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_did_not_commit_wakes_nobody() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f
        .open_with(Limits {
            inbox_cap: 1,
            ..Limits::default()
        })
        .await;
    let b = f.second(&a).await;
    let mut wb = b.wakes();
    a.send("operator", "alice", "fits").await.unwrap();
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    // Refused at the cap: its batch commits, but stores nothing for alice.
    let full = a.send("operator", "alice", "over the cap").await;
    assert!(matches!(full, Err(SendError::InboxFull { .. })), "{full:?}");
    nothing(&mut wb).await;
    // A body PostgreSQL refuses (text cannot hold NUL) rolls its batch back:
    // `Db::send` refuses it before any batch, so it goes to the backend here.
    assert!(matches!(
        a.send("operator", "carol", "a\0b").await,
        Err(SendError::Nul)
    ));
    let crate::store::Db::Postgres(pg) = &a else {
        unreachable!("the wakes fixture is PostgreSQL")
    };
    let refused = pg.send("operator", "carol", "a\0b", None, None).await;
    assert!(matches!(refused, Err(SendError::Store(_))), "{refused:?}");
    assert_eq!(a.inbox_depth("carol").await.unwrap(), 0);
    nothing(&mut wb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_coming_back_and_answers_wake_the_other_node() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    let b = f.second(&a).await;
    let mut wb = b.wakes();
    a.send("operator", "alice", "hi").await.unwrap();
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    a.claim("alice", 10).await.unwrap();
    // Nothing claimed, nothing comes back: no wake.
    a.release_claims("bob").await.unwrap();
    assert_eq!(a.release_claims("alice").await.unwrap(), 1);
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    a.claim("alice", 10).await.unwrap();
    assert_eq!(a.release_all_claims().await.unwrap(), 1);
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    // A taken-over lease gives the dead holder's claims back, and wakes.
    a.claim("alice", 10).await.unwrap();
    let l = a
        .acquire_lease("alice", "n1", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let m = a
        .acquire_lease("alice", "n2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.epoch, m.released_claims), (l.epoch + 1, 1));
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    // The operator answers on a: the asking agent's node b hears of it.
    let q = b.add_question("alice", "which?", &[], 60).await.unwrap();
    assert!(a.answer_question(q, "this").await.unwrap());
    assert_eq!(next(&mut wb).await, Wake::Question(q));
    assert!(!a.cancel_question(q).await.unwrap());
    let q2 = b.add_question("alice", "still?", &[], 60).await.unwrap();
    assert!(a.cancel_question(q2).await.unwrap());
    assert_eq!(next(&mut wb).await, Wake::Question(q2));
    // A nap cut short, a pause lifted, a budget changed.
    a.create_agent(&agent("alice")).await.unwrap();
    a.set_nap_until("alice", None).await.unwrap();
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    a.set_paused("alice", true).await.unwrap();
    a.set_paused("alice", false).await.unwrap();
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    let lift = |scope: &str| BudgetOverride {
        scope: scope.into(),
        day: 1,
        usd: None,
        tokens: None,
        lifted: true,
    };
    a.set_budget_override(&lift("alice")).await.unwrap();
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    // The hive's budget wakes every agent.
    a.set_budget_override(&lift(HIVE_WIDE)).await.unwrap();
    assert_eq!(next(&mut wb).await, Wake::Mailbox("alice".into()));
    nothing(&mut wb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_lost_its_connection_resyncs_and_wakes_again() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    let b = f.second(&a).await;
    let Db::Postgres(pb) = &b else { unreachable!() };
    let mut wb = b.wakes();
    let admin = TestCluster::shared().admin().await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = $1",
            &[&pb.listener_session()],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 1, "the listener's session was not found");
    // A send while nobody listens is lost; the Resync says to look again.
    a.send("operator", "alice", "while down").await.unwrap();
    let resync = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match wb.next().await {
                Wake::Resync => return,
                // Sent before the cut reached the listener: fine either way.
                Wake::Mailbox(m) if m == "alice" => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(
        resync.is_ok(),
        "no Resync after the listener's connection was cut"
    );
    a.send("operator", "bob", "after").await.unwrap();
    // A new listener may also be handed wakes committed just before it
    // listened (PostgreSQL starts it where the other listeners are): harmless.
    loop {
        match next(&mut wb).await {
            Wake::Mailbox(m) if m == "bob" => break,
            Wake::Mailbox(m) if m == "alice" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steering_request_wakes_its_node_and_its_outcome_the_asker() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    let b = f.second(&a).await;
    let (mut wa, mut wb) = (a.wakes(), b.wakes());
    let id = a
        .enqueue_request(&NewRequest {
            node: "beta",
            agent: "x",
            verb: "restart",
            args_json: "{}",
            asked_by: "alpha",
        })
        .await
        .unwrap();
    assert_eq!(next(&mut wb).await, Wake::Request("beta".into()));
    b.take_requests("beta", super::nodes::MINUTE).await.unwrap();
    b.finish_request(id, true, "").await.unwrap();
    assert_eq!(next(&mut wa).await, Wake::Outcome(id));
    nothing(&mut wa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_operator_sees_changing_on_one_node_wakes_the_others() {
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    let b = f.second(&a).await;
    let mut wb = b.wakes();
    a.create_agent(&agent("alice")).await.unwrap();
    assert_eq!(next_any(&mut wb).await, Wake::Agent("alice".into()));
    // A turn on alpha: its row and its events, each batch with its newest id.
    a.set_state("alice", AgentState::Thinking, Some("haiku"))
        .await
        .unwrap();
    assert_eq!(next_any(&mut wb).await, Wake::Agent("alice".into()));
    let ids = a
        .add_events("alice", &[("turn_start", "{}"), ("note", "{}")])
        .await
        .unwrap();
    assert_eq!(
        next_any(&mut wb).await,
        Wake::Events {
            agent: "alice".into(),
            last_id: ids[1]
        }
    );
    // An operator's message noted in alice's history: her inbox, then her events.
    let note = crate::store::SendNote {
        kind: "operator".into(),
        payload: Box::new(|id| format!("{{\"message_id\":{id}}}")),
    };
    let sent = a
        .send_keyed("operator", "alice", "hi", None, Some(note))
        .await
        .unwrap();
    assert_eq!(next_any(&mut wb).await, Wake::Mailbox("alice".into()));
    assert_eq!(
        next_any(&mut wb).await,
        Wake::Events {
            agent: "alice".into(),
            last_id: sent.event.expect("the note's event")
        }
    );
    // An update that changes no row wakes nobody.
    assert!(!a.set_status_text("nobody", "hi").await.unwrap());
    silence(&mut wb).await;
    let id = a
        .add_approval(&NewApproval {
            agent: "alice",
            kind: ApprovalKind::ApplyCommit,
            payload_json: "{}",
            commit_ref: "abc",
            description: Some("d"),
            while_fewer_than: None,
        })
        .await
        .unwrap()
        .expect("no bound");
    assert_eq!(next_any(&mut wb).await, Wake::Approvals);
    assert!(
        a.decide_approval(id, ApprovalStatus::Denied, None, "alpha")
            .await
            .unwrap()
    );
    assert_eq!(next_any(&mut wb).await, Wake::Approvals);
    // Decided once: the second decision changes nothing and wakes nobody.
    assert!(
        !a.decide_approval(id, ApprovalStatus::Approved, None, "alpha")
            .await
            .unwrap()
    );
    silence(&mut wb).await;
    let q = a.add_question("alice", "which?", &[], 60).await.unwrap();
    assert_eq!(next_any(&mut wb).await, Wake::Question(q));
    let n = a
        .add_notification("crash", Some("alice"), "alice crashed", "", &[])
        .await
        .unwrap();
    assert_eq!(next_any(&mut wb).await, Wake::Notifications);
    assert_eq!(a.mark_notifications_read(Some(n.id)).await.unwrap(), 1);
    assert_eq!(next_any(&mut wb).await, Wake::Notifications);
    assert_eq!(a.mark_notifications_read(None).await.unwrap(), 0);
    silence(&mut wb).await;
    assert!(a.delete_agent("alice").await.unwrap());
    assert_eq!(next_any(&mut wb).await, Wake::Agent("alice".into()));
    silence(&mut wb).await;
}

/// A turn's end on one node wakes the others once it commits, in the
/// order its writes come: the inbox its failed turn gave back, the agent's
/// row, its events up to the state's; one refused for a lost lease, none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turns_end_wakes_the_other_nodes_only_once_stored() {
    use crate::store::{Fence, Settle, TurnEndWrite};
    let Some(f) = fixture().await else {
        return;
    };
    let a = f.open().await;
    let b = f.second(&a).await;
    let mut wb = b.wakes();
    a.create_agent(&agent("alice")).await.unwrap();
    assert_eq!(next_any(&mut wb).await, Wake::Agent("alice".into()));
    a.send("operator", "alice", "hi").await.unwrap();
    assert_eq!(next_any(&mut wb).await, Wake::Mailbox("alice".into()));
    let epoch = a
        .acquire_lease("alice", "n1", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap()
        .epoch;
    let n1 = Fence { node: "n1", epoch };
    a.claim_fenced("alice", None, 10, n1).await.unwrap();
    let end = |fence| TurnEndWrite {
        agent: "alice",
        fence,
        settle: Settle::Release,
        figures: &[("turn.exit.failure", 1.0)],
        inbox_peak: 0,
        session: None,
        resumed: None,
        turn_end: &|_| "{}".to_owned(),
        idle: "{}",
    };
    let refused = a.end_turn(&end(Fence { node: "n2", epoch })).await;
    assert!(refused.is_err(), "{refused:?}");
    silence(&mut wb).await;
    let ended = a.end_turn(&end(n1)).await.unwrap();
    assert_eq!(next_any(&mut wb).await, Wake::Mailbox("alice".into()));
    assert_eq!(next_any(&mut wb).await, Wake::Agent("alice".into()));
    assert_eq!(
        next_any(&mut wb).await,
        Wake::Events {
            agent: "alice".into(),
            last_id: ended.state
        }
    );
    silence(&mut wb).await;
}
