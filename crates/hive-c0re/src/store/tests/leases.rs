//! Agent leases, fenced: exactly one node runs an agent, a node that lost
//! its lease can neither claim nor acknowledge, and a dead node's claims
//! come back to whoever takes its lease over. Two handles play two nodes
//! (two pools on PostgreSQL; on sqlite, one host, two clones of its store).

use std::time::Duration;

use super::both;
use crate::store::{Fence, StoreError};

const LONG: Duration = Duration::from_secs(60);
/// Short enough to wait out in a test; long enough that a loaded machine
/// does not let it run out between two statements that rely on it.
const SHORT: Duration = Duration::from_millis(700);

fn fenced<T: std::fmt::Debug>(r: crate::store::Result<T>) -> bool {
    match r {
        Err(StoreError::Fenced { .. }) => true,
        other => panic!("expected a refusal for a stale lease, got {other:?}"),
    }
}

both! {
    async fn a_lease_is_acquired_renewed_and_released(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let l = a.acquire_lease("alice", "n1", LONG).await.unwrap().expect("a free lease");
        assert_eq!(l.released_claims, 0);
        // Acquiring what it holds renews it, same epoch.
        let again = a.acquire_lease("alice", "n1", LONG).await.unwrap().unwrap();
        assert_eq!(again.epoch, l.epoch);
        assert!(again.expires_at >= l.expires_at);
        // Another node cannot take a live lease, nor renew or release it.
        assert_eq!(b.acquire_lease("alice", "n2", LONG).await.unwrap(), None);
        assert!(!b.renew_lease("alice", "n2", l.epoch, LONG).await.unwrap());
        assert!(!b.release_lease("alice", "n2", l.epoch).await.unwrap());
        assert!(a.renew_lease("alice", "n1", l.epoch, LONG).await.unwrap());
        assert!(!a.renew_lease("alice", "n1", l.epoch + 1, LONG).await.unwrap(), "a wrong epoch renewed");
        // Released, it is free at once; the next holder gets a new epoch.
        assert!(a.release_lease("alice", "n1", l.epoch).await.unwrap());
        let m = b.acquire_lease("alice", "n2", LONG).await.unwrap().expect("a released lease");
        assert_eq!(m.epoch, l.epoch + 1);
        assert!(!a.renew_lease("alice", "n1", l.epoch, LONG).await.unwrap(), "the old holder renewed");
        // Leases of other agents are their own.
        assert_eq!(a.acquire_lease("bob", "n1", LONG).await.unwrap().unwrap().epoch, 1);
    }

    async fn two_nodes_racing_for_a_lease_never_both_win(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        for round in 0..40 {
            let agent = format!("agent-{round}");
            let (x, y) = tokio::join!(
                a.acquire_lease(&agent, "n1", LONG),
                b.acquire_lease(&agent, "n2", LONG),
            );
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(x.is_some() != y.is_some(), "round {round}: {x:?} and {y:?}");
            // And for an expired lease, which both may take over.
            let (winner, holder) = if x.is_some() { (&a, "n1") } else { (&b, "n2") };
            let epoch = x.or(y).unwrap().epoch;
            assert!(winner.release_lease(&agent, holder, epoch).await.unwrap());
            let (x, y) = tokio::join!(
                a.acquire_lease(&agent, "n3", LONG),
                b.acquire_lease(&agent, "n4", LONG),
            );
            let (x, y) = (x.unwrap(), y.unwrap());
            assert!(x.is_some() != y.is_some(), "round {round}, takeover: {x:?} and {y:?}");
            assert_eq!(x.or(y).unwrap().epoch, epoch + 1);
        }
    }

    async fn a_takeover_after_expiry_bumps_the_epoch_and_returns_the_claims(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let m1 = a.send("operator", "alice", "one").await.unwrap();
        let m2 = a.send("operator", "alice", "two").await.unwrap();
        let old = a.acquire_lease("alice", "n1", SHORT).await.unwrap().unwrap();
        let n1 = Fence { node: "n1", epoch: old.epoch };
        let got = a.claim_fenced("alice", None, 10, n1).await.unwrap();
        assert_eq!(got.iter().map(|m| m.id).collect::<Vec<_>>(), [m1, m2]);
        // n1 dies: it renews no more. While its lease lasts nobody takes it.
        assert_eq!(b.acquire_lease("alice", "n2", LONG).await.unwrap(), None);
        tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
        // Run out, it fences n1 already, before anyone took it.
        assert!(fenced(a.claim_fenced("alice", None, 10, n1).await));
        let new = b.acquire_lease("alice", "n2", LONG).await.unwrap().expect("an expired lease");
        assert_eq!(new.epoch, old.epoch + 1);
        assert_eq!(new.released_claims, 2, "the dead node's claims did not come back");
        let n2 = Fence { node: "n2", epoch: new.epoch };
        let again = b.claim_fenced("alice", None, 10, n2).await.unwrap();
        assert_eq!(again.iter().map(|m| m.id).collect::<Vec<_>>(), [m1, m2]);
        // n1 comes back with its old epoch: it can neither renew, claim nor ack.
        assert!(!a.renew_lease("alice", "n1", old.epoch, LONG).await.unwrap());
        assert!(fenced(a.ack_fenced("alice", &[m1, m2], n1).await));
        assert_eq!(a.inbox_depth("alice").await.unwrap(), 2, "a stale ack delivered messages");
        assert_eq!(b.ack_fenced("alice", &[m1, m2], n2).await.unwrap(), 2);
        assert_eq!(a.inbox_depth("alice").await.unwrap(), 0);
    }

    async fn a_stale_or_foreign_epoch_can_neither_claim_nor_ack(f) {
        let a = f.open().await;
        let m = a.send("operator", "alice", "hi").await.unwrap();
        // Without a lease nobody may claim.
        assert!(fenced(a.claim_fenced("alice", None, 10, Fence { node: "n1", epoch: 1 }).await));
        let l = a.acquire_lease("alice", "n1", LONG).await.unwrap().unwrap();
        for wrong in [
            Fence { node: "n1", epoch: l.epoch + 1 },
            Fence { node: "n1", epoch: l.epoch - 1 },
            Fence { node: "n2", epoch: l.epoch },
        ] {
            assert!(fenced(a.claim_fenced("alice", None, 10, wrong).await), "{wrong:?} claimed");
        }
        // A lease on one agent fences nothing of another's.
        assert!(fenced(a.claim_fenced("bob", None, 10, Fence { node: "n1", epoch: l.epoch }).await));
        let holder = Fence { node: "n1", epoch: l.epoch };
        let got = a.claim_fenced("alice", Some("operator"), 10, holder).await.unwrap();
        assert_eq!(got[0].id, m);
        assert!(fenced(a.ack_fenced("alice", &[m], Fence { node: "n2", epoch: l.epoch }).await));
        assert!(fenced(a.ack_fenced("alice", &[m], Fence { node: "n1", epoch: l.epoch + 1 }).await));
        assert_eq!(a.inbox_depth("alice").await.unwrap(), 1);
        assert_eq!(a.ack_fenced("alice", &[m], holder).await.unwrap(), 1);
        // The refusal says what happened and what to do.
        let e = a.claim_fenced("alice", None, 1, Fence { node: "n2", epoch: 9 }).await.unwrap_err().to_string();
        assert!(e.contains("no longer holds alice's lease") && e.contains("must stop running alice"), "{e}");
    }

    async fn a_mid_turn_read_is_claimed_fenced_and_bounded_as_recv_is(f) {
        use hive_sh4re::limits::{MAX_BODY_BYTES, RECV_MAX_BYTES};
        let a = f.open().await;
        let l = a.acquire_lease("alice", "n1", LONG).await.unwrap().unwrap();
        let holder = Fence { node: "n1", epoch: l.epoch };
        let turn = a.send("operator", "alice", "turn").await.unwrap();
        assert_eq!(a.claim_fenced("alice", None, 10, holder).await.unwrap()[0].id, turn);
        let big = "x".repeat(MAX_BODY_BYTES);
        let n = RECV_MAX_BYTES / MAX_BODY_BYTES + 2;
        let mut sent = vec![];
        for _ in 0..n {
            sent.push(a.send("bob", "alice", &big).await.unwrap());
        }
        // Only the lease's holder reads, and what was claimed is not read again.
        assert!(fenced(a.claim_read_fenced("alice", 100, Fence { node: "n2", epoch: l.epoch }).await));
        let first = a.claim_read_fenced("alice", 100, holder).await.unwrap();
        assert_eq!(first.len(), RECV_MAX_BYTES / MAX_BODY_BYTES, "bounded by bytes as recv is");
        let rest = a.claim_read_fenced("alice", 100, holder).await.unwrap();
        let read: Vec<i64> = first.iter().chain(&rest).map(|m| m.id).collect();
        assert_eq!(read, sent, "each once, oldest first, the turn's own not again");
        assert!(a.claim_read_fenced("alice", 100, holder).await.unwrap().is_empty());
        // Claimed, not acknowledged: a released turn gives them all back.
        assert_eq!(a.inbox_depth("alice").await.unwrap(), 1 + n as u64);
        assert_eq!(a.release_claims_fenced("alice", holder).await.unwrap(), 1 + n);
        let again = a.claim_fenced("alice", None, 100, holder).await.unwrap();
        assert_eq!(again.len(), 1 + n);
        let ids: Vec<i64> = again.iter().map(|m| m.id).collect();
        assert_eq!(a.ack_fenced("alice", &ids, holder).await.unwrap(), 1 + n);
        assert_eq!(a.inbox_depth("alice").await.unwrap(), 0);
    }

    async fn a_run_out_lease_gives_its_claims_back_once_and_fences_its_old_holder(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let m1 = a.send("operator", "alice", "one").await.unwrap();
        let old = a.acquire_lease("alice", "n1", SHORT).await.unwrap().unwrap();
        let n1 = Fence { node: "n1", epoch: old.epoch };
        assert_eq!(a.claim_fenced("alice", None, 10, n1).await.unwrap()[0].id, m1);
        // A live lease and a released one are left alone.
        let bob = a.acquire_lease("bob", "n1", LONG).await.unwrap().unwrap();
        let carol = a.acquire_lease("carol", "n1", LONG).await.unwrap().unwrap();
        assert!(a.release_lease("carol", "n1", carol.epoch).await.unwrap());
        assert!(b.reclaim_expired_leases().await.unwrap().is_empty());
        tokio::time::sleep(SHORT + Duration::from_millis(100)).await;
        // Two nodes notice: one gives the claim back.
        let (x, y) = tokio::join!(a.reclaim_expired_leases(), b.reclaim_expired_leases());
        let mut all = x.unwrap();
        all.extend(y.unwrap());
        assert_eq!(all, [("alice".to_owned(), 1)]);
        assert!(a.reclaim_expired_leases().await.unwrap().is_empty(), "reclaimed twice");
        // Its old holder can no longer renew, claim, ack, hold nor release.
        assert!(!a.renew_lease("alice", "n1", old.epoch, LONG).await.unwrap());
        assert!(fenced(a.ack_fenced("alice", &[m1], n1).await));
        assert!(fenced(a.hold_claims_fenced("alice", n1).await));
        assert!(fenced(a.release_claims_fenced("alice", n1).await));
        assert_eq!(a.inbox_depth("alice").await.unwrap(), 1);
        // The node that comes back takes the lease at a newer epoch and finds the message.
        let back = a.acquire_lease("alice", "n1", LONG).await.unwrap().unwrap();
        assert_eq!(back.epoch, old.epoch + 2, "nobody's epoch, then its own again");
        let n1b = Fence { node: "n1", epoch: back.epoch };
        assert_eq!(a.claim_fenced("alice", None, 10, n1b).await.unwrap()[0].id, m1);
        assert_eq!(a.release_claims_fenced("alice", n1b).await.unwrap(), 1);
        assert_eq!(a.claim_fenced("alice", None, 10, n1b).await.unwrap().len(), 1);
        assert_eq!(a.hold_claims_fenced("alice", n1b).await.unwrap(), [m1]);
        assert!(a.renew_lease("bob", "n1", bob.epoch, LONG).await.unwrap(), "a live lease was reclaimed");
    }

    async fn an_ack_racing_a_takeover_either_delivers_or_comes_back_never_both(f) {
        let a = f.open().await;
        let b = f.second(&a).await;
        let mut raced = 0;
        for round in 0..24u64 {
            let agent = format!("racer-{round}");
            for i in 0..3 {
                a.send("operator", &agent, &format!("m{i}")).await.unwrap();
            }
            let l = a.acquire_lease(&agent, "n1", Duration::from_millis(100)).await.unwrap().unwrap();
            let n1 = Fence { node: "n1", epoch: l.epoch };
            let ids: Vec<i64> = match a.claim_fenced(&agent, None, 10, n1).await {
                Ok(got) => got.iter().map(|m| m.id).collect(),
                // A loaded machine took the lease's whole life to get here:
                // nothing was claimed, so this round has no race to show.
                Err(StoreError::Fenced { .. }) => continue,
                Err(e) => panic!("{e}"),
            };
            raced += 1;
            // Around the lease's end: the ack and the takeover land in either order.
            tokio::time::sleep(Duration::from_millis(90 + round % 4 * 5)).await;
            let (acked, taken) = tokio::join!(a.ack_fenced(&agent, &ids, n1), async {
                loop {
                    if let Some(l) = b.acquire_lease(&agent, "n2", LONG).await.unwrap() {
                        return l;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            let acked = match acked {
                Ok(n) => n,
                Err(StoreError::Fenced { .. }) => 0,
                Err(e) => panic!("{e}"),
            };
            assert_eq!(acked + taken.released_claims, 3, "round {round}: acked {acked}, given back {}", taken.released_claims);
            assert_eq!(b.inbox_depth(&agent).await.unwrap(), 3 - acked as u64);
        }
        assert!(raced >= 12, "only {raced} of 24 rounds claimed before their lease ran out");
    }
}

/// A takeover in flight (here an owner's transaction holding the lease row,
/// as `acquire_lease` does while it moves the lease) holds up a fenced ack
/// until it commits, and the ack then finds the new epoch and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_fenced_ack_waits_for_a_takeover_in_flight_and_is_refused_after_it() {
    let Some(f) = super::pg_only::fixture().await else {
        return;
    };
    let a = f.open().await;
    let m = a.send("operator", "alice", "hi").await.unwrap();
    let l = a.acquire_lease("alice", "n1", LONG).await.unwrap().unwrap();
    let n1 = Fence {
        node: "n1",
        epoch: l.epoch,
    };
    a.claim_fenced("alice", None, 10, n1).await.unwrap();
    let mut owner = crate::store::pg::TestCluster::shared()
        .connect_as(
            crate::store::pg::test_cluster::OWNER,
            super::pg_only::database(&f),
        )
        .await;
    let tx = owner.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM agent_leases WHERE agent = 'alice' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let ack = tokio::spawn({
        let a = a.clone();
        async move { a.ack_fenced("alice", &[m], n1).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !ack.is_finished(),
        "a fenced ack went by a takeover in flight"
    );
    tx.execute(
        "UPDATE agent_leases SET node = 'n2', epoch = epoch + 1 WHERE agent = 'alice'",
        &[],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(fenced(ack.await.unwrap()));
    assert_eq!(a.inbox_depth("alice").await.unwrap(), 1);
}
