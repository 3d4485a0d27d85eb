//! Budgets' figures on PostgreSQL: today's spend summed from `stats`, and
//! the operator's budget for today (`budget_overrides`, one row per scope).

use tokio_postgres::Row;

use super::PgStore;
use super::wakes::CHANNEL;
use crate::clock::now_ms;
use crate::store::{BudgetOverride, HIVE_WIDE, Result, Spend};

/// A `budget_overrides` row: scope, day, usd, tokens, lifted.
pub(super) fn override_row(r: &Row) -> BudgetOverride {
    BudgetOverride {
        scope: r.get(0),
        day: r.get(1),
        usd: r.get(2),
        tokens: r.get::<_, Option<i64>>(3).map(|t| t.max(0) as u64),
        lifted: r.get(4),
    }
}

impl PgStore {
    /// What `agent` (or, with None, every agent together) spent on a UTC day
    /// (days since the epoch), as `add_stats` summed it into `spend_days`.
    pub async fn spend_on(&self, agent: Option<&str>, day: i64) -> Result<Spend> {
        let c = self.client().await?;
        let (usd, tokens): (Option<f64>, Option<f64>) = match agent {
            Some(a) => {
                let st = c
                    .prepare_cached(
                        "SELECT usd, tokens FROM spend_days WHERE agent = $1 AND day = $2",
                    )
                    .await?;
                c.query_opt(&st, &[&a, &day])
                    .await?
                    .map_or((None, None), |r| (r.get(0), r.get(1)))
            }
            // '#' starts no agent name: the hive-wide rows are no one's spending.
            None => {
                let st = c
                    .prepare_cached(
                        "SELECT SUM(usd), SUM(tokens) FROM spend_days WHERE day = $1 AND agent NOT LIKE '#%'",
                    )
                    .await?;
                let r = c.query_one(&st, &[&day]).await?;
                (r.get(0), r.get(1))
            }
        };
        Ok(Spend {
            usd: usd.unwrap_or(0.0),
            tokens: tokens.unwrap_or(0.0),
        })
    }

    /// Stores the operator's budget for a scope and day, replacing the last one.
    pub async fn set_budget_override(&self, o: &BudgetOverride) -> Result<()> {
        let c = self.client().await?;
        // Whom it holds or releases looks at the budget again, on every node:
        // the agent, or for the hive's budget every agent, woken in the same statement.
        let st = c
            .prepare_cached(&format!(
                "WITH s AS (INSERT INTO budget_overrides (scope, day, usd, tokens, lifted, set_at) \
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope) DO UPDATE SET \
                   day = excluded.day, usd = excluded.usd, tokens = excluded.tokens, \
                   lifted = excluded.lifted, set_at = excluded.set_at RETURNING scope) \
                 SELECT pg_notify('{CHANNEL}', $7::text || w.name)::text FROM s, \
                   (SELECT name FROM agents WHERE $1 = $8 UNION SELECT $1::text WHERE $1 <> $8) AS w"
            ))
            .await?;
        c.query(
            &st,
            &[
                &o.scope,
                &o.day,
                &o.usd,
                &o.tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                &o.lifted,
                &now_ms(),
                &self.wake_prefix(),
                &HIVE_WIDE,
            ],
        )
        .await?;
        Ok(())
    }

    /// The operator's last budget for a scope, whatever its day.
    pub async fn budget_override(&self, scope: &str) -> Result<Option<BudgetOverride>> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(
                "SELECT scope, day, usd, tokens, lifted FROM budget_overrides WHERE scope = $1",
            )
            .await?;
        Ok(c.query_opt(&st, &[&scope])
            .await?
            .as_ref()
            .map(override_row))
    }

    /// Drops the operator's budget and the notices told for a scope (its agent is destroyed).
    pub async fn remove_budget_override(&self, scope: &str) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("DELETE FROM budget_overrides WHERE scope = $1", &[&scope])
            .await?;
        tx.execute("DELETE FROM notices_told WHERE scope = $1", &[&scope])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Claims telling notice `key` about `scope` on `day`: true for the one
    /// caller that claims it, of any node. Claims older than yesterday go.
    pub async fn claim_notice(&self, scope: &str, key: &str, day: i64) -> Result<bool> {
        let c = self.client().await?;
        let st = c
            .prepare_cached("DELETE FROM notices_told WHERE day < $1")
            .await?;
        c.execute(&st, &[&(day - 1)]).await?;
        let st = c
            .prepare_cached(
                "INSERT INTO notices_told (scope, key, day) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .await?;
        Ok(c.execute(&st, &[&scope, &key, &day]).await? == 1)
    }
}
