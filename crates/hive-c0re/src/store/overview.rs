//! What a status row reads of an agent beyond its `agents` row: its last
//! crash, schedules, open question, today's spend and the operator's budget.
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
}

impl Store {
    /// The facts of `agent`, or of every agent with None, keyed by name; an
    /// agent with none of them has no entry. `now` decides which questions
    /// are open, `day` (UTC, days since the epoch) whose spend counts.
    pub fn agent_facts(
        &self,
        agent: Option<&str>,
        now: i64,
        day: i64,
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
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{day_of, now_ms};

    #[test]
    fn facts_of_every_agent_at_once_match_those_read_one_by_one() {
        let s = Store::in_memory().unwrap();
        let crashes = s
            .add_events(
                "a",
                [
                    ("container_crash", "{\"n\":1}"),
                    ("turn_end", "{}"),
                    ("container_crash", "{\"n\":2}"),
                ],
            )
            .unwrap();
        s.add_events("b", [("turn_start", "{}")]).unwrap();
        s.add_schedule("a", "every 1h", "x", true, 1, "operator")
            .unwrap();
        s.add_schedule("a", "every 2h", "y", true, 1, "operator")
            .unwrap();
        s.add_schedule("b", "in 1m", "z", false, 1, "b").unwrap();
        let gone = s.add_question("b", "old?", &[], 1).unwrap();
        let open = s.add_question("b", "which?", &[], 600).unwrap();
        s.add_question("b", "later?", &[], 600).unwrap();
        s.cancel_question(gone).unwrap();
        s.add_stats(
            "a",
            [("cost.usd", 0.5), ("tokens.in", 10.0), ("tokens.out", 5.0)],
        )
        .unwrap();
        s.add_stats("a", [("cost.usd", -3.0), ("turn.ms", 900.0)])
            .unwrap();
        s.add_stats("b", [("cost.usd", 0.25)]).unwrap();
        s.set_budget_override(&BudgetOverride {
            scope: "b".into(),
            day: 7,
            usd: Some(1.0),
            tokens: None,
            lifted: false,
        })
        .unwrap();

        let now = now_ms();
        let today = day_of(now);
        let all = s.agent_facts(None, now, today).unwrap();
        let a = &all["a"];
        assert_eq!(a.last_crash.as_ref().unwrap().id, crashes[2]);
        assert_eq!(a.schedules, 2);
        assert_eq!(a.open_question, None);
        // A negative figure counts as nothing; figures that are not spending are not summed.
        assert_eq!(
            a.spend,
            Spend {
                usd: 0.5,
                tokens: 15.0
            }
        );
        assert_eq!(a.budget_override, None);
        let b = &all["b"];
        assert_eq!(b.last_crash, None);
        assert_eq!((b.schedules, b.open_question), (1, Some(open)));
        assert_eq!(b.spend.usd, 0.25);
        assert_eq!(b.budget_override.as_ref().unwrap().usd, Some(1.0));
        assert_eq!(all.len(), 2);

        for name in ["a", "b"] {
            let one = s.agent_facts(Some(name), now, today).unwrap();
            assert_eq!(one.len(), 1, "{one:?}");
            assert_eq!(one[name], all[name]);
        }
        assert!(s.agent_facts(Some("c"), now, today).unwrap().is_empty());
        // Spend counts on its day only; a question past its deadline is not open.
        let later = s.agent_facts(None, now + 3_600_000, today + 1).unwrap();
        assert_eq!(later["a"].spend, Spend::default());
        assert_eq!(later["b"].open_question, None);
    }

    #[test]
    fn one_agents_facts_read_through_its_indexes() {
        let s = Store::in_memory().unwrap();
        let plan = |sql: &str| crate::store::events::tests::plan(&s, sql);
        let crash = plan(
            "SELECT MAX(id) FROM events WHERE kind = 'container_crash' AND agent = 'a' GROUP BY agent",
        );
        assert!(crash.contains("events_crash"), "{crash}");
        let spend = plan(
            "SELECT agent, SUM(value) FROM stats WHERE ts >= 1 AND agent = 'a' GROUP BY agent",
        );
        assert!(spend.contains("stats_agent"), "{spend}");
    }
}
