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
pub mod text;
pub mod tools;

pub use name::{AgentName, Mailbox, NameError};
pub use node::{NodeName, NodeNameError};
pub use state::AgentState;

/// Version written in every host.sock response; bump only on a breaking change.
pub const PROTOCOL_VERSION: u32 = 1;

/// A key no other send from this host has: the process, the time and a
/// count. A send repeated under its key is stored once (see `send`'s `key`).
pub fn new_send_key() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}-{n:x}", std::process::id())
}
