//! One harness connection on its agent.sock: requests in, answers out.
//!
//! The connection is the agent's whose socket accepted it (`agent_sock.rs`),
//! so every request is that agent's: a harness cannot speak for another. A
//! connection that claimed messages for a turn hands them back if it goes
//! away before acknowledging.

use std::sync::Arc;
use std::time::Duration;

use hive_sh4re::agent::{AgentRequest, AgentResponse};
use hive_sh4re::{AgentName, MAX_LINE_BYTES, Mailbox};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::agent_sock::{Accepted, Incoming};
use crate::error::{Error, Result};
use crate::hive::turns::Claim;
use crate::hive::{Hive, message_wire};
use crate::lines::{Line, read_line};

/// Longest a long poll (`next_turn`, `control`) waits before answering empty.
const MAX_POLL: Duration = Duration::from_secs(300);

/// Serves every connection the agents' sockets accept, until the hive shuts down.
pub async fn serve(hive: Arc<Hive>, mut incoming: Incoming) {
    loop {
        let conn = tokio::select! {
            c = incoming.recv() => match c { Some(c) => c, None => return },
            _ = hive.shutdown_token().cancelled() => return,
        };
        tokio::spawn(serve_conn(hive.clone(), conn));
    }
}

/// Per-connection state: what this connection holds that must be given back.
#[derive(Default)]
struct Conn {
    /// The turn this connection began and has not ended.
    turn: Option<Claim>,
}

async fn serve_conn(hive: Arc<Hive>, conn: Accepted) {
    let Accepted {
        agent: name,
        stream,
        closed,
    } = conn;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut conn = Conn::default();
    loop {
        let line = tokio::select! {
            l = read_line(&mut r, MAX_LINE_BYTES) => l,
            _ = closed.cancelled() => break,
            _ = hive.shutdown_token().cancelled() => break,
        };
        let resp = match line {
            Ok(Line::Data(bytes)) => match AgentRequest::from_line(&bytes) {
                Ok(req) => {
                    // A long poll must end with its client: a dead harness's pending
                    // `control` would otherwise take the next command and drop it.
                    tokio::select! {
                        r = handle(&hive, &name, &mut conn, req) => r.unwrap_or_else(|e| AgentResponse::refusal(e.to_string())),
                        _ = peer_closed(&mut r) => break,
                    }
                }
                Err(e) => AgentResponse::refusal(e),
            },
            Ok(Line::TooLong) => AgentResponse::refusal(format!(
                "the request is over {MAX_LINE_BYTES} bytes and was skipped"
            )),
            Ok(Line::Eof) | Err(_) => break,
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        if w.write_all(&out).await.is_err() {
            break;
        }
    }
    if conn.turn.is_some() {
        hive.release_claims(&name);
    }
}

async fn handle(
    hive: &Arc<Hive>,
    name: &AgentName,
    conn: &mut Conn,
    req: AgentRequest,
) -> Result<AgentResponse> {
    let me = Mailbox::Agent(name.clone());
    let req = redact_request(hive, req)?;
    Ok(match req {
        AgentRequest::Config => AgentResponse {
            config: Some(hive.effective_config(name)?),
            ..AgentResponse::ok()
        },
        AgentRequest::NextTurn { wait_ms } => {
            let wait = wait_ms
                .map(Duration::from_millis)
                .unwrap_or(MAX_POLL)
                .min(MAX_POLL);
            match hive.next_turn(name, wait).await? {
                // The turn's config comes with its messages: one round trip less before claude starts.
                Some(turn) => {
                    conn.turn = Some(turn.claim());
                    AgentResponse {
                        messages: Some(turn.messages.iter().map(message_wire).collect()),
                        config: Some(turn.config),
                        ..AgentResponse::ok()
                    }
                }
                None => AgentResponse {
                    messages: Some(vec![]),
                    ..AgentResponse::ok()
                },
            }
        }
        AgentRequest::NeedsLogin { needed } => {
            hive.set_needs_login(name, needed)?;
            AgentResponse::ok()
        }
        AgentRequest::State { state, model } => {
            hive.set_state(name, state, model.as_deref())?;
            AgentResponse::ok()
        }
        AgentRequest::Events { items } => {
            // hive-side kinds (operator, container_crash, state) are hive-c0re's word, not an agent's.
            if let Some(e) = items
                .iter()
                .find(|e| !hive_sh4re::agent::HARNESS_EVENT_KINDS.contains(&e.kind.as_str()))
            {
                return Err(Error::refused(format!(
                    "{:?} is not an event kind a harness reports (those are {}): nothing was recorded",
                    e.kind,
                    hive_sh4re::agent::HARNESS_EVENT_KINDS.join(", ")
                )));
            }
            if hive.space().is_low() {
                // The stream is what the hive can drop; the turn's end, its
                // acknowledgements and the agent's state are still recorded.
                tracing::debug!(agent = %name, dropped = items.len(), "the disk is nearly full: events dropped");
                return Ok(AgentResponse::ok());
            }
            let items: Vec<(String, String)> = items
                .into_iter()
                .map(|e| (e.kind, e.payload.to_string()))
                .collect();
            hive.add_events(name, &items)?;
            AgentResponse::ok()
        }
        AgentRequest::TurnEnd {
            stats,
            outcome,
            session,
        } => {
            let claim = conn.turn.take().ok_or_else(|| {
                Error::refused("no turn to end: a turn begins with next_turn on this connection")
            })?;
            let config = hive.end_turn(name, &claim, &stats, outcome, session.as_deref())?;
            AgentResponse {
                config: Some(config),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Stats { items } => {
            hive.record_stats(name, &items)?;
            AgentResponse::ok()
        }
        AgentRequest::Control { wait_ms } => {
            let wait = wait_ms
                .map(Duration::from_millis)
                .unwrap_or(MAX_POLL)
                .min(MAX_POLL);
            AgentResponse {
                control: hive.next_control(name, wait).await,
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Send { to, body } => {
            let to = Mailbox::parse(&to)
                .map_err(|e| Error::refused(format!("cannot send to {to:?}: {e}")))?;
            let id = hive.send(&me, &to, &body).await?;
            AgentResponse {
                message_id: Some(id),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Recv { max } => {
            let msgs = hive.recv(&me, max.unwrap_or(20), Duration::ZERO).await?;
            AgentResponse {
                messages: Some(msgs),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::Status => AgentResponse {
            agents: Some(hive.status_rows()?),
            ..AgentResponse::ok()
        },
        AgentRequest::SetStatus { text } => {
            hive.set_status_text(name, &text)?;
            AgentResponse::ok()
        }
        AgentRequest::Nap { seconds } => {
            hive.nap(name, seconds)?;
            AgentResponse {
                text: Some(format!(
                    "napping for {seconds}s; messages wait in your inbox until then"
                )),
                ..AgentResponse::ok()
            }
        }
        AgentRequest::RequestInitConfig { .. }
        | AgentRequest::RequestSpawn { .. }
        | AgentRequest::RequestApplyCommit { .. }
        | AgentRequest::Schedule { .. }
        | AgentRequest::AskOperator { .. } => {
            if !name.is_manager() {
                return Err(Error::refused(
                    "only the manager may request new agents, config changes or operator answers",
                ));
            }
            crate::manager::handle(hive, req).await?
        }
    })
}

/// What an agent says is stored and shown to others (messages, its status,
/// the manager's requests): a secret's value in it becomes `[secret NAME]`.
/// Events are redacted where every event is stored (`Hive::add_events`).
fn redact_request(hive: &Hive, req: AgentRequest) -> Result<AgentRequest> {
    if matches!(req, AgentRequest::Events { .. }) {
        return Ok(req);
    }
    let redactor = hive.redactor()?;
    if redactor.is_empty() {
        return Ok(req);
    }
    let v = serde_json::to_value(&req)
        .map_err(|e| Error::refused(format!("bad agent.sock request: {e}")))?;
    let redacted = redactor.redact_value(v.clone());
    if redacted == v {
        return Ok(req);
    }
    serde_json::from_value(redacted).map_err(|e| {
        Error::refused(format!(
            "the request holds a secret's value and makes no sense without it ({e}): nothing was done"
        ))
    })
}

/// Resolves when the peer closed its end; pipelined bytes are left in the buffer.
async fn peer_closed<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) {
    use tokio::io::AsyncBufReadExt;
    match r.fill_buf().await {
        Ok([]) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}
