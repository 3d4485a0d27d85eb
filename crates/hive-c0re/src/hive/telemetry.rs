//! Telemetry: the figures of each turn, stored as `stats` rows, and the
//! derived series the dashboard, host.sock and `hive-c0re stats` show.
//!
//! A turn's rows share one timestamp; `turn.duration_ms` marks each turn.
//!
//! Between turns, the inbox depth is sampled at every send and claim; the
//! deepest since the last turn is kept in memory (a restart forgets it) and
//! recorded with the next turn's figures as `inbox.depth_peak`, so a burst
//! that a turn then drains still shows. The approval queue's length is
//! recorded as a hive-wide row (agent [`HIVE_WIDE`]) at every change.

use std::collections::BTreeMap;

use hive_sh4re::AgentName;
use hive_sh4re::agent::ExitClass;
use hive_sh4re::agent::TurnStats;
use hive_sh4re::host::{AgentStats, SeriesPoint, StatsSummary, TurnPoint};
use hive_sh4re::limits::{
    HARNESS_STATS_KEYS, REPORTED_FIGURE_MAX, REPORTED_USD_MAX, STATS_PER_MINUTE,
    TOOL_NAME_MAX_CHARS, TURN_ERROR_MAX_CHARS, TURN_TOOLS_MAX,
};

use crate::clock::{now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::hive::Hive;
use crate::store::{AgentRow, HIVE_WIDE, INBOX_DEPTH, INBOX_DEPTH_PEAK, StatRow};

/// An agent with waiting messages and no turn for this long is flagged stuck.
pub const STUCK_AFTER_SECONDS: f64 = 300.0;

/// The stuck limit in force: `HIVE_STUCK_AFTER_SECS` (for tests), else [`STUCK_AFTER_SECONDS`].
fn stuck_after() -> f64 {
    crate::clock::secs_from_env(
        "HIVE_STUCK_AFTER_SECS",
        std::time::Duration::from_secs_f64(STUCK_AFTER_SECONDS),
    )
    .as_secs_f64()
}

/// A turn's figures as `stats` rows, but the inbox's (its depth is read
/// where the turn's messages are settled).
pub(super) fn turn_figures(s: &TurnStats) -> Vec<(String, f64)> {
    let total = s
        .tool_calls
        .values()
        .fold(0u64, |a, n| a.saturating_add(*n));
    let mut rows: Vec<(String, f64)> = vec![
        ("turn.duration_ms".into(), s.duration_ms as f64),
        ("turn.tool_calls".into(), total as f64),
        (format!("turn.exit.{}", s.exit_class), 1.0),
        ("turn.exit_code".into(), s.exit_code.unwrap_or(-1) as f64),
        ("turn.messages_received".into(), s.messages_received as f64),
    ];
    rows.extend(
        s.tool_calls
            .iter()
            .map(|(tool, n)| (format!("tool.{tool}"), *n as f64)),
    );
    rows.extend(
        s.sent_by_class
            .iter()
            .map(|(c, n)| (format!("sent.{c}"), *n as f64)),
    );
    rows.extend(
        s.received_by_class
            .iter()
            .map(|(c, n)| (format!("received.{c}"), *n as f64)),
    );
    rows.extend(s.input_tokens.map(|v| ("tokens.in".to_owned(), v as f64)));
    rows.extend(s.output_tokens.map(|v| ("tokens.out".to_owned(), v as f64)));
    rows.extend(s.cost_usd.map(|v| ("cost.usd".to_owned(), v)));
    rows.extend(s.notes_bytes.map(|v| ("notes.bytes".to_owned(), v as f64)));
    rows
}

/// Figures as the store takes them, which borrows their names: the one
/// conversion for every caller holding owned ones.
pub(super) fn borrow_figures(rows: &[(String, f64)]) -> Vec<(&str, f64)> {
    rows.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

impl Hive {
    /// Stores a turn's figures alone, with the inbox depth left, as tests
    /// seed them; a turn's end stores them in its own transaction
    /// ([`Hive::end_turn`], `end_interrupted_turn`), the one way outside tests.
    #[cfg(test)]
    pub async fn record_turn(
        &self,
        agent: &AgentName,
        s: &TurnStats,
    ) -> Result<crate::store::Spend> {
        let (rows, inbox_depth) = self.turn_rows(agent, s).await?;
        let spend = self
            .store
            .add_stats(agent.as_str(), &borrow_figures(&rows))
            .await?;
        self.take_inbox_peak(agent.as_str(), inbox_depth);
        self.broker
            .publish(crate::broker::Change::Agent(agent.to_string()));
        Ok(spend)
    }

    /// A turn's figures with the inbox's as it is now (its depth, and the
    /// deepest since the last turn), and that depth: the peak starts again
    /// from it once they are stored ([`Hive::take_inbox_peak`]).
    pub(super) async fn turn_rows(
        &self,
        agent: &AgentName,
        s: &TurnStats,
    ) -> Result<(Vec<(String, f64)>, u64)> {
        let depth = self.store.inbox_depth(agent.as_str()).await?;
        let peak = self.inbox_peak(agent.as_str()).max(depth);
        let mut rows = turn_figures(s);
        rows.push((INBOX_DEPTH.into(), depth as f64));
        rows.push((INBOX_DEPTH_PEAK.into(), peak as f64));
        Ok((rows, depth))
    }

    /// Samples the agent's inbox depth (after a send to it, or a claim of it)
    /// for the peak its next turn's figures record.
    pub(super) async fn sample_inbox(&self, agent: &str) {
        if let Ok(depth) = self.store.inbox_depth(agent).await {
            self.note_inbox_depth(agent, depth);
        }
    }

    /// [`Hive::sample_inbox`] with a depth the caller has already read.
    pub(super) fn note_inbox_depth(&self, agent: &str, depth: u64) {
        let mut peaks = self.inbox_peaks.lock().unwrap_or_else(|p| p.into_inner());
        let peak = peaks.entry(agent.to_owned()).or_default();
        *peak = (*peak).max(depth);
    }

    /// The deepest the inbox was since the last call (at least `now`), and
    /// starts the next interval at `now`.
    pub(super) fn take_inbox_peak(&self, agent: &str, now: u64) -> u64 {
        let mut peaks = self.inbox_peaks.lock().unwrap_or_else(|p| p.into_inner());
        peaks.insert(agent.to_owned(), now).unwrap_or(0).max(now)
    }

    /// The deepest the inbox was since the last [`Hive::take_inbox_peak`],
    /// leaving it: a turn's end that fails keeps it for the next.
    pub(super) fn inbox_peak(&self, agent: &str) -> u64 {
        let peaks = self.inbox_peaks.lock().unwrap_or_else(|p| p.into_inner());
        peaks.get(agent).copied().unwrap_or(0)
    }

    /// Records the approval queue's length, hive-wide, after a change (a failure is only logged).
    pub(super) async fn record_approvals_pending(&self) {
        let recorded = match self.store.pending_approvals().await {
            Ok(n) => self
                .store
                .add_stats(HIVE_WIDE, &[("approvals.pending", n as f64)])
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            tracing::warn!("could not record the approval queue's length: {e}");
        }
    }

    /// Records figures a harness reports outside a turn (e.g. its notes' size around a compaction).
    /// A compaction's spending among them counts against the budgets (agent.sock takes
    /// spend only from a connection that holds the slot `admit` gave).
    pub async fn record_stats(&self, agent: &AgentName, items: &[(String, f64)]) -> Result<()> {
        check_stats(items)?;
        if !self.stats_rate.allow(agent.as_str()) {
            return Err(Error::refused(format!(
                "{agent} reported figures {STATS_PER_MINUTE} times this minute, the most hive-c0re takes: report again next minute"
            )));
        }
        let spend = self
            .store
            .add_stats(agent.as_str(), &borrow_figures(items))
            .await?;
        self.spent(agent, spend).await;
        Ok(())
    }

    /// Derived figures of one agent (or every agent) over the last `window_ms`.
    pub async fn stats_summary(
        &self,
        agent: Option<&AgentName>,
        window_ms: i64,
    ) -> Result<StatsSummary> {
        let now = now_ms();
        let since = now - window_ms.max(1000);
        let agents: Vec<AgentRow> = match agent {
            Some(a) => vec![self.agent_row(a).await?],
            None => self.store.agents().await?,
        };
        let rows = self
            .store
            .stats_since(agent.map(|a| a.as_str()), since)
            .await?;
        // A read cut at its bound covers less than the window asked for: the
        // summary says so by where it starts.
        let since = match rows.first() {
            Some(oldest) if rows.len() >= crate::store::STATS_READ_MAX => oldest.ts,
            _ => since,
        };
        let mut by_agent: BTreeMap<&str, Vec<&StatRow>> = BTreeMap::new();
        for r in &rows {
            by_agent.entry(r.agent.as_str()).or_default().push(r);
        }
        let window_s = (now - since) as f64 / 1000.0;
        let approvals_pending = self.store.pending_approvals().await?;
        let mut approvals_series: Vec<SeriesPoint> = self
            .store
            .stats_since(Some(HIVE_WIDE), since)
            .await?
            .iter()
            .filter(|r| r.key == "approvals.pending")
            .map(|r| SeriesPoint {
                ts: r.ts as f64 / 1000.0,
                value: r.value,
            })
            .collect();
        approvals_series.push(SeriesPoint {
            ts: now as f64 / 1000.0,
            value: approvals_pending as f64,
        });
        let mut per_agent = Vec::with_capacity(agents.len());
        for a in &agents {
            let rows = by_agent
                .get(a.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            per_agent.push(self.agent_stats(a, rows, window_s, now).await);
        }
        Ok(StatsSummary {
            since: rfc3339(since),
            window_seconds: window_s,
            approvals_pending,
            approvals_series,
            stuck_after_seconds: stuck_after(),
            agents: per_agent,
            budgets: self.budget_rows().await?,
        })
    }

    async fn agent_stats(
        &self,
        a: &AgentRow,
        rows: &[&StatRow],
        window_s: f64,
        now: i64,
    ) -> AgentStats {
        let mut turns: BTreeMap<i64, BTreeMap<&str, f64>> = BTreeMap::new();
        for r in rows {
            turns
                .entry(r.ts)
                .or_default()
                .insert(r.key.as_str(), r.value);
        }
        turns.retain(|_, t| t.contains_key("turn.duration_ms"));
        let n = turns.len() as u64;
        let per_turn = |sum: f64| if n == 0 { 0.0 } else { sum / n as f64 };
        let mut durations: Vec<f64> = turns.values().map(|t| t["turn.duration_ms"]).collect();
        durations.sort_by(f64::total_cmp);
        let mut st = AgentStats {
            agent: a.name.clone(),
            turns: n,
            ..AgentStats::default()
        };
        st.turns_per_minute = n as f64 / (window_s / 60.0);
        st.duration_p50_ms = percentile(&durations, 0.50);
        st.duration_p95_ms = percentile(&durations, 0.95);
        let mut tool_calls = 0.0;
        let mut sent: BTreeMap<String, f64> = BTreeMap::new();
        let mut received: BTreeMap<String, f64> = BTreeMap::new();
        let mut notes = vec![];
        for (&ts, t) in &turns {
            tool_calls += t.get("turn.tool_calls").copied().unwrap_or(0.0);
            for (k, v) in t {
                if let Some(c) = k.strip_prefix("turn.exit.") {
                    *st.exit_classes.entry(c.to_owned()).or_default() += *v as u64;
                } else if let Some(tool) = k.strip_prefix("tool.") {
                    *st.tool_usage.entry(tool.to_owned()).or_default() += *v as u64;
                } else if let Some(c) = k.strip_prefix("sent.") {
                    *sent.entry(c.to_owned()).or_default() += v;
                } else if let Some(c) = k.strip_prefix("received.") {
                    *received.entry(c.to_owned()).or_default() += v;
                }
            }
            let deepest = ["inbox.depth", "inbox.depth_peak"]
                .iter()
                .filter_map(|k| t.get(k).copied())
                .fold(0.0, f64::max);
            st.inbox_depth_max = st.inbox_depth_max.max(deepest as u64);
            st.tokens_in += t.get("tokens.in").copied().unwrap_or(0.0) as u64;
            st.tokens_out += t.get("tokens.out").copied().unwrap_or(0.0) as u64;
            st.cost_usd += t.get("cost.usd").copied().unwrap_or(0.0);
            let nb = t.get("notes.bytes").copied();
            notes.extend(nb);
            st.turns_series.push(TurnPoint {
                ts: ts as f64 / 1000.0,
                duration_ms: t["turn.duration_ms"],
                tool_calls: t.get("turn.tool_calls").copied().unwrap_or(0.0),
                inbox_depth: t.get("inbox.depth").copied().unwrap_or(0.0),
                notes_bytes: nb,
            });
        }
        st.tool_calls_per_turn = per_turn(tool_calls);
        st.sent_per_turn = sent.into_iter().map(|(k, v)| (k, per_turn(v))).collect();
        st.received_per_turn = received
            .into_iter()
            .map(|(k, v)| (k, per_turn(v)))
            .collect();
        st.notes_bytes = notes.last().map(|&b| b as u64);
        st.notes_growth_bytes = match (notes.first(), notes.last()) {
            (Some(f), Some(l)) => (*l - *f) as i64,
            _ => 0,
        };
        st.inbox_depth_current = self.store.inbox_depth(&a.name).await.unwrap_or(0);
        st.inbox_depth_max = st.inbox_depth_max.max(st.inbox_depth_current);
        st.seconds_since_last_turn = a.last_turn_at.map(|t| (now - t) as f64 / 1000.0);
        let quiet_since = a.last_turn_at.unwrap_or(a.created_at).max(a.state_since);
        let napping = self.nap_left(&a.name, a.nap_until, now).is_some();
        // Messages held after a cancelled turn wait for the operator's next word, by design.
        let held = self.store.held_count(&a.name).await.unwrap_or(0);
        st.stuck = st.inbox_depth_current > held
            && !a.paused
            && !napping
            && a.state != hive_sh4re::AgentState::OverBudget
            && self.supervisor.is_running(&a.name)
            && (now - quiet_since) as f64 / 1000.0 > stuck_after();
        st
    }
}

/// The `q` quantile of sorted values (nearest rank), 0 when empty.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Checks a harness's `stats` report: only the figures a harness reports
/// outside a turn ([`HARNESS_STATS_KEYS`]), each at most once, each a number
/// from 0 to its bound. Turn figures come with `turn_end`; a report of them
/// here counted as a turn the agent never took.
fn check_stats(items: &[(String, f64)]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (key, value) in items {
        if !HARNESS_STATS_KEYS.contains(&key.as_str()) {
            let shown: String = key.chars().take(40).collect();
            return Err(Error::refused(format!(
                "{shown:?} is not a figure a harness reports outside a turn (those are {})",
                HARNESS_STATS_KEYS.join(", ")
            )));
        }
        if !seen.insert(key.as_str()) {
            return Err(Error::refused(format!(
                "{key} is reported twice in one report"
            )));
        }
        let max = if key == "cost.usd" {
            REPORTED_USD_MAX
        } else {
            REPORTED_FIGURE_MAX
        };
        if !(0.0..=max).contains(value) {
            return Err(Error::refused(format!(
                "{key} = {value} is not a figure from 0 to {max}"
            )));
        }
    }
    Ok(())
}

/// A harness's figures of a turn, bounded as [`check_stats`] bounds a
/// report's: each count and cost within its bound (a sum cannot overflow),
/// at most [`TURN_TOOLS_MAX`] tools with names of plain characters, only
/// the four mailbox classes, the reason cut short, and never the class the
/// hive alone gives (a turn it ended itself). A harness speaks agent.sock as
/// its agent may, so this is what one turn's end can make the store keep.
pub fn bounded_turn_stats(mut s: TurnStats) -> TurnStats {
    let count = |n: u64| n.min(REPORTED_FIGURE_MAX as u64);
    let tool_name = |name: &str| -> String {
        name.chars()
            .take(TOOL_NAME_MAX_CHARS)
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | '.' | ':' => c,
                _ => '_',
            })
            .collect()
    };
    let mut tools = BTreeMap::new();
    for (name, n) in std::mem::take(&mut s.tool_calls) {
        let name = tool_name(&name);
        if tools.len() < TURN_TOOLS_MAX || tools.contains_key(&name) {
            let total: &mut u64 = tools.entry(name).or_default();
            *total = count(total.saturating_add(n));
        }
    }
    s.tool_calls = tools;
    let classes = |m: &mut BTreeMap<String, u64>| {
        m.retain(|class, _| ["peer", "operator", "manager", "system"].contains(&class.as_str()));
        m.values_mut().for_each(|n| *n = count(*n));
    };
    classes(&mut s.sent_by_class);
    classes(&mut s.received_by_class);
    s.duration_ms = count(s.duration_ms);
    s.messages_received = count(s.messages_received);
    s.input_tokens = s.input_tokens.map(count);
    s.output_tokens = s.output_tokens.map(count);
    s.notes_bytes = s.notes_bytes.map(count);
    s.cost_usd = s
        .cost_usd
        .filter(|c| c.is_finite())
        .map(|c| c.clamp(0.0, REPORTED_USD_MAX));
    s.error = s
        .error
        .map(|e| hive_sh4re::text::clip(&e, TURN_ERROR_MAX_CHARS).into_owned());
    if s.exit_class == ExitClass::Interrupted {
        s.exit_class = ExitClass::Failure;
    }
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hive_sh4re::Mailbox;
    use hive_sh4re::agent::{TurnOutcome, TurnStats};
    use hive_sh4re::config::AgentConfig;

    use super::*;

    #[tokio::test]
    async fn the_inbox_peak_between_turn_ends_and_the_approval_queue_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let hive = Hive::for_tests(dir.path(), None);
        let alice = AgentName::parse("alice").unwrap();
        hive.add_stopped(&alice, &AgentConfig::default().to_toml())
            .await
            .unwrap();
        hive.take_lease_for_tests(&alice).await;
        let to = Mailbox::Agent(alice.clone());
        for i in 0..3 {
            hive.send(&Mailbox::Operator, &to, &format!("m{i}"))
                .await
                .unwrap();
        }
        let turn = hive
            .next_turn(&alice, Duration::ZERO)
            .await
            .unwrap()
            .expect("a turn");
        // Two more arrive during the turn: five wait at the peak, two are left.
        for i in 3..5 {
            hive.send(&Mailbox::Operator, &to, &format!("m{i}"))
                .await
                .unwrap();
        }
        hive.end_turn(
            &alice,
            &turn.claim(),
            &TurnStats::default(),
            TurnOutcome::Ack,
            None,
        )
        .await
        .unwrap();
        let s = hive.stats_summary(Some(&alice), 3_600_000).await.unwrap();
        let a = &s.agents[0];
        assert_eq!(a.inbox_depth_current, 2);
        assert_eq!(a.turns_series[0].inbox_depth, 2.0, "what the turn left");
        assert_eq!(a.inbox_depth_max, 5, "the peak during the turn");

        let bob = hive
            .request_spawn(&AgentName::parse("bob").unwrap(), None, None, None)
            .await
            .unwrap();
        hive.request_spawn(&AgentName::parse("carol").unwrap(), None, None, None)
            .await
            .unwrap();
        hive.deny(bob, None).await.unwrap();
        let s = hive.stats_summary(None, 3_600_000).await.unwrap();
        let queue: Vec<f64> = s.approvals_series.iter().map(|p| p.value).collect();
        assert_eq!(queue, [1.0, 2.0, 1.0, 1.0], "each change, then now");
        assert_eq!(s.approvals_pending, 1);
        assert!(
            s.agents.iter().all(|a| a.agent != HIVE_WIDE),
            "hive-wide rows are no agent's"
        );
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
