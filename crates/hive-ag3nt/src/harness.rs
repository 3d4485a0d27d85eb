//! Who the harness is and where it lives: the agent's socket, its `/state`
//! (claude's HOME), and whether it is the manager.

use std::path::PathBuf;

use hive_sh4re::agent::EffectiveConfig;

use crate::claude::{self, Invocation};
use crate::client::{Client, ClientError};

/// Where the harness lives and who it is.
#[derive(Debug, Clone)]
pub struct Harness {
    pub socket: PathBuf,
    /// The agent's `/state` (claude's HOME).
    pub state: PathBuf,
    pub manager: bool,
}

impl Harness {
    /// From flags and the environment hive-c0re sets.
    pub fn from_env(socket: PathBuf, manager: bool) -> Self {
        let state = std::env::var_os("HIVE_AGENT_STATE")
            .or_else(|| std::env::var_os("HOME"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/state"));
        Self {
            socket,
            state,
            manager,
        }
    }

    /// A new connection to the agent's socket.
    pub async fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(&self.socket).await
    }

    /// The claude run of a turn with this config (writes its MCP config first).
    pub fn turn_invocation(
        &self,
        cfg: &EffectiveConfig,
        prompt: String,
    ) -> std::io::Result<Invocation> {
        let mcp_config = claude::write_mcp_config(&self.state, &self.socket, cfg)?;
        Ok(Invocation::turn(
            cfg,
            &self.state,
            mcp_config,
            self.manager,
            prompt,
        ))
    }
}
