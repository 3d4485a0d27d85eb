//! Agent verbs: list, status (and its subscription), lifecycle, pause.

use std::sync::Arc;

use hive_sh4re::AgentName;
use hive_sh4re::host::{Request, Response, Scope};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use super::{ConnReader, Reply, StreamReply};
use crate::broker::Change;
use crate::error::{Error, Result};
use crate::hive::Hive;

pub(super) async fn handle(hive: &Arc<Hive>, req: Request) -> Result<Reply> {
    Ok(match req {
        Request::List => Response {
            agents: Some(hive.list()?),
            ..Response::ok()
        }
        .into(),
        Request::AgentStatus => Response {
            agent_statuses: Some(hive.status_rows()?),
            ..Response::ok()
        }
        .into(),
        Request::SubscribeAgentStatus => Reply::Stream(Box::new(StatusStream)),
        Request::SetPaused { name, paused } => {
            hive.set_paused(&name, paused)?;
            Response::ok().into()
        }
        Request::Start { scope } => {
            for n in resolve(hive, &scope)? {
                hive.start(&n)?;
            }
            Response::ok().into()
        }
        Request::Stop { scope, graceful } => {
            let names = resolve(hive, &scope)?;
            let stops = names.iter().map(|n| hive.stop(n, graceful));
            for r in futures::future::join_all(stops).await {
                r?;
            }
            Response::ok().into()
        }
        Request::Restart { name } => {
            hive.restart(&name).await?;
            Response::ok().into()
        }
        Request::Spawn { name, model } => {
            hive.spawn(&name, model.as_deref(), None)?;
            Response::ok().into()
        }
        Request::Kill { name } => {
            hive.stop(&name, false).await?;
            Response::ok().into()
        }
        Request::Destroy { name, purge } => {
            hive.destroy(&name, purge).await?;
            Response::ok().into()
        }
        _ => unreachable!("routed by dispatch"),
    })
}

/// The agents a scope names; an empty scope is refused unless it says `all`.
fn resolve(hive: &Hive, scope: &Scope) -> Result<Vec<AgentName>> {
    match (&scope.agent_names, scope.all) {
        (_, true) => Ok(hive
            .list()?
            .iter()
            .filter_map(|n| AgentName::parse(n).ok())
            .collect()),
        (Some(names), false) if !names.is_empty() => {
            for n in names {
                hive.agent_row(n)?;
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
        _r: &mut ConnReader,
        w: &mut OwnedWriteHalf,
    ) -> std::io::Result<()> {
        let mut changes = hive.broker.subscribe();
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
                _ = hive.shutdown.cancelled() => return Ok(()),
            };
            let rows = match name {
                Some(n) => match AgentName::parse(&n)
                    .ok()
                    .and_then(|n| hive.status_row(&n).ok())
                {
                    Some(r) => vec![r],
                    None => continue,
                },
                None => hive.status_rows().unwrap_or_default(),
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
