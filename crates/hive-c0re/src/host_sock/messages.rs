//! Message and history verbs: send, recv, events (with follow).

use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::host::{Response, verb};
use hive_sh4re::{AgentName, Mailbox};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

use super::{ConnReader, Handle, Reply, StreamReply, client_gone};
use crate::broker::Change;
use crate::error::{Error, Result};
use crate::hive::Hive;

/// Longest `recv` wait a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(3600);

impl Handle for verb::Send {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let id = hive
            .send_keyed(&Mailbox::Operator, &self.to, &self.body, self.key.as_deref())
            .await
            .map_err(|e| match &self.key {
                // Its commit may have gone through unanswered: say how to repeat it safely.
                Some(key) if e.is_unreachable() => Error::refused(format!(
                    "{e}; the message may have been stored all the same: once the database is back, send it again with the same key (hive-c0re send --key {key} ...) and it is stored once"
                )),
                _ => e,
            })?;
        Ok(Response {
            message_id: Some(id),
            ..Response::ok()
        }
        .into())
    }
}

impl Handle for verb::Recv {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let never = std::pin::pin!(std::future::pending::<()>());
        Ok(recv_unless(self, hive, never).await?.unwrap_or_else(|| {
            Response::refusal("the reader went away before anything came").into()
        }))
    }
}

/// Answers `req` for a client that may leave while it waits: None, having
/// taken nothing, once `gone` resolves.
pub(super) async fn recv_unless(
    req: verb::Recv,
    hive: &Arc<Hive>,
    gone: std::pin::Pin<&mut (dyn std::future::Future<Output = ()> + Send)>,
) -> Result<Option<Reply>> {
    let mailbox = req.as_.unwrap_or(Mailbox::Operator);
    // The manager's inbox collects crash notices even before the manager exists.
    if let Mailbox::Agent(n) = &mailbox
        && !n.is_manager()
    {
        hive.agent_row(n).await?;
    }
    let wait = Duration::from_millis(req.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let Some(msgs) = hive
        .recv_unless(&mailbox, req.max.unwrap_or(100), wait, gone)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(
        Response {
            messages: Some(msgs),
            ..Response::ok()
        }
        .into(),
    ))
}

impl Handle for verb::Events {
    async fn handle(self, hive: &Arc<Hive>) -> Result<Reply> {
        let Self {
            agent,
            since,
            before,
            limit,
            follow,
        } = self;
        hive.agent_row(&agent).await?;
        let events = hive
            .events(&agent, since, before, limit.unwrap_or(200))
            .await?;
        let first = Response {
            events: Some(events),
            ..Response::ok()
        };
        if !follow {
            return Ok(first.into());
        }
        let since = first
            .events
            .as_ref()
            .and_then(|e| e.last())
            .map(|e| e.id)
            .or(since)
            .unwrap_or(0);
        Ok(Reply::Stream(Box::new(EventStream {
            agent,
            since,
            first,
        })))
    }
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
        r: &mut ConnReader,
        w: &mut OwnedWriteHalf,
    ) -> std::io::Result<()> {
        let mut changes = hive.subscribe();
        w.write_all(&self.first.to_line()).await?;
        let mut since = self.since;
        loop {
            let events = match hive.events(&self.agent, Some(since), None, 1000).await {
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
                    _ = hive.shutdown_token().cancelled() => return Ok(()),
                    () = client_gone(r, w) => return Ok(()),
                }
            }
        }
    }
}
