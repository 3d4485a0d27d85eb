//! Agent leases: exactly one node runs an agent at a time. A node runs an
//! agent only while it holds the agent's lease (`agent_leases`), renewing it
//! well before it runs out; a node that stops renewing (it died, or lost its
//! link) loses the lease when it expires, and another node may take it.
//!
//! Each change of holder bumps the lease's *epoch*, and the operations a
//! runner does for its agent (claiming messages, acknowledging them) come in
//! fenced forms that name the epoch: they are refused, in the same
//! transaction, once the lease has moved on or run out. Taking a lease over
//! from another node returns that node's claims to the inbox in the same
//! transaction, so the new holder finds them again.
//!
//! On sqlite one host holds every lease and the checks always pass for it;
//! the table and the rules are the same so that `Db` behaves alike. Times
//! are the database's clock on PostgreSQL, so nodes' clocks need not agree.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::messages::MessageRow;
use super::{Inner, Result, Store, StoreError};
use crate::clock::now_ms;

/// A lease a node holds on an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Grows each time the lease passes to another node.
    pub epoch: i64,
    /// When it runs out unless renewed (unix ms, the database's clock).
    pub expires_at: i64,
    /// Messages the previous holder had claimed, given back to the inbox
    /// because this node took the lease over (0 otherwise).
    pub released_claims: usize,
}

/// Who an operation acts for: the node and the epoch of the lease it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence<'a> {
    pub node: &'a str,
    pub epoch: i64,
}

impl Fence<'_> {
    /// The refusal when the lease moved on or ran out.
    pub(super) fn refused(&self, agent: &str) -> StoreError {
        StoreError::Fenced {
            agent: agent.to_owned(),
            node: self.node.to_owned(),
            epoch: self.epoch,
        }
    }
}

/// A lease's time to live in ms.
pub(super) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Inner {
    /// True when `fence` holds `agent`'s lease now.
    fn holds(&self, agent: &str, fence: Fence<'_>) -> Result<bool> {
        holds_on(&self.conn, agent, fence)
    }
}

/// True when `fence` holds `agent`'s lease now, as `conn` (a transaction of
/// the caller's) reads it; one daemon writes a sqlite file, so the answer
/// holds until the caller's transaction commits.
pub(super) fn holds_on(conn: &Connection, agent: &str, fence: Fence<'_>) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM agent_leases WHERE agent = ?1 AND node = ?2 AND epoch = ?3 AND expires_at > ?4",
        )?
        .query_row(params![agent, fence.node, fence.epoch, now_ms()], |_| Ok(()))
        .optional()?
        .is_some())
}

impl Store {
    /// Takes `agent`'s lease for `node` for `ttl`: when nobody holds it, when
    /// it ran out, or when `node` holds it already (then it is renewed, same
    /// epoch). Taken from another node, the epoch grows and that node's claims
    /// go back to the inbox. None while another node holds it.
    pub fn acquire_lease(&self, agent: &str, node: &str, ttl: Duration) -> Result<Option<Lease>> {
        let now = now_ms();
        let expires_at = now.saturating_add(ttl_ms(ttl));
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let held: Option<(String, i64, i64)> = tx
            .query_row(
                "SELECT node, epoch, expires_at FROM agent_leases WHERE agent = ?1",
                params![agent],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let (epoch, released_claims) = match held {
            None => {
                tx.execute(
                    "INSERT INTO agent_leases (agent, node, epoch, expires_at) VALUES (?1, ?2, 1, ?3)",
                    params![agent, node, expires_at],
                )?;
                (1, 0)
            }
            Some((holder, epoch, _)) if holder == node => {
                tx.execute(
                    "UPDATE agent_leases SET expires_at = ?2 WHERE agent = ?1",
                    params![agent, expires_at],
                )?;
                (epoch, 0)
            }
            Some((_, _, until)) if until > now => return Ok(None),
            Some((_, epoch, _)) => {
                tx.execute(
                    "UPDATE agent_leases SET node = ?2, epoch = ?3, expires_at = ?4 WHERE agent = ?1",
                    params![agent, node, epoch + 1, expires_at],
                )?;
                let released = tx.execute(
                    "UPDATE messages SET claimed_at = NULL \
                     WHERE recipient = ?1 AND delivered_at IS NULL AND claimed_at IS NOT NULL",
                    params![agent],
                )?;
                (epoch + 1, released)
            }
        };
        tx.commit()?;
        Ok(Some(Lease {
            epoch,
            expires_at,
            released_claims,
        }))
    }

    /// Extends the lease `node` holds on `agent` at `epoch` to `ttl` from now,
    /// also when it ran out but nobody took it; false when another node took
    /// it (the caller must stop running the agent).
    pub fn renew_lease(&self, agent: &str, node: &str, epoch: i64, ttl: Duration) -> Result<bool> {
        let expires_at = now_ms().saturating_add(ttl_ms(ttl));
        Ok(self.lock().conn.execute(
            "UPDATE agent_leases SET expires_at = ?4 WHERE agent = ?1 AND node = ?2 AND epoch = ?3",
            params![agent, node, epoch, expires_at],
        )? > 0)
    }

    /// Gives up the lease `node` holds on `agent` at `epoch` (it stopped the
    /// agent): another node may take it at once. The row stays, so epochs
    /// never repeat. False when it was not this node's at that epoch.
    pub fn release_lease(&self, agent: &str, node: &str, epoch: i64) -> Result<bool> {
        Ok(self.lock().conn.execute(
            "UPDATE agent_leases SET expires_at = 0 WHERE agent = ?1 AND node = ?2 AND epoch = ?3",
            params![agent, node, epoch],
        )? > 0)
    }

    /// [`Store::claim_from`] for the holder of `recipient`'s lease only:
    /// refused (`StoreError::Fenced`) unless `fence` holds it now.
    pub fn claim_fenced(
        &self,
        recipient: &str,
        sender: Option<&str>,
        max: u32,
        fence: Fence<'_>,
    ) -> Result<Vec<MessageRow>> {
        let g = self.lock();
        if !g.holds(recipient, fence)? {
            return Err(fence.refused(recipient));
        }
        g.claim_from(recipient, sender, max)
    }

    /// What [`Store::recv`] would take, claimed for the turn in progress
    /// instead of acknowledged, by the holder of `recipient`'s lease only:
    /// refused (`StoreError::Fenced`) unless `fence` holds it now.
    pub fn claim_read_fenced(
        &self,
        recipient: &str,
        max: u32,
        fence: Fence<'_>,
    ) -> Result<Vec<MessageRow>> {
        let g = self.lock();
        if !g.holds(recipient, fence)? {
            return Err(fence.refused(recipient));
        }
        g.claim_read(recipient, max)
    }

    /// [`Store::ack`] for the holder of `recipient`'s lease only: refused
    /// (`StoreError::Fenced`) unless `fence` holds it now.
    pub fn ack_fenced(&self, recipient: &str, ids: &[i64], fence: Fence<'_>) -> Result<usize> {
        let mut g = self.lock();
        if !g.holds(recipient, fence)? {
            return Err(fence.refused(recipient));
        }
        g.ack(recipient, ids)
    }
    /// [`Store::release_claims`] for the holder of `recipient`'s lease only:
    /// a node that lost the lease must not hand back its successor's claims.
    pub fn release_claims_fenced(&self, recipient: &str, fence: Fence<'_>) -> Result<usize> {
        let g = self.lock();
        if !g.holds(recipient, fence)? {
            return Err(fence.refused(recipient));
        }
        super::messages::release_on(&g.conn, recipient)
    }

    /// [`Store::hold_claims`] for the holder of `recipient`'s lease only.
    pub fn hold_claims_fenced(&self, recipient: &str, fence: Fence<'_>) -> Result<Vec<i64>> {
        let g = self.lock();
        if !g.holds(recipient, fence)? {
            return Err(fence.refused(recipient));
        }
        super::messages::hold_on(&g.conn, recipient)
    }

    /// Returns the claims of every agent whose lease ran out (not released:
    /// a clean stop gave its claims back itself) to their inboxes, and marks
    /// those leases held by nobody at a new epoch, so their old holder can
    /// neither renew, claim nor acknowledge. One conditional UPDATE: of
    /// several nodes noticing, one does it. Returns each agent with how many
    /// of its messages came back.
    pub fn reclaim_expired_leases(&self) -> Result<Vec<(String, usize)>> {
        let now = now_ms();
        let mut g = self.lock();
        let tx = g.conn.transaction()?;
        let agents: Vec<String> = tx
            .prepare(
                "UPDATE agent_leases SET node = '', epoch = epoch + 1 \
                 WHERE node <> '' AND expires_at > 0 AND expires_at < ?1 RETURNING agent",
            )?
            .query_map(params![now], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = Vec::with_capacity(agents.len());
        for agent in agents {
            let n = tx.execute(
                "UPDATE messages SET claimed_at = NULL \
                 WHERE recipient = ?1 AND delivered_at IS NULL AND claimed_at IS NOT NULL",
                params![agent],
            )?;
            out.push((agent, n));
        }
        tx.commit()?;
        Ok(out)
    }
}
