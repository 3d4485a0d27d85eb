//! hive-ag3nt: the in-container harness of a hyperhive agent.
//!
//! `serve` runs the turn loop ([`turn`]): wait for inbox messages, run one
//! claude process per turn ([`claude`], the one place that spawns claude),
//! forward its output as events. `mcp` is the stdio MCP server ([`mcp`])
//! claude starts to reach the hive. Both talk to hive-c0re only through the
//! agent's socket ([`client`]); `hive-m1nd` is this crate with manager tools on.

pub mod claude;
pub mod cli;
pub mod client;
pub mod mcp;
pub mod notes;
pub mod turn;
