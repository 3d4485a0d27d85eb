//! A turn's end on PostgreSQL, in one transaction (see `store/turns.rs`).
//!
//! The lease row is locked `FOR SHARE` first, as the fenced claims and acks
//! do: a takeover waits until the turn's end committed or rolled back, and a
//! node that lost the lease writes nothing. The events go in last, under the
//! agent's events lock (as the events writer takes it), so that the agent's
//! ids grow in commit order and the lock is held only for the two inserts
//! and the commit. Every wake (the mailbox on a release, the agent's row,
//! its events) is sent by the transaction, so other nodes hear of the turn's
//! end only once it is stored.

use super::leases::holds;
use super::stats::add_stats_on;
use super::wakes::CHANNEL;
use super::{EVENTS_CLASS, PgStore, count};
use crate::clock::now_ms;
use crate::store::{Result, Settle, TurnEndWrite, TurnEnded};
use hive_sh4re::AgentState;

impl PgStore {
    /// Writes a turn's end in one transaction: refused with
    /// `StoreError::Fenced`, writing nothing, unless `w.fence` holds the
    /// agent's lease.
    pub async fn end_turn(&self, w: &TurnEndWrite<'_>) -> Result<TurnEnded> {
        let agent = w.agent;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        if !holds(&tx, agent, w.fence).await? {
            return Err(w.fence.refused(agent));
        }
        let held = match w.settle {
            Settle::Ack(ids) => {
                self.ack_on(&tx, agent, ids).await?;
                vec![]
            }
            Settle::Release => {
                self.release_claims_in(&tx, agent).await?;
                vec![]
            }
            Settle::Hold => self.hold_claims_in(&tx, agent).await?,
        };
        let depth = tx
            .prepare_cached("SELECT depth FROM mailboxes WHERE recipient = $1")
            .await?;
        let depth = tx
            .query_opt(&depth, &[&agent])
            .await?
            .map_or(0, |r| count(r.get(0)));
        let now = now_ms();
        let spend = add_stats_on(&tx, agent, now, &w.figures_with(depth)).await?;
        // Idle, and when it last ended a turn if it was in one; the turn's
        // session unless the agent's changed since the turn began.
        let idle = tx
            .prepare_cached(&format!(
                "WITH u AS (UPDATE agents SET state = $5, state_since = $2, \
                   last_turn_at = CASE WHEN state IN ('thinking', 'retrying') THEN $2 ELSE last_turn_at END, \
                   session_id = CASE WHEN $3::text IS NOT NULL AND session_id IS NOT DISTINCT FROM $4::text \
                     THEN $3 ELSE session_id END \
                   WHERE name = $1 RETURNING name) \
                 SELECT pg_notify('{CHANNEL}', $6::text || name)::text FROM u"
            ))
            .await?;
        tx.query(
            &idle,
            &[
                &agent,
                &now,
                &w.session,
                &w.resumed,
                &AgentState::Idle.as_str(),
                &self.agent_wake_prefix(),
            ],
        )
        .await?;
        let turn_end = (w.turn_end)(&held);
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .await?;
        tx.execute(&lock, &[&EVENTS_CLASS, &agent]).await?;
        // Statements of their own after the lock: each id is taken under it.
        let insert = tx
            .prepare_cached(
                "INSERT INTO events (agent, ts, kind, payload_json) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .await?;
        let turn_end: i64 = tx
            .query_one(&insert, &[&agent, &now, &"turn_end", &turn_end])
            .await?
            .get(0);
        let state: i64 = tx
            .query_one(&insert, &[&agent, &now, &"state", &w.idle])
            .await?
            .get(0);
        // Other nodes' dashboards stream the agent's events (`Wake::Events`).
        let wake = tx
            .prepare_cached(&format!(
                "SELECT pg_notify('{CHANNEL}', $1::text || $2 || ' ' || $3)"
            ))
            .await?;
        tx.execute(
            &wake,
            &[
                &super::wakes::events_prefix(&self.origin),
                &agent,
                &state.to_string(),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(TurnEnded {
            held,
            inbox_depth: depth,
            spend,
            turn_end,
            state,
        })
    }
}
