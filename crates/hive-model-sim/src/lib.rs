//! hive-model-sim: a scripted stand-in for the Anthropic Messages API.
//!
//! The real `claude` CLI is pointed at it with `ANTHROPIC_BASE_URL`; a script of
//! rules decides what the "model" answers, so hyperhive's end-to-end tests and the
//! offline demo run the real CLI without network access or a model.

#![warn(missing_docs)]

pub mod conversation;
pub mod engine;
pub mod error;
pub mod ids;
pub mod inbox;
pub mod record;
pub mod run;
pub mod script;
pub mod server;
pub mod sse;
pub mod template;
pub mod wire;

pub use error::{ScriptError, SimError};
pub use run::{Config, run};
pub use script::Script;
