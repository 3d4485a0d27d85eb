//! Wire types and shared vocabulary of hyperhive.
//!
//! Everything a client of the hive needs (a desktop sidebar, a script, the
//! in-container harness) and nothing that pulls in tokio or sqlite: agent
//! names, the host.sock and agent.sock messages, the dashboard's wire types,
//! agent states, event kinds and their payloads, the hive's limits and tool
//! names, the `agent.toml` configuration, and durations as people write them.

pub mod agent;
pub mod config;
pub mod dashboard;
pub mod duration;
pub mod event;
pub mod host;
pub mod limits;
pub mod name;
pub mod node;
pub mod notification;
pub mod secret;
pub mod shell;
pub mod state;
pub mod tools;

pub use name::{AgentName, Mailbox, NameError};
pub use node::{NodeName, NodeNameError};
pub use state::AgentState;

/// Version written in every host.sock response; bump only on a breaking change.
pub const PROTOCOL_VERSION: u32 = 1;
