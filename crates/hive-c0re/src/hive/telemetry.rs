//! Telemetry: the figures of each turn, stored as `stats` rows, and the
//! derived series the dashboard, host.sock and `hive-c0re stats` show.
//!
//! A turn's rows share one timestamp; `turn.duration_ms` marks each turn.

use std::collections::BTreeMap;

use hive_sh4re::AgentName;
use hive_sh4re::agent::TurnStats;
use hive_sh4re::host::{AgentStats, StatsSummary, TurnPoint};

use crate::broker::Change;
use crate::clock::{now_ms, rfc3339};
use crate::error::Result;
use crate::hive::Hive;
use crate::store::{AgentRow, StatRow};

/// An agent with waiting messages and no turn for this long is flagged stuck.
pub const STUCK_AFTER_SECONDS: f64 = 300.0;

/// The stuck limit in force: `HIVE_STUCK_AFTER_SECS` (for tests), else [`STUCK_AFTER_SECONDS`].
fn stuck_after() -> f64 {
    std::env::var("HIVE_STUCK_AFTER_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(STUCK_AFTER_SECONDS)
}

impl Hive {
    /// Stores the figures of a finished turn whose messages are settled
    /// already (see [`Hive::end_turn`]), so the inbox depth is what is left.
    pub fn record_turn(&self, agent: &AgentName, s: &TurnStats) -> Result<()> {
        let total: u64 = s.tool_calls.values().sum();
        let inbox_depth = self.store.inbox_depth(agent.as_str());
        let mut rows: Vec<(String, f64)> = vec![
            ("turn.duration_ms".into(), s.duration_ms as f64),
            ("turn.tool_calls".into(), total as f64),
            (format!("turn.exit.{}", s.exit_class), 1.0),
            ("turn.exit_code".into(), s.exit_code.unwrap_or(-1) as f64),
            ("turn.messages_received".into(), s.messages_received as f64),
            ("inbox.depth".into(), inbox_depth as f64),
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
        self.store
            .add_stats(agent.as_str(), rows.iter().map(|(k, v)| (k.as_str(), *v)))?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }

    /// Records figures a harness reports outside a turn (e.g. its notes' size around a compaction).
    pub fn record_stats(&self, agent: &AgentName, items: &[(String, f64)]) -> Result<()> {
        self.store
            .add_stats(agent.as_str(), items.iter().map(|(k, v)| (k.as_str(), *v)))?;
        Ok(())
    }

    /// Derived figures of one agent (or every agent) over the last `window_ms`.
    pub fn stats_summary(&self, agent: Option<&AgentName>, window_ms: i64) -> Result<StatsSummary> {
        let now = now_ms();
        let since = now - window_ms.max(1000);
        let agents: Vec<AgentRow> = match agent {
            Some(a) => vec![self.agent_row(a)?],
            None => self.store.agents()?,
        };
        let rows = self.store.stats_since(agent.map(|a| a.as_str()), since)?;
        let mut by_agent: BTreeMap<&str, Vec<&StatRow>> = BTreeMap::new();
        for r in &rows {
            by_agent.entry(r.agent.as_str()).or_default().push(r);
        }
        let window_s = (now - since) as f64 / 1000.0;
        let per_agent = agents
            .iter()
            .map(|a| {
                self.agent_stats(
                    a,
                    by_agent
                        .get(a.name.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                    window_s,
                    now,
                )
            })
            .collect();
        Ok(StatsSummary {
            since: rfc3339(since),
            window_seconds: window_s,
            approvals_pending: self.store.pending_approvals()?,
            stuck_after_seconds: stuck_after(),
            agents: per_agent,
        })
    }

    fn agent_stats(&self, a: &AgentRow, rows: &[&StatRow], window_s: f64, now: i64) -> AgentStats {
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
            st.inbox_depth_max = st
                .inbox_depth_max
                .max(t.get("inbox.depth").copied().unwrap_or(0.0) as u64);
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
        st.inbox_depth_current = self.store.inbox_depth(&a.name);
        st.inbox_depth_max = st.inbox_depth_max.max(st.inbox_depth_current);
        st.seconds_since_last_turn = a.last_turn_at.map(|t| (now - t) as f64 / 1000.0);
        let quiet_since = a.last_turn_at.unwrap_or(a.created_at).max(a.state_since);
        let napping = a.nap_until.is_some_and(|t| t > now);
        // Messages held after a cancelled turn wait for the operator's next word, by design.
        let held = self.store.held_count(&a.name).unwrap_or(0);
        st.stuck = st.inbox_depth_current > held
            && !a.paused
            && !napping
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

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.95), 95.0);
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
