//! Agent verbs: list, status (and its subscription), lifecycle, pause.

use std::sync::Arc;

use hive_sh4re::AgentName;
use hive_sh4re::host::{Response, Scope, verb};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use super::{ConnReader, Handle, Reply, StreamReply, client_gone};
use crate::broker::Change;
use crate::error::{Error, Result};
use crate::hive::Hive;

impl Handle for verb::List {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            agents: Some(hive.list().await?),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::AgentStatus {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Response {
            agent_statuses: Some(hive.status_rows().await?),
            space_alarm: hive.space().alarm(),
            api_backoff: hive.api_backoff_status(),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::SubscribeAgentStatus {
    async fn handle(self, _hive: &Arc<Hive>) -> Result<Reply> {
        Ok(Reply::Stream(Box::new(StatusStream)))
    }
}

impl Handle for verb::SetPaused {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.set_paused(&self.name, self.paused).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Start {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        for n in resolve(hive, &self.scope).await? {
            hive.start(&n).await?;
        }
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Stop {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let names = resolve(hive, &self.scope).await?;
        let stops = names.iter().map(|n| hive.stop(n, self.graceful));
        for r in futures::future::join_all(stops).await {
            r?;
        }
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Restart {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.restart(&self.name).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Spawn {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        if let Some(node) = &self.node {
            hive.check_node(node).await?;
        }
        hive.spawn_on(&self.name, self.model.as_deref(), self.node.as_ref())
            .await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Kill {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.stop(&self.name, false).await?;
        Ok(Response::ok().into())
    }
}

impl Handle for verb::Destroy {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        hive.destroy(&self.name, self.purge).await?;
        Ok(Response::ok().into())
    }
}

/// The agents a scope names; an empty scope is refused unless it says `all`.
async fn resolve(hive: &Hive, scope: &Scope) -> Result<Vec<AgentName>> {
    match (&scope.agent_names, scope.all) {
        (_, true) => Ok(hive
            .list()
            .await?
            .iter()
            .filter_map(|n| AgentName::parse(n).ok())
            .collect()),
        (Some(names), false) if !names.is_empty() => {
            for n in names {
                hive.agent_row(n).await?;
            }
            Ok(names.clone())
        }
        _ => Err(Error::refused(
            "the scope names no agent: give {\"agent_names\":[...]}, or {\"all\":true} to act on the whole hive",
        )),
    }
}

/// `subscribe_agent_status`: an ack, then a one-row line per changed agent.
struct StatusStream;

#[async_trait::async_trait]
impl StreamReply for StatusStream {
    async fn run(
        self: Box<Self>,
        hive: Arc<Hive>,
        r: &mut ConnReader,
        w: &mut OwnedWriteHalf,
    ) -> std::io::Result<()> {
        let mut changes = hive.subscribe();
        w.write_all(&Response::ok().to_line()).await?;
        loop {
            let name = tokio::select! {
                c = changes.recv() => match c {
                    Ok(Change::Agent(n)) => Some(n),
                    Ok(_) => continue,
                    // Fell behind: resend every row rather than miss one.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(_) => return Ok(()),
                },
                _ = hive.shutdown_token().cancelled() => return Ok(()),
                () = client_gone(r, w) => return Ok(()),
            };
            let rows = match name {
                Some(n) => {
                    let Ok(n) = AgentName::parse(&n) else {
                        continue;
                    };
                    match hive.status_row(&n).await {
                        Ok(r) => vec![r],
                        Err(_) => continue,
                    }
                }
                None => hive.status_rows().await.unwrap_or_default(),
            };
            for row in rows {
                let line = Response {
                    agent_statuses: Some(vec![row]),
                    ..Response::ok()
                }
                .to_line();
                w.write_all(&line).await?;
            }
        }
    }
}
