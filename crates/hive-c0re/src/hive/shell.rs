//! The operator's shell in an agent's container: which agent, whether it
//! runs, and the runtime's command inside it. What the shell is and how its
//! PTY is relayed is `crate::shell`'s.

use hive_sh4re::AgentName;

use super::Hive;
use crate::error::{Error, Result};
use crate::runtime::RuntimeError;
use crate::shell::{Session, WinSize, operator_command};

impl Hive {
    /// Opens an interactive shell in a running agent's container on a new PTY.
    ///
    /// Refused with a sentence when the agent is unknown or not running.
    pub async fn open_shell(
        &self,
        name: &AgentName,
        size: WinSize,
        term: Option<&str>,
    ) -> Result<Session> {
        let row = self.agent_here(name).await?;
        if !self.supervisor.is_running(name.as_str()) {
            return Err(Error::Refused(
                RuntimeError::NotRunning(name.clone()).to_string(),
            ));
        }
        let spec = self.launch_spec(&row);
        let cmd = self
            .runtime
            .command_inside(&spec, &operator_command(term))
            .map_err(|e| match e {
                RuntimeError::NotRunning(_) => Error::Refused(e.to_string()),
                other => other.into(),
            })?;
        let session = Session::spawn(cmd, size).map_err(Error::io(format!(
            "could not start a shell in {name}'s container"
        )))?;
        tracing::info!(agent = %name, pid = session.leader(), "shell opened");
        Ok(session)
    }
}
