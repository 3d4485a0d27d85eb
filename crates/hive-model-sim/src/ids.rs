//! Unique ids for messages and tool_use blocks.
//!
//! claude merges streamed assistant parts that share a message id and drops
//! tool_use blocks whose id it has already seen in the session, so ids must be
//! unique across the whole session, even across restarts of the simulator.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Prefix of tool_use ids; the rule index follows so the engine can tell which
/// rule already fired in a turn.
pub const TOOL_USE_PREFIX: &str = "toolu_sim";

/// Generator of process-unique, restart-unique ids.
#[derive(Debug)]
pub struct IdGen {
    epoch: u64,
    counter: AtomicU64,
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGen {
    /// A generator seeded with the current time.
    pub fn new() -> IdGen {
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        IdGen {
            epoch,
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{:x}{:06x}", self.epoch, n)
    }

    /// A new message id, `msg_sim…`.
    pub fn message(&self) -> String {
        format!("msg_sim{}", self.next())
    }

    /// A new tool_use id tagged with the (1-based) rule index, `toolu_sim3_…`;
    /// 0 means "no rule".
    pub fn tool_use(&self, rule_index: usize) -> String {
        format!("{TOOL_USE_PREFIX}{rule_index}_{}", self.next())
    }
}

/// The id prefix of tool_use blocks produced by rule `rule_index`.
pub fn tool_use_prefix(rule_index: usize) -> String {
    format!("{TOOL_USE_PREFIX}{rule_index}_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_tagged() {
        let ids = IdGen::new();
        assert_ne!(ids.message(), ids.message());
        let t = ids.tool_use(12);
        assert!(t.starts_with(&tool_use_prefix(12)));
        assert!(!t.starts_with(&tool_use_prefix(1)));
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
