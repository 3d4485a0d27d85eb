//! What must hold when several nodes share one hive: two handles race on the
//! same rows (on PostgreSQL two pools, as two nodes; on sqlite, one host,
//! two clones of its one store).

use std::collections::HashSet;

use hive_sh4re::host::{ApprovalKind, ApprovalStatus};

use super::both;
use crate::store::{Db, Limits, NewApproval, SendError};

/// Runs `n` tasks, alternating between the two handles; returns their results in order.
async fn race<T: Send + 'static, F>(
    a: &Db,
    b: &Db,
    n: usize,
    task: impl Fn(Db, usize) -> F,
) -> Vec<T>
where
    F: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n)
        .map(|i| tokio::spawn(task(if i % 2 == 0 { a.clone() } else { b.clone() }, i)))
        .collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

both! {
    async fn two_claimers_never_take_the_same_message(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let mut sent = HashSet::new();
        for i in 0..300 {
            sent.insert(a.send("operator", "alice", &format!("m{i}")).await.unwrap());
        }
        // Four claimers per node, each taking small batches until the inbox is empty.
        let claimed = race(&a, &b, 8, |s, _| async move {
            let mut mine = vec![];
            loop {
                let got = s.claim("alice", 7).await.unwrap();
                if got.is_empty() && !s.has_unclaimed("alice").await.unwrap() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|m| m.id));
            }
        })
        .await;
        let all: Vec<i64> = claimed.into_iter().flatten().collect();
        let unique: HashSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a message was claimed twice");
        assert_eq!(unique, sent, "a message was never claimed");
    }

    async fn an_approval_is_decided_once_by_two_racing_approvers(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        for _ in 0..20 {
            let id = a
                .add_approval(&NewApproval {
                    agent: "dave",
                    kind: ApprovalKind::Spawn,
                    payload_json: "{}",
                    commit_ref: "",
                    description: None,
                })
                .await
                .unwrap();
            let (x, y) = tokio::join!(
                tokio::spawn({
                    let a = a.clone();
                    async move { a.decide_approval(id, ApprovalStatus::Approved, Some("node a")).await.unwrap() }
                }),
                tokio::spawn({
                    let b = b.clone();
                    async move { b.decide_approval(id, ApprovalStatus::Denied, Some("node b")).await.unwrap() }
                }),
            );
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(x ^ y, "approval {id}: node a won {x}, node b won {y}");
            let row = b.approval(id).await.unwrap().unwrap();
            let winner = if x { ("approved", "node a") } else { ("denied", "node b") };
            assert_eq!((row.status.as_str(), row.note.as_deref().unwrap()), winner);
        }
    }

    async fn a_down_node_is_marked_by_one_of_the_nodes_racing_to_notice(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        for _ in 0..10 {
            a.register_node("alpha", "").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            // Four watchers, two per node, each a node of its own name.
            let marked = race(&a, &b, 4, |s, i| async move {
                s.mark_down_nodes(&format!("watcher-{i}"), 10).await.unwrap()
            })
            .await;
            let alpha: Vec<usize> = marked
                .iter()
                .enumerate()
                .filter(|(_, m)| m.iter().any(|d| d.name == "alpha"))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(alpha.len(), 1, "alpha marked by {alpha:?}");
            assert!(b.node_back("alpha").await.unwrap().is_some());
        }
    }

    async fn a_question_is_answered_once_by_two_racing_operators(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        for _ in 0..20 {
            let id = a.add_question("manager", "go?", &[], 60).await.unwrap();
            let won = race(&a, &b, 2, |s, i| async move {
                s.answer_question(id, if i == 0 { "from a" } else { "from b" }).await.unwrap()
            })
            .await;
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
            let answer = a.question(id).await.unwrap().unwrap().answer.unwrap();
            assert_eq!(answer, if won[0] { "from a" } else { "from b" });
        }
    }

    async fn the_inbox_cap_refuses_without_dropping(f) {
        let a = f.open_with(Limits { inbox_cap: 50, ..Limits::default() }).await;
        let b = f.second(&a).await;
        // Eight senders, four per node, 20 sends each: 160 tries at a cap of 50.
        let results = race(&a, &b, 8, |s, i| async move {
            let mut out = vec![];
            for k in 0..20 {
                let body = format!("s{i}-{k}");
                out.push((body.clone(), s.send("operator", "alice", &body).await));
            }
            out
        })
        .await;
        let results: Vec<_> = results.into_iter().flatten().collect();
        let accepted: Vec<(String, i64)> = results
            .iter()
            .filter_map(|(body, r)| r.as_ref().ok().map(|id| (body.clone(), *id)))
            .collect();
        let refused = results
            .iter()
            .filter(|(_, r)| matches!(r, Err(SendError::InboxFull { cap: 50, .. })))
            .count();
        assert_eq!((accepted.len(), refused), (50, 110), "other errors: {:?}",
            results.iter().filter(|(_, r)| matches!(r, Err(SendError::Store(_)))).count());
        assert_eq!(a.inbox_depth("alice").await.unwrap(), 50);
        assert_eq!(b.inbox_depth("alice").await.unwrap(), 50);
        // Every accepted send is stored, under its id, with its body.
        let mut got: Vec<(String, i64)> = b
            .recv("alice", 500)
            .await
            .unwrap()
            .into_iter()
            .map(|m| (m.body, m.id))
            .collect();
        let mut want = accepted;
        got.sort();
        want.sort();
        assert_eq!(got, want);
        // Read mail frees room again.
        a.send("operator", "alice", "room again").await.unwrap();
    }

    async fn a_reader_tailing_events_misses_none_while_two_nodes_append(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        const WRITERS: usize = 6;
        const BATCHES: usize = 25;
        let writers = {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                race(&a, &b, WRITERS, |s, i| async move {
                    for k in 0..BATCHES {
                        let items: Vec<(String, String)> =
                            (0..4).map(|j| ("stream".into(), format!("{i}-{k}-{j}"))).collect();
                        s.add_events("alice", &items).await.unwrap();
                    }
                })
                .await
            })
        };
        // Tails by id as the dashboard does: a row that commits after a higher id was read would be lost.
        let mut seen = vec![];
        let mut last = 0;
        let total = WRITERS * BATCHES * 4;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while seen.len() < total && std::time::Instant::now() < deadline {
            let got = b.events_since("alice", last, 50).await.unwrap();
            if let Some(e) = got.last() {
                last = e.id;
            }
            seen.extend(got.into_iter().map(|e| e.payload_json));
            if writers.is_finished() && b.events_since("alice", last, 1).await.unwrap().is_empty() {
                break;
            }
        }
        writers.await.unwrap();
        let stored = a.events_before("alice", None, u32::MAX).await.unwrap().len();
        assert_eq!(stored, total);
        assert_eq!(seen.len(), total, "the tailing reader skipped {} events", total - seen.len());
    }
}
