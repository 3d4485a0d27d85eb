//! Budgets' figures on PostgreSQL: today's spend summed from `stats`, and
//! the operator's budget for today (`budget_overrides`, one row per scope).

use super::PgStore;
use crate::clock::now_ms;
use crate::store::{BudgetOverride, Result, Spend};

/// The `stats` keys that are spending, and which measure each adds to.
const SPEND_SQL: &str = "SUM(CASE WHEN key = 'cost.usd' THEN GREATEST(value, 0) ELSE 0 END), \
     SUM(CASE WHEN key IN ('tokens.in', 'tokens.out') THEN GREATEST(value, 0) ELSE 0 END)";

impl PgStore {
    /// What `agent` (or, with None, every agent together) spent since `since`
    /// (ms). A negative figure a harness reported counts as nothing.
    pub async fn spend_since(&self, agent: Option<&str>, since: i64) -> Result<Spend> {
        let c = self.client().await?;
        let r = match agent {
            Some(a) => {
                let st = c
                    .prepare_cached(&format!(
                        "SELECT {SPEND_SQL} FROM stats WHERE agent = $1 AND ts >= $2"
                    ))
                    .await?;
                c.query_one(&st, &[&a, &since]).await?
            }
            // '#' starts no agent name: the hive-wide rows are no one's spending.
            None => {
                let st = c
                    .prepare_cached(&format!(
                        "SELECT {SPEND_SQL} FROM stats WHERE ts >= $1 AND agent NOT LIKE '#%'"
                    ))
                    .await?;
                c.query_one(&st, &[&since]).await?
            }
        };
        let (usd, tokens): (Option<f64>, Option<f64>) = (r.get(0), r.get(1));
        Ok(Spend {
            usd: usd.unwrap_or(0.0),
            tokens: tokens.unwrap_or(0.0),
        })
    }

    /// Stores the operator's budget for a scope and day, replacing the last one.
    pub async fn set_budget_override(&self, o: &BudgetOverride) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO budget_overrides (scope, day, usd, tokens, lifted, set_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope) DO UPDATE SET \
             day = excluded.day, usd = excluded.usd, tokens = excluded.tokens, \
             lifted = excluded.lifted, set_at = excluded.set_at",
            &[
                &o.scope,
                &o.day,
                &o.usd,
                &o.tokens.map(|t| t as i64),
                &o.lifted,
                &now_ms(),
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
        Ok(c.query_opt(&st, &[&scope]).await?.map(|r| BudgetOverride {
            scope: r.get(0),
            day: r.get(1),
            usd: r.get(2),
            tokens: r.get::<_, Option<i64>>(3).map(|t| t.max(0) as u64),
            lifted: r.get(4),
        }))
    }

    /// Drops the operator's budget for a scope (its agent is destroyed).
    pub async fn remove_budget_override(&self, scope: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM budget_overrides WHERE scope = $1", &[&scope])
            .await?;
        Ok(())
    }
}
