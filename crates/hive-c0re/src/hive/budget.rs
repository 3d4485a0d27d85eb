//! Daily spending budgets: an agent's (`agent.toml`'s `budget`) and the
//! hive's (`hive.toml`'s `budget`), each in dollars and/or tokens per UTC day.
//!
//! Spend is what claude reports: a turn's figures (`tokens.in`,
//! `tokens.out`, `cost.usd`, recorded by [`Hive::end_turn`]) and a
//! compaction's (`/compact` and notes compaction report theirs as `stats`),
//! summed per agent and UTC day into `spend_days` in the transaction that
//! stores the figures. A figure counts on the day it was recorded, so a turn
//! that runs across midnight counts on the day it ended. Nothing of the
//! spend is kept in memory: a restart holds whom it held.
//!
//! At 80 % of a limit hive-c0re records `budget_warning` and notifies the
//! operator (`Hive::notify_operator`); at 100 % `over_budget`, a notification
//! of that kind, and the manager gets one message from `system`. Both are
//! told by the first recorded spend that finds the mark reached, which
//! claims it in the store (`claim_notice`): each mark of each limit is told
//! once a day, however many turns end together on however many nodes (a
//! spend that passes both marks at once is told only as `over_budget`). From then on [`Hive::budget_gate`] holds the agent in
//! `next_turn`: the turn under way finishes, no other starts, its messages
//! wait unclaimed. The operator's `budget_set` changes a limit (or lifts it)
//! for the rest of the UTC day, stored, and wakes whom it releases.
//!
//! The figures are the harness's word (it runs claude and reads its
//! output), like every figure an agent reports: a hostile agent can under-
//! or over-report its own spend (a negative figure counts as nothing). A
//! budget guards against runaway spending, not against a hostile agent; the
//! model endpoint's own accounting is the authority. What one agent's word
//! can do to the others is bounded, though: spend is taken only from a
//! claude run that holds a turn slot (`agent_conn.rs`), and the hive's
//! budget counts an agent's spend at most up to the agent's own budget,
//! measure by measure ([`Hive::hive_spend`]). An honest agent is held at its
//! own limit anyway, so the hive's total misses at most what one turn
//! overruns it; an agent reporting $1000 it never spent holds the hive no
//! further than its own budget lets it. An agent without a budget of its
//! own counts in full: the operator gives each one a budget so that no
//! single agent can hold the hive.
//!
//! The hive's budget, once spent, holds every agent but one thing: the
//! manager still takes turns on messages from the operator (only those;
//! other messages to it wait). The operator is the one who decides what to
//! do about the spending, and the manager is how they steer the hive; a
//! hive that ignored the operator's own words until midnight would leave
//! them only the CLI. The operator's messages are their own decision to
//! spend, so they cannot run away by themselves. The manager's own budget,
//! when it has one, holds it entirely: that limit is the operator's word for
//! the manager alone.

use hive_sh4re::AgentName;
use hive_sh4re::event::{BudgetMeasure, BudgetNotice, BudgetScope, Payload};
use hive_sh4re::host::{BudgetRow, BudgetSource, verb};
use hive_sh4re::notification::NotificationKind;
use hive_sh4re::{AgentState, Mailbox};

pub use crate::clock::{DAY_MS, day_of};
use crate::clock::{now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::store::HIVE_WIDE;
use crate::store::{AgentFacts, AgentRow, BudgetOverride, Spend};

/// The share of a limit at which the hive warns.
pub const WARN_AT: f64 = 0.8;

/// A UTC day as `YYYY-MM-DD`.
pub fn day_name(day: i64) -> String {
    rfc3339(day * DAY_MS)[..10].to_owned()
}

/// Time left until the next UTC day, when every budget starts again.
pub fn until_tomorrow() -> std::time::Duration {
    let now = now_ms();
    std::time::Duration::from_millis(((day_of(now) + 1) * DAY_MS - now).max(1) as u64)
}

/// Whether an agent may take a turn, as its budgets say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Within every budget in force.
    Open,
    /// Over a budget: no turn until it is raised or the day ends.
    Held,
    /// The manager while the hive is over its budget: turns on the operator's messages only.
    OperatorOnly,
}

impl Gate {
    /// The one sender whose messages a turn may take, if the gate narrows them.
    pub fn only_from(self) -> Option<&'static str> {
        match self {
            Self::OperatorOnly => Some(Mailbox::Operator.as_str()),
            _ => None,
        }
    }
}

/// The limits in force for one budget today.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limit {
    usd: Option<f64>,
    tokens: Option<u64>,
    source: BudgetSource,
}

impl Limit {
    const NONE: Limit = Limit {
        usd: None,
        tokens: None,
        source: BudgetSource::None,
    };

    /// Each measure with a limit: (measure, spent, limit).
    fn measures(&self, s: Spend) -> Vec<(BudgetMeasure, f64, f64)> {
        let mut out = vec![];
        out.extend(self.usd.map(|l| (BudgetMeasure::Usd, s.usd, l)));
        out.extend(
            self.tokens
                .map(|l| (BudgetMeasure::Tokens, s.tokens, l as f64)),
        );
        out
    }

    /// What of `s` counts toward the hive's budget: each measure at most its limit.
    fn cap(&self, s: Spend) -> Spend {
        Spend {
            usd: self.usd.map_or(s.usd, |l| s.usd.min(l)),
            tokens: self.tokens.map_or(s.tokens, |l| s.tokens.min(l as f64)),
        }
    }

    /// The larger share of a limit spent; 0 without one.
    fn fraction(&self, s: Spend) -> f64 {
        self.measures(s)
            .iter()
            .map(|(_, spent, limit)| spent / limit)
            .fold(0.0, f64::max)
    }

    /// The measures whose share of `spent` is `mark` or more; below 100 %
    /// only those not over (one over is told as over, not as at 80 %).
    fn reached(&self, spent: Spend, mark: f64) -> Vec<(BudgetMeasure, f64, f64)> {
        self.measures(spent)
            .into_iter()
            .filter(|(_, s, l)| s / l >= mark && (mark >= 1.0 || s < l))
            .collect()
    }
}

/// The limits of a budget today: the operator's for today over the configured ones.
fn limit_today(
    configured: Option<hive_sh4re::config::Budget>,
    o: Option<BudgetOverride>,
    today: i64,
) -> Limit {
    let configured = configured.map(|b| Limit {
        usd: b.usd_per_day,
        tokens: b.tokens(),
        source: BudgetSource::Config,
    });
    match o.filter(|o| o.day == today) {
        Some(o) if o.lifted => Limit {
            source: BudgetSource::Lifted,
            ..Limit::NONE
        },
        Some(o) => Limit {
            usd: o.usd.or(configured.and_then(|c| c.usd)),
            tokens: o.tokens.or(configured.and_then(|c| c.tokens)),
            source: BudgetSource::Operator,
        },
        None => configured.unwrap_or(Limit::NONE),
    }
}

/// A budget's row: its limits today against what was spent.
fn budget_row(agent: Option<&AgentRow>, limit: Limit, spend: Spend, today: i64) -> BudgetRow {
    let fraction = limit.fraction(spend);
    BudgetRow {
        agent: agent.map(|a| a.name.clone()),
        day: day_name(today),
        spent_usd: spend.usd,
        spent_tokens: spend.tokens.round() as u64,
        usd_per_day: limit.usd,
        tokens_per_day: limit.tokens,
        source: limit.source,
        fraction,
        over: fraction >= 1.0,
    }
}

/// A spend figure as a sentence's words.
fn amount(m: BudgetMeasure, v: f64) -> String {
    match m {
        BudgetMeasure::Usd => format!("${v:.2}"),
        BudgetMeasure::Tokens => format!("{} tokens", v.round() as u64),
    }
}

/// The three agents with the largest shares of measure `m`, largest first:
/// `bob $60.00, carol $30.00, alice $5.00`.
fn largest(shares: &[(String, Spend)], m: BudgetMeasure) -> String {
    let of = |s: &Spend| match m {
        BudgetMeasure::Usd => s.usd,
        BudgetMeasure::Tokens => s.tokens,
    };
    let mut by: Vec<&(String, Spend)> = shares.iter().filter(|(_, s)| of(s) > 0.0).collect();
    by.sort_by(|a, b| of(&b.1).total_cmp(&of(&a.1)));
    let named: Vec<String> = by
        .iter()
        .take(3)
        .map(|(n, s)| format!("{n} {}", amount(m, of(s))))
        .collect();
    named.join(", ")
}

impl Hive {
    /// The budget in force today for an agent, or (None) the hive.
    /// The scope `agent`'s operator budget is stored under and the budget its
    /// config sets (the hive's own for None).
    fn configured_budget<'a>(
        &self,
        agent: Option<&'a AgentRow>,
    ) -> (&'a str, Option<hive_sh4re::config::Budget>) {
        match agent {
            // A config that does not parse grants no turn anyway (`next_turn`).
            Some(a) => (
                a.name.as_str(),
                self.config_of(a).ok().and_then(|c| c.budget),
            ),
            None => (HIVE_WIDE, self.settings.budget),
        }
    }

    async fn budget_limit(&self, agent: Option<&AgentRow>, today: i64) -> Result<Limit> {
        let (scope, configured) = self.configured_budget(agent);
        Ok(limit_today(
            configured,
            self.store.budget_override(scope).await?,
            today,
        ))
    }

    /// What `agent` spent today, or (None) what the hive's budget counts.
    async fn spend_today(&self, agent: Option<&str>, today: i64) -> Result<Spend> {
        match agent {
            Some(_) => Ok(self.store.spend_on(agent, today).await?),
            None => Ok(self.hive_spend(today).await?.0),
        }
    }

    /// What the hive's budget counts of today's spend: every agent's, but
    /// one with a budget of its own only up to that budget's limit, measure
    /// by measure (a measure it leaves open counts in full; see the module's
    /// doc for why). With each agent's share as counted.
    async fn hive_spend(&self, today: i64) -> Result<(Spend, Vec<(String, Spend)>)> {
        // The agents' spend together, an agent destroyed today's included.
        let mut total = self.store.spend_on(None, today).await?;
        let facts = self.store.agent_facts(None, now_ms(), today, false).await?;
        let mut shares = vec![];
        for a in self.store.agents().await? {
            let Some(f) = facts.get(&a.name) else {
                continue;
            };
            let (_, configured) = self.configured_budget(Some(&a));
            let counted = limit_today(configured, f.budget_override.clone(), today).cap(f.spend);
            total.usd -= f.spend.usd - counted.usd;
            total.tokens -= f.spend.tokens - counted.tokens;
            shares.push((a.name, counted));
        }
        Ok((total, shares))
    }

    async fn budget_row_of(&self, agent: Option<&AgentRow>, today: i64) -> Result<BudgetRow> {
        let limit = self.budget_limit(agent, today).await?;
        let spend = self
            .spend_today(agent.map(|a| a.name.as_str()), today)
            .await?;
        Ok(budget_row(agent, limit, spend, today))
    }

    /// An agent's budget row from facts read with the others' ([`Store::agent_facts`]).
    fn budget_row_from(&self, a: &AgentRow, facts: &AgentFacts, today: i64) -> BudgetRow {
        let (_, configured) = self.configured_budget(Some(a));
        let limit = limit_today(configured, facts.budget_override.clone(), today);
        budget_row(Some(a), limit, facts.spend, today)
    }

    /// Today's spend against every budget: the hive's first, then each agent's.
    pub async fn budget_rows(&self) -> Result<Vec<BudgetRow>> {
        let today = day_of(now_ms());
        // A budget row shows no crash.
        let facts = self.store.agent_facts(None, now_ms(), today, false).await?;
        let mut rows = vec![self.budget_row_of(None, today).await?];
        for a in self.store.agents().await? {
            let f = facts.get(&a.name).cloned().unwrap_or_default();
            rows.push(self.budget_row_from(&a, &f, today));
        }
        Ok(rows)
    }

    /// Today's spend against the agent's own budget, when one is in force.
    pub(super) fn own_budget(&self, a: &AgentRow, facts: &AgentFacts) -> Option<BudgetRow> {
        Some(self.budget_row_from(a, facts, day_of(now_ms())))
            .filter(|r| r.usd_per_day.is_some() || r.tokens_per_day.is_some())
    }

    /// What an `over_budget` state shows: the spend of the budget that holds the agent.
    pub(super) async fn over_budget_detail(&self, a: &AgentRow) -> Option<String> {
        let today = day_of(now_ms());
        let own = self.budget_row_of(Some(a), today).await.ok()?;
        let (who, row) = if own.over {
            ("", own)
        } else {
            ("the hive's ", self.budget_row_of(None, today).await.ok()?)
        };
        let mut parts = vec![];
        if let Some(l) = row.usd_per_day {
            parts.push(format!("${:.2} of ${l:.2}", row.spent_usd));
        }
        if let Some(l) = row.tokens_per_day {
            parts.push(format!("{} of {l} tokens", row.spent_tokens));
        }
        Some(format!("{who}budget: {} today", parts.join(", ")))
    }

    /// Whether the agent may take a turn, by its budget and the hive's
    /// (consulted by `next_turn`); keeps its `over_budget` state in step: an
    /// idle agent that is held shows it, and one released is idle again.
    pub(super) async fn budget_gate(&self, name: &AgentName, row: &AgentRow) -> Result<Gate> {
        let today = day_of(now_ms());
        let own = self.budget_limit(Some(row), today).await?;
        let hive = self.budget_limit(None, today).await?;
        let gate = if own.fraction(self.spend_today(Some(name.as_str()), today).await?) >= 1.0 {
            Gate::Held
        } else if hive.fraction(self.store.spend_on(None, today).await?) >= 1.0
            // The hive counts no more than the plain sum: under its limit,
            // no agent's budget needs reading (this runs at every turn).
            && hive.fraction(self.spend_today(None, today).await?) >= 1.0
        {
            if name.is_manager() {
                Gate::OperatorOnly
            } else {
                Gate::Held
            }
        } else {
            Gate::Open
        };
        match (gate, row.state) {
            (Gate::Held | Gate::OperatorOnly, AgentState::Idle) => {
                self.set_state(name, AgentState::OverBudget, None).await?
            }
            (Gate::Open, AgentState::OverBudget) => {
                self.set_state(name, AgentState::Idle, None).await?
            }
            _ => {}
        }
        Ok(gate)
    }

    /// Notes spending just recorded for `name` (a turn's or a compaction's):
    /// a budget it brought to 80 % gets `budget_warning`, one it spent gets
    /// `over_budget` and a message to the manager. A failure is only logged:
    /// the spend is recorded, and `next_turn` holds by it whatever happens here.
    pub(super) async fn spent(&self, name: &AgentName, delta: Spend) {
        if delta.usd <= 0.0 && delta.tokens <= 0.0 {
            return;
        }
        if let Err(e) = self.note_spend(name).await {
            tracing::warn!(agent = %name, "could not check the budgets: {e}");
        }
    }

    /// Claims telling that measure `m` of `scope`'s limit `l` reached
    /// `mark` today: true for the one caller, of turns ending together on
    /// any nodes, that tells it (comparing each turn's spend before and
    /// after told it twice, or not at all). Claimed just before it is told.
    async fn claim_mark(
        &self,
        scope: &str,
        today: i64,
        m: BudgetMeasure,
        mark: &str,
        l: f64,
    ) -> Result<bool> {
        let measure = match m {
            BudgetMeasure::Usd => "usd",
            BudgetMeasure::Tokens => "tokens",
        };
        let key = format!("budget {measure} {mark} {l}");
        Ok(self.store.claim_notice(scope, &key, today).await?)
    }

    async fn note_spend(&self, name: &AgentName) -> Result<()> {
        let today = day_of(now_ms());
        let row = self.agent_row(name).await?;
        for scope in [BudgetScope::Agent, BudgetScope::Hive] {
            let (key, limit, (after, shares)) = match scope {
                BudgetScope::Agent => (
                    name.as_str(),
                    self.budget_limit(Some(&row), today).await?,
                    (self.spend_today(Some(name.as_str()), today).await?, vec![]),
                ),
                BudgetScope::Hive => (
                    HIVE_WIDE,
                    self.budget_limit(None, today).await?,
                    self.hive_spend(today).await?,
                ),
            };
            let notice = |measure, spent, limit| BudgetNotice {
                scope,
                measure,
                spent,
                limit,
                day: day_name(today),
            };
            // The operator's notification is about the agent, or the hive (no agent).
            let about = (scope == BudgetScope::Agent).then_some(name);
            let whose = match scope {
                BudgetScope::Agent => format!("{name}'s daily budget"),
                BudgetScope::Hive => format!("the hive's daily budget ({name}'s turn crossed it)"),
            };
            // Once claimed, a notice is told as far as it can be: a record
            // that fails is logged, not a reason to leave the rest untold.
            let record = |p: Payload| async move {
                if let Err(e) = self.record(name, &p).await {
                    tracing::warn!(agent = %name, "could not record a budget notice: {e}");
                }
            };
            for (m, spent, l) in limit.reached(after, WARN_AT) {
                if !self.claim_mark(key, today, m, "warn", l).await? {
                    continue;
                }
                record(Payload::BudgetWarning(notice(m, spent, l))).await;
                let text = format!(
                    "{} of {} of {whose} spent today (UTC): 80 % reached",
                    amount(m, spent),
                    amount(m, l)
                );
                self.tell_operator(NotificationKind::BudgetWarning, about, &text)
                    .await;
            }
            let mut over = vec![];
            for (m, spent, l) in limit.reached(after, 1.0) {
                if !self.claim_mark(key, today, m, "over", l).await? {
                    continue;
                }
                over.push((m, spent, l));
                record(Payload::OverBudget(notice(m, spent, l))).await;
                // Who spent it, so the operator sees where to look.
                let held = match scope {
                    BudgetScope::Agent => format!("{name} is held"),
                    BudgetScope::Hive => format!(
                        "most by {}; every agent is held (the manager still answers you)",
                        largest(&shares, m)
                    ),
                };
                let text = format!(
                    "{} of {} of {whose} spent today (UTC): {held} until you raise it \
                     (hive-c0re budget) or 00:00 UTC",
                    amount(m, spent),
                    amount(m, l)
                );
                self.tell_operator(NotificationKind::OverBudget, about, &text)
                    .await;
            }
            if over.is_empty() {
                continue;
            }
            let spent: Vec<String> = over
                .iter()
                .map(|(m, s, l)| format!("{} of {}", amount(*m, *s), amount(*m, *l)))
                .collect();
            let day = day_name(today);
            let body = match scope {
                BudgetScope::Agent => format!(
                    "{name} is over its daily budget for {day} (UTC): it spent {}. Its turns are held \
                     from now on and its messages wait in its inbox. The operator can raise the budget \
                     for today (hive-c0re budget {name} --usd N / --tokens N) or lift it (--reset); \
                     {name} resumes at once, or at 00:00 UTC.",
                    spent.join(" and ")
                ),
                BudgetScope::Hive => format!(
                    "The hive is over its daily budget for {day} (UTC): its agents spent {} \
                     ({name}'s turn crossed it). Every agent is held and their messages wait; you \
                     still take turns on the operator's messages, nothing else. The operator can raise \
                     the budget for today (hive-c0re budget --hive --usd N / --tokens N) or lift it \
                     (--reset); the agents resume at once, or at 00:00 UTC.",
                    spent.join(" and ")
                ),
            };
            if let Err(e) = self.notify(&AgentName::manager(), &body).await {
                tracing::warn!(agent = %name, "could not tell the manager of a spent budget: {e}");
            }
            if scope == BudgetScope::Hive {
                self.wake_all().await?;
            }
        }
        Ok(())
    }

    /// Wakes every agent's `next_turn`, so each looks at the budgets again.
    async fn wake_all(&self) -> Result<()> {
        for a in self.store.agents().await? {
            self.broker.poke(&a.name);
        }
        Ok(())
    }

    /// The operator changes a budget for the rest of today (UTC): new limits
    /// (a measure not given keeps today's), or lifted; stored, so a restart
    /// keeps it, and whoever it releases resumes at once.
    pub async fn budget_set(&self, req: &verb::BudgetSet) -> Result<BudgetRow> {
        if req.reset && (req.usd.is_some() || req.tokens.is_some()) {
            return Err(Error::refused(
                "give --reset alone (it lifts the budget for today) or new limits, not both",
            ));
        }
        if !req.reset && req.usd.is_none() && req.tokens.is_none() {
            return Err(Error::refused(
                "say what to change: --usd N, --tokens N, or --reset to lift the budget for today",
            ));
        }
        if let Some(u) = req.usd
            && !(u.is_finite() && u > 0.0)
        {
            return Err(Error::refused(format!(
                "{u} is not a budget: give a number of dollars above 0 (or --reset to lift it)"
            )));
        }
        if req.tokens == Some(0) {
            return Err(Error::refused(
                "0 tokens is not a budget: give a number above 0 (or --reset to lift it)",
            ));
        }
        // The store keeps a signed 64-bit count.
        if let Some(t) = req.tokens.filter(|&t| i64::try_from(t).is_err()) {
            return Err(Error::refused(format!(
                "{t} tokens is more than a budget can hold: give at most {} (or --reset to lift it)",
                i64::MAX
            )));
        }
        let row = match &req.agent {
            Some(n) => Some(self.agent_row(n).await?),
            None => None,
        };
        let scope = req.agent.as_ref().map_or(HIVE_WIDE, |n| n.as_str());
        let today = day_of(now_ms());
        let earlier = self
            .store
            .budget_override(scope)
            .await?
            .filter(|o| o.day == today && !o.lifted);
        self.store
            .set_budget_override(&BudgetOverride {
                scope: scope.to_owned(),
                day: today,
                usd: req.usd.or(earlier.as_ref().and_then(|o| o.usd)),
                tokens: req.tokens.or(earlier.as_ref().and_then(|o| o.tokens)),
                lifted: req.reset,
            })
            .await?;
        let mut words = vec!["budget".to_owned()];
        words.extend(req.usd.map(|u| format!("--usd {u}")));
        words.extend(req.tokens.map(|t| format!("--tokens {t}")));
        if req.reset {
            words.push("--reset".into());
        }
        match &req.agent {
            Some(n) => {
                self.note_operator(n, hive_sh4re::event::Operator::command(words.join(" ")))
                    .await;
                self.broker.poke(n.as_str());
                self.broker
                    .publish(crate::broker::Change::Agent(n.to_string()));
            }
            None => {
                self.wake_all().await?;
                for a in self.store.agents().await? {
                    self.broker.publish(crate::broker::Change::Agent(a.name));
                }
            }
        }
        self.budget_row_of(row.as_ref(), today).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hive_sh4re::agent::{TurnOutcome, TurnStats};
    use hive_sh4re::config::{AgentConfig, Budget};

    use super::*;

    #[tokio::test]
    async fn the_hives_budget_holds_everyone_but_the_managers_turns_for_the_operator() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        let manager = AgentName::manager();
        for n in [&alice, &manager] {
            hive.add_stopped(n, &AgentConfig::default().to_toml())
                .await
                .unwrap();
            hive.take_lease_for_tests(n).await;
        }
        let hive_tokens = |t| verb::BudgetSet {
            tokens: Some(t),
            ..verb::BudgetSet::default()
        };
        hive.budget_set(&hive_tokens(100)).await.unwrap();
        // A compaction's spending (reported as stats) counts like a turn's.
        hive.record_stats(&alice, &[("tokens.in".into(), 150.0)])
            .await
            .unwrap();
        let rows = hive.budget_rows().await.unwrap();
        assert_eq!((rows[0].agent.as_deref(), rows[0].over), (None, true));
        let kinds: Vec<String> = hive
            .events(&alice, None, None, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        // One spend from 0 to 150 %: only the hold is told, not the warning it passed.
        assert_eq!(kinds, ["over_budget"]);

        let to = |n: &AgentName| Mailbox::Agent(n.clone());
        hive.send(&Mailbox::Operator, &to(&alice), "work")
            .await
            .unwrap();
        assert!(
            hive.next_turn(&alice, Duration::ZERO)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            hive.agent_row(&alice).await.unwrap().state,
            AgentState::OverBudget
        );

        hive.send(&to(&alice), &to(&manager), "from alice")
            .await
            .unwrap();
        hive.send(&Mailbox::Operator, &to(&manager), "from the operator")
            .await
            .unwrap();
        let turn = hive
            .next_turn(&manager, Duration::ZERO)
            .await
            .unwrap()
            .expect("the operator's turn");
        let from: Vec<&str> = turn.messages.iter().map(|m| m.sender.as_str()).collect();
        // The system's notice of the spent budget waits too: it is not the operator's.
        assert_eq!(from, ["operator"]);
        hive.end_turn(
            &manager,
            &turn.claim(),
            &TurnStats::default(),
            TurnOutcome::Ack,
            None,
        )
        .await
        .unwrap();
        assert!(
            hive.next_turn(&manager, Duration::ZERO)
                .await
                .unwrap()
                .is_none(),
            "alice's message waits"
        );

        // The operator lifts the hive's budget for today: everyone works again.
        hive.budget_set(&verb::BudgetSet {
            reset: true,
            ..verb::BudgetSet::default()
        })
        .await
        .unwrap();
        let turn = hive
            .next_turn(&alice, Duration::ZERO)
            .await
            .unwrap()
            .expect("alice resumes");
        assert_eq!(turn.messages[0].body, "work");
        let turn = hive
            .next_turn(&manager, Duration::ZERO)
            .await
            .unwrap()
            .expect("the manager resumes");
        let from: Vec<&str> = turn.messages.iter().map(|m| m.sender.as_str()).collect();
        assert_eq!(from, ["system", "alice"]);
        assert!(
            hive.budget_set(&hive_tokens(0)).await.is_err(),
            "0 is no budget"
        );
        let e = hive.budget_set(&hive_tokens(u64::MAX)).await.unwrap_err();
        assert!(e.to_string().contains("more than a budget can hold"), "{e}");
        let most = hive
            .budget_set(&hive_tokens(i64::MAX as u64))
            .await
            .unwrap();
        assert_eq!(most.tokens_per_day, Some(i64::MAX as u64));
    }

    #[tokio::test]
    async fn the_hive_counts_an_agent_up_to_its_own_budget_measure_by_measure() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let [alice, bob] = ["alice", "bob"].map(|n| AgentName::parse(n).unwrap());
        let tokens_only = AgentConfig {
            budget: Some(Budget {
                usd_per_day: None,
                tokens_per_day: Some(100),
            }),
            ..AgentConfig::default()
        };
        hive.add_stopped(&alice, &tokens_only.to_toml())
            .await
            .unwrap();
        hive.add_stopped(&bob, &AgentConfig::default().to_toml())
            .await
            .unwrap();
        for (a, tokens, usd) in [(&alice, 500.0, 2.0), (&bob, 30.0, 1.0)] {
            hive.record_stats(a, &[("tokens.in".into(), tokens), ("cost.usd".into(), usd)])
                .await
                .unwrap();
        }
        let today = day_of(now_ms());
        let (total, shares) = hive.hive_spend(today).await.unwrap();
        // alice's tokens up to her 100, her dollars (no limit) in full; bob's all.
        assert_eq!(total, spend(3.0, 130.0));
        assert_eq!(
            shares,
            [
                ("alice".to_owned(), spend(2.0, 100.0)),
                ("bob".to_owned(), spend(1.0, 30.0))
            ]
        );
        assert_eq!(
            largest(&shares, BudgetMeasure::Tokens),
            "alice 100 tokens, bob 30 tokens"
        );
        // The operator lifts alice's budget for today: she counts in full.
        hive.budget_set(&verb::BudgetSet {
            agent: Some(alice.clone()),
            reset: true,
            ..verb::BudgetSet::default()
        })
        .await
        .unwrap();
        assert_eq!(hive.hive_spend(today).await.unwrap().0, spend(3.0, 530.0));
    }

    fn spend(usd: f64, tokens: f64) -> Spend {
        Spend { usd, tokens }
    }

    #[test]
    fn days_are_utc_days() {
        // 2025-12-01T23:59:59.999Z and 2025-12-02T00:00:00Z.
        let before_midnight = 1_764_633_599_999;
        let midnight = before_midnight + 1;
        assert_eq!(day_of(midnight) - day_of(before_midnight), 1);
        assert_eq!(day_name(day_of(before_midnight)), "2025-12-01");
        assert_eq!(day_name(day_of(midnight)), "2025-12-02");
        assert_eq!(
            day_of(midnight) * DAY_MS,
            midnight,
            "a day starts at 00:00 UTC"
        );
    }

    #[test]
    fn the_operators_budget_counts_only_on_its_day() {
        let configured = Some(Budget {
            usd_per_day: Some(5.0),
            tokens_per_day: Some(1000),
        });
        let o = |day, usd, lifted| BudgetOverride {
            scope: "alice".into(),
            day,
            usd,
            tokens: None,
            lifted,
        };
        let l = limit_today(configured, Some(o(10, Some(9.0), false)), 10);
        assert_eq!(
            (l.usd, l.tokens, l.source),
            (Some(9.0), Some(1000), BudgetSource::Operator)
        );
        let l = limit_today(configured, Some(o(9, Some(9.0), false)), 10);
        assert_eq!(
            (l.usd, l.source),
            (Some(5.0), BudgetSource::Config),
            "yesterday's is gone"
        );
        let l = limit_today(configured, Some(o(10, None, true)), 10);
        assert_eq!(
            (l.usd, l.tokens, l.source),
            (None, None, BudgetSource::Lifted)
        );
        assert_eq!(
            l.fraction(spend(100.0, 1e9)),
            0.0,
            "a lifted budget holds nothing"
        );
        assert_eq!(limit_today(None, None, 10), Limit::NONE);
    }

    #[test]
    fn a_mark_is_reached_at_its_share_and_80_percent_only_below_the_limit() {
        let l = Limit {
            usd: None,
            tokens: Some(1000),
            source: BudgetSource::Config,
        };
        assert!(l.reached(spend(0.0, 790.0), WARN_AT).is_empty());
        assert_eq!(
            l.reached(spend(0.0, 800.0), WARN_AT),
            [(BudgetMeasure::Tokens, 800.0, 1000.0)],
            "80 % exactly warns"
        );
        assert!(
            l.reached(spend(0.0, 1200.0), WARN_AT).is_empty(),
            "over is told as over"
        );
        assert_eq!(l.reached(spend(0.0, 1200.0), 1.0).len(), 1);
        assert_eq!(l.fraction(spend(0.0, 1200.0)), 1.2);
        let both = Limit {
            usd: Some(1.0),
            ..l
        };
        assert_eq!(both.fraction(spend(0.5, 900.0)), 0.9, "the larger share");
    }

    /// Two agents' turns end together: both spends are stored before either
    /// is looked at. Each mark of the hive's budget is told exactly once,
    /// where comparing each turn's own before and after told 80 % twice
    /// (both saw the mark between) or 100 % not at all (neither did).
    #[tokio::test]
    async fn turns_ending_together_tell_each_mark_of_the_hives_budget_once() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let [alice, bob, carol] = ["alice", "bob", "carol"].map(|n| AgentName::parse(n).unwrap());
        for n in [&alice, &bob, &carol] {
            hive.add_stopped(n, &AgentConfig::default().to_toml())
                .await
                .unwrap();
        }
        hive.budget_set(&verb::BudgetSet {
            tokens: Some(100),
            ..verb::BudgetSet::default()
        })
        .await
        .unwrap();
        let told = |kind: NotificationKind| {
            let hive = &hive;
            async move {
                hive.notifications(false, Some(100))
                    .await
                    .unwrap()
                    .notifications
                    .into_iter()
                    .filter(|n| n.kind == kind && n.agent.is_none())
                    .count()
            }
        };
        let together = |a: &AgentName, b: &AgentName, ta: f64, tb: f64| {
            let hive = &hive;
            let (a, b) = (a.clone(), b.clone());
            async move {
                let da = hive
                    .store
                    .add_stats(a.as_str(), &[("tokens.in", ta)])
                    .await
                    .unwrap();
                let db = hive
                    .store
                    .add_stats(b.as_str(), &[("tokens.in", tb)])
                    .await
                    .unwrap();
                hive.spent(&a, da).await;
                hive.spent(&b, db).await;
            }
        };
        // 75, then 3 each: both see 78 before them and 81 after.
        hive.record_stats(&carol, &[("tokens.in".into(), 75.0)])
            .await
            .unwrap();
        together(&alice, &bob, 3.0, 3.0).await;
        assert_eq!(told(NotificationKind::BudgetWarning).await, 1);
        // 81, then 19 each: both see 100 before them (not below the mark) and 119 after.
        together(&alice, &bob, 19.0, 19.0).await;
        assert_eq!(told(NotificationKind::OverBudget).await, 1);
        assert_eq!(told(NotificationKind::BudgetWarning).await, 1);
        // Raised: a new limit has marks of its own.
        hive.budget_set(&verb::BudgetSet {
            tokens: Some(130),
            ..verb::BudgetSet::default()
        })
        .await
        .unwrap();
        together(&alice, &bob, 0.0, 1.0).await;
        assert_eq!(told(NotificationKind::BudgetWarning).await, 2, "120 of 130");
        assert_eq!(told(NotificationKind::OverBudget).await, 1);
    }

    #[test]
    fn spending_is_tokens_in_and_out_and_cost_never_below_zero() {
        let items = [
            ("tokens.in", 100.0),
            ("tokens.out", 20.0),
            ("cost.usd", 0.5),
            ("notes.bytes", 9000.0),
            ("tokens.in", -1e9),
        ];
        assert_eq!(Spend::of(items), spend(0.5, 120.0));
    }
}
