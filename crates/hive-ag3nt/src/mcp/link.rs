//! The MCP server's line to hive-c0re: agent.sock connections made on first
//! use, kept for the next call, and replaced when they break.
//!
//! Tool calls can run at the same time (an `ask_operator` may wait for
//! hours while the model keeps sending), and agent.sock answers one request
//! at a time per connection, so each call borrows its own connection from a
//! small idle pool instead of sharing one.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hive_sh4re::agent::{AgentRequest, AgentResponse};

use crate::client::{Client, ClientError};

/// Idle connections kept for reuse; more concurrent calls just open more.
const MAX_IDLE: usize = 4;

/// Connections to one agent socket.
pub(super) struct Link {
    path: PathBuf,
    idle: Mutex<Vec<Client>>,
}

impl Link {
    /// A link that connects to `path` when first used.
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one request; the error is a sentence for the model.
    ///
    /// A dropped future drops its connection, so a cancelled call never
    /// leaves a half-read answer on a pooled connection.
    pub(super) async fn call(&self, req: &AgentRequest) -> Result<AgentResponse, String> {
        if let Some(mut client) = self.take_idle() {
            match client.call(req).await {
                // hive-c0re went away since this connection was last used
                // (a restart): the write failed, so the request was not seen
                // and a fresh connection may safely carry it again.
                Err(ClientError::Gone { source, .. }) if never_delivered(source.kind()) => {
                    tracing::info!("agent socket connection went stale ({source}); reconnecting");
                }
                other => return self.settle(client, other),
            }
        }
        let mut client = Client::connect(&self.path)
            .await
            .map_err(|e| describe(&self.path, e))?;
        let result = client.call(req).await;
        self.settle(client, result)
    }

    fn take_idle(&self) -> Option<Client> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Keeps a connection that is still in step and turns the result into a sentence.
    fn settle(
        &self,
        client: Client,
        result: Result<AgentResponse, ClientError>,
    ) -> Result<AgentResponse, String> {
        // A refusal is a whole answer line: the connection is still usable.
        if matches!(result, Ok(_) | Err(ClientError::Refused(_))) {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(client);
            }
        }
        result.map_err(|e| describe(&self.path, e))
    }
}

/// True for the errors a write to a closed peer gives, before hive-c0re read anything.
fn never_delivered(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::BrokenPipe | ErrorKind::NotConnected | ErrorKind::ConnectionReset
    )
}

/// The sentence the model sees for a failed call.
pub(super) fn describe(path: &Path, err: ClientError) -> String {
    match err {
        ClientError::Refused(why) => why,
        ClientError::Gone { source, .. } => format!(
            "hive-c0re is not answering on {} ({source}): the hive may be restarting; try again in a minute",
            path.display()
        ),
        ClientError::Protocol(_) => {
            format!("{err}; try again, and tell the operator if it keeps happening")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_hive_c0re_wrote_it() {
        let s = describe(
            Path::new("/s"),
            ClientError::Refused("alice may not send to carol: ask".into()),
        );
        assert_eq!(s, "alice may not send to carol: ask");
    }

    #[test]
    fn a_lost_socket_says_what_to_do() {
        let err = ClientError::Gone {
            path: "/s".into(),
            source: std::io::Error::from(ErrorKind::NotFound),
        };
        let s = describe(Path::new("/run/a/agent.sock"), err);
        assert!(
            s.contains("/run/a/agent.sock") && s.contains("try again"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_error_not_a_panic() {
        let link = Link::new("/nonexistent/hyperhive/agent.sock".into());
        let err = link.call(&AgentRequest::Status).await.err();
        assert!(err.is_some_and(|e| e.contains("not answering")));
    }
}
