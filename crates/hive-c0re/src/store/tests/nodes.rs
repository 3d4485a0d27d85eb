//! What must hold when several nodes share one hive: two handles race on the
//! same rows (on PostgreSQL two pools, as two nodes; on sqlite, one host,
//! two clones of its one store).

use std::collections::HashSet;

use hive_sh4re::host::{ApprovalKind, ApprovalStatus};

use super::{both, settled};
use crate::store::{Db, Limits, NewApproval, NewRequest, SendError};

/// How recent a request a test's takers take: long past any test's run.
pub(super) const MINUTE: i64 = 60_000;

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

/// Reads a live tail from `at` while `writers` run and until, once they
/// are done, nothing is left or pending (at most 60 s); what `read` took.
async fn tail_while(
    writers: tokio::task::JoinHandle<Vec<()>>,
    mut at: i64,
    read: impl AsyncFn(i64) -> (Vec<String>, i64, bool),
) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = vec![];
    while std::time::Instant::now() < deadline {
        let done = writers.is_finished();
        let (rows, next, pending) = read(at).await;
        at = next;
        let settled = rows.is_empty() && !pending;
        seen.extend(rows);
        if done && settled {
            break;
        }
    }
    writers.await.unwrap();
    seen
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
                    while_fewer_than: None,
                })
                .await
                .unwrap()
            .expect("no bound");
            let (x, y) = tokio::join!(
                tokio::spawn({
                    let a = a.clone();
                    async move { a.decide_approval(id, ApprovalStatus::Approved, Some("node a"), "a").await.unwrap() }
                }),
                tokio::spawn({
                    let b = b.clone();
                    async move { b.decide_approval(id, ApprovalStatus::Denied, Some("node b"), "b").await.unwrap() }
                }),
            );
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(x ^ y, "approval {id}: node a won {x}, node b won {y}");
            let row = b.approval(id).await.unwrap().unwrap();
            let winner = if x { ("approved", "node a", "a") } else { ("denied", "node b", "b") };
            assert_eq!((row.status.as_str(), row.note.as_deref().unwrap(), row.decided_on.as_deref().unwrap()), winner);
        }
    }

    async fn an_open_turn_is_ended_once_by_nodes_racing_to_end_it(f) {
        // A node back from a cut link and the node that took back its lease
        // both find the agent's turn open and end it as interrupted.
        let a = f.open().await;
        let b = f.second(&a).await;
        let start_of = async |s: &Db| s.add_events("pong", &[("turn_start", "{}")]).await.unwrap()[0];
        let figures = [("turn.exit.interrupted", 1.0), ("inbox.depth", 0.0)];
        let turns = async |s: &Db| {
            let rows = s.stats_since(Some("pong"), 0).await.unwrap();
            rows.iter().filter(|r| r.key == "turn.exit.interrupted").count()
        };
        for round in 0..10 {
            let start = start_of(&a).await;
            let ended = race(&a, &b, 4, |s, i| async move {
                s.end_open_turn("pong", start, &format!("{{\"by\":{i}}}"), &figures).await.unwrap()
            })
            .await;
            let ids: Vec<i64> = ended.iter().flatten().copied().collect();
            assert_eq!(ids.len(), 1, "round {round}: the turn ended {ids:?}");
            let after = b.events_since("pong", start, 100).await.unwrap();
            assert_eq!(after.iter().map(|e| (e.id, e.kind.as_str())).collect::<Vec<_>>(), [(ids[0], "turn_end")]);
            assert_eq!(turns(&b).await, round + 1, "round {round}: its figures count once");
        }
        // An end for a turn that is over, or was followed by another, stores nothing.
        let old = start_of(&a).await;
        let newer = start_of(&b).await;
        assert_eq!(a.end_open_turn("pong", old, "{}", &figures).await.unwrap(), None, "a later turn began");
        let end = b.end_open_turn("pong", newer, "{}", &figures).await.unwrap().unwrap();
        assert_eq!(a.end_open_turn("pong", newer, "{}", &figures).await.unwrap(), None, "ended already");
        assert_eq!(a.last_turn_event("pong").await.unwrap().unwrap().id, end);
        assert_eq!(turns(&a).await, 11);
    }

    async fn a_down_node_is_marked_by_one_of_the_nodes_racing_to_notice(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        for _ in 0..10 {
            a.register_node("alpha", "", "alpha#test", 15_000).await.unwrap();
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

    async fn a_hive_wide_job_is_run_by_one_node_at_a_time_once_per_interval(f) {
        use std::time::Duration;
        let a = f.open().await;
        let b = f.second(&a).await;
        // Long enough that a loaded machine does not run out a step before its check.
        let (every, hold) = (Duration::from_millis(1000), Duration::from_millis(2000));
        // Six nodes race for the job: one takes it.
        let took = race(&a, &b, 6, move |s, i| async move {
            s.take_job("vacuum", &format!("n{i}"), every, hold).await.unwrap()
        })
        .await;
        let winners: Vec<usize> = (0..6).filter(|i| took[*i]).collect();
        assert_eq!(winners.len(), 1, "taken by {winners:?}");
        let winner = format!("n{}", winners[0]);
        // Finished, it is not due again before the interval ends.
        a.finish_job("vacuum", &winner).await.unwrap();
        assert!(!b.take_job("vacuum", "other", every, hold).await.unwrap());
        tokio::time::sleep(every + Duration::from_millis(20)).await;
        assert!(b.take_job("vacuum", "other", every, hold).await.unwrap());
        // Held and not finished (its node died), it is another's once the hold and interval ran out.
        assert!(!a.take_job("vacuum", "third", every, hold).await.unwrap());
        tokio::time::sleep(hold + Duration::from_millis(20)).await;
        assert!(a.take_job("vacuum", "third", every, hold).await.unwrap());
        // Finishing a job another node holds changes nothing.
        b.finish_job("vacuum", "other").await.unwrap();
        let every = Duration::ZERO;
        assert!(!b.take_job("vacuum", "fourth", every, hold).await.unwrap(), "still held by third");
    }

    async fn a_job_set_by_a_clock_since_stepped_back_is_due_again(f) {
        use std::time::Duration;
        let s = f.open().await;
        let (every, hold) = (Duration::from_secs(3600), Duration::from_secs(60));
        assert!(s.take_job("vacuum", "alpha", every, hold).await.unwrap());
        s.finish_job("vacuum", "alpha").await.unwrap();
        assert!(!s.take_job("vacuum", "alpha", every, hold).await.unwrap(), "not due for an hour");
        // A node with a longer interval set it: not due before that.
        f.execute("UPDATE hive_jobs SET next_at = next_at + 6 * 3600000").await;
        assert!(!s.take_job("vacuum", "alpha", every, hold).await.unwrap(), "another node's longer interval");
        // Set when the clock read two days ahead.
        f.execute("UPDATE hive_jobs SET next_at = next_at + 2 * 86400000").await;
        assert!(s.take_job("vacuum", "alpha", every, hold).await.unwrap(), "due: the clock stepped back");
        // Held until a day from now, by a node whose clock ran ahead: a hold runs out within `hold`.
        f.execute("UPDATE hive_jobs SET held_until = held_until + 2 * 86400000, next_at = 0").await;
        assert!(s.take_job("vacuum", "beta", every, hold).await.unwrap(), "a hold past its length is over");
    }

    async fn two_nodes_serving_one_webhook_never_take_the_same_delivery(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let mut queued = HashSet::new();
        for i in 0..120 {
            queued.insert(a.add_notification("message", None, &format!("n{i}"), "/", &["w"]).await.unwrap().id);
        }
        let taken = race(&a, &b, 6, |s, _| async move {
            let mut mine = vec![];
            loop {
                let now = crate::clock::now_ms();
                let got = s.take_deliveries("w", now, now + 60_000, 7).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|d| d.notification));
            }
        })
        .await;
        let all: Vec<i64> = taken.into_iter().flatten().collect();
        let unique: HashSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a delivery was taken twice");
        assert_eq!(unique, queued, "a delivery was never taken");
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

    async fn the_live_feed_misses_no_message_while_two_nodes_send(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        // Each node takes its message ids from a reserve of its own: a
        // message of a's sent after one of b's has a lower id.
        let at = b.message_tail().await.unwrap();
        let firsts = [
            a.send("operator", "alice", "a first").await.unwrap(),
            b.send("operator", "bob", "b first").await.unwrap(),
        ];
        let (got, at) = settled(at, async |at| b.messages_after(at, 10).await.unwrap()).await;
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), firsts);
        let late = a.send("operator", "alice", "a later").await.unwrap();
        if matches!(a, Db::Postgres(_)) {
            assert!(late < firsts[1], "a's ids come from its own reserve, below b's");
        }
        let (got, at) = settled(at, async |at| b.messages_after(at, 10).await.unwrap()).await;
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [late], "a's later message was passed over");
        // And while both send at once, a reader on b tailing every mailbox sees every message once.
        const SENDERS: usize = 6;
        const EACH: usize = 40;
        let senders = {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                race(&a, &b, SENDERS, |s, i| async move {
                    for k in 0..EACH {
                        s.send("operator", &format!("agent-{}", k % 3), &format!("{i}-{k}")).await.unwrap();
                    }
                })
                .await
            })
        };
        let seen = tail_while(senders, at, async |at| {
            let t = b.messages_after(at, 25).await.unwrap();
            (t.rows.into_iter().map(|m| m.body).collect(), t.next, t.pending)
        })
        .await;
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "the tail read a message twice");
        assert_eq!(seen.len(), SENDERS * EACH, "the tail passed over {} messages", SENDERS * EACH - seen.len());
    }

    async fn the_live_feed_misses_no_turn_while_agents_on_two_nodes_log(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let at = b.event_tail().await.unwrap();
        const AGENTS: usize = 6;
        const TURNS: usize = 25;
        let writers = {
            let (a, b) = (a.clone(), b.clone());
            tokio::spawn(async move {
                race(&a, &b, AGENTS, |s, i| async move {
                    for k in 0..TURNS {
                        let items = [("turn_start".to_owned(), format!("{i}-{k}")), ("stream".to_owned(), "{}".to_owned())];
                        s.add_events(&format!("agent-{i}"), &items).await.unwrap();
                    }
                })
                .await
            })
        };
        let seen = tail_while(writers, at, async |at| {
            let t = b.feed_events_after(at, 20).await.unwrap();
            (t.rows.into_iter().map(|e| e.payload_json).collect(), t.next, t.pending)
        })
        .await;
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "the tail read a turn twice");
        assert_eq!(seen.len(), AGENTS * TURNS, "the tail passed over {} turns", AGENTS * TURNS - seen.len());
    }

    async fn a_steering_request_is_taken_once_by_racing_takers(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let mut ids = HashSet::new();
        for i in 0..40 {
            ids.insert(a.enqueue_request(&request("beta", &format!("x{i}"))).await.unwrap());
        }
        // Another node's request is no business of beta's takers.
        let gamma = a.enqueue_request(&request("gamma", "y")).await.unwrap();
        let taken = race(&a, &b, 6, |s, _| async move {
            let mut mine = vec![];
            for _ in 0..5 {
                mine.extend(s.take_requests("beta", MINUTE).await.unwrap().into_iter().map(|r| r.id));
            }
            mine
        })
        .await;
        let all: Vec<i64> = taken.into_iter().flatten().collect();
        let unique: HashSet<i64> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a request was taken twice");
        assert_eq!(unique, ids, "a request was never taken");
        assert!(a.take_requests("beta", MINUTE).await.unwrap().is_empty());
        assert!(a.request(gamma).await.unwrap().unwrap().taken_at.is_none());
    }

    async fn a_request_its_asker_gave_up_on_is_never_taken(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        // The asker crashed or stopped while it waited: no one withdrew it.
        let stale = a.enqueue_request(&request("beta", "x")).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(b.take_requests("beta", 20).await.unwrap().is_empty(), "an abandoned request was taken");
        let row = a.request(stale).await.unwrap().unwrap();
        assert!(row.cancelled && row.taken_at.is_none(), "{row:?}");
        assert!(b.take_requests("beta", MINUTE).await.unwrap().is_empty(), "taken after all");
        // A fresh one still is.
        let fresh = a.enqueue_request(&request("beta", "y")).await.unwrap();
        let taken = b.take_requests("beta", MINUTE).await.unwrap();
        assert_eq!(taken.iter().map(|r| r.id).collect::<Vec<_>>(), [fresh]);
    }

    async fn a_cancel_and_a_take_racing_have_one_winner(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        for i in 0..20 {
            let id = a.enqueue_request(&request("beta", &format!("x{i}"))).await.unwrap();
            let (cancelled, taken) = tokio::join!(
                tokio::spawn({
                    let a = a.clone();
                    async move { a.cancel_request(id).await.unwrap() }
                }),
                tokio::spawn({
                    let b = b.clone();
                    async move { b.take_requests("beta", MINUTE).await.unwrap() }
                }),
            );
            let (cancelled, taken) = (cancelled.unwrap(), taken.unwrap());
            assert!(cancelled ^ !taken.is_empty(), "request {id}: cancelled {cancelled}, taken {taken:?}");
            let row = a.request(id).await.unwrap().unwrap();
            assert_eq!((row.cancelled, row.taken_at.is_some()), (cancelled, !cancelled), "{row:?}");
            // Neither happens twice.
            assert!(!a.cancel_request(id).await.unwrap());
            assert!(b.take_requests("beta", MINUTE).await.unwrap().is_empty());
        }
    }

    async fn a_steering_requests_outcome_round_trips_once(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let id = a.enqueue_request(&NewRequest {
            node: "beta",
            agent: "x",
            verb: "stop",
            args_json: r#"{"graceful":true}"#,
            asked_by: "alpha",
        }).await.unwrap();
        let pending = a.request(id).await.unwrap().unwrap();
        assert_eq!(
            (pending.node.as_str(), pending.agent.as_str(), pending.verb.as_str(), pending.args_json.as_str(), pending.asked_by.as_str()),
            ("beta", "x", "stop", r#"{"graceful":true}"#, "alpha")
        );
        assert_eq!(pending.outcome(), None);
        // Not taken: nothing to finish.
        assert!(!b.finish_request(id, true, "").await.unwrap());
        let taken = b.take_requests("beta", MINUTE).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].id, id);
        assert_eq!(a.request(id).await.unwrap().unwrap().outcome(), None);
        assert!(b.finish_request(id, false, "x is not running: start it").await.unwrap());
        assert!(!b.finish_request(id, true, "again").await.unwrap(), "finished twice");
        assert_eq!(
            a.request(id).await.unwrap().unwrap().outcome(),
            Some((false, "x is not running: start it".to_owned()))
        );
        assert!(!a.cancel_request(id).await.unwrap(), "a finished request was cancelled");
        assert_eq!(a.request(id + 1000).await.unwrap(), None);
    }

    async fn a_granted_shell_requests_ticket_is_used_once(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let mut shell = request("beta", "x");
        shell.verb = "shell";
        let mut ids = [0i64; 3];
        for id in &mut ids {
            *id = a.enqueue_request(&shell).await.unwrap();
        }
        let [granted, refused, pending] = ids;
        // Not done yet: no use.
        assert!(!b.use_request(granted, "beta").await.unwrap());
        assert_eq!(b.take_requests("beta", MINUTE).await.unwrap().len(), 3);
        assert!(b.finish_request(granted, true, "").await.unwrap());
        assert!(b.finish_request(refused, false, "x is not running").await.unwrap());
        assert!(!b.use_request(pending, "beta").await.unwrap(), "a request not finished");
        assert!(!b.use_request(refused, "beta").await.unwrap(), "a refused request");
        assert!(!a.use_request(granted, "alpha").await.unwrap(), "another node's request");
        assert!(!a.use_request(granted + 1000, "beta").await.unwrap(), "no request");
        // Once, whoever asks (two nodes racing: one wins).
        let (x, y) = tokio::join!(a.use_request(granted, "beta"), b.use_request(granted, "beta"));
        assert!(x.unwrap() ^ y.unwrap(), "used twice or never");
        assert!(!b.use_request(granted, "beta").await.unwrap(), "a replay");
    }
}

/// A request for `agent` on `node`, asked by alpha.
fn request<'a>(node: &'a str, agent: &'a str) -> NewRequest<'a> {
    NewRequest {
        node,
        agent,
        verb: "start",
        args_json: "{}",
        asked_by: "alpha",
    }
}
