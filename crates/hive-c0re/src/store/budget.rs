//! Budgets' figures: today's spend summed from the `stats` rows turns and
//! compactions record (`tokens.in`, `tokens.out`, `cost.usd`), and the
//! operator's budget for today (`budget_overrides`, one row per scope).

use hive_sh4re::limits::{REPORTED_FIGURE_MAX, REPORTED_USD_MAX};
use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::clock::now_ms;

/// Spending over some time: dollars and tokens (input plus output).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    pub usd: f64,
    pub tokens: f64,
}

/// The operator's budget for one scope on one UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetOverride {
    /// An agent's name, or `#hive`.
    pub scope: String,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    pub usd: Option<f64>,
    pub tokens: Option<u64>,
    /// No budget for the rest of the day.
    pub lifted: bool,
}

impl Spend {
    /// The spending among a batch of `stats` figures: `cost.usd` in dollars,
    /// `tokens.in` and `tokens.out` in tokens. A harness reports them, so a
    /// negative figure counts as nothing and a huge one as its bound: one
    /// report of 1e300 dollars put the whole hive over its budget.
    pub fn of<'a>(items: impl IntoIterator<Item = (&'a str, f64)>) -> Spend {
        let mut s = Spend::default();
        for (k, v) in items {
            match k {
                "cost.usd" => s.usd += v.clamp(0.0, REPORTED_USD_MAX),
                "tokens.in" | "tokens.out" => s.tokens += v.clamp(0.0, REPORTED_FIGURE_MAX),
                _ => {}
            }
        }
        s
    }

    /// True when nothing was spent.
    pub fn is_zero(&self) -> bool {
        self.usd == 0.0 && self.tokens == 0.0
    }
}

/// A `budget_overrides` row: scope, day, usd, tokens, lifted.
pub(super) fn override_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BudgetOverride> {
    Ok(BudgetOverride {
        scope: r.get(0)?,
        day: r.get(1)?,
        usd: r.get(2)?,
        tokens: r.get::<_, Option<i64>>(3)?.map(|t| t.max(0) as u64),
        lifted: r.get(4)?,
    })
}

impl Store {
    /// What `agent` (or, with None, every agent together) spent on a UTC day
    /// (days since the epoch), as `add_stats` summed it into `spend_days`.
    pub fn spend_on(&self, agent: Option<&str>, day: i64) -> Result<Spend> {
        let g = self.lock();
        let (usd, tokens): (Option<f64>, Option<f64>) = match agent {
            Some(a) => g
                .conn
                .prepare_cached("SELECT usd, tokens FROM spend_days WHERE agent = ?1 AND day = ?2")?
                .query_row(params![a, day], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((None, None)),
            // '#' starts no agent name: the hive-wide rows are no one's spending.
            None => g
                .conn
                .prepare_cached(
                    "SELECT SUM(usd), SUM(tokens) FROM spend_days WHERE day = ?1 AND agent NOT LIKE '#%'",
                )?
                .query_row(params![day], |r| Ok((r.get(0)?, r.get(1)?)))?,
        };
        Ok(Spend {
            usd: usd.unwrap_or(0.0),
            tokens: tokens.unwrap_or(0.0),
        })
    }

    /// Stores the operator's budget for a scope and day, replacing the last one.
    pub fn set_budget_override(&self, o: &BudgetOverride) -> Result<()> {
        self.lock().conn.execute(
            "INSERT INTO budget_overrides (scope, day, usd, tokens, lifted, set_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (scope) DO UPDATE SET \
             day = excluded.day, usd = excluded.usd, tokens = excluded.tokens, \
             lifted = excluded.lifted, set_at = excluded.set_at",
            params![
                o.scope,
                o.day,
                o.usd,
                o.tokens.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
                o.lifted,
                now_ms()
            ],
        )?;
        Ok(())
    }

    /// The operator's last budget for a scope, whatever its day.
    pub fn budget_override(&self, scope: &str) -> Result<Option<BudgetOverride>> {
        let g = self.lock();
        Ok(g.conn
            .prepare_cached(
                "SELECT scope, day, usd, tokens, lifted FROM budget_overrides WHERE scope = ?1",
            )?
            .query_row(params![scope], override_row)
            .optional()?)
    }

    /// Drops the operator's budget and the notices told for a scope (its agent is destroyed).
    pub fn remove_budget_override(&self, scope: &str) -> Result<()> {
        let g = self.lock();
        g.conn.execute(
            "DELETE FROM budget_overrides WHERE scope = ?1",
            params![scope],
        )?;
        g.conn
            .execute("DELETE FROM notices_told WHERE scope = ?1", params![scope])?;
        Ok(())
    }

    /// Claims telling notice `key` about `scope` on `day`: true for the one
    /// caller that claims it, however many try. Claims older than yesterday go.
    pub fn claim_notice(&self, scope: &str, key: &str, day: i64) -> Result<bool> {
        let g = self.lock();
        g.conn
            .prepare_cached("DELETE FROM notices_told WHERE day < ?1")?
            .execute(params![day - 1])?;
        let n = g
            .conn
            .prepare_cached(
                "INSERT INTO notices_told (scope, key, day) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )?
            .execute(params![scope, key, day])?;
        Ok(n == 1)
    }
}
