//! What each table family promises, on both backends.

use std::collections::HashSet;

use hive_sh4re::AgentState;
use hive_sh4re::host::{ApprovalKind, ApprovalStatus, QuestionStatus};

use super::{agent, both, settled};
use crate::clock::{day_of, now_ms};
use crate::store::{
    BudgetOverride, DeliveryRow, HIVE_WIDE, Limits, NewAgent, NewApproval, NotificationRow,
    Registration, SendError, Spend, WebhookStats,
};

/// A request to deploy commit `abc` of `agent`, queued while fewer than `bound` wait.
fn apply_commit(agent: &str, bound: Option<u64>) -> NewApproval<'_> {
    NewApproval {
        agent,
        kind: ApprovalKind::ApplyCommit,
        payload_json: "{}",
        commit_ref: "abc",
        description: None,
        while_fewer_than: bound,
    }
}

/// Registers node `name` as its own daemon (`NAME#test`); the row stored.
async fn register(s: &crate::store::Db, name: &str, address: &str) -> crate::store::NodeRow {
    match s
        .register_node(name, address, &format!("{name}#test"), 15_000)
        .await
        .unwrap()
    {
        Registration::Done(row) => row,
        served => panic!("{name} is served by another daemon: {served:?}"),
    }
}

/// A heartbeat of node `name` by its own daemon (`NAME#test`).
async fn beat(s: &crate::store::Db, name: &str) -> bool {
    s.heartbeat(name, &format!("{name}#test")).await.unwrap()
}

/// Registers node alpha at `a:2` as daemon `holder`, live within `alive_ms`.
async fn register_again(s: &crate::store::Db, holder: &str, alive_ms: i64) -> Registration {
    s.register_node("alpha", "a:2", holder, alive_ms)
        .await
        .unwrap()
}

fn ids(v: &[crate::store::MessageRow]) -> Vec<i64> {
    v.iter().map(|m| m.id).collect()
}

both! {
    // ---- schema -------------------------------------------------------------

    async fn migrating_twice_is_a_no_op(f) {
        let s = f.open().await;
        s.send("operator", "alice", "kept").await.unwrap();
        drop(s);
        let s = f.open().await;
        assert_eq!(s.recv("alice", 10).await.unwrap().len(), 1);
    }

    async fn an_older_database_migrates_forward_and_keeps_its_rows(f) {
        let s = f.open().await;
        s.send("operator", "alice", "kept").await.unwrap();
        drop(s);
        f.set_schema_before_secrets().await;
        let s = f.open().await;
        assert_eq!(s.recv("alice", 10).await.unwrap()[0].body, "kept");
        s.set_secret("TOKEN", None, "a-value").await.unwrap();
        assert_eq!(s.secrets_for("alice").await.unwrap()["TOKEN"], "a-value");
        // The tables and indexes of every later migration are there too.
        let n = s.add_notification("message", None, "hi", "/", &["w"]).await.unwrap();
        assert_eq!(s.take_deliveries("w", now_ms(), now_ms(), 10).await.unwrap()[0].notification, n.id);
        let o = BudgetOverride { scope: "alice".into(), day: 1, usd: Some(1.0), tokens: None, lifted: false };
        s.set_budget_override(&o).await.unwrap();
        assert_eq!(s.budget_override("alice").await.unwrap(), Some(o));
        let plan = f.plan(&s, "SELECT MAX(id) FROM events WHERE kind = 'container_crash' GROUP BY agent").await;
        assert!(plan.contains("events_crash"), "{plan}");
        s.add_stats("alice", &[("cost.usd", 0.5)]).await.unwrap();
        let today = day_of(now_ms());
        assert_eq!(s.spend_on(Some("alice"), today).await.unwrap().usd, 0.5);
        register(&s, "alpha", "a:1").await;
        assert_eq!(s.nodes().await.unwrap().len(), 1);
    }

    async fn the_spend_of_figures_stored_before_its_table_is_summed_per_agent_and_day(f) {
        drop(f.open().await);
        f.set_schema_before_spend_days().await;
        let day = 20_000_i64;
        f.insert_stats(&[
            ("alice", day * 86_400_000 + 5, "cost.usd", 0.25),
            ("alice", day * 86_400_000 + 9, "cost.usd", 0.5),
            ("alice", day * 86_400_000 + 9, "tokens.in", 100.0),
            ("alice", day * 86_400_000 + 9, "tokens.out", -50.0),
            ("alice", day * 86_400_000 + 9, "turn.duration_ms", 7000.0),
            ("alice", (day + 1) * 86_400_000, "tokens.out", 30.0),
            ("bob", day * 86_400_000 + 1, "cost.usd", 1.0),
        ])
        .await;
        let s = f.open().await;
        assert_eq!(s.spend_on(Some("alice"), day).await.unwrap(), Spend { usd: 0.75, tokens: 100.0 });
        assert_eq!(s.spend_on(Some("alice"), day + 1).await.unwrap(), Spend { usd: 0.0, tokens: 30.0 });
        assert_eq!(s.spend_on(Some("bob"), day).await.unwrap(), Spend { usd: 1.0, tokens: 0.0 });
        assert_eq!(s.spend_on(None, day).await.unwrap(), Spend { usd: 1.75, tokens: 100.0 });
        assert_eq!(s.spend_on(Some("bob"), day + 1).await.unwrap(), Spend::default());
    }

    async fn refuses_a_newer_database(f) {
        drop(f.open().await);
        f.set_newer_schema().await;
        let e = f.try_open(Limits::default()).await.err().unwrap().to_string();
        assert!(e.contains("upgrade hive-c0re"), "{e}");
    }

    // ---- messages -----------------------------------------------------------

    async fn recv_returns_each_message_once(f) {
        let s = f.open().await;
        let a = s.send("operator", "alice", "one").await.unwrap();
        let b = s.send("operator", "alice", "two").await.unwrap();
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 2);
        let got = s.recv("alice", 10).await.unwrap();
        assert_eq!(ids(&got), [a, b]);
        assert_eq!((got[0].body.as_str(), got[0].sender.as_str()), ("one", "operator"));
        assert!(got[0].delivered_at.is_some());
        assert!(s.recv("alice", 10).await.unwrap().is_empty());
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 0);
    }

    async fn a_recv_takes_bodies_up_to_its_byte_bound_and_leaves_the_rest_waiting(f) {
        use hive_sh4re::limits::{MAX_BODY_BYTES, RECV_MAX_BYTES};
        let s = f.open().await;
        // Bodies at the size cap, bytes that JSON writes six times over.
        let big = "\u{1}".repeat(MAX_BODY_BYTES);
        let fit = RECV_MAX_BYTES / MAX_BODY_BYTES;
        let mut sent = vec![];
        for _ in 0..fit + 5 {
            sent.push(s.send("mallory", "alice", &big).await.unwrap());
        }
        let small = s.send("bob", "alice", "small").await.unwrap();
        let first = s.recv("alice", 1000).await.unwrap();
        assert_eq!(ids(&first), sent[..fit], "one recv takes what fits in the bound");
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 6, "the rest wait");
        let rest = s.recv("alice", 1000).await.unwrap();
        assert_eq!(ids(&rest), [&sent[fit..], &[small][..]].concat());
        // One message is taken whatever its size, so none is stuck.
        let huge = "x".repeat(RECV_MAX_BYTES + 1);
        let one = s.send("mallory", "alice", &huge).await.unwrap();
        let two = s.send("mallory", "alice", "after").await.unwrap();
        assert_eq!(ids(&s.recv("alice", 1000).await.unwrap()), [one]);
        assert_eq!(ids(&s.recv("alice", 1000).await.unwrap()), [two]);
    }

    async fn claimed_messages_come_back_after_release_until_acked(f) {
        let s = f.open().await;
        let a = s.send("bob", "alice", "hi").await.unwrap();
        assert_eq!(ids(&s.claim("alice", 10).await.unwrap()), [a]);
        assert!(s.claim("alice", 10).await.unwrap().is_empty(), "claimed twice");
        assert!(s.recv("alice", 10).await.unwrap().is_empty(), "recv saw a claimed message");
        s.release_claims("alice").await.unwrap();
        assert_eq!(ids(&s.claim("alice", 10).await.unwrap()), [a]);
        assert_eq!(s.ack("alice", &[a]).await.unwrap(), 1);
        s.release_claims("alice").await.unwrap();
        assert!(s.claim("alice", 10).await.unwrap().is_empty());
        assert_eq!(s.ack("alice", &[a]).await.unwrap(), 0, "acked twice");
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 0);
    }

    async fn ack_ignores_other_mailboxes_ids(f) {
        let s = f.open().await;
        let a = s.send("bob", "alice", "for alice").await.unwrap();
        s.claim("alice", 10).await.unwrap();
        assert_eq!(s.ack("mallory", &[a]).await.unwrap(), 0);
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 1);
        s.release_node_claims("alpha").await.unwrap();
        assert_eq!(ids(&s.claim("alice", 10).await.unwrap()), [a]);
    }

    async fn a_starting_node_takes_back_only_its_own_agents_claims(f) {
        let s = f.open().await;
        s.create_agent(&agent("a")).await.unwrap();
        s.create_agent(&NewAgent { node: "beta", ..agent("b") }).await.unwrap();
        let to_a = s.send("operator", "a", "mine").await.unwrap();
        let to_b = s.send("operator", "b", "beta's").await.unwrap();
        // A destroyed agent's mailbox: no node owns it, any starting node frees it.
        let to_gone = s.send("operator", "gone", "orphan").await.unwrap();
        for m in ["a", "b", "gone"] {
            assert_eq!(s.claim(m, 10).await.unwrap().len(), 1);
        }
        assert_eq!(s.release_node_claims("alpha").await.unwrap(), 2);
        assert_eq!(ids(&s.claim("a", 10).await.unwrap()), [to_a]);
        assert_eq!(
            s.oldest_unclaimed("gone", None).await.unwrap().map(|(_, id)| id),
            Some(to_gone)
        );
        assert!(s.claim("b", 10).await.unwrap().is_empty(), "beta's turn lost its claim");
        assert_eq!(s.release_node_claims("beta").await.unwrap(), 1);
        assert_eq!(ids(&s.claim("b", 10).await.unwrap()), [to_b]);
        // What start takes back: a sqlite file is one daemon's, all of it.
        // (On a shared store nothing: each agent's come back with its lease.)
        let released = s.release_claims_at_start().await.unwrap();
        assert_eq!(released, if s.shared() { 0 } else { 2 });
    }

    async fn held_messages_wait_for_a_new_one_and_go_with_it(f) {
        let s = f.open().await;
        let a = s.send("operator", "alice", "slow").await.unwrap();
        s.claim("alice", 10).await.unwrap();
        assert_eq!(s.hold_claims("alice").await.unwrap(), [a]);
        assert!(!s.has_unclaimed("alice").await.unwrap(), "a held message woke a turn");
        assert_eq!(
            (s.inbox_depth("alice").await.unwrap(), s.held_count("alice").await.unwrap()),
            (1, 1)
        );
        let b = s.send("operator", "alice", "go on").await.unwrap();
        assert!(s.has_unclaimed("alice").await.unwrap());
        assert_eq!(
            ids(&s.claim("alice", 10).await.unwrap()),
            [a, b],
            "the next turn did not take the held message along"
        );
        assert_eq!(s.held_count("alice").await.unwrap(), 0);
        s.release_claims("alice").await.unwrap();
        assert!(s.has_unclaimed("alice").await.unwrap(), "a released message is not held");
    }

    async fn the_oldest_unclaimed_message_places_a_queued_turn_and_a_cancel_holds_them(f) {
        let s = f.open().await;
        assert_eq!(s.oldest_unclaimed("alice", None).await.unwrap(), None);
        let a = s.send("operator", "alice", "one").await.unwrap();
        s.send("operator", "alice", "two").await.unwrap();
        let (at, id) = s.oldest_unclaimed("alice", None).await.unwrap().unwrap();
        assert_eq!(id, a);
        assert_eq!(at, s.recent_messages("alice", 10).await.unwrap()[0].created_at);
        assert_eq!(s.hold_unclaimed("alice").await.unwrap(), 2);
        assert_eq!(s.hold_unclaimed("alice").await.unwrap(), 0, "held once");
        assert_eq!(s.oldest_unclaimed("alice", None).await.unwrap(), None, "held messages start no turn");
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 2, "nor are they delivered");
        s.send("operator", "alice", "three").await.unwrap();
        let (_, id) = s.oldest_unclaimed("alice", None).await.unwrap().unwrap();
        assert_eq!(id, a, "a new message starts a turn that takes the held ones first");
    }

    async fn one_senders_messages_are_placed_and_claimed_alone(f) {
        let s = f.open().await;
        let a = s.send("operator", "alice", "from the operator").await.unwrap();
        let b = s.send("bob", "alice", "from bob").await.unwrap();
        let c = s.send("bob", "alice", "from bob again").await.unwrap();
        assert_eq!(s.oldest_unclaimed("alice", Some("bob")).await.unwrap().map(|x| x.1), Some(b));
        assert_eq!(s.oldest_unclaimed("alice", Some("carol")).await.unwrap(), None);
        assert_eq!(ids(&s.claim_from("alice", Some("bob"), 1).await.unwrap()), [b]);
        assert_eq!(ids(&s.claim_from("alice", Some("bob"), 10).await.unwrap()), [c]);
        assert!(s.claim_from("alice", Some("bob"), 10).await.unwrap().is_empty());
        assert_eq!(s.oldest_unclaimed("alice", None).await.unwrap().map(|x| x.1), Some(a));
        assert_eq!(ids(&s.claim_from("alice", None, 10).await.unwrap()), [a]);
    }

    async fn full_inbox_refuses_with_a_sentence(f) {
        let s = f.open_with(Limits { inbox_cap: 2, ..Limits::default() }).await;
        s.send("operator", "alice", "1").await.unwrap();
        s.send("operator", "alice", "2").await.unwrap();
        let e = s.send("operator", "alice", "3").await.unwrap_err();
        assert!(matches!(e, SendError::InboxFull { cap: 2, .. }));
        assert!(
            e.to_string().contains("alice's inbox holds 2 undelivered messages"),
            "{e}"
        );
        s.send("operator", "bob", "others still get mail").await.unwrap();
        s.recv("alice", 1).await.unwrap();
        s.send("operator", "alice", "3").await.unwrap();
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 2);
    }

    async fn the_last_tenth_of_an_inbox_is_the_operators(f) {
        let s = f.open_with(Limits { inbox_cap: 20, ..Limits::default() }).await;
        let sends = (0..30).map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.send("mallory", "manager", &format!("m{i}")).await })
        });
        let results: Vec<_> = futures::future::join_all(sends).await.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 18);
        let e = s.send("mallory", "manager", "one more").await.unwrap_err();
        assert!(e.to_string().contains("manager's inbox holds 18 undelivered messages"), "{e}");
        // A scheduled prompt counts as its creator's.
        s.add_schedule("manager", "every 1h", "by an agent", true, 100, "alice").await.unwrap();
        s.add_schedule("manager", "every 1h", "by the operator", true, 100, "operator").await.unwrap();
        let due = s.due_schedules(500, Some("alpha")).await.unwrap();
        let by = |who: &str| due.iter().find(|d| d.created_by == who).unwrap();
        assert_eq!(s.fire_schedule(by("alice"), Some(3_700), 3_700, 500).await.unwrap(), None);
        assert!(s.fire_schedule(by("operator"), Some(3_700), 3_700, 500).await.unwrap().is_some());
        // The hive's notices and the operator still get through, up to the cap itself.
        s.send("system", "manager", "approval #3 was approved").await.unwrap();
        assert!(matches!(
            s.send("operator", "manager", "stop what you are doing").await,
            Err(SendError::InboxFull { cap: 20, .. })
        ));
        assert_eq!(s.inbox_depth("manager").await.unwrap(), 20);
    }

    async fn a_nul_byte_is_refused_and_fails_no_send_batched_with_it(f) {
        let s = f.open().await;
        let sends = (0..60).map(|i| {
            let s = s.clone();
            let body = if i % 3 == 0 { format!("poison\0{i}") } else { format!("m{i}") };
            tokio::spawn(async move { (i, s.send("mallory", "alice", &body).await) })
        });
        for r in futures::future::join_all(sends).await {
            let (i, r) = r.unwrap();
            if i % 3 == 0 {
                assert!(matches!(r, Err(SendError::Nul)), "{i}: {r:?}");
            } else {
                r.unwrap_or_else(|e| panic!("send {i} failed beside a NUL one: {e}"));
            }
        }
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 40);
        assert!(matches!(s.send("mal\0lory", "alice", "x").await, Err(SendError::Nul)));
    }

    async fn grouped_sends_commit_each_once_and_honour_the_cap(f) {
        let s = f.open_with(Limits { inbox_cap: 30, ..Limits::default() }).await;
        let sends = (0..50).map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.send("operator", "alice", &format!("m{i}")).await })
        });
        let results: Vec<_> = futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let sent: HashSet<i64> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
        assert_eq!(sent.len(), 30, "the cap let {} through", sent.len());
        assert_eq!(
            results.iter().filter(|r| matches!(r, Err(SendError::InboxFull { .. }))).count(),
            20
        );
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 30);
        let got: HashSet<i64> = ids(&s.recv("alice", 100).await.unwrap()).into_iter().collect();
        assert_eq!(got, sent);
    }

    async fn a_send_stores_its_note_with_it_and_tells_the_inbox_depth(f) {
        let s = f.open_with(Limits { inbox_cap: 30, ..Limits::default() }).await;
        s.add_events("alice", &[("state", "{}")]).await.unwrap();
        let note = || crate::store::SendNote {
            kind: "operator".into(),
            payload: Box::new(|id| format!("{{\"message_id\":{id}}}")),
        };
        // Noted sends, plain ones and other events, all at once: they share batches.
        let noted = (0..40).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.send_keyed("operator", "alice", &format!("n{i}"), None, Some(note())).await
            })
        });
        let plain = (0..10).map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.send("operator", "bob", &format!("p{i}")).await })
        });
        let events = (0..10).map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.add_events("alice", &[("state", "{}")]).await })
        });
        let (noted, plain, events) = futures::join!(
            futures::future::join_all(noted),
            futures::future::join_all(plain),
            futures::future::join_all(events)
        );
        for r in plain {
            r.unwrap().unwrap();
        }
        for r in events {
            r.unwrap().unwrap();
        }
        let sent: Vec<crate::store::Sent> =
            noted.into_iter().filter_map(|r| r.unwrap().ok()).collect();
        assert_eq!(sent.len(), 30, "the cap let {} through", sent.len());
        // Each send tells the inbox's depth once its batch committed: the last, the cap.
        let depths: Vec<u64> = sent.iter().map(|x| x.depth.expect("a depth")).collect();
        assert!(depths.iter().all(|d| (1..=30).contains(d)), "{depths:?}");
        assert_eq!(depths.iter().max(), Some(&30));
        let notes: Vec<_> = s
            .events_since("alice", 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "operator")
            .collect();
        // One event per stored message, naming it; none for the 10 refused.
        let mut expected: Vec<(i64, String)> = sent
            .iter()
            .map(|x| (x.event.expect("a noted send's event id"), format!("{{\"message_id\":{}}}", x.id)))
            .collect();
        expected.sort();
        let got: Vec<(i64, String)> = notes.into_iter().map(|e| (e.id, e.payload_json)).collect();
        assert_eq!(got, expected);
        assert!(s.events_since("bob", 0, 10).await.unwrap().is_empty(), "a plain send noted nothing");
        let refused = s.send_keyed("operator", "alice", "over", None, Some(note())).await;
        assert!(matches!(refused, Err(SendError::InboxFull { .. })), "{refused:?}");
        assert_eq!(s.events_since("alice", 0, 1000).await.unwrap().len(), 41);
        let depth = |body: &'static str| {
            let s = s.clone();
            async move { s.send_keyed("bob", "carol", body, None, None).await.unwrap().depth }
        };
        assert_eq!(depth("1").await, Some(1));
        assert_eq!(depth("2").await, Some(2));
        s.recv("carol", 1).await.unwrap();
        assert_eq!(depth("3").await, Some(2));
    }

    async fn depth_survives_reopen(f) {
        let s = f.open().await;
        s.send("operator", "alice", "1").await.unwrap();
        drop(s);
        assert_eq!(f.open().await.inbox_depth("alice").await.unwrap(), 1);
    }

    async fn vacuum_keeps_undelivered_and_caps_delivered(f) {
        let s = f.open_with(Limits { delivered_keep: 3, ..Limits::default() }).await;
        for i in 0..10 {
            s.send("operator", "alice", &i.to_string()).await.unwrap();
        }
        s.recv("alice", 8).await.unwrap();
        assert_eq!(s.vacuum_messages().await.unwrap(), 5);
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 2);
        assert_eq!(s.recv("alice", 10).await.unwrap().len(), 2);
        let kept = s.recent_messages("alice", 100).await.unwrap();
        assert_eq!(kept.len(), 5, "3 delivered kept, plus the 2 just read");
    }

    async fn vacuum_drops_by_age(f) {
        let s = f.open_with(Limits { max_age_ms: -60_000, ..Limits::default() }).await;
        s.send("operator", "alice", "read").await.unwrap();
        s.send("operator", "alice", "unread").await.unwrap();
        s.recv("alice", 1).await.unwrap();
        s.add_events("alice", &[("stream", "{}")]).await.unwrap();
        s.add_stats("alice", &[("cost_usd", 0.5)]).await.unwrap();
        assert_eq!(s.vacuum_messages().await.unwrap(), 1, "only the delivered one goes");
        assert_eq!(s.vacuum_events().await.unwrap(), 1);
        assert_eq!(s.vacuum_stats().await.unwrap(), 1);
        assert_eq!(s.recv("alice", 10).await.unwrap()[0].body, "unread");
    }

    async fn vacuum_keeps_each_agents_newest_figures_to_the_cap(f) {
        use crate::store::HIVE_WIDE;
        let s = f.open_with(Limits { stats_keep: 3, ..Limits::default() }).await;
        for i in 0..6 {
            s.add_stats("mallory", &[("turn.duration_ms", f64::from(i))]).await.unwrap();
            s.add_stats(HIVE_WIDE, &[("approvals.pending", f64::from(i))]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        s.add_stats("bob", &[("turn.duration_ms", 7.0)]).await.unwrap();
        assert_eq!(s.vacuum_stats().await.unwrap(), 3);
        let values = |agent: &'static str| {
            let s = &s;
            async move {
                let rows = s.stats_since(Some(agent), 0).await.unwrap();
                rows.iter().map(|r| r.value).collect::<Vec<f64>>()
            }
        };
        assert_eq!(values("mallory").await, [3.0, 4.0, 5.0], "the newest are kept");
        assert_eq!(values("bob").await, [7.0], "another agent's stay");
        assert_eq!(values(HIVE_WIDE).await.len(), 6, "the hive's own are not an agent's");
    }

    async fn recent_messages_are_the_newest_oldest_first(f) {
        let s = f.open().await;
        let a = s.send("alice", "bob", "1").await.unwrap();
        let b = s.send("bob", "alice", "2").await.unwrap();
        let c = s.send("carol", "alice", "3").await.unwrap();
        s.send("carol", "bob", "not alice's").await.unwrap();
        assert_eq!(ids(&s.recent_messages("alice", 10).await.unwrap()), [a, b, c]);
        assert_eq!(ids(&s.recent_messages("alice", 2).await.unwrap()), [b, c]);
    }

    async fn the_feed_pages_every_mailbox_by_id_and_tails_it_in_commit_order(f) {
        let s = f.open().await;
        let start = s.message_tail().await.unwrap();
        let a = s.send("alice", "bob", "1").await.unwrap();
        let (first, next) = settled(start, async |at| s.messages_after(at, 10).await.unwrap()).await;
        assert_eq!(ids(&first), [a]);
        let b = s.send("bob", "carol", "2").await.unwrap();
        let c = s.send("carol", "alice", "3").await.unwrap();
        s.recv("bob", 10).await.unwrap();
        assert_eq!(ids(&s.messages_before(None, 2).await.unwrap()), [c, b], "newest first");
        assert_eq!(ids(&s.messages_before(Some(b), 10).await.unwrap()), [a]);
        let (after, next) = settled(next, async |at| s.messages_after(at, 10).await.unwrap()).await;
        assert_eq!(ids(&after), [b, c], "oldest first");
        assert_eq!((after[0].sender.as_str(), after[0].recipient.as_str()), ("bob", "carol"));
        assert!(s.messages_after(next, 10).await.unwrap().rows.is_empty());
        // A limit cuts between commits, and the next read goes on from there.
        let one = s.messages_after(start, 1).await.unwrap();
        assert_eq!((ids(&one.rows), one.pending), (vec![a], true));
        assert_eq!(ids(&s.messages_after(one.next, 10).await.unwrap().rows), [b, c]);
        assert!(s.messages_before(None, 10).await.unwrap()[2].delivered_at.is_some());
    }

    async fn purge_forgets_a_mailbox_and_what_it_sent_that_was_read(f) {
        let s = f.open().await;
        s.send("operator", "alice", "to alice").await.unwrap();
        s.send("alice", "bob", "from alice").await.unwrap();
        assert_eq!(s.recv("bob", 10).await.unwrap().len(), 1);
        let c = s.send("carol", "bob", "from carol").await.unwrap();
        let on_its_way = s.send("alice", "dave", "not yet read").await.unwrap();
        assert_eq!(s.purge_messages("alice").await.unwrap(), 2);
        assert_eq!(s.inbox_depth("dave").await.unwrap(), 1, "what alice sent unread stays");
        assert_eq!(ids(&s.recv("dave", 10).await.unwrap()), [on_its_way]);
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 0);
        assert_eq!(ids(&s.recent_messages("alice", 10).await.unwrap()), [on_its_way]);
        assert_eq!(s.inbox_depth("bob").await.unwrap(), 1);
        assert_eq!(ids(&s.recv("bob", 10).await.unwrap()), [c]);
    }

    // ---- agents -------------------------------------------------------------

    async fn names_and_uid_ranges_are_unique_and_a_range_is_free_after_delete(f) {
        let s = f.open().await;
        let a = s.create_agent(&agent("a")).await.unwrap();
        assert_eq!(a.uid_base, agent("a").uid_base);
        s.create_agent(&agent("b")).await.unwrap();
        assert!(s.create_agent(&agent("b")).await.is_err(), "a name twice");
        let twin = NewAgent {
            uid_base: a.uid_base,
            ..agent("c")
        };
        assert!(s.create_agent(&twin).await.is_err(), "a range twice");
        assert!(s.delete_agent("a").await.unwrap());
        assert_eq!(s.create_agent(&twin).await.unwrap().uid_base, a.uid_base);
        let names: Vec<String> = s.agents().await.unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["b", "c"]);
    }

    async fn agent_fields_round_trip(f) {
        let s = f.open().await;
        let created = s
            .create_agent(&NewAgent {
                name: "a",
                harness: "m1nd",
                config_toml: "model = \"haiku\"\n",
                deployed_sha: Some("abc123"),
                parent: Some("manager"),
                want_running: false,
                uid_base: 0xfffe_0000,
                node: "beta",
            })
            .await
            .unwrap();
        assert_eq!(s.agent("a").await.unwrap().as_ref(), Some(&created));
        assert!(s.agent("nobody").await.unwrap().is_none());
        assert!(s.set_want_running("a", true).await.unwrap());
        assert!(s.set_paused("a", true).await.unwrap());
        assert!(s.set_failed("a", true).await.unwrap());
        assert!(s.set_needs_login("a", true).await.unwrap());
        assert!(s.set_status_text("a", "reading").await.unwrap());
        assert!(s.set_nap_until("a", Some(42)).await.unwrap());
        assert!(s.set_model_override("a", Some("opus")).await.unwrap());
        assert!(s.set_config("a", "x = 1\n", None).await.unwrap());
        assert!(s.set_state("a", AgentState::Napping, None).await.unwrap());
        assert!(!s.set_paused("nobody", true).await.unwrap());
        let a = s.agent("a").await.unwrap().unwrap();
        assert!(a.want_running && a.paused && a.failed && a.needs_login);
        assert_eq!(
            (a.status_text.as_deref(), a.nap_until, a.model_override.as_deref()),
            (Some("reading"), Some(42), Some("opus"))
        );
        assert_eq!((a.config_toml.as_str(), a.deployed_sha.as_deref()), ("x = 1\n", None));
        assert_eq!((a.state, a.harness.as_str(), a.parent.as_deref()), (AgentState::Napping, "m1nd", Some("manager")));
        assert!(a.status_set_at.is_some() && a.model_switched_at.is_some());
    }

    async fn idle_after_thinking_records_the_turn_end(f) {
        let s = f.open().await;
        s.create_agent(&agent("a")).await.unwrap();
        s.set_state("a", AgentState::Idle, None).await.unwrap();
        assert_eq!(s.agent("a").await.unwrap().unwrap().last_turn_at, None);
        s.set_state("a", AgentState::Thinking, Some("haiku")).await.unwrap();
        let a = s.agent("a").await.unwrap().unwrap();
        assert_eq!(
            (a.state, a.active_model.as_deref(), a.last_turn_at),
            (AgentState::Thinking, Some("haiku"), None)
        );
        s.set_state("a", AgentState::Idle, None).await.unwrap();
        let ended = s.agent("a").await.unwrap().unwrap().last_turn_at.unwrap();
        // A turn that ends while retrying the model API ended all the same.
        s.set_state("a", AgentState::Retrying, None).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        s.set_state("a", AgentState::Idle, None).await.unwrap();
        assert!(s.agent("a").await.unwrap().unwrap().last_turn_at.unwrap() > ended);
    }

    async fn a_session_reset_meanwhile_is_not_overwritten(f) {
        let s = f.open().await;
        s.create_agent(&agent("a")).await.unwrap();
        assert!(s.replace_session("a", None, Some("s1")).await.unwrap());
        assert!(s.replace_session("a", Some("s1"), Some("s2")).await.unwrap());
        // The operator started a fresh session while a turn that resumed s2 ran.
        s.set_session("a", None).await.unwrap();
        assert!(!s.replace_session("a", Some("s2"), Some("s2")).await.unwrap());
        assert_eq!(s.agent("a").await.unwrap().unwrap().session_id, None);
    }

    // ---- approvals and questions --------------------------------------------

    async fn an_approval_is_decided_once(f) {
        let s = f.open().await;
        let id = s
            .add_approval(&NewApproval {
                agent: "dave",
                kind: ApprovalKind::Spawn,
                payload_json: "{}",
                commit_ref: "",
                description: Some("a new agent"),
                while_fewer_than: None,
            })
            .await
            .unwrap()
            .expect("no bound");
        assert_eq!(s.pending_approvals().await.unwrap(), 1);
        assert!(s.decide_approval(id, ApprovalStatus::Denied, Some("no"), "alpha").await.unwrap());
        assert!(!s.decide_approval(id, ApprovalStatus::Approved, None, "beta").await.unwrap());
        let a = s.approval(id).await.unwrap().unwrap();
        assert_eq!((a.kind, a.status, a.note.as_deref()), (ApprovalKind::Spawn, ApprovalStatus::Denied, Some("no")));
        assert!(a.decided_at.is_some());
        assert!(s.settle_approval(id, ApprovalStatus::Failed, Some("deploy failed")).await.unwrap());
        assert_eq!(s.approvals().await.unwrap()[0].status, ApprovalStatus::Failed);
        assert_eq!(s.pending_approvals().await.unwrap(), 0);
    }

    async fn a_bounded_approval_is_queued_only_while_fewer_wait_even_at_once(f) {
        let s = f.open().await;
        let new = apply_commit;
        let one = new("a", Some(5));
        // Sixteen at once, as a manager's parallel connections ask.
        let queued = futures::future::join_all((0..16).map(|_| s.add_approval(&one))).await;
        let ids: Vec<i64> = queued.into_iter().filter_map(|r| r.unwrap()).collect();
        assert_eq!(ids.len(), 5, "{ids:?}");
        assert_eq!(s.pending_approvals().await.unwrap(), 5);
        // The operator's own request is not held to the bound.
        assert!(s.add_approval(&new("b", None)).await.unwrap().is_some());
        assert_eq!(s.add_approval(&new("c", Some(6))).await.unwrap(), None);
        // A decided one makes room.
        assert!(s.decide_approval(ids[0], ApprovalStatus::Denied, None, "alpha").await.unwrap());
        assert!(s.add_approval(&new("c", Some(6))).await.unwrap().is_some());
    }

    async fn an_approval_approved_and_never_settled_is_found_for_its_node(f) {
        let s = f.open().await;
        let new = apply_commit("a", None);
        let (one, two, denied) = (
            s.add_approval(&new).await.unwrap().unwrap(),
            s.add_approval(&new).await.unwrap().unwrap(),
            s.add_approval(&new).await.unwrap().unwrap(),
        );
        assert!(s.decide_approval(one, ApprovalStatus::Approved, None, "alpha").await.unwrap());
        assert!(s.decide_approval(two, ApprovalStatus::Approved, None, "beta").await.unwrap());
        assert!(s.decide_approval(denied, ApprovalStatus::Denied, None, "alpha").await.unwrap());
        let ids = |rows: Vec<crate::store::ApprovalRow>| rows.iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(ids(s.unsettled_approvals("alpha").await.unwrap()), [one]);
        assert!(s.settle_approval(one, ApprovalStatus::Approved, Some("done in part")).await.unwrap());
        assert!(s.unsettled_approvals("alpha").await.unwrap().is_empty());
        let a = s.approval(one).await.unwrap().unwrap();
        assert_eq!((a.status, a.note.as_deref()), (ApprovalStatus::Approved, Some("done in part")));
        assert!(a.settled_at.is_some());
        assert_eq!(ids(s.unsettled_approvals("beta").await.unwrap()), [two]);
        // The sweep's mark takes only one whose end was never stored.
        assert!(!s.settle_cut_off(one, "cut off").await.unwrap());
        assert!(s.settle_cut_off(two, "cut off").await.unwrap());
        let a = s.approval(two).await.unwrap().unwrap();
        assert_eq!((a.status, a.note.as_deref()), (ApprovalStatus::Failed, Some("cut off")));
        assert!(!s.settle_cut_off(two, "again").await.unwrap());
    }

    async fn the_config_heads_a_home_node_read_are_stored_and_change_only_when_they_move(f) {
        let s = f.open().await;
        s.create_agent(&agent("alice")).await.unwrap();
        assert_eq!(s.agent("alice").await.unwrap().unwrap().config_head, None);
        assert!(s.set_config_head("alice", Some("abc")).await.unwrap());
        assert!(!s.set_config_head("alice", Some("abc")).await.unwrap(), "no move, no write");
        assert_eq!(s.agent("alice").await.unwrap().unwrap().config_head.as_deref(), Some("abc"));
        assert!(s.set_config_head("alice", None).await.unwrap());
        assert!(!s.set_config_head("nobody", Some("abc")).await.unwrap());
        let id = s
            .add_approval(&NewApproval {
                agent: "alice",
                kind: ApprovalKind::ApplyCommit,
                payload_json: "{}",
                commit_ref: "abc",
                description: None,
                while_fewer_than: None,
            })
            .await
            .unwrap()
            .expect("no bound");
        let a = s.approval(id).await.unwrap().unwrap();
        assert_eq!((a.repo_head, a.repo_ahead), (None, None));
        assert!(s.set_approval_head(id, Some("def"), Some(2)).await.unwrap());
        assert!(!s.set_approval_head(id, Some("def"), Some(2)).await.unwrap());
        assert!(s.set_approval_head(id, Some("def"), Some(3)).await.unwrap());
        let a = s.approval(id).await.unwrap().unwrap();
        assert_eq!((a.repo_head.as_deref(), a.repo_ahead), (Some("def"), Some(3)));
        // Decided, it is left as it was: nothing warns of a decided approval.
        assert!(s.decide_approval(id, ApprovalStatus::Approved, None, "alpha").await.unwrap());
        assert!(!s.set_approval_head(id, None, None).await.unwrap());
    }

    async fn a_commit_is_adopted_as_deployed_only_by_an_agent_deployed_from_none(f) {
        let s = f.open().await;
        s.create_agent(&agent("alice")).await.unwrap();
        assert!(s.adopt_deployed_sha("alice", "abc").await.unwrap());
        assert!(!s.adopt_deployed_sha("alice", "def").await.unwrap(), "it has one now");
        assert_eq!(s.agent("alice").await.unwrap().unwrap().deployed_sha.as_deref(), Some("abc"));
        // A config deployed meanwhile (an approval) keeps its commit.
        s.create_agent(&agent("bob")).await.unwrap();
        assert!(s.set_config("bob", "model = \"x\"", Some("fed")).await.unwrap());
        assert!(!s.adopt_deployed_sha("bob", "abc").await.unwrap());
        assert_eq!(s.agent("bob").await.unwrap().unwrap().deployed_sha.as_deref(), Some("fed"));
        assert!(!s.adopt_deployed_sha("nobody", "abc").await.unwrap());
        // A deploy over what the operator's diff was made against: not once that changed.
        assert!(!s.set_config_over("bob", "model = \"y\"", Some("0b"), "model = \"w\"").await.unwrap());
        assert_eq!(s.agent("bob").await.unwrap().unwrap().config_toml, "model = \"x\"");
        assert!(s.set_config_over("bob", "model = \"y\"", Some("0b"), "model = \"x\"").await.unwrap());
        let bob = s.agent("bob").await.unwrap().unwrap();
        assert_eq!((bob.config_toml.as_str(), bob.deployed_sha.as_deref()), ("model = \"y\"", Some("0b")));
    }

    async fn approvals_are_tailed_in_commit_order(f) {
        let s = f.open().await;
        let start = s.approval_tail().await.unwrap();
        let mut ids = vec![];
        for agent in ["a", "b", "c"] {
            let new = NewApproval {
                agent,
                kind: ApprovalKind::Spawn,
                payload_json: "{}",
                commit_ref: "",
                description: None,
                while_fewer_than: None,
            };
            ids.push(s.add_approval(&new).await.unwrap().expect("no bound"));
        }
        let (all, next) = settled(start, async |at| s.approvals_after(at).await.unwrap()).await;
        let after: Vec<(i64, String)> = all.into_iter().map(|a| (a.id, a.agent)).collect();
        assert_eq!(after, [(ids[0], "a".to_owned()), (ids[1], "b".to_owned()), (ids[2], "c".to_owned())]);
        assert!(s.approvals_after(next).await.unwrap().rows.is_empty());
    }

    async fn a_question_is_answered_once_and_not_after_its_deadline(f) {
        let s = f.open().await;
        let opts = vec!["yes".to_owned(), "no".to_owned()];
        let q = s.add_question("manager", "go?", &opts, 60).await.unwrap();
        let late = s.add_question("manager", "too late?", &[], -1).await.unwrap();
        let gone = s.add_question("manager", "never mind?", &[], 60).await.unwrap();
        assert!(s.answer_question(q, "yes").await.unwrap());
        assert!(!s.answer_question(q, "no").await.unwrap());
        assert!(!s.cancel_question(q).await.unwrap());
        assert!(!s.answer_question(late, "yes").await.unwrap());
        assert!(s.cancel_question(gone).await.unwrap());
        assert!(!s.answer_question(gone, "yes").await.unwrap());
        let got = s.question(q).await.unwrap().unwrap();
        assert_eq!((got.answer.as_deref(), got.options), (Some("yes"), opts));
        let now = crate::clock::now_ms();
        let statuses: Vec<QuestionStatus> = s.questions(10).await.unwrap().iter().map(|q| q.status(now)).collect();
        assert_eq!(statuses, [QuestionStatus::Answered, QuestionStatus::TimedOut, QuestionStatus::Cancelled]);
        assert_eq!(s.questions(1).await.unwrap()[0].id, gone);
    }

    // ---- events and stats ---------------------------------------------------

    async fn pages_backwards_and_forwards(f) {
        let s = f.open().await;
        let items: Vec<(String, String)> = (0..5).map(|i| ("stream".into(), format!("{{\"n\":{i}}}"))).collect();
        let ids = s.add_events("a", &items).await.unwrap();
        assert_eq!(ids.len(), 5);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        s.add_events("b", &[("stream", "{}")]).await.unwrap();
        let back = s.events_before("a", Some(ids[3]), 2).await.unwrap();
        assert_eq!(back.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[1], ids[2]]);
        assert_eq!(back[0].payload_json, "{\"n\":1}");
        let fwd = s.events_since("a", ids[3], 10).await.unwrap();
        assert_eq!(fwd.iter().map(|e| e.id).collect::<Vec<_>>(), [ids[4]]);
        assert_eq!(s.events_before("a", None, 100).await.unwrap().len(), 5);
        assert_eq!(s.purge_events("a").await.unwrap(), 5);
        assert!(s.events_since("a", 0, 10).await.unwrap().is_empty());
    }

    async fn the_feed_pages_only_its_kinds_across_agents(f) {
        let s = f.open().await;
        let ev = |items: &[&str]| items.iter().map(|k| ((*k).to_owned(), "{}".to_owned())).collect::<Vec<_>>();
        let start = s.event_tail().await.unwrap();
        let a = s.add_events("a", &ev(&["turn_start", "stream"])).await.unwrap();
        let (first, next) = settled(start, async |at| s.feed_events_after(at, 10).await.unwrap()).await;
        assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), [a[0]], "no stream");
        let b = s.add_events("b", &ev(&["turn_end", "container_crash"])).await.unwrap();
        let page = s.feed_events_before(None, 2).await.unwrap();
        assert_eq!(page.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["container_crash", "turn_end"]);
        let older = s.feed_events_before(Some(b[0]), 10).await.unwrap();
        assert_eq!(older.iter().map(|e| (e.id, e.agent.as_str())).collect::<Vec<_>>(), [(a[0], "a")]);
        let (after, next) = settled(next, async |at| s.feed_events_after(at, 10).await.unwrap()).await;
        assert_eq!(after.iter().map(|e| e.id).collect::<Vec<_>>(), [b[0], b[1]], "oldest first, no stream");
        assert!(s.feed_events_after(next, 10).await.unwrap().rows.is_empty());
    }

    async fn the_last_turn_event_is_the_agents_own_newest_start_or_end(f) {
        let s = f.open().await;
        let ev = |items: &[&str]| items.iter().map(|k| ((*k).to_owned(), "{}".to_owned())).collect::<Vec<_>>();
        assert!(s.last_turn_event("a").await.unwrap().is_none(), "no turn yet");
        let a = s.add_events("a", &ev(&["turn_start", "stream", "state"])).await.unwrap();
        s.add_events("b", &ev(&["turn_end"])).await.unwrap();
        let last = s.last_turn_event("a").await.unwrap().unwrap();
        assert_eq!((last.id, last.kind.as_str(), last.agent.as_str()), (a[0], "turn_start", "a"), "open");
        let end = s.add_events("a", &ev(&["turn_end", "container_crash", "stream"])).await.unwrap();
        let last = s.last_turn_event("a").await.unwrap().unwrap();
        assert_eq!((last.id, last.kind.as_str()), (end[0], "turn_end"), "ended");
    }

    async fn the_feed_and_the_last_crashes_read_through_their_indexes(f) {
        let s = f.open().await;
        let feed = f
            .plan(
                &s,
                "SELECT agent FROM events WHERE kind IN ('turn_start', 'turn_end', 'container_crash') \
                 AND id < 9 ORDER BY id DESC LIMIT 5",
            )
            .await;
        assert!(feed.contains("events_feed"), "{feed}");
        assert!(!feed.contains("TEMP B-TREE") && !feed.contains("Sort"), "the feed sorts: {feed}");
        let crash = f
            .plan(
                &s,
                "SELECT MAX(id) FROM events WHERE kind = 'container_crash' GROUP BY agent",
            )
            .await;
        assert!(crash.contains("events_crash"), "{crash}");
        if matches!(s, crate::store::Db::Postgres(_)) {
            // The live tails (`pg/tail.rs`) read by transaction.
            for (table, filter, index) in [
                ("events", "kind IN ('turn_start', 'turn_end', 'container_crash') AND", "events_feed_tx"),
                ("messages", "", "messages_tx"),
                ("approvals", "", "approvals_tx"),
            ] {
                let tail = f
                    .plan(&s, &format!("SELECT id, tx FROM {table} WHERE {filter} tx > 5 AND tx < 9 ORDER BY tx, id LIMIT 5"))
                    .await;
                assert!(tail.contains(index) && !tail.contains("Sort"), "{tail}");
            }
        }
    }

    async fn events_of_many_callers_at_once_each_get_their_own_ids(f) {
        // More rows at once than one commit takes (8192 on PostgreSQL): the
        // writers split between callers, never within one caller's batch.
        const AGENTS: usize = 12;
        const CALLS: usize = 8;
        const ROWS: usize = 100;
        let s = f.open_with(Limits { events_keep: u64::MAX, ..Limits::default() }).await;
        let calls = (0..AGENTS * CALLS).map(|n| {
            let s = s.clone();
            tokio::spawn(async move {
                let agent = format!("agent-{}", n % AGENTS);
                let items: Vec<(String, String)> =
                    (0..ROWS).map(|j| ("stream".into(), format!("{n}-{j}"))).collect();
                let ids = s.add_events(&agent, &items).await.unwrap();
                (agent, n, ids)
            })
        });
        let answers: Vec<_> = futures::future::join_all(calls).await.into_iter().map(|r| r.unwrap()).collect();
        let mut all = HashSet::new();
        for (agent, n, ids) in &answers {
            assert_eq!(ids.len(), ROWS);
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "one call's ids ascend");
            all.extend(ids.iter().copied());
            let stored = s.events_since(agent, ids[0] - 1, ROWS as u32).await.unwrap();
            assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), *ids, "a call's rows are contiguous for its agent");
            assert!(stored.iter().enumerate().all(|(j, e)| e.payload_json == format!("{n}-{j}")));
        }
        assert_eq!(all.len(), AGENTS * CALLS * ROWS, "no id handed out twice");
        for a in 0..AGENTS {
            let rows = s.events_before(&format!("agent-{a}"), None, u32::MAX).await.unwrap();
            assert_eq!(rows.len(), CALLS * ROWS);
        }
    }

    async fn vacuum_caps_events_per_agent(f) {
        let s = f.open_with(Limits { events_keep: 3, ..Limits::default() }).await;
        let items: Vec<(String, String)> = (0..5).map(|_| ("stream".into(), "{}".into())).collect();
        let a = s.add_events("a", &items).await.unwrap();
        s.add_events("b", &items[..2]).await.unwrap();
        assert_eq!(s.vacuum_events().await.unwrap(), 2);
        let kept: Vec<i64> = s.events_since("a", 0, 10).await.unwrap().iter().map(|e| e.id).collect();
        assert_eq!(kept, a[2..]);
        assert_eq!(s.events_since("b", 0, 10).await.unwrap().len(), 2);
    }

    async fn caps_past_i64_keep_everything(f) {
        // u64::MAX read as a signed SQL integer was -1: an OFFSET of none, which dropped all.
        let s = f
            .open_with(Limits { events_keep: u64::MAX, delivered_keep: u64::MAX, events_keep_bytes: u64::MAX, ..Limits::default() })
            .await;
        s.add_events("a", &vec![("stream".to_owned(), "{}".to_owned()); 3]).await.unwrap();
        s.send("operator", "a", "1").await.unwrap();
        s.recv("a", 10).await.unwrap();
        assert_eq!(s.vacuum_events().await.unwrap(), 0);
        assert_eq!(s.vacuum_messages().await.unwrap(), 0);
        assert_eq!(s.events_since("a", 0, 10).await.unwrap().len(), 3);
    }

    async fn vacuum_keeps_each_agents_newest_history_within_its_byte_budget(f) {
        // 1,000 bytes a history: once over, down to 900.
        let s = f.open_with(Limits { events_keep_bytes: 1000, ..Limits::default() }).await;
        let event = |n: usize| ("stream".to_owned(), format!("\"{}\"", "x".repeat(n - 2)));
        let bytes = |rows: &[crate::store::EventRow]| rows.iter().map(|e| e.payload_json.len()).sum::<usize>();
        // Under the budget: nothing goes, whatever the vacuum looked at before.
        let a = s.add_events("a", &vec![event(100); 8]).await.unwrap();
        s.add_events("b", &[event(400)]).await.unwrap();
        assert_eq!(s.vacuum_events().await.unwrap(), 0);
        assert_eq!(s.vacuum_events().await.unwrap(), 0);
        // Over it: the oldest go until the newest fit in nine tenths of it.
        let a2 = s.add_events("a", &vec![event(100); 4]).await.unwrap();
        assert_eq!(s.vacuum_events().await.unwrap(), 3);
        let kept = s.events_since("a", 0, 100).await.unwrap();
        let ids: Vec<i64> = kept.iter().map(|e| e.id).collect();
        assert_eq!(ids, [&a[3..], &a2[..]].concat());
        assert_eq!(bytes(&kept), 900);
        assert_eq!(s.events_since("b", 0, 10).await.unwrap().len(), 1, "another agent's history is its own");
        // Another tenth of the budget comes before the next trim.
        s.add_events("a", &[event(100)]).await.unwrap();
        assert_eq!(s.vacuum_events().await.unwrap(), 0);
        // One event over the whole budget goes with everything before it.
        s.add_events("a", &[event(1500)]).await.unwrap();
        s.vacuum_events().await.unwrap();
        assert!(s.events_since("a", 0, 100).await.unwrap().is_empty());
        s.add_events("a", &[event(300)]).await.unwrap();
        assert_eq!(s.vacuum_events().await.unwrap(), 0);
        assert_eq!(bytes(&s.events_since("a", 0, 100).await.unwrap()), 300);
    }

    async fn vacuum_keeps_waiting_questions_and_the_newest_ended(f) {
        let s = f.open().await;
        let waiting = s.add_question("manager", "still open?", &[], 3600).await.unwrap();
        let mut ended = vec![];
        for i in 0..1002 {
            let id = s.add_question("manager", &format!("q{i}"), &[], 3600).await.unwrap();
            assert!(s.answer_question(id, "yes").await.unwrap());
            ended.push(id);
        }
        assert_eq!(s.vacuum_questions().await.unwrap(), 2);
        let left: Vec<i64> = s.questions(5000).await.unwrap().iter().map(|q| q.id).collect();
        assert_eq!(left[0], waiting, "one that waits stays");
        assert_eq!(&left[1..], &ended[2..]);
        assert_eq!(s.vacuum_questions().await.unwrap(), 0);
    }

    async fn vacuum_keeps_waiting_approvals_and_the_newest_decided(f) {
        let s = f.open().await;
        let new = apply_commit("a", None);
        let waiting = s.add_approval(&new).await.unwrap().unwrap();
        let mut decided = vec![];
        for i in 0..202 {
            let id = s.add_approval(&new).await.unwrap().unwrap();
            // The first approved and still being carried out.
            let status = if i == 0 { ApprovalStatus::Approved } else { ApprovalStatus::Denied };
            assert!(s.decide_approval(id, status, None, "alpha").await.unwrap());
            decided.push(id);
        }
        assert_eq!(s.vacuum_approvals().await.unwrap(), 1);
        let left: Vec<i64> = s.approvals().await.unwrap().iter().map(|a| a.id).collect();
        assert_eq!(left[0], waiting, "one that waits stays");
        assert_eq!(left[1], decided[0], "one being carried out stays");
        assert_eq!(&left[2..], &decided[2..]);
        assert_eq!(s.vacuum_approvals().await.unwrap(), 0);
    }

    async fn stats_are_read_per_agent_or_all(f) {
        let s = f.open().await;
        s.add_stats("a", &[("cost_usd", 0.25), ("turns", 1.0)]).await.unwrap();
        s.add_stats("b", &[("cost_usd", 1.5)]).await.unwrap();
        let a = s.stats_since(Some("a"), 0).await.unwrap();
        assert_eq!(a.len(), 2);
        assert!(a.iter().any(|r| r.key == "cost_usd" && r.value == 0.25));
        assert_eq!(s.stats_since(None, 0).await.unwrap().len(), 3);
        assert!(s.stats_since(None, i64::MAX).await.unwrap().is_empty());
    }

    async fn a_days_spend_is_summed_as_figures_arrive(f) {
        let s = f.open().await;
        let today = day_of(now_ms());
        let turn = s
            .add_stats("alice", &[("cost.usd", 0.5), ("tokens.in", 100.0), ("tokens.out", 20.0), ("turn.duration_ms", 900.0)])
            .await
            .unwrap();
        assert_eq!(turn, Spend { usd: 0.5, tokens: 120.0 });
        s.add_stats("alice", &[("cost.usd", 0.25), ("tokens.in", -1e9)]).await.unwrap();
        s.add_stats("bob", &[("tokens.out", 5.0)]).await.unwrap();
        assert_eq!(s.add_stats(HIVE_WIDE, &[("approvals.pending", 3.0)]).await.unwrap(), Spend::default());
        s.add_stats(HIVE_WIDE, &[("cost.usd", 99.0)]).await.unwrap();
        assert_eq!(s.spend_on(Some("alice"), today).await.unwrap(), Spend { usd: 0.75, tokens: 120.0 });
        assert_eq!(s.spend_on(None, today).await.unwrap(), Spend { usd: 0.75, tokens: 125.0 }, "the hive-wide rows are no one's spending");
        assert_eq!(s.spend_on(Some("alice"), today - 1).await.unwrap(), Spend::default());
        assert_eq!(s.spend_on(Some("carol"), today).await.unwrap(), Spend::default());
    }

    async fn facts_of_every_agent_at_once_match_those_read_one_by_one(f) {
        let s = f.open().await;
        let ev = |items: &[&str]| items.iter().map(|k| ((*k).to_owned(), format!("{{\"k\":\"{k}\"}}"))).collect::<Vec<_>>();
        let crashes = s.add_events("a", &ev(&["container_crash", "turn_end", "container_crash"])).await.unwrap();
        s.add_events("b", &ev(&["turn_start"])).await.unwrap();
        s.add_schedule("a", "every 1h", "x", true, 1, "operator").await.unwrap();
        s.add_schedule("a", "every 2h", "y", true, 1, "operator").await.unwrap();
        s.add_schedule("b", "in 1m", "z", false, 1, "b").await.unwrap();
        let gone = s.add_question("b", "old?", &[], 1).await.unwrap();
        let open = s.add_question("b", "which?", &[], 600).await.unwrap();
        s.add_question("b", "later?", &[], 600).await.unwrap();
        s.cancel_question(gone).await.unwrap();
        s.add_stats("a", &[("cost.usd", 0.5), ("tokens.in", 10.0), ("tokens.out", 5.0)]).await.unwrap();
        s.add_stats("a", &[("cost.usd", -3.0), ("turn.ms", 900.0)]).await.unwrap();
        s.add_stats("b", &[("cost.usd", 0.25)]).await.unwrap();
        let o = BudgetOverride { scope: "b".into(), day: 7, usd: Some(1.0), tokens: None, lifted: false };
        s.set_budget_override(&o).await.unwrap();
        s.send("operator", "b", "one").await.unwrap();
        s.send("a", "b", "two").await.unwrap();

        let now = now_ms();
        let today = day_of(now);
        let all = s.agent_facts(None, now, today, true).await.unwrap();
        let a = &all["a"];
        let crash = a.last_crash.as_ref().unwrap();
        assert_eq!((crash.id, crash.agent.as_str(), crash.kind.as_str()), (crashes[2], "a", "container_crash"));
        assert_eq!(a.schedules, 2);
        assert_eq!(a.open_question, None);
        // A negative figure counts as nothing; figures that are not spending are not summed.
        assert_eq!(a.spend, Spend { usd: 0.5, tokens: 15.0 });
        assert_eq!(a.budget_override, None);
        let b = &all["b"];
        assert_eq!(b.last_crash, None);
        assert_eq!((b.schedules, b.open_question), (1, Some(open)));
        assert_eq!(b.spend.usd, 0.25);
        assert_eq!(b.budget_override, Some(o));
        assert_eq!((a.inbox_depth, b.inbox_depth), (0, 2));
        assert_eq!(all.len(), 2);

        for name in ["a", "b"] {
            let one = s.agent_facts(Some(name), now, today, true).await.unwrap();
            assert_eq!(one.len(), 1, "{one:?}");
            assert_eq!(one[name], all[name]);
        }
        assert!(s.agent_facts(Some("c"), now, today, true).await.unwrap().is_empty());
        // Without the crashes (an agent's status), the rest is the same.
        let mut no_crash = all.clone();
        no_crash.values_mut().for_each(|f| f.last_crash = None);
        assert_eq!(s.agent_facts(None, now, today, false).await.unwrap(), no_crash);
        // Spend counts on its day only; a question past its deadline is not open.
        let later = s.agent_facts(None, now + 3_600_000, today + 1, true).await.unwrap();
        assert_eq!(later["a"].spend, Spend::default());
        assert_eq!(later["b"].open_question, None);
    }

    async fn one_agents_facts_read_through_its_indexes(f) {
        let s = f.open().await;
        let crash = f
            .plan(&s, "SELECT MAX(id) FROM events WHERE kind = 'container_crash' AND agent = 'a' GROUP BY agent")
            .await;
        assert!(crash.contains("events_crash"), "{crash}");
        let spend = f
            .plan(&s, "SELECT agent, SUM(value) FROM stats WHERE ts >= 1 AND agent = 'a' GROUP BY agent")
            .await;
        assert!(spend.contains("stats_agent"), "{spend}");
    }

    async fn a_budget_override_replaces_the_last_and_goes_with_its_agent(f) {
        let s = f.open().await;
        assert_eq!(s.budget_override("a").await.unwrap(), None);
        let first = BudgetOverride { scope: "a".into(), day: 20_000, usd: Some(2.5), tokens: None, lifted: false };
        s.set_budget_override(&first).await.unwrap();
        assert_eq!(s.budget_override("a").await.unwrap(), Some(first));
        let lifted = BudgetOverride { scope: "a".into(), day: 20_001, usd: None, tokens: Some(1_000_000), lifted: true };
        s.set_budget_override(&lifted).await.unwrap();
        let hive = BudgetOverride { scope: HIVE_WIDE.into(), day: 20_001, usd: Some(10.0), tokens: Some(5), lifted: false };
        s.set_budget_override(&hive).await.unwrap();
        assert_eq!(s.budget_override("a").await.unwrap(), Some(lifted));
        s.remove_budget_override("a").await.unwrap();
        assert_eq!(s.budget_override("a").await.unwrap(), None);
        assert_eq!(s.budget_override(HIVE_WIDE).await.unwrap(), Some(hive));
    }

    // ---- notifications and webhooks -------------------------------------------

    async fn read_marks_and_queue(f) {
        let s = f.open().await;
        let a = s.add_notification("message", Some("alice"), "hi", "/agents/alice", &["w"]).await.unwrap();
        let b = s.add_notification("approval", None, "x", "/#approvals", &[]).await.unwrap();
        assert_eq!(s.notification(a.id).await.unwrap(), Some(a.clone()));
        assert_eq!(s.unread_notifications().await.unwrap(), 2);
        assert_eq!(s.mark_notifications_read(Some(a.id)).await.unwrap(), 1);
        assert_eq!(s.mark_notifications_read(Some(a.id)).await.unwrap(), 0, "read once");
        let unread = s.notifications(true, 10).await.unwrap();
        assert_eq!(unread.iter().map(|n| n.id).collect::<Vec<_>>(), [b.id]);
        let all = s.notifications(false, 10).await.unwrap();
        assert_eq!(all.iter().map(|n| (n.id, n.read)).collect::<Vec<_>>(), [(b.id, false), (a.id, true)], "newest first");
        assert_eq!(s.notifications(false, 1).await.unwrap().len(), 1);
        assert_eq!(s.mark_notifications_read(None).await.unwrap(), 1);
        assert_eq!(s.unread_notifications().await.unwrap(), 0);

        let due = s.take_deliveries("w", now_ms(), now_ms() + 60_000, 10).await.unwrap();
        assert_eq!(due, [DeliveryRow { webhook: "w".into(), notification: a.id, attempts: 0 }]);
        assert!(s.take_deliveries("w", now_ms(), now_ms(), 10).await.unwrap().is_empty(), "taken");
        assert!(s.take_deliveries("other", now_ms(), now_ms(), 10).await.unwrap().is_empty());
        s.delivery_failed("w", a.id, now_ms() + 60_000, "HTTP 500").await.unwrap();
        assert!(s.take_deliveries("w", now_ms(), now_ms(), 10).await.unwrap().is_empty());
        assert!(s.next_delivery_at("w").await.unwrap().unwrap() > now_ms());
        assert_eq!(s.next_delivery_at("other").await.unwrap(), None);
        let st = s.webhook_stats("w").await.unwrap();
        assert_eq!((st.pending, st.attempts), (1, 1));
        assert_eq!(st.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(s.webhook_stats("other").await.unwrap(), WebhookStats::default());
        // A notification a webhook still waits for outlives the vacuum.
        assert_eq!(s.vacuum_notifications().await.unwrap(), 0);
        s.delivery_done("w", a.id).await.unwrap();
        let st = s.webhook_stats("w").await.unwrap();
        assert_eq!((st.pending, st.last_error), (0, None));
        assert!(st.last_ok.is_some());
        // One given up leaves the queue and says so; when it last delivered stays.
        let c = s.add_notification("message", None, "refused", "/", &["w"]).await.unwrap();
        s.delivery_failed("w", c.id, now_ms(), "HTTP 400").await.unwrap();
        s.delivery_dropped("w", c.id, "HTTP 400 (dropped)").await.unwrap();
        let dropped = s.webhook_stats("w").await.unwrap();
        assert_eq!((dropped.pending, dropped.last_error.as_deref()), (0, Some("HTTP 400 (dropped)")));
        assert_eq!(dropped.last_ok, st.last_ok);
    }

    async fn deliveries_come_due_in_order_and_a_dropped_webhook_forgets_its_queue(f) {
        let s = f.open().await;
        let a = s.add_notification("message", None, "1", "/", &["w", "gone"]).await.unwrap();
        let b = s.add_notification("message", None, "2", "/", &["w", "gone"]).await.unwrap();
        s.delivery_failed("w", a.id, a.ts, "timed out").await.unwrap();
        let due = s.take_deliveries("w", now_ms(), a.ts, 1).await.unwrap();
        assert_eq!(due.iter().map(|d| (d.notification, d.attempts)).collect::<Vec<_>>(), [(a.id, 1)]);
        // Taken until a time already past: due again at once, still first.
        let due = s.take_deliveries("w", now_ms(), now_ms() + 60_000, 10).await.unwrap();
        assert_eq!(due.iter().map(|d| (d.notification, d.attempts)).collect::<Vec<_>>(), [(a.id, 1), (b.id, 0)]);
        s.delivery_done("gone", a.id).await.unwrap();
        assert_eq!(s.forget_webhooks_except(&["w"]).await.unwrap(), 1);
        assert_eq!(s.webhook_stats("gone").await.unwrap(), WebhookStats::default());
        assert_eq!(s.webhook_stats("w").await.unwrap().pending, 2);
        assert_eq!(s.forget_webhooks_except(&[]).await.unwrap(), 2);
    }

    async fn vacuum_drops_old_notifications_but_not_what_a_webhook_waits_for_until_too_old(f) {
        let s = f.open_with(Limits { max_age_ms: -60_000, ..Limits::default() }).await;
        s.add_notification("message", None, "read", "/", &[]).await.unwrap();
        s.add_notification("message", None, "queued", "/", &["w"]).await.unwrap();
        // Past the age limit a dead webhook's queue goes too, then what it waited for.
        assert_eq!(s.vacuum_notifications().await.unwrap(), 3);
        assert!(s.notifications(false, 10).await.unwrap().is_empty());
        assert_eq!(s.webhook_stats("w").await.unwrap().pending, 0);
    }

    async fn a_notice_is_claimed_once_per_scope_key_and_day(f) {
        let s = f.open().await;
        assert!(s.claim_notice("#hive", "budget tokens warn 500", 100).await.unwrap());
        assert!(!s.claim_notice("#hive", "budget tokens warn 500", 100).await.unwrap());
        // Another node's store, the same claim: taken.
        let other = f.open().await;
        assert!(!other.claim_notice("#hive", "budget tokens warn 500", 100).await.unwrap());
        assert!(s.claim_notice("#hive", "budget tokens warn 600", 100).await.unwrap(), "another key");
        assert!(s.claim_notice("alice", "budget tokens warn 500", 100).await.unwrap(), "another scope");
        assert!(s.claim_notice("#hive", "budget tokens warn 500", 101).await.unwrap(), "the next day");
        // A destroyed agent's claims go with its budget: a new one of its name is told afresh.
        s.remove_budget_override("alice").await.unwrap();
        assert!(s.claim_notice("alice", "budget tokens warn 500", 100).await.unwrap());
        // Two days on, day 100's claims are gone.
        assert!(s.claim_notice("#hive", "budget tokens warn 500", 102).await.unwrap());
        assert!(s.claim_notice("#hive", "budget tokens warn 500", 100).await.unwrap());
    }

    async fn over_the_cap_the_read_and_agents_notifications_go_before_the_hives_unread_ones(f) {
        let s = f.open_with(Limits { notifications_keep: 3, ..Limits::default() }).await;
        let failed = s.add_notification("failed", Some("alice"), "stays stopped", "/", &[]).await.unwrap();
        let crashed = s.add_notification("crashed", Some("alice"), "seen", "/", &[]).await.unwrap();
        s.mark_notifications_read(Some(crashed.id)).await.unwrap();
        for i in 0..6 {
            let kind = if i % 2 == 0 { "message" } else { "question" };
            s.add_notification(kind, Some("mallory"), &i.to_string(), "/", &[]).await.unwrap();
        }
        let texts = |v: Vec<NotificationRow>| v.into_iter().rev().map(|n| n.text).collect::<Vec<_>>();
        assert_eq!(s.vacuum_notifications().await.unwrap(), 4);
        assert_eq!(texts(s.notifications(false, 100).await.unwrap()), ["stays stopped", "3", "4", "5"]);
        // The hive's own unread ones go too, but only far past the cap (four times it).
        for i in 0..9 {
            s.add_notification("node_down", None, &format!("n{i}"), "/", &[]).await.unwrap();
        }
        assert_eq!(s.vacuum_notifications().await.unwrap(), 3);
        assert_eq!(s.notifications(false, 100).await.unwrap().len(), 10);
        assert_eq!(s.notification(failed.id).await.unwrap().unwrap().text, "stays stopped");
        for i in 9..12 {
            s.add_notification("node_down", None, &format!("n{i}"), "/", &[]).await.unwrap();
        }
        assert_eq!(s.vacuum_notifications().await.unwrap(), 1);
        assert_eq!(s.notification(failed.id).await.unwrap(), None);
        assert_eq!(s.unread_notifications().await.unwrap(), 12);
    }

    // ---- schedules ----------------------------------------------------------

    async fn a_fired_schedule_delivers_and_moves_on(f) {
        let s = f.open().await;
        let once = s.add_schedule("alice", "at 10:00", "wake up", false, 100, "operator").await.unwrap();
        let rep = s.add_schedule("alice", "every 1h", "check in", true, 200, "manager").await.unwrap();
        s.add_schedule("bob", "every 1d", "later", true, 10_000, "operator").await.unwrap();
        assert_eq!(s.next_schedule_due(Some("alpha")).await.unwrap(), Some(100));
        assert_eq!(s.schedule_count("alice").await.unwrap(), 2);
        let due = s.due_schedules(500, Some("alpha")).await.unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [once, rep]);
        assert!(s.fire_schedule(&due[0], None, 0, 500).await.unwrap().is_some());
        assert!(s.fire_schedule(&due[1], Some(3_800), 0, 500).await.unwrap().is_some());
        let got = s.recv("alice", 10).await.unwrap();
        assert_eq!(
            got.iter().map(|m| (m.sender.as_str(), m.body.as_str())).collect::<Vec<_>>(),
            [("system", "wake up"), ("system", "check in")]
        );
        let left = s.schedules().await.unwrap();
        assert_eq!(left.iter().map(|x| (x.id, x.next_due)).collect::<Vec<_>>()[0], (rep, 3_800));
        assert!(left[0].last_fired_at.is_some());
        assert!(s.remove_schedule(rep).await.unwrap());
        assert!(!s.remove_schedule(rep).await.unwrap());
        assert_eq!(s.schedule_count_by("operator").await.unwrap(), 1);
        assert_eq!(s.remove_schedules_of("bob").await.unwrap(), 1);
        assert_eq!(s.schedule_count_by("operator").await.unwrap(), 0);
        assert_eq!(s.next_schedule_due(Some("alpha")).await.unwrap(), None);
    }

    async fn an_agents_schedule_is_due_only_on_its_makers_home_node(f) {
        let s = f.open().await;
        s.create_agent(&agent("m")).await.unwrap();
        s.create_agent(&NewAgent { node: "beta", ..agent("b") }).await.unwrap();
        let by_m = s.add_schedule("b", "every 1h", "from alpha's m", true, 100, "m").await.unwrap();
        let by_b = s.add_schedule("m", "every 1h", "from beta's b", true, 200, "b").await.unwrap();
        let by_op = s.add_schedule("b", "every 1h", "anywhere", true, 300, "operator").await.unwrap();
        let due = |node: &'static str| {
            let s = s.clone();
            async move { s.due_schedules(500, Some(node)).await.unwrap().iter().map(|d| d.id).collect::<Vec<_>>() }
        };
        assert_eq!(due("alpha").await, [by_m, by_op]);
        assert_eq!(due("beta").await, [by_b, by_op]);
        assert_eq!(due("gamma").await, [by_op]);
        assert_eq!(s.next_schedule_due(Some("beta")).await.unwrap(), Some(200));
        assert_eq!(s.next_schedule_due(Some("gamma")).await.unwrap(), Some(300));
        // A hive of one node fires them all, whatever name its agents were made under.
        let all = s.due_schedules(500, None).await.unwrap();
        assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), [by_m, by_b, by_op]);
        assert_eq!(s.next_schedule_due(None).await.unwrap(), Some(100));
    }

    async fn a_schedule_waits_while_the_inbox_is_full_and_moves_when_the_clock_steps(f) {
        let s = f.open_with(Limits { inbox_cap: 1, ..Limits::default() }).await;
        s.send("operator", "alice", "fills the inbox").await.unwrap();
        let id = s.add_schedule("alice", "every 1h", "check in", true, 100, "operator").await.unwrap();
        let due = s.due_schedules(500, Some("alpha")).await.unwrap();
        assert_eq!(s.fire_schedule(&due[0], Some(3_700), 3_700, 500).await.unwrap(), None);
        assert_eq!(s.inbox_depth("alice").await.unwrap(), 1, "a full inbox takes nothing");
        assert_eq!(s.schedules().await.unwrap()[0].next_due, 3_700);
        assert_eq!(s.recv("alice", 10).await.unwrap().len(), 1);
        let due = s.due_schedules(4_000, Some("alpha")).await.unwrap();
        assert!(s.fire_schedule(&due[0], Some(7_300), 7_300, 4_000).await.unwrap().is_some());
        assert_eq!(s.recv("alice", 10).await.unwrap()[0].body, "check in");
        s.set_schedule_due(id, 50).await.unwrap();
        assert_eq!(s.next_schedule_due(Some("alpha")).await.unwrap(), Some(50));
    }

    // ---- nodes --------------------------------------------------------------

    async fn a_node_registers_heartbeats_and_a_restart_replaces_its_start(f) {
        let s = f.open().await;
        assert!(s.nodes().await.unwrap().is_empty());
        assert!(!beat(&s, "beta").await, "a node that never registered");
        let before = now_ms();
        let beta = register(&s, "beta", "10.0.0.2:7000").await;
        let alpha = register(&s, "alpha", "10.0.0.1:7000").await;
        assert_eq!(beta.last_heartbeat, beta.started_at, "the first heartbeat is the start");
        // sqlite's times are the host's, PostgreSQL's the server's: on one machine, the same clock.
        assert!(beta.started_at >= before - 1000 && beta.started_at <= now_ms() + 1000, "{beta:?}");
        assert_eq!(s.nodes().await.unwrap(), [alpha.clone(), beta.clone()], "by name");

        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert!(beat(&s, "beta").await);
        let nodes = s.nodes().await.unwrap();
        assert_eq!(nodes[0], alpha, "another node's heartbeat is not alpha's");
        assert!(nodes[1].last_heartbeat > beta.last_heartbeat);
        assert_eq!(nodes[1].started_at, beta.started_at);

        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let again = register(&s, "beta", "10.0.0.3:7000").await;
        assert!(again.started_at > beta.started_at);
        assert_eq!(s.nodes().await.unwrap(), [alpha, again]);
        drop(s);
        assert_eq!(f.open().await.nodes().await.unwrap().len(), 2, "nodes survive a restart");
    }

    async fn a_live_node_is_served_by_one_daemon_and_a_silent_ones_name_can_be_taken(f) {
        let s = f.open().await;
        let first = register(&s, "alpha", "a:1").await;
        // Another daemon (another state dir) under the live node's name: refused, nothing written.
        let refused = s.register_node("alpha", "a:2", "alpha#other", 60_000).await.unwrap();
        let Registration::Served { holder, silent_ms } = refused else {
            panic!("a second daemon took a live node's name: {refused:?}");
        };
        assert_eq!(holder, "alpha#test");
        assert!((0..5_000).contains(&silent_ms), "{silent_ms}");
        assert_eq!(s.nodes().await.unwrap(), [first], "the refused start wrote nothing");
        assert!(!s.heartbeat("alpha", "alpha#other").await.unwrap(), "nor does its heartbeat");
        assert!(beat(&s, "alpha").await, "the serving daemon beats on");
        // The same daemon restarted (its state dir, its id) takes its name back at once.
        assert!(matches!(register_again(&s, "alpha#test", 60_000).await, Registration::Done(_)));
        // Silent past the window: another daemon may take the name, and the
        // first one's heartbeat then finds it served by another.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(matches!(register_again(&s, "alpha#other", 100).await, Registration::Done(_)));
        assert!(!beat(&s, "alpha").await, "the name went to another daemon");
        assert!(s.heartbeat("alpha", "alpha#other").await.unwrap());
        assert!(matches!(
            register_again(&s, "alpha#test", 60_000).await,
            Registration::Served { holder, .. } if holder == "alpha#other"
        ));
        assert_eq!(s.nodes().await.unwrap()[0].address, "a:2");
        // A row stored before rows kept their holder becomes the first beater's.
        f.execute("UPDATE nodes SET holder = NULL").await;
        assert!(s.heartbeat("alpha", "alpha#test").await.unwrap());
        assert!(matches!(
            register_again(&s, "alpha#other", 60_000).await,
            Registration::Served { holder, .. } if holder == "alpha#test"
        ));
    }

    async fn an_agent_keeps_its_home_node_and_old_agents_go_to_the_first_node_to_register(f) {
        let s = f.open().await;
        s.create_agent(&agent("a")).await.unwrap();
        assert_eq!(s.agent("a").await.unwrap().unwrap().node.as_deref(), Some("alpha"));
        drop(s);
        f.set_schema_before_agent_nodes().await;
        let s = f.open().await;
        assert_eq!(s.agent("a").await.unwrap().unwrap().node, None, "stored before nodes");
        s.create_agent(&NewAgent { node: "beta", ..agent("b") }).await.unwrap();
        register(&s, "gamma", "").await;
        let homes = |rows: Vec<crate::store::AgentRow>| -> Vec<(String, Option<String>)> {
            rows.into_iter().map(|a| (a.name, a.node)).collect()
        };
        let want = vec![("a".to_owned(), Some("gamma".to_owned())), ("b".to_owned(), Some("beta".to_owned()))];
        assert_eq!(homes(s.agents().await.unwrap()), want, "a homeless agent goes to the first node only");
        register(&s, "delta", "").await;
        register(&s, "beta", "").await;
        assert_eq!(homes(s.agents().await.unwrap()), want, "a later node takes no one's agents");
    }

    async fn a_silent_node_is_marked_down_once_and_clears_the_mark_itself(f) {
        // Silence is measured against the clock: the margins are wide enough
        // for a loaded machine, where 20 ms may pass between two statements.
        const SILENT: i64 = 200;
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(SILENT as u64 + 50));
        let s = f.open().await;
        register(&s, "alpha", "").await;
        register(&s, "gamma", "").await;
        assert!(s.mark_down_nodes("gamma", 60_000).await.unwrap().is_empty(), "alpha just beat");
        pause().await;
        assert!(beat(&s, "gamma").await);
        let down = s.mark_down_nodes("gamma", SILENT).await.unwrap();
        assert_eq!(down.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["alpha"], "not the caller itself");
        assert!(down[0].silent_ms >= SILENT, "{down:?}");
        assert!(s.mark_down_nodes("gamma", SILENT).await.unwrap().is_empty(), "marked once");
        assert!(beat(&s, "gamma").await);
        assert!(s.mark_down_nodes("delta", SILENT).await.unwrap().is_empty(), "alpha is marked, gamma beat");
        // A heartbeat alone keeps the mark: the node that returns clears it, and is told.
        assert!(beat(&s, "alpha").await);
        assert_eq!(s.nodes().await.unwrap().len(), 2);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let seen = s.node_down_for("alpha").await.unwrap().expect("alpha is marked");
        assert!(seen >= SILENT, "down from its last heartbeat before: {seen} ms");
        assert!(s.node_down_for("alpha").await.unwrap().is_some(), "looking leaves the mark");
        assert_eq!(s.node_down_for("gamma").await.unwrap(), None, "never marked");
        assert_eq!(s.node_down_for("nobody").await.unwrap(), None);
        let back = s.node_back("alpha").await.unwrap().expect("alpha was marked");
        assert!(back >= SILENT, "down from its last heartbeat before: {back} ms");
        assert_eq!(s.node_back("alpha").await.unwrap(), None, "cleared once");
        assert_eq!(s.node_back("gamma").await.unwrap(), None, "never marked");
        assert_eq!(s.node_back("nobody").await.unwrap(), None);
        pause().await;
        assert!(beat(&s, "gamma").await);
        let again = s.mark_down_nodes("gamma", SILENT).await.unwrap();
        assert_eq!(again.len(), 1, "silent again, marked again: {again:?}");
    }

    async fn every_handle_sees_the_other_nodes(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        register(&a, "alpha", "a:1").await;
        register(&b, "beta", "b:1").await;
        assert!(beat(&a, "beta").await);
        let names = |v: Vec<crate::store::NodeRow>| v.into_iter().map(|n| n.name).collect::<Vec<_>>();
        assert_eq!(names(a.nodes().await.unwrap()), ["alpha", "beta"]);
        assert_eq!(names(b.nodes().await.unwrap()), ["alpha", "beta"]);
    }

    // ---- secrets ------------------------------------------------------------

    async fn an_agents_own_secret_wins_over_the_hive_wide_one(f) {
        let s = f.open().await;
        s.set_secret("TOKEN", None, "hive-wide-value").await.unwrap();
        s.set_secret("OTHER", None, "other-value").await.unwrap();
        s.set_secret("TOKEN", Some("alice"), "alices-value").await.unwrap();
        let alice = s.secrets_for("alice").await.unwrap();
        assert_eq!(alice["TOKEN"], "alices-value");
        assert_eq!(alice["OTHER"], "other-value");
        assert_eq!(s.secrets_for("bob").await.unwrap()["TOKEN"], "hive-wide-value");
        let entries = s.secret_entries().await.unwrap();
        assert_eq!(
            entries.iter().map(|e| (e.name.as_str(), e.agent.as_deref())).collect::<Vec<_>>(),
            [("OTHER", None), ("TOKEN", None), ("TOKEN", Some("alice"))]
        );
        s.set_secret("TOKEN", None, "replaced-value").await.unwrap();
        assert_eq!(s.secret_entries().await.unwrap().len(), 3);
        assert_eq!(s.secret_values().await.unwrap().len(), 3);
        assert!(s.remove_secret("TOKEN", Some("alice")).await.unwrap());
        assert!(!s.remove_secret("TOKEN", Some("alice")).await.unwrap());
        assert_eq!(s.secrets_for("alice").await.unwrap()["TOKEN"], "replaced-value");
        s.set_secret("GH", Some("bob"), "bobs-value").await.unwrap();
        assert_eq!(s.remove_secrets_of("bob").await.unwrap(), 1);
        assert_eq!(s.secret_entries().await.unwrap().len(), 2);
    }
}
