//! Message and history verbs: send, recv, events (with follow).

use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::host::{Request, Response};
use hive_sh4re::{AgentName, Mailbox};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use super::{ConnReader, Reply, StreamReply};
use crate::broker::Change;
use crate::error::Result;
use crate::hive::Hive;

/// Longest `recv` wait a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(3600);

pub(super) async fn handle(hive: &Arc<Hive>, req: Request) -> Result<Reply> {
    Ok(match req {
        Request::Send { to, body } => {
            let id = hive.send(&Mailbox::Operator, &to, &body).await?;
            Response {
                message_id: Some(id),
                ..Response::ok()
            }
            .into()
        }
        Request::Recv { as_, max, wait_ms } => {
            let mailbox = as_.unwrap_or(Mailbox::Operator);
            // The manager's inbox collects crash notices even before the manager exists.
            if let Mailbox::Agent(n) = &mailbox
                && !n.is_manager()
            {
                hive.agent_row(n)?;
            }
            let wait = Duration::from_millis(wait_ms.unwrap_or(0)).min(MAX_WAIT);
            let msgs = hive.recv(&mailbox, max.unwrap_or(100), wait).await?;
            Response {
                messages: Some(msgs),
                ..Response::ok()
            }
            .into()
        }
        Request::Events {
            agent,
            since,
            before,
            limit,
            follow,
        } => {
            hive.agent_row(&agent)?;
            let events = hive.events(&agent, since, before, limit.unwrap_or(200))?;
            if follow {
                let since = events.last().map(|e| e.id).or(since).unwrap_or(0);
                let first = Response {
                    events: Some(events),
                    ..Response::ok()
                };
                Reply::Stream(Box::new(EventStream {
                    agent,
                    since,
                    first,
                }))
            } else {
                Response {
                    events: Some(events),
                    ..Response::ok()
                }
                .into()
            }
        }
        _ => unreachable!("routed by dispatch"),
    })
}

/// `events` with `follow`: the history so far, then a line per batch of new events.
struct EventStream {
    agent: AgentName,
    since: i64,
    first: Response,
}

#[async_trait::async_trait]
impl StreamReply for EventStream {
    async fn run(
        self: Box<Self>,
        hive: Arc<Hive>,
        _r: &mut ConnReader,
        w: &mut OwnedWriteHalf,
    ) -> std::io::Result<()> {
        let mut changes = hive.broker.subscribe();
        w.write_all(&self.first.to_line()).await?;
        let mut since = self.since;
        loop {
            let events = match hive.events(&self.agent, Some(since), None, 1000) {
                Ok(e) => e,
                Err(e) => {
                    return w
                        .write_all(&Response::refusal(e.to_string()).to_line())
                        .await;
                }
            };
            if let Some(last) = events.last() {
                since = last.id;
                w.write_all(
                    &Response {
                        events: Some(events),
                        ..Response::ok()
                    }
                    .to_line(),
                )
                .await?;
                continue;
            }
            loop {
                tokio::select! {
                    c = changes.recv() => match c {
                        Ok(Change::Events { agent, .. }) if agent == self.agent.as_str() => break,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(_) => return Ok(()),
                    },
                    _ = hive.shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
}
