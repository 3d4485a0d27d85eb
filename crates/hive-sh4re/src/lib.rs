//! Wire types and shared vocabulary of hyperhive.
//!
//! Everything a client of the hive needs (a desktop sidebar, a script, the
//! in-container harness) and nothing that pulls in tokio or sqlite: agent
//! names, the host.sock and agent.sock messages, agent states, the
//! `agent.toml` configuration, and durations as people write them.

pub mod agent;
pub mod config;
pub mod duration;
pub mod host;
pub mod name;
pub mod secret;
pub mod shell;
pub mod state;

pub use name::{AgentName, Mailbox, NameError};
pub use state::AgentState;

/// Version written in every host.sock response; bump only on a breaking change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest request line either socket accepts, in bytes.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Largest message body `send` accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
