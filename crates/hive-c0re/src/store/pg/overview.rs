//! What a status row reads of an agent beyond its `agents` row, on
//! PostgreSQL: its last crash, schedules, open question, the day's spend and
//! the operator's budget and its inbox depth, as `store/overview.rs` reads them. A query per
//! table for every agent at once, pipelined on one connection.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;

use super::budget::override_row;
use super::events::{COLUMNS as EVENT_COLUMNS, row as event_row};
use super::{PgStore, count};
use crate::store::{AgentFacts, Result, Spend};

impl PgStore {
    /// The facts of `agent`, or of every agent with None, keyed by name; an
    /// agent with none of them has no entry. `now` decides which questions
    /// are open, `day` (UTC, days since the epoch) whose spend counts; the
    /// last crashes only with `crashes`.
    pub async fn agent_facts(
        &self,
        agent: Option<&str>,
        now: i64,
        day: i64,
        crashes: bool,
    ) -> Result<HashMap<String, AgentFacts>> {
        let c = self.client().await?;
        // With a name, each query filters on it (and uses the agent's index);
        // the name is always the last parameter.
        let only = |n: usize, column: &str| match agent {
            Some(_) => format!("AND {column} = ${n}"),
            None => String::new(),
        };
        let crash_sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY(ARRAY(SELECT MAX(id) FROM events \
             WHERE kind = 'container_crash' {} GROUP BY agent))",
            only(1, "agent")
        );
        let schedules_sql = format!(
            "SELECT agent, count(*) FROM schedules WHERE TRUE {} GROUP BY agent",
            only(1, "agent")
        );
        let questions_sql = format!(
            "SELECT agent, MIN(id) FROM questions WHERE answer IS NULL AND NOT cancelled \
             AND deadline > $1 {} GROUP BY agent",
            only(2, "agent")
        );
        let spend_sql = format!(
            "SELECT agent, usd, tokens FROM spend_days WHERE day = $1 {}",
            only(2, "agent")
        );
        let overrides_sql = format!(
            "SELECT scope, day, usd, tokens, lifted FROM budget_overrides WHERE TRUE {}",
            only(1, "scope")
        );
        let depth_sql = format!(
            "SELECT recipient, depth FROM mailboxes WHERE depth > 0 {}",
            only(1, "recipient")
        );
        let name: Vec<&(dyn ToSql + Sync)> = match &agent {
            Some(a) => vec![a],
            None => vec![],
        };
        let mut now_name: Vec<&(dyn ToSql + Sync)> = vec![&now];
        now_name.extend(name.iter().copied());
        let mut day_name: Vec<&(dyn ToSql + Sync)> = vec![&day];
        day_name.extend(name.iter().copied());
        let (crashes, schedules, questions, spend, overrides, depths) = tokio::try_join!(
            async {
                if !crashes {
                    return Ok(vec![]);
                }
                c.query(&c.prepare_cached(&crash_sql).await?, &name).await
            },
            async {
                c.query(&c.prepare_cached(&schedules_sql).await?, &name)
                    .await
            },
            async {
                c.query(&c.prepare_cached(&questions_sql).await?, &now_name)
                    .await
            },
            async {
                c.query(&c.prepare_cached(&spend_sql).await?, &day_name)
                    .await
            },
            async {
                c.query(&c.prepare_cached(&overrides_sql).await?, &name)
                    .await
            },
            async { c.query(&c.prepare_cached(&depth_sql).await?, &name).await },
        )?;

        let mut out: HashMap<String, AgentFacts> = HashMap::new();
        for r in &crashes {
            let e = event_row(r);
            let key = e.agent.clone();
            out.entry(key).or_default().last_crash = Some(e);
        }
        for r in &schedules {
            out.entry(r.get(0)).or_default().schedules =
                u32::try_from(r.get::<_, i64>(1)).unwrap_or(u32::MAX);
        }
        for r in &questions {
            out.entry(r.get(0)).or_default().open_question = Some(r.get(1));
        }
        for r in &spend {
            out.entry(r.get(0)).or_default().spend = Spend {
                usd: r.get(1),
                tokens: r.get(2),
            };
        }
        for r in &overrides {
            let o = override_row(r);
            let key = o.scope.clone();
            out.entry(key).or_default().budget_override = Some(o);
        }
        for r in &depths {
            out.entry(r.get(0)).or_default().inbox_depth = count(r.get(1));
        }
        Ok(out)
    }
}
