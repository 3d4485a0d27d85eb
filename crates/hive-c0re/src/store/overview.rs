//! What a status row reads of an agent beyond its `agents` row: its last
//! crash, schedules, open question, today's spend, the operator's budget and
//! its inbox depth.
//!
//! Read for every agent in one go, under one lock, a query per table: a
//! status of 200 agents is a handful of statements, not a thousand, so it
//! stays quick while a burst of turns writes events and stats.

use std::collections::HashMap;

use super::budget::override_row;
use super::events::{COLUMNS as EVENT_COLUMNS, row as event_row};
use super::{BudgetOverride, EventRow, Result, Spend, Store};

/// An agent's facts from the tables beside `agents`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentFacts {
    /// Its newest `container_crash` event.
    pub last_crash: Option<EventRow>,
    /// How many schedules it has.
    pub schedules: u32,
    /// The oldest question it asked that is still open.
    pub open_question: Option<i64>,
    /// What it spent on the day asked for.
    pub spend: Spend,
    /// The operator's last budget for it, whatever its day.
    pub budget_override: Option<BudgetOverride>,
    /// Messages waiting for it, undelivered.
    pub inbox_depth: u64,
}

impl Store {
    /// The facts of `agent`, or of every agent with None, keyed by name; an
    /// agent with none of them has no entry. `now` decides which questions
    /// are open, `day` (UTC, days since the epoch) whose spend counts; the
    /// last crashes are read only with `crashes` (only the operator's rows
    /// show them, and each holds a log tail of up to 64 KiB).
    pub fn agent_facts(
        &self,
        agent: Option<&str>,
        now: i64,
        day: i64,
        crashes: bool,
    ) -> Result<HashMap<String, AgentFacts>> {
        let g = self.lock();
        let mut out: HashMap<String, AgentFacts> = HashMap::new();
        // One statement per table either way; with a name it uses the agent's index.
        let only = if agent.is_some() {
            "AND agent = ?9"
        } else {
            ""
        };
        let bind = |st: &mut rusqlite::CachedStatement<'_>| -> rusqlite::Result<()> {
            if let Some(a) = agent {
                st.raw_bind_parameter(9, a)?;
            }
            Ok(())
        };

        if crashes {
            let mut st = g.conn.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE id IN (SELECT MAX(id) FROM events \
                 WHERE kind = 'container_crash' {only} GROUP BY agent)"
            ))?;
            bind(&mut st)?;
            let mut rows = st.raw_query();
            while let Some(r) = rows.next()? {
                let e = event_row(r)?;
                let key = e.agent.clone();
                out.entry(key).or_default().last_crash = Some(e);
            }
        }

        let mut st = g.conn.prepare_cached(&format!(
            "SELECT agent, COUNT(*) FROM schedules WHERE 1 {only} GROUP BY agent"
        ))?;
        bind(&mut st)?;
        let mut rows = st.raw_query();
        while let Some(r) = rows.next()? {
            out.entry(r.get(0)?).or_default().schedules = r.get(1)?;
        }

        let mut st = g.conn.prepare_cached(&format!(
            "SELECT agent, MIN(id) FROM questions WHERE answer IS NULL AND cancelled = 0 \
             AND deadline > ?1 {only} GROUP BY agent"
        ))?;
        st.raw_bind_parameter(1, now)?;
        bind(&mut st)?;
        let mut rows = st.raw_query();
        while let Some(r) = rows.next()? {
            out.entry(r.get(0)?).or_default().open_question = Some(r.get(1)?);
        }

        let mut st = g.conn.prepare_cached(&format!(
            "SELECT agent, usd, tokens FROM spend_days WHERE day = ?1 {only}"
        ))?;
        st.raw_bind_parameter(1, day)?;
        bind(&mut st)?;
        let mut rows = st.raw_query();
        while let Some(r) = rows.next()? {
            out.entry(r.get(0)?).or_default().spend = Spend {
                usd: r.get(1)?,
                tokens: r.get(2)?,
            };
        }

        let only_scope = if agent.is_some() {
            "WHERE scope = ?9"
        } else {
            ""
        };
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT scope, day, usd, tokens, lifted FROM budget_overrides {only_scope}"
        ))?;
        bind(&mut st)?;
        let mut rows = st.raw_query();
        while let Some(r) = rows.next()? {
            let o = override_row(r)?;
            let key = o.scope.clone();
            out.entry(key).or_default().budget_override = Some(o);
        }
        drop(rows);
        drop(st);
        // Kept in memory, read under the same lock: a status takes it once, not once per row.
        for (recipient, depth) in g
            .depth
            .iter()
            .filter(|(r, d)| **d > 0 && agent.is_none_or(|a| a == r.as_str()))
        {
            out.entry(recipient.clone()).or_default().inbox_depth = *depth;
        }
        Ok(out)
    }
}
