//! hive-ag3nt: the in-container harness of a hyperhive agent.
//!
//! `serve` runs the turn loop ([`turn`]): wait for inbox messages, run one
//! claude process per turn, end the turn. [`runner`] is the one place that
//! runs claude and forwards its output as events (for a turn, `/compact`
//! ([`compact`]) and notes compaction ([`notes`]) alike); [`claude`] is the one
//! place that spawns it and knows its CLI. [`control`] follows the operator's
//! commands. `mcp` is the stdio MCP server ([`mcp`]) claude starts to reach
//! the hive. All talk to hive-c0re only through the agent's socket
//! ([`client`]); `hive-m1nd` is this crate with manager tools on.

/// Writes one line to stderr and carries on if it cannot: `eprintln!`
/// panics when stderr refuses a write, and stderr is `harness.log`, on the
/// state's disk, which fills. A harness must not die of its log.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod claude;
pub mod cli;
pub mod client;
pub mod compact;
pub mod control;
pub mod files;
pub mod harness;
pub mod mcp;
pub mod notes;
pub mod prompt;
pub mod runner;
pub mod turn;
