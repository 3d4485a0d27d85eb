//! Telemetry: the figures of each turn, stored as `stats` rows.

use hive_sh4re::AgentName;
use hive_sh4re::agent::TurnStats;

use crate::broker::Change;
use crate::error::Result;
use crate::hive::Hive;

impl Hive {
    /// Stores the figures of a finished turn.
    pub fn record_turn(&self, agent: &AgentName, s: &TurnStats) -> Result<()> {
        let total: u64 = s.tool_calls.values().sum();
        let mut rows: Vec<(String, f64)> = vec![
            ("turn.duration_ms".into(), s.duration_ms as f64),
            ("turn.tool_calls".into(), total as f64),
            (format!("turn.exit.{}", s.exit_class), 1.0),
            ("turn.exit_code".into(), s.exit_code.unwrap_or(-1) as f64),
            ("turn.messages_received".into(), s.messages_received as f64),
            ("inbox.depth".into(), self.store.inbox_depth(agent.as_str()) as f64),
        ];
        rows.extend(s.tool_calls.iter().map(|(tool, n)| (format!("tool.{tool}"), *n as f64)));
        rows.extend(s.input_tokens.map(|v| ("tokens.in".to_owned(), v as f64)));
        rows.extend(s.output_tokens.map(|v| ("tokens.out".to_owned(), v as f64)));
        rows.extend(s.cost_usd.map(|v| ("cost.usd".to_owned(), v)));
        rows.extend(s.notes_bytes.map(|v| ("notes.bytes".to_owned(), v as f64)));
        self.store.add_stats(agent.as_str(), rows.iter().map(|(k, v)| (k.as_str(), *v)))?;
        self.broker.publish(Change::Agent(agent.to_string()));
        Ok(())
    }
}
