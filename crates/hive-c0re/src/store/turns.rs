//! A turn's end, written in one transaction: its messages settled, its
//! figures and spend, the session the next turn resumes, the idle state,
//! then the `turn_end` and `state` events. Either all of it is stored or
//! none: a turn whose end failed (the database dropped, the daemon died,
//! its lease was lost) keeps its claims, which come back to the inbox as a
//! dropped harness's do, so its messages come again and no spend is ever
//! stored without its messages' settlement. All of it is fenced by the
//! agent's lease: a node that lost it writes nothing of the turn.

use hive_sh4re::AgentState;
use rusqlite::params;

use super::leases::holds_on;
use super::messages::{ack_on, hold_on, release_on};
use super::stats::add_stats_on;
use super::{Fence, Result, Spend, Store};
use crate::clock::now_ms;

/// The figure of the inbox depth a turn's settlement left.
pub const INBOX_DEPTH: &str = "inbox.depth";
/// The figure of the deepest the inbox was since the last turn.
pub const INBOX_DEPTH_PEAK: &str = "inbox.depth_peak";

/// What becomes of a turn's messages when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle<'a> {
    /// These messages are acknowledged (ids of others, or acknowledged already, are ignored).
    Ack(&'a [i64]),
    /// Every claim of the agent goes back to its inbox, to run again (a failed turn).
    Release,
    /// Every claim of the agent goes back held: it waits for the next turn (a cancelled one).
    Hold,
}

/// A turn's end as the store writes it ([`super::Db::end_turn`]).
pub struct TurnEndWrite<'a> {
    /// The agent whose turn ends.
    pub agent: &'a str,
    /// The lease the turn ran under: nothing is written unless it holds it now.
    pub fence: Fence<'a>,
    /// What becomes of the turn's messages.
    pub settle: Settle<'a>,
    /// The turn's figures, all at one instant. The store adds
    /// [`INBOX_DEPTH`], the depth the settlement left, and
    /// [`INBOX_DEPTH_PEAK`], the larger of that and `inbox_peak`.
    pub figures: &'a [(&'a str, f64)],
    /// The deepest the inbox was seen since the last turn.
    pub inbox_peak: u64,
    /// The session the next turn resumes, if the turn reported one.
    pub session: Option<&'a str>,
    /// The session the turn was told to resume: `session` replaces the
    /// agent's only while it is still this one (the operator may have
    /// started a fresh one meanwhile).
    pub resumed: Option<&'a str>,
    /// The `turn_end` event's payload, given the ids the settlement held.
    pub turn_end: &'a (dyn Fn(&[i64]) -> String + Sync),
    /// The payload of the `state` event that follows `turn_end` (the agent is idle).
    pub idle: &'a str,
}

/// What a turn's end stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnEnded {
    /// The messages the settlement held (a cancelled turn's), ascending.
    pub held: Vec<i64>,
    /// The agent's undelivered messages the settlement left.
    pub inbox_depth: u64,
    /// The spending among the figures, added to the agent's day.
    pub spend: Spend,
    /// The `turn_end` event's id; the `state` event's is the next of the agent's.
    pub turn_end: i64,
    /// The `state` event's id, the agent's newest.
    pub state: i64,
}

impl TurnEndWrite<'_> {
    /// The figures with the inbox's: `depth` left, and the peak since the last turn.
    pub(super) fn figures_with(&self, depth: u64) -> Vec<(&str, f64)> {
        let mut rows = self.figures.to_vec();
        rows.push((INBOX_DEPTH, depth as f64));
        rows.push((INBOX_DEPTH_PEAK, self.inbox_peak.max(depth) as f64));
        rows
    }
}

impl Store {
    /// Writes a turn's end in one transaction (see the module's doc):
    /// refused with `StoreError::Fenced`, writing nothing, unless `w.fence`
    /// holds the agent's lease.
    pub fn end_turn(&self, w: &TurnEndWrite<'_>) -> Result<TurnEnded> {
        let agent = w.agent;
        let mut g = self.lock();
        let undelivered = g.depth.get(agent).copied().unwrap_or(0);
        let tx = g.conn.transaction()?;
        if !holds_on(&tx, agent, w.fence)? {
            return Err(w.fence.refused(agent));
        }
        let (acked, held) = match w.settle {
            Settle::Ack(ids) => (ack_on(&tx, agent, ids)?, vec![]),
            Settle::Release => {
                release_on(&tx, agent)?;
                (0, vec![])
            }
            Settle::Hold => (0, hold_on(&tx, agent)?),
        };
        let inbox_depth = undelivered.saturating_sub(acked as u64);
        let now = now_ms();
        let spend = add_stats_on(&tx, agent, now, w.figures_with(inbox_depth))?;
        // Idle, and when it last ended a turn if it was in one; the turn's
        // session unless the agent's changed since the turn began.
        tx.prepare_cached(
            "UPDATE agents SET state = ?5, state_since = ?2, \
             last_turn_at = CASE WHEN state IN ('thinking', 'retrying') THEN ?2 ELSE last_turn_at END, \
             session_id = CASE WHEN ?3 IS NOT NULL AND session_id IS ?4 THEN ?3 ELSE session_id END \
             WHERE name = ?1",
        )?
        .execute(params![agent, now, w.session, w.resumed, AgentState::Idle.as_str()])?;
        let turn_end = (w.turn_end)(&held);
        let mut ids = [0; 2];
        {
            let mut st = tx.prepare_cached(super::events::INSERT_EVENT)?;
            for (id, (kind, payload)) in ids
                .iter_mut()
                .zip([("turn_end", turn_end.as_str()), ("state", w.idle)])
            {
                st.execute(params![agent, now, kind, payload])?;
                *id = tx.last_insert_rowid();
            }
        }
        tx.commit()?;
        g.delivered(agent, acked);
        Ok(TurnEnded {
            held,
            inbox_depth,
            spend,
            turn_end: ids[0],
            state: ids[1],
        })
    }
}
