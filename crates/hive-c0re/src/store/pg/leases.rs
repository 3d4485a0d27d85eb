//! Agent leases on PostgreSQL (see `store/leases.rs` for the rules). Times
//! are the database's clock, so nodes' clocks need not agree.
//!
//! A fenced claim or ack first locks the lease row `FOR SHARE` in its
//! transaction, checking node, epoch and expiry: a takeover, which updates
//! that row, waits until the fenced operation committed, and a fenced
//! operation after a takeover finds the new epoch and is refused.

use std::time::Duration;

use super::{DB_NOW, PgStore};
use crate::store::leases::ttl_ms;
use crate::store::{Fence, Lease, MessageRow, Result};

impl PgStore {
    /// Takes `agent`'s lease for `node` for `ttl`: when nobody holds it, when
    /// it ran out, or when `node` holds it already (then it is renewed, same
    /// epoch). Taken from another node, the epoch grows and that node's claims
    /// go back to the inbox, in one transaction. None while another node holds it.
    pub async fn acquire_lease(
        &self,
        agent: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let ttl = ttl_ms(ttl);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let held = tx
            .query_opt(
                &format!(
                    "SELECT node, epoch, expires_at > {DB_NOW} FROM agent_leases WHERE agent = $1 FOR UPDATE"
                ),
                &[&agent],
            )
            .await?;
        let took_over = match &held {
            None => false,
            Some(r) if r.get::<_, &str>(0) == node => false,
            Some(r) if r.get::<_, bool>(2) => return Ok(None),
            Some(_) => true,
        };
        let row = if held.is_none() {
            // Two nodes may both find no row: the second insert waits for the
            // first to commit, then inserts nothing and so loses.
            tx.query_opt(
                &format!(
                    "INSERT INTO agent_leases (agent, node, epoch, expires_at) VALUES ($1, $2, 1, {DB_NOW} + $3) \
                     ON CONFLICT (agent) DO NOTHING RETURNING epoch, expires_at"
                ),
                &[&agent, &node, &ttl],
            )
            .await?
        } else {
            Some(
                tx.query_one(
                    &format!(
                        "UPDATE agent_leases SET node = $2, expires_at = {DB_NOW} + $3, \
                         epoch = epoch + CASE WHEN node = $2 THEN 0 ELSE 1 END \
                         WHERE agent = $1 RETURNING epoch, expires_at"
                    ),
                    &[&agent, &node, &ttl],
                )
                .await?,
            )
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let released_claims = if took_over {
            self.release_claims_in(&tx, agent).await?
        } else {
            0
        };
        tx.commit().await?;
        Ok(Some(Lease {
            epoch: row.get(0),
            expires_at: row.get(1),
            released_claims,
        }))
    }

    /// Extends the lease `node` holds on `agent` at `epoch` to `ttl` from now,
    /// also when it ran out but nobody took it; false when another node took
    /// it (the caller must stop running the agent).
    pub async fn renew_lease(
        &self,
        agent: &str,
        node: &str,
        epoch: i64,
        ttl: Duration,
    ) -> Result<bool> {
        let c = self.liveness_client().await?;
        let st = c
            .prepare_cached(&format!(
                "UPDATE agent_leases SET expires_at = {DB_NOW} + $4 WHERE agent = $1 AND node = $2 AND epoch = $3"
            ))
            .await?;
        Ok(c.execute(&st, &[&agent, &node, &epoch, &ttl_ms(ttl)])
            .await?
            > 0)
    }

    /// Gives up the lease `node` holds on `agent` at `epoch` (it stopped the
    /// agent): another node may take it at once. The row stays, so epochs
    /// never repeat. False when it was not this node's at that epoch.
    pub async fn release_lease(&self, agent: &str, node: &str, epoch: i64) -> Result<bool> {
        let c = self.liveness_client().await?;
        let st = c
            .prepare_cached(
                "UPDATE agent_leases SET expires_at = 0 WHERE agent = $1 AND node = $2 AND epoch = $3",
            )
            .await?;
        Ok(c.execute(&st, &[&agent, &node, &epoch]).await? > 0)
    }

    /// [`PgStore::claim_from`] for the holder of `recipient`'s lease only:
    /// refused (`StoreError::Fenced`) unless `fence` holds it now.
    pub async fn claim_fenced(
        &self,
        recipient: &str,
        sender: Option<&str>,
        max: u32,
        fence: Fence<'_>,
    ) -> Result<Vec<MessageRow>> {
        self.fenced(recipient, fence, async |tx| {
            self.claim_from_on(tx, recipient, sender, max).await
        })
        .await
    }

    /// What [`PgStore::recv`] would take, claimed for the turn in progress
    /// instead of acknowledged, by the holder of `recipient`'s lease only:
    /// refused (`StoreError::Fenced`) unless `fence` holds it now.
    pub async fn claim_read_fenced(
        &self,
        recipient: &str,
        max: u32,
        fence: Fence<'_>,
    ) -> Result<Vec<MessageRow>> {
        self.fenced(recipient, fence, async |tx| {
            self.claim_read_on(tx, recipient, max).await
        })
        .await
    }

    /// [`PgStore::ack`] for the holder of `recipient`'s lease only: refused
    /// (`StoreError::Fenced`) unless `fence` holds it now.
    pub async fn ack_fenced(
        &self,
        recipient: &str,
        ids: &[i64],
        fence: Fence<'_>,
    ) -> Result<usize> {
        self.fenced(recipient, fence, async |tx| {
            self.ack_on(tx, recipient, ids).await
        })
        .await
    }

    /// [`PgStore::release_claims`] for the holder of `recipient`'s lease
    /// only: a node that lost the lease must not hand back its successor's claims.
    pub async fn release_claims_fenced(&self, recipient: &str, fence: Fence<'_>) -> Result<usize> {
        self.fenced(recipient, fence, async |tx| {
            self.release_claims_in(tx, recipient).await
        })
        .await
    }

    /// [`PgStore::hold_claims`] for the holder of `recipient`'s lease only.
    pub async fn hold_claims_fenced(&self, recipient: &str, fence: Fence<'_>) -> Result<Vec<i64>> {
        self.fenced(recipient, fence, async |tx| {
            self.hold_claims_in(tx, recipient).await
        })
        .await
    }

    /// The frame of every fenced operation: `op` runs in the transaction
    /// whose lease check holds the row (see the module doc), so a takeover
    /// cannot come between the check and the commit; refused, or failed,
    /// nothing is written.
    async fn fenced<T>(
        &self,
        agent: &str,
        fence: Fence<'_>,
        op: impl AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !holds(&tx, agent, fence).await? {
            return Err(fence.refused(agent));
        }
        let out = op(&tx).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Returns the claims of every agent whose lease ran out (not released)
    /// to their inboxes and marks those leases held by nobody at a new epoch,
    /// in one transaction. The UPDATE is conditional on the lease still
    /// having a holder: of several nodes noticing at once, the second waits
    /// for the first's row locks, then finds no holder and skips the row.
    pub async fn reclaim_expired_leases(&self) -> Result<Vec<(String, usize)>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let agents: Vec<String> = tx
            .query(
                &format!(
                    "UPDATE agent_leases SET node = '', epoch = epoch + 1 \
                     WHERE node <> '' AND expires_at > 0 AND expires_at < {DB_NOW} RETURNING agent"
                ),
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(agents.len());
        for agent in agents {
            let n = self.release_claims_in(&tx, &agent).await?;
            out.push((agent, n));
        }
        tx.commit().await?;
        Ok(out)
    }
}

/// True when `fence` holds `agent`'s lease now; the row stays locked until
/// the transaction ends, so no takeover comes in between.
pub(super) async fn holds(
    tx: &deadpool_postgres::Transaction<'_>,
    agent: &str,
    fence: Fence<'_>,
) -> Result<bool> {
    let st = tx
        .prepare_cached(&format!(
            "SELECT 1 FROM agent_leases WHERE agent = $1 AND node = $2 AND epoch = $3 \
             AND expires_at > {DB_NOW} FOR SHARE"
        ))
        .await?;
    Ok(tx
        .query_opt(&st, &[&agent, &fence.node, &fence.epoch])
        .await?
        .is_some())
}
