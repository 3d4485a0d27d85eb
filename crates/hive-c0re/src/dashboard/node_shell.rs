//! `GET /node/shell/{request}`: the home end of the node-to-node shell
//! channel (`crate::node_shell`), on the dashboard's listener but outside
//! its login: another node asks to upgrade with `Upgrade: hive-shell`, then
//! speaks TLS to this node's [`Identity`](crate::node_shell::Identity) and
//! presents, inside it, the one-time ticket of a shell request this node
//! granted. No login cookie or operator token opens it, nor is one needed.
//!
//! Refused before any upgrade: no upgrade asked, or a ticket sent in the
//! clear (400: an older asking node; the ticket is burnt, ask again), a
//! request this node granted no shell for lately, or a knock without its
//! ticket's hash in `X-Hive-Node-Knock` (403), 16 channels already waiting
//! for their ticket (503). Then
//! `101 Switching Protocols`, the TLS handshake, the ticket line and the
//! answer (`ok`, or `no: ` and why: `Hive::node_shell` checks), then the
//! frames of `hive_sh4re::shell`; the connection closing ends the shell's
//! whole session.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::Ctx;
use super::errors::ApiError;
use crate::error::Error;
use crate::node_shell::{self, KNOCK_HEADER, PROTOCOL, Shell, TICKET_HEADER, serve_frames};

/// Upgraded channels still waiting for their TLS handshake and ticket: each
/// holds a socket for up to 20 s.
static PENDING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);

/// Upgrades the connection of a request this node granted, then takes the
/// ticket over TLS and runs the shell it opens.
pub(crate) async fn open(
    State(ctx): State<Ctx>,
    Path(raw): Path<String>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !upgrade {
        return ApiError::bad(format!(
            "this route is the node-to-node shell channel (Upgrade: {PROTOCOL}); it serves hive-c0re nodes, not browsers"
        ))
        .into_response();
    }
    if headers.contains_key(TICKET_HEADER) {
        return ApiError::bad(
            "a ticket sent in the clear opens nothing: the asking node's hive-c0re is older than this one, which takes tickets only over TLS; upgrade it and ask again",
        )
        .into_response();
    }
    let Ok(id) = raw.parse::<i64>() else {
        return ApiError::new(StatusCode::FORBIDDEN, "no shell: that is no request id")
            .into_response();
    };
    // Only for a grant of this node's, by who knows its ticket's hash: a
    // stranger gets no handshake to chew on, nor a socket held for one.
    let knock = headers
        .get(KNOCK_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(e) = ctx.hive.shell_knock(id, knock) {
        return ApiError::forbidden(e.to_string()).into_response();
    }
    // However many knock with it, a few wait for their TLS and ticket at once.
    let Ok(pending) = PENDING.try_acquire() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no shell now: too many node shells are opening at once; ask again",
        )
        .into_response();
    };
    let identity = match crate::node_shell::identity() {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(request = id, "no node shell: {e}");
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).into_response();
        }
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return ApiError::bad("this connection cannot be upgraded").into_response();
    };
    let mark = super::conns::mark_of(&req);
    let hive = ctx.hive.clone();
    ctx.hive.spawn_task("node shell", async move {
        let io = match on_upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::warn!(request = id, "a node shell's upgrade failed: {e}");
                return;
            }
        };
        let mut tls = match identity.accept(io).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(request = id, "a node shell's TLS handshake failed: {e}");
                return;
            }
        };
        let opened = match node_shell::read_line(&mut tls, 128).await {
            Ok(ticket) => hive.node_shell(id, &ticket).await,
            Err(e) => {
                tracing::warn!(request = id, "no ticket came for a node shell: {e}");
                return;
            }
        };
        let (session, asker_gone) = match opened {
            Ok(s) => s,
            Err(e) => {
                let why = match e {
                    Error::Refused(m) => m,
                    e => {
                        tracing::error!(
                            request = id,
                            "could not open a shell for another node: {e}"
                        );
                        format!("could not open the shell: {e}")
                    }
                };
                let _ = node_shell::answer(&mut tls, Some(&why)).await;
                return;
            }
        };
        drop(pending);
        if let Some(m) = mark {
            m.prove();
        }
        // A session dropped unanswered ends the shell (its guard).
        if let Err(e) = node_shell::answer(&mut tls, None).await {
            tracing::debug!(
                request = id,
                "a node shell's asker left before it opened: {e}"
            );
            return;
        }
        let stop = hive.shutdown_token().clone();
        let (mut r, mut w) = tokio::io::split(tls);
        // An asker that froze or was cut off may never close the connection
        // (its kernel still answers, or nothing comes back to time out on):
        // its heartbeats ending ends the shell, which the drop closes.
        tokio::select! {
            served = serve_frames(Shell::Local(session), &mut r, &mut w, stop) => {
                if let Err(e) = served {
                    tracing::debug!(request = id, "a node shell's connection ended: {e}");
                }
            }
            why = asker_gone => tracing::warn!(request = id, "{why}"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp
}
